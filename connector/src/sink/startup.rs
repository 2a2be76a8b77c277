//! Start-up: builds the sink's components and checks what can be checked before the first record.
//!
//! Wrong Kafka credentials, an untrusted broker certificate or a wrong Lark app secret stop
//! start-up here with the service's own reason, instead of surfacing as the first record's failure
//! or being retried quietly forever. The output topics are created (or checked) here too.

use std::sync::{Arc, Mutex};

use lark_sink_transforms::Chain;

use super::settle::{KeyedState, LarkSide, Outputs};
use super::SinkError;
use crate::config::{ConnectorConfig, Tolerance};
use crate::control::Control;
use crate::delivery::{RateLimits, RetryPolicy};
use crate::dlq::DeadLetterWriter;
use crate::envelope::validate::EnvelopeValidator;
use crate::lark::{ErrorClass, LarkClient, LookupConfig, UserDirectory};
use crate::results::ResultWriter;
use crate::source::subscription::topics_include;
use crate::source::{create_consumer, probe, OffsetTracker, Offsets, SinkConsumer};
use crate::state::{Changelog, Digests, MessageStates};

/// Everything `run` wires together, built and checked.
pub(super) struct Components {
    /// What the loop still reads: the buffer bound, the transforms (to rebuild a crashed chain)
    /// and the shutdown timeout.
    pub cfg: ConnectorConfig,
    pub validator: EnvelopeValidator,
    /// Transform engines keep interpreter state; the loop owns the one chain and lends it to a
    /// blocking thread per record, so a slow script never stalls the async runtime.
    pub chain: Chain,
    pub lark: LarkSide,
    pub outputs: Outputs,
    pub consumer: Arc<SinkConsumer>,
    pub offsets: Offsets,
}

/// Builds the components in dependency order, failing fast on anything that cannot work.
pub(super) async fn start(
    cfg: ConnectorConfig,
    control: &Arc<Control>,
) -> Result<Components, SinkError> {
    let validator = EnvelopeValidator::with_webhooks(cfg.lark.webhooks.keys().cloned().collect())
        .map_err(SinkError::Schema)?
        .allow_keys(cfg.state.is_some());
    let client = Arc::new(LarkClient::new(&cfg.lark).map_err(SinkError::HttpClient)?);
    let source_partitions = check_kafka(&cfg).await?;
    let outputs = outputs(&cfg, source_partitions).await?;
    check_token(&client, control).await?;
    let limits = Arc::new(RateLimits::new(cfg.rate));
    let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
    let consumer =
        Arc::new(create_consumer(&cfg.consumer(), tracker.clone()).map_err(SinkError::Consumer)?);
    tracing::info!(connector = %cfg.name, topics = ?cfg.topics, group = %cfg.kafka["group.id"],
        lark = %cfg.lark.base_url, dlq = ?cfg.errors.dlq_topic, results = ?cfg.result_topic,
        state = ?cfg.state.as_ref().map(|s| &s.topic), rate = ?cfg.rate, buffer = ?cfg.buffer,
        "lark-sink started");
    let chain = cfg.transform_chain().map_err(SinkError::Transforms)?;
    let lark = LarkSide {
        policy: RetryPolicy::from(&cfg.lark),
        directory: UserDirectory::new(client.clone(), LookupConfig::from(&cfg.lark)),
        client,
        limits,
    };
    let offsets = Offsets {
        tracker,
        consumer: consumer.clone(),
    };
    Ok(Components {
        cfg,
        validator,
        chain,
        lark,
        outputs,
        consumer,
        offsets,
    })
}

