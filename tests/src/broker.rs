//! A test's own broker, and the check that a broker still does its job.
//!
//! [`OwnBroker`] is a tansu started by `scripts/broker.sh` on a free port and in a temporary
//! directory, for tests that stop, freeze or abuse the broker and so must not share the suite's.
//! [`assert_answers`] is what "the broker still works" means in those tests: it accepts produce
//! requests, a new consumer joins a group and is given partitions, fetches every record, and its
//! commit is stored and read back.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};

use crate::{committed, create_topic, unique, KafkaAccess, Producer};

/// A tansu of one test's own, stopped (and its directory removed) when dropped, also when the
/// test fails.
pub struct OwnBroker {
    pub port: u16,
    pub dir: PathBuf,
}

impl OwnBroker {
    /// Starts a fresh broker on a free port.
    pub fn start() -> OwnBroker {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let broker = OwnBroker {
            port,
            dir: std::env::temp_dir().join(unique("lark-sink-broker")),
        };
        broker.script("start");
        broker
    }

    /// `host:port` to bootstrap from.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs `scripts/broker.sh <action>` for this broker (start, stop, resume).
    pub fn script(&self, action: &str) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/broker.sh");
        let status = Command::new("bash")
            .arg(script)
            .arg(action)
            .env("LARK_SINK_BROKER_PORT", self.port.to_string())
            .env("LARK_SINK_BROKER_DIR", &self.dir)
            .status()
            .expect("run scripts/broker.sh");
        assert!(status.success(), "scripts/broker.sh {action} failed");
    }

    fn pid(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.pid"))
            .expect("broker.pid")
            .trim()
            .to_string()
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the broker process.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Whether the broker process is still alive.
    pub fn alive(&self) -> bool {
        Command::new("kill")
            .arg("-0")
            .arg(self.pid())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.script("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Panics with `what` unless the broker behind `LARK_SINK_TEST_BROKER` answers produce, join,
/// fetch and commit: `records` records produced to a new two-partition topic, a consumer of a
/// new group subscribed to it gets an assignment and fetches them all within `timeout`, commits
/// synchronously, and the committed offsets read back add up to `records`.
pub async fn assert_answers(what: &str, records: usize, timeout: Duration) {
    let topic = unique("broker-answers");
    let group = unique("broker-answers-group");
    create_topic(&topic, 2).await;
    let producer = Producer::new();
    for i in 0..records {
        producer
            .send(
                &topic,
                None,
                Some(&format!("k{i}")),
                format!("r{i}").as_bytes(),
                &[],
            )
            .await;
    }
    let consumer: BaseConsumer = KafkaAccess::plain()
        .client_config()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic.as_str()]).expect("subscribe");
    let deadline = Instant::now() + timeout;
    let mut fetched = 0;
    while fetched < records {
        assert!(
            Instant::now() < deadline,
            "{what}: fetched {fetched} of {records} records in {timeout:?} (assignment {:?})",
            consumer.assignment().map(|a| a.count())
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => fetched += 1,
            Some(Err(e)) => eprintln!("{what}: consumer error (retried): {e}"),
            None => {}
        }
    }
    let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
    assert_eq!(
        assigned, 2,
        "{what}: the joined consumer holds both partitions"
    );
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .unwrap_or_else(|e| panic!("{what}: commit failed: {e}"));
    let stored: i64 = committed(&group, &topic, 2).iter().sum();
    assert_eq!(
        stored, records as i64,
        "{what}: committed offsets read back add up to the records fetched"
    );
}

/// Panics with `what` unless a new consumer of `group` (whose other members may all be dead) is
/// given every one of `partitions` partitions of `topic` within `timeout` and keeps them for
/// `hold`: the dead members' sessions expire, the group rebalances without them, and the new
/// member ends up with everything, as on Kafka.
pub fn assert_group_recovers(
    what: &str,
    topic: &str,
    group: &str,
    partitions: usize,
    timeout: Duration,
    hold: Duration,
) {
    let consumer: BaseConsumer = KafkaAccess::plain()
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let started = Instant::now();
    let assigned = |c: &BaseConsumer| c.assignment().map(|a| a.count()).unwrap_or(0);
    let mut since: Option<Instant> = None;
    loop {
        let _ = consumer.poll(Duration::from_millis(200));
        match (assigned(&consumer) == partitions, since) {
            (true, None) => since = Some(Instant::now()),
            (true, Some(t)) if t.elapsed() >= hold => break,
            (false, _) => since = None,
            _ => {}
        }
        assert!(
            started.elapsed() < timeout,
            "{what}: after {timeout:?} the new member of {group} holds {} of {partitions} partitions",
            assigned(&consumer)
        );
    }
    eprintln!(
        "{what}: the new member holds all {partitions} partitions after {:.1} s",
        started.elapsed().as_secs_f64() - hold.as_secs_f64()
    );
}
