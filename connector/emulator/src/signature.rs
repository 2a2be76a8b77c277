//! Custom-bot webhook signatures (lark-api.md §8).
//!
//! `sign = Base64(HMAC-SHA256(key = timestamp + "\n" + secret, message = empty))`: the secret
//! is in the *key* and the message is empty, which surprises people used to signing the body,
//! hence a public helper clients and tests can share.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a webhook `timestamp` may be from the server clock (§8: within one hour).
pub const MAX_SKEW_SECS: i64 = 3600;

/// The `sign` value for `timestamp` (Unix seconds) and `secret`.
pub fn webhook_sign(secret: &str, timestamp: i64) -> String {
    let string_to_sign = format!("{timestamp}\n{secret}");
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here; fall back to an
    // impossible signature rather than panicking if that ever changes.
    match Hmac::<Sha256>::new_from_slice(string_to_sign.as_bytes()) {
        Ok(mac) => base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()),
        Err(_) => String::new(),
    }
}

/// Why a signed webhook request was refused (all map to 19021).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("missing or non-numeric timestamp")]
    BadTimestamp,
    #[error("timestamp {0} s away from server time")]
    Skew(i64),
    #[error("missing sign")]
    MissingSign,
    #[error("sign does not match")]
    Mismatch,
}

/// Check `timestamp` / `sign` (as found in the body) against `secret` at server time `now`.
pub fn verify(
    secret: &str,
    timestamp: Option<&serde_json::Value>,
    sign: Option<&serde_json::Value>,
    now: i64,
) -> Result<(), SignError> {
    // The docs send the timestamp as a string; an integer is accepted too, since it carries
    // the same information and some client libraries serialise it that way.
    let ts = match timestamp {
        Some(serde_json::Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        _ => None,
    }
    .ok_or(SignError::BadTimestamp)?;
    let skew = now.saturating_sub(ts);
    if skew.abs() > MAX_SKEW_SECS {
        return Err(SignError::Skew(skew));
    }
    let sign = sign
        .and_then(serde_json::Value::as_str)
        .ok_or(SignError::MissingSign)?;
    if sign == webhook_sign(secret, ts) {
        Ok(())
    } else {
        Err(SignError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The §8 test vector.
    #[test]
    fn documented_test_vector() {
        assert_eq!(
            webhook_sign("demo", 1599360473),
            "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8="
        );
    }

    #[test]
    fn verify_rules() {
        let now = 1599360473;
        let sign = json!(webhook_sign("demo", now));
        assert_eq!(
            verify("demo", Some(&json!("1599360473")), Some(&sign), now),
            Ok(())
        );
        assert_eq!(
            verify("demo", Some(&json!(1599360473)), Some(&sign), now + 3600),
            Ok(())
        );
        assert_eq!(
            verify("demo", Some(&json!("1599360473")), Some(&sign), now + 3601),
            Err(SignError::Skew(3601))
        );
        assert_eq!(
            verify("other", Some(&json!("1599360473")), Some(&sign), now),
            Err(SignError::Mismatch)
        );
        assert_eq!(
            verify("demo", None, Some(&sign), now),
            Err(SignError::BadTimestamp)
        );
        assert_eq!(
            verify("demo", Some(&json!("1599360473")), None, now),
            Err(SignError::MissingSign)
        );
    }
}
