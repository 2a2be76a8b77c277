//! What the emulator's WebSocket tests share (`long_connection.rs`, `card_callbacks.rs`): the demo
//! app, a client of the long connection (the endpoint, frames, acks), the event log and a card
//! sent through the API. Each test file uses part of it.
#![allow(dead_code)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use lark_emulator::events::frame::{header, Frame};
use lark_emulator::{EmulatorHandle, PushedEvent};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The demo directory's app.
pub const APP: &str = "cli_demo_app";
pub const SECRET: &str = "demo-secret";

/// `POST /callback/ws/endpoint` with `body`: the HTTP status and the answer.
pub async fn endpoint(emu: &EmulatorHandle, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/callback/ws/endpoint", emu.base_url()))
        .json(&body)
        .send()
        .await
        .expect("endpoint");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

/// The WebSocket URL the endpoint gives the demo app.
pub async fn url(emu: &EmulatorHandle) -> String {
    let (_, body) = endpoint(emu, json!({"AppID": APP, "AppSecret": SECRET})).await;
    body["data"]["URL"].as_str().expect("URL").to_string()
}

/// The next binary frame (other messages skipped) within `wait`, or `None`.
pub async fn frame_within(ws: &mut Ws, wait: Duration) -> Option<Frame> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Binary(b)))) => {
                return Some(Frame::decode_bytes(&b).expect("frame"))
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("connection ended: {other:?}"),
        }
    }
}

/// The next binary frame, within 2 s.
pub async fn next_frame(ws: &mut Ws) -> Frame {
    frame_within(ws, Duration::from_secs(2))
        .await
        .expect("a frame in time")
}

/// Acks `frame` with `payload` (the frame echoed, a `biz_rt` header), as the SDKs do.
pub async fn ack(ws: &mut Ws, frame: &Frame, payload: Value) {
    let mut a = frame.clone();
    a.headers.push(header("biz_rt", "1"));
    a.payload = Some(payload.to_string().into_bytes());
    ws.send(Message::Binary(a.to_bytes().into()))
        .await
        .expect("send ack");
}

/// A frame's payload as JSON.
pub fn payload(frame: &Frame) -> Value {
    serde_json::from_slice(frame.payload.as_deref().expect("payload")).expect("json payload")
}

/// Polls until the event `id` satisfies `done`, within 3 s.
pub async fn wait_event(
    emu: &EmulatorHandle,
    id: &str,
    done: impl Fn(&PushedEvent) -> bool,
) -> PushedEvent {
    for _ in 0..300 {
        if let Some(e) = emu
            .pushed_events()
            .into_iter()
            .find(|e| e.event_id == id && done(e))
        {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "event {id} never reached the state: {:?}",
        emu.pushed_events()
    );
}

/// Sends `card` as an interactive message to `oc_ops` through the API: its message id.
pub async fn send_card(emu: &EmulatorHandle, card: &Value) -> String {
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!(
            "{}/open-apis/auth/v3/tenant_access_token/internal",
            emu.base_url()
        ))
        .json(&json!({"app_id": APP, "app_secret": SECRET}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let sent: Value = http
        .post(format!(
            "{}/open-apis/im/v1/messages?receive_id_type=chat_id",
            emu.base_url()
        ))
        .bearer_auth(token["tenant_access_token"].as_str().expect("token"))
        .json(&json!({"receive_id": "oc_ops", "msg_type": "interactive",
                      "content": card.to_string()}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    sent["data"]["message_id"]
        .as_str()
        .expect("message_id")
        .to_string()
}
