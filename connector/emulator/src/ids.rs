//! Identifier and clock helpers: tokens, message ids, log ids, wall-clock milliseconds.
//!
//! Real ids are opaque, so only the documented prefixes matter to clients (`t-` tokens §1.1,
//! `om_` messages and `oc_` chats §2.1); the rest is random hex, long enough never to collide
//! within one emulator run.

use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// `t-` + 40 hex chars (§1.1: tenant tokens must start with `t-`).
pub fn tenant_token() -> String {
    format!("t-{}", random_hex(20))
}

/// `om_` + 32 hex chars (§2.1).
pub fn message_id() -> String {
    format!("om_{}", random_hex(16))
}

/// A log id in the style of `X-Tt-Logid`: a UTC timestamp followed by random hex (§2.3).
pub fn log_id() -> String {
    format!("{}{}", now_ms(), random_hex(10).to_uppercase())
}

/// The `oc_` id of the p2p conversation between an app's bot and a user. Derived, not random,
/// so every send to the same user reports the same `chat_id` (§2.3: the response carries the
/// conversation id, an `oc_` id even for an open_id recipient).
pub fn p2p_chat_id(app_id: &str, open_id: &str) -> String {
    let digest = Sha256::digest(format!("p2p\n{app_id}\n{open_id}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("oc_{hex}")
}

/// The `omt_` thread id of the thread rooted at message `root_id` (§2.1 shows `omt_…`).
/// Derived, so every thread reply under one root reports the same thread.
pub fn thread_id(root_id: &str) -> String {
    let digest = Sha256::digest(format!("thread\n{root_id}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("omt_{hex}")
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    (now_ms() / 1000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_uniqueness() {
        assert!(tenant_token().starts_with("t-"));
        assert_ne!(message_id(), message_id());
        assert_eq!(
            p2p_chat_id("cli_a", "ou_x"),
            p2p_chat_id("cli_a", "ou_x"),
            "p2p ids are stable"
        );
        assert_ne!(p2p_chat_id("cli_a", "ou_x"), p2p_chat_id("cli_a", "ou_y"));
    }
}
