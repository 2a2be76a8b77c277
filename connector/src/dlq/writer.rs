//! The dead-letter producer: writes a [`DeadLetter`] with its `__connect.errors.*` headers and
//! waits for the broker's `acks=all` acknowledgement.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{DeadLetter, Stage};
use crate::record::SourceRecord;
use crate::source::kafka::{acked_producer, ensure_topic};

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
