//! Fault injection against the real broker and the emulator over HTTP: Lark misbehaving in
//! every way lark-api.md documents at once, and a consumer-group rebalance mid-stream. Each
//! test ends with the same audit (`lark_sink_e2e::audit`): every valid message in Lark exactly
//! once, every invalid record in the DLQ with its reason, per-receiver order kept, committed
//! offsets never past an unfinished record. The broker restart and SIGKILL tests live in
//! `broker_restart.rs` and `crash.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lark_sink::emulator::Directory;
use lark_sink_e2e::audit::{produce_workload, Ledger};
use lark_sink_e2e::*;

const RECEIVERS: usize = 24;

/// Waits for the whole ledger to be finished, auditing the commits every second on the way.
async fn run_to_end(s: &Scenario, ledger: &Ledger, timeout: Duration) {
    let ends = ledger.ends(s.partitions);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let committed = s.committed();
        let dlq = read_to_end(&s.dlq, Duration::from_secs(20));
        ledger.check_commits("mid-stream", &committed, &s.lark, &dlq);
        if committed == ends && s.lark.messages().len() >= ledger.messages() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not finished after {timeout:?}: {} of {} messages, committed {committed:?} of {ends:?}",
            s.lark.messages().len(),
            ledger.messages()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// 10 % of sends answer 5xx, 5 % answer only after the client's request timeout, every tenant
/// token is revoked every 5 s (the issue says every minute; faster is harsher), and every 4 s
/// Lark throttles every send for 600 ms (99991400 with `x-ogw-ratelimit-reset`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lark_failing_slow_revoking_and_throttling_loses_nothing() {
    let base = FaultConfig {
        error_5xx_rate: 0.10,
        slow_rate: 0.05,
        slow_ms: 1_500,
        ..FaultConfig::default()
    };
    let s = Scenario::with_emulator(
        "faults-lark",
        3,
        EmulatorConfig {
            directory: Directory::with_generated(RECEIVERS, 0),
            faults: base.clone(),
            ..EmulatorConfig::default()
        },
    )
    .await;
    let ledger = produce_workload(&s, 300, RECEIVERS).await;

    let stop = Arc::new(AtomicBool::new(false));
    let chaos = {
        let (lark, stop) = (s.lark.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = 0u64;
            let (mut revocations, mut bursts) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                tick += 1;
                if tick % 25 == 0 {
                    lark.revoke_tokens();
                    revocations += 1;
                }
                match tick % 20 {
                    0 => {
                        lark.set_fault_config(FaultConfig {
                            throttle_rate: 1.0,
                            ..base.clone()
                        });
                        bursts += 1;
                    }
                    3 => lark.set_fault_config(base.clone()),
                    _ => {}
                }
            }
            (revocations, bursts)
        })
    };

    let mut cfg = s.config();
    // Shorter than the emulator's slow answers, so those time out on the client side and are
    // retried while Lark may still accept the first attempt (the uuid absorbs it).
    cfg["config"]["lark.request.timeout.ms"] = "1000".into();
    cfg["config"]["errors.retry.timeout"] = "120000".into();
    let mut c = Connector::start(&cfg);
    run_to_end(&s, &ledger, Duration::from_secs(180)).await;
    stop.store(true, Ordering::Relaxed);
    let (revocations, bursts) = chaos.await.expect("chaos task");
    assert_eq!(c.stop(), Some(0));

    let dlq = read_to_end(&s.dlq, Duration::from_secs(20));
    ledger.check_final(&s.lark, &dlq);
    let stats = s.lark.stats();
    eprintln!("{revocations} token revocations, {bursts} throttle bursts; emulator: {stats:?}");
    // The faults really happened (otherwise this test proves nothing).
    assert!(
        revocations >= 1 && bursts >= 1,
        "the run was too short for the chaos"
    );
    assert!(
        stats.token_rejections >= 1,
        "no request met a revoked token"
    );
    assert!(stats.faults_injected >= 10, "too few faults injected");
    assert!(
        stats.errors_by_code.contains_key(&99991400),
        "no throttle answer was given"
    );
}

/// A second instance joins the group mid-stream and leaves again (SIGTERM) before the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_joining_and_leaving_loses_and_duplicates_nothing() {
    let s = Scenario::with_emulator(
        "faults-rebalance",
        6,
        EmulatorConfig {
            directory: Directory::with_generated(RECEIVERS, 0),
            ..EmulatorConfig::default()
        },
    )
    .await;
    // With Lark's real limits (50/s per app) this takes about 20 s: long enough to rebalance twice.
    let ledger = produce_workload(&s, 800, RECEIVERS).await;
    let total = ledger.messages();
    let cfg = s.config();

    let mut a = Connector::start(&cfg);
    wait_until("a third delivered", Duration::from_secs(120), || {
        s.lark.messages().len() >= total / 3
    })
    .await;
    let mut b = Connector::start(&cfg);
    wait_until(
        "the second instance to take partitions",
        Duration::from_secs(60),
        || b.logs().contains("partitions assigned"),
    )
    .await;
    let dlq = read_to_end(&s.dlq, Duration::from_secs(20));
    ledger.check_commits("after the join", &s.committed(), &s.lark, &dlq);
    wait_until("two thirds delivered", Duration::from_secs(120), || {
        s.lark.messages().len() >= 2 * total / 3
    })
    .await;
    assert_eq!(b.stop(), Some(0), "the second instance leaves cleanly");
    let dlq = read_to_end(&s.dlq, Duration::from_secs(20));
    ledger.check_commits("after the leave", &s.committed(), &s.lark, &dlq);

    run_to_end(&s, &ledger, Duration::from_secs(180)).await;
    assert_eq!(a.stop(), Some(0));
    let dlq = read_to_end(&s.dlq, Duration::from_secs(20));
    ledger.check_final(&s.lark, &dlq);
    let stats = s.lark.stats();
    eprintln!("rebalance: emulator {stats:?}");
    // The old owner stops sending a revoked partition at once (also messages waiting for
    // permission), so the two members never overshoot the app quota they share.
    assert_eq!(
        stats.throttled_app + stats.throttled_receiver,
        0,
        "throttled during the rebalance"
    );
}
