//! Receivers addressed by phone and by email, resolved to open_ids through `batch_get_id`
//! (lark-api.md §5), end to end: a burst for a few people makes at most one look-up per
//! address, every message reaches the right open_id, and an unknown number is dead-lettered with
//! a reason that says so while the others go through. Look-up counts are the emulator's: what
//! went over the wire.

use std::collections::BTreeMap;
use std::time::Duration;

use lark_sink::emulator::{Directory, EmulatorConfig};
use lark_sink_e2e::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);
const PEOPLE: usize = 10;
const RECORDS: usize = 200;

/// The demo tenant plus `PEOPLE` generated users (`ou_gen_{i}`, `gen{i}@example.com`,
/// `+861390000{i:04}`).
async fn scenario(prefix: &str) -> Scenario {
    let cfg = EmulatorConfig {
        directory: Directory::with_generated(PEOPLE, 0),
        ..EmulatorConfig::default()
    };
    Scenario::with_emulator(prefix, 3, cfg).await
}

/// Delivered messages by (receive_id_type, receive_id) → texts in acceptance order.
fn delivered(s: &Scenario) -> BTreeMap<(String, String), Vec<String>> {
    let mut by = BTreeMap::<(String, String), Vec<String>>::new();
    for m in s.lark.messages() {
        let text = m.content["text"].as_str().unwrap_or_default().to_string();
        by.entry((m.receive_id_type.clone(), m.receive_id.clone()))
            .or_default()
            .push(text);
    }
    by
}

/// The connector's `lark_sink_lookup_cache_total` (hit, miss) and `lark_sink_lookup_calls_total`
/// values, after checking the whole `/metrics` text with promtool.
async fn lookup_metrics(c: &Connector) -> (f64, f64, f64) {
    let text = Admin::of(c).await.metrics().await;
    // The new labels and counter are valid Prometheus text.
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut p| {
            use std::io::Write;
            p.stdin.take().expect("stdin").write_all(text.as_bytes())?;
            p.wait_with_output()
        })
        .expect("promtool not found: scripts/test.sh installs it (Debian package 'prometheus')");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let sum = |name: &str, labels: &str| -> f64 {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(name) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    (
        sum("lark_sink_lookup_cache_total", "result=\"hit\""),
        sum("lark_sink_lookup_cache_total", "result=\"miss\""),
        sum("lark_sink_lookup_calls_total", ""),
    )
}

