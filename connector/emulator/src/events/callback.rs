//! Events and card callbacks over HTTP: POSTs to the app's request URL, encrypted and signed as
//! Lark does it (lark-api.md §9, §15.1; lifecycle §2.2–§2.5, §3.1, §3.3, §6 items 7–8), the
//! `url_verification` challenge, and requests made wrong on purpose.
//!
//! Why: a receiver of HTTP callbacks is judged by what it does with what arrives: decrypting
//! `{"encrypt":…}`, checking `X-Lark-Signature` over the raw body, the Verification Token and the
//! timestamp's age, answering the challenge within 1 s and a click within 3 s. This module makes
//! those requests (and wrong ones, [`Tamper`]); the retry schedule (events only), the judging of
//! a click's answer and the bookkeeping are the long connection's (`delivery.rs`, `answer.rs`,
//! `hub.rs`), so a test reads [`super::PushedEvent`]s either way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// `X-Lark-Request-Timestamp`: Unix seconds, as a string (lifecycle §2.2: 10-digit seconds).
pub const HEADER_TIMESTAMP: &str = "X-Lark-Request-Timestamp";
/// `X-Lark-Request-Nonce`: random per request.
pub const HEADER_NONCE: &str = "X-Lark-Request-Nonce";
/// `X-Lark-Signature`: [`signature`] of the request (only with an Encrypt Key, or when
/// [`Tamper::Signature`] asks for a wrong one).
pub const HEADER_SIGNATURE: &str = "X-Lark-Signature";

/// The IV [`CallbackConfig::deterministic_iv`] uses: `000102…0f`, the one of the documented test
/// vector (lifecycle §2.4 #4).
pub const DETERMINISTIC_IV: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// The `header.token` a [`Tamper::Token`] request carries instead of the Verification Token.
pub const WRONG_TOKEN: &str = "emulator_wrong_verification_token";

/// How old a [`Tamper::StaleTimestamp`] request's timestamp is: 10 minutes.
pub const STALE_BY: Duration = Duration::from_secs(600);

/// How long the `url_verification` challenge waits for its answer (lark-api.md §9: 1 s).
pub const CHALLENGE_DEADLINE: Duration = Duration::from_secs(1);

/// Lark's TCP connect timeout for event requests (lifecycle §3.3: 2 s of the 3 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP delivery of events and card callbacks; [`crate::EmulatorConfig::callbacks`].
///
/// With `url` unset (the default) events go over the long connection; set (here or later with
/// [`crate::EmulatorHandle::set_callback_url`], since a test learns its receiver's port only
/// after binding it), every delivery attempt is a POST there instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackConfig {
    /// The app's request URL, e.g. `http://127.0.0.1:8080/lark/callback`.
    pub url: Option<String>,
    /// The app's Encrypt Key: with one, bodies are `{"encrypt":…}` and requests are signed.
    pub encrypt_key: Option<String>,
    /// The app's Verification Token: `header.token` of every event, `token` of the challenge.
    /// Default [`super::VERIFICATION_TOKEN`].
    pub verification_token: String,
    /// Encrypt with [`DETERMINISTIC_IV`] instead of a random IV, so a test can compare bodies.
    pub deterministic_iv: bool,
    /// Requests made wrong on purpose, one per HTTP delivery attempt, first first (more can be
    /// queued with [`crate::EmulatorHandle::tamper_next`]).
    pub tamper: Vec<Tamper>,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        Self {
            url: None,
            encrypt_key: None,
            verification_token: super::VERIFICATION_TOKEN.to_string(),
            deterministic_iv: false,
            tamper: Vec::new(),
        }
    }
}

