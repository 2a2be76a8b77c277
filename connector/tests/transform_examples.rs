//! The example transforms under deploy/examples/transforms/ produce the envelopes they promise:
//! each example config is loaded as a user would (`ConnectorConfig::from_file`, script paths
//! relative to the repository root), its sample records run through the chain, and every output
//! is checked against the expected envelope and the shipped schemas.

use std::path::{Path, PathBuf};

use lark_sink::commands::transform_test::{self, Summary, TestOptions};
use lark_sink::config::ConnectorConfig;
use lark_sink::envelope::validate::EnvelopeValidator;
use lark_sink_transforms::{Chain, RecordMeta};
use serde_json::{json, Value};

fn repo() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The example configs name their scripts relative to the repository root, as documented.
    // Every test sets the same directory, so running them in parallel is harmless.
    std::env::set_current_dir(&root).unwrap();
    root
}

fn chain_of(example: &str) -> (ConnectorConfig, Chain) {
    let root = repo();
    let cfg = ConnectorConfig::from_file(
        &root.join(format!("deploy/examples/transforms/{example}.json")),
    )
    .unwrap_or_else(|e| panic!("{example}: {e}"));
    let chain = cfg.transform_chain().expect("chain builds");
    assert!(!chain.is_empty(), "{example}: no transforms");
    (cfg, chain)
}

fn inputs(name: &str) -> Vec<Value> {
    let text =
        std::fs::read_to_string(repo().join(format!("deploy/examples/transforms/{name}.jsonl")))
            .unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs every sample record (offset = line index, as `transform test` does) and checks that each
/// output is a valid envelope. Returns the outputs per record (errors as text).
fn run(example: &str, input: &str) -> Vec<Result<Vec<Value>, String>> {
    let (cfg, mut chain) = chain_of(example);
    let topic = match &cfg.topics {
        lark_sink::source::Topics::List(l) => l[0].clone(),
        _ => unreachable!(),
    };
    let validator = EnvelopeValidator::new().unwrap();
    inputs(input)
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let meta = RecordMeta {
                topic: topic.clone(),
                offset: i as i64,
                ..RecordMeta::default()
            };
            let out = chain.apply(v, &meta).map_err(|e| e.to_string())?;
            for (j, env) in out.iter().enumerate() {
                validator
                    .validate(env, Some(j))
                    .unwrap_or_else(|e| panic!("{example} record {i} message {j}: {e}\n{env}"));
            }
            Ok(out)
        })
        .collect()
}

fn text(receive_type: &str, id: &str, t: &str) -> Value {
    json!({"receiveType": receive_type, "receiveId": id, "contentType": "text", "content": {"text": t}})
}

#[test]
fn debezium_change_events_become_text_messages() {
    let out = run("debezium-to-text", "debezium-to-text");
    let expected: Vec<Result<Vec<Value>, String>> = vec![
        Ok(vec![text(
            "chat",
            "oc_team",
            "New order #1001 from ACME GmbH: 1299.00 EUR",
        )]),
        Ok(vec![text("chat", "oc_team", "Order #1001: new → paid")]),
        Ok(vec![
            text("chat", "oc_team", "Order #1001: paid → cancelled"),
            text(
                "email",
                "alice@example.com",
                "Your customer ACME GmbH cancelled order #1001 (1299.00 EUR)",
            ),
        ]),
        Ok(vec![]), // amount changed, status did not
        Ok(vec![]), // another table
        Ok(vec![]), // snapshot read
        Ok(vec![text(
            "chat",
            "oc_team",
            "Order #1002 was deleted (db shop, offset 6)",
        )]),
    ];
    assert_eq!(out, expected);
}

/// The header, `messageKey` and receiver of each card: what makes it one card per alert, updated
/// in place from red (or the severity's colour) to green.
fn card_identity(env: &Value) -> (String, String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    assert_eq!(env["contentType"], "interactive", "{env}");
    (
        s(&env["messageKey"]),
        s(&env["receiveId"]),
        s(&env["content"]["header"]["title"]["content"]),
        s(&env["content"]["header"]["template"]),
    )
}

