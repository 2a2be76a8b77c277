//! A local emulator of the Lark / Feishu Open Platform endpoints lark-sink speaks.
//!
//! Why: the connector's retry, idempotency and dead-letter logic only matters when Lark says
//! "no", and the real platform cannot be asked to say no on demand. This crate answers like
//! Lark does (envelopes, codes, HTTP statuses, rate limits, token rules), following
//! `/work/shared/lark-api.md` (section numbers in comments refer to it), and lets tests script
//! failures. It serves the `lark-sink emulator --port N` subcommand, in-process end-to-end
//! tests, and the demo.
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use lark_emulator::{Emulator, EmulatorConfig, Fault, FaultTarget};
//! let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
//! let emu = Emulator::start(EmulatorConfig::default(), addr).await?;
//! emu.push_fault(FaultTarget::Send, Fault::Status { status: 503 });
//! // … point a client at emu.base_url() …
//! assert!(emu.messages().is_empty());
//! emu.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//!
//! | Method + path | § |
//! |---|---|
//! | `POST /open-apis/auth/v3/tenant_access_token/internal` | §1 |
//! | `POST /open-apis/im/v1/messages?receive_id_type=open_id\|union_id\|user_id\|email\|chat_id` | §2 |
//! | `POST /open-apis/im/v1/messages/{id}/reply` | §2.5 |
//! | `GET /open-apis/im/v1/messages/{id}` (message get; not in lark-api.md) | §2.3 fields |
//! | `PATCH /open-apis/im/v1/messages/{id}` (update a card) | lark-api.md §14; lifecycle §1.1 |
//! | `PUT /open-apis/im/v1/messages/{id}` (edit text / post) | lark-api.md §14; lifecycle §1.2 |
//! | `DELETE /open-apis/im/v1/messages/{id}` (recall) | lark-api.md §14; lifecycle §1.3 |
//! | `POST /open-apis/contact/v3/users/batch_get_id?user_id_type=…` | §5 |
//! | `PATCH /open-apis/im/v1/messages/{id}/urgent_app\|urgent_sms\|urgent_phone?user_id_type=…` | §6 |
//! | `POST /open-apis/bot/v2/hook/{token}` | §8 |
//! | `POST /callback/ws/endpoint` `{"AppID","AppSecret"}` (long connection) | lifecycle §4.1 |
//! | `GET /ws/v2?fpid=…&device_id=…&service_id=…&ticket=…` (WebSocket, pbbp2 frames) | lifecycle §4.2–§4.6 |
//!
//! # Control endpoints (JSON, never faulted, not counted in stats)
//!
//! | Method + path | Body → reply |
//! |---|---|
//! | `GET /_emulator/health` | → `{"ok":true}` |
//! | `GET /_emulator/messages` | → `[AcceptedMessage…]` (fields as in [`AcceptedMessage`]) |
//! | `GET /_emulator/urgents` | → `[{"message_id","kind","user_ids"}…]` |
//! | `GET /_emulator/stats` | → [`Stats`] (`errors_by_code` keys are strings in JSON) |
//! | `GET /_emulator/lookups` | → [`LookupStats`]: `batch_get_id` calls and how often each email / mobile was asked |
//! | `GET /_emulator/directory` | → [`Directory`] |
//! | `GET /_emulator/limits` | → [`Limits`] |
//! | `POST /_emulator/limits` | [`Limits`] (missing fields = real defaults) → `{"ok":true}` |
//! | `POST /_emulator/faults` | scripted: `{"target":"send","fault":{"kind":"status","status":503},"times":1}` → `{"ok":true}` |
//! | `POST /_emulator/faults` | random: `{"config":{"error_5xx_rate":0.1,"slow_rate":0.0,"slow_ms":1000,"throttle_rate":0.0}}` |
//! | `POST /_emulator/revoke-tokens` | → `{"ok":true}` |
//! | `POST /_emulator/recall` | `{"message_id":"om_…"}` → `{"ok":true}` (404 if unknown): replies, PATCH, PUT and DELETE of it get 230011 |
//! | `GET /_emulator/messages/{id}` | → [`MessageView`]: current `msg_type` / `content`, `recalled`, `deleted`, `edit_count`, `patch_count`, `create_time_ms`, `update_time_ms`, `versions` `[{op: send\|patch\|put\|callback, msg_type, content, at_ms}]` (`callback`: the card of a click's answer) (404 if unknown) |
//! | `POST /_emulator/delete` | `{"message_id":"om_…"}` → `{"ok":true}` (404 if unknown): PATCH / PUT / DELETE of it get 230110 |
//! | `POST /_emulator/edit-count` | `{"message_id":"om_…","edit_count":20}` → `{"ok":true}` (404 if unknown): at 20 a PUT gets 230072 |
//! | `GET /_emulator/clock` | → `{"offset_ms":N,"now_ms":M}` |
//! | `POST /_emulator/clock` | `{"advance_ms":N}` → `{"ok":true,"offset_ms":…}`: moves the message clock forward |
//! | `POST /_emulator/reset` | → `{"ok":true}` |
//! | `POST /_emulator/events/click` | [`Click`]: `{"message_id":"om_…","open_id":"ou_…"?,"value":{…}?,"button":"Ack"?,"tag":"button"?,"form_value":{…}?,"app_id":"cli_…"?,"duplicate":false?,"fragment_size":N?,"tamper":"signature"\|"token"\|"stale"?}` → `{"ok":true,"event_id":"…"}`; without `value`, the value the stored card gives the clicked component (`button`: its text; default the first that calls back) |
//! | `POST /_emulator/events/message` | [`BotMessage`]: `{"chat_id":"oc_…"?,"open_id":"ou_…"?,"text":"…","app_id":"cli_…"?,"duplicate":false?,"fragment_size":N?,"tamper":…?}` → `{"ok":true,"event_id":"…"}` |
//! | `POST /_emulator/events/drop` | → `{"ok":true,"dropped":N}`: every live long connection gets a close frame |
//! | `POST /_emulator/events/callback` | `{"url":"http://…"\|null?,"tamper":["signature"\|"token"\|"stale"…]?}` → `{"ok":true,"url":…,"tamper_queued":N}`: set (`null`: clear) the HTTP callback URL; queue wrong requests for the next HTTP attempts |
//! | `POST /_emulator/events/verify` | `{"url":"http://…"?}` (default the configured URL) → `{"ok":true,"challenge":"…"}` or `{"ok":false,"error":"…"}`: the `url_verification` challenge |
//! | `GET /_emulator/events` | → `[PushedEvent…]` (fields as in [`PushedEvent`]: `event_id`, `event_type`, `app_id`, `attempts`, `acked`, `ack_code`, `ack_data`, `latency_ms`, `done`, `client_error` and `toast` (card callbacks: what the user saw), `late_acks`, `deliveries` (over HTTP with `url`, `tamper`, `error`), `payload`) |
//!
//! `target` ∈ `send`, `reply`, `token`, `batch_get_id`, `urgent`, `webhook`, `update_card`
//! (PATCH), `edit` (PUT), `recall` (DELETE), `ws_endpoint` (the long connection's endpoint;
//! `code` faults 1 and 1000040343 are its retryable codes, answered with HTTP 200). `fault` is one of
//! `{"kind":"status","status":502}`, `{"kind":"slow","ms":1500}`,
//! `{"kind":"late_answer","ms":4000}` (sends: the message made at once, the answer held back),
//! `{"kind":"code","code":230020}` with optional `"http_status"`, `"msg"` (both default to the
//! code's real values) and `"ratelimit_reset_secs"`. Bad control bodies → HTTP 400
//! `{"ok":false,"error":"…"}`.
//!
//! # Events and card callbacks
//!
//! Pushed over the long connection (`POST /callback/ws/endpoint`, `GET /ws/v2`, pbbp2 frames) or
//! POSTed to the app's callback URL (encrypted, signed), after lifecycle §2–§4 and §6 items 7–13:
//! events are redelivered on the retry schedule until answered; a card callback is delivered
//! once, its answer judged as the user's client does (the client error or toast it shows) and
//! its card applied to the clicked message. The details and choices: [`events`].
//!
//! # Choices where the spec is UNCERTAIN or silent
//!
//! - Wire format: HTTP/1.1 only (TLS offers only `http/1.1` in ALPN), header names in Title-Case
//!   (`X-Tt-Logid`, `Content-Type`, `X-Ogw-Ratelimit-Reset`) as Lark's gateway sends them; the
//!   official Python SDK looks headers up case-sensitively (src/serve.rs).
//! - Token endpoint errors (10003 unknown app / malformed body, 10014 wrong secret) use HTTP
//!   400 (§1.4). Re-issue: the same token is returned while ≥ TTL/4 remains (= 30 min for the
//!   default 2 h), with `expire` = remaining seconds (§1.2).
//! - Auth errors are HTTP 400 (§1.5). A non-`Bearer` scheme or a token not starting with `t-`
//!   → 99991671; a `u-` token → 99991663 (the emulator issues no user tokens).
//! - Scopes: an app without a `scopes` list has every scope; with one, the send API needs one of
//!   `im:message`, `im:message:send_as_bot`, `im:message:send` (§2.1; reply too, §2.5) and batch_get_id needs
//!   `contact:user.id:readonly` (§5), else 99991672 (HTTP 400, UNCERTAIN 400 vs 403) naming them.
//!   The gateway checks scopes right after the token, before limits and the request itself.
//! - Check order of a send (undocumented; `lark-sink check` relies on it and treats other answers
//!   as warnings): token, scope, app limit, request shape and content, bot ability (230006), then
//!   the receiver (230001 `ext=invalid receive_id`, 230002, 230013, 230029). Webhooks: token
//!   (19001), size, JSON, signature (19021; a `sign` sent to an unsigned bot is ignored), then
//!   `msg_type` and content (19002, 9499), keywords (19024), the rate limit (a bot over its
//!   100/min or 5/s: 9499 `too many request` with HTTP 400, the §8 correction).
//! - share_chat content (§2.4): a p2p conversation (any app's bot with a directory user) →
//!   230015; a group the bot is not in, or a chat the directory does not know → 230002 (no
//!   separate code is documented). Checked after the receiver (send) or the bot ability (reply).
//! - `mentions` (§2.3): one `{key:"@_user_N", id: open_id, id_type:"open_id", name,
//!   tenant_key}` per `<at user_id>` tag of a text message naming a directory user by open_id,
//!   union_id or user_id; `all` and unknown ids get none; without any the field is left out.
//!   `body.content` is answered as sent (Lark rewrites the tags to `@_user_N`; not modelled).
//! - Malformed bodies / wrongly typed fields → 99992402 `field validation failed` with
//!   `error.field_violations`; missing `receive_id` / `msg_type` → 230001 with `ext=`.
//! - Unknown email recipient → 230001 `ext=invalid receive_id` (§3 note). Resigned → 230029
//!   is checked before availability (230013).
//! - uuid duplicates (same app + uuid within `uuid_window`) return code 0 with the original
//!   `data` (§2.2); 230049 "being sent" never occurs because accept is atomic.
//! - P2p sends report a stable derived `oc_…` `chat_id` in the reply (§2.3); the recorded
//!   [`AcceptedMessage::chat_id`] is `p2p:<open_id>`.
//! - Limits: app limits are per app *and per API* (send, batch_get_id, each urgent kind)
//!   (§4); only accepted messages consume receiver / webhook budgets; a limit of 0 = none.
//! - batch_get_id: more than 50 emails or mobiles → 99992402; entries keep request order and
//!   spelling; users outside availability come back without `user_id` (§5).
//! - Reply (§2.5): the parent must be a message this emulator accepted; an unknown id →
//!   230001 `ext=invalid message_id` (lark-api.md has no "no such message" code; same choice as
//!   urgent). A parent the app cannot see (a webhook message, another app's p2p message, a
//!   group the bot is not in) → 230050; a recalled parent ([`EmulatorHandle::recall`]) → 230011;
//!   `reply_in_thread` in a chat with `thread_replies: false` → 230071 (p2p chats allow
//!   threads). `msg_type` `system` → 230001 `ext=invalid msg_type`. The reply lands in the
//!   parent's chat (same per-chat 5 QPS budget and the app's send budget), is recorded with
//!   `receive_id_type` `message_id`, `receive_id` = the parent, and `parent_id` / `root_id` /
//!   `thread_id` (`omt_…`, derived from the root; a reply to a threaded message stays in its
//!   thread). 230072 (aggregated) and 230111 (self-destructing) are not modelled (no such
//!   messages exist here) but can be scripted as `code` faults.
//! - Message get: `data.items` = `[the message as its send / reply answered it]` (`deleted: true`
//!   once recalled); unknown id → 230001 `ext=invalid message_id`, a message the app cannot see
//!   (as for reply) → 230050; no scope check (the read scopes are undocumented here) and no fault
//!   target (reads are counted in `requests` only).
//! - Urgent: unknown message → 230001 `ext=invalid message_id`; message sent by another app or
//!   a webhook → 230012; group-chat membership = every available, non-resigned directory user.
//! - Webhook body limit 20 KiB (§8, UNCERTAIN vs 30 KB); webhook error bodies also carry
//!   `"data":{}`; timestamps may be strings (documented) or integers.
//! - Random faults apply to message sends only (`im/v1/messages` and webhooks); a throttle
//!   fault on a webhook is 11232 over HTTP 200 (§8's "system throttling", unlike a bot's own
//!   limit). `Fault::Status` 502/503/504 have plain-text
//!   bodies, other statuses a JSON envelope with code 1500.
//! - Unknown paths → HTTP 404, known paths with another method → HTTP 405, both with a JSON
//!   envelope `{"code":404|405,"msg":"404 page not found"|"405 method not allowed","error":{…}}`
//!   and `X-Tt-Logid` (the codes are the emulator's choice; the official SDKs cannot parse the
//!   plain-text 404 a bare router gives).
//! - Update / edit / recall (`/work/shared/lark-api-lifecycle.md`; the check order is in
//!   `src/api/lifecycle.rs`): scopes `im:message` / `im:message:send_as_bot` /
//!   `im:message:update` (PATCH, PUT) and `im:message` / `im:message:recall` /
//!   `im:message:send_as_bot` (DELETE). A caller that is not the sender gets 230001
//!   ``ext=bot or user is not the message`s sender`` (PATCH, UNCONFIRMED), 230071 (PUT), 230026
//!   (DELETE). A card that is not shared gets what [`EmulatorConfig::unshared_card_update`]
//!   says (UNCONFIRMED; default 230001 with an `ext=` naming update_multi); JSON 2.0 cards and
//!   template references count as shared. Recalling a recalled message → 230011 (UNCONFIRMED,
//!   the lifecycle §1.3 recommendation). PATCH and PUT of one message share its 5/s
//!   ([`Limits::message_update_per_sec`]; for PUT UNCONFIRMED); each endpoint has its own app
//!   budget (`update_card`, `edit`, `recall`). A PATCH refused for any reason after the limits
//!   (bad content, unshared card) has spent its per-message slot. PUT answers the message object
//!   with `updated: true`, ms timestamps as strings (UNCONFIRMED, lifecycle §7 item 5). Message
//!   get answers the current version. [`AcceptedMessage`] stays the send as accepted (content
//!   as sent); the current content and the history are [`EmulatorHandle::message_view`].
//!   Counters: [`Stats::updates_accepted`], `patches_not_applied`, `edits_accepted`,
//!   `recalls_accepted`, `throttled_message`. Random faults do not apply to these endpoints.
//! - Clock: [`EmulatorHandle::advance_clock`] (`POST /_emulator/clock`) moves the message
//!   clock: ages (14 days for PATCH, the admin windows) and the times recorded for later sends
//!   and changes. Tokens, the uuid window and every rate limit keep real time.
//! - [`EmulatorHandle::reset`] clears messages, urgents, stats, lookup counts, uuids, scripted faults, random
//!   fault rates (back to off), limiter windows and the clock offset; it keeps directory, tokens
//!   and limits.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod api;
pub mod content;
pub mod directory;
pub mod errors;
pub mod events;
pub mod faults;
mod ids;
pub mod lifecycle;
pub mod limits;
mod reply;
mod serve;
pub mod signature;
mod state;
pub mod tls;
mod tokens;

