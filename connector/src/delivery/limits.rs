//! Lark's quotas, enforced *before* sending (lark-api.md §4), so a conforming Lark never has to
//! throttle us.
//!
//! - App-wide: 50 requests/s **and** 1000/min for sending, per app. Two `governor` GCRA limiters
//!   whose burst is sized so that no sliding window (Lark counts one) can exceed the quota; see
//!   `direct`. A send goes out the moment its permit is granted.
//! - Per receiver (user or chat): 5/s. Not a governor keyed limiter: its permit would be granted
//!   *before* the app-wide wait, and the app wait varies from message to message, so the actual send
//!   times of one receiver could bunch up and put six sends into one second. Instead a receiver is
//!   a small gate holding the time of its last send: the next send may leave only `interval` after
//!   it, checked again after the app-wide wait, so the spacing holds at the moment of sending.
//! - Every interval is 0.5% wider than the quota (`HEADROOM`): Lark counts arrivals, and a few
//!   milliseconds of network jitter must not tip a window over.
//! - Throttle answers that still come (99991400 with `x-ogw-ratelimit-reset`, 230020, 11232, 11233)
//!   hold the matching scope back for the time Lark names, without dropping anything.
//! - With `lark.rate.share=auto`, the app quotas are scaled by this instance's share of the
//!   partitions, recomputed on every rebalance, so a consumer group shares one app's budget.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;
/// Requests are spaced this much wider than the nominal quota.
pub const HEADROOM: f64 = 1.005;

/// Quotas from the `lark.rate.*` keys; 0 turns a quota off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateConfig {
    pub app_per_second: u32,
    pub app_per_minute: u32,
    pub receiver_per_second: u32,
    /// Per custom-bot webhook (lark-api.md §8: 5/s and 100/min per bot).
    pub webhook_per_second: u32,
    pub webhook_per_minute: u32,
    /// Scale the app quotas by this instance's share of the partitions.
    pub share_auto: bool,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            app_per_second: 50,
            app_per_minute: 1000,
            receiver_per_second: 5,
            webhook_per_second: 5,
            webhook_per_minute: 100,
            share_auto: true,
        }
    }
}

struct AppLimiters {
    per_second: Option<DefaultDirectRateLimiter>,
    per_minute: Option<DefaultDirectRateLimiter>,
    share: f64,
}

/// The minimum gap between two sends for `limit` requests per `window` (with headroom).
fn interval(limit: u32, window: Duration) -> Option<Duration> {
    (limit > 0).then(|| window.mul_f64(HEADROOM / f64::from(limit)))
}

/// A GCRA limiter for `limit` requests per `window`, as a sliding-window ceiling.
///
/// GCRA with emission interval `T = window × HEADROOM / limit` and burst `b` admits at most
/// `floor(limit / HEADROOM) + b` requests in any window. The burst is the slack left under the
/// limit (minus one for jitter): it lets a permit granted late (a task woken a little after its
/// slot) be caught up instead of pushing every later slot back, so a long run stays at the ceiling.
/// For 1000/min that is a burst of 4 (at most 999 in any minute); for 50/s it is 1.
fn direct(limit: f64, window: Duration) -> Option<DefaultDirectRateLimiter> {
    if limit <= 0.0 {
        return None;
    }
    let period = window.mul_f64(HEADROOM / limit);
    let steady = (limit / HEADROOM).floor();
    let slack = (limit.floor() - steady - 1.0).max(1.0) as u32;
    let burst = NonZeroU32::new(slack).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .map(|q| q.allow_burst(burst))
        .map(RateLimiter::direct)
}

impl AppLimiters {
    fn new(cfg: &RateConfig, share: f64) -> Self {
        // A share never scales a quota below one request per window.
        let scaled = |q: u32| {
            if q == 0 {
                0.0
            } else {
                (f64::from(q) * share).max(1.0)
            }
        };
        AppLimiters {
            per_second: direct(scaled(cfg.app_per_second), Duration::from_secs(1)),
            per_minute: direct(scaled(cfg.app_per_minute), Duration::from_secs(60)),
            share,
        }
    }
}

