//! Harness for the end-to-end tests: the real `lark-sink` binary, a real Kafka-protocol broker
//! (tansu, started by `scripts/broker.sh`), and the Lark emulator over real HTTP.
//!
//! Every test gets its own topics, consumer group and emulator, so tests run in parallel against
//! one shared broker. The broker address comes from `LARK_SINK_TEST_BROKER`, which
//! `scripts/test.sh` exports after starting the broker; without it the tests fail with a message
//! saying how to start one, never silently pass.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

pub use lark_sink::emulator::{
    AcceptedMessage, Emulator, EmulatorConfig, EmulatorHandle, Fault, FaultConfig, FaultTarget,
};

/// The broker's bootstrap address.
pub fn broker() -> String {
    std::env::var("LARK_SINK_TEST_BROKER").unwrap_or_else(|_| {
        panic!(
            "LARK_SINK_TEST_BROKER is not set. The end-to-end tests need a real Kafka-protocol broker: \
             run them with `scripts/test.sh` (installs and starts tansu), or start one with \
             `scripts/broker.sh start` and export LARK_SINK_TEST_BROKER=127.0.0.1:19092"
        )
    })
}

/// A name no other test (or earlier run against the same broker) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

pub async fn create_topic(topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .create()
        .expect("admin client");
    let res = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create_topics request");
    for r in res {
        if let Err((name, code)) = r {
            panic!("creating topic {name}: {code}");
        }
    }
}

pub struct Producer {
    inner: FutureProducer,
}

impl Producer {
    pub fn new() -> Self {
        let inner = ClientConfig::new()
            .set("bootstrap.servers", broker())
            .set("message.timeout.ms", "20000")
            .create()
            .expect("producer");
        Producer { inner }
    }

    /// Produces one record and returns (partition, offset).
    pub async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&str>,
        value: &[u8],
        headers: &[(&str, &str)],
    ) -> (i32, i64) {
        self.send_value(topic, partition, key, Some(value), headers)
            .await
    }

    /// Produces one record whose value may be absent (a tombstone) and returns (partition, offset).
    pub async fn send_value(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&str>,
        value: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> (i32, i64) {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).headers(h);
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        if let Some(k) = key {
            rec = rec.key(k);
        }
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        let delivery = self
            .inner
            .send(rec, Duration::from_secs(20))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
        (delivery.partition, delivery.offset)
    }

    pub async fn send_json(
        &self,
        topic: &str,
        partition: Option<i32>,
        value: &Value,
    ) -> (i32, i64) {
        self.send(topic, partition, None, value.to_string().as_bytes(), &[])
            .await
    }
}

impl Default for Producer {
    fn default() -> Self {
        Self::new()
    }
}

/// A record read back from a topic (the DLQ).
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

impl ReadRecord {
    pub fn header(&self, k: &str) -> &str {
        self.headers.get(k).map(String::as_str).unwrap_or("")
    }
}

/// Reads `topic` from the beginning until `expected` records arrived or `timeout` passed.
/// Waits for the topic to exist first (the connector creates its DLQ at start-up), then assigns
/// every partition directly: a group subscription to a missing topic would only notice the topic
/// at librdkafka's next metadata refresh, minutes later.
pub fn read_topic(topic: &str, expected: usize, timeout: Duration) -> Vec<ReadRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let deadline = Instant::now() + timeout;
    let partitions = loop {
        let n = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()
            .and_then(|m| {
                m.topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .map(|t| t.partitions().len())
            })
            .unwrap_or(0);
        if n > 0 {
            break n as i32;
        }
        if Instant::now() > deadline {
            return Vec::new();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition offset");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < expected && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(ReadRecord {
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    h.value
                                        .map(|v| String::from_utf8_lossy(v).into_owned())
                                        .unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(e)) => eprintln!("read_topic: {e}"),
            None => {}
        }
    }
    out
}

/// The committed offset of each partition `0..partitions` of `topic` for `group` (-1 = none).
pub fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let res = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed_offsets");
    (0..partitions)
        .map(|p| match res.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// Polls `f` every 100 ms until it is true; panics with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn start_emulator() -> EmulatorHandle {
    start_emulator_with(EmulatorConfig::default()).await
}

