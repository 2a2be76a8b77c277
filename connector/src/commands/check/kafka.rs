//! The Kafka checks of `lark-sink check`: `broker`, `topic`, `dlq`, `dlq-write` and `state`.
//!
//! One metadata answer serves the broker, topic and DLQ checks. It comes from the probe start-up
//! runs too ([`crate::source::probe`]), which also collects librdkafka's reasons for a failed
//! connection; `broker` renders them as its finding, with start-up's wording of the fix for an
//! authentication or TLS failure.

use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::json;

use super::{fail, finding, needs, warn, CheckOptions, Checks, Finding, Status, PROBE_HEADER};
use crate::config::{ConnectorConfig, Tolerance};
use crate::source::kafka::{producer_config, topic_configs, ACKS_FORCED};
use crate::source::probe::{probe, ErrorCapture, NoMetadata, Probe, Wait};
use crate::source::Topics;

/// What a check that needs the broker's metadata says when there is none.
const NEEDS_BROKER: &str = "not checked: needs the broker";

/// Runs the Kafka checks in report order.
pub(super) async fn checks(
    c: &mut Checks<'_, impl FnMut(&Finding)>,
    cfg: &ConnectorConfig,
    opts: &CheckOptions,
) {
    let mut metadata = None;
    if c.step("broker", [c.flag("broker")]) {
        let (f, md) = check_broker(cfg, opts.timeout).await;
        c.push(f);
        metadata = md;
    }
    let broker = needs(metadata.is_some(), NEEDS_BROKER);
    if c.step("topic", [c.flag("topic"), broker.clone()]) {
        if let Some(md) = &metadata {
            check_topics(cfg, md).into_iter().for_each(|f| c.push(f));
        }
    }
    // Whether the DLQ is there: None when it could not be looked at.
    let in_use = dlq_in_use(cfg);
    let mut dlq_exists = None;
    if c.step("dlq", [in_use.clone(), broker]) {
        if let Some(md) = &metadata {
            let f = check_dlq_exists(cfg, md);
            dlq_exists = Some(f.status == Status::Ok);
            // `--skip dlq` hides the line, not the answer `dlq-write` needs.
            c.push_unless_flagged(f);
        }
    }
    let write_gates = [
        c.flag("dlq-write"),
        needs(
            opts.write_probe,
            "not checked (--no-write): only a written record proves the topic is writable",
        ),
        needs(dlq_exists.is_some(), NEEDS_BROKER),
        needs(
            dlq_exists != Some(false),
            "not checked: the topic is not there",
        ),
    ];
    if in_use.is_ok() && c.step("dlq-write", write_gates) {
        c.push(check_dlq_write(cfg, opts.timeout).await);
    }
    let state_in_use = needs(
        cfg.state.is_some(),
        "no lark.state.topic: records with a messageKey are dead-lettered (see docs/user-guide.md#updating-messages)",
    );
    let broker = needs(metadata.is_some(), NEEDS_BROKER);
    if c.step("state", [c.flag("state"), state_in_use, broker]) {
        if let Some(md) = &metadata {
            c.push(check_state(cfg, md).await);
        }
    }
}