/// The time of a receiver's last send, shared by every queue that resolves to that receiver.
type Gate = Arc<tokio::sync::Mutex<Option<Instant>>>;

pub struct RateLimits {
    cfg: RateConfig,
    app: RwLock<Arc<AppLimiters>>,
    receiver_interval: Option<Duration>,
    receivers: Mutex<HashMap<String, Gate>>,
    webhook_interval: Option<Duration>,
    /// Per-webhook per-minute limiters, created on first use.
    webhooks: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
    app_hold: Mutex<Option<Instant>>,
    /// The last update of each message recently updated, for [`MESSAGE_UPDATES_PER_SECOND`].
    messages: Mutex<HashMap<String, Gate>>,
    message_interval: Duration,
}

/// In-place updates of one message (PATCH, PUT) per second. Lark allows 5 per message
/// (230020 beyond, lifecycle doc §1.1, §5); 4 leaves room for jitter, as the doc recommends, and
/// coalescing (only the newest waiting version is sent) makes the spacing cost nothing.
pub const MESSAGE_UPDATES_PER_SECOND: u32 = 4;

/// Permission to send to one receiver (and, for an update, to touch one message). Hold it across
/// the request; dropping it records the send.
pub struct Permit {
    gate: Option<tokio::sync::OwnedMutexGuard<Option<Instant>>>,
    /// The message's own gate, for an update ([`RateLimits::acquire_update`]).
    message: Option<tokio::sync::OwnedMutexGuard<Option<Instant>>>,
}

impl Permit {
    /// Marks the send as done now; the receiver's next send waits `interval` from here.
    pub fn sent(mut self) {
        for g in [self.gate.as_mut(), self.message.as_mut()]
            .into_iter()
            .flatten()
        {
            **g = Some(Instant::now().max(g.unwrap_or_else(Instant::now)));
        }
    }

    /// Lark throttled this receiver (or message): keep it quiet for `hold` before its next send.
    pub fn hold(mut self, hold: Duration) {
        for g in [self.gate.as_mut(), self.message.as_mut()]
            .into_iter()
            .flatten()
        {
            **g = Some(Instant::now() + hold);
        }
    }
}

impl RateLimits {
    pub fn new(cfg: RateConfig) -> Self {
        RateLimits {
            app: RwLock::new(Arc::new(AppLimiters::new(&cfg, 1.0))),
            receiver_interval: interval(cfg.receiver_per_second, Duration::from_secs(1)),
            receivers: Mutex::new(HashMap::new()),
            webhook_interval: interval(cfg.webhook_per_second, Duration::from_secs(1)),
            webhooks: Mutex::new(HashMap::new()),
            app_hold: Mutex::new(None),
            messages: Mutex::new(HashMap::new()),
            message_interval: Duration::from_secs(1)
                .mul_f64(HEADROOM / f64::from(MESSAGE_UPDATES_PER_SECOND)),
            cfg,
        }
    }

    pub fn config(&self) -> RateConfig {
        self.cfg
    }

    /// Every quota is off and Lark asked for no hold: nothing to wait for.
    fn unlimited(&self) -> bool {
        self.receiver_interval.is_none()
            && self.cfg.app_per_second == 0
            && self.cfg.app_per_minute == 0
            && self.app_hold.lock().is_ok_and(|h| h.is_none())
    }

