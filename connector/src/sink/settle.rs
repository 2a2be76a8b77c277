//! Settling one message: what happens from the send to Lark until the record may be committed.
//!
//! The scheduler's [`Handler`] ([`Deliverer`]) sends the message; then, on success, buzzes its
//! users if it is urgent and writes its `delivered` result; on a failure, dead-letters it and
//! writes its `dead_lettered` result. Every broker write is acknowledged before the message counts
//! as finished, and the record is finished (its offset may move) when its last message is. A
//! write that keeps failing, or an app-wide Lark configuration error, stops the connector instead:
//! the record stays unfinished, so uncommitted, and is replayed (Lark absorbs the resend: same
//! uuid).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::verdict::{self, Subject, Verdict};
use super::SinkError;
use crate::control::Control;
use crate::delivery::{buzz, deliver, Delivered, Handler, Queued, RateLimits, RetryPolicy};
use crate::dlq::{DeadLetter, DeadLetterWriter};
use crate::envelope::{Envelope, Operation, Urgent};
use crate::lark::{LarkClient, UserDirectory};
use crate::record::SourceRecord;
use crate::results::{self, Delivery, Op, ResultWriter, UrgentOutcome};
use crate::source::{Offsets, Ticket};
use crate::state::{Changelog, Digests, MessageStates};
use crate::telemetry::SinkStats;

/// A record whose messages are being delivered. Finished when `pending` reaches zero.
pub(super) struct InFlight {
    pub record: SourceRecord,
    pub ticket: Ticket,
    /// Set when the partition is revoked: its queued messages are abandoned.
    pub revoked: CancellationToken,
    pub pending: AtomicUsize,
}

/// One message on its way to a receiver.
pub(super) struct Outgoing {
    pub record: Arc<InFlight>,
    pub index: usize,
    pub envelope: Envelope,
    pub uuid: String,
    /// The receiver's queue: the address (phones and emails in their canonical spelling; they
    /// resolve to open_ids inside the queue).
    pub queue: String,
    /// Bytes it counts for the buffer bound (`buffer.max.bytes`).
    pub size: usize,
    /// For a keyed message (`messageKey`): the versions of it that waited in the queue while a
    /// newer one came (source partition, key), so they coalesce ([`Queued::coalesce_key`]).
    pub coalesce: Option<String>,
    /// The older versions this one took the place of, their content dropped: finished as
    /// `superseded` when this one is.
    pub superseded: Vec<Outgoing>,
    /// The uuid a send of this version uses: its own, or after coalescing the oldest version's,
    /// so a replay that coalesces differently still sends the same uuid (Lark keeps one copy).
    pub lead_uuid: String,
    /// Storm digests (`storm.digest.after`): the source partition it may be merged with others
    /// of (never across partitions, as for coalescing); `None` when it is never merged (`high`,
    /// keyed, urgent, a reply) or digests are off. Set by the intake (`storm::digest_group`).
    pub digest_group: Option<String>,
    /// For a digest: the messages it stands for, oldest first (empty for a plain message). Each
    /// finishes as `merged` when the digest is delivered.
    pub merged: Vec<Outgoing>,
}

impl Outgoing {
    /// A message on its way to its receiver's queue; keyed ones coalesce per source partition
    /// and key (never across partitions: each partition's records finish with their own owner).
    pub fn new(record: Arc<InFlight>, index: usize, envelope: Envelope) -> Self {
        let queue = envelope.receiver.queue_key();
        let size = envelope.content.len() + queue.len() + 256;
        let uuid = record.record.message_uuid(index);
        let coalesce = envelope.op.key().map(|k| {
            let r = &record.record;
            format!("{}\u{0}{}\u{0}{k}", r.topic, r.partition)
        });
        Outgoing {
            digest_group: None,
            merged: Vec::new(),
            lead_uuid: uuid.clone(),
            uuid,
            record,
            index,
            envelope,
            queue,
            size,
            coalesce,
            superseded: Vec::new(),
        }
    }
}

impl Outgoing {
    /// One digest of `items` (waiting messages of one receiver, group and rank, oldest first): an
    /// interactive message to the same receiver whose content is written when it is sent (the list
    /// grows while it waits).
    fn digest_of(mut items: Vec<Outgoing>) -> Result<Outgoing, Vec<Outgoing>> {
        let Some(first) = items.first() else {
            return Err(items);
        };
        let envelope = Envelope {
            receiver: first.envelope.receiver.clone(),
            msg_type: "interactive".into(),
            content: String::new(),
            urgent: None,
            reply: None,
            op: Operation::Send,
            priority: first.envelope.priority,
            summary: None,
        };
        let mut digest = Outgoing::new(first.record.clone(), first.index, envelope);
        digest.queue = first.queue.clone();
        digest.digest_group = first.digest_group.clone();
        // Its bytes are its members' (the card is written when it is sent).
        digest.size = 0;
        for item in std::mem::take(&mut items) {
            // Through `merge`: one version per key.
            let _ = digest.merge(item);
        }
        Ok(digest)
    }

