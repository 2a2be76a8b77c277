//! Storm control (docs/user-guide.md "Storms"): `priority` orders each receiver's queue (high
//! first, the order of records kept within a priority and within a key), and never holds up
//! another receiver; `storm.digest.after` merges a receiver's waiting messages into digests, every
//! record accounted for in the result topic and the metrics; `storm.dedup.window.ms` sends an
//! identical message once per window. Crashes: `storm_crash.rs`. Real broker, the emulator over HTTP at Lark's per-chat
//! limit, the real binary.

use std::collections::BTreeMap;
use std::time::Duration;

use lark_sink_e2e::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);

/// 20 normal texts to one chat, then a high one, 5 low and 5 more normal, all produced before the
/// connector starts: the high one overtakes every waiting normal (it is delivered second or third,
/// whatever was in hand when it was read), the lows go last, and each priority keeps its order.
/// A second chat's messages, produced last, are not held up behind the first chat's queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_overtakes_a_receivers_waiting_messages() {
    let _one = exclusive("storm").await;
    let s = Scenario::new("storm-priority", 1).await;
    let text = |chat: &str, t: String, priority: &str| json!({"receiveType": "chat", "receiveId": chat, "priority": priority, "content": {"text": t}});
    let mut produced = 0;
    for i in 0..20 {
        s.send(&text("oc_ops", format!("n{i:02}"), "normal")).await;
        produced += 1;
    }
    s.send(&text("oc_ops", "HIGH".into(), "high")).await;
    for i in 0..5 {
        s.send(&text("oc_ops", format!("l{i}"), "low")).await;
    }
    for i in 0..5 {
        // No priority field: normal.
        s.send(&json!({"receiveType": "chat", "receiveId": "oc_ops", "content": {"text": format!("m{i}")}}))
            .await;
    }
    s.send(&text("oc_team", "other chat".into(), "low")).await;
    produced += 12;
    let mut c = Connector::start(&s.config());
    wait_until("all committed", WAIT, || {
        s.committed() == vec![produced as i64]
    })
    .await;
    let texts = s.texts();
    let ops: Vec<&str> = texts
        .iter()
        .map(String::as_str)
        .filter(|t| *t != "other chat")
        .collect();
    assert_eq!(ops.len(), 31, "{texts:?}");
    let high = ops.iter().position(|t| *t == "HIGH").expect("the high one");
    assert!(
        high <= 2,
        "the high message overtook the waiting ones: {ops:?}"
    );
    let normals: Vec<&str> = ops
        .iter()
        .copied()
        .filter(|t| t.starts_with('n') || t.starts_with('m'))
        .collect();
    let mut want: Vec<String> = (0..20).map(|i| format!("n{i:02}")).collect();
    want.extend((0..5).map(|i| format!("m{i}")));
    assert_eq!(normals, want, "normal order kept");
    assert_eq!(
        &ops[26..],
        ["l0", "l1", "l2", "l3", "l4"],
        "lows last: {ops:?}"
    );
    // The other chat's message went out long before the first chat's queue drained (its
    // position among all accepted messages, not a time).
    let other = texts
        .iter()
        .position(|t| t == "other chat")
        .expect("other chat");
    assert!(other < 10, "another receiver was held up: {texts:?}");
    assert_eq!(c.stop(), Some(0));
}

/// The results of `n` messages, by (partition, offset, index).
fn results_of(topic: &str, n: usize) -> BTreeMap<(i64, i64, i64), Value> {
    read_topic(topic, n, WAIT)
        .into_iter()
        .map(|r| serde_json::from_slice::<Value>(&r.value.expect("a result")).expect("JSON"))
        .map(|v| {
            let at = |k: &str| v["source"][k].as_i64().expect("coordinates");
            ((at("partition"), at("offset"), at("index")), v)
        })
        .collect()
}

