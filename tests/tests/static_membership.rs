//! Static group membership (KIP-345) through the `kafka.*` passthrough: a connector with
//! `kafka.group.instance.id` that is SIGKILLed and restarted under the same id takes its
//! partitions back at once, instead of waiting for the dead member's session to time out.
//!
//! Why it is tested: it is how an operator avoids the pause after every restart of a deployment
//! (a rolling restart, a crashed pod), and earlier tansu findings had left it untested
//! (docs/testing.md#the-test-broker). With a dynamic member the restart waits for the killed
//! member's session (`kafka.session.timeout.ms`, 30 s here) before the group rebalances; the
//! test requires the restarted static member to deliver well within half of that, which a
//! broker that ignores the instance id cannot do. The margin is a behaviour boundary (a rebalance
//! that waits for the session or none), not a speed target.

use std::time::{Duration, Instant};

use lark_sink_e2e::*;
use serde_json::{json, Value};

const PARTITIONS: i32 = 3;
const SESSION: Duration = Duration::from_secs(30);
const BATCH: usize = 30;

async fn send_batch(s: &Scenario, from: usize) {
    for i in from..from + BATCH {
        // Receivers the emulator's default directory knows.
        let receiver = ["ou_alice", "ou_bob", "oc_ops"][i % 3];
        s.send(&json!({"receiveType": if receiver.starts_with("oc_") { "chat" } else { "user" }, "receiveId": receiver, "content": {"text": format!("static-{i}")}}))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_static_member_resumes_without_waiting_for_its_session() {
    let s = Scenario::new("static", PARTITIONS).await;
    let mut cfg: Value = s.config();
    cfg["config"]["kafka.group.instance.id"] = json!(format!("{}-0", s.name));
    cfg["config"]["kafka.session.timeout.ms"] = json!(SESSION.as_millis().to_string());

    send_batch(&s, 0).await;
    let mut c = Connector::start(&cfg);
    wait_until("the first batch delivered", Duration::from_secs(60), || {
        s.lark.messages().len() >= BATCH
    })
    .await;
    c.kill();

    send_batch(&s, BATCH).await;
    let restarted = Instant::now();
    let mut c = Connector::start(&cfg);
    wait_until("the second batch delivered", SESSION * 3, || {
        s.lark.messages().len() >= 2 * BATCH
    })
    .await;
    let resumed = restarted.elapsed();
    assert!(
        resumed < SESSION / 2,
        "the restarted static member took {resumed:?} to deliver the second batch: the group \
         waited for the killed member's session ({SESSION:?}) as for a dynamic member\n{}",
        c.logs()
    );
    assert_eq!(c.stop(), Some(0));
    assert_eq!(
        s.lark.messages().len(),
        2 * BATCH,
        "each record exactly once in Lark"
    );
    eprintln!("restarted static member delivered the second batch after {resumed:?}");
}
