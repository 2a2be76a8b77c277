//! The result topic (`lark.result.topic`) end to end: one JSON record per delivered or
//! dead-lettered message, checked field by field against what the emulator accepted and what the
//! connector committed; and after a SIGKILL mid-stream, every committed message still has its
//! result (at-least-once: a replayed message repeats its result with the same uuid and
//! message_id, never loses it).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use lark_sink_e2e::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);

fn results_of(topic: &str, expected: usize, timeout: Duration) -> Vec<(Option<String>, Value)> {
    read_topic(topic, expected, timeout)
        .into_iter()
        .map(|r| {
            let key = r.key.map(|k| String::from_utf8_lossy(&k).into_owned());
            let value = serde_json::from_slice(r.value.as_deref().unwrap_or_default())
                .expect("a result is JSON");
            (key, value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_match_deliveries_dead_letters_and_commits() {
    let s = Scenario::new("results", 2).await;
    let results_topic = unique("results-out");
    let mut cfg = s.config();
    cfg["config"]["lark.result.topic"] = json!(results_topic);

    // p0: an array record (2 messages) with a key, then an urgent message.
    let (p_arr, arr) = s
        .send_raw(
            Some("order-7"),
            json!([
                {"receiveId": "ou_alice", "content": {"text": "a0"}},
                {"receiveType": "chat", "receiveId": "oc_ops", "content": {"text": "a1"}}
            ])
            .to_string()
            .as_bytes(),
            &[],
        )
        .await;
    let (p_urgent, urgent) = s
        .send_to(
            0,
            &json!({"receiveType": "chat", "receiveId": "oc_ops", "content": {"text": "buzz"},
                "urgent": {"type": "app", "userIds": ["ou_alice", "ou_nobody"]}}),
        )
        .await;
    // p1: Lark refuses (bot not in chat: 230002), invalid, undecodable, then a good one.
    let (_, refused) = s
        .send_to(
            1,
            &json!({"receiveType": "chat", "receiveId": "oc_outside", "content": {"text": "no"}}),
        )
        .await;
    let (_, invalid) = s
        .send_to(
            1,
            &json!({"receiveId": "ou_bob", "contentType": "image", "content": {}}),
        )
        .await;
    let (p_undecodable, undecodable) = s.send_raw(None, b"not json", &[]).await;
    let (_, good) = s
        .send_to(1, &json!({"receiveId": "ou_bob", "content": {"text": "b"}}))
        .await;
    assert_eq!(p_urgent, 0);

    let mut c = Connector::start(&cfg);
    let ends = {
        let mut e = vec![0i64; 2];
        // The end offset of each partition: one past the last record produced to it.
        for (p, o) in [
            (p_arr, arr),
            (0, urgent),
            (1, refused),
            (1, invalid),
            (p_undecodable, undecodable),
            (1, good),
        ] {
            e[p as usize] = e[p as usize].max(o + 1);
        }
        e
    };
    wait_until("everything committed", WAIT, || {
        let committed = s.committed();
        committed[0] >= ends[0] && committed[1] >= ends[1]
    })
    .await;

    // 4 delivered messages + 3 dead letters (refused, invalid, undecodable).
    let results = results_of(&results_topic, 7, WAIT);
    assert_eq!(results.len(), 7, "{results:#?}\n{}", c.logs());
    let msgs = s.lark.messages();
    assert_eq!(msgs.len(), 4);
    let by_uuid: HashMap<&str, &AcceptedMessage> = msgs
        .iter()
        .filter_map(|m| m.uuid.as_deref().map(|u| (u, m)))
        .collect();
    let delivered: Vec<&(Option<String>, Value)> = results
        .iter()
        .filter(|(_, r)| r["status"] == "delivered")
        .collect();
    assert_eq!(delivered.len(), 4, "{results:#?}");
    for (key, r) in &delivered {
        let uuid = r["uuid"].as_str().expect("uuid");
        let m = by_uuid
            .get(uuid)
            .unwrap_or_else(|| panic!("result for a message Lark never got: {r}"));
        assert_eq!(r["message_id"], json!(m.message_id), "{r}");
        assert_eq!(r["msg_type"], json!(m.msg_type));
        assert_eq!(r["connector"], json!(s.name));
        let (p, o, i) = uuid_coordinates(uuid).expect("uuid coordinates");
        assert_eq!(
            r["source"],
            json!({"topic": s.topic, "partition": p, "offset": o, "index": i})
        );
        assert!(r["attempts"].as_u64().is_some_and(|a| a >= 1), "{r}");
        assert!(r["time"]
            .as_i64()
            .is_some_and(|t| t >= m.received_at_ms as i64 - 5_000));
        assert!(
            r["chat_id"].as_str().is_some_and(|c| c.starts_with("oc_")),
            "{r}"
        );
        let receiver = r["receiver"].as_str().expect("receiver");
        let expected_receiver = match m.receive_id.as_str() {
            id if id.starts_with("oc_") => format!("chat_id:{id}"),
            id => format!("open_id:{id}"),
        };
        assert_eq!(receiver, expected_receiver);
        // Keyed like the source record: only the array record had a key.
        let expected_key = (p == p_arr && o == arr).then(|| "order-7".to_string());
        assert_eq!(key, &expected_key, "{r}");
    }
    let urgent_result = delivered
        .iter()
        .map(|(_, r)| r)
        .find(|r| r["source"]["offset"] == json!(urgent) && r["source"]["partition"] == 0)
        .expect("urgent result");
    assert_eq!(
        urgent_result["urgent"],
        json!({"type": "app", "status": "sent", "skipped": ["ou_nobody"]})
    );
    assert_eq!(
        s.lark.urgents()[0].message_id,
        urgent_result["message_id"].as_str().unwrap_or("")
    );

    let dead: BTreeMap<(i64, i64), &Value> = results
        .iter()
        .filter(|(_, r)| r["status"] == "dead_lettered")
        .map(|(_, r)| {
            let at = |k: &str| r["source"][k].as_i64().unwrap_or(-1);
            ((at("partition"), at("offset")), r)
        })
        .collect();
    assert_eq!(dead.len(), 3, "{results:#?}");
    let r = dead[&(1, refused)];
    assert_eq!(r["code"], 230002);
    assert_eq!(r["stage"], "TASK_PUT");
    assert_eq!(r["receiver"], "chat_id:oc_outside");
    assert!(r["reason"].as_str().is_some_and(|x| x.contains("230002")));
    let r = dead[&(1, invalid)];
    assert_eq!(r["stage"], "VALIDATION");
    assert!(r["reason"].as_str().is_some_and(|x| x.contains("/content")));
    assert_eq!(r["source"]["index"], 0);
    let r = dead[&(p_undecodable as i64, undecodable)];
    assert_eq!(r["stage"], "VALUE_CONVERTER");
    assert_eq!(r["source"]["index"], Value::Null, "a record-level failure");
    assert_eq!(r["uuid"], Value::Null);
    // Dead letters and their results agree one to one.
    assert_eq!(s.dead_letters(3, WAIT).len(), 3);
    // No secret or token in any result.
    for (_, r) in &results {
        let text = r.to_string();
        for secret in SECRETS {
            assert!(!text.contains(secret), "{text}");
        }
    }
    assert_eq!(c.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_never_loses_a_committed_result() {
    let s = Scenario::new("results-crash", 1).await;
    let results_topic = unique("results-crash-out");
    let mut cfg = s.config();
    cfg["config"]["lark.result.topic"] = json!(results_topic);
    // One receiver at 5/s: 30 messages take ~6 s, so the kill lands mid-stream.
    const N: usize = 30;
    for i in 0..N {
        s.send(&json!({"receiveId": "ou_alice", "content": {"text": format!("m{i}")}}))
            .await;
    }
    let mut c = Connector::start(&cfg);
    wait_until("some delivered", WAIT, || s.lark.messages().len() >= 8).await;
    c.kill();
    let delivered_at_kill = s.lark.messages().len();
    assert!(delivered_at_kill < N, "the kill must land mid-stream");
    let committed_at_kill = s.committed()[0];
    let mut c = Connector::start(&cfg);
    wait_until("all committed after restart", WAIT, || {
        s.committed() == vec![N as i64]
    })
    .await;
    assert_eq!(c.stop(), Some(0));

    // Lark got each message once (same uuid on replay).
    assert_eq!(s.lark.messages().len(), N);
    // Every result was acknowledged before its offset was committed, so they are all in the
    // topic now; read whatever is there (duplicates included) for a few seconds.
    let results = results_of(&results_topic, usize::MAX, Duration::from_secs(10));
    let mut seen: HashMap<String, String> = HashMap::new();
    for (_, r) in &results {
        assert_eq!(r["status"], "delivered", "{r}");
        let uuid = r["uuid"].as_str().expect("uuid").to_string();
        let id = r["message_id"].as_str().expect("message_id").to_string();
        // A replayed message repeats its result with the same message_id.
        if let Some(prev) = seen.insert(uuid.clone(), id.clone()) {
            assert_eq!(prev, id, "duplicate result of {uuid} names another message");
        }
    }
    assert_eq!(
        seen.len(),
        N,
        "every message has a result ({delivered_at_kill} delivered and {committed_at_kill} committed at the kill, {} results)",
        results.len()
    );
}
