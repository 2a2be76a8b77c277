//! The at-least-once contract under SIGKILL: kill the connector at arbitrary points mid-stream,
//! restart it, and every valid message ends up in Lark exactly once (replays absorbed by the
//! deterministic uuid), while the committed offsets never cover a record whose messages are not
//! all delivered.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lark_sink::emulator::Directory;
use lark_sink_e2e::*;
use serde_json::json;

const PARTITIONS: i32 = 3;
const RECORDS: usize = 240;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_mid_stream_loses_and_duplicates_nothing() {
    // Real Lark limits on: the connector runs into throttling and retries while being killed.
    let s = Scenario::with_emulator(
        "crash",
        PARTITIONS,
        EmulatorConfig {
            directory: Directory::with_generated(24, 0),
            ..EmulatorConfig::default()
        },
    )
    .await;
    let lark = &s.lark;

    // Every fifth record is an array of two messages to two different receivers.
    let mut expected: BTreeMap<(i32, i64), usize> = BTreeMap::new(); // record → message count
    for i in 0..RECORDS {
        let one = |j: usize| json!({"receiveId": format!("ou_gen_{}", (i + j) % 24), "content": {"text": format!("m{i}.{j}")}});
        let (value, n) = if i % 5 == 0 {
            (json!([one(0), one(1)]), 2)
        } else {
            (one(0), 1)
        };
        let coords = s.send_to((i % PARTITIONS as usize) as i32, &value).await;
        expected.insert(coords, n);
    }
    let total: usize = expected.values().sum();

    let cfg = s.strict_config();
    let audit = |when: &str| {
        // Committed offsets must only cover records whose messages were all delivered.
        let delivered = delivered_counts(lark);
        let committed = s.committed();
        for (p, c) in committed.iter().enumerate() {
            for (&(rp, ro), &n) in &expected {
                if rp == p as i32 && ro < *c {
                    assert_eq!(
                        delivered.get(&(rp, ro)).copied().unwrap_or(0),
                        n,
                        "{when}: partition {p} committed at {c} but record {ro} is not fully delivered"
                    );
                }
            }
        }
        committed
    };

    // Kill at several points of the stream, auditing after each kill.
    let mut kills = 0;
    for target in [20, 70, 130, 190] {
        let mut c = Connector::start(&cfg);
        wait_until(
            &format!("{target} messages delivered"),
            Duration::from_secs(120),
            || lark.messages().len() >= target,
        )
        .await;
        c.kill();
        kills += 1;
        let committed = audit(&format!("after kill {kills}"));
        eprintln!(
            "kill {kills}: {} delivered, committed {committed:?}",
            lark.messages().len()
        );
    }

    // Final run to completion.
    let mut c = Connector::start(&cfg);
    wait_until("every message delivered", Duration::from_secs(180), || {
        lark.messages().len() >= total
    })
    .await;
    let ends: Vec<i64> = (0..PARTITIONS)
        .map(|p| {
            expected
                .keys()
                .filter(|(rp, _)| *rp == p)
                .map(|(_, o)| o + 1)
                .max()
                .unwrap_or(0)
        })
        .collect();
    wait_until("all offsets committed", Duration::from_secs(30), || {
        s.committed() == ends
    })
    .await;
    assert_eq!(c.stop(), Some(0));
    audit("at the end");

    let msgs = lark.messages();
    assert_eq!(msgs.len(), total, "every message exactly once");
    let uuids: BTreeSet<&str> = msgs.iter().filter_map(|m| m.uuid.as_deref()).collect();
    assert_eq!(uuids.len(), total, "no message accepted twice");
    assert_eq!(delivered_counts(lark).len(), expected.len());
    for (coords, n) in &expected {
        assert_eq!(
            delivered_counts(lark).get(coords),
            Some(n),
            "record {coords:?}"
        );
    }
    let stats = lark.stats();
    eprintln!("{kills} kills; emulator stats: {stats:?}");
}

/// Messages delivered per source record, from the uuids the emulator accepted.
fn delivered_counts(lark: &EmulatorHandle) -> BTreeMap<(i32, i64), usize> {
    let mut out = BTreeMap::new();
    for m in lark.messages() {
        if let Some((p, o, _)) = m.uuid.as_deref().and_then(uuid_coordinates) {
            *out.entry((p, o)).or_insert(0) += 1;
        }
    }
    out
}
