//! `lark-sink-bench`: the delivery engine's figures, measured end to end.
//!
//! Each scenario produces records to a real broker, runs the real `lark-sink run` binary as a
//! child process against an in-process Lark emulator, and reads the figures off what the emulator
//! accepted and what the child process used (`/proc/<pid>`: CPU ticks, peak RSS). Nothing here is
//! a pass/fail test; the figures and their goals are printed side by side, and
//! `docs/performance.md` records them with the command that produced them. It was the
//! `lark-sink bench` subcommand; it lives outside the product so the shipped binary carries no
//! benchmark. `scripts/bench.sh` builds both binaries and runs it.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

use lark_emulator::{Directory, Emulator, EmulatorConfig, EmulatorHandle, Limits};

/// The same allocator as the `lark-sink` binary: the in-process emulator's figures stay
/// comparable with those measured when the benchmark was a subcommand of it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measure the delivery engine (see docs/performance.md); needs a running broker.
#[derive(Parser)]
#[command(name = "lark-sink-bench")]
struct Cli {
    /// Bootstrap servers of the broker to produce to and consume from.
    #[arg(long, default_value = "127.0.0.1:19092")]
    broker: String,
    /// Scenarios to run, comma-separated: ceiling, hot, engine, latency, memory, and soak
    /// (not in the default set: fault-injected endurance run, docs/reliability.md).
    #[arg(long, default_value = "ceiling,hot,engine,latency,memory")]
    scenario: String,
    /// Smaller volumes and shorter runs.
    #[arg(long)]
    quick: bool,
    /// Record count for the soak (default 1 000 000; 100 000 with --quick).
    #[arg(long)]
    records: Option<usize>,
    /// The `lark-sink` binary to measure (default: target/release/lark-sink of this workspace).
    #[arg(long, env = "LARK_SINK_BIN")]
    bin: Option<PathBuf>,
}

/// The release `lark-sink` of the workspace this benchmark was built in: the bench binary sits in
/// `target/<profile>/`, so `target/release/lark-sink` is two levels up.
fn default_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .and_then(|d| d.parent())
        .map(|t| t.join("release").join("lark-sink"))
        .ok_or_else(|| anyhow::anyhow!("no target directory above {}", exe.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // The bench process's own log (the emulator, the producers): warnings only, as before.
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("LARK_SINK_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,librdkafka=error,rdkafka=error")
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let bin = match cli.bin {
        Some(b) => b,
        None => default_bin()?,
    };
    anyhow::ensure!(
        bin.is_file(),
        "{} not found: build it with `cargo build --release -p lark-sink`, or name the binary to \
         measure with --bin or LARK_SINK_BIN",
        bin.display()
    );
    let opts = BenchOptions {
        broker: cli.broker,
        scenarios: cli
            .scenario
            .split(',')
            .map(|s| s.trim().to_string())
            .collect(),
        quick: cli.quick,
        records: cli.records,
        bin,
    };
    run(&opts).await?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Which scenarios to run and how big.
#[derive(Debug, Clone)]
struct BenchOptions {
    pub broker: String,
    pub scenarios: Vec<String>,
    /// Smaller volumes and shorter runs (minutes instead of a quarter hour).
    pub quick: bool,
    /// Overrides the record count of `soak`.
    pub records: Option<usize>,
    /// The `lark-sink` binary under measurement.
    pub bin: PathBuf,
}

async fn run(opts: &BenchOptions) -> Result<(), BenchError> {
    println!(
        "lark-sink bench: broker {}, {} mode, {} cores",
        opts.broker,
        if opts.quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for s in &opts.scenarios {
        let started = Instant::now();
        match s.as_str() {
            "ceiling" => ceiling(opts).await?,
            "hot" => hot_receiver(opts).await?,
            "engine" => engine(opts).await?,
            "latency" => latency(opts).await?,
            "memory" => memory(opts).await?,
            "soak" => soak(opts).await?,
            other => return Err(BenchError::Other(format!("unknown scenario '{other}'"))),
        }
        println!("  ({s} took {:.0} s)\n", started.elapsed().as_secs_f64());
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unique(prefix: &str) -> String {
    format!("bench-{prefix}-{}-{}", std::process::id(), now_ms())
}

async fn create_topic(broker: &str, topic: &str, partitions: i32) -> Result<(), BenchError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &opts,
        )
        .await?
    {
        r.map_err(|(t, e)| BenchError::Other(format!("create topic {t}: {e}")))?;
    }
    Ok(())
}

/// Produces `n` records as fast as the broker takes them; `record(i)` gives (key, value).
/// Returns the produce rate.
async fn produce_many(
    broker: &str,
    topic: &str,
    n: usize,
    record: impl Fn(usize) -> (String, String),
) -> Result<f64, BenchError> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
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
                    .map_err(|_| BenchError::Other("produce cancelled".into()))?
                    .map_err(|(e, _)| e)?;
            }
            if n >= 200_000 {
                eprint!("\r  produced {}/{n}", i + 1);
            }
        }
    }
    for f in pending {
        f.await
            .map_err(|_| BenchError::Other("produce cancelled".into()))?
            .map_err(|(e, _)| e)?;
    }
    if n >= 200_000 {
        eprintln!();
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn text(receiver: &str, body: String) -> String {
    json!({"receiveId": receiver, "content": {"text": body}}).to_string()
}

async fn emulator(limits: Limits, receivers: usize) -> Result<EmulatorHandle, BenchError> {
    let cfg = EmulatorConfig {
        directory: Directory::with_generated(receivers, 0),
        limits,
        ..EmulatorConfig::default()
    };
    Ok(Emulator::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0))).await?)
}

