//! `storm`: 10,000 alerts to one chat as fast as the broker takes them, then one `high` alert 5 s
//! later, Lark's real limits in the emulator (5 messages a second to one chat). Run twice: with
//! digests on (`storm.digest.after=20`, and `lark.state.topic`: the mode in which a digest is
//! posted once), and with storm control off but the high alert still marked `high` (priority
//! alone). Figures: produce → Lark receipt of the high alert, messages
//! posted to the chat in the first minute, the time until every record is accounted for (its
//! offset committed: delivered or merged), and throttles.

use std::time::{Duration, Instant};

use lark_emulator::{Directory, EmulatorConfig, Limits};
use lark_sink_e2e::{committed_on, create_topic_on, try_committed_on};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

use crate::common::{emulator_with, name, now_ms, produce_many, row, throttle_row, wait_for};
use crate::sink::{startup_timeout, Sink};
use crate::Options;

/// The storm's size.
const ALERTS: usize = 10_000;
/// Source partitions: digests are per partition, so this many can wait for the chat at once.
const PARTITIONS: i32 = 4;
/// How long the priority-only run waits for the high alert before reporting it as later.
const OFF_WAIT: Duration = Duration::from_secs(60);

pub async fn run(o: &Options) -> anyhow::Result<()> {
    println!(
        "storm: {ALERTS} alerts to one chat, then a high one 5 s later, real Lark limits, \
         {PARTITIONS} partitions"
    );
    println!(
        " with digests (storm.digest.after=20, storm.digest.max.items=10, each digest's intent in \
         lark.state.topic before its card):"
    );
    let state = name("storm-state");
    one(
        o,
        &json!({"storm.digest.after": "20", "lark.state.topic": state}),
        true,
    )
    .await?;
    println!(" storm control off, the high alert marked high (priority alone):");
    one(o, &json!({}), false).await?;
    Ok(())
}

/// The alert `i` of the storm.
fn alert(i: usize) -> String {
    json!({"receiveType": "chat", "receiveId": "oc_gen_0",
           "content": {"text": format!("[FIRING] disk full on host-{i:05} (/var, 97%)")}})
    .to_string()
}

async fn one(o: &Options, extra: &Value, digests: bool) -> anyhow::Result<()> {
    let topic = name("storm");
    let group = name("storm-group");
    create_topic_on(&o.kafka, &topic, PARTITIONS).await;
    let lark = emulator_with(EmulatorConfig {
        directory: Directory::with_generated(0, 2),
        limits: Limits::default(),
        ..EmulatorConfig::default()
    })
    .await?;
    let mut cfg = extra.clone();
    cfg["kafka.group.id"] = json!(group);
    let sink = Sink::start(o, &topic, &lark, &cfg);
    // Warm: the group joined and Lark reached before the storm starts.
    let producer: FutureProducer = o.kafka.client_config().set("linger.ms", "0").create()?;
    let send = |value: String| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(&topic).key("warm").payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        }
    };
    send(
        json!({"receiveType": "chat", "receiveId": "oc_gen_1", "content": {"text": "warm"}})
            .to_string(),
    )
    .await?;
    wait_for("warm-up delivery", startup_timeout(o), || {
        lark.stats().accepted > 0
    })
    .await;
    let storm_started = Instant::now();
    let storm_ms = now_ms();
    let rate = produce_many(&o.kafka, &topic, ALERTS, |i| {
        (format!("host-{i}"), alert(i))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let high_ms = now_ms();
    send(
        json!({"receiveType": "chat", "receiveId": "oc_gen_0", "priority": "high",
                "content": {"text": "[P1] payments down"}})
        .to_string(),
    )
    .await?;
    let is_high = |lark: &lark_emulator::EmulatorHandle| {
        lark.messages()
            .iter()
            .find(|m| m.content["text"] == "[P1] payments down")
            .map(|m| m.received_at_ms)
    };
    let wait = if digests {
        Duration::from_secs(300)
    } else {
        OFF_WAIT
    };
    let deadline = Instant::now() + wait;
    let mut high_at = None;
    while Instant::now() < deadline {
        high_at = is_high(&lark);
        if high_at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let high = match high_at {
        Some(at) => format!("{}", at.saturating_sub(high_ms)),
        None => format!("> {}", wait.as_millis()),
    };
    row(
        "produce → Lark receipt of the high alert (ms)",
        high,
        "≤ 5000",
    );
    let total = (ALERTS + 2) as i64; // the storm, the high alert and the warm-up record
    let accounted = if digests {
        wait_for(
            "every record accounted for",
            Duration::from_secs(600),
            || {
                try_committed_on(&o.kafka, &group, &topic, PARTITIONS)
                    .is_ok_and(|c| c.iter().map(|o| o.max(&0)).sum::<i64>() == total)
            },
        )
        .await;
        format!("{:.1}", storm_started.elapsed().as_secs_f64())
    } else {
        let done: i64 = committed_on(&o.kafka, &group, &topic, PARTITIONS)
            .iter()
            .map(|o| *o.max(&0))
            .sum();
        format!(
            "not yet ({done} of {total} after {:.0} s)",
            storm_started.elapsed().as_secs_f64()
        )
    };
    // The first minute of the storm is over before it is counted.
    tokio::time::sleep(Duration::from_secs(61).saturating_sub(storm_started.elapsed())).await;
    let first_minute = lark
        .messages()
        .iter()
        .filter(|m| m.chat_id == "oc_gen_0" && m.received_at_ms < storm_ms + 60_000)
        .count();
    sink.stop();
    let digests_sent = lark
        .messages()
        .iter()
        .filter(|m| m.chat_id == "oc_gen_0" && m.msg_type == "interactive")
        .count();
    row(
        "messages to the chat in the first minute",
        first_minute.to_string(),
        "-",
    );
    row("of them digest cards", digests_sent.to_string(), "-");
    row(
        "time until all 10,000 accounted for (s)",
        accounted,
        "≤ 60 (digests on)",
    );
    throttle_row(&lark);
    row(
        "broker produce rate (records/s, for context)",
        format!("{rate:.0}"),
        "-",
    );
    lark.shutdown().await;
    Ok(())
}
