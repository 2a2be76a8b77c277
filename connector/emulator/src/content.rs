//! Message content checks: is `content` the right shape for its `msg_type`, and small enough?
//!
//! Two dialects exist (lark-api.md §2.4 vs §8): `im/v1/messages` takes `content` as a JSON
//! **string** whose object is the bare shape (post = locale map), while custom-bot webhooks take
//! `content` as an **object** (post wrapped in `{"post":…}`, share_chat as `share_chat_id`,
//! cards in a top-level `card`). Mixing the dialects up is the most common client bug, so the
//! checks here are deliberately strict about the outer shape and lenient about the inside
//! (unknown card fields pass; we are not a card renderer).

use serde_json::{Map, Value};

/// `msg_type` values accepted by `im/v1/messages` (§2.4).
pub const SEND_MSG_TYPES: &[&str] = &[
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

/// `msg_type` values accepted by custom-bot webhooks (§8).
pub const WEBHOOK_MSG_TYPES: &[&str] = &["text", "post", "image", "share_chat", "interactive"];

/// Text content limit, in bytes of the `content` string (§2.4: 150 KB).
pub const TEXT_LIMIT: usize = 150 * 1024;
/// Post and card content limit (§2.4: 30 KB).
pub const POST_CARD_LIMIT: usize = 30 * 1024;

/// Post node tags (§2.4).
const POST_TAGS: &[&str] = &[
    "text",
    "a",
    "at",
    "img",
    "media",
    "emotion",
    "hr",
    "code_block",
    "md",
];

/// Why a send's content was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("invalid msg_type")]
    UnknownMsgType,
    #[error("content cannot be empty")]
    Empty,
    /// `reason` is for logs only; the wire text is fixed (§3, 230001).
    #[error("invalid message content. validate content fail ({reason})")]
    Invalid { reason: String },
    #[error("content of {size} bytes exceeds the {limit}-byte limit for this msg_type")]
    TooLong { size: usize, limit: usize },
}

/// Why a webhook body was refused (§8).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookContentError {
    /// → 19002.
    #[error("missing or unknown msg_type")]
    MsgType,
    /// → 9499.
    #[error("bad content: {0}")]
    Bad(String),
}

type Check = Result<(), String>;

fn invalid(reason: impl Into<String>) -> ContentError {
    ContentError::Invalid {
        reason: reason.into(),
    }
}

/// Validate an `im/v1/messages` `content` string for `msg_type`; returns the parsed object.
pub fn check_send(msg_type: &str, content: &str) -> Result<Value, ContentError> {
    if !SEND_MSG_TYPES.contains(&msg_type) {
        return Err(ContentError::UnknownMsgType);
    }
    if content.trim().is_empty() {
        return Err(ContentError::Empty);
    }
    let value: Value =
        serde_json::from_str(content).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| invalid("content is not a JSON object"))?;
    match msg_type {
        "text" => require_str(obj, "text"),
        "post" => check_post_locales(obj),
        "image" => require_str(obj, "image_key"),
        "file" | "audio" | "sticker" => require_str(obj, "file_key"),
        "media" => require_str(obj, "file_key").and_then(|_| optional_str(obj, "image_key")),
        "interactive" => check_card(obj),
        "share_chat" => require_str(obj, "chat_id"),
        "share_user" => require_str(obj, "user_id"),
        "system" => check_system(obj),
        _ => Err("unreachable msg_type".into()),
    }
    .map_err(invalid)?;
    // Limits are on the serialized content (§2.4, 230025).
    let limit = match msg_type {
        "text" => Some(TEXT_LIMIT),
        "post" | "interactive" => Some(POST_CARD_LIMIT),
        _ => None,
    };
    if let Some(limit) = limit {
        if content.len() > limit {
            return Err(ContentError::TooLong {
                size: content.len(),
                limit,
            });
        }
    }
    Ok(value)
}

/// Validate a webhook body (already parsed); returns `(msg_type, content)` where content is
/// the `content` object, or the `card` object for interactive messages.
pub fn check_webhook(body: &Map<String, Value>) -> Result<(String, Value), WebhookContentError> {
    let msg_type = body
        .get("msg_type")
        .and_then(Value::as_str)
        .filter(|t| WEBHOOK_MSG_TYPES.contains(t))
        .ok_or(WebhookContentError::MsgType)?;
    let bad = WebhookContentError::Bad;
    if msg_type == "interactive" {
        let card = body
            .get("card")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("interactive needs a top-level card object".into()))?;
        check_card(card).map_err(bad)?;
        return Ok((msg_type.to_string(), Value::Object(card.clone())));
    }
    let content = body
        .get("content")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("content must be a JSON object".into()))?;
    match msg_type {
        "text" => require_str(content, "text"),
        "post" => require_obj(content, "post").and_then(|_| match content.get("post") {
            Some(Value::Object(locales)) => check_post_locales(locales),
            _ => Err("post must be an object".into()),
        }),
        "image" => require_str(content, "image_key"),
        "share_chat" => require_str(content, "share_chat_id"),
        _ => Err("unreachable msg_type".into()),
    }
    .map_err(bad)?;
    Ok((msg_type.to_string(), Value::Object(content.clone())))
}

