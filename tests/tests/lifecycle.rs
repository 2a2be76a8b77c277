//! Keyed messages end to end (`messageKey`, docs/user-guide.md "Updating messages"): one Lark
//! message per key and receiver, updated in place (PATCH for cards, PUT for text), replaced where
//! Lark cannot update it, recalled on request; the state in a compacted topic that survives
//! SIGKILLs and follows its partitions to another instance; bursts coalesced; old keys expired.
//! Real broker, the emulator over HTTP, the real binary.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lark_sink_e2e::*;
use rand::Rng;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);

/// A scenario's config with a state topic and a result topic of its own.
fn keyed_config(s: &Scenario) -> (Value, String, String) {
    let state = unique(&format!("{}-state", s.topic));
    let results = unique(&format!("{}-results", s.topic));
    let mut cfg = s.config();
    cfg["config"]["lark.state.topic"] = json!(state);
    cfg["config"]["lark.result.topic"] = json!(results);
    (cfg, state, results)
}

/// Version `v` of alert `key`, to one of four receivers (two chats, two users): cards for even
/// keys, text for odd ones; the last version (`resolved`) is green.
fn alert(key: usize, v: usize, resolved: bool) -> Value {
    let (receive_type, id) = [
        ("chat", "oc_ops"),
        ("user", "ou_alice"),
        ("chat", "oc_team"),
        ("user", "ou_bob"),
    ][key % 4];
    let k = format!("alert-{key}");
    if key % 2 == 0 {
        let (title, colour) = if resolved {
            (format!("[RESOLVED] {k}"), "green")
        } else {
            (format!("[FIRING] {k} v{v}"), "red")
        };
        json!({"receiveType": receive_type, "receiveId": id, "messageKey": k, "contentType": "interactive",
               "content": {"header": {"title": {"tag": "plain_text", "content": title}, "template": colour},
                           "elements": [{"tag": "markdown", "content": format!("version {v}")}]}})
    } else {
        let text = if resolved {
            format!("[RESOLVED] {k}")
        } else {
            format!("[FIRING] {k} v{v}")
        };
        json!({"receiveType": receive_type, "receiveId": id, "messageKey": k, "content": {"text": text}})
    }
}

