//! Storm control (`storm.*`, docs/user-guide.md "Storms"): the sink's side of dedup and digests.
//! Priority (`priority`) is the scheduler's alone (`delivery::scheduler`).
//!
//! - **Dedup** (`storm.dedup.window.ms`): [`Storm`] remembers, per receiver, what was sent in the
//!   window (a hash of `messageKey`, msg type and content, with the message_id). A message equal
//!   to one of those is not sent: it finishes as `deduplicated`, naming the earlier message. The
//!   memory is this process's: after a restart a message may be sent once more (a replayed record
//!   carries its old uuid, so Lark still keeps one copy of *that*). `high` messages and recalls
//!   are never deduplicated.
//! - **Digests** (`storm.digest.after`): the scheduler merges the waiting mergeable messages of a
//!   receiver's queue (`Outgoing::digest_of`); `Settle::deliver_digest` (`settle_storm.rs`)
//!   sends one card for them (its
//!   uuid derived from the records it covers, `delivery::digest`) and then finishes each as
//!   `merged` with the card's message_id, results written before offsets as everywhere else.
//!   Mergeable: `normal` and `low` messages without `urgent` or `replyTo`, of one source
//!   partition (a partition's records finish with their owner, so a digest never spans two: a
//!   revoked partition's digest is abandoned whole and replayed by the new owner). A keyed one
//!   only while its key has no Lark message: a digest holds one version per key, the latest (a
//!   newer version takes the older one's place in it, which finishes as `superseded`), and a key
//!   that got its message meanwhile (its first version was in flight) leaves the digest when it
//!   is sent and is updated in place instead. A key merged into a digest has no message of its
//!   own: its next version is sent as a new message.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::StormConfig;
use crate::envelope::{Envelope, Operation, Priority};
use crate::record::SourceRecord;

/// The most messages the dedup memory holds; past it the oldest half is dropped (a storm of
/// distinct messages must not grow memory without bound: what is dropped is merely sent again).
const DEDUP_CAPACITY: usize = 100_000;

/// One message the dedup window remembers.
#[derive(Debug)]
struct Sent {
    at: Instant,
    message_id: String,
    key: Option<u64>,
}

/// The hash of a keyed message's receiver and key.
fn key_hash(queue: &str, key: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (queue, key).hash(&mut h);
    h.finish()
}

/// `storm.*` at run time: the dedup memory and the digest settings.
#[derive(Debug, Default)]
pub(super) struct Storm {
    /// `storm.dedup.window.ms`; zero: dedup off.
    window: Duration,
    /// `storm.digest.max.items`: summaries listed in a digest.
    pub max_items: usize,
    /// (receiver, key, msg type, content) hash → when it was sent, as which message, and the
    /// (receiver, key) hash of a keyed one (a recall forgets those).
    sent: Mutex<HashMap<u64, Sent>>,
}

