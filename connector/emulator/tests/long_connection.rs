//! The long connection over a real WebSocket client (lifecycle §4, §6 items 10–13): the
//! endpoint, ping / pong, pushed clicks and messages with their acks, redelivery of events,
//! fragments, server-side close and the connection limit. What becomes of a click's answer
//! (no redelivery, the client error, the toast, the card update) is `card_callbacks.rs`.
//!
//! Each test starts its own emulator on a random port with a short ack deadline and retry
//! schedule, so nothing waits for the real 3 s / 15 s.

use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use lark_emulator::events::frame::{Frame, METHOD_CONTROL, METHOD_DATA};
use lark_emulator::{
    BotMessage, Click, DeliveryOutcome, Emulator, EmulatorConfig, EmulatorHandle, Fault,
    FaultTarget, LongConnectionConfig,
};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::*;

fn quick() -> LongConnectionConfig {
    LongConnectionConfig {
        ack_deadline: Duration::from_millis(300),
        retry_schedule: vec![Duration::from_millis(100), Duration::from_millis(100)],
        ..LongConnectionConfig::default()
    }
}

async fn start(long_connection: LongConnectionConfig) -> EmulatorHandle {
    let config = EmulatorConfig {
        long_connection,
        ..EmulatorConfig::default()
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    Emulator::start(config, addr).await.expect("start")
}

async fn connect(emu: &EmulatorHandle) -> (Ws, i32) {
    let url = url(emu).await;
    let service: i32 = query(&url, "service_id").parse().expect("service_id");
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    (ws, service)
}

fn query(url: &str, key: &str) -> String {
    let q = url.split_once('?').expect("query").1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
        .expect(key)
}

/// Whether a frame arrives within `wait`.
async fn quiet(ws: &mut Ws, wait: Duration) -> bool {
    tokio::time::timeout(wait, ws.next()).await.is_err()
}

/// The card most tests click on.
async fn a_card(emu: &EmulatorHandle) -> String {
    let card =
        json!({"schema": "2.0", "body": {"elements": [{"tag": "markdown", "content": "hi"}]}});
    send_card(emu, &card).await
}

#[tokio::test]
async fn endpoint_answers_url_and_client_config_or_a_terminal_code() {
    let emu = start(LongConnectionConfig::default()).await;
    let (status, body) = endpoint(&emu, json!({"AppID": APP, "AppSecret": SECRET})).await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    let url = body["data"]["URL"].as_str().expect("URL");
    let prefix = format!("ws://{}/ws/v2?", emu.addr());
    assert!(url.starts_with(&prefix), "{url}");
    assert!(!url[prefix.len()..].starts_with("device_id"), "{url}");
    for key in ["fpid", "device_id", "service_id", "ticket"] {
        assert!(!query(url, key).is_empty(), "{key} in {url}");
    }
    let cc = &body["data"]["ClientConfig"];
    assert_eq!(cc["ReconnectCount"], json!(-1));
    for key in ["ReconnectInterval", "ReconnectNonce", "PingInterval"] {
        assert!(cc[key].as_u64().expect(key) > 0, "{cc}");
    }

    for bad in [
        json!({"AppID": APP, "AppSecret": "wrong"}),
        json!({"AppID": "cli_nope"}),
        json!({}),
    ] {
        let (status, body) = endpoint(&emu, bad).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (200, Some(1000040344)),
            "{body}"
        );
    }

    emu.push_fault(
        FaultTarget::WsEndpoint,
        Fault::Code {
            http_status: 0,
            code: 1,
            msg: String::new(),
            ratelimit_reset_secs: None,
        },
    );
    let (status, body) = endpoint(&emu, json!({"AppID": APP, "AppSecret": SECRET})).await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(1)), "{body}");
    emu.shutdown().await;
}

