//! The responder: the demo's stand-in for **your own consumer of `lark.events.topic`**. It is no
//! part of the connector, and talks to it only through Kafka, as a service of yours would:
//!
//! 1. it reads the events topic (its own consumer group, from the earliest record);
//! 2. it skips what is not a click on an Acknowledge button (`lark.event_type` =
//!    `card.action.trigger`, `event.action.value.action` = `"ack"`);
//! 3. from the click it takes the card's `messageKey` (the `lark.message_key` header: the sink
//!    put it in the keyed card's button values), who clicked (`event.operator.open_id`, named from
//!    its on-call roster) and the chat (`event.context.open_chat_id`: a keyed message is one per
//!    key and receiver);
//! 4. it produces the acknowledged version of the alert ("\[ACKNOWLEDGED\] … by Alice", orange,
//!    same `messageKey`, Kafka key = the `messageKey` so it shares the alert's partition) to the
//!    sink's source topic, acknowledged by the broker; the sink then updates the clicked card in
//!    place.
//!
//! A long-running responder would loop and dedupe on `lark.event_id` (a redelivery may be written
//! twice across a connector restart, docs/user-guide.md "Receiving events and clicks"); the demo's
//! answers one click and returns.

use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::Value;

use super::samples::{alert_record, headline};

/// The event type of a card button click.
const CLICK: &str = "card.action.trigger";

/// The responder's consumer group.
const GROUP: &str = "oncall-responder";

/// The on-call roster: how the responder names whoever clicked (yours would ask your own
/// directory, or Lark's contact API with the open_id).
const ROSTER: &[(&str, &str)] = &[("ou_alice", "Alice"), ("ou_bob", "Bob")];

/// Why the responder could not answer a click.
#[derive(Debug, thiserror::Error)]
pub enum ResponderError {
    #[error("responder: Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("responder: no Acknowledge click arrived in '{topic}' within {} s{}", waited.as_secs(),
        last_error.as_ref().map(|e| format!(" (last read error: {e})")).unwrap_or_default())]
    NoClick {
        topic: String,
        waited: Duration,
        last_error: Option<String>,
    },
    #[error("responder: the click at offset {offset} of '{topic}' cannot be answered: {problem}")]
    BadClick {
        topic: String,
        offset: i64,
        problem: String,
    },
    #[error("responder: producing the acknowledgement to '{topic}': {source}")]
    Produce {
        topic: String,
        #[source]
        source: KafkaError,
    },
}

/// What the responder did with a click: its own account of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledgement {
    /// The click's `lark.event_id`.
    pub event_id: String,
    /// The card's `messageKey` (the click's `lark.message_key` header), the update's key.
    pub message_key: String,
    /// Who clicked (`event.operator.open_id`).
    pub open_id: String,
    /// Their name from the roster (the open_id when the roster does not know them).
    pub name: String,
    /// The chat the card is in, the update's receiver.
    pub chat_id: String,
    /// Where the update went: the source topic's partition and offset.
    pub partition: i32,
    pub offset: i64,
}

/// An Acknowledge click, as the responder reads it from its record.
struct Click {
    event_id: String,
    message_key: String,
    open_id: String,
    chat_id: String,
}

/// Reads `events_topic` until an Acknowledge click arrives (giving up after `within`), and
/// answers it with the acknowledged version of the alert, produced to `source_topic`.
pub async fn acknowledge_one_click(
    bootstrap: String,
    events_topic: String,
    source_topic: String,
    within: Duration,
) -> Result<Acknowledgement, ResponderError> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", GROUP)
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[&events_topic])?;
    let deadline = Instant::now() + within;
    let mut last_error = None;
    let click = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(next) = tokio::time::timeout(left, consumer.recv()).await else {
            return Err(ResponderError::NoClick {
                topic: events_topic,
                waited: within,
                last_error,
            });
        };
        match next {
            Ok(m) => {
                if let Some(click) = read_click(&m).map_err(|problem| ResponderError::BadClick {
                    topic: events_topic.clone(),
                    offset: m.offset(),
                    problem,
                })? {
                    break click;
                }
            }
            // Transient (the group forming, a broker hiccup): librdkafka carries on by itself.
            Err(e) => last_error = Some(e.to_string()),
        }
    };
    let name = ROSTER
        .iter()
        .find(|(id, _)| *id == click.open_id)
        .map_or(click.open_id.as_str(), |(_, name)| name);
    let update = alert_record(
        &click.message_key,
        &click.chat_id,
        &format!("{} by {name}", headline("ACKNOWLEDGED")),
        "orange",
        &format!("**{name}** is on it (acknowledged from the card)"),
        false,
    );
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .create()?;
    let (partition, offset) = producer
        .send(
            FutureRecord::to(&source_topic)
                .key(&click.message_key)
                .payload(&update),
            Duration::from_secs(10),
        )
        .await
        .map(|delivery| (delivery.partition, delivery.offset))
        .map_err(|(source, _)| ResponderError::Produce {
            topic: source_topic.clone(),
            source,
        })?;
    Ok(Acknowledgement {
        event_id: click.event_id,
        message_key: click.message_key,
        name: name.to_string(),
        open_id: click.open_id,
        chat_id: click.chat_id,
        partition,
        offset,
    })
}

/// The click a record holds, if it is one the responder answers (an Acknowledge click); what is
/// missing from it otherwise.
fn read_click(m: &BorrowedMessage<'_>) -> Result<Option<Click>, String> {
    let header = |name: &str| super::header(m, name);
    if header("lark.event_type").as_deref() != Some(CLICK) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(m.payload().unwrap_or_default())
        .map_err(|e| format!("its value is not JSON: {e}"))?;
    if value.pointer("/event/action/value/action") != Some(&Value::from("ack")) {
        return Ok(None);
    }
    let text = |pointer: &str, what: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or(format!("no {what} ({pointer})"))
    };
    Ok(Some(Click {
        event_id: header("lark.event_id").ok_or("no lark.event_id header")?,
        message_key: header("lark.message_key")
            .ok_or("no lark.message_key header: the clicked card was not sent with a messageKey")?,
        open_id: text("/event/operator/open_id", "operator")?,
        chat_id: text("/event/context/open_chat_id", "chat")?,
    }))
}
