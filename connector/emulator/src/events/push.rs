//! The events the emulator makes and pushes (over the long connection, or HTTP when a callback
//! URL is set), and their control endpoints under `/_emulator/events`.
//!
//! Why built here rather than by tests: the shapes (lifecycle §2.2 for `card.action.trigger`,
//! §3.2 for `im.message.receive_v1`) and the ids in them (the message's chat, a fresh `c-` token,
//! µs vs ms `create_time`) are protocol facts a test should not have to restate.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{EventsError, Tamper};
use crate::api::control::ControlError;
use crate::api::AppState;
use crate::directory::UserIdType;
use crate::ids;
use crate::state::{Shared, TENANT_KEY};

/// A user clicking a card component (`POST /_emulator/events/click`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Click {
    /// The card's `om_…` id (`event.context.open_message_id`).
    pub message_id: String,
    /// The clicking user (`event.operator`); default: the directory's first user.
    #[serde(default)]
    pub open_id: Option<String>,
    /// `event.action.value`. Default: the value the card itself gives the clicked component (as
    /// Lark sends it: whatever the sender put there), the component chosen by `button`.
    #[serde(default)]
    pub value: Option<Value>,
    /// Which component of the card is clicked, by its text (`text.content`); default: the first
    /// one that calls back (a component with an object `value`, a button without a `url`, a 2.0
    /// `callback` behavior). Only used when `value` is not given.
    #[serde(default)]
    pub button: Option<String>,
    /// `event.action.tag` (default `button`).
    #[serde(default)]
    pub tag: Option<String>,
    /// `event.action.form_value`, for form submits.
    #[serde(default)]
    pub form_value: Option<Value>,
    /// The app whose connection gets it; default: the message's sender app, else the
    /// directory's first app.
    #[serde(default)]
    pub app_id: Option<String>,
    /// Push the same event (same `event_id`, same `c-` token) again once the first push is
    /// finished: a re-delivery a client must absorb, made only on this explicit request (Lark
    /// does not redeliver clicks, lifecycle §2.1; the Node SDK still dedupes them, §4.8). The
    /// second push is delivered once and judged like the first.
    #[serde(default)]
    pub duplicate: bool,
    /// Fragment size for this push (overrides [`super::LongConnectionConfig::fragment_size`]).
    #[serde(default)]
    pub fragment_size: Option<usize>,
    /// Make this event's (only) HTTP attempt wrong (`"signature"`, `"token"`, `"stale"`): a
    /// click is not redelivered, so a receiver that refuses it leaves the user with 200671.
    /// Unused over the long connection.
    #[serde(default)]
    pub tamper: Option<Tamper>,
}

impl Click {
    /// A click on the card `message_id`'s first component that calls back, with the value the
    /// card gives it (what Lark sends), everything else defaulted.
    pub fn on(message_id: &str) -> Click {
        Click {
            message_id: message_id.to_string(),
            ..Click::default()
        }
    }

    /// A button click with `value` on the card `message_id`, everything else defaulted.
    pub fn button(message_id: &str, value: Value) -> Click {
        Click {
            message_id: message_id.to_string(),
            value: Some(value),
            ..Click::default()
        }
    }
}

/// A user writing to the bot (`POST /_emulator/events/message`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotMessage {
    /// The chat; a chat the directory knows is a `group`, anything else a `p2p` chat. Default:
    /// the p2p chat of the app's bot and the user.
    #[serde(default)]
    pub chat_id: Option<String>,
    /// The sender; default: the directory's first user.
    #[serde(default)]
    pub open_id: Option<String>,
    /// The text (`message.content` = `{"text":"…"}`).
    pub text: String,
    /// The receiving app; default: the directory's first app.
    #[serde(default)]
    pub app_id: Option<String>,
    /// Also push a redelivery with a NEW `event_id` and the same `message_id` (lifecycle §3.2:
    /// dedupe by message_id, "do not rely on event_id").
    #[serde(default)]
    pub duplicate: bool,
    /// Fragment size for this push.
    #[serde(default)]
    pub fragment_size: Option<usize>,
    /// Make this event's first HTTP attempt wrong, as [`Click::tamper`]; the redeliveries (per
    /// the retry schedule) are right.
    #[serde(default)]
    pub tamper: Option<Tamper>,
}

