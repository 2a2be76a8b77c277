//! Backpressure: when the loop stops taking records, and when it pauses and resumes partitions.
//!
//! Two steps. At the buffer bound the loop first stops taking records: they wait in librdkafka's
//! prefetch queue, itself bounded (`queued.max.messages.kbytes`). If the buffer is still full after
//! `buffer.pause.after.ms`, every assigned partition is paused (and partitions assigned while
//! paused are paused too). Pausing is kept for sustained pressure because librdkafka drops its
//! prefetched records on pause and fetches them again on resume, which for a short burst costs
//! more than it saves. Taking, and the partitions, resume once the buffer is down to half. A pause
//! through the REST API pauses at once.
//!
//! The decision ([`Backpressure::step`]) is pure: it takes the load, the clock and the rebalance
//! flag as arguments, so it is unit-tested on fabricated `Instant`s. [`apply`] carries an
//! [`Action`] out on the consumer.

use std::time::Instant;

use rdkafka::consumer::Consumer;

use crate::config::BufferConfig;
use crate::source::SinkConsumer;
use crate::telemetry::SinkStats;

/// What the receiver queues hold right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Load {
    pub messages: usize,
    pub bytes: usize,
}

/// What to do to the assigned partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Pause every assigned partition. `newly`: they were not paused yet (otherwise a rebalance
    /// assigned partitions while paused); `by_user`: the admin API asked for it.
    Pause { newly: bool, by_user: bool },
    /// Resume every assigned partition: the buffer is down to half.
    Resume,
}

/// Where the loop stands with backpressure.
#[derive(Debug, Default)]
pub(super) struct Backpressure {
    /// Since when the buffer has been at its bound (cleared once it has drained to half).
    full_since: Option<Instant>,
    /// The assigned partitions are paused in librdkafka (set by [`Backpressure::done`], so a
    /// pause that failed is asked for again on the next step).
    paused: bool,
}

impl Backpressure {
    /// Whether the loop takes records from librdkafka now. While the buffer is full but the
    /// partitions are not paused yet it does not: the records wait in librdkafka's bounded
    /// prefetch queue. Once paused it polls again, so the group never evicts the instance.
    pub fn taking(&self) -> bool {
        self.full_since.is_none() || self.paused
    }

    /// Updates the state for `load` at `now` and says what to do to the partitions, if anything.
    /// `user_paused`: paused through the admin API; `reassigned`: partitions were assigned since
    /// the last step (they start unpaused in librdkafka).
    pub fn step(
        &mut self,
        load: Load,
        bound: &BufferConfig,
        user_paused: bool,
        reassigned: bool,
        now: Instant,
    ) -> Option<Action> {
        let over =
            user_paused || load.messages >= bound.max_messages || load.bytes >= bound.max_bytes;
        let drained = !user_paused
            && load.messages <= bound.max_messages / 2
            && load.bytes <= bound.max_bytes / 2;
        if over && self.full_since.is_none() {
            self.full_since = Some(now);
        } else if drained {
            self.full_since = None;
        }
        let held_long = self
            .full_since
            .is_some_and(|t| now.saturating_duration_since(t) >= bound.pause_after);
        if (user_paused || held_long) && (!self.paused || reassigned) {
            Some(Action::Pause {
                newly: !self.paused,
                by_user: user_paused,
            })
        } else if self.paused && drained {
            Some(Action::Resume)
        } else {
            None
        }
    }

    /// Whether the assigned partitions are paused by backpressure (or the admin API).
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Records that `action` took effect on the consumer.
    pub fn done(&mut self, action: Action) {
        self.paused = matches!(action, Action::Pause { .. });
    }
}

