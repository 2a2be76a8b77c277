//! The way back: Lark's events and card button clicks into a Kafka topic (`lark.events.*`,
//! docs/user-guide.md "Receiving events and clicks").
//!
//! A second pipeline beside the sink, in the same process: [`run`] holds the app's long
//! connection (`lark::events::client`) and, for each whole event Lark pushes, writes one record
//! to `lark.events.topic` (value: the event's plaintext JSON; key: the message it concerns, else
//! its chat; headers `lark.event_type`, `lark.event_id`, `lark.app_id`, `lark.tenant_key`) with the
//! acknowledged producer (`acks=all`), and only then answers Lark. A write that fails or takes
//! too long is answered with code 500 (or not at all), so Lark pushes the event again later
//! instead of losing it. A card click is the exception: Lark never pushes a callback again
//! (lifecycle §2.1), so the clicking user sees an error and may click again. Redeliveries within
//! `lark.events.dedup.window.ms` are answered without a second record (by `event_id`, and by
//! `message_id` for a received message).
//!
//! The guarantee and its precondition: an event Lark got an answer 200 for is in the topic, and
//! so is a click its user saw answered; the dedup memory is this process's, so after a restart a
//! redelivery can be written once more (consumers dedupe on `lark.event_id`, as with any
//! at-least-once source).
//!
//! Two ways in (`lark.events.mode`): the long connection (`websocket`, the default, here) and
//! signed HTTP callbacks to a listener (`http`, `http.rs`); both hand each event to the same
//! writer.
//!
//! Here `lark` (the protocol) meets `source::kafka` (the producer): neither knows the other.

pub mod http;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::config::{ConnectorConfig, EventsConfig, EventsMode, DEDUP_CAPACITY};
use crate::lark::events::client::{ConnectError, Handler, LongConnection, Verdict};
use crate::lark::events::event::{
    card_answer, card_failure_answer, InboundEvent, Seen, CARD_ACTION,
};
use crate::source::kafka::{acked_producer_within, ensure_topic};
use crate::telemetry;

/// How long the Kafka write of one event may take: the answer must reach Lark within 3 s.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// When a write still unacknowledged is given up and answered 500: after [`WRITE_TIMEOUT`], before
/// the long connection's own deadline (`lark::events::client::HANDLER_DEADLINE`, 2.5 s).
const ANSWER_BY: Duration = Duration::from_millis(2200);

/// What stops the events pipeline.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("events: cannot create the producer: {0}")]
    Producer(rdkafka::error::KafkaError),
    #[error("events: topic '{topic}' does not exist and could not be created: {reason}")]
    Topic { topic: String, reason: String },
    #[error(transparent)]
    Connection(#[from] ConnectError),
    #[error("events: cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Writes each event to the topic, then answers.
struct ToKafka {
    producer: FutureProducer,
    cfg: EventsConfig,
    seen: Mutex<Seen>,
    /// The dedup keys being written now. Events are handled side by side (both ways in), so a
    /// redelivery can arrive while the first delivery's write is still unacknowledged: it is
    /// answered 500 rather than written a second time (Lark pushes it again; by then it is seen).
    writing: Writing,
}

/// The dedup keys whose write is under way.
#[derive(Default)]
struct Writing(Mutex<HashSet<String>>);

/// One key's claim in [`Writing`], given back however the handling ends (the caller may drop it
/// at its deadline).
struct Claim<'a> {
    writing: &'a Writing,
    key: String,
}

impl Writing {
    fn keys(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims `key` for one write; `None` while another delivery of it is being written.
    fn claim(&self, key: &str) -> Option<Claim<'_>> {
        self.keys().insert(key.to_string()).then(|| Claim {
            writing: self,
            key: key.to_string(),
        })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.writing.keys().remove(&self.key);
    }
}

impl ToKafka {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The answer to an event that is in the topic: a card callback's toast, else nothing.
    fn answer(&self, event: &InboundEvent) -> Verdict {
        if event.event_type == CARD_ACTION {
            let body = card_answer(self.cfg.card_toast.as_deref()).to_string();
            Verdict::Done(Some(body.into_bytes()))
        } else {
            Verdict::Done(None)
        }
    }

    async fn write(&self, event: &InboundEvent) -> Result<(), String> {
        let mut headers = OwnedHeaders::new();
        for (k, v) in event.headers() {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.cfg.topic)
            .payload(event.json.as_slice())
            .headers(headers);
        if let Some(key) = event.key() {
            record = record.key(key);
        }
        self.producer
            .send(record, WRITE_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(e, _)| e.to_string())
    }
}

