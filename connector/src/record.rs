//! An owned copy of one Kafka record and the identity of each message it yields.
//!
//! rdkafka's `BorrowedMessage` cannot outlive the consumer poll, but a record lives until its
//! last message is delivered or dead-lettered, so the source copies what the rest of the pipeline
//! needs into a [`SourceRecord`] once.

use lark_sink_transforms::RecordMeta;
use rdkafka::message::{BorrowedMessage, Headers, Message};

#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Headers in order, values as raw bytes (the DLQ copies them back verbatim).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Option<i64>,
}

impl From<&BorrowedMessage<'_>> for SourceRecord {
    fn from(m: &BorrowedMessage<'_>) -> Self {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        SourceRecord {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: m.timestamp().to_millis(),
        }
    }
}

impl SourceRecord {
    /// `topic-partition@offset`, the coordinates used in logs and error messages.
    pub fn coordinates(&self) -> String {
        format!("{}-{}@{}", self.topic, self.partition, self.offset)
    }

    /// The metadata a transform script sees.
    pub fn meta(&self) -> RecordMeta {
        RecordMeta {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            key: self
                .key
                .as_deref()
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(str::to_string),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| {
                    let v = v
                        .as_deref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default();
                    (k.clone(), v)
                })
                .collect(),
            timestamp: self.timestamp,
        }
    }

    /// The Lark idempotency key of the `index`-th message of this record (lark-api.md §2.2: at most
    /// 50 chars, deduplicated by Lark for one hour).
    ///
    /// It is derived only from where the record sits in Kafka, so every retry and every replay after
    /// a restart or rebalance sends the same uuid and Lark delivers the message once. Topic names can
    /// be up to 249 chars, so the topic enters as a 64-bit hash; partition, offset and index are kept
    /// readable for whoever greps Lark's side: `ls-<hash16>-<partition>-<offset>-<index>` is at most
    /// 3+16+1+10+1+19+1+5 = 56 chars only for absurd values, so the tail is trimmed to 50 if needed.
    pub fn message_uuid(&self, index: usize) -> String {
        message_uuid(&self.topic, self.partition, self.offset, index)
    }
}

pub fn message_uuid(topic: &str, partition: i32, offset: i64, index: usize) -> String {
    let mut id = TOPIC_HASH.with_borrow_mut(|last| {
        // A connector reads one or a few topics: hashing each message's topic again showed up
        // in the engine benchmark's profile, so each thread keeps the last topic's hash.
        if last.0 != topic {
            *last = (topic.to_string(), topic_hash(topic));
        }
        format!("ls-{}-{partition}-{offset}-{index}", last.1)
    });
    if id.len() > 50 {
        // Only reachable with offsets beyond 10^15; keep the most specific end.
        id = id[id.len() - 50..].to_string();
    }
    id
}

thread_local! {
    static TOPIC_HASH: std::cell::RefCell<(String, String)> =
        std::cell::RefCell::new((String::new(), topic_hash("")));
}

/// The first 64 bits of the topic's SHA-256, in hex.
fn topic_hash(topic: &str) -> String {
    use sha2::Digest;
    use std::fmt::Write;
    let digest = sha2::Sha256::digest(topic.as_bytes());
    let mut hash = String::with_capacity(16);
    for b in &digest[..8] {
        let _ = write!(hash, "{b:02x}");
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_deterministic_short_and_distinct() {
        let a = message_uuid("alerts", 3, 128812, 0);
        assert_eq!(a, message_uuid("alerts", 3, 128812, 0));
        assert!(a.len() <= 50);
        assert_ne!(a, message_uuid("alerts", 3, 128812, 1));
        assert_ne!(a, message_uuid("alerts", 3, 128813, 0));
        assert_ne!(a, message_uuid("alerts", 4, 128812, 0));
        assert_ne!(a, message_uuid("alerts2", 3, 128812, 0));
        let long = message_uuid(&"t".repeat(249), i32::MAX, i64::MAX, 65535);
        assert!(long.len() <= 50, "{long}");
    }

    /// The uuid must not change between versions: a record replayed by an upgraded connector
    /// within Lark's hour must carry the uuid the old one sent. (Pinned from sha256("alerts").)
    #[test]
    fn uuid_is_stable_across_versions_and_topics() {
        assert_eq!(
            message_uuid("alerts", 3, 128812, 0),
            "ls-deb3e366c077c228-3-128812-0"
        );
        // The per-thread cache must not leak one topic's hash into another's uuid.
        let other = message_uuid("orders", 3, 128812, 0);
        assert!(!other.contains("deb3e366c077c228"), "{other}");
        assert_eq!(
            message_uuid("alerts", 3, 128812, 0),
            "ls-deb3e366c077c228-3-128812-0"
        );
    }
}
