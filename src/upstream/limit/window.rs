//! A strict sliding-window log: at most `limit` admissions in any window,
//! judged by the times admissions actually happen.
//!
//! The gateway puts it right before each upstream send, behind the GCRA
//! schedule: a task that wakes late for its slot (a busy runtime delays
//! timers) would otherwise bunch up with the next one and break the window at
//! Tencent. The simulator uses the same log as Tencent's limit.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// At most `limit` admissions in any `window`.
#[derive(Debug)]
pub(crate) struct SlidingWindow {
    limit: usize,
    window: Duration,
    admitted: Mutex<VecDeque<Instant>>,
}

impl SlidingWindow {
    /// At most `limit` admissions per `window`.
    pub(crate) fn new(limit: usize, window: Duration) -> Self {
        Self {
            limit,
            window,
            admitted: Mutex::new(VecDeque::with_capacity(limit.min(1 << 16))),
        }
    }

    /// How many admissions fall in the window ending at `now`.
    pub(crate) fn recent(&self, now: Instant) -> usize {
        let admitted = self
            .admitted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        admitted
            .iter()
            .filter(|&&t| now.saturating_duration_since(t) < self.window)
            .count()
    }

    /// Admits (and records) an arrival at `now`, or says how long until the
    /// window has room, recording nothing.
    ///
    /// # Errors
    /// The wait until the oldest admission in the window leaves it.
    pub(crate) fn try_admit(&self, now: Instant) -> Result<(), Duration> {
        let mut admitted = self
            .admitted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while admitted
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= self.window)
        {
            admitted.pop_front();
        }
        if admitted.len() >= self.limit {
            let oldest = *admitted.front().expect("limit is at least one");
            return Err((oldest + self.window).saturating_duration_since(now));
        }
        admitted.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_at_most_the_limit_in_any_window() {
        let window = SlidingWindow::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(window.try_admit(at(0)), Ok(()));
        assert_eq!(window.try_admit(at(500)), Ok(()));
        assert_eq!(window.try_admit(at(999)), Err(Duration::from_millis(1)));
        assert_eq!(window.try_admit(at(1000)), Ok(()));
        assert_eq!(window.try_admit(at(1400)), Err(Duration::from_millis(100)));
        assert_eq!(window.try_admit(at(1500)), Ok(()));
        assert_eq!(window.recent(at(1500)), 2);
        assert_eq!(window.recent(at(3000)), 0);
    }
}
