//! Storm digests in the changelog (`storm.digest.after` with `lark.state.topic`): which records a
//! digest card stands for, written (acknowledged) *before* the card is posted.
//!
//! Why: a digest's members are whatever waited for the receiver when it was sent, so a replay
//! after a crash groups the same records differently, and a digest derived afresh gets another
//! uuid: Lark would post a second card for records one card already showed. With the intent in
//! the changelog, a replayed member is recognised ([`Digests::pinned`]) and finishes through the
//! card it was part of: posted again with the same uuid and content if it may not have landed
//! (Lark keeps one copy), or not at all once its message_id was written back.
//!
//! In the changelog an intent is one record: key `{"digest":"<uuid>"}` (never a [`StateKey`],
//! which is a JSON array), value the [`DigestIntent`] as JSON with `"v"`, a tombstone once it is
//! past `lark.state.ttl.ms`. It sits in the state partition of its members' source partition (a
//! digest never spans two), so it moves with that partition on a rebalance like the keys' state.
//!
//! [`StateKey`]: super::StateKey

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{StateError, Wire};

/// One digest card as the changelog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestIntent {
    /// The card's uuid (`dg-…`, derived from its members): what Lark deduplicates a re-post by.
    pub uuid: String,
    /// The members' source topic and partition.
    pub topic: String,
    pub partition: i32,
    /// The members: runs `[first offset, last offset, message index]`, each standing for every
    /// offset of the run with that index (a storm of one partition to one chat is one run).
    pub members: Vec<[i64; 3]>,
    /// How many messages it merged.
    pub count: usize,
    /// The card's content (JSON 1.0), to post it again unchanged; dropped once it landed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content: String,
    /// Lark's message_id, written back once the card landed: a replay then needs no call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// When it was first written (ms since the epoch): it expires `lark.state.ttl.ms` later.
    pub created_ms: i64,
}

impl DigestIntent {
    /// The Kafka key: `{"digest":"<uuid>"}`, compact.
    pub fn key_bytes(uuid: &str) -> Vec<u8> {
        serde_json::json!({ "digest": uuid })
            .to_string()
            .into_bytes()
    }

    /// The uuid of a key written by [`DigestIntent::key_bytes`] (only that spelling).
    pub fn uuid_of_key(bytes: &[u8]) -> Result<String, StateError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Key {
            digest: String,
        }
        let decode = |reason: String| StateError::Decode {
            what: "digest key",
            reason,
        };
        let key: Key = serde_json::from_slice(bytes).map_err(|e| decode(e.to_string()))?;
        if DigestIntent::key_bytes(&key.digest) != bytes {
            return Err(decode("not in the canonical form lark-sink writes".into()));
        }
        Ok(key.digest)
    }

    /// The changelog value: the intent's JSON with `"v": ENTRY_VERSION`.
    pub fn to_bytes(&self) -> Vec<u8> {
        Wire::bytes_of(self)
    }

    /// Reads a changelog value; unknown versions and malformed JSON are errors.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateError> {
        Wire::read(bytes, "digest")
    }
}

/// The runs of `members` ((offset, message index) pairs, any order): consecutive offsets with
/// the same index become one `[first, last, index]`.
pub fn member_runs(members: impl IntoIterator<Item = (i64, usize)>) -> Vec<[i64; 3]> {
    let mut sorted: Vec<(i64, i64)> = members.into_iter().map(|(o, i)| (i as i64, o)).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<[i64; 3]> = Vec::new();
    for (index, offset) in sorted {
        match runs.last_mut() {
            Some(run) if run[2] == index && run[1] + 1 == offset => run[1] = offset,
            _ => runs.push([offset, offset, index]),
        }
    }
    runs
}

/// A digest a replayed record belongs to, shared by its members: the intent, and how its card
/// ended once one member settled it (the others then need no call).
#[derive(Debug)]
pub struct Pinned {
    /// The state partition its intent is in.
    pub state_partition: i32,
    /// The intent as restored (or as this instance wrote it).
    pub intent: DigestIntent,
    /// The card's message_id once it is known to be in Lark. Held across a re-post, so the
    /// members post it once; a card Lark refuses leaves it unset (each member then tries, and is
    /// dead-lettered with Lark's own answer).
    pub landed: tokio::sync::Mutex<Option<String>>,
}

/// The runs of one message index in one source partition, by (partition, index): where each
/// begins → (its last offset, its digest's uuid).
type RunsOf = HashMap<(i32, i64), BTreeMap<i64, (i64, String)>>;

