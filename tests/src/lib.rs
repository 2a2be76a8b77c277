//! Harness for the end-to-end tests: the real `lark-sink` binary, a real Kafka-protocol broker
//! (tansu, started by `scripts/broker.sh`), and the Lark emulator over real HTTP.
//!
//! Every test gets its own topics, consumer group and emulator, so tests run in parallel against
//! one shared broker. The broker address comes from `LARK_SINK_TEST_BROKER`, which
//! `scripts/test.sh` exports after starting the broker; without it the tests fail with a message
//! saying how to start one, never silently pass. The secured brokers (TLS, SASL over TLS) of
//! `scripts/broker.sh start-secure` are reached through [`KafkaAccess`].
//!
//! The secret scan: everything the suite reads back from lark-sink (every connector's log, every
//! admin API answer including `/metrics`, every record read from a topic, every `lark-sink`
//! command's output) passes through [`assert_no_secrets`], which panics naming where a secret,
//! tenant token or webhook secret showed up. Tests read only through these helpers:
//! `tests/security.rs` fails if a test file talks to Kafka or HTTP directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

pub mod audit;
pub mod broker;

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

/// How a test client (and a connector) reaches Kafka: the plain broker, or a secured one.
#[derive(Clone, Debug)]
pub struct KafkaAccess {
    /// librdkafka properties, `bootstrap.servers` included.
    pub props: Vec<(String, String)>,
}

/// The SASL password of the secured broker's test user (`scripts/broker.sh` creates the user).
pub const KAFKA_PASSWORD: &str = "e2e-kafka-password-9b2e";

fn secure_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set. The security tests need the secured brokers: run `scripts/test.sh`, \
             or `scripts/broker.sh start-secure` and `source $LARK_SINK_BROKER_DIR-secure/env` \
             (it prints the path) before `cargo test`"
        )
    })
}

impl KafkaAccess {
    /// The plain broker (`LARK_SINK_TEST_BROKER`), as every other test uses it.
    pub fn plain() -> Self {
        Self::at(&broker())
    }

    /// A plain broker at `bootstrap` (the benchmark's `--broker`).
    pub fn at(bootstrap: &str) -> Self {
        KafkaAccess {
            props: vec![("bootstrap.servers".into(), bootstrap.into())],
        }
    }

    /// TLS (`security.protocol=SSL`) verified against the test CA.
    pub fn ssl() -> Self {
        KafkaAccess {
            props: vec![
                (
                    "bootstrap.servers".into(),
                    secure_env("LARK_SINK_TEST_BROKER_SSL"),
                ),
                ("security.protocol".into(), "SSL".into()),
                (
                    "ssl.ca.location".into(),
                    secure_env("LARK_SINK_TEST_BROKER_CA"),
                ),
            ],
        }
    }

    /// SASL over TLS with `mechanism` (`SCRAM-SHA-256` or `SCRAM-SHA-512`) as the test user.
    pub fn sasl_ssl(mechanism: &str) -> Self {
        KafkaAccess {
            props: vec![
                (
                    "bootstrap.servers".into(),
                    secure_env("LARK_SINK_TEST_BROKER_SASL_SSL"),
                ),
                ("security.protocol".into(), "SASL_SSL".into()),
                (
                    "ssl.ca.location".into(),
                    secure_env("LARK_SINK_TEST_BROKER_CA"),
                ),
                ("sasl.mechanism".into(), mechanism.into()),
                (
                    "sasl.username".into(),
                    secure_env("LARK_SINK_TEST_KAFKA_USER"),
                ),
                ("sasl.password".into(), KAFKA_PASSWORD.into()),
            ],
        }
    }

    /// The same access with one property replaced (a wrong password, another CA).
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.props.retain(|(k, _)| k != key);
        self.props.push((key.into(), value.into()));
        self
    }

    pub fn bootstrap(&self) -> &str {
        self.props
            .iter()
            .find(|(k, _)| k == "bootstrap.servers")
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// A librdkafka config with these properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.props {
            c.set(k, v);
        }
        c
    }

    /// Writes these properties into a connector config as `kafka.*` keys.
    pub fn apply_to(&self, config: &mut Value) {
        for (k, v) in &self.props {
            config["config"][format!("kafka.{k}")] = json!(v);
        }
    }
}

