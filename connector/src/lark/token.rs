//! The tenant_access_token cache (lark-api.md §1).
//!
//! Four rules, each answering a failure users of other connectors hit (peers.md §3.1, §4.4):
//! refresh *before* Lark's `expire` minus a margin (the Go SDK uses 3 min, §1.3); one fetch at a
//! time however many senders wait (the Node SDK stampedes, §1.3); evict on a token-invalid answer
//! instead of reusing the stale token (the Go SDK's bug, §1.6); one cache per app, shared by
//! every sender of the process.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde_json::json;

use super::classify::{ErrorClass, LarkError};
use super::http::read_response;
use crate::secret::Secret;

#[derive(Clone)]
struct Cached {
    token: Secret,
    refresh_at: Instant,
}

pub struct TokenCache {
    http: reqwest::Client,
    url: String,
    app_id: String,
    app_secret: Secret,
    margin: Duration,
    cached: RwLock<Option<Cached>>,
    /// Held while one task fetches; the others wait on it and then read the fresh token.
    fetch: tokio::sync::Mutex<()>,
    fetches: std::sync::atomic::AtomicU64,
}

impl TokenCache {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        app_id: String,
        app_secret: Secret,
        margin: Duration,
    ) -> Self {
        TokenCache {
            http,
            url: format!("{base_url}/open-apis/auth/v3/tenant_access_token/internal"),
            app_id,
            app_secret,
            margin,
            cached: RwLock::new(None),
            fetch: tokio::sync::Mutex::new(()),
            fetches: Default::default(),
        }
    }

    fn fresh(&self) -> Option<Secret> {
        let guard = self.cached.read().ok()?;
        guard
            .as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| c.token.clone())
    }

    /// A valid token, fetched only when the cached one is missing or due for refresh.
    pub async fn get(&self) -> Result<Secret, LarkError> {
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let _single_flight = self.fetch.lock().await;
        if let Some(t) = self.fresh() {
            return Ok(t); // another task fetched while we waited
        }
        let (token, expire) = self.fetch_token().await?;
        // Lark's expire is at most 2 h; a margin larger than the lifetime would refetch on every
        // call, so never refresh earlier than half-way through.
        let lifetime = Duration::from_secs(expire);
        let refresh_in = lifetime.saturating_sub(self.margin).max(lifetime / 2);
        if let Ok(mut guard) = self.cached.write() {
            *guard = Some(Cached {
                token: token.clone(),
                refresh_at: Instant::now() + refresh_in,
            });
        }
        Ok(token)
    }

    /// Drops `bad` from the cache if it is still the cached token (a concurrent sender may already
    /// have replaced it, and that fresh token must survive).
    pub fn evict(&self, bad: &Secret) {
        if let Ok(mut guard) = self.cached.write() {
            if guard.as_ref().is_some_and(|c| &c.token == bad) {
                *guard = None;
            }
        }
    }

    /// Whether a token is cached and not yet due for refresh (for `/readyz`).
    pub fn has_valid_token(&self) -> bool {
        self.fresh().is_some()
    }

    /// How many times a token was fetched from Lark (for tests and metrics).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn fetch_token(&self) -> Result<(Secret, u64), LarkError> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::telemetry::token_refresh();
        let req = self.http.post(&self.url).json(&json!({
            "app_id": self.app_id,
            "app_secret": self.app_secret.expose(),
        }));
        let (body, log_id) = read_response(req).await?;
        // §1.1: the success body is flat: {"code":0,"tenant_access_token":"t-…","expire":7200}.
        let token = body.get("tenant_access_token").and_then(|t| t.as_str());
        let expire = body.get("expire").and_then(|e| e.as_u64());
        match (token, expire) {
            (Some(t), Some(e)) if !t.is_empty() => Ok((Secret::new(t), e)),
            _ => Err(LarkError {
                http_status: Some(200),
                code: Some(0),
                log_id,
                ..LarkError::local(
                    ErrorClass::Backoff,
                    "token endpoint answered code 0 without tenant_access_token/expire",
                )
            }),
        }
    }
}
