//! `engine`: the delivery engine itself, limits off in the emulator and the connector, as fast as
//! it goes from the real broker: messages per second, and the CPU per message of the connector
//! and of the emulator that shares its cores.

use std::time::{Duration, Instant};

use lark_emulator::Limits;
use lark_sink_e2e::create_topic_on;
use serde_json::json;

use crate::common::{emulator, name, produce_many, produce_rate_row, row, text, wait_for};
use crate::proc::{cpu_seconds, Process};
use crate::sink::{startup_timeout, Sink};
use crate::Options;

/// The engine itself: limits off, as fast as it goes, from the real broker.
pub async fn run(o: &Options) -> anyhow::Result<()> {
    let n = if o.quick { 20_000 } else { 100_000 };
    let receivers = 1000;
    println!("engine: {n} messages to {receivers} receivers, limits off (emulator and connector)");
    let topic = name("engine");
    create_topic_on(&o.kafka, &topic, 8).await;
    let produce_rate = produce_many(&o.kafka, &topic, n, |i| {
        let r = format!("ou_gen_{}", i % receivers);
        (r.clone(), text(&r, format!("m{i}")))
    })
    .await?;
    let lark = emulator(Limits::disabled(), receivers).await?;
    let extra = json!({
        "lark.rate.app.per.second": "0", "lark.rate.app.per.minute": "0",
        "lark.rate.receiver.per.second": "0", "buffer.max.messages": "20000",
    });
    let sink = Sink::start(o, &topic, &lark, &extra);
    wait_for("first delivery", startup_timeout(o), || {
        lark.stats().accepted > 0
    })
    .await;
    let (t0, cpu0, emu0) = (Instant::now(), sink.cpu_seconds(), own_cpu());
    let done0 = lark.stats().accepted;
    // LARK_SINK_BENCH_TIMELINE=1: the rate and both CPUs every 250 ms (docs/performance.md).
    let timeline = std::env::var_os("LARK_SINK_BENCH_TIMELINE").is_some();
    let mut last = (Instant::now(), done0, sink.cpu_seconds(), own_cpu());
    wait_for("all delivered", Duration::from_secs(900), || {
        let accepted = lark.stats().accepted;
        if timeline && last.0.elapsed() >= Duration::from_millis(250) {
            let (cpu, emu) = (sink.cpu_seconds(), own_cpu());
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
    .await;
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), sink.cpu_seconds() - cpu0);
    let emu_cpu = own_cpu() - emu0;
    let delivered = (lark.stats().accepted - done0) as f64;
    let rss = sink.peak_rss_mib();
    sink.stop();
    produce_rate_row(produce_rate);
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

/// CPU seconds this process (the orchestrator, with the in-process emulator) has used.
fn own_cpu() -> f64 {
    cpu_seconds(Process::Own)
}
