//! Phone and email → open_id resolution (lark-api.md §5), shared by every receiver queue.
//!
//! `receiveType: "phone"` needs an open_id before the send API accepts it, and so does `email`
//! with `lark.email.resolve=true` (so the per-user rate limit keys on the person, not on one of
//! their addresses). Alert streams address the same few people over and over, often many at
//! once, so a look-up here is:
//!
//! - **cached**: found for `lark.lookup.ttl.ms` (1 h), not found for the shorter
//!   `lark.lookup.negative.ttl.ms` (5 min), so a user added to the app's availability range later
//!   is picked up; the cache holds at most [`LookupConfig::max_entries`] addresses;
//! - **single-flight**: concurrent requests for one address wait for one look-up;
//! - **batched**: look-ups of distinct addresses that start within [`LookupConfig::batch_window`]
//!   (a few ms) of each other go out as one `batch_get_id` call with at most 50 emails and 50
//!   mobiles (§5); a batch with both lists full leaves at once. The contact API has its own
//!   50/s + 1000/min budget (§4), which batching keeps far away.
//!
//! Lark's answer is matched to the request by address, case-insensitively and by digits, never by
//! position: §5 says entries may echo another spelling, come back without `user_id` (unknown, not
//! visible, resigned: all "not found" here), and possibly be left out. A failed call reaches every
//! waiter of its batch with the classified error; the caller's retry loop (`delivery::send`)
//! retries what is retryable. Nothing failed is cached.
//!
//! Calls run on their own spawned task, not on a waiter's: a waiter that gives up (shutdown)
//! never strands the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::address::{canonical_email, canonical_mobile};
use super::classify::{ErrorClass, LarkError};
use super::client::{LarkClient, UserIdEntry};
use crate::telemetry;

/// §5: at most 50 emails and 50 mobiles per `batch_get_id` call.
pub const MAX_PER_LIST: usize = 50;

/// How the directory caches and batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupConfig {
    /// How long a found open_id is reused (`lark.lookup.ttl.ms`). Zero = not cached.
    pub ttl: Duration,
    /// How long "not found" is reused (`lark.lookup.negative.ttl.ms`). Zero = not cached.
    pub negative_ttl: Duration,
    /// How long a batch collects distinct look-ups before it is sent (unless it fills first).
    pub batch_window: Duration,
    /// The most addresses the cache holds; past it, expired entries go first, then arbitrary ones.
    pub max_entries: usize,
    /// Whether `email` receivers are resolved to open_ids (`lark.email.resolve`) rather than
    /// sent with `receive_id_type=email`.
    pub resolve_email: bool,
}

impl Default for LookupConfig {
    fn default() -> Self {
        LookupConfig {
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(300),
            batch_window: Duration::from_millis(5),
            max_entries: 100_000,
            resolve_email: false,
        }
    }
}

/// An address in its canonical form: emails lower-cased, mobiles as `+<digits>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Email(String),
    Mobile(String),
}

impl Key {
    fn kind(&self) -> &'static str {
        match self {
            Key::Email(_) => "email",
            Key::Mobile(_) => "mobile",
        }
    }

    fn value(&self) -> &str {
        match self {
            Key::Email(s) | Key::Mobile(s) => s,
        }
    }
}

/// An email's cache key: the spelling the receiver queues use too ([`canonical_email`]).
fn email_key(email: &str) -> Key {
    Key::Email(canonical_email(email))
}

/// A mobile number's cache key: the spelling the receiver queues use too ([`canonical_mobile`]:
/// `+` and the digits, `+86` for a number without `+`), or `None` when it is not one.
fn mobile_key(mobile: &str) -> Option<Key> {
    canonical_mobile(mobile).map(Key::Mobile)
}

struct Cached {
    open_id: Option<String>,
    until: Instant,
}

type Answer = Result<Option<String>, LarkError>;

/// Distinct addresses waiting for the next `batch_get_id` call.
struct Batch {
    id: u64,
    emails: Vec<String>,
    mobiles: Vec<String>,
}

impl Batch {
    fn has_room_for(&self, key: &Key) -> bool {
        match key {
            Key::Email(_) => self.emails.len() < MAX_PER_LIST,
            Key::Mobile(_) => self.mobiles.len() < MAX_PER_LIST,
        }
    }

    fn is_full(&self) -> bool {
        self.emails.len() >= MAX_PER_LIST && self.mobiles.len() >= MAX_PER_LIST
    }

    fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        let emails = self.emails.iter().cloned().map(Key::Email);
        emails.chain(self.mobiles.iter().cloned().map(Key::Mobile))
    }
}

#[derive(Default)]
struct State {
    cache: HashMap<Key, Cached>,
    /// Addresses being looked up (in the open batch or in a call), with everyone waiting.
    waiting: HashMap<Key, Vec<oneshot::Sender<Answer>>>,
    /// Batches collecting look-ups now. Usually one; another opens when a list of every open
    /// batch is full (e.g. a 51st email while the first batch still has room for mobiles).
    open: Vec<Batch>,
    next_batch: u64,
}

