//! `lark-sink check`: the connection test to run before going live.
//!
//! Tapdata and Kafka Connect users expect a "test connection" button; this is that, with the
//! fix for each failure spelt out. It loads the config exactly as `run` does, then asks the
//! broker and Lark, each with a short timeout, and reports one line per check:
//!
//! | id | what is asked |
//! |---|---|
//! | `broker` | a metadata request; librdkafka's own reason on failure (refused, TLS, SASL) |
//! | `topic` | each source topic (or the `topics.regex` matches) exists, with partition counts |
//! | `dlq` | the dead-letter topic exists (`errors.tolerance=all` only) |
//! | `dlq-write` | the dead-letter topic accepts a record (a marked probe, see below) |
//! | `credentials` | a tenant token is minted (lark-api.md §1.4: 10003 app id, 10014 secret) |
//! | `send-scope` | the send API accepts the app's scopes (§2.1, 99991672) |
//! | `bot` | the bot ability is on (§3: 230006) |
//! | `contact-scope` | `contact:user.id:readonly`, needed by `receiveType: "phone"` (§5) |
//! | `webhook` | each custom-bot webhook's token and signature (§8), without posting |
//!
//! Nothing is delivered to anyone. Three decisions make that true:
//!
//! - **Bot ability and sending scope** are probed with a send to an open_id that cannot exist
//!   (`ou_` + characters no real open_id has; real ones are 32 hex digits). The gateway checks
//!   scopes first (99991672), the IM service then refuses a disabled bot (230006, "Bot ability
//!   is not activated", §3) before it resolves the receiver, and a working bot gets the receiver
//!   refused (230001 `ext=invalid receive_id`, 230034, or 99992351). lark-api.md does not
//!   document this order; the emulator models it, and any other answer is reported as a
//!   warning, never as a pass.
//! - **Webhooks** get a body without `msg_type`: Lark checks the token (19001) and the
//!   signature (19021) before the message (19002 "msg_type need"), so 19002 proves both without
//!   posting. Because §8 does not document that order either, a signed webhook gets a second,
//!   control probe with a wrong signature: only if Lark refuses *that* one with 19021 is the
//!   first answer proof that the secret is right; otherwise the signature is reported as not
//!   verified (a warning). Keyword checks (19024) come after the message check and cannot be
//!   tested without posting.
//! - **DLQ writability** can only be proven by writing. The probe is one small record, marked
//!   with the header `lark-sink.check: probe` and key `lark-sink-check`, whose value says what it
//!   is; DLQ readers and replay tools should skip it (documented in docs/operations.md).
//!   `--no-write` skips the write and only checks that the topic exists.
//!
//! Secrets never reach the output: webhooks are named, not shown (their URL holds the token),
//! and Lark and librdkafka answers carry no credentials.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use serde_json::{json, Value};

use crate::config::{ConnectorConfig, Tolerance, Topics, WebhookConfig};
use crate::lark::client::read_response;
use crate::lark::{LarkClient, LarkError};

/// The check ids, in report order (also the values `--skip` accepts).
pub const CHECK_IDS: &[&str] = &[
    "broker",
    "topic",
    "dlq",
    "dlq-write",
    "credentials",
    "send-scope",
    "bot",
    "contact-scope",
    "webhook",
];

/// The open_id of the bot probe: `ou_` and characters (`-`, letters past `f`) that no real
/// open_id (`ou_` + 32 hex digits) contains, so the probe can never reach anyone.
pub const PROBE_OPEN_ID: &str = "ou_lark-sink-check-no-such-user";
/// The mobile of the contact-scope probe: a NANP number reserved for fiction (555-0100).
/// batch_get_id is read-only and outside the monthly quota (lark-api.md §4, §5).
pub const PROBE_MOBILE: &str = "+12025550100";
/// Header (and value) marking the DLQ probe record.
pub const PROBE_HEADER: &str = "lark-sink.check";

/// The command line of `lark-sink check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Connector config file (see docs/configuration.md).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Time limit of each check, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Do not write the probe record that proves the dead-letter topic is writable.
    #[arg(long)]
    pub no_write: bool,
    /// Checks not to run, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(CHECK_IDS))]
    pub skip: Vec<String>,
}

