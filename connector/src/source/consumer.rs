//! The Kafka consumer, configured for at-least-once delivery.
//!
//! `enable.auto.offset.store=false`: librdkafka commits only offsets lark-sink stored, and lark-sink
//! stores an offset only when the [`OffsetTracker`] says every earlier record is finished.
//! `enable.auto.commit=true` then commits those stored offsets every `offset.flush.interval.ms`;
//! [`SinkContext`] also commits synchronously when partitions are revoked, and the sink commits
//! once more on shutdown (the pattern of rust-rdkafka's `examples/at_least_once.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};

use super::offsets::OffsetTracker;
use crate::config::{regex_subscription, topics_regex_matcher, ConnectorConfig, Topics};
use crate::control::Control;
use crate::delivery::RateLimits;
use crate::telemetry;

pub type SinkConsumer = StreamConsumer<SinkContext>;

/// Rebalance hooks: commit what is finished before losing partitions, then forget them; after
/// an assignment, flag it (so the sink pauses new partitions while its buffer is full) and
/// recompute this instance's share of the app's rate budget.
pub struct SinkContext {
    pub tracker: Arc<Mutex<OffsetTracker>>,
    pub limits: Arc<RateLimits>,
    pub topics: Topics,
    pub assignment_changed: AtomicBool,
    pub control: Arc<Control>,
}

impl SinkContext {
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

/// How many partitions the subscription consumes, given `(topic, partition count)` for every
/// topic of the cluster: the denominator of [`SinkContext::partition_share`], apart from the
/// metadata request so it can be tested without a broker.
fn subscribed_partitions<'a>(
    topics: &Topics,
    cluster: impl IntoIterator<Item = (&'a str, usize)>,
) -> usize {
    let regex = match topics {
        Topics::Regex(re) => match topics_regex_matcher(re) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("topics.regex cannot be read for lark.rate.share: {e}");
                return 0;
            }
        },
        Topics::List(_) => None,
    };
    cluster
        .into_iter()
        .filter(|(name, _)| match (topics, &regex) {
            (Topics::List(list), _) => list.iter().any(|l| l == name),
            (Topics::Regex(_), Some(re)) => re.is_match(name),
            (Topics::Regex(_), None) => false,
        })
        .map(|(_, n)| n)
        .sum()
}

impl ClientContext for SinkContext {
    /// librdkafka statistics (every `statistics.interval.ms`): consumer lag per partition for the
    /// metrics, and whether any broker connection is up for `/readyz`.
    fn stats(&self, stats: rdkafka::Statistics) {
        let up = stats.brokers.values().any(|b| b.state == "UP");
        self.control.set_broker_ready(up);
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
            self.assignment_changed.store(true, Ordering::SeqCst);
            if self.limits.config().share_auto {
                if let Some(share) = self.partition_share(consumer, tpl.count()) {
                    self.limits.set_share(share);
                    tracing::info!(
                        share,
                        "app rate budget scaled to this instance's share of partitions"
                    );
                }
            }
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
    cfg: &ConnectorConfig,
    tracker: Arc<Mutex<OffsetTracker>>,
    limits: Arc<RateLimits>,
    control: Arc<Control>,
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
            cfg.offset_flush_interval.as_millis().to_string(),
        );
    if !cfg.kafka.contains_key("statistics.interval.ms") {
        // Lag metrics and broker readiness come from librdkafka's statistics.
        client.set("statistics.interval.ms", "5000");
    }
    let consumer: SinkConsumer = client.create_with_context(SinkContext {
        tracker,
        limits,
        topics: cfg.topics.clone(),
        assignment_changed: AtomicBool::new(false),
        control,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `(topics.regex, topic, whether librdkafka's subscription consumes it)`. librdkafka takes
    /// the `^`-prefixed pattern to POSIX `regexec`, a search: anchored at the start by the `^`,
    /// not at the end, and `^a|b` is `^a` or `b` anywhere (checked against glibc's regexec).
    const CASES: &[(&str, &str, bool)] = &[
        ("alerts.*", "alerts", true),
        ("alerts.*", "alerts-p1", true),
        ("alerts.*", "xalerts", false),
        ("^alerts", "alerts", true),
        ("^alerts", "alerts-p1", true),
        ("^alerts", "xalerts", false),
        ("^alerts-p1", "alerts-p1", true),
        ("^alerts-p1", "alerts-p1-archive", true),
        ("^alerts-p1", "alerts", false),
        ("^alerts-p1$", "alerts-p1-archive", false),
        ("^alerts-p1$", "alerts-p1", true),
        ("alerts|audit", "alerts-p1", true),
        ("alerts|audit", "xaudit", true),
        ("alerts|audit", "xalerts", false),
    ];

    #[test]
    fn rate_share_and_output_check_match_what_the_subscription_consumes() {
        for &(re, topic, consumed) in CASES {
            let topics = Topics::Regex(re.to_string());
            assert_eq!(
                crate::config::topics_include(&topics, topic),
                consumed,
                "config's output-topic check: '{re}' vs '{topic}'"
            );
            assert_eq!(
                subscribed_partitions(&topics, [(topic, 3)]),
                if consumed { 3 } else { 0 },
                "lark.rate.share=auto partition count: '{re}' vs '{topic}'"
            );
        }
        let cluster = [
            ("alerts", 3),
            ("alerts-p1", 2),
            ("alerts-p1-archive", 1),
            ("xalerts", 5),
        ];
        let regex = |re: &str| Topics::Regex(re.to_string());
        assert_eq!(subscribed_partitions(&regex("^alerts-p1"), cluster), 3);
        assert_eq!(subscribed_partitions(&regex("alerts"), cluster), 6);
        assert_eq!(subscribed_partitions(&regex("(unclosed"), cluster), 0);
        let list = Topics::List(vec!["alerts".into(), "xalerts".into(), "gone".into()]);
        assert_eq!(subscribed_partitions(&list, cluster), 8);
    }

    #[test]
    fn the_subscription_is_what_the_matcher_compiles() {
        assert_eq!(regex_subscription("alerts.*"), "^alerts.*");
        assert_eq!(regex_subscription("^alerts"), "^alerts");
        for &(re, topic, consumed) in CASES {
            let subscription = regex_subscription(re);
            assert!(subscription.starts_with('^'), "librdkafka needs the ^");
            let matcher = topics_regex_matcher(re).expect("the cases are valid regexes");
            assert_eq!(matcher.as_str(), subscription);
            assert_eq!(matcher.is_match(topic), consumed, "'{re}' vs '{topic}'");
        }
    }
}
