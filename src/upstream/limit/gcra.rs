//! GCRA (the generic cell rate algorithm) with reservations, in process.
//!
//! State is one instant, the theoretical arrival time (TAT) of the next call.
//! A caller asks for a slot: it gets the earliest permitted time, at or after
//! now, and the TAT moves one emission interval on. Each caller then sleeps
//! until its own slot, so waiters are served first come, first served and no
//! two slots are closer than the emission interval (plus the burst
//! tolerance). The Redis script in `redis.rs` runs the same arithmetic.
//!
//! Crates such as `governor` answer "allowed now or not" and leave waiting to
//! the caller (polling, with jitter), which gives neither FIFO order nor a
//! known wait to compare with the caller's deadline, hence this small core.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Rate, burst and the derived GCRA parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quota {
    /// Time between two slots: one window divided by the rate.
    pub(crate) emission_interval: Duration,
    /// How far ahead of its TAT a slot may be granted: burst × interval.
    pub(crate) burst_tolerance: Duration,
}

impl Quota {
    /// At most `per_window` calls in any `window`, plus `burst` extra calls
    /// allowed back to back after a quiet period.
    ///
    /// # Panics
    /// When `per_window` is zero.
    pub(crate) fn new(per_window: u32, window: Duration, burst: u32) -> Self {
        assert!(per_window > 0, "a rate limit of zero admits nothing");
        let emission_interval = window / per_window;
        Self {
            emission_interval,
            burst_tolerance: emission_interval * burst,
        }
    }
}

/// Why no slot was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no rate-limit slot within the allowed wait; one frees in {retry_after:?}")]
pub(crate) struct Rejected {
    /// When the next slot would be granted if asked for now.
    pub(crate) retry_after: Duration,
}

/// An in-process GCRA limiter. Share it behind an `Arc`: the state is the
/// limiter, and a copy would be a second, independent limit.
#[derive(Debug)]
pub(crate) struct Gcra {
    quota: Quota,
    theoretical_arrival: Mutex<Option<Instant>>,
}

impl Gcra {
    /// A limiter with `quota`, idle so far.
    pub(crate) fn new(quota: Quota) -> Self {
        Self {
            quota,
            theoretical_arrival: Mutex::new(None),
        }
    }

    /// The quota it enforces.
    pub(crate) fn quota(&self) -> Quota {
        self.quota
    }

    /// Grants no slot before `now + duration` (slots already granted stand):
    /// used when switching limiters, so calls made under the previous one
    /// within the last window are not added to the new one's.
    pub(crate) fn hold(&self, now: Instant, duration: Duration) {
        let mut tat = self
            .theoretical_arrival
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let until = now + duration + self.quota.burst_tolerance;
        *tat = Some(tat.map_or(until, |t| t.max(until)));
    }

    /// Reserves the earliest slot at or after `now` if it is at most
    /// `max_wait` away; returns how long to wait for it.
    ///
    /// # Errors
    /// [`Rejected`] (and nothing reserved) when the slot is further away.
    pub(crate) fn reserve(&self, now: Instant, max_wait: Duration) -> Result<Duration, Rejected> {
        let mut tat = self
            .theoretical_arrival
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = tat.map_or(now, |t| t.max(now));
        let wait = next
            .saturating_duration_since(now)
            .saturating_sub(self.quota.burst_tolerance);
        if wait > max_wait {
            return Err(Rejected { retry_after: wait });
        }
        *tat = Some(next + self.quota.emission_interval);
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn slots_are_one_interval_apart_in_arrival_order() {
        let limiter = Gcra::new(Quota::new(10, Duration::from_secs(1), 0));
        let now = Instant::now();
        let waits: Vec<_> = (0..5)
            .map(|_| limiter.reserve(now, ms(1000)).unwrap())
            .collect();
        assert_eq!(waits, [ms(0), ms(100), ms(200), ms(300), ms(400)]);
    }

    #[test]
    fn a_wait_beyond_the_limit_is_rejected_without_reserving() {
        let limiter = Gcra::new(Quota::new(10, Duration::from_secs(1), 0));
        let now = Instant::now();
        for _ in 0..3 {
            limiter.reserve(now, ms(1000)).unwrap();
        }
        // The next slot is 300 ms away.
        assert_eq!(
            limiter.reserve(now, ms(250)),
            Err(Rejected {
                retry_after: ms(300)
            })
        );
        // Nothing was reserved by the refusal.
        assert_eq!(limiter.reserve(now, ms(300)), Ok(ms(300)));
    }

    #[test]
    fn idle_time_is_not_saved_up_without_burst() {
        let limiter = Gcra::new(Quota::new(10, Duration::from_secs(1), 0));
        let start = Instant::now();
        limiter.reserve(start, ms(0)).unwrap();
        let later = start + Duration::from_secs(5);
        assert_eq!(limiter.reserve(later, ms(0)), Ok(ms(0)));
        assert_eq!(
            limiter.reserve(later, ms(0)),
            Err(Rejected {
                retry_after: ms(100)
            })
        );
    }

    #[test]
    fn a_hold_delays_the_next_slot_by_the_hold() {
        let limiter = Gcra::new(Quota::new(10, Duration::from_secs(1), 0));
        let now = Instant::now();
        limiter.hold(now, Duration::from_secs(1));
        assert_eq!(limiter.reserve(now, ms(2000)), Ok(ms(1000)));
        assert_eq!(limiter.reserve(now, ms(2000)), Ok(ms(1100)));
    }

    #[test]
    fn burst_allows_extra_calls_back_to_back() {
        let limiter = Gcra::new(Quota::new(10, Duration::from_secs(1), 2));
        let now = Instant::now();
        let immediate = (0..4)
            .filter(|_| limiter.reserve(now, Duration::ZERO).is_ok())
            .count();
        assert_eq!(immediate, 3, "one plus a burst of two");
    }
}
