//! The `events` line of `lark-sink check` (with `lark.events.topic`), by `lark.events.mode`:
//!
//! - `websocket`: the long connection's endpoint gives the app a WebSocket URL, i.e. the
//!   credentials are accepted for it. Nothing is dialled: a connection would take one of the app's
//!   50 and could be handed an event this check cannot answer.
//! - `http`: a **signed self-test**. The check makes two requests exactly as Lark makes them
//!   (docs/lark-api.md §15.1), encrypted with `lark.events.encrypt.key`, carrying
//!   `lark.events.verification.token`, timestamped and signed: the `url_verification` challenge the
//!   developer console sends when the request URL is saved, and a self-test event that must pass
//!   every check an event passes. A connector listening at `lark.events.listener` answers both
//!   (the self-test with its nonce, never written to Kafka). When nothing listens there, the check
//!   listens on that address itself with the connector's own verification and tests that. What it
//!   cannot see is the public side: whether the URL saved in the console reaches the listener.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde_json::{json, Value};

use super::{fail, finding, warn, CheckOptions, Finding, Status};
use crate::config::{ConnectorConfig, EventsMode, HttpEvents};
use crate::lark::events::callback::{encrypt, SelfTest};
use crate::lark::events::client::{ConnectError, LongConnection};

/// The line, for the configured mode.
pub(super) async fn check_events(cfg: &ConnectorConfig, opts: &CheckOptions) -> Finding {
    match cfg.events.as_ref().map(|e| &e.mode) {
        Some(EventsMode::Http(http)) => self_test(cfg, http, opts).await,
        _ => long_connection(cfg, opts).await,
    }
}

/// Whether the line needs a tenant token first (only the long connection's does).
pub(super) fn needs_token(cfg: &ConnectorConfig) -> bool {
    !matches!(
        cfg.events.as_ref().map(|e| &e.mode),
        Some(EventsMode::Http(_))
    )
}

async fn long_connection(cfg: &ConnectorConfig, opts: &CheckOptions) -> Finding {
    let lark = super::lark::with_timeout(cfg, opts);
    let connection = LongConnection::new(
        &lark.base_url,
        &lark.app_id,
        lark.app_secret.clone(),
        lark.request_timeout,
        &lark.tls_ca,
    );
    let answer = match connection {
        Ok(conn) => conn.endpoint().await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(_) => finding(
            "events",
            Status::Ok,
            "the long connection's endpoint gave the app a WebSocket URL (events over the long connection)",
        ),
        Err(ConnectError::Terminal(why)) => fail(
            "events",
            why,
            "the app's credentials are refused for the long connection: check lark.app.id and lark.app.secret, and that it is a self-built app (only those may use the long connection)",
        ),
        Err(ConnectError::Retryable(why)) => warn(
            "events",
            format!("{why} (Lark may be busy or unreachable; the connector keeps trying)"),
        ),
    }
}

/// One answer of the listener.
struct Reply {
    status: u16,
    body: Value,
}

/// Both requests and what came back.
struct Exchange {
    challenge: String,
    challenge_reply: Reply,
    nonce: String,
    self_test_reply: Reply,
}

/// The http mode's signed self-test (module doc).
async fn self_test(cfg: &ConnectorConfig, http: &HttpEvents, opts: &CheckOptions) -> Finding {
    let client = match crate::lark::http::http_client(opts.timeout, &cfg.lark.tls_ca) {
        Ok(client) => client,
        Err(e) => return super::lark::no_http_client("events", &e),
    };
    let at = http.listener;
    if at.port() == 0 {
        return stand_in(&client, cfg, http).await; // a random port: nothing to find there
    }
    match exchange(&client, cfg, http, reachable(at)).await {
        Err(e) if e.is_connect() => stand_in(&client, cfg, http).await,
        Err(e) => fail(
            "events",
            format!("the listener at {at} did not answer: {e}"),
            "lark.events.listener must be this connector's own address",
        ),
        Ok(x) => judge(&x, http).unwrap_or_else(|| {
            finding(
                "events",
                Status::Ok,
                format!("the connector listening on {at}{} verified a signed self-test and answered the challenge (encrypted, signed, token and timestamp checked); Lark reaches it if the app's request URL leads there", http.path),
            )
        }),
    }
}

