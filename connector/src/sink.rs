//! The sink loop: Kafka → decode → transform → validate → deliver / dead-letter → store offset.
//!
//! One consumer feeds one worker per partition over a bounded queue, so partitions proceed in
//! parallel and each keeps Kafka order (a full queue stops the consumer loop: simple backpressure).
//! A worker finishes a record only when every message of it was delivered or durably
//! dead-lettered, and only then tells the [`OffsetTracker`], which stores the partition's
//! contiguous finished prefix. That is the whole at-least-once argument; the deterministic uuid
//! (see [`crate::record::message_uuid`]) turns the replays it implies into no duplicates in Lark.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lark_sink_transforms::Chain;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{ConnectorConfig, Tolerance};
use crate::decode::{decode_value, split_envelopes};
use crate::delivery::{deliver, RetryPolicy};
use crate::dlq::{DeadLetter, DeadLetterWriter, DlqError, Stage};
use crate::lark::contacts::PhoneDirectory;
use crate::lark::LarkClient;
use crate::record::SourceRecord;
use crate::source::{create_consumer, OffsetTracker, SinkConsumer, Ticket};
use crate::validate::EnvelopeValidator;

/// Records a partition worker may have queued before the consumer loop waits for it.
const WORKER_QUEUE: usize = 64;
/// How long shutdown waits for records in flight before abandoning them (they stay uncommitted
/// and are replayed, uuid-deduplicated, on the next start).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot start: {0}")]
    Startup(String),
    #[error(transparent)]
    Dlq(#[from] DlqError),
    /// `errors.tolerance=none` and a record could not be delivered.
    #[error("stopping (errors.tolerance=none): record {coordinates} failed at {stage}: {reason}")]
    Intolerable {
        coordinates: String,
        stage: &'static str,
        reason: String,
    },
    /// An app-wide Lark configuration error: every message would fail, so stop instead of
    /// dead-lettering the topic. The record stays uncommitted.
    #[error(
        "stopping: Lark rejected the app configuration while delivering {coordinates}: {reason}"
    )]
    LarkConfig { coordinates: String, reason: String },
}

/// Live counters, readable while the sink runs (the demo and tests watch them).
#[derive(Debug, Default)]
pub struct SinkStats {
    pub records_received: AtomicU64,
    pub records_finished: AtomicU64,
    pub messages_delivered: AtomicU64,
    /// Dead letters written (one per failed message, or one per record that failed before
    /// it was split into messages).
    pub dead_letters: AtomicU64,
    /// Records a transform turned into zero messages.
    pub records_dropped: AtomicU64,
}

impl SinkStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Everything workers share.
struct Shared {
    cfg: ConnectorConfig,
    client: LarkClient,
    phones: PhoneDirectory,
    validator: EnvelopeValidator,
    policy: RetryPolicy,
    dlq: Option<DeadLetterWriter>,
    consumer: Arc<SinkConsumer>,
    tracker: Arc<Mutex<OffsetTracker>>,
    stats: Arc<SinkStats>,
    stopping: AtomicBool,
}

struct Worker {
    generation: u64,
    tx: mpsc::Sender<(SourceRecord, Ticket)>,
}

