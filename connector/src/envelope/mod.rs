//! The envelope: a message as the connector understands it once a record value has been read, and
//! the pure steps that turn record bytes into envelopes.
//!
//! Everything past this point (the receiver queues, the rate limits, the Lark client, the result
//! and dead-letter records) takes an [`Envelope`], never the JSON it came from, so the addressing
//! rules live in one place: which `receive_id_type` a `receiveType` means ([`IdType`]), which
//! queue a receiver waits in ([`Receiver::queue_key`]), which per-receiver quota it draws on
//! ([`Receiver::rate_key`]). A misspelt id type or urgent kind is a compile error, not a string
//! that silently misses a match arm.
//!
//! The whole module is pure: no IO, no Kafka, HTTP or script engine. It builds without the
//! `runtime` feature, so the fuzz targets (`fuzz/`) and the bad-input corpus run exactly the code
//! the sink runs:
//!
//! - [`decode`]: record bytes → JSON → the values it carries;
//! - [`validate`]: the shipped schemas, the addressing and content rules, the size limits;
//! - [`prepare`]: one record, decode → transform (given by the caller) → split → validate.

pub mod decode;
pub mod prepare;
pub mod validate;

use std::fmt;

use crate::lark::address::{canonical_email, canonical_mobile};

/// Lark's `receive_id_type` (lark-api.md §2.1): how a [`Receiver::Id`] names its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdType {
    /// `open_id` (`receiveType` `user` or `open_id`): a user, as this app sees them.
    OpenId,
    /// `union_id`: a user, the same across one developer's apps.
    UnionId,
    /// `user_id`: a user, as the tenant names them.
    UserId,
    /// `email`: sent as is, or looked up to an open_id with `lark.email.resolve`.
    Email,
    /// `chat_id` (`receiveType` `chat`): a group chat.
    ChatId,
}

impl IdType {
    /// The `receive_id_type` query value, and the prefix of the receiver's keys.
    pub fn as_str(self) -> &'static str {
        match self {
            IdType::OpenId => "open_id",
            IdType::UnionId => "union_id",
            IdType::UserId => "user_id",
            IdType::Email => "email",
            IdType::ChatId => "chat_id",
        }
    }

    /// The id type an envelope's `receiveType` names, or `None` for the receivers that are not an
    /// id (`phone`, `webhook`) and for anything else.
    pub fn from_receive_type(receive_type: &str) -> Option<Self> {
        Some(match receive_type {
            "user" | "open_id" => IdType::OpenId,
            "union_id" => IdType::UnionId,
            "user_id" => IdType::UserId,
            "email" => IdType::Email,
            "chat" => IdType::ChatId,
            _ => return None,
        })
    }
}

impl fmt::Display for IdType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a message goes to, as the Lark send API wants it (`receive_id_type` + `receive_id`), or a
/// phone number that must first be looked up to an open_id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Receiver {
    /// An id Lark takes as it is (lark-api.md §2.1).
    Id {
        id_type: IdType,
        id: String,
    },
    Phone(String),
    /// A configured custom-bot webhook, by name (lark-api.md §8).
    Webhook(String),
    /// A reply without `receiveId`: the chat of the parent message, named by its message id.
    /// Only ever paired with [`Envelope::reply`]; the id is the queue and rate-limit key, so
    /// replies to one message keep their order.
    Parent(String),
}

impl Receiver {
    /// A short form for logs and the DLQ, e.g. `chat_id:oc_ops`.
    pub fn describe(&self) -> String {
        match self {
            Receiver::Id { id_type, id } => format!("{id_type}:{id}"),
            Receiver::Phone(p) => format!("phone:{p}"),
            Receiver::Webhook(w) => format!("webhook:{w}"),
            Receiver::Parent(m) => format!("reply_to:{m}"),
        }
    }

    /// The receiver queue a message waits in. Every spelling of one phone number or email
    /// address shares one queue, so their messages keep their order (they resolve to open_ids
    /// inside the queue).
    pub fn queue_key(&self) -> String {
        match self {
            Receiver::Id {
                id_type: IdType::Email,
                id,
            } => format!("email:{}", canonical_email(id)),
            Receiver::Phone(p) => match canonical_mobile(p) {
                Some(m) => format!("phone:{m}"),
                None => format!("phone:{p}"),
            },
            other => other.describe(),
        }
    }

    /// The key of the receiver's own quota (5 messages/s, lark-api.md §4): the receiver as Lark
    /// sees it. Call it on the *resolved* receiver, so a phone or an email looked up to an
    /// open_id shares the person's quota with the messages addressed by that open_id. A reply
    /// without `receiveId` is keyed by its parent (the chat is only known to Lark), so replies to
    /// one message are spaced like one receiver.
    pub fn rate_key(&self) -> String {
        self.describe()
    }
}

/// Reply to an existing message instead of sending a new one (lark-api.md §2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// The parent's `om_…` id.
    pub message_id: String,
    /// Lark's `reply_in_thread`.
    pub in_thread: bool,
}