#[tokio::test]
async fn ping_is_answered_with_a_pong_carrying_client_config() {
    let emu = start(LongConnectionConfig {
        ping_interval_s: 7,
        ..quick()
    })
    .await;
    let (mut ws, service) = connect(&emu).await;
    assert_eq!(emu.live_connections(), 1);
    let ping = Frame::control(service, "ping", None);
    ws.send(Message::Binary(ping.to_bytes().into()))
        .await
        .expect("ping");
    let pong = next_frame(&mut ws).await;
    assert_eq!(
        (pong.method, pong.kind(), pong.service),
        (METHOD_CONTROL, Some("pong"), service)
    );
    let cc = payload(&pong);
    assert_eq!(cc["PingInterval"], json!(7));
    for key in ["ReconnectCount", "ReconnectInterval", "ReconnectNonce"] {
        assert!(cc.get(key).is_some(), "{cc}");
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn a_click_is_pushed_acked_and_its_toast_recorded() {
    let emu = start(quick()).await;
    let message_id = a_card(&emu).await;
    let (mut ws, service) = connect(&emu).await;
    let event_id = emu
        .click(Click::button(&message_id, json!({"action": "ack"})))
        .expect("click");

    let f = next_frame(&mut ws).await;
    assert_eq!((f.method, f.service), (METHOD_DATA, service));
    assert_eq!(f.kind(), Some("event"));
    assert_eq!((f.header("sum"), f.header("seq")), (Some("1"), Some("0")));
    for h in ["message_id", "trace_id", "timestamp"] {
        assert!(!f.header(h).unwrap_or_default().is_empty(), "{h}");
    }
    assert_ne!(f.seq_id, 0);
    let e = payload(&f);
    assert_eq!(e["schema"], "2.0");
    let h = &e["header"];
    assert_eq!(
        (h["event_id"].as_str(), h["event_type"].as_str()),
        (Some(event_id.as_str()), Some("card.action.trigger"))
    );
    assert_eq!(h["app_id"], APP);
    assert_eq!(h["create_time"].as_str().map(str::len), Some(16), "µs");
    for k in ["token", "tenant_key"] {
        assert!(h[k].is_string(), "{k}");
    }
    let ev = &e["event"];
    assert_eq!(ev["operator"]["open_id"], "ou_alice");
    assert!(ev["token"].as_str().expect("token").starts_with("c-"));
    assert_eq!(
        ev["action"],
        json!({"value": {"action": "ack"}, "tag": "button"})
    );
    assert_eq!(ev["host"], "im_message");
    assert_eq!(ev["context"]["open_message_id"], message_id.as_str());
    assert!(ev["context"]["open_chat_id"]
        .as_str()
        .expect("chat")
        .starts_with("oc_"));

    let toast = json!({"toast": {"type": "success", "content": "done"}});
    let data = base64::engine::general_purpose::STANDARD.encode(toast.to_string());
    ack(&mut ws, &f, json!({"code": 200, "data": data})).await;
    let rec = wait_event(&emu, &event_id, |e| e.done).await;
    assert!(rec.acked);
    assert_eq!((rec.attempts, rec.ack_code), (1, Some(200)));
    assert_eq!(rec.ack_data, Some(toast.clone()));
    assert_eq!(
        (rec.client_error, rec.toast),
        (None, Some(toast["toast"].clone()))
    );
    assert!(rec.latency_ms.is_some());
    assert!(
        quiet(&mut ws, Duration::from_millis(400)).await,
        "no redelivery after an ack"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn an_unacked_event_is_redelivered_with_the_same_event_id() {
    let emu = start(quick()).await;
    let (mut ws, _) = connect(&emu).await;
    let event_id = emu
        .send_to_bot(BotMessage {
            text: "again".into(),
            ..BotMessage::default()
        })
        .expect("push");
    let first = next_frame(&mut ws).await;
    // An ack with another code is a failure too.
    ack(&mut ws, &first, json!({"code": 500})).await;
    let second = next_frame(&mut ws).await;
    assert_eq!(payload(&second)["header"]["event_id"], event_id.as_str());
    assert_ne!(first.header("message_id"), second.header("message_id"));
    // No answer at all to the second; the third is acked.
    let third = next_frame(&mut ws).await;
    assert_eq!(payload(&third), payload(&first));
    ack(&mut ws, &third, json!({"code": 200})).await;
    let rec = wait_event(&emu, &event_id, |e| e.done).await;
    assert!(rec.acked);
    assert_eq!(rec.attempts, 3);
    let outcomes: Vec<_> = rec.deliveries.iter().map(|d| d.outcome.clone()).collect();
    assert_eq!(
        outcomes,
        [
            DeliveryOutcome::Refused { code: 500 },
            DeliveryOutcome::NoAck,
            DeliveryOutcome::Acked
        ]
    );
    assert_eq!(rec.client_error, None, "an event, not a click");
    emu.shutdown().await;
}

#[tokio::test]
async fn without_a_connection_every_attempt_fails_until_the_schedule_ends() {
    let emu = start(quick()).await;
    let event_id = emu
        .send_to_bot(BotMessage {
            text: "hi".into(),
            ..BotMessage::default()
        })
        .expect("push");
    let rec = wait_event(&emu, &event_id, |e| e.done).await;
    assert!(!rec.acked);
    assert_eq!(rec.attempts, 3);
    assert!(rec
        .deliveries
        .iter()
        .all(|d| d.outcome == DeliveryOutcome::NoConnection));
    emu.shutdown().await;
}

#[tokio::test]
async fn fragments_arrive_out_of_order_and_reassemble_to_the_event() {
    let emu = start(LongConnectionConfig {
        fragment_size: Some(64),
        ..quick()
    })
    .await;
    let (mut ws, _) = connect(&emu).await;
    let event_id = emu
        .click(Click::button("om_x", json!({"long": "x".repeat(100)})))
        .expect("click");
    let first = next_frame(&mut ws).await;
    let sum: usize = first.header("sum").expect("sum").parse().expect("number");
    assert!(sum > 2, "{sum}");
    assert_eq!(
        first.header("seq"),
        Some((sum - 1).to_string().as_str()),
        "last part first"
    );
    let mut parts = vec![None; sum];
    let mut last = first.clone();
    parts[sum - 1] = first.payload.clone();
    for _ in 1..sum {
        let f = next_frame(&mut ws).await;
        assert_eq!(f.header("message_id"), first.header("message_id"));
        let seq: usize = f.header("seq").expect("seq").parse().expect("number");
        assert!(f.payload.as_ref().expect("part").len() <= 64);
        parts[seq] = f.payload.clone();
        last = f;
    }
    let joined: Vec<u8> = parts
        .into_iter()
        .flat_map(|p| p.expect("every part"))
        .collect();
    let event: Value = serde_json::from_slice(&joined).expect("reassembled JSON");
    assert_eq!(event["header"]["event_id"], event_id.as_str());
    ack(&mut ws, &last, json!({"code": 200})).await;
    let rec = wait_event(&emu, &event_id, |e| e.done).await;
    assert!(rec.acked);
    assert_eq!(rec.payload, event);
    assert_eq!(rec.deliveries[0].fragments, sum);
    emu.shutdown().await;
}

#[tokio::test]
async fn drop_closes_every_connection() {
    let emu = start(quick()).await;
    let (mut ws, _) = connect(&emu).await;
    let dropped: Value = reqwest::Client::new()
        .post(format!("{}/_emulator/events/drop", emu.base_url()))
        .send()
        .await
        .expect("drop")
        .json()
        .await
        .expect("json");
    assert_eq!(dropped, json!({"ok": true, "dropped": 1}));
    let msg = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .expect("in time");
    assert!(matches!(msg, Some(Ok(Message::Close(_))) | None), "{msg:?}");
    assert_eq!(emu.live_connections(), 0);
    assert_eq!(emu.drop_connections(), 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn over_the_limit_and_reused_tickets_are_refused_with_514() {
    let emu = start(LongConnectionConfig {
        max_connections_per_app: 2,
        ..quick()
    })
    .await;
    let _a = connect(&emu).await;
    let _b = connect(&emu).await;
    let refused = |e: tokio_tungstenite::tungstenite::Error| match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            let h = |k: &str| {
                resp.headers()
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            (
                resp.status().as_u16(),
                h("Handshake-Status"),
                h("Handshake-Autherrcode"),
            )
        }
        other => panic!("not a handshake failure: {other}"),
    };
    let third = url(&emu).await;
    let e = tokio_tungstenite::connect_async(third)
        .await
        .expect_err("refused");
    assert_eq!(refused(e), (514, "514".into(), "1000040350".into()));
    assert_eq!(emu.live_connections(), 2);

    drop(_a);
    drop(_b);
    let u = url(&emu).await;
    for _ in 0..100 {
        if emu.live_connections() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_c, _) = tokio_tungstenite::connect_async(u.clone())
        .await
        .expect("a slot again");
    let e = tokio_tungstenite::connect_async(u)
        .await
        .expect_err("ticket used");
    let (status, hs, code) = refused(e);
    assert_eq!((status, hs.as_str()), (514, "514"));
    assert_ne!(code, "1000040350");
    emu.shutdown().await;
}

#[tokio::test]
async fn a_received_message_duplicate_has_a_new_event_id_and_the_same_message_id() {
    let emu = start(quick()).await;
    let (mut ws, _) = connect(&emu).await;
    let resp: Value = reqwest::Client::new()
        .post(format!("{}/_emulator/events/message", emu.base_url()))
        .json(
            &json!({"chat_id": "oc_ops", "open_id": "ou_bob", "text": "hello", "duplicate": true}),
        )
        .send()
        .await
        .expect("message")
        .json()
        .await
        .expect("json");
    assert_eq!(resp["ok"], true, "{resp}");
    let first = next_frame(&mut ws).await;
    let e1 = payload(&first);
    assert_eq!(e1["header"]["event_type"], "im.message.receive_v1");
    assert_eq!(
        e1["header"]["create_time"].as_str().map(str::len),
        Some(13),
        "ms"
    );
    let m = &e1["event"]["message"];
    assert_eq!(
        (m["chat_id"].as_str(), m["chat_type"].as_str()),
        (Some("oc_ops"), Some("group"))
    );
    assert_eq!(m["content"], json!({"text": "hello"}).to_string());
    assert_eq!(e1["event"]["sender"]["sender_id"]["open_id"], "ou_bob");
    ack(&mut ws, &first, json!({"code": 200})).await;
    let second = next_frame(&mut ws).await;
    let e2 = payload(&second);
    ack(&mut ws, &second, json!({"code": 200})).await;
    assert_ne!(e1["header"]["event_id"], e2["header"]["event_id"]);
    assert_eq!(
        e1["event"]["message"]["message_id"],
        e2["event"]["message"]["message_id"]
    );

    let listed: Value = reqwest::get(format!("{}/_emulator/events", emu.base_url()))
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    let id2 = e2["header"]["event_id"].as_str().expect("id");
    assert!(wait_event(&emu, id2, |e| e.done).await.acked);
    emu.shutdown().await;
}

#[tokio::test]
async fn with_two_connections_each_event_goes_to_exactly_one() {
    let emu = start(quick()).await;
    let (mut a, _) = connect(&emu).await;
    let (mut b, _) = connect(&emu).await;
    let ids: Vec<String> = (0..6)
        .map(|i| {
            emu.click(Click::button("om_x", json!({ "i": i })))
                .expect("click")
        })
        .collect();
    let mut seen = Vec::new();
    // Ack everything that arrives on either connection until both are quiet.
    loop {
        tokio::select! {
            Some(Ok(Message::Binary(bytes))) = a.next() => {
                let f = Frame::decode_bytes(&bytes).expect("frame");
                seen.push(payload(&f)["header"]["event_id"].as_str().expect("id").to_string());
                ack(&mut a, &f, json!({"code": 200})).await;
            }
            Some(Ok(Message::Binary(bytes))) = b.next() => {
                let f = Frame::decode_bytes(&bytes).expect("frame");
                seen.push(payload(&f)["header"]["event_id"].as_str().expect("id").to_string());
                ack(&mut b, &f, json!({"code": 200})).await;
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => break,
        }
    }
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want, "each event once, no broadcast");
    for id in &ids {
        assert!(wait_event(&emu, id, |e| e.done).await.acked);
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn callbacks_can_travel_in_card_frames() {
    let emu = start(LongConnectionConfig {
        callbacks_as_card_frames: true,
        ..quick()
    })
    .await;
    let (mut ws, _) = connect(&emu).await;
    let click = emu.click(Click::button("om_x", json!({}))).expect("click");
    assert_eq!(next_frame(&mut ws).await.kind(), Some("card"));
    // Unanswered (as the official SDKs leave `card` frames): not pushed again.
    let rec = wait_event(&emu, &click, |e| e.done).await;
    assert_eq!((rec.attempts, rec.client_error), (1, Some(200341)));
    emu.send_to_bot(BotMessage {
        text: "hi".into(),
        ..BotMessage::default()
    })
    .expect("message");
    // The message is still an `event` frame.
    let f = next_frame(&mut ws).await;
    assert_eq!(f.kind(), Some("event"));
    assert_eq!(payload(&f)["header"]["event_type"], "im.message.receive_v1");
    ack(&mut ws, &f, json!({"code": 200})).await;
    emu.shutdown().await;
}