/// Runs the connector until `shutdown` resolves (clean stop, `Ok`) or a fatal error occurs.
pub async fn run(
    cfg: ConnectorConfig,
    stats: Arc<SinkStats>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SinkError> {
    let validator = EnvelopeValidator::new().map_err(|e| SinkError::Startup(e.to_string()))?;
    let client =
        LarkClient::new(&cfg.lark).map_err(|e| SinkError::Startup(format!("HTTP client: {e}")))?;
    let dlq = match (&cfg.errors.dlq_topic, cfg.errors.tolerance) {
        (Some(topic), Tolerance::All) => {
            let w = DeadLetterWriter::new(
                &cfg.kafka,
                topic.clone(),
                cfg.name.clone(),
                cfg.errors.dlq_context_headers,
            )?;
            w.ensure_topic(
                &cfg.kafka,
                cfg.errors.dlq_partitions,
                cfg.errors.dlq_replication_factor,
            )
            .await?;
            Some(w)
        }
        _ => None,
    };
    let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
    let consumer = Arc::new(
        create_consumer(&cfg, tracker.clone())
            .map_err(|e| SinkError::Startup(format!("Kafka consumer: {e}")))?,
    );
    tracing::info!(connector = %cfg.name, topics = ?cfg.topics, group = %cfg.kafka["group.id"],
        lark = %cfg.lark.base_url, dlq = ?cfg.errors.dlq_topic, "lark-sink started");
    let shared = Arc::new(Shared {
        policy: RetryPolicy::from(&cfg.lark),
        cfg,
        client,
        phones: PhoneDirectory::default(),
        validator,
        dlq,
        consumer: consumer.clone(),
        tracker: tracker.clone(),
        stats,
        stopping: AtomicBool::new(false),
    });

    let (fatal_tx, mut fatal_rx) = mpsc::channel::<SinkError>(4);
    let mut workers: HashMap<(String, i32), Worker> = HashMap::new();
    let mut handles: Vec<JoinHandle<()>> = Vec::new();
    tokio::pin!(shutdown);

    let result = loop {
        let msg = tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            Some(e) = fatal_rx.recv() => break Err(e),
            m = consumer.recv() => m,
        };
        let record = match msg {
            Ok(m) => source_record(&m),
            Err(e) => {
                tracing::warn!("Kafka consumer error (librdkafka retries by itself): {e}");
                continue;
            }
        };
        SinkStats::add(&shared.stats.records_received, 1);
        let (ticket, revoked) = match tracker.lock() {
            Ok(mut t) => t.begin(&record.topic, record.partition, record.offset),
            Err(_) => break Err(SinkError::Startup("offset tracker poisoned".into())),
        };
        let key = (record.topic.clone(), record.partition);
        let stale = workers
            .get(&key)
            .is_none_or(|w| w.generation != ticket.generation || w.tx.is_closed());
        if stale {
            let (tx, rx) = mpsc::channel(WORKER_QUEUE);
            handles.retain(|h| !h.is_finished());
            handles.push(tokio::spawn(worker(
                shared.clone(),
                rx,
                revoked,
                fatal_tx.clone(),
            )));
            workers.insert(
                key.clone(),
                Worker {
                    generation: ticket.generation,
                    tx,
                },
            );
        }
        let Some(w) = workers.get(&key) else { continue };
        // A full queue waits here: the consumer stops fetching until the partition catches up.
        tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            Some(e) = fatal_rx.recv() => break Err(e),
            sent = w.tx.send((record, ticket)) => {
                if sent.is_err() {
                    // The worker stopped after a fatal error; the error is on its way.
                    workers.remove(&key);
                }
            }
        }
    };

    // Stop: workers finish the record in hand, abandon queued ones, then commit what finished.
    shared.stopping.store(true, Ordering::SeqCst);
    drop(workers);
    let drain = futures::future::join_all(handles);
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!(
            "records still in flight after {SHUTDOWN_GRACE:?}; leaving them uncommitted"
        );
    }
    let result = match result {
        Ok(()) => fatal_rx.try_recv().map_or(Ok(()), Err),
        err => err,
    };
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::info!("final offsets committed"),
        Err(e) => tracing::debug!("final commit: {e}"),
    }
    if let Ok(mut t) = tracker.lock() {
        t.revoke_all();
    }
    result
}