#[test]
fn alertmanager_webhooks_become_one_card_per_alert() {
    let out = run("alertmanager-to-card", "alertmanager-to-card");
    assert_eq!(out.len(), 5);
    let field = |k: &str, v: &str| json!({"is_short": true, "text": {"tag": "lark_md", "content": format!("**{k}**\n{v}")}});
    let note = json!({"tag": "note", "elements": [{"tag": "plain_text", "content": "Alertmanager: http://alertmanager:9093 · receiver lark"}]});
    let firing = json!({
        "receiveType": "chat", "receiveId": "oc_ops", "contentType": "interactive",
        "messageKey": "a1b2c3d4e5f60001",
        "content": {
            "config": {"wide_screen_mode": true},
            "header": {"title": {"tag": "plain_text", "content": "[FIRING] HighErrorRate on api-1:8080"}, "template": "red"},
            "elements": [
                {"tag": "div", "text": {"tag": "lark_md", "content": "**5xx rate 12% on api-1**\nMore than 5% of requests fail for 10 minutes."}},
                {"tag": "div", "fields": [field("Instance", "api-1:8080"), field("Severity", "critical"),
                                          field("Status", "firing"), field("Since", "2024-05-01T10:00:00Z")]},
                {"tag": "action", "actions": [{"tag": "button", "text": {"tag": "plain_text", "content": "Runbook"},
                                               "type": "primary", "url": "https://runbooks.example.com/high-error-rate"}]},
                note
            ]
        }
    });
    let first = out[0].as_ref().unwrap();
    assert_eq!(first.len(), 2, "one card per alert: {first:#?}");
    assert_eq!(first[0], firing);
    // The same alert resolved: the same key and receiver (so the connector updates that card),
    // green, with when it ended.
    let resolved = &out[2].as_ref().unwrap()[0];
    assert_eq!(
        resolved["content"]["elements"][1],
        json!({"tag": "div", "fields": [field("Instance", "api-1:8080"), field("Severity", "critical"),
                                        field("Status", "resolved"), field("Since", "2024-05-01T10:00:00Z"),
                                        field("Resolved", "2024-05-01T10:20:00Z")]})
    );
    let cards: Vec<Vec<(String, String, String, String)>> = out
        .iter()
        .map(|r| r.as_ref().unwrap().iter().map(card_identity).collect())
        .collect();
    let card = |key: &str, title: &str, colour: &str| {
        (
            key.to_string(),
            "oc_ops".to_string(),
            title.to_string(),
            colour.to_string(),
        )
    };
    assert_eq!(
        cards,
        vec![
            vec![
                card(
                    "a1b2c3d4e5f60001",
                    "[FIRING] HighErrorRate on api-1:8080",
                    "red"
                ),
                card(
                    "a1b2c3d4e5f60002",
                    "[FIRING] HighErrorRate on api-2:8080",
                    "red"
                ),
            ],
            // No fingerprint: keyed by alertname/instance; a warning is orange.
            vec![card("DiskFull/db-1", "[FIRING] DiskFull on db-1", "orange")],
            vec![
                card(
                    "a1b2c3d4e5f60001",
                    "[RESOLVED] HighErrorRate on api-1:8080",
                    "green"
                ),
                card(
                    "a1b2c3d4e5f60002",
                    "[RESOLVED] HighErrorRate on api-2:8080",
                    "green"
                ),
            ],
            vec![card(
                "DiskFull/db-1",
                "[RESOLVED] DiskFull on db-1",
                "green"
            )],
            vec![], // no alerts: nothing to say
        ]
    );
}

/// The connector makes a keyed JSON 1.0 card updatable (`config.update_multi`, which Lark needs to
/// PATCH it): the example's cards pass validation as such, the script need not know.
#[test]
fn alertmanager_cards_are_made_updatable_by_validation() {
    let out = run("alertmanager-to-card", "alertmanager-to-card");
    let validator = EnvelopeValidator::new().unwrap();
    for env in out.iter().flat_map(|r| r.as_ref().unwrap()) {
        let valid = validator.validate(env, None).unwrap();
        let content: Value = serde_json::from_str(&valid.content).unwrap();
        assert_eq!(content["config"]["update_multi"], true, "{env}");
        assert_eq!(valid.op.key(), env["messageKey"].as_str());
    }
}

fn expected_log_posts(offset_error: usize, offset_fatal: usize) -> (Value, Value) {
    let post = |chat: &str, title: &str, lines: Value| {
        json!({"receiveType": "chat", "receiveId": chat, "contentType": "post",
               "content": {"en_us": {"title": title, "content": lines}}})
    };
    let t = |s: &str| json!({"tag": "text", "text": s});
    let error = post(
        "oc_team",
        "ERROR in payments",
        json!([
            [t("charge failed: card declined (order 1001)")],
            [t("at 2024-05-01T10:00:00.123Z on pay-7d9f")],
            [t("trace "), {"tag": "a", "text": "4bf92f3577b34da6", "href": "https://tracing.example.com/trace/4bf92f3577b34da6"}],
            [{"tag": "at", "user_id": "ou_bob"}, t(&format!(" please have a look (logs-0@{offset_error})"))]
        ]),
    );
    let fatal = post(
        "oc_ops",
        "FATAL in inventory",
        json!([
            [t("out of file descriptors")],
            [t("at 2024-05-01T10:00:02.500Z on inv-1")],
            [{"tag": "at", "user_id": "all"}, t(&format!(" please have a look (logs-0@{offset_fatal})"))]
        ]),
    );
    (error, fatal)
}

#[test]
fn log_lines_become_posts_with_a_mention_in_both_engines() {
    let (error, fatal) = expected_log_posts(0, 2);
    for (example, line) in [("log-to-post", 17), ("log-to-post-lua", 16)] {
        let out = run(example, "log-to-post");
        assert_eq!(out[0], Ok(vec![error.clone()]), "{example}");
        assert_eq!(out[1], Ok(vec![]), "{example}: INFO lines are dropped");
        assert_eq!(out[2], Ok(vec![fatal.clone()]), "{example}");
        // The unparsable line is dead-lettered with the script's message and line.
        let err = out[3].as_ref().unwrap_err();
        assert!(
            err.starts_with("transform 'logs' failed: ")
                && err.contains(r#"unparsable log line: "garbage""#)
                && err.ends_with(&format!("(line {line})")),
            "{example}: {err}"
        );
    }
}

#[test]
fn transform_test_command_reports_the_examples() {
    for (example, input, expect) in [
        ("debezium-to-text", "debezium-to-text", (7, 4, 3, 0, 5)),
        (
            "alertmanager-to-card",
            "alertmanager-to-card",
            (5, 4, 1, 0, 6),
        ),
        ("log-to-post-lua", "log-to-post", (4, 2, 1, 1, 2)),
    ] {
        let (cfg, _) = chain_of(example);
        let file =
            std::fs::File::open(repo().join(format!("deploy/examples/transforms/{input}.jsonl")))
                .unwrap();
        let mut out = Vec::new();
        let s: Summary = transform_test::run(
            &cfg,
            std::io::BufReader::new(file),
            &TestOptions::default(),
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            (s.records, s.ok, s.dropped, s.failed, s.messages),
            expect,
            "{example}:\n{text}"
        );
        assert_eq!(s.invalid_messages, 0, "{example}:\n{text}");
    }
}
