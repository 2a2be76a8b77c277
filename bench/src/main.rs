//! `lark-sink-bench`: the delivery engine's figures, measured end to end.
//!
//! Each scenario produces records to a real broker, runs the real `lark-sink run` binary as a
//! child process against an in-process Lark emulator, and reads the figures off what the emulator
//! accepted and what the child process used (`/proc/<pid>`: CPU ticks, peak RSS). Nothing here is
//! a pass/fail test; the figures and their goals are printed side by side, and
//! `docs/performance.md` records them with the command that produced them.
//!
//! It was the `lark-sink bench` subcommand; it is its own binary so that the shipped connector
//! carries no benchmark, and it is built on the e2e harness (`tests/src/lib.rs`: topics, the
//! connector process, polling). `scripts/bench.sh` builds both and runs it. This file reads the
//! options and the environment; `scenarios/` holds one file per scenario, on `common` (names,
//! backlog, emulator, figures), `sink` (the measured connector) and `proc` (`/proc` readers).

mod common;
mod proc;
mod scenarios;
mod sink;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lark_sink_e2e::{KafkaAccess, Launch};
use serde_json::{json, Value};

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
    /// Scenarios to run, comma-separated: ceiling, hot, engine, latency, memory, storm, and soak
    /// (not in the default set: fault-injected endurance run, docs/reliability.md).
    #[arg(long, default_value = "ceiling,hot,engine,latency,memory,storm")]
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

/// Which scenarios to run, how big, and how to start the connector they measure.
pub struct Options {
    /// The broker's bootstrap servers, as the connector's config gets them.
    pub broker: String,
    /// The same broker, for the benchmark's own clients (the harness's helpers).
    pub kafka: KafkaAccess,
    pub scenarios: Vec<String>,
    /// Smaller volumes and shorter runs (minutes instead of a quarter hour).
    pub quick: bool,
    /// Overrides the record count of `soak`.
    pub records: Option<usize>,
    /// The binary, its wrapper (`LARK_SINK_BENCH_WRAPPER`) and its log (`LARK_SINK_BENCH_LOG`).
    pub launch: Launch,
    /// `LARK_SINK_BENCH_CONFIG`: connector settings over every scenario's own (a JSON object).
    pub overrides: Value,
}

/// The release `lark-sink` of the workspace this benchmark was built in: the bench binary sits in
/// `target/<profile>/`, so `target/release/lark-sink` is beside that directory.
fn default_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .and_then(|d| d.parent())
        .map(|t| t.join("release").join("lark-sink"))
        .ok_or_else(|| anyhow::anyhow!("no target directory above {}", exe.display()))
}

/// A variable's value, unless it is unset or blank.
fn env_set(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// How the measured connector is started, from `--bin` and the environment.
fn launch(bin: Option<PathBuf>) -> anyhow::Result<Launch> {
    let bin = match bin {
        Some(b) => b,
        None => default_bin()?,
    };
    anyhow::ensure!(
        bin.is_file(),
        "{} not found: build it with `cargo build --release -p lark-sink`, or name the binary to \
         measure with --bin or LARK_SINK_BIN",
        bin.display()
    );
    // LARK_SINK_BENCH_WRAPPER runs the sink under a profiler, e.g.
    // "valgrind --tool=callgrind --callgrind-out-file=/tmp/sink.cg" (docs/performance.md).
    let wrapper = std::env::var("LARK_SINK_BENCH_WRAPPER").unwrap_or_default();
    // LARK_SINK_BENCH_LOG=<filter> shows the measured connector's log on stderr.
    let log = env_set("LARK_SINK_BENCH_LOG");
    Ok(Launch {
        bin,
        wrapper: wrapper.split_whitespace().map(str::to_string).collect(),
        log_to_stderr: log.is_some(),
        log_filter: log.unwrap_or_else(|| "warn".into()),
    })
}

/// LARK_SINK_BENCH_CONFIG (a JSON object of connector settings) wins over the scenario's own,
/// to try a setting without editing the benchmark (docs/performance.md).
fn overrides() -> anyhow::Result<Value> {
    match env_set("LARK_SINK_BENCH_CONFIG") {
        Some(text) => serde_json::from_str::<Value>(&text)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| anyhow::anyhow!("LARK_SINK_BENCH_CONFIG must be a JSON object")),
        None => Ok(json!({})),
    }
}

/// The bench process's own log (the emulator, the producers): warnings, unless `LARK_SINK_LOG`.
fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("LARK_SINK_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,librdkafka=error,rdkafka=error")
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_logging();
    let opts = Options {
        kafka: KafkaAccess::at(&cli.broker),
        broker: cli.broker,
        scenarios: cli
            .scenario
            .split(',')
            .map(|s| s.trim().to_string())
            .collect(),
        quick: cli.quick,
        records: cli.records,
        launch: launch(cli.bin)?,
        overrides: overrides()?,
    };
    scenarios::run(&opts).await?;
    Ok(ExitCode::SUCCESS)
}
