//! `POST /callback/ws/endpoint` (lifecycle §4.1) and the WebSocket at `GET /ws/v2` (§4.2–§4.6).
//!
//! Why here and not in `api/`: the endpoint is Lark's, but what it hands out (tickets, the
//! `ClientConfig`) only makes sense together with the socket it opens, and both live on the
//! event hub's state.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::frame::{Frame, METHOD_CONTROL, METHOD_DATA};
use super::hub::{Ack, ConnGuard, Outgoing, Refusal};
use crate::api::{prologue, AppState};
use crate::errors::{self, ApiError};
use crate::faults::FaultTarget;
use crate::reply::{self, Dialect};

/// The endpoint's body (GO `ws/model.go` `BootstrapRequest`; other fields are ignored).
#[derive(Debug, Deserialize)]
struct EndpointRequest {
    #[serde(rename = "AppID", default)]
    app_id: String,
    #[serde(rename = "AppSecret", default)]
    app_secret: String,
}

/// `POST /callback/ws/endpoint`: check the app's credentials and hand out a one-use URL plus the
/// `ClientConfig`. Wrong or missing credentials → HTTP 200 with code 1000040344 (terminal;
/// lifecycle §7 item 10 leaves the real code open). The URL's host is the request's `Host`.
pub(crate) async fn endpoint(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let log_id = match prologue(&s, FaultTarget::WsEndpoint, Dialect::OpenApi).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let req: Option<EndpointRequest> = serde_json::from_slice(&body).ok();
    let app = req.as_ref().and_then(|r| {
        s.dir
            .app(&r.app_id)
            .filter(|a| !r.app_secret.is_empty() && a.app_secret == r.app_secret)
    });
    let Some(app) = app else {
        let e = ApiError::new(errors::WS_BAD_CREDENTIALS);
        s.lock().count_error(e.code);
        tracing::debug!("long connection endpoint: bad credentials");
        return reply::ok(&log_id, &json!({ "code": e.code, "msg": e.msg }));
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| s.addr.to_string());
    let scheme = if s.scheme == "https" { "wss" } else { "ws" };
    let (ticket, t) = s.events.issue_ticket(&app.app_id);
    // `fpid` first: Node's SDK swallows the first query parameter's key (lifecycle §4.2).
    let url = format!(
        "{scheme}://{host}/ws/v2?fpid={}&device_id={}&service_id={}&ticket={ticket}",
        t.device_id % 1000 + 1,
        t.device_id,
        t.service_id,
    );
    let body = json!({
        "code": 0,
        "msg": "ok",
        "data": { "URL": url, "ClientConfig": s.events.config().client_config() },
    });
    reply::ok(&log_id, &body)
}

