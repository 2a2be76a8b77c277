//! Restoring keyed-message state on assignment (`lark.state.topic`, docs/reliability.md G8): the
//! restore runs beside the consumer loop with only its source partitions paused, so the other
//! partitions keep flowing, the group's rebalances are served meanwhile, and a record of the
//! restoring partition waits for its state and then updates its message in place. Real broker,
//! the emulator over HTTP, the real binary; the state topic is filled through the library.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lark_sink::state::{Changelog, StateEntry, StateKey};
use lark_sink_e2e::*;
use serde_json::{json, Value};
use tokio::task::JoinSet;

const WAIT: Duration = Duration::from_secs(120);

/// The `kafka.*` settings of the test broker.
fn kafka() -> BTreeMap<String, String> {
    BTreeMap::from([("bootstrap.servers".to_string(), broker())])
}

/// A scenario's config with a state topic of its own, and a 45 s group session (librdkafka's
/// default; the harness's 6 s is for tests that kill brokers): the test broker, an unoptimised
/// build, answers heartbeats seconds late while it serves a restore's fetches at full CPU (a 25k
/// key restore took 36 s on a loaded 2-core CI run), and a short session then times out on the
/// broker's side, not the connector's.
fn keyed_config(s: &Scenario) -> (Value, String) {
    let state = unique(&format!("{}-state", s.topic));
    let mut cfg = s.config();
    cfg["config"]["lark.state.topic"] = json!(state);
    cfg["config"]["kafka.session.timeout.ms"] = json!("45000");
    (cfg, state)
}

/// Fetches of at most 256 KiB, for a test that needs another partition to flow while a restore
/// reads: the test broker answers a fetch with up to `fetch.max.bytes` (capped at 5 MiB, ignoring
/// `max.partition.fetch.bytes`) read in one storage request, and it serves one storage request
/// at a time, so a restore's first fetch (a 15k-key partition is 3.8 MB) kept the main
/// consumer's fetch of the other partition waiting until the whole partition was read.
/// `message.max.bytes` goes down with it: librdkafka wants `fetch.max.bytes` at least as large.
/// A real Kafka broker serves the two consumers' connections side by side. (Smaller fetches make
/// the test broker's restores slower, as it answers each fetch after half of
/// `fetch.wait.max.ms`; the measurement below keeps the defaults.)
fn fair_fetches(cfg: &mut Value) {
    for key in [
        "kafka.max.partition.fetch.bytes",
        "kafka.fetch.max.bytes",
        "kafka.message.max.bytes",
    ] {
        cfg["config"][key] = json!("262144");
    }
}

/// Version `v` of the text alert `key` to the ops chat.
fn alert(key: &str, v: usize) -> Value {
    json!({"receiveType": "chat", "receiveId": "oc_ops", "messageKey": key,
           "content": {"text": format!("[FIRING] {key} v{v}")}})
}

