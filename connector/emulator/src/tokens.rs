//! The tenant_access_token store (lark-api.md §1.2, §1.5).
//!
//! Lark's re-issue rule is what trips token caches: asking again while the current token has
//! ≥ 30 min left returns the *same* token (with its remaining lifetime); with < 30 min left a
//! *new* token is minted and the old one stays valid until it expires. The emulator models
//! exactly that, generalised to a configurable TTL as "reuse while ≥ TTL/4 remains" (7200 s / 4
//! = 30 min, the documented number), so short test TTLs still exercise both branches.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::ids;

#[derive(Debug)]
struct Entry {
    app_id: String,
    expires_at: Instant,
}

/// What the token endpoint hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub token: String,
    /// Remaining lifetime in whole seconds (§1.2 recommendation for re-returned tokens).
    pub expire_secs: u64,
    /// `false` when an existing token was returned again.
    pub fresh: bool,
}

#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    tokens: HashMap<String, Entry>,
    /// The most recently minted token per app: the one the re-issue rule looks at.
    latest: HashMap<String, String>,
    /// Every token minted, newest last (capped at [`MINTED_KEPT`]), kept through revocation and
    /// expiry so tests can check that none of them leaked anywhere.
    minted: std::collections::VecDeque<String>,
}

/// How many minted tokens [`TokenStore::minted`] remembers.
const MINTED_KEPT: usize = 4096;

/// Expired tokens are swept once the map grows past this; they are invalid either way.
const SWEEP_ABOVE: usize = 1024;

impl TokenStore {
    pub fn issue(&mut self, app_id: &str, now: Instant, ttl: Duration) -> Issued {
        if let Some(entry) = self
            .latest
            .get(app_id)
            .and_then(|t| self.tokens.get(t).map(|e| (t, e)))
        {
            let (token, e) = entry;
            let remaining = e.expires_at.saturating_duration_since(now);
            if remaining >= ttl / 4 && !remaining.is_zero() {
                return Issued {
                    token: token.clone(),
                    expire_secs: remaining.as_secs(),
                    fresh: false,
                };
            }
        }
        if self.tokens.len() > SWEEP_ABOVE {
            self.tokens.retain(|_, e| e.expires_at > now);
        }
        let token = ids::tenant_token();
        self.tokens.insert(
            token.clone(),
            Entry {
                app_id: app_id.to_string(),
                expires_at: now + ttl,
            },
        );
        self.latest.insert(app_id.to_string(), token.clone());
        if self.minted.len() == MINTED_KEPT {
            self.minted.pop_front();
        }
        self.minted.push_back(token.clone());
        Issued {
            token,
            expire_secs: ttl.as_secs(),
            fresh: true,
        }
    }

    /// The app a token belongs to, if the token is known and not expired.
    pub fn app_for(&self, token: &str, now: Instant) -> Option<&str> {
        self.tokens
            .get(token)
            .filter(|e| e.expires_at > now)
            .map(|e| e.app_id.as_str())
    }

    /// Every token minted so far (the last 4096), valid or not.
    pub fn minted(&self) -> Vec<String> {
        self.minted.iter().cloned().collect()
    }

    /// Invalidate every token (the next token request mints a fresh one).
    pub fn revoke_all(&mut self) {
        self.tokens.clear();
        self.latest.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(7200);

    #[test]
    fn reissue_rule() {
        let mut s = TokenStore::default();
        let t0 = Instant::now();
        let a = s.issue("cli_a", t0, TTL);
        assert!(a.fresh);
        assert_eq!(a.expire_secs, 7200);

        // 1 h later: 1 h left (≥ 30 min) → same token, remaining lifetime.
        let b = s.issue("cli_a", t0 + Duration::from_secs(3600), TTL);
        assert_eq!(b.token, a.token);
        assert!(!b.fresh);
        assert_eq!(b.expire_secs, 3600);

        // 1 h 40 min later: 20 min left → new token; both valid.
        let t2 = t0 + Duration::from_secs(6000);
        let c = s.issue("cli_a", t2, TTL);
        assert_ne!(c.token, a.token);
        assert_eq!(s.app_for(&a.token, t2), Some("cli_a"));
        assert_eq!(s.app_for(&c.token, t2), Some("cli_a"));

        // After the first token's expiry only the new one works.
        let t3 = t0 + TTL;
        assert_eq!(s.app_for(&a.token, t3), None);
        assert_eq!(s.app_for(&c.token, t3), Some("cli_a"));
    }

    #[test]
    fn apps_have_separate_tokens_and_revoke_clears_all() {
        let mut s = TokenStore::default();
        let t0 = Instant::now();
        let a = s.issue("cli_a", t0, TTL);
        let b = s.issue("cli_b", t0, TTL);
        assert_ne!(a.token, b.token);
        s.revoke_all();
        assert_eq!(s.app_for(&a.token, t0), None);
        assert!(s.issue("cli_a", t0, TTL).fresh);
    }
}