impl State {
    fn remember(&mut self, key: Key, cached: Cached, now: Instant, max_entries: usize) {
        let max_entries = max_entries.max(1);
        if self.cache.len() >= max_entries && !self.cache.contains_key(&key) {
            self.cache.retain(|_, c| c.until > now);
            if self.cache.len() >= max_entries {
                // Still full of live entries: drop a tenth, whichever the map yields first
                // (effectively random). They are simply looked up again when next needed.
                let evict: Vec<Key> = self
                    .cache
                    .keys()
                    .take(max_entries / 10 + 1)
                    .cloned()
                    .collect();
                for k in evict {
                    self.cache.remove(&k);
                }
            }
        }
        self.cache.insert(key, cached);
    }
}

struct Inner {
    client: Arc<LarkClient>,
    cfg: LookupConfig,
    state: Mutex<State>,
    calls: AtomicU64,
}

/// Resolves phones and emails to open_ids; one per connector, shared by all receiver queues.
pub struct UserDirectory {
    inner: Arc<Inner>,
}

impl UserDirectory {
    pub fn new(client: Arc<LarkClient>, cfg: LookupConfig) -> Self {
        UserDirectory {
            inner: Arc::new(Inner {
                client,
                cfg,
                state: Mutex::new(State::default()),
                calls: AtomicU64::new(0),
            }),
        }
    }

    /// Whether `email` receivers are resolved first (`lark.email.resolve`).
    pub fn resolves_email(&self) -> bool {
        self.inner.cfg.resolve_email
    }

    /// `batch_get_id` calls made so far (successful or not).
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// The open_id of the user with this mobile number, or a Record-class error saying the
    /// number is unknown or not visible to the app (or is not a phone number).
    pub async fn open_id_by_mobile(&self, mobile: &str) -> Result<String, LarkError> {
        let key = mobile_key(mobile).ok_or_else(|| {
            record_error(format!(
                "receiver '{mobile}' is not a phone number (digits with an optional leading +<country code>; spaces, dashes, dots and parentheses are ignored)"
            ))
        })?;
        self.open_id(key).await
    }

    /// The open_id of the user with this email address, or a Record-class error saying the
    /// address is unknown or not visible to the app.
    pub async fn open_id_by_email(&self, email: &str) -> Result<String, LarkError> {
        self.open_id(email_key(email)).await
    }

    async fn open_id(&self, key: Key) -> Result<String, LarkError> {
        let answer = {
            let mut st = self.inner.lock();
            let now = Instant::now();
            if let Some(c) = st.cache.get(&key).filter(|c| now < c.until) {
                telemetry::lookup(key.kind(), "hit");
                return found(&key, c.open_id.clone());
            }
            let (tx, rx) = oneshot::channel();
            match st.waiting.get_mut(&key) {
                Some(waiters) => {
                    telemetry::lookup(key.kind(), "shared");
                    waiters.push(tx);
                }
                None => {
                    telemetry::lookup(key.kind(), "miss");
                    st.waiting.insert(key.clone(), vec![tx]);
                    self.inner.enqueue(&mut st, &key);
                }
            }
            rx
        };
        let open_id = answer.await.unwrap_or_else(|_| {
            Err(LarkError::transport(
                "the user look-up was abandoned before Lark answered",
            ))
        })?;
        found(&key, open_id)
    }
}

