//! The test broker survives clients that die mid-request (issue 12, docs/testing.md#the-test-broker).
//!
//! tansu 0.6.0's SQLite engine served storage through a loop that ended for good when a
//! requester had gone before its answer (`ChannelRequestService::serve`, a `?` on the failed
//! oneshot send): after one client vanished mid-request, every later storage call failed and the
//! broker was useless. The tests' broker is built with a patch to that loop and one to its group
//! coordinator (tools/test-broker). This test is the regression test of the broker itself: on a tansu of its own it SIGKILLs 50 Kafka clients at random
//! moments while they join, produce, fetch and commit (half in one shared group, whose dead
//! members pile up, half each in a group of its own, which gets as far as committing), then
//! requires the broker to be alive, to answer produce, join, fetch and commit, a new member of the
//! shared group to end up with every partition, and no panic in the broker's log. It guards
//! survival; it does not reproduce either upstream bug (it passes on upstream tansu too): that is
//! `crash.rs`, see docs/testing.md#the-test-broker.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lark_sink_e2e::broker::{assert_answers, assert_group_recovers, OwnBroker};
use lark_sink_e2e::*;
use rand::{Rng, SeedableRng};

const KILLS: usize = 50;

/// Every fourth client (the 1st, 5th, 9th, …: each in a group of its own, where a commit does not
/// wait for dead members' sessions) is killed only after it has committed a record, then at a
/// random moment up to 200 ms later (mid-commit or mid-fetch), so the kills reach the commit path
/// however slow the machine is; the others die at random moments from their start.
fn killed_after_a_commit(kill: usize) -> bool {
    kill % 4 == 1
}

/// How long a client may take to commit its first record: a broker that cannot serve a commit in
/// this time fails the test.
const FIRST_COMMIT_WITHIN: Duration = Duration::from_secs(30);

/// Waits until `client` prints `active` (it has committed a record); false after `within`.
fn wait_committed(client: &mut Child, within: Duration) -> bool {
    let Some(stdout) = client.stdout.take() else {
        return false;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) if l.contains("active") => {
                    let _ = tx.send(());
                    return;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    rx.recv_timeout(within).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_killed_mid_request_leave_a_working_broker() {
    let broker = OwnBroker::start();
    // Every harness helper reads the broker address from here; this binary has no other test.
    std::env::set_var("LARK_SINK_TEST_BROKER", broker.bootstrap());
    let topic = unique("churn");
    create_topic(&topic, 3).await;
    let shared_group = unique("churn-group");

    let seed: u64 = std::env::var("LARK_SINK_BROKER_KILLS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("kill moments from seed {seed} (rerun with LARK_SINK_BROKER_KILLS_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut active = 0;
    for kill in 1..=KILLS {
        let group = if kill % 2 == 0 {
            shared_group.clone()
        } else {
            unique("churn-own-group")
        };
        let mut client = Command::new(env!("CARGO_BIN_EXE_kafka-churn"))
            .args([broker.bootstrap(), topic.clone(), group])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kafka-churn");
        let after = if killed_after_a_commit(kill) {
            let committed = wait_committed(&mut client, FIRST_COMMIT_WITHIN);
            if !committed {
                let _ = client.kill();
            }
            assert!(
                committed,
                "client {kill} did not commit a record within {FIRST_COMMIT_WITHIN:?}; the \
                 broker's log:\n{}",
                broker.log()
            );
            active += 1;
            Duration::from_millis(rng.random_range(0..200))
        } else {
            Duration::from_millis(rng.random_range(50..2000))
        };
        tokio::time::sleep(after).await;
        client.kill().expect("SIGKILL kafka-churn");
        let _ = client.wait();
        let mut out = String::new();
        if let Some(mut stdout) = client.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        if out.contains("active") {
            active += 1;
        }
        assert!(
            broker.alive(),
            "the broker died after {kill} kills (the last {after:?} after its start); its log:\n{}",
            broker.log()
        );
    }
    eprintln!("{KILLS} clients killed, {active} of them after committing a record");
    assert!(
        active >= KILLS / 10,
        "only {active} of {KILLS} clients got as far as committing: the kills did not reach the \
         commit path (log:\n{})",
        broker.log()
    );

    assert_answers("after the kills", 100, Duration::from_secs(60)).await;
    // The shared group is full of dead members (the last one likely its leader): a new member
    // must end up with every partition once their sessions (6 s) expire.
    let (topic2, group2) = (topic.clone(), shared_group.clone());
    tokio::task::spawn_blocking(move || {
        assert_group_recovers(
            "the group whose members were killed",
            &topic2,
            &group2,
            3,
            Duration::from_secs(90),
            Duration::from_secs(5),
        )
    })
    .await
    .expect("group check");
    assert!(broker.alive(), "the broker died during the check");
    let log = broker.log();
    for sign in ["panicked", "UnableToSend"] {
        assert!(
            !log.contains(sign),
            "the broker's log shows '{sign}':\n{log}"
        );
    }
}