/// Prints the report and returns its exit code: 0 if nothing failed, 1 if a check failed, 2 if
/// the config itself is invalid (printed here, so nothing is left for the caller to report).
pub async fn command(args: Args) -> ExitCode {
    // The config is loaded as `run` loads it, so its errors read the same; exit code 2 tells
    // them apart from a failed check.
    let cfg = match ConnectorConfig::from_file(&args.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "lark-sink check: connector '{}' ({})",
        cfg.name,
        args.config.display()
    );
    let opts = CheckOptions {
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
        write_probe: !args.no_write,
        skip: args.skip,
    };
    let report = run(&cfg, &opts, |f| println!("{f}")).await;
    println!("{}", report.summary());
    match report.passed() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}

#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Per check (each Lark request, the broker metadata, the probe write).
    pub timeout: Duration,
    /// Write the probe record to the DLQ (`--no-write` turns it off).
    pub write_probe: bool,
    /// Check ids not to run (reported as SKIP).
    pub skip: Vec<String>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            timeout: Duration::from_secs(10),
            write_probe: true,
            skip: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// The answer was unexpected or only partly conclusive; does not fail the run.
    Warn,
    Fail,
    Skip,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// One line of the report (and, for failures, the fix).
#[derive(Debug, Clone)]
pub struct Finding {
    pub id: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<5} {:<14} {}",
            self.status.label(),
            self.id,
            self.detail
        )?;
        if let Some(fix) = &self.fix {
            write!(f, "\n{:<20} fix: {fix}", "")?;
        }
        Ok(())
    }
}

fn finding(id: &'static str, status: Status, detail: impl Into<String>) -> Finding {
    Finding {
        id,
        status,
        detail: detail.into(),
        fix: None,
    }
}

fn fail(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        id,
        status: Status::Fail,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// All findings of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn count(&self, status: Status) -> usize {
        self.findings.iter().filter(|f| f.status == status).count()
    }
    pub fn passed(&self) -> bool {
        self.count(Status::Fail) == 0
    }
    pub fn summary(&self) -> String {
        format!(
            "{} ok, {} failed, {} warnings, {} skipped",
            self.count(Status::Ok),
            self.count(Status::Fail),
            self.count(Status::Warn),
            self.count(Status::Skip)
        )
    }
}