/// The human-readable strings a keyword check looks at (§8: text and titles, not hrefs):
/// every string under a `text`, `title` or `content` key, at any depth.
pub fn keyword_texts(content: &Value) -> Vec<&str> {
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("text" | "title" | "content", Value::String(s)) => out.push(s),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(content, &mut out);
    out
}

fn require_str(obj: &Map<String, Value>, key: &str) -> Check {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        Some(Value::String(_)) => Err(format!("`{key}` is empty")),
        Some(_) => Err(format!("`{key}` must be a string")),
        None => Err(format!("missing `{key}`")),
    }
}

fn optional_str(obj: &Map<String, Value>, key: &str) -> Check {
    match obj.get(key) {
        None | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn require_obj(obj: &Map<String, Value>, key: &str) -> Check {
    match obj.get(key) {
        Some(Value::Object(_)) => Ok(()),
        _ => Err(format!("`{key}` must be an object")),
    }
}

/// System divider text limit: 20 columns, a CJK character taking two (§2.4: "≤ 20 chars / 10
/// CJK").
pub const SYSTEM_TEXT_WIDTH: usize = 20;

/// Display width as §2.4 counts it: CJK (and other wide East Asian) characters count two.
pub fn text_width(s: &str) -> usize {
    s.chars()
        .map(|c| {
            let wide = matches!(c as u32,
                0x1100..=0x115F | 0x2E80..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF
                | 0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 | 0x20000..=0x3FFFD);
            if wide {
                2
            } else {
                1
            }
        })
        .sum()
}

/// `{"type":"divider","params":{"divider_text":{"text":…}}}` (§2.4).
fn check_system(obj: &Map<String, Value>) -> Check {
    require_str(obj, "type")?;
    let text = obj
        .get("params")
        .and_then(|p| p.get("divider_text"))
        .and_then(|d| d.get("text"))
        .and_then(Value::as_str)
        .ok_or("system messages need params.divider_text.text")?;
    if text_width(text) > SYSTEM_TEXT_WIDTH {
        return Err(format!(
            "divider text is wider than {SYSTEM_TEXT_WIDTH} (CJK counts two)"
        ));
    }
    Ok(())
}

/// `{"zh_cn":{"title":…,"content":[[node…]…]}, …}` (§2.4). Locale keys must look like `xx_yy`
/// so the webhook form `{"post":{…}}` sent to the API is caught.
fn check_post_locales(locales: &Map<String, Value>) -> Check {
    if locales.is_empty() {
        return Err("post needs at least one locale".into());
    }
    for (locale, body) in locales {
        let looks_like_locale = locale.len() == 5
            && locale.as_bytes()[2] == b'_'
            && locale
                .chars()
                .enumerate()
                .all(|(i, c)| i == 2 || c.is_ascii_alphabetic());
        if !looks_like_locale {
            return Err(format!("`{locale}` is not a locale key"));
        }
        let body = body
            .as_object()
            .ok_or_else(|| format!("locale `{locale}` must be an object"))?;
        optional_str(body, "title")?;
        let paragraphs = body
            .get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("locale `{locale}` needs a `content` array"))?;
        for paragraph in paragraphs {
            let nodes = paragraph
                .as_array()
                .ok_or("post paragraphs must be arrays of nodes")?;
            for node in nodes {
                check_post_node(node)?;
            }
        }
    }
    Ok(())
}

fn check_post_node(node: &Value) -> Check {
    let node = node.as_object().ok_or("post nodes must be objects")?;
    let tag = node
        .get("tag")
        .and_then(Value::as_str)
        .ok_or("post node without `tag`")?;
    if !POST_TAGS.contains(&tag) {
        return Err(format!("unknown post tag `{tag}`"));
    }
    match tag {
        "text" | "code_block" | "md" => require_str_allow_empty(node, "text"),
        "a" => require_str_allow_empty(node, "text").and_then(|_| require_str(node, "href")),
        "at" => require_str(node, "user_id"),
        "img" => require_str(node, "image_key"),
        "media" => require_str(node, "file_key"),
        "emotion" => require_str(node, "emoji_type"),
        _ => Ok(()), // hr
    }
}

fn require_str_allow_empty(obj: &Map<String, Value>, key: &str) -> Check {
    match obj.get(key) {
        Some(Value::String(_)) => Ok(()),
        _ => Err(format!("`{key}` must be a string")),
    }
}

/// Card JSON 1.0 / 2.0, a template reference, or a card-entity reference (§2.4, §8).
fn check_card(card: &Map<String, Value>) -> Check {
    match card.get("type").and_then(Value::as_str) {
        Some("template") => {
            let data = card
                .get("data")
                .and_then(Value::as_object)
                .ok_or("template card needs a `data` object")?;
            require_str(data, "template_id")?;
            optional_str(data, "template_version_name")
        }
        Some("card") => {
            let data = card
                .get("data")
                .and_then(Value::as_object)
                .ok_or("card reference needs a `data` object")?;
            require_str(data, "card_id")
        }
        _ => {
            const CARD_KEYS: &[&str] = &["elements", "i18n_elements", "body", "header"];
            if CARD_KEYS.iter().any(|k| card.contains_key(*k)) {
                Ok(())
            } else {
                Err("card JSON needs elements, body or header".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn send(t: &str, v: Value) -> Result<Value, ContentError> {
        check_send(t, &v.to_string())
    }

    #[test]
    fn valid_send_contents() {
        assert!(send("text", json!({"text": "hi"})).is_ok());
        let post = json!({"en_us": {"title": "T", "content": [[
            {"tag": "text", "text": "a"}, {"tag": "a", "text": "l", "href": "https://x"}],
            [{"tag": "at", "user_id": "ou_x"}], [{"tag": "hr"}]]}});
        assert!(send("post", post).is_ok());
        assert!(send("image", json!({"image_key": "img_1"})).is_ok());
        assert!(send("media", json!({"file_key": "f"})).is_ok());
        let card =
            json!({"header": {"title": {"tag": "plain_text", "content": "x"}}, "elements": []});
        assert!(send("interactive", card).is_ok());
        let tpl = json!({"type": "template", "data": {"template_id": "AAq"}});
        assert!(send("interactive", tpl).is_ok());
        assert!(send("share_chat", json!({"chat_id": "oc_x"})).is_ok());
    }

    #[test]
    fn invalid_send_contents() {
        assert_eq!(check_send("text", ""), Err(ContentError::Empty));
        assert_eq!(check_send("bogus", "{}"), Err(ContentError::UnknownMsgType));
        assert!(matches!(
            check_send("text", "not json"),
            Err(ContentError::Invalid { .. })
        ));
        assert!(matches!(
            send("text", json!({"txt": "hi"})),
            Err(ContentError::Invalid { .. })
        ));
        // The webhook dialect of post is wrong for the API.
        let wrapped = json!({"post": {"zh_cn": {"content": [[{"tag": "text", "text": "a"}]]}}});
        assert!(matches!(
            send("post", wrapped),
            Err(ContentError::Invalid { .. })
        ));
        assert!(matches!(
            send("interactive", json!({"foo": 1})),
            Err(ContentError::Invalid { .. })
        ));
    }

    #[test]
    fn size_limits() {
        let big = "x".repeat(POST_CARD_LIMIT);
        let card = json!({"elements": [{"tag": "markdown", "content": big}]});
        assert!(matches!(
            send("interactive", card),
            Err(ContentError::TooLong {
                limit: POST_CARD_LIMIT,
                ..
            })
        ));
        // The same length is fine as text (150 KB).
        assert!(send("text", json!({ "text": "x".repeat(POST_CARD_LIMIT) })).is_ok());
    }

    #[test]
    fn webhook_dialect() {
        let ok = |v: Value| check_webhook(v.as_object().expect("object"));
        assert!(ok(json!({"msg_type": "text", "content": {"text": "hi"}})).is_ok());
        assert!(
            ok(json!({"msg_type": "post", "content": {"post": {"zh_cn": {"content": []}}}}))
                .is_ok()
        );
        assert!(
            ok(json!({"msg_type": "share_chat", "content": {"share_chat_id": "oc_1"}})).is_ok()
        );
        assert!(ok(json!({"msg_type": "interactive", "card": {"elements": []}})).is_ok());
        assert_eq!(
            ok(json!({"content": {"text": "hi"}})),
            Err(WebhookContentError::MsgType)
        );
        // String content is the API dialect, wrong here.
        assert!(matches!(
            ok(json!({"msg_type": "text", "content": "{\"text\":\"hi\"}"})),
            Err(WebhookContentError::Bad(_))
        ));
    }

    #[test]
    fn keyword_texts_skip_hrefs() {
        let v = json!({"post": {"zh_cn": {"title": "Deploy", "content": [[
            {"tag": "a", "text": "link", "href": "https://alert.example"}]]}}});
        let texts = keyword_texts(&v);
        assert!(texts.contains(&"Deploy") && texts.contains(&"link"));
        assert!(!texts.iter().any(|t| t.contains("alert")));
    }
}
