//! Events and card callbacks over HTTP (lifecycle §2.2–§2.5, §3.3; lark-api.md §9, §15.1):
//! plaintext and encrypted + signed pushes, the documented test vectors, redelivery after a
//! refusal, the toast answer, the `url_verification` challenge and deliberately wrong requests.
//!
//! The receiver is a small axum server in the test that records what arrives and answers as
//! scripted; decryption and signature checks here are computed independently of the emulator.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use lark_emulator::events::callback::{
    self, DETERMINISTIC_IV, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, WRONG_TOKEN,
};
use lark_emulator::events::VERIFICATION_TOKEN;
use lark_emulator::{
    BotMessage, CallbackConfig, Click, DeliveryOutcome, Emulator, EmulatorConfig, EmulatorHandle,
    LongConnectionConfig, PushedEvent, Tamper, VerifyError,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Seen {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// How the receiver answers one request.
#[derive(Clone, Debug)]
enum Answer {
    /// This status and body.
    Plain(u16, String),
    /// 200 with `{"challenge":…}` taken from the (decrypted) body.
    Echo,
    /// 200 `{}` after this long.
    Slow(Duration),
}

#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
    answers: Arc<Mutex<VecDeque<Answer>>>,
    key: Option<String>,
}

impl Receiver {
    fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.answers.lock().expect("lock").extend(answers);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    r.seen.lock().expect("lock").push(Seen {
        headers,
        body: body.to_vec(),
    });
    let answer = r.answers.lock().expect("lock").pop_front();
    match answer.unwrap_or(Answer::Plain(200, "{}".into())) {
        Answer::Plain(status, body) => (StatusCode::from_u16(status).expect("status"), body),
        Answer::Echo => {
            let v = plaintext(r.key.as_deref(), &body);
            (
                StatusCode::OK,
                json!({ "challenge": v["challenge"] }).to_string(),
            )
        }
        Answer::Slow(d) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, "{}".into())
        }
    }
}

