//! `lark-sink demo` tells the truth: its report is read back from the emulator and the DLQ topic.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_delivers_the_good_records_and_dead_letters_the_bad_ones() {
    let report = lark_sink::commands::demo::run(false)
        .await
        .expect("demo runs");
    let samples = lark_sink::commands::demo::sample_records();
    assert_eq!(report.records, samples.len());
    let bad = samples.iter().filter(|(d, _)| d.starts_with("BAD")).count();
    assert_eq!(report.dead_letters.len(), bad, "{:#?}", report.dead_letters);
    // Good records: 6 single messages + one array of 2.
    assert_eq!(
        report.delivered.len(),
        samples.len() - bad + 1,
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
}
