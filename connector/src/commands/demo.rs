//! `lark-sink demo`: the real pipeline on embedded defaults, with no external service.
//!
//! An in-process Kafka-protocol broker (librdkafka's mock cluster) and the Lark emulator stand in
//! for the real ones; sample alert records, a few of them bad on purpose, are produced; the same
//! [`crate::sink::run`] that production uses consumes them; and the summary printed at the end is
//! read back from what the emulator accepted and what landed in the dead-letter topic, so it tells
//! the truth about what happened rather than what was intended.
//!
//! One alert also shows keyed messages (`messageKey`, docs/user-guide.md "Updating messages"):
//! it fires (a red card) and, once that card is in Lark, resolves (a green card with the same
//! key), which the connector applies to the same card in place, remembering the key in a state
//! topic. The summary reads the card's versions back from the emulator.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;

use crate::config::ConnectorConfig;
use crate::emulator::{AcceptedMessage, Emulator, EmulatorConfig, EmulatorHandle, VersionOp};
use crate::sink;
use crate::telemetry::SinkStats;

/// The topic the sample records are produced to.
const TOPIC: &str = "alerts";
/// The dead-letter topic the bad samples end up in (read back for the summary).
const DLQ: &str = "alerts-dlq";
/// `lark.state.topic`: where the connector remembers which Lark message the keyed alert is.
const STATE: &str = "alerts-lark-state";
/// Partitions of the source topic (and of the state topic, one state partition per source one).
const PARTITIONS: i32 = 3;
/// How long the pipeline may take to finish the samples before the demo gives up.
const PATIENCE: Duration = Duration::from_secs(60);

/// The `messageKey` of the alert that fires and then resolves in the same card (also the Kafka
/// key of both records, so they share a partition, as keyed messages need).
pub const ALERT_KEY: &str = "checkout-latency/checkout-1";
/// The alert's name, which its card titles carry: how the summary finds the card in the emulator.
const ALERT_NAME: &str = "CheckoutLatency";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("embedded Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("Lark emulator: {0}")]
    Emulator(#[from] std::io::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Sink(#[from] sink::SinkError),
    #[error("the pipeline did not finish the {0} sample records within 60 s")]
    Timeout(usize),
}

/// The alert that fired and resolved, as the emulator holds it: which messages carry its card and
/// what the card went through. One message with a red then a green version is "updated in place".
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleSummary {
    /// The record's `messageKey`.
    pub message_key: String,
    /// Every message the emulator accepted with the alert's card (one, when it was updated).
    pub message_ids: Vec<String>,
    /// The versions of the first of them, oldest first.
    pub versions: Vec<CardVersion>,
}

impl LifecycleSummary {
    /// Whether the alert is one message that went from its first version to its last in place.
    pub fn updated_in_place(&self) -> bool {
        self.message_ids.len() == 1 && self.versions.len() > 1
    }
}

/// One version of a card, as the emulator recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardVersion {
    /// How it came about: `send`, `patch` (a card update) or `put` (an edit).
    pub op: String,
    /// The header colour (`red`, `green`, ...), empty without one.
    pub template: String,
    /// The header title, empty without one.
    pub title: String,
}

/// One dead letter as read back from the DLQ topic.
#[derive(Debug, Clone)]
pub struct DeadLetterSummary {
    pub source: String,
    pub class: String,
    pub reason: String,
}

/// What the demo did, read back from the emulator and the DLQ topic.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Records produced: the samples and the alert's two versions.
    pub records: usize,
    /// The messages the emulator accepted (an updated message once, as first sent).
    pub delivered: Vec<AcceptedMessage>,
    pub dead_letters: Vec<DeadLetterSummary>,
    /// The keyed alert's card.
    pub lifecycle: LifecycleSummary,
}

