//! `POST /open-apis/contact/v3/users/batch_get_id?user_id_type=…` (lark-api.md §5).
//!
//! Every requested email / mobile gets an entry in `user_list`, in request order (emails
//! first); unknown, unavailable or (without `include_resigned`) resigned users get an entry
//! *without* `user_id`, as observed in the wild. The request's spelling of the email is echoed
//! back, so clients matching case-insensitively are exercised. Every call and every email /
//! mobile asked is counted in [`crate::LookupStats`], so tests can check a client's cache.

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{authenticate, finish, json_object, prologue, require_scope, AppState};
use crate::directory::{normalize_mobile, User, UserIdType};
use crate::errors::ApiError;
use crate::faults::FaultTarget;
use crate::reply::{self, Dialect};
use crate::state::Shared;

/// §5: at most 50 emails and 50 mobiles per call.
const MAX_PER_LIST: usize = 50;

pub(crate) async fn batch_get_id(
    State(shared): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Response {
    shared.lock().lookups.calls += 1;
    let log_id = match prologue(&shared, FaultTarget::BatchGetId, Dialect::OpenApi).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let query = query.map(|q| q.0).unwrap_or_default();
    let result = lookup(&shared, &headers, &query, &body).map(reply::success);
    finish(&shared, &log_id, result, Dialect::OpenApi)
}

/// `user_id_type` query parameter; default `open_id` (§5, §6).
pub(crate) fn user_id_type(query: &HashMap<String, String>) -> Result<UserIdType, ApiError> {
    match query.get("user_id_type") {
        None => Ok(UserIdType::OpenId),
        Some(t) => UserIdType::parse(t).ok_or_else(|| {
            ApiError::field("user_id_type", "must be one of open_id, union_id, user_id")
        }),
    }
}

/// A list of strings from the body; `Ok(empty)` when absent. Size errors use the generic
/// 99992402 field-validation code (no contact-specific code is documented).
fn string_list(body: &Map<String, Value>, key: &str) -> Result<Vec<String>, ApiError> {
    let list = match body.get(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ApiError::field(key, "must be an array of strings")),
    };
    if list.len() > MAX_PER_LIST {
        return Err(ApiError::field(key, "the list size must be at most 50"));
    }
    list.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| ApiError::field(key, "must be an array of strings"))
        })
        .collect()
}

fn lookup(
    shared: &Shared,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Value, ApiError> {
    let app_id = authenticate(shared, headers)?;
    // §5: the scope of this API.
    require_scope(shared, &app_id, &["contact:user.id:readonly"])?;
    shared
        .lock()
        .app_limit(&app_id, "batch_get_id", Instant::now())?;
    let id_type = user_id_type(query)?;
    let body = json_object(body)?;
    let emails = string_list(&body, "emails")?;
    let mobiles = string_list(&body, "mobiles")?;
    let include_resigned = body
        .get("include_resigned")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    {
        let mut s = shared.lock();
        for e in &emails {
            *s.lookups.emails.entry(e.to_lowercase()).or_default() += 1;
        }
        for m in &mobiles {
            *s.lookups.mobiles.entry(normalize_mobile(m)).or_default() += 1;
        }
    }

    // Visible = inside the availability range and (not resigned, or resigned users requested).
    let id_of = |user: Option<&User>| {
        user.filter(|u| u.available && (include_resigned || !u.resigned))
            .map(|u| id_type.id_of(u).to_string())
            .filter(|id| !id.is_empty())
    };
    let entry = |key: &str, value: &str, id: Option<String>| {
        let mut e = Map::new();
        if let Some(id) = id {
            e.insert("user_id".into(), json!(id));
        }
        e.insert(key.into(), json!(value));
        Value::Object(e)
    };
    let mut list: Vec<Value> = emails
        .iter()
        .map(|e| entry("email", e, id_of(shared.dir.user_by_email(e))))
        .collect();
    list.extend(
        mobiles
            .iter()
            .map(|m| entry("mobile", m, id_of(shared.dir.user_by_mobile(m)))),
    );
    Ok(json!({ "user_list": list }))
}
