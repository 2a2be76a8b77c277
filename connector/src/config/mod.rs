//! The connector configuration, Kafka Connect style.
//!
//! A config file is the JSON a Connect user would `POST /connectors`:
//! `{"name": "...", "config": {"topics": "...", ...}}` with string values. Secrets are pulled in
//! with `${env:NAME}` and `${file:PATH}` so the file itself can live in git. Everything is checked
//! up front: an unknown key or a bad value stops start-up with a message naming the key, because a
//! typo found at 3 a.m. by a dead-lettered alert is far worse than one found at deploy time.
//! Every key is documented in `docs/configuration.md` (a test in `keys.rs` checks it names them).
//!
//! - `substitute.rs`: `${env:}` / `${file:}` substitution and the masked `as_given` copy;
//! - `keys.rs`: `Keys`, the typed reader (unknown keys, did-you-mean, `ms` / `flag` / `count` /
//!   `choice`), and [`KNOWN_KEYS`];
//! - `kafka.rs`: the subscription, the `kafka.*` passthrough, the output-topic check;
//! - `sections.rs`: `lark.*`, `errors.*`, `lark.rate.*`, `buffer.*`, `admin.*`, each type with
//!   its `Default` (the one place a default is written) and its parser;
//! - `webhooks.rs`: `lark.webhooks.<name>.*`.

mod events;
mod kafka;
mod keys;
mod sections;
mod storm;
mod substitute;
mod webhooks;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lark_sink_transforms::{Chain, TransformConfigError};

use crate::delivery::RateConfig;
use crate::source::Topics;
use keys::Keys;

pub use events::{
    EventsConfig, EventsMode, HttpEvents, DEDUP_CAPACITY, DEFAULT_DEDUP_WINDOW,
    DEFAULT_EVENTS_PATH, DEFAULT_FAILURE_TOAST, DEFAULT_MAX_AGE,
};
pub use kafka::KafkaProps;
pub use keys::{is_known_key, KNOWN_KEYS};
pub use sections::{
    AdminConfig, BufferConfig, ErrorsConfig, LarkConfig, Tolerance, FEISHU_BASE_URL, LARK_BASE_URL,
};
pub use storm::{StormConfig, DEFAULT_DIGEST_MAX_ITEMS, MAX_DIGEST_ITEMS};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("config: {0}")]
    Shape(String),
    /// A problem with one key; the message names the key first.
    #[error("config key '{key}': {message}")]
    Key { key: String, message: String },
}

fn key_err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.to_string(),
        message: message.into(),
    }
}

impl From<TransformConfigError> for ConfigError {
    fn from(e: TransformConfigError) -> Self {
        ConfigError::Key {
            key: e.key,
            message: e.message,
        }
    }
}

/// How often stored offsets are committed unless `offset.flush.interval.ms` says otherwise
/// (Connect's default).
pub const DEFAULT_OFFSET_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// How long a shutdown waits for messages in flight unless `shutdown.timeout.ms` says otherwise.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a key's state is kept unless `lark.state.ttl.ms` says otherwise: Lark's 14-day
/// window for updating a card (lifecycle doc §1.1), after which an update could only send a new
/// message anyway.
pub const DEFAULT_STATE_TTL: Duration = Duration::from_secs(14 * 24 * 3600);

/// `lark.state.*`: the compacted changelog topic of keyed messages (`messageKey`), present only
/// when `lark.state.topic` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    /// `lark.state.topic`: created compacted if missing.
    pub topic: String,
    /// `lark.state.topic.partitions`: when the connector creates the topic; `None`: as many as
    /// the source topic with the most partitions (partitioned like the source).
    pub partitions: Option<i32>,
    /// `lark.state.ttl.ms`: a key not sent for this long is forgotten (a tombstone), so its next
    /// record sends a new message.
    pub ttl: Duration,
}

impl StateConfig {
    fn parse(keys: &Keys<'_>) -> Result<Option<Self>, ConfigError> {
        let Some(topic) = keys.get("lark.state.topic") else {
            for k in ["lark.state.topic.partitions", "lark.state.ttl.ms"] {
                if keys.get(k).is_some() {
                    return Err(key_err(k, "needs lark.state.topic"));
                }
            }
            return Ok(None);
        };
        let partitions = match keys.get("lark.state.topic.partitions") {
            None => None,
            Some(_) => match keys.count::<i32>("lark.state.topic.partitions", 1)? {
                0 => return Err(key_err("lark.state.topic.partitions", "must be positive")),
                n => Some(n),
            },
        };
        let ttl = keys.ms("lark.state.ttl.ms", DEFAULT_STATE_TTL)?;
        if ttl.is_zero() {
            return Err(key_err("lark.state.ttl.ms", "must be positive"));
        }
        Ok(Some(StateConfig {
            topic: topic.to_string(),
            partitions,
            ttl,
        }))
    }
}