/// Runs every check in order; `emit` is called with each finding as soon as it is known.
pub async fn run(
    cfg: &ConnectorConfig,
    opts: &CheckOptions,
    mut emit: impl FnMut(&Finding),
) -> Report {
    let mut report = Report::default();
    let mut push = |f: Finding| {
        emit(&f);
        report.findings.push(f);
    };
    let skipped = |id: &str| opts.skip.iter().any(|s| s == id);
    let skip_line = |id: &'static str| finding(id, Status::Skip, "skipped (--skip)");

    // Kafka: one metadata answer serves the broker, topic and DLQ checks.
    let metadata = if skipped("broker") {
        push(skip_line("broker"));
        None
    } else {
        let (f, md) = check_broker(cfg, opts.timeout).await;
        push(f);
        md
    };
    match &metadata {
        _ if skipped("topic") => push(skip_line("topic")),
        None => push(finding(
            "topic",
            Status::Skip,
            "not checked: needs the broker",
        )),
        Some(md) => check_topics(cfg, md).into_iter().for_each(&mut push),
    }
    // Whether the DLQ is there: None when it could not be looked at.
    let dlq_exists: Option<bool> = match (&cfg.errors.dlq_topic, cfg.errors.tolerance) {
        (None, _) => {
            push(finding(
                "dlq",
                Status::Skip,
                "no dead-letter topic configured (errors.tolerance=none: a record that cannot be delivered stops the connector)",
            ));
            None
        }
        (Some(t), Tolerance::None) => {
            push(finding(
                "dlq",
                Status::Skip,
                format!("'{t}' is configured but not used: errors.tolerance=none"),
            ));
            None
        }
        (Some(_), Tolerance::All) => match &metadata {
            None => {
                push(finding(
                    "dlq",
                    Status::Skip,
                    "not checked: needs the broker",
                ));
                None
            }
            Some(md) => {
                let f = check_dlq_exists(cfg, md);
                let ok = f.status == Status::Ok;
                if skipped("dlq") {
                    push(skip_line("dlq"));
                } else {
                    push(f);
                }
                Some(ok)
            }
        },
    };
    if cfg.errors.tolerance == Tolerance::All && cfg.errors.dlq_topic.is_some() {
        if skipped("dlq-write") {
            push(skip_line("dlq-write"));
        } else if !opts.write_probe {
            push(finding(
                "dlq-write",
                Status::Skip,
                "not checked (--no-write): only a written record proves the topic is writable",
            ));
        } else if dlq_exists.is_none() {
            push(finding(
                "dlq-write",
                Status::Skip,
                "not checked: needs the broker",
            ));
        } else if dlq_exists == Some(false) {
            push(finding(
                "dlq-write",
                Status::Skip,
                "not checked: the topic is not there",
            ));
        } else {
            push(check_dlq_write(cfg, opts.timeout).await);
        }
    }

    // Lark: the app (token, scopes, bot), then each webhook.
    let mut lark = cfg.lark.clone();
    lark.request_timeout = lark.request_timeout.min(opts.timeout);
    let app_ids = ["credentials", "send-scope", "bot", "contact-scope"];
    match LarkClient::new(&lark) {
        Err(e) => {
            for id in app_ids {
                push(fail(
                    id,
                    format!("cannot build the HTTP client: {e}"),
                    "a TLS or system configuration problem on this host",
                ));
            }
        }
        Ok(_) if cfg.lark.app_id.is_empty() => {
            for id in app_ids {
                push(finding(
                    id,
                    Status::Skip,
                    "no Lark app configured (webhook-only connector)",
                ));
            }
        }
        Ok(client) => {
            let token_ok = if skipped("credentials") {
                push(skip_line("credentials"));
                true // the later checks find out for themselves
            } else {
                let f = check_credentials(&client, cfg).await;
                let ok = f.status == Status::Ok;
                push(f);
                ok
            };
            let needs_token = |id: &'static str| {
                finding(
                    id,
                    Status::Skip,
                    "not checked: needs a tenant token (see credentials)",
                )
            };
            if !token_ok {
                for id in ["send-scope", "bot", "contact-scope"] {
                    push(needs_token(id));
                }
            } else {
                if skipped("send-scope") && skipped("bot") {
                    push(skip_line("send-scope"));
                    push(skip_line("bot"));
                } else {
                    let (scope, bot) = check_bot(&client).await;
                    push(if skipped("send-scope") {
                        skip_line("send-scope")
                    } else {
                        scope
                    });
                    push(if skipped("bot") {
                        skip_line("bot")
                    } else {
                        bot
                    });
                }
                if skipped("contact-scope") {
                    push(skip_line("contact-scope"));
                } else {
                    push(check_contact_scope(&client).await);
                }
            }
        }
    }
    if cfg.lark.webhooks.is_empty() {
        push(finding(
            "webhook",
            Status::Skip,
            "no custom-bot webhooks configured",
        ));
    } else if skipped("webhook") {
        push(skip_line("webhook"));
    } else {
        match reqwest::Client::builder()
            .timeout(lark.request_timeout)
            .connect_timeout(lark.request_timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("lark-sink/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Err(e) => push(fail(
                "webhook",
                format!("cannot build the HTTP client: {e}"),
                "a TLS or system configuration problem on this host",
            )),
            Ok(http) => {
                for (name, hook) in &cfg.lark.webhooks {
                    push(check_webhook(&http, name, hook).await);
                }
            }
        }
    }
    report
}

// ----------------------------------------------------------------------------------- Kafka

/// Collects librdkafka's global errors (the only place the *reason* of a failed connection,
/// TLS handshake or SASL login is reported) and keeps its log lines off the terminal.
#[derive(Default)]
struct Capture {
    errors: Mutex<Vec<(Option<RDKafkaErrorCode>, String)>>,
}

impl Capture {
    fn errors(&self) -> Vec<(Option<RDKafkaErrorCode>, String)> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }
    /// librdkafka gave up on every broker, or a login / handshake failed: waiting longer will
    /// not help.
    fn conclusive(&self) -> bool {
        self.errors().iter().any(|(c, _)| {
            matches!(
                c,
                Some(
                    RDKafkaErrorCode::AllBrokersDown
                        | RDKafkaErrorCode::Authentication
                        | RDKafkaErrorCode::SSL
                        | RDKafkaErrorCode::SaslAuthenticationFailed
                )
            )
        })
    }
}

struct CheckContext(Arc<Capture>);

impl ClientContext for CheckContext {
    fn log(&self, _level: RDKafkaLogLevel, _fac: &str, _message: &str) {}
    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut errors) = self.0.errors.lock() {
            let code = error.rdkafka_error_code();
            if !errors.iter().any(|(_, r)| r == reason) {
                errors.push((code, reason.to_string()));
            }
        }
    }
}

impl ConsumerContext for CheckContext {}

/// The client config of the check: the connector's own `kafka.*` (so TLS and SASL settings are
/// the ones `run` uses), never creating topics by asking about them.
fn kafka_config(kafka: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in kafka {
        c.set(k, v);
    }
    c.set("allow.auto.create.topics", "false");
    c
}

