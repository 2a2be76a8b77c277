//! Storm control (docs/user-guide.md "Storms"): `priority` orders each receiver's queue (high
//! first, the order of records kept within a priority and within a key), and never holds up
//! another receiver. Real broker, the emulator over HTTP at Lark's per-chat limit, the real
//! binary.

use std::time::Duration;

use lark_sink_e2e::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

/// 20 normal texts to one chat, then a high one, 5 low and 5 more normal, all produced before the
/// connector starts: the high one overtakes every waiting normal (it is delivered second or third,
/// whatever was in hand when it was read), the lows go last, and each priority keeps its order.
/// A second chat's messages, produced last, are not held up behind the first chat's queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_overtakes_a_receivers_waiting_messages() {
    let s = Scenario::new("storm-priority", 1).await;
    let text = |chat: &str, t: String, priority: &str| json!({"receiveType": "chat", "receiveId": chat, "priority": priority, "content": {"text": t}});
    let mut produced = 0;
    for i in 0..20 {
        s.send(&text("oc_ops", format!("n{i:02}"), "normal")).await;
        produced += 1;
    }
    s.send(&text("oc_ops", "HIGH".into(), "high")).await;
    for i in 0..5 {
        s.send(&text("oc_ops", format!("l{i}"), "low")).await;
    }
    for i in 0..5 {
        // No priority field: normal.
        s.send(&json!({"receiveType": "chat", "receiveId": "oc_ops", "content": {"text": format!("m{i}")}}))
            .await;
    }
    s.send(&text("oc_team", "other chat".into(), "low")).await;
    produced += 12;
    let mut c = Connector::start(&s.config());
    wait_until("all committed", WAIT, || {
        s.committed() == vec![produced as i64]
    })
    .await;
    let texts = s.texts();
    let ops: Vec<&str> = texts
        .iter()
        .map(String::as_str)
        .filter(|t| *t != "other chat")
        .collect();
    assert_eq!(ops.len(), 31, "{texts:?}");
    let high = ops.iter().position(|t| *t == "HIGH").expect("the high one");
    assert!(
        high <= 2,
        "the high message overtook the waiting ones: {ops:?}"
    );
    let normals: Vec<&str> = ops
        .iter()
        .copied()
        .filter(|t| t.starts_with('n') || t.starts_with('m'))
        .collect();
    let mut want: Vec<String> = (0..20).map(|i| format!("n{i:02}")).collect();
    want.extend((0..5).map(|i| format!("m{i}")));
    assert_eq!(normals, want, "normal order kept");
    assert_eq!(
        &ops[26..],
        ["l0", "l1", "l2", "l3", "l4"],
        "lows last: {ops:?}"
    );
    // The other chat's message went out long before the first chat's queue drained (its
    // position among all accepted messages, not a time).
    let other = texts
        .iter()
        .position(|t| t == "other chat")
        .expect("other chat");
    assert!(other < 10, "another receiver was held up: {texts:?}");
    assert_eq!(c.stop(), Some(0));
}
