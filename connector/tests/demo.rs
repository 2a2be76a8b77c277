//! `lark-sink demo` tells the truth: its report is read back from the emulator and the DLQ topic.

use lark_sink::commands::demo::{self, CardVersion};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_delivers_the_good_records_dead_letters_the_bad_ones_and_updates_the_alert_card() {
    let report = demo::run(false).await.expect("demo runs");
    let samples = demo::sample_records();
    // The samples and the keyed alert's two versions.
    assert_eq!(
        report.records,
        samples.len() + demo::lifecycle_records().len()
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

    // The keyed alert fired and resolved in one card (one demo run serves both checks: the demo
    // takes seconds, and tests share two cores).
    let l = &report.lifecycle;
    assert_eq!(l.message_key, demo::ALERT_KEY);
    assert_eq!(l.message_ids.len(), 1, "one message for the key: {l:#?}");
    let version = |op: &str, template: &str, status: &str| CardVersion {
        op: op.into(),
        template: template.into(),
        title: format!("[{status}] CheckoutLatency on checkout-1"),
    };
    assert_eq!(
        l.versions,
        [
            version("send", "red", "FIRING"),
            version("patch", "green", "RESOLVED")
        ],
        "sent red, then patched green in place"
    );
    assert!(l.updated_in_place());
}
