//! The result topic (`lark.result.topic`): one JSON record per message outcome, for whoever needs
//! to know what happened to a message (its Lark `message_id`, to edit, recall or reply to it
//! later; an audit trail; a dashboard).
//!
//! Each record names where the message came from (source topic, partition, offset, index within
//! the record), its uuid, receiver and outcome. It is keyed by the source record's key, so results
//! of one key land on one partition in order. Like a dead letter, a result counts only once the
//! broker acknowledged it (`acks=all`), and the source offset is stored only after that: a crash
//! between delivery and the acknowledgement replays the record, Lark absorbs the resend (same
//! uuid, lark-api.md §2.2) and answers with the same `message_id`, and a second, identical result
//! is written. Consumers should therefore de-duplicate on `uuid` (at-least-once, never lost).
//!
//! Dead-lettered messages get a result too (`status: "dead_lettered"` with the stage, class,
//! reason and Lark code), so the result topic alone accounts for every message; the DLQ remains
//! the place with the original bytes for replay. Nothing secret is ever written: the fields come
//! from Kafka coordinates, the envelope's addressing and Lark's answers.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Map, Value};

pub use crate::delivery::keyed::Op;
use crate::dlq::DeadLetter;
use crate::envelope::{Envelope, UrgentKind};
use crate::lark::SendOk;
use crate::record::SourceRecord;
use crate::source::kafka::{acked_producer, ensure_topic};

#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("cannot create the result-topic producer: {0}")]
    Create(rdkafka::error::KafkaError),
    #[error("result topic '{topic}' does not exist and could not be created: {reason}")]
    Topic { topic: String, reason: String },
    #[error("writing to result topic '{topic}' failed: {source}")]
    Write {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
}

/// What became of an urgent buzz requested with a delivered message (lark-api.md §6).
#[derive(Debug, Clone)]
pub enum UrgentOutcome {
    /// Sent; `skipped` are the ids Lark reported as not in the message's chat.
    Sent {
        kind: UrgentKind,
        skipped: Vec<String>,
    },
    /// Refused or retries ran out; the buzz was dead-lettered with this reason.
    Failed {
        kind: UrgentKind,
        reason: String,
        code: Option<i64>,
    },
}

