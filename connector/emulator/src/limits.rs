//! Rate limits (lark-api.md §4): the knobs ([`Limits`]) and a sliding-window limiter.
//!
//! Lark documents "N per second and M per minute; hitting either triggers" and a reset header
//! in whole seconds, so the limiter keeps the timestamps of admitted calls (a sliding log)
//! rather than fixed buckets: a fixed bucket would let a client burst 2×N across a boundary and
//! would make `x-ogw-ratelimit-reset` meaningless. A rejected call is not recorded, so being
//! throttled never consumes quota.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Rate-limit settings. A limit of 0 means "no limit for that window".
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Limits {
    /// Master switch; `false` disables every limit below.
    pub enabled: bool,
    /// Per app, per API (send, urgent, batch_get_id each have their own budget, §4): 50/s.
    pub app_per_sec: u32,
    /// Per app, per API: 1000/min.
    pub app_per_min: u32,
    /// Per canonical receiver (one user, whatever id type addressed it, or one chat): 5/s.
    pub receiver_per_sec: u32,
    /// Per custom-bot webhook: 5/s.
    pub webhook_per_sec: u32,
    /// Per custom-bot webhook: 100/min.
    pub webhook_per_min: u32,
    /// Per message: PATCH and PUT updates of one message id share 5/s (lifecycle §5: documented
    /// for PATCH; for PUT UNCONFIRMED, modelled the same). Over it: 230020, HTTP 400.
    pub message_update_per_sec: u32,
}

impl Default for Limits {
    /// The real platform's numbers, switched on.
    fn default() -> Self {
        Self {
            enabled: true,
            app_per_sec: 50,
            app_per_min: 1000,
            receiver_per_sec: 5,
            webhook_per_sec: 5,
            webhook_per_min: 100,
            message_update_per_sec: 5,
        }
    }
}

impl Limits {
    /// No rate limiting at all (handy for functional tests that fire fast).
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
}

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

/// Why a call was refused: which window's cap was hit and how long until a slot frees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    pub limit: u32,
    pub retry_after: Duration,
}

impl Throttled {
    /// Whole seconds for `x-ogw-ratelimit-reset`, rounded up and at least 1 (a client told "0"
    /// would retry immediately and be refused again).
    pub fn reset_secs(&self) -> u64 {
        let ms = self.retry_after.as_millis();
        (ms.div_ceil(1000) as u64).max(1)
    }
}

/// The admitted-call log of one window.
#[derive(Debug, Default)]
struct Window {
    hits: VecDeque<Instant>,
}

impl Window {
    /// `Some(wait)` when `cap` calls already happened within `span` before `now`.
    fn check(&mut self, now: Instant, span: Duration, cap: u32) -> Option<Duration> {
        while let Some(&t) = self.hits.front() {
            if now.duration_since(t) >= span {
                self.hits.pop_front();
            } else {
                break;
            }
        }
        if cap == 0 || self.hits.len() < cap as usize {
            return None;
        }
        // The slot that frees first is the one `cap` calls back from the end; after a limit was
        // lowered the log can hold more than `cap` entries.
        let idx = self.hits.len() - cap as usize;
        let t = self.hits[idx];
        Some((t + span).saturating_duration_since(now))
    }
}

/// A per-second plus per-minute limiter for one key.
#[derive(Debug, Default)]
pub struct RateLimiter {
    per_sec: Window,
    per_min: Window,
}

