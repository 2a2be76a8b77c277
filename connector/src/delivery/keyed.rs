//! Keyed messages (`messageKey`) as far as Lark is concerned: what to do with a version given
//! its key's state ([`plan`], pure), and doing it ([`apply`]): send, update in place (PATCH a card,
//! PUT text or post), replace, recall.
//!
//! A replacement is a new message whose uuid derives from the version and the message it replaces
//! ([`replacement_uuid`]), so its replay is deduplicated by Lark like any send. When Lark refuses
//! an update as `F-msg` (recalled, deleted, too old, out of edits, ...), [`apply`] falls back to a
//! replacement: a key never gets stuck on a message that can no longer change. Keeping the state
//! (in memory and in `lark.state.topic`), the result records and the offsets is the sink's part
//! (`sink/keyed.rs`); `lark-sink send --message-key` uses this module too.

use std::time::Duration;

use sha2::Digest;

use super::limits::RateLimits;
use super::send::{deliver, DeliveryFailure, RetryPolicy};
use super::update::{recall, update};
use crate::envelope::{Envelope, Operation};
use crate::lark::{ErrorClass, LarkClient, Recalled, SendOk, UserDirectory};
use crate::state::StateEntry;

/// Lark updates a card only within 14 days of sending it (230031, lifecycle doc §1.1): past it,
/// an update is planned as a replacement without asking.
pub const CARD_UPDATE_WINDOW: Duration = Duration::from_secs(14 * 24 * 3600);

/// Lark allows 20 edits of one text or post message (230072, lifecycle doc §1.2); the next
/// version of a key whose message used them all is a replacement.
pub const MAX_EDITS: u32 = 20;

/// How a card or text message is changed in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `PATCH`: a card (`interactive`), replaced whole.
    Patch,
    /// `PUT`: an edit of a `text` or `post` message.
    Put,
}

/// What to do with a keyed message, given the key's state.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// No message for the key yet (or it was forgotten): send one.
    Send,
    /// Change the key's message in place.
    Update { entry: StateEntry, method: Method },
    /// Lark cannot change the key's message (`why`): send a new one and point the key at it.
    Replace { entry: StateEntry, why: String },
    /// Recall the key's message and forget the key.
    Recall { entry: StateEntry },
    /// A recall for a key with no message: nothing to do (a recall is idempotent).
    NothingToRecall,
}

/// The plan for a keyed envelope (`op`, `msg_type`) given the key's entry, at `now_ms`. Pure.
pub fn plan(op: &Operation, msg_type: &str, entry: Option<StateEntry>, now_ms: i64) -> Plan {
    let Some(entry) = entry else {
        return match op {
            Operation::Recall { .. } => Plan::NothingToRecall,
            _ => Plan::Send,
        };
    };
    if let Operation::Recall { .. } = op {
        return Plan::Recall { entry };
    }
    let replace = |why: String| Plan::Replace {
        entry: entry.clone(),
        why,
    };
    if entry.msg_type != msg_type {
        return replace(format!(
            "its message is {}, this version is {msg_type} (Lark cannot change a message's type)",
            entry.msg_type
        ));
    }
    match msg_type {
        "interactive" => {
            let age = now_ms.saturating_sub(entry.sent_ms);
            if age >= CARD_UPDATE_WINDOW.as_millis() as i64 {
                replace("its card was sent more than 14 days ago (Lark's update window)".into())
            } else {
                Plan::Update {
                    entry,
                    method: Method::Patch,
                }
            }
        }
        "text" | "post" if entry.edits >= MAX_EDITS => {
            replace(format!("its message has used Lark's {MAX_EDITS} edits"))
        }
        "text" | "post" => Plan::Update {
            entry,
            method: Method::Put,
        },
        other => replace(format!("Lark cannot update {other} messages in place")),
    }
}

/// The uuid of a message that replaces `replaced` for the version led by `lead_uuid`: derived
/// from both, so a replay sends the same uuid (and Lark keeps one copy), yet it differs from the
/// uuid that first sent `replaced` (which Lark would answer with `replaced` itself).
pub fn replacement_uuid(lead_uuid: &str, replaced: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{lead_uuid}\u{0}{replaced}").as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("lr-{hex}")
}

/// What happens to the key's state once the version landed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The key points at this message now.
    Put(StateEntry),
    /// The key is forgotten (recalled).
    Forget,
    /// Nothing changes (a recall of a key with no message).
    Keep,
}