/// An `event_id`: 32 hex chars, as the samples.
fn event_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The app an event goes to: the one asked for (it must exist), else `default`, else the
/// directory's first app.
fn app_for(s: &Shared, asked: Option<&str>, default: Option<&str>) -> Result<String, EventsError> {
    if let Some(a) = asked {
        return match s.dir.app(a) {
            Some(app) => Ok(app.app_id.clone()),
            None => Err(EventsError::UnknownApp(a.to_string())),
        };
    }
    if let Some(app) = default.and_then(|d| s.dir.app(d)) {
        return Ok(app.app_id.clone());
    }
    s.dir
        .directory
        .apps
        .first()
        .map(|a| a.app_id.clone())
        .ok_or(EventsError::NothingToDefaultTo("app"))
}

/// `{open_id, union_id?, user_id?}` of a user, from the directory when it knows them.
fn user_ids(s: &Shared, open_id: Option<&str>) -> Result<Map<String, Value>, EventsError> {
    let open_id = match open_id {
        Some(o) => o.to_string(),
        None => s
            .dir
            .directory
            .users
            .first()
            .map(|u| u.open_id.clone())
            .ok_or(EventsError::NothingToDefaultTo("user"))?,
    };
    let mut ids = Map::new();
    if let Some(u) = s.dir.user(UserIdType::OpenId, &open_id) {
        for (k, v) in [("union_id", &u.union_id), ("user_id", &u.user_id)] {
            if !v.is_empty() {
                ids.insert(k.into(), json!(v));
            }
        }
    }
    ids.insert("open_id".into(), json!(open_id));
    Ok(ids)
}

/// The v2 envelope's header (lifecycle §3.1); `token` is the configured Verification Token.
fn header(s: &Shared, event_type: &str, app_id: &str, create_time: String) -> Value {
    json!({
        "event_id": event_id(),
        "token": s.events.callbacks().verification_token,
        "create_time": create_time,
        "event_type": event_type,
        "tenant_key": TENANT_KEY,
        "app_id": app_id,
    })
}

/// Build and push a `card.action.trigger` (lifecycle §2.2) with a fresh `c-` token; the event
/// id.
pub(crate) fn click(s: &Shared, c: Click) -> Result<String, EventsError> {
    let (sender_app, chat_id, card) = {
        let st = s.lock();
        match st.message(&c.message_id) {
            Some(m) => (
                m.app_id.clone(),
                Some(m.reply_chat_id.clone()),
                serde_json::from_str::<Value>(&m.lifecycle.content_raw).ok(),
            ),
            None => (None, None, None),
        }
    };
    let value = c.value.or_else(|| {
        card.as_ref()
            .and_then(|k| clicked_value(k, c.button.as_deref()))
    });
    let app_id = app_for(s, c.app_id.as_deref(), sender_app.as_deref())?;
    let mut operator = user_ids(s, c.open_id.as_deref())?;
    operator.insert("tenant_key".into(), json!(TENANT_KEY));
    let mut action = json!({
        "value": value.unwrap_or_else(|| json!({})),
        "tag": c.tag.unwrap_or_else(|| "button".into()),
    });
    if let (Some(f), Some(a)) = (c.form_value, action.as_object_mut()) {
        a.insert("form_value".into(), f);
    }
    let mut context = json!({ "open_message_id": c.message_id });
    if let (Some(chat), Some(ctx)) = (chat_id.filter(|c| !c.is_empty()), context.as_object_mut()) {
        ctx.insert("open_chat_id".into(), json!(chat));
    }
    // create_time in µs for callbacks (lifecycle §2.2 field notes).
    let micros = ids::now_ms().saturating_mul(1000).to_string();
    let event = json!({
        "schema": "2.0",
        "header": header(s, "card.action.trigger", &app_id, micros),
        "event": {
            "operator": operator,
            "token": format!("c-{:032x}", rand::random::<u128>()),
            "action": action,
            "host": "im_message",
            "context": context,
        },
    });
    let then = c.duplicate.then(|| event.clone());
    s.events
        .push(&app_id, event, c.fragment_size, then, c.tamper)
}

