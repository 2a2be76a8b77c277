//! `lark-sink demo`: the real pipeline on embedded defaults, with no external service.
//!
//! An in-process Kafka-protocol broker (librdkafka's mock cluster) and the Lark emulator stand in
//! for the real ones; sample alert records, a few of them bad on purpose, are produced; the same
//! [`crate::sink::run`] that production uses consumes them; and the summary printed at the end is
//! read back from what the emulator accepted and what landed in the dead-letter topic, so it tells
//! the truth about what happened rather than what was intended.
//!
//! One alert also shows keyed messages (`messageKey`, docs/user-guide.md "Updating messages")
//! and the way back (docs/user-guide.md "Receiving events and clicks"): it fires (a red card with
//! an Acknowledge button); once that card is in Lark, the on-call user (Alice) clicks the button
//! in the emulator, which pushes the click over the long connection to the events pipeline
//! ([`crate::inbound::run`], beside the sink as `lark-sink run` has it) and so into the events
//! topic; a responder standing for the user's own consumer of that topic (`responder.rs`, no part
//! of the connector) answers with a keyed update ("acknowledged by Alice", an orange card) to the
//! source topic; and, once that is in Lark, the alert resolves (a green card). The connector
//! applies both to the same card in place, remembering the key in a state topic. The summary reads
//! the card's versions back from the emulator and the click back from the events topic (`ack.rs`).

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
use tokio_util::sync::CancellationToken;

use crate::config::ConnectorConfig;
use crate::emulator::{AcceptedMessage, Emulator, EmulatorConfig, EmulatorHandle, VersionOp};
use crate::sink;
use crate::telemetry::SinkStats;

mod ack;
pub mod responder;
mod samples;

pub use ack::{ClickSummary, ON_CALL_USER, TOAST};
pub use responder::Acknowledgement;
pub use samples::{lifecycle_records, sample_records};

/// The topic the sample records are produced to.
const TOPIC: &str = "alerts";
/// The dead-letter topic the bad samples end up in (read back for the summary).
const DLQ: &str = "alerts-dlq";
/// `lark.state.topic`: where the connector remembers which Lark message the keyed alert is.
const STATE: &str = "alerts-lark-state";
/// `lark.events.topic`: where the events pipeline writes the clicks on the alert's card (one
/// partition: the summary reads it back from the start).
pub const EVENTS: &str = "alerts-lark-events";
/// Partitions of the source topic (and of the state topic, one state partition per source one).
const PARTITIONS: i32 = 3;
/// How long the pipeline may take to finish the samples and the alert's round trip before the
/// demo gives up.
const PATIENCE: Duration = Duration::from_secs(60);