/// A refused upgrade: a non-101 status plus `Handshake-Status`, `Handshake-Msg`,
/// `Handshake-Autherrcode` (lifecycle §4.2). Both refusals are 514: with 1000040350 for the
/// connection limit (terminal), with 1000040345 for a bad ticket (emulator's choice: any other
/// code is retryable, so the client asks the endpoint for a new URL).
fn handshake_failure(refusal: &Refusal) -> Response {
    let (auth_code, msg) = match refusal {
        Refusal::TooMany(_) => ("1000040350", "connection limit exceeded"),
        Refusal::BadTicket => ("1000040345", "invalid ticket"),
    };
    let mut resp = (
        StatusCode::from_u16(514).unwrap_or(StatusCode::FORBIDDEN),
        msg,
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(
        HeaderName::from_static("handshake-status"),
        HeaderValue::from_static("514"),
    );
    h.insert(
        HeaderName::from_static("handshake-msg"),
        HeaderValue::from_static(msg),
    );
    h.insert(
        HeaderName::from_static("handshake-autherrcode"),
        HeaderValue::from_static(auth_code),
    );
    resp
}

/// `GET /ws/v2?fpid=…&device_id=…&service_id=…&ticket=…`: redeem the ticket and serve the
/// connection.
pub(crate) async fn ws(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let ticket = q.get("ticket").map(String::as_str).unwrap_or("");
    let device_id = q.get("device_id").and_then(|d| d.parse().ok());
    match s.events.connect(ticket, device_id) {
        Ok((guard, rx)) => {
            let hub = s.events.clone();
            let config = hub.config().client_config().to_string().into_bytes();
            upgrade.on_upgrade(move |socket| serve(socket, guard, rx, hub, config))
        }
        Err(refusal) => {
            tracing::debug!(%refusal, "long connection refused");
            handshake_failure(&refusal)
        }
    }
}

/// One connection: frames from the hub out, pings and acks in, until either side closes.
async fn serve(
    mut socket: WebSocket,
    guard: ConnGuard,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    hub: super::hub::Hub,
    client_config: Vec<u8>,
) {
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Binary(bytes))) => {
                    if let Some(reply) = on_frame(&bytes, &guard, &hub, &client_config) {
                        if socket.send(Message::Binary(reply.into())).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                // Text messages are not frames (the SDKs ignore them too); WebSocket pings are
                // answered by the library.
                Some(Ok(_)) => {}
            },
            out = rx.recv() => match out {
                Some(Outgoing::Frame(bytes)) => {
                    if socket.send(Message::Binary(bytes.into())).await.is_err() {
                        break;
                    }
                }
                Some(Outgoing::Close) | None => {
                    let close = CloseFrame { code: 1000, reason: "closed by the emulator".into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    break;
                }
            },
        }
    }
    drop(guard);
}

/// Handle one binary message from the client; the reply frame to send, if any.
fn on_frame(
    bytes: &[u8],
    guard: &ConnGuard,
    hub: &super::hub::Hub,
    config: &[u8],
) -> Option<Vec<u8>> {
    let frame = match Frame::decode_bytes(bytes) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(device_id = guard.id, error = %e, "undecodable frame ignored");
            return None;
        }
    };
    match (frame.method, frame.kind()) {
        (METHOD_CONTROL, Some("ping")) => {
            // The pong carries the ClientConfig, all four fields (lifecycle §4.6).
            let pong = Frame::control(guard.service_id, "pong", Some(config.to_vec()));
            Some(pong.to_bytes())
        }
        (METHOD_DATA, _) => {
            match frame.header("message_id") {
                Some(id) => hub.ack(id, decode_ack(frame.payload.as_deref())),
                None => tracing::warn!(device_id = guard.id, "ack without message_id ignored"),
            }
            None
        }
        _ => None,
    }
}

/// The ack's payload (`{"code":200}`, `{"code":200,"data":"<base64 JSON>"}`, GO's
/// `"data":null`); anything unreadable counts as code 0, i.e. a failure.
fn decode_ack(payload: Option<&[u8]>) -> Ack {
    let v: Value = payload
        .and_then(|p| serde_json::from_slice(p).ok())
        .unwrap_or(Value::Null);
    let code = v.get("code").and_then(Value::as_i64).unwrap_or(0);
    let data = v.get("data").and_then(Value::as_str).map(|b64| {
        match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(raw) => serde_json::from_slice(&raw)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned())),
            Err(_) => Value::String(b64.to_string()),
        }
    });
    Ack { code, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_decode() {
        let a = decode_ack(Some(br#"{"code":200}"#));
        assert_eq!((a.code, a.data), (200, None));
        let a = decode_ack(Some(br#"{"code":200,"headers":null,"data":null}"#));
        assert_eq!((a.code, a.data), (200, None));
        let a = decode_ack(Some(br#"{"code":200,"data":"eyJ0b2FzdCI6MX0="}"#));
        assert_eq!(a.data, Some(json!({"toast":1})));
        let a = decode_ack(Some(b"not json"));
        assert_eq!(a.code, 0);
        assert_eq!(decode_ack(None).code, 0);
    }
}
