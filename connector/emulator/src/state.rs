//! The emulator's shared, mutable state and the records tests read back.
//!
//! One `std::sync::Mutex` guards everything that changes per request. Critical sections are
//! short and never span an `.await`, and a single lock makes "uuid check → receiver limit →
//! record" atomic, so concurrent duplicates cannot both be accepted. The directory is immutable
//! after start and lives outside the lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::directory::DirectoryIndex;
use crate::errors::{self, ApiError};
use crate::faults::FaultBook;
use crate::ids;
use crate::lifecycle::{Lifecycle, MessageView};
use crate::limits::{LimiterMap, Limits};
use crate::tokens::TokenStore;
use crate::EmulatorConfig;

/// A message the emulator accepted, via the API or a custom-bot webhook.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AcceptedMessage {
    pub message_id: String,
    /// `"api"` or `"webhook:<token>"`.
    pub via: String,
    /// As requested (`open_id`, `email`, `chat_id`, …), or `"webhook"`.
    pub receive_id_type: String,
    pub receive_id: String,
    /// Canonical receiver: the chat id, `"p2p:<open_id>"` for a user whatever id type addressed
    /// them, or `"webhook:<token>"`.
    pub chat_id: String,
    pub msg_type: String,
    /// The parsed content object (the `card` object for webhook interactive messages).
    pub content: Value,
    pub uuid: Option<String>,
    pub received_at_ms: u64,
    /// For a reply (§2.5): the message replied to. `None` for a plain send.
    pub parent_id: Option<String>,
    /// For a reply: the first message of the reply chain (the parent's root, or the parent).
    pub root_id: Option<String>,
    /// For a reply in a thread (`reply_in_thread`, or a reply to a message already in one):
    /// the `omt_…` thread id.
    pub thread_id: Option<String>,
    /// Marked recalled through [`crate::EmulatorHandle::recall`]; replies to it get 230011.
    pub recalled: bool,
}

/// An accepted urgent (buzz) request (§6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AcceptedUrgent {
    pub message_id: String,
    /// `app`, `sms` or `phone`.
    pub kind: String,
    /// The ids that were valid (the invalid ones went back in `invalid_user_id_list`).
    pub user_ids: Vec<String>,
}

/// Counters for assertions and the demo's summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Requests to the OpenAPI / webhook endpoints (not the control endpoints).
    pub requests: u64,
    /// Messages accepted (API and webhook); uuid duplicates excluded.
    pub accepted: u64,
    pub duplicates_absorbed: u64,
    pub throttled_app: u64,
    pub throttled_receiver: u64,
    pub throttled_webhook: u64,
    /// Freshly minted tokens (a re-returned token is not counted).
    pub tokens_issued: u64,
    /// Requests refused with 99991661 / 99991663 / 99991671.
    pub token_rejections: u64,
    pub faults_injected: u64,
    /// Card updates (`PATCH /open-apis/im/v1/messages/{id}`) answered code 0, applied or not.
    pub updates_accepted: u64,
    /// Card updates answered code 0 without applying the content, because a card was not shared
    /// and [`crate::UnsharedCardUpdate::Ignore`] is configured.
    pub patches_not_applied: u64,
    /// Edits (`PUT /open-apis/im/v1/messages/{id}`) applied.
    pub edits_accepted: u64,
    /// Recalls (`DELETE /open-apis/im/v1/messages/{id}`) applied.
    pub recalls_accepted: u64,
    /// PATCH / PUT refused with 230020 by the per-message limit (lifecycle §5: 5/s); sends
    /// refused by the receiver limit are in `throttled_receiver`, though both count under 230020
    /// in `errors_by_code`.
    pub throttled_message: u64,
    /// Every non-zero `code` answered, including injected ones.
    pub errors_by_code: BTreeMap<i64, u64>,
}

/// What `batch_get_id` was asked (§5), so tests can check a client's caching and batching.
/// Read with [`crate::EmulatorHandle::lookups`] or `GET /_emulator/lookups`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LookupStats {
    /// Requests that reached `batch_get_id`, including faulted and refused ones.
    pub calls: u64,
    /// Emails asked for in well-formed requests, lower-cased, with how many times each was asked.
    pub emails: BTreeMap<String, u64>,
    /// Mobiles asked for in well-formed requests, normalised (`+86` added to numbers without a
    /// country code, spaces and dashes removed), with how many times each was asked.
    pub mobiles: BTreeMap<String, u64>,
}

