//! Settling what storm control decided (`storm.rs`, docs/user-guide.md "Storms"): a digest sent
//! and its merged messages finished, or a message finished as a duplicate without a call. Every
//! result is acknowledged before the message's offset may move, as in `settle.rs`.

use super::settle::{lark_config, Outgoing, Settle};
use super::verdict::{self, Verdict};
use super::SinkError;
use crate::delivery::deliver;
use crate::delivery::digest::{digest_card, digest_uuid, summary};
use crate::dlq::DeadLetter;
use crate::results;

impl Settle {
    /// Sends a digest and finishes the messages it stands for as `merged`; if Lark refuses it for
    /// good, each of them is dead-lettered with the reason. Called by the receiver's queue.
    pub(super) async fn deliver_digest(&self, mut d: Outgoing) {
        let members = std::mem::take(&mut d.merged);
        let lines: Vec<String> = members
            .iter()
            .take(self.storm.max_items)
            .map(|m| summary(&m.envelope))
            .collect();
        let times = members.iter().filter_map(|m| m.record.record.timestamp);
        let range = times.clone().min().zip(times.max());
        d.envelope.content = digest_card(members.len(), &lines, range);
        d.uuid = digest_uuid(members.iter().map(|m| {
            let r = &m.record.record;
            (r.topic.as_str(), r.partition, r.offset, m.index)
        }));
        let lark = &self.lark;
        // A revoked partition is not ours any more (see `Settle::deliver`): its new owner replays
        // every record of the digest.
        let answer = tokio::select! {
            biased;
            _ = d.record.revoked.cancelled() => return,
            r = deliver(&lark.client, &lark.directory, &lark.limits, &lark.policy, &d.envelope, &d.uuid) => r,
        };
        let first = &d.record.record;
        let settled = match verdict::sent(answer, || d.subject()) {
            Verdict::Done(done) => {
                self.stats.delivered("interactive", None);
                let id = done.ok.message_id;
                tracing::info!(record = %first.coordinates(), receiver = %d.envelope.receiver.describe(),
                    messages = members.len(), message_id = %id, uuid = %d.uuid, "storm digest delivered");
                let finished = self.finish_merged(&members, &id).await;
                self.offsets.commit_soon();
                finished
            }
            Verdict::Stop(reason) => Err(lark_config(first, reason)),
            Verdict::DeadLetter(dl) => self.dead_letter_members(&members, &dl).await,
        };
        if let Err(e) = settled {
            // Unfinished, so uncommitted: replayed, and the same digest keeps its uuid.
            let _ = self.fatal.send(e).await;
        }
    }

    /// Each merged message: its `merged` result, then it is finished.
    async fn finish_merged(&self, members: &[Outgoing], message_id: &str) -> Result<(), SinkError> {
        for m in members {
            let record = &m.record.record;
            let result = self.outputs.results.is_some().then(|| {
                results::merged(
                    &self.outputs.name,
                    record,
                    m.index,
                    &m.envelope,
                    message_id,
                    members.len(),
                )
            });
            self.write_result(record, result).await?;
            self.stats.message("merged");
            self.message_done(&m.record);
        }
        Ok(())
    }

    /// The digest was refused for good: each message it stood for is dead-lettered with that
    /// reason (under its own coordinates), then finished.
    async fn dead_letter_members(
        &self,
        members: &[Outgoing],
        dl: &DeadLetter,
    ) -> Result<(), SinkError> {
        for m in members {
            let mut own = dl.clone();
            let subject = m.subject();
            own.message_index = Some(subject.index);
            own.uuid = Some(subject.uuid);
            own.reason = format!("{} (sent as part of a storm digest)", dl.reason);
            self.dead_letter_and_report(&m.record.record, own, Some(&m.envelope))
                .await?;
            self.message_done(&m.record);
        }
        Ok(())
    }

    /// `m` equals a message sent to its receiver within the dedup window: finished without a
    /// call, as `deduplicated` (and the versions it superseded as `superseded`).
    pub(super) async fn deduplicated(&self, m: Outgoing, duplicate_of: String) {
        let record = &m.record.record;
        tracing::debug!(record = %record.coordinates(), index = m.index, duplicate_of = %duplicate_of,
            "deduplicated (storm.dedup.window.ms)");
        let result = self.outputs.results.is_some().then(|| {
            results::deduplicated(
                &self.outputs.name,
                record,
                m.index,
                &m.envelope,
                &duplicate_of,
            )
        });
        let done = match self.write_result(record, result).await {
            Ok(()) => {
                self.stats.message("deduplicated");
                self.message_done(&m.record);
                self.finish_superseded(&m, Some(&duplicate_of)).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            let _ = self.fatal.send(e).await;
        }
    }
}
