//! Envelope validation: the shipped JSON Schemas, then per-`msg_type` content and size checks.
//!
//! Lark rejects a malformed message only after a network round trip and with a terse
//! `230001 ext=...`; checking here first gives the dead-letter record a reason that names every
//! failing JSON path, and never spends rate-limit budget on a message that cannot succeed.
//!
//! The schemas are files users can reuse in their producers (`connector/schema/envelope.json`,
//! `connector/schema/content.json`); they are embedded at build time and compiled once.
//!
//! [`EnvelopeValidator::validate`] runs the checks in this order, each a function below, and the
//! first that fails is the reason: the envelope schema, the addressing rules (what a reply, a
//! buzz and a webhook may be), the content's own schema, the size limits.

use std::collections::HashMap;

use jsonschema::Validator;
use serde_json::Value;

use super::{Envelope, IdType, Operation, Priority, Receiver, ReplyTo, Urgent, UrgentKind};

pub const ENVELOPE_SCHEMA: &str = include_str!("../../schema/envelope.json");
pub const CONTENT_SCHEMA: &str = include_str!("../../schema/content.json");

/// The msg_types of lark-api.md §2.4, in the order the envelope schema lists them.
pub const MSG_TYPES: &[&str] = &[
    "text",
    "post",
    "image",
    "file",
    "audio",
    "media",
    "sticker",
    "interactive",
    "share_chat",
    "share_user",
    "system",
];

/// Byte limit of the `content` string per msg_type (lark-api.md §2.4 "Size limits": text 150 KB,
/// card and post 30 KB; KB read as KiB). Others are small key objects and need no limit.
pub fn content_limit(msg_type: &str) -> Option<usize> {
    match msg_type {
        "text" => Some(150 * 1024),
        "post" | "interactive" => Some(30 * 1024),
        _ => None,
    }
}

/// The msg_types a custom-bot webhook accepts (lark-api.md §8).
pub const WEBHOOK_MSG_TYPES: &[&str] = &["text", "post", "image", "share_chat", "interactive"];

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{}", .violations.join("; "))]
pub struct ValidationError {
    /// One entry per failing JSON path, e.g. `/receiveId: "" is shorter than 1 character`.
    pub violations: Vec<String>,
}

/// The compiled schemas. Build once and share (`Validator` is `Send + Sync`).
pub struct EnvelopeValidator {
    envelope: Validator,
    content: HashMap<&'static str, Validator>,
    /// Names of the configured custom-bot webhooks.
    webhooks: Vec<String>,
    /// Whether records may carry a `messageKey` (the sink allows it only with `lark.state.topic`).
    keys: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("shipped schema does not compile: {0}")]
pub struct SchemaError(String);

impl EnvelopeValidator {
    /// A validator for a connector with the given custom-bot webhooks configured.
    pub fn with_webhooks(webhooks: Vec<String>) -> Result<Self, SchemaError> {
        let mut v = Self::new()?;
        v.webhooks = webhooks;
        Ok(v)
    }

    pub fn new() -> Result<Self, SchemaError> {
        let parse =
            |s: &str| serde_json::from_str::<Value>(s).map_err(|e| SchemaError(e.to_string()));
        let envelope = jsonschema::validator_for(&parse(ENVELOPE_SCHEMA)?)
            .map_err(|e| SchemaError(e.to_string()))?;
        let content_doc = parse(CONTENT_SCHEMA)?;
        let mut content = HashMap::new();
        for msg_type in MSG_TYPES {
            // One validator per msg_type: the shared $defs plus a root $ref to that type.
            let mut schema = content_doc.clone();
            if let Some(obj) = schema.as_object_mut() {
                obj.insert("$ref".into(), Value::String(format!("#/$defs/{msg_type}")));
            }
            let v = jsonschema::validator_for(&schema).map_err(|e| SchemaError(e.to_string()))?;
            content.insert(*msg_type, v);
        }
        Ok(Self {
            envelope,
            content,
            webhooks: Vec::new(),
            keys: true,
        })
    }

    /// Whether records may carry a `messageKey`. The sink passes whether `lark.state.topic` is
    /// set, so a keyed record without it is dead-lettered with a reason that names the key to set,
    /// never sent as a new message each time. Allowed by default (`transform test`, the corpus).
    pub fn allow_keys(mut self, allowed: bool) -> Self {
        self.keys = allowed;
        self
    }