    /// Waits until a message may go to `receiver` (a canonical key such as `open_id:ou_x`), then
    /// returns the permit to hold while sending. Waits never fail, they only take time.
    pub async fn acquire(&self, receiver: &str) -> Permit {
        if self.unlimited() {
            return Permit {
                gate: None,
                message: None,
            };
        }
        let started = Instant::now();
        let gate = match self.receiver_interval {
            None => None,
            Some(_) => {
                let g = self
                    .receivers
                    .lock()
                    .map(|mut m| m.entry(receiver.to_string()).or_default().clone())
                    .ok();
                match g {
                    Some(g) => Some(g.lock_owned().await),
                    None => None,
                }
            }
        };
        let mut receiver_waited;
        loop {
            // 1. The receiver's spacing (and any hold Lark asked for).
            if let (Some(g), Some(iv)) = (gate.as_ref(), self.receiver_interval) {
                if let Some(last) = **g {
                    let ready = last + iv;
                    if ready > Instant::now() {
                        tokio::time::sleep_until(ready).await;
                    }
                }
            }
            receiver_waited = started.elapsed();
            // 2. An app-wide hold after a throttle answer.
            let hold = self.app_hold.lock().ok().and_then(|h| *h);
            if let Some(until) = hold.filter(|u| *u > Instant::now()) {
                tokio::time::sleep_until(until).await;
                continue;
            }
            // 3. The app quotas; the send follows the grant immediately.
            let app = self.app.read().map(|a| a.clone()).ok();
            if let Some(app) = app {
                if let Some(l) = &app.per_minute {
                    l.until_ready().await;
                }
                if let Some(l) = &app.per_second {
                    l.until_ready().await;
                }
            }
            break;
        }
        let waited = started.elapsed();
        crate::telemetry::rate_limit_wait("receiver", receiver_waited);
        crate::telemetry::rate_limit_wait("app", waited.saturating_sub(receiver_waited));
        Permit {
            gate,
            message: None,
        }
    }

    /// Waits until message `message_id` may be updated in place: its own spacing
    /// ([`MESSAGE_UPDATES_PER_SECOND`]), then everything [`acquire`](Self::acquire) waits for
    /// (its receiver's spacing and the app quotas; updates draw on the same app budget as sends,
    /// the cautious reading of lifecycle doc §5, and keep a chat within its 5/s as a whole).
    pub async fn acquire_update(&self, receiver: &str, message_id: &str) -> Permit {
        let gate = self
            .messages
            .lock()
            .map(|mut m| m.entry(message_id.to_string()).or_default().clone())
            .ok();
        let message = match gate {
            Some(g) => {
                let guard = g.lock_owned().await;
                if let Some(last) = *guard {
                    if last + self.message_interval > Instant::now() {
                        tokio::time::sleep_until(last + self.message_interval).await;
                    }
                }
                Some(guard)
            }
            None => None,
        };
        let mut permit = self.acquire(receiver).await;
        permit.message = message;
        permit
    }

    /// Waits until a message may go to custom-bot webhook `name`: its 5/s spacing and its
    /// 100/min quota. Webhook pushes do not count toward the app's quota (lark-api.md §4), so the
    /// app limiters are not consulted.
    pub async fn acquire_webhook(&self, name: &str) -> Permit {
        let gate = match self.webhook_interval {
            None => None,
            Some(iv) => {
                let g = self
                    .receivers
                    .lock()
                    .map(|mut m| m.entry(format!("webhook:{name}")).or_default().clone())
                    .ok();
                match g {
                    Some(g) => {
                        let guard = g.lock_owned().await;
                        if let Some(last) = *guard {
                            if last + iv > Instant::now() {
                                tokio::time::sleep_until(last + iv).await;
                            }
                        }
                        Some(guard)
                    }
                    None => None,
                }
            }
        };
        let per_minute = self.webhooks.lock().ok().and_then(|mut m| {
            if let Some(l) = m.get(name) {
                return Some(l.clone());
            }
            let l = Arc::new(direct(
                f64::from(self.cfg.webhook_per_minute),
                Duration::from_secs(60),
            )?);
            m.insert(name.to_string(), l.clone());
            Some(l)
        });
        if let Some(l) = per_minute {
            l.until_ready().await;
        }
        Permit {
            gate,
            message: None,
        }
    }

    /// Lark throttled the whole app: no send starts before `hold` has passed.
    pub fn hold_app(&self, hold: Duration) {
        if let Ok(mut h) = self.app_hold.lock() {
            let until = Instant::now() + hold;
            *h = Some(h.map_or(until, |u| u.max(until)));
        }
    }

