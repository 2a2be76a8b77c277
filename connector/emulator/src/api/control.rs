//! `/_emulator/*`: control endpoints for `lark-sink emulator` users and out-of-process tests.
//!
//! They mirror [`crate::EmulatorHandle`] one to one (JSON shapes are documented in the crate
//! docs) and are deliberately outside `/open-apis/`, so they never count as requests, never
//! get faults and never need a token.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::faults::{Fault, FaultConfig, FaultTarget};
use crate::limits::Limits;

/// A control request that could not be understood.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    #[error("invalid JSON body: {0}")]
    BadBody(#[from] serde_json::Error),
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "ok": false, "error": self.to_string() })),
        )
            .into_response()
    }
}

/// `POST /_emulator/faults` with a scripted fault:
/// `{"target":"send","fault":{"kind":"status","status":503},"times":2}` (`times` default 1).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptedFault {
    target: FaultTarget,
    fault: Fault,
    #[serde(default = "one")]
    times: u32,
}

/// `POST /_emulator/faults` with random rates:
/// `{"config":{"error_5xx_rate":0.1,"slow_rate":0,"slow_ms":1000,"throttle_rate":0}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RandomFaults {
    config: FaultConfig,
}

fn one() -> u32 {
    1
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/_emulator/health",
            get(|| async { Json(json!({ "ok": true })) }),
        )
        .route("/_emulator/messages", get(messages))
        .route("/_emulator/urgents", get(urgents))
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/lookups", get(lookups))
        .route("/_emulator/directory", get(directory))
        .route("/_emulator/faults", post(faults))
        .route("/_emulator/limits", get(get_limits).post(set_limits))
        .route("/_emulator/revoke-tokens", post(revoke_tokens))
        .route("/_emulator/recall", post(recall))
        .route("/_emulator/messages/{message_id}", get(message_view))
        .route("/_emulator/delete", post(mark_deleted))
        .route("/_emulator/edit-count", post(set_edit_count))
        .route("/_emulator/clock", get(get_clock).post(advance_clock))
        .route("/_emulator/reset", post(reset))
}

fn ok() -> Json<serde_json::Value> {
    Json(json!({ "ok": true }))
}

async fn messages(State(s): State<AppState>) -> Response {
    let list: Vec<_> = s.lock().messages.iter().map(|m| m.public.clone()).collect();
    Json(list).into_response()
}

async fn urgents(State(s): State<AppState>) -> Response {
    Json(s.lock().urgents.clone()).into_response()
}

async fn stats(State(s): State<AppState>) -> Response {
    Json(s.lock().stats.clone()).into_response()
}

async fn lookups(State(s): State<AppState>) -> Response {
    Json(s.lock().lookups.clone()).into_response()
}

async fn directory(State(s): State<AppState>) -> Response {
    Json(&s.dir.directory).into_response()
}

async fn faults(State(s): State<AppState>, body: Bytes) -> Result<Response, ControlError> {
    // Dispatch on the `config` key rather than an untagged enum, so a typo in a fault gets
    // serde's precise message instead of "did not match any variant".
    let value: serde_json::Value = serde_json::from_slice(&body)?;
    if value.get("config").is_some() {
        let RandomFaults { config } = serde_json::from_value(value)?;
        s.lock().faults.config = config;
    } else {
        let req: ScriptedFault = serde_json::from_value(value)?;
        let mut st = s.lock();
        for _ in 0..req.times {
            st.faults.push(req.target, req.fault.clone());
        }
    }
    Ok(ok().into_response())
}

async fn get_limits(State(s): State<AppState>) -> Response {
    Json(s.lock().limits.clone()).into_response()
}

async fn set_limits(State(s): State<AppState>, body: Bytes) -> Result<Response, ControlError> {
    let limits: Limits = serde_json::from_slice(&body)?;
    s.lock().limits = limits;
    Ok(ok().into_response())
}

/// `POST /_emulator/recall` `{"message_id":"om_…"}`: mark a message recalled, so replies to it
/// get 230011 (§2.5). Unknown ids → 404 `{"ok":false,…}`.
async fn recall(State(s): State<AppState>, body: Bytes) -> Result<Response, ControlError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Recall {
        message_id: String,
    }
    let req: Recall = serde_json::from_slice(&body)?;
    if s.lock().recall(&req.message_id) {
        Ok(ok().into_response())
    } else {
        Ok((
            StatusCode::NOT_FOUND,
            Json(json!({ "ok": false, "error": "no such message" })),
        )
            .into_response())
    }
}

/// 404 `{"ok":false,"error":"no such message"}`.
fn no_such_message() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "ok": false, "error": "no such message" })),
    )
        .into_response()
}

/// `GET /_emulator/messages/{message_id}`: the message's current state and history
/// ([`crate::MessageView`]); 404 for an unknown id.
async fn message_view(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    match s.lock().view(&id) {
        Some(view) => Json(view).into_response(),
        None => no_such_message(),
    }
}

/// `{"message_id":"om_…"}`, the body of `/_emulator/delete`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageRef {
    message_id: String,
}

/// `POST /_emulator/delete` `{"message_id":"om_…"}`: mark a message deleted, so PATCH / PUT /
/// DELETE of it get 230110. Unknown ids → 404.
async fn mark_deleted(State(s): State<AppState>, body: Bytes) -> Result<Response, ControlError> {
    let req: MessageRef = serde_json::from_slice(&body)?;
    Ok(match s.lock().mark_deleted(&req.message_id) {
        true => ok().into_response(),
        false => no_such_message(),
    })
}

/// `POST /_emulator/edit-count` `{"message_id":"om_…","edit_count":20}`: set how many edits a
/// message has used (at 20, PUT gets 230072). Unknown ids → 404.
async fn set_edit_count(State(s): State<AppState>, body: Bytes) -> Result<Response, ControlError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct EditCount {
        message_id: String,
        edit_count: u32,
    }
    let req: EditCount = serde_json::from_slice(&body)?;
    Ok(
        match s.lock().set_edit_count(&req.message_id, req.edit_count) {
            true => ok().into_response(),
            false => no_such_message(),
        },
    )
}

/// `GET /_emulator/clock` → `{"offset_ms":N,"now_ms":M}`: the message clock's offset and time.
async fn get_clock(State(s): State<AppState>) -> Response {
    let st = s.lock();
    Json(json!({ "offset_ms": st.clock_offset_ms, "now_ms": st.now_ms() })).into_response()
}

/// `POST /_emulator/clock` `{"advance_ms":N}` → `{"ok":true,"offset_ms":…}`: move the message
/// clock forward (ages of messages; see [`crate::EmulatorHandle::advance_clock`]).
async fn advance_clock(State(s): State<AppState>, body: Bytes) -> Result<Response, ControlError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Advance {
        advance_ms: u64,
    }
    let req: Advance = serde_json::from_slice(&body)?;
    let mut st = s.lock();
    st.clock_offset_ms = st.clock_offset_ms.saturating_add(req.advance_ms);
    Ok(Json(json!({ "ok": true, "offset_ms": st.clock_offset_ms })).into_response())
}

async fn revoke_tokens(State(s): State<AppState>) -> Response {
    s.lock().tokens.revoke_all();
    ok().into_response()
}

async fn reset(State(s): State<AppState>) -> Response {
    s.reset();
    ok().into_response()
}
