//! Storm control under crashes (docs/user-guide.md "Storms", "After a crash"): SIGKILLs into a
//! storm lose nothing, and a digest card made before a crash is not posted again by the replay
//! (its intent is in the state topic). Real broker, the emulator over HTTP at Lark's per-chat
//! limit, the real binary. Apart from `storm.rs` so that neither file outgrows its reader; the
//! tests of both take the `storm` lock (`exclusive`), so one storm runs at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lark_sink_e2e::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);

/// Storm mode under SIGKILL: 300 alerts to one chat over two partitions with digests after 5,
/// the connector killed at four random moments once it delivers, then run to completion. Nothing
/// is lost: every record has a `delivered` or `merged` result naming a message that is in Lark,
/// and the committed offsets end at the end. With the state topic no record is named by two
/// digest cards, however the replays grouped; a record sent alone before a kill and merged
/// after it is allowed, counted and printed (docs/user-guide.md "Storms", "After a crash").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_under_sigkills_loses_nothing() {
    let _one = exclusive("storm").await;
    use rand::Rng;
    const ALERTS: usize = 300;
    let s = Scenario::new("storm-kill", 2).await;
    let results = unique(&format!("{}-results", s.topic));
    let mut cfg = s.config();
    cfg["config"]["lark.result.topic"] = json!(results);
    cfg["config"]["storm.digest.after"] = json!("5");
    // Where each digest's members are written before its card is posted.
    cfg["config"]["lark.state.topic"] = json!(unique(&format!("{}-state", s.topic)));
    for i in 0..ALERTS {
        let alert = json!({"receiveType": "chat", "receiveId": "oc_ops",
                           "content": {"text": format!("alert {i:03}")}});
        s.send_to((i % 2) as i32, &alert).await;
    }
    let ends = vec![(ALERTS / 2) as i64; 2];
    let mut rng = kill_moments();
    for kill in 1..=4 {
        let before = (s.lark.messages().len(), s.committed());
        let mut c = Connector::start(&cfg);
        // Progress: a new message in Lark, or offsets moving (a replay that finishes through
        // the digests of the changelog posts nothing new).
        let progress = format!("instance {kill} delivering");
        wait_until_every(&progress, WAIT, Duration::from_millis(500), || {
            let committed = s.committed();
            s.lark.messages().len() > before.0 || committed != before.1 || committed == ends
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
        c.kill();
    }
    let mut c = Connector::start(&cfg);
    wait_until("all committed", Duration::from_secs(180), || {
        s.committed() == ends
    })
    .await;
    assert_eq!(c.stop(), Some(0));
    let in_lark: BTreeMap<String, String> = s
        .lark
        .messages()
        .into_iter()
        .map(|m| (m.message_id.clone(), m.msg_type.clone()))
        .collect();
    let mut by_record: BTreeMap<(i64, i64), Vec<String>> = BTreeMap::new();
    for r in read_to_end(&results, Duration::from_secs(20)) {
        let v: Value = serde_json::from_slice(&r.value.expect("a result")).expect("JSON");
        let status = v["status"].as_str().unwrap_or_default();
        assert!(status == "delivered" || status == "merged", "{v}");
        let id = v["message_id"].as_str().expect("a message id").to_string();
        assert!(
            in_lark.contains_key(&id),
            "the message a result names is in Lark: {v}"
        );
        let at = (
            v["source"]["partition"].as_i64().unwrap(),
            v["source"]["offset"].as_i64().unwrap(),
        );
        by_record.entry(at).or_default().push(id);
    }
    assert_eq!(by_record.len(), ALERTS, "every record has a result");
    // The digest is posted once: a record is in at most one digest card, whatever the replays
    // grouped (a replayed member finishes through the card its intent names).
    let ids_of = |ids: &Vec<String>, kind: &str| {
        let mut ids: Vec<&String> = ids.iter().filter(|id| in_lark[*id] == kind).collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    let in_two_digests: Vec<_> = by_record
        .iter()
        .filter(|(_, ids)| ids_of(ids, "interactive") > 1)
        .map(|(at, _)| *at)
        .collect();
    assert!(
        in_two_digests.is_empty(),
        "records in two digest cards: {in_two_digests:?}"
    );
    // Each text message in Lark stands for one record (its uuid is the record's).
    let sent_alone = by_record
        .values()
        .filter(|ids| ids_of(ids, "text") > 0)
        .count();
    assert_eq!(
        sent_alone,
        in_lark.values().filter(|t| *t == "text").count()
    );
    let alone_and_merged = by_record
        .values()
        .filter(|ids| ids_of(ids, "text") > 0 && ids_of(ids, "interactive") > 0)
        .count();
    let digests = in_lark.values().filter(|t| *t == "interactive").count();
    eprintln!(
        "4 kills: {} messages in Lark ({digests} digests) for {ALERTS} records; none in two digests; \
         {alone_and_merged} sent alone before a kill and merged after it",
        in_lark.len()
    );
    assert!(digests > 0, "the storm was merged");
}

/// The digest posted once across a crash: 60 alerts to one chat, merged into digests while the
/// first message is in flight. Lark makes the first card but its answer comes late
/// (`late_answer`), and the connector is SIGKILLed before it hears it: the card is in Lark, none
/// of its records committed. 20 more alerts arrive, and a new instance replays them all. A replay
/// that grouped afresh would merge the records into new cards (other uuids: a second card for
/// the same alerts); with the intents in the state topic they finish through the card already
/// made (posted again with its uuid, Lark keeps one copy). Audited on Lark's side: the cards'
/// counts add up to the merged records, each record in one card.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_made_before_a_crash_is_not_posted_again() {
    let _one = exclusive("storm").await;
    let s = Scenario::new("storm-once", 1).await;
    let results = unique(&format!("{}-results", s.topic));
    let mut cfg = s.config();
    cfg["config"]["lark.result.topic"] = json!(results);
    cfg["config"]["lark.state.topic"] = json!(unique(&format!("{}-state", s.topic)));
    cfg["config"]["storm.digest.after"] = json!("5");
    let alert = |i: usize| json!({"receiveType": "chat", "receiveId": "oc_ops", "content": {"text": format!("alert {i:02}")}});
    for i in 0..60 {
        s.send(&alert(i)).await;
    }
    // The first sends, whatever they are: each answered 4 s late.
    for _ in 0..3 {
        s.lark
            .push_fault(FaultTarget::Send, Fault::LateAnswer { ms: 4000 });
    }
    let mut c = Connector::start(&cfg);
    let cards = || {
        s.lark
            .messages()
            .into_iter()
            .filter(|m| m.msg_type == "interactive")
            .collect::<Vec<_>>()
    };
    wait_until("a digest card made", WAIT, || !cards().is_empty()).await;
    c.kill();
    let before: Vec<String> = cards().into_iter().map(|m| m.message_id).collect();
    let committed = s.committed()[0];
    for i in 60..80 {
        s.send(&alert(i)).await;
    }
    let mut c = Connector::start(&cfg);
    wait_until("all committed", WAIT, || s.committed() == vec![80]).await;
    let logs = c.logs();
    assert_eq!(c.stop(), Some(0));
    assert!(
        logs.contains("the same card, posted again"),
        "the replay finished through a card made before the kill (committed then: {committed})"
    );
    let mut card_of: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for r in read_to_end(&results, Duration::from_secs(20)) {
        let v: Value = serde_json::from_slice(&r.value.expect("a result")).expect("JSON");
        if v["status"] == "merged" {
            let offset = v["source"]["offset"].as_i64().expect("an offset");
            let id = v["message_id"].as_str().expect("an id").to_string();
            card_of.entry(offset).or_default().insert(id);
        }
    }
    let in_two: Vec<_> = card_of.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(in_two.is_empty(), "records in two cards: {in_two:?}");
    let named: BTreeSet<&String> = card_of.values().flatten().collect();
    assert!(
        before.iter().all(|id| named.contains(id)),
        "the cards made before the kill ({before:?}) are the ones their records name"
    );
    // Lark's side: every card counts records no other card counts.
    let counted: usize = cards()
        .iter()
        .map(|m| {
            let title = m.content["header"]["title"]["content"]
                .as_str()
                .unwrap_or_default();
            let n = title
                .split(' ')
                .next()
                .and_then(|n| n.parse::<usize>().ok());
            n.unwrap_or_else(|| panic!("a digest title: {title}"))
        })
        .sum();
    assert_eq!(
        counted,
        card_of.len(),
        "the cards in Lark count each merged record once"
    );
    // And no record was sent alone as well as merged.
    let alone: BTreeSet<String> = s.texts().into_iter().collect();
    for offset in card_of.keys() {
        assert!(
            !alone.contains(&format!("alert {offset:02}")),
            "{offset} alone too"
        );
    }
    assert_eq!(
        alone.len() + card_of.len(),
        80,
        "every alert once: {alone:?}"
    );
}