/// `broker`: a metadata request for all topics, retried in short steps until the deadline or
/// until librdkafka says why it cannot connect.
async fn check_broker(cfg: &ConnectorConfig, timeout: Duration) -> (Finding, Option<Metadata>) {
    let servers = cfg
        .kafka
        .get("bootstrap.servers")
        .cloned()
        .unwrap_or_default();
    let kafka = cfg.kafka.clone();
    let result = tokio::task::spawn_blocking(move || {
        let capture = Arc::new(Capture::default());
        let consumer: BaseConsumer<CheckContext> = match kafka_config(&kafka)
            .set_log_level(RDKafkaLogLevel::Error)
            .create_with_context(CheckContext(capture.clone()))
        {
            Ok(c) => c,
            Err(e) => return (Err(format!("cannot create a Kafka client: {e}")), capture),
        };
        let deadline = Instant::now() + timeout;
        loop {
            let step = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(500));
            match consumer.fetch_metadata(None, step) {
                Ok(md) => return (Ok(md), capture),
                Err(e) => {
                    // Serves the queued error events, which call `CheckContext::error`.
                    let _ = consumer.poll(Duration::ZERO);
                    if capture.conclusive() || Instant::now() >= deadline {
                        return (Err(e.to_string()), capture);
                    }
                }
            }
        }
    })
    .await;
    let (result, capture) = match result {
        Ok(r) => r,
        Err(e) => {
            return (
                fail(
                    "broker",
                    format!("the check panicked: {e}"),
                    "report this as a bug",
                ),
                None,
            )
        }
    };
    match result {
        Ok(md) => {
            let f = finding(
                "broker",
                Status::Ok,
                format!(
                    "{servers}: reachable, {} broker(s), {} topics visible",
                    md.brokers().len(),
                    md.topics().len()
                ),
            );
            (f, Some(md))
        }
        Err(e) => {
            let errors = capture.errors();
            let has = |code: RDKafkaErrorCode| errors.iter().any(|(c, _)| *c == Some(code));
            let reasons: Vec<&str> = errors.iter().map(|(_, r)| r.as_str()).take(2).collect();
            let silent = reasons.is_empty();
            let reason = if silent {
                format!("{e}; the broker never answered")
            } else {
                reasons.join("; ")
            };
            let fix = if has(RDKafkaErrorCode::Authentication)
                || has(RDKafkaErrorCode::SaslAuthenticationFailed)
            {
                "the broker refused the login: check kafka.sasl.mechanism, kafka.sasl.username and kafka.sasl.password (and that this principal exists on the cluster)"
            } else if has(RDKafkaErrorCode::SSL) {
                "the TLS handshake failed: check kafka.security.protocol (SSL / SASL_SSL must match the listener), kafka.ssl.ca.location (the broker's CA) and the host name in kafka.bootstrap.servers (it must match the certificate)"
            } else if silent {
                "a listener that accepts the connection but never answers usually speaks another protocol: check that kafka.security.protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) matches the listener on kafka.bootstrap.servers; otherwise check the address and the network"
            } else {
                "check kafka.bootstrap.servers (host:port of a listener reachable from this host: DNS, firewall, advertised.listeners), and kafka.security.protocol if that listener expects TLS or SASL"
            };
            (
                fail(
                    "broker",
                    format!("{servers}: no metadata (time limit {timeout:?}): {reason}"),
                    fix,
                ),
                None,
            )
        }
    }
}

/// Partitions of `topic` in the metadata, or `None` if the cluster does not show it.
fn partitions(md: &Metadata, topic: &str) -> Option<Result<(usize, usize), String>> {
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    if let Some(e) = t.error() {
        return Some(Err(RDKafkaErrorCode::from(e).to_string()));
    }
    let leaderless = t
        .partitions()
        .iter()
        .filter(|p| p.leader() < 0 || p.error().is_some())
        .count();
    Some(Ok((t.partitions().len(), leaderless)))
}

