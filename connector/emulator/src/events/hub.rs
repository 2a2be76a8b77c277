//! The long connection's server-side state: tickets, live connections, pushed events, and the
//! delivery loop that waits for acks and redelivers.
//!
//! Why its own lock: deliveries run in their own tasks and wake on timers; keeping them off the
//! emulator's main state lock means a slow WebSocket never delays an OpenAPI answer. The lock is
//! never held across an `.await`. Frames reach a connection through an unbounded channel to the
//! task that owns its socket, so pushing is synchronous and callable from any thread.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::frame::{self, Frame, METHOD_DATA};
use super::{Delivery, DeliveryOutcome, EventsError, LongConnectionConfig, PushedEvent};
use crate::ids;

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
struct Conn {
    app_id: String,
    service_id: i32,
    tx: mpsc::UnboundedSender<Outgoing>,
}

/// An ack as the connection task decoded it.
#[derive(Debug)]
pub(crate) struct Ack {
    pub code: i64,
    pub data: Option<Value>,
}

/// An attempt waiting for its ack, by the frames' `message_id`.
#[derive(Debug)]
struct Waiter {
    tx: oneshot::Sender<Ack>,
}

#[derive(Debug, Default)]
struct HubInner {
    tickets: HashMap<String, Ticket>,
    conns: BTreeMap<u64, Conn>,
    events: BTreeMap<u64, PushedEvent>,
    waiting: HashMap<String, Waiter>,
    /// Frame `message_id` → event record: to count late acks.
    frames: HashMap<String, u64>,
}

#[derive(Debug)]
struct Core {
    config: LongConnectionConfig,
    rt: Option<tokio::runtime::Handle>,
    /// Source of SeqIDs, LogIDs, device ids and record keys: unique within a run.
    counter: AtomicU64,
    inner: Mutex<HubInner>,
}