/// The callback value of the card's clicked component: the one whose text is `button`, else the
/// first that calls back (see [`Click::button`]).
fn clicked_value(card: &Value, button: Option<&str>) -> Option<Value> {
    let mut found = Vec::new();
    callback_values(card, &mut found);
    found
        .into_iter()
        .find(|(text, _)| button.is_none_or(|b| text.as_deref() == Some(b)))
        .map(|(_, v)| v)
}

/// Every (text, value) of a component that calls back, in card order.
fn callback_values(v: &Value, out: &mut Vec<(Option<String>, Value)>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| callback_values(i, out)),
        Value::Object(o) => {
            let text = o
                .get("text")
                .and_then(|t| t.get("content"))
                .and_then(Value::as_str)
                .map(str::to_string);
            let link = o.contains_key("url") || o.contains_key("multi_url");
            let button = o.get("tag").and_then(Value::as_str) == Some("button");
            if o.get("tag").is_some() && o.get("value").is_some_and(Value::is_object) {
                out.push((text.clone(), o["value"].clone()));
            } else if button && !link && !o.contains_key("behaviors") {
                out.push((text.clone(), json!({})));
            }
            if let Some(Value::Array(bs)) = o.get("behaviors") {
                for b in bs {
                    if b.get("type").and_then(Value::as_str) == Some("callback") {
                        let value = b.get("value").cloned().unwrap_or_else(|| json!({}));
                        out.push((text.clone(), value));
                    }
                }
            }
            for (k, child) in o {
                if k != "value" && k != "behaviors" {
                    callback_values(child, out);
                }
            }
        }
        _ => {}
    }
}

/// Build and push an `im.message.receive_v1` (lifecycle §3.2); the event id.
pub(crate) fn send_to_bot(s: &Shared, m: BotMessage) -> Result<String, EventsError> {
    let app_id = app_for(s, m.app_id.as_deref(), None)?;
    let sender_ids = user_ids(s, m.open_id.as_deref())?;
    let open_id = sender_ids
        .get("open_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let (chat_id, chat_type) = match m.chat_id {
        Some(c) if s.dir.chat(&c).is_some() => (c, "group"),
        Some(c) => (c, "p2p"),
        None => (ids::p2p_chat_id(&app_id, &open_id), "p2p"),
    };
    let now = ids::now_ms().to_string();
    let event = json!({
        "schema": "2.0",
        // create_time in ms for this event (lifecycle §3.1).
        "header": header(s, "im.message.receive_v1", &app_id, now.clone()),
        "event": {
            "sender": {
                "sender_id": sender_ids,
                "sender_type": "user",
                "tenant_key": TENANT_KEY,
            },
            "message": {
                "message_id": ids::message_id(),
                "create_time": now,
                "update_time": now,
                "chat_id": chat_id,
                "chat_type": chat_type,
                "message_type": "text",
                "content": json!({ "text": m.text }).to_string(),
            },
        },
    });
    let then = m.duplicate.then(|| {
        let mut again = event.clone();
        again["header"]["event_id"] = json!(event_id());
        again
    });
    s.events
        .push(&app_id, event, m.fragment_size, then, m.tamper)
}

/// `/_emulator/events*` (documented in the crate docs).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/_emulator/events", get(list))
        .route("/_emulator/events/click", post(click_route))
        .route("/_emulator/events/message", post(message_route))
        .route("/_emulator/events/drop", post(drop_route))
        .route("/_emulator/events/verify", post(verify_route))
        .route("/_emulator/events/callback", post(callback_route))
}

