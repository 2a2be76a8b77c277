//! `soak` (issue 7, docs/reliability.md#soak): a large backlog drained at the limiter's ceiling
//! with every fault on at once (and, optionally, the connector SIGKILLed and restarted on a
//! clock), and the books balanced at the end (`books.rs`): loss, duplicates, DLQ, commits, peak
//! RSS and CPU.
//!
//! Lark's real ceiling is 1000 messages a minute, so a million records would take 17 hours. The
//! soak therefore gives the app (in the emulator and in the connector alike) a ceiling of
//! 2000/s and 120 000/min, keeping the real 5/s per receiver over 2000 receivers: the limiter
//! still runs at its ceiling and the emulator still enforces it.

mod books;

use std::time::{Duration, Instant};

use lark_emulator::{Directory, EmulatorConfig, EmulatorHandle, FaultConfig, Limits};
use lark_sink_e2e::create_topic_on;
use serde_json::{json, Value};

use crate::common::{emulator_with, name, produce_many, text};
use crate::sink::Sink;
use crate::Options;

/// Receivers the backlog is spread over: at the real 5/s each, enough to carry the ceiling.
const RECEIVERS: usize = 2_000;
/// Partitions of the soak's topic.
const PARTITIONS: i32 = 8;
/// The app's ceiling per second and per minute, in the emulator and in the connector.
const PER_SEC: u32 = 2_000;
const PER_MIN: u32 = 120_000;
/// One record in this many is invalid JSON (it must reach the DLQ).
const INVALID_EVERY: usize = 997;
/// A soak that stops making progress is a failure, not a long run: no new message in Lark for
/// this long ends it with an error (a restart after a kill takes one session timeout, 6 s here).
const STALL: Duration = Duration::from_secs(300);
/// The longest a soak may run before it counts as failed.
const LONGEST: Duration = Duration::from_secs(6 * 3600);

/// When the connector is SIGKILLed and restarted (off by default):
/// `LARK_SINK_SOAK_KILL_EVERY_RECORDS=<n>` each time another n messages reached Lark,
/// `LARK_SINK_SOAK_KILL_EVERY=<s>` every s seconds (the first wins). Earlier runs with kills
/// stalled on tansu's group coordinator (docs/reliability.md#soak; the test broker's patches,
/// docs/testing.md#the-test-broker).
struct KillPlan {
    every_records: Option<u64>,
    every: Option<Duration>,
}

impl KillPlan {
    fn from_env() -> KillPlan {
        let env_u64 = |key: &str| {
            std::env::var(key)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|v| *v > 0)
        };
        KillPlan {
            every_records: env_u64("LARK_SINK_SOAK_KILL_EVERY_RECORDS"),
            every: env_u64("LARK_SINK_SOAK_KILL_EVERY").map(Duration::from_secs),
        }
    }

    fn describe(&self) -> String {
        match (self.every_records, self.every) {
            (Some(r), _) => format!("every {r} messages"),
            (None, Some(k)) => format!("every {} s", k.as_secs()),
            (None, None) => "off".to_string(),
        }
    }

    /// Whether to kill now, `delivered` messages and `elapsed` after the last kill (or start).
    fn due(&self, delivered: u64, elapsed: Duration) -> bool {
        match self.every_records {
            Some(r) => delivered >= r,
            None => self.every.is_some_and(|k| elapsed >= k),
        }
    }
}

/// What one soak works on: its topic, the group its connectors share, its emulator, the faults
/// always on, and the connector settings of every (re)start.
struct Soak<'a> {
    o: &'a Options,
    topic: String,
    lark: EmulatorHandle,
    base: FaultConfig,
    extra: Value,
}

/// The drive's figures, and the connector still running (so its commits can be awaited).
struct Drive {
    secs: f64,
    /// CPU seconds and peak RSS of the instances already killed.
    cpu: f64,
    rss: f64,
    kills: u32,
    sink: Sink,
}