/// The dead-letter writer (with `errors.tolerance=all` and a DLQ topic), the result writer (with
/// `lark.result.topic`) and the keyed messages' state (with `lark.state.topic`, created with
/// `source_partitions` partitions unless configured), their topics created or checked.
async fn outputs(cfg: &ConnectorConfig, source_partitions: i32) -> Result<Outputs, SinkError> {
    let dlq = match (&cfg.errors.dlq_topic, cfg.errors.tolerance) {
        (Some(topic), Tolerance::All) => {
            let w = DeadLetterWriter::new(
                &cfg.kafka,
                topic.clone(),
                cfg.name.clone(),
                cfg.errors.dlq_context_headers,
            )?;
            w.ensure_topic(
                &cfg.kafka,
                cfg.errors.dlq_partitions,
                cfg.errors.dlq_replication_factor,
            )
            .await?;
            Some(w)
        }
        _ => None,
    };
    let results = match &cfg.result_topic {
        Some(topic) => {
            let w = ResultWriter::new(&cfg.kafka, topic.clone())?;
            w.ensure_topic(&cfg.kafka).await?;
            Some(w)
        }
        None => None,
    };
    if cfg.storm.digests() && cfg.state.is_none() {
        tracing::warn!(
            "storm.digest.after without lark.state.topic: a replay after a crash may group \
             records differently and post a second digest card for them (docs/user-guide.md \
             \"Storms\", \"After a crash\")"
        );
    }
    let state = match &cfg.state {
        Some(s) => {
            let changelog = Changelog::new(&cfg.kafka, s.topic.clone())?;
            changelog
                .ensure_topic(&cfg.kafka, s.partitions.unwrap_or(source_partitions))
                .await?;
            tracing::info!(topic = %s.topic, partitions = changelog.partitions(), ttl = ?s.ttl,
                "keyed messages: state topic ready");
            Some(KeyedState {
                states: MessageStates::default(),
                digests: Digests::default(),
                changelog,
                ttl: s.ttl,
            })
        }
        None => None,
    };
    Ok(Outputs {
        name: cfg.name.clone(),
        dlq,
        results,
        state,
    })
}

/// Wrong Kafka credentials or an untrusted broker certificate stop start-up here, with
/// librdkafka's reason, instead of being retried quietly forever. No answer at all only warns.
/// Returns the most partitions any subscribed topic has (1 when none is known yet): a state
/// topic the connector creates is partitioned like the source.
async fn check_kafka(cfg: &ConnectorConfig) -> Result<i32, SinkError> {
    let found = probe::probe(&cfg.kafka, probe::CHECK_TIME, probe::Wait::Full).await;
    if let Some(e) = found.access_error() {
        return Err(SinkError::KafkaAccess(e));
    }
    match found.metadata {
        Ok(metadata) => Ok(metadata
            .topics()
            .iter()
            .filter(|t| topics_include(&cfg.topics, t.name()))
            .map(|t| t.partitions().len() as i32)
            .max()
            .unwrap_or(1)
            .max(1)),
        // A bad property: the consumer, created next, reports it with its own message.
        Err(probe::NoMetadata::Client(_) | probe::NoMetadata::Panicked(_)) => Ok(1),
        Err(probe::NoMetadata::Request(_)) => {
            tracing::warn!(
                "Kafka did not answer within {:?} at start-up; consuming anyway (librdkafka keeps reconnecting)",
                probe::CHECK_TIME
            );
            Ok(1)
        }
    }
}

/// Checks the credentials before consuming anything: a wrong app secret stops start-up with
/// Lark's answer, not as the first record's failure. A transient failure only warns (the token
/// is fetched again when first needed).
async fn check_token(client: &LarkClient, control: &Control) -> Result<(), SinkError> {
    let token = if client.has_app() {
        client.tokens().get().await
    } else {
        Ok(crate::secret::Secret::default()) // webhook-only: no token to check
    };
    match token {
        Ok(_) => control.set_lark_ready(true),
        Err(e) if e.class == ErrorClass::Fatal => {
            return Err(SinkError::LarkConfig {
                coordinates: "start-up (tenant token)".into(),
                reason: e.to_string(),
            })
        }
        Err(e) => tracing::warn!("cannot fetch a tenant token yet (will retry): {e}"),
    }
    Ok(())
}
