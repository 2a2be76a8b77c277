//! `latency`: produce → Lark receipt at a steady 100 messages a second, limits off: the time a
//! record spends in the broker, the connector and one HTTP request, as percentiles.

use std::collections::BTreeMap;
use std::time::Duration;

use lark_emulator::Limits;
use lark_sink_e2e::create_topic_on;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::json;

use crate::common::{emulator, name, now_ms, row, text, wait_for};
use crate::sink::Sink;
use crate::Options;

/// Produce → emulator receipt at 100 msg/s, limits off.
pub async fn run(o: &Options) -> anyhow::Result<()> {
    let secs = if o.quick { 10 } else { 30 };
    println!("latency: 100 msg/s for {secs} s to 100 receivers, limits off");
    let topic = name("latency");
    create_topic_on(&o.kafka, &topic, 4).await;
    let lark = emulator(Limits::disabled(), 100).await?;
    let extra = json!({
        "lark.rate.app.per.second": "0", "lark.rate.app.per.minute": "0",
        "lark.rate.receiver.per.second": "0",
        // tansu answers a waiting fetch only when fetch.wait.max.ms expires (Kafka answers as
        // soon as data arrives), so with librdkafka's 500 ms default this would measure tansu.
        "kafka.fetch.wait.max.ms": "10",
    });
    let sink = Sink::start(o, &topic, &lark, &extra);
    // Its own producer, not the harness's: records go out on the tick without waiting for
    // each acknowledgement, and unbatched (linger.ms=0).
    let producer: FutureProducer = o.kafka.client_config().set("linger.ms", "0").create()?;
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
    .await;
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
    .await;
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
    report(&lat);
    lark.shutdown().await;
    Ok(())
}

/// The percentiles of the sorted latencies `lat` (ms).
fn report(lat: &[u64]) {
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
}
