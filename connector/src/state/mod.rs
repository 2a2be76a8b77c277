//! Message state for the alert lifecycle: which Lark message a `messageKey` was sent as to a
//! receiver, so that later records with the same key update that message in place or recall it.
//!
//! Kept the Kafka Streams way. The truth is a compacted changelog topic ([`Changelog`],
//! `changelog.rs`): one record per [`StateKey`], its value the [`StateEntry`] as JSON, a tombstone
//! once the message is recalled or forgotten. It is partitioned like the source
//! ([`state_partition`]), written with the acknowledged producer (`acks=all`) before the source
//! offset is stored, and a partition's state is restored from it when the source partition is
//! assigned. [`MessageStates`] is the in-memory copy the sink reads: restored per state partition
//! ([`MessageStates::load`], or [`MessageStates::merge`] when a partition it shares is assigned),
//! updated after each acknowledged write, dropped on revoke; expired keys are forgotten after their
//! tombstones ([`Changelog::expire`]).
//!
//! The same changelog keeps storm digests' intents (`digests.rs`): which records a digest card
//! stood for, so that a replay posts that card again rather than a new one.
//!
//! The pure parts here (keys, entries, the map, the partition rule) do no IO; `changelog.rs` is
//! the Kafka side (through `source::kafka`).

mod changelog;
mod digests;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::telemetry;

pub use changelog::{
    Changelog, ChangelogTopic, Expiry, Restored, EXPIRE_BATCH, RESTORE_IDLE_TIMEOUT,
};
pub use digests::{member_runs, DigestIntent, Digests, Pinned};

/// What can go wrong with the state topic or a state record.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the state-topic {what}: {source}")]
    Create {
        what: &'static str,
        source: rdkafka::error::KafkaError,
    },
    #[error("state topic '{topic}' does not exist and could not be created: {reason}")]
    Topic { topic: String, reason: String },
    #[error("writing to state topic '{topic}' partition {partition} failed: {source}")]
    Write {
        topic: String,
        partition: i32,
        source: rdkafka::error::KafkaError,
    },
    #[error("restoring state topic '{topic}' partition {partition} failed: {reason}")]
    Restore {
        topic: String,
        partition: i32,
        reason: String,
    },
    /// A changelog key or value that is not one lark-sink writes (restore skips and counts it).
    #[error("undecodable state {what}: {reason}")]
    Decode { what: &'static str, reason: String },
}

/// One Lark message's identity in the lifecycle: the receiver's queue key (as the sink queues it,
/// e.g. `chat_id:oc_1`) and the record's `messageKey`. Two receivers of one key are two messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateKey {
    /// `Receiver::queue_key()` of the message's receiver.
    pub receiver: String,
    /// The record's `messageKey`.
    pub message_key: String,
}

impl StateKey {
    /// A key for `receiver` and `message_key`.
    pub fn new(receiver: impl Into<String>, message_key: impl Into<String>) -> Self {
        StateKey {
            receiver: receiver.into(),
            message_key: message_key.into(),
        }
    }

    /// The Kafka key: the JSON array `["<receiver>","<message_key>"]`, compact. JSON escaping makes
    /// it unambiguous whatever the strings hold (no separator can be forged), and serde_json writes
    /// one spelling per pair, so compaction sees one key per message.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::Value::from(vec![self.receiver.as_str(), self.message_key.as_str()])
            .to_string()
            .into_bytes()
    }

    /// Reads a Kafka key written by [`StateKey::to_bytes`]; any other spelling (spaces, escapes
    /// written differently, more or fewer items) is refused, since compaction would not see it
    /// as the same key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateError> {
        let decode = |reason: String| StateError::Decode {
            what: "key",
            reason,
        };
        let (receiver, message_key): (String, String) =
            serde_json::from_slice(bytes).map_err(|e| decode(e.to_string()))?;
        let key = StateKey {
            receiver,
            message_key,
        };
        if key.to_bytes() != bytes {
            return Err(decode("not in the canonical form lark-sink writes".into()));
        }
        Ok(key)
    }
}

/// The version of [`StateEntry`]'s JSON this build writes and reads. A record with another version
/// is undecodable here (restore skips it and forgets its key), never misread.
pub const ENTRY_VERSION: u32 = 1;

