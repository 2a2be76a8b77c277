//! Events and card callbacks over Lark's WebSocket long connection (lifecycle §3, §4, §6 items
//! 10–13).
//!
//! Why: the connector will receive clicks and messages over the long connection, and what makes
//! such a client right or wrong is the server's behaviour: one-use URLs, the connection limit,
//! pongs that change the client's settings, fragments out of order, the 3 s ack deadline and the
//! redeliveries that follow a missed one, duplicates after success, connections the server drops.
//! This module is that server:
//!
//! - [`frame`]: the `pbbp2.Frame` wire format (prost).
//! - `longconn`: `POST /callback/ws/endpoint` and the `GET /ws/v2` WebSocket.
//! - `hub`: live connections, tickets, pushed events, acks; `delivery`: pushing one event and
//!   redelivering it until acked.
//! - `push`: the events the emulator can make (`card.action.trigger`, `im.message.receive_v1`)
//!   and their `/_emulator/events/*` control endpoints.
//! - [`callback`]: the same events over HTTP instead (a POST to the app's request URL,
//!   encrypted and signed), the `url_verification` challenge and deliberately wrong requests.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod callback;
mod delivery;
pub mod frame;
pub(crate) mod hub;
pub(crate) mod longconn;
pub(crate) mod push;

pub use callback::{CallbackConfig, Tamper, VerifyError};
pub use push::{BotMessage, Click};

/// How the emulated long connection behaves; part of [`crate::EmulatorConfig`].
///
/// The first four are the `ClientConfig` the endpoint and every pong hand out (seconds; all
/// non-zero, lifecycle §4.6: a zero `PingInterval` makes the Go and Python SDKs ping in a loop).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LongConnectionConfig {
    /// `ClientConfig.PingInterval`, s (SDK default 120).
    pub ping_interval_s: u64,
    /// `ClientConfig.ReconnectInterval`, s (SDK default 120).
    pub reconnect_interval_s: u64,
    /// `ClientConfig.ReconnectNonce`, s: the first reconnect's random delay bound (default 30).
    pub reconnect_nonce_s: u64,
    /// `ClientConfig.ReconnectCount` (< 0: unlimited; default -1).
    pub reconnect_count: i64,
    /// Live connections one app may hold; one more is refused with handshake 514 /
    /// 1000040350 (lifecycle §4.7: 50).
    pub max_connections_per_app: usize,
    /// How long a pushed event waits for its ack (lifecycle §4.5: 3 s).
    pub ack_deadline: Duration,
    /// The waits before each redelivery of an event not acked in time (lifecycle §3.3: 15 s,
    /// 5 min, 1 h, 6 h). Its length is the number of redeliveries.
    pub retry_schedule: Vec<Duration>,
    /// Split every event payload into fragments of at most this many bytes (`None`: never;
    /// the real fragment size is UNCONFIRMED). A push can override it.
    pub fragment_size: Option<usize>,
    /// Send `card.action.trigger` in `type=card` frames instead of `type=event` (lifecycle §4.8:
    /// the platform does so when the app's callback subscription has not taken effect;
    /// the official SDKs drop them). Default false.
    pub callbacks_as_card_frames: bool,
}

impl Default for LongConnectionConfig {
    fn default() -> Self {
        Self {
            ping_interval_s: 120,
            reconnect_interval_s: 120,
            reconnect_nonce_s: 30,
            reconnect_count: -1,
            max_connections_per_app: 50,
            ack_deadline: Duration::from_secs(3),
            retry_schedule: vec![
                Duration::from_secs(15),
                Duration::from_secs(5 * 60),
                Duration::from_secs(3600),
                Duration::from_secs(6 * 3600),
            ],
            fragment_size: None,
            callbacks_as_card_frames: false,
        }
    }
}

impl LongConnectionConfig {
    /// The `ClientConfig` JSON of the endpoint's answer and of every pong (all four fields).
    pub fn client_config(&self) -> Value {
        serde_json::json!({
            "ReconnectCount": self.reconnect_count,
            "ReconnectInterval": self.reconnect_interval_s,
            "ReconnectNonce": self.reconnect_nonce_s,
            "PingInterval": self.ping_interval_s,
        })
    }
}