/// What a keyed version came to in Lark.
#[derive(Debug, Clone)]
pub struct Landed {
    pub op: Op,
    /// The key's message (its id is empty after a recall of a key with none).
    pub ok: SendOk,
    pub attempts: u32,
    pub change: Change,
    /// With [`Op::Replaced`]: the message the key pointed at before.
    pub replaced: Option<String>,
}

/// What a delivered keyed message did in Lark: the result record's `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A new message (every unkeyed message; a key's first).
    Sent,
    /// The key's message, updated in place (PATCH or PUT).
    Updated,
    /// Lark could not update the key's message (too old, out of edits, recalled, another type):
    /// a new one was sent and the key points at it.
    Replaced,
    /// The key's message was recalled (or there was none) and the key forgotten.
    Recalled,
}

impl Op {
    /// The result's `op`, and the `op` label of `lark_sink_keyed_messages_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Sent => "sent",
            Op::Updated => "updated",
            Op::Replaced => "replaced",
            Op::Recalled => "recalled",
        }
    }
}

/// The Lark side a keyed version needs: what [`deliver`], [`update`] and [`recall`] take.
pub struct Calls<'a> {
    pub client: &'a LarkClient,
    pub directory: &'a UserDirectory,
    pub limits: &'a RateLimits,
    pub policy: &'a RetryPolicy,
}

/// Carries `plan` out in Lark for `envelope` (a version whose sends use `lead_uuid`; `at`
/// names it in logs), falling back to a replacement when Lark refuses an update as `F-msg`.
pub async fn apply(
    lark: &Calls<'_>,
    envelope: &Envelope,
    lead_uuid: &str,
    plan: Plan,
    at: &str,
) -> Result<Landed, DeliveryFailure> {
    match plan {
        Plan::Send => send_new(lark, envelope, lead_uuid, None, 0).await,
        Plan::Replace { entry, why } => {
            tracing::info!(record = at, message_id = %entry.message_id,
                "messageKey: sending a new message, because {why}");
            let uuid = replacement_uuid(lead_uuid, &entry.message_id);
            send_new(lark, envelope, &uuid, Some(entry.message_id), 0).await
        }
        Plan::Update { entry, .. } => {
            let id = &entry.message_id;
            match update(lark.client, lark.limits, lark.policy, envelope, id).await {
                Ok((updated, attempts)) => Ok(Landed {
                    op: Op::Updated,
                    ok: SendOk {
                        message_id: id.clone(),
                        chat_id: entry.chat_id.clone().unwrap_or_default(),
                        log_id: updated.log_id,
                    },
                    attempts,
                    change: Change::Put(StateEntry {
                        updated_ms: now_ms(),
                        edits: entry.edits.saturating_add(1),
                        ..entry.clone()
                    }),
                    replaced: None,
                }),
                Err(f) if f.error.class == ErrorClass::Message => {
                    tracing::info!(record = at, message_id = %id,
                        "messageKey: Lark cannot update the message ({}); sending a new one", f.error);
                    let uuid = replacement_uuid(lead_uuid, id);
                    send_new(lark, envelope, &uuid, Some(id.clone()), f.attempts).await
                }
                Err(f) => Err(f),
            }
        }
        Plan::Recall { entry } => {
            let rate_key = envelope.receiver.rate_key();
            let id = &entry.message_id;
            let (gone, attempts) =
                recall(lark.client, lark.limits, lark.policy, &rate_key, id).await?;
            if gone == Recalled::AlreadyGone {
                tracing::info!(message_id = %id, "messageKey: the message was already recalled or deleted in Lark");
            }
            Ok(Landed {
                op: Op::Recalled,
                ok: SendOk {
                    message_id: id.clone(),
                    chat_id: entry.chat_id.clone().unwrap_or_default(),
                    log_id: None,
                },
                attempts,
                change: Change::Forget,
                replaced: None,
            })
        }
        Plan::NothingToRecall => Ok(Landed {
            op: Op::Recalled,
            ok: SendOk {
                message_id: String::new(),
                chat_id: String::new(),
                log_id: None,
            },
            attempts: 0,
            change: Change::Keep,
            replaced: None,
        }),
    }
}

