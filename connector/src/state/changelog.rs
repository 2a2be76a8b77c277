//! The changelog topic (`lark.state.topic`): compacted, one record per [`StateKey`], written with
//! the acknowledged producer and read back, one partition or several at a time, by a reader that
//! assigns partitions itself (no group, no commits), so restoring never touches the sink's group.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::{
    AfterTombstone, DigestIntent, Digests, MessageStates, StateEntry, StateError, StateKey,
};
use crate::source::kafka::{acked_producer, ensure_topic_with, reader_config, topic_configs};
use crate::telemetry;

/// How long a restore waits without any record or partition end before it gives up: a broker
/// that answers nothing for this long is down, and the caller decides (the sink stops rather
/// than send with a state it does not have).
pub const RESTORE_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a metadata (watermark) request of a restore may take.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);

/// The reader's prefetch (librdkafka `queued.max.messages.kbytes`): larger than the sink's 4 MB
/// cap, since a restore wants to read fast and lives only until it reaches the end; 16 MB bounds
/// it per restore.
const RESTORE_PREFETCH_KB: &str = "16384";

/// How many tombstones [`Changelog::expire`] has in flight at once: enough for the producer to
/// batch them (100k keys in seconds, not one round trip each), few enough to bound the memory.
pub const EXPIRE_BATCH: usize = 1000;

/// How long a write of the state may take before it fails (librdkafka `message.timeout.ms` for
/// the record).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The topic configs the changelog is created with: compaction keeps the last record per key
/// (and drops tombstones eventually), so the topic stays as large as the live state.
const TOPIC_CONFIGS: &[(&str, &str)] = &[("cleanup.policy", "compact")];

/// What [`Changelog::ensure_topic`] found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogTopic {
    /// Its partition count (an existing topic's is kept, whatever was asked for).
    pub partitions: i32,
    /// Whether this call created it (then with `cleanup.policy=compact`).
    pub created: bool,
    /// `cleanup.policy` as the broker reports it, `None` if it could not be read. An existing topic
    /// without `compact` is used as it is, with a warning: it grows with every write.
    pub cleanup_policy: Option<String>,
}

/// One state partition read back: the live entries (last value per key, tombstones applied) and
/// what it took.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// The state partition.
    pub partition: i32,
    /// The entries, one per live key.
    pub entries: HashMap<StateKey, StateEntry>,
    /// The storm digests' intents, by uuid (`digests.rs`).
    pub digests: HashMap<String, DigestIntent>,
    /// Records read (values, tombstones and bad ones).
    pub records: u64,
    /// Tombstones among them.
    pub tombstones: u64,
    /// Records skipped as undecodable (a key or value lark-sink does not write). A bad value also
    /// forgets its key's earlier value: that key's state is unknown, not the older one.
    pub bad: u64,
    /// The high watermark the restore read up to (taken when it started).
    pub high_watermark: i64,
    /// From the start of the restore to this partition's end.
    pub elapsed: Duration,
}

impl Restored {
    /// One changelog record: a value sets its key, a tombstone (no value) removes it. A key is a
    /// message's [`StateKey`] or a digest's (`{"digest":…}`); anything else is bad.
    fn apply(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.records += 1;
        let Some(key) = key else {
            self.bad += 1;
            return;
        };
        if let Ok(uuid) = DigestIntent::uuid_of_key(key) {
            match value.map(DigestIntent::from_bytes) {
                None => {
                    self.tombstones += 1;
                    self.digests.remove(&uuid);
                }
                Some(Ok(intent)) if intent.uuid == uuid => {
                    self.digests.insert(uuid, intent);
                }
                Some(_) => {
                    self.bad += 1;
                    self.digests.remove(&uuid);
                }
            }
            return;
        }
        let Ok(key) = StateKey::from_bytes(key) else {
            self.bad += 1;
            return;
        };
        match value.map(StateEntry::from_bytes) {
            None => {
                self.tombstones += 1;
                self.entries.remove(&key);
            }
            Some(Ok(entry)) => {
                self.entries.insert(key, entry);
            }
            Some(Err(_)) => {
                self.bad += 1;
                self.entries.remove(&key);
            }
        }
    }
}

