//! `lark-sink demo` tells the truth: its report is read back from the emulator, the DLQ topic and
//! the events topic.

use lark_sink::commands::demo::{self, CardVersion};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_delivers_the_good_records_dead_letters_the_bad_ones_and_updates_the_alert_card() {
    let report = demo::run(false).await.expect("demo runs");
    let samples = demo::sample_records();
    // The samples, the keyed alert's two versions and the responder's acknowledgement.
    assert_eq!(
        report.records,
        samples.len() + demo::lifecycle_records().len() + 1
    );
    let bad = samples.iter().filter(|(d, _)| d.starts_with("BAD")).count();
    assert_eq!(report.dead_letters.len(), bad, "{:#?}", report.dead_letters);
    // Good records: 6 single messages + one array of 2, and the alert's one card.
    assert_eq!(
        report.delivered.len(),
        samples.len() - bad + 1 + 1,
        "{:#?}",
        report.delivered
    );
    let mut classes: Vec<&str> = report
        .dead_letters
        .iter()
        .map(|d| d.class.as_str())
        .collect();
    classes.sort();
    assert_eq!(
        classes,
        ["F-rec", "F-rec", "F-rec", "decode", "schema", "schema"]
    );
    assert!(report
        .dead_letters
        .iter()
        .any(|d| d.reason.contains("230002")));
    assert!(report
        .dead_letters
        .iter()
        .any(|d| d.reason.contains("230013")));
    assert!(report
        .dead_letters
        .iter()
        .any(|d| d.reason.contains("+15550000000")));

    // The keyed alert fired, was acknowledged from its card and resolved, all in one card (one
    // demo run serves every check: the demo takes seconds, and tests share two cores).
    let l = &report.lifecycle;
    assert_eq!(l.message_key, demo::ALERT_KEY);
    assert_eq!(l.message_ids.len(), 1, "one message for the key: {l:#?}");
    let version = |op: &str, template: &str, title: &str| CardVersion {
        op: op.into(),
        template: template.into(),
        title: title.into(),
    };
    assert_eq!(
        l.versions,
        [
            version("send", "red", "[FIRING] CheckoutLatency on checkout-1"),
            version(
                "patch",
                "orange",
                "[ACKNOWLEDGED] CheckoutLatency on checkout-1 by Alice"
            ),
            version("patch", "green", "[RESOLVED] CheckoutLatency on checkout-1"),
        ],
        "sent red, patched orange by the responder's answer to the click, then green, in place"
    );
    assert!(l.updated_in_place());

    // The way back: Alice's click on that card is in the events topic once, keyed by the card,
    // with its messageKey, and Lark got its answer (the toast).
    let [click] = report.clicks.as_slice() else {
        panic!("one record in the events topic: {:#?}", report.clicks);
    };
    assert_eq!(click.event_type, "card.action.trigger");
    assert_eq!(click.key.as_deref(), Some(l.message_ids[0].as_str()));
    assert_eq!(click.message_key.as_deref(), Some(demo::ALERT_KEY));
    assert_eq!(click.operator.as_deref(), Some(demo::ON_CALL_USER));
    assert_eq!(
        click.action.as_deref(),
        Some("ack"),
        "the clicked button's own value"
    );
    assert!(click.answered, "{click:#?}");
    assert_eq!(click.toast.as_deref(), Some(demo::TOAST));
    // The responder answered that click, and no other.
    let a = &report.acknowledgement;
    assert_eq!(a.event_id, click.event_id);
    assert_eq!(a.message_key, demo::ALERT_KEY);
    assert_eq!((a.open_id.as_str(), a.name.as_str()), ("ou_alice", "Alice"));
}
