//! The fixed sections of the config: `lark.*`, `errors.*`, `lark.rate.*`, `buffer.*`, `admin.*`.
//!
//! Each section is one type and one parser of 60 lines or fewer, reading its keys through
//! [`Keys`]. A default is written once, in the `Default` of the type that owns it: this file's
//! types for their own fields, [`RateConfig::default`] (delivery/limits.rs),
//! [`RetryPolicy::default`] (delivery/send.rs) and [`LookupConfig::default`] (lark/directory.rs)
//! for theirs; the parsers only read those. Config also builds the lower modules' own config
//! types from [`LarkConfig`] (the `From` impls below), so those modules never read the config.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::keys::Keys;
use super::webhooks;
use super::{key_err, ConfigError};
use crate::delivery::{RateConfig, RetryPolicy};
use crate::lark::{ClientConfig, LookupConfig, WebhookConfig};
use crate::secret::Secret;

pub const FEISHU_BASE_URL: &str = "https://open.feishu.cn";
pub const LARK_BASE_URL: &str = "https://open.larksuite.com";

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

impl Default for LarkConfig {
    /// No app, Feishu, and the defaults of the retry policy and the directory.
    fn default() -> Self {
        let retry = RetryPolicy::default();
        let lookup = LookupConfig::default();
        LarkConfig {
            app_id: String::new(),
            app_secret: Secret::default(),
            base_url: FEISHU_BASE_URL.to_string(),
            request_timeout: Duration::from_secs(10),
            token_refresh_margin: Duration::from_secs(180),
            retry_delay_max: retry.max_delay,
            retry_delay_initial: retry.initial,
            retry_timeout: retry.timeout,
            webhooks: BTreeMap::new(),
            lookup_ttl: lookup.ttl,
            lookup_negative_ttl: lookup.negative_ttl,
            email_resolve: lookup.resolve_email,
            tls_ca: Vec::new(),
        }
    }
}

impl LarkConfig {
    /// `lark.*` (without `lark.rate.*` and `lark.result.topic`) and `errors.retry.*`.
    pub(super) fn parse(keys: &Keys) -> Result<Self, ConfigError> {
        let d = LarkConfig::default();
        let base_url = base_url(keys, &d.base_url)?;
        let webhooks = webhooks::parse(keys.raw(), &base_url)?;
        // The app is optional only for a connector that sends through webhooks alone.
        let (app_id, app_secret) = match (keys.get("lark.app.id"), keys.get("lark.app.secret")) {
            (Some(id), Some(secret)) => (id.to_string(), Secret::new(secret)),
            (None, None) if !webhooks.is_empty() => (String::new(), Secret::default()),
            (None, _) => return Err(key_err("lark.app.id", "missing")),
            (_, None) => return Err(key_err("lark.app.secret", "missing")),
        };
        let retry_timeout = match keys.get("errors.retry.timeout") {
            Some("-1") => None,
            Some(_) => Some(keys.ms("errors.retry.timeout", Duration::ZERO)?),
            None => d.retry_timeout,
        };
        let lark = LarkConfig {
            app_id,
            app_secret,
            base_url,
            request_timeout: keys.ms("lark.request.timeout.ms", d.request_timeout)?,
            token_refresh_margin: keys
                .ms("lark.token.refresh.margin.ms", d.token_refresh_margin)?,
            retry_delay_max: keys.ms("errors.retry.delay.max.ms", d.retry_delay_max)?,
            retry_delay_initial: keys.ms("errors.retry.delay.initial.ms", d.retry_delay_initial)?,
            retry_timeout,
            webhooks,
            lookup_ttl: keys.ms("lark.lookup.ttl.ms", d.lookup_ttl)?,
            lookup_negative_ttl: keys.ms("lark.lookup.negative.ttl.ms", d.lookup_negative_ttl)?,
            email_resolve: keys.flag("lark.email.resolve", d.email_resolve)?,
            tls_ca: match keys.get("lark.tls.ca.file") {
                Some(path) => load_ca_bundle("lark.tls.ca.file", Path::new(path))?,
                None => d.tls_ca,
            },
        };
        lark.check()?;
        Ok(lark)
    }