    /// The message as its dead letter names it.
    pub(super) fn subject(&self) -> Subject {
        Subject {
            index: self.index,
            receiver: self.envelope.receiver.describe(),
            uuid: self.uuid.clone(),
        }
    }
}

impl Queued for Outgoing {
    fn queue_key(&self) -> &str {
        &self.queue
    }
    fn size(&self) -> usize {
        self.size
    }
    fn coalesce_key(&self) -> Option<&str> {
        self.coalesce.as_deref()
    }
    /// `priority`: high 2, normal 1, low 0.
    fn rank(&self) -> u8 {
        self.envelope.priority as u8
    }
    /// A newer version of a key takes the place of an older one still waiting, unless the older
    /// one recalls the message (what follows a recall is a new message) or buzzes users (its
    /// buzz must go out).
    fn absorb(&mut self, mut older: Self) -> Result<(), Self> {
        if matches!(older.envelope.op, Operation::Recall { .. }) || older.envelope.urgent.is_some()
        {
            return Err(older);
        }
        self.lead_uuid = std::mem::take(&mut older.lead_uuid);
        // A high version waiting keeps its place through the newer one that takes it over.
        self.envelope.priority = self.envelope.priority.max(older.envelope.priority);
        self.superseded.append(&mut older.superseded);
        older.envelope.content = String::new();
        self.superseded.push(older);
        Ok(())
    }
    fn digest_group(&self) -> Option<&str> {
        self.digest_group.as_deref()
    }
    fn is_digest(&self) -> bool {
        !self.merged.is_empty()
    }
    fn digest(items: Vec<Self>) -> Result<Self, Vec<Self>> {
        Outgoing::digest_of(items)
    }
    /// A keyed item takes the place of its key's older version in the digest (one version per
    /// key, the latest); the older one finishes as `superseded` with it.
    fn merge(&mut self, mut item: Self) -> Result<(), Self> {
        self.size += item.size;
        let older = item.coalesce.as_ref().and_then(|k| {
            self.merged
                .iter()
                .position(|m| m.coalesce.as_ref() == Some(k))
        });
        if let Some(at) = older {
            let older = self.merged.remove(at);
            if let Err(older) = item.absorb(older) {
                self.merged.insert(at, older);
            }
        }
        self.merged.push(item);
        Ok(())
    }
}

/// The Lark side of a send: what [`deliver`] and [`buzz`] take.
pub(super) struct LarkSide {
    pub client: Arc<LarkClient>,
    /// Phone / email → open_id, shared by every receiver queue (cached, batched).
    pub directory: UserDirectory,
    /// Lark's quotas, shared with the consumer (it recomputes the share on a rebalance).
    pub limits: Arc<RateLimits>,
    pub policy: RetryPolicy,
}

/// The durable Kafka writes that gate the offset: dead letters and result records.
pub(super) struct Outputs {
    /// The connector's name, stamped on every result record.
    pub name: String,
    /// `None` with `errors.tolerance=none`: a failure stops the connector instead.
    pub dlq: Option<DeadLetterWriter>,
    /// `lark.result.topic`, when set.
    pub results: Option<ResultWriter>,
    /// `lark.state.topic`, when set: keyed messages' state, written before their offset moves.
    pub state: Option<KeyedState>,
}

/// The keyed messages' state: the in-memory map and the changelog topic behind it.
pub(super) struct KeyedState {
    pub states: MessageStates,
    /// Storm digests' intents (`storm.digest.after`): restored and written like the keys.
    pub digests: Digests,
    pub changelog: Changelog,
    /// `lark.state.ttl.ms`: entries whose message was sent longer ago are forgotten.
    pub ttl: Duration,
}

/// Everything settling a message needs, shared by the receiver queues and the loop.
pub(super) struct Settle {
    pub lark: LarkSide,
    pub outputs: Outputs,
    /// Where a finished record's offset is stored.
    pub offsets: Offsets,
    /// The sink's events: metrics, and the figures the demo reads.
    pub stats: Arc<SinkStats>,
    pub control: Arc<Control>,
    /// Where a queue reports an error that stops the connector (the loop ends on it).
    pub fatal: mpsc::Sender<SinkError>,
    /// `storm.*`: the dedup window's memory and how digests read.
    pub storm: super::storm::Storm,
}

