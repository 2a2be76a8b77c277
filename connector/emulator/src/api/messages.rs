//! `POST /open-apis/im/v1/messages?receive_id_type=…` (lark-api.md §2) and its sibling
//! `POST /open-apis/im/v1/messages/{message_id}/reply` (§2.5), which share body parsing, content
//! checks, the app budget and the uuid window.
//!
//! Checks run in the order a gateway-fronted service would: auth, the app's scopes (99991672),
//! the app's gateway limit, request shape and content, the app's bot ability (230006), receiver
//! permissions, then (atomically, under the state lock)
//! uuid de-duplication, the per-receiver limit and recording. Duplicates are answered from the
//! original reply (§2.2 emulator recommendation) and never consume receiver quota.

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Map, Value};

use super::{
    answer_late, authenticate, finish, im_content, json_object, prologue, require_scope, AppState,
};
use crate::content::{self, ContentError};
use crate::directory::{DirectoryIndex, UserIdType};
use crate::errors::{self, ApiError};
use crate::faults::FaultTarget;
use crate::ids;
use crate::reply::{self, Dialect};
use crate::state::{NewApiMessage, ReplyLink, Shared, StoredMessage};

/// §2.1: the send API wants any one of these scopes.
const SEND_SCOPES: &[&str] = &["im:message", "im:message:send_as_bot", "im:message:send"];

/// §2.1: "max 50 chars".
const UUID_MAX_CHARS: usize = 50;