/// How long a sink may take to deliver its first message: a minute, or ten under a profiler.
fn startup_timeout() -> Duration {
    match std::env::var("LARK_SINK_BENCH_WRAPPER") {
        Ok(w) if !w.trim().is_empty() => Duration::from_secs(600),
        _ => Duration::from_secs(60),
    }
}

/// The `lark-sink run` child process under measurement.
struct Sink {
    child: Child,
    dir: PathBuf,
}

impl Sink {
    fn start(
        o: &BenchOptions,
        topic: &str,
        lark: &EmulatorHandle,
        extra: Value,
    ) -> Result<Sink, BenchError> {
        let dir = std::env::temp_dir().join(unique("sink"));
        std::fs::create_dir_all(&dir)?;
        let mut cfg = json!({
            "topics": topic,
            "kafka.bootstrap.servers": o.broker,
            "kafka.group.id": unique("group"),
            "lark.app.id": "cli_demo_app",
            "lark.app.secret": "demo-secret",
            "lark.domain": lark.base_url(),
            "offset.flush.interval.ms": "1000",
        });
        // LARK_SINK_BENCH_CONFIG (a JSON object of connector settings) wins over the scenario's own,
        // to try a setting without editing the benchmark (docs/performance.md).
        let overrides = match std::env::var("LARK_SINK_BENCH_CONFIG") {
            Ok(text) if !text.trim().is_empty() => serde_json::from_str::<Value>(&text)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| {
                    BenchError::Other("LARK_SINK_BENCH_CONFIG must be a JSON object".into())
                })?,
            _ => json!({}),
        };
        for layer in [&extra, &overrides] {
            if let (Some(c), Some(e)) = (cfg.as_object_mut(), layer.as_object()) {
                for (k, v) in e {
                    c.insert(k.clone(), v.clone());
                }
            }
        }
        let path = dir.join("bench.json");
        std::fs::File::create(&path)?.write_all(
            json!({"name": "bench", "config": cfg})
                .to_string()
                .as_bytes(),
        )?;
        let log = std::fs::File::create(dir.join("sink.log"))?;
        // LARK_SINK_BENCH_WRAPPER runs the sink under a profiler, e.g.
        // "valgrind --tool=callgrind --callgrind-out-file=/tmp/sink.cg" (docs/performance.md).
        let wrapper = std::env::var("LARK_SINK_BENCH_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut cmd = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(&o.bin);
                c
            }
            None => Command::new(&o.bin),
        };
        cmd.args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null());
        // LARK_SINK_BENCH_LOG=<filter> shows the measured connector's log on stderr.
        match std::env::var("LARK_SINK_BENCH_LOG") {
            Ok(filter) if !filter.trim().is_empty() => {
                cmd.env("LARK_SINK_LOG", filter).stderr(Stdio::inherit())
            }
            _ => cmd.env("LARK_SINK_LOG", "warn").stderr(log),
        };
        let child = cmd.spawn()?;
        Ok(Sink { child, dir })
    }

    /// CPU seconds (user + system) the child has used so far.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the `(comm)` field; utime and stime are the 12th and 13th of those.
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / 100.0 // USER_HZ is 100 on Linux
    }

    /// Peak resident set size of the child, in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_for(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            return Err(BenchError::Other(format!("timed out waiting for {what}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// CPU seconds this process (the orchestrator, with the in-process emulator) has used.
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn throttles(lark: &EmulatorHandle) -> u64 {
    let s = lark.stats();
    s.throttled_app + s.throttled_receiver + s.throttled_webhook
}

