//! The long connection's client (docs/lark-api.md §15.3, §9): what the official SDKs' `ws.Client`
//! does, for one app. It asks `POST /callback/ws/endpoint` for a WebSocket URL, dials it, pings at
//! the server's interval, puts fragmented frames back together, hands each whole event to a
//! [`Handler`] and answers the frame with the handler's verdict, within Lark's 3 s. Events are
//! handled side by side (up to `MAX_IN_FLIGHT`), as the SDKs do, so one slow write does not make
//! the events behind it late; each is answered as it finishes. On a close or
//! an error it reconnects the way the SDKs do (the endpoint again, a random first delay below
//! `ReconnectNonce`, then every `ReconnectInterval`, at most `ReconnectCount` times); an answer
//! that can only mean wrong credentials or the 50-connection limit stops it instead.
//!
//! It knows nothing about Kafka: what an event becomes is the handler's (`inbound`).

use std::future::Future;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use super::frame::{ClientConfig, Frame, Kind, Reassembly, Timing};
use crate::secret::Secret;
use crate::telemetry;

/// How long a handler may take before the frame goes unanswered (Lark's deadline is 3 s, and the
/// answer still has to travel): Lark then pushes the event again.
pub const HANDLER_DEADLINE: Duration = Duration::from_millis(2500);

/// How long the endpoint request may take.
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(15);

/// Endpoint codes that mean "try again" (system busy, internal error); any other non-zero code
/// is the app's fault and stops the client.
const RETRYABLE_CODES: &[i64] = &[1, 1_000_040_343];

/// The handshake's auth code for "too many connections for this app" (50).
const CONNECTION_LIMIT: &str = "1000040350";

/// Why the client stopped, or why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// Reconnecting cannot help: wrong credentials, a forbidden app, the connection limit, or
    /// `ReconnectCount` attempts used up.
    #[error("long connection stopped: {0}")]
    Terminal(String),
    /// This attempt failed; the next one may not.
    #[error("long connection failed: {0}")]
    Retryable(String),
}

/// What a handler says about one event: answered with code 200 (and, for a card callback,
/// its JSON answer: a toast), or with 500 (Lark pushes an event again; a card callback it never
/// pushes again, the clicking user sees an error, lifecycle §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Done(Option<Vec<u8>>),
    Failed,
}

/// Takes one whole event (its plaintext JSON) and decides its answer.
pub trait Handler: Send + Sync {
    fn handle(&self, payload: Vec<u8>) -> impl Future<Output = Verdict> + Send;
}

/// One app's long connection.
pub struct LongConnection {
    http: reqwest::Client,
    /// The Open Platform base URL (`https://open.feishu.cn`, the emulator's).
    base_url: String,
    app_id: String,
    app_secret: Secret,
}

/// What the endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub config: Option<ClientConfig>,
}

impl LongConnection {
    /// The connection of app `app_id` to `base_url`; the endpoint request is made with the same
    /// HTTP client settings as every Lark call (`timeout`, `lark.tls.ca.file`'s roots).
    pub fn new(
        base_url: &str,
        app_id: &str,
        app_secret: Secret,
        timeout: Duration,
        tls_ca: &[reqwest::Certificate],
    ) -> Result<Self, ConnectError> {
        let http = super::super::http::http_client(timeout, tls_ca)
            .map_err(|e| ConnectError::Terminal(format!("cannot build the HTTP client: {e}")))?;
        Ok(LongConnection {
            http,
            base_url: base_url.to_string(),
            app_id: app_id.to_string(),
            app_secret,
        })
    }