/// How an urgent message buzzes its users (lark-api.md §6: `urgent_app`, `urgent_sms`,
/// `urgent_phone`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UrgentKind {
    /// In the Lark app; the envelope schema's default.
    #[default]
    App,
    Sms,
    Phone,
}

impl UrgentKind {
    /// The envelope's `urgent.type`, and the suffix of Lark's `urgent_…` endpoint.
    pub fn as_str(self) -> &'static str {
        match self {
            UrgentKind::App => "app",
            UrgentKind::Sms => "sms",
            UrgentKind::Phone => "phone",
        }
    }

    /// The kind an envelope's `urgent.type` names, or `None` if it names none.
    pub fn from_type(urgent_type: &str) -> Option<Self> {
        Some(match urgent_type {
            "app" => UrgentKind::App,
            "sms" => UrgentKind::Sms,
            "phone" => UrgentKind::Phone,
            _ => return None,
        })
    }
}

impl fmt::Display for UrgentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An urgent (buzz) request sent after the message (lark-api.md §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urgent {
    pub kind: UrgentKind,
    /// open_ids to buzz.
    pub user_ids: Vec<String>,
}

/// What a record asks Lark to do with its message: the envelope's `messageKey` and `recall`.
///
/// Only the key is in the envelope; whether an [`Operation::Upsert`] sends or updates is decided
/// at delivery, from the key's state (`state::plan`): the first record of a key sends, later ones
/// update that message in place.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Operation {
    /// No `messageKey`: a new message, every time.
    #[default]
    Send,
    /// `messageKey`: the key's message is sent once, then updated in place (or replaced where
    /// Lark cannot update it).
    Upsert { key: String },
    /// `messageKey` with `"recall": true`: recall the key's message and forget the key.
    Recall { key: String },
}

impl Operation {
    /// The `messageKey`, if the record has one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Operation::Send => None,
            Operation::Upsert { key } | Operation::Recall { key } => Some(key),
        }
    }
}

/// `priority`: the order within one receiver's queue (higher first; the order of records is kept
/// within one priority). Storm control (`storm.digest.*`) never merges a `High` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

impl Priority {
    /// The envelope's spelling (`high`, `normal`, `low`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }

    /// From the envelope's spelling; `None` for anything else (the schema refuses it first).
    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            _ => None,
        }
    }
}

/// A validated, normalised message ready for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub receiver: Receiver,
    pub msg_type: String,
    /// The content object serialised to a string, exactly as Lark's `content` field wants it.
    pub content: String,
    pub urgent: Option<Urgent>,
    /// Set when the envelope replies to a message (`replyTo`, `replyInThread`).
    pub reply: Option<ReplyTo>,
    /// Send, or (with `messageKey`) send-or-update, or recall.
    pub op: Operation,
    /// Its place in the receiver's queue (`priority`, default `normal`).
    pub priority: Priority,
    /// `summary`: the line a storm digest lists for it, instead of one derived from its content
    /// (`delivery::digest::summary`); a transform sets it to customise digests.
    pub summary: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_types_round_trip_their_receive_types() {
        for (rt, t, s) in [
            ("user", IdType::OpenId, "open_id"),
            ("open_id", IdType::OpenId, "open_id"),
            ("union_id", IdType::UnionId, "union_id"),
            ("user_id", IdType::UserId, "user_id"),
            ("email", IdType::Email, "email"),
            ("chat", IdType::ChatId, "chat_id"),
        ] {
            assert_eq!(IdType::from_receive_type(rt), Some(t), "{rt}");
            assert_eq!(t.as_str(), s);
        }
        for rt in ["phone", "webhook", "chat_id", ""] {
            assert_eq!(IdType::from_receive_type(rt), None, "{rt}");
        }
    }

    #[test]
    fn queue_keys_share_one_queue_per_address() {
        let id = |id_type, id: &str| Receiver::Id {
            id_type,
            id: id.into(),
        };
        assert_eq!(
            id(IdType::Email, " Alice@Example.com").queue_key(),
            "email:alice@example.com"
        );
        assert_eq!(id(IdType::ChatId, "oc_1").queue_key(), "chat_id:oc_1");
        assert_eq!(
            Receiver::Phone("138-0000 0001".into()).queue_key(),
            Receiver::Phone("+8613800000001".into()).queue_key()
        );
        assert_eq!(
            Receiver::Phone("not a phone".into()).queue_key(),
            "phone:not a phone"
        );
        assert_eq!(Receiver::Webhook("ops".into()).queue_key(), "webhook:ops");
        assert_eq!(Receiver::Parent("om_1".into()).queue_key(), "reply_to:om_1");
        // The quota key keeps the address as given: it is taken after the look-up.
        assert_eq!(id(IdType::OpenId, "ou_a").rate_key(), "open_id:ou_a");
        assert_eq!(Receiver::Parent("om_1".into()).rate_key(), "reply_to:om_1");
    }

    #[test]
    fn urgent_kinds_name_their_type() {
        for k in [UrgentKind::App, UrgentKind::Sms, UrgentKind::Phone] {
            assert_eq!(UrgentKind::from_type(k.as_str()), Some(k));
        }
        assert_eq!(UrgentKind::from_type("fax"), None);
    }
}
