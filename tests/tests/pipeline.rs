//! End to end: records produced to a real broker arrive in the Lark emulator over real HTTP, and
//! the ones that cannot be delivered land in the dead-letter topic with their reason.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lark_sink_e2e::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn text(t: &str) -> Value {
    json!({"text": t})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_receive_type_and_array_records_are_delivered() {
    let s = Scenario::new("types", 2).await;
    let records = [
        json!({"receiveType": "user", "receiveId": "ou_alice", "content": text("user")}),
        json!({"receiveType": "open_id", "receiveId": "ou_bob", "contentType": "text", "content": "{\"text\":\"open_id\"}"}),
        json!({"receiveType": "union_id", "receiveId": "on_alice", "content": text("union_id")}),
        json!({"receiveType": "user_id", "receiveId": "bob", "content": text("user_id")}),
        json!({"receiveType": "email", "receiveId": "alice@example.com", "content": text("email")}),
        json!({"receiveType": "chat", "receiveId": "oc_ops", "content": text("chat")}),
        json!({"receiveType": "phone", "receiveId": "+8613800000002", "content": text("phone")}),
        json!({"receiveId": "ou_alice", "content": text("defaults")}),
        json!([
            {"receiveType": "chat", "receiveId": "oc_team", "contentType": "post", "content": {"en_us": {"title": "t", "content": [[{"tag": "text", "text": "array-0"}]]}}},
            {"receiveType": "chat", "receiveId": "oc_team", "contentType": "interactive", "content": {"elements": [{"tag": "div", "text": {"tag": "lark_md", "content": "array-1"}}]}},
            {"receiveType": "user", "receiveId": "ou_bob", "content": text("array-2")}
        ]),
    ];
    for r in &records {
        s.send(r).await;
    }
    let mut c = Connector::start(&s.config());
    wait_until("11 messages in the emulator", WAIT, || {
        s.lark.messages().len() >= 11
    })
    .await;
    // Give a wrong extra delivery the chance to show up before asserting exact counts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let msgs = s.lark.messages();
    assert_eq!(msgs.len(), 11, "{msgs:#?}");
    let by_text: BTreeMap<String, &AcceptedMessage> = msgs
        .iter()
        .filter_map(|m| {
            m.content
                .get("text")
                .and_then(Value::as_str)
                .map(|t| (t.to_string(), m))
        })
        .collect();
    let expect = [
        ("user", "open_id", "ou_alice"),
        ("open_id", "open_id", "ou_bob"),
        ("union_id", "union_id", "on_alice"),
        ("user_id", "user_id", "bob"),
        ("email", "email", "alice@example.com"),
        ("chat", "chat_id", "oc_ops"),
        // Phone numbers are looked up with batch_get_id and sent to the open_id.
        ("phone", "open_id", "ou_bob"),
        ("defaults", "open_id", "ou_alice"),
        ("array-2", "open_id", "ou_bob"),
    ];
    for (t, id_type, id) in expect {
        let m = by_text
            .get(t)
            .unwrap_or_else(|| panic!("no message '{t}' in {msgs:#?}"));
        assert_eq!(
            (m.receive_id_type.as_str(), m.receive_id.as_str()),
            (id_type, id),
            "{t}"
        );
        assert_eq!(m.msg_type, "text");
    }
    let array: Vec<&AcceptedMessage> = msgs.iter().filter(|m| m.receive_id == "oc_team").collect();
    assert_eq!(array.len(), 2);
    assert!(array.iter().any(|m| m.msg_type == "post"));
    assert!(array.iter().any(|m| m.msg_type == "interactive"));
    // Every message carries a distinct deterministic uuid naming its record and index.
    let uuids: BTreeSet<&str> = msgs.iter().filter_map(|m| m.uuid.as_deref()).collect();
    assert_eq!(uuids.len(), 11);
    let indices: BTreeSet<usize> = msgs
        .iter()
        .filter_map(|m| uuid_coordinates(m.uuid.as_deref()?))
        .map(|(_, _, i)| i)
        .collect();
    assert_eq!(indices, BTreeSet::from([0, 1, 2]));
    assert_eq!(c.stop(), Some(0), "clean stop on SIGTERM");
    assert!(
        s.dead_letters(1, Duration::from_secs(2)).is_empty(),
        "nothing dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_records_are_dead_lettered_with_their_reason() {
    let s = Scenario::new("bad", 1).await;
    // Interleave valid records so we also see the partition never stalls.
    s.send(&json!({"receiveId": "ou_alice", "content": text("ok-1")}))
        .await;
    s.send_raw(
        Some("k-badjson"),
        br#"{"receiveId": "ou_alice", "content": "#,
        &[("trace", "t-1")],
    )
    .await;
    s.send(&json!({"receiveType": "fax", "receiveId": "", "content": text("x")}))
        .await;
    s.send(
        &json!({"receiveType": "chat", "receiveId": "oc_ops", "contentType": "interactive",
        "content": {"elements": [{"tag": "markdown", "content": "x".repeat(40_000)}]}}),
    )
    .await;
    s.send(&json!({"receiveType": "chat", "receiveId": "oc_outside", "content": text("230002")}))
        .await;
    s.send(&json!({"receiveType": "user", "receiveId": "ou_carol", "content": text("230013")}))
        .await;
    s.send_raw(None, b"\xff\xfe not utf-8", &[]).await;
    s.send(&json!([
        {"receiveId": "ou_bob", "content": text("ok-2")},
        {"receiveId": "ou_bob", "contentType": "image", "content": {"image_key": ""}}
    ]))
    .await;
    s.send(&json!({"receiveId": "ou_alice", "content": text("ok-3")}))
        .await;

    let mut c = Connector::start(&s.config());
    let dead = s.dead_letters(7, WAIT);
    assert_eq!(dead.len(), 7, "{dead:#?}\n{}", c.logs());
    wait_until("3 valid messages delivered", WAIT, || {
        s.lark.messages().len() >= 3
    })
    .await;
    let texts: BTreeSet<String> = s.texts().into_iter().collect();
    assert_eq!(
        texts,
        BTreeSet::from(["ok-1".into(), "ok-2".into(), "ok-3".into()])
    );

    let by_offset: BTreeMap<i64, &ReadRecord> = dead
        .iter()
        .map(|d| {
            (
                d.header("__connect.errors.offset")
                    .parse()
                    .expect("offset header"),
                d,
            )
        })
        .collect();
    let reason = |o: i64| {
        by_offset[&o]
            .header("__connect.errors.exception.message")
            .to_string()
    };

    // Bad JSON: original key, value and headers kept byte for byte.
    let bad_json = by_offset[&1];
    assert_eq!(bad_json.key.as_deref(), Some(&b"k-badjson"[..]));
    assert_eq!(
        bad_json.value.as_deref(),
        Some(&br#"{"receiveId": "ou_alice", "content": "#[..])
    );
    assert_eq!(bad_json.header("trace"), "t-1");
    assert!(reason(1).contains("not JSON"), "{}", reason(1));
    assert_eq!(bad_json.header("__connect.errors.stage"), "VALUE_CONVERTER");
    assert_eq!(bad_json.header("__connect.errors.topic"), s.topic);
    assert_eq!(bad_json.header("__connect.errors.connector.name"), s.name);

    // Schema violation: every failing path named.
    assert!(
        reason(2).contains("/receiveType") && reason(2).contains("/receiveId"),
        "{}",
        reason(2)
    );
    assert_eq!(
        by_offset[&2].header("__connect.errors.class.name"),
        "schema"
    );
    // Oversize card.
    assert!(reason(3).contains("30 KiB"), "{}", reason(3));

    // Permanent Lark errors: code, msg, log_id, HTTP status, attempts.
    for (offset, code) in [(4, "230002"), (5, "230013")] {
        let d = by_offset[&offset];
        assert_eq!(d.header("__connect.errors.lark.code"), code, "{d:#?}");
        assert_eq!(d.header("__connect.errors.lark.class"), "F-rec");
        assert_eq!(d.header("__connect.errors.lark.http.status"), "400");
        assert!(
            !d.header("__connect.errors.lark.log_id").is_empty(),
            "{d:#?}"
        );
        assert_eq!(
            d.header("__connect.errors.lark.attempts"),
            "1",
            "permanent errors are not retried"
        );
        assert_eq!(d.header("__connect.errors.stage"), "TASK_PUT");
    }
    assert!(reason(6).contains("not UTF-8"), "{}", reason(6));
    // One bad message inside an array record: the other one was delivered.
    assert_eq!(
        by_offset[&7].header("__connect.errors.lark.message.index"),
        "1"
    );
    assert!(reason(7).contains("/1/content/image_key"), "{}", reason(7));

    // All 9 records finished, so the committed offset reaches the end.
    wait_until("offset 9 committed", WAIT, || s.committed() == vec![9]).await;
    assert!(
        !c.logs().contains("demo-secret"),
        "the app secret leaked into the logs"
    );
    assert_eq!(c.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_rate_limits_are_retried_then_delivered() {
    let s = Scenario::new("retry", 1).await;
    let code = |http_status, code, msg: &str, reset| Fault::Code {
        http_status,
        code,
        msg: msg.into(),
        ratelimit_reset_secs: reset,
    };
    s.lark
        .push_fault(FaultTarget::Send, Fault::Status { status: 500 });
    s.lark
        .push_fault(FaultTarget::Send, Fault::Status { status: 503 });
    s.lark.push_fault(
        FaultTarget::Send,
        code(429, 99991400, "request trigger frequency limit", Some(1)),
    );
    s.lark.push_fault(
        FaultTarget::Send,
        code(
            400,
            230020,
            "This operation triggers the frequency limit.",
            None,
        ),
    );
    for i in 0..3 {
        s.send(&json!({"receiveId": "ou_alice", "content": text(&format!("r{i}"))}))
            .await;
    }
    let mut c = Connector::start(&s.config());
    wait_until("3 messages delivered", WAIT, || {
        s.lark.messages().len() >= 3
    })
    .await;
    let stats = s.lark.stats();
    assert_eq!(stats.faults_injected, 4, "{stats:?}");
    // In Kafka order despite the retries (one partition, one receiver).
    assert_eq!(s.texts(), ["r0", "r1", "r2"]);
    let logs = c.logs();
    assert!(
        logs.contains("R-hdr") && logs.contains("wait_ms=1000"),
        "the reset header must set the wait:\n{logs}"
    );
    assert_eq!(c.stop(), Some(0));
    assert!(s.dead_letters(1, Duration::from_secs(2)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_is_evicted_and_reminted() {
    let s = Scenario::new("token", 1).await;
    let mut c = Connector::start(&s.strict_config());
    s.send(&json!({"receiveId": "ou_alice", "content": text("before")}))
        .await;
    wait_until("first message", WAIT, || s.lark.messages().len() == 1).await;
    s.lark.revoke_tokens();
    s.send(&json!({"receiveId": "ou_alice", "content": text("after")}))
        .await;
    wait_until("second message", WAIT, || s.lark.messages().len() == 2).await;
    let stats = s.lark.stats();
    assert!(stats.token_rejections >= 1, "{stats:?}");
    assert_eq!(
        stats.tokens_issued, 2,
        "one token at start, one after revocation: {stats:?}"
    );
    assert_eq!(c.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_never_pass_an_undelivered_message() {
    let s = Scenario::new("commit", 1).await;
    let mut cfg = s.strict_config();
    cfg["config"]["errors.retry.timeout"] = json!("-1"); // retry forever: Lark is "down", not the record
    let mut c = Connector::start(&cfg);
    for i in 0..3 {
        s.send(&json!({"receiveId": "ou_alice", "content": text(&format!("a{i}"))}))
            .await;
    }
    wait_until("offset 3 committed", WAIT, || s.committed() == vec![3]).await;

    // Lark goes down; new records cannot be delivered.
    s.lark.set_fault_config(FaultConfig {
        error_5xx_rate: 1.0,
        ..Default::default()
    });
    for i in 0..5 {
        s.send(&json!({"receiveId": "ou_bob", "content": text(&format!("b{i}"))}))
            .await;
    }
    wait_until("retries against the failing emulator", WAIT, || {
        s.lark.stats().faults_injected >= 3
    })
    .await;
    // Several commit intervals (500 ms) pass while nothing can be delivered.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            s.committed(),
            vec![3],
            "committed past an undelivered record"
        );
    }
    assert_eq!(s.lark.messages().len(), 3);

    s.lark.set_fault_config(FaultConfig::default());
    wait_until("all 8 delivered", WAIT, || s.lark.messages().len() == 8).await;
    wait_until("offset 8 committed", WAIT, || s.committed() == vec![8]).await;
    assert_eq!(c.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_tolerance_none_stops_without_committing_the_bad_record() {
    let s = Scenario::new("strict", 1).await;
    let mut c = Connector::start(&s.strict_config());
    s.send(&json!({"receiveId": "ou_alice", "content": text("fine")}))
        .await;
    wait_until("the good record delivered and committed", WAIT, || {
        s.committed() == vec![1]
    })
    .await;
    s.send(&json!({"receiveId": "", "content": text("bad")}))
        .await;
    s.send(&json!({"receiveId": "ou_alice", "content": text("never")}))
        .await;
    assert_eq!(c.wait_exit(WAIT).await, Some(1), "{}", c.logs());
    let logs = c.logs();
    assert!(
        logs.contains("errors.tolerance=none") && logs.contains("/receiveId"),
        "{logs}"
    );
    assert_eq!(s.texts(), ["fine"], "nothing after the bad record is sent");
    assert_eq!(s.committed(), vec![1], "the bad record stays uncommitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_app_secret_stops_the_connector_instead_of_dead_lettering() {
    let s = Scenario::new("creds", 1).await;
    s.send(&json!({"receiveId": "ou_alice", "content": text("x")}))
        .await;
    let mut cfg = s.config();
    cfg["config"]["lark.app.secret"] = json!("${env:E2E_WRONG_SECRET}");
    let mut c = Connector::start_with_env(&cfg, &[("E2E_WRONG_SECRET", "not-the-secret-42")]);
    assert_eq!(c.wait_exit(WAIT).await, Some(1), "{}", c.logs());
    let logs = c.logs();
    assert!(logs.contains("10014"), "{logs}");
    assert!(
        !logs.contains("not-the-secret-42"),
        "secret leaked into logs:\n{logs}"
    );
    assert!(
        s.dead_letters(1, Duration::from_secs(2)).is_empty(),
        "config errors are not dead-lettered"
    );
    assert_eq!(s.committed(), vec![-1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_fails_fast_naming_the_key() {
    let lark = start_emulator().await;
    let mut cfg = connector_config("x", "t", &lark, None);
    cfg["config"]["errors.tolerence"] = json!("all");
    let mut c = Connector::start(&cfg);
    assert_eq!(c.wait_exit(Duration::from_secs(20)).await, Some(1));
    assert!(
        c.logs().contains(
            "config key 'errors.tolerence': unknown key (did you mean 'errors.tolerance'?)"
        ),
        "{}",
        c.logs()
    );
}