    /// Runs until `stop` is cancelled (`Ok`) or a terminal error.
    pub async fn run(
        &self,
        handler: &impl Handler,
        stop: &CancellationToken,
    ) -> Result<(), ConnectError> {
        let mut timing = Timing::default();
        let mut failures: i64 = 0;
        loop {
            let started = Instant::now();
            match self.session(handler, stop, &mut timing).await {
                Ok(()) if stop.is_cancelled() => return Ok(()),
                Ok(()) => tracing::info!("events: the long connection was closed; reconnecting"),
                Err(ConnectError::Terminal(why)) => return Err(ConnectError::Terminal(why)),
                Err(e) => tracing::warn!("events: {e}; reconnecting"),
            }
            telemetry::events_reconnect();
            // A connection that lived a while starts the count again.
            if started.elapsed() > timing.reconnect_interval {
                failures = 0;
            }
            failures += 1;
            if timing.reconnect_count >= 0 && failures > timing.reconnect_count {
                return Err(ConnectError::Terminal(format!(
                    "gave up after {} reconnect attempts (ReconnectCount)",
                    timing.reconnect_count
                )));
            }
            let wait = if failures == 1 {
                let nonce = timing.reconnect_nonce.as_millis().max(1) as u64;
                Duration::from_millis(rand::rng().random_range(0..nonce))
            } else {
                timing.reconnect_interval
            };
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// `POST /callback/ws/endpoint`: the URL to dial and the connection's settings.
    pub async fn endpoint(&self) -> Result<Endpoint, ConnectError> {
        let url = format!(
            "{}/callback/ws/endpoint",
            self.base_url.trim_end_matches('/')
        );
        let body = json!({"AppID": self.app_id, "AppSecret": self.app_secret.expose()});
        let resp = self
            .http
            .post(&url)
            .header("locale", "zh")
            .timeout(ENDPOINT_TIMEOUT)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                ConnectError::Retryable(format!("endpoint request: {}", without_url(e)))
            })?;
        let status = resp.status();
        let answer: Value = resp.json().await.map_err(|e| {
            ConnectError::Retryable(format!(
                "endpoint answer (HTTP {status}): {}",
                without_url(e)
            ))
        })?;
        if !status.is_success() {
            return Err(ConnectError::Retryable(format!(
                "endpoint answered HTTP {status}"
            )));
        }
        let code = answer.get("code").and_then(Value::as_i64).unwrap_or(-1);
        let msg = answer
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if code != 0 {
            let why = format!("endpoint answered code {code}: {msg}");
            return Err(if RETRYABLE_CODES.contains(&code) {
                ConnectError::Retryable(why)
            } else {
                ConnectError::Terminal(why)
            });
        }
        let data = answer.get("data");
        let url = data
            .and_then(|d| d.get("URL"))
            .and_then(Value::as_str)
            .ok_or_else(|| ConnectError::Retryable("endpoint answer without a URL".into()))?;
        let config = data
            .and_then(|d| d.get("ClientConfig"))
            .and_then(|c| serde_json::from_value(c.clone()).ok());
        Ok(Endpoint {
            url: url.to_string(),
            config,
        })
    }

    /// One connection, from the endpoint request until it closes (`Ok`) or fails.
    async fn session(
        &self,
        handler: &impl Handler,
        stop: &CancellationToken,
        timing: &mut Timing,
    ) -> Result<(), ConnectError> {
        let endpoint = self.endpoint().await?;
        if let Some(cfg) = &endpoint.config {
            timing.apply(cfg);
        }
        let service = service_id(&endpoint.url);
        let (ws, _) = tokio_tungstenite::connect_async(endpoint.url.as_str())
            .await
            .map_err(handshake_error)?;
        tracing::info!(conn_id = %device_id(&endpoint.url), "events: long connection open");
        telemetry::events_connected(true);
        let result = self.serve(ws, service, handler, stop, timing).await;
        telemetry::events_connected(false);
        result
    }

    /// Reads frames until the connection ends.
    async fn serve<S>(
        &self,
        mut ws: tokio_tungstenite::WebSocketStream<S>,
        service: i32,
        handler: &impl Handler,
        stop: &CancellationToken,
        timing: &mut Timing,
    ) -> Result<(), ConnectError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let send = |f: Frame| Message::Binary(f.to_bytes().into());
        let lost = |e: tungstenite::Error| ConnectError::Retryable(format!("connection lost: {e}"));
        ws.send(send(Frame::ping(service))).await.map_err(lost)?;
        let mut next_ping = tokio::time::Instant::now() + timing.ping_interval;
        let mut parts = Reassembly::default();
        // Events are handled side by side, as the SDKs do (a goroutine, a task per event): one
        // slow write must not make the events behind it miss Lark's 3 s. Their acks go out as
        // each finishes. At most MAX_IN_FLIGHT at once; past that no frame is read until one ends.
        let mut in_flight = FuturesUnordered::new();
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = ws.close(None).await;
                    return Ok(());
                }
                _ = tokio::time::sleep_until(next_ping) => {
                    ws.send(send(Frame::ping(service))).await.map_err(lost)?;
                    next_ping = tokio::time::Instant::now() + timing.ping_interval;
                    continue;
                }
                Some(ack) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Some(ack) = ack {
                        ws.send(send(ack)).await.map_err(lost)?;
                    }
                    continue;
                }
                m = ws.next(), if in_flight.len() < MAX_IN_FLIGHT => m,
            };
            let bytes = match msg {
                None | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Err(e)) => return Err(lost(e)),
                Some(Ok(Message::Binary(b))) => b,
                // Text, ping and pong messages of the WebSocket layer: not frames.
                Some(Ok(_)) => continue,
            };
            let frame = match Frame::decode_bytes(&bytes) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!("events: {e}; ignored");
                    continue;
                }
            };
            match frame.kind() {
                Kind::Pong => {
                    let before = timing.ping_interval;
                    timing.apply_pong(&frame);
                    if timing.ping_interval != before {
                        next_ping = tokio::time::Instant::now() + timing.ping_interval;
                    }
                }
                Kind::Data => {
                    let whole = match parts.take(&frame, Instant::now()) {
                        Ok(Some(whole)) => whole,
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::warn!("events: {e}; frame left unanswered");
                            continue;
                        }
                    };
                    in_flight.push(answer(handler, frame, whole));
                }
                Kind::Ping | Kind::Other => {}
            }
        }
    }
}