impl LookupStats {
    /// How many times `email` was asked (case-insensitive).
    pub fn email(&self, email: &str) -> u64 {
        self.emails.get(&email.to_lowercase()).copied().unwrap_or(0)
    }

    /// How many times `mobile` was asked (in any spelling [`normalize_mobile`] maps together).
    ///
    /// [`normalize_mobile`]: crate::directory::normalize_mobile
    pub fn mobile(&self, mobile: &str) -> u64 {
        self.mobiles
            .get(&crate::directory::normalize_mobile(mobile))
            .copied()
            .unwrap_or(0)
    }
}

/// A stored message plus what the emulator needs to answer about it later.
#[derive(Debug)]
pub(crate) struct StoredMessage {
    pub public: AcceptedMessage,
    /// The sending app; `None` for webhook messages.
    pub app_id: Option<String>,
    /// For p2p messages, the receiver's open_id (urgent validity, §6).
    pub p2p_open_id: Option<String>,
    /// The `data` object of the original success reply, replayed for uuid duplicates (§2.2).
    pub reply_data: Value,
    /// The `oc_` chat id reported in replies (empty for webhook messages).
    pub reply_chat_id: String,
    /// Current content, counts, flags and history, for PATCH / PUT / DELETE (lifecycle §6).
    pub lifecycle: Lifecycle,
}

impl StoredMessage {
    /// The §2.3 message object as it stands now: the send's answer with the current type,
    /// content and `update_time`, `updated` once changed, `deleted` once recalled or deleted
    /// (message get, and PUT's answer, lifecycle §1.2).
    pub fn current_data(&self) -> Value {
        let mut data = self.reply_data.clone();
        let l = &self.lifecycle;
        if let Some(obj) = data.as_object_mut() {
            obj.insert("msg_type".into(), json!(l.msg_type));
            obj.insert("update_time".into(), json!(l.update_ms.to_string()));
            obj.insert("updated".into(), json!(l.versions.len() > 1));
            obj.insert("deleted".into(), json!(self.public.recalled || l.deleted));
            obj.insert("body".into(), json!({ "content": l.content_raw }));
        }
        data
    }
}

/// A validated send, ready to be recorded.
#[derive(Debug)]
pub(crate) struct NewApiMessage {
    pub app_id: String,
    pub receive_id_type: String,
    pub receive_id: String,
    /// Canonical receiver key (see [`AcceptedMessage::chat_id`]).
    pub canonical: String,
    /// The `oc_` id reported in the reply.
    pub reply_chat_id: String,
    pub p2p_open_id: Option<String>,
    pub msg_type: String,
    pub content_raw: String,
    pub content: Value,
    /// §2.3 `mentions` of the answer (empty = the field is left out).
    pub mentions: Vec<Value>,
    pub uuid: Option<String>,
    /// Set for a reply (§2.5); its `receive_id_type` is then `message_id` and its
    /// `receive_id` the parent's id.
    pub reply: Option<ReplyLink>,
}

/// Where a reply sits in its conversation (§2.3: `parent_id`, `root_id`, `thread_id`).
#[derive(Debug, Clone)]
pub(crate) struct ReplyLink {
    pub parent_id: String,
    pub root_id: String,
    pub thread_id: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub tokens: TokenStore,
    pub messages: Vec<StoredMessage>,
    pub by_id: HashMap<String, usize>,
    /// (app_id, uuid) → (message index, acceptance time).
    pub uuids: HashMap<(String, String), (usize, Instant)>,
    /// Sweep expired uuids when the map grows past this (doubles after each sweep, so the
    /// sweeps cost O(1) per message amortised instead of O(n) per message).
    uuid_sweep_at: usize,
    pub urgents: Vec<AcceptedUrgent>,
    pub stats: Stats,
    pub lookups: LookupStats,
    pub faults: FaultBook,
    pub limits: Limits,
    /// Keyed `"<app_id>/<api>"`: each API has its own budget (§4).
    pub app_limiters: LimiterMap,
    pub receiver_limiters: LimiterMap,
    pub webhook_limiters: LimiterMap,
    /// Per message id: the 5/s update budget of PATCH and PUT (lifecycle §5).
    pub message_limiters: LimiterMap,
    /// How far [`crate::EmulatorHandle::advance_clock`] moved the message clock ahead of the
    /// wall clock, ms.
    pub clock_offset_ms: u64,
    /// Requests (by log id) that drew a `late_answer` fault: done, their answer held this many ms.
    pub late_answers: HashMap<String, u64>,
}

