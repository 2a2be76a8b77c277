//! What the official Lark SDKs (`lark-oapi` for Python, `@larksuiteoapi/node-sdk`) rely on when
//! they talk to the emulator (issue 14): header spelling on the wire, Lark-shaped JSON for every
//! answer, and the answer fields they read.
//!
//! Header tests read raw response bytes over a `TcpStream`, because reqwest (like any HTTP
//! library that normalises names) would hide the spelling the Python SDK looks up.

use lark_emulator::{
    App, Directory, Emulator, EmulatorConfig, EmulatorHandle, Fault, FaultTarget, Limits,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start() -> EmulatorHandle {
    Emulator::start(
        EmulatorConfig {
            limits: Limits::disabled(),
            ..EmulatorConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("emulator starts")
}

/// One HTTP/1.1 request written by hand; returns the raw head (status line + headers) and body.
async fn raw(emu: &EmulatorHandle, method: &str, path: &str, body: &str) -> (String, String) {
    let mut tcp = TcpStream::connect(emu.addr()).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        emu.addr(),
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8(out).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    (head.to_string(), body.to_string())
}

/// The header names of a raw head, exactly as sent.
fn names(head: &str) -> Vec<&str> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n))
        .collect()
}

#[tokio::test]
async fn header_names_go_out_title_case_like_lark() {
    let emu = start().await;
    let creds = json!({"app_id": "cli_demo_app", "app_secret": "demo-secret"}).to_string();
    let (head, body) = raw(
        &emu,
        "POST",
        "/open-apis/auth/v3/tenant_access_token/internal",
        &creds,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let sent = names(&head);
    assert!(sent.contains(&"X-Tt-Logid"), "{head}");
    assert!(sent.contains(&"Content-Type"), "{head}");
    assert!(!sent.contains(&"x-tt-logid"), "{head}");
    assert!(body.contains("tenant_access_token"), "{body}");

    // An error answer carries the same spelling.
    let (head, _) = raw(&emu, "POST", "/open-apis/im/v1/messages", "{}").await;
    assert!(names(&head).contains(&"X-Tt-Logid"), "{head}");

    // The gateway's rate-limit headers (lark-api.md §4), spelled as the official CLI reads them.
    emu.push_fault(
        FaultTarget::Token,
        Fault::Code {
            http_status: 429,
            code: 99991400,
            msg: "request trigger frequency limit".into(),
            ratelimit_reset_secs: Some(3),
        },
    );
    let (head, _) = raw(
        &emu,
        "POST",
        "/open-apis/auth/v3/tenant_access_token/internal",
        &creds,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    let sent = names(&head);
    assert!(sent.contains(&"X-Ogw-Ratelimit-Limit"), "{head}");
    assert!(sent.contains(&"X-Ogw-Ratelimit-Reset"), "{head}");
    emu.shutdown().await;
}

/// A started emulator whose directory also holds `cli_mute`, an app with the contact scope
/// only (no IM send scope), plus a reqwest client for JSON calls.
struct Api {
    emu: EmulatorHandle,
    http: reqwest::Client,
}

impl Api {
    async fn start() -> Self {
        let mut dir = Directory::demo();
        dir.apps.push(App {
            app_id: "cli_mute".into(),
            app_secret: "s".into(),
            bot_enabled: true,
            scopes: Some(vec!["contact:user.id:readonly".into()]),
        });
        let emu = Emulator::start(
            EmulatorConfig {
                directory: dir,
                limits: Limits::disabled(),
                ..EmulatorConfig::default()
            },
            "127.0.0.1:0".parse().expect("addr"),
        )
        .await
        .expect("emulator starts");
        Api {
            emu,
            http: reqwest::Client::new(),
        }
    }

    /// `(HTTP status, JSON body)`; panics if the body is not JSON (the SDKs would fail too).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.emu.base_url()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        (status, json)
    }

    async fn token(&self, app_id: &str, secret: &str) -> String {
        let (_, body) = self
            .call(
                reqwest::Method::POST,
                "/open-apis/auth/v3/tenant_access_token/internal",
                None,
                Some(json!({"app_id": app_id, "app_secret": secret})),
            )
            .await;
        body["tenant_access_token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    async fn send(&self, token: &str, id_type: &str, body: Value) -> (u16, Value) {
        let path = format!("/open-apis/im/v1/messages?receive_id_type={id_type}");
        self.call(reqwest::Method::POST, &path, Some(token), Some(body))
            .await
    }

    async fn reply(&self, token: &str, parent: &str, body: Value) -> (u16, Value) {
        let path = format!("/open-apis/im/v1/messages/{parent}/reply");
        self.call(reqwest::Method::POST, &path, Some(token), Some(body))
            .await
    }
}

fn text(text: &str) -> Value {
    json!({"msg_type": "text", "content": json!({"text": text}).to_string()})
}

fn to(receive_id: &str, mut body: Value) -> Value {
    body["receive_id"] = json!(receive_id);
    body
}

#[tokio::test]
async fn reply_needs_the_send_scope_like_send() {
    let api = Api::start().await;
    let demo = api.token("cli_demo_app", "demo-secret").await;
    let (_, sent) = api
        .send(&demo, "open_id", to("ou_alice", text("parent")))
        .await;
    assert_eq!(sent["code"], 0, "{sent}");
    let parent = sent["data"]["message_id"].as_str().expect("message_id");

    let mute = api.token("cli_mute", "s").await;
    let (send_status, send) = api.send(&mute, "open_id", to("ou_alice", text("x"))).await;
    let (reply_status, reply) = api.reply(&mute, parent, text("x")).await;
    assert_eq!(send["code"], 99991672, "{send}");
    assert_eq!(
        (reply_status, &reply["code"]),
        (send_status, &send["code"]),
        "{reply}"
    );
    assert_eq!(reply["msg"], send["msg"]);
    assert_eq!(api.emu.messages().len(), 1, "only the parent was accepted");
}

fn share_chat(chat_id: &str) -> Value {
    json!({"msg_type": "share_chat", "content": json!({"chat_id": chat_id}).to_string()})
}

#[tokio::test]
async fn share_chat_is_refused_for_p2p_and_chats_without_the_bot() {
    let api = Api::start().await;
    let t = api.token("cli_demo_app", "demo-secret").await;
    let (_, sent) = api.send(&t, "open_id", to("ou_alice", text("hi"))).await;
    let p2p_chat = sent["data"]["chat_id"]
        .as_str()
        .expect("chat_id")
        .to_string();
    let parent = sent["data"]["message_id"].as_str().expect("id").to_string();

    let (status, ok) = api
        .send(&t, "chat_id", to("oc_ops", share_chat("oc_team")))
        .await;
    assert_eq!((status, &ok["code"]), (200, &json!(0)), "{ok}");
    let cases = [
        ("oc_outside", 230002),
        ("oc_unknown", 230002),
        (p2p_chat.as_str(), 230015),
    ];
    for (shared, code) in cases {
        let (status, r) = api
            .send(&t, "chat_id", to("oc_ops", share_chat(shared)))
            .await;
        assert_eq!((status, &r["code"]), (400, &json!(code)), "{shared}: {r}");
        let (status, r) = api.reply(&t, &parent, share_chat(shared)).await;
        assert_eq!(
            (status, &r["code"]),
            (400, &json!(code)),
            "reply {shared}: {r}"
        );
    }
    assert_eq!(api.emu.messages().len(), 2);
}

#[tokio::test]
async fn mentions_come_back_for_at_tags() {
    let api = Api::start().await;
    let t = api.token("cli_demo_app", "demo-secret").await;
    let at = r#"hi <at user_id="ou_bob">Bob</at> <at user_id="all"></at> <at user_id="ou_nobody">?</at> <at user_id="ou_alice">A</at>"#;
    let (_, r) = api.send(&t, "chat_id", to("oc_ops", text(at))).await;
    assert_eq!(r["code"], 0, "{r}");
    let m = &r["data"]["mentions"];
    assert_eq!(m.as_array().map(Vec::len), Some(2), "{r}");
    assert_eq!(m[0]["key"], "@_user_1");
    assert_eq!(m[0]["id"], "ou_bob");
    assert_eq!(m[0]["id_type"], "open_id");
    assert_eq!(m[0]["name"], "Bob");
    assert!(m[0]["tenant_key"].is_string());
    assert_eq!(m[1]["key"], "@_user_2");
    assert_eq!(m[1]["id"], "ou_alice");

    let parent = r["data"]["message_id"].as_str().expect("id").to_string();
    let (_, r) = api
        .reply(&t, &parent, text(r#"<at user_id="ou_bob"></at> ok"#))
        .await;
    assert_eq!(r["data"]["mentions"][0]["id"], "ou_bob", "{r}");
    // No tag, no field (the emulator leaves an empty `mentions` out).
    let (_, r) = api.send(&t, "chat_id", to("oc_ops", text("plain"))).await;
    assert!(r["data"].get("mentions").is_none(), "{r}");
}

#[tokio::test]
async fn message_get_answers_items_for_accepted_messages() {
    let api = Api::start().await;
    let t = api.token("cli_demo_app", "demo-secret").await;
    let (_, sent) = api.send(&t, "chat_id", to("oc_ops", text("hello"))).await;
    let id = sent["data"]["message_id"].as_str().expect("id").to_string();
    let get = |id: String, token: String| {
        let api = &api;
        async move {
            let path = format!("/open-apis/im/v1/messages/{id}");
            api.call(reqwest::Method::GET, &path, Some(&token), None)
                .await
        }
    };
    let (status, r) = get(id.clone(), t.clone()).await;
    assert_eq!((status, &r["code"]), (200, &json!(0)), "{r}");
    let items = r["data"]["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0], sent["data"], "the message as send answered it");

    let (status, r) = get("om_unknown".into(), t.clone()).await;
    assert_eq!((status, &r["code"]), (400, &json!(230001)), "{r}");
    assert!(r["msg"]
        .as_str()
        .unwrap_or_default()
        .contains("invalid message_id"));
    let (status, r) = get(id.clone(), "t-nope".into()).await;
    assert_eq!((status, &r["code"]), (400, &json!(99991663)), "{r}");

    api.emu.recall(&id);
    let (_, r) = get(id, t).await;
    assert_eq!(r["data"]["items"][0]["deleted"], true, "{r}");
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_answer_lark_shaped_json() {
    let api = Api::start().await;
    let cases = [
        (reqwest::Method::GET, "/open-apis/nope/v1/things", 404),
        (reqwest::Method::POST, "/", 404),
        (
            reqwest::Method::GET,
            "/open-apis/auth/v3/tenant_access_token/internal",
            405,
        ),
        (
            reqwest::Method::DELETE,
            "/open-apis/bot/v2/hook/hook-plain",
            405,
        ),
    ];
    for (method, path, status) in cases {
        // `call` panics on a body that is not JSON.
        let (got, r) = api.call(method.clone(), path, None, None).await;
        assert_eq!(got, status, "{method} {path}: {r}");
        assert_eq!(r["code"], json!(status), "{r}");
        assert!(r["msg"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
        assert!(r["error"]["log_id"].is_string(), "{r}");
    }
    let (head, _) = raw(&api.emu, "GET", "/nowhere", "").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: application/json"),
        "{head}"
    );
    assert!(names(&head).contains(&"X-Tt-Logid"), "{head}");
}
