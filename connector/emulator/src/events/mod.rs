//! Events and card callbacks, over Lark's WebSocket long connection or as HTTP callbacks
//! (lifecycle §2, §3, §4, §6 items 7–13).
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
//!   redelivering it until acked (a card callback: once).
//! - [`answer`]: a card callback's answer judged as the user's client does (the client error,
//!   the toast) and its card applied to the clicked message.
//! - `push`: the events the emulator can make (`card.action.trigger`, `im.message.receive_v1`)
//!   and their `/_emulator/events/*` control endpoints.
//! - [`callback`]: the same events over HTTP instead (a POST to the app's request URL,
//!   encrypted and signed), the `url_verification` challenge and deliberately wrong requests.
//!
//! # The long connection
//!
//! [`crate::EmulatorConfig::long_connection`] ([`LongConnectionConfig`]) sets it up, after
//! `/work/shared/lark-api-lifecycle.md` §3.3, §4 and §6 items 10–13.
//!
//! - The endpoint checks `AppID` / `AppSecret` against the directory and answers
//!   `{"code":0,"msg":"ok","data":{"URL":"ws://<Host header>/ws/v2?fpid=…&device_id=…&service_id=…&ticket=…","ClientConfig":{"ReconnectCount":-1,"ReconnectInterval":120,"ReconnectNonce":30,"PingInterval":120}}}`
//!   (`wss://` under [`crate::Emulator::start_tls`]); `fpid` comes first (Node's SDK swallows
//!   the first key). Each ticket opens one connection, once.
//! - `GET /ws/v2` refuses an upgrade with HTTP 514 and `Handshake-Status: 514`,
//!   `Handshake-Msg`, `Handshake-Autherrcode`: 1000040350 when the app already holds
//!   `max_connections_per_app` live connections (terminal for the SDKs).
//! - Binary messages are `pbbp2.Frame`s ([`frame`]). A `type=ping` control frame gets a
//!   `type=pong` control frame whose payload is the ClientConfig JSON. A data frame from the
//!   client is an ack, matched by its `message_id` header; its payload `{"code":200}` or
//!   `{"code":200,"data":"<base64 JSON>"}` (the decoded `data` is [`PushedEvent::ack_data`]).
//!   Text messages are ignored.
//! - Pushes ([`crate::EmulatorHandle::click`], [`crate::EmulatorHandle::send_to_bot`],
//!   [`crate::EmulatorHandle::push_event`]) go to one random live connection of the app
//!   (cluster mode) as data frames (`method` 1; headers `type` `event` (or `card`),
//!   `message_id` (new per attempt), `sum`, `seq`, `trace_id`, `timestamp` ms; unique `SeqID` /
//!   `LogID`), split into `fragment_size` parts sent last part first. An attempt without an ack
//!   of code 200 within `ack_deadline` (3 s) fails; so does one that finds no live connection;
//!   an event's next attempt follows after the next wait of `retry_schedule` (15 s, 5 min, 1 h,
//!   6 h), with the same event JSON. A card callback has no next attempt (below).
//!
//! # Over HTTP
//!
//! With [`CallbackConfig::url`] set ([`crate::EmulatorConfig::callbacks`], or at run time
//! [`crate::EmulatorHandle::set_callback_url`] / `POST /_emulator/events/callback`) every
//! delivery attempt is a POST of the event JSON to that URL instead of frames on the long
//! connection ([`callback`], after lark-api.md §9, §15.1 and lifecycle §2.2–§2.5, §3.3). Same
//! pushes, same [`PushedEvent`] records, same `ack_deadline` and `retry_schedule`.
//!
//! - Headers: `Content-Type: application/json; charset=utf-8`, `X-Lark-Request-Timestamp`
//!   (Unix seconds), `X-Lark-Request-Nonce` (random), and with an Encrypt Key
//!   `X-Lark-Signature` = lowercase hex SHA-256 of timestamp ‖ nonce ‖ encrypt key ‖ raw body
//!   ([`callback::signature`]).
//! - Body: the plaintext event JSON; with [`CallbackConfig::encrypt_key`]
//!   `{"encrypt":"<base64(iv ‖ AES-256-CBC-PKCS#7(key = SHA-256(encrypt key)))>"}`
//!   ([`callback::encrypt`]; random IV, or `000102…0f` with `deterministic_iv`).
//!   `header.token` is [`CallbackConfig::verification_token`].
//! - HTTP 200 within `ack_deadline` acks the attempt; its body is [`PushedEvent::ack_data`] (a
//!   card callback's `{}` / `{"toast":…}`). Another status (3xx included: redirects are not
//!   followed) → `refused` with `code` = the status; no answer in time → `no_ack`; a failed
//!   request (connection refused, 2 s connect timeout) → `no_connection` with
//!   [`Delivery::error`]. An event's failure is redelivered after the next wait of the
//!   schedule, with the same event JSON (a fresh nonce, timestamp and IV).
//! - [`crate::EmulatorHandle::verify_url`] / `POST /_emulator/events/verify`: the
//!   `url_verification` challenge `{"challenge","token","type":"url_verification"}` (encrypted
//!   with a key, never signed), expecting HTTP 200 `{"challenge":"<the same>"}` within 1 s
//!   ([`VerifyError`] says what was wrong otherwise).
//! - [`Tamper`]: [`crate::EmulatorHandle::tamper_next`], [`CallbackConfig::tamper`], the
//!   `tamper` field of a click / message (that event's first HTTP attempt) or of
//!   `POST /_emulator/events/callback` make one attempt wrong: `signature` (a well-formed but
//!   wrong `X-Lark-Signature`, also without a key), `token` (`header.token` =
//!   [`callback::WRONG_TOKEN`]), `stale` (timestamp 10 min old, correctly signed). A receiver
//!   refusing it fails that attempt; an event's redelivery is untampered, a click has none.
//!
//! # Card callbacks: once, and what the user saw
//!
//! A `card.action.trigger` ([`CARD_ACTION`]), over either transport, is delivered once:
//! lifecycle §2.1 "no redelivery" (§6 item 9). Not on a non-200 ack code or HTTP status, a
//! missing answer, a failed request or a bad body; the user sees an error and may click again
//! (a new event). A [`Click::duplicate`] still pushes the same event again after the first is
//! done: a test's explicit request (the Node SDK dedupes "genuine re-deliveries", lifecycle
//! §4.8). Once done, the answer is judged as the user's client judges it ([`answer`]):
//! [`PushedEvent::client_error`] (200341 no answer within `ack_deadline`, 200671 not 200,
//! 200672 malformed body or toast, 200673 malformed card, 200830 a 2.0 card answered with 1.0,
//! 200342 / 200080 a failed HTTP request) or, for a right answer, [`PushedEvent::toast`]. A
//! right answer's `card` (`{"type":"raw","data":{…}}` or `{"type":"template","data":{…}}`)
//! becomes the clicked message's content at once: a `callback` version in
//! [`crate::EmulatorHandle::message_view`]. Every click carries a fresh `event.token`
//! `c-<32 hex>` (a duplicate repeats its event, token included).
//!
//! # Choices
//!
//! Whether the challenge carries timestamp / nonce headers is UNCONFIRMED (they are sent,
//! without a signature); the legacy SHA-1 signed card format is not modelled;
//! [`crate::EmulatorHandle::reset`] clears queued tampering and keeps the URL.
//!
//! UNCONFIRMED in the spec: wrong or missing credentials → HTTP 200 code 1000040344
//! `app_id or app_secret is invalid` (the Python SDK's local code); an unknown or used ticket →
//! 514 with `Handshake-Autherrcode: 1000040345` (retryable for the SDKs: ask for a new URL); a
//! non-200 ack code counts as failure; a redelivery may go to another connection; a click that
//! finds no live connection is 200341; the events' `header.token` is the fixed
//! [`VERIFICATION_TOKEN`] (the directory has no verification tokens); `card.action.trigger`
//! `create_time` in µs, `im.message.receive_v1` in ms; `type=event` frames for callbacks unless
//! `callbacks_as_card_frames`. A click on a message the emulator sent gets its `oc_` chat as
//! `open_chat_id`; a received message in a directory chat is `group`, otherwise `p2p` (default
//! chat: the bot's p2p chat with the user). Not modelled: the server's own pings or idle
//! timeout, URL expiry, ordered events, legacy `card.action.trigger_v1`, delayed card updates
//! with the click's `c-` token. The endpoint counts in [`crate::Stats::requests`];
//! [`crate::EmulatorHandle::reset`] forgets pushed events but keeps live connections;
//! [`crate::EmulatorHandle::shutdown`] closes them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod answer;
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
    /// How long a pushed event waits for its ack, over HTTP for its answer (lifecycle §4.5,
    /// §2.5: 3 s).
    pub ack_deadline: Duration,
    /// The waits before each redelivery of an event not acked in time (lifecycle §3.3: 15 s,
    /// 5 min, 1 h, 6 h). Its length is the number of redeliveries. Card callbacks are never
    /// redelivered (lifecycle §2.1).
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
    /// No more attempts will be made: acked, the retry schedule is used up, or (a card
    /// callback, never redelivered) its one attempt is over and judged.
    pub done: bool,
    /// A card callback only, once done: the error the clicking user's client shows
    /// (lifecycle §2.5; [`answer`]: 200341 no answer in time, 200671 not HTTP 200 / ack code
    /// 200, 200672 malformed body or toast, 200673 malformed card, 200830 a 2.0 card answered
    /// with 1.0, 200342 / 200080 a failed HTTP request); `None` when the answer was right.
    pub client_error: Option<u32>,
    /// A card callback only: the toast the user saw (the answer's `toast` object), when the
    /// answer was right and had one.
    pub toast: Option<Value>,
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

/// `header.event_type` of a card callback: delivered once, its answer judged ([`answer`]).
pub const CARD_ACTION: &str = "card.action.trigger";

/// The default `header.token` of every event and callback: the app's Verification Token. The
/// directory models none, so this fixed string stands in for it (over the long connection
/// nothing checks it, lifecycle §2.3); [`CallbackConfig::verification_token`] replaces it.
pub const VERIFICATION_TOKEN: &str = "emulator_verification_token";
