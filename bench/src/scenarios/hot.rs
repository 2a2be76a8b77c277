//! `hot`: one receiver with a backlog, against Lark's real limits: exactly 5 messages a second
//! (the per-receiver limit), in offset order, with no throttle answer.

use std::time::Duration;

use lark_emulator::Limits;
use lark_sink_e2e::create_topic_on;
use serde_json::json;

use crate::common::{emulator, name, produce_many, row, text, throttle_row, wait_for};
use crate::sink::Sink;
use crate::Options;

/// One receiver with a backlog: exactly 5/s, in order.
pub async fn run(o: &Options) -> anyhow::Result<()> {
    let n = if o.quick { 30 } else { 60 };
    println!("hot receiver: {n} messages to one receiver, real Lark limits");
    let topic = name("hot");
    create_topic_on(&o.kafka, &topic, 1).await;
    produce_many(&o.kafka, &topic, n, |i| {
        ("ou_gen_0".into(), text("ou_gen_0", format!("{i}")))
    })
    .await?;
    let lark = emulator(Limits::default(), 1).await?;
    let sink = Sink::start(o, &topic, &lark, &json!({}));
    wait_for("all delivered", Duration::from_secs(120), || {
        lark.stats().accepted as usize >= n
    })
    .await;
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
    throttle_row(&lark);
    lark.shutdown().await;
    Ok(())
}
