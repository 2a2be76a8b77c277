//! The records the demo's alerting system produces: the samples (good and bad on purpose) and
//! the keyed alert's versions, whose card the responder renders too.

use serde_json::json;

use super::{ACK_BUTTON, ALERT_CHAT, ALERT_KEY, ALERT_NAME};

/// The sample records: what an alerting pipeline produces, plus the mistakes it sometimes makes.
pub fn sample_records() -> Vec<(&'static str, String)> {
    let text = |t: &str| json!({"text": t});
    let card = json!({
        "header": {"template": "red", "title": {"tag": "plain_text", "content": "Disk full on db-7"}},
        "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": "**/var** at 99%"}}]
    });
    let ok = |v: serde_json::Value| v.to_string();
    vec![
        (
            "text to a user by open_id",
            ok(
                json!({"receiveType": "user", "receiveId": "ou_alice", "contentType": "text", "content": text("[P1] api-gw: 5xx rate 12%")}),
            ),
        ),
        (
            "text to a user by email",
            ok(
                json!({"receiveType": "email", "receiveId": "bob@example.com", "content": text("[P2] backup finished late")}),
            ),
        ),
        (
            "post to a group chat",
            ok(
                json!({"receiveType": "chat", "receiveId": "oc_ops", "contentType": "post", "content": {"en_us": {"title": "Deploy finished", "content": [[{"tag": "text", "text": "billing v1.4.2 is live"}]]}}}),
            ),
        ),
        (
            "text to a user by phone (looked up)",
            ok(
                json!({"receiveType": "phone", "receiveId": "+8613800000001", "content": text("[P1] on-call page: checkout latency")}),
            ),
        ),
        (
            "array record: card to a chat + text to a user",
            ok(json!([
                {"receiveType": "chat", "receiveId": "oc_team", "contentType": "interactive", "content": card},
                {"receiveType": "union_id", "receiveId": "on_bob", "content": "{\"text\":\"db-7 disk alert sent to #team\"}"}
            ])),
        ),
        (
            "text to a user by user_id",
            ok(
                json!({"receiveType": "user_id", "receiveId": "alice", "content": text("[P3] weekly report ready")}),
            ),
        ),
        (
            "BAD: not JSON",
            r#"{"receiveId": "ou_alice", "content": "#.to_string(),
        ),
        (
            "BAD: schema violation",
            ok(json!({"receiveType": "fax", "receiveId": "", "content": text("x")})),
        ),
        (
            "BAD: oversize card",
            ok(
                json!({"receiveType": "chat", "receiveId": "oc_ops", "contentType": "interactive", "content": {"elements": [{"tag": "markdown", "content": "x".repeat(40_000)}]}}),
            ),
        ),
        (
            "BAD: bot is not in the chat (Lark 230002)",
            ok(
                json!({"receiveType": "chat", "receiveId": "oc_outside", "content": text("hello?")}),
            ),
        ),
        (
            "BAD: user outside the app's availability (Lark 230013)",
            ok(json!({"receiveType": "user", "receiveId": "ou_carol", "content": text("hello?")})),
        ),
        (
            "BAD: unknown phone number",
            ok(
                json!({"receiveType": "phone", "receiveId": "+15550000000", "content": text("hello?")}),
            ),
        ),
    ]
}

/// The alert of the demo's keyed message: the same `messageKey` twice, firing (a red card with
/// the Acknowledge button) and resolved (a green card). The demo produces the second once the
/// first is in Lark and the responder's acknowledgement (a third version, made from the click) is
/// too, so each is an update of that card (versions waiting together would coalesce into the
/// newest).
pub fn lifecycle_records() -> [(&'static str, String); 2] {
    [
        (
            "alert card, firing (messageKey, Acknowledge button)",
            alert_record(
                ALERT_KEY,
                ALERT_CHAT,
                &headline("FIRING"),
                "red",
                "p99 latency **2.4 s** (SLO 800 ms)",
                true,
            ),
        ),
        (
            "the same alert resolved: updates its card",
            alert_record(
                ALERT_KEY,
                ALERT_CHAT,
                &headline("RESOLVED"),
                "green",
                "p99 latency back to **310 ms**",
                false,
            ),
        ),
    ]
}

/// The title of the alert's card in `status`.
pub(super) fn headline(status: &str) -> String {
    format!("[{status}] {ALERT_NAME} on checkout-1")
}

/// A version of the alert's card as a record value: keyed `key`, to the chat `chat`, with the
/// Acknowledge button (a JSON 1.0 button with an object `value` and no `url` calls back) when
/// `button`. The alerting system and the responder both render the alert with it.
pub(super) fn alert_record(
    key: &str,
    chat: &str,
    title: &str,
    template: &str,
    text: &str,
    button: bool,
) -> String {
    let mut elements = vec![json!({"tag": "div", "text": {"tag": "lark_md", "content": text}})];
    if button {
        elements.push(json!({"tag": "action", "actions": [{
            "tag": "button", "type": "primary",
            "text": {"tag": "plain_text", "content": ACK_BUTTON},
            "value": {"action": "ack"}
        }]}));
    }
    json!({
        "receiveType": "chat", "receiveId": chat, "contentType": "interactive",
        "messageKey": key,
        "content": {
            "header": {"template": template, "title": {"tag": "plain_text", "content": title}},
            "elements": elements
        }
    })
    .to_string()
}