impl RateLimiter {
    /// Admit and record one call, or say why not (recording nothing).
    pub fn try_acquire(
        &mut self,
        now: Instant,
        per_sec: u32,
        per_min: u32,
    ) -> Result<(), Throttled> {
        let sec = self.per_sec.check(now, SECOND, per_sec);
        let min = self.per_min.check(now, MINUTE, per_min);
        // When both are exhausted the client must wait for the later one.
        let refused = match (sec, min) {
            (None, None) => None,
            (Some(w), None) => Some(Throttled {
                limit: per_sec,
                retry_after: w,
            }),
            (None, Some(w)) => Some(Throttled {
                limit: per_min,
                retry_after: w,
            }),
            (Some(a), Some(b)) if a >= b => Some(Throttled {
                limit: per_sec,
                retry_after: a,
            }),
            (Some(_), Some(b)) => Some(Throttled {
                limit: per_min,
                retry_after: b,
            }),
        };
        if let Some(t) = refused {
            return Err(t);
        }
        // Only keep timestamps for windows that are actually limited, so an unlimited window
        // does not grow without bound.
        if per_sec > 0 {
            self.per_sec.hits.push_back(now);
        }
        if per_min > 0 {
            self.per_min.hits.push_back(now);
        }
        Ok(())
    }

    fn is_idle(&self, now: Instant) -> bool {
        let recent =
            |w: &Window, span| w.hits.back().is_some_and(|&t| now.duration_since(t) < span);
        !recent(&self.per_sec, SECOND) && !recent(&self.per_min, MINUTE)
    }
}

/// Limiters keyed by string (app+api, receiver, webhook token).
#[derive(Debug, Default)]
pub struct LimiterMap {
    map: HashMap<String, RateLimiter>,
    /// Prune when the map grows past this; doubles after each prune (amortised O(1)).
    prune_at: usize,
}

/// Above this many keys, idle limiters are dropped so that sending to a million distinct
/// receivers does not keep a million empty logs alive.
const PRUNE_ABOVE: usize = 10_000;

impl LimiterMap {
    pub fn try_acquire(
        &mut self,
        key: &str,
        now: Instant,
        per_sec: u32,
        per_min: u32,
    ) -> Result<(), Throttled> {
        if self.map.len() > self.prune_at.max(PRUNE_ABOVE) {
            self.map.retain(|_, l| !l.is_idle(now));
            self.prune_at = self.map.len() * 2;
        }
        if let Some(l) = self.map.get_mut(key) {
            return l.try_acquire(now, per_sec, per_min);
        }
        let mut l = RateLimiter::default();
        let r = l.try_acquire(now, per_sec, per_min);
        self.map.insert(key.to_string(), l);
        r
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_cap_and_reset() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.try_acquire(t0, 3, 0).is_ok());
        }
        let refused = l
            .try_acquire(t0 + Duration::from_millis(200), 3, 0)
            .expect_err("fourth call within a second");
        assert_eq!(refused.limit, 3);
        assert_eq!(refused.retry_after, Duration::from_millis(800));
        assert_eq!(refused.reset_secs(), 1);
        // The window slides: one second after the first calls, slots are free again.
        assert!(l.try_acquire(t0 + SECOND, 3, 0).is_ok());
    }

    #[test]
    fn rejected_calls_do_not_consume_quota() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        assert!(l.try_acquire(t0, 1, 0).is_ok());
        for i in 1..10 {
            assert!(l
                .try_acquire(t0 + Duration::from_millis(i * 50), 1, 0)
                .is_err());
        }
        assert!(l.try_acquire(t0 + SECOND, 1, 0).is_ok());
    }

    #[test]
    fn per_minute_cap_reports_minute_reset() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        assert!(l.try_acquire(t0, 0, 2).is_ok());
        assert!(l.try_acquire(t0 + Duration::from_secs(5), 0, 2).is_ok());
        let r = l
            .try_acquire(t0 + Duration::from_secs(10), 0, 2)
            .expect_err("third call in a minute");
        assert_eq!(r.limit, 2);
        assert_eq!(r.reset_secs(), 50);
    }

    #[test]
    fn zero_means_unlimited() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(l.try_acquire(t0, 0, 0).is_ok());
        }
    }

    #[test]
    fn keyed_limiters_are_independent() {
        let mut m = LimiterMap::default();
        let t0 = Instant::now();
        assert!(m.try_acquire("a", t0, 1, 0).is_ok());
        assert!(m.try_acquire("a", t0, 1, 0).is_err());
        assert!(m.try_acquire("b", t0, 1, 0).is_ok());
    }
}