/// A receiver on a random port; (its URL, the receiver).
async fn receiver(key: Option<&str>) -> (String, Receiver) {
    let r = Receiver {
        key: key.map(str::to_string),
        ..Receiver::default()
    };
    let app = Router::new()
        .route("/cb", post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/cb"), r)
}

/// Independent AES-256-CBC decryption of an `encrypt` value (lifecycle §2.3).
fn decrypt(key: &str, encrypt: &str) -> Vec<u8> {
    let buf = base64::engine::general_purpose::STANDARD
        .decode(encrypt)
        .expect("base64");
    let key: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let iv: [u8; 16] = buf[..16].try_into().expect("iv");
    cbc::Decryptor::<aes::Aes256>::new(&key.into(), &iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(&buf[16..])
        .expect("decrypt")
}

/// The JSON a body carries: decrypted when `key` is set.
fn plaintext(key: Option<&str>, body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).expect("json body");
    match key {
        Some(k) => {
            let enc = v["encrypt"].as_str().expect("an encrypt field");
            serde_json::from_slice(&decrypt(k, enc)).expect("json plaintext")
        }
        None => v,
    }
}

/// Independent signature: hex(SHA-256(timestamp ‖ nonce ‖ key ‖ body)).
fn expected_signature(seen: &Seen, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(seen.header(HEADER_TIMESTAMP).expect("timestamp").as_bytes());
    h.update(seen.header(HEADER_NONCE).expect("nonce").as_bytes());
    h.update(key.as_bytes());
    h.update(&seen.body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn emulator(callbacks: CallbackConfig) -> EmulatorHandle {
    let config = EmulatorConfig {
        long_connection: LongConnectionConfig {
            ack_deadline: Duration::from_millis(500),
            retry_schedule: vec![Duration::from_millis(100), Duration::from_millis(100)],
            ..LongConnectionConfig::default()
        },
        callbacks,
        ..EmulatorConfig::default()
    };
    Emulator::start(config, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("start")
}

/// Wait until the event is done (acked or out of retries).
async fn done(emu: &EmulatorHandle, event_id: &str) -> PushedEvent {
    let start = Instant::now();
    loop {
        if let Some(e) = emu
            .pushed_events()
            .into_iter()
            .find(|e| e.event_id == event_id && e.done)
        {
            return e;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "event {event_id} not done"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn outcomes(e: &PushedEvent) -> Vec<DeliveryOutcome> {
    e.deliveries.iter().map(|d| d.outcome.clone()).collect()
}

fn message(text: &str) -> BotMessage {
    BotMessage {
        text: text.into(),
        ..BotMessage::default()
    }
}

#[test]
fn the_documented_vectors() {
    // lifecycle §2.4 #1 (through the test's own decryptor).
    assert_eq!(
        decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="),
        b"hello world"
    );
    // #2: the AES key.
    let key: String = callback::aes_key("test key")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        key,
        "fa2bdca424f01f01ffb48df93acc35d439c7fd331a1a7fba6ac2fd83aa9ab31a"
    );
    // #4: the challenge with IV 000102…0f.
    let challenge = br#"{"challenge":"ajls384kdj1234","token":"vt","type":"url_verification"}"#;
    assert_eq!(
        callback::encrypt("test key", DETERMINISTIC_IV, challenge),
        "AAECAwQFBgcICQoLDA0ODw9mLTIAZS9jAmGTQ1wAhHrdc/+YAHCBScAaLLdlIbBIMbmTizdcSfA1VhU+PS0tvK4c1SNQkYkKB4FfQJh6Mxcp7xxJdPsy08voTB3sP5j+"
    );
    // #5: the signature.
    assert_eq!(
        callback::signature(
            "1700000000",
            "nonce123",
            "test key",
            br#"{"encrypt":"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="}"#
        ),
        "669e3ed5328644f71370e3249f96af0fd17e5ed4d7b178c44f11f7997339e344"
    );
}

#[tokio::test]
async fn a_plaintext_push_is_the_event_json() {
    let emu = emulator(CallbackConfig::default()).await;
    let (url, r) = receiver(None).await;
    emu.set_callback_url(Some(url.clone()));
    let id = emu.send_to_bot(message("hello")).expect("push");
    let e = done(&emu, &id).await;
    assert!(e.acked, "{e:?}");
    assert_eq!(outcomes(&e), vec![DeliveryOutcome::Acked]);
    assert_eq!(e.deliveries[0].url.as_deref(), Some(url.as_str()));
    assert_eq!(e.ack_data, Some(json!({})));
    let seen = r.seen();
    assert_eq!(seen.len(), 1);
    let body: Value = serde_json::from_slice(&seen[0].body).expect("json");
    assert_eq!(body, e.payload);
    assert_eq!(body["header"]["token"], VERIFICATION_TOKEN);
    assert_eq!(body["header"]["event_type"], "im.message.receive_v1");
    assert_eq!(
        seen[0].header(HEADER_SIGNATURE),
        None,
        "unsigned without a key"
    );
    let ts: u64 = seen[0]
        .header(HEADER_TIMESTAMP)
        .expect("timestamp")
        .parse()
        .expect("seconds");
    assert!(now_s().abs_diff(ts) < 5);
    emu.shutdown().await;
}

#[tokio::test]
async fn an_encrypted_push_is_signed_over_its_raw_body() {
    let (url, r) = receiver(Some("test key")).await;
    let emu = emulator(CallbackConfig {
        url: Some(url),
        encrypt_key: Some("test key".into()),
        verification_token: "vt_1".into(),
        ..CallbackConfig::default()
    })
    .await;
    let id = emu
        .click(Click::button("om_unknown", json!({"k": "v"})))
        .expect("push");
    let e = done(&emu, &id).await;
    assert!(e.acked);
    let seen = r.seen();
    let body: Value = serde_json::from_slice(&seen[0].body).expect("json");
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "only encrypt: {body}"
    );
    let plain = plaintext(Some("test key"), &seen[0].body);
    assert_eq!(plain, e.payload);
    assert_eq!(plain["header"]["token"], "vt_1");
    assert_eq!(plain["event"]["action"]["value"], json!({"k": "v"}));
    assert_eq!(
        seen[0].header(HEADER_SIGNATURE),
        Some(expected_signature(&seen[0], "test key").as_str())
    );
    // A random IV: the same event twice encrypts differently.
    let mut copy = e.payload.clone();
    copy["header"]["event_id"] = json!("copy_of_the_click");
    let again = emu.push_event("cli_demo_app", copy);
    let again = done(&emu, &again.expect("push")).await;
    assert!(again.acked);
    let seen = r.seen();
    assert_ne!(seen[0].body, seen[1].body);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_deterministic_iv_gives_the_vectors_iv() {
    let (url, r) = receiver(Some("test key")).await;
    let emu = emulator(CallbackConfig {
        url: Some(url),
        encrypt_key: Some("test key".into()),
        deterministic_iv: true,
        ..CallbackConfig::default()
    })
    .await;
    let id = emu.send_to_bot(message("x")).expect("push");
    let e = done(&emu, &id).await;
    let seen = r.seen();
    let expected = json!({
        "encrypt": callback::encrypt("test key", DETERMINISTIC_IV, e.payload.to_string().as_bytes())
    })
    .to_string();
    assert_eq!(seen[0].body, expected.into_bytes());
    emu.shutdown().await;
}

#[tokio::test]
async fn a_refusal_is_redelivered_with_the_same_event_id() {
    let emu = emulator(CallbackConfig::default()).await;
    let (url, r) = receiver(None).await;
    emu.set_callback_url(Some(url));
    r.script([Answer::Plain(500, r#"{"msg":"boom"}"#.into())]);
    let id = emu.send_to_bot(message("again")).expect("push");
    let e = done(&emu, &id).await;
    assert_eq!(
        outcomes(&e),
        vec![
            DeliveryOutcome::Refused { code: 500 },
            DeliveryOutcome::Acked
        ]
    );
    assert_eq!(e.attempts, 2);
    let ids: Vec<Value> = r
        .seen()
        .iter()
        .map(|s| plaintext(None, &s.body)["header"]["event_id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(id), json!(id)]);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_slow_answer_and_a_refused_connection_fail_their_attempts() {
    let emu = emulator(CallbackConfig::default()).await;
    let (url, r) = receiver(None).await;
    emu.set_callback_url(Some(url));
    r.script([Answer::Slow(Duration::from_millis(900))]);
    let id = emu.send_to_bot(message("slow")).expect("push");
    let e = done(&emu, &id).await;
    assert_eq!(
        outcomes(&e),
        vec![DeliveryOutcome::NoAck, DeliveryOutcome::Acked]
    );

    // Nothing listens on this port once the listener is dropped.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    emu.set_callback_url(Some(format!("http://127.0.0.1:{port}/cb")));
    let id = emu.send_to_bot(message("nobody")).expect("push");
    let e = done(&emu, &id).await;
    assert!(!e.acked);
    assert_eq!(e.attempts, 3, "the first attempt and two retries");
    assert!(outcomes(&e)
        .iter()
        .all(|o| *o == DeliveryOutcome::NoConnection));
    assert!(e.deliveries[0].error.is_some());
    emu.shutdown().await;
}

#[tokio::test]
async fn a_toast_answer_is_recorded() {
    let emu = emulator(CallbackConfig::default()).await;
    let (url, r) = receiver(None).await;
    emu.set_callback_url(Some(url));
    let toast = json!({"toast": {"type": "success", "content": "Acknowledged"}});
    r.script([Answer::Plain(200, toast.to_string())]);
    let id = emu
        .click(Click::button("om_x", json!({"a": 1})))
        .expect("push");
    let e = done(&emu, &id).await;
    assert!(e.acked);
    assert_eq!(e.ack_code, Some(200));
    assert_eq!(e.ack_data, Some(toast.clone()));
    assert_eq!(
        (e.client_error, e.toast),
        (None, Some(toast["toast"].clone()))
    );
    assert!(e.latency_ms.is_some());
    emu.shutdown().await;
}

#[tokio::test]
async fn the_url_verification_challenge() {
    // Plaintext.
    let emu = emulator(CallbackConfig::default()).await;
    let (url, r) = receiver(None).await;
    r.script([Answer::Echo]);
    let challenge = emu.verify_url(&url).await.expect("verified");
    let seen = r.seen();
    let body = plaintext(None, &seen[0].body);
    assert_eq!(
        body,
        json!({"challenge": challenge, "token": VERIFICATION_TOKEN, "type": "url_verification"})
    );
    assert_eq!(seen[0].header(HEADER_SIGNATURE), None);

    // A wrong echo.
    r.script([Answer::Plain(200, r#"{"challenge":"nope"}"#.into())]);
    match emu.verify_url(&url).await {
        Err(VerifyError::WrongEcho { body, .. }) => assert!(body.contains("nope")),
        other => panic!("{other:?}"),
    }
    // A non-200 and a slow answer.
    r.script([Answer::Plain(403, "no".into())]);
    assert!(matches!(
        emu.verify_url(&url).await,
        Err(VerifyError::Status { status: 403, .. })
    ));
    r.script([Answer::Slow(Duration::from_millis(1500))]);
    assert!(matches!(
        emu.verify_url(&url).await,
        Err(VerifyError::Timeout(_))
    ));
    emu.shutdown().await;

    // Encrypted, through the control endpoint with the configured URL.
    let (url, r) = receiver(Some("k2")).await;
    let emu = emulator(CallbackConfig {
        url: Some(url),
        encrypt_key: Some("k2".into()),
        ..CallbackConfig::default()
    })
    .await;
    r.script([Answer::Echo]);
    let http = reqwest::Client::new();
    let answer: Value = http
        .post(format!("{}/_emulator/events/verify", emu.base_url()))
        .body("{}")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["ok"], true, "{answer}");
    let seen = r.seen();
    let body = plaintext(Some("k2"), &seen[0].body);
    assert_eq!(body["challenge"], answer["challenge"]);
    assert_eq!(body["type"], "url_verification");
    r.script([Answer::Plain(200, "{}".into())]);
    let answer: Value = http
        .post(format!("{}/_emulator/events/verify", emu.base_url()))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["ok"], false, "{answer}");
    emu.shutdown().await;
}

#[tokio::test]
async fn each_tamper_makes_one_request_wrong() {
    let key = "tamper key";
    let (url, r) = receiver(Some(key)).await;
    let emu = emulator(CallbackConfig {
        url: Some(url),
        encrypt_key: Some(key.into()),
        tamper: vec![Tamper::Signature],
        ..CallbackConfig::default()
    })
    .await;
    let mut from = 0;
    for tamper in [Tamper::Signature, Tamper::Token, Tamper::StaleTimestamp] {
        if tamper != Tamper::Signature {
            emu.tamper_next(tamper);
        }
        // The receiver refuses the wrong request, as a checking receiver would.
        r.script([Answer::Plain(401, "{}".into())]);
        let id = emu.send_to_bot(message("t")).expect("push");
        let e = done(&emu, &id).await;
        assert_eq!(
            outcomes(&e),
            vec![
                DeliveryOutcome::Refused { code: 401 },
                DeliveryOutcome::Acked
            ],
            "{tamper:?}"
        );
        assert_eq!(e.deliveries[0].tamper, Some(tamper));
        assert_eq!(e.deliveries[1].tamper, None);
        let seen = r.seen();
        let (wrong, right) = (&seen[from], &seen[from + 1]);
        from += 2;
        for s in [wrong, right] {
            assert_eq!(plaintext(Some(key), &s.body)["header"]["event_id"], id);
        }
        let good = |s: &Seen| s.header(HEADER_SIGNATURE) == Some(&expected_signature(s, key));
        let token = |s: &Seen| plaintext(Some(key), &s.body)["header"]["token"].clone();
        let age = |s: &Seen| {
            let ts: u64 = s.header(HEADER_TIMESTAMP).expect("ts").parse().expect("s");
            now_s().saturating_sub(ts)
        };
        assert!(good(right) && token(right) == VERIFICATION_TOKEN && age(right) < 5);
        match tamper {
            Tamper::Signature => {
                assert!(wrong.header(HEADER_SIGNATURE).is_some());
                assert!(!good(wrong));
                assert_eq!(token(wrong), VERIFICATION_TOKEN);
            }
            Tamper::Token => {
                assert!(good(wrong));
                assert_eq!(token(wrong), WRONG_TOKEN);
            }
            Tamper::StaleTimestamp => {
                assert!(good(wrong), "signed over the stale timestamp");
                assert!((595..=605).contains(&age(wrong)), "{}", age(wrong));
            }
        }
    }

    // The control body's `tamper` affects that event's first attempt only.
    r.script([Answer::Plain(401, "{}".into())]);
    let http = reqwest::Client::new();
    let answer: Value = http
        .post(format!("{}/_emulator/events/message", emu.base_url()))
        .json(&json!({"text": "x", "tamper": "token"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let id = answer["event_id"].as_str().expect("event_id").to_string();
    let e = done(&emu, &id).await;
    assert_eq!(e.deliveries[0].tamper, Some(Tamper::Token));
    assert!(e.acked);
    let events: Value = http
        .get(format!("{}/_emulator/events", emu.base_url()))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let last = events.as_array().and_then(|a| a.last()).expect("an event");
    assert_eq!(last["deliveries"][0]["tamper"], "token");
    assert_eq!(
        last["deliveries"][0]["outcome"],
        json!({"refused": {"code": 401}})
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn the_callback_control_endpoint_sets_the_url_and_queues_tampering() {
    let emu = emulator(CallbackConfig::default()).await;
    let (url, r) = receiver(None).await;
    let http = reqwest::Client::new();
    let answer: Value = http
        .post(format!("{}/_emulator/events/callback", emu.base_url()))
        .json(&json!({"url": url, "tamper": ["stale"]}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(answer, json!({"ok": true, "url": url, "tamper_queued": 1}));
    assert_eq!(emu.callback_config().url.as_deref(), Some(url.as_str()));
    let id = emu.send_to_bot(message("x")).expect("push");
    let e = done(&emu, &id).await;
    assert_eq!(e.deliveries[0].tamper, Some(Tamper::StaleTimestamp));
    assert_eq!(r.seen().len(), 1, "accepted: the receiver does not check");
    let answer: Value = http
        .post(format!("{}/_emulator/events/callback", emu.base_url()))
        .json(&json!({"url": null}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["url"], Value::Null);
    assert_eq!(emu.callback_config().url, None);
    emu.shutdown().await;
}
