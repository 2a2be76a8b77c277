//! `PATCH`, `PUT` and `DELETE /open-apis/im/v1/messages/{message_id}`: update a sent card, edit
//! a sent text or post, recall a message (`/work/shared/lark-api-lifecycle.md` §1.1-1.3, limits
//! §5, emulator model §6 items 1-3, 5, 6).
//!
//! Check order (lifecycle §6 suggests it; the platform documents none), after the injected fault
//! and the token and scope (as for a send):
//! - PATCH: message exists (230001 `ext=invalid message_id`), is a card (230001
//!   `ext=This message is NOT a card`), was sent by this app (230001 naming the sender), not
//!   recalled (230011), not deleted (230110), at most 14 days old (230031), the message's 5/s
//!   (230020), the app's 50/s + 1000/min for this API (99991400, HTTP 429), content is JSON
//!   (230099 `ErrCode: 200621`), ≤ 30 KB (230025), a 2.0 card has ≤ 200 elements (230099
//!   `ErrCode: 11310`), is a card (230001 `ext=invalid message content…`), old and new card
//!   both shared ([`crate::UnsharedCardUpdate`]); then the content is stored.
//! - PUT: message exists, `msg_type` is text or post and the stored type (230001
//!   `ext=invalid msg_type`), this app sent it (230071), fewer than 20 edits (230072), inside
//!   the admin edit window (230075, [`crate::EmulatorConfig::edit_window`]), not recalled
//!   (230011) or deleted (230110), content valid and ≤ 150 KB text / 30 KB post (230001,
//!   230025), then the limits as PATCH; the answer is the message object with `updated: true`.
//! - DELETE: message exists, this app sent it (230026), inside the admin recall window (230009,
//!   [`crate::EmulatorConfig::recall_window`]), not already recalled (230011, the lifecycle §1.3
//!   recommendation) or deleted (230110), not a system message (230054), the app limit; then the
//!   message is marked recalled.
//!
//! Chat dissolution (232009), bot ability (230006) and the other chat-side codes of the tables
//! are not modelled: script them as `code` faults on the `update_card`, `edit` and `recall`
//! targets.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{authenticate, finish, json_object, prologue, require_scope, AppState};
use crate::content::{self, ContentError, POST_CARD_LIMIT};
use crate::errors::{self, ApiError};
use crate::faults::FaultTarget;
use crate::lifecycle::{self, UnsharedCardUpdate, VersionOp, UPDATE_WINDOW_MS};
use crate::reply::{self, Dialect};
use crate::state::{Inner, Shared, StoredMessage};

/// Lifecycle §1.1-1.2: PATCH and PUT want any one of these scopes.
const UPDATE_SCOPES: &[&str] = &["im:message", "im:message:send_as_bot", "im:message:update"];

/// Lifecycle §1.3: DELETE wants any one of these scopes.
const RECALL_SCOPES: &[&str] = &["im:message", "im:message:recall", "im:message:send_as_bot"];

/// Lifecycle §1.2: at most 20 edits per message (230072).
pub const MAX_EDITS: u32 = 20;

/// D-230001's `ext=` for a caller that is not the sender (lifecycle §6 item 1), verbatim,
/// backtick included.
pub const NOT_SENDER_EXT: &str = "bot or user is not the message`s sender";

/// The `ext=` of a PATCH refused because a card is not shared (emulator choice; lifecycle §7
/// item 1: the real answer is undocumented).
pub const NOT_SHARED_EXT: &str =
    "the card is not shared: update_multi must be true in the config of the card as sent and of the new card";

fn invalid(ext: &str) -> ApiError {
    ApiError::ext(errors::INVALID_PARAM, ext)
}

