//! The connector configuration, Kafka Connect style.
//!
//! A config file is the JSON a Connect user would `POST /connectors`:
//! `{"name": "...", "config": {"topics": "...", ...}}` with string values. Secrets are pulled in
//! with `${env:NAME}` and `${file:PATH}` so the file itself can live in git. Everything is checked
//! up front: an unknown key or a bad value stops start-up with a message naming the key, because a
//! typo found at 3 a.m. by a dead-lettered alert is far worse than one found at deploy time.
//! Every key is documented in `docs/configuration.md`; keep the two in step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lark_sink_transforms::Chain;

use crate::delivery::RateConfig;
use crate::secret::{is_secret_key, mask_config_value, Secret};

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

/// Which topics to consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topics {
    List(Vec<String>),
    /// A regex; librdkafka subscribes to it as `^...` ([`regex_subscription`]).
    Regex(String),
}

/// Kafka Connect's `errors.tolerance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tolerance {
    /// The first record that cannot be delivered stops the connector (its offset is not committed).
    None,
    /// Undeliverable records go to the dead-letter topic and the pipeline goes on.
    All,
}

/// One custom-bot webhook (`lark.webhooks.<name>.*`, lark-api.md §8).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The full hook URL (`…/open-apis/bot/v2/hook/<token>`). A credential: it ends in the hook
    /// token, so `Debug` shows only what comes before the token.
    pub url: String,
    /// The signing secret ("签名校验"), when the bot has one.
    pub secret: Option<Secret>,
}

impl WebhookConfig {
    /// The URL without its last path segment (the hook token): `https://h/open-apis/bot/v2/hook/***`.
    fn masked_url(&self) -> String {
        match self.url.rsplit_once('/') {
            Some((base, _token)) => format!("{base}/***"),
            None => "***".to_string(),
        }
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.masked_url())
            .field("secret", &self.secret)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct LarkConfig {
    /// Empty when no app is configured (a webhook-only connector).
    pub app_id: String,
    pub app_secret: Secret,
    /// `https://open.feishu.cn`, `https://open.larksuite.com`, or a custom base URL (no trailing `/`).
    pub base_url: String,
    pub request_timeout: Duration,
    /// Refresh the tenant token this long before Lark says it expires.
    pub token_refresh_margin: Duration,
    /// Ceiling for one backoff wait (also caps a server-given `x-ogw-ratelimit-reset`).
    pub retry_delay_max: Duration,
    /// First backoff wait; doubles (with jitter) per attempt.
    pub retry_delay_initial: Duration,
    /// Give up retrying a retryable failure after this long; `None` = retry forever.
    pub retry_timeout: Option<Duration>,
    /// Custom-bot webhooks by name (`receiveType: "webhook"`, `receiveId: "<name>"`).
    pub webhooks: BTreeMap<String, WebhookConfig>,
    /// How long a phone / email → open_id look-up is reused when the user was found
    /// (`lark.lookup.ttl.ms`) and when not (`lark.lookup.negative.ttl.ms`, never longer).
    pub lookup_ttl: Duration,
    pub lookup_negative_ttl: Duration,
    /// Resolve `email` receivers to open_ids before sending (`lark.email.resolve`).
    pub email_resolve: bool,
    /// Extra trusted roots from `lark.tls.ca.file` (a TLS-intercepting proxy, a private
    /// deployment), added to the system's; empty = the system roots only.
    pub tls_ca: Vec<reqwest::Certificate>,
}

#[derive(Debug, Clone)]
pub struct ErrorsConfig {
    pub tolerance: Tolerance,
    pub dlq_topic: Option<String>,
    pub dlq_context_headers: bool,
    /// Replication factor used if lark-sink has to create the DLQ topic (-1 = broker default).
    pub dlq_replication_factor: i32,
    pub dlq_partitions: i32,
}

/// Bounds on what the delivery engine buffers; reaching either pauses the Kafka partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferConfig {
    pub max_messages: usize,
    pub max_bytes: usize,
    /// How long the buffer may stay full before the partitions are paused
    /// (`buffer.pause.after.ms`); until then records wait in librdkafka's prefetch queue.
    pub pause_after: Duration,
}