/// The hub; cheap to clone (delivery tasks hold a clone).
#[derive(Debug, Clone)]
pub(crate) struct Hub(Arc<Core>);

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
    pub fn new(config: LongConnectionConfig) -> Hub {
        Hub(Arc::new(Core {
            config,
            rt: tokio::runtime::Handle::try_current().ok(),
            counter: AtomicU64::new(ids::now_ms()),
            inner: Mutex::new(HubInner::default()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, HubInner> {
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

    /// Push `payload` (an event JSON) to one live connection of `app_id`, redelivering per the
    /// retry schedule; then, if `then` is set, push that the same way (a duplicate after the
    /// first finished). Returns the event id.
    pub fn push(
        &self,
        app_id: &str,
        payload: Value,
        fragment_size: Option<usize>,
        then: Option<Value>,
    ) -> Result<String, EventsError> {
        let rt = self.0.rt.clone().ok_or(EventsError::NoRuntime)?;
        let first = self.record(app_id, payload)?;
        let second = then.map(|p| self.record_later(app_id, p)).transpose()?;
        let event_id = first.1.clone();
        let hub = self.clone();
        let size = fragment_size.or(self.0.config.fragment_size);
        rt.spawn(async move {
            hub.deliver(first.0, size).await;
            if let Some((payload, _)) = second {
                if let Ok((key, _)) = hub.record(&payload.app, payload.value) {
                    hub.deliver(key, size).await;
                }
            }
        });
        Ok(event_id)
    }

    /// Validate an event for a later [`Self::record`].
    fn record_later(&self, app_id: &str, value: Value) -> Result<(Later, String), EventsError> {
        let id = event_field(&value, "event_id").ok_or(EventsError::NotAnEvent)?;
        event_field(&value, "event_type").ok_or(EventsError::NotAnEvent)?;
        Ok((
            Later {
                app: app_id.to_string(),
                value,
            },
            id,
        ))
    }

    /// Add a record for a new push; (record key, event id).
    fn record(&self, app_id: &str, payload: Value) -> Result<(u64, String), EventsError> {
        let event_id = event_field(&payload, "event_id").ok_or(EventsError::NotAnEvent)?;
        let event_type = event_field(&payload, "event_type").ok_or(EventsError::NotAnEvent)?;
        let key = self.next_id();
        self.lock().events.insert(
            key,
            PushedEvent {
                event_id: event_id.clone(),
                event_type,
                app_id: app_id.to_string(),
                pushed_at_ms: ids::now_ms(),
                attempts: 0,
                acked: false,
                ack_code: None,
                ack_data: None,
                latency_ms: None,
                done: false,
                late_acks: 0,
                deliveries: Vec::new(),
                payload,
            },
        );
        Ok((key, event_id))
    }

    /// The first attempt, then one after each wait of the schedule, until one is acked.
    async fn deliver(&self, key: u64, fragment_size: Option<usize>) {
        let schedule = self.0.config.retry_schedule.clone();
        for (n, wait) in std::iter::once(Duration::ZERO).chain(schedule).enumerate() {
            tokio::time::sleep(wait).await;
            match self.attempt(key, fragment_size).await {
                Some(true) => break,
                Some(false) => tracing::debug!(key, attempt = n + 1, "event not acked"),
                None => return, // reset meanwhile
            }
        }
        if let Some(e) = self.lock().events.get_mut(&key) {
            e.done = true;
        }
    }

    /// One attempt: `Some(acked)`, or `None` when the record is gone.
    async fn attempt(&self, key: u64, fragment_size: Option<usize>) -> Option<bool> {
        let sent = self.send_frames(key, fragment_size)?;
        let Some((frame_message_id, rx, sent_at)) = sent else {
            return Some(false);
        };
        let deadline = self.0.config.ack_deadline;
        let answer = tokio::time::timeout(deadline, rx).await;
        let mut s = self.lock();
        s.waiting.remove(&frame_message_id);
        let e = s.events.get_mut(&key)?;
        let d = e.deliveries.last_mut()?;
        Some(match answer {
            Ok(Ok(ack)) if ack.code == 200 => {
                d.outcome = DeliveryOutcome::Acked;
                e.acked = true;
                e.ack_code = Some(200);
                e.ack_data = ack.data;
                e.latency_ms = Some(sent_at.elapsed().as_millis() as u64);
                true
            }
            Ok(Ok(ack)) => {
                d.outcome = DeliveryOutcome::Refused { code: ack.code };
                e.ack_code = Some(ack.code);
                false
            }
            _ => {
                d.outcome = DeliveryOutcome::NoAck;
                false
            }
        })
    }

    /// Send the event's frames to a random live connection of its app. `None`: the record is
    /// gone; `Some(None)`: no live connection (the attempt is recorded as failed).
    #[allow(clippy::type_complexity)]
    fn send_frames(
        &self,
        key: u64,
        fragment_size: Option<usize>,
    ) -> Option<Option<(String, oneshot::Receiver<Ack>, Instant)>> {
        let card_frames = self.0.config.callbacks_as_card_frames;
        let ids: Vec<u64> = (0..64).map(|_| self.next_id()).collect();
        let mut s = self.lock();
        let e = s.events.get(&key)?;
        let (app_id, bytes) = (e.app_id.clone(), e.payload.to_string().into_bytes());
        let kind = if card_frames && e.event_type == "card.action.trigger" {
            "card"
        } else {
            "event"
        };
        let live: Vec<u64> = s
            .conns
            .iter()
            .filter(|(_, c)| c.app_id == app_id)
            .map(|(id, _)| *id)
            .collect();
        // Cluster mode (lifecycle §4.5): one random live connection, no broadcast.
        let target = match live.len() {
            0 => None,
            n => Some(live[rand::random_range(0..n)]),
        };
        let mut delivery = Delivery {
            at_ms: ids::now_ms(),
            connection: target,
            frame_message_id: None,
            fragments: 0,
            outcome: DeliveryOutcome::NoConnection,
        };
        let conn = target.and_then(|id| s.conns.get(&id));
        let Some(conn) = conn else {
            let e = s.events.get_mut(&key)?;
            e.attempts += 1;
            e.deliveries.push(delivery);
            return Some(None);
        };
        let frame_message_id = format!("emu_{:016x}", rand::random::<u64>());
        let trace_id = format!("{:032x}", rand::random::<u128>());
        let parts = frame::split(&bytes, fragment_size);
        let sum = parts.len();
        let mut ids = ids
            .into_iter()
            .chain(std::iter::repeat_with(|| self.next_id()));
        for seq in frame::send_order(sum) {
            let f = Frame {
                seq_id: ids.next().unwrap_or_default(),
                log_id: ids.next().unwrap_or_default(),
                service: conn.service_id,
                method: METHOD_DATA,
                headers: vec![
                    frame::header("type", kind),
                    frame::header("message_id", frame_message_id.clone()),
                    frame::header("sum", sum.to_string()),
                    frame::header("seq", seq.to_string()),
                    frame::header("trace_id", trace_id.clone()),
                    frame::header("timestamp", ids::now_ms().to_string()),
                ],
                payload_encoding: None,
                payload_type: None,
                payload: parts.get(seq).cloned(),
                log_id_new: None,
            };
            let _ = conn.tx.send(Outgoing::Frame(f.to_bytes()));
        }
        let (tx, rx) = oneshot::channel();
        s.waiting.insert(frame_message_id.clone(), Waiter { tx });
        s.frames.insert(frame_message_id.clone(), key);
        delivery.frame_message_id = Some(frame_message_id.clone());
        delivery.fragments = sum;
        delivery.outcome = DeliveryOutcome::Pending;
        let e = s.events.get_mut(&key)?;
        e.attempts += 1;
        e.deliveries.push(delivery);
        Some(Some((frame_message_id, rx, Instant::now())))
    }
}

/// An event recorded only when its turn comes (the duplicate after the first push).
#[derive(Debug)]
struct Later {
    app: String,
    value: Value,
}

/// `header.<field>` of an event JSON, as a string.
fn event_field(event: &Value, field: &str) -> Option<String> {
    event
        .get("header")?
        .get(field)?
        .as_str()
        .map(str::to_string)
}
