//! HTTP surface: the router and the steps every OpenAPI handler shares.
//!
//! Each handler follows the same pipeline so behaviour is uniform across endpoints:
//! count the request → injected fault (which short-circuits before any state changes, so a
//! faulted request never records a message) → endpoint logic returning `Result<Value,
//! ApiError>` → [`finish`] renders it and counts the error code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, patch, post};
use axum::Router;
use serde_json::{Map, Value};

use crate::errors::{self, ApiError};
use crate::faults::{Fault, FaultTarget};
use crate::ids;
use crate::reply::{self, Dialect};
use crate::state::Shared;

mod contact;
pub(crate) mod control;
mod im_content;
mod lifecycle;
mod message_get;
mod messages;
mod token;
mod urgent;
mod webhook;

pub(crate) type AppState = Arc<Shared>;

/// Bodies up to this size reach the handlers, so oversize content gets Lark's own 230025 /
/// 19036 instead of axum's generic 413.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

pub(crate) fn router(shared: AppState) -> Router {
    Router::new()
        .route(
            "/open-apis/auth/v3/tenant_access_token/internal",
            post(token::issue),
        )
        .route("/open-apis/im/v1/messages", post(messages::create))
        .route(
            "/open-apis/im/v1/messages/{message_id}",
            get(message_get::get)
                .patch(lifecycle::update_card)
                .put(lifecycle::edit)
                .delete(lifecycle::recall),
        )
        .route(
            "/open-apis/im/v1/messages/{message_id}/reply",
            post(messages::reply_to),
        )
        .route(
            "/open-apis/im/v1/messages/{message_id}/urgent_app",
            patch(urgent::app),
        )
        .route(
            "/open-apis/im/v1/messages/{message_id}/urgent_sms",
            patch(urgent::sms),
        )
        .route(
            "/open-apis/im/v1/messages/{message_id}/urgent_phone",
            patch(urgent::phone),
        )
        .route(
            "/open-apis/contact/v3/users/batch_get_id",
            post(contact::batch_get_id),
        )
        .route("/open-apis/bot/v2/hook/{token}", post(webhook::push))
        .route(
            "/callback/ws/endpoint",
            post(crate::events::longconn::endpoint),
        )
        .route("/ws/v2", get(crate::events::longconn::ws))
        .merge(control::routes())
        .merge(crate::events::push::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

/// An unknown path: HTTP 404 with a Lark-shaped JSON body, never plain text, because both
/// official SDKs fail to parse a plain-text answer (issue 14). lark-api.md documents no code for
/// it; the emulator answers `code` 404 (emulator choice) with the usual log id.
async fn not_found() -> Response {
    unrouted(StatusCode::NOT_FOUND, "404 page not found")
}

/// A known path with the wrong method: HTTP 405, shaped like [`not_found`] (code 405).
async fn method_not_allowed() -> Response {
    unrouted(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed")
}

fn unrouted(status: StatusCode, msg: &str) -> Response {
    let code = i64::from(status.as_u16());
    let e = ApiError {
        status: status.as_u16(),
        code,
        msg: msg.to_string(),
        headers: Vec::new(),
        detail: None,
    };
    reply::error(&ids::log_id(), &e, Dialect::OpenApi)
}

/// Count the request and apply the next fault for `target`. `Ok(log_id)` = carry on (possibly
/// after an injected delay); `Err(response)` = the fault already answered.
pub(crate) async fn prologue(
    shared: &Shared,
    target: FaultTarget,
    dialect: Dialect,
) -> Result<String, Response> {
    let log_id = ids::log_id();
    let fault = {
        let mut s = shared.lock();
        s.stats.requests += 1;
        let fault = s.faults.next(target);
        if fault.is_some() {
            s.stats.faults_injected += 1;
        }
        fault
    };
    match fault {
        None => Ok(log_id),
        Some(Fault::Slow { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(log_id)
        }
        Some(Fault::LateAnswer { ms }) if target == FaultTarget::Send => {
            shared.lock().late_answers.insert(log_id.clone(), ms);
            Ok(log_id)
        }
        Some(Fault::LateAnswer { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(log_id)
        }
        Some(f) => {
            tracing::debug!(?target, fault = ?f, "injecting fault");
            let (resp, code) = reply::fault(&log_id, &f, dialect);
            if let Some(code) = code {
                shared.lock().count_error(code);
            }
            Err(resp)
        }
    }
}

/// `response`, held back first if a `late_answer` fault was drawn for request `log_id`.
pub(crate) async fn answer_late(shared: &Shared, log_id: &str, response: Response) -> Response {
    let late = shared.lock().late_answers.remove(log_id);
    if let Some(ms) = late {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    response
}

/// Render a handler's outcome; errors are counted in `errors_by_code`.
pub(crate) fn finish(
    shared: &Shared,
    log_id: &str,
    result: Result<Value, ApiError>,
    dialect: Dialect,
) -> Response {
    match result {
        Ok(body) => reply::ok(log_id, &body),
        Err(e) => {
            tracing::debug!(code = e.code, msg = %e.msg, "request refused");
            shared.lock().count_error(e.code);
            reply::error(log_id, &e, dialect)
        }
    }
}

/// Resolve `Authorization: Bearer t-…` to the app id (§1.5). Refusals are counted in
/// `token_rejections`.
pub(crate) fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<String, ApiError> {
    let result = check_token(shared, headers);
    if result.is_err() {
        shared.lock().stats.token_rejections += 1;
    }
    result
}

fn check_token(shared: &Shared, headers: &HeaderMap) -> Result<String, ApiError> {
    let raw = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("?"))
        .unwrap_or("")
        .trim();
    if raw.is_empty() {
        return Err(errors::NEED_TOKEN.into());
    }
    // The scheme must be `Bearer` (case-insensitive, as HTTP schemes are). A bare token or
    // another scheme is a malformed credential: 99991671, our choice (undocumented).
    let token = match raw.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => return Err(errors::BAD_TOKEN_FORMAT.into()),
    };
    if token.is_empty() {
        return Err(errors::NEED_TOKEN.into());
    }
    if token.starts_with("u-") {
        // User tokens are well-formed but the emulator never issues any, and urgent / contact
        // lookups are tenant-token-only anyway (§5, §6): "invalid" rather than "malformed".
        return Err(errors::INVALID_TOKEN.into());
    }
    if !token.starts_with("t-") {
        return Err(errors::BAD_TOKEN_FORMAT.into());
    }
    shared
        .lock()
        .tokens
        .app_for(token, Instant::now())
        .map(str::to_string)
        .ok_or_else(|| errors::INVALID_TOKEN.into())
}

/// The gateway's scope check (§3: 99991672), right after authentication: the request never
/// reaches the API, so nothing else about it is looked at.
pub(crate) fn require_scope(
    shared: &Shared,
    app_id: &str,
    any_of: &[&str],
) -> Result<(), ApiError> {
    match shared.dir.app(app_id) {
        Some(app) if !app.has_any_scope(any_of) => Err(ApiError::missing_scope(any_of)),
        _ => Ok(()),
    }
}

/// Parse a JSON object body; anything else is a 99992402 field-validation error.
pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::field(
            "body",
            "request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::field("body", &format!("invalid JSON: {e}"))),
    }
}
