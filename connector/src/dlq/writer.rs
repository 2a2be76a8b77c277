//! The dead-letter producer: writes a [`DeadLetter`] with its `__connect.errors.*` headers and
//! waits for the broker's `acks=all` acknowledgement.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

use super::{DeadLetter, Stage};
use crate::record::SourceRecord;

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("cannot create the dead-letter producer: {0}")]
    Create(rdkafka::error::KafkaError),
    #[error("dead-letter topic '{topic}' does not exist and could not be created: {reason}")]
    Topic { topic: String, reason: String },
    #[error("writing to dead-letter topic '{topic}' failed: {source}")]
    Write {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
}

pub struct DeadLetterWriter {
    producer: FutureProducer,
    topic: String,
    connector: String,
    context_headers: bool,
}

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

/// Producer settings the DLQ forces itself: a dead letter counts only once every in-sync replica
/// has it, so user values (or their aliases) must not compete with `acks=all`.
const DLQ_FORCED: &[&str] = &["acks", "request.required.acks"];

/// A producer whose writes count only once every in-sync replica has them (`acks=all`), for the
/// DLQ and the result topic: the source offset is stored after such a write, never before.
pub fn acked_producer(
    kafka: &BTreeMap<String, String>,
) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    let mut cfg = producer_config(kafka);
    for k in DLQ_FORCED {
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

impl DeadLetterWriter {
    pub fn new(
        kafka: &BTreeMap<String, String>,
        topic: String,
        connector: String,
        context_headers: bool,
    ) -> Result<Self, DlqError> {
        let producer = acked_producer(kafka).map_err(DlqError::Create)?;
        Ok(DeadLetterWriter {
            producer,
            topic,
            connector,
            context_headers,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Makes sure the DLQ topic exists, creating it like Connect does when it is missing.
    pub async fn ensure_topic(
        &self,
        kafka: &BTreeMap<String, String>,
        partitions: i32,
        replication: i32,
    ) -> Result<(), DlqError> {
        ensure_topic(&self.producer, kafka, &self.topic, partitions, replication)
            .await
            .map_err(|reason| DlqError::Topic {
                topic: self.topic.clone(),
                reason,
            })
    }

    /// Writes one dead letter and waits for the broker's acknowledgement.
    pub async fn write(&self, record: &SourceRecord, dl: &DeadLetter) -> Result<(), DlqError> {
        let headers = self.headers(record, dl);
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = &record.key {
            out = out.key(k.as_slice());
        }
        if let Some(v) = &record.value {
            out = out.payload(v.as_slice());
        }
        self.producer
            .send(out, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(source, _)| DlqError::Write {
                topic: self.topic.clone(),
                source,
            })
    }

    fn headers(&self, record: &SourceRecord, dl: &DeadLetter) -> OwnedHeaders {
        let mut h = OwnedHeaders::new_with_capacity(record.headers.len() + 16);
        for (k, v) in &record.headers {
            h = h.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        if !self.context_headers {
            return h;
        }
        let mut add = |k: &str, v: String| {
            h = std::mem::replace(&mut h, OwnedHeaders::new()).insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        };
        add("__connect.errors.topic", record.topic.clone());
        add("__connect.errors.partition", record.partition.to_string());
        add("__connect.errors.offset", record.offset.to_string());
        add("__connect.errors.connector.name", self.connector.clone());
        add("__connect.errors.task.id", "0".into());
        add("__connect.errors.stage", dl.stage.as_str().into());
        add("__connect.errors.class.name", dl.class.label().into());
        add(
            "__connect.errors.exception.message",
            super::clip(&dl.reason, super::MAX_REASON_BYTES),
        );
        if let Some(i) = dl.message_index {
            add("__connect.errors.lark.message.index", i.to_string());
        }
        if let Some(r) = &dl.receiver {
            add("__connect.errors.lark.receiver", r.clone());
        }
        if let Some(u) = &dl.uuid {
            add("__connect.errors.lark.uuid", u.clone());
        }
        if dl.stage == Stage::Deliver {
            add("__connect.errors.lark.attempts", dl.attempts.to_string());
        }
        if let Some(e) = &dl.lark {
            add("__connect.errors.lark.class", e.class.label().into());
            if let Some(c) = e.code {
                add("__connect.errors.lark.code", c.to_string());
            }
            add(
                "__connect.errors.lark.msg",
                super::clip(&e.msg, super::MAX_REASON_BYTES),
            );
            if let Some(l) = &e.log_id {
                add("__connect.errors.lark.log_id", l.clone());
            }
            if let Some(s) = e.http_status {
                add("__connect.errors.lark.http.status", s.to_string());
            }
        }
        h
    }
}
