//! The long connection's server-side state: tickets, live connections, pushed events and acks
//! (the delivery loop that waits for them is `delivery.rs`).
//!
//! Why its own lock: deliveries run in their own tasks and wake on timers; keeping them off the
//! emulator's main state lock means a slow WebSocket never delays an OpenAPI answer. The lock is
//! never held across an `.await`. Frames reach a connection through an unbounded channel to the
//! task that owns its socket, so pushing is synchronous and callable from any thread.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::callback::{self, CallbackConfig, Tamper};
use super::{LongConnectionConfig, PushedEvent};
use crate::ids;
use crate::state::Shared;

/// What the hub asks a connection's task to do.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Send one encoded frame as a binary message.
    Frame(Vec<u8>),
    /// Send a close frame and end the connection (`POST /_emulator/events/drop`).
    Close,
}

/// What the endpoint handed out for one connection: valid once.
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    pub app_id: String,
    pub device_id: u64,
    pub service_id: i32,
}

/// A live connection.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) app_id: String,
    pub(super) service_id: i32,
    pub(super) tx: mpsc::UnboundedSender<Outgoing>,
}

/// An ack as the connection task decoded it.
#[derive(Debug)]
pub(crate) struct Ack {
    pub code: i64,
    pub data: Option<Value>,
}

/// An attempt waiting for its ack, by the frames' `message_id`.
#[derive(Debug)]
pub(super) struct Waiter {
    pub(super) tx: oneshot::Sender<Ack>,
}

#[derive(Debug, Default)]
pub(super) struct HubInner {
    pub(super) tickets: HashMap<String, Ticket>,
    pub(super) conns: BTreeMap<u64, Conn>,
    pub(super) events: BTreeMap<u64, PushedEvent>,
    pub(super) waiting: HashMap<String, Waiter>,
    /// Frame `message_id` → event record: to count late acks.
    pub(super) frames: HashMap<String, u64>,
    /// HTTP delivery (its `url` can change at run time; its `tamper` list is moved to
    /// `tamper` at start).
    pub(super) callbacks: CallbackConfig,
    /// Tampering for the next HTTP attempts of any event, first first.
    pub(super) tamper: VecDeque<Tamper>,
    /// Tampering for the first HTTP attempt of one event (a push's own `tamper`), by record key.
    pub(super) event_tamper: HashMap<u64, Tamper>,
}

#[derive(Debug)]
pub(super) struct Core {
    pub(super) config: LongConnectionConfig,
    pub(super) rt: Option<tokio::runtime::Handle>,
    /// Source of SeqIDs, LogIDs, device ids and record keys: unique within a run.
    pub(super) counter: AtomicU64,
    pub(super) inner: Mutex<HubInner>,
    /// The HTTP client of HTTP delivery, or why none could be built.
    pub(super) http: Result<reqwest::Client, String>,
    /// The emulator's messages, which a card callback's answer may update (`answer.rs`). Weak:
    /// the hub lives inside [`Shared`]. Never locked together with the hub's lock.
    pub(super) store: Weak<Shared>,
}

/// The hub; cheap to clone (delivery tasks hold a clone).
#[derive(Debug, Clone)]
pub(crate) struct Hub(pub(super) Arc<Core>);

/// Removes its connection from the hub when dropped: when the socket task ends, or when the
/// upgrade never happened.
#[derive(Debug)]
pub(crate) struct ConnGuard {
    hub: Hub,
    pub id: u64,
    pub service_id: i32,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.hub.lock().conns.remove(&self.id).is_some() {
            tracing::debug!(device_id = self.id, "long connection closed");
        }
    }
}

/// Why a WebSocket upgrade is refused (answered as a handshake failure, lifecycle §4.2).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Refusal {
    #[error("ticket unknown or already used")]
    BadTicket,
    #[error("connection limit exceeded: {0} live connections")]
    TooMany(usize),
}

impl Hub {
    pub fn new(
        config: LongConnectionConfig,
        mut callbacks: CallbackConfig,
        store: Weak<Shared>,
    ) -> Hub {
        let tamper = std::mem::take(&mut callbacks.tamper).into();
        Hub(Arc::new(Core {
            config,
            rt: tokio::runtime::Handle::try_current().ok(),
            counter: AtomicU64::new(ids::now_ms()),
            inner: Mutex::new(HubInner {
                callbacks,
                tamper,
                ..HubInner::default()
            }),
            http: callback::client(),
            store,
        }))
    }