/// Carries `action` out on every assigned partition (a resume leaves out the partitions for which
/// `restoring` is true: they wait for their state, see `super::restore`); returns whether it took
/// effect.
pub(super) fn apply(
    action: Action,
    load: Load,
    consumer: &SinkConsumer,
    stats: &SinkStats,
    restoring: &dyn Fn(&str, i32) -> bool,
) -> bool {
    // Only now ask for the assignment: it is a round trip to librdkafka's main thread, too
    // dear for every record (it was a tenth of the connector's CPU in the engine benchmark).
    let Ok(assignment) = consumer.assignment() else {
        return false;
    };
    let (messages, bytes) = (load.messages, load.bytes);
    match action {
        Action::Pause { newly, by_user } => match consumer.pause(&assignment) {
            Ok(()) => {
                if newly {
                    if by_user {
                        tracing::info!("paused: partitions paused");
                    } else {
                        tracing::info!(messages, bytes, "buffer full: partitions paused");
                    }
                }
                stats.paused(assignment.count());
                true
            }
            Err(e) => {
                tracing::warn!("pausing partitions failed: {e}");
                false
            }
        },
        Action::Resume => match consumer.resume(&without(&assignment, restoring)) {
            Ok(()) => {
                tracing::info!(messages, bytes, "buffer drained: partitions resumed");
                stats.paused(0);
                true
            }
            Err(e) => {
                tracing::warn!("resuming partitions failed: {e}");
                false
            }
        },
    }
}

