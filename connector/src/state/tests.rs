//! Unit tests of [`super`]: key and entry bytes, the in-memory map and the partition rule.

use super::*;

fn entry(id: &str, sent_ms: i64) -> StateEntry {
    StateEntry {
        message_id: id.into(),
        msg_type: "interactive".into(),
        chat_id: Some("oc_1".into()),
        sent_ms,
        updated_ms: sent_ms,
        edits: 0,
    }
}

#[test]
fn a_key_is_the_compact_json_pair() {
    let k = StateKey::new("chat_id:oc_1", "alert-42");
    assert_eq!(k.to_bytes(), br#"["chat_id:oc_1","alert-42"]"#);
}

#[test]
fn keys_round_trip_whatever_they_hold() {
    let odd = [
        ("chat_id:oc_1", "alert-42"),
        ("", ""),
        ("a\",\"b", "c"),
        ("a", "\",\"b"),
        ("back\\slash", "\\"),
        ("new\nline\t\u{0}", "\u{1f}"),
        ("open_id:ou_é", "警报 🔥"),
        ("[\"x\"]", "]"),
    ];
    let mut seen = std::collections::HashSet::new();
    for (r, m) in odd {
        let k = StateKey::new(r, m);
        let bytes = k.to_bytes();
        assert_eq!(StateKey::from_bytes(&bytes).unwrap(), k, "{r:?} {m:?}");
        assert!(seen.insert(bytes), "two keys share bytes: {r:?} {m:?}");
    }
    // The pairs a naive separator would confuse stay apart.
    assert_ne!(
        StateKey::new("a\",\"b", "c").to_bytes(),
        StateKey::new("a", "b\",\"c").to_bytes()
    );
}

#[test]
fn only_the_canonical_key_spelling_is_read() {
    for bad in [
        &br#"[ "chat_id:oc_1", "a" ]"#[..],
        br#"["chat_id:oc_1"]"#,
        br#"["chat_id:oc_1","a","b"]"#,
        br#"["\u0063hat_id:oc_1","a"]"#,
        br#"{"receiver":"x","message_key":"y"}"#,
        b"chat_id:oc_1/a",
        b"",
        b"\xff\xfe",
    ] {
        let e = StateKey::from_bytes(bad).unwrap_err();
        assert!(
            matches!(e, StateError::Decode { what: "key", .. }),
            "{:?}: {e}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn entries_round_trip_with_their_version() {
    let e = StateEntry {
        edits: 7,
        chat_id: None,
        ..entry("om_1", 1_700_000_000_000)
    };
    let bytes = e.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["v"], ENTRY_VERSION);
    assert_eq!(v["message_id"], "om_1");
    assert_eq!(v["edits"], 7);
    assert_eq!(StateEntry::from_bytes(&bytes).unwrap(), e);
    let full = entry("om_1", 1);
    assert_eq!(StateEntry::from_bytes(&full.to_bytes()).unwrap(), full);
}

#[test]
fn an_entry_is_small() {
    let e = StateEntry {
        message_id: format!("om_{}", "a".repeat(32)),
        msg_type: "interactive".into(),
        chat_id: Some(format!("oc_{}", "b".repeat(32))),
        sent_ms: 1_764_000_000_000,
        updated_ms: 1_764_000_360_000,
        edits: 12,
    };
    let len = e.to_bytes().len();
    assert!(
        len <= 200,
        "{len} bytes: {}",
        String::from_utf8_lossy(&e.to_bytes())
    );
}

#[test]
fn unknown_versions_and_bad_json_are_refused() {
    let future = br#"{"v":2,"message_id":"om_1","msg_type":"text","sent_ms":1,"updated_ms":1}"#;
    for bad in [
        &future[..],
        br#"{"message_id":"om_1","msg_type":"text","sent_ms":1,"updated_ms":1}"#,
        br#"{"v":1,"msg_type":"text","sent_ms":1,"updated_ms":1}"#,
        br#"{"v":1,"message_id":"om_1","msg_type":"text","sent_ms":"x","updated_ms":1}"#,
        b"null",
        b"",
    ] {
        let e = StateEntry::from_bytes(bad).unwrap_err();
        assert!(matches!(e, StateError::Decode { what: "entry", .. }), "{e}");
    }
    // Optional fields may be absent, unknown ones are ignored (a later build's additions).
    let minimal =
        br#"{"v":1,"message_id":"om_1","msg_type":"text","sent_ms":1,"updated_ms":2,"new":true}"#;
    let e = StateEntry::from_bytes(minimal).unwrap();
    assert_eq!((e.chat_id, e.edits, e.updated_ms), (None, 0, 2));
}

#[test]
fn put_get_remove() {
    let s = MessageStates::new();
    let k = StateKey::new("chat_id:oc_1", "a");
    assert!(s.is_empty());
    s.put(k.clone(), entry("om_1", 1), 0);
    s.put(k.clone(), entry("om_2", 1), 0);
    assert_eq!(s.get(&k).unwrap().message_id, "om_2");
    assert_eq!(s.len(), 1);
    assert_eq!(s.remove(&k).unwrap().message_id, "om_2");
    assert_eq!(s.get(&k), None);
    assert_eq!(s.remove(&k), None);
}

#[test]
fn load_replaces_one_partition_and_drop_forgets_it() {
    let s = MessageStates::new();
    let key = |p: i32, i: i32| StateKey::new(format!("chat_id:oc_{p}"), format!("k{i}"));
    for p in 0..3 {
        s.load(p, (0..4).map(|i| (key(p, i), entry("om_old", 1))));
    }
    assert_eq!(s.len(), 12);
    // A second restore of partition 1 replaces what it held: k0..k3 become k2..k4.
    s.load(1, (2..5).map(|i| (key(1, i), entry("om_new", 1))));
    assert_eq!(s.len(), 11);
    assert_eq!(s.get(&key(1, 0)), None);
    assert_eq!(s.get(&key(1, 4)).unwrap().message_id, "om_new");
    assert_eq!(s.get(&key(0, 0)).unwrap().message_id, "om_old");
    assert_eq!(s.drop_partition(1), 3);
    assert_eq!(s.drop_partition(1), 0);
    assert_eq!(s.len(), 8);
    assert!(s.get(&key(2, 3)).is_some());
    // put moves a key to the partition it is written to.
    s.put(key(0, 0), entry("om_moved", 1), 2);
    assert_eq!(s.drop_partition(0), 3);
    assert_eq!(s.get(&key(0, 0)).unwrap().message_id, "om_moved");
}

#[test]
fn expired_lists_entries_sent_before_the_ttl_oldest_first() {
    let s = MessageStates::new();
    let day = 86_400_000;
    let now = 100 * day;
    s.put(StateKey::new("r", "fresh"), entry("om_1", now - day), 0);
    s.put(StateKey::new("r", "old"), entry("om_2", now - 15 * day), 1);
    s.put(
        StateKey::new("r", "older"),
        entry("om_3", now - 20 * day),
        2,
    );
    // Updated recently but first sent long ago: still expired (Lark counts from the send).
    let mut edited = entry("om_4", now - 14 * day - 1);
    edited.updated_ms = now;
    s.put(StateKey::new("r", "edited"), edited, 3);
    s.put(StateKey::new("r", "edge"), entry("om_5", now - 14 * day), 0);
    let ttl = Duration::from_millis(14 * day as u64);
    let keys: Vec<(String, i32)> = s
        .expired(now, ttl)
        .into_iter()
        .map(|(k, p, _)| (k.message_key, p))
        .collect();
    assert_eq!(
        keys,
        vec![("older".into(), 2), ("old".into(), 1), ("edited".into(), 3)]
    );
    assert!(s.expired(now, Duration::MAX).is_empty());
    assert_eq!(s.expired(now, Duration::ZERO).len(), 5);
    assert_eq!(s.len(), 5, "expired only lists");
}

#[test]
fn forget_expired_forgets_only_an_unchanged_entry_and_rewrites_a_changed_one() {
    let s = MessageStates::new();
    let (a, b, c) = (
        StateKey::new("r", "a"),
        StateKey::new("r", "b"),
        StateKey::new("r", "c"),
    );
    s.put(a.clone(), entry("om_a", 1), 0);
    s.put(b.clone(), entry("om_b", 1), 1);
    let due = s.expired(100, Duration::from_millis(10));
    assert_eq!(due.len(), 2);
    // A newer version of b lands while the tombstones are written.
    let mut newer = entry("om_b2", 50);
    newer.updated_ms = 60;
    s.put(b.clone(), newer.clone(), 1);
    let after: Vec<_> = due
        .iter()
        .map(|(k, _, old)| s.forget_expired(k, old, |p, cur| (p, cur.clone())))
        .collect();
    assert_eq!(
        after,
        vec![
            AfterTombstone::Forgotten,
            AfterTombstone::Changed((1, newer.clone()))
        ]
    );
    assert_eq!(s.get(&a), None);
    assert_eq!(s.get(&b), Some(newer));
    assert_eq!(
        s.forget_expired(&c, &entry("om_c", 1), |_, _| ()),
        AfterTombstone::Gone
    );
}

#[test]
fn merge_keeps_newer_held_updates_and_forgets_what_another_instance_removed() {
    let s = MessageStates::new();
    let at = |id: &str, updated: i64| {
        let mut e = entry(id, 1);
        e.updated_ms = updated;
        e
    };
    let k = |name: &str| StateKey::new("r", name);
    // Held for state partition 0 (and one key of partition 1, untouched by the merge).
    s.put(k("ours-newer"), at("om_1", 500), 0);
    s.put(k("stale"), at("om_2", 100), 0);
    s.put(k("removed-elsewhere"), at("om_3", 100), 0);
    s.put(k("in-flight"), at("om_4", 900), 0);
    s.put(k("other-partition"), at("om_5", 100), 1);
    s.merge(
        0,
        [
            (k("ours-newer"), at("om_1", 400)),
            (k("stale"), at("om_2b", 300)),
            (k("new"), at("om_6", 300)),
        ],
        800,
    );
    let id = |name: &str| s.get(&k(name)).map(|e| e.message_id);
    assert_eq!(id("ours-newer").as_deref(), Some("om_1"));
    assert_eq!(id("stale").as_deref(), Some("om_2b"));
    assert_eq!(id("new").as_deref(), Some("om_6"));
    assert_eq!(id("removed-elsewhere"), None);
    assert_eq!(
        id("in-flight").as_deref(),
        Some("om_4"),
        "updated after kept_since"
    );
    assert_eq!(id("other-partition").as_deref(), Some("om_5"));
    assert_eq!(s.len(), 5);
}

#[test]
fn the_map_is_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<MessageStates>();
    shared::<Changelog>();
    let s = std::sync::Arc::new(MessageStates::new());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..250 {
                    s.put(
                        StateKey::new(format!("t{t}"), i.to_string()),
                        entry("om", 1),
                        t,
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(s.len(), 1000);
}

#[test]
fn state_partition_is_the_source_partition_modulo_the_count() {
    assert_eq!(state_partition(0, 6), 0);
    assert_eq!(state_partition(5, 6), 5);
    assert_eq!(state_partition(7, 6), 1);
    assert_eq!(state_partition(11, 3), 2);
    // An unknown count (0) or a nonsensical one maps everything to 0; never a negative partition.
    assert_eq!(state_partition(5, 0), 0);
    assert_eq!(state_partition(5, -2), 0);
    assert_eq!(state_partition(-1, 4), 3);
    for p in 0..64 {
        assert_eq!(state_partition(p, 64), p, "one to one with equal counts");
    }
}

#[test]
fn state_partitions_lists_each_shared_partition_once() {
    let set = state_partitions([0, 3, 4, 7], 3);
    assert_eq!(set.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    assert!(state_partitions([], 3).is_empty());
}