    /// Where HTTP deliveries go from the next attempt on (`None`: the long connection).
    pub fn set_callback_url(&self, url: Option<String>) {
        self.lock().callbacks.url = url;
    }

    /// The HTTP delivery settings now (`tamper` empty: the queue is kept apart).
    pub fn callbacks(&self) -> CallbackConfig {
        self.lock().callbacks.clone()
    }

    /// Make the next HTTP delivery attempt not yet tampered wrong as `tamper` says.
    pub fn tamper_next(&self, tamper: Tamper) {
        self.lock().tamper.push_back(tamper);
    }

    /// How many tamperings wait for the next HTTP attempts.
    pub fn tamper_queued(&self) -> usize {
        self.lock().tamper.len()
    }

    /// POST the `url_verification` challenge to `url` (default: the configured URL).
    pub async fn verify_url(&self, url: Option<&str>) -> Result<String, callback::VerifyError> {
        let config = self.callbacks();
        let url = url
            .map(str::to_string)
            .or_else(|| config.url.clone())
            .ok_or(callback::VerifyError::NoUrl)?;
        let client = self
            .0
            .http
            .as_ref()
            .map_err(|e| callback::VerifyError::NoClient(e.clone()))?;
        callback::verify(client, &config, &url).await
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, HubInner> {
        self.0.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn config(&self) -> &LongConnectionConfig {
        &self.0.config
    }

    /// A number never handed out before in this run.
    pub fn next_id(&self) -> u64 {
        self.0.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// Issue a one-use ticket for `app_id`; the endpoint puts it in the URL.
    pub fn issue_ticket(&self, app_id: &str) -> (String, Ticket) {
        let ticket = Ticket {
            app_id: app_id.to_string(),
            device_id: self.next_id(),
            service_id: (self.next_id() % 100_000) as i32 + 1,
        };
        let key = format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        self.lock().tickets.insert(key.clone(), ticket.clone());
        (key, ticket)
    }

    /// Redeem `ticket` (it must match `device_id`) and register a connection, unless the app is
    /// at its limit. The ticket is spent either way.
    pub fn connect(
        &self,
        ticket: &str,
        device_id: Option<u64>,
    ) -> Result<(ConnGuard, mpsc::UnboundedReceiver<Outgoing>), Refusal> {
        let mut s = self.lock();
        let t = s.tickets.remove(ticket).ok_or(Refusal::BadTicket)?;
        if device_id != Some(t.device_id) {
            return Err(Refusal::BadTicket);
        }
        let live = s.conns.values().filter(|c| c.app_id == t.app_id).count();
        if live >= self.0.config.max_connections_per_app {
            return Err(Refusal::TooMany(live));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        s.conns.insert(
            t.device_id,
            Conn {
                app_id: t.app_id.clone(),
                service_id: t.service_id,
                tx,
            },
        );
        tracing::debug!(app_id = %t.app_id, device_id = t.device_id, "long connection open");
        let guard = ConnGuard {
            hub: self.clone(),
            id: t.device_id,
            service_id: t.service_id,
        };
        Ok((guard, rx))
    }

    /// Live connections (all apps).
    pub fn live(&self) -> usize {
        self.lock().conns.len()
    }

    /// Close every live connection (each gets a close frame); how many there were.
    pub fn drop_all(&self) -> usize {
        let conns = std::mem::take(&mut self.lock().conns);
        for c in conns.values() {
            let _ = c.tx.send(Outgoing::Close);
        }
        conns.len()
    }

    /// Every pushed event, in push order.
    pub fn events(&self) -> Vec<PushedEvent> {
        self.lock().events.values().cloned().collect()
    }

    /// Forget pushed events (`reset`); live connections stay, running deliveries stop
    /// recording.
    pub fn reset(&self) {
        let mut s = self.lock();
        s.events.clear();
        s.frames.clear();
        s.waiting.clear();
        s.tamper.clear();
        s.event_tamper.clear();
    }

    /// An ack arrived (a data frame from the client): hand it to its waiting attempt, or count
    /// it as late.
    pub fn ack(&self, frame_message_id: &str, ack: Ack) {
        let mut s = self.lock();
        if let Some(w) = s.waiting.remove(frame_message_id) {
            let _ = w.tx.send(ack);
            return;
        }
        match s.frames.get(frame_message_id).copied() {
            Some(key) => {
                if let Some(e) = s.events.get_mut(&key) {
                    e.late_acks += 1;
                }
                tracing::debug!(frame_message_id, "late ack ignored");
            }
            None => tracing::warn!(frame_message_id, "ack for a frame never sent"),
        }
    }
}
