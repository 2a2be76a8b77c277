//! The Kafka side of the config: the subscription (`topics` / `topics.regex`), the librdkafka
//! passthrough (`kafka.*`) with lark-sink's defaults and reserved keys, and the check that no
//! output topic is also a source topic.
//!
//! Which topics a `topics.regex` consumes is `source/subscription.rs`'s to say (librdkafka's
//! reading of it); the output-topic check here asks it.

use std::collections::BTreeMap;

use super::keys::Keys;
use super::{key_err, ConfigError, ConnectorConfig};
use crate::secret::is_secret_key;
use crate::source::{topics_include, ConsumerConfig, Topics};

/// librdkafka settings lark-sink owns, with what to do instead.
const RESERVED_KAFKA: &[(&str, &str)] = &[
    (
        "enable.auto.offset.store",
        "is managed by lark-sink (offsets are stored only after delivery); remove it",
    ),
    (
        "enable.auto.commit",
        "is managed by lark-sink (offsets are stored only after delivery); remove it",
    ),
    (
        "auto.commit.interval.ms",
        "is set from 'offset.flush.interval.ms'; use that key instead",
    ),
];

/// lark-sink's librdkafka defaults besides `group.id` (which depends on the name); a user's
/// `kafka.*` value wins.
const KAFKA_DEFAULTS: &[(&str, &str)] = &[
    // Connect starts a new group at the beginning of the topic.
    ("auto.offset.reset", "earliest"),
    // librdkafka prefetches up to 64 MB and 100k messages per partition by default; the engine
    // has its own buffer, so keep the prefetch small and memory flat.
    ("queued.max.messages.kbytes", "4096"),
    ("queued.min.messages", "2000"),
    // With a prefetch this small, librdkafka's default 1 s wait before it looks at a full
    // queue again leaves the engine idle for most of that second once the queue drains
    // (its docs say to lower it when the queue thresholds are low); checking every 20 ms
    // costs nothing measurable.
    ("fetch.queue.backoff.ms", "20"),
];

/// librdkafka properties, printed with credentials masked (`sasl.password`, `ssl.key.pem`, ...,
/// as [`is_secret_key`] decides) so a `{:?}` of the config can never leak them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaProps(BTreeMap<String, String>);

impl std::ops::Deref for KafkaProps {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::fmt::Debug for KafkaProps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let v = if is_secret_key(k) { "***" } else { v.as_str() };
                (k, v)
            }))
            .finish()
    }
}

impl ConnectorConfig {
    /// What the Kafka consumer is built from.
    pub fn consumer(&self) -> ConsumerConfig {
        ConsumerConfig {
            kafka: (*self.kafka).clone(),
            topics: self.topics.clone(),
            commit_interval: self.offset_flush_interval,
            partition_share: self.rate.share_auto,
        }
    }
}

/// `topics` (comma-separated) or `topics.regex`, exactly one of them.
pub(super) fn parse_topics(keys: &Keys) -> Result<Topics, ConfigError> {
    match (keys.get("topics"), keys.get("topics.regex")) {
        (Some(_), Some(_)) => Err(key_err(
            "topics.regex",
            "set either 'topics' or 'topics.regex', not both",
        )),
        (Some(list), None) => {
            let topics: Vec<String> = list
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect();
            if topics.is_empty() {
                return Err(key_err("topics", "lists no topic"));
            }
            Ok(Topics::List(topics))
        }
        (None, Some(re)) => Ok(Topics::Regex(re.to_string())),
        (None, None) => Err(key_err(
            "topics",
            "missing: set 'topics' (comma-separated) or 'topics.regex'",
        )),
    }
}

/// The `kafka.*` keys without their prefix, reserved ones refused, `bootstrap.servers` required,
/// and lark-sink's defaults added where the user set nothing.
pub(super) fn kafka_props(keys: &Keys, name: &str) -> Result<KafkaProps, ConfigError> {
    let mut kafka = BTreeMap::new();
    for (k, v) in keys.raw() {
        if let Some(prop) = k.strip_prefix("kafka.") {
            if let Some((_, why)) = RESERVED_KAFKA.iter().find(|(r, _)| *r == prop) {
                return Err(key_err(k, *why));
            }
            kafka.insert(prop.to_string(), v.clone());
        }
    }
    if kafka
        .get("bootstrap.servers")
        .is_none_or(|b| b.trim().is_empty())
    {
        return Err(key_err("kafka.bootstrap.servers", "missing"));
    }
    // Connect names a sink's group `connect-<name>`.
    kafka
        .entry("group.id".into())
        .or_insert_with(|| format!("connect-{name}"));
    for (k, v) in KAFKA_DEFAULTS {
        kafka.entry(k.to_string()).or_insert_with(|| v.to_string());
    }
    Ok(KafkaProps(kafka))
}