/// The scheduler's handler: delivers one message to the end.
pub(super) struct Deliverer(pub Arc<Settle>);

impl Handler<Outgoing> for Deliverer {
    async fn handle(&self, m: Outgoing) {
        // Paused through the admin API: hold the message (it stays buffered and uncommitted).
        if self.0.control.is_paused() {
            self.0.control.wait_resumed().await;
        }
        if self.0.control.is_stopping() {
            return; // shutting down: left uncommitted, replayed on the next start
        }
        if m.is_digest() {
            return self.0.deliver_digest(m).await;
        }
        if let Some(duplicate_of) = self.0.storm.duplicate(&m.queue, &m.envelope) {
            return self.0.deduplicated(m, duplicate_of).await;
        }
        if m.envelope.op.key().is_some() {
            if let Some(state) = &self.0.outputs.state {
                return self.0.deliver_keyed(m, state).await;
            }
        }
        self.0.deliver(m).await
    }
}

impl Settle {
    /// Delivers one message; on failure dead-letters it. Called by the receiver's queue.
    async fn deliver(&self, m: Outgoing) {
        // A revoked partition is not ours any more: its new owner replays the record from the
        // committed offset. Stop at once, also while waiting for permission or between retries,
        // so two members never send the same partition's messages at the same time (that would
        // overshoot the app quota the group shares). A request already on the wire may land;
        // the replay carries the same uuid, so Lark keeps one copy.
        let lark = &self.lark;
        let result = tokio::select! {
            biased;
            _ = m.record.revoked.cancelled() => return,
            r = deliver(
                &lark.client,
                &lark.directory,
                &lark.limits,
                &lark.policy,
                &m.envelope,
                &m.uuid,
            ) => r,
        };
        let record = &m.record.record;
        let settled = match verdict::sent(result, || m.subject()) {
            Verdict::Done(done) => self.delivered(&m, done).await,
            Verdict::Stop(reason) => Err(lark_config(record, reason)),
            // Lark refused the message for good, or retries ran out.
            Verdict::DeadLetter(dl) => {
                self.dead_letter_and_report(record, dl, Some(&m.envelope))
                    .await
            }
        };
        match settled {
            Ok(()) => self.message_done(&m.record),
            // The record stays unfinished, so uncommitted: replayed, and Lark absorbs the resend
            // (same uuid).
            Err(e) => {
                let _ = self.fatal.send(e).await;
            }
        }
    }

    /// Lark took the message: buzz it if it is urgent, then write its `delivered` result.
    async fn delivered(&self, m: &Outgoing, done: Delivered) -> Result<(), SinkError> {
        let record = &m.record.record;
        self.stats.delivered(&m.envelope.msg_type, record.timestamp);
        self.stats.message("delivered");
        self.storm.sent(&m.queue, &m.envelope, &done.ok.message_id);
        tracing::debug!(record = %record.coordinates(), index = m.index,
            message_id = %done.ok.message_id, attempts = done.attempts, "delivered");
        let urgent = match &m.envelope.urgent {
            Some(urgent) => Some(self.urgent(m, &done.ok.message_id, urgent).await?),
            None => None,
        };
        // Built only when there is a result topic: it costs a JSON object per message.
        let result = self.outputs.results.is_some().then(|| {
            let d = Delivery {
                ok: &done.ok,
                attempts: done.attempts,
                urgent: urgent.as_ref(),
                op: Op::Sent,
                replaced: None,
            };
            results::delivered(&self.outputs.name, record, m.index, &m.envelope, &d)
        });
        self.write_result(record, result).await
    }

    /// Buzzes the users of an urgent message after it was delivered. Users Lark skipped are
    /// logged; a refused buzz is dead-lettered (the message itself was delivered, so the reason
    /// names its message_id) and never retried forever. Returns the outcome for the result.
    pub(super) async fn urgent(
        &self,
        m: &Outgoing,
        message_id: &str,
        urgent: &Urgent,
    ) -> Result<UrgentOutcome, SinkError> {
        let record = &m.record.record;
        let answer = buzz(&self.lark.client, &self.lark.policy, message_id, urgent).await;
        match verdict::buzzed(answer, message_id, urgent.kind, || m.subject()) {
            Verdict::Done(skipped) => {
                if !skipped.is_empty() {
                    tracing::warn!(record = %record.coordinates(), message_id, kind = %urgent.kind,
                        skipped = ?skipped, "urgent: Lark skipped users not in the message's chat");
                }
                Ok(UrgentOutcome::Sent {
                    kind: urgent.kind,
                    skipped,
                })
            }
            Verdict::Stop(reason) => Err(lark_config(record, reason)),
            Verdict::DeadLetter(dl) => {
                let outcome = UrgentOutcome::Failed {
                    kind: urgent.kind,
                    reason: dl.reason.clone(),
                    code: dl.lark.as_ref().and_then(|e| e.code),
                };
                self.dead_letter(record, dl).await.map(|()| outcome)
            }
        }
    }