/// The words a message's content shows (a card's title, or the text).
fn shown(content: &Value) -> String {
    content
        .pointer("/header/title/content")
        .or_else(|| content.get("text"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Messages in Lark for each alert key, by the key named in the first version's words.
fn messages_by_key(lark: &EmulatorHandle) -> BTreeMap<String, Vec<AcceptedMessage>> {
    let mut by_key: BTreeMap<String, Vec<AcceptedMessage>> = BTreeMap::new();
    for m in lark.messages() {
        let words = shown(&m.content);
        if let Some(k) = words.split_whitespace().find(|w| w.starts_with("alert-")) {
            by_key.entry(k.to_string()).or_default().push(m);
        }
    }
    by_key
}

/// Results read back, by op.
fn ops(results: &[ReadRecord]) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for r in results {
        let v: Value = serde_json::from_slice(r.value.as_deref().unwrap_or_default()).unwrap();
        *n.entry(v["op"].as_str().unwrap_or("-").to_string())
            .or_default() += 1;
    }
    n
}

/// Checks that every key of `keys` has exactly one message in Lark, showing its last version,
/// and that no update ever hit Lark's per-message limit. Returns the updates applied per key.
fn assert_one_message_per_key(
    lark: &EmulatorHandle,
    keys: usize,
    last: &dyn Fn(usize) -> Value,
) -> Vec<u32> {
    let by_key = messages_by_key(lark);
    let mut updates = Vec::new();
    for key in 0..keys {
        let k = format!("alert-{key}");
        let msgs = by_key.get(&k).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            msgs.len(),
            1,
            "{k}: {} messages in Lark: {msgs:#?}",
            msgs.len()
        );
        let view = lark.message_view(&msgs[0].message_id).expect("view");
        let want = shown(&last(key)["content"]);
        assert_eq!(shown(&view.content), want, "{k}: the last version shows");
        assert!(!view.recalled && !view.deleted, "{k}");
        updates.push(view.patch_count + view.edit_count);
    }
    assert_eq!(
        lark.stats().throttled_message,
        0,
        "an update went over Lark's 5/s per message"
    );
    updates
}

/// 50 keys × (send, 3 updates, resolve), interleaved with unkeyed records, keyed by messageKey
/// over 3 partitions: one message per key, its last version showing, results for every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_alerts_are_updated_in_place() {
    const KEYS: usize = 50;
    let s = Scenario::new("keyed", 3).await;
    let (cfg, state, results) = keyed_config(&s);
    let mut c = Connector::start(&cfg);
    let mut records = 0;
    for v in 0..5 {
        for key in 0..KEYS {
            let r = alert(key, v, v == 4);
            s.send_keyed(&format!("alert-{key}"), &r).await;
            records += 1;
            if key % 5 == 0 {
                s.send(&json!({"receiveId": "ou_alice", "content": {"text": format!("plain {v} {key}")}}))
                    .await;
                records += 1;
            }
        }
    }
    let results = read_topic_on(&s.kafka, &results, records, WAIT);
    assert_eq!(results.len(), records, "{}", c.logs());
    let updates = assert_one_message_per_key(&s.lark, KEYS, &|k| alert(k, 4, true));
    let ops = ops(&results);
    assert_eq!(ops.get("sent"), Some(&(KEYS + 50)), "{ops:?}");
    let updated = ops.get("updated").copied().unwrap_or(0);
    let superseded = ops.get("superseded").copied().unwrap_or(0);
    assert_eq!(updated + superseded, KEYS * 4, "{ops:?}");
    assert_eq!(updates.iter().map(|u| *u as usize).sum::<usize>(), updated);
    assert_eq!(
        s.texts().iter().filter(|t| t.starts_with("plain")).count(),
        50
    );
    // The state topic holds one entry per key once compacted; uncompacted, a record per change.
    let changelog = read_to_end(&state, Duration::from_secs(10));
    let keys: BTreeSet<_> = changelog.iter().filter_map(|r| r.key.clone()).collect();
    assert_eq!(keys.len(), KEYS);
    let bytes: usize = changelog
        .iter()
        .map(|r| r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len))
        .sum();
    eprintln!(
        "{KEYS} keys × 5 versions: updates per key {:?} (min {}, max {}), results {ops:?}; state topic {} records, {bytes} bytes ({} per record)",
        updates,
        updates.iter().min().unwrap_or(&0),
        updates.iter().max().unwrap_or(&0),
        changelog.len(),
        bytes / changelog.len().max(1)
    );
    assert_eq!(c.stop(), Some(0));
}

/// The same workload under SIGKILLs at random moments: after every restart the state is restored
/// from the topic, so each key still has exactly one message, showing its last version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_alerts_survive_sigkills() {
    const KEYS: usize = 40;
    const KILLS: usize = 6;
    let s = Scenario::new("keyed-crash", 3).await;
    let (cfg, _, results) = keyed_config(&s);
    let mut rng = kill_moments();
    let mut records = 0;
    for v in 0..5 {
        for key in 0..KEYS {
            s.send_keyed(&format!("alert-{key}"), &alert(key, v, v == 4))
                .await;
            records += 1;
        }
    }
    for kill in 1..=KILLS {
        let before = s.lark.stats();
        let mut c = Connector::start(&cfg);
        wait_until(&format!("instance {kill} working"), WAIT, || {
            let now = s.lark.stats();
            now.accepted + now.updates_accepted + now.edits_accepted
                > before.accepted + before.updates_accepted + before.edits_accepted
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
        c.kill();
        eprintln!("kill {kill}: committed {:?}", s.committed());
        if s.committed().iter().sum::<i64>() == records as i64 {
            break;
        }
    }
    let mut c = Connector::start(&cfg);
    let results = read_topic_on(&s.kafka, &results, records, WAIT);
    assert!(results.len() >= records, "{}", c.logs());
    wait_until("all committed", WAIT, || {
        s.committed().iter().sum::<i64>() == records as i64
    })
    .await;
    assert_eq!(c.stop(), Some(0));
    let updates = assert_one_message_per_key(&s.lark, KEYS, &|k| alert(k, 4, true));
    eprintln!(
        "after kills: updates per key {updates:?}; emulator {:?}",
        s.lark.stats()
    );
}

/// A second instance joins mid-stream and leaves again: the state follows the partitions (the
/// newcomer restores the partitions it is given; the first instance restores them back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_follows_partitions_between_instances() {
    const KEYS: usize = 30;
    let s = Scenario::new("keyed-group", 4).await;
    let (cfg, _, _) = keyed_config(&s);
    let mut a = Connector::start(&cfg);
    let phase = |from: usize, to: usize| {
        let s = &s;
        async move {
            for v in from..to {
                for key in 0..KEYS {
                    s.send_keyed(&format!("alert-{key}"), &alert(key, v, v == 4))
                        .await;
                }
            }
        }
    };
    let sc = &s;
    let committed = |n: usize| move || sc.committed().iter().sum::<i64>() == (n * KEYS) as i64;
    phase(0, 2).await;
    wait_until("phase 1 committed", WAIT, committed(2)).await;
    let mut b = Connector::start(&cfg);
    wait_until("both instances own partitions", WAIT, || {
        b.logs().contains("state restored") && a.logs().matches("state restored").count() >= 1
    })
    .await;
    phase(2, 4).await;
    wait_until("phase 2 committed", WAIT, committed(4)).await;
    assert_eq!(b.stop(), Some(0));
    phase(4, 5).await;
    wait_until("phase 3 committed", WAIT, committed(5)).await;
    let updates = assert_one_message_per_key(&s.lark, KEYS, &|k| alert(k, 4, true));
    assert!(
        b.logs().contains("state restored"),
        "the second instance restored state: {}",
        b.logs()
    );
    eprintln!("join and leave: updates per key {updates:?}");
    assert_eq!(a.stop(), Some(0));
}

