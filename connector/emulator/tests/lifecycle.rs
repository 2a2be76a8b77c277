//! The update / edit / recall endpoints over real HTTP (`/work/shared/lark-api-lifecycle.md`
//! §1, §5, §6; lark-api.md §14): every check answers its code, the message view and its history,
//! the clock, the per-message limit, and faults on the new targets.
//!
//! Each test starts its own emulator on a random port. Functional tests run with limits off;
//! the limit tests set small limits so they trip after a handful of requests, never sleeping.

use std::time::Duration;

use lark_emulator::{
    App, Directory, Emulator, EmulatorConfig, EmulatorHandle, Fault, FaultTarget, Limits,
    UnsharedCardUpdate, VersionOp,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const DAY: Duration = Duration::from_secs(24 * 3600);

struct Harness {
    emu: EmulatorHandle,
    http: reqwest::Client,
    /// A tenant token of the demo app (`cli_demo_app`).
    token: String,
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn code(&self) -> i64 {
        self.body["code"].as_i64().expect("code")
    }
    fn msg(&self) -> &str {
        self.body["msg"].as_str().unwrap_or_default()
    }
}

/// The demo directory plus `cli_other` (a second app) and `cli_sendonly` (may send, may not
/// update or recall).
fn directory() -> Directory {
    let mut d = Directory::demo();
    d.apps.push(App {
        app_id: "cli_other".into(),
        app_secret: "other-secret".into(),
        bot_enabled: true,
        scopes: None,
    });
    d.apps.push(App {
        app_id: "cli_sendonly".into(),
        app_secret: "sendonly-secret".into(),
        bot_enabled: true,
        scopes: Some(vec!["im:message:send".into()]),
    });
    d
}

async fn start_with(config: EmulatorConfig) -> Harness {
    let emu = Emulator::start(config, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("emulator starts");
    let mut h = Harness {
        emu,
        http: reqwest::Client::new(),
        token: String::new(),
    };
    h.token = h.token_of("cli_demo_app", "demo-secret").await;
    h
}

/// Limits off, the extra apps, the other settings at their defaults.
async fn start() -> Harness {
    start_with(EmulatorConfig {
        limits: Limits::disabled(),
        directory: directory(),
        ..EmulatorConfig::default()
    })
    .await
}

fn card(text: &str, update_multi: bool) -> String {
    json!({
        "config": {"update_multi": update_multi},
        "elements": [{"tag": "markdown", "content": text}]
    })
    .to_string()
}

fn text(t: &str) -> String {
    json!({ "text": t }).to_string()
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.emu.base_url(), path)
    }

    async fn call(&self, method: Method, path: &str, token: &str, body: Option<&Value>) -> Reply {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn token_of(&self, app_id: &str, secret: &str) -> String {
        let r = self
            .http
            .post(self.url("/open-apis/auth/v3/tenant_access_token/internal"))
            .json(&json!({ "app_id": app_id, "app_secret": secret }))
            .send()
            .await
            .expect("request");
        let body: Value = r.json().await.expect("json");
        body["tenant_access_token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// Sends `content` as `msg_type` to `receive_id` with `token`; returns the message id.
    async fn send_as(
        &self,
        token: &str,
        id_type: &str,
        id: &str,
        msg_type: &str,
        content: &str,
    ) -> String {
        let path = format!("/open-apis/im/v1/messages?receive_id_type={id_type}");
        let body = json!({ "receive_id": id, "msg_type": msg_type, "content": content });
        let r = self.call(Method::POST, &path, token, Some(&body)).await;
        assert_eq!(r.code(), 0, "{:?}", r.body);
        r.body["data"]["message_id"]
            .as_str()
            .expect("message_id")
            .to_string()
    }

    /// The demo app sends to the Ops chat.
    async fn send(&self, msg_type: &str, content: &str) -> String {
        self.send_as(&self.token, "chat_id", "oc_ops", msg_type, content)
            .await
    }

    async fn patch_as(&self, token: &str, id: &str, content: &str) -> Reply {
        let path = format!("/open-apis/im/v1/messages/{id}");
        self.call(
            Method::PATCH,
            &path,
            token,
            Some(&json!({ "content": content })),
        )
        .await
    }

    async fn patch(&self, id: &str, content: &str) -> Reply {
        self.patch_as(&self.token, id, content).await
    }

    async fn put_as(&self, token: &str, id: &str, msg_type: &str, content: &str) -> Reply {
        let path = format!("/open-apis/im/v1/messages/{id}");
        let body = json!({ "msg_type": msg_type, "content": content });
        self.call(Method::PUT, &path, token, Some(&body)).await
    }

    async fn put(&self, id: &str, msg_type: &str, content: &str) -> Reply {
        self.put_as(&self.token, id, msg_type, content).await
    }

    async fn delete_as(&self, token: &str, id: &str) -> Reply {
        let path = format!("/open-apis/im/v1/messages/{id}");
        self.call(Method::DELETE, &path, token, None).await
    }

    async fn delete(&self, id: &str) -> Reply {
        self.delete_as(&self.token, id).await
    }

    async fn control(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let r = self.call(method, path, "unused", body).await;
        (r.status, r.body)
    }
}

/// An error answer: the status, the code, and an `msg` containing `part`.
fn assert_refused(r: &Reply, status: u16, code: i64, part: &str) {
    assert_eq!(r.status.as_u16(), status, "{:?}", r.body);
    assert_eq!(r.code(), code, "{:?}", r.body);
    assert!(r.msg().contains(part), "msg {:?} lacks {part:?}", r.msg());
    assert!(r.body["error"]["log_id"].is_string(), "{:?}", r.body);
}

// ------------------------------------------------------------------------------- PATCH

#[tokio::test]
async fn patch_replaces_a_shared_card_and_keeps_the_history() {
    let h = start().await;
    let id = h.send("interactive", &card("firing", true)).await;
    let r = h.patch(&id, &card("resolved", true)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"code": 0, "data": {}, "msg": "ok"}));
    assert!(r.headers.get("x-tt-logid").is_some());

    // The control view: current content, counts, history.
    let (status, view) = h
        .control(Method::GET, &format!("/_emulator/messages/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["msg_type"], "interactive");
    assert_eq!(view["content"]["elements"][0]["content"], "resolved");
    assert_eq!(
        (view["patch_count"].as_u64(), view["edit_count"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(
        (view["recalled"].as_bool(), view["deleted"].as_bool()),
        (Some(false), Some(false))
    );
    let ops: Vec<_> = view["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["op"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ops, ["send", "patch"]);
    assert_eq!(
        view["versions"][0]["content"]["elements"][0]["content"],
        "firing"
    );
    assert!(view["update_time_ms"].as_u64() >= view["create_time_ms"].as_u64());

    // The Rust accessors agree, and message get shows the new version.
    let v = h.emu.message_view(&id).expect("view");
    assert_eq!(v.versions[1].op, VersionOp::Patch);
    assert_eq!(h.emu.message_content(&id), Some(v.content.clone()));
    let got = h
        .call(
            Method::GET,
            &format!("/open-apis/im/v1/messages/{id}"),
            &h.token,
            None,
        )
        .await;
    let item = &got.body["data"]["items"][0];
    assert_eq!(item["updated"], true);
    assert_eq!(item["body"]["content"], json!(card("resolved", true)));
    // What the send accepted stays as sent.
    let sent = h
        .emu
        .messages()
        .into_iter()
        .find(|m| m.message_id == id)
        .expect("sent");
    assert_eq!(sent.content["elements"][0]["content"], "firing");
    assert_eq!(h.emu.stats().updates_accepted, 1);

    // JSON 2.0 cards are shared without saying so.
    let v2 = json!({"schema": "2.0", "body": {"elements": [{"tag": "markdown", "content": "a"}]}});
    let id2 = h.send("interactive", &v2.to_string()).await;
    assert_eq!(h.patch(&id2, &v2.to_string()).await.code(), 0);
}

#[tokio::test]
async fn patch_checks_answer_their_codes() {
    let h = start().await;
    let other = h.token_of("cli_other", "other-secret").await;
    let shared = h.send("interactive", &card("a", true)).await;
    let new = card("b", true);

    assert_refused(
        &h.patch("om_unknown", &new).await,
        400,
        230001,
        "ext=invalid message_id",
    );
    let t = h.send("text", &text("hi")).await;
    assert_refused(
        &h.patch(&t, &new).await,
        400,
        230001,
        "ext=This message is NOT a card",
    );
    let theirs = h
        .send_as(&other, "chat_id", "oc_ops", "interactive", &card("x", true))
        .await;
    assert_refused(
        &h.patch(&theirs, &new).await,
        400,
        230001,
        "not the message`s sender",
    );

    let recalled = h.send("interactive", &card("a", true)).await;
    let (status, _) = h
        .control(
            Method::POST,
            "/_emulator/recall",
            Some(&json!({ "message_id": recalled })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_refused(&h.patch(&recalled, &new).await, 400, 230011, "recalled");
    let deleted = h.send("interactive", &card("a", true)).await;
    let (status, _) = h
        .control(
            Method::POST,
            "/_emulator/delete",
            Some(&json!({ "message_id": deleted })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_refused(&h.patch(&deleted, &new).await, 400, 230110, "deleted");

    // Content: JSON, size, 2.0 element count, shape.
    assert_refused(
        &h.patch(&shared, "{nope").await,
        400,
        230099,
        "ErrCode: 200621",
    );
    let big = card(&"x".repeat(31 * 1024), true);
    assert_refused(&h.patch(&shared, &big).await, 400, 230025, "limit");
    let elements: Vec<_> = (0..201).map(|_| json!({"tag": "hr"})).collect();
    let crowded = json!({"schema": "2.0", "body": {"elements": elements}}).to_string();
    assert_refused(
        &h.patch(&shared, &crowded).await,
        400,
        230099,
        "ErrCode: 11310",
    );
    assert_refused(
        &h.patch(&shared, r#"{"foo":1}"#).await,
        400,
        230001,
        "invalid message content",
    );

    // update_multi on the card as sent and on the new card (default: refused).
    let unshared = h.send("interactive", &card("a", false)).await;
    assert_refused(&h.patch(&unshared, &new).await, 400, 230001, "update_multi");
    assert_refused(
        &h.patch(&shared, &card("b", false)).await,
        400,
        230001,
        "update_multi",
    );
    assert_eq!(h.emu.message_view(&shared).expect("view").patch_count, 0);

    // Token and scope first, as for a send.
    let r = h.patch_as("t-not-issued", &shared, &new).await;
    assert_refused(&r, 400, 99991663, "Invalid access token");
    let sendonly = h.token_of("cli_sendonly", "sendonly-secret").await;
    assert_refused(
        &h.patch_as(&sendonly, &shared, &new).await,
        400,
        99991672,
        "im:message:update",
    );

    // Not a check: the good update still goes through after all that.
    assert_eq!(h.patch(&shared, &new).await.code(), 0);
}

#[tokio::test]
async fn an_old_card_cannot_be_updated_and_the_clock_moves() {
    let h = start().await;
    let id = h.send("interactive", &card("a", true)).await;
    let (_, clock) = h.control(Method::GET, "/_emulator/clock", None).await;
    assert_eq!(clock["offset_ms"], 0);
    // 13 days: still fine.
    h.emu.advance_clock(13 * DAY);
    assert_eq!(h.patch(&id, &card("b", true)).await.code(), 0);
    // Over the HTTP control, past 14 days.
    let ms = 2 * DAY.as_millis() as u64;
    let (status, body) = h
        .control(
            Method::POST,
            "/_emulator/clock",
            Some(&json!({ "advance_ms": ms })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["offset_ms"], json!(15 * DAY.as_millis() as u64));
    assert_eq!(h.emu.clock_offset(), 15 * DAY);
    assert_refused(
        &h.patch(&id, &card("c", true)).await,
        400,
        230031,
        "14 days",
    );
    // A message sent now is new on the moved clock.
    let fresh = h.send("interactive", &card("a", true)).await;
    assert_eq!(h.patch(&fresh, &card("b", true)).await.code(), 0);
    let v = h.emu.message_view(&fresh).expect("view");
    assert!(
        v.create_time_ms
            >= h.emu.message_view(&id).expect("old").create_time_ms + 15 * DAY.as_millis() as u64
    );
    h.emu.reset();
    assert_eq!(h.emu.clock_offset(), Duration::ZERO);
}

#[tokio::test]
async fn an_unshared_card_update_can_be_ignored_instead() {
    let h = start_with(EmulatorConfig {
        limits: Limits::disabled(),
        unshared_card_update: UnsharedCardUpdate::Ignore,
        ..EmulatorConfig::default()
    })
    .await;
    let id = h.send("interactive", &card("a", false)).await;
    assert_eq!(h.patch(&id, &card("b", true)).await.code(), 0);
    let v = h.emu.message_view(&id).expect("view");
    assert_eq!((v.patch_count, v.versions.len()), (0, 1));
    assert_eq!(v.content["elements"][0]["content"], "a");
    let s = h.emu.stats();
    assert_eq!((s.updates_accepted, s.patches_not_applied), (1, 1));
}

#[tokio::test]
async fn updates_of_one_message_are_limited_to_five_a_second() {
    // The real limits (5/s per message).
    let h = start_with(EmulatorConfig {
        directory: directory(),
        ..EmulatorConfig::default()
    })
    .await;
    let a = h.send("interactive", &card("a", true)).await;
    let b = h.send("text", &text("b")).await;
    let t0 = std::time::Instant::now();
    let mut codes = Vec::new();
    for i in 0..6 {
        let r = h.patch(&a, &card(&i.to_string(), true)).await;
        if r.code() != 0 {
            assert_refused(&r, 400, 230020, "frequency limit");
            assert!(r.headers.get("x-ogw-ratelimit-reset").is_none());
        }
        codes.push(r.code());
    }
    // No window of a second holds more than five, so the first five always pass; the sixth is
    // refused whenever all six fell within one second (always, unless the machine stalled).
    assert_eq!(codes[..5], [0; 5]);
    if t0.elapsed() < Duration::from_secs(1) {
        assert_eq!(codes[5], 230020, "{codes:?}");
    }
    let refused = codes.iter().filter(|&&c| c == 230020).count() as u64;
    // Another message has its own budget, and PUT counts on it as PATCH does.
    assert_eq!(h.put(&b, "text", &text("b2")).await.code(), 0);
    let s = h.emu.stats();
    assert_eq!(s.throttled_message, refused);
    assert_eq!(s.errors_by_code.get(&230020).copied().unwrap_or(0), refused);
    assert_eq!(
        h.emu.message_view(&a).expect("view").patch_count as u64,
        6 - refused
    );
}

#[tokio::test]
async fn a_lowered_per_message_budget_applies_to_edits() {
    let h = start_with(EmulatorConfig {
        directory: directory(),
        ..EmulatorConfig::default()
    })
    .await;
    let t = h.send("text", &text("a")).await;
    h.emu.set_limits(Limits {
        message_update_per_sec: 1,
        ..Limits::default()
    });
    let t0 = std::time::Instant::now();
    assert_eq!(h.put(&t, "text", &text("1")).await.code(), 0);
    let second = h.put(&t, "text", &text("2")).await.code();
    if t0.elapsed() < Duration::from_secs(1) {
        assert_eq!(second, 230020);
    }
}

#[tokio::test]
async fn each_lifecycle_endpoint_has_its_own_app_budget() {
    let h = start_with(EmulatorConfig {
        directory: directory(),
        ..EmulatorConfig::default()
    })
    .await;
    let ids = [
        h.send("interactive", &card("a", true)).await,
        h.send("interactive", &card("b", true)).await,
        h.send("interactive", &card("c", true)).await,
    ];
    h.emu.set_limits(Limits {
        app_per_min: 2,
        ..Limits::default()
    });
    assert_eq!(h.patch(&ids[0], &card("1", true)).await.code(), 0);
    assert_eq!(h.patch(&ids[1], &card("1", true)).await.code(), 0);
    let r = h.patch(&ids[2], &card("1", true)).await;
    assert_refused(&r, 429, 99991400, "frequency limit");
    assert!(r.headers.get("x-ogw-ratelimit-reset").is_some());
    assert_eq!(
        r.headers
            .get("x-ogw-ratelimit-limit")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    // Recall counts on its own budget.
    assert_eq!(h.delete(&ids[2]).await.code(), 0);
}

// --------------------------------------------------------------------------------- PUT

#[tokio::test]
async fn put_edits_text_and_post_and_answers_the_message() {
    let h = start().await;
    let id = h.send("text", &text("v1")).await;
    let r = h.put(&id, "text", &text("v2")).await;
    assert_eq!(
        (r.status, r.code(), r.msg()),
        (StatusCode::OK, 0, "success")
    );
    let data = &r.body["data"];
    assert_eq!(data["message_id"], json!(id));
    assert_eq!(
        (data["msg_type"].as_str(), data["updated"].as_bool()),
        (Some("text"), Some(true))
    );
    assert_eq!(data["body"]["content"], json!(text("v2")));
    assert!(data["update_time"]
        .as_str()
        .is_some_and(|t| t.parse::<u64>().is_ok()));
    assert_eq!(data["sender"]["id"], "cli_demo_app");

    let post =
        json!({"en_us": {"title": "T", "content": [[{"tag": "text", "text": "a"}]]}}).to_string();
    let pid = h.send("post", &post).await;
    assert_eq!(h.put(&pid, "post", &post).await.code(), 0);

    let v = h.emu.message_view(&id).expect("view");
    assert_eq!((v.edit_count, v.versions[1].op), (1, VersionOp::Put));
    assert_eq!(v.content, json!({"text": "v2"}));
    assert_eq!(h.emu.stats().edits_accepted, 2);
}

#[tokio::test]
async fn put_checks_answer_their_codes() {
    let h = start().await;
    let other = h.token_of("cli_other", "other-secret").await;
    let t = h.send("text", &text("v1")).await;

    assert_refused(
        &h.put("om_unknown", "text", &text("x")).await,
        400,
        230001,
        "invalid message_id",
    );
    let c = h.send("interactive", &card("a", true)).await;
    assert_refused(
        &h.put(&c, "interactive", &card("b", true)).await,
        400,
        230001,
        "ext=invalid msg_type",
    );
    assert_refused(
        &h.put(&c, "text", &text("x")).await,
        400,
        230001,
        "ext=invalid msg_type",
    );
    assert_refused(
        &h.put(&t, "post", &text("x")).await,
        400,
        230001,
        "ext=invalid msg_type",
    );
    let theirs = h
        .send_as(&other, "chat_id", "oc_ops", "text", &text("x"))
        .await;
    assert_refused(
        &h.put(&theirs, "text", &text("y")).await,
        400,
        230071,
        "not the sender",
    );

    let (status, _) = h
        .control(
            Method::POST,
            "/_emulator/edit-count",
            Some(&json!({ "message_id": t, "edit_count": 19 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.put(&t, "text", &text("20th")).await.code(), 0);
    assert_refused(
        &h.put(&t, "text", &text("21st")).await,
        400,
        230072,
        "number of times",
    );

    let recalled = h.send("text", &text("x")).await;
    assert!(h.emu.recall(&recalled));
    assert_refused(
        &h.put(&recalled, "text", &text("y")).await,
        400,
        230011,
        "recalled",
    );
    let deleted = h.send("text", &text("x")).await;
    assert!(h.emu.mark_deleted(&deleted));
    assert_refused(
        &h.put(&deleted, "text", &text("y")).await,
        400,
        230110,
        "deleted",
    );

    // 150 KB for text, 30 KB for post; bad content.
    let fresh = h.send("text", &text("x")).await;
    let huge = text(&"x".repeat(151 * 1024));
    assert_refused(&h.put(&fresh, "text", &huge).await, 400, 230025, "limit");
    assert_eq!(
        h.put(&fresh, "text", &text(&"x".repeat(40 * 1024)))
            .await
            .code(),
        0
    );
    let big_post =
        json!({"en_us": {"content": [[{"tag": "text", "text": "x".repeat(31 * 1024)}]]}})
            .to_string();
    let pid = h
        .send(
            "post",
            &json!({"en_us": {"content": [[{"tag": "text", "text": "a"}]]}}).to_string(),
        )
        .await;
    assert_refused(&h.put(&pid, "post", &big_post).await, 400, 230025, "limit");
    assert_refused(
        &h.put(&fresh, "text", r#"{"txt":"x"}"#).await,
        400,
        230001,
        "invalid message content",
    );
}

#[tokio::test]
async fn the_admin_edit_and_recall_windows_are_configurable() {
    let h = start_with(EmulatorConfig {
        limits: Limits::disabled(),
        edit_window: Some(Duration::from_secs(3600)),
        recall_window: Some(Duration::from_secs(2 * 3600)),
        ..EmulatorConfig::default()
    })
    .await;
    let t = h.send("text", &text("v1")).await;
    h.emu.advance_clock(Duration::from_secs(3000));
    assert_eq!(h.put(&t, "text", &text("v2")).await.code(), 0);
    h.emu.advance_clock(Duration::from_secs(1000));
    assert_refused(
        &h.put(&t, "text", &text("v3")).await,
        400,
        230075,
        "time that can be edited",
    );
    let t2 = h.send("text", &text("x")).await;
    h.emu.advance_clock(Duration::from_secs(2 * 3600 + 1));
    assert_refused(&h.delete(&t).await, 400, 230009, "expired");
    assert_refused(&h.delete(&t2).await, 400, 230009, "expired");
}

#[tokio::test]
async fn without_admin_windows_old_messages_are_edited_and_recalled() {
    let h = start().await;
    let t = h.send("text", &text("v1")).await;
    h.emu.advance_clock(365 * DAY);
    assert_eq!(h.put(&t, "text", &text("v2")).await.code(), 0);
    assert_eq!(h.delete(&t).await.code(), 0);
}

// ------------------------------------------------------------------------------ DELETE

#[tokio::test]
async fn delete_recalls_once_and_checks_the_caller() {
    let h = start().await;
    let other = h.token_of("cli_other", "other-secret").await;
    let id = h.send("interactive", &card("a", true)).await;
    let r = h.delete(&id).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"code": 0, "msg": "success", "data": {}}));
    assert!(h.emu.message_view(&id).expect("view").recalled);
    assert!(h
        .emu
        .messages()
        .iter()
        .any(|m| m.message_id == id && m.recalled));
    // Recalled already: 230011 (the lifecycle §1.3 recommendation); later updates too.
    assert_refused(&h.delete(&id).await, 400, 230011, "recalled");
    assert_refused(
        &h.patch(&id, &card("b", true)).await,
        400,
        230011,
        "recalled",
    );

    assert_refused(
        &h.delete("om_unknown").await,
        400,
        230001,
        "invalid message_id",
    );
    let theirs = h
        .send_as(&other, "chat_id", "oc_ops", "text", &text("x"))
        .await;
    assert_refused(&h.delete(&theirs).await, 400, 230026, "No permission");
    let deleted = h.send("text", &text("x")).await;
    assert!(h.emu.mark_deleted(&deleted));
    assert_refused(&h.delete(&deleted).await, 400, 230110, "deleted");
    let divider =
        json!({"type": "divider", "params": {"divider_text": {"text": "new"}}}).to_string();
    let system = h
        .send_as(&h.token, "open_id", "ou_alice", "system", &divider)
        .await;
    assert_refused(&h.delete(&system).await, 400, 230054, "not supported");
    // The other app may recall its own.
    assert_eq!(h.delete_as(&other, &theirs).await.code(), 0);
    assert_eq!(h.emu.stats().recalls_accepted, 2);
}

// ----------------------------------------------------------------- control and faults

#[tokio::test]
async fn control_endpoints_refuse_unknown_messages() {
    let h = start().await;
    for (path, body) in [
        ("/_emulator/delete", json!({"message_id": "om_nope"})),
        (
            "/_emulator/edit-count",
            json!({"message_id": "om_nope", "edit_count": 3}),
        ),
    ] {
        let (status, reply) = h.control(Method::POST, path, Some(&body)).await;
        assert_eq!(
            (status, reply["ok"].as_bool()),
            (StatusCode::NOT_FOUND, Some(false)),
            "{path}"
        );
    }
    let (status, _) = h
        .control(Method::GET, "/_emulator/messages/om_nope", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h
        .control(
            Method::POST,
            "/_emulator/clock",
            Some(&json!({"advance": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(h.emu.message_view("om_nope").is_none());
    assert!(!h.emu.mark_deleted("om_nope") && !h.emu.set_edit_count("om_nope", 1));
}

#[tokio::test]
async fn faults_reach_the_lifecycle_endpoints() {
    let h = start().await;
    let c = h.send("interactive", &card("a", true)).await;
    let t = h.send("text", &text("a")).await;
    let script = |target: &str, fault: Value| json!({ "target": target, "fault": fault });
    for body in [
        script("update_card", json!({"kind": "code", "code": 230020})),
        script("edit", json!({"kind": "status", "status": 503})),
        script(
            "recall",
            json!({"kind": "code", "code": 230001,
            "msg": "Your request contains an invalid request parameter, ext=Internal Error"}),
        ),
    ] {
        let (status, _) = h
            .control(Method::POST, "/_emulator/faults", Some(&body))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_refused(
        &h.patch(&c, &card("b", true)).await,
        400,
        230020,
        "frequency limit",
    );
    let r = h.put(&t, "text", &text("b")).await;
    assert_eq!(r.status.as_u16(), 503);
    assert_refused(&h.delete(&t).await, 400, 230001, "ext=Internal Error");
    // One-shot: the next calls go through, and the faulted ones changed nothing before.
    assert_eq!(h.emu.message_view(&c).expect("view").patch_count, 0);
    assert_eq!(h.patch(&c, &card("b", true)).await.code(), 0);
    assert_eq!(h.put(&t, "text", &text("b")).await.code(), 0);
    assert_eq!(h.delete(&t).await.code(), 0);
    // Rust side, same mechanism.
    h.emu
        .push_fault(FaultTarget::UpdateCard, Fault::Status { status: 500 });
    assert_eq!(h.patch(&c, &card("c", true)).await.status.as_u16(), 500);
    assert_eq!(h.emu.stats().faults_injected, 4);
}
