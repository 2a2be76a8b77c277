//! The audit every fault-injection test ends with (docs/reliability.md).
//!
//! A test writes down what it produced in a [`Ledger`]: for each source record, the receivers of
//! the messages it must deliver, or the reason it must be dead-lettered for. After each fault
//! and at the end, the ledger is checked against what the emulator accepted, what the DLQ holds
//! and what the consumer group committed:
//!
//! - every valid message is in Lark exactly once (one accepted message per uuid, and every
//!   expected `(partition, offset, index)` present);
//! - every invalid record is in the DLQ with its reason (at least once: a crash between the DLQ
//!   write and the offset commit replays it, as in Kafka Connect);
//! - per receiver, messages from one partition were accepted in offset order;
//! - committed offsets never pass a record that is not finished (delivered or dead-lettered).
//!
//! Keeping the audit in one place means every fault test proves the same contract.

use std::collections::{BTreeMap, BTreeSet};

use crate::{uuid_coordinates, EmulatorHandle, ReadRecord};

/// What one source record must become.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Delivered: one message per receiver, in index order.
    Deliver(Vec<String>),
    /// Dead-lettered with a reason containing this text.
    DeadLetter(String),
}

/// Everything a test produced, by `(partition, offset)`.
#[derive(Debug, Default)]
pub struct Ledger {
    pub records: BTreeMap<(i32, i64), Expect>,
}

impl Ledger {
    pub fn deliver(&mut self, coords: (i32, i64), receivers: Vec<String>) {
        self.records.insert(coords, Expect::Deliver(receivers));
    }

    pub fn dead_letter(&mut self, coords: (i32, i64), reason: &str) {
        self.records
            .insert(coords, Expect::DeadLetter(reason.to_string()));
    }

    /// Messages the emulator must end up with.
    pub fn messages(&self) -> usize {
        self.records
            .values()
            .map(|e| match e {
                Expect::Deliver(r) => r.len(),
                Expect::DeadLetter(_) => 0,
            })
            .sum()
    }

    pub fn dead_letters(&self) -> usize {
        self.records
            .values()
            .filter(|e| matches!(e, Expect::DeadLetter(_)))
            .count()
    }

    /// The offset each partition's commit must reach once everything is finished.
    pub fn ends(&self, partitions: i32) -> Vec<i64> {
        (0..partitions)
            .map(|p| {
                self.records
                    .keys()
                    .filter(|(rp, _)| *rp == p)
                    .map(|(_, o)| o + 1)
                    .max()
                    .unwrap_or(-1)
            })
            .collect()
    }

    /// Committed offsets never pass an unfinished record: every record below a partition's
    /// commit is fully delivered or in the DLQ. `dlq` is the DLQ as read now.
    pub fn check_commits(
        &self,
        when: &str,
        committed: &[i64],
        lark: &EmulatorHandle,
        dlq: &[ReadRecord],
    ) {
        let delivered = delivered_indexes(lark);
        let dead = dead_lettered(dlq);
        for ((p, o), expect) in &self.records {
            let Some(&c) = committed.get(*p as usize) else {
                continue;
            };
            if *o >= c {
                continue;
            }
            match expect {
                Expect::Deliver(receivers) => {
                    let got = delivered.get(&(*p, *o)).map(BTreeSet::len).unwrap_or(0);
                    assert_eq!(
                        got,
                        receivers.len(),
                        "{when}: partition {p} committed at {c}, but record {o} has {got} of {} messages in Lark",
                        receivers.len()
                    );
                }
                Expect::DeadLetter(_) => assert!(
                    dead.contains_key(&(*p, *o)),
                    "{when}: partition {p} committed at {c}, but invalid record {o} is not in the DLQ"
                ),
            }
        }
    }

    /// The end-of-test audit (see the module comment).
    pub fn check_final(&self, lark: &EmulatorHandle, dlq: &[ReadRecord]) {
        let msgs = lark.messages();
        // Exactly once: one accepted message per uuid, and nothing unexpected.
        let mut seen: BTreeMap<(i32, i64, usize), usize> = BTreeMap::new();
        for m in &msgs {
            let uuid = m.uuid.as_deref().unwrap_or("");
            let coords = uuid_coordinates(uuid)
                .unwrap_or_else(|| panic!("message without a lark-sink uuid: {m:?}"));
            *seen.entry(coords).or_insert(0) += 1;
        }
        let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            dupes.is_empty(),
            "messages accepted more than once: {dupes:?}"
        );
        for (p, o, i) in seen.keys() {
            match self.records.get(&(*p, *o)) {
                Some(Expect::Deliver(r)) if *i < r.len() => {}
                other => panic!("unexpected message for record {p}/{o} index {i}: {other:?}"),
            }
        }
        // Every expected message present, to the right receiver.
        let by_coords: BTreeMap<(i32, i64, usize), &str> = msgs
            .iter()
            .filter_map(|m| {
                let c = uuid_coordinates(m.uuid.as_deref()?)?;
                Some((c, m.receive_id.as_str()))
            })
            .collect();
        for ((p, o), expect) in &self.records {
            if let Expect::Deliver(receivers) = expect {
                for (i, r) in receivers.iter().enumerate() {
                    assert_eq!(
                        by_coords.get(&(*p, *o, i)).copied(),
                        Some(r.as_str()),
                        "record {p}/{o} message {i} must reach {r}"
                    );
                }
            }
        }
        assert_eq!(
            msgs.len(),
            self.messages(),
            "every valid message exactly once"
        );

