//! Intake: the consumer loop. Takes a record, prepares it (decode, transform, validate) and hands
//! its messages to the receiver queues, never waiting for delivery.
//!
//! Between records, and on a tick while none arrives, it applies backpressure (see
//! [`super::backpressure`]) and refreshes what the admin API reports. It ends on shutdown, on a
//! restart request, or on the first fatal error a queue reports.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lark_sink_transforms::Chain;
use rdkafka::consumer::Consumer;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::backpressure::{self, Backpressure, Load};
use super::restore::{partition_list, Done, Restores, SourcePartition};
use super::settle::{Deliverer, InFlight, Outgoing, Settle};
use super::SinkError;
use crate::config::ConnectorConfig;
use crate::delivery::Scheduler;
use crate::envelope::prepare::Prepared;
use crate::envelope::validate::EnvelopeValidator;
use crate::record::SourceRecord;
use crate::source::{Assignment, SinkConsumer};
use crate::transform::TransformRunner;

/// How often the loop re-checks the buffer bound while no record arrives (e.g. while paused).
const BACKPRESSURE_TICK: Duration = Duration::from_millis(50);

/// How often idle per-receiver rate state is forgotten.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10);

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The loop's state, owned by `run` from start to stop.
pub(super) struct Intake {
    /// The buffer bound, the shutdown timeout.
    cfg: ConnectorConfig,
    /// Prepares each record (decode, transforms, validation), owning the transform chain.
    transforms: TransformRunner,
    consumer: Arc<SinkConsumer>,
    /// Shared with the receiver queues: what happens to a message after the loop let it go.
    settle: Arc<Settle>,
    /// The receiver queues; their load is the buffer that backpressure bounds.
    scheduler: Scheduler<Outgoing, Deliverer>,
    /// Dead letters of messages that failed before reaching a queue, and replayed members of a
    /// storm digest finishing through it (`Settle::merged_again`), off the loop.
    dead_letters: JoinSet<()>,
    /// Fatal errors reported by the queues and the dead-letter tasks.
    fatal: mpsc::Receiver<SinkError>,
    backpressure: Backpressure,
    /// What the consumer's rebalance context publishes: each assignment, and whether a broker is
    /// up. The source only reports them; [`Intake::follow_rebalance`] and the tick act on them.
    assignments: watch::Receiver<Assignment>,
    broker_up: watch::Receiver<bool>,
    /// Partitions were assigned since the last backpressure step (they start unpaused in
    /// librdkafka, so a paused buffer must pause them too).
    reassigned: bool,
    /// The keyed messages' state (with `lark.state.topic`): held, being restored, and the source
    /// partitions paused until it is in.
    restores: Restores,
    /// [`crate::source::SinkContext::assigns`] when the state last followed the assignment.
    seen_assigns: u64,
    /// The expiry of keys past `lark.state.ttl.ms` under way, if any (one at a time).
    expiry: Option<tokio::task::JoinHandle<()>>,
}

impl Intake {
    pub fn new(
        cfg: ConnectorConfig,
        validator: EnvelopeValidator,
        chain: Chain,
        consumer: Arc<SinkConsumer>,
        settle: Arc<Settle>,
        fatal: mpsc::Receiver<SinkError>,
    ) -> Self {
        let digest_after = cfg.storm.digest_after;
        let rebuild = {
            let cfg = cfg.clone();
            Box::new(move || cfg.transform_chain())
        };
        Intake {
            transforms: TransformRunner::new(validator, chain, rebuild),
            cfg,
            assignments: consumer.context().assignments(),
            broker_up: consumer.context().broker_up(),
            reassigned: false,
            restores: Restores::default(),
            expiry: None,
            seen_assigns: 0,
            consumer,
            scheduler: Scheduler::with_digests(Deliverer(settle.clone()), digest_after),
            settle,
            dead_letters: JoinSet::new(),
            fatal,
            backpressure: Backpressure::default(),
        }
    }

