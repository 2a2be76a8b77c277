//! Following the assignment with the keyed messages' state (`lark.state.topic`): which state
//! partitions this instance holds, which it is restoring, and which source partitions wait for
//! them.
//!
//! A restore runs *beside* the consumer loop, never in it, the way Kafka Streams restores with the
//! main consumer's restoring partitions paused: the source partitions whose state is being read
//! are paused, and the loop goes on polling, so the group's rebalance protocol is served
//! (librdkafka runs rebalance callbacks from the poll) and the other partitions keep flowing. A
//! record of a waiting partition that was already on its way when the pause took effect is held,
//! in order, and taken once the restore is in; on resume librdkafka fetches from after the last
//! record it handed out, so nothing is read twice or skipped. (Restoring 100k keys takes seconds;
//! done on the loop, the group's session ran out meanwhile and the restore began again.)
//!
//! The invariant: a record is taken only once the state of its state partition is held, complete
//! for its source partition. A state partition is complete for the source partitions it was
//! restored for, or owned since: one source partition newly assigned beside others sharing the
//! state partition (`lark.state.topic.partitions` below the source's count, or several source
//! topics) was written by another instance meanwhile, so the state partition is read again and
//! merged ([`MessageStates::merge`](crate::state::MessageStates::merge)) while the partitions
//! already owned go on.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use rdkafka::TopicPartitionList;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::settle::Settle;
use crate::delivery::keyed::now_ms;
use crate::record::SourceRecord;
use crate::state::{state_partition, Restored, StateError};
use crate::telemetry;

/// A source partition: topic and partition.
pub(super) type SourcePartition = (String, i32);

/// A restore under way for one state partition.
#[derive(Debug)]
struct Pending {
    /// Which restore (a newer one for the same partition makes this one's result void).
    generation: u64,
    /// The source partitions the state partition is complete for once it is in.
    sources: BTreeSet<SourcePartition>,
    /// Merge into what is held (the state partition was already held), rather than load.
    merge: Option<i64>,
}

/// What a restore task reports: each state partition as soon as it is read, or its failure.
pub(super) enum Done {
    Partition { generation: u64, restored: Restored },
    Failed { generation: u64, error: StateError },
}

/// What a change of assignment asks of the consumer.
#[derive(Debug, Default)]
pub(super) struct Followed {
    /// Source partitions to pause until their state partition is restored.
    pub pause: Vec<SourcePartition>,
}

/// The state partitions held, being restored, and the source partitions waiting for them.
pub(super) struct Restores {
    /// Each held state partition, with the source partitions it is complete for.
    held: BTreeMap<i32, BTreeSet<SourcePartition>>,
    /// The restores under way, by state partition.
    restoring: BTreeMap<i32, Pending>,
    /// Paused source partitions, each waiting for the restore of its state partition.
    waiting: BTreeMap<SourcePartition, i32>,
    /// The restore tasks (aborted, and their readers stopped, when this is dropped).
    tasks: JoinSet<()>,
    /// Where the tasks report; one sender is kept here, so the channel never closes.
    done_tx: mpsc::UnboundedSender<Done>,
    done: mpsc::UnboundedReceiver<Done>,
    /// The last restore's generation.
    generation: u64,
    /// Records of waiting partitions taken before their pause took effect, in the order taken.
    held_records: VecDeque<SourceRecord>,
}

impl Default for Restores {
    fn default() -> Self {
        let (done_tx, done) = mpsc::unbounded_channel();
        Restores {
            held: BTreeMap::new(),
            restoring: BTreeMap::new(),
            waiting: BTreeMap::new(),
            tasks: JoinSet::new(),
            done_tx,
            done,
            generation: 0,
            held_records: VecDeque::new(),
        }
    }
}