fn row(name: &str, value: String, goal: &str) {
    println!("  {name:<44} {value:>16}   goal {goal}");
}

/// 3 minutes at Lark's ceiling with ≥ 200 receivers and the emulator's real limits.
async fn ceiling(o: &BenchOptions) -> Result<(), BenchError> {
    let minutes = if o.quick { 1 } else { 3 };
    let receivers = 250;
    println!("ceiling: {receivers} receivers, real Lark limits, {minutes} min");
    let topic = unique("ceiling");
    create_topic(&o.broker, &topic, 8).await?;
    let n = 1100 * minutes + 500;
    produce_many(&o.broker, &topic, n, |i| {
        let r = format!("ou_gen_{}", i % receivers);
        (r.clone(), text(&r, format!("m{i}")))
    })
    .await?;
    let lark = emulator(Limits::default(), receivers).await?;
    let sink = Sink::start(o, &topic, &lark, json!({}))?;
    wait_for("first delivery", startup_timeout(), || {
        lark.stats().accepted > 0
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(60 * minutes as u64)).await;
    sink.stop();
    let msgs = lark.messages();
    let start = msgs.first().map_or(0, |m| m.received_at_ms);
    for m in 0..minutes as u64 {
        let count = msgs
            .iter()
            .filter(|x| {
                x.received_at_ms >= start + m * 60_000
                    && x.received_at_ms < start + (m + 1) * 60_000
            })
            .count();
        row(
            &format!("messages delivered in minute {}", m + 1),
            count.to_string(),
            "≥ 990 of 1000",
        );
    }
    // The busiest sliding minute, as Lark would count it.
    let times: Vec<u64> = msgs.iter().map(|m| m.received_at_ms).collect();
    let mut busiest = 0;
    let mut j = 0;
    for i in 0..times.len() {
        while times[i] - times[j] >= 60_000 {
            j += 1;
        }
        busiest = busiest.max(i - j + 1);
    }
    row("busiest sliding minute", busiest.to_string(), "≤ 1000");
    row(
        "throttle responses from Lark",
        throttles(&lark).to_string(),
        "0",
    );
    lark.shutdown().await;
    Ok(())
}

/// One receiver with a backlog: exactly 5/s, in order.
async fn hot_receiver(o: &BenchOptions) -> Result<(), BenchError> {
    let n = if o.quick { 30 } else { 60 };
    println!("hot receiver: {n} messages to one receiver, real Lark limits");
    let topic = unique("hot");
    create_topic(&o.broker, &topic, 1).await?;
    produce_many(&o.broker, &topic, n, |i| {
        ("ou_gen_0".into(), text("ou_gen_0", format!("{i}")))
    })
    .await?;
    let lark = emulator(Limits::default(), 1).await?;
    let sink = Sink::start(o, &topic, &lark, json!({}))?;
    wait_for("all delivered", Duration::from_secs(120), || {
        lark.stats().accepted as usize >= n
    })
    .await?;
    sink.stop();
    let msgs = lark.messages();
    let first = msgs.first().map_or(0, |m| m.received_at_ms);
    let last = msgs.last().map_or(0, |m| m.received_at_ms);
    let rate = (n - 1) as f64 / ((last - first) as f64 / 1000.0);
    let in_order = msgs
        .iter()
        .map(|m| {
            m.content["text"]
                .as_str()
                .and_then(|t| t.parse::<usize>().ok())
                .unwrap_or(0)
        })
        .collect::<Vec<_>>()
        == (0..n).collect::<Vec<_>>();
    row(
        "messages per second to one receiver",
        format!("{rate:.2}"),
        "5 (at most)",
    );
    row("delivered in offset order", in_order.to_string(), "true");
    row(
        "throttle responses from Lark",
        throttles(&lark).to_string(),
        "0",
    );
    lark.shutdown().await;
    Ok(())
}

/// The engine itself: limits off, as fast as it goes, from the real broker.
async fn engine(o: &BenchOptions) -> Result<(), BenchError> {
    let n = if o.quick { 20_000 } else { 100_000 };
    let receivers = 1000;
    println!("engine: {n} messages to {receivers} receivers, limits off (emulator and connector)");
    let topic = unique("engine");
    create_topic(&o.broker, &topic, 8).await?;
    let produce_rate = produce_many(&o.broker, &topic, n, |i| {
        let r = format!("ou_gen_{}", i % receivers);
        (r.clone(), text(&r, format!("m{i}")))
    })
    .await?;
    let lark = emulator(Limits::disabled(), receivers).await?;
    let extra = json!({
        "lark.rate.app.per.second": "0", "lark.rate.app.per.minute": "0",
        "lark.rate.receiver.per.second": "0", "buffer.max.messages": "20000",
    });
    let sink = Sink::start(o, &topic, &lark, extra)?;
    wait_for("first delivery", startup_timeout(), || {
        lark.stats().accepted > 0
    })
    .await?;
    let (t0, cpu0, emu0) = (Instant::now(), sink.cpu_seconds(), own_cpu_seconds());
    let done0 = lark.stats().accepted;
    let timeline = std::env::var_os("LARK_SINK_BENCH_TIMELINE").is_some();
    let mut last = (Instant::now(), done0, sink.cpu_seconds(), own_cpu_seconds());
    wait_for("all delivered", Duration::from_secs(900), || {
        let accepted = lark.stats().accepted;
        if timeline && last.0.elapsed() >= Duration::from_millis(250) {
            let (cpu, emu) = (sink.cpu_seconds(), own_cpu_seconds());
            eprintln!(
                "  t={:5.2}s delivered={accepted:6} rate={:6.0}/s sink-cpu={:4.2} emu-cpu={:4.2}",
                t0.elapsed().as_secs_f64(),
                (accepted - last.1) as f64 / last.0.elapsed().as_secs_f64(),
                (cpu - last.2) / last.0.elapsed().as_secs_f64(),
                (emu - last.3) / last.0.elapsed().as_secs_f64(),
            );
            last = (Instant::now(), accepted, cpu, emu);
        }
        accepted as usize >= n
    })
    .await?;
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), sink.cpu_seconds() - cpu0);
    let emu_cpu = own_cpu_seconds() - emu0;
    let delivered = (lark.stats().accepted - done0) as f64;
    let rss = sink.peak_rss_mib();
    sink.stop();
    row(
        "broker produce rate (records/s, for context)",
        format!("{produce_rate:.0}"),
        "-",
    );
    row(
        "messages delivered per second",
        format!("{:.0}", delivered / secs),
        "≥ 20000 on 2 cores",
    );
    row(
        "connector CPU seconds per 1000 messages",
        format!("{:.3}", cpu / delivered * 1000.0),
        "-",
    );
    row(
        "emulator CPU seconds per 1000 messages (same cores)",
        format!("{:.3}", emu_cpu / delivered * 1000.0),
        "-",
    );
    row("connector peak RSS (MiB)", format!("{rss:.1}"), "-");
    lark.shutdown().await;
    Ok(())
}

