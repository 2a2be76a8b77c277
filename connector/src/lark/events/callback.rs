//! Signed event callbacks over HTTP (docs/lark-api.md §15.1): what Lark POSTs to an app's request
//! URL, and how lark-sink tells a genuine request from a forged or replayed one before anything
//! reaches Kafka.
//!
//! - With an **Encrypt Key** the body is `{"encrypt":"<base64>"}`: AES-256-CBC, the key the SHA-256
//!   of the Encrypt Key, the first 16 bytes the IV, PKCS#7 padding. The request is signed:
//!   `X-Lark-Signature` = hex SHA-256 of `timestamp ‖ nonce ‖ encrypt_key ‖ raw body`, over the
//!   body's bytes as received (never a re-serialisation).
//! - The **Verification Token** is in the plaintext (`header.token`, or `token` in the challenge):
//!   checked whenever it is configured.
//! - A **timestamp** (`X-Lark-Request-Timestamp`, seconds) further than the allowed age from now is
//!   refused: a captured request cannot be replayed later.
//! - The **`url_verification`** challenge (when the URL is saved in the console) is answered with
//!   its `challenge`, its token checked; the SDKs do not check its signature, nor does lark-sink.
//!
//! - A **self-test** (`lark-sink check`, [`SELF_TEST_EVENT_TYPE`]) is a request made exactly like
//!   Lark's, encrypted, signed, timestamped and carrying the token, whose event type is lark-sink's
//!   own: it passes every check above and is then answered with its nonce instead of being
//!   written. Anyone able to sign one could sign a real event too, so it opens nothing new.
//!
//! Pure: the listener passes the headers, the body and the time.

use std::time::Duration;

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::secret::Secret;

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;

/// The event type of `lark-sink check`'s self-test: no Lark event has it (Lark's are dotted
/// lower-case names of its own products), so it can never shadow a real one.
pub const SELF_TEST_EVENT_TYPE: &str = "lark_sink.self_test";

/// Why a callback request is refused. Each is counted (`lark_sink_events_rejected_total{reason}`)
/// and answered with an HTTP error, so Lark retries a genuine one that failed in transit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("X-Lark-Signature missing or wrong")]
    Signature,
    #[error("verification token missing or wrong")]
    Token,
    #[error("request timestamp missing, unreadable or further than {0:?} from now")]
    Stale(Duration),
    #[error("body cannot be decrypted with the Encrypt Key: {0}")]
    Decrypt(String),
    #[error("encrypted body, but no Encrypt Key is configured (lark.events.encrypt.key)")]
    NoEncryptKey,
    #[error("body is not an event: {0}")]
    Malformed(String),
}

impl Rejected {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Rejected::Signature => "signature",
            Rejected::Token => "token",
            Rejected::Stale(_) => "stale",
            Rejected::Decrypt(_) | Rejected::NoEncryptKey => "decrypt",
            Rejected::Malformed(_) => "malformed",
        }
    }
}

/// What an accepted request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// The `url_verification` challenge: answer `{"challenge": …}`.
    Challenge(String),
    /// An event or card callback: its plaintext JSON.
    Event(Vec<u8>),
    /// `lark-sink check`'s self-test, verified like an event: answer `{"self_test": <nonce>}`.
    SelfTest(String),
}

/// The request headers verification reads (`X-Lark-Request-Timestamp`, `-Nonce`, `-Signature`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Signed<'a> {
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// The app's callback credentials and the allowed clock difference.
#[derive(Debug)]
pub struct Verifier {
    pub encrypt_key: Option<Secret>,
    pub verification_token: Option<Secret>,
    /// How far a request's timestamp may be from now.
    pub max_age: Duration,
}