/// The `messageKey` of the alert that fires, is acknowledged and resolves in the same card (also
/// the Kafka key of its three records, so they share a partition, as keyed messages need).
pub const ALERT_KEY: &str = "checkout-latency/checkout-1";
/// The alert's name, which its card titles carry: how the summary finds the card in the emulator.
const ALERT_NAME: &str = "CheckoutLatency";
/// The chat the alert's card goes to (a keyed message is one per key and receiver).
const ALERT_CHAT: &str = "oc_ops";
/// The text of the alert card's button that calls back (`{"action": "ack"}`).
pub const ACK_BUTTON: &str = "Acknowledge";

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
    #[error(transparent)]
    Events(#[from] crate::inbound::InboundError),
    #[error("the emulator could not push the click: {0}")]
    Click(#[from] crate::emulator::EventsError),
    #[error("Lark (the emulator) got no answer 200 to the click {event_id}: {detail}")]
    ClickNotAnswered { event_id: String, detail: String },
    #[error(transparent)]
    Responder(#[from] responder::ResponderError),
    #[error("the events topic '{topic}' holds a record that is not a Lark event: {detail}")]
    EventRecord { topic: String, detail: String },
    #[error("the alert's record is finished but its card is not in Lark (the emulator has no message titled {ALERT_NAME}): see the dead letters")]
    NoAlertCard,
    #[error("the demo gave up after {secs} s waiting for {0}", secs = PATIENCE.as_secs())]
    Stalled(&'static str),
}

/// The alert that fired, was acknowledged and resolved, as the emulator holds it: which messages
/// carry its card and what the card went through. One message with a red, an orange and a green
/// version is "updated in place".
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

/// What the demo did, read back from the emulator, the DLQ topic and the events topic.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Records produced to the source topic: the samples, the alert's two versions and the
    /// responder's acknowledgement.
    pub records: usize,
    /// The messages the emulator accepted (an updated message once, as first sent).
    pub delivered: Vec<AcceptedMessage>,
    pub dead_letters: Vec<DeadLetterSummary>,
    /// The keyed alert's card.
    pub lifecycle: LifecycleSummary,
    /// Every record of the events topic, with Lark's answer to it (the emulator's record).
    pub clicks: Vec<ClickSummary>,
    /// What the responder says it did with the click (its own account; the card's versions and
    /// `clicks` are the read-back).
    pub acknowledgement: Acknowledgement,
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
    cluster.create_topic(EVENTS, 1, 1)?;
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
    // The samples, the alert firing and resolved, and the responder's acknowledgement.
    let records = samples.len() + 3;
    if print {
        println!(
            "lark-sink demo: embedded Kafka at {bootstrap}, Lark emulator at {}",
            emulator.base_url()
        );
        println!(
            "produced {} sample records to '{TOPIC}' ({} of them bad on purpose; one alert fires, is acknowledged from its card's button, then resolves in the same card)\n",
            samples.len() + 2,
            samples.iter().filter(|(d, _)| d.starts_with("BAD")).count()
        );
    }

    let cfg = demo_config(&bootstrap, &emulator.base_url())?;
    let demo = Pipeline {
        producer: &producer,
        emulator: &emulator,
        bootstrap: &bootstrap,
        samples: samples.len(),
        resolved: &resolved.1,
    };
    let (stats, acknowledgement) = demo.run(cfg).await?;
    let dead_letters = read_dead_letters(&bootstrap, stats.dead_letters() as usize)?;
    let report = DemoReport {
        records,
        delivered: emulator.messages(),
        dead_letters,
        lifecycle: lifecycle_summary(&emulator),
        clicks: ack::read_clicks(&bootstrap, EVENTS, &emulator)?,
        acknowledgement,
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

/// Produces one record to the source topic and waits for the mock broker's acknowledgement.
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

/// The connector config of the demo: the mock cluster, the emulator, a DLQ, a state topic, and
/// the events topic over the long connection (`lark.events.mode` defaults to `websocket`), with
/// the toast the clicking user sees.
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
            "lark.events.topic": EVENTS,
            "lark.events.card.toast": TOAST,
            "errors.tolerance": "all",
            "errors.deadletterqueue.topic.name": DLQ,
            "errors.retry.timeout": "10000",
            "offset.flush.interval.ms": "500",
        }}),
    )?)
}

/// The real pipelines and the demo's script for them.
struct Pipeline<'a> {
    producer: &'a FutureProducer,
    emulator: &'a EmulatorHandle,
    bootstrap: &'a str,
    /// How many sample records were produced before the alert.
    samples: usize,
    /// The alert's resolved version.
    resolved: &'a str,
}