    /// Validates one envelope. `index` is its position when the record was an array; it prefixes
    /// every reported path so the reason points at the right element.
    pub fn validate(
        &self,
        value: &Value,
        index: Option<usize>,
    ) -> Result<Envelope, ValidationError> {
        let at = Paths(index.map(|i| format!("/{i}")).unwrap_or_default());
        let violations: Vec<String> = self
            .envelope
            .iter_errors(value)
            .map(|e| violation(format!("{}: {}", at.of(e.instance_path().as_str()), e)))
            .collect();
        if !violations.is_empty() {
            return Err(ValidationError { violations });
        }
        // The schema guarantees the shapes below; fall back to defaults only for absent fields.
        let reply = reply_to(value);
        let receiver = receiver(value, reply.as_ref());
        let msg_type = value
            .get("contentType")
            .and_then(Value::as_str)
            .unwrap_or("text");
        let urgent = urgent(value);
        let op = operation(value);
        let priority = value
            .get("priority")
            .and_then(Value::as_str)
            .and_then(Priority::parse)
            .unwrap_or_default();
        let summary = value
            .get("summary")
            .and_then(Value::as_str)
            .map(str::to_string);
        self.check_addressing(&receiver, reply.as_ref(), urgent.is_some(), msg_type, &at)?;
        self.check_keyed(&receiver, &op, &at)?;
        if let Operation::Recall { .. } = op {
            // A recall names a message by its key; what it said no longer matters.
            return Ok(Envelope {
                receiver,
                msg_type: msg_type.to_string(),
                content: String::new(),
                urgent: None,
                reply,
                op,
                priority,
                summary,
            });
        }
        let content_path = at.of("/content");
        let (mut content_obj, mut content_str) = content(value, &content_path)?;
        self.check_content(msg_type, &content_obj, &content_path)?;
        if let (Operation::Upsert { key }, "interactive") = (&op, msg_type) {
            let updatable = make_updatable(&mut content_obj);
            if tag_callbacks(&mut content_obj, key) || updatable {
                content_str = content_obj.to_string();
            }
        }
        check_size(msg_type, &content_obj, &content_str, &content_path)?;
        Ok(Envelope {
            receiver,
            msg_type: msg_type.to_string(),
            content: content_str,
            urgent,
            reply,
            op,
            priority,
            summary,
        })
    }

    /// Whether a record may carry a `messageKey`: only through the app (a custom-bot webhook
    /// returns no message_id to update), and only with somewhere to keep the key's state.
    fn check_keyed(
        &self,
        receiver: &Receiver,
        op: &Operation,
        at: &Paths,
    ) -> Result<(), ValidationError> {
        let Some(key) = op.key() else { return Ok(()) };
        if matches!(receiver, Receiver::Webhook(_)) {
            return Err(single(format!(
                "{}: custom-bot webhooks cannot update or recall a message (Lark returns no message_id for them); send through the app to use messageKey '{key}'",
                at.of("/messageKey")
            )));
        }
        if !self.keys {
            return Err(single(format!(
                "{}: messageKey '{key}' needs lark.state.topic, the compacted topic that remembers which Lark message each key was sent as; it is not set",
                at.of("/messageKey")
            )));
        }
        Ok(())
    }