/// The changelog topic: its acknowledged producer, and the settings its restores read with.
/// `Send + Sync`: one per sink, shared by the tasks that write. No `Debug`: `kafka` may hold
/// credentials.
pub struct Changelog {
    producer: FutureProducer,
    kafka: BTreeMap<String, String>,
    topic: String,
    /// The partition count [`Changelog::ensure_topic`] found; 0 before.
    partitions: AtomicI32,
}

impl Changelog {
    /// The changelog `topic`, reached with the `kafka.*` settings (`acks=all` forced on writes).
    pub fn new(kafka: &BTreeMap<String, String>, topic: String) -> Result<Self, StateError> {
        let producer = acked_producer(kafka).map_err(|source| StateError::Create {
            what: "producer",
            source,
        })?;
        Ok(Changelog {
            producer,
            kafka: kafka.clone(),
            topic,
            partitions: AtomicI32::new(0),
        })
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Makes sure the topic exists: created with `partitions` partitions, the broker's default
    /// replication and `cleanup.policy=compact` when missing; kept as it is when it exists (its
    /// partition count is what [`Changelog::partitions`] then reports). Pass the source topic's
    /// partition count, so [`super::state_partition`] maps one to one.
    pub async fn ensure_topic(
        &self,
        kafka: &BTreeMap<String, String>,
        partitions: i32,
    ) -> Result<ChangelogTopic, StateError> {
        let ensured = ensure_topic_with(
            &self.producer,
            kafka,
            &self.topic,
            partitions,
            -1,
            TOPIC_CONFIGS,
        )
        .await
        .map_err(|reason| StateError::Topic {
            topic: self.topic.clone(),
            reason,
        })?;
        self.partitions.store(ensured.partitions, Ordering::Relaxed);
        let cleanup_policy = match topic_configs(kafka, &self.topic).await {
            Ok(mut configs) => configs.remove("cleanup.policy"),
            // Created just now, compacted by us: nothing to warn about.
            Err(_) if ensured.created => Some("compact".to_string()),
            Err(reason) => {
                tracing::warn!(topic = %self.topic, %reason, "cannot read the state topic's configs");
                None
            }
        };
        if cleanup_policy
            .as_deref()
            .is_some_and(|p| !p.contains("compact"))
        {
            tracing::warn!(
                topic = %self.topic,
                cleanup_policy = cleanup_policy.as_deref().unwrap_or_default(),
                "the state topic is not compacted: it keeps every write, and restores read them all"
            );
        }
        Ok(ChangelogTopic {
            partitions: ensured.partitions,
            created: ensured.created,
            cleanup_policy,
        })
    }

    /// The partition count [`Changelog::ensure_topic`] found (0 before it ran).
    pub fn partitions(&self) -> i32 {
        self.partitions.load(Ordering::Relaxed)
    }

    /// Writes `key`'s entry (or, with `None`, its tombstone) to `partition` and returns once the
    /// broker acknowledged it (`acks=all`); only then may the caller store the source offset.
    pub async fn write(
        &self,
        partition: i32,
        key: &StateKey,
        entry: Option<&StateEntry>,
    ) -> Result<(), StateError> {
        self.write_acked(partition, &key.to_bytes(), entry.map(StateEntry::to_bytes))
            .await
    }

    /// Writes a storm digest's intent (or, with `None`, the tombstone of digest `uuid`) to
    /// `partition` and returns once the broker acknowledged it.
    pub async fn write_digest(
        &self,
        partition: i32,
        uuid: &str,
        intent: Option<&DigestIntent>,
    ) -> Result<(), StateError> {
        let key = DigestIntent::key_bytes(uuid);
        self.write_acked(partition, &key, intent.map(DigestIntent::to_bytes))
            .await
    }

    /// One record (a tombstone without `value`), acknowledged.
    async fn write_acked(
        &self,
        partition: i32,
        key: &[u8],
        value: Option<Vec<u8>>,
    ) -> Result<(), StateError> {
        let mut out: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).partition(partition).key(key);
        if let Some(v) = &value {
            out = out.payload(v.as_slice());
        }
        self.producer
            .send(out, WRITE_TIMEOUT)
            .await
            .map_err(|(source, _)| StateError::Write {
                topic: self.topic.clone(),
                partition,
                source,
            })?;
        telemetry::state_written(value.is_none());
        Ok(())
    }