/// Produce → emulator receipt at 100 msg/s, limits off.
async fn latency(o: &BenchOptions) -> Result<(), BenchError> {
    let secs = if o.quick { 10 } else { 30 };
    println!("latency: 100 msg/s for {secs} s to 100 receivers, limits off");
    let topic = unique("latency");
    create_topic(&o.broker, &topic, 4).await?;
    let lark = emulator(Limits::disabled(), 100).await?;
    let extra = json!({
        "lark.rate.app.per.second": "0", "lark.rate.app.per.minute": "0",
        "lark.rate.receiver.per.second": "0",
        // tansu answers a waiting fetch only when fetch.wait.max.ms expires (Kafka answers as
        // soon as data arrives), so with librdkafka's 500 ms default this would measure tansu.
        "kafka.fetch.wait.max.ms": "10",
    });
    let sink = Sink::start(o, &topic, &lark, extra)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &o.broker)
        .set("linger.ms", "0")
        .create()?;
    // Warm-up: the group joins and the connections open before measuring.
    producer
        .send(
            FutureRecord::to(&topic)
                .key("w")
                .payload(&text("ou_gen_0", "warmup".into())),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    wait_for("warm-up delivery", Duration::from_secs(60), || {
        lark.stats().accepted > 0
    })
    .await?;
    let total = secs * 100;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut sent_at: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..total {
        tick.tick().await;
        let r = format!("ou_gen_{}", i % 100);
        let id = format!("lat{i}");
        sent_at.insert(id.clone(), now_ms());
        let payload = text(&r, id);
        let rec = FutureRecord::to(&topic).key(&r).payload(&payload);
        producer.send_result(rec).map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(10))?;
    wait_for("all delivered", Duration::from_secs(60), || {
        lark.stats().accepted as usize > total
    })
    .await?;
    sink.stop();
    let mut lat: Vec<u64> = lark
        .messages()
        .iter()
        .filter_map(|m| {
            let id = m.content["text"].as_str()?;
            sent_at.get(id).map(|s| m.received_at_ms.saturating_sub(*s))
        })
        .collect();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    row(
        "produce → Lark receipt p50 (ms)",
        pct(0.50).to_string(),
        "-",
    );
    row(
        "produce → Lark receipt p99 (ms)",
        pct(0.99).to_string(),
        "≤ 25",
    );
    row(
        "produce → Lark receipt max (ms)",
        lat.last().copied().unwrap_or(0).to_string(),
        "-",
    );
    lark.shutdown().await;
    Ok(())
}

