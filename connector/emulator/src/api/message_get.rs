//! `GET /open-apis/im/v1/messages/{message_id}`: message get, which the official SDKs offer
//! (`im.v1.message.get`) and users try against the emulator (issue 14).
//!
//! lark-api.md does not document this endpoint; the answer follows the public API reference:
//! `{"code":0,"msg":"success","data":{"items":[message]}}` with the §2.3 message fields. Only
//! messages this emulator accepted through `im/v1` can be read, by an app that can see them.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use super::messages::visible_to;
use super::{authenticate, finish, AppState};
use crate::errors::{self, ApiError};
use crate::ids;
use crate::reply::{self, Dialect};
use crate::state::Shared;

pub(crate) async fn get(
    State(shared): State<AppState>,
    Path(message_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    // Counted like every OpenAPI request; there is no fault target for reads, so a scripted
    // send fault is never spent on one.
    let log_id = ids::log_id();
    shared.lock().stats.requests += 1;
    let result = read(&shared, &message_id, &headers).map(reply::success);
    finish(&shared, &log_id, result, Dialect::OpenApi)
}

fn read(shared: &Shared, message_id: &str, headers: &HeaderMap) -> Result<Value, ApiError> {
    let app_id = authenticate(shared, headers)?;
    let s = shared.lock();
    // Unknown id: the same choice as reply and urgent (230001 naming the parameter;
    // lark-api.md has no "no such message" code).
    let msg = s
        .message(message_id)
        .ok_or_else(|| ApiError::ext(errors::INVALID_PARAM, "invalid message_id"))?;
    if !visible_to(shared, msg, &app_id) {
        return Err(errors::MESSAGE_INVISIBLE.into());
    }
    // The current version (after PATCH / PUT), `deleted: true` once recalled or deleted.
    Ok(json!({ "items": [msg.current_data()] }))
}