pub(crate) async fn create(
    State(shared): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Response {
    let log_id = match prologue(&shared, FaultTarget::Send, Dialect::OpenApi).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    // An unparsable query string is treated as an empty one (→ invalid receive_id_type).
    let query = query.map(|q| q.0).unwrap_or_default();
    let result = send(&shared, &headers, &query, &body).map(reply::success);
    let response = finish(&shared, &log_id, result, Dialect::OpenApi);
    answer_late(&shared, &log_id, response).await
}

fn invalid(ext: &str) -> ApiError {
    ApiError::ext(errors::INVALID_PARAM, ext)
}

fn send(
    shared: &Shared,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Value, ApiError> {
    let app_id = authenticate(shared, headers)?;
    require_scope(shared, &app_id, SEND_SCOPES)?;
    shared.lock().app_limit(&app_id, "send", Instant::now())?;

    let receive_id_type = query
        .get("receive_id_type")
        .map(String::as_str)
        .unwrap_or("");
    let kind =
        ReceiveIdType::parse(receive_id_type).ok_or_else(|| invalid("invalid receive_id_type"))?;
    let req = SendBody::parse(&json_object(body)?)?;
    {
        let mut s = shared.lock();
        if s.faults.config.failing_receivers.contains(&req.receive_id) {
            s.stats.faults_injected += 1;
            return Err(errors::INTERNAL.into());
        }
    }
    let content = content::check_send(&req.msg_type, &req.content).map_err(content_error)?;
    check_uuid(req.uuid.as_deref())?;

    let bot_enabled = shared.dir.app(&app_id).is_some_and(|a| a.bot_enabled);
    if !bot_enabled {
        return Err(errors::BOT_NOT_ACTIVATED.into());
    }
    let receiver = resolve(&shared.dir, kind, &req.receive_id, &app_id)?;
    if req.msg_type == "system" && receiver.p2p_open_id.is_none() {
        // §2.4: system messages are bot-p2p only.
        return Err(invalid(
            "sending system messages in group chats is not supported",
        ));
    }

    im_content::check_shared_chat(&shared.dir, &req.msg_type, &content)?;
    let mentions = im_content::mentions(&shared.dir, &req.msg_type, &content);

    let msg = NewApiMessage {
        app_id,
        receive_id_type: receive_id_type.to_string(),
        receive_id: req.receive_id,
        canonical: receiver.canonical,
        reply_chat_id: receiver.reply_chat_id,
        p2p_open_id: receiver.p2p_open_id,
        msg_type: req.msg_type,
        content_raw: req.content,
        content,
        mentions,
        uuid: req.uuid,
        reply: None,
    };
    shared
        .lock()
        .accept_api(msg, Instant::now(), shared.uuid_window)
}

/// `POST /open-apis/im/v1/messages/{message_id}/reply` (lark-api.md §2.5).
pub(crate) async fn reply_to(
    State(shared): State<AppState>,
    Path(parent_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let log_id = match prologue(&shared, FaultTarget::Reply, Dialect::OpenApi).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let result = reply(&shared, &parent_id, &headers, &body).map(reply::success);
    finish(&shared, &log_id, result, Dialect::OpenApi)
}

/// A reply goes to the parent's conversation; same headers, limits, content checks and uuid
/// window as a send (§2.5), no `receive_id`, and no `system` msg_type.
fn reply(
    shared: &Shared,
    parent_id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    let app_id = authenticate(shared, headers)?;
    // §2.5: "same headers/scopes/limits" as a send, so the gateway refuses the same apps.
    require_scope(shared, &app_id, SEND_SCOPES)?;
    // §4: send and reply share one "send / reply message API" budget.
    shared.lock().app_limit(&app_id, "send", Instant::now())?;
    let body = json_object(body)?;
    let req = ReplyBody::parse(&body)?;
    if req.msg_type == "system" {
        // §2.5: the reply msg_type list excludes system.
        return Err(invalid("invalid msg_type"));
    }
    let content = content::check_send(&req.msg_type, &req.content).map_err(content_error)?;
    check_uuid(req.uuid.as_deref())?;
    let bot_enabled = shared.dir.app(&app_id).is_some_and(|a| a.bot_enabled);
    if !bot_enabled {
        return Err(errors::BOT_NOT_ACTIVATED.into());
    }
    im_content::check_shared_chat(&shared.dir, &req.msg_type, &content)?;
    let mentions = im_content::mentions(&shared.dir, &req.msg_type, &content);

    // The parent decides where the reply lands. Checked under one lock with the acceptance
    // below, so a recall between check and accept cannot slip through.
    let mut s = shared.lock();
    let parent = s.message(parent_id).ok_or_else(|| {
        // lark-api.md lists no "no such message" code; 230001 names the parameter, as for
        // urgent (§6 choice in the crate docs).
        invalid("invalid message_id")
    })?;
    if !visible_to(shared, parent, &app_id) {
        return Err(errors::MESSAGE_INVISIBLE.into());
    }
    if parent.public.recalled {
        return Err(errors::MESSAGE_RECALLED.into());
    }
    // A reply to a message already in a thread stays in that thread; `reply_in_thread` opens one
    // (its id derives from the root, so every thread reply to one root shares it).
    let root_id = parent
        .public
        .root_id
        .clone()
        .unwrap_or_else(|| parent.public.message_id.clone());
    let thread_id = match (&parent.public.thread_id, req.reply_in_thread) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => {
            let threads_allowed = parent.p2p_open_id.is_some()
                || shared
                    .dir
                    .chat(&parent.public.chat_id)
                    .is_some_and(|c| c.thread_replies);
            if !threads_allowed {
                return Err(errors::NO_THREAD_REPLY.into());
            }
            Some(ids::thread_id(&root_id))
        }
        (None, false) => None,
    };
    let msg = NewApiMessage {
        app_id,
        receive_id_type: "message_id".into(),
        receive_id: parent_id.to_string(),
        canonical: parent.public.chat_id.clone(),
        reply_chat_id: parent.reply_chat_id.clone(),
        p2p_open_id: parent.p2p_open_id.clone(),
        msg_type: req.msg_type,
        content_raw: req.content,
        content,
        mentions,
        uuid: req.uuid,
        reply: Some(ReplyLink {
            parent_id: parent_id.to_string(),
            root_id,
            thread_id,
        }),
    };
    s.accept_api(msg, Instant::now(), shared.uuid_window)
}

/// Whether `app_id`'s bot can see `msg` (reply §2.5, message get). Webhook messages live in
/// chats the emulator does not model (and their ids are never returned, §8); another app's p2p
/// messages are in a conversation this bot is not part of.
pub(crate) fn visible_to(shared: &Shared, msg: &StoredMessage, app_id: &str) -> bool {
    match (&msg.app_id, &msg.p2p_open_id) {
        (None, _) => false,
        (Some(owner), Some(_)) => owner == app_id,
        (Some(_), None) => shared
            .dir
            .chat(&msg.public.chat_id)
            .is_some_and(|c| c.bot_member),
    }
}

fn check_uuid(uuid: Option<&str>) -> Result<(), ApiError> {
    if uuid.is_some_and(|u| u.chars().count() > UUID_MAX_CHARS) {
        return Err(invalid(
            "invalid uuid, the length of uuid must be at most 50",
        ));
    }
    Ok(())
}

fn content_error(e: ContentError) -> ApiError {
    match e {
        ContentError::UnknownMsgType => invalid("invalid msg_type"),
        ContentError::Empty => invalid("content cannot be empty"),
        ContentError::Invalid { .. } => invalid("invalid message content. validate content fail"),
        ContentError::TooLong { .. } => errors::CONTENT_TOO_LONG.into(),
    }
}

/// The body fields of §2.1.
struct SendBody {
    receive_id: String,
    msg_type: String,
    /// The `content` string; a missing or `null` content is treated as empty.
    content: String,
    uuid: Option<String>,
}

impl SendBody {
    fn parse(body: &Map<String, Value>) -> Result<Self, ApiError> {
        let receive_id = body
            .get("receive_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("invalid receive_id"))?
            .to_string();
        let ReplyBody {
            msg_type,
            content,
            uuid,
            ..
        } = ReplyBody::parse(body)?;
        Ok(Self {
            receive_id,
            msg_type,
            content,
            uuid,
        })
    }
}

/// The body of a reply (§2.5): a send body without `receive_id`, plus `reply_in_thread`.
/// [`SendBody::parse`] reuses it, so both endpoints read the shared fields the same way.
struct ReplyBody {
    msg_type: String,
    content: String,
    uuid: Option<String>,
    reply_in_thread: bool,
}

impl ReplyBody {
    fn parse(body: &Map<String, Value>) -> Result<Self, ApiError> {
        let msg_type = body
            .get("msg_type")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| invalid("invalid msg_type"))?;
        let content = match body.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            // The most common client bug: content sent as an object instead of a string.
            Some(_) => return Err(invalid("invalid message content. validate content fail")),
        };
        let uuid = match body.get("uuid") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(ApiError::field("uuid", "uuid must be a string")),
        };
        let reply_in_thread = match body.get("reply_in_thread") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::field(
                    "reply_in_thread",
                    "reply_in_thread must be a boolean",
                ))
            }
        };
        Ok(Self {
            msg_type,
            content,
            uuid,
            reply_in_thread,
        })
    }
}

