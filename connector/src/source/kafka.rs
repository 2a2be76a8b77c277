//! The Kafka client helpers every writer and probe shares: one home for how lark-sink builds a
//! librdkafka client from the `kafka.*` passthrough, so the DLQ, the result topic, the start-up
//! probe and `check` all connect with the same settings (TLS, SASL) as the consumer.
//!
//! They live in `source` because the settings are the source's; the writers in `dlq` and
//! `results` depend on them, never the other way round.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
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

/// [`acked_producer`] whose writes fail after `timeout` instead of 30 s (`message.timeout.ms`
/// and `request.timeout.ms`): for a writer that must answer someone in time (Lark's events
/// want their answer within 3 s, and an answer of failure makes Lark push the event again).
pub fn acked_producer_within(
    kafka: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    let ms = timeout.as_millis().max(1).to_string();
    let mut cfg = producer_config(kafka);
    for k in ACKS_FORCED {
        cfg.remove(k);
    }
    cfg.set("acks", "all")
        .set("message.timeout.ms", &ms)
        .set("request.timeout.ms", &ms)
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
    ensure_topic_with(producer, kafka, topic, partitions, replication, &[])
        .await
        .map(|_| ())
}

/// What [`ensure_topic_with`] found or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnsuredTopic {
    /// The topic's partition count: the existing topic's (kept as it is), or the one it was
    /// created with.
    pub partitions: i32,
    /// Whether this call created it.
    pub created: bool,
}

/// Makes sure `topic` exists; when it is missing, creates it with `partitions`, `replication`
/// and the topic `configs` (e.g. `cleanup.policy=compact` for a changelog). An existing topic is
/// kept as it is, whatever its partition count or configs: the caller reads what it got.
pub async fn ensure_topic_with(
    producer: &FutureProducer,
    kafka: &BTreeMap<String, String>,
    topic: &str,
    partitions: i32,
    replication: i32,
    configs: &[(&str, &str)],
) -> Result<EnsuredTopic, String> {
    if let Some(existing) = partition_count(producer, topic)? {
        return Ok(EnsuredTopic {
            partitions: existing,
            created: false,
        });
    }
    let admin: AdminClient<DefaultClientContext> = producer_config(kafka)
        .create()
        .map_err(|e| format!("admin client: {e}"))?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let results = admin
        .create_topics(
            &[new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .map_err(|e| e.to_string())?;
    for r in results {
        match r {
            Ok(_) => tracing::info!(topic, partitions, "created topic"),
            // Someone else created it meanwhile: theirs is the topic, with its own count.
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                let existing = partition_count(producer, topic)
                    .ok()
                    .flatten()
                    .unwrap_or(partitions);
                return Ok(EnsuredTopic {
                    partitions: existing,
                    created: false,
                });
            }
            Err((_, code)) => return Err(code.to_string()),
        }
    }
    Ok(EnsuredTopic {
        partitions,
        created: true,
    })
}

/// How many times a metadata request for a topic the connector writes is made before start-up
/// fails: a broker busy for a moment (a restore, an election, a loaded test machine) must not
/// stop the connector, a broker that is down still does, after about half a minute.
const METADATA_ATTEMPTS: u32 = 3;

/// The partition count of `topic`, or `None` when the broker does not know it.
fn partition_count(producer: &FutureProducer, topic: &str) -> Result<Option<i32>, String> {
    let mut attempt = 1;
    let metadata = loop {
        match producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
        {
            Ok(m) => break m,
            Err(e) if attempt < METADATA_ATTEMPTS => {
                tracing::warn!(topic, attempt, "metadata request failed: {e}; asking again");
                attempt += 1;
            }
            Err(e) => {
                return Err(format!(
                    "metadata request failed ({METADATA_ATTEMPTS} times): {e}"
                ))
            }
        }
    };
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

/// The configs the broker reports for `topic` (DescribeConfigs), name → value, so a writer can
/// tell whether a topic it found is set up as it needs (a changelog's `cleanup.policy`).
pub async fn topic_configs(
    kafka: &BTreeMap<String, String>,
    topic: &str,
) -> Result<BTreeMap<String, String>, String> {
    let admin: AdminClient<DefaultClientContext> = producer_config(kafka)
        .create()
        .map_err(|e| format!("admin client: {e}"))?;
    let results = admin
        .describe_configs(
            &[ResourceSpecifier::Topic(topic)],
            // Only a warning hangs on the answer (a changelog that is not compacted): a broker
            // that does not answer DescribeConfigs (the demo's mock cluster) must not hold
            // start-up for long.
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(2))),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for r in results {
        let resource = r.map_err(|code| code.to_string())?;
        for entry in resource.entries {
            if let Some(v) = entry.value {
                out.insert(entry.name, v);
            }
        }
    }
    Ok(out)
}

/// Consumer settings a reader that only assigns partitions must not inherit from `kafka.*`: it
/// joins no group and commits nothing, so it cannot disturb the sink's group or its offsets.
const GROUP_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "group.protocol",
    "group.remote.assignor",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.commit.interval.ms",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "enable.partition.eof",
];

/// The `group.id` of an assign-only reader. librdkafka refuses `assign` without one ("Unknown
/// group"), but a reader that never subscribes never joins it, and one that commits nothing
/// leaves it without offsets: it names the reader in the broker's logs, nothing more.
pub const READER_GROUP: &str = "lark-sink-assign-only-reader";

/// A librdkafka consumer config from the `kafka.*` passthrough (connection, TLS, SASL, fetch
/// sizes) for a reader that assigns partitions itself and reads them to their end: not in the
/// sink's group (in [`READER_GROUP`], never joined), no commits, partition end reported, from the
/// earliest offset.
pub fn reader_config(kafka: &BTreeMap<String, String>) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    for (k, v) in kafka {
        if !GROUP_ONLY.contains(&k.as_str()) {
            cfg.set(k, v);
        }
    }
    cfg.set("group.id", READER_GROUP)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    cfg
}