#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    pub name: String,
    pub topics: Topics,
    /// librdkafka properties (the `kafka.` prefix removed), already including lark-sink's defaults.
    pub kafka: KafkaProps,
    pub lark: LarkConfig,
    pub rate: RateConfig,
    pub buffer: BufferConfig,
    pub errors: ErrorsConfig,
    /// `lark.result.topic`: where a JSON result per delivered or dead-lettered message goes.
    pub result_topic: Option<String>,
    /// `lark.state.*`: where keyed messages (`messageKey`) remember their Lark message.
    pub state: Option<StateConfig>,
    /// `storm.*`: dedup and digests per receiver (all off by default).
    pub storm: StormConfig,
    /// `lark.events.*`: Lark's events and card clicks into a topic (off without a topic).
    pub events: Option<EventsConfig>,
    /// How often stored offsets are committed (`offset.flush.interval.ms`, as in Connect).
    pub offset_flush_interval: Duration,
    pub admin: AdminConfig,
    /// How long a shutdown waits for messages in flight (`shutdown.timeout.ms`).
    pub shutdown_timeout: Duration,
    /// The keys as written in the file (before `${...}` substitution), literal secrets masked:
    /// what `GET /connectors/{name}` shows.
    pub as_given: BTreeMap<String, String>,
    /// The raw `transforms*` keys; [`ConnectorConfig::transform_chain`] builds the engines.
    transforms: BTreeMap<String, String>,
}