pub async fn run(o: &Options) -> anyhow::Result<()> {
    let n = o
        .records
        .unwrap_or(if o.quick { 100_000 } else { 1_000_000 });
    let plan = KillPlan::from_env();
    println!(
        "soak: {n} records to {RECEIVERS} receivers at a {PER_SEC}/s, {PER_MIN}/min ceiling; \
         10% 5xx, 5% slower than the request timeout, tokens revoked every minute, \
         throttle bursts, 1 record in {INVALID_EVERY} invalid, SIGKILL {}",
        plan.describe()
    );
    let topic = name("soak");
    let dlq = name("soak-dlq");
    create_topic_on(&o.kafka, &topic, PARTITIONS).await;
    let produce_rate = produce_many(&o.kafka, &topic, n, |i| {
        let r = format!("ou_gen_{}", i % RECEIVERS);
        if i % INVALID_EVERY == INVALID_EVERY - 1 {
            (r.clone(), format!(r#"{{"receiveId":"{r}","content":"#))
        } else {
            (r.clone(), text(&r, format!("m{i}")))
        }
    })
    .await?;
    let base = FaultConfig {
        error_5xx_rate: 0.10,
        slow_rate: 0.05,
        slow_ms: 1_500,
        ..Default::default()
    };
    let lark = emulator_with(EmulatorConfig {
        directory: Directory::with_generated(RECEIVERS, 0),
        limits: Limits {
            app_per_sec: PER_SEC,
            app_per_min: PER_MIN,
            ..Limits::default()
        },
        faults: base.clone(),
        ..EmulatorConfig::default()
    })
    .await?;
    let group = name("soak-group");
    let extra = json!({
        "kafka.group.id": group,
        "lark.rate.app.per.second": PER_SEC.to_string(),
        "lark.rate.app.per.minute": PER_MIN.to_string(),
        "lark.request.timeout.ms": "1000",
        "errors.retry.timeout": "600000",
        "errors.tolerance": "all",
        "errors.deadletterqueue.topic.name": dlq,
    });
    let soak = Soak {
        o,
        topic,
        lark,
        base,
        extra,
    };
    let valid = n - n / INVALID_EVERY;
    let drive = soak.drive(valid, &plan).await?;
    soak.lark.set_fault_config(Default::default());
    books::balance(&soak, drive, &group, &dlq, n, produce_rate).await;
    soak.lark.shutdown().await;
    Ok(())
}

impl Soak<'_> {
    fn start(&self) -> Sink {
        Sink::start(self.o, &self.topic, &self.lark, &self.extra)
    }

    /// Runs the connector until `valid` messages reached Lark, with the faults on their clock and
    /// the kills of `plan`.
    async fn drive(&self, valid: usize, plan: &KillPlan) -> anyhow::Result<Drive> {
        let started = Instant::now();
        let (mut cpu, mut rss, mut kills, mut tick) = (0.0f64, 0.0f64, 0, 0u64);
        let mut sink = self.start();
        let mut since_kill = Instant::now();
        let mut accepted_at_kill = 0u64;
        let (mut last_accepted, mut last_progress) = (0u64, Instant::now());
        while (self.lark.stats().accepted as usize) < valid {
            anyhow::ensure!(
                started.elapsed() <= LONGEST,
                "soak did not finish in 6 hours"
            );
            let accepted = self.lark.stats().accepted;
            if accepted > last_accepted {
                (last_accepted, last_progress) = (accepted, Instant::now());
            } else if last_progress.elapsed() > STALL {
                anyhow::bail!(
                    "soak stalled: no message reached Lark for {} s ({accepted} of {valid} \
                     delivered, {kills} kills)",
                    STALL.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            tick += 1;
            self.faults_on_clock(tick);
            if plan.due(accepted - accepted_at_kill, since_kill.elapsed()) {
                accepted_at_kill = accepted;
                cpu += sink.cpu_seconds();
                rss = rss.max(sink.peak_rss_mib());
                sink.kill();
                kills += 1;
                sink = self.start();
                since_kill = Instant::now();
            }
            if tick % 40 == 0 {
                eprint!(
                    "\r  {} of {valid} delivered, {kills} kills, {:.0} s",
                    self.lark.stats().accepted,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        eprintln!();
        Ok(Drive {
            secs: started.elapsed().as_secs_f64(),
            cpu,
            rss,
            kills,
            sink,
        })
    }

    /// Faults on a clock of 250 ms ticks: tokens revoked every minute, a 1 s throttle burst
    /// every 20 s.
    fn faults_on_clock(&self, tick: u64) {
        if tick % 240 == 0 {
            self.lark.revoke_tokens();
        }
        match tick % 80 {
            0 => self.lark.set_fault_config(FaultConfig {
                throttle_rate: 1.0,
                ..self.base.clone()
            }),
            4 => self.lark.set_fault_config(self.base.clone()),
            _ => {}
        }
    }
}