/// The admin HTTP server (`admin.*`).
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `None` when `admin.listener` is `none`.
    pub listener: Option<std::net::SocketAddr>,
    pub token: Option<Secret>,
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

/// Keys lark-sink understands besides `kafka.*` and `transforms*`.
pub const KNOWN_KEYS: &[&str] = &[
    "name",
    "connector.class",
    "topics",
    "topics.regex",
    "lark.app.id",
    "lark.app.secret",
    "lark.domain",
    "lark.request.timeout.ms",
    "lark.tls.ca.file",
    "lark.token.refresh.margin.ms",
    "lark.rate.app.per.second",
    "lark.rate.app.per.minute",
    "lark.rate.receiver.per.second",
    "lark.rate.webhook.per.second",
    "lark.rate.webhook.per.minute",
    "lark.rate.share",
    "lark.lookup.ttl.ms",
    "lark.lookup.negative.ttl.ms",
    "lark.email.resolve",
    "buffer.max.messages",
    "buffer.max.bytes",
    "buffer.pause.after.ms",
    "errors.tolerance",
    "errors.retry.timeout",
    "errors.retry.delay.max.ms",
    "errors.retry.delay.initial.ms",
    "errors.deadletterqueue.topic.name",
    "errors.deadletterqueue.context.headers.enable",
    "errors.deadletterqueue.topic.replication.factor",
    "errors.deadletterqueue.topic.partitions",
    "lark.result.topic",
    "offset.flush.interval.ms",
    "admin.listener",
    "admin.token",
    "shutdown.timeout.ms",
];

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