impl ConnectorConfig {
    /// Reads, substitutes and checks a config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ConfigError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        Self::from_json(&json)
    }

    /// Parses `{"name": ..., "config": {...}}`.
    pub fn from_json(json: &serde_json::Value) -> Result<Self, ConfigError> {
        let obj = json.as_object().ok_or_else(|| {
            ConfigError::Shape(
                r#"the file must be an object {"name": ..., "config": {...}}"#.into(),
            )
        })?;
        for k in obj.keys() {
            if k != "name" && k != "config" {
                return Err(ConfigError::Shape(format!(
                    "unknown top-level field '{k}' (expected \"name\" and \"config\")"
                )));
            }
        }
        let config = obj
            .get("config")
            .and_then(|c| c.as_object())
            .ok_or_else(|| ConfigError::Shape(r#"missing object field "config""#.into()))?;
        let (map, as_given) = substitute::substitute_all(config)?;
        let top_name = obj.get("name").and_then(|n| n.as_str());
        let name = match (top_name, map.get("name")) {
            (Some(a), Some(b)) if a != b => {
                return Err(key_err(
                    "name",
                    format!("\"{b}\" differs from the top-level name \"{a}\""),
                ))
            }
            (Some(a), _) => a.to_string(),
            (None, Some(b)) => b.clone(),
            (None, None) => return Err(ConfigError::Shape(r#"missing "name""#.into())),
        };
        let mut cfg = Self::from_map(name, map)?;
        cfg.as_given = as_given;
        Ok(cfg)
    }

    /// Checks a flat key → value map (values already substituted): one section at a time, in
    /// the order the errors are reported.
    pub fn from_map(name: String, map: BTreeMap<String, String>) -> Result<Self, ConfigError> {
        if name.trim().is_empty() {
            return Err(key_err("name", "must not be empty"));
        }
        let (_, transform_keys) = Chain::from_config(&map)?;
        let keys = Keys::new(&map, &transform_keys)?;
        let topics = kafka::parse_topics(&keys)?;
        let kafka = kafka::kafka_props(&keys, &name)?;
        let lark = LarkConfig::parse(&keys)?;
        let errors = ErrorsConfig::parse(&keys)?;
        let result_topic = keys.get("lark.result.topic").map(str::to_string);
        let state = StateConfig::parse(&keys)?;
        kafka::check_outputs(
            &topics,
            errors.dlq_topic.as_deref(),
            result_topic.as_deref(),
            state.as_ref().map(|s| s.topic.as_str()),
        )?;
        let rate = sections::rate(&keys)?;
        let buffer = BufferConfig::parse(&keys)?;
        let storm = StormConfig::parse(&keys)?;
        let events = EventsConfig::parse(&keys)?;
        if let Some(ev) = &events {
            let others = [
                errors.dlq_topic.as_deref(),
                result_topic.as_deref(),
                state.as_ref().map(|s| s.topic.as_str()),
            ];
            if crate::source::topics_include(&topics, &ev.topic)
                || others.contains(&Some(ev.topic.as_str()))
            {
                return Err(key_err(
                    "lark.events.topic",
                    format!("'{}' must be a topic of its own: not a source, dead-letter, result or state topic", ev.topic),
                ));
            }
            if lark.app_id.is_empty() {
                return Err(key_err(
                    "lark.events.topic",
                    "needs lark.app.id and lark.app.secret (events come to an app, not to a webhook bot)",
                ));
            }
        }
        let offset_flush_interval =
            keys.ms("offset.flush.interval.ms", DEFAULT_OFFSET_FLUSH_INTERVAL)?;
        if offset_flush_interval.is_zero() {
            // librdkafka reads 0 as "never commit periodically".
            return Err(key_err("offset.flush.interval.ms", "must be positive"));
        }
        let admin = AdminConfig::parse(&keys)?;
        let shutdown_timeout = keys.ms("shutdown.timeout.ms", DEFAULT_SHUTDOWN_TIMEOUT)?;
        let transforms = map
            .iter()
            .filter(|(k, _)| k.as_str() == "transforms" || k.starts_with("transforms."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(ConnectorConfig {
            name,
            topics,
            kafka,
            lark,
            rate,
            buffer,
            errors,
            result_topic,
            state,
            storm,
            events,
            offset_flush_interval,
            admin,
            shutdown_timeout,
            as_given: substitute::masked(&map),
            transforms,
        })
    }

    /// Builds a fresh transform chain (one per worker: engines keep interpreter state). The keys
    /// were checked at start-up, but a script file can vanish or change afterwards, so this can
    /// still fail; callers must not fall back to "no transforms" (records would pass untransformed).
    pub fn transform_chain(&self) -> Result<Chain, ConfigError> {
        Ok(Chain::from_config(&self.transforms)?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(super) fn base() -> serde_json::Value {
        json!({"name": "alerts", "config": {
            "topics": "alerts, ops",
            "kafka.bootstrap.servers": "127.0.0.1:9092",
            "lark.app.id": "cli_x",
            "lark.app.secret": "s3cret",
        }})
    }

    pub(super) fn with(k: &str, v: &str) -> serde_json::Value {
        let mut j = base();
        j["config"][k] = json!(v);
        j
    }

    pub(super) fn err(j: serde_json::Value) -> String {
        ConnectorConfig::from_json(&j)
            .expect_err("should fail")
            .to_string()
    }

    #[test]
    fn defaults() {
        let c = ConnectorConfig::from_json(&base()).unwrap();
        assert_eq!(c.topics, Topics::List(vec!["alerts".into(), "ops".into()]));
        assert_eq!(c.kafka["group.id"], "connect-alerts");
        assert_eq!(c.kafka["auto.offset.reset"], "earliest");
        assert!(
            !c.kafka.contains_key("max.poll.interval.ms"),
            "the loop never blocks on delivery"
        );
        assert_eq!(c.kafka["queued.max.messages.kbytes"], "4096");
        assert_eq!(c.lark.base_url, FEISHU_BASE_URL);
        assert_eq!(c.errors.tolerance, Tolerance::None);
        assert!(c.errors.dlq_context_headers);
        assert_eq!(c.offset_flush_interval, Duration::from_secs(5));
        assert_eq!(c.rate, RateConfig::default());
        assert_eq!(
            c.buffer,
            BufferConfig {
                max_messages: 5000,
                max_bytes: 8 << 20,
                pause_after: Duration::from_secs(1),
            }
        );
        assert_eq!(c.kafka["fetch.queue.backoff.ms"], "20");
        assert!(format!("{c:?}").contains("Secret(***)"));
        assert_eq!(c.admin.listener, Some("127.0.0.1:8083".parse().unwrap()));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(
            c.as_given["lark.app.secret"], "***",
            "literal secrets are masked"
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn state_topic_keys() {
        assert_eq!(ConnectorConfig::from_json(&base()).unwrap().state, None);
        let c = ConnectorConfig::from_json(&with("lark.state.topic", "lark-state")).unwrap();
        assert_eq!(
            c.state,
            Some(StateConfig {
                topic: "lark-state".into(),
                partitions: None,
                ttl: DEFAULT_STATE_TTL,
            })
        );
        let mut j = with("lark.state.topic", "lark-state");
        j["config"]["lark.state.ttl.ms"] = json!("60000");
        j["config"]["lark.state.topic.partitions"] = json!("6");
        let s = ConnectorConfig::from_json(&j).unwrap().state.unwrap();
        assert_eq!((s.ttl, s.partitions), (Duration::from_secs(60), Some(6)));
        j["config"]["lark.state.topic.partitions"] = json!("0");
        assert!(err(j.clone()).contains("'lark.state.topic.partitions'"));
        j["config"]["lark.state.topic.partitions"] = json!("6");
        j["config"]["lark.state.ttl.ms"] = json!("0");
        assert!(err(j).contains("'lark.state.ttl.ms'"));
        // The other keys mean nothing without the topic.
        assert!(err(with("lark.state.ttl.ms", "1000")).contains("needs lark.state.topic"));
        // An output of its own: not a source topic, not the DLQ or the result topic.
        assert!(err(with("lark.state.topic", "ops")).contains("source topic"));
        let mut j = with("lark.state.topic", "out");
        j["config"]["lark.result.topic"] = json!("out");
        assert!(err(j).contains("'lark.state.topic'"));
    }

    #[test]
    fn storm_keys() {
        let off = ConnectorConfig::from_json(&base()).unwrap().storm;
        assert_eq!(
            off,
            StormConfig {
                dedup_window: Duration::ZERO,
                digest_after: 0,
                digest_max_items: DEFAULT_DIGEST_MAX_ITEMS,
            }
        );
        assert!(!off.digests());
        let mut j = with("storm.dedup.window.ms", "60000");
        j["config"]["storm.digest.after"] = json!("20");
        j["config"]["storm.digest.max.items"] = json!("5");
        let on = ConnectorConfig::from_json(&j).unwrap().storm;
        assert_eq!(
            (on.dedup_window, on.digest_after, on.digest_max_items),
            (Duration::from_secs(60), 20, 5)
        );
        assert!(on.digests());
        j["config"]["storm.digest.max.items"] = json!("51");
        assert!(err(j.clone()).contains("between 1 and 50"));
        j["config"]["storm.digest.max.items"] = json!("0");
        assert!(err(j).contains("'storm.digest.max.items'"));
        assert!(err(with("storm.digest.max.items", "5")).contains("needs storm.digest.after"));
        assert!(err(with("storm.digest.after", "many")).contains("'storm.digest.after'"));
    }

    #[test]
    fn bad_values_name_the_key() {
        assert!(err(with("errors.tolerance", "some")).contains("'errors.tolerance'"));
        assert!(err(with("lark.request.timeout.ms", "10s")).contains("'lark.request.timeout.ms'"));
        assert!(err(with("kafka.enable.auto.commit", "false")).contains("managed by lark-sink"));
        assert!(
            err(with("kafka.auto.commit.interval.ms", "100")).contains("offset.flush.interval.ms")
        );
        assert!(err(with("kafka.bootstrap.servers", " "))
            .contains("'kafka.bootstrap.servers': missing"));
        assert!(err(with("offset.flush.interval.ms", "0")).contains("must be positive"));
        assert!(err(with("errors.deadletterqueue.topic.replication.factor", "0")).contains("-1"));
        assert!(err(with("errors.retry.delay.initial.ms", "70000")).contains("must not exceed"));
        assert!(err(with("lark.rate.share", "half")).contains("'lark.rate.share'"));
        assert!(err(with("admin.listener", "localhost")).contains("'admin.listener'"));
        assert!(err(with("lark.webhooks.ops.colour", "x")).contains("unknown webhook option"));
        assert!(err(with("lark.webhooks.ops.url", "ftp://x")).contains("not an http(s) URL"));
        let c = ConnectorConfig::from_json(&with("admin.listener", "none")).unwrap();
        assert!(c.admin.listener.is_none());
        assert!(err(with("buffer.max.messages", "0")).contains("'buffer.max.messages'"));
        assert!(err(with("lark.rate.app.per.second", "-1")).contains("'lark.rate.app.per.second'"));
        assert!(err(with("topics.regex", "a.*")).contains("not both"));
        let e = err(with("errors.tolerance", "all"));
        assert!(e.contains("'errors.deadletterqueue.topic.name'"), "{e}");
        let mut j = base();
        j["config"].as_object_mut().unwrap().remove("lark.app.id");
        assert!(err(j).contains("'lark.app.id': missing"));
        assert!(err(with("transforms", "a")).contains("'transforms.a.type'"));
    }
}