pub use directory::{App, Chat, Directory, DirectoryError, User, Webhook};
pub use errors::{ApiError, LarkCode};
pub use events::{
    BotMessage, CallbackConfig, Click, Delivery, DeliveryOutcome, EventsError,
    LongConnectionConfig, PushedEvent, Tamper, VerifyError,
};
pub use faults::{Fault, FaultConfig, FaultTarget};
pub use lifecycle::{MessageVersion, MessageView, UnsharedCardUpdate, VersionOp};
pub use limits::Limits;
pub use signature::webhook_sign;
pub use state::{AcceptedMessage, AcceptedUrgent, LookupStats, Stats};

use state::Shared;

/// Everything the emulator needs at start.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    pub directory: Directory,
    pub limits: Limits,
    /// tenant_access_token lifetime (§1.2: 2 h).
    pub token_ttl: Duration,
    /// uuid de-duplication window (§2.2: 1 h).
    pub uuid_window: Duration,
    /// Random faults; default all off.
    pub faults: FaultConfig,
    /// What PATCH answers when the card as sent or the new card is not shared (`update_multi`
    /// not true; JSON 2.0 cards always are): lifecycle §1.1 leaves it UNCONFIRMED. Default
    /// [`UnsharedCardUpdate::Reject`] (230001 naming update_multi).
    pub unshared_card_update: UnsharedCardUpdate,
    /// The tenant admin's edit window for PUT (lifecycle §1.2: 230075 after it); `None` (the
    /// default) = no window.
    pub edit_window: Option<Duration>,
    /// The tenant admin's recall window for DELETE (lifecycle §1.3: 230009 after it); `None`
    /// (the default) = no window.
    pub recall_window: Option<Duration>,
    /// The WebSocket long connection for events and card callbacks (lifecycle §4): its
    /// `ClientConfig`, connection limit, ack deadline, retry schedule and fragmenting.
    pub long_connection: LongConnectionConfig,
    /// Events and card callbacks over HTTP instead (lifecycle §2.2–§2.5, §3.3): the request URL
    /// (unset by default: the long connection), Encrypt Key, Verification Token, IV choice and
    /// deliberately wrong requests. The ack deadline and retry schedule are `long_connection`'s.
    pub callbacks: CallbackConfig,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            directory: Directory::demo(),
            limits: Limits::default(),
            token_ttl: Duration::from_secs(7200),
            uuid_window: Duration::from_secs(3600),
            faults: FaultConfig::default(),
            unshared_card_update: UnsharedCardUpdate::default(),
            edit_window: None,
            recall_window: None,
            long_connection: LongConnectionConfig::default(),
            callbacks: CallbackConfig::default(),
        }
    }
}

