//! The Kafka consumer, configured for at-least-once delivery.
//!
//! `enable.auto.offset.store=false`: librdkafka commits only offsets lark-sink stored, and lark-sink
//! stores an offset only when the [`OffsetTracker`] says every earlier record is finished.
//! `enable.auto.commit=true` then commits those stored offsets every `offset.flush.interval.ms`;
//! [`SinkContext`] also commits synchronously when partitions are revoked, and the sink commits
//! once more on shutdown (the pattern of rust-rdkafka's `examples/at_least_once.rs`).
//!
//! The source knows nothing about Lark, delivery or the admin API: what a rebalance or
//! librdkafka's statistics tell it is published ([`Assignment`], broker readiness) on `watch`
//! channels, and the sink acts on it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use tokio::sync::watch;

use super::offsets::OffsetTracker;
use super::subscription::{regex_subscription, subscribed_partitions, Topics};
use crate::telemetry;

pub type SinkConsumer = StreamConsumer<SinkContext>;

/// What the consumer is built from; `config` builds it (`ConnectorConfig::consumer`), so the
/// source never reads the connector's config. No `Debug`: `kafka` holds credentials.
#[derive(Clone)]
pub struct ConsumerConfig {
    /// librdkafka properties (the `kafka.*` keys, with lark-sink's defaults).
    pub kafka: BTreeMap<String, String>,
    /// What to subscribe to; also the denominator of the partition share.
    pub topics: Topics,
    /// `offset.flush.interval.ms`: how often librdkafka commits the stored offsets.
    pub commit_interval: Duration,
    /// Work out [`Assignment::share`] after each assignment (`lark.rate.share=auto`): a metadata
    /// request inside the rebalance callback, so only when someone uses it.
    pub partition_share: bool,
}

/// What the last rebalance gave this instance, published on a `watch` channel
/// ([`SinkContext::assignments`]). The source only reports it; the sink decides what it means
/// (pausing new partitions while the buffer is full, scaling the app's rate budget).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Assignment {
    /// How many partitions the rebalance assigned (with the cooperative protocol, the ones it
    /// added).
    pub partitions: usize,
    /// This instance's partitions over all partitions of the subscribed topics, when asked for
    /// ([`ConsumerConfig::partition_share`]) and the metadata request answered.
    pub share: Option<f64>,
}

/// Rebalance hooks: commit what is finished before losing partitions, then forget them; after
/// an assignment, publish it (with this instance's share of the partitions when asked for).
/// Also reports, from librdkafka's statistics, the consumer lag and whether a broker is up.
pub struct SinkContext {
    /// Forgets revoked partitions, so their late completions store nothing.
    tracker: Arc<Mutex<OffsetTracker>>,
    /// The subscription, to count the partitions it consumes for the share.
    topics: Topics,
    /// [`ConsumerConfig::partition_share`].
    partition_share: bool,
    /// The last assignment; a new value after each one.
    assignment: watch::Sender<Assignment>,
    /// Whether any broker connection is up, from the last statistics (for `/readyz`).
    broker_up: watch::Sender<bool>,
    /// Assignments so far ([`SinkContext::assigns`]): two or more since the sink last looked,
    /// and a partition owned at both looks may have been someone else's in between, which the
    /// assignment alone does not show.
    assigns: AtomicU64,
}

impl SinkContext {
    /// Every assignment from now on; the sink reads them between records.
    pub fn assignments(&self) -> watch::Receiver<Assignment> {
        self.assignment.subscribe()
    }

    /// How many assignments there were so far (each rebalance that gave this instance
    /// partitions, or took them, ends with one).
    pub fn assigns(&self) -> u64 {
        self.assigns.load(Ordering::SeqCst)
    }

    /// Whether a broker connection is up, each time librdkafka's statistics say.
    pub fn broker_up(&self) -> watch::Receiver<bool> {
        self.broker_up.subscribe()
    }