/// Peak RSS while a large backlog drains at the ceiling.
async fn memory(o: &BenchOptions) -> Result<(), BenchError> {
    let (n, minutes) = if o.quick {
        (100_000, 1)
    } else {
        (1_000_000, 2)
    };
    println!("memory: {n}-record backlog, draining at the ceiling (real limits) for {minutes} min");
    let topic = unique("memory");
    create_topic(&o.broker, &topic, 8).await?;
    let produce_rate = produce_many(&o.broker, &topic, n, |i| {
        let r = format!("ou_gen_{}", i % 500);
        (
            r.clone(),
            text(&r, format!("backlog message {i} with a little body text")),
        )
    })
    .await?;
    let lark = emulator(Limits::default(), 500).await?;
    let sink = Sink::start(o, &topic, &lark, json!({}))?;
    let mut samples = Vec::new();
    for _ in 0..(minutes * 60 / 5) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        samples.push(sink.peak_rss_mib());
    }
    let delivered = lark.stats().accepted;
    let rss = sink.peak_rss_mib();
    sink.stop();
    row(
        "broker produce rate (records/s, for context)",
        format!("{produce_rate:.0}"),
        "-",
    );
    row(
        "messages delivered while measuring",
        delivered.to_string(),
        "-",
    );
    row("connector peak RSS (MiB)", format!("{rss:.1}"), "≤ 64");
    row(
        "peak RSS after 1st / last sample (MiB)",
        format!(
            "{:.1} / {:.1}",
            samples.first().unwrap_or(&0.0),
            samples.last().unwrap_or(&0.0)
        ),
        "flat",
    );
    row(
        "throttle responses from Lark",
        throttles(&lark).to_string(),
        "0",
    );
    lark.shutdown().await;
    Ok(())
}