    /// A message that failed before it reached a queue (decode, transform, validation): its dead
    /// letter and result, then it is finished. Run on a task of its own by the loop.
    pub async fn invalid(&self, rec: &InFlight, dl: DeadLetter) {
        match self.dead_letter_and_report(&rec.record, dl, None).await {
            Ok(()) => self.message_done(rec),
            Err(e) => {
                let _ = self.fatal.send(e).await;
            }
        }
    }

    /// A record a transform turned into zero messages: finished at once.
    pub fn dropped(&self, rec: &InFlight) {
        self.stats.dropped(&rec.record.topic);
        self.offsets.finish(&rec.ticket);
    }

    /// One message of `rec` is finished; the record is when its last message is.
    pub(super) fn message_done(&self, rec: &InFlight) {
        if rec.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.stats.finished(&rec.record.topic);
            self.offsets.finish(&rec.ticket);
        }
    }

    /// Dead-letters (or, with `errors.tolerance=none`, refuses) one failure of `record`.
    async fn dead_letter(&self, record: &SourceRecord, dl: DeadLetter) -> Result<(), SinkError> {
        let Some(writer) = &self.outputs.dlq else {
            return Err(SinkError::Intolerable {
                coordinates: record.coordinates(),
                stage: dl.stage.as_str(),
                reason: dl.reason,
            });
        };
        tracing::warn!(record = %record.coordinates(), stage = dl.stage.as_str(), class = dl.class.label(),
            index = ?dl.message_index, receiver = ?dl.receiver, dlq = writer.topic(),
            "dead-lettered: {}", dl.reason);
        // The DLQ write must succeed before the offset moves.
        durably(|| writer.write(record, &dl)).await?;
        self.stats.dead_lettered(dl.class.label());
        Ok(())
    }

    /// Dead-letters one failed message (or record) and then writes its `dead_lettered` result,
    /// both acknowledged before the caller may finish the message.
    pub(super) async fn dead_letter_and_report(
        &self,
        record: &SourceRecord,
        dl: DeadLetter,
        envelope: Option<&Envelope>,
    ) -> Result<(), SinkError> {
        let result = self
            .outputs
            .results
            .is_some()
            .then(|| results::dead_lettered(&self.outputs.name, record, &dl, envelope));
        self.dead_letter(record, dl).await?;
        self.stats.message("dead_lettered");
        self.write_result(record, result).await
    }

    /// Writes one result record when `lark.result.topic` is set. Like a dead letter, it must be
    /// acknowledged before the source offset may move, so a failure stops the connector (the
    /// record stays uncommitted and is replayed) rather than lose the result.
    /// `result` is `None` exactly when there is no result topic (callers skip building it).
    pub(super) async fn write_result(
        &self,
        record: &SourceRecord,
        result: Option<Value>,
    ) -> Result<(), SinkError> {
        let (Some(writer), Some(result)) = (&self.outputs.results, result) else {
            return Ok(());
        };
        durably(|| writer.write(record, &result)).await?;
        Ok(())
    }

    /// Whether Lark is reachable as far as the admin API reports it: a valid tenant token (or no
    /// app, webhook-only).
    pub fn lark_ready(&self) -> bool {
        let client = &self.lark.client;
        !client.has_app() || client.tokens().has_valid_token()
    }
}

/// The error that stops the connector on an app-wide Lark configuration error met delivering
/// `record` (it stays uncommitted).
pub(super) fn lark_config(record: &SourceRecord, reason: String) -> SinkError {
    SinkError::LarkConfig {
        coordinates: record.coordinates(),
        reason,
    }
}

/// Runs a broker write until it is acknowledged, retrying a hiccup a few times with a growing
/// pause; the last error is returned (and stops the connector) rather than lose the write.
pub(super) async fn durably<F, Fut, E>(mut write: F) -> Result<(), E>
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