/// Nothing listens at the address: listen there with the connector's verification, test that.
async fn stand_in(client: &reqwest::Client, cfg: &ConnectorConfig, http: &HttpEvents) -> Finding {
    let at = http.listener;
    let listener = match tokio::net::TcpListener::bind(at).await {
        Ok(l) => l,
        Err(e) => {
            return fail(
                "events",
                format!("cannot listen on {at}: {e}"),
                "lark.events.listener must be an address of this host with a free port",
            )
        }
    };
    let local = listener.local_addr().unwrap_or(at);
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = {
        let (http, stop) = (http.clone(), stop.clone());
        tokio::spawn(
            async move { crate::inbound::http::serve_self_test(listener, &http, stop).await },
        )
    };
    let exchanged = exchange(client, cfg, http, reachable(local)).await;
    stop.cancel();
    let _ = serving.await;
    match exchanged {
        Err(e) => fail(
            "events",
            format!("the check's own listener on {local} did not answer: {e}"),
            "a firewall or proxy on this host may stand in the way (HTTP_PROXY?)",
        ),
        Ok(x) => judge(&x, http).unwrap_or_else(|| {
            finding(
                "events",
                Status::Ok,
                format!("no connector listens on {at}: the check listened there itself, and a signed self-test and the challenge passed this configuration's verification; Lark reaches the connector if the app's request URL leads there"),
            )
        }),
    }
}

/// The challenge, then the self-test, as Lark makes them.
async fn exchange(
    client: &reqwest::Client,
    cfg: &ConnectorConfig,
    http: &HttpEvents,
    to: SocketAddr,
) -> Result<Exchange, reqwest::Error> {
    let url = format!("http://{to}{}", http.path);
    let key = http.encrypt_key.as_ref().map(|k| k.expose());
    let token = http.verification_token.as_ref().map(|t| t.expose());
    let (challenge, nonce) = (random_hex(), random_hex());
    let plain = json!({"challenge": challenge, "token": token.unwrap_or_default(), "type": "url_verification"});
    let body = match key {
        Some(k) => json!({"encrypt": encrypt(k, rand::random(), plain.to_string().as_bytes())}),
        None => plain,
    };
    let challenge_reply = reply(client.post(&url).json(&body)).await?;
    let t = SelfTest::new(
        key,
        token,
        &cfg.lark.app_id,
        crate::inbound::http::now_s(),
        &nonce,
        rand::random(),
    );
    let mut request = client
        .post(&url)
        .header("content-type", "application/json")
        .header("x-lark-request-timestamp", &t.timestamp)
        .header("x-lark-request-nonce", &t.nonce);
    if let Some(signature) = &t.signature {
        request = request.header("x-lark-signature", signature);
    }
    let self_test_reply = reply(request.body(t.body)).await?;
    Ok(Exchange {
        challenge,
        challenge_reply,
        nonce,
        self_test_reply,
    })
}

async fn reply(request: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok(Reply { status, body })
}

/// The failure the answers show, if any.
fn judge(x: &Exchange, http: &HttpEvents) -> Option<Finding> {
    let at = format!("{}{}", http.listener, http.path);
    let other = "the connector listening there has another lark.events.encrypt.key or lark.events.verification.token than this file";
    let not_ours = "lark.events.listener and lark.events.path must be this connector's own: another service (or path) answered";
    let says = |r: &Reply| match r.body.get("msg").and_then(Value::as_str) {
        Some(msg) => msg.to_string(),
        None => r.body.to_string(),
    };
    let c = &x.challenge_reply;
    if c.body.get("challenge").and_then(Value::as_str) != Some(&x.challenge) {
        let (detail, fix) = match c.status {
            401 => (format!("{at} refused the challenge: {}", says(c)), other),
            s => (
                format!("{at} answered the challenge with HTTP {s}: {}", says(c)),
                not_ours,
            ),
        };
        return Some(fail("events", detail, fix));
    }
    let t = &x.self_test_reply;
    if t.body.get("self_test").and_then(Value::as_str) != Some(&x.nonce) {
        let detail = format!(
            "{at} answered the signed self-test with HTTP {}: {}",
            t.status,
            says(t)
        );
        let fix = match t.status {
            401 => "the signature or the timestamp was refused: the connector listening there has another lark.events.encrypt.key, or the clocks differ by more than lark.events.max.age.ms",
            _ => not_ours,
        };
        return Some(fail("events", detail, fix));
    }
    None
}

/// Where to reach a listener bound to `at` (a wildcard address is reached on loopback).
fn reachable(at: SocketAddr) -> SocketAddr {
    let ip = match at.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, at.port())
}

fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}