    /// Forgets the digests of `digests` written more than `ttl` before `now_ms`: a tombstone
    /// each ([`EXPIRE_BATCH`] in flight at a time), out of the map once it is acknowledged.
    /// Returns how many were forgotten and how many tombstones failed (tried again next time).
    pub async fn expire_digests(
        &self,
        digests: &Digests,
        now_ms: i64,
        ttl: Duration,
    ) -> (usize, usize) {
        let due = digests.expired(now_ms, ttl);
        let (mut forgotten, mut failed) = (0, 0);
        for batch in due.chunks(EXPIRE_BATCH) {
            let acks = batch
                .iter()
                .map(|(uuid, p)| self.write_digest(*p, uuid, None));
            let acked = futures::future::join_all(acks).await;
            for ((uuid, _), written) in batch.iter().zip(acked) {
                match written {
                    Ok(()) => {
                        digests.forget(uuid);
                        forgotten += 1;
                    }
                    Err(e) => {
                        tracing::warn!("storm: the tombstone of an expired digest failed: {e}");
                        failed += 1;
                    }
                }
            }
        }
        (forgotten, failed)
    }

    /// Enqueues `key`'s entry (or tombstone) in the producer without waiting: the write's place
    /// in the partition is fixed when this returns, its acknowledgement is the future's.
    fn enqueue(
        &self,
        partition: i32,
        key: &StateKey,
        entry: Option<&StateEntry>,
    ) -> Result<DeliveryFuture, StateError> {
        let key_bytes = key.to_bytes();
        let value = entry.map(StateEntry::to_bytes);
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
            .partition(partition)
            .key(key_bytes.as_slice());
        if let Some(v) = &value {
            out = out.payload(v.as_slice());
        }
        self.producer
            .send_result(out)
            .map_err(|(source, _)| StateError::Write {
                topic: self.topic.clone(),
                partition,
                source,
            })
    }

    /// Forgets the keys of `states` first sent more than `ttl` before `now_ms`: a tombstone each,
    /// [`EXPIRE_BATCH`] in flight at a time, and each key out of the map once its tombstone is
    /// acknowledged. A key whose tombstone failed stays (the next expiry tries again); a key a newer
    /// version updated meanwhile stays and is written again after its tombstone
    /// ([`MessageStates::forget_expired`]), so the changelog never ends on a tombstone for a key
    /// the map still holds.
    pub async fn expire(&self, states: &MessageStates, now_ms: i64, ttl: Duration) -> Expiry {
        let due = states.expired(now_ms, ttl);
        let mut report = Expiry {
            due: due.len(),
            ..Expiry::default()
        };
        for batch in due.chunks(EXPIRE_BATCH) {
            let acks = batch.iter().map(|(key, p, _)| self.write(*p, key, None));
            let acked = futures::future::join_all(acks).await;
            let mut rewrites = Vec::new();
            for ((key, _, old), written) in batch.iter().zip(acked) {
                if let Err(e) = written {
                    tracing::warn!("messageKey: the tombstone of an expired key failed: {e}");
                    report.failed += 1;
                    continue;
                }
                match states.forget_expired(key, old, |p, cur| self.enqueue(p, key, Some(cur))) {
                    AfterTombstone::Forgotten => report.forgotten += 1,
                    AfterTombstone::Gone => {}
                    AfterTombstone::Changed(rewrite) => {
                        report.rewritten += 1;
                        rewrites.push(rewrite);
                    }
                }
            }
            for rewrite in rewrites {
                let acked = match rewrite {
                    Ok(ack) => matches!(
                        tokio::time::timeout(WRITE_TIMEOUT, ack).await,
                        Ok(Ok(Ok(_)))
                    ),
                    Err(_) => false,
                };
                if acked {
                    telemetry::state_written(false);
                } else {
                    // The map holds the key, the changelog may end on its tombstone: after a
                    // restore it is forgotten, and its next version is sent as a new message.
                    tracing::warn!(
                        "messageKey: rewriting a key updated while it expired failed; a restore \
                         would forget it"
                    );
                    report.failed += 1;
                }
            }
        }
        report
    }