pub const FEISHU_BASE_URL: &str = "https://open.feishu.cn";
pub const LARK_BASE_URL: &str = "https://open.larksuite.com";

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
        let mut map = BTreeMap::new();
        let mut as_given = BTreeMap::new();
        for (k, v) in config {
            // Connect configs are strings; numbers and booleans are accepted as a courtesy.
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => return Err(key_err(k, "must be a string")),
            };
            as_given.insert(k.clone(), mask_config_value(k, &s));
            map.insert(k.clone(), substitute(k, &s)?);
        }
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

    /// Checks a flat key → value map (values already substituted).
    pub fn from_map(name: String, map: BTreeMap<String, String>) -> Result<Self, ConfigError> {
        if name.trim().is_empty() {
            return Err(key_err("name", "must not be empty"));
        }
        let (_, transform_keys) = Chain::from_config(&map).map_err(|e| ConfigError::Key {
            key: e.key,
            message: e.message,
        })?;
        for key in map.keys() {
            let known = KNOWN_KEYS.contains(&key.as_str())
                || key.starts_with("kafka.")
                || key.starts_with("lark.webhooks.")
                || transform_keys.contains(key)
                || key.starts_with("transforms.");
            if !known {
                return Err(key_err(key, unknown_key_message(key)));
            }
        }
        let get = |k: &str| map.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());

        let topics = match (get("topics"), get("topics.regex")) {
            (Some(_), Some(_)) => {
                return Err(key_err(
                    "topics.regex",
                    "set either 'topics' or 'topics.regex', not both",
                ))
            }
            (Some(list), None) => {
                let topics: Vec<String> = list
                    .split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect();
                if topics.is_empty() {
                    return Err(key_err("topics", "lists no topic"));
                }
                Topics::List(topics)
            }
            (None, Some(re)) => Topics::Regex(re.to_string()),
            (None, None) => {
                return Err(key_err(
                    "topics",
                    "missing: set 'topics' (comma-separated) or 'topics.regex'",
                ))
            }
        };

        let mut kafka = BTreeMap::new();
        for (k, v) in &map {
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
        // Connect names a sink's group `connect-<name>` and starts new groups at the beginning.
        kafka
            .entry("group.id".into())
            .or_insert_with(|| format!("connect-{name}"));
        kafka
            .entry("auto.offset.reset".into())
            .or_insert_with(|| "earliest".into());

        let base_url = match get("lark.domain").unwrap_or("feishu") {
            "feishu" => FEISHU_BASE_URL.to_string(),
            "lark" => LARK_BASE_URL.to_string(),
            url if url.starts_with("https://") || url.starts_with("http://") => {
                url.trim_end_matches('/').to_string()
            }
            other => {
                return Err(key_err(
                    "lark.domain",
                    format!("'{other}' is not feishu, lark or an http(s):// base URL"),
                ))
            }
        };

        let webhooks = parse_webhooks(&map, &base_url)?;
        // The app is optional only for a connector that sends through webhooks alone.
        let (app_id, app_secret) = match (get("lark.app.id"), get("lark.app.secret")) {
            (Some(id), Some(secret)) => (id.to_string(), Secret::new(secret)),
            (None, None) if !webhooks.is_empty() => (String::new(), Secret::default()),
            (None, _) => return Err(key_err("lark.app.id", "missing")),
            (_, None) => return Err(key_err("lark.app.secret", "missing")),
        };
        let ms = |k: &str, default: u64| -> Result<Duration, ConfigError> {
            match get(k) {
                None => Ok(Duration::from_millis(default)),
                Some(v) => v.parse::<u64>().map(Duration::from_millis).map_err(|_| {
                    key_err(k, format!("'{v}' is not a whole number of milliseconds"))
                }),
            }
        };
        let retry_timeout = match get("errors.retry.timeout") {
            Some("-1") => None,
            _ => Some(ms("errors.retry.timeout", 300_000)?),
        };
        let lark = LarkConfig {
            app_id,
            app_secret,
            base_url,
            request_timeout: ms("lark.request.timeout.ms", 10_000)?,
            token_refresh_margin: ms("lark.token.refresh.margin.ms", 180_000)?,
            retry_delay_max: ms("errors.retry.delay.max.ms", 60_000)?,
            retry_delay_initial: ms("errors.retry.delay.initial.ms", 200)?,
            retry_timeout,
            webhooks,
            lookup_ttl: ms("lark.lookup.ttl.ms", 3_600_000)?,
            lookup_negative_ttl: ms("lark.lookup.negative.ttl.ms", 300_000)?,
            email_resolve: match get("lark.email.resolve") {
                None | Some("false") => false,
                Some("true") => true,
                Some(v) => {
                    return Err(key_err(
                        "lark.email.resolve",
                        format!("'{v}' is not true or false"),
                    ))
                }
            },
            tls_ca: match get("lark.tls.ca.file") {
                Some(path) => load_ca_bundle("lark.tls.ca.file", Path::new(path))?,
                None => Vec::new(),
            },
        };
        if lark.lookup_negative_ttl > lark.lookup_ttl {
            return Err(key_err(
                "lark.lookup.negative.ttl.ms",
                "must not exceed lark.lookup.ttl.ms (a user not found is re-checked sooner than a found one)",
            ));
        }
        if lark.request_timeout.is_zero() {
            return Err(key_err("lark.request.timeout.ms", "must be positive"));
        }
        if lark.retry_delay_initial > lark.retry_delay_max {
            return Err(key_err(
                "errors.retry.delay.initial.ms",
                "must not exceed errors.retry.delay.max.ms",
            ));
        }
        let tolerance = match get("errors.tolerance").unwrap_or("none") {
            "none" => Tolerance::None,
            "all" => Tolerance::All,
            other => {
                return Err(key_err(
                    "errors.tolerance",
                    format!("'{other}' is not 'none' or 'all'"),
                ))
            }
        };
        let dlq_topic = get("errors.deadletterqueue.topic.name").map(str::to_string);
        if tolerance == Tolerance::All && dlq_topic.is_none() {
            return Err(key_err(
                "errors.deadletterqueue.topic.name",
                "missing: errors.tolerance=all needs a dead-letter topic, or undeliverable records would be lost",
            ));
        }
        let bool_key = |k: &str, default: bool| -> Result<bool, ConfigError> {
            match get(k) {
                None => Ok(default),
                Some("true") => Ok(true),
                Some("false") => Ok(false),
                Some(v) => Err(key_err(k, format!("'{v}' is not true or false"))),
            }
        };
        let int_key = |k: &str, default: i32| -> Result<i32, ConfigError> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .parse::<i32>()
                    .map_err(|_| key_err(k, format!("'{v}' is not an integer"))),
            }
        };
        let errors = ErrorsConfig {
            tolerance,
            dlq_topic,
            dlq_context_headers: bool_key("errors.deadletterqueue.context.headers.enable", true)?,
            dlq_replication_factor: int_key("errors.deadletterqueue.topic.replication.factor", -1)?,
            dlq_partitions: int_key("errors.deadletterqueue.topic.partitions", 1)?,
        };
        if errors.dlq_replication_factor == 0 || errors.dlq_replication_factor < -1 {
            return Err(key_err(
                "errors.deadletterqueue.topic.replication.factor",
                "must be -1 (broker default) or at least 1",
            ));
        }
        if errors.dlq_partitions < 1 {
            return Err(key_err(
                "errors.deadletterqueue.topic.partitions",
                "must be at least 1",
            ));
        }

        let result_topic = get("lark.result.topic").map(str::to_string);
        // A connector that consumes its own output loops forever (every dead letter or result
        // would be read back as a new record), so output topics must not be source topics.
        let outputs = [
            (
                "errors.deadletterqueue.topic.name",
                errors.dlq_topic.as_deref(),
            ),
            ("lark.result.topic", result_topic.as_deref()),
        ];
        for (key, out) in outputs {
            let Some(out) = out else { continue };
            if topics_include(&topics, out) {
                return Err(key_err(
                    key,
                    format!("'{out}' is also a source topic; the connector would consume its own output"),
                ));
            }
        }
        if result_topic.is_some() && result_topic == errors.dlq_topic {
            return Err(key_err(
                "lark.result.topic",
                "must differ from errors.deadletterqueue.topic.name (results are JSON, dead letters the original bytes)",
            ));
        }

        let transforms = map
            .iter()
            .filter(|(k, _)| k.as_str() == "transforms" || k.starts_with("transforms."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let count = |k: &str, default: u64| -> Result<u64, ConfigError> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .map_err(|_| key_err(k, format!("'{v}' is not a whole number"))),
            }
        };
        let per = |k: &str, default: u64| -> Result<u32, ConfigError> {
            u32::try_from(count(k, default)?).map_err(|_| key_err(k, "is too large"))
        };
        let rate = RateConfig {
            app_per_second: per("lark.rate.app.per.second", 50)?,
            app_per_minute: per("lark.rate.app.per.minute", 1000)?,
            receiver_per_second: per("lark.rate.receiver.per.second", 5)?,
            webhook_per_second: per("lark.rate.webhook.per.second", 5)?,
            webhook_per_minute: per("lark.rate.webhook.per.minute", 100)?,
            share_auto: match get("lark.rate.share").unwrap_or("auto") {
                "auto" => true,
                "none" => false,
                other => {
                    return Err(key_err(
                        "lark.rate.share",
                        format!("'{other}' is not 'auto' or 'none'"),
                    ))
                }
            },
        };
        let buffer = BufferConfig {
            max_messages: count("buffer.max.messages", 5_000)? as usize,
            max_bytes: count("buffer.max.bytes", 8 * 1024 * 1024)? as usize,
            pause_after: ms("buffer.pause.after.ms", 1_000)?,
        };
        if buffer.max_messages == 0 || buffer.max_bytes == 0 {
            return Err(key_err(
                if buffer.max_messages == 0 {
                    "buffer.max.messages"
                } else {
                    "buffer.max.bytes"
                },
                "must be positive",
            ));
        }
        // librdkafka prefetches up to 64 MB and 100k messages per partition by default; the engine
        // has its own buffer, so keep the prefetch small and memory flat (user values win).
        kafka
            .entry("queued.max.messages.kbytes".into())
            .or_insert_with(|| "4096".into());
        kafka
            .entry("queued.min.messages".into())
            .or_insert_with(|| "2000".into());
        // With a prefetch this small, librdkafka's default 1 s wait before it looks at a full
        // queue again leaves the engine idle for most of that second once the queue drains
        // (its docs say to lower it when the queue thresholds are low); checking every 20 ms
        // costs nothing measurable.
        kafka
            .entry("fetch.queue.backoff.ms".into())
            .or_insert_with(|| "20".into());
        let offset_flush_interval = ms("offset.flush.interval.ms", 5_000)?;
        if offset_flush_interval.is_zero() {
            // librdkafka reads 0 as "never commit periodically".
            return Err(key_err("offset.flush.interval.ms", "must be positive"));
        }
        let admin = AdminConfig {
            listener: match get("admin.listener").unwrap_or("127.0.0.1:8083") {
                "none" => None,
                addr => Some(addr.parse().map_err(|_| {
                    key_err(
                        "admin.listener",
                        format!("'{addr}' is not HOST:PORT (an IP address and port) or 'none'"),
                    )
                })?),
            },
            token: get("admin.token").map(Secret::new),
        };
        let shutdown_timeout = ms("shutdown.timeout.ms", 30_000)?;
        let as_given = map
            .iter()
            .map(|(k, v)| (k.clone(), mask_config_value(k, v)))
            .collect();
        Ok(ConnectorConfig {
            name,
            topics,
            kafka: KafkaProps(kafka),
            lark,
            rate,
            buffer,
            errors,
            result_topic,
            offset_flush_interval,
            admin,
            shutdown_timeout,
            as_given,
            transforms,
        })
    }

    /// Builds a fresh transform chain (one per worker: engines keep interpreter state). The keys
    /// were checked at start-up, but a script file can vanish or change afterwards, so this can
    /// still fail; callers must not fall back to "no transforms" (records would pass untransformed).
    pub fn transform_chain(&self) -> Result<Chain, ConfigError> {
        Chain::from_config(&self.transforms)
            .map(|(c, _)| c)
            .map_err(|e| ConfigError::Key {
                key: e.key,
                message: e.message,
            })
    }
}

