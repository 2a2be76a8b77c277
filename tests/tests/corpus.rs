//! The bad-input corpus (`tests/corpus/`): every case has its expected dead-letter stage, class and
//! reason, and none may stall its partition, crash the connector or lose a record.
//!
//! Two levels. `corpus_offline` runs each case through `lark_sink::envelope::prepare::record` (and, for transform
//! cases, the script engine), the code the sink runs per record, without a broker: a reason
//! regression shows in a second. The end-to-end tests send every case through the real binary, a
//! real broker and the emulator, each bad record after a valid one on the same key (so several
//! partitions each interleave good and bad), then check that every valid record was delivered
//! exactly once, every bad case dead-lettered exactly as often as it should with its reason, and
//! the committed offsets reached the end of every partition.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lark_sink::dlq::DeadLetter;
use lark_sink::envelope::prepare::{self, Prepared};
use lark_sink::envelope::validate::EnvelopeValidator;
use lark_sink_e2e::*;
use lark_sink_transforms::{Chain, RecordMeta};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

/// One entry of `tests/corpus/cases.yaml` (the file documents the fields).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    file: String,
    about: String,
    stage: String,
    class: String,
    reason: String,
    #[serde(default = "one")]
    dead_letters: usize,
    #[serde(default)]
    delivered: usize,
    #[serde(default)]
    tombstone: bool,
    #[serde(default)]
    transform: bool,
}

fn one() -> usize {
    1
}

