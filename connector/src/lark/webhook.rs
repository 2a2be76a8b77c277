//! Custom-bot webhooks (lark-api.md §8): a webhook's settings, the request body in the webhook's
//! own shape, and its signature.
//!
//! A webhook wants `content` as an object (not a string), a card under a top-level `card`, a post
//! wrapped in `{"post": ...}` and `share_chat_id` instead of `chat_id`; envelopes keep Lark's
//! send-API shapes, so the same record can go to a chat through the app or through a bot. When the
//! bot has a signing secret, the body carries `timestamp` (Unix seconds) and
//! `sign = Base64(HMAC-SHA256(key = timestamp + "\n" + secret, message = empty))`.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::secret::Secret;

/// One custom-bot webhook (`lark.webhooks.<name>.*`, lark-api.md §8).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The full hook URL (`…/open-apis/bot/v2/hook/<token>`). A credential: it ends in the hook
    /// token, so `Debug` shows only what comes before the token.
    pub url: String,
    /// The signing secret ("签名校验"), when the bot has one.
    pub secret: Option<Secret>,
}

impl WebhookConfig {
    /// The URL without its last path segment (the hook token): `https://h/open-apis/bot/v2/hook/***`.
    fn masked_url(&self) -> String {
        match self.url.rsplit_once('/') {
            Some((base, _token)) => format!("{base}/***"),
            None => "***".to_string(),
        }
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.masked_url())
            .field("secret", &self.secret)
            .finish()
    }
}

/// The §8 signature for `timestamp` (seconds).
pub fn sign(secret: &str, timestamp: i64) -> String {
    let key = format!("{timestamp}\n{secret}");
    match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        // HMAC takes keys of any length; the error arm cannot happen, and an empty signature
        // would only be refused by Lark (19021), never sent as a wrong secret.
        Ok(mac) => base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()),
        Err(_) => String::new(),
    }
}

/// The webhook body for a validated message (`content` is the content object).
pub fn body(msg_type: &str, content: &Value, signature: Option<(i64, String)>) -> Value {
    let mut body = match msg_type {
        "interactive" => json!({"msg_type": "interactive", "card": content}),
        "post" => json!({"msg_type": "post", "content": {"post": content}}),
        "share_chat" => json!({
            "msg_type": "share_chat",
            "content": {"share_chat_id": content.get("chat_id").cloned().unwrap_or(Value::Null)},
        }),
        // text and image keep their content object as is.
        other => json!({"msg_type": other, "content": content}),
    };
    if let (Some((ts, sign)), Some(obj)) = (signature, body.as_object_mut()) {
        obj.insert("timestamp".into(), Value::String(ts.to_string()));
        obj.insert("sign".into(), Value::String(sign));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_spec_test_vector() {
        // lark-api.md §8: secret `demo`, timestamp 1599360473.
        assert_eq!(
            sign("demo", 1599360473),
            "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8="
        );
    }

    #[test]
    fn bodies_take_the_webhook_shapes() {
        let text = body("text", &json!({"text": "hi"}), None);
        assert_eq!(text, json!({"msg_type": "text", "content": {"text": "hi"}}));
        let card = body("interactive", &json!({"elements": []}), None);
        assert_eq!(
            card,
            json!({"msg_type": "interactive", "card": {"elements": []}})
        );
        let post = body("post", &json!({"zh_cn": {"content": []}}), None);
        assert_eq!(post["content"]["post"]["zh_cn"]["content"], json!([]));
        let share = body("share_chat", &json!({"chat_id": "oc_1"}), None);
        assert_eq!(share["content"], json!({"share_chat_id": "oc_1"}));
        let signed = body(
            "text",
            &json!({"text": "x"}),
            Some((1599360473, sign("demo", 1599360473))),
        );
        assert_eq!(signed["timestamp"], "1599360473");
        assert_eq!(
            signed["sign"],
            "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8="
        );
    }
}
