//! Settling what storm control decided (`storm.rs`, docs/user-guide.md "Storms"): a digest sent
//! and its merged messages finished, or a message finished as a duplicate without a call. Every
//! result is acknowledged before the message's offset may move, as in `settle.rs`.

use std::sync::Arc;

use super::settle::{durably, lark_config, KeyedState, Outgoing, Settle};
use super::verdict::{self, Verdict};
use super::SinkError;
use crate::delivery::deliver;
use crate::delivery::digest::{digest_card, digest_uuid, summary};
use crate::delivery::keyed::now_ms;
use crate::dlq::DeadLetter;
use crate::envelope::{Envelope, Operation};
use crate::record::SourceRecord;
use crate::results;
use crate::state::{member_runs, state_partition, DigestIntent, Pinned, StateKey};

impl Settle {
    /// Sends a digest and finishes the messages it stands for as `merged`; if Lark refuses it for
    /// good, each of them is dead-lettered with the reason. Called by the receiver's queue. With
    /// `lark.state.topic`, the card's intent (its members, uuid and content) is in the changelog
    /// before the card is posted, and its message_id after, so a replay posts this card again
    /// (Lark keeps one copy) or none instead of a new one for a new grouping (`state::digests`).
    pub(super) async fn deliver_digest(&self, mut d: Outgoing) {
        let mut members = std::mem::take(&mut d.merged);
        if let Some(state) = &self.outputs.state {
            // Keys whose message was sent while they waited (their first version was in flight):
            // updated in place, in their order, not merged.
            let (own, rest): (Vec<Outgoing>, Vec<Outgoing>) =
                members.into_iter().partition(|m| self.has_message(m));
            members = rest;
            for m in own {
                self.deliver_keyed(m, state).await;
            }
            if members.is_empty() {
                return;
            }
        }
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
        let first = &d.record.record;
        let mut intent = self.outputs.state.as_ref().map(|state| {
            let partition = state_partition(first.partition, state.changelog.partitions());
            let intent = DigestIntent {
                uuid: d.uuid.clone(),
                topic: first.topic.clone(),
                partition: first.partition,
                // With the versions each took the place of: a replay finds them in it too.
                members: member_runs(members.iter().flat_map(|m| {
                    let older = m.superseded.iter();
                    std::iter::once(m)
                        .chain(older)
                        .map(|v| (v.record.record.offset, v.index))
                })),
                count: members.len(),
                content: d.envelope.content.clone(),
                message_id: None,
                created_ms: now_ms(),
            };
            (state, partition, intent)
        });
        if let Some((state, partition, intent)) = &intent {
            let write = durably(|| {
                state
                    .changelog
                    .write_digest(*partition, &intent.uuid, Some(intent))
            });
            if let Err(e) = write.await {
                let _ = self.fatal.send(e.into()).await;
                return;
            }
            state.digests.put(intent.clone(), *partition);
        }
        let lark = &self.lark;
        // A revoked partition is not ours any more (see `Settle::deliver`): its new owner replays
        // every record of the digest.
        let answer = tokio::select! {
            biased;
            _ = d.record.revoked.cancelled() => return,
            r = deliver(&lark.client, &lark.directory, &lark.limits, &lark.policy, &d.envelope, &d.uuid) => r,
        };
        let settled = match verdict::sent(answer, || d.subject()) {
            Verdict::Done(done) => {
                self.stats.delivered("interactive", None);
                let id = done.ok.message_id;
                tracing::info!(record = %first.coordinates(), receiver = %d.envelope.receiver.describe(),
                    messages = members.len(), message_id = %id, uuid = %d.uuid, "storm digest delivered");
                let finished = match intent.as_mut() {
                    Some((state, partition, intent)) => {
                        self.digest_landed(state, *partition, intent, &id).await
                    }
                    None => Ok(()),
                };
                let finished = match finished {
                    Ok(()) => self.finish_merged(&members, &id, members.len()).await,
                    Err(e) => Err(e),
                };
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

    /// The digest's card landed as `message_id`: written back to its intent (acknowledged), so a
    /// replay of its members needs no call. The content is dropped from the record then.
    async fn digest_landed(
        &self,
        state: &KeyedState,
        partition: i32,
        intent: &mut DigestIntent,
        message_id: &str,
    ) -> Result<(), SinkError> {
        intent.message_id = Some(message_id.to_string());
        intent.content.clear();
        durably(|| {
            state
                .changelog
                .write_digest(partition, &intent.uuid, Some(intent))
        })
        .await?;
        state.digests.put(intent.clone(), partition);
        Ok(())
    }

    /// Whether `m` is keyed and its key already has a Lark message (it is then updated in
    /// place, never merged).
    pub(super) fn has_message(&self, m: &Outgoing) -> bool {
        let (Some(state), Some(key)) = (&self.outputs.state, m.envelope.op.key()) else {
            return false;
        };
        state
            .states
            .get(&StateKey::new(m.queue.clone(), key))
            .is_some()
    }

    /// The digest of the changelog that message `index` of `record` was merged into, if any.
    pub(super) fn pinned_digest(&self, record: &SourceRecord, index: usize) -> Option<Arc<Pinned>> {
        let state = self.outputs.state.as_ref()?;
        state
            .digests
            .pinned(&record.topic, record.partition, record.offset, index)
    }

    /// A replayed message that a digest of the changelog stood for (`Intake` found it with
    /// `Digests::pinned`): finished through that card, never grouped again. The first member to
    /// come posts the card again with its uuid and content unless its message_id is known (Lark
    /// answers a repeated uuid with the message it made); the others wait for that and need no
    /// call. Refused for good, the member is dead-lettered with Lark's answer.
    pub(super) async fn merged_again(&self, m: Outgoing, pinned: Arc<Pinned>) {
        let Some(state) = &self.outputs.state else {
            return;
        };
        let record = &m.record.record;
        let mut landed = pinned.landed.lock().await;
        let settled = match landed.clone() {
            Some(id) => {
                self.finish_merged(std::slice::from_ref(&m), &id, pinned.intent.count)
                    .await
            }
            None => {
                let envelope = Envelope {
                    msg_type: "interactive".into(),
                    content: pinned.intent.content.clone(),
                    urgent: None,
                    reply: None,
                    op: Operation::Send,
                    summary: None,
                    ..m.envelope.clone()
                };
                let lark = &self.lark;
                let uuid = &pinned.intent.uuid;
                let answer = tokio::select! {
                    biased;
                    _ = m.record.revoked.cancelled() => return,
                    r = deliver(&lark.client, &lark.directory, &lark.limits, &lark.policy, &envelope, uuid) => r,
                };
                match verdict::sent(answer, || m.subject()) {
                    Verdict::Done(done) => {
                        let id = done.ok.message_id;
                        tracing::info!(record = %record.coordinates(), message_id = %id, %uuid,
                            messages = pinned.intent.count, "storm digest of a replay: the same card, posted again");
                        let mut intent = pinned.intent.clone();
                        let back = self
                            .digest_landed(state, pinned.state_partition, &mut intent, &id)
                            .await;
                        *landed = Some(id.clone());
                        match back {
                            Ok(()) => {
                                self.finish_merged(
                                    std::slice::from_ref(&m),
                                    &id,
                                    pinned.intent.count,
                                )
                                .await
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Verdict::Stop(reason) => Err(lark_config(record, reason)),
                    Verdict::DeadLetter(dl) => {
                        self.dead_letter_members(std::slice::from_ref(&m), &dl)
                            .await
                    }
                }
            }
        };
        drop(landed);
        if let Err(e) = settled {
            let _ = self.fatal.send(e).await;
        }
    }

    /// Each merged message: its `merged` result, then it is finished.
    /// `covered`: how many messages the digest merged in all.
    async fn finish_merged(
        &self,
        members: &[Outgoing],
        message_id: &str,
        covered: usize,
    ) -> Result<(), SinkError> {
        for m in members {
            let record = &m.record.record;
            let result = self.outputs.results.is_some().then(|| {
                results::merged(
                    &self.outputs.name,
                    record,
                    m.index,
                    &m.envelope,
                    message_id,
                    covered,
                )
            });
            self.write_result(record, result).await?;
            self.stats.message("merged");
            self.message_done(&m.record);
            self.finish_superseded(m, Some(message_id)).await?;
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