/// `state`: the keyed messages' state topic (`lark.state.topic`). Missing is fine (start-up
/// creates it compacted, which needs the CreateTopics permission); an existing one should be
/// compacted (or it keeps every write, and every restore reads them all) and have as many
/// partitions as the source (or several source partitions share one, and each owner reads the
/// others' keys too).
async fn check_state(cfg: &ConnectorConfig, md: &Metadata) -> Finding {
    let Some(state) = &cfg.state else {
        return finding("state", Status::Skip, "no lark.state.topic");
    };
    let topic = state.topic.as_str();
    let source = source_partitions(cfg, md);
    match partitions(md, topic) {
        Some(Ok((n, _))) if n > 0 => {
            let policy = topic_configs(&cfg.kafka, topic)
                .await
                .map(|mut c| c.remove("cleanup.policy"));
            let compact_fix = format!("make it compacted (kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact)");
            let policy = match policy {
                Ok(Some(p)) if p.contains("compact") => p,
                Ok(Some(p)) => {
                    return warn(
                        "state",
                        format!("{topic}: {n} partition(s), cleanup.policy={p}: not compacted, so it keeps every write and each restore reads them all"),
                    )
                    .with_fix(compact_fix);
                }
                Ok(None) => {
                    return warn(
                        "state",
                        format!("{topic}: {n} partition(s); the broker reports no cleanup.policy, so whether it is compacted is unknown"),
                    )
                    .with_fix(compact_fix);
                }
                Err(e) => {
                    return warn(
                        "state",
                        format!("{topic}: {n} partition(s); its configs could not be read ({e}), so whether it is compacted is unknown"),
                    )
                    .with_fix(format!("grant DESCRIBE_CONFIGS on topic '{topic}', or {compact_fix}"));
                }
            };
            let policy = format!("cleanup.policy={policy}");
            if n < source {
                return warn(
                    "state",
                    format!("{topic}: {n} partition(s), {policy}; fewer than the source's {source}, so several source partitions share one state partition and each owner also holds the others' keys"),
                )
                .with_fix("for new deployments, let the connector create it (as many partitions as the source); this one works as it is");
            }
            finding(
                "state",
                Status::Ok,
                format!("{topic}: exists, {n} partition(s), {policy}"),
            )
        }
        Some(Err(e)) => fail(
            "state",
            format!("{topic}: the broker answered {e}"),
            format!("if it is an authorization error, grant the connector's principal DESCRIBE, READ and WRITE on topic '{topic}'"),
        ),
        _ => {
            let n = state.partitions.unwrap_or(source.max(1) as i32);
            finding(
                "state",
                Status::Ok,
                format!("{topic}: not there yet; start-up creates it with {n} partition(s) and cleanup.policy=compact (needs the CreateTopics permission)"),
            )
        }
    }
}

/// The partition count of the source topic with the most partitions (0 if none is visible).
fn source_partitions(cfg: &ConnectorConfig, md: &Metadata) -> usize {
    let matches = |name: &str| match &cfg.topics {
        Topics::List(list) => list.iter().any(|t| t == name),
        Topics::Regex(re) => crate::source::topics_regex_matcher(re)
            .map(|m| m.is_match(name))
            .unwrap_or(false),
    };
    md.topics()
        .iter()
        .filter(|t| matches(t.name()))
        .map(|t| t.partitions().len())
        .max()
        .unwrap_or(0)
}

/// Whether the configuration uses a dead-letter topic at all; if not, why (the `dlq` line).
fn dlq_in_use(cfg: &ConnectorConfig) -> Result<(), String> {
    match (&cfg.errors.dlq_topic, cfg.errors.tolerance) {
        (None, _) => Err("no dead-letter topic configured (errors.tolerance=none: a record that cannot be delivered stops the connector)".into()),
        (Some(t), Tolerance::None) => Err(format!("'{t}' is configured but not used: errors.tolerance=none")),
        (Some(_), Tolerance::All) => Ok(()),
    }
}

/// `broker`: the shared Kafka probe ([`probe`]), which stops early once librdkafka says why it
/// cannot connect.
async fn check_broker(cfg: &ConnectorConfig, timeout: Duration) -> (Finding, Option<Metadata>) {
    let servers = cfg
        .kafka
        .get("bootstrap.servers")
        .map(String::as_str)
        .unwrap_or_default();
    let found = probe(&cfg.kafka, timeout, Wait::UntilAllBrokersDown).await;
    let fix = broker_fix(&found);
    match found.metadata {
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
        Err(NoMetadata::Panicked(e)) => {
            let f = fail(
                "broker",
                format!("the check panicked: {e}"),
                "report this as a bug",
            );
            (f, None)
        }
        Err(e) => {
            let reasons: Vec<&str> = found
                .errors
                .iter()
                .map(|(_, r)| r.as_str())
                .take(2)
                .collect();
            let reason = match reasons.is_empty() {
                true => format!("{e}; the broker never answered"),
                false => reasons.join("; "),
            };
            let detail = format!("{servers}: no metadata (time limit {timeout:?}): {reason}");
            (fail("broker", detail, fix), None)
        }
    }
}