    /// What a reply, a buzz and a webhook message may be: the rules that span fields.
    fn check_addressing(
        &self,
        receiver: &Receiver,
        reply: Option<&ReplyTo>,
        urgent: bool,
        msg_type: &str,
        at: &Paths,
    ) -> Result<(), ValidationError> {
        let webhook = matches!(receiver, Receiver::Webhook(_));
        if let Some(r) = reply {
            if webhook {
                return Err(single(format!(
                    "{}: custom-bot webhooks cannot reply to a message (replyTo {}); reply through the app instead",
                    at.of("/replyTo"),
                    r.message_id
                )));
            }
            if msg_type == "system" {
                return Err(single(format!(
                    "{}: a system message cannot be a reply (lark-api.md §2.5: reply msg_types exclude system)",
                    at.of("/contentType")
                )));
            }
        }
        if urgent && webhook {
            return Err(single(format!(
                "{}: custom-bot webhook messages cannot be buzzed (Lark returns no message_id for them)",
                at.of("/urgent")
            )));
        }
        if let Receiver::Webhook(name) = receiver {
            if !self.webhooks.contains(name) {
                return Err(single(format!(
                    "{}: no webhook named '{name}' is configured (lark.webhooks.{name}.url){}",
                    at.of("/receiveId"),
                    if self.webhooks.is_empty() {
                        String::new()
                    } else {
                        format!("; configured: {}", self.webhooks.join(", "))
                    }
                )));
            }
            if !WEBHOOK_MSG_TYPES.contains(&msg_type) {
                return Err(single(format!(
                    "{}: a custom-bot webhook cannot send '{msg_type}' messages (only {})",
                    at.of("/contentType"),
                    WEBHOOK_MSG_TYPES.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The content object against its msg_type's schema.
    fn check_content(
        &self,
        msg_type: &str,
        content: &Value,
        content_path: &str,
    ) -> Result<(), ValidationError> {
        let Some(v) = self.content.get(msg_type) else {
            return Ok(());
        };
        let violations: Vec<String> = v
            .iter_errors(content)
            .map(|e| {
                // jsonschema's anyOf message ("… is not valid under any of the schemas")
                // names no field; a card's only anyOf is "which card form is this".
                let what = match e.kind() {
                    jsonschema::error::ValidationErrorKind::AnyOf { .. }
                        if msg_type == "interactive" =>
                    {
                        "not a card: card JSON needs elements, i18n_elements, body or header; a reference needs type template or card with data".to_string()
                    }
                    _ => e.to_string(),
                };
                violation(format!(
                    "{content_path}{}: {what} (contentType {msg_type})",
                    e.instance_path().as_str(),
                ))
            })
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { violations })
        }
    }
}

/// Reported JSON paths, prefixed with the element's index when the record was an array.
struct Paths(String);

impl Paths {
    /// `path` as reported: `/2/receiveId`, or `/` for the whole (unindexed) envelope.
    fn of(&self, path: &str) -> String {
        let p = format!("{}{path}", self.0);
        if p.is_empty() {
            "/".to_string()
        } else {
            p
        }
    }
}

/// `replyTo` and `replyInThread`.
fn reply_to(value: &Value) -> Option<ReplyTo> {
    let id = value.get("replyTo").and_then(Value::as_str)?;
    Some(ReplyTo {
        message_id: id.to_string(),
        in_thread: value
            .get("replyInThread")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// `messageKey` and `recall` → the operation (the schema has checked both, and that `recall`
/// comes with a key).
fn operation(value: &Value) -> Operation {
    let Some(key) = value.get("messageKey").and_then(Value::as_str) else {
        return Operation::Send;
    };
    let key = key.to_string();
    if value.get("recall").and_then(Value::as_bool) == Some(true) {
        Operation::Recall { key }
    } else {
        Operation::Upsert { key }
    }
}

/// Makes a keyed JSON 1.0 card updatable: Lark PATCHes a card only when `config.update_multi` is
/// true both as sent and as updated (lifecycle doc §1.1), and 1.0 defaults to false. JSON 2.0
/// cards (`"schema": "2.0"`) always are, and a template reference (`type` template or card)
/// carries no config of its own (the card builder's cards are always shared). Returns whether the
/// content changed.
fn make_updatable(card: &mut Value) -> bool {
    let Some(obj) = card.as_object_mut() else {
        return false;
    };
    if obj.contains_key("type") || obj.get("schema").and_then(Value::as_str) == Some("2.0") {
        return false;
    }
    let config = obj
        .entry("config")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(config) = config.as_object_mut() else {
        return false;
    };
    if config.get("update_multi") == Some(&Value::Bool(true)) {
        return false;
    }
    config.insert("update_multi".into(), Value::Bool(true));
    true
}

/// Puts a keyed card's `messageKey` into the callback value of each of its interactive components
/// ([`crate::lark::MESSAGE_KEY_IN_VALUE`]): a click then names the key (docs/user-guide.md
/// "Receiving events and clicks"). JSON 1.0: every component with a `tag` and an object `value`,
/// and every `button` without a `url` (a link button calls nothing back) gets one; JSON 2.0: every
/// `behaviors` entry of type `callback`. A value that already has the member is left alone, and a
/// template reference (no components of its own) is not touched. Returns whether anything changed.
fn tag_callbacks(card: &mut Value, key: &str) -> bool {
    if card.get("type").is_some() {
        return false;
    }
    let mut changed = false;
    tag_in(card, key, &mut changed);
    changed
}

fn tag_in(v: &mut Value, key: &str, changed: &mut bool) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(|i| tag_in(i, key, changed)),
        Value::Object(obj) => {
            let component = obj.get("tag").is_some_and(Value::is_string);
            let callback = obj.get("type").and_then(Value::as_str) == Some("callback");
            let link = obj.contains_key("url") || obj.contains_key("multi_url");
            let button = obj.get("tag").and_then(Value::as_str) == Some("button");
            if (component || callback)
                && (obj.get("value").is_some_and(Value::is_object) || (button && !link))
            {
                let value = obj
                    .entry("value")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(value) = value.as_object_mut() {
                    if !value.contains_key(crate::lark::MESSAGE_KEY_IN_VALUE) {
                        value.insert(
                            crate::lark::MESSAGE_KEY_IN_VALUE.into(),
                            Value::String(key.to_string()),
                        );
                        *changed = true;
                    }
                }
            }
            for (k, child) in obj.iter_mut() {
                if k != "value" {
                    tag_in(child, key, changed);
                }
            }
        }
        _ => {}
    }
}

/// `receiveType` and `receiveId` → the receiver (the schema has checked both).
fn receiver(value: &Value, reply: Option<&ReplyTo>) -> Receiver {
    let field = |k: &str| value.get(k).and_then(Value::as_str);
    let receive_id = field("receiveId").unwrap_or_default().to_string();
    match field("receiveType").unwrap_or("user") {
        // The schema allows a missing receiveId only with replyTo (lark-api.md §2.5: a
        // reply needs no receive_id); a webhook keeps its variant so the check below names it.
        rt if field("receiveId").is_none() && rt != "webhook" => {
            Receiver::Parent(reply.map(|r| r.message_id.clone()).unwrap_or_default())
        }
        "webhook" => Receiver::Webhook(receive_id),
        rt => match IdType::from_receive_type(rt) {
            Some(id_type) => Receiver::Id {
                id_type,
                id: receive_id,
            },
            None => Receiver::Phone(receive_id),
        },
    }
}

/// `urgent`, when present (the schema has checked its type and users).
fn urgent(value: &Value) -> Option<Urgent> {
    let u = value.get("urgent")?;
    Some(Urgent {
        kind: u
            .get("type")
            .and_then(Value::as_str)
            .and_then(UrgentKind::from_type)
            .unwrap_or_default(),
        user_ids: u
            .get("userIds")
            .and_then(Value::as_array)
            .map(|ids| {
                ids.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// `content` as an object and as the string Lark wants: a JSON object, or a string holding one.
fn content(value: &Value, content_path: &str) -> Result<(Value, String), ValidationError> {
    match value.get("content") {
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Ok((v, s.clone())),
            Ok(other) => Err(single(format!(
                "{content_path}: holds a JSON {}, expected a JSON object",
                super::decode::json_type(&other)
            ))),
            Err(e) => Err(single(format!(
                "{content_path}: is not a string holding JSON ({e})"
            ))),
        },
        Some(obj @ Value::Object(_)) => Ok((obj.clone(), obj.to_string())),
        _ => Err(single(format!("{content_path}: missing"))),
    }
}

/// Lark's size limits: the content string per msg_type, a system divider's text width.
fn check_size(
    msg_type: &str,
    content: &Value,
    content_str: &str,
    content_path: &str,
) -> Result<(), ValidationError> {
    if let Some(limit) = content_limit(msg_type) {
        if content_str.len() > limit {
            return Err(single(format!(
                "{content_path}: {} bytes exceeds the {} KiB limit for {msg_type} messages (Lark would answer 230025)",
                content_str.len(),
                limit / 1024
            )));
        }
    }
    if msg_type == "system" {
        // §2.4: divider text ≤ 20 characters, a CJK character counting two; the schema's
        // maxLength only counts characters.
        let text = content
            .pointer("/params/divider_text/text")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let width = text_width(text);
        if width > SYSTEM_TEXT_WIDTH {
            return Err(single(format!(
                "{content_path}/params/divider_text/text: {width} columns wide (CJK characters count two); Lark allows 20"
            )));
        }
    }
    Ok(())
}

/// System divider text limit (lark-api.md §2.4: "≤ 20 chars / 10 CJK").
const SYSTEM_TEXT_WIDTH: usize = 20;

/// Width as §2.4 counts it: wide East Asian characters (CJK, Hangul, full-width forms) count two.
/// The emulator has the same rule (`lark_emulator::content::text_width`); the connector keeps
/// its own copy so production validation never depends on the test double.
fn text_width(s: &str) -> usize {
    s.chars()
        .map(|c| match c as u32 {
            0x1100..=0x115F
            | 0x2E80..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x20000..=0x3FFFD => 2,
            _ => 1,
        })
        .sum()
}

/// The longest single violation, in bytes. Schema errors quote the failing value (a 900 KB
/// `receiveId`, 20 000 unknown keys); clipped, every failing path still fits in the reason.
const MAX_VIOLATION_BYTES: usize = 512;

fn violation(v: String) -> String {
    crate::dlq::clip(&v, MAX_VIOLATION_BYTES)
}

fn single(v: String) -> ValidationError {
    ValidationError {
        violations: vec![v],
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