pub async fn create_topic(topic: &str, partitions: i32) {
    create_topic_on(&KafkaAccess::plain(), topic, partitions).await
}

pub async fn create_topic_on(kafka: &KafkaAccess, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        kafka.client_config().create().expect("admin client");
    let mut attempt = 1;
    loop {
        let res = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
            )
            .await;
        match res {
            Ok(results) => {
                for r in results {
                    match r {
                        Ok(_) => {}
                        // An earlier attempt that timed out on our side may have created it.
                        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if attempt > 1 => {}
                        Err((name, code)) => panic!("creating topic {name}: {code}"),
                    }
                }
                return;
            }
            Err(e) if attempt < BROKER_QUERY_ATTEMPTS => {
                eprintln!(
                    "creating topic {topic}: {e}; asking again ({attempt}/{BROKER_QUERY_ATTEMPTS})"
                );
                attempt += 1;
            }
            Err(e) => panic!("create_topics request: {e}"),
        }
    }
}

/// How many times the harness asks the broker an administrative question (metadata, configs,
/// watermarks, committed offsets, topic creation) before it fails the test. The unoptimised test
/// broker serves one storage request at a time; on a loaded 2-core CI machine (a state restore
/// or a storm beside) a single request can wait past its timeout, which says nothing about the
/// answer the test is after.
pub const BROKER_QUERY_ATTEMPTS: u32 = 6;