/// The sample records: what an alerting pipeline produces, plus the mistakes it sometimes makes.
pub fn sample_records() -> Vec<(&'static str, String)> {
    let text = |t: &str| json!({"text": t});
    let card = json!({
        "header": {"template": "red", "title": {"tag": "plain_text", "content": "Disk full on db-7"}},
        "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": "**/var** at 99%"}}]
    });
    let ok = |v: serde_json::Value| v.to_string();
    vec![
        (
            "text to a user by open_id",
            ok(
                json!({"receiveType": "user", "receiveId": "ou_alice", "contentType": "text", "content": text("[P1] api-gw: 5xx rate 12%")}),
            ),
        ),
        (
            "text to a user by email",
            ok(
                json!({"receiveType": "email", "receiveId": "bob@example.com", "content": text("[P2] backup finished late")}),
            ),
        ),
        (
            "post to a group chat",
            ok(
                json!({"receiveType": "chat", "receiveId": "oc_ops", "contentType": "post", "content": {"en_us": {"title": "Deploy finished", "content": [[{"tag": "text", "text": "billing v1.4.2 is live"}]]}}}),
            ),
        ),
        (
            "text to a user by phone (looked up)",
            ok(
                json!({"receiveType": "phone", "receiveId": "+8613800000001", "content": text("[P1] on-call page: checkout latency")}),
            ),
        ),
        (
            "array record: card to a chat + text to a user",
            ok(json!([
                {"receiveType": "chat", "receiveId": "oc_team", "contentType": "interactive", "content": card},
                {"receiveType": "union_id", "receiveId": "on_bob", "content": "{\"text\":\"db-7 disk alert sent to #team\"}"}
            ])),
        ),
        (
            "text to a user by user_id",
            ok(
                json!({"receiveType": "user_id", "receiveId": "alice", "content": text("[P3] weekly report ready")}),
            ),
        ),
        (
            "BAD: not JSON",
            r#"{"receiveId": "ou_alice", "content": "#.to_string(),
        ),
        (
            "BAD: schema violation",
            ok(json!({"receiveType": "fax", "receiveId": "", "content": text("x")})),
        ),
        (
            "BAD: oversize card",
            ok(
                json!({"receiveType": "chat", "receiveId": "oc_ops", "contentType": "interactive", "content": {"elements": [{"tag": "markdown", "content": "x".repeat(40_000)}]}}),
            ),
        ),
        (
            "BAD: bot is not in the chat (Lark 230002)",
            ok(
                json!({"receiveType": "chat", "receiveId": "oc_outside", "content": text("hello?")}),
            ),
        ),
        (
            "BAD: user outside the app's availability (Lark 230013)",
            ok(json!({"receiveType": "user", "receiveId": "ou_carol", "content": text("hello?")})),
        ),
        (
            "BAD: unknown phone number",
            ok(
                json!({"receiveType": "phone", "receiveId": "+15550000000", "content": text("hello?")}),
            ),
        ),
    ]
}

/// The alert of the demo's keyed message: the same `messageKey` twice, firing (a red card) and
/// resolved (a green card). The demo produces the second once the first is in Lark, so it is an
/// update of that card (two versions waiting together would coalesce into the newest).
pub fn lifecycle_records() -> [(&'static str, String); 2] {
    let card = |status: &str, template: &str, text: &str| {
        json!({
            "receiveType": "chat", "receiveId": "oc_ops", "contentType": "interactive",
            "messageKey": ALERT_KEY,
            "content": {
                "header": {"template": template, "title": {"tag": "plain_text", "content": format!("[{status}] {ALERT_NAME} on checkout-1")}},
                "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": text}}]
            }
        })
        .to_string()
    };
    [
        (
            "alert card, firing (messageKey)",
            card("FIRING", "red", "p99 latency **2.4 s** (SLO 800 ms)"),
        ),
        (
            "the same alert resolved: updates its card",
            card("RESOLVED", "green", "p99 latency back to **310 ms**"),
        ),
    ]
}