/// The digests this instance knows: restored with their state partitions, and those it wrote.
/// The lookup of a record's message is by its runs (non-overlapping per message index: a message
/// is in at most one digest), so it costs a map lookup per message whatever the intents' sizes.
#[derive(Debug, Default)]
pub struct Digests {
    inner: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// uuid → the digest.
    by_uuid: HashMap<String, Arc<Pinned>>,
    /// Runs by source topic (looked up by `&str`: no allocation per message), then partition and
    /// message index.
    runs: HashMap<String, RunsOf>,
}

impl Held {
    fn insert(&mut self, pinned: Arc<Pinned>) {
        let i = &pinned.intent;
        self.remove(&i.uuid);
        let topic = self.runs.entry(i.topic.clone()).or_default();
        for run in &i.members {
            topic
                .entry((i.partition, run[2]))
                .or_default()
                .insert(run[0], (run[1], i.uuid.clone()));
        }
        self.by_uuid.insert(i.uuid.clone(), pinned);
    }

    fn remove(&mut self, uuid: &str) -> Option<Arc<Pinned>> {
        let old = self.by_uuid.remove(uuid)?;
        let i = &old.intent;
        if let Some(topic) = self.runs.get_mut(&i.topic) {
            for run in &i.members {
                let at = (i.partition, run[2]);
                if let Some(runs) = topic.get_mut(&at) {
                    if runs.get(&run[0]).is_some_and(|(_, u)| u == uuid) {
                        runs.remove(&run[0]);
                    }
                    if runs.is_empty() {
                        topic.remove(&at);
                    }
                }
            }
            if topic.is_empty() {
                self.runs.remove(&i.topic);
            }
        }
        Some(old)
    }
}

impl Digests {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The digest the message `index` of record `offset` in `topic`/`partition` was part of.
    pub fn pinned(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        index: usize,
    ) -> Option<Arc<Pinned>> {
        let held = self.held();
        if held.by_uuid.is_empty() {
            return None;
        }
        let runs = held.runs.get(topic)?.get(&(partition, index as i64))?;
        let (_, (last, uuid)) = runs.range(..=offset).next_back()?;
        if *last < offset {
            return None;
        }
        held.by_uuid.get(uuid).cloned()
    }

    /// Holds `intent` (written by this instance, or its message_id written back), in
    /// `state_partition`; a landed one is held settled.
    pub fn put(&self, intent: DigestIntent, state_partition: i32) {
        let landed = intent.message_id.clone();
        self.held().insert(Arc::new(Pinned {
            state_partition,
            intent,
            landed: tokio::sync::Mutex::new(landed),
        }));
    }

    /// Replaces what is held for `state_partition` with `intents` (a restore's result); with
    /// `merge`, adds them to it instead (a second restore of a partition already held).
    pub fn load(
        &self,
        state_partition: i32,
        intents: impl IntoIterator<Item = DigestIntent>,
        merge: bool,
    ) {
        if !merge {
            self.drop_partition(state_partition);
        }
        for intent in intents {
            self.put(intent, state_partition);
        }
    }

    /// Forgets everything held for `state_partition` (revoked); returns how many digests.
    pub fn drop_partition(&self, state_partition: i32) -> usize {
        let mut held = self.held();
        let gone: Vec<String> = held
            .by_uuid
            .values()
            .filter(|p| p.state_partition == state_partition)
            .map(|p| p.intent.uuid.clone())
            .collect();
        for uuid in &gone {
            held.remove(uuid);
        }
        gone.len()
    }