/// Every way Lark refuses an update sends a new message and points the key at it (op
/// `replaced`, naming the old message): recalled or deleted in Lark, 20 edits used, a change of
/// msg_type, a type Lark cannot update; the next version updates the new message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_updates_replace_the_message_and_repoint_the_key() {
    let s = Scenario::new("keyed-fallback", 1).await;
    let (cfg, _, results_topic) = keyed_config(&s);
    let mut c = Connector::start(&cfg);
    let text = |k: &str, t: &str| json!({"receiveType": "chat", "receiveId": "oc_ops", "messageKey": k, "content": {"text": t}});
    let card = |k: &str, t: &str| {
        json!({"receiveType": "chat", "receiveId": "oc_ops", "messageKey": k, "contentType": "interactive",
        "content": {"header": {"title": {"tag": "plain_text", "content": t}}, "elements": []}})
    };
    let first = [
        text("recalled", "recalled v0"),
        card("deleted", "deleted v0"),
        text("edits", "edits v0"),
        text("retyped", "retyped v0"),
        json!({"receiveType": "chat", "receiveId": "oc_ops", "messageKey": "shared", "contentType": "share_chat",
               "content": {"chat_id": "oc_team"}}),
    ];
    for r in &first {
        s.send(r).await;
    }
    wait_until("first versions delivered", WAIT, || {
        s.committed() == vec![5]
    })
    .await;
    let id_of = |words: &str| {
        s.lark
            .messages()
            .into_iter()
            .find(|m| {
                shown(&m.content) == words
                    || m.content.get("chat_id").is_some() && words == "shared"
            })
            .map(|m| m.message_id)
            .unwrap_or_else(|| panic!("no message {words}"))
    };
    let (recalled, deleted, edits) = (id_of("recalled v0"), id_of("deleted v0"), id_of("edits v0"));
    let (retyped, shared) = (id_of("retyped v0"), id_of("shared"));
    assert!(s.lark.recall(&recalled));
    assert!(s.lark.mark_deleted(&deleted));
    assert!(s.lark.set_edit_count(&edits, 20));
    for r in [
        text("recalled", "recalled v1"),
        card("deleted", "deleted v1"),
        text("edits", "edits v1"),
        card("retyped", "retyped v1"),
        json!({"receiveType": "chat", "receiveId": "oc_ops", "messageKey": "shared", "contentType": "share_chat",
               "content": {"chat_id": "oc_team"}}),
    ] {
        s.send(&r).await;
    }
    wait_until("second versions committed", WAIT, || {
        s.committed() == vec![10]
    })
    .await;
    // The next version of a replaced key updates the new message (sent once the replacement
    // landed: while both waited, the newer would supersede the older).
    s.send(&text("recalled", "recalled v2")).await;
    wait_until("third version committed", WAIT, || {
        s.committed() == vec![11]
    })
    .await;
    let results = read_topic_on(&s.kafka, &results_topic, 11, WAIT);
    let by_offset: BTreeMap<i64, Value> = results
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(r.value.as_deref().unwrap_or_default()).unwrap();
            (v["source"]["offset"].as_i64().unwrap(), v)
        })
        .collect();
    for (offset, old) in [
        (5, &recalled),
        (6, &deleted),
        (7, &edits),
        (8, &retyped),
        (9, &shared),
    ] {
        let r = &by_offset[&offset];
        assert_eq!(r["op"], "replaced", "offset {offset}: {r}\n{}", c.logs());
        assert_eq!(r["replaced_message_id"], json!(old), "{r}");
        assert_ne!(r["message_id"], json!(old), "{r}");
    }
    let v2 = &by_offset[&10];
    assert_eq!(v2["op"], "updated", "{v2}");
    assert_eq!(
        v2["message_id"], by_offset[&5]["message_id"],
        "the key points at the replacement"
    );
    let view = s
        .lark
        .message_view(v2["message_id"].as_str().unwrap())
        .unwrap();
    assert_eq!(shown(&view.content), "recalled v2");
    // Lark answered F-msg for the three it refused; the type change and share_chat were
    // replaced without asking.
    let errors = s.lark.stats().errors_by_code;
    for code in [230011, 230110, 230072] {
        assert!(
            errors.contains_key(&code),
            "{code} not answered: {errors:?}"
        );
    }
    assert_eq!(
        s.lark.messages().len(),
        10,
        "5 first versions + 5 replacements"
    );
    assert_eq!(c.stop(), Some(0));
}