fn source_record(m: &BorrowedMessage<'_>) -> SourceRecord {
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

async fn worker(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<(SourceRecord, Ticket)>,
    revoked: Arc<AtomicBool>,
    fatal: mpsc::Sender<SinkError>,
) {
    // Transform engines keep interpreter state, so each worker owns its chain.
    let mut chain = shared.cfg.transform_chain();
    while let Some((record, ticket)) = rx.recv().await {
        if shared.stopping.load(Ordering::SeqCst) || revoked.load(Ordering::SeqCst) {
            // Not ours any more (or shutting down): the committed offset still points at this
            // record, so whoever consumes next replays it.
            continue;
        }
        if let Err(e) = process_record(&shared, &mut chain, &record).await {
            let _ = fatal.send(e).await;
            return;
        }
        SinkStats::add(&shared.stats.records_finished, 1);
        shared.finish(&ticket);
    }
}

impl Shared {
    /// Marks a record finished and stores the partition's new committable offset, if it moved.
    fn finish(&self, ticket: &Ticket) {
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

    /// Dead-letters (or, with `errors.tolerance=none`, refuses) one failure of `record`.
    async fn fail(&self, record: &SourceRecord, dl: DeadLetter) -> Result<(), SinkError> {
        let Some(writer) = &self.dlq else {
            return Err(SinkError::Intolerable {
                coordinates: record.coordinates(),
                stage: dl.stage.as_str(),
                reason: dl.reason,
            });
        };
        tracing::warn!(record = %record.coordinates(), stage = dl.stage.as_str(), class = %dl.class,
            index = ?dl.message_index, receiver = ?dl.receiver, dlq = writer.topic(),
            "dead-lettered: {}", dl.reason);
        // The DLQ write must succeed before the offset moves; retry a broker hiccup a few times,
        // then stop rather than lose the record.
        let mut attempt = 0;
        loop {
            match writer.write(record, &dl).await {
                Ok(()) => break,
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!("{e}; retrying ({attempt}/5)");
                    tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        SinkStats::add(&self.stats.dead_letters, 1);
        Ok(())
    }
}

fn simple(stage: Stage, class: &str, reason: String) -> DeadLetter {
    DeadLetter {
        stage,
        class: class.into(),
        reason,
        message_index: None,
        receiver: None,
        uuid: None,
        lark: None,
        attempts: 0,
    }
}

/// Takes one record all the way: every message delivered or dead-lettered on return `Ok`.
async fn process_record(
    shared: &Shared,
    chain: &mut Chain,
    record: &SourceRecord,
) -> Result<(), SinkError> {
    let value = match decode_value(record.value.as_deref()) {
        Ok(v) => v,
        Err(e) => {
            return shared
                .fail(record, simple(Stage::Decode, "decode", e.to_string()))
                .await;
        }
    };
    let outputs = if chain.is_empty() {
        vec![value]
    } else {
        match chain.apply(value, &record.meta()) {
            Ok(v) => v,
            Err(e) => {
                return shared
                    .fail(record, simple(Stage::Transform, "transform", e.to_string()))
                    .await;
            }
        }
    };
    if outputs.is_empty() {
        SinkStats::add(&shared.stats.records_dropped, 1);
        return Ok(());
    }
    // Flatten every output into messages; `indexed` says whether paths need an element index.
    let mut messages: Vec<Value> = Vec::new();
    let mut indexed = outputs.len() > 1;
    for out in outputs {
        match split_envelopes(out) {
            Ok((envs, is_array)) => {
                indexed |= is_array;
                messages.extend(envs);
            }
            Err(e) => {
                // Raw input of the wrong shape is a decode failure; a transform that returned
                // something other than envelopes is the transform's fault.
                let dl = if chain.is_empty() {
                    simple(Stage::Decode, "decode", e.to_string())
                } else {
                    simple(
                        Stage::Transform,
                        "transform",
                        format!("transform output: {e}"),
                    )
                };
                return shared.fail(record, dl).await;
            }
        }
    }
    for (index, message) in messages.iter().enumerate() {
        let envelope = match shared.validator.validate(message, indexed.then_some(index)) {
            Ok(e) => e,
            Err(e) => {
                let mut dl = simple(Stage::Validate, "schema", e.to_string());
                dl.message_index = Some(index);
                shared.fail(record, dl).await?;
                continue;
            }
        };
        let uuid = record.message_uuid(index);
        match deliver(
            &shared.client,
            &shared.phones,
            &shared.policy,
            &envelope,
            &uuid,
        )
        .await
        {
            Ok(done) => {
                SinkStats::add(&shared.stats.messages_delivered, 1);
                tracing::debug!(record = %record.coordinates(), index, message_id = %done.ok.message_id,
                    attempts = done.attempts, "delivered");
            }
            Err(f) if f.is_fatal() => {
                return Err(SinkError::LarkConfig {
                    coordinates: record.coordinates(),
                    reason: f.to_string(),
                })
            }
            Err(f) => {
                let class = if f.exhausted {
                    format!("{}-exhausted", f.error.class.label())
                } else {
                    f.error.class.label().to_string()
                };
                let dl = DeadLetter {
                    stage: Stage::Deliver,
                    class,
                    reason: f.to_string(),
                    message_index: Some(index),
                    receiver: Some(envelope.receiver.describe()),
                    uuid: Some(uuid),
                    attempts: f.attempts,
                    lark: Some(f.error),
                };
                shared.fail(record, dl).await?;
            }
        }
    }
    Ok(())
}
