//! The way back (docs/user-guide.md "Receiving events and clicks"): Lark's events and card clicks
//! into `lark.events.topic`, over the long connection (real WebSocket: the emulator serves Lark's
//! `/callback/ws/endpoint` and `pbbp2` frames) or as signed HTTP callbacks to the connector's
//! listener (real HTTP, encrypted and signed by the emulator). Real broker, the real binary.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lark_sink::emulator::events::VERIFICATION_TOKEN;
use lark_sink::emulator::{
    BotMessage, CallbackConfig, Click, DeliveryOutcome, LongConnectionConfig, PushedEvent, Tamper,
};
use lark_sink_e2e::broker::OwnBroker;
use lark_sink_e2e::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// The emulator's long connection with a short retry schedule (Lark's is 15 s, 5 min, 1 h, 6 h)
/// and reconnect times of a second, so that redeliveries and reconnects fit in a test.
fn emulator() -> EmulatorConfig {
    EmulatorConfig {
        long_connection: LongConnectionConfig {
            reconnect_interval_s: 1,
            reconnect_nonce_s: 1,
            retry_schedule: (0..8).map(|_| Duration::from_secs(2)).collect(),
            ..LongConnectionConfig::default()
        },
        ..EmulatorConfig::default()
    }
}

/// A connector config with the events topic (and a toast for clicks), and a state topic for the
/// keyed card.
fn with_events(s: &Scenario, topic: &str) -> Value {
    let mut cfg = s.config();
    cfg["config"]["lark.events.topic"] = json!(topic);
    cfg["config"]["lark.events.card.toast"] = json!("Got it");
    cfg["config"]["lark.state.topic"] = json!(unique(&format!("{}-state", s.topic)));
    cfg
}

/// The alert card, keyed `disk-full`, with an Acknowledge button (its title `title`).
fn alert_card(title: &str) -> Value {
    json!({"receiveType": "chat", "receiveId": "oc_ops", "contentType": "interactive",
           "messageKey": "disk-full",
           "content": {"header": {"title": {"tag": "plain_text", "content": title}},
                       "elements": [{"tag": "action", "actions": [{"tag": "button",
                           "text": {"tag": "plain_text", "content": "Acknowledge"},
                           "value": {"action": "ack"}}]}]}})
}

/// A connector with the events topic, once its long connection is up, and a card it sent: the
/// connector, the events topic and the card's message id.
async fn connected(s: &Scenario) -> (Connector, String, String) {
    let topic = unique("events-out");
    let c = Connector::start(&with_events(s, &topic));
    wait_until("the long connection", WAIT, || {
        s.lark.live_connections() == 1
    })
    .await;
    let card = a_card(s).await;
    (c, topic, card)
}

/// The alert card sent through the sink: its Lark message id.
async fn a_card(s: &Scenario) -> String {
    let before = s.lark.messages().len();
    s.send(&alert_card("disk full")).await;
    wait_until("the card sent", WAIT, || s.lark.messages().len() > before).await;
    s.lark.messages()[before].message_id.clone()
}

fn event_of<'a>(events: &'a [PushedEvent], id: &str) -> Option<&'a PushedEvent> {
    events.iter().find(|e| e.event_id == id)
}

/// Waits until the emulator saw event `id` answered with code 200.
async fn acked(s: &Scenario, id: &str) -> PushedEvent {
    wait_until(&format!("event {id} acked"), WAIT, || {
        event_of(&s.lark.pushed_events(), id).is_some_and(|e| e.acked)
    })
    .await;
    event_of(&s.lark.pushed_events(), id)
        .cloned()
        .expect("the event")
}