/// `POST /_emulator/events/verify`: `{"url":…}` (optional: the configured URL).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Verify {
    #[serde(default)]
    url: Option<String>,
}

/// `POST /_emulator/events/callback`: `{"url":…|null}` sets (or clears) the callback URL;
/// `{"tamper":["signature",…]}` queues tampering for the next HTTP attempts. Both optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackControl {
    #[serde(default, deserialize_with = "some")]
    url: Option<Option<String>>,
    #[serde(default)]
    tamper: Vec<Tamper>,
}

/// A present field (even `null`) is `Some`: `"url":null` clears the URL, no `url` keeps it.
fn some<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `{"ok":true,"challenge":…}`, or `{"ok":false,"error":…}` (HTTP 200: the check ran).
async fn verify_route(State(s): State<AppState>, body: Bytes) -> Result<Response, ControlError> {
    let v: Verify = if body.is_empty() {
        Verify::default()
    } else {
        serde_json::from_slice(&body)?
    };
    Ok(match s.events.verify_url(v.url.as_deref()).await {
        Ok(challenge) => Json(json!({ "ok": true, "challenge": challenge })),
        Err(e) => Json(json!({ "ok": false, "error": e.to_string() })),
    }
    .into_response())
}

/// `{"ok":true,"url":…,"tamper_queued":N}`.
async fn callback_route(State(s): State<AppState>, body: Bytes) -> Result<Response, ControlError> {
    let c: CallbackControl = if body.is_empty() {
        CallbackControl::default()
    } else {
        serde_json::from_slice(&body)?
    };
    if let Some(url) = c.url {
        s.events.set_callback_url(url);
    }
    for t in c.tamper {
        s.events.tamper_next(t);
    }
    let url = s.events.callbacks().url;
    let queued = s.events.tamper_queued();
    Ok(Json(json!({ "ok": true, "url": url, "tamper_queued": queued })).into_response())
}

/// `{"ok":true,"event_id":…}`, or 400 `{"ok":false,"error":…}` when it could not be pushed.
fn pushed(r: Result<String, EventsError>) -> Response {
    match r {
        Ok(id) => Json(json!({ "ok": true, "event_id": id })).into_response(),
        Err(e) => (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({ "ok": false, "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn list(State(s): State<AppState>) -> Response {
    Json(s.events.events()).into_response()
}

async fn click_route(State(s): State<AppState>, body: Bytes) -> Result<Response, ControlError> {
    let c: Click = serde_json::from_slice(&body)?;
    Ok(pushed(click(&s, c)))
}

async fn message_route(State(s): State<AppState>, body: Bytes) -> Result<Response, ControlError> {
    let m: BotMessage = serde_json::from_slice(&body)?;
    Ok(pushed(send_to_bot(&s, m)))
}

async fn drop_route(State(s): State<AppState>) -> Response {
    Json(json!({ "ok": true, "dropped": s.events.drop_all() })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_click_takes_the_value_the_card_gives_its_component() {
        let card = json!({"elements": [{"tag": "action", "actions": [
            {"tag": "button", "text": {"tag": "plain_text", "content": "Runbook"}, "url": "https://x"},
            {"tag": "button", "text": {"tag": "plain_text", "content": "Ack"}, "value": {"a": "ack"}},
            {"tag": "button", "text": {"tag": "plain_text", "content": "Silence"}}]}]});
        assert_eq!(clicked_value(&card, None), Some(json!({"a": "ack"})));
        assert_eq!(clicked_value(&card, Some("Silence")), Some(json!({})));
        assert_eq!(
            clicked_value(&card, Some("Runbook")),
            None,
            "a link calls nothing back"
        );
        let v2 = json!({"schema": "2.0", "body": {"elements": [{"tag": "button",
            "text": {"tag": "plain_text", "content": "Ack"},
            "behaviors": [{"type": "callback", "value": {"b": 1}}]}]}});
        assert_eq!(clicked_value(&v2, Some("Ack")), Some(json!({"b": 1})));
    }
}
