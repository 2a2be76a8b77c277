//! The Acknowledge round trip, apart from the responder (`responder.rs`): the on-call user's
//! click in Lark, and what the summary reads back of it.
//!
//! The click goes the real way: the emulator pushes a `card.action.trigger` with the clicked
//! button's own value (which the sink gave the card's `messageKey`) over the long connection, in
//! `pbbp2` frames, to the events pipeline ([`crate::inbound::run`]), which writes it to the events
//! topic, acknowledged, before it answers Lark. The read-back is the events topic itself, each
//! record with the answer Lark got for it (the emulator's record of the push).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Acknowledgement, DemoError, ACK_BUTTON};
use crate::emulator::{Click, EmulatorHandle, PushedEvent};

/// The on-call user who clicks Acknowledge: Alice, in the emulator's directory.
pub const ON_CALL_USER: &str = "ou_alice";

/// `lark.events.card.toast`: what the clicking user sees once the click is in the topic.
pub const TOAST: &str = "Acknowledged: the on-call pipeline has it";

/// How often the demo looks at the emulator while it waits.
const POLL: Duration = Duration::from_millis(50);

/// One record of the events topic, and Lark's answer to the event it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickSummary {
    /// The `lark.event_id` header.
    pub event_id: String,
    /// The `lark.event_type` header (`card.action.trigger` for a click).
    pub event_type: String,
    /// The record's key: the clicked card's message id.
    pub key: Option<String>,
    /// The `lark.message_key` header: the card's `messageKey`.
    pub message_key: Option<String>,
    /// Who clicked (`event.operator.open_id`).
    pub operator: Option<String>,
    /// The clicked button's `action` (`event.action.value.action`).
    pub action: Option<String>,
    /// Whether Lark got an answer 200 to the event.
    pub answered: bool,
    /// The toast the answer showed the clicking user (`toast.content`).
    pub toast: Option<String>,
    /// From the push's last frame to its answer, ms.
    pub latency_ms: Option<u64>,
}

/// Alice clicks Acknowledge on the alert's card `card` in Lark: once the events pipeline's long
/// connection is up (Lark pushes to a live one, else retries 15 s later), the emulator pushes the
/// click; this returns its event id once Lark got the answer 200, or gives up at `deadline`.
pub(super) async fn click_acknowledge(
    emulator: &EmulatorHandle,
    card: &str,
    deadline: Instant,
    events_ended: &CancellationToken,
) -> Result<String, DemoError> {
    while emulator.live_connections() == 0 {
        if events_ended.is_cancelled() {
            return Err(DemoError::Stalled(
                "the events pipeline's long connection (the pipeline stopped)",
            ));
        }
        if Instant::now() >= deadline {
            return Err(DemoError::Stalled("the events pipeline's long connection"));
        }
        tokio::time::sleep(POLL).await;
    }
    let event_id = emulator.click(Click {
        open_id: Some(ON_CALL_USER.to_string()),
        button: Some(ACK_BUTTON.to_string()),
        ..Click::on(card)
    })?;
    loop {
        let pushed = emulator
            .pushed_events()
            .into_iter()
            .find(|e| e.event_id == event_id);
        match pushed {
            Some(e) if e.acked => return Ok(event_id),
            Some(e) if e.done => {
                return Err(DemoError::ClickNotAnswered {
                    detail: format!(
                        "{} attempts, the last answer {}",
                        e.attempts,
                        e.ack_code
                            .map_or("none".to_string(), |c| format!("code {c}"))
                    ),
                    event_id,
                })
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(DemoError::ClickNotAnswered {
                event_id,
                detail: format!("none within {} s", super::PATIENCE.as_secs()),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every record of the events topic `topic` (one partition), from the start to its end, each
/// with Lark's answer to its event as the emulator recorded it.
pub(super) fn read_clicks(
    bootstrap: &str,
    topic: &str,
    emulator: &EmulatorHandle,
) -> Result<Vec<ClickSummary>, DemoError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "lark-sink-demo-events-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let (low, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    let mut partition = TopicPartitionList::new();
    partition.add_partition_offset(topic, 0, Offset::Offset(low))?;
    consumer.assign(&partition)?;
    let pushed = emulator.pushed_events();
    let mut out = Vec::new();
    let mut next = low;
    let deadline = Instant::now() + Duration::from_secs(20);
    while next < high {
        if Instant::now() >= deadline {
            return Err(DemoError::Stalled("the events topic to be read back"));
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        next = m.offset() + 1;
        out.push(
            summary(&m, &pushed).map_err(|detail| DemoError::EventRecord {
                topic: topic.to_string(),
                detail: format!("offset {}: {detail}", m.offset()),
            })?,
        );
    }
    Ok(out)
}

/// One record of the events topic, read; `pushed` is what the emulator pushed, and its answers.
fn summary(m: &impl Message, pushed: &[PushedEvent]) -> Result<ClickSummary, String> {
    let header = |name: &str| super::header(m, name);
    let event_id = header("lark.event_id").ok_or("no lark.event_id header")?;
    let event_type = header("lark.event_type").ok_or("no lark.event_type header")?;
    let value: Value = serde_json::from_slice(m.payload().unwrap_or_default())
        .map_err(|e| format!("its value is not JSON: {e}"))?;
    let text = |pointer: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let answer = pushed.iter().find(|e| e.event_id == event_id);
    Ok(ClickSummary {
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        message_key: header("lark.message_key"),
        operator: text("/event/operator/open_id"),
        action: text("/event/action/value/action"),
        answered: answer.is_some_and(|e| e.acked),
        toast: answer
            .and_then(|e| e.ack_data.as_ref())
            .and_then(|d| d.pointer("/toast/content"))
            .and_then(Value::as_str)
            .map(str::to_string),
        latency_ms: answer.and_then(|e| e.latency_ms),
        event_id,
        event_type,
    })
}

/// The round trip's part of the summary: the events topic's records, then what the responder did.
pub(super) fn print_round_trip(clicks: &[ClickSummary], ack: &Acknowledgement) {
    println!(
        "\nClicked in Lark, written to '{}' before Lark was answered ({} record{}):",
        super::EVENTS,
        clicks.len(),
        if clicks.len() == 1 { "" } else { "s" }
    );
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    for c in clicks {
        let answer = match (c.answered, &c.toast) {
            (true, Some(t)) => format!("answered 200, toast \"{t}\""),
            (true, None) => "answered 200".to_string(),
            (false, _) => "NOT answered 200".to_string(),
        };
        let latency = c
            .latency_ms
            .map(|ms| format!(" in {ms} ms"))
            .unwrap_or_default();
        println!(
            "  ← {} '{}' by {} on {}, lark.message_key '{}', event {}: {answer}{latency}",
            c.event_type,
            or_none(&c.action),
            or_none(&c.operator),
            or_none(&c.key),
            or_none(&c.message_key),
            c.event_id
        );
    }
    println!(
        "  → responder (your consumer of '{}'): {} ({}) acknowledged '{}', the update produced to {}-{}@{}",
        super::EVENTS,
        ack.name,
        ack.open_id,
        ack.message_key,
        super::TOPIC,
        ack.partition,
        ack.offset
    );
}