/// A click on a keyed card the sink sent, a message to the bot, each also redelivered, and a
/// click in fragments: each is one record (value the event JSON as pushed, key the message,
/// `lark.*` headers, the card's `messageKey` for the clicks), the click answered with the toast,
/// the redeliveries answered without a record. Then the round trip: the click answered by a keyed
/// update through the sink changes the clicked card in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_and_messages_reach_the_topic_once() {
    let s = Scenario::with_emulator("events", 1, emulator()).await;
    let (mut c, topic, card) = connected(&s).await;

    let started = Instant::now();
    let click = s
        .lark
        .click(Click {
            duplicate: true,
            ..Click::on(&card)
        })
        .expect("a click");
    let pushed = acked(&s, &click).await;
    let click_latency = started.elapsed();
    assert_eq!(
        pushed.ack_data,
        Some(json!({"toast": {"type": "info", "content": "Got it"}}))
    );
    let message = s
        .lark
        .send_to_bot(BotMessage {
            chat_id: Some("oc_ops".into()),
            text: "silence disk alerts for 1h".into(),
            duplicate: true,
            ..BotMessage::default()
        })
        .expect("a message");
    acked(&s, &message).await;
    let fragmented = s
        .lark
        .click(Click {
            fragment_size: Some(64),
            ..Click::on(&card)
        })
        .expect("a fragmented click");
    acked(&s, &fragmented).await;
    // Every push, redeliveries included, finished: answered 200.
    wait_until("every push answered", WAIT, || {
        let events = s.lark.pushed_events();
        events.len() >= 5 && events.iter().all(|e| e.done && e.acked)
    })
    .await;
    // The connector's answer to each click passes Lark's checks: the user sees the toast.
    for e in s.lark.pushed_events() {
        if e.event_type == "card.action.trigger" {
            assert_eq!(
                (e.client_error, e.toast),
                (None, Some(json!({"type": "info", "content": "Got it"})))
            );
        }
    }

    let records = read_to_end(&topic, Duration::from_secs(20));
    let payloads: BTreeMap<String, Value> = s
        .lark
        .pushed_events()
        .into_iter()
        .map(|e| (e.event_id.clone(), e.payload.clone()))
        .collect();
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        let h: BTreeMap<&str, &str> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let value: Value =
            serde_json::from_slice(r.value.as_deref().expect("a value")).expect("JSON");
        let id = h["lark.event_id"];
        assert_eq!(
            Some(&value),
            payloads.get(id),
            "the value is the event as Lark pushed it"
        );
        assert_eq!(h["lark.event_type"], value["header"]["event_type"]);
        assert_eq!(h["lark.app_id"], value["header"]["app_id"]);
        assert_eq!(h["lark.tenant_key"], value["header"]["tenant_key"]);
        let key = String::from_utf8(r.key.clone().expect("a key")).expect("UTF-8");
        match h["lark.event_type"] {
            "card.action.trigger" => {
                assert_eq!(key, card);
                assert_eq!(h["lark.message_key"], "disk-full", "the card's messageKey");
            }
            "im.message.receive_v1" => assert_eq!(key, value["event"]["message"]["message_id"]),
            other => panic!("unexpected {other}"),
        }
        *by_type.entry(h["lark.event_type"].to_string()).or_default() += 1;
    }
    assert_eq!(records.len(), 3, "each event once: {by_type:?}");
    assert_eq!(by_type["card.action.trigger"], 2);
    // The round trip: a consumer of the events answers the click with a keyed update through the
    // sink, and the card the user clicked changes in place.
    let click = records
        .iter()
        .find(|r| {
            r.headers
                .iter()
                .any(|(k, v)| k == "lark.event_type" && v == "card.action.trigger")
        })
        .expect("a click record");
    let value: Value =
        serde_json::from_slice(click.value.as_deref().expect("a value")).expect("JSON");
    let who = value["event"]["operator"]["open_id"]
        .as_str()
        .expect("the operator")
        .to_string();
    let acknowledged = format!("disk full: acknowledged by {who}");
    s.send(&alert_card(&acknowledged)).await;
    wait_until("the card updated in place", WAIT, || {
        s.lark
            .message_view(&card)
            .is_some_and(|m| m.content["header"]["title"]["content"] == acknowledged.as_str())
    })
    .await;
    assert_eq!(
        s.lark
            .messages()
            .iter()
            .filter(|m| m.msg_type == "interactive")
            .count(),
        1,
        "one card, updated"
    );
    let text = Admin::of(&c).await.metrics().await;
    assert_eq!(
        metric(&text, "lark_sink_events_total", "outcome=\"written\""),
        3.0
    );
    assert_eq!(
        metric(&text, "lark_sink_events_total", "outcome=\"duplicate\""),
        2.0
    );
    assert_eq!(metric(&text, "lark_sink_events_connected", ""), 1.0);
    assert_eq!(c.stop(), Some(0));
    eprintln!(
        "a click to its Kafka record and answer: {} ms (emulator's ack latency {:?} ms)",
        click_latency.as_millis(),
        pushed.latency_ms
    );
}

