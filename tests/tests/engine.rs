//! The delivery engine against the real broker and the emulator with Lark's real limits: it runs
//! at the ceiling without a single throttle answer, keeps each receiver's order, isolates a failing
//! receiver, shares one app budget across instances, and pauses Kafka instead of buffering
//! without bound.

use std::collections::BTreeMap;
use std::time::Duration;

use lark_sink::emulator::Directory;
use lark_sink_e2e::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

fn generated(users: usize) -> EmulatorConfig {
    EmulatorConfig {
        directory: Directory::with_generated(users, 0),
        ..EmulatorConfig::default()
    }
}

/// Produces `per` messages to each of `receivers` generated users, keyed by receiver (so a
/// receiver's messages share a partition), interleaved across receivers.
async fn produce(s: &Scenario, receivers: usize, per: usize) -> usize {
    for n in 0..per {
        for r in 0..receivers {
            let receiver = format!("ou_gen_{r}");
            let v = json!({"receiveId": receiver, "content": {"text": format!("{receiver}#{n}")}});
            s.send_keyed(&receiver, &v).await;
        }
    }
    receivers * per
}

fn assert_no_throttling(lark: &EmulatorHandle) {
    let st = lark.stats();
    assert_eq!(
        (
            st.throttled_app,
            st.throttled_receiver,
            st.throttled_webhook
        ),
        (0, 0, 0),
        "Lark had to throttle: {st:?}"
    );
    assert!(st.errors_by_code.is_empty(), "error answers: {st:?}");
}

/// For every receiver, the order Lark accepted its messages equals their Kafka offset order.
fn assert_per_receiver_order(lark: &EmulatorHandle) {
    let mut by_receiver: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    for m in lark.messages() {
        let (p, o, _) = m
            .uuid
            .as_deref()
            .and_then(uuid_coordinates)
            .expect("lark-sink uuid");
        by_receiver
            .entry(m.receive_id.clone())
            .or_default()
            .push((p, o));
    }
    for (r, coords) in by_receiver {
        let mut sorted = coords.clone();
        sorted.sort();
        assert_eq!(
            coords, sorted,
            "receiver {r} got its messages out of offset order"
        );
        assert!(
            coords.windows(2).all(|w| w[0].0 == w[1].0),
            "keyed by receiver: one partition"
        );
    }
}

fn assert_each_once(lark: &EmulatorHandle, total: usize) {
    let msgs = lark.messages();
    let uuids: std::collections::BTreeSet<&str> =
        msgs.iter().filter_map(|m| m.uuid.as_deref()).collect();
    assert_eq!(
        (msgs.len(), uuids.len()),
        (total, total),
        "every message exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_receivers_at_full_speed_see_no_throttling_and_keep_order() {
    let s = Scenario::with_emulator("speed", 4, generated(20)).await;
    let total = produce(&s, 20, 10).await;
    let mut c = Connector::start(&s.strict_config());
    wait_until("all delivered", WAIT, || s.lark.messages().len() >= total).await;
    assert_each_once(&s.lark, total);
    assert_no_throttling(&s.lark);
    assert_per_receiver_order(&s.lark);
    assert_eq!(c.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_always_fails_does_not_delay_the_others() {
    let mut emu = generated(10);
    emu.faults.failing_receivers = vec!["ou_gen_0".into()];
    let s = Scenario::with_emulator("failing", 1, emu).await;
    // The failing receiver's record comes first in the only partition.
    s.send(&json!({"receiveId": "ou_gen_0", "content": {"text": "stuck"}}))
        .await;
    for n in 0..3 {
        for r in 1..10 {
            s.send(&json!({"receiveId": format!("ou_gen_{r}"), "content": {"text": format!("{r}#{n}")}})).await;
        }
    }
    let mut cfg = s.strict_config();
    cfg["config"]["errors.retry.timeout"] = json!("-1");
    let mut c = Connector::start(&cfg);
    wait_until("the 27 other messages delivered", WAIT, || {
        s.lark.messages().len() >= 27
    })
    .await;
    assert!(s.lark.messages().iter().all(|m| m.receive_id != "ou_gen_0"));
    assert!(
        s.lark.stats().faults_injected >= 2,
        "the failing receiver is being retried"
    );
    // Its record is unfinished, so nothing past it may be committed.
    assert!(
        s.committed()[0] <= 0,
        "committed {:?} past the unfinished record",
        s.committed()
    );

    s.lark.set_fault_config(FaultConfig::default());
    wait_until("the stuck message delivered", WAIT, || {
        s.lark.messages().len() >= 28
    })
    .await;
    wait_until("everything committed", WAIT, || s.committed() == vec![28]).await;
    assert_per_receiver_order(&s.lark);
    assert_eq!(c.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_in_one_group_share_the_app_budget() {
    let s = Scenario::with_emulator("pair", 4, generated(40)).await;
    let cfg = s.strict_config();
    let mut a = Connector::start(&cfg);
    wait_until("instance A assigned", WAIT, || {
        a.logs().contains("partitions assigned")
    })
    .await;
    let mut b = Connector::start(&cfg);
    wait_until("both instances at half the budget", WAIT, || {
        a.logs().contains("share=0.5") && b.logs().contains("share=0.5")
    })
    .await;
    let total = produce(&s, 40, 5).await;
    wait_until("all delivered", WAIT, || s.lark.messages().len() >= total).await;
    assert_each_once(&s.lark, total);
    assert_no_throttling(&s.lark);
    assert_per_receiver_order(&s.lark);
    assert!(
        a.logs().contains("delivered") && b.logs().contains("delivered"),
        "both instances worked"
    );
    assert_eq!(a.stop(), Some(0));
    assert_eq!(b.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_beyond_the_buffer_pauses_and_resumes_kafka_without_loss() {
    let s = Scenario::with_emulator("backlog", 1, generated(2)).await;
    // Two receivers at 5/s each drain 10 messages/s; the buffer holds 20.
    let total = produce(&s, 2, 50).await;
    let mut cfg = s.strict_config();
    cfg["config"]["buffer.max.messages"] = json!("20");
    // Draining to half takes about a second here; the default 1 s before pausing (records wait in
    // librdkafka's queue meanwhile) would never be reached. 200 ms exercises both steps.
    cfg["config"]["buffer.pause.after.ms"] = json!("200");
    let mut c = Connector::start(&cfg);
    wait_until("all delivered", WAIT, || s.lark.messages().len() >= total).await;
    let logs = c.logs();
    let paused = logs.matches("partitions paused").count();
    let resumed = logs.matches("partitions resumed").count();
    assert!(
        paused >= 2 && resumed >= 2,
        "paused {paused}×, resumed {resumed}×:\n{logs}"
    );
    // Never more buffered than the bound (plus what librdkafka had already fetched).
    for line in logs.lines().filter(|l| l.contains("partitions paused")) {
        let n: usize = line
            .split("messages=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("messages= in the pause line");
        assert!(n <= 20 + 2, "{line}");
    }
    assert_each_once(&s.lark, total);
    assert_no_throttling(&s.lark);
    assert_per_receiver_order(&s.lark);
    wait_until("everything committed", WAIT, || {
        s.committed() == vec![total as i64]
    })
    .await;
    assert_eq!(c.stop(), Some(0));
}
