//! `ceiling`: minutes at Lark's app ceiling (1000 messages a minute) with ≥ 200 receivers and the
//! emulator's real limits: the limiter must come within 1% of the ceiling and never cross it.

use std::time::Duration;

use lark_emulator::{AcceptedMessage, Limits};
use lark_sink_e2e::create_topic_on;
use serde_json::json;

use crate::common::{emulator, name, produce_many, row, text, throttle_row, wait_for};
use crate::sink::{startup_timeout, Sink};
use crate::Options;

/// 3 minutes at Lark's ceiling with ≥ 200 receivers and the emulator's real limits.
pub async fn run(o: &Options) -> anyhow::Result<()> {
    let minutes = if o.quick { 1 } else { 3 };
    let receivers = 250;
    println!("ceiling: {receivers} receivers, real Lark limits, {minutes} min");
    let topic = name("ceiling");
    create_topic_on(&o.kafka, &topic, 8).await;
    let n = 1100 * minutes + 500;
    produce_many(&o.kafka, &topic, n, |i| {
        let r = format!("ou_gen_{}", i % receivers);
        (r.clone(), text(&r, format!("m{i}")))
    })
    .await?;
    let lark = emulator(Limits::default(), receivers).await?;
    let sink = Sink::start(o, &topic, &lark, &json!({}));
    wait_for("first delivery", startup_timeout(o), || {
        lark.stats().accepted > 0
    })
    .await;
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
    row(
        "busiest sliding minute",
        busiest_minute(&msgs).to_string(),
        "≤ 1000",
    );
    throttle_row(&lark);
    lark.shutdown().await;
    Ok(())
}

/// The most messages received within any 60 s window, as Lark would count them.
fn busiest_minute(msgs: &[AcceptedMessage]) -> usize {
    let times: Vec<u64> = msgs.iter().map(|m| m.received_at_ms).collect();
    let mut busiest = 0;
    let mut j = 0;
    for i in 0..times.len() {
        while times[i] - times[j] >= 60_000 {
            j += 1;
        }
        busiest = busiest.max(i - j + 1);
    }
    busiest
}
