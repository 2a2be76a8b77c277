//! `lark-sink check` against the real broker and the Lark emulator over HTTP: a good config
//! passes with every line OK and delivers nothing; each broken setting, alone, fails exactly
//! one check with its own specific line and fix.

use std::path::PathBuf;
use std::time::Duration;

use lark_sink::emulator::{App, Directory};
use lark_sink_e2e::*;
use serde_json::{json, Value};

const APP_SECRET: &str = "check-app-secret-7f3a";
const HOOK_SECRET: &str = "check-hook-secret-91c2";

/// The tenant: the demo app (every scope), an app without the bot ability, one without the
/// contact scope, one without a sending scope; a signed and a plain webhook.
fn directory() -> Directory {
    let mut d = Directory::demo();
    d.apps[0].app_secret = APP_SECRET.into();
    let app = |id: &str, bot: bool, scopes: Option<Vec<&str>>| App {
        app_id: id.into(),
        app_secret: APP_SECRET.into(),
        bot_enabled: bot,
        scopes: scopes.map(|s| s.into_iter().map(String::from).collect()),
    };
    d.apps.push(app("cli_nobot", false, None));
    d.apps.push(app(
        "cli_nocontact",
        true,
        Some(vec!["im:message:send_as_bot"]),
    ));
    d.apps.push(app(
        "cli_mute",
        true,
        Some(vec!["contact:user.id:readonly"]),
    ));
    for w in &mut d.webhooks {
        if w.token == "hook-signed" {
            w.secret = Some(HOOK_SECRET.into());
        }
    }
    d
}

struct Run {
    code: Option<i32>,
    out: String,
    err: String,
}

impl Run {
    /// The lines of one status: (check id, the whole line including its fix line).
    fn lines(&self, status: &str) -> Vec<(String, String)> {
        let lines: Vec<&str> = self.out.lines().collect();
        let mut found = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let mut parts = l.split_whitespace();
            if parts.next() == Some(status) {
                let id = parts.next().unwrap_or_default().to_string();
                let mut text = l.to_string();
                if let Some(next) = lines
                    .get(i + 1)
                    .filter(|n| n.trim_start().starts_with("fix:"))
                {
                    text.push('\n');
                    text.push_str(next.trim());
                }
                found.push((id, text));
            }
        }
        found
    }

    /// The run failed exactly one check, `id`; returns its line and fix.
    fn only_failure(&self, id: &str) -> String {
        assert_eq!(self.code, Some(1), "{}\n{}", self.out, self.err);
        let fails = self.lines("FAIL");
        assert_eq!(fails.len(), 1, "exactly one failed check:\n{}", self.out);
        assert_eq!(fails[0].0, id, "{}", self.out);
        assert!(
            fails[0].1.contains("fix: "),
            "a failure says how to fix it: {}",
            fails[0].1
        );
        fails[0].1.clone()
    }
}

struct Fixture {
    dir: PathBuf,
    base: Value,
    n: std::cell::Cell<u32>,
}