/// A card older than Lark's 14-day window (230031) and a text past the tenant's edit window
/// (230075) are replaced: the emulator's clock moves 15 days on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_past_their_windows_are_replaced() {
    let s = Scenario::with_emulator(
        "keyed-window",
        1,
        EmulatorConfig {
            edit_window: Some(Duration::from_secs(24 * 3600)),
            ..EmulatorConfig::default()
        },
    )
    .await;
    let (cfg, _, results_topic) = keyed_config(&s);
    let mut c = Connector::start(&cfg);
    let card = |t: &str| {
        json!({"receiveType": "chat", "receiveId": "oc_ops", "messageKey": "card", "contentType": "interactive",
        "content": {"header": {"title": {"tag": "plain_text", "content": t}}, "elements": []}})
    };
    let text = |t: &str| json!({"receiveType": "chat", "receiveId": "oc_ops", "messageKey": "text", "content": {"text": t}});
    s.send(&card("card v0")).await;
    s.send(&text("text v0")).await;
    wait_until("first versions delivered", WAIT, || {
        s.committed() == vec![2]
    })
    .await;
    s.lark.advance_clock(Duration::from_secs(15 * 24 * 3600));
    s.send(&card("card v1")).await;
    s.send(&text("text v1")).await;
    wait_until("second versions committed", WAIT, || {
        s.committed() == vec![4]
    })
    .await;
    let results = read_topic_on(&s.kafka, &results_topic, 4, WAIT);
    let ops: Vec<String> = results
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(r.value.as_deref().unwrap_or_default()).unwrap()["op"]
                .to_string()
        })
        .collect();
    assert_eq!(
        ops,
        ["\"sent\"", "\"sent\"", "\"replaced\"", "\"replaced\""],
        "{}",
        c.logs()
    );
    let errors = s.lark.stats().errors_by_code;
    assert!(
        errors.contains_key(&230031) && errors.contains_key(&230075),
        "{errors:?}"
    );
    assert_eq!(s.lark.messages().len(), 4);
    assert_eq!(c.stop(), Some(0));
}