/// Lark drops the connection: the connector dials again (the endpoint, then the new URL) and the
/// next click arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_dialled_again() {
    let s = Scenario::with_emulator("events-drop", 1, emulator()).await;
    let (mut c, topic, card) = connected(&s).await;
    for round in 1..=2 {
        let dropped = Instant::now();
        assert_eq!(s.lark.drop_connections(), 1);
        wait_until("dialled again", WAIT, || s.lark.live_connections() == 1).await;
        eprintln!("reconnected {round}: {} ms", dropped.elapsed().as_millis());
        let click = s
            .lark
            .click(Click::button(&card, json!({"round": round})))
            .expect("a click");
        acked(&s, &click).await;
    }
    assert_eq!(read_to_end(&topic, Duration::from_secs(20)).len(), 2);
    let text = Admin::of(&c).await.metrics().await;
    assert!(metric(&text, "lark_sink_events_reconnects_total", "") >= 2.0);
    assert_eq!(c.stop(), Some(0));
}

/// The broker stops. A click cannot be written, and since Lark never pushes a click again
/// (lifecycle §2.1) it is not in the topic: its user is answered with the failure toast (an error
/// toast: click again) instead of Lark's generic error 200671. A message to the bot cannot be written either: answered
/// 500, Lark pushes it again, and once the broker is back a redelivery lands, exactly once. A
/// click after that is written once and answered with the toast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_down_lark_redelivers_and_nothing_is_lost() {
    let broker = OwnBroker::start();
    let kafka = KafkaAccess::at(&broker.bootstrap());
    let s = Scenario::on(
        kafka.clone(),
        "events-broker",
        1,
        start_emulator_with(emulator()).await,
    )
    .await;
    let (mut c, topic, card) = connected(&s).await;
    broker.script("stop");
    // A message to the bot, and a click right behind it: events are handled side by side, so
    // the click's failing write does not wait for the message's and is answered within Lark's 3 s.
    let message = s
        .lark
        .send_to_bot(BotMessage {
            chat_id: Some("oc_ops".into()),
            text: "silence disk alerts for 1h".into(),
            ..BotMessage::default()
        })
        .expect("a message");
    let lost = s.lark.click(Click::on(&card)).expect("a click");
    let judged = |id: &str| event_of(&s.lark.pushed_events(), id).is_some_and(|e| e.done);
    wait_until("the click answered", WAIT, || judged(&lost)).await;
    let pushed = event_of(&s.lark.pushed_events(), &lost)
        .cloned()
        .expect("the click");
    // Lark never pushes a click again, so its user is told, with an error toast, to click again
    // (lark.events.card.failure.toast), instead of Lark's generic error 200671.
    assert_eq!(
        pushed
            .deliveries
            .iter()
            .map(|d| &d.outcome)
            .collect::<Vec<_>>(),
        [&DeliveryOutcome::Acked],
        "answered once (in time, though behind the message), not pushed again: {pushed:?}"
    );
    assert_eq!(
        (pushed.client_error, pushed.toast),
        (
            None,
            Some(json!({"type": "error", "content": lark_sink::config::DEFAULT_FAILURE_TOAST}))
        )
    );

    wait_until(
        "the message's first attempt refused or unanswered",
        WAIT,
        || {
            event_of(&s.lark.pushed_events(), &message).is_some_and(|e| {
                e.deliveries.first().is_some_and(|d| {
                    matches!(
                        d.outcome,
                        DeliveryOutcome::Refused { .. } | DeliveryOutcome::NoAck
                    )
                })
            })
        },
    )
    .await;
    broker.script("resume");
    let pushed = acked(&s, &message).await;
    assert!(
        pushed.attempts >= 2,
        "answered only after a redelivery: {pushed:?}"
    );
    assert_eq!(pushed.client_error, None, "an event, not a click");
    let again = s.lark.click(Click::on(&card)).expect("a click");
    acked(&s, &again).await;
    wait_until("the second click judged", WAIT, || judged(&again)).await;
    let pushed = event_of(&s.lark.pushed_events(), &again)
        .cloned()
        .expect("the click");
    assert_eq!(pushed.attempts, 1);
    assert_eq!(
        (pushed.client_error, pushed.toast),
        (None, Some(json!({"type": "info", "content": "Got it"})))
    );

    let records = read_topic_on(&kafka, &topic, 2, Duration::from_secs(30));
    let ids: Vec<String> = records
        .iter()
        .map(|r| r.header("lark.event_id").to_string())
        .collect();
    assert_eq!(
        ids,
        [message.clone(), again.clone()],
        "the lost click is not there"
    );
    // Nothing more arrives: the attempts made while the broker was down left no record.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        read_topic_on(&kafka, &topic, 3, Duration::from_secs(3)).len(),
        2
    );
    let text = Admin::of(&c).await.metrics().await;
    assert!(metric(&text, "lark_sink_events_total", "outcome=\"failed\"") >= 2.0);
    assert_eq!(
        metric(&text, "lark_sink_events_total", "outcome=\"written\""),
        2.0
    );
    assert_eq!(c.stop(), Some(0));
}