impl Restores {
    /// Follows the assignment `assigned` (source partitions, mapped to `partitions` state
    /// partitions): drops the state of state partitions no longer owned, starts restores for the
    /// ones that are new or that gained a source partition, and says which source partitions to
    /// pause meanwhile. `continuous`: this is the first assignment since the last call, so a
    /// partition owned at both was owned throughout (not so after two or more: it may have been
    /// another instance's in between, and everything is restored again).
    pub fn follow(
        &mut self,
        settle: &Arc<Settle>,
        assigned: &BTreeSet<SourcePartition>,
        continuous: bool,
        partitions: i32,
    ) -> Followed {
        let Some(state) = &settle.outputs.state else {
            return Followed::default();
        };
        let mut owned: BTreeMap<i32, BTreeSet<SourcePartition>> = BTreeMap::new();
        for sp in assigned {
            owned
                .entry(state_partition(sp.1, partitions))
                .or_default()
                .insert(sp.clone());
        }
        if !continuous {
            tracing::info!("messageKey: assignments were missed; all state is restored again");
            for sources in self.held.values_mut() {
                sources.clear();
            }
            for pending in self.restoring.values_mut() {
                pending.sources.clear();
            }
        }
        // Not owned (or held for no source any more): forget, and void any restore of it (its
        // result is not ours to hold).
        for (p, _) in self
            .held
            .iter()
            .filter(|(p, sources)| !owned.contains_key(p) || sources.is_empty())
        {
            let dropped = state.states.drop_partition(*p);
            let digests = state.digests.drop_partition(*p);
            tracing::debug!(
                state_partition = p,
                dropped,
                digests,
                "messageKey: state dropped"
            );
        }
        self.held
            .retain(|p, sources| owned.contains_key(p) && !sources.is_empty());
        self.restoring.retain(|p, _| owned.contains_key(p));
        self.waiting.retain(|sp, _| assigned.contains(sp));
        self.held_records
            .retain(|r| assigned.contains(&(r.topic.clone(), r.partition)));
        let mut start = Vec::new();
        let mut followed = Followed::default();
        for (p, sources) in owned {
            if let Some(held) = self.held.get_mut(&p) {
                // A held partition stays complete for the sources still owned only; held for none
                // of them, what it holds is another instance's now: read it afresh.
                held.retain(|sp| sources.contains(sp));
                if held.is_empty() {
                    self.held.remove(&p);
                    state.states.drop_partition(p);
                    state.digests.drop_partition(p);
                }
            }
            let known = match (self.restoring.get(&p), self.held.get(&p)) {
                (Some(pending), _) => pending.sources.clone(),
                (None, Some(held)) => held.clone(),
                (None, None) => BTreeSet::new(),
            };
            let new: Vec<SourcePartition> = sources.difference(&known).cloned().collect();
            if new.is_empty() {
                continue;
            }
            let merge = self.held.contains_key(&p).then(now_ms);
            let pending = Pending {
                generation: self.generation + 1,
                sources: sources.clone(),
                merge,
            };
            // A fresh restore holds back every source partition of it; a merge only the new
            // ones (the others' keys are this instance's own, held and current).
            let wait: Vec<SourcePartition> = if merge.is_some() {
                new
            } else {
                sources.iter().cloned().collect()
            };
            for sp in &wait {
                self.waiting.insert(sp.clone(), p);
            }
            followed.pause.extend(wait);
            self.restoring.insert(p, pending);
            start.push(p);
        }
        while self.tasks.try_join_next().is_some() {}
        if !start.is_empty() {
            self.generation += 1;
            let (generation, settle, tx) = (self.generation, settle.clone(), self.done_tx.clone());
            tracing::info!(state_partitions = ?start, "messageKey: restoring state (its source partitions paused meanwhile)");
            self.tasks.spawn(async move {
                let Some(state) = &settle.outputs.state else {
                    return;
                };
                let each = {
                    let tx = tx.clone();
                    move |restored| {
                        let _ = tx.send(Done::Partition {
                            generation,
                            restored,
                        });
                    }
                };
                if let Err(error) = state.changelog.restore_each(&start, each).await {
                    let _ = tx.send(Done::Failed { generation, error });
                }
            });
        }
        telemetry::state_restoring(self.waiting.len());
        followed
    }