impl Case {
    fn name(&self) -> &str {
        self.file.rsplit_once('.').map_or(&self.file, |(n, _)| n)
    }
    fn value(&self) -> Option<Vec<u8>> {
        if self.tombstone {
            return None;
        }
        let path = corpus_dir().join("cases").join(&self.file);
        Some(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }
    /// Cases Lark itself refuses: valid before delivery, dead-lettered at TASK_PUT.
    fn at_delivery(&self) -> bool {
        self.stage == "TASK_PUT"
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(corpus_dir().join("cases.yaml")).expect("cases.yaml");
    let cases: Vec<Case> = serde_norway::from_str(&text).expect("cases.yaml parses");
    let mut names = std::collections::BTreeSet::new();
    for c in &cases {
        assert!(
            names.insert(c.name().to_string()),
            "duplicate case {}",
            c.name()
        );
        assert!(!c.about.is_empty() && !c.reason.is_empty(), "{c:?}");
    }
    cases
}

/// The corpus transform's connector keys (name `corpus`, tight limits so the cases trip them).
fn transform_keys() -> BTreeMap<String, String> {
    let script = corpus_dir().join("transform.js");
    [
        ("transforms", "corpus".to_string()),
        ("transforms.corpus.type", "javascript".into()),
        ("transforms.corpus.file", script.display().to_string()),
        ("transforms.corpus.timeout.ms", "200".into()),
        ("transforms.corpus.memory.limit.bytes", "16777216".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// What the sink does with one record before delivery: `prepare::record`, with the corpus
/// transform for transform cases (the sink's `TransformRunner` runs the same call on a blocking
/// thread).
fn prepare_case(case: &Case, validator: &EnvelopeValidator, chain: &mut Chain) -> Prepared {
    let value = case.value();
    let transform = case
        .transform
        .then_some(|v| chain.apply(v, &RecordMeta::default()));
    prepare::record(validator, value.as_deref(), transform)
}

fn check_dead_letter(case: &Case, stage: &str, class: &str, reason: &str) -> Result<(), String> {
    if stage != case.stage || class != case.class || !reason.contains(&case.reason) {
        return Err(format!(
            "{}: expected {} / {} / …{}…, got {stage} / {class} / {reason}",
            case.name(),
            case.stage,
            case.class,
            case.reason
        ));
    }
    Ok(())
}

#[test]
fn corpus_offline() {
    let cases = cases();
    assert!(cases.len() >= 50, "the corpus has {} cases", cases.len());
    let validator = EnvelopeValidator::new().expect("validator");
    let (mut chain, _) = Chain::from_config(&transform_keys()).expect("corpus transform");
    let mut problems = Vec::new();
    for case in &cases {
        let prepared = prepare_case(case, &validator, &mut chain);
        let failures: Vec<&DeadLetter> = prepared.failures();
        if std::env::var_os("CORPUS_SHOW").is_some() {
            // CORPUS_SHOW=1 prints the actual reasons, for writing a new case's expectation.
            for dl in &failures {
                let reason: String = dl.reason.chars().take(300).collect();
                eprintln!(
                    "{}: {} / {} / {reason}",
                    case.name(),
                    dl.stage.as_str(),
                    dl.class
                );
            }
        }
        let valid = match &prepared {
            Prepared::Messages(m) => m.iter().filter(|r| r.is_ok()).count(),
            Prepared::Failed(_) => 0,
        };
        if case.at_delivery() {
            // Valid as far as lark-sink can tell: one message, refused by Lark later.
            if !failures.is_empty() || valid != 1 {
                problems.push(format!(
                    "{}: expected one valid message, got {prepared:?}",
                    case.name()
                ));
            }
            continue;
        }
        if failures.len() != case.dead_letters || valid != case.delivered {
            problems.push(format!(
                "{}: expected {} dead letter(s) and {} valid message(s), got {} and {valid}: {:?}",
                case.name(),
                case.dead_letters,
                case.delivered,
                failures.len(),
                failures.iter().map(|d| &d.reason).collect::<Vec<_>>()
            ));
            continue;
        }
        for dl in failures {
            if let Err(e) = check_dead_letter(case, dl.stage.as_str(), dl.class.label(), &dl.reason)
            {
                problems.push(e);
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Sends `cases` (a valid record before each, and one at the end) to a fresh scenario with
/// `partitions` partitions, runs the connector with `extra` config keys, and checks everything.
async fn end_to_end(
    prefix: &str,
    partitions: i32,
    cases: Vec<Case>,
    extra: BTreeMap<String, String>,
) {
    let s = Scenario::new(prefix, partitions).await;
    let receivers = ["ou_alice", "ou_bob", "oc_ops", "oc_team"];
    let valid = |i: usize| {
        let to = receivers[i % receivers.len()];
        json!({"receiveType": if to.starts_with("oc_") { "chat" } else { "user" },
               "receiveId": to, "content": {"text": format!("corpus-valid {i}")}})
    };
    let mut bad_at: HashMap<(i32, i64), &Case> = HashMap::new();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut note = |(p, o): (i32, i64)| {
        let end = ends.entry(p).or_default();
        *end = (*end).max(o + 1);
        (p, o)
    };
    for (i, case) in cases.iter().enumerate() {
        let key = format!("k{}", i % 6);
        note(s.send_keyed(&key, &valid(i)).await);
        let at = note(s.send_value(&key, case.value().as_deref()).await);
        bad_at.insert(at, case);
    }
    note(s.send_keyed("k0", &valid(cases.len())).await);
    assert!(
        ends.len() > 1,
        "the keys should spread over several partitions: {ends:?}"
    );

    let mut cfg = s.config();
    for (k, v) in extra {
        cfg["config"][k] = json!(v);
    }
    let _c = Connector::start(&cfg);

    let valid_count = cases.len() + 1;
    let expected_messages = valid_count + cases.iter().map(|c| c.delivered).sum::<usize>();
    wait_until(
        &format!("{expected_messages} messages in the emulator"),
        WAIT,
        || s.lark.messages().len() >= expected_messages,
    )
    .await;
    let expected_dead: usize = cases.iter().map(|c| c.dead_letters).sum();
    let dead = s.dead_letters(expected_dead, WAIT);
    // Every partition's committed offset reaches its end: nothing stalled behind a bad record.
    let want: Vec<i64> = (0..partitions)
        .map(|p| ends.get(&p).copied().unwrap_or(-1))
        .collect();
    wait_until("every partition committed to its end", WAIT, || {
        s.committed() == want
    })
    .await;
    // Extra deliveries or dead letters would have had time to show up by now.
    let extra_dead = s.dead_letters(expected_dead + 1, Duration::from_secs(3));
    assert_eq!(
        extra_dead.len(),
        expected_dead,
        "dead letters beyond the expected ones"
    );

    // Every valid record exactly once, and the valid elements of mixed arrays exactly once.
    let texts = s.texts();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &texts {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    let mut problems = Vec::new();
    for i in 0..valid_count {
        let t = format!("corpus-valid {i}");
        if counts.get(t.as_str()) != Some(&1) {
            problems.push(format!(
                "'{t}' delivered {:?} times",
                counts.get(t.as_str())
            ));
        }
    }
    for case in &cases {
        let prefix = format!("corpus-case {} ", case.name());
        let n: usize = texts.iter().filter(|t| t.starts_with(&prefix)).count();
        if n != case.delivered {
            problems.push(format!(
                "{}: {n} message(s) delivered, expected {}",
                case.name(),
                case.delivered
            ));
        }
    }
    if texts.len() != expected_messages {
        problems.push(format!(
            "{} messages delivered, expected {expected_messages}",
            texts.len()
        ));
    }

    // Every bad case dead-lettered as often as expected, with its stage, class and reason.
    let mut per_case: HashMap<&str, usize> = HashMap::new();
    for d in &dead {
        let at = (
            d.header("__connect.errors.partition").parse().unwrap_or(-1),
            d.header("__connect.errors.offset").parse().unwrap_or(-1),
        );
        let Some(case) = bad_at.get(&at) else {
            problems.push(format!(
                "a dead letter for a valid record at {at:?}: {:?}",
                d.headers
            ));
            continue;
        };
        *per_case.entry(case.name()).or_default() += 1;
        if let Err(e) = check_dead_letter(
            case,
            d.header("__connect.errors.stage"),
            d.header("__connect.errors.class.name"),
            d.header("__connect.errors.exception.message"),
        ) {
            problems.push(e);
        }
        // The dead letter keeps the original value byte for byte.
        if d.value.clone().unwrap_or_default() != case.value().unwrap_or_default() {
            problems.push(format!(
                "{}: the dead letter does not carry the original value",
                case.name()
            ));
        }
    }
    for case in &cases {
        let n = per_case.get(case.name()).copied().unwrap_or(0);
        if n != case.dead_letters {
            problems.push(format!(
                "{}: {n} dead letter(s), expected {}",
                case.name(),
                case.dead_letters
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_end_to_end() {
    let cases: Vec<Case> = cases().into_iter().filter(|c| !c.transform).collect();
    end_to_end("corpus", 3, cases, BTreeMap::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_transform_cases_end_to_end() {
    let cases: Vec<Case> = cases().into_iter().filter(|c| c.transform).collect();
    end_to_end("corpus-tf", 2, cases, transform_keys()).await;
}