/// Sends the version as a new message with `uuid`; `replaced` is the message the key pointed
/// at (a replacement), `earlier` the attempts already spent on a refused update.
async fn send_new(
    lark: &Calls<'_>,
    envelope: &Envelope,
    uuid: &str,
    replaced: Option<String>,
    earlier: u32,
) -> Result<Landed, DeliveryFailure> {
    let done = deliver(
        lark.client,
        lark.directory,
        lark.limits,
        lark.policy,
        envelope,
        uuid,
    )
    .await
    .map_err(|mut f| {
        f.attempts += earlier;
        f
    })?;
    let now = now_ms();
    let entry = StateEntry {
        message_id: done.ok.message_id.clone(),
        msg_type: envelope.msg_type.clone(),
        chat_id: (!done.ok.chat_id.is_empty()).then(|| done.ok.chat_id.clone()),
        sent_ms: now,
        updated_ms: now,
        edits: 0,
    };
    Ok(Landed {
        op: if replaced.is_some() {
            Op::Replaced
        } else {
            Op::Sent
        },
        ok: done.ok,
        attempts: done.attempts + earlier,
        change: Change::Put(entry),
        replaced,
    })
}

/// Milliseconds since the Unix epoch: the clock of [`plan`]'s age rule and of state entries.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 24 * 3600 * 1000;

    fn entry(msg_type: &str, sent_ms: i64, edits: u32) -> StateEntry {
        StateEntry {
            message_id: "om_1".into(),
            msg_type: msg_type.into(),
            chat_id: Some("oc_1".into()),
            sent_ms,
            updated_ms: sent_ms,
            edits,
        }
    }

    fn upsert() -> Operation {
        Operation::Upsert { key: "k".into() }
    }

    #[test]
    fn a_key_without_state_sends_and_a_recall_of_it_does_nothing() {
        assert_eq!(plan(&upsert(), "text", None, 0), Plan::Send);
        let recall = Operation::Recall { key: "k".into() };
        assert_eq!(plan(&recall, "text", None, 0), Plan::NothingToRecall);
        let e = entry("image", 0, 0);
        assert_eq!(
            plan(&recall, "text", Some(e.clone()), 0),
            Plan::Recall { entry: e }
        );
    }

    #[test]
    fn cards_are_patched_within_fourteen_days() {
        let now = 100 * DAY_MS;
        let fresh = entry("interactive", now - 14 * DAY_MS + 1, 50);
        assert_eq!(
            plan(&upsert(), "interactive", Some(fresh.clone()), now),
            Plan::Update {
                entry: fresh,
                method: Method::Patch
            },
            "cards have no edit limit"
        );
        let old = entry("interactive", now - 14 * DAY_MS, 0);
        let p = plan(&upsert(), "interactive", Some(old), now);
        assert!(
            matches!(&p, Plan::Replace { why, .. } if why.contains("14 days")),
            "{p:?}"
        );
    }

    #[test]
    fn text_and_post_are_edited_twenty_times() {
        for t in ["text", "post"] {
            let e = entry(t, 0, MAX_EDITS - 1);
            assert_eq!(
                plan(&upsert(), t, Some(e.clone()), 400 * DAY_MS),
                Plan::Update {
                    entry: e,
                    method: Method::Put
                },
                "{t}: no age limit of ours (the admin's window answers 230075)"
            );
            let p = plan(&upsert(), t, Some(entry(t, 0, MAX_EDITS)), 0);
            assert!(
                matches!(&p, Plan::Replace { why, .. } if why.contains("20 edits")),
                "{p:?}"
            );
        }
    }

    #[test]
    fn other_types_and_type_changes_are_replaced() {
        let p = plan(&upsert(), "image", Some(entry("image", 0, 0)), 0);
        assert!(
            matches!(&p, Plan::Replace { why, .. } if why.contains("cannot update image")),
            "{p:?}"
        );
        for (was, now) in [
            ("text", "post"),
            ("text", "interactive"),
            ("interactive", "text"),
        ] {
            let p = plan(&upsert(), now, Some(entry(was, 0, 0)), 0);
            assert!(
                matches!(&p, Plan::Replace { why, .. } if why.contains("type")),
                "{was} → {now}: {p:?}"
            );
        }
    }

    #[test]
    fn replacement_uuids_are_stable_and_distinct() {
        let a = replacement_uuid("ls-abc-0-7-0", "om_1");
        assert_eq!(
            a,
            replacement_uuid("ls-abc-0-7-0", "om_1"),
            "a replay sends the same uuid"
        );
        assert_ne!(a, replacement_uuid("ls-abc-0-7-0", "om_2"));
        assert_ne!(a, replacement_uuid("ls-abc-0-8-0", "om_1"));
        assert!(a.starts_with("lr-") && a.len() <= 50, "{a}");
    }
}