    /// The digests written more than `ttl` before `now_ms`, with their state partitions, for
    /// their tombstones; [`Digests::forget`] takes each out once its tombstone is acknowledged.
    pub fn expired(&self, now_ms: i64, ttl: Duration) -> Vec<(String, i32)> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms.saturating_sub(ttl_ms);
        self.held()
            .by_uuid
            .values()
            .filter(|p| p.intent.created_ms < cutoff)
            .map(|p| (p.intent.uuid.clone(), p.state_partition))
            .collect()
    }

    /// Forgets the digest `uuid` (its tombstone was acknowledged).
    pub fn forget(&self, uuid: &str) {
        self.held().remove(uuid);
    }

    /// How many digests are held.
    pub fn len(&self) -> usize {
        self.held().by_uuid.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(uuid: &str, partition: i32, members: Vec<[i64; 3]>) -> DigestIntent {
        DigestIntent {
            uuid: uuid.into(),
            topic: "alerts".into(),
            partition,
            count: members.iter().map(|r| (r[1] - r[0] + 1) as usize).sum(),
            members,
            content: "{\"elements\":[]}".into(),
            message_id: None,
            created_ms: 1_000,
        }
    }

    #[test]
    fn members_become_runs_per_message_index() {
        assert_eq!(
            member_runs([(5, 0), (3, 0), (4, 0), (9, 0), (4, 1), (5, 1)]),
            vec![[3, 5, 0], [9, 9, 0], [4, 5, 1]]
        );
        assert!(member_runs([]).is_empty());
    }

    #[test]
    fn keys_and_values_round_trip_and_only_the_canonical_key_reads() {
        let i = intent("dg-1", 0, vec![[3, 5, 0]]);
        assert_eq!(DigestIntent::from_bytes(&i.to_bytes()).unwrap(), i);
        let key = DigestIntent::key_bytes("dg-1");
        assert_eq!(key, br#"{"digest":"dg-1"}"#);
        assert_eq!(DigestIntent::uuid_of_key(&key).unwrap(), "dg-1");
        assert!(DigestIntent::uuid_of_key(br#"{ "digest":"dg-1"}"#).is_err());
        assert!(DigestIntent::uuid_of_key(br#"["chat_id:oc_1","k"]"#).is_err());
        assert!(DigestIntent::from_bytes(br#"{"v":2,"uuid":"x"}"#).is_err());
        // Landed: no content on the wire, the message_id instead.
        let mut landed = i.clone();
        landed.content.clear();
        landed.message_id = Some("om_1".into());
        let text = String::from_utf8(landed.to_bytes()).unwrap();
        assert!(!text.contains("content") && text.contains("om_1"), "{text}");
    }

    #[test]
    fn a_message_is_found_by_its_run_and_forgotten_with_its_partition() {
        let d = Digests::default();
        d.load(
            0,
            [intent("dg-a", 0, vec![[10, 20, 0], [30, 30, 0]])],
            false,
        );
        d.put(intent("dg-b", 1, vec![[10, 12, 1]]), 1);
        let at = |p, o, i| d.pinned("alerts", p, o, i).map(|p| p.intent.uuid.clone());
        assert_eq!(at(0, 10, 0).as_deref(), Some("dg-a"));
        assert_eq!(at(0, 20, 0).as_deref(), Some("dg-a"));
        assert_eq!(at(0, 30, 0).as_deref(), Some("dg-a"));
        assert_eq!(at(0, 21, 0), None, "between the runs");
        assert_eq!(at(0, 9, 0), None);
        assert_eq!(at(0, 15, 1), None, "another message of the record");
        assert_eq!(at(1, 11, 1).as_deref(), Some("dg-b"));
        assert_eq!(at(1, 11, 0), None);
        assert_eq!(d.pinned("other", 0, 15, 0).map(|_| ()), None);
        // A second restore of partition 0 replaces what it held; a merge adds.
        d.load(0, [intent("dg-c", 0, vec![[40, 41, 0]])], false);
        assert_eq!(at(0, 15, 0), None);
        assert_eq!(at(0, 40, 0).as_deref(), Some("dg-c"));
        d.load(0, [intent("dg-a", 0, vec![[10, 20, 0]])], true);
        assert_eq!(at(0, 15, 0).as_deref(), Some("dg-a"));
        assert_eq!(at(0, 41, 0).as_deref(), Some("dg-c"));
        assert_eq!(d.drop_partition(0), 2);
        assert_eq!((at(0, 15, 0), d.len()), (None, 1));
    }

    #[test]
    fn digests_expire_after_the_ttl_and_a_landed_one_is_held_settled() {
        let d = Digests::default();
        let mut landed = intent("dg-a", 0, vec![[1, 2, 0]]);
        landed.message_id = Some("om_1".into());
        d.put(landed, 0);
        let mut young = intent("dg-b", 0, vec![[3, 3, 0]]);
        young.created_ms = 50_000;
        d.put(young, 0);
        let pinned = d.pinned("alerts", 0, 2, 0).unwrap();
        assert_eq!(
            pinned.landed.try_lock().unwrap().clone(),
            Some("om_1".to_string())
        );
        assert_eq!(
            d.expired(60_000, Duration::from_secs(30)),
            vec![("dg-a".to_string(), 0)]
        );
        d.forget("dg-a");
        assert_eq!(d.len(), 1);
        assert!(d.pinned("alerts", 0, 2, 0).is_none());
    }
}