/// `topic`: one line per listed topic, or one line for the regex.
fn check_topics(cfg: &ConnectorConfig, md: &Metadata) -> Vec<Finding> {
    let describe = |name: &str, n: usize, leaderless: usize| -> Finding {
        if leaderless > 0 {
            Finding {
                id: "topic",
                status: Status::Warn,
                detail: format!("{name}: {n} partitions, {leaderless} without a leader"),
                fix: Some("the broker(s) leading them are down: see the cluster's health".into()),
            }
        } else {
            finding("topic", Status::Ok, format!("{name}: {n} partition(s)"))
        }
    };
    match &cfg.topics {
        Topics::List(list) => list
            .iter()
            .map(|name| match partitions(md, name) {
                Some(Ok((n, leaderless))) if n > 0 => describe(name, n, leaderless),
                Some(Ok(_)) => fail(
                    "topic",
                    format!("{name}: has no partitions"),
                    "the topic is being created or deleted; wait, or recreate it",
                ),
                Some(Err(e)) => fail(
                    "topic",
                    format!("{name}: the broker answered {e}"),
                    format!("if it is an authorization error, grant the connector's principal DESCRIBE and READ on topic '{name}' and READ on group '{}'", cfg.kafka.get("group.id").map(String::as_str).unwrap_or("?")),
                ),
                None => fail(
                    "topic",
                    format!("{name}: no such topic on the cluster (or this principal may not DESCRIBE it)"),
                    format!("create topic '{name}', or correct 'topics' (names are case-sensitive)"),
                ),
            })
            .collect(),
        Topics::Regex(re) => {
            // As librdkafka matches the subscription: anchored at the start only.
            let compiled = crate::config::topics_regex_matcher(re);
            let Ok(compiled) = compiled else {
                return vec![fail(
                    "topic",
                    format!("topics.regex '{re}' is not a valid regular expression"),
                    "correct 'topics.regex'",
                )];
            };
            let mut matched: Vec<(&str, usize)> = md
                .topics()
                .iter()
                .filter(|t| compiled.is_match(t.name()))
                .map(|t| (t.name(), t.partitions().len()))
                .collect();
            matched.sort();
            if matched.is_empty() {
                return vec![fail(
                    "topic",
                    format!("topics.regex '{re}' matches no topic on the cluster"),
                    "correct 'topics.regex' (it is matched from the start of each name), or create a matching topic; the connector would subscribe and wait for one",
                )];
            }
            let total: usize = matched.iter().map(|(_, n)| n).sum();
            let names: Vec<String> = matched
                .iter()
                .take(10)
                .map(|(t, n)| format!("{t} ({n})"))
                .collect();
            let more = if matched.len() > 10 {
                format!(", and {} more", matched.len() - 10)
            } else {
                String::new()
            };
            vec![finding(
                "topic",
                Status::Ok,
                format!(
                    "topics.regex '{re}' matches {} topic(s), {total} partition(s): {}{more}",
                    matched.len(),
                    names.join(", ")
                ),
            )]
        }
    }
}

/// `dlq`: the dead-letter topic exists. A missing DLQ is a failure even though `run` tries to
/// create it at start-up: a topic created implicitly gets broker defaults (retention,
/// replication), and if the principal may not create topics the connector cannot start.
fn check_dlq_exists(cfg: &ConnectorConfig, md: &Metadata) -> Finding {
    let topic = cfg.errors.dlq_topic.as_deref().unwrap_or_default();
    match partitions(md, topic) {
        Some(Ok((n, _))) if n > 0 => finding(
            "dlq",
            Status::Ok,
            format!("{topic}: exists, {n} partition(s)"),
        ),
        Some(Err(e)) => fail(
            "dlq",
            format!("{topic}: the broker answered {e}"),
            format!("if it is an authorization error, grant the connector's principal DESCRIBE and WRITE on topic '{topic}'"),
        ),
        _ => fail(
            "dlq",
            format!("{topic}: no such topic on the cluster (errors.deadletterqueue.topic.name)"),
            format!(
                "create it with the retention you want for failed records (e.g. kafka-topics.sh --create --topic {topic} --partitions {}), or correct errors.deadletterqueue.topic.name; `run` would try to create it at start-up with broker defaults, which needs the CreateTopics permission",
                cfg.errors.dlq_partitions
            ),
        ),
    }
}

