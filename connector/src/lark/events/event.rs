//! One event or card callback as Kafka will carry it (docs/lark-api.md §15.2): the plaintext JSON
//! as the value, the message it concerns (else its chat) as the key, the envelope's ids as headers;
//! and the window in which a redelivered one is written only once.
//!
//! Pure: JSON in, the parts of a record out; the clock is the caller's.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The event type of a card button click (the new callback format).
pub const CARD_ACTION: &str = "card.action.trigger";
/// The event type of a message sent to the bot.
pub const MESSAGE_RECEIVED: &str = "im.message.receive_v1";

/// An event, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundEvent {
    /// `header.event_type` (v2), `event.type` (v1).
    pub event_type: String,
    /// `header.event_id` (v2), `uuid` (v1).
    pub event_id: String,
    pub app_id: Option<String>,
    pub tenant_key: Option<String>,
    /// The Lark message it concerns: the clicked card, the received message.
    pub message_id: Option<String>,
    /// The chat it happened in.
    pub chat_id: Option<String>,
    /// For a click on a keyed card the sink sent: the card's `messageKey` (from the callback
    /// value, [`crate::lark::MESSAGE_KEY_IN_VALUE`]).
    pub message_key: Option<String>,
    /// The plaintext JSON, as Lark sent it: the record's value.
    pub json: Vec<u8>,
}

/// Why a payload is not an event lark-sink can write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event payload is not JSON: {0}")]
    Json(String),
    #[error("event without an event id (header.event_id / uuid)")]
    NoId,
    #[error("event without an event type (header.event_type / event.type)")]
    NoType,
}

fn text(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl InboundEvent {
    /// Reads a plaintext event (schema 2.0, or a v1 `event_callback`).
    pub fn parse(json: &[u8]) -> Result<InboundEvent, EventError> {
        let v: Value = serde_json::from_slice(json).map_err(|e| EventError::Json(e.to_string()))?;
        let event_type = text(&v, "/header/event_type")
            .or_else(|| text(&v, "/event/type"))
            .ok_or(EventError::NoType)?;
        let event_id = text(&v, "/header/event_id")
            .or_else(|| text(&v, "/uuid"))
            .ok_or(EventError::NoId)?;
        let first = |pointers: &[&str]| pointers.iter().find_map(|p| text(&v, p));
        Ok(InboundEvent {
            app_id: first(&["/header/app_id", "/event/app_id"]),
            tenant_key: first(&["/header/tenant_key", "/event/tenant_key"]),
            message_id: first(&[
                "/event/context/open_message_id",
                "/event/message/message_id",
                "/event/open_message_id",
                "/event/message_id",
            ]),
            chat_id: first(&[
                "/event/context/open_chat_id",
                "/event/message/chat_id",
                "/event/open_chat_id",
                "/event/chat_id",
            ]),
            message_key: text(
                &v,
                &format!("/event/action/value/{}", crate::lark::MESSAGE_KEY_IN_VALUE),
            ),
            event_type,
            event_id,
            json: json.to_vec(),
        })
    }

    /// The record's key: the message it concerns, else its chat, else none.
    pub fn key(&self) -> Option<&str> {
        self.message_id.as_deref().or(self.chat_id.as_deref())
    }

    /// What a redelivery of it has in common with it: the message id for a received message (the
    /// docs: "use message_id, do not rely on event_id"), else the event id.
    pub fn dedup_key(&self) -> String {
        match (&*self.event_type, &self.message_id) {
            (MESSAGE_RECEIVED, Some(m)) => format!("message:{m}"),
            _ => format!("event:{}", self.event_id),
        }
    }

    /// The record's headers: `lark.event_type`, `lark.event_id`, and `lark.app_id`,
    /// `lark.tenant_key`, `lark.message_key` when the event names them.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("lark.event_type", self.event_type.clone()),
            ("lark.event_id", self.event_id.clone()),
        ];
        if let Some(a) = &self.app_id {
            h.push(("lark.app_id", a.clone()));
        }
        if let Some(t) = &self.tenant_key {
            h.push(("lark.tenant_key", t.clone()));
        }
        if let Some(k) = &self.message_key {
            h.push(("lark.message_key", k.clone()));
        }
        h
    }
}

/// The answer to a card callback: `{}` (nothing changes), or a toast the clicking user sees.
pub fn card_answer(toast: Option<&str>) -> Value {
    match toast {
        Some(t) => serde_json::json!({"toast": {"type": "info", "content": t}}),
        None => serde_json::json!({}),
    }
}

/// The answer to a click that could not be written: an error toast, since Lark never sends the
/// click again (docs/lark-api.md §15.2).
pub fn card_failure_answer(toast: &str) -> Value {
    serde_json::json!({"toast": {"type": "error", "content": toast}})
}