    /// Reads state partition `partition` from its beginning to its high watermark as it is when
    /// the restore starts.
    pub async fn restore(&self, partition: i32) -> Result<Restored, StateError> {
        let mut all = self.restore_all(&[partition]).await?;
        all.remove(&partition).ok_or_else(|| StateError::Restore {
            topic: self.topic.clone(),
            partition,
            reason: "the restore returned no result for it".into(),
        })
    }

    /// Reads several state partitions in one pass of one reader (on a blocking thread), each to its
    /// high watermark at the start; each partition's `elapsed` ends when that partition does.
    pub async fn restore_all(
        &self,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, Restored>, StateError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.restore_each(partitions, move |r| {
            let _ = tx.send(r);
        })
        .await?;
        Ok(rx.try_iter().map(|r| (r.partition, r)).collect())
    }

    /// Like [`Changelog::restore_all`], but hands each partition to `each` as soon as it is read
    /// (on the reader's thread), so a small partition is not kept waiting for a large one. Returns
    /// once all are read, or with the first error (the partitions handed over before it stand).
    pub async fn restore_each(
        &self,
        partitions: &[i32],
        mut each: impl FnMut(Restored) + Send + 'static,
    ) -> Result<(), StateError> {
        let mut cfg = reader_config(&self.kafka);
        cfg.set("queued.max.messages.kbytes", RESTORE_PREFETCH_KB);
        let topic = self.topic.clone();
        let wanted = partitions.to_vec();
        let first = partitions.first().copied().unwrap_or(-1);
        // Dropping this future (the sink stopped, or the partitions were revoked) ends the reader
        // within one poll instead of reading on to the end for nobody.
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let cancelled = cancel.0.clone();
        let log_topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let reader: BaseConsumer = cfg.create().map_err(|source| StateError::Create {
                what: "reader",
                source,
            })?;
            read_partitions(&reader, &topic, &wanted, &cancelled, &mut |r: Restored| {
                telemetry::state_restored(r.bad, r.elapsed);
                tracing::info!(
                    topic = %log_topic,
                    partition = r.partition,
                    keys = r.entries.len(),
                    records = r.records,
                    bad = r.bad,
                    elapsed_ms = r.elapsed.as_millis() as u64,
                    "restored message state"
                );
                each(r);
            })
        })
        .await
        .map_err(|e| StateError::Restore {
            topic: self.topic.clone(),
            partition: first,
            reason: format!("the restore thread failed: {e}"),
        })?
    }
}

/// What one [`Changelog::expire`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expiry {
    /// Keys past the TTL when it started.
    pub due: usize,
    /// Forgotten: tombstone acknowledged, out of the map.
    pub forgotten: usize,
    /// Updated by a newer version while expiring: kept, and written again after the tombstone.
    pub rewritten: usize,
    /// Tombstones (or rewrites) that failed; those keys are tried again by the next expiry.
    pub failed: usize,
}

/// Sets its flag when dropped: tells a restore's blocking thread that nobody waits for it.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One partition's restore in progress.
struct Reading {
    restored: Restored,
    done: bool,
}