/// `dlq-write`: one marked probe record, acknowledged by all in-sync replicas (`acks=all`,
/// as real dead letters are).
async fn check_dlq_write(cfg: &ConnectorConfig, timeout: Duration) -> Finding {
    let topic = cfg.errors.dlq_topic.clone().unwrap_or_default();
    let capture = Arc::new(Capture::default());
    let mut c = crate::dlq::producer_config(&cfg.kafka);
    for k in ["acks", "request.required.acks"] {
        c.remove(k);
    }
    let producer: FutureProducer<CheckContext> = match c
        .set("acks", "all")
        .set("allow.auto.create.topics", "false")
        .set("message.timeout.ms", timeout.as_millis().max(1).to_string())
        .set_log_level(RDKafkaLogLevel::Error)
        .create_with_context(CheckContext(capture.clone()))
    {
        Ok(p) => p,
        Err(e) => {
            return fail(
                "dlq-write",
                format!("cannot create a Kafka producer: {e}"),
                "check the kafka.* producer settings",
            )
        }
    };
    let value = json!({
        PROBE_HEADER: "probe",
        "connector": cfg.name,
        "note": "written by `lark-sink check` to prove this dead-letter topic is writable; not a failed record, safe to ignore",
    })
    .to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: PROBE_HEADER,
            value: Some("probe"),
        })
        .insert(Header {
            key: "lark-sink.check.connector",
            value: Some(cfg.name.as_str()),
        });
    let record = FutureRecord::to(&topic)
        .key("lark-sink-check")
        .payload(value.as_str())
        .headers(headers);
    match producer.send(record, timeout).await {
        Ok(d) => finding(
            "dlq-write",
            Status::Ok,
            format!(
                "{topic}: accepted a probe record (partition {}, offset {}; header {PROBE_HEADER}=probe)",
                d.partition, d.offset
            ),
        ),
        Err((e, _)) => {
            let reasons: Vec<String> = capture.errors().into_iter().map(|(_, r)| r).collect();
            let authz = matches!(
                e.rdkafka_error_code(),
                Some(RDKafkaErrorCode::TopicAuthorizationFailed)
                    | Some(RDKafkaErrorCode::ClusterAuthorizationFailed)
            );
            let fix = if authz {
                format!("grant the connector's principal WRITE on topic '{topic}' (and IDEMPOTENT_WRITE on the cluster if your brokers require it)")
            } else {
                format!("the broker did not acknowledge the write with acks=all: check that topic '{topic}' has enough in-sync replicas (min.insync.replicas) and that its leaders are up")
            };
            let why = if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join("; "))
            };
            fail("dlq-write", format!("{topic}: write refused: {e}{why}"), fix)
        }
    }
}

// ------------------------------------------------------------------------------------ Lark

/// `credentials`: mint a tenant token (lark-api.md §1.4) and name the key to fix.
async fn check_credentials(client: &LarkClient, cfg: &ConnectorConfig) -> Finding {
    let app = &cfg.lark.app_id;
    match client.tokens().get().await {
        Ok(_) => finding(
            "credentials",
            Status::Ok,
            format!("tenant token minted for app {app}"),
        ),
        Err(e) => {
            let console = "the developer console (Credentials & Basic Info)";
            let fix = match e.code {
                Some(10003) => format!("lark.app.id '{app}' is not a self-built app of this tenant: copy the App ID from {console}; check lark.domain too (feishu vs lark are separate platforms)"),
                Some(10014) | Some(10015) | Some(20002) => format!("lark.app.secret is not the secret of app {app}: copy the App Secret from {console} (it changes when someone resets it)"),
                Some(99991543) => format!("lark.app.id or lark.app.secret does not exist: copy both from {console}"),
                Some(99991662) | Some(99991673) => "the app is disabled or not installed in this tenant: a tenant admin must enable it (admin console, Workplace > App management)".into(),
                _ => return lark_unreachable("credentials", &e, cfg),
            };
            fail("credentials", format!("token refused: {e}"), fix)
        }
    }
}

/// A Lark call that failed without a Lark answer (or with one we did not expect).
fn lark_unreachable(id: &'static str, e: &LarkError, cfg: &ConnectorConfig) -> Finding {
    let base = &cfg.lark.base_url;
    match (e.code, e.http_status) {
        (None, None) => fail(
            id,
            format!("cannot reach Lark at {base}: {e}"),
            "check lark.domain and this host's network (DNS, firewall, HTTPS_PROXY)",
        ),
        (None, Some(_)) => fail(
            id,
            format!("{base} did not answer like Lark: {e}"),
            "check lark.domain (feishu, lark or the base URL of the OpenAPI, without /open-apis) and any proxy in between",
        ),
        (Some(_), _) => Finding {
            id,
            status: Status::Warn,
            detail: format!("unexpected answer: {e}"),
            fix: Some("see Lark's error code documentation; run check again later if it is transient".into()),
        },
    }
}

