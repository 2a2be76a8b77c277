//! What every scenario does the same way: name its topics, produce its backlog, start its
//! emulator, wait for a condition, and print a figure beside its goal. The Kafka and process
//! plumbing comes from the e2e harness (`lark-sink-e2e`); what is here is the benchmark's own.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lark_emulator::{Directory, Emulator, EmulatorConfig, EmulatorHandle, Limits};
use lark_sink_e2e::KafkaAccess;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

/// How often a scenario checks what it waits for. Runs are timed by these checks (the engine
/// scenario's delivery time ends at the first check that sees every message), so it stays 50 ms
/// for the figures to stay comparable.
const POLL: Duration = Duration::from_millis(50);

/// Milliseconds since the epoch, the clock of the emulator's `received_at_ms`.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A topic, group or directory name no earlier run used, marked as the benchmark's.
pub fn name(prefix: &str) -> String {
    lark_sink_e2e::unique(&format!("bench-{prefix}"))
}

/// A text message envelope for `receiver`.
pub fn text(receiver: &str, body: String) -> String {
    json!({"receiveId": receiver, "content": {"text": body}}).to_string()
}

/// An emulator with `receivers` generated users (`ou_gen_0`, …) and `limits`. Not the harness's
/// `start_emulator_with`: that one keeps every emulator (and every message it accepted) for the
/// tests' secret scan until the process ends, which over a full run is millions of messages.
pub async fn emulator(limits: Limits, receivers: usize) -> anyhow::Result<EmulatorHandle> {
    emulator_with(EmulatorConfig {
        directory: Directory::with_generated(receivers, 0),
        limits,
        ..EmulatorConfig::default()
    })
    .await
}

/// An emulator with the whole of `cfg` (the soak adds faults), on a free loopback port.
pub async fn emulator_with(cfg: EmulatorConfig) -> anyhow::Result<EmulatorHandle> {
    Ok(Emulator::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0))).await?)
}

/// Throttle answers the emulator gave, of every kind.
pub fn throttles(lark: &EmulatorHandle) -> u64 {
    let s = lark.stats();
    s.throttled_app + s.throttled_receiver + s.throttled_webhook
}

/// One figure and its goal, aligned (the layout docs/performance.md quotes).
pub fn row(name: &str, value: String, goal: &str) {
    println!("  {name:<44} {value:>16}   goal {goal}");
}

/// The row every scenario at Lark's real limits ends with: a client within them is never throttled.
pub fn throttle_row(lark: &EmulatorHandle) {
    row(
        "throttle responses from Lark",
        throttles(lark).to_string(),
        "0",
    );
}

/// The broker's produce rate, printed beside the figures it bounds.
pub fn produce_rate_row(rate: f64) {
    row(
        "broker produce rate (records/s, for context)",
        format!("{rate:.0}"),
        "-",
    );
}

/// Waits (checking every [`POLL`]) until `f` is true; panics naming `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    lark_sink_e2e::wait_until_every(what, timeout, POLL, f).await
}

/// Produces `n` records as fast as the broker takes them; `record(i)` gives (key, value).
/// Returns the produce rate.
pub async fn produce_many(
    kafka: &KafkaAccess,
    topic: &str,
    n: usize,
    record: impl Fn(usize) -> (String, String),
) -> anyhow::Result<f64> {
    let producer: FutureProducer = kafka
        .client_config()
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("message.timeout.ms", "300000")
        .create()?;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(50_000);
    for i in 0..n {
        let (key, value) = record(i);
        loop {
            match producer.send_result(FutureRecord::to(topic).key(&key).payload(&value)) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        if pending.len() >= 50_000 {
            for f in pending.drain(..) {
                f.await
                    .map_err(|_| anyhow::anyhow!("produce cancelled"))?
                    .map_err(|(e, _)| e)?;
            }
            if n >= 200_000 {
                eprint!("\r  produced {}/{n}", i + 1);
            }
        }
    }
    for f in pending {
        f.await
            .map_err(|_| anyhow::anyhow!("produce cancelled"))?
            .map_err(|(e, _)| e)?;
    }
    if n >= 200_000 {
        eprintln!();
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}
