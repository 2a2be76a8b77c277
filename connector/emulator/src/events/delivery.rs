//! Delivering one pushed event: frames to a random live connection of its app (cluster mode,
//! lifecycle §4.5) and the wait for its ack, or, when a callback URL is set, a POST there and the
//! wait for HTTP 200 (`callback.rs`, lifecycle §3.3); then the redeliveries of the retry schedule.
//! A card callback gets one attempt and no redelivery (lifecycle §2.1); its answer is then
//! judged as the user's client judges it (`answer.rs`).
//!
//! Why apart from `hub.rs`: the hub is bookkeeping under a lock; this is the only part that
//! runs over time (one task per push), and keeping it alone keeps the "never hold the lock
//! across an await" rule easy to check.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::oneshot;

use super::answer;
use super::callback::{self, Tamper};
use super::frame::{self, Frame, METHOD_DATA};
use super::hub::{Ack, Hub, Outgoing, Waiter};
use super::{Delivery, DeliveryOutcome, EventsError, PushedEvent, CARD_ACTION};
use crate::ids;

/// How one attempt ended, as the delivery loop needs it.
#[derive(Debug)]
enum Attempt {
    /// HTTP 200 / ack code 200 in time, with the answer (`ack_data`); `over_http` says how
    /// an empty answer reads.
    Answered {
        data: Option<Value>,
        over_http: bool,
    },
    /// A failure; the error a clicking user would see if the event is a card callback.
    Failed(u32),
}

