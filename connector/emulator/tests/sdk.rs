//! What the official Lark SDKs (`lark-oapi` for Python, `@larksuiteoapi/node-sdk`) rely on when
//! they talk to the emulator (issue 14): header spelling on the wire, Lark-shaped JSON for every
//! answer, and the answer fields they read.
//!
//! Header tests read raw response bytes over a `TcpStream`, because reqwest (like any HTTP
//! library that normalises names) would hide the spelling the Python SDK looks up.

use lark_emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault, FaultTarget, Limits};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start() -> EmulatorHandle {
    Emulator::start(
        EmulatorConfig {
            limits: Limits::disabled(),
            ..EmulatorConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("emulator starts")
}

/// One HTTP/1.1 request written by hand; returns the raw head (status line + headers) and body.
async fn raw(emu: &EmulatorHandle, method: &str, path: &str, body: &str) -> (String, String) {
    let mut tcp = TcpStream::connect(emu.addr()).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        emu.addr(),
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8(out).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    (head.to_string(), body.to_string())
}

/// The header names of a raw head, exactly as sent.
fn names(head: &str) -> Vec<&str> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n))
        .collect()
}

#[tokio::test]
async fn header_names_go_out_title_case_like_lark() {
    let emu = start().await;
    let creds = json!({"app_id": "cli_demo_app", "app_secret": "demo-secret"}).to_string();
    let (head, body) = raw(
        &emu,
        "POST",
        "/open-apis/auth/v3/tenant_access_token/internal",
        &creds,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let sent = names(&head);
    assert!(sent.contains(&"X-Tt-Logid"), "{head}");
    assert!(sent.contains(&"Content-Type"), "{head}");
    assert!(!sent.contains(&"x-tt-logid"), "{head}");
    assert!(body.contains("tenant_access_token"), "{body}");

    // An error answer carries the same spelling.
    let (head, _) = raw(&emu, "POST", "/open-apis/im/v1/messages", "{}").await;
    assert!(names(&head).contains(&"X-Tt-Logid"), "{head}");

    // The gateway's rate-limit headers (lark-api.md §4), spelled as the official CLI reads them.
    emu.push_fault(
        FaultTarget::Token,
        Fault::Code {
            http_status: 429,
            code: 99991400,
            msg: "request trigger frequency limit".into(),
            ratelimit_reset_secs: Some(3),
        },
    );
    let (head, _) = raw(
        &emu,
        "POST",
        "/open-apis/auth/v3/tenant_access_token/internal",
        &creds,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    let sent = names(&head);
    assert!(sent.contains(&"X-Ogw-Ratelimit-Limit"), "{head}");
    assert!(sent.contains(&"X-Ogw-Ratelimit-Reset"), "{head}");
    emu.shutdown().await;
}