    /// Takes records until `shutdown` resolves or a restart is requested (`Ok`), or a fatal
    /// error occurs.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), SinkError> {
        let mut tick = tokio::time::interval(BACKPRESSURE_TICK);
        let mut last_housekeeping = Instant::now();
        tokio::pin!(shutdown);
        loop {
            let msg = tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                _ = self.settle.control.restart_requested() => return Ok(()),
                Some(e) = self.fatal.recv() => return Err(e),
                _ = tick.tick() => {
                    self.on_tick(&mut last_housekeeping).await?;
                    continue;
                }
                done = self.restores.next(), if self.restores.busy() => {
                    self.restored(done).await?;
                    continue;
                }
                m = self.consumer.recv(), if self.backpressure.taking() => m,
            };
            let record = match msg {
                Ok(m) => SourceRecord::from(&m),
                Err(e) => {
                    tracing::warn!("Kafka consumer error (librdkafka retries by itself): {e}");
                    continue;
                }
            };
            self.take(record).await?;
        }
    }

    /// One record: begin it, prepare it, dispatch its messages.
    async fn take(&mut self, record: SourceRecord) -> Result<(), SinkError> {
        // The record may be the first of a new assignment: its share of the rate budget, and its
        // partition's keyed-message state, apply before any of its messages is sent.
        self.follow_rebalance()?;
        if self.restores.waits(&record) {
            // Taken before its partition's pause took effect: it waits for the state.
            self.restores.hold(record);
            return Ok(());
        }
        self.settle.stats.received(&record.topic);
        let (ticket, revoked) = self
            .settle
            .offsets
            .begin(&record.topic, record.partition, record.offset)
            .ok_or(SinkError::TrackerPoisoned)?;
        let prepared = self.transforms.prepare(&record).await;
        if self.settle.outputs.dlq.is_none() {
            // errors.tolerance=none: a record that cannot even be sent stops the connector here,
            // before anything after it is dispatched.
            if let Some(dl) = prepared.first_failure() {
                return Err(SinkError::Intolerable {
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
        self.dispatch(in_flight, prepared);
        self.apply_backpressure();
        Ok(())
    }

    /// Hands a prepared record's messages to the receiver queues (valid ones) or to dead-letter
    /// tasks (invalid ones). A record with no message is finished at once.
    fn dispatch(&mut self, rec: Arc<InFlight>, prepared: Prepared) {
        let messages = match prepared {
            Prepared::Failed(dl) => vec![Err(Box::new(dl))],
            Prepared::Messages(m) => m,
        };
        if messages.is_empty() {
            self.settle.dropped(&rec);
            return;
        }
        rec.pending.store(messages.len(), Ordering::SeqCst);
        for (index, m) in messages.into_iter().enumerate() {
            match m {
                Ok(envelope) => {
                    let mut m = Outgoing::new(rec.clone(), index, envelope);
                    if self.cfg.storm.digests() {
                        if let Some(pinned) = self.settle.pinned_digest(&rec.record, index) {
                            // A digest card stood for it before a crash or a rebalance: it
                            // finishes through that card, never grouped again.
                            let settle = self.settle.clone();
                            self.dead_letters
                                .spawn(async move { settle.merged_again(m, pinned).await });
                            continue;
                        }
                        let has_message = self.settle.has_message(&m);
                        m.digest_group =
                            super::storm::digest_group(&rec.record, &m.envelope, has_message);
                    }
                    self.scheduler.submit(m);
                }
                Err(dl) => {
                    let (settle, rec) = (self.settle.clone(), rec.clone());
                    self.dead_letters
                        .spawn(async move { settle.invalid(&rec, *dl).await });
                }
            }
        }
    }

    /// The tick: backpressure, the admin API's status, finished dead-letter tasks, and now and
    /// then the idle rate state and the expired keys.
    async fn on_tick(&mut self, last_housekeeping: &mut Instant) -> Result<(), SinkError> {
        self.follow_rebalance()?;
        self.apply_backpressure();
        self.report_status();
        while self.dead_letters.try_join_next().is_some() {}
        if last_housekeeping.elapsed() > HOUSEKEEPING_EVERY {
            self.settle.lark.limits.forget_idle();
            self.expire_keys();
            *last_housekeeping = Instant::now();
        }
        Ok(())
    }

    /// Forgets the keys whose message was sent longer ago than `lark.state.ttl.ms` (and the storm
    /// digests' intents written that long ago), off the loop:
    /// tombstones in batches, each key out of the map once its tombstone is acknowledged
    /// ([`crate::state::Changelog::expire`]). One expiry at a time: a large one outlasting the
    /// housekeeping interval is not started again beside itself.
    fn expire_keys(&mut self) {
        if self.settle.outputs.state.is_none()
            || self.expiry.as_ref().is_some_and(|t| !t.is_finished())
        {
            return;
        }
        let settle = self.settle.clone();
        self.expiry = Some(tokio::spawn(async move {
            let Some(state) = &settle.outputs.state else {
                return;
            };
            let started = Instant::now();
            let done = state
                .changelog
                .expire(&state.states, now_ms(), state.ttl)
                .await;
            let (digests, failed) = state
                .changelog
                .expire_digests(&state.digests, now_ms(), state.ttl)
                .await;
            if digests + failed > 0 {
                tracing::info!(
                    forgotten = digests,
                    failed,
                    "storm: digests past lark.state.ttl.ms forgotten"
                );
            }
            if done.due > 0 {
                tracing::info!(
                    due = done.due,
                    forgotten = done.forgotten,
                    rewritten = done.rewritten,
                    failed = done.failed,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    ttl = ?state.ttl,
                    "messageKey: expired keys forgotten"
                );
            }
        }));
    }

    /// Follows the assignment with the keyed messages' state: drops that of revoked partitions,
    /// and starts restoring that of new ones with their source partitions paused, while the loop
    /// goes on (see [`super::restore`]).
    fn follow_state(&mut self) {
        let Some(state) = &self.settle.outputs.state else {
            return;
        };
        let Ok(tpl) = self.consumer.assignment() else {
            return;
        };
        let assigned: BTreeSet<SourcePartition> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let assigns = self.consumer.context().assigns();
        let continuous = assigns <= self.seen_assigns + 1;
        self.seen_assigns = assigns;
        let partitions = state.changelog.partitions();
        let followed = self
            .restores
            .follow(&self.settle, &assigned, continuous, partitions);
        if !followed.pause.is_empty() {
            if let Err(e) = self.consumer.pause(&partition_list(&followed.pause)) {
                // Their records are held instead (see `take`); the prefetch bounds them.
                tracing::warn!("pausing partitions for a state restore failed: {e}");
            }
        }
    }

    /// A restore is in: its state partitions are held, their source partitions resume (unless
    /// backpressure holds every partition paused; it resumes them later), and the records held
    /// meanwhile are taken, in order.
    async fn restored(&mut self, done: Done) -> Result<(), SinkError> {
        let resume = self.restores.finished(&self.settle, done)?;
        if !resume.is_empty() && !self.backpressure.paused() {
            if let Err(e) = self.consumer.resume(&partition_list(&resume)) {
                tracing::warn!("resuming partitions after a state restore failed: {e}");
            }
        }
        for record in self.restores.released() {
            self.take(record).await?;
        }
        Ok(())
    }

    /// Publishes the buffer's load, then pauses or resumes the partitions if
    /// [`Backpressure::step`] says so.
    fn apply_backpressure(&mut self) {
        let load = Load {
            messages: self.scheduler.in_flight(),
            bytes: self.scheduler.bytes(),
        };
        let stats = &self.settle.stats;
        stats.buffered(load.messages, load.bytes);
        let user_paused = self.settle.control.is_paused();
        // Partitions assigned since the last step start unpaused in librdkafka.
        let reassigned = std::mem::take(&mut self.reassigned);
        let bound = &self.cfg.buffer;
        let step = self
            .backpressure
            .step(load, bound, user_paused, reassigned, Instant::now());
        if let Some(action) = step {
            let restoring = |topic: &str, partition: i32| self.restores.waits_for(topic, partition);
            if backpressure::apply(action, load, &self.consumer, stats, &restoring) {
                self.backpressure.done(action);
            }
        }
    }

    /// Acts on an assignment the rebalance context published since the last look: the next
    /// backpressure step pauses the new partitions if the buffer is paused, and with
    /// `lark.rate.share=auto` the app's rate budget is scaled to this instance's share.
    fn follow_rebalance(&mut self) -> Result<(), SinkError> {
        if !self.assignments.has_changed().unwrap_or(false) {
            return Ok(());
        }
        let assignment = *self.assignments.borrow_and_update();
        self.reassigned = true;
        self.follow_state();
        if let Some(share) = assignment.share {
            self.settle.lark.limits.set_share(share);
            tracing::info!(
                share,
                partitions = assignment.partitions,
                "app rate budget scaled to this instance's share of partitions"
            );
        }
        Ok(())
    }

    /// Refreshes what the admin API reports: owned partitions, whether a broker is up (when
    /// librdkafka's statistics said something new) and whether Lark is reachable.
    fn report_status(&mut self) {
        if self.broker_up.has_changed().unwrap_or(false) {
            let up = *self.broker_up.borrow_and_update();
            self.settle.control.set_broker_ready(up);
        }
        let control = &self.settle.control;
        if let Ok(tpl) = self.consumer.assignment() {
            control.set_assigned(
                tpl.elements()
                    .iter()
                    .map(|e| format!("{}-{}", e.topic(), e.partition()))
                    .collect(),
            );
        }
        control.set_lark_ready(self.settle.lark_ready());
    }

    /// Stops the queues and waits, up to `shutdown.timeout.ms`, for the messages in hand and the
    /// dead-letter tasks. Returns a fatal error reported meanwhile, if any.
    pub async fn drain(&mut self) -> Option<SinkError> {
        self.scheduler.stop();
        let grace = self.cfg.shutdown_timeout;
        let (scheduler, dead_letters) = (&self.scheduler, &mut self.dead_letters);
        let drained = tokio::time::timeout(grace, async {
            scheduler.drain(grace).await;
            while dead_letters.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "messages still in flight after {grace:?} (shutdown.timeout.ms); leaving them uncommitted"
            );
        }
        self.fatal.try_recv().ok()
    }
}