pub async fn start_emulator_with(cfg: EmulatorConfig) -> EmulatorHandle {
    Emulator::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("start emulator")
}

/// A connector config for `topic`, talking to `emulator` with the demo app's credentials.
pub fn connector_config(
    name: &str,
    topic: &str,
    emulator: &EmulatorHandle,
    dlq: Option<&str>,
) -> Value {
    let mut cfg = json!({
        "topics": topic,
        "kafka.bootstrap.servers": broker(),
        "kafka.group.id": name,
        "lark.app.id": "cli_demo_app",
        "lark.app.secret": "demo-secret",
        "lark.domain": emulator.base_url(),
        "offset.flush.interval.ms": "500",
        "errors.retry.delay.initial.ms": "100",
        "errors.retry.delay.max.ms": "2000",
        "errors.retry.timeout": "30000",
        "kafka.session.timeout.ms": "6000",
        // Parallel tests run many connectors: each takes a free port for its admin API.
        "admin.listener": "127.0.0.1:0",
    });
    if let Some(d) = dlq {
        cfg["errors.tolerance"] = json!("all");
        cfg["errors.deadletterqueue.topic.name"] = json!(d);
    }
    json!({"name": name, "config": cfg})
}

/// The `lark-sink` binary built from this workspace.
pub fn sink_bin() -> PathBuf {
    if let Ok(p) = std::env::var("LARK_SINK_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-binary> → target/<profile>/lark-sink
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("lark-sink"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p lark-sink` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A running `lark-sink run` process.
pub struct Connector {
    child: Option<Child>,
    pub log: PathBuf,
    dir: PathBuf,
}

impl Connector {
    /// Writes `config` to a temp file and starts `lark-sink run --config` on it.
    pub fn start(config: &Value) -> Connector {
        Self::start_with_env(config, &[])
    }

    /// Starts with extra global arguments before `run` (e.g. `--log-format json`).
    pub fn start_with_args(config: &Value, args: &[&str]) -> Connector {
        Self::spawn(config, &[], args)
    }

    pub fn start_with_env(config: &Value, env: &[(&str, &str)]) -> Connector {
        Self::spawn(config, env, &[])
    }

    fn spawn(config: &Value, env: &[(&str, &str)], args: &[&str]) -> Connector {
        let dir = std::env::temp_dir().join(unique("lark-sink-e2e"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cfg_path = dir.join("connector.json");
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(config).expect("json"))
            .expect("write config");
        let log = dir.join("connector.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(sink_bin())
            .args(args)
            .arg("run")
            .arg("--config")
            .arg(&cfg_path)
            .envs(env.iter().copied())
            .env(
                "LARK_SINK_LOG",
                "info,lark_sink=debug,librdkafka=warn,rdkafka=warn",
            )
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn lark-sink");
        Connector {
            child: Some(child),
            log,
            dir,
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The admin API's base URL, read from the connector's start-up log line.
    pub async fn admin_url(&self) -> String {
        let mut url = String::new();
        wait_until("the admin API to listen", Duration::from_secs(30), || {
            let logs = self.logs();
            match logs.split("admin API listening on ").nth(1) {
                Some(rest) => {
                    url = format!("http://{}", rest.split_whitespace().next().unwrap_or(""));
                    true
                }
                None => false,
            }
        })
        .await;
        url
    }

    /// SIGKILL: no chance to commit or clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().ok().and_then(|s| s.code())
    }

    /// Waits for the process to exit by itself (e.g. after a fatal error).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.child.as_mut()?;
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Secret values the tests give connectors; none may ever appear in a connector's log.
pub const SECRETS: &[&str] = &[
    "demo-secret",
    "not-the-secret-42",
    ADMIN_TOKEN,
    WEBHOOK_SECRET,
    "not-the-bot-secret",
];
/// The signing secret the webhook tests give the emulator's `hook-signed` bot.
pub const WEBHOOK_SECRET: &str = "e2e-hook-secret-7c1d";
/// The admin token the operations tests set.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-5f3a";

/// Every connector a test ran is checked when it is dropped: its log must not contain a secret
/// or a tenant token (the emulator issues `t-` + 40 hex digits), whatever code path ran.
fn assert_no_secrets(log: &str) {
    for secret in SECRETS {
        assert!(
            !log.contains(secret),
            "a secret ({secret}) leaked into the connector log:\n{log}"
        );
    }
    let token = regex::Regex::new(r"t-[0-9a-f]{20,}").expect("regex");
    assert!(
        !token.is_match(log),
        "a tenant token leaked into the connector log:\n{log}"
    );
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- lark-sink log ({}) ----\n{}",
                self.log.display(),
                self.logs()
            );
        } else {
            let log = self.logs();
            let _ = std::fs::remove_dir_all(&self.dir);
            assert_no_secrets(&log);
        }
    }
}

/// Parses the (partition, offset, index) back out of a lark-sink uuid `ls-<hash>-<p>-<o>-<i>`.
pub fn uuid_coordinates(uuid: &str) -> Option<(i32, i64, usize)> {
    let mut parts = uuid.rsplitn(4, '-');
    let index = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    Some((partition, offset, index))
}

/// One test's world: its own topic, consumer group name, DLQ topic, emulator and producer.
pub struct Scenario {
    pub topic: String,
    /// Connector name, also used as its consumer group.
    pub name: String,
    pub dlq: String,
    pub lark: EmulatorHandle,
    pub partitions: i32,
    producer: Producer,
}

impl Scenario {
    pub async fn new(prefix: &str, partitions: i32) -> Scenario {
        Self::with_emulator(prefix, partitions, EmulatorConfig::default()).await
    }

    pub async fn with_emulator(prefix: &str, partitions: i32, cfg: EmulatorConfig) -> Scenario {
        let topic = unique(prefix);
        create_topic(&topic, partitions).await;
        Scenario {
            name: unique(&format!("{prefix}-sink")),
            dlq: unique(&format!("{prefix}-dlq")),
            lark: start_emulator_with(cfg).await,
            partitions,
            producer: Producer::new(),
            topic,
        }
    }

    /// Produces a JSON record (partition chosen by the producer) and returns (partition, offset).
    pub async fn send(&self, value: &Value) -> (i32, i64) {
        self.producer.send_json(&self.topic, None, value).await
    }

    /// Produces a JSON record with a key (the default partitioner hashes it to a partition).
    pub async fn send_keyed(&self, key: &str, value: &Value) -> (i32, i64) {
        self.producer
            .send(
                &self.topic,
                None,
                Some(key),
                value.to_string().as_bytes(),
                &[],
            )
            .await
    }

    pub async fn send_to(&self, partition: i32, value: &Value) -> (i32, i64) {
        self.producer
            .send_json(&self.topic, Some(partition), value)
            .await
    }

    pub async fn send_raw(
        &self,
        key: Option<&str>,
        value: &[u8],
        headers: &[(&str, &str)],
    ) -> (i32, i64) {
        self.producer
            .send(&self.topic, None, key, value, headers)
            .await
    }

    /// Produces a keyed record whose value may be absent (a tombstone).
    pub async fn send_value(&self, key: &str, value: Option<&[u8]>) -> (i32, i64) {
        self.producer
            .send_value(&self.topic, None, Some(key), value, &[])
            .await
    }

    /// A connector config with `errors.tolerance=all` and this scenario's DLQ.
    pub fn config(&self) -> Value {
        connector_config(&self.name, &self.topic, &self.lark, Some(&self.dlq))
    }

    /// A connector config with Connect's default `errors.tolerance=none` and no DLQ.
    pub fn strict_config(&self) -> Value {
        connector_config(&self.name, &self.topic, &self.lark, None)
    }

    pub fn committed(&self) -> Vec<i64> {
        committed(&self.name, &self.topic, self.partitions)
    }

    pub fn dead_letters(&self, expected: usize, timeout: Duration) -> Vec<ReadRecord> {
        read_topic(&self.dlq, expected, timeout)
    }

    /// The `text` field of every message the emulator accepted, in acceptance order.
    pub fn texts(&self) -> Vec<String> {
        self.lark
            .messages()
            .iter()
            .filter_map(|m| {
                m.content
                    .get("text")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect()
    }
}