/// What the state remembers of one sent Lark message: the changelog record's value.
///
/// As JSON (193 bytes with Lark's 35-character ids and 13-digit times; the key about 60):
/// `{"v":1,"message_id":"om_…","msg_type":"interactive","chat_id":"oc_…","sent_ms":…,"updated_ms":…,"edits":0}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEntry {
    /// Lark's `message_id` (`om_…`): what an update (PATCH / PUT) or a recall (DELETE) names.
    pub message_id: String,
    /// The message's `msg_type` as sent: which update call applies (a card is PATCHed, text and
    /// post are PUT) and whether a new record's type still fits.
    pub msg_type: String,
    /// The chat Lark put the message in, when it said (not for webhooks).
    #[serde(default)]
    pub chat_id: Option<String>,
    /// When the Lark message was first sent (ms since the epoch): Lark edits and recalls messages
    /// only for so long, [`MessageStates::expired`] finds the ones past it.
    pub sent_ms: i64,
    /// When the message was last sent or updated (ms since the epoch).
    pub updated_ms: i64,
    /// In-place updates applied so far (Lark caps how often one message may be edited).
    #[serde(default)]
    pub edits: u32,
}

/// The changelog value on the wire: the entry with its version.
#[derive(Serialize, Deserialize)]
struct Wire<E> {
    v: u32,
    #[serde(flatten)]
    entry: E,
}

impl<E: Serialize> Wire<E> {
    /// `entry`'s JSON with `"v": ENTRY_VERSION`.
    fn bytes_of(entry: E) -> Vec<u8> {
        let wire = Wire {
            v: ENTRY_VERSION,
            entry,
        };
        // Structs of strings, integers and arrays of them: serialising cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

impl<E: serde::de::DeserializeOwned> Wire<E> {
    /// Reads a value written by [`Wire::bytes_of`]; unknown versions and malformed JSON are
    /// `Decode` errors naming `what`.
    fn read(bytes: &[u8], what: &'static str) -> Result<E, StateError> {
        let decode = |reason: String| StateError::Decode { what, reason };
        let wire: Wire<E> = serde_json::from_slice(bytes).map_err(|e| decode(e.to_string()))?;
        if wire.v != ENTRY_VERSION {
            return Err(decode(format!(
                "version {} (this build reads {ENTRY_VERSION})",
                wire.v
            )));
        }
        Ok(wire.entry)
    }
}

impl StateEntry {
    /// The changelog value: the entry's JSON with `"v": ENTRY_VERSION`.
    pub fn to_bytes(&self) -> Vec<u8> {
        Wire::bytes_of(self)
    }

    /// Reads a changelog value; unknown versions and malformed JSON are errors.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateError> {
        Wire::read(bytes, "entry")
    }
}

/// Which state partition holds the state of a source partition: `source_partition` modulo the
/// state topic's partition count.
///
/// Why: the changelog is partitioned like the source. The source is keyed by `messageKey` (the
/// lifecycle needs it: one key's records in order), so a key's records all sit in one source
/// partition, and its state sits in that partition's state partition. A rebalance that moves
/// the source partition moves its state partition with it: an instance restores exactly the
/// state partitions of the source partitions it owns ([`state_partitions`]), and no two
/// instances write one key. With as many state partitions as source partitions (the default) the
/// map is one to one; with fewer, several source partitions share one, and an instance restores
/// (and holds) the other partitions' keys too. A count of 0 or less (unknown) counts as 1.
pub fn state_partition(source_partition: i32, state_partitions: i32) -> i32 {
    source_partition.rem_euclid(state_partitions.max(1))
}

/// The state partitions an owner of `source_partitions` restores and keeps: each one once, so
/// two source partitions sharing a state partition restore it once, and revoking one of them must
/// not drop what the other still needs (drop a state partition only when it leaves this set).
pub fn state_partitions(
    source_partitions: impl IntoIterator<Item = i32>,
    state_partitions: i32,
) -> BTreeSet<i32> {
    source_partitions
        .into_iter()
        .map(|p| state_partition(p, state_partitions))
        .collect()
}

/// What [`MessageStates::forget_expired`] did with a key whose tombstone was acknowledged.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterTombstone<R> {
    /// It still held the expired entry: forgotten.
    Forgotten,
    /// A newer version had landed: kept, and rewritten (`rewrite`'s result).
    Changed(R),
    /// It was gone already (recalled, or its partition revoked).
    Gone,
}

/// The in-memory state: every entry this instance holds, with the state partition it came from
/// (so a revoke drops exactly that partition). One lock around a map, shared by the consumer
/// loop and the receiver queues; each call holds it for one map operation (`load`, `merge` and
/// `drop_partition` for one pass), never across IO (`forget_expired`'s rewrite only enqueues a
/// write in the producer).
#[derive(Debug, Default)]
pub struct MessageStates {
    inner: Mutex<HashMap<StateKey, (i32, StateEntry)>>,
}

impl MessageStates {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The map, even if a thread panicked while holding it (each operation leaves it whole).
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<StateKey, (i32, StateEntry)>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The entry for `key`, if this instance holds one.
    pub fn get(&self, key: &StateKey) -> Option<StateEntry> {
        self.map().get(key).map(|(_, e)| e.clone())
    }