#[derive(Clone, Copy, Debug)]
enum ReceiveIdType {
    User(UserIdType),
    Email,
    ChatId,
}

impl ReceiveIdType {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "email" => Some(Self::Email),
            "chat_id" => Some(Self::ChatId),
            other => UserIdType::parse(other).map(Self::User),
        }
    }
}

/// Where a send lands.
struct Receiver {
    canonical: String,
    reply_chat_id: String,
    p2p_open_id: Option<String>,
}

/// Find the receiver and check the bot may write to it (§2.1 preconditions, §3 codes).
fn resolve(
    dir: &DirectoryIndex,
    kind: ReceiveIdType,
    id: &str,
    app_id: &str,
) -> Result<Receiver, ApiError> {
    let user = match kind {
        ReceiveIdType::ChatId => {
            let chat = dir.chat(id).ok_or_else(|| invalid("invalid receive_id"))?;
            if !chat.bot_member {
                return Err(errors::BOT_NOT_IN_CHAT.into());
            }
            return Ok(Receiver {
                canonical: chat.chat_id.clone(),
                reply_chat_id: chat.chat_id.clone(),
                p2p_open_id: None,
            });
        }
        ReceiveIdType::User(t) => dir.user(t, id),
        // UNCERTAIN (§3 notes): an unknown email is reported like any unknown id, 230001
        // `ext=invalid receive_id`, rather than 230013.
        ReceiveIdType::Email => dir.user_by_email(id),
    }
    .ok_or_else(|| invalid("invalid receive_id"))?;
    // Resigned is the more specific reason, so it wins over availability.
    if user.resigned {
        return Err(errors::USER_RESIGNED.into());
    }
    if !user.available {
        return Err(errors::NO_AVAILABILITY.into());
    }
    Ok(Receiver {
        canonical: format!("p2p:{}", user.open_id),
        reply_chat_id: ids::p2p_chat_id(app_id, &user.open_id),
        p2p_open_id: Some(user.open_id.clone()),
    })
}