/// How many events one connection handles at once.
const MAX_IN_FLIGHT: usize = 64;

/// One event handled: its ack frame, or none when the handler overran [`HANDLER_DEADLINE`].
async fn answer(handler: &impl Handler, frame: Frame, whole: Vec<u8>) -> Option<Frame> {
    let started = Instant::now();
    match tokio::time::timeout(HANDLER_DEADLINE, handler.handle(whole)).await {
        Ok(Verdict::Done(data)) => Some(frame.ack(200, data.as_deref(), started.elapsed())),
        Ok(Verdict::Failed) => Some(frame.ack(500, None, started.elapsed())),
        Err(_) => {
            tracing::warn!("events: an event took longer than {HANDLER_DEADLINE:?}; left unanswered (Lark pushes an event again; a click's user sees an error)");
            None
        }
    }
}

/// A reqwest error without the URL (one rule for every Lark call's errors).
fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

/// A query parameter of the WebSocket URL.
fn query_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The URL's `service_id`, echoed in every frame (0 if absent).
fn service_id(url: &str) -> i32 {
    query_param(url, "service_id")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The URL's `device_id`: the connection's id in logs.
fn device_id(url: &str) -> String {
    query_param(url, "device_id").unwrap_or("?").to_string()
}

/// A failed dial: terminal for `403` and for `514` with the connection-limit code, else
/// retryable (docs/lark-api.md §9, lark-api-lifecycle's handshake rules).
fn handshake_error(e: tungstenite::Error) -> ConnectError {
    let tungstenite::Error::Http(resp) = &e else {
        return ConnectError::Retryable(format!("dialing the long connection: {e}"));
    };
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let status = header("handshake-status");
    let code = header("handshake-autherrcode");
    let msg = header("handshake-msg");
    let why = format!(
        "handshake refused: HTTP {}, Handshake-Status {status:?}, Handshake-Autherrcode {code:?}, {msg:?}",
        resp.status().as_u16()
    );
    if status == "403" || (status == "514" && code == CONNECTION_LIMIT) {
        ConnectError::Terminal(why)
    } else {
        ConnectError::Retryable(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_names_the_service_and_the_connection() {
        let url = "ws://127.0.0.1:9/ws/v2?fpid=3&device_id=77&service_id=1234&ticket=t";
        assert_eq!(service_id(url), 1234);
        assert_eq!(device_id(url), "77");
        assert_eq!(service_id("ws://h/ws/v2"), 0);
        assert_eq!(service_id("ws://h/ws/v2?service_id=x"), 0);
    }

    #[test]
    fn handshake_refusals_are_terminal_only_for_the_limit_and_forbidden() {
        let refused = |status: &str, code: &str| {
            let resp = tungstenite::http::Response::builder()
                .status(400)
                .header("Handshake-Status", status)
                .header("Handshake-Autherrcode", code)
                .body(None)
                .unwrap();
            handshake_error(tungstenite::Error::Http(Box::new(resp)))
        };
        assert!(matches!(
            refused("514", CONNECTION_LIMIT),
            ConnectError::Terminal(_)
        ));
        assert!(matches!(refused("403", ""), ConnectError::Terminal(_)));
        assert!(matches!(
            refused("514", "1000040351"),
            ConnectError::Retryable(_)
        ));
        assert!(matches!(refused("500", ""), ConnectError::Retryable(_)));
    }
}