    /// This instance's partitions over all partitions of the subscribed topics.
    fn partition_share(&self, consumer: &BaseConsumer<Self>, assigned: usize) -> Option<f64> {
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .map_err(|e| tracing::warn!("cannot read topic metadata for lark.rate.share: {e}"))
            .ok()?;
        let total = subscribed_partitions(
            &self.topics,
            metadata
                .topics()
                .iter()
                .map(|t| (t.name(), t.partitions().len())),
        );
        (total > 0 && assigned > 0).then(|| (assigned as f64 / total as f64).min(1.0))
    }
}

impl ClientContext for SinkContext {
    /// librdkafka statistics (every `statistics.interval.ms`): consumer lag per partition for the
    /// metrics, and whether any broker connection is up for `/readyz`.
    fn stats(&self, stats: rdkafka::Statistics) {
        let up = stats.brokers.values().any(|b| b.state == "UP");
        self.broker_up.send_replace(up);
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    telemetry::consumer_lag(topic, *partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                // Offsets stored so far cover only finished records: commit them while we still
                // own the partitions, so the next owner starts right after them. Not when the
                // assignment is already lost (the session timed out, e.g. the coordinator stopped
                // answering): the group has moved on, the commit would be refused, and a
                // synchronous commit to an unresponsive coordinator blocks this callback, and so
                // the whole consumer, until the request times out.
                if consumer.assignment_lost() {
                    tracing::warn!(
                        "assignment lost (session timed out): not committing; the next owner replays from the last commit"
                    );
                } else {
                    match consumer.commit_consumer_state(CommitMode::Sync) {
                        Ok(()) => tracing::info!("committed finished offsets before revocation"),
                        Err(e) => tracing::debug!("nothing committed before revocation: {e}"),
                    }
                }
                if let Ok(mut t) = self.tracker.lock() {
                    for el in tpl.elements() {
                        t.revoke(el.topic(), el.partition());
                    }
                }
                tracing::info!(partitions = %describe(tpl), "partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = %describe(tpl), "partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!("rebalance error: {e}"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.assigns.fetch_add(1, Ordering::SeqCst);
            let share = self
                .partition_share
                .then(|| self.partition_share(consumer, tpl.count()))
                .flatten();
            self.assignment.send_replace(Assignment {
                partitions: tpl.count(),
                share,
            });
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::debug!(offsets = %describe_offsets(offsets), "offsets committed"),
            // NoOffset: nothing new was stored since the last commit.
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => {}
            Err(e) => tracing::warn!("offset commit failed (will retry on the next interval): {e}"),
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}-{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

fn describe_offsets(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}-{}@{:?}", e.topic(), e.partition(), e.offset()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Creates the consumer and subscribes it to the configured topics.
pub fn create_consumer(
    cfg: &ConsumerConfig,
    tracker: Arc<Mutex<OffsetTracker>>,
) -> KafkaResult<SinkConsumer> {
    let mut client = ClientConfig::new();
    for (k, v) in cfg.kafka.iter() {
        client.set(k, v);
    }
    client
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set(
            "auto.commit.interval.ms",
            cfg.commit_interval.as_millis().to_string(),
        );
    if !cfg.kafka.contains_key("statistics.interval.ms") {
        // Lag metrics and broker readiness come from librdkafka's statistics.
        client.set("statistics.interval.ms", "5000");
    }
    let consumer: SinkConsumer = client.create_with_context(SinkContext {
        tracker,
        topics: cfg.topics.clone(),
        partition_share: cfg.partition_share,
        assignment: watch::channel(Assignment::default()).0,
        broker_up: watch::channel(false).0,
        assigns: AtomicU64::new(0),
    })?;
    match &cfg.topics {
        Topics::List(topics) => {
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer.subscribe(&refs)?;
        }
        Topics::Regex(re) => {
            consumer.subscribe(&[regex_subscription(re).as_str()])?;
        }
    }
    Ok(consumer)
}