/// The fix of a failed `broker` line: an access error's own wording (the one start-up uses),
/// else what librdkafka's silence or its reasons point to.
fn broker_fix(found: &Probe) -> &'static str {
    match found.access_error() {
        Some(e) => e.fix(),
        None if found.errors.is_empty() => "a listener that accepts the connection but never answers usually speaks another protocol: check that kafka.security.protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) matches the listener on kafka.bootstrap.servers; otherwise check the address and the network",
        None => "check kafka.bootstrap.servers (host:port of a listener reachable from this host: DNS, firewall, advertised.listeners), and kafka.security.protocol if that listener expects TLS or SASL",
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
    match &cfg.topics {
        Topics::List(list) => list
            .iter()
            .map(|name| check_listed_topic(cfg, md, name))
            .collect(),
        Topics::Regex(re) => vec![check_topics_regex(md, re)],
    }
}

/// The `topic` line of one topic named in `topics`.
fn check_listed_topic(cfg: &ConnectorConfig, md: &Metadata, name: &str) -> Finding {
    match partitions(md, name) {
        Some(Ok((n, leaderless))) if leaderless > 0 => warn(
            "topic",
            format!("{name}: {n} partitions, {leaderless} without a leader"),
        )
        .with_fix("the broker(s) leading them are down: see the cluster's health"),
        Some(Ok((n, _))) if n > 0 => finding("topic", Status::Ok, format!("{name}: {n} partition(s)")),
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
    }
}

/// The one `topic` line of `topics.regex`: the topics it matches, with partition counts.
fn check_topics_regex(md: &Metadata, re: &str) -> Finding {
    // As librdkafka matches the subscription: anchored at the start only.
    let Ok(compiled) = crate::source::topics_regex_matcher(re) else {
        return fail(
            "topic",
            format!("topics.regex '{re}' is not a valid regular expression"),
            "correct 'topics.regex'",
        );
    };
    let mut matched: Vec<(&str, usize)> = md
        .topics()
        .iter()
        .filter(|t| compiled.is_match(t.name()))
        .map(|t| (t.name(), t.partitions().len()))
        .collect();
    matched.sort();
    if matched.is_empty() {
        return fail(
            "topic",
            format!("topics.regex '{re}' matches no topic on the cluster"),
            "correct 'topics.regex' (it is matched from the start of each name), or create a matching topic; the connector would subscribe and wait for one",
        );
    }
    let total: usize = matched.iter().map(|(_, n)| n).sum();
    let names: Vec<String> = matched
        .iter()
        .take(10)
        .map(|(t, n)| format!("{t} ({n})"))
        .collect();
    let more = match matched.len() > 10 {
        true => format!(", and {} more", matched.len() - 10),
        false => String::new(),
    };
    finding(
        "topic",
        Status::Ok,
        format!(
            "topics.regex '{re}' matches {} topic(s), {total} partition(s): {}{more}",
            matched.len(),
            names.join(", ")
        ),
    )
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
    let capture = ErrorCapture::default();
    let mut c = producer_config(&cfg.kafka);
    for k in ACKS_FORCED {
        c.remove(k);
    }
    let producer: FutureProducer<ErrorCapture> = match c
        .set("acks", "all")
        .set("allow.auto.create.topics", "false")
        .set("message.timeout.ms", timeout.as_millis().max(1).to_string())
        .set_log_level(RDKafkaLogLevel::Error)
        .create_with_context(capture.clone())
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