    /// Records `entry` for `key` (after its changelog write was acknowledged), in
    /// `state_partition`.
    pub fn put(&self, key: StateKey, entry: StateEntry, state_partition: i32) {
        let mut map = self.map();
        map.insert(key, (state_partition, entry));
        telemetry::state_keys(map.len());
    }

    /// Forgets `key` (after its tombstone was acknowledged); returns what was held.
    pub fn remove(&self, key: &StateKey) -> Option<StateEntry> {
        let mut map = self.map();
        let old = map.remove(key).map(|(_, e)| e);
        telemetry::state_keys(map.len());
        old
    }

    /// Replaces everything held for `state_partition` with `entries` (a restore's result).
    pub fn load(
        &self,
        state_partition: i32,
        entries: impl IntoIterator<Item = (StateKey, StateEntry)>,
    ) {
        let mut map = self.map();
        map.retain(|_, (p, _)| *p != state_partition);
        map.extend(entries.into_iter().map(|(k, e)| (k, (state_partition, e))));
        telemetry::state_keys(map.len());
    }

    /// Forgets everything held for `state_partition` (its source partition was revoked); returns
    /// how many entries that was.
    pub fn drop_partition(&self, state_partition: i32) -> usize {
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, (p, _)| *p != state_partition);
        telemetry::state_keys(map.len());
        before - map.len()
    }

    /// The entries first sent more than `ttl` before `now_ms` (Lark no longer edits or recalls
    /// them), oldest first, with their state partitions. Only lists them: the caller writes their
    /// tombstones, then takes each out with [`MessageStates::forget_expired`] (`Changelog::expire`
    /// does both), so the map never forgets a key the changelog still holds.
    pub fn expired(&self, now_ms: i64, ttl: Duration) -> Vec<(StateKey, i32, StateEntry)> {
        older_than(&self.map(), now_ms, ttl)
    }

    /// After `key`'s tombstone was acknowledged: forgets it if it still holds `expired` (what
    /// [`MessageStates::expired`] listed). If a newer version landed meanwhile, the tombstone may
    /// sit after that version's write in the changelog, so the key is kept and `rewrite` is called
    /// with its current entry, under the lock: whatever it enqueues lands after the tombstone and
    /// before any later write of the key (each of which is enqueued after its `put`).
    pub fn forget_expired<R>(
        &self,
        key: &StateKey,
        expired: &StateEntry,
        rewrite: impl FnOnce(i32, &StateEntry) -> R,
    ) -> AfterTombstone<R> {
        let mut map = self.map();
        let after = match map.get(key) {
            Some((_, e)) if e == expired => {
                map.remove(key);
                AfterTombstone::Forgotten
            }
            Some((p, e)) => AfterTombstone::Changed(rewrite(*p, e)),
            None => AfterTombstone::Gone,
        };
        telemetry::state_keys(map.len());
        after
    }

    /// Folds a second restore of `state_partition` (read while this instance already held it) into
    /// what it holds: a restored entry replaces the held one unless the held one was updated later
    /// (an update of this instance's own, newer than what the restore read); a held entry the
    /// restore did not find is forgotten (another instance recalled or expired it) unless it was
    /// updated at or after `kept_since_ms` (its write may have been in flight when the restore took
    /// the partition's end). Used when a source partition that shares `state_partition` with one
    /// already owned is assigned: its keys were written by another instance meanwhile.
    pub fn merge(
        &self,
        state_partition: i32,
        entries: impl IntoIterator<Item = (StateKey, StateEntry)>,
        kept_since_ms: i64,
    ) {
        let mut map = self.map();
        let restored: HashMap<StateKey, StateEntry> = entries.into_iter().collect();
        map.retain(|k, (p, e)| {
            *p != state_partition || restored.contains_key(k) || e.updated_ms >= kept_since_ms
        });
        for (k, e) in restored {
            match map.get(&k) {
                Some((_, held)) if held.updated_ms > e.updated_ms => {}
                _ => {
                    map.insert(k, (state_partition, e));
                }
            }
        }
        telemetry::state_keys(map.len());
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The keys of `map` first sent more than `ttl` before `now_ms`, oldest first.
fn older_than(
    map: &HashMap<StateKey, (i32, StateEntry)>,
    now_ms: i64,
    ttl: Duration,
) -> Vec<(StateKey, i32, StateEntry)> {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now_ms.saturating_sub(ttl_ms);
    let mut out: Vec<(StateKey, i32, StateEntry)> = map
        .iter()
        .filter(|(_, (_, e))| e.sent_ms < cutoff)
        .map(|(k, (p, e))| (k.clone(), *p, e.clone()))
        .collect();
    out.sort_by(|a, b| (a.2.sent_ms, &a.0).cmp(&(b.2.sent_ms, &b.0)));
    out
}

#[cfg(test)]
mod tests;
