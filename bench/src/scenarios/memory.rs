//! `memory`: the connector's peak RSS while a large backlog drains at Lark's ceiling (real
//! limits): bounded by the buffer, and flat over the run.

use std::time::Duration;

use lark_emulator::Limits;
use lark_sink_e2e::create_topic_on;
use serde_json::json;

use crate::common::{emulator, name, produce_many, produce_rate_row, row, text, throttle_row};
use crate::sink::Sink;
use crate::Options;

/// Peak RSS while a large backlog drains at the ceiling.
pub async fn run(o: &Options) -> anyhow::Result<()> {
    let (n, minutes) = if o.quick {
        (100_000, 1)
    } else {
        (1_000_000, 2)
    };
    println!("memory: {n}-record backlog, draining at the ceiling (real limits) for {minutes} min");
    let topic = name("memory");
    create_topic_on(&o.kafka, &topic, 8).await;
    let produce_rate = produce_many(&o.kafka, &topic, n, |i| {
        let r = format!("ou_gen_{}", i % 500);
        (
            r.clone(),
            text(&r, format!("backlog message {i} with a little body text")),
        )
    })
    .await?;
    let lark = emulator(Limits::default(), 500).await?;
    let sink = Sink::start(o, &topic, &lark, &json!({}));
    let mut samples = Vec::new();
    for _ in 0..(minutes * 60 / 5) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        samples.push(sink.peak_rss_mib());
    }
    let delivered = lark.stats().accepted;
    let rss = sink.peak_rss_mib();
    sink.stop();
    produce_rate_row(produce_rate);
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
    throttle_row(&lark);
    lark.shutdown().await;
    Ok(())
}