/// Checks that every person got exactly their 20 messages, in order (all spellings of an address
/// share one queue), on their open_id.
fn assert_all_delivered(s: &Scenario, tag: &str) {
    let by = delivered(s);
    for i in 0..PEOPLE {
        let key = ("open_id".to_string(), format!("ou_gen_{i}"));
        let want: Vec<String> = (0..RECORDS)
            .filter(|n| n % PEOPLE == i)
            .map(|n| format!("{tag}-{i}-{n}"))
            .collect();
        assert_eq!(by.get(&key), Some(&want), "person {i}: {by:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_burst_makes_one_lookup_per_number_and_unknown_numbers_are_dead_lettered() {
    let s = scenario("lookup-phone").await;
    // Numbers in several spellings (all one person each), keyed by number so a person's records
    // share a partition and keep their order.
    let spell = |i: usize, n: usize| match n % 3 {
        0 => format!("+861390000{i:04}"),
        1 => format!("1390000{i:04}"),
        _ => format!("+86 139-0000-{i:04}"),
    };
    for n in 0..RECORDS {
        let i = n % PEOPLE;
        let record = json!({"receiveType": "phone", "receiveId": spell(i, n),
            "content": {"text": format!("p-{i}-{n}")}});
        s.send_keyed(&format!("person-{i}"), &record).await;
    }
    // An unknown number, twice (the second answer comes from the negative cache), and a user
    // outside the app's availability range (Carol): all "not found".
    for (k, phone) in ["+15550000000", "+15550000000", "+8613800000003"]
        .iter()
        .enumerate()
    {
        let record = json!({"receiveType": "phone", "receiveId": phone,
            "content": {"text": format!("nobody-{k}")}});
        s.send_keyed("nobody", &record).await;
    }
    let c = Connector::start(&s.config());

    wait_until("200 messages delivered", WAIT, || {
        s.lark.messages().len() >= RECORDS
    })
    .await;
    let dead = s.dead_letters(3, WAIT);
    assert_eq!(dead.len(), 3, "{}", c.logs());
    for d in &dead {
        assert_eq!(d.header("__connect.errors.class.name"), "F-rec", "{d:#?}");
        let reason = d.header("__connect.errors.exception.message");
        assert!(
            reason.contains("receiver not found") && reason.contains("not visible to this app"),
            "{reason}"
        );
    }
    let reasons: Vec<&str> = dead
        .iter()
        .map(|d| d.header("__connect.errors.exception.message"))
        .collect();
    assert!(reasons
        .iter()
        .any(|r| r.contains("mobile number +15550000000")));
    assert!(reasons
        .iter()
        .any(|r| r.contains("mobile number +8613800000003")));
    wait_until("everything committed", WAIT, || {
        s.committed().iter().sum::<i64>() == (RECORDS + 3) as i64
    })
    .await;
    assert_eq!(s.lark.messages().len(), RECORDS, "nothing else was sent");
    assert_all_delivered(&s, "p");

    let asked = s.lark.lookups();
    for i in 0..PEOPLE {
        assert_eq!(asked.mobile(&format!("+861390000{i:04}")), 1, "{asked:?}");
    }
    assert_eq!(asked.mobile("+15550000000"), 1, "not found is cached too");
    assert!(asked.calls <= (PEOPLE + 2) as u64, "{asked:?}");
    eprintln!(
        "{} records, {} numbers: {} batch_get_id calls",
        RECORDS + 3,
        PEOPLE + 2,
        asked.calls
    );
    // One miss per distinct number, every other resolution a hit (a retried send resolves again,
    // from the cache, hence at least).
    let (hits, misses, calls) = lookup_metrics(&c).await;
    assert_eq!(misses, (PEOPLE + 2) as f64);
    assert!(hits >= (RECORDS + 3 - PEOPLE - 2) as f64, "{hits}");
    assert_eq!(calls, asked.calls as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_email_resolve_emails_are_sent_to_open_ids_after_one_lookup_each() {
    let s = scenario("lookup-email").await;
    for n in 0..RECORDS {
        let i = n % PEOPLE;
        // Case varies: one person, one look-up.
        let email = if n % 2 == 0 {
            format!("gen{i}@example.com")
        } else {
            format!("Gen{i}@Example.COM")
        };
        let record = json!({"receiveType": "email", "receiveId": email,
            "content": {"text": format!("e-{i}-{n}")}});
        s.send_keyed(&format!("person-{i}"), &record).await;
    }
    s.send_keyed(
        "nobody",
        &json!({"receiveType": "email", "receiveId": "nobody@example.com", "content": {"text": "x"}}),
    )
    .await;
    let mut cfg = s.config();
    cfg["config"]["lark.email.resolve"] = json!("true");
    let c = Connector::start(&cfg);

    let dead = s.dead_letters(1, WAIT);
    assert_eq!(dead.len(), 1, "{}", c.logs());
    let reason = dead[0].header("__connect.errors.exception.message");
    assert!(
        reason.contains("email address nobody@example.com is unknown"),
        "{reason}"
    );
    wait_until("everything committed", WAIT, || {
        s.committed().iter().sum::<i64>() == (RECORDS + 1) as i64
    })
    .await;
    assert_eq!(s.lark.messages().len(), RECORDS);
    assert_all_delivered(&s, "e");
    let asked = s.lark.lookups();
    for i in 0..PEOPLE {
        assert_eq!(asked.email(&format!("gen{i}@example.com")), 1, "{asked:?}");
    }
    eprintln!(
        "{} records, {} addresses: {} batch_get_id calls",
        RECORDS + 1,
        PEOPLE + 1,
        asked.calls
    );
    let (hits, misses, _) = lookup_metrics(&c).await;
    assert_eq!(misses, (PEOPLE + 1) as f64);
    assert!(hits >= (RECORDS - PEOPLE) as f64, "{hits}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_email_resolve_emails_are_sent_directly() {
    let s = scenario("lookup-direct").await;
    for n in 0..20 {
        let record = json!({"receiveType": "email", "receiveId": "gen3@example.com",
            "content": {"text": format!("d-{n}")}});
        s.send_keyed("gen3", &record).await;
    }
    let _c = Connector::start(&s.config());
    wait_until("20 delivered", WAIT, || s.lark.messages().len() == 20).await;
    let by = delivered(&s);
    let key = ("email".to_string(), "gen3@example.com".to_string());
    assert_eq!(by.get(&key).map(Vec::len), Some(20), "{by:#?}");
    assert_eq!(
        s.lark.lookups().calls,
        0,
        "no look-up without lark.email.resolve"
    );
}