/// Entry point: [`Emulator::start`].
pub struct Emulator;

impl Emulator {
    /// Bind `addr` (port 0 = any free port) and serve in a spawned tokio task until
    /// [`EmulatorHandle::shutdown`] (or the runtime ends).
    pub async fn start(
        config: EmulatorConfig,
        addr: SocketAddr,
    ) -> std::io::Result<EmulatorHandle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(Self::serve(config, listener, addr, "http"))
    }

    /// Like [`Emulator::start`], over HTTPS with the PEM certificate chain `cert_pem` (server
    /// certificate first) and its PEM private key: for testing clients against a certificate only
    /// a private CA vouches for. [`EmulatorHandle::base_url`] then starts with `https://`.
    pub async fn start_tls(
        config: EmulatorConfig,
        addr: SocketAddr,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> std::io::Result<EmulatorHandle> {
        let tls = tls::server_config(cert_pem, key_pem)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let tcp = TcpListener::bind(addr).await?;
        let addr = tcp.local_addr()?;
        let listener = tls::TlsListener::new(tcp, tls)?;
        Ok(Self::serve(config, listener, addr, "https"))
    }

    fn serve<L>(
        config: EmulatorConfig,
        listener: L,
        addr: SocketAddr,
        scheme: &'static str,
    ) -> EmulatorHandle
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        let shared = Arc::new_cyclic(|me| Shared::new(config, addr, scheme, me.clone()));
        let router = api::router(shared.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // A dropped sender also stops the server.
            serve::run(listener, router, stop_rx).await;
        });
        tracing::info!(%addr, scheme, "lark emulator listening");
        EmulatorHandle {
            addr,
            scheme,
            shared,
            server: Arc::new(Mutex::new(Some(Server {
                stop: stop_tx,
                task,
            }))),
        }
    }
}