/// The command line of `lark-sink demo` (nothing to choose: everything is embedded).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the demo with its summary on stdout.
pub async fn command(_args: Args) -> Result<ExitCode, DemoError> {
    run(true).await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the demo and returns what happened. `print` writes the human summary to stdout.
pub async fn run(print: bool) -> Result<DemoReport, DemoError> {
    let cluster = MockCluster::new(1)?;
    cluster.create_topic(TOPIC, PARTITIONS, 1)?;
    cluster.create_topic(DLQ, 1, 1)?;
    cluster.create_topic(STATE, PARTITIONS, 1)?;
    let bootstrap = cluster.bootstrap_servers();
    let emulator = Emulator::start(
        EmulatorConfig::default(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await?;

    let samples = sample_records();
    let [firing, resolved] = lifecycle_records();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()?;
    for (i, (_, value)) in samples.iter().enumerate() {
        produce(&producer, &format!("alert-{i}"), value).await?;
    }
    produce(&producer, ALERT_KEY, &firing.1).await?;
    let records = samples.len() + 2;
    if print {
        println!(
            "lark-sink demo: embedded Kafka at {bootstrap}, Lark emulator at {}",
            emulator.base_url()
        );
        println!(
            "produced {records} sample records to '{TOPIC}' ({} of them bad on purpose; one alert fires, then resolves in its card)\n",
            samples.iter().filter(|(d, _)| d.starts_with("BAD")).count()
        );
    }

    let cfg = demo_config(&bootstrap, &emulator.base_url())?;
    let stats = pipeline(cfg, &producer, records, &resolved.1).await?;
    let dead_letters = read_dead_letters(&bootstrap, stats.dead_letters() as usize)?;
    let report = DemoReport {
        records,
        delivered: emulator.messages(),
        dead_letters,
        lifecycle: lifecycle_summary(&emulator),
    };
    if print {
        print_report(&report);
    }
    emulator.shutdown().await;
    // Clients first: a client outliving the mock cluster logs "all brokers down".
    drop(producer);
    drop(cluster);
    Ok(report)
}

/// Produces one record and waits for the mock broker's acknowledgement.
async fn produce(producer: &FutureProducer, key: &str, value: &str) -> Result<(), DemoError> {
    producer
        .send(
            FutureRecord::to(TOPIC).key(key).payload(value),
            Duration::from_secs(10),
        )
        .await
        .map(|_| ())
        .map_err(|(e, _)| DemoError::Kafka(e))
}

/// The connector config of the demo: the mock cluster, the emulator, a DLQ and a state topic.
fn demo_config(bootstrap: &str, lark: &str) -> Result<ConnectorConfig, DemoError> {
    Ok(ConnectorConfig::from_json(
        &json!({"name": "demo", "config": {
            "topics": TOPIC,
            "kafka.bootstrap.servers": bootstrap,
            "kafka.group.id": "lark-sink-demo",
            "lark.app.id": "cli_demo_app",
            "lark.app.secret": "demo-secret",
            "lark.domain": lark,
            "lark.state.topic": STATE,
            "errors.tolerance": "all",
            "errors.deadletterqueue.topic.name": DLQ,
            "errors.retry.timeout": "10000",
            "offset.flush.interval.ms": "500",
        }}),
    )?)
}

/// Runs the real pipeline until the `total` records are finished: every record already produced,
/// then, once those are (the alert's card is in Lark), the alert's `resolved` version, so it
/// updates the card. Returns the pipeline's counters.
async fn pipeline(
    cfg: ConnectorConfig,
    producer: &FutureProducer,
    total: usize,
    resolved: &str,
) -> Result<Arc<SinkStats>, DemoError> {
    let stats = Arc::new(SinkStats::default());
    let watch = stats.clone();
    let late = producer.clone();
    let resolved = resolved.to_string();
    let (produced_tx, produced_rx) = tokio::sync::oneshot::channel();
    let started = Instant::now();
    let done = async move {
        let first = total as u64 - 1;
        finished(&watch, first, started).await;
        let sent = if watch.records_finished() >= first {
            produce(&late, ALERT_KEY, &resolved).await
        } else {
            Ok(()) // timed out: reported below
        };
        let failed = sent.is_err();
        let _ = produced_tx.send(sent);
        if !failed {
            finished(&watch, total as u64, started).await;
        }
    };
    let control = Arc::new(crate::control::Control::default());
    sink::run(cfg, stats.clone(), control, done).await?;
    if let Ok(Err(e)) = produced_rx.await {
        return Err(e);
    }
    if stats.records_finished() < total as u64 {
        return Err(DemoError::Timeout(total));
    }
    Ok(stats)
}

/// Waits until `n` records are finished, or the demo's patience since `started` runs out.
async fn finished(stats: &SinkStats, n: u64, started: Instant) {
    while stats.records_finished() < n && started.elapsed() < PATIENCE {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The keyed alert's card as the emulator holds it: the messages whose first version is the
/// alert's card, and the versions of the first of them.
fn lifecycle_summary(emulator: &EmulatorHandle) -> LifecycleSummary {
    let ours = |m: &AcceptedMessage| title(&m.content).contains(ALERT_NAME);
    let message_ids: Vec<String> = emulator
        .messages()
        .into_iter()
        .filter(ours)
        .map(|m| m.message_id)
        .collect();
    let versions = message_ids
        .first()
        .and_then(|id| emulator.message_view(id))
        .map(|view| {
            view.versions
                .iter()
                .map(|v| CardVersion {
                    op: match v.op {
                        VersionOp::Send => "send",
                        VersionOp::Patch => "patch",
                        VersionOp::Put => "put",
                        VersionOp::Callback => "callback",
                    }
                    .to_string(),
                    template: v.content["header"]["template"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    title: title(&v.content).to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    LifecycleSummary {
        message_key: ALERT_KEY.to_string(),
        message_ids,
        versions,
    }
}

/// A card's header title, empty when it has none.
fn title(card: &serde_json::Value) -> &str {
    card["header"]["title"]["content"]
        .as_str()
        .unwrap_or_default()
}

fn read_dead_letters(
    bootstrap: &str,
    expected: usize,
) -> Result<Vec<DeadLetterSummary>, DemoError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "lark-sink-demo-dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[DLQ])?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < expected && Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let header = |name: &str| {
            m.headers()
                .and_then(|hs| hs.iter().find(|h| h.key == name))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        out.push(DeadLetterSummary {
            source: format!(
                "{}-{}@{}",
                header("__connect.errors.topic"),
                header("__connect.errors.partition"),
                header("__connect.errors.offset")
            ),
            class: header("__connect.errors.class.name"),
            reason: header("__connect.errors.exception.message"),
        });
    }
    Ok(out)
}

fn print_report(r: &DemoReport) {
    println!("Delivered to Lark ({} messages):", r.delivered.len());
    for m in &r.delivered {
        let preview = m
            .content
            .get("text")
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .or_else(|| Some(title(&m.content).to_string()).filter(|t| !t.is_empty()))
            .unwrap_or_else(|| format!("<{} content>", m.msg_type));
        let to = format!("{}:{}", m.receive_id_type, m.receive_id);
        let later = if r.lifecycle.message_ids.contains(&m.message_id) {
            "  (as first sent; its versions below)"
        } else {
            ""
        };
        println!("  ✓ {:<11} {:<26} {preview}{later}", m.msg_type, to);
    }
    print_lifecycle(&r.lifecycle);
    println!(
        "\nDead-lettered to '{DLQ}' ({} records):",
        r.dead_letters.len()
    );
    for d in &r.dead_letters {
        let reason: String = d.reason.chars().take(220).collect();
        println!("  ✗ {:<12} [{}] {}", d.source, d.class, reason);
    }
    let updated = if r.lifecycle.updated_in_place() {
        " (one of them updated in place)"
    } else {
        ""
    };
    println!(
        "\n{} records in, {} messages delivered{updated}, {} dead letters. Nothing lost: every record was delivered or dead-lettered with its reason.",
        r.records,
        r.delivered.len(),
        r.dead_letters.len()
    );
}

/// The keyed alert's part of the summary: one card and its versions, or what happened instead.
fn print_lifecycle(l: &LifecycleSummary) {
    let key = &l.message_key;
    match l.message_ids.as_slice() {
        [] => println!("\nmessageKey '{key}': no card in Lark"),
        [id] if l.updated_in_place() => println!(
            "\nUpdated in place (messageKey '{key}'): one card, {id}, {} versions:",
            l.versions.len()
        ),
        [id] => println!("\nmessageKey '{key}': one card, {id}, never updated:"),
        ids => println!(
            "\nmessageKey '{key}': {} cards ({}), not one updated in place; the first:",
            ids.len(),
            ids.join(", ")
        ),
    }
    for (i, v) in l.versions.iter().enumerate() {
        println!("  {}. {:<6} {:<6} {}", i + 1, v.op, v.template, v.title);
    }
}