/// Shared between the HTTP handlers and every [`crate::EmulatorHandle`] clone.
#[derive(Debug)]
pub(crate) struct Shared {
    pub dir: DirectoryIndex,
    pub token_ttl: Duration,
    pub uuid_window: Duration,
    /// PATCH's reaction to a card that is not shared ([`EmulatorConfig::unshared_card_update`]).
    pub unshared_card_update: crate::UnsharedCardUpdate,
    /// [`EmulatorConfig::edit_window`] in ms.
    pub edit_window_ms: Option<u64>,
    /// [`EmulatorConfig::recall_window`] in ms.
    pub recall_window_ms: Option<u64>,
    /// The address the emulator listens on (the endpoint's URL when a request has no `Host`).
    pub addr: std::net::SocketAddr,
    /// `http` or `https`: the long connection's URL is `ws://` or `wss://` accordingly.
    pub scheme: &'static str,
    /// The long connection: tickets, live connections, pushed events (own lock).
    pub events: crate::events::hub::Hub,
    inner: Mutex<Inner>,
}

/// Only uuids older than the window are swept, and only once the map is this large.
const UUID_SWEEP_ABOVE: usize = 10_000;

impl Shared {
    /// `me`: the `Arc` this will live in (`Arc::new_cyclic`), for the event hub's card updates.
    pub fn new(
        config: EmulatorConfig,
        addr: std::net::SocketAddr,
        scheme: &'static str,
        me: std::sync::Weak<Shared>,
    ) -> Self {
        Self {
            addr,
            scheme,
            events: crate::events::hub::Hub::new(config.long_connection, config.callbacks, me),
            dir: DirectoryIndex::new(config.directory),
            token_ttl: config.token_ttl,
            uuid_window: config.uuid_window,
            unshared_card_update: config.unshared_card_update,
            edit_window_ms: config.edit_window.map(|w| w.as_millis() as u64),
            recall_window_ms: config.recall_window.map(|w| w.as_millis() as u64),
            inner: Mutex::new(Inner {
                tokens: TokenStore::default(),
                messages: Vec::new(),
                by_id: HashMap::new(),
                uuids: HashMap::new(),
                uuid_sweep_at: UUID_SWEEP_ABOVE,
                urgents: Vec::new(),
                stats: Stats::default(),
                lookups: LookupStats::default(),
                faults: FaultBook::new(config.faults),
                limits: config.limits,
                app_limiters: LimiterMap::default(),
                receiver_limiters: LimiterMap::default(),
                webhook_limiters: LimiterMap::default(),
                message_limiters: LimiterMap::default(),
                clock_offset_ms: 0,
                late_answers: HashMap::new(),
            }),
        }
    }

    /// The state lock. A panic while holding it cannot leave the data half-updated in a way
    /// that matters to an emulator, so a poisoned lock is simply taken over.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Clear records, counters, faults and limiter windows; keep directory, tokens and limits.
    pub fn reset(&self) {
        let mut s = self.lock();
        s.messages.clear();
        s.by_id.clear();
        s.uuids.clear();
        s.urgents.clear();
        s.stats = Stats::default();
        s.lookups = LookupStats::default();
        s.faults.clear();
        s.app_limiters.clear();
        s.receiver_limiters.clear();
        s.webhook_limiters.clear();
        s.message_limiters.clear();
        s.clock_offset_ms = 0;
        s.late_answers.clear();
        drop(s);
        self.events.reset();
    }
}

impl Inner {
    pub fn count_error(&mut self, code: i64) {
        if code != 0 {
            *self.stats.errors_by_code.entry(code).or_default() += 1;
        }
    }

