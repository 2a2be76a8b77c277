//! The command line itself: `lark-sink emulator` serves the emulator for users' own tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use lark_sink_e2e::{run_sink, sink_bin};

#[test]
fn emulator_subcommand_serves_the_lark_api() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // secret-scan: exempt (the emulator's own output: it hands out tokens by design)
    let mut child = Command::new(sink_bin())
        .args(["emulator", "--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.contains(&format!("http://127.0.0.1:{port}")),
        "{first}"
    );

    let body = r#"{"app_id":"cli_demo_app","app_secret":"demo-secret"}"#;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /open-apis/auth/v3/tenant_access_token/internal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"tenant_access_token\":\"t-"), "{resp}");
}

#[test]
fn help_lists_the_subcommands() {
    let out = run_sink(&["--help"]);
    let text = out.stdout;
    for cmd in ["run", "demo", "emulator"] {
        assert!(text.contains(cmd), "{text}");
    }
}

/// `lark-sink send` against the emulator: prints the message_id, or the classified error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_prints_the_message_id_or_the_classified_error() {
    let lark = lark_sink_e2e::start_emulator().await;
    let dir = std::env::temp_dir().join(lark_sink_e2e::unique("send"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("c.json");
    let config = serde_json::json!({"name": "send-test", "config": {
        "topics": "unused",
        "kafka.bootstrap.servers": "127.0.0.1:9",
        "lark.app.id": "cli_demo_app",
        "lark.app.secret": "demo-secret",
        "lark.domain": lark.base_url(),
        "lark.webhooks.plain.token": "hook-plain",
        "errors.retry.timeout": "2000",
    }});
    std::fs::write(&cfg, config.to_string()).unwrap();
    let card = dir.join("card.json");
    std::fs::write(&card, r#"{"elements": [{"tag": "hr"}]}"#).unwrap();
    let send = |args: &[&str]| {
        let cfg = cfg.display().to_string();
        let mut all = vec!["send", "--config", cfg.as_str()];
        all.extend_from_slice(args);
        let out = run_sink(&all);
        (out.code, out.stdout, out.stderr)
    };

    let (code, out, err) = send(&[
        "--receive-id",
        "ou_alice",
        "--content",
        r#"{"text":"from the CLI"}"#,
    ]);
    assert_eq!(code, Some(0), "{err}");
    let id = out.trim();
    assert!(id.starts_with("om_"), "{out}");
    let msgs = lark.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        msgs[0].message_id, id,
        "the printed id is the one Lark returned"
    );

    let (code, _, err) = send(&[
        "--receive-type",
        "chat",
        "--receive-id",
        "oc_team",
        "--content-type",
        "interactive",
        "--content",
        &format!("@{}", card.display()),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, _) = send(&[
        "--receive-type",
        "webhook",
        "--receive-id",
        "plain",
        "--content",
        r#"{"text":"via bot"}"#,
    ]);
    assert_eq!((code, out.trim()), (Some(0), "sent (webhook:plain)"));
    assert_eq!(lark.messages().len(), 3);

    let (code, _, err) = send(&[
        "--receive-type",
        "chat",
        "--receive-id",
        "oc_outside",
        "--content",
        r#"{"text":"x"}"#,
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("[F-rec]") && err.contains("230002") && err.contains("log_id"),
        "{err}"
    );
    let (code, _, err) = send(&["--receive-id", "", "--content", r#"{"text":"x"}"#]);
    assert_eq!(code, Some(1));
    assert!(err.contains("/receiveId"), "{err}");
    assert!(!err.contains("demo-secret"));
    let _ = std::fs::remove_dir_all(&dir);
}