/// One deliberately wrong HTTP request, for testing a receiver's checks. A receiver that refuses
/// it fails that attempt; an event's redelivery (per the retry schedule) is correct again, as
/// Lark's would be; a card callback has none (the user sees 200671). JSON: `"signature"`, `"token"`, `"stale"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tamper {
    /// `X-Lark-Signature` that does not match (sent even without an Encrypt Key).
    Signature,
    /// `header.token` = [`WRONG_TOKEN`] (inside the encryption when there is an Encrypt Key).
    Token,
    /// `X-Lark-Request-Timestamp` [`STALE_BY`] in the past (the signature matches it).
    #[serde(rename = "stale")]
    StaleTimestamp,
}

/// Why a `url_verification` challenge failed ([`crate::EmulatorHandle::verify_url`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// Neither a URL was given nor one configured.
    #[error("no callback URL given or configured")]
    NoUrl,
    /// The emulator runs outside a tokio runtime or could not build its HTTP client.
    #[error("no HTTP client: {0}")]
    NoClient(String),
    /// Connecting or sending failed.
    #[error("request failed: {0}")]
    Request(String),
    /// No complete answer within [`CHALLENGE_DEADLINE`].
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An HTTP status other than 200.
    #[error("HTTP status {status}, body {body:?}")]
    Status {
        /// The status.
        status: u16,
        /// The body, lossily as text.
        body: String,
    },
    /// HTTP 200 without `{"challenge":"<the one sent>"}`.
    #[error("expected {{\"challenge\":{expected:?}}}, got {body:?}")]
    WrongEcho {
        /// The challenge sent.
        expected: String,
        /// The body received, lossily as text.
        body: String,
    },
}

/// The AES-256 key: SHA-256 of the Encrypt Key's UTF-8 bytes (lifecycle §2.3).
pub fn aes_key(encrypt_key: &str) -> [u8; 32] {
    Sha256::digest(encrypt_key.as_bytes()).into()
}

/// `base64(iv ‖ AES-256-CBC-PKCS#7(key = SHA-256(encrypt_key), iv, plaintext))`: the `encrypt`
/// field of an encrypted body (lifecycle §2.3; vector §2.4 #4).
pub fn encrypt(encrypt_key: &str, iv: [u8; 16], plaintext: &[u8]) -> String {
    let key = aes_key(encrypt_key);
    let cipher = cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    let mut buf = Vec::with_capacity(16 + cipher.len());
    buf.extend_from_slice(&iv);
    buf.extend_from_slice(&cipher);
    base64::engine::general_purpose::STANDARD.encode(buf)
}

