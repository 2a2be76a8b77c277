//! What the emulator remembers about a message after it was sent, for the update, edit and
//! recall endpoints (`/work/shared/lark-api-lifecycle.md` §1, §6 items 1-3 and 6): its current
//! type and content, timestamps, edit and patch counts, the recalled / deleted flags and the
//! history of its versions; plus the card facts PATCH checks (`update_multi`, the JSON 2.0
//! element count).
//!
//! Why a history: a test of "the alert card was updated in place" must see *which* contents the
//! message went through, in order, not only the last one.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a version of a message came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionOp {
    /// The original send (or reply, or webhook push).
    Send,
    /// `PATCH /open-apis/im/v1/messages/{id}`: a card update (lifecycle §1.1).
    Patch,
    /// `PUT /open-apis/im/v1/messages/{id}`: a text / post edit (lifecycle §1.2).
    Put,
    /// The `card` of a card callback's answer: the immediate update of the clicked card
    /// (lifecycle §2.5).
    Callback,
}

/// One version of a message: what it showed from `at_ms` on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MessageVersion {
    /// What made this version.
    pub op: VersionOp,
    /// The message's type (the same in every version: an edit cannot change it).
    pub msg_type: String,
    /// The parsed content object (for a card, the card JSON).
    pub content: Value,
    /// The emulator's clock (wall clock plus [`crate::EmulatorHandle::advance_clock`]), ms.
    pub at_ms: u64,
}

/// A message as it stands now, with its history: `GET /_emulator/messages/{message_id}` and
/// [`crate::EmulatorHandle::message_view`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MessageView {
    /// The `om_…` id the send answered.
    pub message_id: String,
    /// The sending app; `None` for a webhook message.
    pub app_id: Option<String>,
    /// The current type (an edit cannot change it; lifecycle §1.2).
    pub msg_type: String,
    /// The current content (the last version's).
    pub content: Value,
    /// Recalled by `DELETE` or by [`crate::EmulatorHandle::recall`]: later PATCH / PUT get 230011.
    pub recalled: bool,
    /// Marked deleted by [`crate::EmulatorHandle::mark_deleted`]: later calls get 230110.
    pub deleted: bool,
    /// Successful PUTs (20 allowed, lifecycle §1.2: then 230072), or the value a test set.
    pub edit_count: u32,
    /// Successful PATCHes that changed the content.
    pub patch_count: u32,
    /// Emulator clock at send, ms.
    pub create_time_ms: u64,
    /// Emulator clock at the last applied change (= `create_time_ms` until one), ms.
    pub update_time_ms: u64,
    /// Every version, oldest (the send) first.
    pub versions: Vec<MessageVersion>,
}

/// What PATCH does when the stored card or the new one is not a shared card (`update_multi` not
/// true): lifecycle §1.1 and §7 item 1 leave the real answer UNCONFIRMED, so it is a switch
/// ([`crate::EmulatorConfig::unshared_card_update`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsharedCardUpdate {
    /// 230001 with `ext=` naming update_multi (the default: a client bug should be loud).
    #[default]
    Reject,
    /// Code 0, but the content is not applied (what the card FAQ describes: the card does not
    /// refresh). Counted in [`crate::Stats::patches_not_applied`].
    Ignore,
}

/// The lifecycle part of a stored message (kept beside the send record in `state.rs`).
#[derive(Debug, Clone)]
pub(crate) struct Lifecycle {
    pub msg_type: String,
    /// The current content string as the client sent it (send, PATCH or PUT body).
    pub content_raw: String,
    pub create_ms: u64,
    pub update_ms: u64,
    pub edit_count: u32,
    pub patch_count: u32,
    pub deleted: bool,
    pub versions: Vec<MessageVersion>,
}

impl Lifecycle {
    /// The record of a freshly sent message.
    pub fn sent(msg_type: &str, content_raw: String, content: Value, at_ms: u64) -> Self {
        Self {
            msg_type: msg_type.to_string(),
            content_raw,
            create_ms: at_ms,
            update_ms: at_ms,
            edit_count: 0,
            patch_count: 0,
            deleted: false,
            versions: vec![MessageVersion {
                op: VersionOp::Send,
                msg_type: msg_type.to_string(),
                content,
                at_ms,
            }],
        }
    }

