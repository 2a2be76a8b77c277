//! `lark.events.*`: the way back, Lark's events and card button clicks into a Kafka topic
//! (docs/user-guide.md "Receiving events and clicks"). Off unless `lark.events.topic` is set.

use std::net::SocketAddr;
use std::time::Duration;

use super::keys::Keys;
use super::{key_err, ConfigError};
use crate::secret::Secret;

/// How long a written event is remembered, so that Lark's redeliveries are written once, unless
/// `lark.events.dedup.window.ms` says otherwise: Lark redelivers an unanswered event after 15 s,
/// 5 min, 1 h and 6 h (lark-api.md §9), about 7 h in all, and redelivers now and then even after
/// an answer; 12 h covers the whole schedule.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(12 * 3600);

/// The most events the dedup window remembers (past it the oldest are forgotten: such a
/// redelivery is merely written again).
pub const DEDUP_CAPACITY: usize = 100_000;

/// The path the listener answers on unless `lark.events.path` says otherwise.
pub const DEFAULT_EVENTS_PATH: &str = "/lark/events";

/// How far a signed callback's timestamp may be from now unless `lark.events.max.age.ms` says
/// otherwise: a captured request replayed later than this is refused.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

/// The keys of `lark.events.mode=http` only.
const HTTP_KEYS: [&str; 5] = [
    "lark.events.listener",
    "lark.events.path",
    "lark.events.encrypt.key",
    "lark.events.verification.token",
    "lark.events.max.age.ms",
];

/// How events arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsMode {
    /// The long connection the official SDKs use (no public endpoint needed).
    Websocket,
    /// Lark POSTs each event to a request URL that reaches this connector's listener.
    Http(HttpEvents),
}

/// `lark.events.mode=http`: the listener and the app's callback credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpEvents {
    /// `lark.events.listener`: where to listen (`host:port`; port 0 picks one, logged).
    pub listener: SocketAddr,
    /// `lark.events.path`.
    pub path: String,
    /// `lark.events.encrypt.key`: the app's Encrypt Key; with it bodies are encrypted and
    /// requests signed, and unsigned ones are refused.
    pub encrypt_key: Option<Secret>,
    /// `lark.events.verification.token`: the app's Verification Token, checked in every request.
    pub verification_token: Option<Secret>,
    /// `lark.events.max.age.ms`.
    pub max_age: Duration,
}

/// `lark.events.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// `lark.events.topic`: where each event is written.
    pub topic: String,
    /// `lark.events.mode`.
    pub mode: EventsMode,
    /// `lark.events.dedup.window.ms`.
    pub dedup_window: Duration,
    /// `lark.events.card.toast`: what the clicking user sees after a card button click (none: the
    /// card answers `{}`).
    pub card_toast: Option<String>,
    /// `lark.events.card.failure.toast`: what the clicking user sees when the click could not be
    /// written (an error toast: Lark never sends a click again, so the user is told to click
    /// again). `None` (set empty): answered 500, and Lark's client shows its own error.
    pub failure_toast: Option<String>,
}

/// The default of `lark.events.card.failure.toast`.
pub const DEFAULT_FAILURE_TOAST: &str =
    "Not recorded (the pipeline is unavailable): please click again";

impl EventsConfig {
    /// `None` without `lark.events.topic` (the other keys then are an error).
    pub(super) fn parse(keys: &Keys<'_>) -> Result<Option<Self>, ConfigError> {
        let Some(topic) = keys
            .get("lark.events.topic")
            .filter(|t| !t.trim().is_empty())
        else {
            let others = [
                "lark.events.mode",
                "lark.events.dedup.window.ms",
                "lark.events.card.toast",
                "lark.events.card.failure.toast",
            ];
            if let Some(k) = others
                .iter()
                .chain(&HTTP_KEYS)
                .find(|k| keys.get(k).is_some())
            {
                return Err(key_err(k, "needs lark.events.topic"));
            }
            return Ok(None);
        };
        let mode = match keys.get("lark.events.mode").unwrap_or("websocket") {
            "websocket" => {
                if let Some(k) = HTTP_KEYS.iter().find(|k| keys.get(k).is_some()) {
                    return Err(key_err(k, "applies to lark.events.mode=http only"));
                }
                EventsMode::Websocket
            }
            "http" => EventsMode::Http(HttpEvents::parse(keys)?),
            other => {
                return Err(key_err(
                    "lark.events.mode",
                    format!("must be websocket or http, not '{other}'"),
                ))
            }
        };
        let dedup_window = keys.ms("lark.events.dedup.window.ms", DEFAULT_DEDUP_WINDOW)?;
        let card_toast = keys
            .get("lark.events.card.toast")
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        // Set but empty means "no toast" (answered 500), so read the raw value: `get` takes an
        // empty value for an absent one.
        let failure_toast = match keys.raw().get("lark.events.card.failure.toast") {
            None => Some(DEFAULT_FAILURE_TOAST.to_string()),
            Some(t) if t.trim().is_empty() => None,
            Some(t) => Some(t.trim().to_string()),
        };
        Ok(Some(EventsConfig {
            topic: topic.trim().to_string(),
            mode,
            dedup_window,
            card_toast,
            failure_toast,
        }))
    }
}

