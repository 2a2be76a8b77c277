//! Which offset of each partition may be committed.
//!
//! The at-least-once invariant lives here: a partition's stored offset only ever moves to the
//! first offset that is not finished yet (every message of every earlier record delivered or
//! dead-lettered). Records may finish out of order; the stored offset waits for the gap to close.
//!
//! Partition ownership changes with rebalances. Each assignment of a partition gets a new
//! *generation*; completions from an older generation are ignored, because the partition's new
//! owner has already started from the committed offset and will replay (uuid-deduplicated) work.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::SinkConsumer;

/// Identifies one record in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub generation: u64,
}

struct PartState {
    generation: u64,
    /// Offsets handed out and not finished yet.
    pending: BTreeSet<i64>,
    /// Highest offset handed out so far.
    highest: Option<i64>,
    /// The last offset returned for storing (the next offset to consume); starts at the first
    /// offset seen, which is where the consumer already stands.
    stored: i64,
    /// Cancelled when the partition is revoked: queued and retrying sends stop at once.
    revoked: CancellationToken,
}

impl PartState {
    /// The next offset a restarted consumer should read: the first unfinished one.
    fn committable(&self) -> Option<i64> {
        match self.pending.first() {
            Some(&first) => Some(first),
            None => self.highest.map(|h| h + 1),
        }
    }
}

#[derive(Default)]
pub struct OffsetTracker {
    parts: HashMap<(String, i32), PartState>,
    next_generation: u64,
}

impl OffsetTracker {
    /// Registers a record as in flight. Offsets of a partition must be begun in increasing order
    /// (the order Kafka delivers them). Returns its ticket and the partition's revoked flag, which
    /// workers check to abandon queued records of a partition this instance no longer owns.
    pub fn begin(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> (Ticket, CancellationToken) {
        let key = (topic.to_string(), partition);
        let next_generation = &mut self.next_generation;
        let state = self.parts.entry(key).or_insert_with(|| {
            *next_generation += 1;
            PartState {
                generation: *next_generation,
                pending: BTreeSet::new(),
                highest: None,
                stored: offset,
                revoked: CancellationToken::new(),
            }
        });
        state.pending.insert(offset);
        state.highest = Some(state.highest.map_or(offset, |h| h.max(offset)));
        (
            Ticket {
                topic: topic.to_string(),
                partition,
                offset,
                generation: state.generation,
            },
            state.revoked.clone(),
        )
    }

    /// Marks a record finished. Returns the offset to store (next offset to consume) when the
    /// contiguous finished prefix grew, `None` otherwise or when the ticket is stale.
    pub fn complete(&mut self, t: &Ticket) -> Option<i64> {
        let state = self.parts.get_mut(&(t.topic.clone(), t.partition))?;
        if state.generation != t.generation {
            return None;
        }
        state.pending.remove(&t.offset);
        let next = state.committable()?;
        if next <= state.stored {
            return None;
        }
        state.stored = next;
        Some(next)
    }

    /// Forgets a partition that was revoked; its queued work is abandoned and later completions
    /// of its tickets are ignored.
    pub fn revoke(&mut self, topic: &str, partition: i32) {
        if let Some(state) = self.parts.remove(&(topic.to_string(), partition)) {
            state.revoked.cancel();
        }
    }

    /// Forgets every partition (shutdown, or a lost assignment).
    pub fn revoke_all(&mut self) {
        for (_, state) in self.parts.drain() {
            state.revoked.cancel();
        }
    }

    /// Records in flight, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.parts.values().map(|p| p.pending.len()).sum()
    }
}

/// The tracker and the consumer its offsets are stored in. The one place that calls
/// `store_offsets`: a record is begun here when it is taken, finished here when it is settled,
/// and the last commit of a stop is made here.
#[derive(Clone)]
pub struct Offsets {
    pub tracker: Arc<Mutex<OffsetTracker>>,
    pub consumer: Arc<SinkConsumer>,
}

impl Offsets {
    /// [`OffsetTracker::begin`]; `None` if the tracker is poisoned (a thread panicked holding it).
    pub fn begin(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Option<(Ticket, CancellationToken)> {
        let mut tracker = self.tracker.lock().ok()?;
        Some(tracker.begin(topic, partition, offset))
    }

    /// Marks a record finished and stores the partition's new committable offset, if it moved.
    pub fn finish(&self, ticket: &Ticket) {
        let next = match self.tracker.lock() {
            Ok(mut t) => t.complete(ticket),
            Err(_) => None,
        };
        let Some(next) = next else { return };
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(&ticket.topic, ticket.partition, Offset::Offset(next))
            .is_ok()
        {
            // Fails only if the partition was revoked meanwhile; its new owner replays.
            if let Err(e) = self.consumer.store_offsets(&tpl) {
                tracing::debug!(topic = %ticket.topic, partition = ticket.partition, "offset not stored: {e}");
            }
        }
    }

    /// Commits what is stored now, without waiting for the answer or the next
    /// `offset.flush.interval.ms`: after a storm digest lands, so that a crash soon after does not
    /// replay its records into a differently grouped digest (docs/user-guide.md "Storms"). At most
    /// one per digest, so at most a few a second.
    pub fn commit_soon(&self) {
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Async) {
            tracing::debug!("early commit: {e}");
        }
    }

    /// The end of a stop: commits what is stored, then forgets every partition.
    pub fn close(&self) {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("final offsets committed"),
            Err(e) => tracing::debug!("final commit: {e}"),
        }
        if let Ok(mut t) = self.tracker.lock() {
            t.revoke_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_only_the_contiguous_finished_prefix() {
        let mut t = OffsetTracker::default();
        let tickets: Vec<Ticket> = (10..15).map(|o| t.begin("a", 0, o).0).collect();
        assert_eq!(t.complete(&tickets[1]), None, "11 done but 10 pending");
        assert_eq!(t.complete(&tickets[2]), None);
        assert_eq!(
            t.complete(&tickets[0]),
            Some(13),
            "10..=12 done → next is 13"
        );
        assert_eq!(t.complete(&tickets[4]), None);
        assert_eq!(t.complete(&tickets[3]), Some(15));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn partitions_are_independent_and_gaps_in_offsets_are_fine() {
        let mut t = OffsetTracker::default();
        let a = t.begin("a", 0, 5).0;
        let b = t.begin("a", 1, 100).0;
        let a2 = t.begin("a", 0, 9).0; // compacted topic: 6..8 never arrive
        assert_eq!(t.complete(&b), Some(101));
        assert_eq!(t.complete(&a2), None);
        assert_eq!(t.complete(&a), Some(10));
    }

    #[test]
    fn stale_tickets_after_revoke_are_ignored() {
        let mut t = OffsetTracker::default();
        let (old, revoked) = t.begin("a", 0, 1);
        t.revoke("a", 0);
        assert!(revoked.is_cancelled());
        let (new, revoked2) = t.begin("a", 0, 1);
        assert_ne!(old.generation, new.generation);
        assert!(!revoked2.is_cancelled());
        assert_eq!(t.complete(&old), None);
        assert_eq!(t.complete(&new), Some(2));
    }
}
