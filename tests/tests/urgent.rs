//! Urgent (buzz) messages end to end: the buzz follows the message with its message_id, skipped
//! users are reported, and a refused buzz is dead-lettered without holding anything up.

use std::time::Duration;

use lark_sink_e2e::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_buzz_follows_the_message_and_failures_are_reported() {
    let s = Scenario::new("urgent", 1).await;
    // A group message buzzing two users in the app; one id is not a member.
    s.send(
        &json!({"receiveType": "chat", "receiveId": "oc_ops", "content": {"text": "db down"},
        "urgent": {"type": "app", "userIds": ["ou_alice", "ou_nobody"]}}),
    )
    .await;
    // A direct message to Bob buzzing Carol by phone: she is not in that chat, so Lark refuses
    // the whole buzz (230001); the message itself is delivered.
    s.send(
        &json!({"receiveType": "user", "receiveId": "ou_bob", "content": {"text": "p1"},
        "urgent": {"type": "phone", "userIds": ["ou_carol"]}}),
    )
    .await;
    s.send(&json!({"receiveId": "ou_alice", "content": {"text": "after"}}))
        .await;
    let mut c = Connector::start(&s.config());

    wait_until("3 messages and 1 buzz", WAIT, || {
        s.lark.messages().len() == 3 && s.lark.urgents().len() == 1
    })
    .await;
    let msgs = s.lark.messages();
    let urgents = s.lark.urgents();
    let ops = msgs
        .iter()
        .find(|m| m.receive_id == "oc_ops")
        .expect("group message");
    assert_eq!(
        urgents[0].message_id, ops.message_id,
        "the buzz names the delivered message"
    );
    assert_eq!(
        (urgents[0].kind.as_str(), urgents[0].user_ids.clone()),
        ("app", vec!["ou_alice".to_string()])
    );
    wait_until("skipped user reported", WAIT, || {
        c.logs().contains("ou_nobody")
    })
    .await;

    let dead = s.dead_letters(1, WAIT);
    assert_eq!(dead.len(), 1, "{}", c.logs());
    let d = &dead[0];
    let bob = msgs
        .iter()
        .find(|m| m.receive_id == "ou_bob")
        .expect("direct message delivered");
    assert_eq!(d.header("__connect.errors.class.name"), "urgent-F-rec");
    assert_eq!(d.header("__connect.errors.lark.code"), "230001");
    assert!(
        d.header("__connect.errors.exception.message")
            .contains(&bob.message_id),
        "{d:#?}"
    );
    wait_until("all committed", WAIT, || s.committed() == vec![3]).await;
    assert_eq!(c.stop(), Some(0));
}