    /// Whether a restore is under way (then [`Restores::next`] has something to wait for).
    pub fn busy(&self) -> bool {
        !self.restoring.is_empty()
    }

    /// The next report of a restore task; pending while none comes.
    pub async fn next(&mut self) -> Done {
        match self.done.recv().await {
            Some(done) => done,
            // Never: `self` holds a sender.
            None => std::future::pending().await,
        }
    }

    /// Takes a restore's report in: a state partition still waiting for exactly this restore is
    /// loaded (or merged), and the source partitions no longer waiting are returned (to resume).
    /// A failed restore that is still wanted is the caller's fatal error: the sink cannot send
    /// keyed messages without their state, and stops rather than send duplicates. Reports of a
    /// restore made void meanwhile (revoked, or started again) are dropped.
    pub fn finished(
        &mut self,
        settle: &Settle,
        done: Done,
    ) -> Result<Vec<SourcePartition>, StateError> {
        let is_current = |restoring: &BTreeMap<i32, Pending>, p: i32, generation: u64| {
            restoring
                .get(&p)
                .is_some_and(|pending| pending.generation == generation)
        };
        let (generation, r) = match done {
            Done::Failed { generation, error } => {
                if self
                    .restoring
                    .values()
                    .any(|pending| pending.generation == generation)
                {
                    return Err(error);
                }
                return Ok(Vec::new());
            }
            Done::Partition {
                generation,
                restored,
            } => (generation, restored),
        };
        let p = r.partition;
        let (Some(state), true) = (
            &settle.outputs.state,
            is_current(&self.restoring, p, generation),
        ) else {
            return Ok(Vec::new());
        };
        let Some(pending) = self.restoring.remove(&p) else {
            return Ok(Vec::new());
        };
        let keys = r.entries.len();
        let digests = r.digests.len();
        state
            .digests
            .load(p, r.digests.into_values(), pending.merge.is_some());
        match pending.merge {
            Some(since) => state.states.merge(p, r.entries, since),
            None => state.states.load(p, r.entries),
        }
        tracing::info!(
            state_partition = p,
            keys,
            digests,
            records = r.records,
            bad = r.bad,
            merged = pending.merge.is_some(),
            elapsed_ms = r.elapsed.as_millis() as u64,
            "messageKey: state restored; its source partitions resume"
        );
        self.held.entry(p).or_default().extend(pending.sources);
        let resume: Vec<SourcePartition> = self
            .waiting
            .iter()
            .filter(|(_, sp)| **sp == p)
            .map(|(source, _)| source.clone())
            .collect();
        for sp in &resume {
            self.waiting.remove(sp);
        }
        telemetry::state_restoring(self.waiting.len());
        Ok(resume)
    }

    /// Whether `record`'s partition waits for a restore (then the record is held, not taken).
    pub fn waits(&self, record: &SourceRecord) -> bool {
        !self.waiting.is_empty()
            && self
                .waiting
                .contains_key(&(record.topic.clone(), record.partition))
    }

    /// Whether `topic`/`partition` waits for a restore (it stays paused whatever backpressure
    /// says).
    pub fn waits_for(&self, topic: &str, partition: i32) -> bool {
        self.waiting.contains_key(&(topic.to_string(), partition))
    }

    /// Holds a record of a waiting partition until its restore is in.
    pub fn hold(&mut self, record: SourceRecord) {
        self.held_records.push_back(record);
    }

    /// The held records whose partition no longer waits, in the order they were taken.
    pub fn released(&mut self) -> Vec<SourceRecord> {
        let (go, stay): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held_records)
            .into_iter()
            .partition(|r| !self.waits(r));
        self.held_records = stay.into();
        go
    }
}

/// `partitions` as a list for the consumer's pause and resume.
pub(super) fn partition_list(partitions: &[SourcePartition]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in partitions {
        tpl.add_partition(topic, *partition);
    }
    tpl
}
