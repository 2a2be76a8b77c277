//! `POST /open-apis/im/v1/messages?receive_id_type=…` (lark-api.md §2).
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
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Map, Value};

use super::{authenticate, finish, json_object, prologue, require_scope, AppState};
use crate::content::{self, ContentError};
use crate::directory::{DirectoryIndex, UserIdType};
use crate::errors::{self, ApiError};
use crate::faults::FaultTarget;
use crate::ids;
use crate::reply::{self, Dialect};
use crate::state::{NewApiMessage, Shared};

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
    finish(&shared, &log_id, result, Dialect::OpenApi)
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
    if req
        .uuid
        .as_ref()
        .is_some_and(|u| u.chars().count() > UUID_MAX_CHARS)
    {
        return Err(invalid(
            "invalid uuid, the length of uuid must be at most 50",
        ));
    }

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
        uuid: req.uuid,
    };
    shared
        .lock()
        .accept_api(msg, Instant::now(), shared.uuid_window)
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
        let string = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
        let receive_id = string("receive_id")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("invalid receive_id"))?;
        let msg_type = string("msg_type").ok_or_else(|| invalid("invalid msg_type"))?;
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
        Ok(Self {
            receive_id,
            msg_type,
            content,
            uuid,
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
