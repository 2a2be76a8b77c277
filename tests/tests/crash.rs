//! The at-least-once contract under SIGKILL: kill the connector at random moments mid-stream,
//! at least ten times in one run, restart it each time, and audit after every kill. Every valid
//! message ends up in Lark exactly once (replays absorbed by the deterministic uuid), every
//! invalid record in the DLQ with its reason, per-receiver order holds, and the committed
//! offsets never cover a record that is not finished (see `lark_sink_e2e::audit`).

use std::time::Duration;

use lark_sink::emulator::Directory;
use lark_sink_e2e::audit::produce_workload;
use lark_sink_e2e::*;
use rand::Rng;

const PARTITIONS: i32 = 3;
const RECORDS: usize = 600;
const RECEIVERS: usize = 24;
const KILLS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    // Real Lark limits on: the connector is throttled by its own limiter while being killed,
    // so kills land in every phase (start-up, waiting for permission, mid-request, committing).
    let s = Scenario::with_emulator(
        "crash",
        PARTITIONS,
        EmulatorConfig {
            directory: Directory::with_generated(RECEIVERS, 0),
            ..EmulatorConfig::default()
        },
    )
    .await;
    let lark = &s.lark;
    let ledger = produce_workload(&s, RECORDS, RECEIVERS).await;
    let cfg = s.config();

    let mut rng = kill_moments();

    for kill in 1..=KILLS {
        let before = lark.messages().len();
        let mut c = Connector::start(&cfg);
        // A random moment once this instance is delivering: after a SIGKILL the group only
        // rebalances when the dead member's session times out, so the restart takes a while.
        wait_until(
            &format!("instance {kill} delivering"),
            Duration::from_secs(60),
            || lark.messages().len() > before,
        )
        .await;
        let after = Duration::from_millis(rng.random_range(0..1200));
        tokio::time::sleep(after).await;
        c.kill();
        let dlq = read_to_end(&s.dlq, Duration::from_secs(20));
        let committed = s.committed();
        ledger.check_commits(&format!("after kill {kill}"), &committed, lark, &dlq);
        eprintln!(
            "kill {kill} {after:?} into delivery: {} of {} messages in Lark, {} DLQ records, committed {committed:?}",
            lark.messages().len(),
            ledger.messages(),
            dlq.len()
        );
    }

    // Final run to completion.
    let mut c = Connector::start(&cfg);
    wait_until("every message delivered", Duration::from_secs(180), || {
        lark.messages().len() >= ledger.messages()
    })
    .await;
    let ends = ledger.ends(PARTITIONS);
    wait_until("all offsets committed", Duration::from_secs(30), || {
        s.committed() == ends
    })
    .await;
    assert_eq!(c.stop(), Some(0));
    let dlq = read_to_end(&s.dlq, Duration::from_secs(20));
    ledger.check_commits("at the end", &s.committed(), lark, &dlq);
    ledger.check_final(lark, &dlq);
    eprintln!(
        "{KILLS} kills: {} messages exactly once, {} invalid records in {} DLQ records; emulator stats: {:?}",
        ledger.messages(),
        ledger.dead_letters(),
        dlq.len(),
        lark.stats()
    );
}