    /// Sets this instance's share of the group's partitions (0 < share ≤ 1) when
    /// `lark.rate.share=auto`; rebuilds the app limiters only when it changed.
    pub fn set_share(&self, share: f64) {
        if !(self.cfg.share_auto && share > 0.0 && share <= 1.0) {
            return;
        }
        if let Ok(mut app) = self.app.write() {
            if (app.share - share).abs() > 1e-9 {
                *app = Arc::new(AppLimiters::new(&self.cfg, share));
            }
        }
    }

    pub fn share(&self) -> f64 {
        self.app.read().map(|a| a.share).unwrap_or(1.0)
    }

    /// Forgets receivers idle for longer than their interval (keeps memory flat with many
    /// receivers). Call periodically.
    pub fn forget_idle(&self) {
        let message_iv = self.message_interval;
        if let Ok(mut m) = self.messages.lock() {
            m.retain(|_, g| match g.try_lock() {
                Ok(last) => last.is_some_and(|l| l + message_iv > Instant::now()),
                Err(_) => true, // in use
            });
        }
        let Some(iv) = self.receiver_interval else {
            return;
        };
        if let Ok(mut m) = self.receivers.lock() {
            m.retain(|_, g| match g.try_lock() {
                Ok(last) => last.is_some_and(|l| l + iv > Instant::now()),
                Err(_) => true, // in use
            });
        }
    }

