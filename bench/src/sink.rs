//! The connector under measurement: the real `lark-sink run` binary as a child process, started
//! through the e2e harness's [`Connector`] with the benchmark's config, log filter and optional
//! profiler, and read through `/proc` while it runs.

use std::time::Duration;

use lark_emulator::EmulatorHandle;
use lark_sink_e2e::Connector;
use serde_json::{json, Value};

use crate::common::name;
use crate::proc::{self, Process};
use crate::Options;

/// How long a sink may take to deliver its first message: a minute, or ten under a profiler
/// (`LARK_SINK_BENCH_WRAPPER`).
pub fn startup_timeout(o: &Options) -> Duration {
    if o.launch.wrapper.is_empty() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(600)
    }
}

/// One `lark-sink run` process consuming `topic` and delivering to an emulator.
pub struct Sink {
    connector: Connector,
}

impl Sink {
    /// Starts the connector on `topic` against `lark`, with the scenario's `extra` settings over
    /// the defaults and `LARK_SINK_BENCH_CONFIG` (`o.overrides`) over both.
    pub fn start(o: &Options, topic: &str, lark: &EmulatorHandle, extra: &Value) -> Sink {
        let mut cfg = json!({
            "topics": topic,
            "kafka.bootstrap.servers": o.broker,
            "kafka.group.id": name("group"),
            "lark.app.id": "cli_demo_app",
            "lark.app.secret": "demo-secret",
            "lark.domain": lark.base_url(),
            "offset.flush.interval.ms": "1000",
        });
        for layer in [extra, &o.overrides] {
            if let (Some(c), Some(e)) = (cfg.as_object_mut(), layer.as_object()) {
                for (k, v) in e {
                    c.insert(k.clone(), v.clone());
                }
            }
        }
        let config = json!({"name": "bench", "config": cfg});
        Sink {
            connector: Connector::launch(&config, &o.launch),
        }
    }

    fn process(&self) -> Option<Process> {
        self.connector.pid().map(Process::Pid)
    }

    /// CPU seconds (user + system) the connector has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        self.process().map_or(0.0, proc::cpu_seconds)
    }

    /// Peak resident set size of the connector, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.process().map_or(0.0, proc::peak_rss_mib)
    }

    /// SIGKILL (the soak's crashes): no chance to commit.
    pub fn kill(&mut self) {
        self.connector.kill();
    }

    /// SIGTERM, and wait for the connector to exit.
    pub fn stop(mut self) {
        self.connector.stop();
    }
}