/// `lark.events.mode=http`: the emulator posts encrypted, signed callbacks to the connector's
/// listener. The `url_verification` challenge is answered; a click is written once (its
/// duplicate after success answered without a record) and answered with the toast; a message to
/// the bot with a wrong signature, a wrong Verification Token or a stale timestamp is refused
/// (401) and counted, and Lark's retry of it, made right, is written. A click with a wrong
/// signature is refused too, and Lark does not retry a click: not written, the user sees 200671.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_callbacks_are_verified_before_they_are_written() {
    const ENCRYPT_KEY: &str = "events-encrypt-key-4d1e";
    let mut lark = emulator();
    lark.callbacks = CallbackConfig {
        encrypt_key: Some(ENCRYPT_KEY.into()),
        ..CallbackConfig::default()
    };
    let s = Scenario::with_emulator("events-http", 1, lark).await;
    let topic = unique("events-out");
    let mut cfg = with_events(&s, &topic);
    cfg["config"]["lark.events.mode"] = json!("http");
    cfg["config"]["lark.events.listener"] = json!("127.0.0.1:0");
    cfg["config"]["lark.events.encrypt.key"] = json!(ENCRYPT_KEY);
    cfg["config"]["lark.events.verification.token"] = json!(VERIFICATION_TOKEN);
    let mut c = Connector::start(&cfg);
    let listening = "events: listening for Lark's callbacks on ";
    wait_until("the listener", WAIT, || c.logs().contains(listening)).await;
    let logs = c.logs();
    let at = logs.find(listening).expect("the line") + listening.len();
    let addr: String = logs[at..]
        .chars()
        .take_while(|ch| !ch.is_whitespace())
        .collect();
    let url = format!("http://{addr}/lark/events");
    let challenge = s
        .lark
        .verify_url(&url)
        .await
        .expect("the challenge answered");
    assert!(!challenge.is_empty());
    s.lark.set_callback_url(Some(url));
    assert_eq!(
        s.lark.live_connections(),
        0,
        "no long connection in http mode"
    );
    let card = a_card(&s).await;

    let click = s
        .lark
        .click(Click {
            duplicate: true,
            ..Click::on(&card)
        })
        .expect("a click");
    let pushed = acked(&s, &click).await;
    assert_eq!(
        pushed.ack_data,
        Some(json!({"toast": {"type": "info", "content": "Got it"}}))
    );
    for tamper in [Tamper::Signature, Tamper::Token, Tamper::StaleTimestamp] {
        let id = s
            .lark
            .send_to_bot(BotMessage {
                chat_id: Some("oc_ops".into()),
                text: format!("{tamper:?}"),
                tamper: Some(tamper),
                ..BotMessage::default()
            })
            .expect("a message");
        let pushed = acked(&s, &id).await;
        assert!(
            matches!(
                pushed.deliveries[0].outcome,
                DeliveryOutcome::Refused { code: 401 }
            ),
            "{tamper:?} refused first: {pushed:?}"
        );
    }
    let forged = s
        .lark
        .click(Click {
            tamper: Some(Tamper::Signature),
            ..Click::on(&card)
        })
        .expect("a click");
    wait_until("every push finished", WAIT, || {
        let events = s.lark.pushed_events();
        events.len() >= 6 && events.iter().all(|e| e.done)
    })
    .await;
    let events = s.lark.pushed_events();
    let forged = event_of(&events, &forged).expect("the forged click");
    assert_eq!(
        (forged.attempts, forged.client_error),
        (1, Some(200671)),
        "refused, not retried: {forged:?}"
    );
    for e in events.iter().filter(|e| e.event_id != forged.event_id) {
        assert!(e.acked && e.client_error.is_none(), "{e:?}");
    }
    let records = read_to_end(&topic, Duration::from_secs(20));
    assert_eq!(records.len(), 4, "a click and three messages, each once");
    for r in &records {
        assert_ne!(
            r.header("lark.event_id"),
            forged.event_id,
            "the forged click"
        );
        match r.header("lark.event_type") {
            "card.action.trigger" => {
                assert_eq!(r.header("lark.message_key"), "disk-full");
                assert_eq!(r.key.as_deref(), Some(card.as_bytes()));
            }
            other => assert_eq!(other, "im.message.receive_v1"),
        }
    }
    let text = Admin::of(&c).await.metrics().await;
    for (reason, n) in [("signature", 2.0), ("token", 1.0), ("stale", 1.0)] {
        assert_eq!(
            metric(
                &text,
                "lark_sink_events_rejected_total",
                &format!("reason=\"{reason}\"")
            ),
            n,
            "{reason}"
        );
    }
    assert_eq!(
        metric(&text, "lark_sink_events_total", "outcome=\"written\""),
        4.0
    );
    assert_eq!(
        metric(&text, "lark_sink_events_total", "outcome=\"duplicate\""),
        1.0
    );
    assert_eq!(c.stop(), Some(0));
}

