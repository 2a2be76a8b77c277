//! The sink: Kafka → decode → transform → validate → per-receiver delivery → offsets.
//!
//! The consumer loop prepares each record (decode, transform, validate) and hands its messages to
//! the [`Scheduler`], which keeps one queue per receiver. It never waits for delivery: when the
//! buffer bound is reached it *pauses* the partitions and keeps polling (so the group never evicts
//! it), and resumes them once the buffer has drained to half. Records finish out of order across
//! receivers; the [`OffsetTracker`] stores each partition's contiguous finished prefix only, so a
//! crash replays (uuid-deduplicated) instead of losing. A record is finished when every message of
//! it was delivered or durably dead-lettered, and (with `lark.result.topic`) its result records
//! were acknowledged.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lark_sink_transforms::{Chain, TransformError};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::{ConnectorConfig, Tolerance};
use crate::control::Control;
use crate::delivery::{buzz, deliver, Handler, Queued, RateLimits, RetryPolicy, Scheduler};
use crate::dlq::{DeadLetter, DeadLetterWriter, DlqError, Stage};
use crate::lark::{directory, ErrorClass, LarkClient, LookupConfig, UserDirectory};
use crate::prepare::{self, Prepared};
use crate::record::SourceRecord;
use crate::results::{self, ResultError, ResultWriter, UrgentOutcome};
use crate::source::{create_consumer, OffsetTracker, SinkConsumer, Ticket};
use crate::telemetry;
use crate::validate::{Envelope, EnvelopeValidator, Receiver};

