//! End-to-end tests of the emulator over real HTTP (reqwest against a started emulator).
//!
//! Each test starts its own emulator on a random port, so tests run in parallel without
//! sharing state. Functional tests run with limits off; rate-limit tests set small limits so
//! they trip after a handful of requests and never need to sleep.

use lark_emulator::{
    Directory, Emulator, EmulatorConfig, EmulatorHandle, Fault, FaultConfig, FaultTarget, Limits,
    Webhook,
};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Harness {
    emu: EmulatorHandle,
    http: reqwest::Client,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn code(&self) -> i64 {
        self.body["code"].as_i64().expect("code")
    }
    fn msg(&self) -> &str {
        self.body["msg"].as_str().unwrap_or_default()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn start_with(config: EmulatorConfig) -> Harness {
    let emu = Emulator::start(config, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("emulator starts");
    Harness {
        emu,
        http: reqwest::Client::new(),
    }
}

/// Demo directory, limits off.
async fn start() -> Harness {
    start_with(EmulatorConfig {
        limits: Limits::disabled(),
        ..EmulatorConfig::default()
    })
    .await
}

async fn to_reply(resp: reqwest::Response) -> Reply {
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

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.emu.base_url(), path)
    }

    async fn post(&self, path: &str, body: &Value) -> Reply {
        to_reply(
            self.http
                .post(self.url(path))
                .json(body)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    async fn get(&self, path: &str) -> Value {
        let r = self.http.get(self.url(path)).send().await.expect("request");
        r.json().await.expect("json")
    }

    async fn token_reply(&self, app_id: &str, secret: &str) -> Reply {
        self.post(
            "/open-apis/auth/v3/tenant_access_token/internal",
            &json!({ "app_id": app_id, "app_secret": secret }),
        )
        .await
    }

    async fn token(&self) -> String {
        let r = self.token_reply("cli_demo_app", "demo-secret").await;
        assert_eq!(r.code(), 0, "{:?}", r.body);
        r.body["tenant_access_token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    async fn authed(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: &Value,
    ) -> Reply {
        to_reply(
            self.http
                .request(method, self.url(path))
                .bearer_auth(token)
                .json(body)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    async fn send(&self, token: &str, id_type: &str, body: Value) -> Reply {
        let path = format!("/open-apis/im/v1/messages?receive_id_type={id_type}");
        self.authed(reqwest::Method::POST, &path, token, &body)
            .await
    }

    async fn send_text(&self, token: &str, id_type: &str, id: &str, text: &str) -> Reply {
        self.send(token, id_type, text_body(id, text)).await
    }

    async fn webhook(&self, token: &str, body: &Value) -> Reply {
        self.post(&format!("/open-apis/bot/v2/hook/{token}"), body)
            .await
    }
}

fn text_body(id: &str, text: &str) -> Value {
    json!({
        "receive_id": id,
        "msg_type": "text",
        "content": json!({ "text": text }).to_string(),
    })
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Every error carries the log id in both the header and the body (§2.3, §12.1).
fn assert_error(r: &Reply, status: u16, code: i64) {
    assert_eq!(r.status.as_u16(), status, "{:?}", r.body);
    assert_eq!(r.code(), code, "{:?}", r.body);
    let log_id = r.header("x-tt-logid").expect("X-Tt-Logid header");
    assert_eq!(r.body["error"]["log_id"], json!(log_id));
    assert!(r.body["error"]["troubleshooter"].is_string());
}

// ---------------------------------------------------------------- token (§1)

#[tokio::test]
async fn token_issue_reuse_and_errors() {
    let h = start().await;
    let first = h.token_reply("cli_demo_app", "demo-secret").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["msg"], "ok");
    assert!(first.body.get("data").is_none(), "flat body (§1.1)");
    assert!(first.header("x-tt-logid").is_some());
    let token = first.body["tenant_access_token"].as_str().expect("token");
    assert!(token.starts_with("t-"));
    assert_eq!(first.body["expire"], 7200);

    // ≥ 30 min left → the same token again (§1.2).
    let again = h.token_reply("cli_demo_app", "demo-secret").await;
    assert_eq!(again.body["tenant_access_token"], json!(token));
    assert!(again.body["expire"].as_u64().expect("expire") <= 7200);

    assert_error(&h.token_reply("cli_demo_app", "nope").await, 400, 10014);
    let unknown = h.token_reply("cli_nobody", "x").await;
    assert_error(&unknown, 400, 10003);
    assert_eq!(unknown.msg(), "invalid param");

    let stats = h.emu.stats();
    assert_eq!(stats.tokens_issued, 1);
    assert_eq!(stats.requests, 4);
}

#[tokio::test]
async fn auth_errors_and_revocation() {
    let h = start().await;
    let body = text_body("ou_alice", "hi");
    let path = "/open-apis/im/v1/messages?receive_id_type=open_id";

    let missing = to_reply(
        h.http
            .post(h.url(path))
            .json(&body)
            .send()
            .await
            .expect("req"),
    )
    .await;
    assert_error(&missing, 400, 99991661);
    assert_error(
        &h.authed(reqwest::Method::POST, path, "abc", &body).await,
        400,
        99991671,
    );
    assert_error(
        &h.authed(reqwest::Method::POST, path, "t-unknown", &body)
            .await,
        400,
        99991663,
    );

    let token = h.token().await;
    assert_eq!(h.send(&token, "open_id", body.clone()).await.code(), 0);
    h.emu.revoke_tokens();
    assert_error(
        &h.send(&token, "open_id", body.clone()).await,
        400,
        99991663,
    );

    // A fresh token works again.
    let fresh = h.token().await;
    assert_ne!(fresh, token);
    assert_eq!(h.send(&fresh, "open_id", body).await.code(), 0);

    let stats = h.emu.stats();
    assert_eq!(stats.token_rejections, 4);
    assert_eq!(stats.errors_by_code.get(&99991663), Some(&2));
}

// ---------------------------------------------------------------- send (§2)

#[tokio::test]
async fn send_to_each_receive_id_type() {
    let h = start().await;
    let token = h.token().await;
    let cases = [
        ("open_id", "ou_alice", "p2p:ou_alice"),
        ("union_id", "on_alice", "p2p:ou_alice"),
        ("user_id", "alice", "p2p:ou_alice"),
        ("email", "Bob@Example.com", "p2p:ou_bob"),
        ("chat_id", "oc_ops", "oc_ops"),
    ];
    for (id_type, id, _) in cases {
        let r = h.send_text(&token, id_type, id, "hello").await;
        assert_eq!(r.status, StatusCode::OK, "{id_type}: {:?}", r.body);
        assert_eq!(r.code(), 0);
        assert_eq!(r.msg(), "success");
        assert!(r.header("x-tt-logid").is_some());
        let data = &r.body["data"];
        assert!(data["message_id"].as_str().expect("id").starts_with("om_"));
        assert!(data["chat_id"].as_str().expect("chat").starts_with("oc_"));
        assert_eq!(data["msg_type"], "text");
        assert_eq!(
            data["sender"],
            json!({"id": "cli_demo_app", "id_type": "app_id", "sender_type": "app",
                   "tenant_key": data["sender"]["tenant_key"]})
        );
        assert_eq!(data["body"]["content"], json!(r#"{"text":"hello"}"#));
        let ms: u64 = data["create_time"]
            .as_str()
            .expect("ms")
            .parse()
            .expect("num");
        assert!(ms > 1_600_000_000_000, "create_time in ms");
    }
    let msgs = h.emu.messages();
    assert_eq!(msgs.len(), cases.len());
    for (m, (id_type, id, canonical)) in msgs.iter().zip(cases) {
        assert_eq!(m.via, "api");
        assert_eq!(m.receive_id_type, id_type);
        assert_eq!(m.receive_id, id);
        assert_eq!(m.chat_id, canonical);
        assert_eq!(m.content, json!({"text": "hello"}));
    }
    assert_eq!(h.emu.stats().accepted, 5);
}

#[tokio::test]
async fn send_refusals() {
    let h = start().await;
    let token = h.token().await;

    assert_error(
        &h.send_text(&token, "chat_id", "oc_outside", "x").await,
        400,
        230002,
    );
    assert_error(
        &h.send_text(&token, "open_id", "ou_carol", "x").await,
        400,
        230013,
    );

    let unknown = h.send_text(&token, "open_id", "ou_nobody", "x").await;
    assert_error(&unknown, 400, 230001);
    assert!(unknown.msg().ends_with("ext=invalid receive_id"));

    let bad_type = h.send_text(&token, "phone", "123", "x").await;
    assert_error(&bad_type, 400, 230001);
    assert!(bad_type.msg().ends_with("ext=invalid receive_id_type"));

    // content as an object instead of a string (§2.1).
    let object_content =
        json!({"receive_id": "ou_alice", "msg_type": "text", "content": {"text": "x"}});
    let r = h.send(&token, "open_id", object_content).await;
    assert_error(&r, 400, 230001);
    assert!(r
        .msg()
        .ends_with("ext=invalid message content. validate content fail"));

    let wrong_shape =
        json!({"receive_id": "ou_alice", "msg_type": "image", "content": "{\"text\":\"x\"}"});
    assert_error(&h.send(&token, "open_id", wrong_shape).await, 400, 230001);

    let empty = json!({"receive_id": "ou_alice", "msg_type": "text", "content": ""});
    let r = h.send(&token, "open_id", empty).await;
    assert!(
        r.msg().ends_with("ext=content cannot be empty"),
        "{}",
        r.msg()
    );

    let mut long_uuid = text_body("ou_alice", "x");
    long_uuid["uuid"] = json!("u".repeat(51));
    assert_error(&h.send(&token, "open_id", long_uuid).await, 400, 230001);

    // An interactive card over 30 KiB (§2.4).
    let card = json!({"elements": [{"tag": "markdown", "content": "x".repeat(31 * 1024)}]});
    let oversize =
        json!({"receive_id": "oc_ops", "msg_type": "interactive", "content": card.to_string()});
    assert_error(&h.send(&token, "chat_id", oversize).await, 400, 230025);

    assert!(
        h.emu.messages().is_empty(),
        "refused sends are not recorded"
    );
    let stats = h.emu.stats();
    assert_eq!(stats.accepted, 0);
    assert_eq!(stats.errors_by_code.get(&230001), Some(&6));
}

#[tokio::test]
async fn disabled_bot_and_resigned_user() {
    let mut dir = Directory::demo();
    dir.apps.push(lark_emulator::App {
        app_id: "cli_nobot".into(),
        app_secret: "s".into(),
        bot_enabled: false,
        scopes: None,
    });
    if let Some(bob) = dir.users.iter_mut().find(|u| u.open_id == "ou_bob") {
        bob.resigned = true;
    }
    let h = start_with(EmulatorConfig {
        directory: dir,
        limits: Limits::disabled(),
        ..EmulatorConfig::default()
    })
    .await;
    let token = h.token().await;
    assert_error(
        &h.send_text(&token, "open_id", "ou_bob", "x").await,
        400,
        230029,
    );
    let nobot = h.token_reply("cli_nobot", "s").await;
    let nobot = nobot.body["tenant_access_token"].as_str().expect("token");
    assert_error(
        &h.send_text(nobot, "open_id", "ou_alice", "x").await,
        400,
        230006,
    );
}

/// An app with a scope list: a missing scope is refused by the gateway (99991672) before the
/// API looks at anything else, with the scopes named in `msg` (§3, §5).
#[tokio::test]
async fn missing_scopes_are_refused_before_anything_else() {
    let mut dir = Directory::demo();
    dir.apps.push(lark_emulator::App {
        app_id: "cli_narrow".into(),
        app_secret: "s".into(),
        bot_enabled: false,
        scopes: Some(vec!["im:message:send_as_bot".into()]),
    });
    dir.apps.push(lark_emulator::App {
        app_id: "cli_mute".into(),
        app_secret: "s".into(),
        bot_enabled: true,
        scopes: Some(vec!["contact:user.id:readonly".into()]),
    });
    let h = start_with(EmulatorConfig {
        directory: dir,
        limits: Limits::disabled(),
        ..EmulatorConfig::default()
    })
    .await;
    let token = |r: Reply| {
        r.body["tenant_access_token"]
            .as_str()
            .expect("token")
            .to_string()
    };
    let narrow = token(h.token_reply("cli_narrow", "s").await);
    let mute = token(h.token_reply("cli_mute", "s").await);
    let lookup = |t: String| {
        let h = &h;
        async move {
            h.authed(
                reqwest::Method::POST,
                "/open-apis/contact/v3/users/batch_get_id",
                &t,
                &json!({"mobiles": ["+8613800000001"]}),
            )
            .await
        }
    };
    let r = lookup(narrow.clone()).await;
    assert_error(&r, 400, 99991672);
    assert!(
        r.body["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("[contact:user.id:readonly]"),
        "{:?}",
        r.body
    );
    assert_eq!(lookup(mute.clone()).await.code(), 0);
    // The narrow app may send, so its request reaches the bot-ability check (230006).
    assert_error(
        &h.send_text(&narrow, "open_id", "ou_alice", "x").await,
        400,
        230006,
    );
    // The mute app cannot send at all: the scope check comes first, even for a receiver that
    // does not exist.
    let r = h.send_text(&mute, "open_id", "ou_nobody", "x").await;
    assert_error(&r, 400, 99991672);
    assert!(r.body["msg"]
        .as_str()
        .unwrap_or_default()
        .contains("im:message:send_as_bot"));
    assert!(h.emu.messages().is_empty());
}

/// A disabled bot is reported before the receiver is looked at, so a send to a receiver that
/// cannot exist tells whether the bot ability is on without delivering anything
/// (`lark-sink check` relies on this order).
#[tokio::test]
async fn bot_ability_is_checked_before_the_receiver() {
    let mut dir = Directory::demo();
    dir.apps.push(lark_emulator::App {
        app_id: "cli_nobot".into(),
        app_secret: "s".into(),
        bot_enabled: false,
        scopes: None,
    });
    let h = start_with(EmulatorConfig {
        directory: dir,
        limits: Limits::disabled(),
        ..EmulatorConfig::default()
    })
    .await;
    let good = h.token().await;
    let r = h.token_reply("cli_nobot", "s").await;
    let nobot = r.body["tenant_access_token"].as_str().expect("token");
    assert_error(
        &h.send_text(nobot, "open_id", "ou_nobody", "x").await,
        400,
        230006,
    );
    let r = h.send_text(&good, "open_id", "ou_nobody", "x").await;
    assert_error(&r, 400, 230001);
    assert!(r.body["msg"]
        .as_str()
        .unwrap_or_default()
        .ends_with("ext=invalid receive_id"));
    assert!(h.emu.messages().is_empty());
}

#[tokio::test]
async fn uuid_duplicate_is_absorbed() {
    let h = start().await;
    let token = h.token().await;
    let mut body = text_body("oc_team", "once");
    body["uuid"] = json!("orders-3-128812");
    let first = h.send(&token, "chat_id", body.clone()).await;
    let second = h.send(&token, "chat_id", body).await;
    assert_eq!(second.code(), 0);
    assert_eq!(
        second.body["data"], first.body["data"],
        "original data replayed"
    );
    assert_eq!(h.emu.messages().len(), 1);
    assert_eq!(h.emu.messages()[0].uuid.as_deref(), Some("orders-3-128812"));
    let stats = h.emu.stats();
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.duplicates_absorbed, 1);
}

// ---------------------------------------------------------------- reply (§2.5)

#[tokio::test]
async fn reply_lands_in_the_parents_chat_with_its_links() {
    let mut dir = Directory::demo();
    dir.chats.push(lark_emulator::Chat {
        chat_id: "oc_flat".into(),
        name: "No threads".into(),
        bot_member: true,
        thread_replies: false,
    });
    let h = start_with(EmulatorConfig {
        directory: dir,
        limits: Limits::disabled(),
        ..EmulatorConfig::default()
    })
    .await;
    let token = h.token().await;
    let parent = h.send_text(&token, "chat_id", "oc_ops", "root").await;
    assert_eq!(parent.code(), 0, "{:?}", parent.body);
    let parent_id = parent.body["data"]["message_id"]
        .as_str()
        .expect("id")
        .to_string();
    let reply = |id: &str, body: Value| {
        let path = format!("/open-apis/im/v1/messages/{id}/reply");
        let token = token.clone();
        let h = &h;
        async move { h.authed(reqwest::Method::POST, &path, &token, &body).await }
    };
    let text = |t: &str| json!({"msg_type": "text", "content": json!({"text": t}).to_string()});

    // A plain reply: same chat, parent and root set, no thread.
    let mut body = text("first");
    body["uuid"] = json!("r-1");
    let r1 = reply(&parent_id, body.clone()).await;
    assert_eq!(r1.code(), 0, "{:?}", r1.body);
    let d1 = &r1.body["data"];
    assert_eq!(d1["parent_id"], json!(parent_id));
    assert_eq!(d1["root_id"], json!(parent_id));
    assert!(d1.get("thread_id").is_none(), "{d1}");
    assert_eq!(d1["chat_id"], json!("oc_ops"));
    // uuid de-dup is shared with send: the same uuid replays the original data.
    let again = reply(&parent_id, body).await;
    assert_eq!(again.body["data"], r1.body["data"]);

    // A thread reply to the reply: root stays the first message, a thread is opened.
    let r1_id = d1["message_id"].as_str().expect("id").to_string();
    let mut body = text("in thread");
    body["reply_in_thread"] = json!(true);
    let r2 = reply(&r1_id, body).await;
    assert_eq!(r2.code(), 0, "{:?}", r2.body);
    let d2 = &r2.body["data"];
    assert_eq!(d2["parent_id"], json!(r1_id));
    assert_eq!(d2["root_id"], json!(parent_id));
    let thread = d2["thread_id"].as_str().expect("thread id").to_string();
    assert!(thread.starts_with("omt_"), "{thread}");
    // Replying (without the flag) to a threaded message stays in its thread.
    let r2_id = d2["message_id"].as_str().expect("id").to_string();
    let r3 = reply(&r2_id, text("still threaded")).await;
    assert_eq!(r3.body["data"]["thread_id"], json!(thread));

    let msgs = h.emu.messages();
    assert_eq!(msgs.len(), 4, "the uuid duplicate is absorbed");
    assert_eq!(msgs[1].receive_id_type, "message_id");
    assert_eq!(msgs[1].receive_id, parent_id);
    assert_eq!(msgs[1].chat_id, "oc_ops");
    assert_eq!(msgs[2].thread_id.as_deref(), Some(thread.as_str()));

    // Refusals.
    assert_error(&reply("om_nope", text("x")).await, 400, 230001);
    let sys = json!({"msg_type": "system", "content": json!({"type": "divider", "params": {"divider_text": {"text": "x"}}}).to_string()});
    let r = reply(&parent_id, sys).await;
    assert_error(&r, 400, 230001);
    assert!(r.msg().ends_with("ext=invalid msg_type"), "{}", r.msg());
    assert_error(
        &reply(&parent_id, json!({"msg_type": "image", "content": "{}"})).await,
        400,
        230001,
    );
    let flat = h.send_text(&token, "chat_id", "oc_flat", "flat").await;
    let flat_id = flat.body["data"]["message_id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut body = text("thread?");
    body["reply_in_thread"] = json!(true);
    assert_error(&reply(&flat_id, body).await, 400, 230071);
    assert_eq!(reply(&flat_id, text("plain is fine")).await.code(), 0);
    assert!(h.emu.recall(&flat_id));
    assert_error(&reply(&flat_id, text("too late")).await, 400, 230011);
    // Webhook messages are not visible to the app.
    h.webhook(
        "hook-plain",
        &json!({"msg_type": "text", "content": {"text": "hi"}}),
    )
    .await;
    let hook_msg = h
        .emu
        .messages()
        .last()
        .expect("webhook message")
        .message_id
        .clone();
    assert_error(&reply(&hook_msg, text("x")).await, 400, 230050);
}

// ---------------------------------------------------------------- limits (§4)

#[tokio::test]
async fn app_rate_limit_answers_429_with_reset() {
    let h = start().await;
    // The per-minute window keeps the test independent of machine speed.
    h.emu.set_limits(Limits {
        app_per_min: 3,
        receiver_per_sec: 0,
        ..Limits::default()
    });
    let token = h.token().await;
    for _ in 0..3 {
        assert_eq!(
            h.send_text(&token, "chat_id", "oc_ops", "x").await.code(),
            0
        );
    }
    let r = h.send_text(&token, "chat_id", "oc_ops", "x").await;
    assert_error(&r, 429, 99991400);
    assert_eq!(r.msg(), "request trigger frequency limit");
    assert_eq!(r.header("x-ogw-ratelimit-limit"), Some("3"));
    let reset: u64 = r
        .header("x-ogw-ratelimit-reset")
        .expect("reset header")
        .parse()
        .expect("whole seconds");
    assert!(reset >= 1);

    // Other APIs have their own budget.
    let lookup = h
        .authed(
            reqwest::Method::POST,
            "/open-apis/contact/v3/users/batch_get_id",
            &token,
            &json!({"emails": ["alice@example.com"]}),
        )
        .await;
    assert_eq!(lookup.code(), 0);

    let stats = h.emu.stats();
    assert_eq!(stats.throttled_app, 1);
    assert_eq!(stats.accepted, 3);
}

#[tokio::test]
async fn per_receiver_limit_is_230020() {
    let h = start().await;
    h.emu.set_limits(Limits {
        receiver_per_sec: 2,
        ..Limits::default()
    });
    let token = h.token().await;
    // Two different id types for the same user share one budget.
    assert_eq!(
        h.send_text(&token, "open_id", "ou_alice", "1").await.code(),
        0
    );
    assert_eq!(
        h.send_text(&token, "email", "alice@example.com", "2")
            .await
            .code(),
        0
    );
    let r = h.send_text(&token, "user_id", "alice", "3").await;
    assert_error(&r, 400, 230020);
    assert!(r.header("x-ogw-ratelimit-reset").is_none());
    // Another receiver is unaffected.
    assert_eq!(
        h.send_text(&token, "chat_id", "oc_ops", "4").await.code(),
        0
    );
    let stats = h.emu.stats();
    assert_eq!(stats.throttled_receiver, 1);
    assert_eq!(stats.accepted, 3);
}

// ---------------------------------------------------------------- faults (§12.4)

#[tokio::test]
async fn scripted_faults_in_order() {
    let h = start().await;
    let token = h.token().await;
    h.emu
        .push_fault(FaultTarget::Send, Fault::Status { status: 503 });
    h.emu
        .push_fault(FaultTarget::Send, Fault::Status { status: 500 });
    h.emu.push_fault(
        FaultTarget::Send,
        Fault::Code {
            http_status: 429,
            code: 99991400,
            msg: "request trigger frequency limit".into(),
            ratelimit_reset_secs: Some(7),
        },
    );
    h.emu.push_fault(FaultTarget::Send, Fault::Slow { ms: 20 });

    let r = h.send_text(&token, "chat_id", "oc_ops", "x").await;
    assert_eq!(r.status.as_u16(), 503);
    assert!(r.body.is_string(), "503 has a plain-text body");

    let r = h.send_text(&token, "chat_id", "oc_ops", "x").await;
    assert_error(&r, 500, 1500);

    let r = h.send_text(&token, "chat_id", "oc_ops", "x").await;
    assert_error(&r, 429, 99991400);
    assert_eq!(r.header("x-ogw-ratelimit-reset"), Some("7"));

    // Slow: answered normally after the delay.
    assert_eq!(
        h.send_text(&token, "chat_id", "oc_ops", "x").await.code(),
        0
    );
    // Queue drained.
    assert_eq!(
        h.send_text(&token, "chat_id", "oc_ops", "x").await.code(),
        0
    );

    assert_eq!(h.emu.messages().len(), 2, "faulted requests record nothing");
    let stats = h.emu.stats();
    assert_eq!(stats.faults_injected, 4);
    assert_eq!(stats.errors_by_code.get(&1500), Some(&1));
}

#[tokio::test]
async fn a_late_answer_comes_after_the_message_was_made() {
    let h = start().await;
    let token = h.token().await;
    h.emu
        .push_fault(FaultTarget::Send, Fault::LateAnswer { ms: 1500 });
    let started = std::time::Instant::now();
    let send = h.send_text(&token, "chat_id", "oc_ops", "late");
    tokio::pin!(send);
    // The message is in the chat while its answer is still held back.
    let made = async {
        while h.emu.messages().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        _ = &mut send => panic!("answered before the message was seen"),
        _ = made => {}
    }
    let r = send.await;
    assert_eq!(r.code(), 0);
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
    assert_eq!(
        r.body["data"]["message_id"].as_str(),
        Some(h.emu.messages()[0].message_id.as_str())
    );
    assert_eq!(h.emu.stats().faults_injected, 1);
}

#[tokio::test]
async fn code_fault_on_other_targets_and_random_faults() {
    let h = start().await;
    // A scripted token failure; the token endpoint answers normally afterwards.
    h.emu
        .push_fault(FaultTarget::Token, Fault::Status { status: 502 });
    let r = h.token_reply("cli_demo_app", "demo-secret").await;
    assert_eq!(r.status.as_u16(), 502);
    let token = h.token().await;

    h.emu.push_fault(
        FaultTarget::Send,
        Fault::Code {
            http_status: 0,
            code: 230020,
            msg: String::new(),
            ratelimit_reset_secs: None,
        },
    );
    let r = h.send_text(&token, "chat_id", "oc_ops", "x").await;
    assert_error(&r, 400, 230020);
    assert_eq!(r.msg(), "This operation triggers the frequency limit.");

    h.emu.set_fault_config(FaultConfig {
        error_5xx_rate: 1.0,
        ..FaultConfig::default()
    });
    let r = h.send_text(&token, "chat_id", "oc_ops", "x").await;
    assert!(r.status.is_server_error());
    // Random faults only hit sends.
    assert_eq!(h.token_reply("cli_demo_app", "demo-secret").await.code(), 0);

    h.emu.set_fault_config(FaultConfig {
        throttle_rate: 1.0,
        ..FaultConfig::default()
    });
    let r = h.send_text(&token, "chat_id", "oc_ops", "x").await;
    assert_error(&r, 429, 99991400);
    assert_eq!(r.header("x-ogw-ratelimit-reset"), Some("1"));

    // A receiver that always fails, while others are fine.
    h.emu.set_fault_config(FaultConfig {
        failing_receivers: vec!["oc_team".into()],
        ..FaultConfig::default()
    });
    let r = h.send_text(&token, "chat_id", "oc_team", "x").await;
    assert_error(&r, 500, 1500);
    assert_eq!(
        h.send_text(&token, "chat_id", "oc_ops", "x").await.code(),
        0
    );

    h.emu.set_fault_config(FaultConfig::default());
    assert_eq!(
        h.send_text(&token, "chat_id", "oc_ops", "x").await.code(),
        0
    );
    assert_eq!(h.emu.messages().len(), 2);
    assert_eq!(h.emu.stats().faults_injected, 5);
}

// ---------------------------------------------------------------- batch_get_id (§5)

#[tokio::test]
async fn batch_get_id_found_and_not_found() {
    let h = start().await;
    let token = h.token().await;
    let body = json!({
        "emails": ["ALICE@example.com", "nobody@example.com", "carol@example.com"],
        "mobiles": ["13800000002"],
    });
    let r = h
        .authed(
            reqwest::Method::POST,
            "/open-apis/contact/v3/users/batch_get_id?user_id_type=open_id",
            &token,
            &body,
        )
        .await;
    assert_eq!(r.code(), 0, "{:?}", r.body);
    assert_eq!(
        r.body["data"]["user_list"],
        json!([
            {"user_id": "ou_alice", "email": "ALICE@example.com"},
            {"email": "nobody@example.com"},
            {"email": "carol@example.com"},
            {"user_id": "ou_bob", "mobile": "13800000002"},
        ])
    );

    let r = h
        .authed(
            reqwest::Method::POST,
            "/open-apis/contact/v3/users/batch_get_id?user_id_type=user_id",
            &token,
            &json!({"emails": ["bob@example.com"]}),
        )
        .await;
    assert_eq!(r.body["data"]["user_list"][0]["user_id"], "bob");

    let too_many: Vec<String> = (0..51).map(|i| format!("u{i}@example.com")).collect();
    let r = h
        .authed(
            reqwest::Method::POST,
            "/open-apis/contact/v3/users/batch_get_id",
            &token,
            &json!({ "emails": too_many }),
        )
        .await;
    assert_error(&r, 400, 99992402);

    // Every call is counted, and each email / mobile of a well-formed request, in any spelling.
    let counted = h.emu.lookups();
    assert_eq!(counted.calls, 3);
    assert_eq!(counted.email("alice@example.com"), 1);
    assert_eq!(counted.email("bob@example.com"), 1);
    assert_eq!(
        counted.email("u0@example.com"),
        0,
        "the refused call asked nothing"
    );
    assert_eq!(counted.mobile("+8613800000002"), 1);
    let over_http = h.get("/_emulator/lookups").await;
    assert_eq!(over_http["calls"], 3);
    assert_eq!(over_http["mobiles"]["+8613800000002"], 1);
    assert_eq!(over_http["emails"]["nobody@example.com"], 1);
    h.emu.reset();
    assert_eq!(h.emu.lookups(), lark_emulator::LookupStats::default());
}

// ---------------------------------------------------------------- urgent (§6)

#[tokio::test]
async fn urgent_reports_invalid_ids() {
    let h = start().await;
    let token = h.token().await;
    let sent = h.send_text(&token, "open_id", "ou_alice", "page").await;
    let mid = sent.body["data"]["message_id"]
        .as_str()
        .expect("id")
        .to_string();
    let urgent = |kind: &str, id: &str| {
        format!("/open-apis/im/v1/messages/{id}/urgent_{kind}?user_id_type=open_id")
    };

    let r = h
        .authed(
            reqwest::Method::PATCH,
            &urgent("app", &mid),
            &token,
            &json!({"user_id_list": ["ou_alice", "ou_bob", "ou_nobody"]}),
        )
        .await;
    assert_eq!(r.code(), 0, "{:?}", r.body);
    assert_eq!(
        r.body["data"]["invalid_user_id_list"],
        json!(["ou_bob", "ou_nobody"])
    );

    // All invalid → 230001.
    let r = h
        .authed(
            reqwest::Method::PATCH,
            &urgent("sms", &mid),
            &token,
            &json!({"user_id_list": ["ou_bob"]}),
        )
        .await;
    assert_error(&r, 400, 230001);

    // Unknown message.
    let r = h
        .authed(
            reqwest::Method::PATCH,
            &urgent("phone", "om_unknown"),
            &token,
            &json!({"user_id_list": ["ou_alice"]}),
        )
        .await;
    assert_error(&r, 400, 230001);

    // Empty list.
    let r = h
        .authed(
            reqwest::Method::PATCH,
            &urgent("app", &mid),
            &token,
            &json!({"user_id_list": []}),
        )
        .await;
    assert_error(&r, 400, 99992402);

    // Group message: unavailable carol is invalid, bob fine.
    let sent = h.send_text(&token, "chat_id", "oc_team", "all hands").await;
    let gid = sent.body["data"]["message_id"]
        .as_str()
        .expect("id")
        .to_string();
    let r = h
        .authed(
            reqwest::Method::PATCH,
            &urgent("phone", &gid),
            &token,
            &json!({"user_id_list": ["ou_bob", "ou_carol"]}),
        )
        .await;
    assert_eq!(r.body["data"]["invalid_user_id_list"], json!(["ou_carol"]));

    let urgents = h.emu.urgents();
    assert_eq!(urgents.len(), 2);
    assert_eq!(urgents[0].kind, "app");
    assert_eq!(urgents[0].user_ids, vec!["ou_alice"]);
    assert_eq!(urgents[1].kind, "phone");
    assert_eq!(urgents[1].message_id, gid);
}

// ---------------------------------------------------------------- webhooks (§8)

fn signed(secret: &str, ts: i64, text: &str) -> Value {
    json!({
        "timestamp": ts.to_string(),
        "sign": lark_emulator::webhook_sign(secret, ts),
        "msg_type": "text",
        "content": {"text": text},
    })
}

#[tokio::test]
async fn webhook_plain_and_signed() {
    let h = start().await;
    let ok = h
        .webhook(
            "hook-plain",
            &json!({"msg_type": "text", "content": {"text": "hi"}}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        ok.body,
        json!({"code": 0, "msg": "success", "data": {}, "StatusCode": 0, "StatusMessage": "success"})
    );

    let now = now_secs();
    assert_eq!(
        h.webhook("hook-signed", &signed("demo", now, "signed"))
            .await
            .code(),
        0
    );

    let bad = h.webhook("hook-signed", &signed("wrong", now, "x")).await;
    assert_eq!(bad.status, StatusCode::OK, "webhook errors are HTTP 200");
    assert_eq!(bad.code(), 19021);
    let stale = h
        .webhook("hook-signed", &signed("demo", now - 4000, "x"))
        .await;
    assert_eq!(stale.code(), 19021);
    let unsigned = h
        .webhook(
            "hook-signed",
            &json!({"msg_type": "text", "content": {"text": "x"}}),
        )
        .await;
    assert_eq!(unsigned.code(), 19021);

    assert_eq!(h.webhook("hook-nope", &json!({})).await.code(), 19001);
    let no_type = h
        .webhook("hook-plain", &json!({"content": {"text": "x"}}))
        .await;
    assert_eq!(no_type.code(), 19002);
    let string_content = h
        .webhook(
            "hook-plain",
            &json!({"msg_type": "text", "content": "{\"text\":\"x\"}"}),
        )
        .await;
    assert_eq!(string_content.code(), 9499);
    let huge = h
        .webhook(
            "hook-plain",
            &json!({"msg_type": "text", "content": {"text": "x".repeat(21 * 1024)}}),
        )
        .await;
    assert_eq!(huge.code(), 19036);
    let card = h
        .webhook(
            "hook-plain",
            &json!({"msg_type": "interactive", "card": {"elements": []}}),
        )
        .await;
    assert_eq!(card.code(), 0);

    // The order of the checks (token, size, JSON, signature, then msg_type): a body without
    // msg_type is refused for its signature first, and for its msg_type only once the
    // signature is right. `lark-sink check` probes webhooks this way without posting.
    let probe = |sign: String| json!({"timestamp": now.to_string(), "sign": sign});
    let r = h
        .webhook(
            "hook-signed",
            &probe(lark_emulator::webhook_sign("demo", now)),
        )
        .await;
    assert_eq!(r.code(), 19002);
    let r = h.webhook("hook-signed", &probe("bogus".into())).await;
    assert_eq!(r.code(), 19021);
    assert_eq!(h.webhook("hook-signed", &json!({})).await.code(), 19021);
    assert_eq!(
        h.webhook("hook-plain", &probe("bogus".into())).await.code(),
        19002,
        "an unsigned bot ignores sign"
    );
    assert_eq!(
        h.webhook("hook-nope", &probe("bogus".into())).await.code(),
        19001
    );

    let msgs = h.emu.messages();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[0].via, "webhook:hook-plain");
    assert_eq!(msgs[0].receive_id_type, "webhook");
    assert_eq!(msgs[0].receive_id, "hook-plain");
    assert_eq!(msgs[0].chat_id, "webhook:hook-plain");
    assert_eq!(msgs[1].content, json!({"text": "signed"}));
    assert_eq!(msgs[2].msg_type, "interactive");
    assert_eq!(msgs[2].content, json!({"elements": []}));
}

#[tokio::test]
async fn webhook_keywords_and_rate_limit() {
    let mut dir = Directory::demo();
    dir.webhooks.push(Webhook {
        token: "hook-kw".into(),
        secret: None,
        keywords: vec!["alert".into()],
    });
    let h = start_with(EmulatorConfig {
        directory: dir,
        limits: Limits {
            webhook_per_min: 2,
            ..Limits::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let text = |t: &str| json!({"msg_type": "text", "content": {"text": t}});
    assert_eq!(h.webhook("hook-kw", &text("hello")).await.code(), 19024);
    assert_eq!(h.webhook("hook-kw", &text("alert: disk")).await.code(), 0);

    assert_eq!(h.webhook("hook-plain", &text("1")).await.code(), 0);
    assert_eq!(h.webhook("hook-plain", &text("2")).await.code(), 0);
    // A bot over its own limit: 9499 "too many request" with HTTP 400 (lark-api.md §8).
    let r = h.webhook("hook-plain", &text("3")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), 9499);
    assert_eq!(r.msg(), "too many request");
    let stats = h.emu.stats();
    assert_eq!(stats.throttled_webhook, 1);
    assert_eq!(stats.accepted, 3);
}

// ---------------------------------------------------------------- control endpoints

#[tokio::test]
async fn control_endpoints() {
    let h = start().await;
    let token = h.token().await;

    let r = h
        .post(
            "/_emulator/faults",
            &json!({"target": "send", "fault": {"kind": "code", "code": 230002}}),
        )
        .await;
    assert_eq!(r.body, json!({"ok": true}));
    assert_error(
        &h.send_text(&token, "chat_id", "oc_ops", "x").await,
        400,
        230002,
    );

    let bad = h
        .post("/_emulator/faults", &json!({"target": "nowhere"}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    h.post(
        "/_emulator/faults",
        &json!({"config": {"error_5xx_rate": 1.0}}),
    )
    .await;
    assert!(h
        .send_text(&token, "chat_id", "oc_ops", "x")
        .await
        .status
        .is_server_error());
    h.post("/_emulator/faults", &json!({"config": {}})).await;

    assert_eq!(
        h.send_text(&token, "chat_id", "oc_ops", "x").await.code(),
        0
    );
    let msgs = h.get("/_emulator/messages").await;
    assert_eq!(msgs.as_array().map(Vec::len), Some(1));
    assert_eq!(msgs[0]["chat_id"], "oc_ops");
    let stats = h.get("/_emulator/stats").await;
    assert_eq!(stats["accepted"], 1);
    assert_eq!(stats["errors_by_code"]["230002"], 1);
    let dir = h.get("/_emulator/directory").await;
    assert_eq!(dir["apps"][0]["app_id"], "cli_demo_app");

    h.post(
        "/_emulator/limits",
        &json!({"enabled": true, "receiver_per_sec": 1}),
    )
    .await;
    assert_eq!(h.get("/_emulator/limits").await["receiver_per_sec"], 1);

    h.post("/_emulator/revoke-tokens", &json!({})).await;
    assert_error(
        &h.send_text(&token, "chat_id", "oc_ops", "x").await,
        400,
        99991663,
    );

    h.post("/_emulator/reset", &json!({})).await;
    assert!(h.emu.messages().is_empty());
    assert_eq!(h.emu.stats(), Default::default());
    assert!(h.get("/_emulator/directory").await["users"]
        .as_array()
        .is_some());
}

#[tokio::test]
async fn reset_and_shutdown() {
    let h = start().await;
    let token = h.token().await;
    assert_eq!(
        h.send_text(&token, "chat_id", "oc_ops", "x").await.code(),
        0
    );
    h.emu
        .push_fault(FaultTarget::Send, Fault::Status { status: 500 });
    h.emu.reset();
    assert!(h.emu.messages().is_empty());
    // Scripted faults are gone, tokens survive.
    assert_eq!(
        h.send_text(&token, "chat_id", "oc_ops", "x").await.code(),
        0
    );

    let url = h.emu.base_url();
    assert!(url.starts_with("http://127.0.0.1:"));
    h.emu.clone().shutdown().await;
    let after = reqwest::Client::new()
        .get(format!("{url}/_emulator/health"))
        .send()
        .await;
    assert!(after.is_err(), "server stopped");
}

#[tokio::test]
async fn generated_directory_receivers() {
    let h = start_with(EmulatorConfig {
        directory: Directory::with_generated(20, 5),
        limits: Limits::disabled(),
        ..EmulatorConfig::default()
    })
    .await;
    let token = h.token().await;
    assert_eq!(
        h.send_text(&token, "open_id", "ou_gen_19", "x")
            .await
            .code(),
        0
    );
    assert_eq!(
        h.send_text(&token, "email", "gen7@example.com", "x")
            .await
            .code(),
        0
    );
    assert_eq!(
        h.send_text(&token, "chat_id", "oc_gen_4", "x").await.code(),
        0
    );
}