impl Inner {
    /// The state lock; nothing in it can be left half-updated by a panic, so poison is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `key` to an open batch with room for it (opening one, with its send timer, if there
    /// is none) and sends the batch at once when both its lists are full.
    fn enqueue(self: &Arc<Self>, st: &mut State, key: &Key) {
        let at = match st.open.iter().position(|b| b.has_room_for(key)) {
            Some(at) => at,
            None => {
                let id = st.next_batch;
                st.next_batch += 1;
                st.open.push(Batch {
                    id,
                    emails: Vec::new(),
                    mobiles: Vec::new(),
                });
                let inner = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(inner.cfg.batch_window).await;
                    // Still open: the window is over, send it. (A batch that filled up was sent
                    // already.)
                    let batch = {
                        let mut st = inner.lock();
                        let at = st.open.iter().position(|b| b.id == id);
                        at.map(|at| st.open.remove(at))
                    };
                    if let Some(batch) = batch {
                        inner.call(batch).await;
                    }
                });
                st.open.len() - 1
            }
        };
        let batch = &mut st.open[at];
        match key {
            Key::Email(e) => batch.emails.push(e.clone()),
            Key::Mobile(m) => batch.mobiles.push(m.clone()),
        }
        if batch.is_full() {
            let batch = st.open.remove(at);
            tokio::spawn(self.clone().call(batch));
        }
    }

    /// One `batch_get_id` call; its answer goes to the cache and to every waiter of the batch.
    async fn call(self: Arc<Self>, batch: Batch) {
        // If this task is dropped before answering (runtime shutdown), the guard drops the
        // waiters' senders, so they see an error instead of waiting forever.
        let guard = AnswerGuard {
            inner: &self,
            keys: batch.keys().collect(),
        };
        self.calls.fetch_add(1, Ordering::Relaxed);
        telemetry::lookup_call();
        let result = self
            .client
            .batch_get_id(&batch.emails, &batch.mobiles)
            .await;
        let keys = guard.disarm();
        let mut st = self.lock();
        match result {
            Ok(entries) => {
                let ids = index(&entries);
                let now = Instant::now();
                for key in keys {
                    let open_id = ids.get(&key).cloned();
                    let ttl = if open_id.is_some() {
                        self.cfg.ttl
                    } else {
                        self.cfg.negative_ttl
                    };
                    if !ttl.is_zero() {
                        let cached = Cached {
                            open_id: open_id.clone(),
                            until: now + ttl,
                        };
                        st.remember(key.clone(), cached, now, self.cfg.max_entries);
                    }
                    for w in st.waiting.remove(&key).unwrap_or_default() {
                        let _ = w.send(Ok(open_id.clone()));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(
                    class = e.class.label(),
                    addresses = keys.len(),
                    "user look-up (batch_get_id) failed: {e}"
                );
                for key in keys {
                    for w in st.waiting.remove(&key).unwrap_or_default() {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

/// Drops a batch's waiters if its call never finishes (see [`Inner::call`]).
struct AnswerGuard<'a> {
    inner: &'a Inner,
    keys: Vec<Key>,
}

impl AnswerGuard<'_> {
    fn disarm(mut self) -> Vec<Key> {
        std::mem::take(&mut self.keys)
    }
}

impl Drop for AnswerGuard<'_> {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let mut st = self.inner.lock();
        for key in &self.keys {
            st.waiting.remove(key);
        }
    }
}

/// The open_ids Lark returned, by canonical address. Entries without `user_id` are left out:
/// they mean "not found", like a missing entry.
fn index(entries: &[UserIdEntry]) -> HashMap<Key, String> {
    let mut ids = HashMap::new();
    for e in entries {
        let Some(id) = &e.user_id else { continue };
        if let Some(email) = &e.email {
            ids.insert(email_key(email), id.clone());
        }
        if let Some(key) = e.mobile.as_deref().and_then(mobile_key) {
            ids.insert(key, id.clone());
        }
    }
    ids
}

/// The open_id, or the not-found error for `key`.
fn found(key: &Key, open_id: Option<String>) -> Result<String, LarkError> {
    open_id.ok_or_else(|| {
        let what = match key {
            Key::Email(_) => "email address",
            Key::Mobile(_) => "mobile number",
        };
        record_error(format!(
            "receiver not found: {what} {} is unknown to Lark or not visible to this app (batch_get_id returned no user_id: no such user, a resigned user, or a user outside the app's availability range)",
            key.value()
        ))
    })
}

fn record_error(msg: String) -> LarkError {
    LarkError::local(ErrorClass::Record, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mobiles_are_canonical() {
        let m = |s: &str| mobile_key(s).map(|k| k.value().to_string());
        assert_eq!(m("+8613800000001").as_deref(), Some("+8613800000001"));
        assert_eq!(m("13800000001").as_deref(), Some("+8613800000001"));
        assert_eq!(m(" +86 138-0000-0001 ").as_deref(), Some("+8613800000001"));
        assert_eq!(m("+1 (555) 000.0000").as_deref(), Some("+15550000000"));
        assert_eq!(m("call me"), None);
        assert_eq!(m("+"), None);
        assert_eq!(m("1+2"), None);
    }

    #[test]
    fn answers_match_by_address_not_position() {
        let entry = |email: Option<&str>, mobile: Option<&str>, id: Option<&str>| UserIdEntry {
            email: email.map(str::to_string),
            mobile: mobile.map(str::to_string),
            user_id: id.map(str::to_string),
        };
        let ids = index(&[
            entry(None, Some("13800000002"), Some("ou_bob")),
            entry(Some("Alice@Example.COM"), None, Some("ou_alice")),
            entry(Some("nobody@example.com"), None, None),
        ]);
        assert_eq!(
            ids.get(&email_key("alice@example.com")).map(String::as_str),
            Some("ou_alice")
        );
        assert_eq!(
            ids.get(&mobile_key("+86 13800000002").unwrap())
                .map(String::as_str),
            Some("ou_bob")
        );
        assert!(!ids.contains_key(&email_key("nobody@example.com")));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut st = State::default();
        let now = Instant::now();
        for i in 0..1000 {
            let cached = Cached {
                open_id: Some(format!("ou_{i}")),
                until: now + Duration::from_secs(60),
            };
            st.remember(Key::Email(format!("u{i}@x")), cached, now, 100);
            assert!(st.cache.len() <= 100);
        }
        assert!(st.cache.contains_key(&Key::Email("u999@x".into())));
    }

    #[test]
    fn not_found_is_a_record_error_that_says_so() {
        let e = found(&mobile_key("+8613900009999").unwrap(), None).unwrap_err();
        assert_eq!(e.class, ErrorClass::Record);
        assert!(e.msg.contains("+8613900009999"), "{}", e.msg);
        assert!(e.msg.contains("not visible to this app"), "{}", e.msg);
    }
}
