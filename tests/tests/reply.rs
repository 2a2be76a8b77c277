//! Replies end to end (lark-api.md §2.5): a record with `replyTo` is delivered through the reply
//! endpoint into the parent's chat, in a thread when asked, and buzzed with the reply's own
//! message_id; replies Lark refuses (unknown or recalled parent) and replies that cannot exist
//! (through a webhook, of msg_type system) are dead-lettered with a reason, and nothing stalls.

use std::time::Duration;

use lark_sink_e2e::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_by_message_id_in_threads_and_refusals() {
    let s = Scenario::new("reply", 1).await;
    let mut cfg = s.config();
    cfg["config"]["lark.webhooks.ops.token"] = json!("hook-plain");
    let mut c = Connector::start(&cfg);

    // Two parents: one to reply to, one that will be recalled.
    s.send(&json!({"receiveType": "chat", "receiveId": "oc_ops", "content": {"text": "root"}}))
        .await;
    s.send(&json!({"receiveType": "chat", "receiveId": "oc_team", "content": {"text": "doomed"}}))
        .await;
    wait_until("both parents delivered", WAIT, || {
        s.lark.messages().len() == 2
    })
    .await;
    let by_text = |t: &str| {
        s.lark
            .messages()
            .into_iter()
            .find(|m| m.content["text"] == t)
            .unwrap_or_else(|| panic!("no message {t:?}"))
    };
    let root = by_text("root").message_id;
    let doomed = by_text("doomed").message_id;
    assert!(s.lark.recall(&doomed));

    let records = [
        // 2: a plain reply, no receiveId: it goes to the parent's chat.
        json!({"replyTo": root, "content": {"text": "plain reply"}}),
        // 3: a thread reply with a receiveId (the queue key) and an urgent buzz.
        json!({"receiveType": "chat", "receiveId": "oc_ops", "replyTo": root, "replyInThread": true,
               "content": {"text": "thread reply"}, "urgent": {"type": "app", "userIds": ["ou_alice"]}}),
        // 4: the parent does not exist → Lark 230001, dead-lettered.
        json!({"replyTo": "om_0000doesnotexist", "content": {"text": "orphan"}}),
        // 5: the parent was recalled → 230011, dead-lettered.
        json!({"replyTo": doomed, "content": {"text": "too late"}}),
        // 6: webhooks cannot reply → validation.
        json!({"receiveType": "webhook", "receiveId": "ops", "replyTo": root, "content": {"text": "hook"}}),
        // 7: system messages cannot be replies → validation.
        json!({"receiveId": "ou_alice", "replyTo": root, "contentType": "system",
               "content": {"type": "divider", "params": {"divider_text": {"text": "new"}}}}),
        // 8: an ordinary message after all that.
        json!({"receiveId": "ou_alice", "content": {"text": "after"}}),
    ];
    for r in &records {
        s.send(r).await;
    }
    wait_until("all 9 records committed", WAIT, || s.committed() == vec![9]).await;

    let plain = by_text("plain reply");
    assert_eq!(plain.receive_id_type, "message_id");
    assert_eq!(plain.receive_id, root);
    assert_eq!(
        plain.chat_id, "oc_ops",
        "a reply lands in its parent's chat"
    );
    assert_eq!(plain.parent_id.as_deref(), Some(root.as_str()));
    assert_eq!(plain.root_id.as_deref(), Some(root.as_str()));
    assert_eq!(plain.thread_id, None);
    assert_eq!(
        plain.uuid.as_deref().and_then(uuid_coordinates),
        Some((0, 2, 0)),
        "the reply carries the send path's deterministic uuid"
    );

    let thread = by_text("thread reply");
    assert_eq!(thread.parent_id.as_deref(), Some(root.as_str()));
    assert!(
        thread
            .thread_id
            .as_deref()
            .is_some_and(|t| t.starts_with("omt_")),
        "{thread:?}"
    );
    let urgents = s.lark.urgents();
    assert_eq!(urgents.len(), 1, "{urgents:?}");
    assert_eq!(
        urgents[0].message_id, thread.message_id,
        "the buzz names the reply, not its parent"
    );
    assert_eq!(by_text("after").receive_id, "ou_alice");
    assert!(s.lark.messages().iter().all(
        |m| !["orphan", "too late", "hook"].contains(&m.content["text"].as_str().unwrap_or(""))
    ));

    let dead = s.dead_letters(4, WAIT);
    assert_eq!(dead.len(), 4, "{}", c.logs());
    let by_offset = |o: i64| {
        dead.iter()
            .find(|d| d.header("__connect.errors.offset") == o.to_string())
            .unwrap_or_else(|| panic!("no dead letter for offset {o}: {dead:#?}"))
    };
    let orphan = by_offset(4);
    assert_eq!(orphan.header("__connect.errors.stage"), "TASK_PUT");
    assert_eq!(orphan.header("__connect.errors.lark.code"), "230001");
    assert!(orphan
        .header("__connect.errors.exception.message")
        .contains("invalid message_id"));
    assert_eq!(
        orphan.header("__connect.errors.lark.receiver"),
        "reply_to:om_0000doesnotexist"
    );
    let recalled = by_offset(5);
    assert_eq!(recalled.header("__connect.errors.lark.code"), "230011");
    assert_eq!(recalled.header("__connect.errors.class.name"), "F-rec");
    let hook = by_offset(6);
    assert_eq!(hook.header("__connect.errors.stage"), "VALIDATION");
    assert!(
        hook.header("__connect.errors.exception.message")
            .contains("webhooks cannot reply"),
        "{hook:#?}"
    );
    let system = by_offset(7);
    assert_eq!(system.header("__connect.errors.stage"), "VALIDATION");
    assert!(system
        .header("__connect.errors.exception.message")
        .contains("system message cannot be a reply"));
    // The dead letter keeps the original bytes.
    let original: Value =
        serde_json::from_slice(system.value.as_deref().unwrap_or_default()).expect("original JSON");
    assert_eq!(original, records[5]);
    assert_eq!(c.stop(), Some(0));
}