/// 60 normal texts to one chat, 8 low ones, a high one among them and 3 texts to another chat,
/// all produced before the connector starts, with digests after 5 waiting: the waiting normals
/// become digest cards, and so do the lows (a digest never mixes priorities); the high one is
/// sent alone and first; the other chat is never merged (3 ≤ 5). Every message has exactly one
/// result, `delivered` or `merged`, and each `merged` one names a digest in Lark that counts
/// exactly the results naming it and lists their summaries, oldest first (an envelope's own
/// `summary` in place of the derived one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_becomes_digests_and_every_record_is_accounted_for() {
    let _one = exclusive("storm").await;
    let s = Scenario::new("storm-digest", 1).await;
    let results = unique(&format!("{}-results", s.topic));
    let mut cfg = s.config();
    cfg["config"]["lark.result.topic"] = json!(results);
    cfg["config"]["storm.digest.after"] = json!("5");
    cfg["config"]["storm.digest.max.items"] = json!("4");
    let text = |chat: &str, t: String, priority: &str| {
        json!({"receiveType": "chat", "receiveId": chat, "priority": priority,
               "content": {"text": t}})
    };
    for i in 0..60 {
        s.send(&text("oc_ops", format!("alert {i:02}"), "normal"))
            .await;
        if i == 30 {
            s.send(&text("oc_ops", "P1 payments down".into(), "high"))
                .await;
        }
        if i % 20 == 0 {
            s.send(&text("oc_team", format!("team {i}"), "normal"))
                .await;
        }
    }
    for i in 0..8 {
        let mut low = text("oc_ops", format!("low {i}"), "low");
        if i == 0 {
            // A summary of its own (a transform's hook) is the line its digest lists.
            low["summary"] = json!("low 0 (its own summary)");
        }
        s.send(&low).await;
    }
    let produced = 60 + 1 + 3 + 8;
    let mut c = Connector::start(&cfg);
    wait_until("all committed", WAIT, || {
        s.committed() == vec![produced as i64]
    })
    .await;
    let by_coords = results_of(&results, produced);
    assert_eq!(by_coords.len(), produced, "one result per message");
    let messages = s.lark.messages();
    let ops: Vec<_> = messages.iter().filter(|m| m.chat_id == "oc_ops").collect();
    // The high one went alone, and before all but what was in hand.
    let high = ops
        .iter()
        .position(|m| m.content.get("text").and_then(Value::as_str) == Some("P1 payments down"))
        .expect("the high one, alone");
    assert!(high <= 2, "the high one first: {ops:#?}");
    // Each merged result names a digest card in Lark that counts exactly its merged records.
    let mut merged: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (at, r) in &by_coords {
        match r["status"].as_str() {
            Some("delivered") => assert_eq!(r["op"], "sent", "{r}"),
            Some("merged") => {
                assert_eq!(r["op"], "merged");
                let id = r["message_id"]
                    .as_str()
                    .expect("the digest's id")
                    .to_string();
                merged.entry(id).or_default().push(format!("{at:?}"));
            }
            other => panic!("{at:?}: {other:?}: {r}"),
        }
    }
    assert!(!merged.is_empty(), "the storm was merged: {ops:#?}");
    let mut merged_records = 0;
    for (id, members) in &merged {
        let card = messages
            .iter()
            .find(|m| &m.message_id == id)
            .unwrap_or_else(|| panic!("digest {id} in Lark"));
        assert_eq!(card.msg_type, "interactive");
        assert_eq!(card.chat_id, "oc_ops");
        assert!(card.uuid.as_deref().is_some_and(|u| u.starts_with("dg-")));
        let title = card.content["header"]["title"]["content"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(
            title,
            format!("{} messages merged (storm digest)", members.len())
        );
        let list = card.content["elements"][0]["content"]
            .as_str()
            .unwrap_or_default();
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 5, "4 summaries and the rest counted: {list}");
        assert_eq!(lines[4], format!("…and {} more", members.len() - 4));
        // Oldest first, one priority per digest.
        let listed: Vec<&str> = lines[..4]
            .iter()
            .map(|l| l.trim_start_matches("- "))
            .collect();
        let low = listed[0].starts_with("low");
        assert!(
            listed.iter().all(|l| l.starts_with("low") == low),
            "{listed:?}"
        );
        let mut sorted = listed.clone();
        sorted.sort_unstable();
        assert_eq!(listed, sorted, "oldest first: {listed:?}");
        for (_, r) in by_coords
            .iter()
            .filter(|(_, r)| r["message_id"] == id.as_str())
        {
            assert_eq!(r["digest"]["messages"], members.len(), "{r}");
        }
        merged_records += members.len();
    }
    assert!(
        messages.iter().any(|m| m.content["elements"][0]["content"]
            .as_str()
            .is_some_and(|l| l.starts_with("- low 0 (its own summary)\n"))),
        "the low digest lists the envelope's own summary first"
    );
    // Lark saw far fewer messages than were produced for that chat, and none of them twice.
    let delivered = by_coords
        .values()
        .filter(|r| r["status"] == "delivered" && r["receiver"] == "chat_id:oc_ops")
        .count();
    assert_eq!(delivered + merged.len(), ops.len(), "{ops:#?}");
    assert_eq!(delivered + merged_records, 69);
    assert!(
        ops.len() < 69 / 2,
        "{} messages to the storm chat",
        ops.len()
    );
    // The other chat was never merged.
    let team: Vec<_> = messages.iter().filter(|m| m.chat_id == "oc_team").collect();
    assert_eq!(team.len(), 3);
    assert!(team.iter().all(|m| m.msg_type == "text"));
    // The metrics say the same.
    let text = Admin::of(&c).await.metrics().await;
    let outcome = |o: &str| {
        metric(
            &text,
            "lark_sink_messages_total",
            &format!("outcome=\"{o}\""),
        )
    };
    assert_eq!(outcome("merged") as usize, merged_records, "{text}");
    assert_eq!(outcome("delivered") as usize, produced - merged_records);
    assert_eq!(c.stop(), Some(0));
}