impl Pipeline<'_> {
    /// Runs the sink and, beside it, the events pipeline (as `lark-sink run` does with
    /// `lark.events.topic`) until [`Self::script`] is done. Returns the sink's counters and what
    /// the responder did.
    async fn run(
        &self,
        cfg: ConnectorConfig,
    ) -> Result<(Arc<SinkStats>, Acknowledgement), DemoError> {
        let stats = Arc::new(SinkStats::default());
        let events_stop = CancellationToken::new();
        let events_ended = CancellationToken::new();
        let events = {
            let (cfg, stop, ended) = (cfg.clone(), events_stop.clone(), events_ended.clone());
            tokio::spawn(async move {
                let done = crate::inbound::run(&cfg, stop).await;
                ended.cancel();
                done
            })
        };
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let watch = stats.clone();
        let ended = events_ended.clone();
        let script = async move {
            let _ = done_tx.send(self.script(&watch, &ended).await);
        };
        let control = Arc::new(crate::control::Control::default());
        let sunk = sink::run(cfg, stats.clone(), control, script).await;
        events_stop.cancel();
        let events = events.await;
        sunk?;
        // The events pipeline's own error explains a click that never came.
        if let Ok(Err(e)) = events {
            return Err(e.into());
        }
        let acknowledgement = done_rx
            .await
            .map_err(|_| DemoError::Stalled("the sink to run the script"))??;
        Ok((stats, acknowledgement))
    }

    /// What the alerting system, the on-call user and the responder do, each step once the one
    /// before is in Lark: the samples and the alert's firing card are finished; Alice clicks
    /// Acknowledge; the responder (started first, as it would be running already) answers the
    /// click with the acknowledged version, which the sink finishes; then the alert resolves.
    async fn script(
        &self,
        stats: &SinkStats,
        events_ended: &CancellationToken,
    ) -> Result<Acknowledgement, DemoError> {
        let started = Instant::now();
        let deadline = started + PATIENCE;
        let responder = tokio::spawn(responder::acknowledge_one_click(
            self.bootstrap.to_string(),
            EVENTS.to_string(),
            TOPIC.to_string(),
            PATIENCE,
        ));
        let mut responder = AbortOnDrop(responder);
        let fired = self.samples as u64 + 1;
        finished(stats, fired, started).await;
        if stats.records_finished() < fired {
            return Err(DemoError::Stalled("the samples and the alert's card"));
        }
        let card = alert_message_id(self.emulator).ok_or(DemoError::NoAlertCard)?;
        ack::click_acknowledge(self.emulator, &card, deadline, events_ended).await?;
        let acknowledgement = match (&mut responder.0).await {
            Ok(answered) => answered?,
            Err(_) => return Err(DemoError::Stalled("the responder (its task ended)")),
        };
        finished(stats, fired + 1, started).await;
        if stats.records_finished() < fired + 1 {
            return Err(DemoError::Stalled("the acknowledged version of the card"));
        }
        produce(self.producer, ALERT_KEY, self.resolved).await?;
        finished(stats, fired + 2, started).await;
        if stats.records_finished() < fired + 2 {
            return Err(DemoError::Stalled("the resolved version of the card"));
        }
        Ok(acknowledgement)
    }
}

/// A task stopped when the script stops early (the responder would otherwise outlive the demo).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits until `n` records are finished, or the demo's patience since `started` runs out.
async fn finished(stats: &SinkStats, n: u64, started: Instant) {
    while stats.records_finished() < n && started.elapsed() < PATIENCE {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The messages whose first version is the alert's card, as the emulator holds them.
fn alert_message_ids(emulator: &EmulatorHandle) -> Vec<String> {
    emulator
        .messages()
        .into_iter()
        .filter(|m| title(&m.content).contains(ALERT_NAME))
        .map(|m| m.message_id)
        .collect()
}

/// The alert's card in Lark, the one the on-call user sees (the first, should there be more).
fn alert_message_id(emulator: &EmulatorHandle) -> Option<String> {
    alert_message_ids(emulator).into_iter().next()
}

/// The keyed alert's card as the emulator holds it: the messages whose first version is the
/// alert's card, and the versions of the first of them.
fn lifecycle_summary(emulator: &EmulatorHandle) -> LifecycleSummary {
    let message_ids = alert_message_ids(emulator);
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
        let header = |name: &str| header(&m, name).unwrap_or_default();
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

/// Record `m`'s header `name`, as text (the demo's topics carry text headers only).
fn header(m: &impl Message, name: &str) -> Option<String> {
    m.headers()
        .and_then(|hs| hs.iter().find(|h| h.key == name))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
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
    ack::print_round_trip(&r.clicks, &r.acknowledgement);
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