/// Events written within the window, by [`InboundEvent::dedup_key`]: a redelivery inside it is
/// acknowledged without a second record. Bounded: past `capacity` the oldest are forgotten (such
/// a redelivery is merely written again).
#[derive(Debug)]
pub struct Seen {
    window: Duration,
    capacity: usize,
    at: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl Seen {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Seen {
            window,
            capacity: capacity.max(1),
            at: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether `key` was written within the window before `now`.
    pub fn contains(&mut self, key: &str, now: Instant) -> bool {
        self.expire(now);
        self.at.contains_key(key)
    }

    /// `key` was written (its record acknowledged) at `now`.
    pub fn insert(&mut self, key: String, now: Instant) {
        self.expire(now);
        while self.at.len() >= self.capacity {
            match self.order.pop_front() {
                Some((_, old)) => {
                    self.at.remove(&old);
                }
                None => break,
            }
        }
        if self.at.insert(key.clone(), now).is_none() {
            self.order.push_back((now, key));
        }
    }

    /// How many are remembered.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            if now.duration_since(*t) < self.window {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                self.at.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn click() -> Vec<u8> {
        serde_json::json!({"schema": "2.0",
            "header": {"event_id": "ev1", "token": "vt", "create_time": "1603977298000000",
                       "event_type": "card.action.trigger", "tenant_key": "tk", "app_id": "cli_1"},
            "event": {"operator": {"open_id": "ou_alice"}, "token": "c-1",
                      "action": {"value": {"action": "ack", "lark_sink_message_key": "fp-1"}, "tag": "button"},
                      "host": "im_message",
                      "context": {"open_message_id": "om_card", "open_chat_id": "oc_ops"}}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_click_is_keyed_by_its_card_with_the_envelope_in_headers() {
        let e = InboundEvent::parse(&click()).unwrap();
        assert_eq!(e.event_type, CARD_ACTION);
        assert_eq!(e.key(), Some("om_card"));
        assert_eq!(e.chat_id.as_deref(), Some("oc_ops"));
        assert_eq!(e.dedup_key(), "event:ev1");
        assert_eq!(
            e.headers(),
            vec![
                ("lark.event_type", "card.action.trigger".to_string()),
                ("lark.event_id", "ev1".to_string()),
                ("lark.app_id", "cli_1".to_string()),
                ("lark.tenant_key", "tk".to_string()),
                ("lark.message_key", "fp-1".to_string()),
            ]
        );
        assert_eq!(e.json, click(), "the value is the plaintext as sent");
    }

    #[test]
    fn a_received_message_dedups_by_its_message_id_and_others_by_chat_or_nothing() {
        let msg = serde_json::json!({"schema": "2.0",
            "header": {"event_id": "ev2", "event_type": "im.message.receive_v1", "app_id": "cli_1"},
            "event": {"message": {"message_id": "om_m", "chat_id": "oc_c", "message_type": "text",
                                  "content": "{\"text\":\"hi\"}"}}});
        let e = InboundEvent::parse(msg.to_string().as_bytes()).unwrap();
        assert_eq!(
            (e.key(), e.dedup_key().as_str()),
            (Some("om_m"), "message:om_m")
        );
        let chat = serde_json::json!({"schema": "2.0",
            "header": {"event_id": "ev3", "event_type": "im.chat.member.bot.added_v1"},
            "event": {"chat_id": "oc_new"}});
        let e = InboundEvent::parse(chat.to_string().as_bytes()).unwrap();
        assert_eq!((e.key(), e.tenant_key.clone()), (Some("oc_new"), None));
        let v1 = br#"{"uuid":"u1","token":"vt","type":"event_callback","event":{"type":"p2p_chat_create"}}"#;
        let e = InboundEvent::parse(v1).unwrap();
        assert_eq!(
            (e.event_id.as_str(), e.event_type.as_str(), e.key()),
            ("u1", "p2p_chat_create", None)
        );
        assert_eq!(InboundEvent::parse(b"{}"), Err(EventError::NoType));
        assert_eq!(
            InboundEvent::parse(br#"{"header":{"event_type":"x"}}"#),
            Err(EventError::NoId)
        );
        assert!(matches!(
            InboundEvent::parse(b"["),
            Err(EventError::Json(_))
        ));
    }

    #[test]
    fn the_window_remembers_for_its_length_and_its_capacity() {
        let now = Instant::now();
        let mut seen = Seen::new(Duration::from_secs(60), 2);
        assert!(!seen.contains("a", now));
        seen.insert("a".into(), now);
        assert!(seen.contains("a", now + Duration::from_secs(59)));
        assert!(
            !seen.contains("a", now + Duration::from_secs(60)),
            "past the window"
        );
        seen.insert("b".into(), now);
        seen.insert("c".into(), now);
        seen.insert("d".into(), now);
        assert_eq!(seen.len(), 2, "capacity");
        assert!(!seen.contains("b", now) && seen.contains("d", now));
    }

    #[test]
    fn the_card_answer_is_empty_or_a_toast() {
        assert_eq!(card_answer(None), serde_json::json!({}));
        assert_eq!(card_answer(Some("Got it"))["toast"]["content"], "Got it");
    }
}