    pub fn tracked_receivers(&self) -> usize {
        self.receivers.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(per_s: u32, per_min: u32, recv: u32) -> RateConfig {
        RateConfig {
            app_per_second: per_s,
            app_per_minute: per_min,
            receiver_per_second: recv,
            webhook_per_second: 5,
            webhook_per_minute: 100,
            share_auto: true,
        }
    }

    /// Sends `n` permits for `receiver` back to back and returns their times.
    async fn sends(l: &RateLimits, receiver: &str, n: usize) -> Vec<tokio::time::Instant> {
        let mut out = Vec::new();
        for _ in 0..n {
            let p = l.acquire(receiver).await;
            out.push(tokio::time::Instant::now());
            p.sent();
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn receiver_spacing_holds_at_send_time() {
        let l = RateLimits::new(cfg(0, 0, 5));
        let t = sends(&l, "open_id:a", 11).await;
        for w in t.windows(2) {
            assert!(
                w[1] - w[0] >= Duration::from_millis(201),
                "{:?}",
                w[1] - w[0]
            );
        }
        // Any 1 s window holds at most 5 sends.
        for (i, start) in t.iter().enumerate() {
            let n = t[i..]
                .iter()
                .filter(|x| **x - *start < Duration::from_secs(1))
                .count();
            assert!(n <= 5, "{n} sends within 1 s");
        }
        // Another receiver is not held back by the first one.
        let before = tokio::time::Instant::now();
        l.acquire("open_id:b").await.sent();
        assert_eq!(tokio::time::Instant::now(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn updates_of_one_message_are_spaced_by_its_own_gate() {
        // No receiver spacing: only the message's gate holds updates back.
        let l = RateLimits::new(cfg(0, 0, 0));
        let mut t = Vec::new();
        for _ in 0..9 {
            let p = l.acquire_update("chat_id:oc_1", "om_1").await;
            t.push(tokio::time::Instant::now());
            p.sent();
        }
        for w in t.windows(2) {
            assert!(
                w[1] - w[0] >= Duration::from_millis(251),
                "{:?}",
                w[1] - w[0]
            );
        }
        // Lark's 5 per message per second is never reached (4, with headroom).
        for (i, start) in t.iter().enumerate() {
            let n = t[i..]
                .iter()
                .filter(|x| **x - *start < Duration::from_secs(1))
                .count();
            assert!(
                n <= MESSAGE_UPDATES_PER_SECOND as usize,
                "{n} updates within 1 s"
            );
        }
        // Another message of the same chat is not held back by the first one's gate.
        let before = tokio::time::Instant::now();
        l.acquire_update("chat_id:oc_1", "om_2").await.sent();
        assert_eq!(tokio::time::Instant::now(), before);
        // A throttle answer holds the message back.
        l.acquire_update("chat_id:oc_1", "om_2")
            .await
            .hold(Duration::from_secs(3));
        let before = tokio::time::Instant::now();
        l.acquire_update("chat_id:oc_1", "om_2").await.sent();
        assert!(tokio::time::Instant::now() - before >= Duration::from_secs(3));
    }

    // governor keeps its own (real) clock, so app-quota tests run in real time and check only
    // the ceiling, never the speed (that is the benchmark's job).
    #[tokio::test]
    async fn app_quota_is_a_sliding_window_ceiling() {
        let l = RateLimits::new(cfg(50, 0, 0));
        let mut times = Vec::new();
        for i in 0..70 {
            l.acquire(&format!("r{i}")).await.sent();
            times.push(Instant::now());
        }
        for (i, s) in times.iter().enumerate() {
            let n = times[i..]
                .iter()
                .filter(|x| **x - *s < Duration::from_secs(1))
                .count();
            assert!(n <= 50, "{n} sends in one second");
        }
    }

    #[test]
    fn burst_never_lets_a_window_exceed_the_quota() {
        for (limit, window) in [
            (1000.0, 60.0),
            (50.0, 1.0),
            (5.0, 1.0),
            (990.0, 60.0),
            (1.0, 60.0),
        ] {
            let period = window * HEADROOM / limit;
            let steady = (limit / HEADROOM).floor();
            let burst = (limit - steady - 1.0).max(1.0);
            // GCRA's bound: the steady rate in the window plus the burst.
            assert!(
                (window / period).floor() + burst <= limit,
                "{limit}/{window}s"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn holds_delay_without_dropping() {
        let l = RateLimits::new(cfg(0, 0, 5));
        l.hold_app(Duration::from_secs(3));
        let start = tokio::time::Instant::now();
        l.acquire("x").await.hold(Duration::from_secs(1));
        assert!(tokio::time::Instant::now() - start >= Duration::from_secs(3));
        let t = tokio::time::Instant::now();
        l.acquire("x").await.sent();
        assert!(tokio::time::Instant::now() - t >= Duration::from_millis(1201));
    }

    #[tokio::test]
    async fn share_scales_the_app_quota() {
        let l = RateLimits::new(cfg(50, 0, 0));
        l.set_share(0.5);
        assert_eq!(l.share(), 0.5);
        let mut times = Vec::new();
        for i in 0..30 {
            l.acquire(&format!("r{i}")).await.sent();
            times.push(Instant::now());
        }
        // At half the quota no second may hold more than 25 sends.
        for (i, s) in times.iter().enumerate() {
            let n = times[i..]
                .iter()
                .filter(|x| **x - *s < Duration::from_secs(1))
                .count();
            assert!(n <= 25, "{n} sends in one second at share 0.5");
        }
        l.set_share(0.0); // ignored: not a share
        assert_eq!(l.share(), 0.5);
    }

    #[tokio::test]
    async fn webhooks_have_their_own_spacing_and_skip_the_app_quota() {
        // App quota of 1/min would block for a minute if webhooks used it.
        let l = RateLimits::new(RateConfig {
            app_per_second: 1,
            app_per_minute: 1,
            ..cfg(0, 0, 0)
        });
        let mut times = Vec::new();
        for _ in 0..4 {
            l.acquire_webhook("ops").await.sent();
            times.push(Instant::now());
        }
        for w in times.windows(2) {
            assert!(
                w[1] - w[0] >= Duration::from_millis(201),
                "{:?}",
                w[1] - w[0]
            );
        }
        assert!(
            times[3] - times[0] < Duration::from_secs(5),
            "not held by the app quota"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_receivers_are_forgotten() {
        let l = RateLimits::new(cfg(0, 0, 5));
        for i in 0..10 {
            l.acquire(&format!("r{i}")).await.sent();
        }
        assert_eq!(l.tracked_receivers(), 10);
        tokio::time::sleep(Duration::from_secs(1)).await;
        l.forget_idle();
        assert_eq!(l.tracked_receivers(), 0);
    }
}