/// A measurement, not a check of speed (`cargo test --test events -- --ignored --nocapture`):
/// 200 clicks one after another, the emulator's time from pushing each to its answer (which
/// comes after the broker acknowledged the record), p50 and p99; and 10 dropped connections,
/// the time until the connector is connected again (with the emulator's 1 s reconnect
/// settings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_click_latency_and_reconnect() {
    let s = Scenario::with_emulator("events-measure", 1, emulator()).await;
    let (mut c, topic, card) = connected(&s).await;
    let mut latencies = Vec::new();
    for i in 0..200 {
        let id = s
            .lark
            .click(Click::button(&card, json!({"i": i})))
            .expect("a click");
        let pushed = acked(&s, &id).await;
        latencies.push(pushed.latency_ms.expect("a latency"));
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    eprintln!(
        "click → record acknowledged → answer, 200 clicks: p50 {} ms, p99 {} ms, max {} ms",
        at(0.5),
        at(0.99),
        latencies[latencies.len() - 1]
    );
    assert_eq!(read_to_end(&topic, Duration::from_secs(20)).len(), 200);
    let mut reconnects = Vec::new();
    for _ in 0..10 {
        let dropped = Instant::now();
        s.lark.drop_connections();
        wait_until_every("dialled again", WAIT, Duration::from_millis(10), || {
            s.lark.live_connections() == 1
        })
        .await;
        reconnects.push(dropped.elapsed().as_millis());
    }
    reconnects.sort_unstable();
    eprintln!("reconnect after a drop, 10 times: {reconnects:?} ms");
    assert_eq!(c.stop(), Some(0));
}

/// Lark's limit of connections per app (50; 1 here), through the connector: a second instance
/// of the same app is refused at the handshake (514, 1000040350), which the SDKs treat as final,
/// so it stops with an error that names the limit instead of dialling forever; the instance
/// holding the connection goes on receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_over_the_connection_limit_stops_and_says_why() {
    let mut lark = emulator();
    lark.long_connection.max_connections_per_app = 1;
    let s = Scenario::with_emulator("events-limit", 1, lark).await;
    let (mut first, topic, card) = connected(&s).await;
    let mut second = Connector::start(&with_events(&s, &unique("events-out-2")));
    let code = second.wait_exit(WAIT).await;
    let logs = second.logs();
    assert_eq!(code, Some(1), "the second instance stops:\n{logs}");
    assert!(
        logs.contains("1000040350") && logs.contains("connection"),
        "the error names Lark's connection limit:\n{logs}"
    );
    assert_eq!(s.lark.live_connections(), 1);
    let click = s
        .lark
        .click(Click::button(&card, json!({"action": "ack"})))
        .expect("a click");
    acked(&s, &click).await;
    assert_eq!(read_to_end(&topic, Duration::from_secs(20)).len(), 1);
    assert_eq!(first.stop(), Some(0));
}