/// `assignment` without the partitions `leave_out` names.
fn without(
    assignment: &rdkafka::TopicPartitionList,
    leave_out: &dyn Fn(&str, i32) -> bool,
) -> rdkafka::TopicPartitionList {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for e in assignment.elements() {
        if !leave_out(e.topic(), e.partition()) {
            tpl.add_partition(e.topic(), e.partition());
        }
    }
    tpl
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A state under test and a fabricated clock: every step is at `t0 + ms`.
    struct Sim {
        bp: Backpressure,
        bound: BufferConfig,
        t0: Instant,
    }

    impl Sim {
        /// 100 messages / 10 000 bytes, paused after 1 s (`buffer.pause.after.ms=1000`).
        fn new() -> Self {
            Self::with_delay(Duration::from_millis(1000))
        }

        fn with_delay(pause_after: Duration) -> Self {
            let bound = BufferConfig {
                max_messages: 100,
                max_bytes: 10_000,
                pause_after,
            };
            let (bp, t0) = (Backpressure::default(), Instant::now());
            Sim { bp, bound, t0 }
        }

        /// One step with the buffer's load; no admin pause, no rebalance.
        fn at(&mut self, ms: u64, messages: usize, bytes: usize) -> Option<Action> {
            self.step(ms, messages, bytes, false, false)
        }

        fn step(&mut self, ms: u64, m: usize, b: usize, user: bool, re: bool) -> Option<Action> {
            let now = self.t0 + Duration::from_millis(ms);
            let load = Load {
                messages: m,
                bytes: b,
            };
            self.bp.step(load, &self.bound, user, re, now)
        }

        /// The consumer carried `action` out.
        fn done(&mut self, action: Option<Action>) {
            self.bp.done(action.expect("an action"));
        }
    }

    const FULL: Option<Action> = Some(Action::Pause {
        newly: true,
        by_user: false,
    });
    const RESUME: Option<Action> = Some(Action::Resume);

    #[test]
    fn below_the_bound_nothing_happens() {
        let mut s = Sim::new();
        assert_eq!(s.at(0, 99, 9_999), None);
        assert!(s.bp.taking());
        assert_eq!(s.step(5000, 0, 0, false, true), None, "a rebalance alone");
        assert!(s.bp.taking());
    }

    #[test]
    fn at_the_bound_stops_taking_then_pauses_after_the_delay() {
        let mut s = Sim::new();
        assert_eq!(s.at(0, 100, 0), None);
        assert!(
            !s.bp.taking(),
            "records wait in librdkafka's prefetch queue"
        );
        assert_eq!(s.at(999, 100, 0), None);
        let pause = s.at(1000, 100, 0);
        assert_eq!(pause, FULL);
        s.done(pause);
        assert!(s.bp.taking(), "a paused consumer polls again");
        assert_eq!(s.at(2000, 100, 0), None, "paused once");
    }

    #[test]
    fn the_byte_bound_counts_like_the_message_bound() {
        let mut s = Sim::new();
        assert_eq!(s.at(0, 1, 10_000), None);
        assert!(!s.bp.taking());
        assert_eq!(s.at(1000, 1, 10_000), FULL);
    }

    #[test]
    fn the_delay_runs_from_the_first_full_step_while_above_half() {
        let mut s = Sim::new();
        s.at(0, 100, 0);
        assert_eq!(s.at(500, 60, 0), None);
        assert!(!s.bp.taking(), "taking resumes only at half");
        assert_eq!(s.at(1000, 60, 0), FULL);
    }

    #[test]
    fn a_burst_that_drains_in_time_never_pauses() {
        let mut s = Sim::new();
        s.at(0, 100, 0);
        assert_eq!(s.at(900, 50, 5_000), None);
        assert!(s.bp.taking(), "down to half: taking again");
        // Full again later: a new delay starts.
        assert_eq!(s.at(1500, 100, 0), None);
        assert_eq!(s.at(2499, 100, 0), None);
        assert_eq!(s.at(2500, 100, 0), FULL);
    }

    #[test]
    fn a_zero_delay_pauses_at_once() {
        let mut s = Sim::with_delay(Duration::ZERO);
        assert_eq!(s.at(0, 100, 0), FULL);
    }

    #[test]
    fn resumes_at_half_of_both_bounds() {
        let mut s = Sim::new();
        s.at(0, 100, 0);
        let pause = s.at(1000, 100, 0);
        s.done(pause);
        assert_eq!(s.at(1100, 51, 0), None);
        assert_eq!(s.at(1200, 50, 5_001), None);
        let resume = s.at(1300, 50, 5_000);
        assert_eq!(resume, RESUME);
        s.done(resume);
        assert!(s.bp.taking());
        assert_eq!(s.at(1400, 50, 5_000), None, "resumed once");
    }

    #[test]
    fn partitions_assigned_while_paused_are_paused_too() {
        let mut s = Sim::new();
        s.at(0, 100, 0);
        let pause = s.at(1000, 100, 0);
        s.done(pause);
        let again = s.step(1100, 100, 0, false, true);
        let not_new = Action::Pause {
            newly: false,
            by_user: false,
        };
        assert_eq!(again, Some(not_new));
    }

    #[test]
    fn a_pause_that_failed_is_asked_for_again() {
        let mut s = Sim::new();
        s.at(0, 100, 0);
        assert_eq!(s.at(1000, 100, 0), FULL);
        // Not `done`: the consumer refused.
        assert!(!s.bp.taking());
        assert_eq!(s.at(1050, 100, 0), FULL);
    }

    #[test]
    fn a_user_pause_pauses_at_once_and_holds_until_resumed() {
        let mut s = Sim::new();
        let by_user = |newly| {
            Some(Action::Pause {
                newly,
                by_user: true,
            })
        };
        let pause = s.step(0, 0, 0, true, false);
        assert_eq!(pause, by_user(true));
        s.done(pause);
        assert!(s.bp.taking());
        assert_eq!(s.step(5000, 0, 0, true, false), None, "empty, still paused");
        assert_eq!(s.step(5100, 0, 0, true, true), by_user(false));
        // Resumed through the admin API, the buffer at half or less: partitions resume.
        assert_eq!(s.at(5200, 10, 0), RESUME);
    }

    #[test]
    fn a_user_resume_with_a_full_buffer_waits_for_half() {
        let mut s = Sim::new();
        let pause = s.step(0, 0, 0, true, false);
        s.done(pause);
        // The buffer filled while paused; the user resumes: still over, still paused.
        assert_eq!(s.at(100, 100, 0), None);
        assert!(
            s.bp.taking(),
            "paused partitions: the consumer keeps polling"
        );
        assert_eq!(s.at(200, 50, 0), RESUME);
    }

    #[test]
    fn a_clock_that_reads_earlier_never_panics() {
        let mut s = Sim::new();
        s.at(10, 100, 0);
        assert_eq!(s.at(0, 100, 0), None);
    }
}
