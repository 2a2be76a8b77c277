//! `PATCH /open-apis/im/v1/messages/{message_id}/urgent_app|urgent_sms|urgent_phone`
//! (lark-api.md §6).
//!
//! Only messages this emulator accepted through the API can be buzzed. An id is valid when it
//! names a known, available, non-resigned user who is in the message's conversation: for p2p
//! messages that is the receiver only; for group chats the directory has no member lists, so
//! every such user counts as a member (documented simplification).

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use super::contact::user_id_type;
use super::{authenticate, finish, json_object, prologue, AppState};
use crate::errors::{self, ApiError};
use crate::faults::FaultTarget;
use crate::reply::{self, Dialect};
use crate::state::{AcceptedUrgent, Shared};

/// §6: `user_id_list` holds 1..=200 ids.
const MAX_IDS: usize = 200;

type UrgentQuery = Result<Query<HashMap<String, String>>, QueryRejection>;

pub(crate) async fn app(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
    q: UrgentQuery,
    b: Bytes,
) -> Response {
    handle(s, "app", id, h, q, b).await
}

pub(crate) async fn sms(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
    q: UrgentQuery,
    b: Bytes,
) -> Response {
    handle(s, "sms", id, h, q, b).await
}

pub(crate) async fn phone(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
    q: UrgentQuery,
    b: Bytes,
) -> Response {
    handle(s, "phone", id, h, q, b).await
}

async fn handle(
    shared: AppState,
    kind: &str,
    message_id: String,
    headers: HeaderMap,
    query: UrgentQuery,
    body: Bytes,
) -> Response {
    let log_id = match prologue(&shared, FaultTarget::Urgent, Dialect::OpenApi).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let query = query.map(|q| q.0).unwrap_or_default();
    let result = buzz(&shared, kind, &message_id, &headers, &query, &body).map(reply::success);
    finish(&shared, &log_id, result, Dialect::OpenApi)
}

fn buzz(
    shared: &Shared,
    kind: &str,
    message_id: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Value, ApiError> {
    let app_id = authenticate(shared, headers)?;
    // §4: each urgent API has its own 50/s + 1000/min budget.
    shared
        .lock()
        .app_limit(&app_id, &format!("urgent_{kind}"), Instant::now())?;
    let id_type = user_id_type(query)?;
    let ids: Vec<String> = match json_object(body)?.get("user_id_list") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::field("user_id_list", "must be an array of strings"))?,
        _ => return Err(ApiError::field("user_id_list", "user_id_list is required")),
    };
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(ApiError::field(
            "user_id_list",
            "user_id_list must hold 1 to 200 ids",
        ));
    }

    let mut s = shared.lock();
    let msg = s.message(message_id).ok_or_else(|| {
        // §6 lists no "unknown message" code; 230001 (invalid parameter) names the field.
        ApiError::ext(errors::INVALID_PARAM, "invalid message_id")
    })?;
    // Webhook messages and other apps' messages were not sent by this bot (230012).
    if msg.app_id.as_deref() != Some(app_id.as_str()) {
        return Err(errors::NOT_MESSAGE_SENDER.into());
    }
    let p2p = msg.p2p_open_id.clone();
    let (valid, invalid): (Vec<String>, Vec<String>) = ids.into_iter().partition(|id| {
        shared.dir.user(id_type, id).is_some_and(|u| {
            u.available && !u.resigned && p2p.as_ref().is_none_or(|o| *o == u.open_id)
        })
    });
    if valid.is_empty() {
        // §6: all ids invalid → 230001.
        return Err(ApiError::ext(errors::INVALID_PARAM, "invalid user_id_list"));
    }
    s.urgents.push(AcceptedUrgent {
        message_id: message_id.to_string(),
        kind: kind.to_string(),
        user_ids: valid,
    });
    Ok(json!({ "invalid_user_id_list": invalid }))
}