    /// The rules between keys of the section.
    fn check(&self) -> Result<(), ConfigError> {
        if self.lookup_negative_ttl > self.lookup_ttl {
            return Err(key_err(
                "lark.lookup.negative.ttl.ms",
                "must not exceed lark.lookup.ttl.ms (a user not found is re-checked sooner than a found one)",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(key_err("lark.request.timeout.ms", "must be positive"));
        }
        if self.retry_delay_initial > self.retry_delay_max {
            return Err(key_err(
                "errors.retry.delay.initial.ms",
                "must not exceed errors.retry.delay.max.ms",
            ));
        }
        Ok(())
    }
}

/// `lark.domain`: `feishu`, `lark`, or a base URL of its own (a private deployment, the emulator).
fn base_url(keys: &Keys, default: &str) -> Result<String, ConfigError> {
    match keys.get("lark.domain") {
        None => Ok(default.to_string()),
        Some("feishu") => Ok(FEISHU_BASE_URL.to_string()),
        Some("lark") => Ok(LARK_BASE_URL.to_string()),
        Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
            Ok(url.trim_end_matches('/').to_string())
        }
        Some(other) => Err(key_err(
            "lark.domain",
            format!("'{other}' is not feishu, lark or an http(s):// base URL"),
        )),
    }
}

impl From<&LarkConfig> for RetryPolicy {
    fn from(c: &LarkConfig) -> Self {
        RetryPolicy {
            initial: c.retry_delay_initial,
            max_delay: c.retry_delay_max,
            timeout: c.retry_timeout,
        }
    }
}

impl From<&LarkConfig> for ClientConfig {
    fn from(c: &LarkConfig) -> Self {
        ClientConfig {
            app_id: c.app_id.clone(),
            app_secret: c.app_secret.clone(),
            base_url: c.base_url.clone(),
            request_timeout: c.request_timeout,
            token_refresh_margin: c.token_refresh_margin,
            webhooks: c.webhooks.clone(),
            tls_ca: c.tls_ca.clone(),
        }
    }
}

impl From<&LarkConfig> for LookupConfig {
    fn from(c: &LarkConfig) -> Self {
        LookupConfig {
            ttl: c.lookup_ttl,
            negative_ttl: c.lookup_negative_ttl,
            resolve_email: c.email_resolve,
            ..LookupConfig::default()
        }
    }
}

/// Kafka Connect's `errors.tolerance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tolerance {
    /// The first record that cannot be delivered stops the connector (its offset is not committed).
    None,
    /// Undeliverable records go to the dead-letter topic and the pipeline goes on.
    All,
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

impl Default for ErrorsConfig {
    /// Connect's defaults: stop on the first failure, no DLQ, context headers on.
    fn default() -> Self {
        ErrorsConfig {
            tolerance: Tolerance::None,
            dlq_topic: None,
            dlq_context_headers: true,
            dlq_replication_factor: -1,
            dlq_partitions: 1,
        }
    }
}

impl ErrorsConfig {
    /// `errors.tolerance` and `errors.deadletterqueue.*`.
    pub(super) fn parse(keys: &Keys) -> Result<Self, ConfigError> {
        let d = ErrorsConfig::default();
        let tolerance = keys.choice(
            "errors.tolerance",
            d.tolerance,
            &[("none", Tolerance::None), ("all", Tolerance::All)],
        )?;
        let dlq_topic = keys
            .get("errors.deadletterqueue.topic.name")
            .map(str::to_string);
        if tolerance == Tolerance::All && dlq_topic.is_none() {
            return Err(key_err(
                "errors.deadletterqueue.topic.name",
                "missing: errors.tolerance=all needs a dead-letter topic, or undeliverable records would be lost",
            ));
        }
        let errors = ErrorsConfig {
            tolerance,
            dlq_topic,
            dlq_context_headers: keys.flag(
                "errors.deadletterqueue.context.headers.enable",
                d.dlq_context_headers,
            )?,
            dlq_replication_factor: keys.integer(
                "errors.deadletterqueue.topic.replication.factor",
                d.dlq_replication_factor,
            )?,
            dlq_partitions: keys
                .integer("errors.deadletterqueue.topic.partitions", d.dlq_partitions)?,
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
        Ok(errors)
    }
}

/// `lark.rate.*`, on top of [`RateConfig::default`] (Lark's published quotas).
pub(super) fn rate(keys: &Keys) -> Result<RateConfig, ConfigError> {
    let d = RateConfig::default();
    Ok(RateConfig {
        app_per_second: keys.count("lark.rate.app.per.second", d.app_per_second)?,
        app_per_minute: keys.count("lark.rate.app.per.minute", d.app_per_minute)?,
        receiver_per_second: keys.count("lark.rate.receiver.per.second", d.receiver_per_second)?,
        webhook_per_second: keys.count("lark.rate.webhook.per.second", d.webhook_per_second)?,
        webhook_per_minute: keys.count("lark.rate.webhook.per.minute", d.webhook_per_minute)?,
        share_auto: keys.choice(
            "lark.rate.share",
            d.share_auto,
            &[("auto", true), ("none", false)],
        )?,
    })
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

impl Default for BufferConfig {
    /// 5000 messages or 8 MiB, paused after a second full.
    fn default() -> Self {
        BufferConfig {
            max_messages: 5_000,
            max_bytes: 8 << 20,
            pause_after: Duration::from_secs(1),
        }
    }
}

impl BufferConfig {
    /// `buffer.*`; both bounds must be positive.
    pub(super) fn parse(keys: &Keys) -> Result<Self, ConfigError> {
        let d = BufferConfig::default();
        let buffer = BufferConfig {
            max_messages: keys.count("buffer.max.messages", d.max_messages)?,
            max_bytes: keys.count("buffer.max.bytes", d.max_bytes)?,
            pause_after: keys.ms("buffer.pause.after.ms", d.pause_after)?,
        };
        if buffer.max_messages == 0 {
            return Err(key_err("buffer.max.messages", "must be positive"));
        }
        if buffer.max_bytes == 0 {
            return Err(key_err("buffer.max.bytes", "must be positive"));
        }
        Ok(buffer)
    }
}

impl Default for AdminConfig {
    /// Loopback only, port 8083 (Connect's), no token.
    fn default() -> Self {
        AdminConfig {
            listener: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8083))),
            token: None,
        }
    }
}