/// `recall: true` recalls the key's message and forgets the key: a second recall is a no-op, and
/// the next version sends a new message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_deletes_the_message_and_forgets_the_key() {
    let s = Scenario::new("keyed-recall", 1).await;
    let (cfg, state, results_topic) = keyed_config(&s);
    let mut c = Connector::start(&cfg);
    let v = |t: &str| json!({"receiveType": "chat", "receiveId": "oc_ops", "messageKey": "k", "content": {"text": t}});
    let recall =
        json!({"receiveType": "chat", "receiveId": "oc_ops", "messageKey": "k", "recall": true});
    s.send(&v("first")).await;
    wait_until("sent", WAIT, || s.committed() == vec![1]).await;
    s.send(&recall).await;
    s.send(&recall).await;
    // Unknown keys recall nothing.
    s.send(&json!({"receiveType": "chat", "receiveId": "oc_ops", "messageKey": "never-sent", "recall": true}))
        .await;
    s.send(&v("again")).await;
    wait_until("all committed", WAIT, || s.committed() == vec![5]).await;
    let msgs = s.lark.messages();
    assert_eq!(msgs.len(), 2, "{msgs:#?}");
    let first = s.lark.message_view(&msgs[0].message_id).unwrap();
    assert!(first.recalled, "{first:?}");
    assert_eq!(s.lark.stats().recalls_accepted, 1);
    let results = read_topic_on(&s.kafka, &results_topic, 5, WAIT);
    let vals: Vec<Value> = results
        .iter()
        .map(|r| serde_json::from_slice(r.value.as_deref().unwrap_or_default()).unwrap())
        .collect();
    let ops: Vec<&str> = vals
        .iter()
        .map(|v| v["op"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        ops,
        ["sent", "recalled", "recalled", "recalled", "sent"],
        "{}",
        c.logs()
    );
    assert_eq!(vals[1]["message_id"], json!(msgs[0].message_id));
    assert_eq!(vals[2]["message_id"], Value::Null, "nothing left to recall");
    assert_eq!(vals[4]["message_id"], json!(msgs[1].message_id));
    // The recall wrote a tombstone (acknowledged before the offset was stored; polled, since a
    // busy test broker has once reported a high watermark short of it right after the commit).
    wait_until("the recall's tombstone", Duration::from_secs(30), || {
        read_to_end(&state, Duration::from_secs(10))
            .iter()
            .any(|r| r.value.is_none())
    })
    .await;
    assert_eq!(c.stop(), Some(0));
}

/// 1000 versions of one key in a burst: the waiting ones coalesce, so Lark sees a handful of
/// PATCHes (never more than 4 per second for the message) and ends on the last version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_versions_coalesces_into_a_few_updates() {
    const VERSIONS: usize = 1000;
    let s = Scenario::new("keyed-burst", 1).await;
    let (cfg, _, results_topic) = keyed_config(&s);
    let version = |n: usize| {
        json!({"receiveType": "chat", "receiveId": "oc_ops", "messageKey": "lag", "contentType": "interactive",
        "content": {"header": {"title": {"tag": "plain_text", "content": format!("lag {n}")}}, "elements": []}})
    };
    for n in 0..VERSIONS {
        s.send(&version(n)).await;
    }
    let mut c = Connector::start(&cfg);
    let results = read_topic_on(&s.kafka, &results_topic, VERSIONS, WAIT);
    assert_eq!(results.len(), VERSIONS, "{}", c.logs());
    let msgs = s.lark.messages();
    assert_eq!(msgs.len(), 1, "one message for the key");
    let view = s.lark.message_view(&msgs[0].message_id).unwrap();
    assert_eq!(shown(&view.content), format!("lag {}", VERSIONS - 1));
    let ops = ops(&results);
    assert_eq!(ops.get("sent"), Some(&1), "{ops:?}");
    assert_eq!(
        ops.get("updated").copied().unwrap_or(0) as u32,
        view.patch_count,
        "{ops:?}"
    );
    assert!(
        view.patch_count < 50,
        "{} PATCHes for a burst: coalescing did not work",
        view.patch_count
    );
    assert_eq!(s.lark.stats().throttled_message, 0);
    eprintln!(
        "{VERSIONS} versions in a burst: {} PATCHes, results {ops:?}",
        view.patch_count
    );
    assert_eq!(c.stop(), Some(0));
}