/// Whether the subscription `topics` would consume `topic`: start-up refuses output topics that
/// are also source topics. A `topics.regex` goes through [`topics_regex_matcher`]; one the `regex`
/// crate cannot parse is not checked here (librdkafka reports it at subscribe time).
pub(crate) fn topics_include(topics: &Topics, topic: &str) -> bool {
    match topics {
        Topics::List(list) => list.iter().any(|t| t == topic),
        Topics::Regex(re) => topics_regex_matcher(re).is_ok_and(|r| r.is_match(topic)),
    }
}

/// The subscription lark-sink hands librdkafka for `topics.regex`. librdkafka reads a
/// subscription starting with `^` as a regex (anything else is one literal topic name), so a `^`
/// is added when the pattern lacks one.
pub fn regex_subscription(re: &str) -> String {
    if re.starts_with('^') {
        re.to_string()
    } else {
        format!("^{re}")
    }
}

/// Which topic names a `topics.regex` subscription consumes, for everything that must agree with
/// librdkafka about it: the output-topic check above, the `lark.rate.share=auto` partition count
/// (a different set of topics means a wrong share of the app quota) and `lark-sink check`.
/// librdkafka matches its subscription with POSIX `regexec`, a search, so the pattern is anchored
/// only where it says: at the start by the `^` of [`regex_subscription`], not at the end (`^alerts`
/// also consumes `alerts-archive`; `^alerts$` is one topic), and in `a|b` the `^` binds to `a`
/// alone. Compiling that exact string with the `regex` crate (whose `is_match` also searches)
/// keeps all of this. The two syntaxes differ at the edges (POSIX has no `\d`, the `regex` crate
/// no back-references); a pattern the `regex` crate rejects is an error.
pub fn topics_regex_matcher(re: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&regex_subscription(re))
}