/// How often the loop re-checks the buffer bound while no record arrives (e.g. while paused).
const BACKPRESSURE_TICK: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot start: {0}")]
    Startup(String),
    #[error(transparent)]
    Dlq(#[from] DlqError),
    #[error(transparent)]
    Results(#[from] ResultError),
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
    /// Kafka refused the credentials, or its certificate was not trusted (checked at start-up).
    #[error("cannot start: {0}")]
    KafkaAccess(crate::source::probe::KafkaAccessError),
}

/// Live counters, readable while the sink runs (the demo, tests and benchmarks watch them).
#[derive(Debug, Default)]
pub struct SinkStats {
    pub records_received: AtomicU64,
    pub records_finished: AtomicU64,
    pub messages_delivered: AtomicU64,
    /// Dead letters written (one per failed message, or one per record that failed before
    /// it was split into messages).
    pub dead_letters: AtomicU64,
    /// Records written to the result topic (`lark.result.topic`).
    pub results_written: AtomicU64,
    /// Records a transform turned into zero messages.
    pub records_dropped: AtomicU64,
    /// How many times the partitions were paused because the buffer was full.
    pub pauses: AtomicU64,
    /// Messages buffered right now, and the most ever buffered.
    pub buffered_messages: AtomicU64,
    pub buffered_messages_peak: AtomicU64,
}

impl SinkStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Where the loop stands with backpressure (see [`Shared::backpressure`]).
#[derive(Debug, Default)]
struct Backpressure {
    /// Since when the buffer has been at its bound (cleared once it has drained to half).
    full_since: Option<Instant>,
    /// The assigned partitions are paused in librdkafka.
    paused: bool,
}

impl Backpressure {
    /// Whether the loop takes records from librdkafka now. While the buffer is full but the
    /// partitions are not paused yet it does not: the records wait in librdkafka's bounded
    /// prefetch queue. Once paused it polls again, so the group never evicts the instance.
    fn taking(&self) -> bool {
        self.full_since.is_none() || self.paused
    }
}

/// A record whose messages are being delivered. Finished when `pending` reaches zero.
struct InFlight {
    record: SourceRecord,
    ticket: Ticket,
    /// Set when the partition is revoked: its queued messages are abandoned.
    revoked: tokio_util::sync::CancellationToken,
    pending: AtomicUsize,
}

/// One message on its way to a receiver.
struct Outgoing {
    record: Arc<InFlight>,
    index: usize,
    envelope: Envelope,
    uuid: String,
    /// The receiver's queue: the address (phones and emails in their canonical spelling; they
    /// resolve to open_ids inside the queue).
    queue: String,
    size: usize,
}

impl Queued for Outgoing {
    fn queue_key(&self) -> &str {
        &self.queue
    }
    fn size(&self) -> usize {
        self.size
    }
}

/// Everything the loop and the receiver queues share.
struct Shared {
    cfg: ConnectorConfig,
    client: Arc<LarkClient>,
    /// Phone / email → open_id, shared by every receiver queue (cached, batched).
    directory: UserDirectory,
    validator: EnvelopeValidator,
    policy: RetryPolicy,
    limits: Arc<RateLimits>,
    dlq: Option<DeadLetterWriter>,
    results: Option<ResultWriter>,
    consumer: Arc<SinkConsumer>,
    tracker: Arc<Mutex<OffsetTracker>>,
    stats: Arc<SinkStats>,
    control: Arc<Control>,
    fatal: mpsc::Sender<SinkError>,
}

/// The scheduler's handler: delivers one message to the end.
struct Deliverer(Arc<Shared>);

impl Handler<Outgoing> for Deliverer {
    async fn handle(&self, m: Outgoing) {
        // Paused through the admin API: hold the message (it stays buffered and uncommitted).
        if self.0.control.is_paused() {
            self.0.control.wait_resumed().await;
        }
        if self.0.control.is_stopping() {
            return; // shutting down: left uncommitted, replayed on the next start
        }
        self.0.deliver(m).await
    }
}

/// Runs the connector until `shutdown` resolves or a restart is requested through `control`
/// (clean stop, `Ok`), or a fatal error occurs.
pub async fn run(
    cfg: ConnectorConfig,
    stats: Arc<SinkStats>,
    control: Arc<Control>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SinkError> {
    let validator = EnvelopeValidator::with_webhooks(cfg.lark.webhooks.keys().cloned().collect())
        .map_err(|e| SinkError::Startup(e.to_string()))?;
    let client = Arc::new(
        LarkClient::new(&cfg.lark).map_err(|e| SinkError::Startup(format!("HTTP client: {e}")))?,
    );
    // Wrong Kafka credentials or an untrusted broker certificate stop start-up here, with
    // librdkafka's reason, instead of being retried quietly forever.
    crate::source::probe::check(&cfg.kafka, crate::source::probe::CHECK_TIME)
        .await
        .map_err(SinkError::KafkaAccess)?;
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
    let results = match &cfg.result_topic {
        Some(topic) => {
            let w = ResultWriter::new(&cfg.kafka, topic.clone())?;
            w.ensure_topic(&cfg.kafka).await?;
            Some(w)
        }
        None => None,
    };
    // Check the credentials before consuming anything: a wrong app secret should stop start-up
    // with Lark's answer, not surface as the first record's failure.
    let token = if client.has_app() {
        client.tokens().get().await
    } else {
        Ok(crate::secret::Secret::default()) // webhook-only: no token to check
    };
    match token {
        Ok(_) => control.set_lark_ready(true),
        Err(e) if e.class == ErrorClass::Fatal => {
            return Err(SinkError::LarkConfig {
                coordinates: "start-up (tenant token)".into(),
                reason: e.to_string(),
            })
        }
        Err(e) => tracing::warn!("cannot fetch a tenant token yet (will retry): {e}"),
    }
    let limits = Arc::new(RateLimits::new(cfg.rate));
    let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
    let consumer = Arc::new(
        create_consumer(&cfg, tracker.clone(), limits.clone(), control.clone())
            .map_err(|e| SinkError::Startup(format!("Kafka consumer: {e}")))?,
    );
    tracing::info!(connector = %cfg.name, topics = ?cfg.topics, group = %cfg.kafka["group.id"],
        lark = %cfg.lark.base_url, dlq = ?cfg.errors.dlq_topic, results = ?cfg.result_topic, rate = ?cfg.rate, buffer = ?cfg.buffer,
        "lark-sink started");
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<SinkError>(8);
    let shared = Arc::new(Shared {
        policy: RetryPolicy::from(&cfg.lark),
        directory: UserDirectory::new(client.clone(), LookupConfig::from(&cfg.lark)),
        cfg,
        client,
        validator,
        limits: limits.clone(),
        dlq,
        results,
        consumer: consumer.clone(),
        tracker: tracker.clone(),
        stats,
        control: control.clone(),
        fatal: fatal_tx,
    });
    control.set_stopping(false);
    control.set_running(true);
    let scheduler = Scheduler::new(Deliverer(shared.clone()));
    // Transform engines keep interpreter state; the loop owns the one chain and lends it to a
    // blocking thread per record, so a slow script never stalls the async runtime.
    let mut chain = Some(
        shared
            .cfg
            .transform_chain()
            .map_err(|e| SinkError::Startup(e.to_string()))?,
    );
    let mut dead_letter_tasks: JoinSet<()> = JoinSet::new();
    let mut bp = Backpressure::default();
    let mut tick = tokio::time::interval(BACKPRESSURE_TICK);
    let mut last_housekeeping = Instant::now();
    tokio::pin!(shutdown);

    let result = loop {
        let msg = tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            _ = control.restart_requested() => break Ok(()),
            Some(e) = fatal_rx.recv() => break Err(e),
            _ = tick.tick() => {
                shared.backpressure(&scheduler, &mut bp);
                shared.report_status();
                while dead_letter_tasks.try_join_next().is_some() {}
                if last_housekeeping.elapsed() > Duration::from_secs(10) {
                    limits.forget_idle();
                    last_housekeeping = Instant::now();
                }
                continue;
            }
            m = consumer.recv(), if bp.taking() => m,
        };
        let record = match msg {
            Ok(m) => source_record(&m),
            Err(e) => {
                tracing::warn!("Kafka consumer error (librdkafka retries by itself): {e}");
                continue;
            }
        };
        SinkStats::add(&shared.stats.records_received, 1);
        telemetry::record_received(&record.topic);
        let (ticket, revoked) = match tracker.lock() {
            Ok(mut t) => t.begin(&record.topic, record.partition, record.offset),
            Err(_) => break Err(SinkError::Startup("offset tracker poisoned".into())),
        };
        let prepared = prepare(&shared, &mut chain, &record).await;
        if shared.dlq.is_none() {
            // errors.tolerance=none: a record that cannot even be sent stops the connector here,
            // before anything after it is dispatched.
            if let Some(dl) = prepared.first_failure() {
                break Err(SinkError::Intolerable {
                    coordinates: record.coordinates(),
                    stage: dl.stage.as_str(),
                    reason: dl.reason.clone(),
                });
            }
        }
        let in_flight = Arc::new(InFlight {
            record,
            ticket,
            revoked,
            pending: AtomicUsize::new(0),
        });
        shared.dispatch(in_flight, prepared, &scheduler, &mut dead_letter_tasks);
        shared.backpressure(&scheduler, &mut bp);
    };

    // Stop: queues finish the message in hand and drop the rest; then commit what finished.
    control.set_stopping(true);
    scheduler.stop();
    let grace = shared.cfg.shutdown_timeout;
    let drained = tokio::time::timeout(grace, async {
        scheduler.drain(grace).await;
        while dead_letter_tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "messages still in flight after {grace:?} (shutdown.timeout.ms); leaving them uncommitted"
        );
    }
    control.set_running(false);
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

/// Runs a broker write until it is acknowledged, retrying a hiccup a few times with a growing
/// pause; the last error is returned (and stops the connector) rather than lose the write.
async fn durably<F, Fut, E>(mut write: F) -> Result<(), E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut attempt = 0;
    loop {
        match write().await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 5 => {
                attempt += 1;
                tracing::warn!("{e}; retrying ({attempt}/5)");
                tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
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

async fn run_chain(
    chain: &mut Option<Chain>,
    cfg: &ConnectorConfig,
    value: Value,
    record: &SourceRecord,
) -> Result<Vec<Value>, TransformError> {
    let mut c = match chain.take() {
        Some(c) => c,
        // Rebuilding after an engine crash; if even that fails, this record is dead-lettered
        // with the reason and the next record tries again.
        None => cfg.transform_chain().map_err(|e| TransformError {
            transform: "chain".into(),
            message: format!("cannot rebuild the transform chain: {e}"),
            line: None,
        })?,
    };
    let meta = record.meta();
    match tokio::task::spawn_blocking(move || {
        let r = c.apply(value, &meta);
        (c, r)
    })
    .await
    {
        Ok((c, r)) => {
            *chain = Some(c);
            r
        }
        // The engine panicked: the chain is gone; a fresh one is built for the next record.
        Err(e) => Err(TransformError {
            transform: "chain".into(),
            message: format!("transform engine crashed: {e}"),
            line: None,
        }),
    }
}

async fn prepare(shared: &Shared, chain: &mut Option<Chain>, record: &SourceRecord) -> Prepared {
    let value = match prepare::decode(record.value.as_deref()) {
        Ok(v) => v,
        Err(dl) => return Prepared::Failed(*dl),
    };
    // No transforms configured. (`None` is a chain lost to an engine crash: `run_chain` rebuilds
    // it; skipping it instead would send records untransformed from then on.)
    if chain.as_ref().is_some_and(|c| c.is_empty()) {
        return prepare::messages(&shared.validator, vec![value], false);
    }
    let outputs = run_chain(chain, &shared.cfg, value, record).await;
    if let Err(e) = &outputs {
        telemetry::transform_error(&e.transform);
    }
    prepare::transformed(&shared.validator, outputs)
}

impl Shared {
    /// Hands a prepared record's messages to the receiver queues (valid ones) or to dead-letter
    /// tasks (invalid ones). A record with no message is finished at once.
    fn dispatch(
        self: &Arc<Self>,
        rec: Arc<InFlight>,
        prepared: Prepared,
        scheduler: &Scheduler<Outgoing, Deliverer>,
        dead_letters: &mut JoinSet<()>,
    ) {
        let messages = match prepared {
            Prepared::Failed(dl) => vec![Err(Box::new(dl))],
            Prepared::Messages(m) => m,
        };
        if messages.is_empty() {
            SinkStats::add(&self.stats.records_dropped, 1);
            SinkStats::add(&self.stats.records_finished, 1);
            telemetry::record_dropped();
            telemetry::record_finished(&rec.record.topic);
            self.finish(&rec.ticket);
            return;
        }
        rec.pending.store(messages.len(), Ordering::SeqCst);
        for (index, m) in messages.into_iter().enumerate() {
            match m {
                Ok(envelope) => {
                    // Every spelling of one phone number or email address shares one queue,
                    // so their messages keep their order.
                    let queue = match &envelope.receiver {
                        Receiver::Id {
                            id_type: "email",
                            id,
                        } => format!("email:{}", directory::canonical_email(id)),
                        Receiver::Id { id_type, id } => format!("{id_type}:{id}"),
                        Receiver::Phone(p) => match directory::canonical_mobile(p) {
                            Some(m) => format!("phone:{m}"),
                            None => format!("phone:{p}"),
                        },
                        Receiver::Webhook(w) => format!("webhook:{w}"),
                        Receiver::Parent(m) => format!("reply_to:{m}"),
                    };
                    let size = envelope.content.len() + queue.len() + 256;
                    scheduler.submit(Outgoing {
                        uuid: rec.record.message_uuid(index),
                        record: rec.clone(),
                        index,
                        envelope,
                        queue,
                        size,
                    });
                }
                Err(dl) => {
                    let (me, rec) = (self.clone(), rec.clone());
                    dead_letters.spawn(async move {
                        match me.dead_letter_and_report(&rec.record, *dl, None).await {
                            Ok(()) => me.message_done(&rec),
                            Err(e) => {
                                let _ = me.fatal.send(e).await;
                            }
                        }
                    });
                }
            }
        }
    }

    /// Delivers one message; on failure dead-letters it. Called by the receiver's queue.
    async fn deliver(&self, m: Outgoing) {
        let record = &m.record.record;
        // A revoked partition is not ours any more: its new owner replays the record from the
        // committed offset. Stop at once, also while waiting for permission or between retries,
        // so two members never send the same partition's messages at the same time (that would
        // overshoot the app quota the group shares). A request already on the wire may land;
        // the replay carries the same uuid, so Lark keeps one copy.
        let result = tokio::select! {
            biased;
            _ = m.record.revoked.cancelled() => return,
            r = deliver(
                &self.client,
                &self.directory,
                &self.limits,
                &self.policy,
                &m.envelope,
                &m.uuid,
            ) => r,
        };
        match result {
            Ok(done) => {
                SinkStats::add(&self.stats.messages_delivered, 1);
                telemetry::delivered(&m.envelope.msg_type, record.timestamp);
                tracing::debug!(record = %record.coordinates(), index = m.index,
                    message_id = %done.ok.message_id, attempts = done.attempts, "delivered");
                let urgent = match &m.envelope.urgent {
                    Some(urgent) => match self.urgent(&m, &done.ok.message_id, urgent).await {
                        Ok(outcome) => Some(outcome),
                        Err(e) => {
                            let _ = self.fatal.send(e).await;
                            return;
                        }
                    },
                    None => None,
                };
                // Built only when there is a result topic: it costs a JSON object per message.
                let result = self.results.is_some().then(|| {
                    results::delivered(
                        &self.cfg.name,
                        record,
                        m.index,
                        &m.envelope,
                        &done.ok,
                        done.attempts,
                        urgent.as_ref(),
                    )
                });
                if let Err(e) = self.report(record, result).await {
                    let _ = self.fatal.send(e).await;
                    return; // uncommitted: replayed, and Lark absorbs the resend (same uuid)
                }
            }
            Err(f) if f.is_fatal() => {
                let _ = self
                    .fatal
                    .send(SinkError::LarkConfig {
                        coordinates: record.coordinates(),
                        reason: f.to_string(),
                    })
                    .await;
                return; // the record stays unfinished, so uncommitted
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
                    message_index: Some(m.index),
                    receiver: Some(m.envelope.receiver.describe()),
                    uuid: Some(m.uuid.clone()),
                    attempts: f.attempts,
                    lark: Some(f.error),
                };
                if let Err(e) = self
                    .dead_letter_and_report(record, dl, Some(&m.envelope))
                    .await
                {
                    let _ = self.fatal.send(e).await;
                    return;
                }
            }
        }
        self.message_done(&m.record);
    }

    /// Buzzes the users of an urgent message after it was delivered. Users Lark skipped are
    /// logged; a refused buzz is dead-lettered (the message itself was delivered, so the reason
    /// names its message_id) and never retried forever. Returns the outcome for the result.
    async fn urgent(
        &self,
        m: &Outgoing,
        message_id: &str,
        urgent: &crate::validate::Urgent,
    ) -> Result<UrgentOutcome, SinkError> {
        let record = &m.record.record;
        match buzz(&self.client, &self.policy, message_id, urgent).await {
            Ok(skipped) => {
                if !skipped.is_empty() {
                    tracing::warn!(record = %record.coordinates(), message_id, kind = %urgent.kind,
                        skipped = ?skipped, "urgent: Lark skipped users not in the message's chat");
                }
                Ok(UrgentOutcome::Sent {
                    kind: urgent.kind.clone(),
                    skipped,
                })
            }
            Err(f) if f.is_fatal() => Err(SinkError::LarkConfig {
                coordinates: record.coordinates(),
                reason: f.to_string(),
            }),
            Err(f) => {
                let dl = DeadLetter {
                    stage: Stage::Deliver,
                    class: format!("urgent-{}", f.error.class.label()),
                    reason: format!(
                        "message {message_id} was delivered, but the urgent_{} buzz failed: {f}",
                        urgent.kind
                    ),
                    message_index: Some(m.index),
                    receiver: Some(m.envelope.receiver.describe()),
                    uuid: Some(m.uuid.clone()),
                    attempts: f.attempts,
                    lark: Some(f.error),
                };
                let outcome = UrgentOutcome::Failed {
                    kind: urgent.kind.clone(),
                    reason: dl.reason.clone(),
                    code: dl.lark.as_ref().and_then(|e| e.code),
                };
                self.dead_letter(record, dl).await.map(|()| outcome)
            }
        }
    }

    /// One message of `rec` is finished; the record is when its last message is.
    fn message_done(&self, rec: &InFlight) {
        if rec.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            SinkStats::add(&self.stats.records_finished, 1);
            telemetry::record_finished(&rec.record.topic);
            self.finish(&rec.ticket);
        }
    }

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

    /// Backpressure in two steps. At the buffer bound the loop first stops taking records: they
    /// wait in librdkafka's prefetch queue, itself bounded (`queued.max.messages.kbytes`). If the
    /// buffer is still full after `buffer.pause.after.ms`, every assigned partition is paused (and
    /// partitions assigned while paused are paused too). Pausing is kept for sustained pressure
    /// because librdkafka drops its prefetched records on pause and fetches them again on resume,
    /// which for a short burst costs more than it saves. Taking, and the partitions, resume once
    /// the buffer is down to half. A pause through the REST API pauses at once.
    fn backpressure(&self, scheduler: &Scheduler<Outgoing, Deliverer>, bp: &mut Backpressure) {
        let (messages, bytes) = (scheduler.in_flight(), scheduler.bytes());
        let stats = &self.stats;
        stats
            .buffered_messages
            .store(messages as u64, Ordering::Relaxed);
        stats
            .buffered_messages_peak
            .fetch_max(messages as u64, Ordering::Relaxed);
        let bound = self.cfg.buffer;
        let user_paused = self.control.is_paused();
        let over = user_paused || messages >= bound.max_messages || bytes >= bound.max_bytes;
        let drained =
            !user_paused && messages <= bound.max_messages / 2 && bytes <= bound.max_bytes / 2;
        telemetry::buffered(messages, bytes);
        if over && bp.full_since.is_none() {
            bp.full_since = Some(Instant::now());
        } else if drained {
            bp.full_since = None;
        }
        let reassigned = self
            .consumer
            .context()
            .assignment_changed
            .swap(false, Ordering::SeqCst);
        let held_long = bp
            .full_since
            .is_some_and(|t| t.elapsed() >= bound.pause_after);
        let pause = (user_paused || held_long) && (!bp.paused || reassigned);
        let resume = bp.paused && drained;
        if !pause && !resume {
            return;
        }
        // Only now ask for the assignment: it is a round trip to librdkafka's main thread, too
        // dear for every record (it was a tenth of the connector's CPU in the engine benchmark).
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        if pause {
            match self.consumer.pause(&assignment) {
                Ok(()) => {
                    if !bp.paused {
                        SinkStats::add(&stats.pauses, 1);
                        if user_paused {
                            tracing::info!("paused: partitions paused");
                        } else {
                            tracing::info!(messages, bytes, "buffer full: partitions paused");
                        }
                    }
                    bp.paused = true;
                    telemetry::paused_partitions(assignment.count());
                }
                Err(e) => tracing::warn!("pausing partitions failed: {e}"),
            }
        } else {
            match self.consumer.resume(&assignment) {
                Ok(()) => {
                    tracing::info!(messages, bytes, "buffer drained: partitions resumed");
                    bp.paused = false;
                    telemetry::paused_partitions(0);
                }
                Err(e) => tracing::warn!("resuming partitions failed: {e}"),
            }
        }
    }

    /// Dead-letters (or, with `errors.tolerance=none`, refuses) one failure of `record`.
    async fn dead_letter(&self, record: &SourceRecord, dl: DeadLetter) -> Result<(), SinkError> {
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
        // The DLQ write must succeed before the offset moves.
        durably(|| writer.write(record, &dl)).await?;
        SinkStats::add(&self.stats.dead_letters, 1);
        telemetry::dead_letter(&dl.class);
        Ok(())
    }

    /// Dead-letters one failed message (or record) and then writes its `dead_lettered` result,
    /// both acknowledged before the caller may finish the message.
    async fn dead_letter_and_report(
        &self,
        record: &SourceRecord,
        dl: DeadLetter,
        envelope: Option<&Envelope>,
    ) -> Result<(), SinkError> {
        let result = self
            .results
            .is_some()
            .then(|| results::dead_lettered(&self.cfg.name, record, &dl, envelope));
        self.dead_letter(record, dl).await?;
        self.report(record, result).await
    }

    /// Writes one result record when `lark.result.topic` is set. Like a dead letter, it must be
    /// acknowledged before the source offset may move, so a failure stops the connector (the
    /// record stays uncommitted and is replayed) rather than lose the result.
    /// `result` is `None` exactly when there is no result topic (callers skip building it).
    async fn report(&self, record: &SourceRecord, result: Option<Value>) -> Result<(), SinkError> {
        let (Some(writer), Some(result)) = (&self.results, result) else {
            return Ok(());
        };
        durably(|| writer.write(record, &result)).await?;
        SinkStats::add(&self.stats.results_written, 1);
        Ok(())
    }

    /// Refreshes what the admin API reports: owned partitions and whether Lark is reachable.
    fn report_status(&self) {
        if let Ok(tpl) = self.consumer.assignment() {
            self.control.set_assigned(
                tpl.elements()
                    .iter()
                    .map(|e| format!("{}-{}", e.topic(), e.partition()))
                    .collect(),
            );
        }
        self.control
            .set_lark_ready(!self.client.has_app() || self.client.tokens().has_valid_token());
    }
}