    /// The per-app, per-API gateway limit (§4): HTTP 429 + 99991400 + reset header.
    pub fn app_limit(&mut self, app_id: &str, api: &str, now: Instant) -> Result<(), ApiError> {
        if !self.limits.enabled {
            return Ok(());
        }
        let (per_sec, per_min) = (self.limits.app_per_sec, self.limits.app_per_min);
        let key = format!("{app_id}/{api}");
        self.app_limiters
            .try_acquire(&key, now, per_sec, per_min)
            .map_err(|t| {
                self.stats.throttled_app += 1;
                ApiError::rate_limited(t.limit, t.reset_secs())
            })
    }

    /// The original reply data when `uuid` was accepted for `app_id` within `window` (§2.2).
    fn duplicate_of(
        &self,
        app_id: &str,
        uuid: &str,
        now: Instant,
        window: Duration,
    ) -> Option<Value> {
        let (idx, at) = self.uuids.get(&(app_id.to_string(), uuid.to_string()))?;
        if now.duration_since(*at) >= window {
            return None;
        }
        self.messages.get(*idx).map(|m| m.reply_data.clone())
    }

    /// Record a validated API send, or absorb a uuid duplicate, or refuse with 230020.
    /// Returns the reply `data`.
    pub fn accept_api(
        &mut self,
        msg: NewApiMessage,
        now: Instant,
        uuid_window: Duration,
    ) -> Result<Value, ApiError> {
        if let Some(uuid) = &msg.uuid {
            if let Some(data) = self.duplicate_of(&msg.app_id, uuid, now, uuid_window) {
                // A duplicate neither consumes receiver quota nor appears twice in messages().
                self.stats.duplicates_absorbed += 1;
                return Ok(data);
            }
        }
        if self.limits.enabled {
            let per_sec = self.limits.receiver_per_sec;
            if self
                .receiver_limiters
                .try_acquire(&msg.canonical, now, per_sec, 0)
                .is_err()
            {
                // §4: IM-level limits come as HTTP 400 / 230020, without reset headers.
                self.stats.throttled_receiver += 1;
                return Err(ApiError::new(errors::IM_RATE_LIMITED));
            }
        }
        let message_id = ids::message_id();
        let at_ms = self.now_ms();
        // §2.3 success data for a bot send.
        let mut reply_data = json!({
            "message_id": message_id,
            "msg_type": msg.msg_type,
            "create_time": at_ms.to_string(),
            "update_time": at_ms.to_string(),
            "deleted": false,
            "updated": false,
            "chat_id": msg.reply_chat_id,
            "sender": {
                "id": msg.app_id,
                "id_type": "app_id",
                "sender_type": "app",
                "tenant_key": TENANT_KEY,
            },
            "body": { "content": msg.content_raw },
        });
        if let (false, Some(obj)) = (msg.mentions.is_empty(), reply_data.as_object_mut()) {
            obj.insert("mentions".into(), json!(msg.mentions));
        }
        // §2.3: root_id / parent_id / thread_id appear for replies and thread messages only.
        if let (Some(link), Some(obj)) = (&msg.reply, reply_data.as_object_mut()) {
            obj.insert("parent_id".into(), json!(link.parent_id));
            obj.insert("root_id".into(), json!(link.root_id));
            if let Some(t) = &link.thread_id {
                obj.insert("thread_id".into(), json!(t));
            }
        }
        let public = AcceptedMessage {
            message_id: message_id.clone(),
            via: "api".into(),
            receive_id_type: msg.receive_id_type,
            receive_id: msg.receive_id,
            chat_id: msg.canonical,
            msg_type: msg.msg_type,
            content: msg.content,
            uuid: msg.uuid.clone(),
            received_at_ms: at_ms,
            parent_id: msg.reply.as_ref().map(|r| r.parent_id.clone()),
            root_id: msg.reply.as_ref().map(|r| r.root_id.clone()),
            thread_id: msg.reply.and_then(|r| r.thread_id),
            recalled: false,
        };
        let lifecycle = Lifecycle::sent(
            &public.msg_type,
            msg.content_raw,
            public.content.clone(),
            at_ms,
        );
        let idx = self.store(StoredMessage {
            public,
            app_id: Some(msg.app_id.clone()),
            p2p_open_id: msg.p2p_open_id,
            reply_data: reply_data.clone(),
            reply_chat_id: msg.reply_chat_id,
            lifecycle,
        });
        if let Some(uuid) = msg.uuid {
            if self.uuids.len() > self.uuid_sweep_at {
                self.uuids
                    .retain(|_, (_, at)| now.duration_since(*at) < uuid_window);
                self.uuid_sweep_at = UUID_SWEEP_ABOVE.max(self.uuids.len() * 2);
            }
            self.uuids.insert((msg.app_id, uuid), (idx, now));
        }
        Ok(reply_data)
    }