/// `lark.webhooks.<name>.url` (or `.token`, joined to `lark.domain`) and `.secret`.
fn parse_webhooks(
    map: &BTreeMap<String, String>,
    base_url: &str,
) -> Result<BTreeMap<String, WebhookConfig>, ConfigError> {
    let mut names: Vec<&str> = Vec::new();
    for key in map.keys() {
        let Some(rest) = key.strip_prefix("lark.webhooks.") else {
            continue;
        };
        let Some((name, option)) = rest.rsplit_once('.') else {
            return Err(key_err(
                key,
                "expected lark.webhooks.<name>.url, .token or .secret",
            ));
        };
        if !matches!(option, "url" | "token" | "secret") {
            return Err(key_err(
                key,
                format!("unknown webhook option '{option}' (url, token, secret)"),
            ));
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(key_err(
                key,
                "a webhook name uses letters, digits, '-' and '_'",
            ));
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let mut out = BTreeMap::new();
    for name in names {
        let get = |o: &str| {
            map.get(&format!("lark.webhooks.{name}.{o}"))
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let url = match (get("url"), get("token")) {
            (Some(_), Some(_)) => {
                return Err(key_err(
                    &format!("lark.webhooks.{name}.token"),
                    "set either .url or .token, not both",
                ))
            }
            (Some(u), None) if u.starts_with("https://") || u.starts_with("http://") => {
                u.to_string()
            }
            (Some(u), None) => {
                return Err(key_err(
                    &format!("lark.webhooks.{name}.url"),
                    format!("'{u}' is not an http(s) URL"),
                ))
            }
            // lark-api.md §8 / §10: the hook lives under the domain's OpenAPI base.
            (None, Some(t)) => format!("{base_url}/open-apis/bot/v2/hook/{t}"),
            (None, None) => {
                return Err(key_err(
                    &format!("lark.webhooks.{name}.url"),
                    "missing: a webhook needs .url (or .token)",
                ))
            }
        };
        out.insert(
            name.to_string(),
            WebhookConfig {
                url,
                secret: get("secret").map(Secret::new),
            },
        );
    }
    Ok(out)
}

/// Reads a PEM CA bundle and checks that an HTTPS client accepts it as extra roots, so an
/// unreadable file, a file without a certificate or a malformed certificate stops start-up here
/// instead of failing every request later.
fn load_ca_bundle(key: &str, path: &Path) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| key_err(key, format!("cannot read '{}': {e}", path.display())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        key_err(
            key,
            format!("'{}' is not a PEM certificate bundle: {e}", path.display()),
        )
    })?;
    if certs.is_empty() {
        return Err(key_err(
            key,
            format!(
                "'{}' holds no PEM certificate (expected -----BEGIN CERTIFICATE----- blocks)",
                path.display()
            ),
        ));
    }
    reqwest::Client::builder()
        .tls_certs_merge(certs.clone())
        .build()
        .map_err(|e| {
            key_err(
                key,
                format!(
                    "'{}' holds a certificate that cannot be used as a root: {}",
                    path.display(),
                    error_chain(&e)
                ),
            )
        })?;
    Ok(certs)
}

/// An error and its sources, `a: b: c` (reqwest's own message omits the cause).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

fn unknown_key_message(key: &str) -> String {
    let best = KNOWN_KEYS
        .iter()
        .map(|k| (strsim::levenshtein(k, key), *k))
        .min()
        .filter(|(d, _)| *d <= 3);
    match best {
        Some((_, k)) => format!("unknown key (did you mean '{k}'?)"),
        None => "unknown key (librdkafka settings go under 'kafka.')".into(),
    }
}

/// Replaces `${env:NAME}` and `${file:PATH}` in a value. A file's trailing newline is dropped
/// (secrets mounted by Kubernetes or written by `echo` end with one).
fn substitute(key: &str, value: &str) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| {
            key_err(
                key,
                "unterminated '${' (expected ${env:NAME} or ${file:PATH})",
            )
        })?;
        let expr = &after[..end];
        let replacement = if let Some(var) = expr.strip_prefix("env:") {
            std::env::var(var)
                .map_err(|_| key_err(key, format!("environment variable '{var}' is not set")))?
        } else if let Some(path) = expr.strip_prefix("file:") {
            let text = std::fs::read_to_string(path)
                .map_err(|e| key_err(key, format!("cannot read file '{path}': {e}")))?;
            text.strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text)
                .to_string()
        } else {
            return Err(key_err(
                key,
                format!(
                    "unknown substitution '${{{expr}}}' (expected ${{env:NAME}} or ${{file:PATH}})"
                ),
            ));
        };
        out.push_str(&replacement);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> serde_json::Value {
        json!({"name": "alerts", "config": {
            "topics": "alerts, ops",
            "kafka.bootstrap.servers": "127.0.0.1:9092",
            "lark.app.id": "cli_x",
            "lark.app.secret": "s3cret",
        }})
    }

    fn with(k: &str, v: &str) -> serde_json::Value {
        let mut j = base();
        j["config"][k] = json!(v);
        j
    }

    fn err(j: serde_json::Value) -> String {
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
    fn lookup_keys() {
        let c = ConnectorConfig::from_json(&base()).unwrap();
        assert_eq!(c.lark.lookup_ttl, Duration::from_secs(3600));
        assert_eq!(c.lark.lookup_negative_ttl, Duration::from_secs(300));
        assert!(!c.lark.email_resolve);
        let mut j = with("lark.lookup.ttl.ms", "60000");
        j["config"]["lark.lookup.negative.ttl.ms"] = json!("0");
        j["config"]["lark.email.resolve"] = json!("true");
        let c = ConnectorConfig::from_json(&j).unwrap();
        assert_eq!(c.lark.lookup_ttl, Duration::from_secs(60));
        assert!(c.lark.lookup_negative_ttl.is_zero());
        assert!(c.lark.email_resolve);
        let e = err(with("lark.lookup.negative.ttl.ms", "7200000"));
        assert!(
            e.contains("'lark.lookup.negative.ttl.ms'") && e.contains("lark.lookup.ttl.ms"),
            "{e}"
        );
        assert!(err(with("lark.lookup.ttl.ms", "1h")).contains("'lark.lookup.ttl.ms'"));
        assert!(err(with("lark.email.resolve", "yes")).contains("'lark.email.resolve'"));
    }

    #[test]
    fn domains() {
        let c = ConnectorConfig::from_json(&with("lark.domain", "lark")).unwrap();
        assert_eq!(c.lark.base_url, LARK_BASE_URL);
        let c = ConnectorConfig::from_json(&with("lark.domain", "http://127.0.0.1:9/")).unwrap();
        assert_eq!(c.lark.base_url, "http://127.0.0.1:9");
        assert!(err(with("lark.domain", "larks")).contains("'lark.domain'"));
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let e = err(with("errors.tolerence", "all"));
        assert!(
            e.contains("'errors.tolerence'") && e.contains("did you mean 'errors.tolerance'"),
            "{e}"
        );
        let e = err(with("bootstrap.servers", "x"));
        assert!(
            e.contains("'bootstrap.servers'") && e.contains("kafka."),
            "{e}"
        );
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

    #[test]
    fn webhooks_and_webhook_only_connectors() {
        let mut j = with("lark.webhooks.ops.token", "abc");
        j["config"]["lark.webhooks.ops.secret"] = json!("s1");
        j["config"]["lark.webhooks.team.url"] =
            json!("https://open.larksuite.com/open-apis/bot/v2/hook/xyz");
        let c = ConnectorConfig::from_json(&j).unwrap();
        assert_eq!(
            c.lark.webhooks["ops"].url,
            "https://open.feishu.cn/open-apis/bot/v2/hook/abc"
        );
        assert_eq!(
            c.lark.webhooks["ops"].secret.as_ref().map(|s| s.expose()),
            Some("s1")
        );
        assert!(c.lark.webhooks["team"].secret.is_none());
        assert_eq!(c.as_given["lark.webhooks.ops.secret"], "***");
        // The hook URL ends in the hook token: masked like `.token`, in the echo and in Debug.
        assert_eq!(c.as_given["lark.webhooks.team.url"], "***");
        assert_eq!(c.as_given["lark.webhooks.ops.token"], "***");
        let debug = format!("{:?}", c.lark.webhooks);
        assert!(!debug.contains("xyz") && !debug.contains("abc"), "{debug}");
        assert!(
            debug.contains("https://open.larksuite.com/open-apis/bot/v2/hook/***"),
            "{debug}"
        );
        // Without an app, webhooks alone are enough; without either, the app is missing.
        let mut j = with("lark.webhooks.ops.token", "abc");
        let cfg = j["config"].as_object_mut().unwrap();
        cfg.remove("lark.app.id");
        cfg.remove("lark.app.secret");
        let c = ConnectorConfig::from_json(&j).unwrap();
        assert!(c.lark.app_id.is_empty());
        j["config"]
            .as_object_mut()
            .unwrap()
            .remove("lark.webhooks.ops.token");
        assert!(err(j).contains("'lark.app.id': missing"));
    }

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

    #[test]
    fn lark_tls_ca_file_must_be_a_readable_pem_bundle() {
        let dir = std::env::temp_dir().join(format!("lark-sink-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = err(with("lark.tls.ca.file", "/nonexistent/ca.pem"));
        assert!(
            e.contains("'lark.tls.ca.file'") && e.contains("cannot read"),
            "{e}"
        );
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = err(with("lark.tls.ca.file", &junk.display().to_string()));
        assert!(
            e.contains("'lark.tls.ca.file'") && e.contains("no PEM certificate"),
            "{e}"
        );
        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = err(with("lark.tls.ca.file", &broken.display().to_string()));
        assert!(e.contains("'lark.tls.ca.file'"), "{e}");
        let c = ConnectorConfig::from_json(&base()).unwrap();
        assert!(c.lark.tls_ca.is_empty(), "system roots only by default");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn substitution_from_env_and_file() {
        std::env::set_var("LARK_SINK_TEST_SECRET", "from-env");
        let dir = std::env::temp_dir().join(format!("lark-sink-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("secret");
        std::fs::write(&f, "from-file\n").unwrap();
        let mut j = with("lark.app.secret", &format!("${{file:{}}}", f.display()));
        j["config"]["lark.app.id"] = json!("cli_${env:LARK_SINK_TEST_SECRET}");
        let c = ConnectorConfig::from_json(&j).unwrap();
        assert_eq!(c.lark.app_secret.expose(), "from-file");
        assert_eq!(c.lark.app_id, "cli_from-env");
        let e = err(with("lark.app.secret", "${env:LARK_SINK_NOT_SET_ANYWHERE}"));
        assert!(
            e.contains("'lark.app.secret'") && e.contains("LARK_SINK_NOT_SET_ANYWHERE"),
            "{e}"
        );
        assert!(err(with("lark.app.secret", "${vault:x}")).contains("unknown substitution"));
    }
}