/// With `lark.state.ttl.ms`, a key not sent for that long is forgotten with a tombstone: its next
/// version is a new message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_are_forgotten_with_a_tombstone() {
    let s = Scenario::new("keyed-ttl", 1).await;
    let (mut cfg, state, _) = keyed_config(&s);
    cfg["config"]["lark.state.ttl.ms"] = json!("1000");
    let mut c = Connector::start(&cfg);
    let v = |t: &str| json!({"receiveType": "chat", "receiveId": "oc_ops", "messageKey": "k", "content": {"text": t}});
    s.send(&v("old")).await;
    wait_until("sent", WAIT, || s.committed() == vec![1]).await;
    wait_until("the key's tombstone", Duration::from_secs(60), || {
        read_to_end(&state, Duration::from_secs(5))
            .iter()
            .any(|r| r.value.is_none())
    })
    .await;
    s.send(&v("new")).await;
    wait_until("committed", WAIT, || s.committed() == vec![2]).await;
    assert_eq!(s.lark.messages().len(), 2, "{}", c.logs());
    assert_eq!(c.stop(), Some(0));
}

/// Keyed records that cannot work are dead-lettered with a reason, and the pipeline goes on:
/// without `lark.state.topic`, and through a custom-bot webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_without_a_state_topic_are_dead_lettered() {
    let s = Scenario::new("keyed-nostate", 1).await;
    let mut cfg = s.config();
    cfg["config"]["lark.webhooks.ops.token"] = json!("hook-plain");
    let mut c = Connector::start(&cfg);
    s.send(&json!({"receiveType": "chat", "receiveId": "oc_ops", "messageKey": "k", "content": {"text": "x"}}))
        .await;
    s.send(&json!({"receiveType": "webhook", "receiveId": "ops", "messageKey": "k", "content": {"text": "x"}}))
        .await;
    s.send(&json!({"receiveType": "chat", "receiveId": "oc_ops", "content": {"text": "plain"}}))
        .await;
    wait_until("committed", WAIT, || s.committed() == vec![3]).await;
    let dead = s.dead_letters(2, WAIT);
    assert_eq!(dead.len(), 2);
    // Dead letters are written side by side: they may land in either order.
    let mut reasons: Vec<(&str, &str)> = dead
        .iter()
        .map(|d| {
            (
                d.header("__connect.errors.offset"),
                d.header("__connect.errors.exception.message"),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.iter().map(|r| r.0).collect::<Vec<_>>(), ["0", "1"]);
    assert!(reasons[0].1.contains("lark.state.topic"), "{reasons:?}");
    assert!(
        reasons[1].1.contains("webhooks cannot update"),
        "{reasons:?}"
    );
    assert_eq!(s.texts(), ["plain"]);
    assert_eq!(c.stop(), Some(0));
}

/// `lark-sink send --message-key` sends, then updates, then recalls, like the pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_with_a_message_key_updates_in_place() {
    let lark = start_emulator().await;
    let dir = std::env::temp_dir().join(unique("send-keyed"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.json");
    let mut config = connector_config(&unique("send-keyed"), "unused", &lark, None);
    config["config"]["lark.state.topic"] = json!(unique("send-keyed-state"));
    std::fs::write(&path, config.to_string()).unwrap();
    let send = |args: &[&str]| {
        let p = path.display().to_string();
        let mut all = vec![
            "send",
            "--config",
            p.as_str(),
            "--receive-type",
            "chat",
            "--receive-id",
            "oc_ops",
        ];
        all.extend_from_slice(args);
        let out = run_sink(&all);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        out.stdout.trim().to_string()
    };
    let first = send(&[
        "--message-key",
        "disk",
        "--content",
        r#"{"text":"disk 91%"}"#,
    ]);
    let (op, id) = first.split_once(' ').unwrap();
    assert_eq!(op, "sent");
    assert!(id.starts_with("om_"), "{first}");
    let second = send(&[
        "--message-key",
        "disk",
        "--content",
        r#"{"text":"disk 95%"}"#,
    ]);
    assert_eq!(second, format!("updated {id}"));
    assert_eq!(shown(&lark.message_content(id).unwrap()), "disk 95%");
    let third = send(&["--message-key", "disk", "--recall"]);
    assert_eq!(third, format!("recalled {id}"));
    assert!(lark.message_view(id).unwrap().recalled);
    assert_eq!(lark.messages().len(), 1);
}