/// The soak (issue 7, docs/reliability.md): a large backlog drained at the limiter's ceiling
/// with every fault on at once (and, optionally, the connector SIGKILLed and restarted on a
/// clock), and the books balanced at the end: loss, duplicates, DLQ, commits, peak RSS and CPU.
///
/// Lark's real ceiling is 1000 messages a minute, so a million records would take 17 hours. The
/// soak therefore gives the app (in the emulator and in the connector alike) a ceiling of
/// 2000/s and 120 000/min, keeping the real 5/s per receiver over 2000 receivers: the limiter
/// still runs at its ceiling and the emulator still enforces it.
async fn soak(o: &BenchOptions) -> Result<(), BenchError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};

    let n = o
        .records
        .unwrap_or(if o.quick { 100_000 } else { 1_000_000 });
    let (receivers, partitions, per_sec, per_min) = (2_000, 8, 2_000, 120_000);
    const INVALID_EVERY: usize = 997;
    // SIGKILLs (off by default): LARK_SINK_SOAK_KILL_EVERY_RECORDS=<n> kills and restarts the
    // connector each time another n messages reached Lark; LARK_SINK_SOAK_KILL_EVERY=<s> every s
    // seconds. Earlier runs with kills stalled on tansu's group coordinator
    // (docs/reliability.md#soak; the test broker's patches, docs/testing.md#the-test-broker).
    let env_u64 = |key: &str| {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v > 0)
    };
    let kill_every = env_u64("LARK_SINK_SOAK_KILL_EVERY").map(Duration::from_secs);
    let kill_every_records = env_u64("LARK_SINK_SOAK_KILL_EVERY_RECORDS");
    let kill_plan = match (kill_every_records, kill_every) {
        (Some(r), _) => format!("every {r} messages"),
        (None, Some(k)) => format!("every {} s", k.as_secs()),
        (None, None) => "off".to_string(),
    };
    println!(
        "soak: {n} records to {receivers} receivers at a {per_sec}/s, {per_min}/min ceiling; \
         10% 5xx, 5% slower than the request timeout, tokens revoked every minute, \
         throttle bursts, 1 record in {INVALID_EVERY} invalid, SIGKILL {kill_plan}"
    );
    let topic = unique("soak");
    let dlq = unique("soak-dlq");
    create_topic(&o.broker, &topic, partitions).await?;
    let produce_rate = produce_many(&o.broker, &topic, n, |i| {
        let r = format!("ou_gen_{}", i % receivers);
        if i % INVALID_EVERY == INVALID_EVERY - 1 {
            (r.clone(), format!(r#"{{"receiveId":"{r}","content":"#))
        } else {
            (r.clone(), text(&r, format!("m{i}")))
        }
    })
    .await?;
    let invalid = n / INVALID_EVERY;
    let valid = n - invalid;

    let base = lark_emulator::FaultConfig {
        error_5xx_rate: 0.10,
        slow_rate: 0.05,
        slow_ms: 1_500,
        ..Default::default()
    };
    let limits = Limits {
        app_per_sec: per_sec,
        app_per_min: per_min,
        ..Limits::default()
    };
    let lark = Emulator::start(
        EmulatorConfig {
            directory: Directory::with_generated(receivers, 0),
            limits,
            faults: base.clone(),
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await?;
    let group = unique("soak-group");
    let extra = json!({
        "kafka.group.id": group,
        "lark.rate.app.per.second": per_sec.to_string(),
        "lark.rate.app.per.minute": per_min.to_string(),
        "lark.request.timeout.ms": "1000",
        "errors.retry.timeout": "600000",
        "errors.tolerance": "all",
        "errors.deadletterqueue.topic.name": dlq,
    });

    let started = Instant::now();
    let (mut cpu, mut rss, mut kills, mut tick) = (0.0f64, 0.0f64, 0, 0u64);
    let mut sink = Sink::start(o, &topic, &lark, extra.clone())?;
    let mut since_kill = Instant::now();
    let mut accepted_at_kill = 0u64;
    // A soak that stops making progress is a failure, not a long run: no new message in Lark for
    // STALL ends it with an error (a restart after a kill takes one session timeout, 6 s here).
    const STALL: Duration = Duration::from_secs(300);
    let (mut last_accepted, mut last_progress) = (0u64, Instant::now());
    while (lark.stats().accepted as usize) < valid {
        if started.elapsed() > Duration::from_secs(6 * 3600) {
            return Err(BenchError::Other("soak did not finish in 6 hours".into()));
        }
        let accepted = lark.stats().accepted;
        if accepted > last_accepted {
            (last_accepted, last_progress) = (accepted, Instant::now());
        } else if last_progress.elapsed() > STALL {
            return Err(BenchError::Other(format!(
                "soak stalled: no message reached Lark for {} s ({accepted} of {valid} delivered, \
                 {kills} kills)",
                STALL.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        tick += 1;
        // Faults on a clock: tokens revoked every minute, a 1 s throttle burst every 20 s.
        if tick % 240 == 0 {
            lark.revoke_tokens();
        }
        match tick % 80 {
            0 => lark.set_fault_config(lark_emulator::FaultConfig {
                throttle_rate: 1.0,
                ..base.clone()
            }),
            4 => lark.set_fault_config(base.clone()),
            _ => {}
        }
        let kill_due = match kill_every_records {
            Some(r) => accepted - accepted_at_kill >= r,
            None => kill_every.is_some_and(|k| since_kill.elapsed() >= k),
        };
        if kill_due {
            accepted_at_kill = accepted;
            cpu += sink.cpu_seconds();
            rss = rss.max(sink.peak_rss_mib());
            let _ = sink.child.kill();
            let _ = sink.child.wait();
            kills += 1;
            sink = Sink::start(o, &topic, &lark, extra.clone())?;
            since_kill = Instant::now();
        }
        if tick % 40 == 0 {
            eprint!(
                "\r  {} of {valid} delivered, {kills} kills, {:.0} s",
                lark.stats().accepted,
                started.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!();
    let secs = started.elapsed().as_secs_f64();
    lark.set_fault_config(Default::default());

    // Commits reach the end of every partition (the connector keeps running until they do).
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &o.broker)
        .set("group.id", &group)
        .create()?;
    let mut ends = Vec::new();
    for p in 0..partitions {
        ends.push(
            consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(10))?
                .1,
        );
    }
    let committed = || -> Vec<i64> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .map(|r| {
                (0..partitions)
                    .map(|p| match r.find_partition(&topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o,
                        _ => -1,
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let commit_deadline = Instant::now() + Duration::from_secs(120);
    while committed() != ends && Instant::now() < commit_deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let commits_done = committed() == ends;
    cpu += sink.cpu_seconds();
    rss = rss.max(sink.peak_rss_mib());
    sink.stop();

    // Loss and duplicates, by the record number in each text.
    let msgs = lark.messages();
    let mut seen = vec![0u8; n];
    for m in &msgs {
        let i = m
            .content
            .get("text")
            .and_then(Value::as_str)
            .and_then(|t| t.strip_prefix('m'))
            .and_then(|t| t.parse::<usize>().ok());
        if let Some(i) = i.filter(|i| *i < n) {
            seen[i] = seen[i].saturating_add(1);
        }
    }
    let valid_index = |i: usize| i % INVALID_EVERY != INVALID_EVERY - 1;
    let lost = (0..n).filter(|&i| valid_index(i) && seen[i] == 0).count();
    let duplicated = seen.iter().filter(|&&c| c > 1).count();

    // Every invalid record in the DLQ (at least once: kills replay what was not yet committed).
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &o.broker)
        .set("group.id", unique("soak-dlq-reader"))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let dlq_parts = reader
        .fetch_metadata(Some(&dlq), Duration::from_secs(10))?
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32);
    let mut dlq_total = 0i64;
    for p in 0..dlq_parts {
        let (lo, hi) = reader.fetch_watermarks(&dlq, p, Duration::from_secs(10))?;
        dlq_total += hi - lo;
        tpl.add_partition_offset(&dlq, p, Offset::Beginning)?;
    }
    reader.assign(&tpl)?;
    let mut dead = std::collections::BTreeSet::new();
    let mut read = 0i64;
    let read_deadline = Instant::now() + Duration::from_secs(120);
    while read < dlq_total && Instant::now() < read_deadline {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            read += 1;
            let header = |k: &str| {
                use rdkafka::message::Headers;
                m.headers().and_then(|hs| {
                    hs.iter()
                        .find(|h| h.key == k)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            };
            dead.insert((
                header("__connect.errors.partition"),
                header("__connect.errors.offset"),
            ));
        }
    }
    let stats = lark.stats();
    row(
        "records (valid / invalid)",
        format!("{valid} / {invalid}"),
        "-",
    );
    row(
        "broker produce rate (records/s, for context)",
        format!("{produce_rate:.0}"),
        "-",
    );
    row("messages lost", lost.to_string(), "0");
    row("messages delivered twice", duplicated.to_string(), "0");
    row(
        "invalid records in the DLQ (distinct / DLQ records)",
        format!("{} / {dlq_total}", dead.len()),
        &format!("{invalid} / ≥ {invalid}"),
    );
    row(
        "commits at the end of every partition",
        commits_done.to_string(),
        "true",
    );
    row(
        "wall time (s) / messages per second",
        format!("{secs:.0} / {:.0}", valid as f64 / secs),
        "-",
    );
    row("SIGKILLs", kills.to_string(), "-");
    row(
        "connector peak RSS, any instance (MiB)",
        format!("{rss:.1}"),
        "≤ 64",
    );
    row(
        "connector CPU seconds per 1000 messages",
        format!("{:.3}", cpu / valid as f64 * 1000.0),
        "-",
    );
    row(
        "faults injected / token rejections / uuid replays absorbed",
        format!(
            "{} / {} / {}",
            stats.faults_injected, stats.token_rejections, stats.duplicates_absorbed
        ),
        "-",
    );
    row(
        "throttles beyond the injected ones",
        (throttles(&lark)).to_string(),
        "0",
    );
    lark.shutdown().await;
    Ok(())
}