impl Hub {
    /// Push `payload` (an event JSON) to one live connection of `app_id`, redelivering per the
    /// retry schedule; then, if `then` is set, push that the same way (a duplicate after the
    /// first finished). `tamper`: make this event's first HTTP attempt wrong. Returns the event
    /// id.
    pub fn push(
        &self,
        app_id: &str,
        payload: Value,
        fragment_size: Option<usize>,
        then: Option<Value>,
        tamper: Option<Tamper>,
    ) -> Result<String, EventsError> {
        let rt = self.0.rt.clone().ok_or(EventsError::NoRuntime)?;
        let first = self.record(app_id, payload)?;
        if let Some(t) = tamper {
            self.lock().event_tamper.insert(first.0, t);
        }
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
                client_error: None,
                toast: None,
                late_acks: 0,
                deliveries: Vec::new(),
                payload,
            },
        );
        Ok((key, event_id))
    }

    /// The first attempt, then one after each wait of the schedule, until one is acked; a card
    /// callback: the one attempt, then its answer judged.
    async fn deliver(&self, key: u64, fragment_size: Option<usize>) {
        let once = match self.lock().events.get(&key) {
            Some(e) => e.event_type == CARD_ACTION,
            None => return,
        };
        let schedule = if once {
            Vec::new()
        } else {
            self.0.config.retry_schedule.clone()
        };
        let mut last = None;
        for (n, wait) in std::iter::once(Duration::ZERO).chain(schedule).enumerate() {
            tokio::time::sleep(wait).await;
            match self.attempt(key, fragment_size).await {
                Some(a @ Attempt::Answered { .. }) => {
                    last = Some(a);
                    break;
                }
                Some(a) => {
                    tracing::debug!(key, attempt = n + 1, "event not acked");
                    last = Some(a);
                }
                None => return, // reset meanwhile
            }
        }
        if let (true, Some(a)) = (once, last) {
            self.judge(key, a);
        }
        if let Some(e) = self.lock().events.get_mut(&key) {
            e.done = true;
        }
    }

    /// What the clicking user sees after the attempt `a` of the card callback `key`: the
    /// client error or the toast recorded, the answer's card applied to the clicked message.
    /// The hub's lock and the message store's are taken one after the other, never together.
    fn judge(&self, key: u64, a: Attempt) {
        let Some(message_id) = self.lock().events.get(&key).map(|e| {
            e.payload
                .pointer("/event/context/open_message_id")
                .and_then(Value::as_str)
                .map(str::to_string)
        }) else {
            return;
        };
        let seen = match a {
            Attempt::Failed(code) => Err(code),
            Attempt::Answered { data, over_http } => match self.0.store.upgrade() {
                Some(shared) => {
                    answer::apply(&shared, message_id.as_deref(), data.as_ref(), over_http)
                }
                None => answer::judge(data.as_ref(), over_http, None).map(|v| v.toast),
            },
        };
        if let Some(e) = self.lock().events.get_mut(&key) {
            match seen {
                Ok(toast) => e.toast = toast,
                Err(code) => e.client_error = Some(code),
            }
        }
    }

    /// One attempt; `None` when the record is gone.
    async fn attempt(&self, key: u64, fragment_size: Option<usize>) -> Option<Attempt> {
        let url = self.lock().callbacks.url.clone();
        if let Some(url) = url {
            return self.http_attempt(key, url).await;
        }
        let sent = self.send_frames(key, fragment_size)?;
        let Some((frame_message_id, rx, sent_at)) = sent else {
            // No live connection: nothing answers the user's client (emulator's choice).
            return Some(Attempt::Failed(answer::NO_ANSWER));
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
                e.ack_data = ack.data.clone();
                e.latency_ms = Some(sent_at.elapsed().as_millis() as u64);
                Attempt::Answered {
                    data: ack.data,
                    over_http: false,
                }
            }
            Ok(Ok(ack)) => {
                d.outcome = DeliveryOutcome::Refused { code: ack.code };
                e.ack_code = Some(ack.code);
                Attempt::Failed(answer::NON_200)
            }
            _ => {
                d.outcome = DeliveryOutcome::NoAck;
                Attempt::Failed(answer::NO_ANSWER)
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
            url: None,
            tamper: None,
            error: None,
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
        for seq in frame::send_order(sum) {
            let f = Frame {
                seq_id: self.next_id(),
                log_id: self.next_id(),
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

impl Hub {
    /// One HTTP attempt: POST the event to `url`; acked by HTTP 200 within the ack deadline,
    /// whose body is the answer (a card callback's `{}` / `{"toast":…}`). `None`: record gone.
    async fn http_attempt(&self, key: u64, url: String) -> Option<Attempt> {
        let req = {
            let mut s = self.lock();
            let tamper = match s.event_tamper.remove(&key) {
                Some(t) => Some(t),
                None => s.tamper.pop_front(),
            };
            let config = s.callbacks.clone();
            let e = s.events.get_mut(&key)?;
            let req = callback::request(&config, e.payload.clone(), tamper, true);
            e.attempts += 1;
            e.deliveries.push(Delivery {
                at_ms: ids::now_ms(),
                connection: None,
                frame_message_id: None,
                fragments: 0,
                outcome: DeliveryOutcome::Pending,
                url: Some(url.clone()),
                tamper,
                error: None,
            });
            req
        };
        let sent_at = Instant::now();
        let result = match &self.0.http {
            Ok(client) => {
                let send = async {
                    let resp = callback::post(client, &url, &req).send().await?;
                    let status = resp.status().as_u16();
                    let body = resp.bytes().await?;
                    Ok::<_, reqwest::Error>((status, body))
                };
                match tokio::time::timeout(self.0.config.ack_deadline, send).await {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(e)) => {
                        let code = if e.is_connect() {
                            answer::CONNECT_FAILED
                        } else {
                            answer::REQUEST_FAILED
                        };
                        Err(Some((code, e.to_string())))
                    }
                    Err(_) => Err(None),
                }
            }
            Err(e) => Err(Some((
                answer::REQUEST_FAILED,
                format!("no HTTP client: {e}"),
            ))),
        };
        let mut s = self.lock();
        let e = s.events.get_mut(&key)?;
        let d = e.deliveries.last_mut()?;
        Some(match result {
            Ok((200, body)) => {
                let data = callback::answer_data(&body);
                d.outcome = DeliveryOutcome::Acked;
                e.acked = true;
                e.ack_code = Some(200);
                e.ack_data = data.clone();
                e.latency_ms = Some(sent_at.elapsed().as_millis() as u64);
                Attempt::Answered {
                    data,
                    over_http: true,
                }
            }
            Ok((status, _)) => {
                d.outcome = DeliveryOutcome::Refused {
                    code: i64::from(status),
                };
                e.ack_code = Some(i64::from(status));
                Attempt::Failed(answer::NON_200)
            }
            Err(None) => {
                d.outcome = DeliveryOutcome::NoAck;
                Attempt::Failed(answer::NO_ANSWER)
            }
            Err(Some((code, error))) => {
                tracing::debug!(key, %url, %error, "callback request failed");
                d.outcome = DeliveryOutcome::NoConnection;
                d.error = Some(error);
                Attempt::Failed(code)
            }
        })
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
