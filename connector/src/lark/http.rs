//! The HTTP transport under every Lark call: the one client builder, sending a request and
//! reading its answer, and the only code in `lark` that reads reqwest's errors.
//!
//! `read_response` sends a request and hands the answer to [`read_answer`] (pure, in
//! [`super::classify`]); a request that got no answer becomes a transient [`LarkError`], except a
//! rejected server certificate, which never fixes itself. The token cache and the client both
//! sit on this file, so neither needs the other to reach Lark.

use std::time::Duration;

use serde_json::Value;

use super::classify::{read_answer, Answer, ErrorClass, LarkError};

/// The HTTP client for Lark (the app's calls, the token, webhooks, `lark-sink check`): at most
/// `timeout` per request and 5 s to connect, and lark-sink's user agent.
///
/// TLS: reqwest's default stack (rustls, aws-lc-rs) verifies every certificate against the
/// system's roots (rustls-platform-verifier); `tls_ca` (`lark.tls.ca.file`) adds roots, never
/// replaces or disables verification.
pub fn http_client(
    timeout: Duration,
    tls_ca: &[reqwest::Certificate],
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .tls_certs_merge(tls_ca.iter().cloned())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("lark-sink/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Sends a request and reads a Lark answer: `Ok` only for a 2xx with `code` 0.
pub(crate) async fn read_response(
    req: reqwest::RequestBuilder,
) -> Result<(Value, Option<String>), LarkError> {
    let resp = req.send().await.map_err(|e| {
        crate::telemetry::lark_response("transport");
        // A rejected certificate will be rejected again: a configuration error, not retried.
        if let Some(why) = tls_rejection(&e) {
            let host = e.url().and_then(|u| u.host_str()).unwrap_or("the server");
            return LarkError::local(
                ErrorClass::Fatal,
                format!(
                    "TLS certificate of {host} rejected ({why}); if it is signed by a private CA \
                     or a TLS-intercepting proxy, set lark.tls.ca.file to that CA's PEM certificate"
                ),
            );
        }
        // No status: connection refused, reset, timeout. All transient (R-bo).
        let what = if e.is_timeout() {
            "request timed out"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        LarkError::transport(format!("{what}: {}", without_url(&e)))
    })?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let log_id = header("x-tt-logid").or_else(|| header("x-request-id"));
    let ratelimit_reset = header("x-ogw-ratelimit-reset");
    let text = resp.text().await.map_err(|e| {
        LarkError::transport(format!("reading the response failed: {}", without_url(&e)))
    })?;
    let result = read_answer(Answer {
        status,
        body: &text,
        log_id: log_id.as_deref(),
        ratelimit_reset: ratelimit_reset.as_deref(),
    });
    match &result {
        Ok(_) => crate::telemetry::lark_response("0"),
        Err(LarkError { code: Some(c), .. }) => crate::telemetry::lark_response(&c.to_string()),
        Err(_) => crate::telemetry::lark_response(&format!("http_{status}")),
    }
    result
}

/// The reason when a request failed because the server's certificate was rejected (unknown
/// issuer, wrong name, expired, ...). rustls reports a `rustls::Error` a few sources down
/// reqwest's error, inside the `std::io::Error` of the TLS stream and possibly boxed again on the
/// way up, so each link is tried as the rustls error, as an `io::Error` wrapping it, and by the
/// message rustls gives that error ("invalid peer certificate: ...").
fn tls_rejection(e: &reqwest::Error) -> Option<String> {
    fn rejected(t: &rustls::Error) -> bool {
        matches!(
            t,
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
        )
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>().filter(|t| rejected(t)) {
            return Some(t.to_string());
        }
        if let Some(t) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .filter(|t| rejected(t))
        {
            return Some(t.to_string());
        }
        let text = err.to_string();
        if let Some(at) = text.find("invalid peer certificate") {
            return Some(text[at..].to_string());
        }
        cur = err.source();
    }
    None
}

/// reqwest errors print the URL; ours carry no secret, but keep messages short and stable.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(&format!(" for url ({url})"), "");
    }
    s
}