impl Handler for ToKafka {
    async fn handle(&self, payload: Vec<u8>) -> Verdict {
        let event = match InboundEvent::parse(&payload) {
            Ok(e) => e,
            Err(e) => {
                // Not an event lark-sink can key or dedupe: answered 200 so Lark stops pushing
                // it, and logged (its bytes, which may hold user content, are not).
                tracing::warn!("events: {e}; answered and dropped");
                telemetry::event("failed");
                return Verdict::Done(None);
            }
        };
        let dedup = event.dedup_key();
        if self.seen().contains(&dedup, Instant::now()) {
            tracing::debug!(event_id = %event.event_id, "events: a redelivery; not written again");
            telemetry::event("duplicate");
            return self.answer(&event);
        }
        let Some(_claim) = self.writing.claim(&dedup) else {
            tracing::debug!(event_id = %event.event_id, "events: a redelivery while the first is being written; answered 500");
            telemetry::event("duplicate");
            return Verdict::Failed;
        };
        // librdkafka notices a message timeout only so often: bound the wait here as well, so a
        // slow write is answered 500 (and counted) before the client's own deadline.
        let written = match tokio::time::timeout(ANSWER_BY, self.write(&event)).await {
            Ok(w) => w,
            Err(_) => Err(format!("no acknowledgement within {ANSWER_BY:?}")),
        };
        match written {
            Ok(()) => {
                self.seen().insert(dedup, Instant::now());
                tracing::debug!(event_id = %event.event_id, event_type = %event.event_type,
                    "events: written");
                telemetry::event("written");
                self.answer(&event)
            }
            Err(e) => {
                telemetry::event("failed");
                // Lark redelivers an event, never a card callback (lifecycle §2.1): rather than
                // leave the clicking user Lark's generic error (200671), an error toast says to
                // click again.
                match (&*event.event_type, &self.cfg.failure_toast) {
                    (CARD_ACTION, Some(toast)) => {
                        tracing::warn!(event_id = %event.event_id, "events: writing a click to the topic failed: {e}; its user is told to click again");
                        let body = card_failure_answer(toast).to_string();
                        Verdict::Done(Some(body.into_bytes()))
                    }
                    (CARD_ACTION, None) => {
                        tracing::warn!(event_id = %event.event_id, "events: writing a click to the topic failed: {e}; answered 500, its user sees an error (Lark does not push a click again)");
                        Verdict::Failed
                    }
                    _ => {
                        tracing::warn!(event_id = %event.event_id, "events: writing to the topic failed: {e}; answered 500, Lark pushes it again");
                        Verdict::Failed
                    }
                }
            }
        }
    }
}

/// Runs the events pipeline of `cfg` until `stop` is cancelled (`Ok`) or it cannot go on (wrong
/// app credentials, the connection limit, the topic cannot be made).
pub async fn run(cfg: &ConnectorConfig, stop: CancellationToken) -> Result<(), InboundError> {
    let Some(events) = cfg.events.clone() else {
        return Ok(());
    };
    // A write that cannot be acknowledged in time must fail, not land later: the event was then
    // answered 500 and will come again.
    let producer =
        acked_producer_within(&cfg.kafka, WRITE_TIMEOUT).map_err(InboundError::Producer)?;
    ensure_topic(&producer, &cfg.kafka, &events.topic, 1, -1)
        .await
        .map_err(|reason| InboundError::Topic {
            topic: events.topic.clone(),
            reason,
        })?;
    let handler = ToKafka {
        producer,
        seen: Mutex::new(Seen::new(events.dedup_window, DEDUP_CAPACITY)),
        writing: Writing::default(),
        cfg: events.clone(),
    };
    match &events.mode {
        EventsMode::Http(listener) => http::serve(listener, handler, stop).await,
        EventsMode::Websocket => {
            let connection = LongConnection::new(
                &cfg.lark.base_url,
                &cfg.lark.app_id,
                cfg.lark.app_secret.clone(),
                cfg.lark.request_timeout,
                &cfg.lark.tls_ca,
            )?;
            tracing::info!(topic = %events.topic, "events: receiving Lark events over the long connection");
            connection.run(&handler, &stop).await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_claimed_once_until_its_claim_ends() {
        let writing = Writing::default();
        let first = writing.claim("event:1");
        assert!(first.is_some());
        assert!(
            writing.claim("event:1").is_none(),
            "a second delivery waits"
        );
        assert!(writing.claim("event:2").is_some(), "another event does not");
        drop(first);
        assert!(
            writing.claim("event:1").is_some(),
            "given back when dropped"
        );
    }
}