/// Writes `n` entries of other alerts (keys that no record names) to state partition
/// `partition`, 5000 in flight at a time; returns how long it took.
async fn fill(state_topic: &str, partition: i32, n: usize) -> Duration {
    let log = Arc::new(Changelog::new(&kafka(), state_topic.to_string()).expect("changelog"));
    log.ensure_topic(&kafka(), 1)
        .await
        .expect("the state topic");
    let started = Instant::now();
    let mut set = JoinSet::new();
    for k in 0..n {
        let key = StateKey::new(
            format!("chat_id:oc_{:032x}", k % 500),
            format!("filler-{partition}-{k}"),
        );
        let e = StateEntry {
            message_id: format!("om_{k:032x}"),
            msg_type: "interactive".into(),
            chat_id: Some(format!("oc_{:032x}", k % 500)),
            sent_ms: now_ms(),
            updated_ms: now_ms(),
            edits: 0,
        };
        let log = log.clone();
        set.spawn(async move { log.write(partition, &key, Some(&e)).await });
        if set.len() >= 5_000 {
            while let Some(done) = set.join_next().await {
                done.expect("write task").expect("acknowledged write");
            }
        }
    }
    while let Some(done) = set.join_next().await {
        done.expect("write task").expect("acknowledged write");
    }
    started.elapsed()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The one message in Lark whose text names `key`, with how often it was edited.
fn the_message(lark: &EmulatorHandle, key: &str) -> (String, u32) {
    let found: Vec<AcceptedMessage> = lark
        .messages()
        .into_iter()
        .filter(|m| {
            m.content
                .get("text")
                .and_then(Value::as_str)
                .is_some_and(|t| t.contains(&format!("{key} ")))
        })
        .collect();
    assert_eq!(found.len(), 1, "{key}: one message in Lark: {found:#?}");
    let view = lark.message_view(&found[0].message_id).expect("view");
    let text = view
        .content
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    (text, view.edit_count)
}

/// The value of a gauge in a `/metrics` text.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A partition's state takes seconds to restore (15k keys): meanwhile the other partition's
/// records are delivered and the restoring partition waits (paused, its record held), then its
/// keyed record updates the message in place. One restore per assignment, never begun again
/// within one: on a loaded CI machine the test broker can answer heartbeats late enough for the
/// group to rebalance once meanwhile (same member, same partitions), which is allowed and must
/// not lose or repeat anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_holds_back_only_its_own_partitions() {
    const FILLER: usize = 15_000;
    let s = Scenario::new("restore", 2).await;
    let (mut cfg, state) = keyed_config(&s);
    fair_fetches(&mut cfg);
    // The alert is sent once, by a first instance.
    let mut a = Connector::start(&cfg);
    s.send_to(0, &alert("alert-0", 0)).await;
    wait_until("v0 sent", WAIT, || s.committed()[0] == 1).await;
    assert_eq!(a.stop(), Some(0));
    // Its state partition grows to 15k keys; then its next version, and plain texts on the
    // other partition.
    let filled = fill(&state, 0, FILLER).await;
    s.send_to(0, &alert("alert-0", 1)).await;
    for i in 0..10 {
        let user = ["ou_alice", "ou_bob"][i % 2];
        s.send_to(
            1,
            &json!({"receiveId": user, "content": {"text": format!("plain {i}")}}),
        )
        .await;
    }
    let mut b = Connector::start(&cfg);
    let admin = Admin::of(&b).await;
    // The gauge shows the restoring partition while it lasts (seconds; polled every 50 ms).
    let deadline = Instant::now() + WAIT;
    while gauge(
        &admin.metrics().await,
        "lark_sink_state_restoring_partitions",
    ) != Some(1.0)
    {
        assert!(Instant::now() < deadline, "never restoring: {}", b.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until("all committed", WAIT, || s.committed() == vec![2, 10]).await;
    // Then the held record updated the message in place: the state was there.
    assert_eq!(
        the_message(&s.lark, "alert-0"),
        ("[FIRING] alert-0 v1".into(), 1)
    );
    let metrics = admin.metrics().await;
    assert_eq!(
        gauge(&metrics, "lark_sink_state_restoring_partitions"),
        Some(0.0)
    );
    let logs = b.logs();
    let restores = logs.matches("messageKey: restoring state").count();
    let assignments = logs.matches("partitions assigned").count();
    assert!(
        restores >= 1 && restores <= assignments,
        "one restore per assignment at most ({restores} restores, {assignments} assignments): {logs}"
    );
    // The connector's own log gives the order (no race with the test's polling): partition 1
    // was delivered from while partition 0 was still being restored, and partition 0's record
    // updated its message only once its state was there.
    let line_of = |what: &dyn Fn(&str) -> bool, name: &str| -> (usize, String) {
        logs.lines()
            .enumerate()
            .find(|(_, l)| what(l))
            .map(|(i, l)| (i, l.to_string()))
            .unwrap_or_else(|| panic!("{name} in the log: {logs}"))
    };
    let (restored_at, restored) = line_of(
        &|l| {
            l.contains("messageKey: state restored") && l.contains(&format!("keys={}", FILLER + 1))
        },
        "partition 0 restored with all its keys",
    );
    let (plain_at, _) = line_of(
        &|l| l.contains("delivered record=") && l.contains(&format!("{}-1@", s.topic)),
        "a delivery from partition 1",
    );
    let (updated_at, _) = line_of(
        &|l| l.contains("keyed message landed") && l.contains(&format!("{}-0@1 ", s.topic)),
        "partition 0's update",
    );
    assert!(
        plain_at < restored_at,
        "partition 1 flowed during the restore: {logs}"
    );
    assert!(
        restored_at < updated_at,
        "the update waited for its state: {logs}"
    );
    eprintln!("filled {FILLER} keys in {filled:?}; {restored}");
    assert_eq!(b.stop(), Some(0));
}

/// A measurement, not a check of speed (run by hand: `cargo test -p lark-sink-e2e --test restore
/// -- --ignored --nocapture`): 100k keys in each of two state partitions; one instance restores
/// both at start, a second joins (the group rebalances; it restores the partition it is given,
/// the first keeps the other without restoring it) and leaves again (the first restores the
/// partition back). Every restore happens once, the group stays stable through it, and each
/// partition's keyed record then updates its message in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_restore_after_rebalance_100k() {
    const KEYS: usize = 100_000;
    let s = Scenario::new("restore-100k", 2).await;
    let (cfg, state) = keyed_config(&s);
    let mut a = Connector::start(&cfg);
    s.send_to(0, &alert("alert-0", 0)).await;
    s.send_to(1, &alert("alert-1", 0)).await;
    wait_until("v0 sent", WAIT, || s.committed() == vec![1, 1]).await;
    assert_eq!(a.stop(), Some(0));
    for p in 0..2 {
        let took = fill(&state, p, KEYS).await;
        eprintln!("state partition {p}: {KEYS} keys written in {took:?}");
    }
    let restores = |c: &Connector| -> Vec<String> {
        c.logs()
            .lines()
            .filter(|l| l.contains("messageKey: state restored"))
            .map(str::to_string)
            .collect()
    };
    let started = Instant::now();
    let mut a = Connector::start(&cfg);
    wait_until("A restored both", Duration::from_secs(300), || {
        restores(&a).len() == 2
    })
    .await;
    eprintln!(
        "A at start, {:?} after launch: {:#?}",
        started.elapsed(),
        restores(&a)
    );
    let joined = Instant::now();
    let mut b = Connector::start(&cfg);
    wait_until("B restored its partition", Duration::from_secs(300), || {
        restores(&b).len() == 1
    })
    .await;
    eprintln!(
        "B joined, {:?} after launch: {:#?}",
        joined.elapsed(),
        restores(&b)
    );
    s.send_to(0, &alert("alert-0", 1)).await;
    s.send_to(1, &alert("alert-1", 1)).await;
    wait_until("v1 committed", WAIT, || s.committed() == vec![2, 2]).await;
    for k in ["alert-0", "alert-1"] {
        let (text, edits) = the_message(&s.lark, k);
        assert_eq!((text, edits), (format!("[FIRING] {k} v1"), 1));
    }
    assert_eq!(
        restores(&a).len(),
        2,
        "A kept its partition without restoring it"
    );
    assert_eq!(
        b.logs().matches("partitions assigned").count(),
        1,
        "{}",
        b.logs()
    );
    let left = Instant::now();
    assert_eq!(b.stop(), Some(0));
    wait_until(
        "A restored the partition back",
        Duration::from_secs(300),
        || restores(&a).len() == 3,
    )
    .await;
    eprintln!("B left, {:?} later: {}", left.elapsed(), restores(&a)[2]);
    s.send_to(0, &alert("alert-0", 2)).await;
    s.send_to(1, &alert("alert-1", 2)).await;
    wait_until("v2 committed", WAIT, || s.committed() == vec![3, 3]).await;
    for k in ["alert-0", "alert-1"] {
        let (text, edits) = the_message(&s.lark, k);
        assert_eq!((text, edits), (format!("[FIRING] {k} v2"), 2));
    }
    assert_eq!(a.stop(), Some(0));
}