    /// Apply a new version (a PATCH or a PUT that passed every check, a callback's card).
    pub fn apply(&mut self, op: VersionOp, content_raw: String, content: Value, at_ms: u64) {
        self.content_raw = content_raw;
        self.update_ms = at_ms;
        match op {
            VersionOp::Patch => self.patch_count += 1,
            VersionOp::Put => self.edit_count += 1,
            VersionOp::Send | VersionOp::Callback => {}
        }
        self.versions.push(MessageVersion {
            op,
            msg_type: self.msg_type.clone(),
            content,
            at_ms,
        });
    }

    /// The current parsed content.
    pub fn content(&self) -> Value {
        self.versions
            .last()
            .map(|v| v.content.clone())
            .unwrap_or(Value::Null)
    }
}

/// Whether a card may be updated by PATCH (lifecycle §1.1, §1.5): `config.update_multi` is
/// `true`, or the card is JSON 2.0 (where it defaults to, and can only be, true). A template
/// reference counts as shared: its config lives in the card builder, which the emulator does
/// not model (emulator choice).
pub fn is_shared_card(card: &Value) -> bool {
    if card.get("type").and_then(Value::as_str) == Some("template") {
        return true;
    }
    if is_schema_v2(card) {
        return true;
    }
    card.pointer("/config/update_multi")
        .and_then(Value::as_bool)
        == Some(true)
}

/// `"schema": "2.0"` (lifecycle §1.5).
pub fn is_schema_v2(card: &Value) -> bool {
    card.get("schema").and_then(Value::as_str) == Some("2.0")
}

/// Lifecycle §1.1: cards can be updated for 14 days after sending (PATCH: 230031; a callback's
/// card has no effect after that, §2.5).
pub const UPDATE_WINDOW_MS: u64 = 14 * 24 * 60 * 60 * 1000;

/// JSON 2.0's cap on elements / components per card (lifecycle §1.5, 230099 `ErrCode: 11310`).
pub const V2_MAX_ELEMENTS: usize = 200;

/// The components of a JSON 2.0 card: every object with a `tag` under `body`, at any depth
/// (containers such as `column_set` count, and so does what they hold).
pub fn v2_element_count(card: &Value) -> usize {
    fn walk(v: &Value) -> usize {
        match v {
            Value::Object(m) => {
                usize::from(m.contains_key("tag")) + m.values().map(walk).sum::<usize>()
            }
            Value::Array(a) => a.iter().map(walk).sum(),
            _ => 0,
        }
    }
    card.get("body").map_or(0, walk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shared_cards() {
        assert!(is_shared_card(
            &json!({"config": {"update_multi": true}, "elements": []})
        ));
        assert!(!is_shared_card(
            &json!({"config": {"update_multi": false}, "elements": []})
        ));
        assert!(!is_shared_card(&json!({"elements": []})));
        assert!(is_shared_card(
            &json!({"schema": "2.0", "body": {"elements": []}})
        ));
        assert!(is_shared_card(
            &json!({"type": "template", "data": {"template_id": "A"}})
        ));
    }

    #[test]
    fn v2_elements_are_counted_at_any_depth() {
        let card = json!({"schema": "2.0", "header": {"tag": "ignored"}, "body": {"elements": [
            {"tag": "markdown", "content": "a"},
            {"tag": "column_set", "columns": [{"tag": "column", "elements": [{"tag": "button"}]}]}
        ]}});
        assert_eq!(v2_element_count(&card), 4);
    }

    #[test]
    fn versions_accumulate() {
        let mut l = Lifecycle::sent("text", "{}".into(), json!({"text": "a"}), 10);
        l.apply(VersionOp::Put, "{}".into(), json!({"text": "b"}), 20);
        assert_eq!((l.edit_count, l.patch_count, l.update_ms), (1, 0, 20));
        assert_eq!(l.content(), json!({"text": "b"}));
        assert_eq!(l.versions.len(), 2);
    }
}