/// The restore proper: watermarks, assign, read until every partition reached its watermark.
fn read_partitions(
    reader: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    cancelled: &AtomicBool,
    each: &mut dyn FnMut(Restored),
) -> Result<(), StateError> {
    let start = Instant::now();
    let fail = |partition: i32, reason: String| StateError::Restore {
        topic: topic.to_string(),
        partition,
        reason,
    };
    let mut reading = assign(reader, topic, partitions)?;
    // Empty partitions are done at once.
    for r in reading.values_mut().filter(|r| r.done) {
        each(std::mem::take(&mut r.restored));
    }
    let mut last_progress = Instant::now();
    let mut last_error: Option<KafkaError> = None;
    while let Some((&p, _)) = reading.iter().find(|(_, r)| !r.done) {
        if cancelled.load(Ordering::Relaxed) {
            return Err(fail(p, "cancelled: nobody waits for it any more".into()));
        }
        let Some(polled) = reader.poll(Duration::from_millis(200)) else {
            if last_progress.elapsed() >= RESTORE_IDLE_TIMEOUT {
                let why = last_error.map_or("no answer".to_string(), |e| e.to_string());
                let reason = format!("nothing read for {RESTORE_IDLE_TIMEOUT:?}: {why}");
                return Err(fail(p, reason));
            }
            continue;
        };
        let (partition, reached) = match polled {
            Ok(m) => {
                // Records written since the start (past the watermark) are not this restore's.
                let Some(r) = reading
                    .get_mut(&m.partition())
                    .filter(|r| !r.done && m.offset() < r.restored.high_watermark)
                else {
                    last_progress = Instant::now();
                    continue;
                };
                r.restored.apply(m.key(), m.payload());
                last_progress = Instant::now();
                (m.partition(), m.offset() + 1 >= r.restored.high_watermark)
            }
            // The end of the log, which is at or past the watermark taken at the start.
            Err(KafkaError::PartitionEOF(partition)) => {
                last_progress = Instant::now();
                (partition, true)
            }
            Err(e) => {
                tracing::debug!(topic, error = %e, "state restore: consumer error");
                last_error = Some(e);
                continue;
            }
        };
        if let Some(r) = reading.get_mut(&partition).filter(|r| reached && !r.done) {
            r.done = true;
            r.restored.elapsed = start.elapsed();
            each(std::mem::take(&mut r.restored));
        }
    }
    Ok(())
}

/// How many times a restore asks for a partition's watermarks before it fails: a broker busy for
/// a moment must not stop the connector (a failed restore does), a broker that is down still
/// does, after about half a minute.
const WATERMARK_ATTEMPTS: u32 = 3;

/// The (low, high) watermarks of `topic`/`partition`, asked up to [`WATERMARK_ATTEMPTS`] times.
fn watermarks(reader: &BaseConsumer, topic: &str, partition: i32) -> Result<(i64, i64), String> {
    let mut attempt = 1;
    loop {
        match reader.fetch_watermarks(topic, partition, WATERMARK_TIMEOUT) {
            Ok(w) => return Ok(w),
            Err(e) if attempt < WATERMARK_ATTEMPTS => {
                tracing::warn!(
                    topic,
                    partition,
                    attempt,
                    "state restore: watermarks: {e}; asking again"
                );
                attempt += 1;
            }
            Err(e) => return Err(format!("watermarks ({WATERMARK_ATTEMPTS} times): {e}")),
        }
    }
}

/// Takes each partition's watermarks and assigns the non-empty ones from their beginning; an
/// empty partition is done at once.
fn assign(
    reader: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
) -> Result<BTreeMap<i32, Reading>, StateError> {
    let fail = |partition: i32, reason: String| StateError::Restore {
        topic: topic.to_string(),
        partition,
        reason,
    };
    let mut reading = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions.iter().copied().collect::<BTreeSet<i32>>() {
        let (low, high) = watermarks(reader, topic, p).map_err(|e| fail(p, e))?;
        let done = high <= low;
        if !done {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| fail(p, e.to_string()))?;
        }
        let restored = Restored {
            partition: p,
            high_watermark: high,
            ..Restored::default()
        };
        reading.insert(p, Reading { restored, done });
    }
    reader
        .assign(&tpl)
        .map_err(|e| fail(partitions.first().copied().unwrap_or(-1), e.to_string()))?;
    Ok(reading)
}

#[cfg(test)]
#[path = "changelog_tests.rs"]
mod tests;
