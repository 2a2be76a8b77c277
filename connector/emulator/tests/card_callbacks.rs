//! Card callbacks as Lark treats them (lifecycle §2.1, §2.5, §4.8, §6 items 9 and 12): delivered
//! once over either transport, never redelivered, the answer judged as the user's client judges
//! it (`client_error`, `toast`), a card in the answer applied to the clicked message, a fresh
//! `c-` token per click; events beside them still redelivered.
//!
//! The long connection is a real WebSocket client; HTTP callbacks go to a small axum receiver
//! in the test that answers as scripted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use lark_emulator::events::answer;
use lark_emulator::events::frame::Frame;
use lark_emulator::{
    BotMessage, Click, DeliveryOutcome, Emulator, EmulatorConfig, EmulatorHandle,
    LongConnectionConfig, PushedEvent, VersionOp,
};
use serde_json::{json, Value};

mod common;
use common::*;

/// A redelivery would come 100 ms after a failed attempt; the tests wait longer than that.
async fn start() -> EmulatorHandle {
    let config = EmulatorConfig {
        long_connection: LongConnectionConfig {
            ack_deadline: Duration::from_millis(300),
            retry_schedule: vec![Duration::from_millis(100), Duration::from_millis(100)],
            ..LongConnectionConfig::default()
        },
        ..EmulatorConfig::default()
    };
    Emulator::start(config, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("start")
}

async fn connect(emu: &EmulatorHandle) -> Ws {
    let url = url(emu).await;
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

/// An ack with code 200 whose `data` is `answer` (JSON) base64-encoded.
async fn answer_with(ws: &mut Ws, frame: &Frame, answer: &[u8]) {
    let data = base64::engine::general_purpose::STANDARD.encode(answer);
    ack(ws, frame, json!({"code": 200, "data": data})).await;
}

/// Waits until the event `id` is done (no more attempts, a click judged).
async fn done(emu: &EmulatorHandle, id: &str) -> PushedEvent {
    wait_event(emu, id, |e| e.done).await
}

fn outcomes(e: &PushedEvent) -> Vec<DeliveryOutcome> {
    e.deliveries.iter().map(|d| d.outcome.clone()).collect()
}

fn v2_card(text: &str) -> Value {
    json!({"schema": "2.0", "body": {"elements": [
        {"tag": "markdown", "content": text},
        {"tag": "button", "text": {"tag": "plain_text", "content": "Ack"},
         "behaviors": [{"type": "callback", "value": {"action": "ack"}}]}]}})
}

#[tokio::test]
async fn a_click_answered_500_late_or_not_at_all_is_not_pushed_again() {
    let emu = start().await;
    let mut ws = connect(&emu).await;

    // Ack code 500: the user sees 200671; nothing is pushed again.
    let refused = emu
        .click(Click::button("om_x", json!({"n": 1})))
        .expect("click");
    let f = next_frame(&mut ws).await;
    ack(&mut ws, &f, json!({"code": 500})).await;
    let rec = done(&emu, &refused).await;
    assert_eq!(outcomes(&rec), [DeliveryOutcome::Refused { code: 500 }]);
    assert_eq!(
        (rec.attempts, rec.acked, rec.client_error),
        (1, false, Some(answer::NON_200))
    );
    assert!(
        frame_within(&mut ws, Duration::from_millis(500))
            .await
            .is_none(),
        "a refused click is not redelivered"
    );

    // No ack within the deadline: 200341; an ack after it changes nothing.
    let unanswered = emu
        .click(Click::button("om_x", json!({"n": 2})))
        .expect("click");
    let f = next_frame(&mut ws).await;
    assert!(frame_within(&mut ws, Duration::from_millis(600))
        .await
        .is_none());
    let rec = done(&emu, &unanswered).await;
    assert_eq!(outcomes(&rec), [DeliveryOutcome::NoAck]);
    assert_eq!((rec.attempts, rec.client_error), (1, Some(200341)));
    ack(&mut ws, &f, json!({"code": 200})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rec = done(&emu, &unanswered).await;
    assert_eq!((rec.late_acks, rec.client_error), (1, Some(200341)));

    // No live connection: one attempt, 200341 too (emulator's choice).
    drop(ws);
    for _ in 0..100 {
        if emu.live_connections() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let nobody = emu
        .click(Click::button("om_x", json!({"n": 3})))
        .expect("click");
    let rec = done(&emu, &nobody).await;
    assert_eq!(outcomes(&rec), [DeliveryOutcome::NoConnection]);
    assert_eq!(rec.client_error, Some(answer::NO_ANSWER));

    // An event beside them is still redelivered until answered.
    let mut ws = connect(&emu).await;
    let message = emu
        .send_to_bot(BotMessage {
            text: "hi".into(),
            ..BotMessage::default()
        })
        .expect("message");
    let f = next_frame(&mut ws).await;
    ack(&mut ws, &f, json!({"code": 500})).await;
    let again = next_frame(&mut ws).await;
    assert_eq!(payload(&again), payload(&f));
    ack(&mut ws, &again, json!({"code": 200})).await;
    let rec = done(&emu, &message).await;
    assert_eq!((rec.attempts, rec.acked, rec.client_error), (2, true, None));
    emu.shutdown().await;
}

#[tokio::test]
async fn a_malformed_answer_is_the_error_the_user_sees() {
    let emu = start().await;
    let mut ws = connect(&emu).await;
    let cases: [(&[u8], u32); 6] = [
        (b"not json", answer::MALFORMED_BODY),
        (br#"["toast"]"#, answer::MALFORMED_BODY),
        (br#"{"toast":"Got it"}"#, answer::MALFORMED_BODY),
        (
            br#"{"toast":{"type":"fatal","content":"x"}}"#,
            answer::MALFORMED_BODY,
        ),
        (
            br#"{"toast":{"type":"info","content":"x","i18n":{"klingon":"x"}}}"#,
            answer::MALFORMED_BODY,
        ),
        (
            br#"{"toast":{"type":"info","content":"ok"},"card":{"type":"raw","data":{"x":1}}}"#,
            answer::MALFORMED_CARD,
        ),
    ];
    for (body, code) in cases {
        let id = emu.click(Click::button("om_x", json!({}))).expect("click");
        let f = next_frame(&mut ws).await;
        answer_with(&mut ws, &f, body).await;
        let rec = done(&emu, &id).await;
        let shown = String::from_utf8_lossy(body);
        assert!(rec.acked, "transport-wise answered: {shown}");
        assert_eq!(
            (rec.client_error, &rec.toast),
            (Some(code), &None),
            "{shown}"
        );
    }
    // `{"code":200}` without data is `{}`; so is the Go SDK's `{"msg":"success"}`.
    for data in [None, Some(&br#"{"msg":"success"}"#[..])] {
        let id = emu.click(Click::button("om_x", json!({}))).expect("click");
        let f = next_frame(&mut ws).await;
        match data {
            Some(d) => answer_with(&mut ws, &f, d).await,
            None => ack(&mut ws, &f, json!({"code": 200})).await,
        }
        let rec = done(&emu, &id).await;
        assert_eq!((rec.client_error, rec.toast), (None, None));
    }
    assert!(frame_within(&mut ws, Duration::from_millis(300))
        .await
        .is_none());
    emu.shutdown().await;
}

#[tokio::test]
async fn a_card_in_the_answer_updates_the_clicked_card_and_2_0_stays_2_0() {
    let emu = start().await;
    let card = send_card(&emu, &v2_card("disk full")).await;
    let mut ws = connect(&emu).await;

    let updated = v2_card("acknowledged");
    let toast = json!({"type": "success", "content": "Acknowledged"});
    let id = emu.click(Click::on(&card)).expect("click");
    let f = next_frame(&mut ws).await;
    assert_eq!(
        payload(&f)["event"]["action"]["value"],
        json!({"action": "ack"})
    );
    let body = json!({"toast": toast, "card": {"type": "raw", "data": updated}});
    answer_with(&mut ws, &f, body.to_string().as_bytes()).await;
    let rec = done(&emu, &id).await;
    assert_eq!((rec.client_error, rec.toast), (None, Some(toast)));
    let view = emu.message_view(&card).expect("the card");
    assert_eq!(view.content, updated);
    let ops: Vec<VersionOp> = view.versions.iter().map(|v| v.op).collect();
    assert_eq!(ops, [VersionOp::Send, VersionOp::Callback]);
    assert_eq!(view.patch_count, 0, "not a PATCH");

    // A 1.0 card for the 2.0 one: 200830, the card unchanged.
    let id = emu.click(Click::on(&card)).expect("click");
    let f = next_frame(&mut ws).await;
    let v1 = json!({"card": {"type": "raw", "data": {"elements": [{"tag": "div"}]}}});
    answer_with(&mut ws, &f, v1.to_string().as_bytes()).await;
    let rec = done(&emu, &id).await;
    assert_eq!(rec.client_error, Some(answer::V2_TO_V1));
    assert_eq!(emu.message_view(&card).expect("card").content, updated);

    // A template reference is stored as a PATCH with a template would store it.
    let id = emu.click(Click::on(&card)).expect("click");
    let f = next_frame(&mut ws).await;
    let tpl = json!({"template_id": "AAqTemplate", "template_variable": {"who": "ou_alice"}});
    let body = json!({"card": {"type": "template", "data": tpl}});
    answer_with(&mut ws, &f, body.to_string().as_bytes()).await;
    assert_eq!(done(&emu, &id).await.client_error, None);
    let view: Value = reqwest::get(format!("{}/_emulator/messages/{card}", emu.base_url()))
        .await
        .expect("view")
        .json()
        .await
        .expect("json");
    assert_eq!(view["content"], json!({"type": "template", "data": tpl}));
    assert_eq!(view["versions"][2]["op"], "callback");
    let events: Value = reqwest::get(format!("{}/_emulator/events", emu.base_url()))
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    assert_eq!(events[0]["toast"]["content"], "Acknowledged");
    assert_eq!(events[1]["client_error"], 200830);
    assert_eq!(events[2]["client_error"], Value::Null);
    emu.shutdown().await;
}

#[tokio::test]
async fn every_click_carries_a_fresh_c_token_and_a_duplicate_repeats_its_event() {
    let emu = start().await;
    let mut ws = connect(&emu).await;
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let id = emu
            .click(Click {
                duplicate: true,
                ..Click::button("om_x", json!({}))
            })
            .expect("click");
        // The duplicate (a test's explicit request) comes after the first is done: the same
        // event, event_id and token included, itself pushed once and judged.
        let first = next_frame(&mut ws).await;
        ack(&mut ws, &first, json!({"code": 200})).await;
        let second = next_frame(&mut ws).await;
        assert_eq!(payload(&second), payload(&first));
        assert_eq!(payload(&first)["header"]["event_id"], id.as_str());
        ack(&mut ws, &second, json!({"code": 200})).await;
        let token = payload(&first)["event"]["token"].clone();
        tokens.push(token.as_str().expect("a token").to_string());
    }
    assert!(
        tokens.iter().all(|t| t.len() == 34 && t.starts_with("c-")),
        "{tokens:?}"
    );
    assert_ne!(tokens[0], tokens[1]);
    for _ in 0..100 {
        let evs = emu.pushed_events();
        if evs.len() == 4 && evs.iter().all(|e| e.done) {
            for e in &evs {
                assert_eq!((e.attempts, e.acked, e.client_error), (1, true, None));
            }
            emu.shutdown().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{:?}", emu.pushed_events());
}

/// How the HTTP receiver answers one request: status, extra header, body, delay.
type Scripted = (u16, Option<(&'static str, &'static str)>, String, u64);

#[derive(Clone, Default)]
struct Receiver {
    answers: Arc<Mutex<VecDeque<Scripted>>>,
    seen: Arc<Mutex<Vec<Value>>>,
}

async fn receive(State(r): State<Receiver>, body: axum::body::Bytes) -> Response {
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.seen.lock().expect("lock").push(v);
    let next = r.answers.lock().expect("lock").pop_front();
    let (status, extra, body, delay) = next.unwrap_or((200, None, "{}".into(), 0));
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let mut resp = (StatusCode::from_u16(status).expect("status"), body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("value"),
    );
    if let Some((k, v)) = extra {
        resp.headers_mut().insert(k, v.parse().expect("value"));
    }
    resp
}

#[tokio::test]
async fn over_http_a_click_is_posted_once_and_its_answer_judged() {
    let emu = start().await;
    let card = send_card(&emu, &v2_card("disk full")).await;
    let r = Receiver::default();
    let app = axum::Router::new()
        .route("/cb", post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/cb", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    emu.set_callback_url(Some(url));

    let updated = v2_card("acknowledged").to_string();
    let raw = format!(r#"{{"card":{{"type":"raw","data":{updated}}}}}"#);
    let cases: [(Scripted, DeliveryOutcome, Option<u32>); 6] = [
        (
            (500, None, r#"{"msg":"boom"}"#.into(), 0),
            DeliveryOutcome::Refused { code: 500 },
            Some(answer::NON_200),
        ),
        (
            (
                302,
                Some(("location", "http://127.0.0.1:1/")),
                String::new(),
                0,
            ),
            DeliveryOutcome::Refused { code: 302 },
            Some(answer::NON_200),
        ),
        (
            (200, None, "{}".into(), 600),
            DeliveryOutcome::NoAck,
            Some(200341),
        ),
        (
            (200, None, String::new(), 0),
            DeliveryOutcome::Acked,
            Some(200672),
        ),
        (
            (
                200,
                None,
                r#"{"toast":{"type":"info","content":"Got it"}}"#.into(),
                0,
            ),
            DeliveryOutcome::Acked,
            None,
        ),
        ((200, None, raw, 0), DeliveryOutcome::Acked, None),
    ];
    for (i, (answer, outcome, client_error)) in cases.into_iter().enumerate() {
        r.answers.lock().expect("lock").push_back(answer);
        let id = emu.click(Click::on(&card)).expect("click");
        let rec = done(&emu, &id).await;
        assert_eq!(outcomes(&rec), [outcome], "case {i}");
        assert_eq!(rec.client_error, client_error, "case {i}");
        // Nothing comes again: the receiver saw each click once.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(r.seen.lock().expect("lock").len(), i + 1, "case {i}");
    }
    let events = emu.pushed_events();
    assert_eq!(
        events[4].toast,
        Some(json!({"type": "info", "content": "Got it"}))
    );
    assert_eq!(
        emu.message_content(&card),
        serde_json::from_str::<Value>(&updated).ok()
    );

    // A message refused 500 is posted again; then answered.
    r.answers
        .lock()
        .expect("lock")
        .push_back((500, None, "{}".into(), 0));
    let message = emu
        .send_to_bot(BotMessage {
            text: "hi".into(),
            ..BotMessage::default()
        })
        .expect("message");
    let rec = done(&emu, &message).await;
    assert_eq!(
        outcomes(&rec),
        [
            DeliveryOutcome::Refused { code: 500 },
            DeliveryOutcome::Acked
        ]
    );
    assert_eq!(rec.client_error, None);

    // Nothing listens: the TCP connection fails, 200342, once.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    emu.set_callback_url(Some(format!("http://127.0.0.1:{port}/cb")));
    let id = emu.click(Click::on(&card)).expect("click");
    let rec = done(&emu, &id).await;
    assert_eq!(outcomes(&rec), [DeliveryOutcome::NoConnection]);
    assert_eq!(rec.client_error, Some(answer::CONNECT_FAILED));
    emu.shutdown().await;
}