    /// Record a validated webhook message after the per-webhook limit (§8: 9499 "too many
    /// request", HTTP 400).
    pub fn accept_webhook(
        &mut self,
        token: &str,
        msg_type: String,
        content: Value,
        now: Instant,
    ) -> Result<(), ApiError> {
        if self.limits.enabled {
            let (per_sec, per_min) = (self.limits.webhook_per_sec, self.limits.webhook_per_min);
            if self
                .webhook_limiters
                .try_acquire(token, now, per_sec, per_min)
                .is_err()
            {
                self.stats.throttled_webhook += 1;
                return Err(ApiError::new(errors::WH_BOT_THROTTLED));
            }
        }
        let at_ms = self.now_ms();
        let lifecycle = Lifecycle::sent(&msg_type, content.to_string(), content.clone(), at_ms);
        let public = AcceptedMessage {
            message_id: ids::message_id(),
            via: format!("webhook:{token}"),
            receive_id_type: "webhook".into(),
            receive_id: token.to_string(),
            chat_id: format!("webhook:{token}"),
            msg_type,
            content,
            uuid: None,
            received_at_ms: at_ms,
            parent_id: None,
            root_id: None,
            thread_id: None,
            recalled: false,
        };
        self.store(StoredMessage {
            public,
            app_id: None,
            p2p_open_id: None,
            reply_data: Value::Null,
            reply_chat_id: String::new(),
            lifecycle,
        });
        Ok(())
    }

    fn store(&mut self, m: StoredMessage) -> usize {
        let idx = self.messages.len();
        self.by_id.insert(m.public.message_id.clone(), idx);
        self.messages.push(m);
        self.stats.accepted += 1;
        idx
    }

    pub fn message(&self, message_id: &str) -> Option<&StoredMessage> {
        self.by_id
            .get(message_id)
            .and_then(|&i| self.messages.get(i))
    }

    pub fn message_mut(&mut self, message_id: &str) -> Option<&mut StoredMessage> {
        let i = self.by_id.get(message_id).copied()?;
        self.messages.get_mut(i)
    }

    /// Marks a message recalled (`DELETE` does it, and tests through
    /// [`crate::EmulatorHandle::recall`]). Returns whether the message exists.
    pub fn recall(&mut self, message_id: &str) -> bool {
        self.message_mut(message_id)
            .map(|m| m.public.recalled = true)
            .is_some()
    }

    /// Marks a message deleted (later PATCH / PUT / DELETE get 230110). Returns whether it exists.
    pub fn mark_deleted(&mut self, message_id: &str) -> bool {
        self.message_mut(message_id)
            .map(|m| m.lifecycle.deleted = true)
            .is_some()
    }

    /// Sets a message's edit count (20 = no edit left, 230072). Returns whether it exists.
    pub fn set_edit_count(&mut self, message_id: &str, edit_count: u32) -> bool {
        self.message_mut(message_id)
            .map(|m| m.lifecycle.edit_count = edit_count)
            .is_some()
    }

    /// The emulator's clock for message times and ages: the wall clock plus the offset
    /// [`crate::EmulatorHandle::advance_clock`] added, ms.
    pub fn now_ms(&self) -> u64 {
        ids::now_ms().saturating_add(self.clock_offset_ms)
    }

    /// A message as it stands now, with its history.
    pub fn view(&self, message_id: &str) -> Option<MessageView> {
        let m = self.message(message_id)?;
        let l = &m.lifecycle;
        Some(MessageView {
            message_id: m.public.message_id.clone(),
            app_id: m.app_id.clone(),
            msg_type: l.msg_type.clone(),
            content: l.content(),
            recalled: m.public.recalled,
            deleted: l.deleted,
            edit_count: l.edit_count,
            patch_count: l.patch_count,
            create_time_ms: l.create_ms,
            update_time_ms: l.update_ms,
            versions: l.versions.clone(),
        })
    }
}

/// The single tenant the emulator models.
pub const TENANT_KEY: &str = "emulator_tenant";