/// `hex(SHA-256(timestamp ‖ nonce ‖ encrypt_key ‖ body))`.
pub fn signature(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(timestamp.as_bytes());
    h.update(nonce.as_bytes());
    h.update(encrypt_key.as_bytes());
    h.update(body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Decrypts an `encrypt` value with `encrypt_key`.
pub fn decrypt(encrypt_key: &str, encrypt: &str) -> Result<Vec<u8>, Rejected> {
    let fail = |why: &str| Rejected::Decrypt(why.to_string());
    let buf = base64::engine::general_purpose::STANDARD
        .decode(encrypt.trim())
        .map_err(|_| fail("not base64"))?;
    if buf.len() < 32 || buf.len() % 16 != 0 {
        return Err(fail("not an IV and whole AES blocks"));
    }
    let key = Sha256::digest(encrypt_key.as_bytes());
    let (iv, ciphertext) = buf.split_at(16);
    let cipher = Aes256CbcDec::new_from_slices(&key, iv).map_err(|_| fail("key or IV length"))?;
    cipher
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .map_err(|_| fail("bad padding (another Encrypt Key?)"))
}

/// Encrypts `plaintext` as Lark does (the `encrypt` value): AES-256-CBC with the SHA-256 of
/// `encrypt_key`, `iv` first, PKCS#7 padding, base64. The IV must be random for anything but a
/// test vector.
pub fn encrypt(encrypt_key: &str, iv: [u8; 16], plaintext: &[u8]) -> String {
    let key = Sha256::digest(encrypt_key.as_bytes());
    let cipher = Aes256CbcEnc::new(&key, &iv.into());
    let mut buf = iv.to_vec();
    buf.extend(cipher.encrypt_padded_vec_mut::<Pkcs7>(plaintext));
    base64::engine::general_purpose::STANDARD.encode(buf)
}

/// A self-test request, made as Lark makes a callback: the headers (timestamp, nonce and, with an
/// Encrypt Key, the signature) and the body (encrypted with one). `iv` and `nonce` should be
/// random; the answer to expect is `{"self_test": nonce}`.
#[derive(Debug, Clone)]
pub struct SelfTest {
    pub timestamp: String,
    pub nonce: String,
    pub signature: Option<String>,
    pub body: Vec<u8>,
}

impl SelfTest {
    pub fn new(
        encrypt_key: Option<&str>,
        verification_token: Option<&str>,
        app_id: &str,
        now_s: i64,
        nonce: &str,
        iv: [u8; 16],
    ) -> SelfTest {
        let plaintext = serde_json::json!({
            "schema": "2.0",
            "header": {
                "event_id": format!("self-test-{nonce}"),
                "event_type": SELF_TEST_EVENT_TYPE,
                "create_time": (now_s * 1_000_000).to_string(),
                "token": verification_token.unwrap_or_default(),
                "app_id": app_id,
            },
            "event": {"nonce": nonce},
        })
        .to_string();
        let timestamp = now_s.to_string();
        let (body, signature) = match encrypt_key {
            Some(key) => {
                let body = serde_json::json!({"encrypt": encrypt(key, iv, plaintext.as_bytes())})
                    .to_string()
                    .into_bytes();
                let signature = signature(&timestamp, nonce, key, &body);
                (body, Some(signature))
            }
            None => (plaintext.into_bytes(), None),
        };
        SelfTest {
            timestamp,
            nonce: nonce.to_string(),
            signature,
            body,
        }
    }
}

/// Whether two strings are equal, in time that depends on their length only.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Verifier {
    /// Checks and opens one request received at `now_s` (Unix seconds).
    pub fn open(&self, headers: Signed<'_>, body: &[u8], now_s: i64) -> Result<Opened, Rejected> {
        let outer: Value =
            serde_json::from_slice(body).map_err(|e| Rejected::Malformed(e.to_string()))?;
        let encrypted = outer.get("encrypt").and_then(Value::as_str);
        let plaintext = match (encrypted, &self.encrypt_key) {
            (Some(enc), Some(key)) => decrypt(key.expose(), enc)?,
            (Some(_), None) => return Err(Rejected::NoEncryptKey),
            (None, _) => body.to_vec(),
        };
        let event: Value =
            serde_json::from_slice(&plaintext).map_err(|e| Rejected::Malformed(e.to_string()))?;
        let is_challenge = event.get("type").and_then(Value::as_str) == Some("url_verification");
        let token = event
            .pointer("/header/token")
            .or_else(|| event.get("token"))
            .and_then(Value::as_str);
        if let Some(want) = &self.verification_token {
            if !token.is_some_and(|t| same(t, want.expose())) {
                return Err(Rejected::Token);
            }
        }
        if is_challenge {
            let challenge = event.get("challenge").and_then(Value::as_str);
            return challenge
                .map(|c| Opened::Challenge(c.to_string()))
                .ok_or_else(|| Rejected::Malformed("url_verification without a challenge".into()));
        }
        if let Some(key) = &self.encrypt_key {
            let (Some(ts), Some(nonce), Some(sig)) =
                (headers.timestamp, headers.nonce, headers.signature)
            else {
                return Err(Rejected::Signature);
            };
            if !same(
                &signature(ts, nonce, key.expose(), body),
                &sig.to_ascii_lowercase(),
            ) {
                return Err(Rejected::Signature);
            }
        }
        if let Some(ts) = headers.timestamp {
            let fresh = ts
                .trim()
                .parse::<i64>()
                .ok()
                .map(|t| if t > 100_000_000_000 { t / 1000 } else { t })
                .is_some_and(|t| now_s.abs_diff(t) <= self.max_age.as_secs());
            if !fresh {
                return Err(Rejected::Stale(self.max_age));
            }
        } else if self.encrypt_key.is_some() {
            return Err(Rejected::Stale(self.max_age));
        }
        let self_test = (event.pointer("/header/event_type").and_then(Value::as_str)
            == Some(SELF_TEST_EVENT_TYPE))
        .then(|| event.pointer("/event/nonce").and_then(Value::as_str));
        match self_test {
            Some(Some(nonce)) => Ok(Opened::SelfTest(nonce.to_string())),
            Some(None) => Err(Rejected::Malformed("a self-test without a nonce".into())),
            None => Ok(Opened::Event(plaintext)),
        }
    }
}

#[cfg(test)]
#[path = "callback_tests.rs"]
mod tests;