impl Fixture {
    fn check(&self, edit: impl FnOnce(&mut Value), args: &[&str]) -> Run {
        let mut cfg = self.base.clone();
        edit(&mut cfg["config"]);
        self.n.set(self.n.get() + 1);
        let path = self.dir.join(format!("c{}.json", self.n.get()));
        std::fs::write(&path, cfg.to_string()).unwrap();
        let mut argv: Vec<String> = vec![
            "check".into(),
            "--config".into(),
            path.display().to_string(),
            "--timeout-ms".into(),
            "8000".into(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        // run_sink scans the output for every secret the harness knows.
        let out = run_sink(&argv);
        let run = Run {
            code: out.code,
            out: out.stdout,
            err: out.stderr,
        };
        for secret in [APP_SECRET, HOOK_SECRET] {
            assert!(
                !run.out.contains(secret) && !run.err.contains(secret),
                "a secret was printed:\n{}{}",
                run.out,
                run.err
            );
        }
        run
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_each_broken_setting_distinctly() {
    let lark = start_emulator_with(EmulatorConfig {
        directory: directory(),
        ..EmulatorConfig::default()
    })
    .await;
    let topic = unique("check-src");
    let dlq = unique("check-dlq");
    create_topic(&topic, 3).await;
    create_topic(&dlq, 1).await;
    let dir = std::env::temp_dir().join(unique("check"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut base = connector_config("check-test", &topic, &lark, Some(&dlq));
    base["config"]["lark.app.secret"] = json!(APP_SECRET);
    base["config"]["lark.webhooks.signed.token"] = json!("hook-signed");
    base["config"]["lark.webhooks.signed.secret"] = json!(HOOK_SECRET);
    base["config"]["lark.webhooks.plain.token"] = json!("hook-plain");
    let state = unique("check-state");
    base["config"]["lark.state.topic"] = json!(state);
    base["config"]["lark.events.topic"] = json!(unique("check-events"));
    let fx = Fixture {
        dir: dir.clone(),
        base,
        n: Default::default(),
    };

    // A good config: exit 0, every line OK, one per check, and nothing delivered.
    let good = fx.check(|_| {}, &[]);
    assert_eq!(good.code, Some(0), "{}\n{}", good.out, good.err);
    let ok: Vec<String> = good.lines("OK").into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ok,
        [
            "broker",
            "topic",
            "dlq",
            "dlq-write",
            "state",
            "credentials",
            "send-scope",
            "bot",
            "contact-scope",
            "events",
            "webhook",
            "webhook"
        ],
        "{}",
        good.out
    );
    for status in ["FAIL", "WARN", "SKIP"] {
        assert!(good.lines(status).is_empty(), "{}", good.out);
    }
    assert!(
        good.out.contains(&format!("{topic}: 3 partition(s)")),
        "{}",
        good.out
    );
    assert!(
        good.out.contains("signed: token and signature verified"),
        "{}",
        good.out
    );
    assert!(
        good.out
            .contains("plain: token valid, no signature required"),
        "{}",
        good.out
    );
    assert!(good.out.contains("0 failed"), "{}", good.out);
    assert!(lark.messages().is_empty(), "check delivered a message");
    // The DLQ probe is there, marked as such.
    let probes = read_topic(&dlq, 1, Duration::from_secs(20));
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0].header("lark-sink.check"), "probe");
    assert_eq!(probes[0].key.as_deref(), Some("lark-sink-check".as_bytes()));

    // --no-write: the write is skipped (and said so), nothing else changes.
    let r = fx.check(|_| {}, &["--no-write"]);
    assert_eq!(r.code, Some(0), "{}", r.out);
    let skips = r.lines("SKIP");
    assert_eq!(skips.len(), 1, "{}", r.out);
    assert_eq!(skips[0].0, "dlq-write");
    assert!(skips[0].1.contains("--no-write"));

    // Unreachable broker: librdkafka's reason; the topic checks cannot run; Lark still checked.
    let r = fx.check(|c| c["kafka.bootstrap.servers"] = json!("127.0.0.1:1"), &[]);
    let line = r.only_failure("broker");
    assert!(
        line.contains("127.0.0.1:1") && line.contains("Connection refused"),
        "{line}"
    );
    assert!(line.contains("kafka.bootstrap.servers"), "{line}");
    let skipped: Vec<String> = r.lines("SKIP").into_iter().map(|(id, _)| id).collect();
    assert_eq!(skipped, ["topic", "dlq", "dlq-write", "state"], "{}", r.out);
    assert_eq!(r.lines("OK").len(), 7, "{}", r.out);

    // A missing source topic, next to an existing one.
    let r = fx.check(
        |c| c["topics"] = json!(format!("{topic},{topic}-nope")),
        &[],
    );
    let line = r.only_failure("topic");
    assert!(
        line.contains(&format!("{topic}-nope: no such topic")),
        "{line}"
    );
    assert!(line.contains("correct 'topics'"), "{line}");
    // topics.regex: matching and not.
    let r = fx.check(
        |c| {
            c.as_object_mut().unwrap().remove("topics");
            c["topics.regex"] = json!(format!("{}.*", &topic[..topic.len() - 3]));
        },
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(
        r.out.contains("matches 1 topic(s), 3 partition(s)"),
        "{}",
        r.out
    );
    let r = fx.check(
        |c| {
            c.as_object_mut().unwrap().remove("topics");
            c["topics.regex"] = json!("no-such-prefix-.*");
        },
        &[],
    );
    assert!(r.only_failure("topic").contains("matches no topic"));

    // A missing DLQ: reported, the write not attempted, and the topic not created by asking.
    let missing_dlq = unique("check-no-dlq");
    let r = fx.check(
        |c| c["errors.deadletterqueue.topic.name"] = json!(missing_dlq),
        &[],
    );
    let line = r.only_failure("dlq");
    assert!(
        line.contains(&format!("{missing_dlq}: no such topic")),
        "{line}"
    );
    assert!(line.contains("kafka-topics.sh --create"), "{line}");
    assert_eq!(r.lines("SKIP")[0].0, "dlq-write");
    assert!(!topic_exists(&missing_dlq), "check must not create topics");

    // The state topic: missing is fine (start-up creates it, compacted, partitioned like the
    // source), and check does not create it; without one, keyed records are dead-lettered.
    assert!(
        good.out.contains(&format!(
            "{state}: not there yet; start-up creates it with 3 partition(s) and cleanup.policy=compact"
        )),
        "{}",
        good.out
    );
    assert!(!topic_exists(&state), "check must not create topics");
    let r = fx.check(
        |c| {
            c.as_object_mut().unwrap().remove("lark.state.topic");
        },
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.out);
    let skips = r.lines("SKIP");
    assert_eq!(skips.len(), 1, "{}", r.out);
    assert_eq!(skips[0].0, "state");
    assert!(skips[0]
        .1
        .contains("records with a messageKey are dead-lettered"));
    // An existing one that is not compacted, or has fewer partitions than the source: warnings.
    let plain = unique("check-state-plain");
    create_topic(&plain, 3).await;
    let r = fx.check(|c| c["lark.state.topic"] = json!(plain), &[]);
    assert_eq!(r.code, Some(0), "{}", r.out);
    let warns = r.lines("WARN");
    assert_eq!(warns.len(), 1, "{}", r.out);
    assert_eq!(warns[0].0, "state");
    // Kafka reports `cleanup.policy=delete`; tansu reports none for a topic created without it.
    assert!(
        warns[0].1.contains("not compacted")
            || warns[0].1.contains("whether it is compacted is unknown"),
        "{}",
        warns[0].1
    );
    assert!(
        warns[0].1.contains("--add-config cleanup.policy=compact"),
        "{}",
        warns[0].1
    );
    let few = unique("check-state-few");
    let kafka = std::collections::BTreeMap::from([("bootstrap.servers".to_string(), broker())]);
    lark_sink::state::Changelog::new(&kafka, few.clone())
        .expect("changelog")
        .ensure_topic(&kafka, 1)
        .await
        .expect("a compacted topic of 1 partition");
    let r = fx.check(|c| c["lark.state.topic"] = json!(few), &[]);
    assert_eq!(r.code, Some(0), "{}", r.out);
    let warns = r.lines("WARN");
    assert_eq!(warns.len(), 1, "{}", r.out);
    assert!(
        warns[0]
            .1
            .contains("1 partition(s), cleanup.policy=compact; fewer than the source's 3"),
        "{}",
        warns[0].1
    );

    // Wrong app secret, unknown app id: which key to fix, with Lark's code.
    let r = fx.check(|c| c["lark.app.secret"] = json!("not-the-secret"), &[]);
    let line = r.only_failure("credentials");
    assert!(
        line.contains("10014") && line.contains("fix: lark.app.secret is not the secret"),
        "{line}"
    );
    let r = fx.check(|c| c["lark.app.id"] = json!("cli_nobody"), &[]);
    let line = r.only_failure("credentials");
    assert!(
        line.contains("10003") && line.contains("fix: lark.app.id 'cli_nobody'"),
        "{line}"
    );
    let skipped: Vec<String> = r.lines("SKIP").into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        skipped,
        ["send-scope", "bot", "contact-scope", "events"],
        "{}",
        r.out
    );

    // The long connection's endpoint: refusing the app fails `events` alone, busy warns.
    let code = |code: i64| Fault::Code {
        http_status: 0,
        code,
        msg: String::new(),
        ratelimit_reset_secs: None,
    };
    lark.push_fault(FaultTarget::WsEndpoint, code(1000040344));
    let line = fx.check(|_| {}, &[]).only_failure("events");
    assert!(
        line.contains("1000040344")
            && line.contains("fix: the app's credentials are refused for the long connection"),
        "{line}"
    );
    lark.push_fault(FaultTarget::WsEndpoint, code(1));
    let r = fx.check(|_| {}, &[]);
    assert_eq!(r.code, Some(0), "{}", r.out);
    let warned: Vec<String> = r.lines("WARN").into_iter().map(|(id, _)| id).collect();
    assert_eq!(warned, ["events"], "{}", r.out);

    // Bot ability off.
    let r = fx.check(|c| c["lark.app.id"] = json!("cli_nobot"), &[]);
    let line = r.only_failure("bot");
    assert!(
        line.contains("230006") && line.contains("enable the Bot feature"),
        "{line}"
    );
    // No contact scope.
    let r = fx.check(|c| c["lark.app.id"] = json!("cli_nocontact"), &[]);
    let line = r.only_failure("contact-scope");
    assert!(
        line.contains("99991672") && line.contains("add contact:user.id:readonly"),
        "{line}"
    );
    // ... which --skip accepts for a connector that never addresses phones.
    let r = fx.check(
        |c| c["lark.app.id"] = json!("cli_nocontact"),
        &["--skip", "contact-scope"],
    );
    assert_eq!(r.code, Some(0), "{}", r.out);
    // No sending scope: the bot ability cannot be seen behind it.
    let r = fx.check(|c| c["lark.app.id"] = json!("cli_mute"), &[]);
    let line = r.only_failure("send-scope");
    assert!(
        line.contains("99991672") && line.contains("im:message:send_as_bot"),
        "{line}"
    );

    // Webhooks: wrong secret, missing secret, unknown token.
    let r = fx.check(
        |c| c["lark.webhooks.signed.secret"] = json!("not-the-hook-secret"),
        &[],
    );
    let line = r.only_failure("webhook");
    assert!(line.contains("signed: signature refused (19021)"), "{line}");
    assert!(line.contains("lark.webhooks.signed.secret"), "{line}");
    let r = fx.check(
        |c| {
            c.as_object_mut()
                .unwrap()
                .remove("lark.webhooks.signed.secret");
        },
        &[],
    );
    let line = r.only_failure("webhook");
    assert!(
        line.contains("requires a signature") && line.contains("set lark.webhooks.signed.secret"),
        "{line}"
    );
    let r = fx.check(|c| c["lark.webhooks.plain.token"] = json!("hook-gone"), &[]);
    let line = r.only_failure("webhook");
    assert!(
        line.contains("plain: Lark does not know this webhook (19001"),
        "{line}"
    );
    assert!(
        !line.contains("hook-gone"),
        "the token is not printed: {line}"
    );

    // A throttled probe (9499 "too many request", HTTP 400, lark-api.md §8) proves nothing about
    // the token or the signature: a warning to run again, not "token valid" and not a failure.
    lark.push_fault(
        FaultTarget::Webhook,
        Fault::Code {
            http_status: 400,
            code: 9499,
            msg: "too many request".into(),
            ratelimit_reset_secs: None,
        },
    );
    let r = fx.check(|_| {}, &[]);
    assert_eq!(r.code, Some(0), "warnings only:\n{}\n{}", r.out, r.err);
    let warns = r.lines("WARN");
    assert_eq!(warns.len(), 1, "one throttled webhook:\n{}", r.out);
    let (id, line) = &warns[0];
    assert_eq!(id, "webhook", "{}", r.out);
    assert!(
        line.contains("not proven: Lark throttled the probe") && line.contains("9499"),
        "{line}"
    );
    assert!(!line.contains("token valid"), "{line}");
    assert_eq!(
        r.lines("OK")
            .iter()
            .filter(|(id, _)| id == "webhook")
            .count(),
        1,
        "{}",
        r.out
    );

    // Lark unreachable: every app check says so (connection refused on a closed port).
    let r = fx.check(
        |c| {
            c["lark.domain"] = json!("http://127.0.0.1:1");
            for k in [
                "lark.webhooks.signed.token",
                "lark.webhooks.signed.secret",
                "lark.webhooks.plain.token",
            ] {
                c.as_object_mut().unwrap().remove(k);
            }
        },
        &[],
    );
    let line = r.only_failure("credentials");
    assert!(
        line.contains("cannot reach Lark at http://127.0.0.1:1"),
        "{line}"
    );

    // A config error is not a failed check: exit 2, the same message as `run`.
    let r = fx.check(|c| c["errors.tolerence"] = json!("all"), &[]);
    assert_eq!(r.code, Some(2), "{}\n{}", r.out, r.err);
    assert!(
        r.err.contains("'errors.tolerence'") && r.err.contains("did you mean"),
        "{}",
        r.err
    );

    assert!(lark.messages().is_empty(), "no check delivered anything");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `lark.events.mode=http`: the `events` line is a signed self-test of the listener. With nothing
/// listening the check listens itself; with the connector listening, that connector answers; a
/// connector with another Encrypt Key or Verification Token, or another service at the address,
/// fails the line with its fix. No event reaches the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_self_tests_the_http_listener() {
    const ENCRYPT_KEY: &str = "check-encrypt-key-5b0e";
    const TOKEN: &str = "check-verification-token";
    let lark = start_emulator_with(EmulatorConfig {
        directory: directory(),
        ..EmulatorConfig::default()
    })
    .await;
    let topic = unique("check-http-src");
    let dlq = unique("check-http-dlq");
    create_topic(&topic, 1).await;
    create_topic(&dlq, 1).await;
    let events = unique("check-http-events");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = std::env::temp_dir().join(unique("check-http"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut base = connector_config("check-http", &topic, &lark, Some(&dlq));
    base["config"]["lark.app.secret"] = json!(APP_SECRET);
    base["config"]["lark.events.topic"] = json!(events);
    base["config"]["lark.events.mode"] = json!("http");
    base["config"]["lark.events.listener"] = json!(format!("127.0.0.1:{port}"));
    base["config"]["lark.events.encrypt.key"] = json!(ENCRYPT_KEY);
    base["config"]["lark.events.verification.token"] = json!(TOKEN);
    let fx = Fixture {
        dir: dir.clone(),
        base: base.clone(),
        n: Default::default(),
    };
    let events_line = |r: &Run| {
        for secret in [ENCRYPT_KEY, TOKEN] {
            assert!(
                !r.out.contains(secret) && !r.err.contains(secret),
                "printed"
            );
        }
        let ok = r.lines("OK");
        ok.into_iter()
            .find(|(id, _)| id == "events")
            .map(|(_, line)| line)
            .unwrap_or_else(|| panic!("no OK events line:\n{}", r.out))
    };

    // Nothing listens: the check listens on the address itself.
    let r = fx.check(|_| {}, &["--no-write"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.out, r.err);
    assert!(
        events_line(&r).contains("no connector listens on 127.0.0.1:"),
        "{}",
        r.out
    );
    // The connector listens: it answers the self-test.
    let mut c = Connector::start(&base);
    let listening = "events: listening for Lark's callbacks on ";
    wait_until("the listener", Duration::from_secs(60), || {
        c.logs().contains(listening)
    })
    .await;
    let r = fx.check(|_| {}, &["--no-write"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.out, r.err);
    assert!(
        events_line(&r).contains("the connector listening on 127.0.0.1:"),
        "{}",
        r.out
    );
    assert!(
        c.logs()
            .contains("a self-test (lark-sink check) passed verification"),
        "the connector verified it:\n{}",
        c.logs()
    );
    // The file has another Encrypt Key, or another token, than the running connector.
    let r = fx.check(
        |c| c["lark.events.encrypt.key"] = json!("another-key"),
        &["--no-write"],
    );
    let line = r.only_failure("events");
    assert!(!line.contains("another-key") && !line.contains(ENCRYPT_KEY));
    assert!(
        line.contains("refused the challenge") && line.contains("another lark.events.encrypt.key"),
        "{line}"
    );
    let r = fx.check(
        |c| c["lark.events.verification.token"] = json!("another-token"),
        &["--no-write"],
    );
    let line = r.only_failure("events");
    assert!(line.contains("refused the challenge"), "{line}");
    // The self-tests reached no topic.
    assert!(read_topic(&events, 1, Duration::from_secs(3)).is_empty());
    assert_eq!(c.stop(), Some(0));

    // Another service at the address: the emulator, which answers 404 there.
    let emulator_at = lark
        .base_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let r = fx.check(
        |c| c["lark.events.listener"] = json!(emulator_at),
        &["--no-write"],
    );
    let line = r.only_failure("events");
    assert!(
        line.contains("answered the challenge with HTTP 404") && line.contains("another service"),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