/// Runs `query` until it succeeds, at most [`BROKER_QUERY_ATTEMPTS`] times, saying on stderr
/// what failed; panics with the last error.
fn asking_again<T, E: std::fmt::Display>(what: &str, mut query: impl FnMut() -> Result<T, E>) -> T {
    let mut attempt = 1;
    loop {
        match query() {
            Ok(v) => return v,
            Err(e) if attempt < BROKER_QUERY_ATTEMPTS => {
                eprintln!("{what}: {e}; asking again ({attempt}/{BROKER_QUERY_ATTEMPTS})");
                attempt += 1;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

pub struct Producer {
    inner: FutureProducer,
}

impl Producer {
    pub fn new() -> Self {
        Self::on(&KafkaAccess::plain())
    }

    pub fn on(kafka: &KafkaAccess) -> Self {
        let inner = kafka
            .client_config()
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
///
/// Every record read is scanned for secrets ([`assert_no_secrets`]): key, value and headers.
pub fn read_topic(topic: &str, expected: usize, timeout: Duration) -> Vec<ReadRecord> {
    read_topic_on(&KafkaAccess::plain(), topic, expected, timeout)
}

pub fn read_topic_on(
    kafka: &KafkaAccess,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<ReadRecord> {
    let records = read_topic_unscanned(kafka, topic, expected, timeout);
    for (i, r) in records.iter().enumerate() {
        let place = format!("record {i} of topic {topic}");
        if let Some(k) = &r.key {
            assert_no_secrets(&format!("the key of {place}"), &String::from_utf8_lossy(k));
        }
        if let Some(v) = &r.value {
            assert_no_secrets(
                &format!("the value of {place}"),
                &String::from_utf8_lossy(v),
            );
        }
        for (k, v) in &r.headers {
            assert_no_secrets(&format!("header {k} of {place}"), &format!("{k}: {v}"));
        }
    }
    records
}

/// How many partitions `topic` has, per the broker's metadata (0 when it does not exist yet).
fn partition_count(consumer: &BaseConsumer, topic: &str) -> i32 {
    consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()
        .and_then(|m| {
            m.topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len() as i32)
        })
        .unwrap_or(0)
}

/// A consumer that reads without joining a used group or committing anything.
fn reader(kafka: &KafkaAccess) -> BaseConsumer {
    kafka
        .client_config()
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer")
}

fn read_topic_unscanned(
    kafka: &KafkaAccess,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<ReadRecord> {
    let consumer = reader(kafka);
    let deadline = Instant::now() + timeout;
    let partitions = loop {
        let n = partition_count(&consumer, topic);
        if n > 0 {
            break n;
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

/// Reads every record `topic` holds right now (up to the high watermarks at the call), for
/// audits that must not guess how many records to expect. Empty if the topic does not exist.
pub fn read_to_end(topic: &str, timeout: Duration) -> Vec<ReadRecord> {
    let expected: usize = watermarks_on(&KafkaAccess::plain(), topic)
        .iter()
        .map(|(low, high)| (high - low).max(0) as usize)
        .sum();
    if expected == 0 {
        return Vec::new();
    }
    let got = read_topic(topic, expected, timeout);
    assert_eq!(
        got.len(),
        expected,
        "read only {} of the {expected} records in {topic}",
        got.len()
    );
    got
}

/// The (low, high) watermarks of every partition of `topic`, in partition order (none when the
/// topic does not exist).
pub fn watermarks_on(kafka: &KafkaAccess, topic: &str) -> Vec<(i64, i64)> {
    let consumer = reader(kafka);
    (0..partition_count(&consumer, topic))
        .map(|p| {
            asking_again(&format!("watermarks of {topic}/{p}"), || {
                consumer.fetch_watermarks(topic, p, Duration::from_secs(10))
            })
        })
        .collect()
}

/// The configs the broker reports for `topic` (DescribeConfigs), name → value: to check how a
/// connector created a topic (the state changelog's `cleanup.policy=compact`).
pub async fn topic_configs(topic: &str) -> BTreeMap<String, String> {
    let admin: AdminClient<DefaultClientContext> = KafkaAccess::plain()
        .client_config()
        .create()
        .expect("admin client");
    let mut attempt = 1;
    let res = loop {
        let res = admin
            .describe_configs(
                &[ResourceSpecifier::Topic(topic)],
                &AdminOptions::new().request_timeout(Some(Duration::from_secs(20))),
            )
            .await;
        match res {
            Ok(res) => break res,
            Err(e) if attempt < BROKER_QUERY_ATTEMPTS => {
                eprintln!("describe_configs of {topic}: {e}; asking again ({attempt}/{BROKER_QUERY_ATTEMPTS})");
                attempt += 1;
            }
            Err(e) => panic!("describe_configs request: {e}"),
        }
    };
    let mut out = BTreeMap::new();
    for r in res {
        let resource = r.unwrap_or_else(|code| panic!("describing topic {topic}: {code}"));
        for entry in resource.entries {
            if let Some(v) = entry.value {
                out.insert(entry.name, v);
            }
        }
    }
    out
}

/// Whether `topic` exists on the broker (a metadata request that never creates it).
pub fn topic_exists(topic: &str) -> bool {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("allow.auto.create.topics", "false")
        .create()
        .expect("consumer");
    let md = asking_again("metadata", || {
        c.fetch_metadata(None, Duration::from_secs(10))
    });
    md.topics().iter().any(|t| t.name() == topic)
}

/// The committed offset of each partition `0..partitions` of `topic` for `group` (-1 = none).
pub fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    committed_on(&KafkaAccess::plain(), group, topic, partitions)
}

/// Asked up to [`BROKER_QUERY_ATTEMPTS`] times (10 s each): a broker busy at full CPU (a state
/// restore on a loaded 2-core CI machine) can let metadata requests time out, which says nothing
/// about the offsets.
pub fn committed_on(kafka: &KafkaAccess, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    asking_again(&format!("committed offsets of {topic}"), || {
        try_committed_on(kafka, group, topic, partitions)
    })
}

/// [`committed_on`] that returns the broker's error instead of panicking, for callers that poll
/// through a passing failure (the benchmark's soak waits for its commits this way).
pub fn try_committed_on(
    kafka: &KafkaAccess,
    group: &str,
    topic: &str,
    partitions: i32,
) -> KafkaResult<Vec<i64>> {
    let consumer: BaseConsumer = kafka.client_config().set("group.id", group).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let res = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok((0..partitions)
        .map(|p| match res.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect())
}

/// The value of a `/metrics` line `name{labels} value` (labels given as a substring; the sum
/// over the lines that match), or 0.
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The random generator of a test's kill moments: seeded from `LARK_SINK_CRASH_SEED` when set,
/// else at random; the seed is printed so that a failing run can be replayed.
pub fn kill_moments() -> rand::rngs::StdRng {
    use rand::SeedableRng;
    let seed: u64 = std::env::var("LARK_SINK_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("kill moments from seed {seed} (rerun with LARK_SINK_CRASH_SEED={seed})");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Held while a test that loads the test broker heavily runs (a storm): tests taking the same
/// `name` run one at a time, across test executables too. The lock is a listening socket on a
/// port below Linux's ephemeral range derived from `name`: only one process can hold it, and it is
/// released when the guard drops or the process dies (a lock file would outlive a SIGKILL, and
/// `File::lock` is newer than this workspace's MSRV). The unoptimised test broker serves one
/// storage request at a time; two storms beside the other executables made its metadata
/// answers time out on CI.
pub async fn exclusive(name: &str) -> std::net::TcpListener {
    let port = 28_000
        + (name
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
            % 1000) as u16;
    let started = Instant::now();
    loop {
        if let Ok(held) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return held;
        }
        if started.elapsed() > Duration::from_secs(900) {
            panic!("the '{name}' lock (127.0.0.1:{port}) was not free for 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `f` every 100 ms until it is true; panics with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    wait_until_every(what, timeout, Duration::from_millis(100), f).await
}

/// [`wait_until`], polling every `every` (the benchmark times its runs by it: 50 ms).
pub async fn wait_until_every(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(every).await;
    }
}

pub async fn start_emulator() -> EmulatorHandle {
    start_emulator_with(EmulatorConfig::default()).await
}

pub async fn start_emulator_with(cfg: EmulatorConfig) -> EmulatorHandle {
    let emulator = Emulator::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("start emulator");
    remember(&emulator);
    emulator
}

/// An emulator served over HTTPS with `tls` (see [`TlsFiles`]).
pub async fn start_emulator_tls(cfg: EmulatorConfig, tls: &TlsFiles) -> EmulatorHandle {
    let cert = std::fs::read(&tls.cert).expect("read the server certificate");
    let key = std::fs::read(&tls.key).expect("read the server key");
    let emulator = Emulator::start_tls(cfg, SocketAddr::from(([127, 0, 0, 1], 0)), &cert, &key)
        .await
        .expect("start the HTTPS emulator");
    remember(&emulator);
    emulator
}

/// Every emulator this test process started: the secret scan asks them for the app secrets,
/// webhook secrets and tenant tokens they know.
static EMULATORS: std::sync::Mutex<Vec<EmulatorHandle>> = std::sync::Mutex::new(Vec::new());

fn remember(emulator: &EmulatorHandle) {
    EMULATORS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(emulator.clone());
}

/// A throwaway CA and a server certificate it signed (CN localhost, SAN localhost and
/// 127.0.0.1), made with the `openssl` command in a fresh directory.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn generate() -> TlsFiles {
        let dir = std::env::temp_dir().join(unique("tls"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect(
                    "the openssl command (Debian package 'openssl'; scripts/test.sh installs it)",
                );
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=lark-sink e2e CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        run(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            dir,
        }
    }
}

/// A connector config for `topic`, talking to `emulator` with the demo app's credentials.
pub fn connector_config(
    name: &str,
    topic: &str,
    emulator: &EmulatorHandle,
    dlq: Option<&str>,
) -> Value {
    connector_config_on(&KafkaAccess::plain(), name, topic, emulator, dlq)
}

/// [`connector_config`] for a connector reaching Kafka through `kafka`.
pub fn connector_config_on(
    kafka: &KafkaAccess,
    name: &str,
    topic: &str,
    emulator: &EmulatorHandle,
    dlq: Option<&str>,
) -> Value {
    let mut cfg = json!({
        "topics": topic,
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
    // librdkafka's debug contexts for every connector a test starts, e.g. `cgrp` to see the group
    // protocol (with LARK_SINK_TEST_LOG letting librdkafka's debug lines through).
    if let Ok(contexts) = std::env::var("LARK_SINK_TEST_KAFKA_DEBUG") {
        cfg["kafka.debug"] = json!(contexts);
    }
    let mut cfg = json!({"name": name, "config": cfg});
    kafka.apply_to(&mut cfg);
    cfg
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

/// How [`Connector::launch`] starts `lark-sink run`, for a caller that measures the process
/// rather than tests it (the benchmark, `bench/`).
#[derive(Clone, Debug)]
pub struct Launch {
    /// The `lark-sink` binary (the tests use [`sink_bin`]).
    pub bin: PathBuf,
    /// A program and its arguments to run the binary under, e.g. a profiler; empty: none.
    pub wrapper: Vec<String>,
    /// The connector's `LARK_SINK_LOG`.
    pub log_filter: String,
    /// The connector's log on this process's stderr instead of its log file.
    pub log_to_stderr: bool,
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
        let mut cmd = Command::new(sink_bin());
        cmd.args(args);
        // LARK_SINK_TEST_LOG replaces the filter, e.g. to see librdkafka's debug lines.
        let filter = std::env::var("LARK_SINK_TEST_LOG")
            .unwrap_or_else(|_| "info,lark_sink=debug,librdkafka=warn,rdkafka=warn".into());
        Self::spawn_command(config, cmd, env, &filter, false)
    }

    /// Starts `lark-sink run --config` the way `launch` says: another binary, under a wrapper,
    /// with another log filter. For callers that measure the process rather than test it.
    pub fn launch(config: &Value, launch: &Launch) -> Connector {
        let mut words = launch.wrapper.iter();
        let cmd = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(&launch.bin);
                c
            }
            None => Command::new(&launch.bin),
        };
        Self::spawn_command(config, cmd, &[], &launch.log_filter, launch.log_to_stderr)
    }

    /// `cmd` (the binary, with what goes before `run`) `run --config <config in a temp dir>`,
    /// its log in that directory (or on this process's stderr with `log_to_stderr`).
    fn spawn_command(
        config: &Value,
        mut cmd: Command,
        env: &[(&str, &str)],
        log_filter: &str,
        log_to_stderr: bool,
    ) -> Connector {
        let dir = std::env::temp_dir().join(unique("lark-sink-e2e"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cfg_path = dir.join("connector.json");
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(config).expect("json"))
            .expect("write config");
        let log = dir.join("connector.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        cmd.arg("run")
            .arg("--config")
            .arg(&cfg_path)
            .envs(env.iter().copied())
            .env("LARK_SINK_LOG", log_filter)
            .stdout(Stdio::null());
        if log_to_stderr {
            cmd.stderr(Stdio::inherit());
        } else {
            cmd.stderr(log_file);
        }
        let child = cmd.spawn().expect("spawn lark-sink");
        Connector {
            child: Some(child),
            log,
            dir,
        }
    }

    /// The process id while it runs (for `/proc/<pid>`); `None` once it was stopped or killed.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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

/// Secret values the tests give connectors; none may ever appear in anything lark-sink writes.
pub const SECRETS: &[&str] = &[
    "demo-secret",
    "not-the-secret-42",
    ADMIN_TOKEN,
    WEBHOOK_SECRET,
    "not-the-bot-secret",
    KAFKA_PASSWORD,
    WRONG_KAFKA_PASSWORD,
];
/// The signing secret the webhook tests give the emulator's `hook-signed` bot.
pub const WEBHOOK_SECRET: &str = "e2e-hook-secret-7c1d";
/// The admin token the operations tests set.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-5f3a";
/// The wrong SASL password the security tests try.
pub const WRONG_KAFKA_PASSWORD: &str = "e2e-wrong-kafka-password-31c4";

/// Every secret the suite knows of: [`SECRETS`], plus, from every emulator this process started,
/// its apps' secrets, its webhooks' hook tokens (the last segment of a custom bot's URL, which is
/// all it takes to post to the group) and signing secrets, and every tenant token it issued.
pub fn known_secrets() -> Vec<String> {
    let mut all: Vec<String> = SECRETS.iter().map(|s| s.to_string()).collect();
    for emulator in EMULATORS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let dir = emulator.directory();
        all.extend(dir.apps.iter().map(|a| a.app_secret.clone()));
        all.extend(dir.webhooks.iter().map(|w| w.token.clone()));
        all.extend(dir.webhooks.iter().filter_map(|w| w.secret.clone()));
        all.extend(emulator.issued_tokens());
    }
    all.retain(|s| s.len() >= 8); // a short "secret" would match ordinary text
    all.sort();
    all.dedup();
    all
}

/// Panics, naming `place`, if `text` contains a known secret ([`known_secrets`]) or anything
/// shaped like a tenant token (the emulator issues `t-` + 40 hex digits). Every read of what
/// lark-sink wrote goes through this.
pub fn assert_no_secrets(place: &str, text: &str) {
    for secret in known_secrets() {
        assert!(
            !text.contains(&secret),
            "a secret ({secret}) leaked into {place}:\n{text}"
        );
    }
    let token = regex::Regex::new(r"t-[0-9a-f]{20,}").expect("regex");
    if let Some(m) = token.find(text) {
        panic!(
            "a tenant token ({}) leaked into {place}:\n{text}",
            m.as_str()
        );
    }
}

/// What a `lark-sink` command printed, already scanned for secrets.
#[derive(Debug)]
pub struct SinkOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `lark-sink ARGS` to completion (e.g. `send`, `--help`) and scans what it printed.
pub fn run_sink<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> SinkOutput {
    let out = Command::new(sink_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run lark-sink");
    let o = SinkOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let what = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    assert_no_secrets(&format!("the output of `lark-sink {what}`"), &o.stdout);
    assert_no_secrets(&format!("the errors of `lark-sink {what}`"), &o.stderr);
    o
}

/// A client of a connector's admin API. Every answer (probes, `/metrics`, the REST API, error
/// bodies) is scanned for secrets before the test sees it.
pub struct Admin {
    pub base: String,
    http: reqwest::Client,
}

/// The HTTP methods the admin API uses.
pub use reqwest::Method;

impl Admin {
    pub async fn of(c: &Connector) -> Admin {
        Admin {
            base: c.admin_url().await,
            http: reqwest::Client::new(),
        }
    }

    /// `method path` with the bearer token `token` (none when `None`); (status, body).
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin API reachable");
        let status = resp.status().as_u16();
        let mut text = String::new();
        for (k, v) in resp.headers() {
            text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        let body = resp.text().await.unwrap_or_default();
        text.push_str(&body);
        assert_no_secrets(&format!("the admin API's answer to {method} {path}"), &text);
        (status, body)
    }

    /// `method path`, with [`ADMIN_TOKEN`] when `token` is true.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: bool,
        body: Option<Value>,
    ) -> (u16, String) {
        self.call_with(method, path, token.then_some(ADMIN_TOKEN), body)
            .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (s, body) = self.call(Method::GET, path, true, None).await;
        (s, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// A `/metrics` scrape (with [`ADMIN_TOKEN`]).
    pub async fn metrics(&self) -> String {
        self.call(Method::GET, "/metrics", true, None).await.1
    }
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
            assert_no_secrets("the connector log", &log);
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
    /// How this scenario's clients and connectors reach Kafka.
    pub kafka: KafkaAccess,
    producer: Producer,
}

impl Scenario {
    pub async fn new(prefix: &str, partitions: i32) -> Scenario {
        Self::with_emulator(prefix, partitions, EmulatorConfig::default()).await
    }

    pub async fn with_emulator(prefix: &str, partitions: i32, cfg: EmulatorConfig) -> Scenario {
        Self::on(
            KafkaAccess::plain(),
            prefix,
            partitions,
            start_emulator_with(cfg).await,
        )
        .await
    }

    /// A scenario on the broker `kafka` reaches, delivering to `lark`.
    pub async fn on(
        kafka: KafkaAccess,
        prefix: &str,
        partitions: i32,
        lark: EmulatorHandle,
    ) -> Scenario {
        let topic = unique(prefix);
        create_topic_on(&kafka, &topic, partitions).await;
        Scenario {
            name: unique(&format!("{prefix}-sink")),
            dlq: unique(&format!("{prefix}-dlq")),
            lark,
            partitions,
            producer: Producer::on(&kafka),
            kafka,
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

    /// Produces raw bytes to one partition (for values that are not JSON).
    pub async fn send_raw_to(&self, partition: i32, value: &[u8]) -> (i32, i64) {
        self.producer
            .send(&self.topic, Some(partition), None, value, &[])
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
        connector_config_on(
            &self.kafka,
            &self.name,
            &self.topic,
            &self.lark,
            Some(&self.dlq),
        )
    }

    /// A connector config with Connect's default `errors.tolerance=none` and no DLQ.
    pub fn strict_config(&self) -> Value {
        connector_config_on(&self.kafka, &self.name, &self.topic, &self.lark, None)
    }

    pub fn committed(&self) -> Vec<i64> {
        committed_on(&self.kafka, &self.name, &self.topic, self.partitions)
    }

    /// The dead letters (read through [`read_topic_on`], so scanned for secrets).
    pub fn dead_letters(&self, expected: usize, timeout: Duration) -> Vec<ReadRecord> {
        read_topic_on(&self.kafka, &self.dlq, expected, timeout)
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
