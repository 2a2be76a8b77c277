//! The sink: Kafka → decode → transform → validate → per-receiver delivery → offsets.
//!
//! The consumer loop prepares each record (decode, transform, validate) and hands its messages to
//! the [`Scheduler`], which keeps one queue per receiver. It never waits for delivery: when the
//! buffer bound is reached it *pauses* the partitions and keeps polling (so the group never evicts
//! it), and resumes them once the buffer has drained to half. Records finish out of order across
//! receivers; the [`OffsetTracker`] stores each partition's contiguous finished prefix only, so a
//! crash replays (uuid-deduplicated) instead of losing. A record is finished when every message of
//! it was delivered or durably dead-lettered, and (with `lark.result.topic`) its result records
//! were acknowledged.
//!
//! A record's path through the files, each one role:
//!
//! 1. `startup.rs`: the components, built and checked before the first record.
//! 2. `intake.rs`: the loop takes the record, prepares it and hands its messages to the queues.
//! 3. `backpressure.rs`: when the loop stops taking records and pauses the partitions (pure).
//!    `restore.rs`: with `lark.state.topic`, which state partitions are held or being restored
//!    beside the loop, and the source partitions paused (their records held) until then.
//! 4. `settle.rs`: each queue sends a message to Lark and settles it: buzz, result or dead letter,
//!    and the offset once the record's last message is finished. `keyed.rs`: the same for a
//!    message with a `messageKey` (send, update in place, replace or recall, with the key's
//!    state written before the offset).
//! 5. `verdict.rs`: what Lark's final answer means for the message: done, dead-letter it (with
//!    which class and reason), or stop the connector (pure).
//!
//! [`run`] composes them: start → intake → stop (drain the queues, commit).
//!
//! [`Scheduler`]: crate::delivery::Scheduler
//! [`OffsetTracker`]: crate::source::OffsetTracker

mod backpressure;
mod intake;
mod keyed;
mod restore;
mod settle;
mod settle_storm;
mod startup;
mod storm;
mod verdict;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::{ConfigError, ConnectorConfig};
use crate::control::Control;
use crate::dlq::DlqError;
use crate::envelope::validate::SchemaError;
use crate::results::ResultError;
use crate::state::StateError;
use crate::telemetry::SinkStats;
use intake::Intake;
use settle::Settle;

/// Why the sink stopped. The start-up variants keep the error's own text without chaining it as
/// a `source`, so `main` prints each reason once.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The shipped envelope schemas do not compile (a build defect, not a config error).
    #[error("cannot start: {0}")]
    Schema(SchemaError),
    #[error("cannot start: HTTP client: {0}")]
    HttpClient(reqwest::Error),
    #[error("cannot start: Kafka consumer: {0}")]
    Consumer(rdkafka::error::KafkaError),
    /// The transform chain cannot be built (a script that does not load, an unknown engine).
    #[error("cannot start: {0}")]
    Transforms(ConfigError),
    /// A thread panicked while holding the offset tracker: no offset can be trusted any more.
    #[error("stopping: the offset tracker is poisoned")]
    TrackerPoisoned,
    #[error(transparent)]
    Dlq(#[from] DlqError),
    #[error(transparent)]
    Results(#[from] ResultError),
    /// The keyed messages' state topic (`lark.state.topic`) could not be created, restored or
    /// written.
    #[error(transparent)]
    State(#[from] StateError),
    /// `errors.tolerance=none` and a record could not be delivered.
    #[error("stopping (errors.tolerance=none): record {coordinates} failed at {stage}: {reason}")]
    Intolerable {
        coordinates: String,
        stage: &'static str,
        reason: String,
    },
    /// An app-wide Lark configuration error: every message would fail, so stop instead of
    /// dead-lettering the topic. The record stays uncommitted.
    #[error(
        "stopping: Lark rejected the app configuration while delivering {coordinates}: {reason}"
    )]
    LarkConfig { coordinates: String, reason: String },
    /// Kafka refused the credentials, or its certificate was not trusted (checked at start-up).
    #[error("cannot start: {0}")]
    KafkaAccess(crate::source::probe::KafkaAccessError),
}

/// Runs the connector until `shutdown` resolves or a restart is requested through `control`
/// (clean stop, `Ok`), or a fatal error occurs.
pub async fn run(
    cfg: ConnectorConfig,
    stats: Arc<SinkStats>,
    control: Arc<Control>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SinkError> {
    let c = startup::start(cfg, &control).await?;
    let (fatal, fatal_rx) = mpsc::channel::<SinkError>(8);
    let offsets = c.offsets.clone();
    let settle = Arc::new(Settle {
        lark: c.lark,
        outputs: c.outputs,
        offsets: c.offsets,
        stats,
        control: control.clone(),
        fatal,
        storm: storm::Storm::new(&c.cfg.storm),
    });
    let mut intake = Intake::new(c.cfg, c.validator, c.chain, c.consumer, settle, fatal_rx);
    control.set_stopping(false);
    control.set_running(true);
    let result = intake.run(shutdown).await;

    // Stop: queues finish the message in hand and drop the rest; then commit what finished.
    control.set_stopping(true);
    let late = intake.drain().await;
    control.set_running(false);
    offsets.close();
    result.and_then(|()| late.map_or(Ok(()), Err))
}