/// A connector that consumes its own output loops forever (every dead letter or result would be
/// read back as a new record), so output topics must not be source topics; and results (JSON)
/// and dead letters (the original bytes) must not share a topic.
pub(super) fn check_outputs(
    topics: &Topics,
    dlq_topic: Option<&str>,
    result_topic: Option<&str>,
    state_topic: Option<&str>,
) -> Result<(), ConfigError> {
    let outputs = [
        ("errors.deadletterqueue.topic.name", dlq_topic),
        ("lark.result.topic", result_topic),
        ("lark.state.topic", state_topic),
    ];
    for (key, out) in outputs {
        let Some(out) = out else { continue };
        if topics_include(topics, out) {
            return Err(key_err(
                key,
                format!(
                    "'{out}' is also a source topic; the connector would consume its own output"
                ),
            ));
        }
    }
    if state_topic.is_some() && (state_topic == dlq_topic || state_topic == result_topic) {
        return Err(key_err(
            "lark.state.topic",
            "must be a topic of its own (compacted, one record per key), not the dead-letter or result topic",
        ));
    }
    if result_topic.is_some() && result_topic == dlq_topic {
        return Err(key_err(
            "lark.result.topic",
            "must differ from errors.deadletterqueue.topic.name (results are JSON, dead letters the original bytes)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{base, err, with};
    use super::super::ConnectorConfig;
    use serde_json::json;

    #[test]
    fn kafka_passthrough_and_dlq() {
        let mut j = with("kafka.security.protocol", "SASL_SSL");
        j["config"]["errors.tolerance"] = json!("all");
        j["config"]["errors.deadletterqueue.topic.name"] = json!("dlq");
        j["config"]["kafka.group.id"] = json!("g1");
        let c = ConnectorConfig::from_json(&j).unwrap();
        assert_eq!(c.kafka["security.protocol"], "SASL_SSL");
        let mut j2 = with("kafka.sasl.password", "kafka-pw-123");
        j2["config"]["kafka.ssl.key.password"] = json!("key-pw-456");
        let dbg = format!("{:?}", ConnectorConfig::from_json(&j2).unwrap());
        assert!(
            !dbg.contains("kafka-pw-123") && !dbg.contains("key-pw-456"),
            "{dbg}"
        );
        assert_eq!(c.kafka["group.id"], "g1");
        assert_eq!(c.errors.dlq_topic.as_deref(), Some("dlq"));
    }

    #[test]
    fn output_topics_must_not_be_source_topics() {
        let c = ConnectorConfig::from_json(&with("lark.result.topic", "results")).unwrap();
        assert_eq!(c.result_topic.as_deref(), Some("results"));
        assert!(ConnectorConfig::from_json(&base())
            .unwrap()
            .result_topic
            .is_none());
        let e = err(with("lark.result.topic", "ops"));
        assert!(
            e.contains("'lark.result.topic'") && e.contains("source topic"),
            "{e}"
        );
        let mut j = with("errors.tolerance", "all");
        j["config"]["errors.deadletterqueue.topic.name"] = json!("alerts");
        assert!(err(j.clone()).contains("'errors.deadletterqueue.topic.name'"));
        j["config"]["errors.deadletterqueue.topic.name"] = json!("dlq");
        j["config"]["lark.result.topic"] = json!("dlq");
        assert!(err(j).contains("must differ"));
        let mut j = with("lark.result.topic", "alerts-results");
        let cfg = j["config"].as_object_mut().unwrap();
        cfg.remove("topics");
        cfg.insert("topics.regex".into(), json!("alerts.*"));
        assert!(err(j.clone()).contains("source topic"));
        j["config"]["lark.result.topic"] = json!("results-alerts");
        assert!(ConnectorConfig::from_json(&j).is_ok());
    }

    #[test]
    fn kafka_credentials_are_masked_in_debug() {
        let mut j = base();
        for (k, v) in [
            ("kafka.ssl.key.pem", "PEMBODY-1"),
            ("kafka.ssl.keystore.password", "keystore-pw-2"),
            ("kafka.sasl.oauthbearer.client.secret", "oidc-secret-3"),
            (
                "kafka.sasl.oauthbearer.assertion.private.key.passphrase",
                "passphrase-4",
            ),
        ] {
            j["config"][k] = json!(v);
        }
        let c = ConnectorConfig::from_json(&j).unwrap();
        let dbg = format!("{:?}", c.kafka);
        for v in [
            "PEMBODY-1",
            "keystore-pw-2",
            "oidc-secret-3",
            "passphrase-4",
        ] {
            assert!(!dbg.contains(v), "{v} in {dbg}");
            assert!(
                !c.as_given.values().any(|g| g == v),
                "{v} in {:?}",
                c.as_given
            );
        }
        assert!(
            dbg.contains("127.0.0.1:9092"),
            "non-secrets stay readable: {dbg}"
        );
    }
}