/// `send-scope` and `bot`: one send to [`PROBE_OPEN_ID`], which cannot exist (see the module
/// docs for why this delivers nothing and what each answer proves).
async fn check_bot(client: &LarkClient) -> (Finding, Finding) {
    let uuid = format!("ls-check-{:016x}", rand::random::<u64>());
    let content = json!({"text": "lark-sink check probe (addressed to no one)"}).to_string();
    let result = client
        .send_message("open_id", PROBE_OPEN_ID, "text", &content, &uuid)
        .await;
    let scope_ok = || {
        finding(
            "send-scope",
            Status::Ok,
            "the send API accepted the app's scopes",
        )
    };
    let not_reached = |why: &str| finding("bot", Status::Skip, format!("not checked: {why}"));
    match result {
        Ok(ok) => (
            scope_ok(),
            Finding {
                id: "bot",
                status: Status::Warn,
                detail: format!(
                    "Lark accepted a message to the made-up receiver {PROBE_OPEN_ID} (message_id {}): the bot can send, but this answer is not what Lark documents",
                    ok.message_id
                ),
                fix: None,
            },
        ),
        Err(e) => match e.code {
            Some(99991672) => (
                fail(
                    "send-scope",
                    format!("the app may not send messages: {e}"),
                    "in the developer console (Permissions & Scopes) add im:message:send_as_bot (\"Send messages as an app\"; im:message also works), then create and publish a new app version",
                ),
                not_reached("the request stopped at the scope check"),
            ),
            Some(230006) => (
                scope_ok(),
                fail(
                    "bot",
                    format!("{e}"),
                    "enable the Bot feature (developer console: Features > Bot), then create and publish a new app version; a tenant admin may have to approve it",
                ),
            ),
            // The made-up receiver was refused after the bot-ability check: the bot is on.
            Some(230001) | Some(230034) | Some(99992351) | Some(99992361) => (
                scope_ok(),
                finding(
                    "bot",
                    Status::Ok,
                    format!(
                        "bot ability on (Lark refused the made-up receiver with code {}, as expected)",
                        e.code.unwrap_or_default()
                    ),
                ),
            ),
            Some(99991401) => {
                let f = fail(
                    "send-scope",
                    format!("{e}"),
                    "this host's IP is not on the app's IP allow-list: add it (developer console: Security Settings)",
                );
                (f, not_reached("the request was refused by the IP allow-list"))
            }
            Some(99991403) => {
                let f = fail(
                    "send-scope",
                    format!("{e}"),
                    "the tenant's monthly API quota is spent (Basic plan): wait for the 1st or upgrade the plan",
                );
                (f, not_reached("the monthly quota is spent"))
            }
            _ => {
                let w = Finding {
                    id: "bot",
                    status: Status::Warn,
                    detail: format!("cannot tell whether the bot ability is on: unexpected answer {e}"),
                    fix: Some("send one message with `lark-sink send` to a test user to be sure".into()),
                };
                let scope = match e.code {
                    Some(_) => finding(
                        "send-scope",
                        Status::Warn,
                        "not proven: the probe got an unexpected answer (see bot)",
                    ),
                    None => finding("send-scope", Status::Warn, format!("no Lark answer: {e}")),
                };
                (scope, w)
            }
        },
    }
}

/// `contact-scope`: a batch_get_id look-up of [`PROBE_MOBILE`] (§5).
async fn check_contact_scope(client: &LarkClient) -> Finding {
    match client.batch_get_id(&[], &[PROBE_MOBILE.to_string()]).await {
        Ok(_) => finding(
            "contact-scope",
            Status::Ok,
            "contact:user.id:readonly granted (receiveType \"phone\" can be resolved)",
        ),
        Err(e) if e.code == Some(99991672) => fail(
            "contact-scope",
            format!("the app may not look users up by phone: {e}"),
            "in the developer console (Permissions & Scopes) add contact:user.id:readonly, then publish a new app version. Without it a record with receiveType \"phone\" stops the connector; if no record ever uses phone numbers, run check with --skip contact-scope",
        ),
        Err(e) => Finding {
            id: "contact-scope",
            status: Status::Warn,
            detail: format!("not proven: unexpected answer {e}"),
            fix: None,
        },
    }
}

/// What a webhook probe got back: Lark's code, or why there is none.
fn webhook_code(r: &Result<(Value, Option<String>), LarkError>) -> Option<i64> {
    match r {
        Ok(_) => Some(0),
        Err(e) => e.code,
    }
}

