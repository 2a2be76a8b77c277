//! The message-state changelog (`lark_sink::state::Changelog`) against the real broker: a
//! workload of sends, updates, recalls (tombstones) and re-sends across partitions is restored
//! partition by partition exactly as written (last value per key, tombstones removing), bad
//! records are skipped and counted, the topic is created compacted, and an existing topic is
//! kept as it is. The library is driven directly (no connector process): what is under test is
//! the topic, not the sink's use of it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lark_sink::state::{state_partition, Changelog, MessageStates, StateEntry, StateKey};
use lark_sink_e2e::{broker, create_topic, topic_configs, unique, Producer};
use tokio::task::JoinSet;

/// The `kafka.*` settings of the test broker.
fn kafka() -> BTreeMap<String, String> {
    BTreeMap::from([("bootstrap.servers".to_string(), broker())])
}

fn entry(id: String, sent_ms: i64, edits: u32) -> StateEntry {
    StateEntry {
        message_id: id,
        msg_type: "interactive".into(),
        chat_id: Some("oc_ops".into()),
        sent_ms,
        updated_ms: sent_ms + i64::from(edits),
        edits,
    }
}

/// One changelog write: state partition, key, entry (`None` = tombstone).
type Write = (i32, StateKey, Option<StateEntry>);

/// One round of the workload: what it does, and to which keys.
type Step = (&'static str, fn(usize) -> bool);

/// Keys of the workload: receivers and message keys with the characters a naive key encoding
/// would trip on.
fn key(k: usize) -> StateKey {
    let receivers = [
        "chat_id:oc_ops",
        "open_id:ou_a",
        "email:a\"b@example.com",
        "chat_id:oc_,\"x\"]",
    ];
    StateKey::new(receivers[k % receivers.len()], format!("alert-{k}-警报"))
}

/// The workload, in rounds: within a round every key is written at most once (so a round's
/// writes may run concurrently), and rounds run in order. 400 keys over 6 source partitions and
/// 4 state partitions: sends, updates, recalls, re-sends after a recall, more updates: 1072 writes.
fn workload(state_partitions: i32) -> Vec<Vec<Write>> {
    let keys = 400;
    let part = |k: usize| state_partition((k % 6) as i32, state_partitions);
    let mut live: HashMap<usize, StateEntry> = HashMap::new();
    let mut rounds = Vec::new();
    let steps: [Step; 6] = [
        ("send", |_| true),
        ("update", |k| k % 2 == 0),
        ("recall", |k| k % 5 == 0),
        ("update", |k| k % 3 == 0),
        ("recall", |k| k % 7 == 0),
        ("update", |k| k % 4 == 1 || k % 4 == 3),
    ];
    for (round, (what, picks)) in steps.iter().enumerate() {
        let mut writes = Vec::new();
        for k in (0..keys).filter(|&k| picks(k)) {
            let value = match (*what, live.get(&k)) {
                ("recall", _) => None,
                ("update", Some(e)) => Some(entry(e.message_id.clone(), e.sent_ms, e.edits + 1)),
                // A send, or an update of a recalled key: a new message.
                _ => Some(entry(format!("om_{k}_{round}"), 1_000 * round as i64, 0)),
            };
            match &value {
                Some(e) => live.insert(k, e.clone()),
                None => live.remove(&k),
            };
            writes.push((part(k), key(k), value));
        }
        rounds.push(writes);
    }
    rounds
}

/// Runs the rounds, each round's writes concurrently; returns the expected state per partition
/// and how many records each partition got.
async fn write_all(
    log: &Arc<Changelog>,
    rounds: Vec<Vec<Write>>,
) -> (
    BTreeMap<i32, HashMap<StateKey, StateEntry>>,
    BTreeMap<i32, i64>,
) {
    let mut expected: BTreeMap<i32, HashMap<StateKey, StateEntry>> = BTreeMap::new();
    let mut written: BTreeMap<i32, i64> = BTreeMap::new();
    for round in rounds {
        let mut set = JoinSet::new();
        for (p, k, v) in round {
            *written.entry(p).or_default() += 1;
            let map = expected.entry(p).or_default();
            match &v {
                Some(e) => map.insert(k.clone(), e.clone()),
                None => map.remove(&k),
            };
            let log = log.clone();
            set.spawn(async move { log.write(p, &k, v.as_ref()).await });
        }
        while let Some(done) = set.join_next().await {
            done.expect("write task").expect("acknowledged write");
        }
    }
    (expected, written)
}

#[tokio::test]
async fn a_partition_restores_as_written_and_the_topic_is_compacted_and_reused() {
    let topic = unique("state");
    let log = Arc::new(Changelog::new(&kafka(), topic.clone()).expect("changelog"));
    let made = log.ensure_topic(&kafka(), 4).await.expect("topic");
    assert!(made.created, "{made:?}");
    assert_eq!((made.partitions, log.partitions()), (4, 4));
    assert_eq!(made.cleanup_policy.as_deref(), Some("compact"));
    // Independently of the module: the broker has the topic compacted.
    assert_eq!(
        topic_configs(&topic)
            .await
            .get("cleanup.policy")
            .map(String::as_str),
        Some("compact")
    );

    let rounds = workload(4);
    assert!(rounds.iter().map(Vec::len).sum::<usize>() >= 1000);
    let (mut expected, mut written) = write_all(&log, rounds).await;

    // Two records lark-sink never writes, in partition 0: a key that is not a state key, and a
    // value that is not an entry (which forgets its key: its state is unknown).
    let victim = expected[&0]
        .keys()
        .next()
        .cloned()
        .expect("a live key in 0");
    let victim_key = String::from_utf8(victim.to_bytes()).unwrap();
    let producer = Producer::new();
    producer
        .send(&topic, Some(0), Some("not-a-state-key"), b"{}", &[])
        .await;
    producer
        .send(&topic, Some(0), Some(&victim_key), b"{\"v\":1,", &[])
        .await;
    expected.get_mut(&0).unwrap().remove(&victim);
    *written.get_mut(&0).unwrap() += 2;

    let states = MessageStates::new();
    for p in 0..4 {
        let r = log.restore(p).await.expect("restore");
        assert_eq!(r.partition, p);
        assert_eq!(r.high_watermark, written[&p], "partition {p}");
        assert!(
            r.entries == expected[&p],
            "partition {p}: restored entries differ"
        );
        assert_eq!(r.bad, if p == 0 { 2 } else { 0 }, "partition {p}");
        // The broker may compact meanwhile: fewer records, never fewer than the live keys.
        assert!(r.records <= written[&p] as u64, "partition {p}: {r:?}");
        assert!(r.records >= r.entries.len() as u64 + r.bad);
        states.load(p, r.entries);
    }
    let live: usize = expected.values().map(HashMap::len).sum();
    assert!((150..400).contains(&live), "{live}");
    assert_eq!(states.len(), live);
    assert_eq!(states.get(&victim), None);
    assert_eq!(states.get(&key(0)), None, "key 0 was recalled");
    assert_eq!(
        states.get(&key(1)).map(|e| e.edits),
        Some(1),
        "key 1: sent, then updated once (round 5)"
    );

    // One pass over all four, by a second instance on the existing topic: the same state.
    let again = Changelog::new(&kafka(), topic.clone()).expect("changelog");
    let kept = again.ensure_topic(&kafka(), 8).await.expect("topic");
    assert!(!kept.created);
    assert_eq!((kept.partitions, again.partitions()), (4, 4));
    assert_eq!(kept.cleanup_policy.as_deref(), Some("compact"));
    let all = again
        .restore_all(&[3, 0, 1, 2, 1])
        .await
        .expect("restore all");
    assert_eq!(all.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    for (p, r) in all {
        assert!(r.entries == expected[&p], "partition {p} in one pass");
    }
}

#[tokio::test]
async fn an_existing_topic_is_kept_as_it_is() {
    let topic = unique("state-existing");
    create_topic(&topic, 3).await;
    let log = Changelog::new(&kafka(), topic.clone()).expect("changelog");
    let found = log.ensure_topic(&kafka(), 6).await.expect("topic");
    assert!(!found.created);
    assert_eq!((found.partitions, log.partitions()), (3, 3));
    // Created by someone else without compaction: used as it is (the module warns).
    assert_ne!(found.cleanup_policy.as_deref(), Some("compact"));
    assert_ne!(
        topic_configs(&topic)
            .await
            .get("cleanup.policy")
            .map(String::as_str),
        Some("compact")
    );
    // An empty partition restores at once, empty.
    let empty = log.restore(2).await.expect("restore");
    assert_eq!(
        (empty.entries.len(), empty.records, empty.high_watermark),
        (0, 0, 0)
    );
    let k = StateKey::new("chat_id:oc_1", "alert-1");
    let e = entry("om_1".into(), 5, 0);
    log.write(2, &k, Some(&e)).await.expect("write");
    let one = log.restore(2).await.expect("restore");
    assert_eq!(one.entries, HashMap::from([(k.clone(), e)]));
    log.write(2, &k, None).await.expect("tombstone");
    let none = log.restore(2).await.expect("restore");
    assert_eq!(
        (none.entries.len(), none.records, none.tombstones),
        (0, 2, 1)
    );
}

/// A measurement, not a check: how long restoring 100k keys of one partition takes, and how big
/// that partition is. `cargo test -p lark-sink-e2e --test state -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn measure_restore_of_100k_keys() {
    let topic = unique("state-100k");
    let log = Arc::new(Changelog::new(&kafka(), topic.clone()).expect("changelog"));
    log.ensure_topic(&kafka(), 1).await.expect("topic");
    let keys = 100_000;
    let started = Instant::now();
    let mut bytes = 0usize;
    let mut pairs = Vec::with_capacity(keys);
    let mut set = JoinSet::new();
    for k in 0..keys {
        let key = StateKey::new(format!("chat_id:oc_{:032x}", k % 500), format!("alert-{k}"));
        let e = StateEntry {
            message_id: format!("om_{k:032x}"),
            msg_type: "interactive".into(),
            chat_id: Some(format!("oc_{:032x}", k % 500)),
            sent_ms: 1_764_000_000_000 + k as i64,
            updated_ms: 1_764_000_000_000 + k as i64,
            edits: 0,
        };
        let (kb, vb) = (key.to_bytes(), e.to_bytes());
        bytes += kb.len() + vb.len();
        pairs.push((kb, vb));
        let log = log.clone();
        set.spawn(async move { log.write(0, &key, Some(&e)).await });
        if set.len() >= 5_000 {
            while let Some(done) = set.join_next().await {
                done.expect("write task").expect("acknowledged write");
            }
        }
    }
    while let Some(done) = set.join_next().await {
        done.expect("write task").expect("acknowledged write");
    }
    let wrote = started.elapsed();
    let r = log.restore(0).await.expect("restore");
    assert_eq!(r.entries.len(), keys);
    // The client's share: decoding the same records into a map, without the broker.
    let decoding = Instant::now();
    let decoded: HashMap<StateKey, StateEntry> = pairs
        .iter()
        .map(|(k, v)| {
            (
                StateKey::from_bytes(k).unwrap(),
                StateEntry::from_bytes(v).unwrap(),
            )
        })
        .collect();
    let decoded_in = decoding.elapsed();
    assert!(decoded == r.entries);
    println!(
        "state restore: decoding the {keys} records alone takes {:.2} s (this test's build profile)",
        decoded_in.as_secs_f64()
    );
    println!(
        "state restore: {keys} keys, {} records, {bytes} bytes of keys and values ({} per record), \
         written in {:.1} s, restored in {:.2} s ({:.0} records/s)",
        r.records,
        bytes / keys,
        wrote.as_secs_f64(),
        r.elapsed.as_secs_f64(),
        r.records as f64 / r.elapsed.as_secs_f64().max(Duration::from_millis(1).as_secs_f64()),
    );
}

/// A measurement, not a check of speed: expiring 100k keys (tombstones in batches of
/// `EXPIRE_BATCH`, each key out of the map once acknowledged), with one key updated meanwhile
/// kept. `cargo test -p lark-sink-e2e --test state -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn measure_expiry_of_100k_keys() {
    let topic = unique("state-expire-100k");
    let log = Changelog::new(&kafka(), topic.clone()).expect("changelog");
    log.ensure_topic(&kafka(), 1).await.expect("topic");
    let states = MessageStates::new();
    let keys = 100_000;
    for k in 0..keys {
        states.put(key(k), entry(format!("om_{k}"), 1_000, 0), 0);
    }
    let started = Instant::now();
    let done = log
        .expire(&states, 1_000_000, Duration::from_millis(1_000))
        .await;
    let took = started.elapsed();
    assert_eq!((done.due, done.forgotten, done.failed), (keys, keys, 0));
    assert!(states.is_empty());
    let r = log.restore(0).await.expect("restore");
    assert_eq!((r.entries.len(), r.tombstones), (0, keys as u64));
    println!(
        "state expiry: {keys} keys forgotten in {:.2} s ({:.0} tombstones/s)",
        took.as_secs_f64(),
        keys as f64 / took.as_secs_f64()
    );
}