        // Per receiver and partition, acceptance order is offset order.
        let mut last: BTreeMap<(&str, i32), (i64, usize)> = BTreeMap::new();
        for m in &msgs {
            let Some((p, o, i)) = m.uuid.as_deref().and_then(uuid_coordinates) else {
                continue;
            };
            if let Some(prev) = last.insert((m.receive_id.as_str(), p), (o, i)) {
                assert!(
                    prev < (o, i),
                    "receiver {} got record {p}/{o}#{i} after {p}/{}#{}: order broken",
                    m.receive_id,
                    prev.0,
                    prev.1
                );
            }
        }

        // Every invalid record dead-lettered with its reason; nothing valid dead-lettered.
        let dead = dead_lettered(dlq);
        for ((p, o), expect) in &self.records {
            match expect {
                Expect::DeadLetter(reason) => {
                    let got = dead
                        .get(&(*p, *o))
                        .unwrap_or_else(|| panic!("invalid record {p}/{o} is not in the DLQ"));
                    assert!(
                        got.iter().all(|g| g.contains(reason.as_str())),
                        "record {p}/{o}: DLQ reason {got:?} does not say {reason:?}"
                    );
                }
                Expect::Deliver(_) => assert!(
                    !dead.contains_key(&(*p, *o)),
                    "valid record {p}/{o} was dead-lettered: {:?}",
                    dead.get(&(*p, *o))
                ),
            }
        }
    }
}

/// The message indexes the emulator accepted, per source record.
fn delivered_indexes(lark: &EmulatorHandle) -> BTreeMap<(i32, i64), BTreeSet<usize>> {
    let mut out: BTreeMap<(i32, i64), BTreeSet<usize>> = BTreeMap::new();
    for m in lark.messages() {
        if let Some((p, o, i)) = m.uuid.as_deref().and_then(uuid_coordinates) {
            out.entry((p, o)).or_default().insert(i);
        }
    }
    out
}

/// DLQ reasons per source record (several when a crash replayed the record).
pub fn dead_lettered(dlq: &[ReadRecord]) -> BTreeMap<(i32, i64), Vec<String>> {
    let mut out: BTreeMap<(i32, i64), Vec<String>> = BTreeMap::new();
    for d in dlq {
        let p = d.header("__connect.errors.partition").parse().unwrap_or(-1);
        let o = d.header("__connect.errors.offset").parse().unwrap_or(-1);
        out.entry((p, o))
            .or_default()
            .push(d.header("__connect.errors.exception.message").to_string());
    }
    out
}

/// Receiver `r` of the generated directory (`Directory::with_generated`).
pub fn generated_user(r: usize) -> String {
    format!("ou_gen_{r}")
}

/// The workload every fault test drives: `records` records spread round-robin over the
/// scenario's partitions, addressed to `receivers` generated users (a user's messages all come
/// from one partition, so per-receiver order is defined), every fifth record an array of two
/// messages, and every thirteenth record invalid (alternately not JSON and failing the schema).
pub async fn produce_workload(s: &crate::Scenario, records: usize, receivers: usize) -> Ledger {
    let parts = s.partitions as usize;
    assert!(
        receivers >= 2 * parts && receivers % parts == 0,
        "need at least two receivers per partition, evenly spread"
    );
    let per_partition = receivers / parts;
    let mut ledger = Ledger::default();
    for i in 0..records {
        let p = i % parts;
        let slot = i / parts;
        let user = |k: usize| generated_user(p + parts * ((slot + k) % per_partition));
        if i % 13 == 7 {
            if (i / 13) % 2 == 0 {
                let c = s
                    .send_raw_to(
                        p as i32,
                        format!(r#"{{"receiveId": "{}", "content": "#, user(0)).as_bytes(),
                    )
                    .await;
                ledger.dead_letter(c, "not JSON");
            } else {
                let c = s
                    .send_to(
                        p as i32,
                        &serde_json::json!({"receiveType": "fax", "receiveId": user(0), "content": {"text": format!("bad{i}")}}),
                    )
                    .await;
                ledger.dead_letter(c, "/receiveType");
            }
            continue;
        }
        let one = |k: usize| serde_json::json!({"receiveId": user(k), "content": {"text": format!("m{i}.{k}")}});
        let (value, rs) = if i % 5 == 0 {
            (serde_json::json!([one(0), one(1)]), vec![user(0), user(1)])
        } else {
            (one(0), vec![user(0)])
        };
        let coords = s.send_to(p as i32, &value).await;
        ledger.deliver(coords, rs);
    }
    ledger
}