/// Digests off, the same kind of storm: one message per record (behaviour as without storm
/// control), and no `merged` outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_storm_keys_every_message_is_sent() {
    let _one = exclusive("storm").await;
    let s = Scenario::new("storm-off", 1).await;
    for i in 0..12 {
        s.send(&json!({"receiveType": "chat", "receiveId": "oc_ops",
                       "content": {"text": format!("alert {i:02}")}}))
            .await;
    }
    let mut c = Connector::start(&s.config());
    wait_until("all committed", WAIT, || s.committed() == vec![12]).await;
    let want: Vec<String> = (0..12).map(|i| format!("alert {i:02}")).collect();
    assert_eq!(s.texts(), want);
    let text = Admin::of(&c).await.metrics().await;
    assert_eq!(
        metric(&text, "lark_sink_messages_total", "outcome=\"merged\""),
        0.0
    );
    assert_eq!(
        metric(&text, "lark_sink_messages_total", "outcome=\"delivered\""),
        12.0
    );
    assert_eq!(c.stop(), Some(0));
}

/// The dedup test's window: long enough that a loaded machine still checks its repeats within it.
const WINDOW: Duration = Duration::from_secs(8);

/// `storm.dedup.window.ms` = 8 s: the same text to the same chat three times → sent once, the
/// others `deduplicated` naming it; the same text to another chat, or as `high`, is sent; a
/// keyed alert repeated unchanged is deduplicated, changed it updates its message; the same text
/// once the window has passed is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_sends_an_identical_message_once_per_window() {
    let _one = exclusive("storm").await;
    let s = Scenario::new("storm-dedup", 1).await;
    let results = unique(&format!("{}-results", s.topic));
    let mut cfg = s.config();
    cfg["config"]["lark.result.topic"] = json!(results);
    cfg["config"]["lark.state.topic"] = json!(unique(&format!("{}-state", s.topic)));
    cfg["config"]["storm.dedup.window.ms"] = json!(WINDOW.as_millis().to_string());
    let disk = |chat: &str, priority: &str| {
        json!({"receiveType": "chat", "receiveId": chat, "priority": priority,
               "content": {"text": "disk full on db-1"}})
    };
    let keyed = |text: &str| {
        json!({"receiveType": "chat", "receiveId": "oc_ops", "messageKey": "fp-1",
               "content": {"text": text}})
    };
    s.send(&disk("oc_ops", "normal")).await; // 0 sent
    s.send(&disk("oc_ops", "normal")).await; // 1 deduplicated
    s.send(&disk("oc_ops", "low")).await; // 2 deduplicated (priority is not content)
    s.send(&disk("oc_team", "normal")).await; // 3 sent: another receiver
    s.send(&disk("oc_ops", "high")).await; // 4 sent: high is never deduplicated
    s.send(&keyed("[FIRING] fp-1")).await; // 5 sent
    let mut c = Connector::start(&cfg);
    let admin = Admin::of(&c).await;
    let deduplicated = || async {
        metric(
            &admin.metrics().await,
            "lark_sink_messages_total",
            "outcome=\"deduplicated\"",
        )
    };
    // One version of a key at a time (waiting together they would coalesce instead).
    wait_until("the keyed alert sent", WAIT, || {
        s.texts().iter().any(|t| t == "[FIRING] fp-1")
    })
    .await;
    s.send(&keyed("[FIRING] fp-1")).await; // 6 deduplicated
    let deadline = std::time::Instant::now() + WAIT;
    while deduplicated().await < 3.0 {
        assert!(std::time::Instant::now() < deadline, "{}", c.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.send(&keyed("[RESOLVED] fp-1")).await; // 7 updated
    wait_until("all committed", WAIT, || s.committed() == vec![8]).await;
    // Past the window: sent again.
    tokio::time::sleep(WINDOW + Duration::from_millis(500)).await;
    s.send(&disk("oc_ops", "normal")).await; // 8 sent
    wait_until("the late one committed", WAIT, || s.committed() == vec![9]).await;
    let r = results_of(&results, 9);
    let status = |o: i64| {
        let v = &r[&(0, o, 0)];
        (
            v["status"].as_str().unwrap_or("?").to_string(),
            v["op"].as_str().unwrap_or("?").to_string(),
        )
    };
    let st = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(status(0), st("delivered", "sent"));
    assert_eq!(status(1), st("deduplicated", "deduplicated"));
    assert_eq!(status(2), st("deduplicated", "deduplicated"));
    assert_eq!(status(3), st("delivered", "sent"));
    assert_eq!(status(4), st("delivered", "sent"));
    assert_eq!(status(5), st("delivered", "sent"));
    assert_eq!(status(6), st("deduplicated", "deduplicated"));
    assert_eq!(status(7), st("delivered", "updated"));
    assert_eq!(status(8), st("delivered", "sent"));
    assert_eq!(
        r[&(0, 1, 0)]["message_id"],
        r[&(0, 0, 0)]["message_id"],
        "names the one sent"
    );
    assert_eq!(r[&(0, 6, 0)]["message_id"], r[&(0, 5, 0)]["message_id"]);
    let texts = s.texts();
    assert_eq!(
        texts.iter().filter(|t| *t == "disk full on db-1").count(),
        4,
        "sent to ops, team, as high, and after the window: {texts:?}"
    );
    let text = Admin::of(&c).await.metrics().await;
    assert_eq!(
        metric(
            &text,
            "lark_sink_messages_total",
            "outcome=\"deduplicated\""
        ),
        3.0
    );
    assert_eq!(c.stop(), Some(0));
}

/// A storm of keyed alerts: 30 keys, each firing, updated and resolved (v1, v2, v3). The first
/// key's v1 is sent alone and its answer comes 3 s late (`late_answer`); meanwhile the other 89
/// records arrive and wait. A digest keeps each key's latest version only: the 29 other keys
/// are one card listing each key once, at v3, their v1 and v2 `superseded`. The first key had its
/// message by the time the digest was sent: its v3 leaves the digest and updates that message in
/// place (its v2 `superseded`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_of_keyed_alerts_keeps_each_keys_latest_version() {
    let _one = exclusive("storm").await;
    let s = Scenario::new("storm-keyed", 1).await;
    let results = unique(&format!("{}-results", s.topic));
    let mut cfg = s.config();
    cfg["config"]["lark.result.topic"] = json!(results);
    cfg["config"]["lark.state.topic"] = json!(unique(&format!("{}-state", s.topic)));
    cfg["config"]["storm.digest.after"] = json!("5");
    cfg["config"]["storm.digest.max.items"] = json!("50");
    let alert = |k: i64, v: i64| {
        json!({"receiveType": "chat", "receiveId": "oc_ops", "messageKey": format!("k{k:02}"),
               "content": {"text": format!("k{k:02} v{v}")}})
    };
    s.lark
        .push_fault(FaultTarget::Send, Fault::LateAnswer { ms: 3000 });
    // (key, version) → offset.
    let mut offset_of = BTreeMap::new();
    s.send(&alert(0, 1)).await;
    offset_of.insert((0, 1), 0);
    let mut c = Connector::start(&cfg);
    wait_until("the first key sent", WAIT, || !s.lark.messages().is_empty()).await;
    for v in 1..=3 {
        for k in 0..30 {
            if (k, v) != (0, 1) {
                s.send(&alert(k, v)).await;
                offset_of.insert((k, v), offset_of.len() as i64);
            }
        }
    }
    wait_until("all committed", WAIT, || s.committed() == vec![90]).await;
    assert_eq!(c.stop(), Some(0));
    let by_coords = results_of(&results, 90);
    let status_of = |offset: i64| {
        let r = by_coords
            .iter()
            .find(|(at, _)| at.1 == offset)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("a result for offset {offset}"));
        (
            r["status"].as_str().unwrap_or_default().to_string(),
            r["op"].as_str().unwrap_or_default().to_string(),
        )
    };
    let of = |k: i64, v: i64| status_of(offset_of[&(k, v)]);
    assert_eq!(of(0, 1), ("delivered".into(), "sent".into()));
    assert_eq!(of(0, 2).0, "superseded");
    assert_eq!(of(0, 3), ("delivered".into(), "updated".into()));
    for k in 1..30 {
        assert_eq!(of(k, 1).0, "superseded", "k{k:02} v1");
        assert_eq!(of(k, 2).0, "superseded", "k{k:02} v2");
        assert_eq!(of(k, 3).0, "merged", "k{k:02} v3");
    }
    let messages = s.lark.messages();
    assert_eq!(
        messages.len(),
        2,
        "one message of its own, one digest: {messages:#?}"
    );
    let own = &messages[0];
    assert_eq!(own.msg_type, "text");
    let view = s.lark.message_view(&own.message_id).expect("its view");
    assert_eq!(
        view.content["text"], "k00 v3",
        "the first key's own message, updated in place"
    );
    let card = &messages[1];
    assert_eq!(card.msg_type, "interactive");
    let list = card.content["elements"][0]["content"]
        .as_str()
        .unwrap_or_default();
    // A keyed line names its key.
    let want: Vec<String> = (1..30).map(|k| format!("- k{k:02}: k{k:02} v3")).collect();
    assert_eq!(list.lines().collect::<Vec<_>>(), want, "{list}");
}