impl AdminConfig {
    /// `admin.listener` (`HOST:PORT` or `none`) and `admin.token`.
    pub(super) fn parse(keys: &Keys) -> Result<Self, ConfigError> {
        let listener = match keys.get("admin.listener") {
            None => AdminConfig::default().listener,
            Some("none") => None,
            Some(addr) => Some(addr.parse().map_err(|_| {
                key_err(
                    "admin.listener",
                    format!("'{addr}' is not HOST:PORT (an IP address and port) or 'none'"),
                )
            })?),
        };
        let token = keys.get("admin.token").map(Secret::new);
        Ok(AdminConfig { listener, token })
    }
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
    // The client the Lark calls build from these roots (`lark::http`), built once here so that a
    // root reqwest cannot use is refused at start-up with the key's name.
    crate::lark::http::http_client(LarkConfig::default().request_timeout, &certs).map_err(|e| {
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
fn error_chain(e: &dyn std::error::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{base, err, with};
    use super::super::ConnectorConfig;
    use super::*;
    use serde_json::json;

    /// Unset keys take the owning types' defaults, each written once.
    #[test]
    fn defaults_come_from_the_owning_types() {
        let c = ConnectorConfig::from_json(&base()).unwrap();
        assert_eq!(LookupConfig::from(&c.lark), LookupConfig::default());
        let (retry, d) = (RetryPolicy::from(&c.lark), RetryPolicy::default());
        assert_eq!(
            (retry.initial, retry.max_delay, retry.timeout),
            (d.initial, d.max_delay, d.timeout)
        );
        assert_eq!(c.rate, RateConfig::default());
        assert_eq!(c.buffer, BufferConfig::default());
        assert_eq!(c.admin.listener, AdminConfig::default().listener);
        let e = ErrorsConfig::default();
        assert_eq!(
            (
                c.errors.tolerance,
                c.errors.dlq_replication_factor,
                c.errors.dlq_partitions
            ),
            (e.tolerance, e.dlq_replication_factor, e.dlq_partitions)
        );
        let l = LarkConfig::default();
        assert_eq!(
            (
                c.lark.base_url,
                c.lark.request_timeout,
                c.lark.token_refresh_margin
            ),
            (l.base_url, l.request_timeout, l.token_refresh_margin)
        );
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
}