/// `webhook`: token and signature of one custom bot, without posting (module docs).
async fn check_webhook(http: &reqwest::Client, name: &str, hook: &WebhookConfig) -> Finding {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // §8: timestamp (seconds, as a string) and sign at the top level; no msg_type on purpose.
    let probe = |sign: Option<String>| match sign {
        Some(s) => json!({"timestamp": now.to_string(), "sign": s}),
        None => json!({}),
    };
    let post = |body: Value| async move { read_response(http.post(&hook.url).json(&body)).await };
    let key = |o: &str| format!("lark.webhooks.{name}.{o}");
    let signature = hook
        .secret
        .as_ref()
        .map(|s| crate::lark::webhook::sign(s.expose(), now));
    let first = post(probe(signature.clone())).await;
    let failed = |detail: String, fix: String| fail("webhook", format!("{name}: {detail}"), fix);
    match (webhook_code(&first), &first) {
        (Some(19001), _) => failed(
            "Lark does not know this webhook (19001: token invalid)".into(),
            format!("copy the webhook address from the group's bot settings into {} (or its token into {}); the bot may have been removed from the group", key("url"), key("token")),
        ),
        (Some(19021), _) if hook.secret.is_some() => failed(
            "signature refused (19021)".into(),
            format!("{} is not this bot's signing secret (bot settings > Security > Signature verification), or this host's clock is off by more than an hour", key("secret")),
        ),
        (Some(19021), _) => failed(
            "the bot requires a signature (19021) but no secret is configured".into(),
            format!("set {} to the bot's signing secret (bot settings > Security > Signature verification), or turn signature verification off", key("secret")),
        ),
        (Some(19022), _) => failed(
            "this host's IP is not allowed (19022)".into(),
            "add this host's public IP to the bot's IP allow-list (bot settings > Security), or remove the list".into(),
        ),
        // Past the token and signature, refused for the missing msg_type: nothing was posted.
        (Some(19002) | Some(9499), _) if hook.secret.is_none() => finding(
            "webhook",
            Status::Ok,
            format!("{name}: token valid, no signature required (probe refused for its missing msg_type; nothing posted)"),
        ),
        (Some(19002) | Some(9499), _) => {
            // Control probe: a wrong signature must be refused, or the first answer proves
            // nothing about the secret (Lark would have looked at the message first).
            let control = post(probe(Some("lark-sink-check-wrong-signature".into()))).await;
            match webhook_code(&control) {
                Some(19021) => finding(
                    "webhook",
                    Status::Ok,
                    format!("{name}: token and signature verified (nothing posted)"),
                ),
                _ => Finding {
                    id: "webhook",
                    status: Status::Warn,
                    detail: format!("{name}: token valid; signature not verified (Lark checked the probe's message before its signature, so only a posted message proves {})", key("secret")),
                    fix: Some(format!("send a test message: lark-sink send --receive-type webhook --receive-id {name} ...")),
                },
            }
        }
        (Some(0), _) => Finding {
            id: "webhook",
            status: Status::Warn,
            detail: format!("{name}: Lark accepted an empty probe (code 0): the token works, but this is not what Lark documents and the group may show an empty message"),
            fix: None,
        },
        (_, Err(e)) if e.code.is_none() => {
            let detail = match e.http_status {
                None => format!("cannot reach the webhook: {e}"),
                Some(_) => format!("did not answer like a Lark webhook: {e}"),
            };
            failed(detail, format!("check {} (https://open.feishu.cn/open-apis/bot/v2/hook/<token> or the larksuite.com equivalent) and this host's network", key("url")))
        }
        (_, r) => Finding {
            id: "webhook",
            status: Status::Warn,
            detail: format!(
                "{name}: unexpected answer {}",
                match r {
                    Err(e) => e.to_string(),
                    Ok(_) => "code 0".into(),
                }
            ),
            fix: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_open_id_cannot_be_a_real_one() {
        // Real open_ids are `ou_` + 32 lowercase hex digits.
        let rest = PROBE_OPEN_ID.strip_prefix("ou_").unwrap_or_default();
        assert!(!rest.chars().all(|c| c.is_ascii_hexdigit()) || rest.len() != 32);
    }

    #[test]
    fn lines_show_status_id_detail_and_fix() {
        let f = fail("bot", "Lark code 230006", "enable the Bot feature");
        let text = f.to_string();
        assert!(text.starts_with("FAIL  bot "), "{text}");
        assert!(text.contains("\n") && text.contains("fix: enable the Bot feature"));
        let r = Report {
            findings: vec![f, finding("broker", Status::Ok, "up")],
        };
        assert!(!r.passed());
        assert_eq!(r.summary(), "1 ok, 1 failed, 0 warnings, 0 skipped");
    }
}