/// `lowercase_hex(SHA-256(timestamp ‖ nonce ‖ encrypt_key ‖ body))`: `X-Lark-Signature`
/// (lifecycle §2.3; vector §2.4 #5), over the body's bytes as sent.
pub fn signature(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(timestamp.as_bytes());
    h.update(nonce.as_bytes());
    h.update(encrypt_key.as_bytes());
    h.update(body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// One request as it goes on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// Build the POST of `plaintext` (an event JSON or the challenge) under `config`, made wrong as
/// `tamper` says. `signed`: add `X-Lark-Signature` (events with an Encrypt Key; not the
/// challenge, which the SDKs do not check).
pub(crate) fn request(
    config: &CallbackConfig,
    mut plaintext: Value,
    tamper: Option<Tamper>,
    signed: bool,
) -> Request {
    if tamper == Some(Tamper::Token) {
        if let Some(h) = plaintext.get_mut("header").and_then(Value::as_object_mut) {
            h.insert("token".into(), json!(WRONG_TOKEN));
        } else if let Some(o) = plaintext.as_object_mut() {
            o.insert("token".into(), json!(WRONG_TOKEN));
        }
    }
    let body = match &config.encrypt_key {
        Some(key) => {
            let iv = if config.deterministic_iv {
                DETERMINISTIC_IV
            } else {
                rand::random()
            };
            let encrypted = encrypt(key, iv, plaintext.to_string().as_bytes());
            json!({ "encrypt": encrypted }).to_string().into_bytes()
        }
        None => plaintext.to_string().into_bytes(),
    };
    let mut now = unix_seconds();
    if tamper == Some(Tamper::StaleTimestamp) {
        now = now.saturating_sub(STALE_BY.as_secs());
    }
    let timestamp = now.to_string();
    let nonce = format!("{:016x}", rand::random::<u64>());
    let mut headers = vec![
        (
            "Content-Type",
            "application/json; charset=utf-8".to_string(),
        ),
        (HEADER_TIMESTAMP, timestamp.clone()),
        (HEADER_NONCE, nonce.clone()),
    ];
    let key = config.encrypt_key.as_deref().unwrap_or_default();
    if tamper == Some(Tamper::Signature) {
        // The right computation over a body that differs by one byte: well-formed, wrong.
        let mut other = body.clone();
        other.push(b' ');
        headers.push((HEADER_SIGNATURE, signature(&timestamp, &nonce, key, &other)));
    } else if signed && config.encrypt_key.is_some() {
        headers.push((HEADER_SIGNATURE, signature(&timestamp, &nonce, key, &body)));
    }
    Request { body, headers }
}

/// The `url_verification` body (lark-api.md §9), with a fresh challenge; (body, challenge).
pub(crate) fn challenge(token: &str) -> (Value, String) {
    let challenge = format!("{:032x}", rand::random::<u128>());
    let body = json!({ "challenge": challenge, "token": token, "type": "url_verification" });
    (body, challenge)
}

/// Wall-clock Unix seconds (real time: Lark's requests carry the real time, not the emulator's
/// message clock).
fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What an HTTP attempt's answer means for the record, as `ack_data` does for the long
/// connection: the body as JSON, a JSON string when it is not JSON, `None` when empty.
pub(crate) fn answer_data(body: &[u8]) -> Option<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(
        serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned())),
    )
}

/// POST the challenge to `url` and check the echo within [`CHALLENGE_DEADLINE`].
pub(crate) async fn verify(
    client: &reqwest::Client,
    config: &CallbackConfig,
    url: &str,
) -> Result<String, VerifyError> {
    let (body, expected) = challenge(&config.verification_token);
    let req = request(config, body, None, false);
    let send = async {
        let resp = post(client, url, &req)
            .send()
            .await
            .map_err(|e| VerifyError::Request(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| VerifyError::Request(e.to_string()))?;
        Ok::<_, VerifyError>((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(CHALLENGE_DEADLINE, send)
        .await
        .map_err(|_| VerifyError::Timeout(CHALLENGE_DEADLINE))??;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if status != 200 {
        return Err(VerifyError::Status { status, body: text });
    }
    let echoed = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
        v.get("challenge")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    if echoed.as_deref() != Some(expected.as_str()) {
        return Err(VerifyError::WrongEcho {
            expected,
            body: text,
        });
    }
    Ok(expected)
}

/// The reqwest request for `req`.
pub(crate) fn post(client: &reqwest::Client, url: &str, req: &Request) -> reqwest::RequestBuilder {
    let mut b = client.post(url).body(req.body.clone());
    for (name, value) in &req.headers {
        b = b.header(*name, value);
    }
    b
}

/// The client every HTTP delivery uses: Lark's 2 s connect timeout, no redirects (lifecycle §2.5:
/// no 3xx), no proxy from the environment (the receiver is local).
pub(crate) fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_tamper_replaces_the_header_token_or_the_challenge_token() {
        let config = CallbackConfig::default();
        let event = json!({"header": {"token": "t", "event_id": "e"}});
        let r = request(&config, event, Some(Tamper::Token), true);
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["header"]["token"], WRONG_TOKEN);
        let r = request(&config, json!({"token": "t"}), Some(Tamper::Token), true);
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["token"], WRONG_TOKEN);
    }

    #[test]
    fn answers_become_data() {
        assert_eq!(answer_data(b""), None);
        assert_eq!(answer_data(b"{}"), Some(json!({})));
        assert_eq!(answer_data(b"ok"), Some(json!("ok")));
    }
}
