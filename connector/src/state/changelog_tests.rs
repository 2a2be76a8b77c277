//! Unit tests of `changelog.rs`: how a restore applies the records it reads.

use super::*;

fn entry(id: &str) -> StateEntry {
    StateEntry {
        message_id: id.into(),
        msg_type: "interactive".into(),
        chat_id: None,
        sent_ms: 1,
        updated_ms: 1,
        edits: 0,
    }
}

#[test]
fn the_last_value_wins_and_tombstones_remove() {
    let a = StateKey::new("chat_id:oc_1", "a");
    let b = StateKey::new("chat_id:oc_1", "b");
    let mut r = Restored::default();
    r.apply(Some(&a.to_bytes()), Some(&entry("om_1").to_bytes()));
    r.apply(Some(&b.to_bytes()), Some(&entry("om_2").to_bytes()));
    r.apply(Some(&a.to_bytes()), Some(&entry("om_3").to_bytes()));
    r.apply(Some(&b.to_bytes()), None);
    assert_eq!((r.records, r.tombstones, r.bad), (4, 1, 0));
    assert_eq!(r.entries.len(), 1);
    assert_eq!(r.entries[&a].message_id, "om_3");
}

#[test]
fn digests_restore_beside_the_keys() {
    let a = StateKey::new("chat_id:oc_1", "a");
    let intent = |uuid: &str, message_id: Option<&str>| DigestIntent {
        uuid: uuid.into(),
        topic: "alerts".into(),
        partition: 0,
        members: vec![[1, 9, 0]],
        count: 9,
        content: String::new(),
        message_id: message_id.map(String::from),
        created_ms: 1,
    };
    let key = DigestIntent::key_bytes;
    let mut r = Restored::default();
    r.apply(Some(&a.to_bytes()), Some(&entry("om_1").to_bytes()));
    r.apply(Some(&key("dg-1")), Some(&intent("dg-1", None).to_bytes()));
    r.apply(Some(&key("dg-2")), Some(&intent("dg-2", None).to_bytes()));
    r.apply(
        Some(&key("dg-1")),
        Some(&intent("dg-1", Some("om_9")).to_bytes()),
    );
    r.apply(Some(&key("dg-2")), None);
    // A value under another digest's key is not that digest.
    r.apply(Some(&key("dg-3")), Some(&intent("dg-4", None).to_bytes()));
    assert_eq!((r.records, r.tombstones, r.bad), (6, 1, 1));
    assert_eq!(r.entries.len(), 1);
    assert_eq!(r.digests.len(), 1);
    assert_eq!(r.digests["dg-1"].message_id.as_deref(), Some("om_9"));
}

#[test]
fn bad_records_are_counted_and_a_bad_value_forgets_its_key() {
    let a = StateKey::new("chat_id:oc_1", "a");
    let mut r = Restored::default();
    r.apply(Some(&a.to_bytes()), Some(&entry("om_1").to_bytes()));
    r.apply(None, Some(&entry("om_2").to_bytes()));
    r.apply(Some(b"not json"), Some(&entry("om_2").to_bytes()));
    assert_eq!(r.entries[&a].message_id, "om_1");
    r.apply(Some(&a.to_bytes()), Some(b"{\"v\":2}"));
    assert_eq!((r.records, r.tombstones, r.bad), (4, 0, 3));
    assert!(r.entries.is_empty());
}