impl UrgentOutcome {
    fn to_json(&self) -> Value {
        match self {
            UrgentOutcome::Sent { kind, skipped } => {
                json!({"type": kind.as_str(), "status": "sent", "skipped": skipped})
            }
            UrgentOutcome::Failed { kind, reason, code } => {
                json!({"type": kind.as_str(), "status": "failed", "reason": reason, "code": code})
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The fields every result has: where the message came from and what it was.
fn base(
    connector: &str,
    status: &str,
    record: &SourceRecord,
    index: Option<usize>,
    envelope: Option<&Envelope>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("status".into(), json!(status));
    m.insert("connector".into(), json!(connector));
    m.insert(
        "source".into(),
        json!({
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "index": index,
        }),
    );
    m.insert("uuid".into(), json!(index.map(|i| record.message_uuid(i))));
    if let Some(e) = envelope {
        m.insert("receiver".into(), json!(e.receiver.describe()));
        m.insert("msg_type".into(), json!(e.msg_type));
        if let Some(k) = e.op.key() {
            m.insert("messageKey".into(), json!(k));
        }
        if let Some(r) = &e.reply {
            m.insert("reply_to".into(), json!(r.message_id));
            m.insert("reply_in_thread".into(), json!(r.in_thread));
        }
    }
    m.insert("time".into(), json!(now_ms()));
    m
}

/// What Lark answered for a delivered message, as its result reports it.
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    /// The message (for an update or recall: the key's message; for a recall of a key with no
    /// message, an empty id, reported as null).
    pub ok: &'a SendOk,
    pub attempts: u32,
    pub urgent: Option<&'a UrgentOutcome>,
    pub op: Op,
    /// With [`Op::Replaced`]: the message the key pointed at before.
    pub replaced: Option<&'a str>,
}

/// Where the version that superseded a keyed message came from, and what it became.
#[derive(Debug, Clone)]
pub struct SupersededBy<'a> {
    pub partition: i32,
    pub offset: i64,
    pub index: usize,
    /// The key's message once the newer version landed (None when it was dead-lettered, or
    /// recalled a key with no message).
    pub message_id: Option<&'a str>,
}

/// The result of a delivered message.
pub fn delivered(
    connector: &str,
    record: &SourceRecord,
    index: usize,
    envelope: &Envelope,
    d: &Delivery<'_>,
) -> Value {
    let mut m = base(connector, "delivered", record, Some(index), Some(envelope));
    m.insert("op".into(), json!(d.op.as_str()));
    // Webhooks return no message_id (lark-api.md §8): null rather than "".
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    m.insert("message_id".into(), json!(non_empty(&d.ok.message_id)));
    m.insert("chat_id".into(), json!(non_empty(&d.ok.chat_id)));
    m.insert("log_id".into(), json!(d.ok.log_id));
    m.insert("attempts".into(), json!(d.attempts));
    if let Some(r) = d.replaced {
        m.insert("replaced_message_id".into(), json!(r));
    }
    if let Some(u) = d.urgent {
        m.insert("urgent".into(), u.to_json());
    }
    Value::Object(m)
}

/// The result of a keyed message that a newer version of the same key took the place of before
/// it was sent (coalescing): it finished when that version did, without a call of its own.
pub fn superseded(
    connector: &str,
    record: &SourceRecord,
    index: usize,
    envelope: &Envelope,
    by: &SupersededBy<'_>,
) -> Value {
    let mut m = base(connector, "superseded", record, Some(index), Some(envelope));
    m.insert("op".into(), json!("superseded"));
    m.insert("message_id".into(), json!(by.message_id));
    m.insert(
        "superseded_by".into(),
        json!({"partition": by.partition, "offset": by.offset, "index": by.index}),
    );
    Value::Object(m)
}

/// The result of a message merged into a storm digest (`storm.digest.after`): it finished when
/// the digest was delivered; `message_id` is the digest's, `digest` says how many it covered.
pub fn merged(
    connector: &str,
    record: &SourceRecord,
    index: usize,
    envelope: &Envelope,
    digest_message_id: &str,
    covered: usize,
) -> Value {
    let mut m = base(connector, "merged", record, Some(index), Some(envelope));
    m.insert("op".into(), json!("merged"));
    m.insert("message_id".into(), json!(digest_message_id));
    m.insert("digest".into(), json!({"messages": covered}));
    Value::Object(m)
}

/// The result of a message not sent because an identical one went to the same receiver within
/// `storm.dedup.window.ms`; `message_id` is that one's.
pub fn deduplicated(
    connector: &str,
    record: &SourceRecord,
    index: usize,
    envelope: &Envelope,
    duplicate_of: &str,
) -> Value {
    let mut m = base(
        connector,
        "deduplicated",
        record,
        Some(index),
        Some(envelope),
    );
    m.insert("op".into(), json!("deduplicated"));
    m.insert("message_id".into(), json!(duplicate_of));
    Value::Object(m)
}

/// The result of a dead-lettered message (or of a whole record that failed before it was split
/// into messages: then `source.index`, `uuid` and `receiver` are null).
pub fn dead_lettered(
    connector: &str,
    record: &SourceRecord,
    dl: &DeadLetter,
    envelope: Option<&Envelope>,
) -> Value {
    let mut m = base(
        connector,
        "dead_lettered",
        record,
        dl.message_index,
        envelope,
    );
    if envelope.is_none() {
        m.insert("receiver".into(), json!(dl.receiver));
    }
    m.insert("stage".into(), json!(dl.stage.as_str()));
    m.insert("class".into(), json!(dl.class.label()));
    m.insert("reason".into(), json!(dl.reason));
    m.insert("code".into(), json!(dl.lark.as_ref().and_then(|e| e.code)));
    m.insert("attempts".into(), json!(dl.attempts));
    Value::Object(m)
}

/// Writes result records and waits for the broker's acknowledgement.
pub struct ResultWriter {
    producer: FutureProducer,
    topic: String,
}

impl ResultWriter {
    pub fn new(kafka: &BTreeMap<String, String>, topic: String) -> Result<Self, ResultError> {
        let producer = acked_producer(kafka).map_err(ResultError::Create)?;
        Ok(ResultWriter { producer, topic })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Makes sure the topic exists (created with one partition and the broker's default
    /// replication when missing; create it yourself for more).
    pub async fn ensure_topic(&self, kafka: &BTreeMap<String, String>) -> Result<(), ResultError> {
        ensure_topic(&self.producer, kafka, &self.topic, 1, -1)
            .await
            .map_err(|reason| ResultError::Topic {
                topic: self.topic.clone(),
                reason,
            })
    }

    /// Writes one result, keyed by the source record's key, and waits for `acks=all`.
    pub async fn write(&self, record: &SourceRecord, result: &Value) -> Result<(), ResultError> {
        let payload = result.to_string();
        let mut out: FutureRecord<'_, [u8], str> = FutureRecord::to(&self.topic)
            .payload(payload.as_str())
            .timestamp(now_ms());
        if let Some(k) = &record.key {
            out = out.key(k.as_slice());
        }
        self.producer
            .send(out, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(source, _)| ResultError::Write {
                topic: self.topic.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::{DeadLetterClass, Stage};
    use crate::envelope::validate::EnvelopeValidator;

    fn record() -> SourceRecord {
        SourceRecord {
            topic: "alerts".into(),
            partition: 2,
            offset: 41,
            key: Some(b"k1".to_vec()),
            value: None,
            headers: Vec::new(),
            timestamp: None,
        }
    }

    #[test]
    fn delivered_results_name_source_receiver_and_outcome() {
        let env = EnvelopeValidator::new()
            .unwrap()
            .validate(
                &json!({"receiveType": "chat", "receiveId": "oc_ops", "replyTo": "om_p", "content": {"text": "x"}}),
                None,
            )
            .unwrap();
        let ok = SendOk {
            message_id: "om_1".into(),
            chat_id: "oc_ops".into(),
            log_id: Some("L".into()),
        };
        let urgent = UrgentOutcome::Sent {
            kind: UrgentKind::App,
            skipped: vec!["ou_x".into()],
        };
        let d = Delivery {
            ok: &ok,
            attempts: 2,
            urgent: Some(&urgent),
            op: Op::Sent,
            replaced: None,
        };
        let v = delivered("c", &record(), 1, &env, &d);
        assert_eq!(v["status"], "delivered");
        assert_eq!(v["op"], "sent");
        assert!(v.get("messageKey").is_none() && v.get("replaced_message_id").is_none());
        assert_eq!(
            v["source"],
            json!({"topic": "alerts", "partition": 2, "offset": 41, "index": 1})
        );
        assert_eq!(v["uuid"], json!(record().message_uuid(1)));
        assert_eq!(v["receiver"], "chat_id:oc_ops");
        assert_eq!(v["reply_to"], "om_p");
        assert_eq!(v["message_id"], "om_1");
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["urgent"]["skipped"], json!(["ou_x"]));
        assert!(v["time"].as_i64().is_some_and(|t| t > 0));
    }

    #[test]
    fn keyed_results_carry_the_key_and_the_op() {
        let env = EnvelopeValidator::new()
            .unwrap()
            .validate(
                &json!({"receiveType": "chat", "receiveId": "oc_ops", "messageKey": "disk/db1", "content": {"text": "x"}}),
                None,
            )
            .unwrap();
        let ok = SendOk {
            message_id: "om_2".into(),
            chat_id: "oc_ops".into(),
            log_id: None,
        };
        let d = Delivery {
            ok: &ok,
            attempts: 1,
            urgent: None,
            op: Op::Replaced,
            replaced: Some("om_1"),
        };
        let v = delivered("c", &record(), 0, &env, &d);
        assert_eq!(
            (
                &v["messageKey"],
                &v["op"],
                &v["message_id"],
                &v["replaced_message_id"]
            ),
            (
                &json!("disk/db1"),
                &json!("replaced"),
                &json!("om_2"),
                &json!("om_1")
            )
        );
        let by = SupersededBy {
            partition: 2,
            offset: 50,
            index: 0,
            message_id: Some("om_2"),
        };
        let v = superseded("c", &record(), 0, &env, &by);
        assert_eq!(
            (&v["status"], &v["op"]),
            (&json!("superseded"), &json!("superseded"))
        );
        assert_eq!(
            v["superseded_by"],
            json!({"partition": 2, "offset": 50, "index": 0})
        );
        assert_eq!(
            (&v["message_id"], &v["messageKey"]),
            (&json!("om_2"), &json!("disk/db1"))
        );
        for (op, s) in [
            (Op::Sent, "sent"),
            (Op::Updated, "updated"),
            (Op::Recalled, "recalled"),
        ] {
            assert_eq!(op.as_str(), s);
        }
    }

    #[test]
    fn record_level_failures_have_no_index() {
        let dl = DeadLetter {
            stage: Stage::Decode,
            class: DeadLetterClass::Decode,
            reason: "not JSON".into(),
            message_index: None,
            receiver: None,
            uuid: None,
            lark: None,
            attempts: 0,
        };
        let v = dead_lettered("c", &record(), &dl, None);
        assert_eq!(v["status"], "dead_lettered");
        assert_eq!(v["source"]["index"], Value::Null);
        assert_eq!(v["uuid"], Value::Null);
        assert_eq!(v["stage"], "VALUE_CONVERTER");
        assert_eq!(v["reason"], "not JSON");
    }
}
