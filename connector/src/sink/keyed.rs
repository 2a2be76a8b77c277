//! Settling a keyed message (`messageKey`): the sink's side of `delivery::keyed`.
//!
//! Which Lark message a key was sent as is state (`crate::state`): held in memory for the
//! partitions this instance owns, restored from the compacted `lark.state.topic` when a partition
//! is assigned (`intake.rs`), and written there, acknowledged, *before* the record's result and
//! offset, exactly like a dead letter. So a crash between Lark's answer and the state write
//! replays the record: a send goes out again with the same uuid (Lark keeps one copy and answers
//! with the same message_id), an update is applied again (same content).
//!
//! Coalesced versions ([`Outgoing::superseded`]) finish as `superseded` once the version that
//! took their place has finished (landed, or been dead-lettered).

use super::settle::{durably, lark_config, KeyedState, Outgoing, Settle};
use super::verdict::{self, Verdict};
use super::SinkError;
use crate::delivery::keyed::{apply, now_ms, plan, Calls, Change, Landed, Op};
use crate::results::{self, Delivery, SupersededBy};
use crate::state::{state_partition, StateKey};

impl Settle {
    /// Delivers one keyed message to the end: plan, call Lark, write the state, buzz, result,
    /// offset; then finishes the versions it superseded. Called by the receiver's queue.
    pub(super) async fn deliver_keyed(&self, m: Outgoing, state: &KeyedState) {
        let Some(key) = m.envelope.op.key() else {
            return;
        };
        let key = StateKey {
            receiver: m.queue.clone(),
            message_key: key.to_string(),
        };
        let plan = plan(
            &m.envelope.op,
            &m.envelope.msg_type,
            state.states.get(&key),
            now_ms(),
        );
        let lark = Calls {
            client: &self.lark.client,
            directory: &self.lark.directory,
            limits: &self.lark.limits,
            policy: &self.lark.policy,
        };
        let at = m.record.record.coordinates();
        // A revoked partition is not ours any more (see `Settle::deliver`).
        let answer = tokio::select! {
            biased;
            _ = m.record.revoked.cancelled() => return,
            a = apply(&lark, &m.envelope, &m.lead_uuid, plan, &at) => a,
        };
        let record = &m.record.record;
        let settled = match verdict::sent(answer, || m.subject()) {
            Verdict::Done(landed) => self.landed(&m, state, key, landed).await,
            Verdict::Stop(reason) => Err(lark_config(record, reason)),
            Verdict::DeadLetter(dl) => self
                .dead_letter_and_report(record, dl, Some(&m.envelope))
                .await
                .map(|()| None),
        };
        let finished = match settled {
            Ok(message_id) => {
                self.message_done(&m.record);
                self.finish_superseded(&m, message_id.as_deref()).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = finished {
            // Unfinished, so uncommitted: replayed (see `Settle::deliver`).
            let _ = self.fatal.send(e).await;
        }
    }

    /// The version landed: the key's state (acknowledged), the buzz, the result. Returns the
    /// key's message id for the versions it superseded.
    async fn landed(
        &self,
        m: &Outgoing,
        state: &KeyedState,
        key: StateKey,
        landed: Landed,
    ) -> Result<Option<String>, SinkError> {
        let record = &m.record.record;
        let partition = state_partition(record.partition, state.changelog.partitions());
        match &landed.change {
            Change::Put(entry) => {
                state.states.put(key.clone(), entry.clone(), partition);
                durably(|| state.changelog.write(partition, &key, Some(entry))).await?;
            }
            Change::Forget => {
                state.states.remove(&key);
                durably(|| state.changelog.write(partition, &key, None)).await?;
            }
            Change::Keep => {}
        }
        self.stats.keyed(landed.op.as_str());
        self.stats.message(match landed.op {
            Op::Updated => "updated",
            Op::Recalled => "recalled",
            _ => "delivered",
        });
        if landed.op == Op::Recalled {
            self.storm.forget_key(&key.receiver, &key.message_key);
        } else {
            self.storm
                .sent(&m.queue, &m.envelope, &landed.ok.message_id);
            self.stats.delivered(&m.envelope.msg_type, record.timestamp);
        }
        tracing::debug!(record = %record.coordinates(), index = m.index, op = landed.op.as_str(),
            message_id = %landed.ok.message_id, attempts = landed.attempts, "keyed message landed");
        let message_id = &landed.ok.message_id;
        let urgent = match (&m.envelope.urgent, landed.op) {
            (Some(urgent), op) if op != Op::Recalled => {
                Some(self.urgent(m, message_id, urgent).await?)
            }
            _ => None,
        };
        let result = self.outputs.results.is_some().then(|| {
            let d = Delivery {
                ok: &landed.ok,
                attempts: landed.attempts,
                urgent: urgent.as_ref(),
                op: landed.op,
                replaced: landed.replaced.as_deref(),
            };
            results::delivered(&self.outputs.name, record, m.index, &m.envelope, &d)
        });
        self.write_result(record, result).await?;
        Ok((!message_id.is_empty()).then(|| message_id.clone()))
    }

    /// Finishes the versions `m` took the place of: a `superseded` result each (naming `m` and
    /// the key's message), then their offsets.
    pub(super) async fn finish_superseded(
        &self,
        m: &Outgoing,
        message_id: Option<&str>,
    ) -> Result<(), SinkError> {
        let by = SupersededBy {
            partition: m.record.record.partition,
            offset: m.record.record.offset,
            index: m.index,
            message_id,
        };
        for older in &m.superseded {
            let record = &older.record.record;
            let result = self.outputs.results.is_some().then(|| {
                results::superseded(
                    &self.outputs.name,
                    record,
                    older.index,
                    &older.envelope,
                    &by,
                )
            });
            self.write_result(record, result).await?;
            self.stats.keyed("superseded");
            self.stats.message("superseded");
            self.message_done(&older.record);
        }
        Ok(())
    }
}