impl Storm {
    pub fn new(cfg: &StormConfig) -> Self {
        Storm {
            window: cfg.dedup_window,
            max_items: cfg.digest_max_items,
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// What dedup compares a message to `queue` by, or `None` when it is never deduplicated.
    fn fingerprint(&self, queue: &str, e: &Envelope) -> Option<u64> {
        if self.window.is_zero()
            || e.priority == Priority::High
            || matches!(e.op, Operation::Recall { .. })
        {
            return None;
        }
        let mut h = DefaultHasher::new();
        (queue, e.op.key(), &e.msg_type, &e.content).hash(&mut h);
        Some(h.finish())
    }

    /// The message_id of a message identical to `e` sent to `queue` within the window.
    pub fn duplicate(&self, queue: &str, e: &Envelope) -> Option<String> {
        let fp = self.fingerprint(queue, e)?;
        let sent = self.sent.lock().ok()?;
        sent.get(&fp)
            .filter(|s| s.at.elapsed() < self.window)
            .map(|s| s.message_id.clone())
    }

    /// `e` was sent to `queue` (or updated its key's message there) as `message_id`.
    pub fn sent(&self, queue: &str, e: &Envelope, message_id: &str) {
        let Some(fp) = self.fingerprint(queue, e) else {
            return;
        };
        let Ok(mut sent) = self.sent.lock() else {
            return;
        };
        if sent.len() >= DEDUP_CAPACITY {
            let window = self.window;
            sent.retain(|_, s| s.at.elapsed() < window);
            if sent.len() >= DEDUP_CAPACITY {
                let mut ages: Vec<Instant> = sent.values().map(|s| s.at).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                sent.retain(|_, s| s.at > cut);
            }
        }
        let entry = Sent {
            at: Instant::now(),
            message_id: message_id.to_string(),
            key: e.op.key().map(|k| key_hash(queue, k)),
        };
        sent.insert(fp, entry);
    }

    /// A key was recalled: what it sent may be sent again.
    pub fn forget_key(&self, queue: &str, key: &str) {
        if self.window.is_zero() {
            return;
        }
        let forgotten = Some(key_hash(queue, key));
        if let Ok(mut sent) = self.sent.lock() {
            sent.retain(|_, s| s.key != forgotten);
        }
    }
}

/// The digest group of a message of `record`: its source partition, when the message may be
/// merged at all (see the module doc). `has_message`: the message's key already has a Lark
/// message (then it is updated in place, never merged).
pub(super) fn digest_group(
    record: &SourceRecord,
    envelope: &Envelope,
    has_message: bool,
) -> Option<String> {
    let op = match envelope.op {
        Operation::Send => true,
        Operation::Upsert { .. } => !has_message,
        Operation::Recall { .. } => false,
    };
    let mergeable = envelope.priority != Priority::High
        && op
        && envelope.urgent.is_none()
        && envelope.reply.is_none();
    mergeable.then(|| format!("{}\u{0}{}", record.topic, record.partition))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{IdType, Receiver};

    fn text(t: &str, priority: Priority, op: Operation) -> Envelope {
        Envelope {
            receiver: Receiver::Id {
                id_type: IdType::ChatId,
                id: "oc_1".into(),
            },
            msg_type: "text".into(),
            content: format!("{{\"text\":\"{t}\"}}"),
            urgent: None,
            reply: None,
            op,
            priority,
            summary: None,
        }
    }

    #[test]
    fn dedup_remembers_by_receiver_key_and_content_for_the_window() {
        let storm = Storm::new(&StormConfig {
            dedup_window: Duration::from_secs(60),
            ..StormConfig::default()
        });
        let a = text("disk full", Priority::Normal, Operation::Send);
        assert_eq!(
            storm.duplicate("chat_id:oc_1", &a),
            None,
            "nothing sent yet"
        );
        storm.sent("chat_id:oc_1", &a, "om_1");
        assert_eq!(storm.duplicate("chat_id:oc_1", &a).as_deref(), Some("om_1"));
        // Priority is not content; another receiver, content or key is another message.
        let low = text("disk full", Priority::Low, Operation::Send);
        assert_eq!(
            storm.duplicate("chat_id:oc_1", &low).as_deref(),
            Some("om_1")
        );
        assert_eq!(storm.duplicate("chat_id:oc_2", &a), None);
        let other = text("disk ok", Priority::Normal, Operation::Send);
        assert_eq!(storm.duplicate("chat_id:oc_1", &other), None);
        let key = || Operation::Upsert { key: "fp".into() };
        let keyed = text("disk full", Priority::Normal, key());
        assert_eq!(storm.duplicate("chat_id:oc_1", &keyed), None);
        // High ones and recalls are never deduplicated.
        let high = text("disk full", Priority::High, Operation::Send);
        assert_eq!(storm.duplicate("chat_id:oc_1", &high), None);
        // A recall forgets what its key sent, and only that.
        storm.sent("chat_id:oc_1", &keyed, "om_2");
        assert!(storm.duplicate("chat_id:oc_1", &keyed).is_some());
        storm.forget_key("chat_id:oc_1", "fp");
        assert_eq!(storm.duplicate("chat_id:oc_1", &keyed), None);
        assert!(storm.duplicate("chat_id:oc_1", &a).is_some());
        // Off: nothing is remembered.
        let off = Storm::new(&StormConfig::default());
        off.sent("chat_id:oc_1", &a, "om_1");
        assert_eq!(off.duplicate("chat_id:oc_1", &a), None);
    }

    #[test]
    fn only_plain_normal_and_low_messages_may_be_merged() {
        let record = SourceRecord {
            topic: "alerts".into(),
            partition: 3,
            offset: 7,
            key: None,
            value: None,
            timestamp: None,
            headers: Vec::new(),
        };
        let group = |e: &Envelope| digest_group(&record, e, false);
        let plain = text("x", Priority::Normal, Operation::Send);
        assert_eq!(group(&plain).as_deref(), Some("alerts\u{0}3"));
        assert!(group(&text("x", Priority::Low, Operation::Send)).is_some());
        assert_eq!(group(&text("x", Priority::High, Operation::Send)), None);
        // Keyed: while the key has no message; a recall never.
        let keyed = text("x", Priority::Low, Operation::Upsert { key: "k".into() });
        assert!(group(&keyed).is_some());
        assert_eq!(digest_group(&record, &keyed, true), None);
        let recall = text("x", Priority::Low, Operation::Recall { key: "k".into() });
        assert_eq!(group(&recall), None);
        let mut urgent = plain.clone();
        urgent.urgent = Some(crate::envelope::Urgent {
            kind: crate::envelope::UrgentKind::App,
            user_ids: vec!["ou_1".into()],
        });
        assert_eq!(group(&urgent), None);
    }
}
