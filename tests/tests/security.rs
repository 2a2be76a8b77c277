//! Security end to end: Kafka over TLS and SASL/SCRAM against the secured brokers of
//! `scripts/broker.sh start-secure` (tansu behind a TLS terminator, see that script for why), Lark
//! over HTTPS with a private CA (`lark.tls.ca.file`), the admin token on every endpoint, and the
//! suite-wide secret scan: that it catches a planted secret, and that no test can read Kafka,
//! the admin API or lark-sink's output around it.

use std::time::Duration;

use lark_sink_e2e::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// One good record and one that fails validation: the first must reach the emulator, the second
/// the DLQ, both over `kafka`.
async fn delivers_and_dead_letters_over(kafka: KafkaAccess, prefix: &str) {
    let s = Scenario::on(kafka.clone(), prefix, 1, start_emulator().await).await;
    s.send(&json!({"receiveId": "ou_alice", "content": {"text": format!("over {prefix}")}}))
        .await;
    s.send(&json!({"receiveId": "", "content": {"text": "no receiver"}}))
        .await;
    let cfg = s.config();
    for (k, _) in &kafka.props {
        assert!(
            cfg["config"].get(format!("kafka.{k}")).is_some(),
            "{k} passed through"
        );
    }
    let mut c = Connector::start(&cfg);
    wait_until("the message delivered", WAIT, || {
        s.lark.messages().len() == 1
    })
    .await;
    assert_eq!(s.texts(), [format!("over {prefix}")]);
    let dead = s.dead_letters(1, WAIT);
    assert_eq!(dead.len(), 1, "the dead letter, read back over {prefix}");
    assert_eq!(dead[0].header("__connect.errors.stage"), "VALIDATION");
    assert!(dead[0]
        .header("__connect.errors.exception.message")
        .contains("/receiveId"));
    wait_until("both offsets committed", WAIT, || s.committed() == vec![2]).await;
    assert_eq!(c.stop(), Some(0), "{}", c.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_and_dead_letters_over_tls() {
    delivers_and_dead_letters_over(KafkaAccess::ssl(), "tls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_and_dead_letters_over_sasl_scram_sha_256_over_tls() {
    delivers_and_dead_letters_over(KafkaAccess::sasl_ssl("SCRAM-SHA-256"), "scram256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_and_dead_letters_over_sasl_scram_sha_512_over_tls() {
    delivers_and_dead_letters_over(KafkaAccess::sasl_ssl("SCRAM-SHA-512"), "scram512").await;
}

/// tansu 0.6 offers no SASL/PLAIN (its SASL server answers `NoSharedMechanism`, see
/// scripts/broker.sh), so PLAIN is proven only as far as this: a mechanism the broker refuses is a
/// clear start-up error, not a silent hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sasl_mechanism_the_broker_refuses_stops_start_up_with_a_clear_error() {
    let s = Scenario::on(
        KafkaAccess::sasl_ssl("SCRAM-SHA-256"),
        "plain",
        1,
        start_emulator().await,
    )
    .await;
    let mut cfg = s.config();
    cfg["config"]["kafka.sasl.mechanism"] = json!("PLAIN");
    let mut c = Connector::start(&cfg);
    assert_eq!(c.wait_exit(WAIT).await, Some(1), "{}", c.logs());
    let logs = c.logs();
    assert!(
        logs.contains("Kafka authentication failed") && logs.contains("kafka.sasl.mechanism"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_sasl_password_stops_start_up_with_a_clear_error_and_is_never_logged() {
    let good = KafkaAccess::sasl_ssl("SCRAM-SHA-256");
    let s = Scenario::on(good.clone(), "badpw", 1, start_emulator().await).await;
    s.send(&json!({"receiveId": "ou_alice", "content": {"text": "x"}}))
        .await;
    let mut cfg = s.config();
    // The password through ${env:...}, as the docs advise, and once literally.
    for literal in [false, true] {
        let mut env = Vec::new();
        if literal {
            cfg["config"]["kafka.sasl.password"] = json!(WRONG_KAFKA_PASSWORD);
        } else {
            cfg["config"]["kafka.sasl.password"] = json!("${env:E2E_KAFKA_PASSWORD}");
            env.push(("E2E_KAFKA_PASSWORD", WRONG_KAFKA_PASSWORD));
        }
        let mut c = Connector::start_with_env(&cfg, &env);
        assert_eq!(c.wait_exit(WAIT).await, Some(1), "{}", c.logs());
        let logs = c.logs();
        assert!(
            logs.contains("Kafka authentication failed")
                && logs.contains("kafka.sasl.password")
                && logs.contains("SASL authentication error"),
            "{logs}"
        );
        // The harness scans the log for WRONG_KAFKA_PASSWORD (and every other secret) on drop.
    }
    assert!(s.lark.messages().is_empty());
    assert_eq!(
        s.committed(),
        vec![-1],
        "nothing consumed, nothing committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_broker_certificate_stops_start_up_with_a_clear_tls_error() {
    let s = Scenario::on(KafkaAccess::ssl(), "badca", 1, start_emulator().await).await;
    let other_ca = std::env::var("LARK_SINK_TEST_BROKER_OTHER_CA").expect("set by broker.sh");
    let mut cfg = s.config();
    cfg["config"]["kafka.ssl.ca.location"] = json!(other_ca);
    let mut c = Connector::start(&cfg);
    assert_eq!(c.wait_exit(WAIT).await, Some(1), "{}", c.logs());
    let logs = c.logs();
    assert!(
        logs.contains("Kafka TLS handshake failed")
            && logs.contains("kafka.ssl.ca.location")
            && logs.contains("certificate verify failed"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lark_over_https_needs_the_private_ca_and_says_so_without_it() {
    let tls = TlsFiles::generate();
    let lark = start_emulator_tls(EmulatorConfig::default(), &tls).await;
    assert!(lark.base_url().starts_with("https://127.0.0.1:"));
    let s = Scenario::on(KafkaAccess::plain(), "https", 1, lark).await;
    s.send(&json!({"receiveId": "ou_alice", "content": {"text": "over https"}}))
        .await;

    // Without the CA: the certificate is rejected at start-up, a configuration error (exit 1),
    // not a transient one retried forever.
    let mut c = Connector::start(&s.config());
    assert_eq!(c.wait_exit(WAIT).await, Some(1), "{}", c.logs());
    let logs = c.logs();
    assert!(
        logs.contains("TLS certificate of 127.0.0.1 rejected")
            && logs.contains("UnknownIssuer")
            && logs.contains("lark.tls.ca.file"),
        "{logs}"
    );
    assert!(s.lark.messages().is_empty());
    assert_eq!(s.committed(), vec![-1]);
    drop(c);

    // With it: delivered.
    let mut cfg = s.config();
    cfg["config"]["lark.tls.ca.file"] = json!(tls.ca.display().to_string());
    let mut c = Connector::start(&cfg);
    wait_until("delivered over HTTPS", WAIT, || {
        s.lark.messages().len() == 1
    })
    .await;
    assert_eq!(s.texts(), ["over https"]);
    assert_eq!(c.stop(), Some(0));

    // A file that is not a PEM bundle is a config error naming the key, before anything runs.
    let junk = tls.dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    cfg["config"]["lark.tls.ca.file"] = json!(junk.display().to_string());
    let mut c = Connector::start(&cfg);
    assert_eq!(c.wait_exit(WAIT).await, Some(1));
    assert!(
        c.logs().contains("config key 'lark.tls.ca.file'")
            && c.logs().contains("no PEM certificate"),
        "{}",
        c.logs()
    );
    let _ = std::fs::remove_dir_all(&tls.dir);
}

/// Every admin endpoint except the probes answers 401 without the token, with a wrong one, and
/// with the right one in the wrong scheme; the 401 body never echoes what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_guards_every_endpoint_but_the_probes() {
    let s = Scenario::new("admintoken", 1).await;
    let mut cfg = s.config();
    cfg["config"]["admin.token"] = json!(ADMIN_TOKEN);
    let c = Connector::start(&cfg);
    let api = Admin::of(&c).await;
    let name = &s.name;
    let protected: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/metrics".into(), None),
        (Method::GET, "/connectors".into(), None),
        (Method::GET, format!("/connectors/{name}"), None),
        (Method::GET, format!("/connectors/{name}/status"), None),
        (Method::PUT, format!("/connectors/{name}/pause"), None),
        (Method::PUT, format!("/connectors/{name}/resume"), None),
        (Method::POST, format!("/connectors/{name}/restart"), None),
        (
            Method::PUT,
            "/connector-plugins/LarkSinkConnector/config/validate".into(),
            Some(cfg["config"].clone()),
        ),
    ];
    let wrong = "e2e-admin-token-5f3b"; // one character off
    for (method, path, body) in &protected {
        for token in [None, Some(wrong), Some("")] {
            let (code, text) = api
                .call_with(method.clone(), path, token, body.clone())
                .await;
            assert_eq!(code, 401, "{method} {path} with {token:?}: {text}");
            assert!(
                text.contains("admin.token") && !text.contains(wrong),
                "{text}"
            );
        }
    }
    // The token in another scheme or with a prefix is not the token.
    let raw =
        reqwest_free_raw_call(&api.base, "/connectors", &format!("Basic {ADMIN_TOKEN}")).await;
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");
    let raw =
        reqwest_free_raw_call(&api.base, "/connectors", &format!("Bearer x{ADMIN_TOKEN}")).await;
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");
    // The right token opens them (restart last: it restarts the connector).
    for (method, path, body) in &protected {
        let (code, text) = api.call(method.clone(), path, true, body.clone()).await;
        assert!((200..300).contains(&code), "{method} {path}: {code} {text}");
    }
    // Probes are open.
    assert_eq!(api.call(Method::GET, "/healthz", false, None).await.0, 200);
    let ready = api.call(Method::GET, "/readyz", false, None).await.0;
    assert!(ready == 200 || ready == 503, "{ready}");
}

/// Without `admin.token`, `/metrics` and the REST API are open (documented: bind the listener
/// to loopback or set a token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_the_api_is_open() {
    let s = Scenario::new("notoken", 1).await;
    let c = Connector::start(&s.config());
    let api = Admin::of(&c).await;
    assert_eq!(api.call(Method::GET, "/metrics", false, None).await.0, 200);
    assert_eq!(
        api.call(Method::GET, "/connectors", false, None).await.0,
        200
    );
}

/// A raw HTTP/1.1 request (for Authorization values reqwest would not send as given).
async fn reqwest_free_raw_call(base: &str, path: &str, authorization: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert_no_secrets(&format!("the admin API's answer to GET {path}"), &out);
    out
}

/// The scanner is real: a secret planted in a record, a log, metrics text or a header is caught,
/// and the panic names where.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_scan_catches_a_planted_secret() {
    let s = Scenario::new("planted", 1).await;
    s.send(&json!({"note": "harmless"})).await;
    s.send_raw(None, b"{}", &[("x-leak", &format!("token {ADMIN_TOKEN}"))])
        .await;
    s.send(&json!({"leak": "demo-secret"})).await;
    let topic = s.topic.clone();
    let caught = std::panic::catch_unwind(|| read_topic(&topic, 3, WAIT))
        .expect_err("a record carrying a secret must fail the read");
    let msg = caught.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains(&format!("header x-leak of record 1 of topic {topic}"))
            && msg.contains(ADMIN_TOKEN),
        "{msg}"
    );

    // A token the emulator issued (not only the SECRETS list) is found too.
    let lark = start_emulator().await;
    let token = tenant_token_from(&lark).await;
    for (place, text) in [
        ("a log", format!("INFO sending with {token}")),
        ("metrics", format!("lark_sink_x{{label=\"{token}\"}} 1")),
        ("a log", "webhook secret e2e-hook-secret-7c1d".to_string()),
        ("a log", format!("kafka password {KAFKA_PASSWORD}")),
    ] {
        let caught = std::panic::catch_unwind(|| assert_no_secrets(place, &text));
        let msg = caught
            .expect_err("planted secret")
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(msg.contains(place), "{msg}");
    }
    // A token of a shape the regex does not know is still caught by value.
    assert!(known_secrets().contains(&token));
    assert_no_secrets("clean text", "lark-sink started, 3 messages delivered");
}

/// Fetches a tenant token from `lark` the way lark-sink does (over HTTP, scanned as emulator
/// output: the emulator hands out tokens by design).
async fn tenant_token_from(lark: &EmulatorHandle) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"app_id":"cli_demo_app","app_secret":"demo-secret"}"#;
    let mut s = tokio::net::TcpStream::connect(lark.addr()).await.unwrap();
    let req = format!(
        "POST /open-apis/auth/v3/tenant_access_token/internal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let json = &out[out.find('{').expect("a JSON body")..];
    let v: Value = serde_json::from_str(json.trim()).expect("JSON");
    v["tenant_access_token"].as_str().unwrap().to_string()
}

/// The scan cannot be bypassed silently: no test file talks to Kafka or HTTP itself, or runs
/// `lark-sink` around [`run_sink`] / [`Connector`], unless the line says why it is exempt.
#[test]
fn every_read_goes_through_the_scanning_helpers() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let forbidden = [
        "rdkafka::",
        "reqwest::",
        "BaseConsumer",
        "StreamConsumer",
        "Command::new(sink_bin())",
        "ClientConfig::new()",
    ];
    let mut offences = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let exempt = line.contains("secret-scan: exempt")
                || (i > 0 && lines[i - 1].contains("secret-scan: exempt"));
            // This file names the patterns in the list above.
            let is_this_list = path.ends_with("security.rs") && line.trim_start().starts_with('"');
            if let Some(p) = forbidden.iter().find(|p| line.contains(*p)) {
                if !exempt && !is_this_list {
                    offences.push(format!("{}:{}: {p}", path.display(), i + 1));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "read through the harness (read_topic, Admin, run_sink, Connector), or mark the line \
         'secret-scan: exempt (<why>)':\n{}",
        offences.join("\n")
    );
}
