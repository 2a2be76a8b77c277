//! The Kafka client helpers every writer and probe shares: one home for how lark-sink builds a
//! librdkafka client from the `kafka.*` passthrough, so the DLQ, the result topic, the start-up
//! probe and `check` all connect with the same settings (TLS, SASL) as the consumer.
//!
//! They live in `source` because the settings are the source's; the writers in `dlq` and
//! `results` depend on them, never the other way round.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::ClientConfig;

/// librdkafka consumer-only settings; passing them to a producer only produces warnings.
const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "auto.offset.reset",
    "auto.commit.interval.ms",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "isolation.level",
    "enable.partition.eof",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "fetch.wait.max.ms",
    "max.partition.fetch.bytes",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.queue.backoff.ms",
    "check.crcs",
];

/// A librdkafka client config from the `kafka.*` passthrough, minus consumer-only keys.
pub fn producer_config(kafka: &BTreeMap<String, String>) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    for (k, v) in kafka {
        if !CONSUMER_ONLY.contains(&k.as_str()) {
            cfg.set(k, v);
        }
    }
    cfg
}

/// Producer settings an acknowledged write forces itself: a write counts only once every in-sync
/// replica has it, so user values (or their aliases) must not compete with `acks=all`.
pub const ACKS_FORCED: &[&str] = &["acks", "request.required.acks"];

/// A producer whose writes count only once every in-sync replica has them (`acks=all`), for the
/// DLQ and the result topic: the source offset is stored after such a write, never before.
pub fn acked_producer(
    kafka: &BTreeMap<String, String>,
) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    let mut cfg = producer_config(kafka);
    for k in ACKS_FORCED {
        cfg.remove(k);
    }
    cfg.set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
}

/// Makes sure `topic` exists, creating it like Connect does when it is missing.
pub async fn ensure_topic(
    producer: &FutureProducer,
    kafka: &BTreeMap<String, String>,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<(), String> {
    let metadata = producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("metadata request failed: {e}"))?;
    let exists = metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
    if exists {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = producer_config(kafka)
        .create()
        .map_err(|e| format!("admin client: {e}"))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let results = admin
        .create_topics(
            &[new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .map_err(|e| e.to_string())?;
    for r in results {
        match r {
            Ok(_) => tracing::info!(topic, "created topic"),
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(code.to_string()),
        }
    }
    Ok(())
}