/// One event the emulator pushed (over the long connection or HTTP), and what became of it: what tests
/// assert on ([`crate::EmulatorHandle::pushed_events`], `GET /_emulator/events`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PushedEvent {
    /// `header.event_id`; a redelivery keeps it, a duplicate of a received message does not.
    pub event_id: String,
    /// `header.event_type`, e.g. `card.action.trigger`, `im.message.receive_v1`.
    pub event_type: String,
    /// The app whose connections it went to.
    pub app_id: String,
    /// When it was pushed first, ms since the epoch (wall clock).
    pub pushed_at_ms: u64,
    /// Delivery attempts so far, including ones that found no live connection.
    pub attempts: u32,
    /// Acked with `code` 200 (over HTTP: answered with status 200) within the deadline.
    pub acked: bool,
    /// The `code` of the last ack received in time (200, or e.g. 500); over HTTP the status.
    pub ack_code: Option<i64>,
    /// The ack's `data`, base64-decoded and parsed as JSON (a card callback's answer, e.g.
    /// `{"toast":{…}}`); a JSON string when it is not JSON; `None` without `data`. Over HTTP:
    /// the body of the 200 answer, the same way (`None` when empty).
    pub ack_data: Option<Value>,
    /// From sending the successful attempt's last frame to its ack, ms.
    pub latency_ms: Option<u64>,
    /// No more attempts will be made (acked, or the retry schedule is used up).
    pub done: bool,
    /// Acks that came after their attempt's deadline (they count for nothing).
    pub late_acks: u32,
    /// Every attempt, oldest first.
    pub deliveries: Vec<Delivery>,
    /// The event JSON as pushed (after reassembly, the client must see exactly this).
    pub payload: Value,
}

/// One delivery attempt of a [`PushedEvent`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// When it was made, ms since the epoch.
    pub at_ms: u64,
    /// The connection (`device_id`) it went to; `None` when none was live.
    pub connection: Option<u64>,
    /// The frames' `message_id` header (new for every attempt).
    pub frame_message_id: Option<String>,
    /// Fragments sent (`sum`); 0 when none was live.
    pub fragments: usize,
    /// How it ended.
    pub outcome: DeliveryOutcome,
    /// The request URL of an HTTP attempt; `None` (left out of JSON) over the long connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How an HTTP attempt was made wrong on purpose, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tamper: Option<callback::Tamper>,
    /// Why an HTTP attempt got no answer (connection refused, reset, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a [`Delivery`] ended. JSON: `"pending"`, `"acked"`, `"no_connection"`, `"no_ack"`,
/// `{"refused":{"code":500}}`. Over HTTP: `acked` = status 200 in time, `refused` = another
/// status (`code` is the HTTP status), `no_ack` = no answer in time, `no_connection` = the
/// request failed (connection refused, reset; [`Delivery::error`] says how).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// Waiting for the ack.
    Pending,
    /// Acked with code 200 in time.
    Acked,
    /// No live connection of the app at delivery time; over HTTP, the request failed.
    NoConnection,
    /// No ack within the deadline.
    NoAck,
    /// Acked in time with a code other than 200 (inferred from lifecycle §4.5: a failure).
    Refused {
        /// The ack's `code`.
        code: i64,
    },
}

/// Why an event could not be pushed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventsError {
    /// The app is not in the directory.
    #[error("unknown app {0:?}")]
    UnknownApp(String),
    /// The directory has no app (or no user) to default to.
    #[error("the directory has no {0} to default to")]
    NothingToDefaultTo(&'static str),
    /// The event JSON has no `header.event_id` / `header.event_type`.
    #[error("an event needs header.event_id and header.event_type")]
    NotAnEvent,
    /// The emulator was started outside a tokio runtime, so nothing can be delivered.
    #[error("no tokio runtime to deliver events on")]
    NoRuntime,
}

/// The default `header.token` of every event and callback: the app's Verification Token. The
/// directory models none, so this fixed string stands in for it (over the long connection
/// nothing checks it, lifecycle §2.3); [`CallbackConfig::verification_token`] replaces it.
pub const VERIFICATION_TOKEN: &str = "emulator_verification_token";