impl HttpEvents {
    fn parse(keys: &Keys<'_>) -> Result<Self, ConfigError> {
        let given = keys.get("lark.events.listener").ok_or_else(|| {
            key_err(
                "lark.events.listener",
                "is required with lark.events.mode=http (host:port to listen on)",
            )
        })?;
        let listener: SocketAddr = given.trim().parse().map_err(|_| {
            key_err(
                "lark.events.listener",
                format!("'{given}' is not host:port (e.g. 0.0.0.0:8088)"),
            )
        })?;
        let path = keys
            .get("lark.events.path")
            .unwrap_or(DEFAULT_EVENTS_PATH)
            .trim()
            .to_string();
        if !path.starts_with('/') {
            return Err(key_err("lark.events.path", "must start with '/'"));
        }
        let secret = |k: &str| {
            keys.get(k)
                .filter(|v| !v.is_empty())
                .map(|v| Secret::new(v.to_string()))
        };
        let encrypt_key = secret("lark.events.encrypt.key");
        let verification_token = secret("lark.events.verification.token");
        if encrypt_key.is_none() && verification_token.is_none() {
            return Err(key_err(
                "lark.events.mode",
                "http needs lark.events.encrypt.key or lark.events.verification.token (the app's Event Subscriptions page shows both): without either, anyone could post events",
            ));
        }
        let max_age = keys.ms("lark.events.max.age.ms", DEFAULT_MAX_AGE)?;
        Ok(HttpEvents {
            listener,
            path,
            encrypt_key,
            verification_token,
            max_age,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{base, err, with};
    use super::super::ConnectorConfig;
    use super::*;
    use serde_json::json;

    fn events(pairs: &[(&str, &str)]) -> Result<Option<EventsConfig>, String> {
        let mut j = base();
        for (k, v) in pairs {
            j["config"][*k] = json!(v);
        }
        ConnectorConfig::from_json(&j)
            .map(|c| c.events)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn events_are_off_without_a_topic_and_websocket_by_default() {
        assert_eq!(events(&[]).unwrap(), None);
        assert!(err(with("lark.events.card.toast", "x")).contains("needs lark.events.topic"));
        assert!(err(with("lark.events.listener", "0.0.0.0:1")).contains("needs lark.events.topic"));
        let ws = events(&[("lark.events.topic", "lark-events")])
            .unwrap()
            .unwrap();
        assert_eq!(ws.mode, EventsMode::Websocket);
        assert_eq!(ws.dedup_window, DEFAULT_DEDUP_WINDOW);
        assert_eq!(ws.failure_toast.as_deref(), Some(DEFAULT_FAILURE_TOAST));
        let quiet = events(&[
            ("lark.events.topic", "t"),
            ("lark.events.card.failure.toast", ""),
        ]);
        assert_eq!(quiet.unwrap().unwrap().failure_toast, None);
        let e = err(with("lark.events.card.failure.toast", "x"));
        assert!(e.contains("needs lark.events.topic"), "{e}");
        let e = events(&[("lark.events.topic", "t"), ("lark.events.path", "/x")]).unwrap_err();
        assert!(e.contains("lark.events.mode=http only"), "{e}");
        let e = events(&[("lark.events.topic", "t"), ("lark.events.mode", "grpc")]).unwrap_err();
        assert!(e.contains("websocket or http"), "{e}");
    }

    #[test]
    fn http_mode_needs_a_listener_and_a_credential() {
        let t = ("lark.events.topic", "lark-events");
        let http = ("lark.events.mode", "http");
        let e = events(&[t, http]).unwrap_err();
        assert!(
            e.contains("lark.events.listener") && e.contains("required"),
            "{e}"
        );
        let listen = ("lark.events.listener", "127.0.0.1:0");
        let e = events(&[t, http, listen]).unwrap_err();
        assert!(
            e.contains("lark.events.encrypt.key or lark.events.verification.token"),
            "{e}"
        );
        let e = events(&[
            t,
            http,
            ("lark.events.listener", "nowhere"),
            ("lark.events.verification.token", "vt"),
        ])
        .unwrap_err();
        assert!(e.contains("not host:port"), "{e}");
        let e = events(&[
            t,
            http,
            listen,
            ("lark.events.verification.token", "vt"),
            ("lark.events.path", "x"),
        ])
        .unwrap_err();
        assert!(e.contains("must start with '/'"), "{e}");
        let cfg = events(&[
            t,
            http,
            listen,
            ("lark.events.encrypt.key", "ek"),
            ("lark.events.max.age.ms", "60000"),
        ])
        .unwrap()
        .unwrap();
        let EventsMode::Http(h) = cfg.mode else {
            panic!("http");
        };
        assert_eq!(h.path, DEFAULT_EVENTS_PATH);
        assert_eq!(h.max_age, Duration::from_secs(60));
        assert_eq!(h.encrypt_key.as_ref().map(Secret::expose), Some("ek"));
        assert!(h.verification_token.is_none());
        assert!(!format!("{h:?}").contains("ek\""), "the key is not printed");
        assert!(crate::secret::is_secret_key("lark.events.encrypt.key"));
        assert!(crate::secret::is_secret_key(
            "lark.events.verification.token"
        ));
    }
}