#[derive(Debug)]
struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// How long [`EmulatorHandle::shutdown`] waits for in-flight requests before aborting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Control and inspection of a running emulator. Cheap to clone; all clones share state.
#[derive(Clone, Debug)]
pub struct EmulatorHandle {
    addr: SocketAddr,
    /// `http`, or `https` for [`Emulator::start_tls`].
    scheme: &'static str,
    shared: Arc<Shared>,
    server: Arc<Mutex<Option<Server>>>,
}

impl EmulatorHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (`https://` when served over TLS; a wildcard bind address is
    /// reported as loopback, since that is what a local client should dial).
    pub fn base_url(&self) -> String {
        let ip = self.addr.ip();
        let ip = match ip {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            }
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
                std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            }
            other => other,
        };
        format!(
            "{}://{}",
            self.scheme,
            SocketAddr::new(ip, self.addr.port())
        )
    }

    /// Every accepted message (API and webhook) in acceptance order; uuid duplicates appear once.
    pub fn messages(&self) -> Vec<AcceptedMessage> {
        self.shared
            .lock()
            .messages
            .iter()
            .map(|m| m.public.clone())
            .collect()
    }

    /// Mark a message recalled (replies to it then get 230011, §2.5). Returns whether it exists.
    pub fn recall(&self, message_id: &str) -> bool {
        self.shared.lock().recall(message_id)
    }

    /// Mark a message deleted: later PATCH / PUT / DELETE of it get 230110 (lifecycle §1).
    /// Returns whether it exists.
    pub fn mark_deleted(&self, message_id: &str) -> bool {
        self.shared.lock().mark_deleted(message_id)
    }

    /// Set a message's edit count (at 20 a PUT gets 230072, lifecycle §1.2). Returns whether it
    /// exists.
    pub fn set_edit_count(&self, message_id: &str, edit_count: u32) -> bool {
        self.shared.lock().set_edit_count(message_id, edit_count)
    }

    /// A message as it stands now (type, content, flags, counts, times) with every version,
    /// oldest first; `None` for an unknown id.
    pub fn message_view(&self, message_id: &str) -> Option<MessageView> {
        self.shared.lock().view(message_id)
    }

    /// The current content of a message (after any PATCH / PUT), `None` for an unknown id.
    pub fn message_content(&self, message_id: &str) -> Option<serde_json::Value> {
        self.message_view(message_id).map(|v| v.content)
    }

    /// Move the emulator's message clock forward by `by`: message ages (the 14-day update
    /// window, the admin edit and recall windows) and the times of later sends and changes use
    /// it. Tokens, the uuid window and rate limits keep the real clock.
    pub fn advance_clock(&self, by: Duration) {
        let mut s = self.shared.lock();
        s.clock_offset_ms = s.clock_offset_ms.saturating_add(by.as_millis() as u64);
    }

    /// How far [`Self::advance_clock`] has moved the message clock (0 after [`Self::reset`]).
    pub fn clock_offset(&self) -> Duration {
        Duration::from_millis(self.shared.lock().clock_offset_ms)
    }

    pub fn urgents(&self) -> Vec<AcceptedUrgent> {
        self.shared.lock().urgents.clone()
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// What `batch_get_id` was asked: calls, and how often each email / mobile.
    pub fn lookups(&self) -> LookupStats {
        self.shared.lock().lookups.clone()
    }

    /// Queue a one-shot fault for the next request to `target` (FIFO per target).
    pub fn push_fault(&self, target: FaultTarget, fault: Fault) {
        self.shared.lock().faults.push(target, fault);
    }

    pub fn set_fault_config(&self, faults: FaultConfig) {
        self.shared.lock().faults.config = faults;
    }

    /// Every tenant token this emulator minted (the most recent 4096), including revoked and
    /// expired ones: what a test scans logs and dead letters for.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.lock().tokens.minted()
    }

    /// Invalidate every issued tenant token (later calls with them → 99991663).
    pub fn revoke_tokens(&self) {
        self.shared.lock().tokens.revoke_all();
    }

    /// Replace the rate limits; windows already recorded keep counting.
    pub fn set_limits(&self, limits: Limits) {
        self.shared.lock().limits = limits;
    }

    /// The directory the emulator serves.
    pub fn directory(&self) -> Directory {
        self.shared.dir.directory.clone()
    }

    /// Push a card click (`card.action.trigger`, lifecycle §2.2) to one live long connection of
    /// the app (or POST it to the callback URL when one is set), once: never redelivered
    /// (lifecycle §2.1). Its answer is judged ([`PushedEvent::client_error`],
    /// [`PushedEvent::toast`]) and its card applied to the message. Returns the event id.
    pub fn click(&self, click: Click) -> Result<String, EventsError> {
        events::push::click(&self.shared, click)
    }

    /// Push a user's message to the bot (`im.message.receive_v1`, lifecycle §3.2). Returns the
    /// event id; the message id is in [`PushedEvent::payload`].
    pub fn send_to_bot(&self, message: BotMessage) -> Result<String, EventsError> {
        events::push::send_to_bot(&self.shared, message)
    }

    /// Push any event JSON (it needs `header.event_id` and `header.event_type`) to one live
    /// connection of `app_id` (or the callback URL); a `card.action.trigger` is delivered once
    /// and judged like a click. Returns the event id.
    pub fn push_event(
        &self,
        app_id: &str,
        event: serde_json::Value,
    ) -> Result<String, EventsError> {
        if self.shared.dir.app(app_id).is_none() {
            return Err(EventsError::UnknownApp(app_id.to_string()));
        }
        self.shared.events.push(app_id, event, None, None, None)
    }

    /// Send events over HTTP to `url` from the next delivery attempt on (`None`: back to the
    /// long connection). Set at run time because a test learns its receiver's port only after
    /// binding it.
    pub fn set_callback_url(&self, url: Option<String>) {
        self.shared.events.set_callback_url(url);
    }

    /// The HTTP delivery settings now ([`CallbackConfig::tamper`] is empty: queued tampering
    /// is consumed from a queue of its own).
    pub fn callback_config(&self) -> CallbackConfig {
        self.shared.events.callbacks()
    }

    /// Make the next HTTP delivery attempt (of any event) wrong as `tamper` says; calls queue up,
    /// one per attempt. A receiver that refuses it fails the attempt; an event's redelivery is
    /// right (a card callback has none).
    pub fn tamper_next(&self, tamper: Tamper) {
        self.shared.events.tamper_next(tamper);
    }

    /// The `url_verification` challenge (lark-api.md §9): POST
    /// `{"challenge","token","type":"url_verification"}` (inside `encrypt` with an Encrypt Key,
    /// no signature) to `url` and expect HTTP 200 `{"challenge":"<the same>"}` within 1 s.
    /// Returns the challenge; the error says what was wrong.
    pub async fn verify_url(&self, url: &str) -> Result<String, VerifyError> {
        self.shared.events.verify_url(Some(url)).await
    }

    /// Close every live long connection (a close frame each); how many there were.
    pub fn drop_connections(&self) -> usize {
        self.shared.events.drop_all()
    }

    /// Live long connections, all apps.
    pub fn live_connections(&self) -> usize {
        self.shared.events.live()
    }

    /// Every event pushed (over the long connection or HTTP), in push order, with its delivery
    /// status.
    pub fn pushed_events(&self) -> Vec<PushedEvent> {
        self.shared.events.events()
    }

    /// Clear messages, urgents, stats, uuids, faults and limiter windows (see crate docs).
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stop serving: graceful for up to 2 s, then the server task is aborted. Stopping one
    /// clone stops the server for all; calling it again is a no-op.
    pub async fn shutdown(self) {
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(Server { stop, mut task }) = server {
            // Upgraded WebSockets are not the server's connections any more: close them here.
            self.shared.events.drop_all();
            let _ = stop.send(());
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}