/// `PATCH /open-apis/im/v1/messages/{message_id}` → `{"code":0,"data":{},"msg":"ok"}`.
pub(crate) async fn update_card(
    State(shared): State<AppState>,
    Path(message_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let log_id = match prologue(&shared, FaultTarget::UpdateCard, Dialect::OpenApi).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    // D-PATCH's success body: `msg` "ok", an empty `data`.
    let result = patch(&shared, &message_id, &headers, &body)
        .map(|()| json!({ "code": 0, "data": {}, "msg": "ok" }));
    finish(&shared, &log_id, result, Dialect::OpenApi)
}

/// `PUT /open-apis/im/v1/messages/{message_id}` → `{"code":0,"msg":"success","data":{message}}`.
pub(crate) async fn edit(
    State(shared): State<AppState>,
    Path(message_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let log_id = match prologue(&shared, FaultTarget::Edit, Dialect::OpenApi).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let result = put(&shared, &message_id, &headers, &body).map(reply::success);
    finish(&shared, &log_id, result, Dialect::OpenApi)
}

/// `DELETE /open-apis/im/v1/messages/{message_id}` → `{"code":0,"msg":"success","data":{}}`.
pub(crate) async fn recall(
    State(shared): State<AppState>,
    Path(message_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let log_id = match prologue(&shared, FaultTarget::Recall, Dialect::OpenApi).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let result = delete(&shared, &message_id, &headers).map(|()| reply::success(json!({})));
    finish(&shared, &log_id, result, Dialect::OpenApi)
}

/// The `content` string of a body; missing or `null` is empty (and fails the content checks).
fn content_field(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("content") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        // Content sent as an object instead of a string: the usual client bug (§2.4).
        Some(_) => Err(invalid("invalid message content. validate content fail")),
    }
}

fn patch(shared: &Shared, id: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let app_id = authenticate(shared, headers)?;
    require_scope(shared, &app_id, UPDATE_SCOPES)?;
    let raw = content_field(&json_object(body)?)?;
    // Parsed before taking the lock; its verdict is reported at its place in the order.
    let parsed = card_content(&raw);
    let mut s = shared.lock();
    let now_ms = s.now_ms();
    let m = s.message(id).ok_or_else(|| invalid("invalid message_id"))?;
    if m.lifecycle.msg_type != "interactive" {
        return Err(invalid("This message is NOT a card"));
    }
    if !sent_by(m, &app_id) {
        return Err(invalid(NOT_SENDER_EXT));
    }
    check_gone(m)?;
    if age_ms(m, now_ms) > UPDATE_WINDOW_MS {
        return Err(errors::UPDATE_TOO_OLD.into());
    }
    let was_shared = lifecycle::is_shared_card(&m.lifecycle.content());
    limits(&mut s, id, &app_id, "update_card")?;
    let card = parsed?;
    if !(was_shared && lifecycle::is_shared_card(&card)) {
        match shared.unshared_card_update {
            UnsharedCardUpdate::Reject => return Err(invalid(NOT_SHARED_EXT)),
            UnsharedCardUpdate::Ignore => {
                s.stats.updates_accepted += 1;
                s.stats.patches_not_applied += 1;
                return Ok(());
            }
        }
    }
    if let Some(m) = s.message_mut(id) {
        m.lifecycle.apply(VersionOp::Patch, raw, card, now_ms);
    }
    s.stats.updates_accepted += 1;
    Ok(())
}

/// A PATCH body's card: JSON (230099 200621), ≤ 30 KB (230025), a 2.0 card with ≤ 200 elements
/// (230099 11310), shaped like a card (230001), in that order.
fn card_content(raw: &str) -> Result<Value, ApiError> {
    let card = serde_json::from_str::<Value>(raw)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| ApiError::card_build(200621, "card json is invalid, parse failed"))?;
    if raw.len() > POST_CARD_LIMIT {
        return Err(errors::CONTENT_TOO_LONG.into());
    }
    if lifecycle::is_schema_v2(&card) {
        let n = lifecycle::v2_element_count(&card);
        if n > lifecycle::V2_MAX_ELEMENTS {
            return Err(ApiError::card_build(
                11310,
                &format!(
                    "card has {n} elements, more than the {} a 2.0 card may have",
                    lifecycle::V2_MAX_ELEMENTS
                ),
            ));
        }
    }
    content::check_send("interactive", raw).map_err(content_error)
}

fn put(shared: &Shared, id: &str, headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let app_id = authenticate(shared, headers)?;
    require_scope(shared, &app_id, UPDATE_SCOPES)?;
    let body = json_object(body)?;
    let msg_type = body
        .get("msg_type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let raw = content_field(&body)?;
    let parsed = content::check_send(&msg_type, &raw).map_err(content_error);
    let mut s = shared.lock();
    let now_ms = s.now_ms();
    let m = s.message(id).ok_or_else(|| invalid("invalid message_id"))?;
    // Lifecycle §1.2: only text and post, and an edit cannot change the type.
    if !matches!(msg_type.as_str(), "text" | "post") || msg_type != m.lifecycle.msg_type {
        return Err(invalid("invalid msg_type"));
    }
    if !sent_by(m, &app_id) {
        return Err(errors::NOT_THE_SENDER.into());
    }
    if m.lifecycle.edit_count >= MAX_EDITS {
        return Err(errors::EDIT_LIMIT_REACHED.into());
    }
    if outside(shared.edit_window_ms, m, now_ms) {
        return Err(errors::EDIT_WINDOW_PASSED.into());
    }
    check_gone(m)?;
    let content = parsed?;
    limits(&mut s, id, &app_id, "edit")?;
    let m = s
        .message_mut(id)
        .ok_or_else(|| invalid("invalid message_id"))?;
    m.lifecycle.apply(VersionOp::Put, raw, content, now_ms);
    let data = m.current_data();
    s.stats.edits_accepted += 1;
    Ok(data)
}

fn delete(shared: &Shared, id: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let app_id = authenticate(shared, headers)?;
    require_scope(shared, &app_id, RECALL_SCOPES)?;
    let mut s = shared.lock();
    let now_ms = s.now_ms();
    let m = s.message(id).ok_or_else(|| invalid("invalid message_id"))?;
    if !sent_by(m, &app_id) {
        return Err(errors::NO_RECALL_PERMISSION.into());
    }
    if outside(shared.recall_window_ms, m, now_ms) {
        return Err(errors::RECALL_EXPIRED.into());
    }
    check_gone(m)?;
    if m.lifecycle.msg_type == "system" {
        return Err(errors::UNSUPPORTED_FOR_TYPE.into());
    }
    s.app_limit(&app_id, "recall", Instant::now())?;
    s.recall(id);
    s.stats.recalls_accepted += 1;
    Ok(())
}

/// Whether `app_id` sent `m` (a webhook message has no app, so no app sent it).
fn sent_by(m: &StoredMessage, app_id: &str) -> bool {
    m.app_id.as_deref() == Some(app_id)
}

/// 230011 for a recalled message, 230110 for a deleted one.
fn check_gone(m: &StoredMessage) -> Result<(), ApiError> {
    if m.public.recalled {
        return Err(errors::MESSAGE_RECALLED.into());
    }
    if m.lifecycle.deleted {
        return Err(errors::MESSAGE_DELETED.into());
    }
    Ok(())
}

/// The message's age on the emulator's clock, ms.
fn age_ms(m: &StoredMessage, now_ms: u64) -> u64 {
    now_ms.saturating_sub(m.lifecycle.create_ms)
}

/// Whether `m` is older than an admin window (`None` = no window).
fn outside(window_ms: Option<u64>, m: &StoredMessage, now_ms: u64) -> bool {
    window_ms.is_some_and(|w| age_ms(m, now_ms) > w)
}

/// The per-message 5/s (230020), then the app's budget for `api` (99991400).
fn limits(s: &mut Inner, id: &str, app_id: &str, api: &str) -> Result<(), ApiError> {
    let now = Instant::now();
    if s.limits.enabled {
        let per_sec = s.limits.message_update_per_sec;
        if s.message_limiters.try_acquire(id, now, per_sec, 0).is_err() {
            // Like the per-receiver limit of a send: HTTP 400 / 230020, no reset header (§5).
            s.stats.throttled_message += 1;
            return Err(errors::IM_RATE_LIMITED.into());
        }
    }
    s.app_limit(app_id, api, now)
}

fn content_error(e: ContentError) -> ApiError {
    match e {
        ContentError::UnknownMsgType => invalid("invalid msg_type"),
        ContentError::Empty => invalid("content cannot be empty"),
        ContentError::Invalid { .. } => invalid("invalid message content. validate content fail"),
        ContentError::TooLong { .. } => errors::CONTENT_TOO_LONG.into(),
    }
}
