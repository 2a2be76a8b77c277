//! `lark.events.mode=http`: Lark POSTs each event and card callback to the app's request URL,
//! which reaches this listener (`lark.events.listener`, `lark.events.path`). Each request is
//! verified and opened first (`lark::events::callback`: Encrypt Key, signature, Verification
//! Token, timestamp age; the `url_verification` challenge is answered), then handled like an
//! event of the long connection: written to the topic, acknowledged by the broker, and only then
//! answered 200 (a callback with its toast). A refused request is answered 401 (400 when it is
//! not even an event) and counted (`lark_sink_events_rejected_total{reason}`); a write that
//! fails is answered 500, so Lark sends the event again (a click it does not: its user sees an
//! error). `lark-sink check`'s signed self-test
//! ([`crate::lark::events::callback::SelfTest`]) is verified the same way and answered with its
//! nonce, never written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{InboundError, ToKafka};
use crate::config::HttpEvents;
use crate::lark::events::callback::{Opened, Rejected, Signed, Verifier};
use crate::lark::events::client::{Handler, Verdict, HANDLER_DEADLINE};
use crate::telemetry;

/// What every request reaches.
struct Listener {
    verifier: Verifier,
    /// `None` for `lark-sink check`'s stand-in listener, which answers the challenge and the
    /// self-test and refuses events (503): it has nowhere to write them.
    handler: Option<ToKafka>,
}

/// Listens until `stop` is cancelled. Binding fails start-up (the address is the operator's).
pub(super) async fn serve(
    cfg: &HttpEvents,
    handler: ToKafka,
    stop: CancellationToken,
) -> Result<(), InboundError> {
    let listener = tokio::net::TcpListener::bind(cfg.listener)
        .await
        .map_err(|source| InboundError::Listen {
            addr: cfg.listener,
            source,
        })?;
    serve_on(listener, cfg, Some(handler), stop).await
}

/// `lark-sink check`'s stand-in when no connector listens at `lark.events.listener`: the same
/// verification and answers on `listener`, without a Kafka side, until `stop` is cancelled.
pub async fn serve_self_test(
    listener: tokio::net::TcpListener,
    cfg: &HttpEvents,
    stop: CancellationToken,
) -> Result<(), InboundError> {
    serve_on(listener, cfg, None, stop).await
}

async fn serve_on(
    listener: tokio::net::TcpListener,
    cfg: &HttpEvents,
    handler: Option<ToKafka>,
    stop: CancellationToken,
) -> Result<(), InboundError> {
    let listen_error =
        |addr: SocketAddr, source: std::io::Error| InboundError::Listen { addr, source };
    let local = listener
        .local_addr()
        .map_err(|e| listen_error(cfg.listener, e))?;
    if handler.is_some() {
        tracing::info!(path = %cfg.path, "events: listening for Lark's callbacks on {local}");
    }
    let state = Arc::new(Listener {
        verifier: Verifier {
            encrypt_key: cfg.encrypt_key.clone(),
            verification_token: cfg.verification_token.clone(),
            max_age: cfg.max_age,
        },
        handler,
    });
    let app = Router::new()
        .route(&cfg.path, post(receive))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .map_err(|e| listen_error(local, e))
}

/// Seconds since the Unix epoch (the unit of `X-Lark-Request-Timestamp`).
pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One request from Lark.
async fn receive(State(l): State<Arc<Listener>>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = Signed {
        timestamp: h("x-lark-request-timestamp"),
        nonce: h("x-lark-request-nonce"),
        signature: h("x-lark-signature"),
    };
    let plaintext = match l.verifier.open(signed, &body, now_s()) {
        Ok(Opened::Challenge(challenge)) => {
            tracing::info!("events: url_verification answered");
            return Json(json!({ "challenge": challenge })).into_response();
        }
        Ok(Opened::SelfTest(nonce)) => {
            tracing::info!("events: a self-test (lark-sink check) passed verification");
            return Json(json!({ "self_test": nonce })).into_response();
        }
        Ok(Opened::Event(plaintext)) => plaintext,
        Err(refused) => return rejected(&refused),
    };
    let Some(handler) = &l.handler else {
        let why = "lark-sink check's stand-in listener: start the connector to receive events";
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "msg": why }))).into_response();
    };
    match tokio::time::timeout(HANDLER_DEADLINE, handler.handle(plaintext)).await {
        Ok(Verdict::Done(Some(answer))) => {
            ([(header::CONTENT_TYPE, "application/json")], answer).into_response()
        }
        Ok(Verdict::Done(None)) => Json(json!({"msg": "success"})).into_response(),
        Ok(Verdict::Failed) | Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"msg": "not written to Kafka; send it again"})),
        )
            .into_response(),
    }
}

/// A refused request: counted, logged (without its body), answered 401 (400 if not an event).
fn rejected(why: &Rejected) -> Response {
    telemetry::event_rejected(why.label());
    tracing::warn!(reason = %why, "events: a callback request was refused");
    let status = match why {
        Rejected::Malformed(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::UNAUTHORIZED,
    };
    (status, Json(json!({"msg": why.to_string()}))).into_response()
}
