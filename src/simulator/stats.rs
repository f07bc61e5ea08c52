//! What the simulator saw: request counts, answers by code, concurrency, and
//! the arrival time of every request, so tests and benchmarks can check how
//! many calls reached "Tencent" in any sliding one-second window.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Arrival times kept for window analysis (about 3 hours at 100 per second).
const MAX_ARRIVALS: usize = 1_000_000;

/// Counters shared by every connection of one simulator.
#[derive(Debug)]
pub struct Stats {
    epoch: Mutex<Instant>,
    received: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    encrypted: AtomicU64,
    answers: Mutex<BTreeMap<String, u64>>,
    signed_by: Mutex<BTreeMap<String, u64>>,
    credential_calls: Mutex<BTreeMap<String, u64>>,
    /// Microseconds since `epoch` at which each request arrived.
    arrivals: Mutex<Vec<u64>>,
}

/// A point-in-time copy of [`Stats`], also served as JSON at
/// `GET /__simulator/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// API requests received (every POST to `/`, whatever the answer).
    pub received: u64,
    /// Requests being handled now.
    pub in_flight: u64,
    /// The most requests handled at once.
    pub max_in_flight: u64,
    /// Answers sent encrypted (IsEncryptResponse or IsEncrypt).
    pub encrypted: u64,
    /// Requests with a valid signature, by SecretId.
    pub signed_by: BTreeMap<String, u64>,
    /// Answers by outcome: a Tencent code (`Success`, `AuthFailure.…`), or
    /// `http:<status>` / `fault:<kind>` for injected faults.
    pub answers: BTreeMap<String, u64>,
    /// The most requests that arrived within any one-second window.
    pub max_in_any_second: u64,
    /// Seconds from the first to the last arrival.
    pub span_seconds: f64,
    /// STS and metadata-server calls (not counted in `received`), by
    /// `<action>:<outcome>`: `AssumeRole:Success`,
    /// `AssumeRoleWithWebIdentity:InvalidParameter.WebIdentityTokenError`,
    /// `metadata:Success`, `sts:unavailable`, …
    #[serde(default)]
    pub credential_calls: BTreeMap<String, u64>,
}

impl StatsSnapshot {
    /// How many answers carried `outcome`.
    pub fn count(&self, outcome: &str) -> u64 {
        self.answers.get(outcome).copied().unwrap_or(0)
    }

    /// How many STS or metadata calls ended with `key` (`<action>:<outcome>`).
    pub fn credential_calls(&self, key: &str) -> u64 {
        self.credential_calls.get(key).copied().unwrap_or(0)
    }
}

/// Decrements the in-flight count when a request is done.
pub struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            epoch: Mutex::new(Instant::now()),
            received: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            encrypted: AtomicU64::new(0),
            answers: Mutex::new(BTreeMap::new()),
            signed_by: Mutex::new(BTreeMap::new()),
            credential_calls: Mutex::new(BTreeMap::new()),
            arrivals: Mutex::new(Vec::new()),
        }
    }
}

impl Stats {
    /// Records an arriving request; the guard marks it done when dropped.
    pub fn begin(&self) -> InFlight<'_> {
        self.received.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let micros = lock(&self.epoch).elapsed().as_micros();
        let mut arrivals = lock(&self.arrivals);
        if arrivals.len() < MAX_ARRIVALS {
            arrivals.push(u64::try_from(micros).unwrap_or(u64::MAX));
        }
        InFlight(self)
    }

    /// Counts an answer sent encrypted.
    pub fn encrypted(&self) {
        self.encrypted.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a request validly signed with `secret_id`.
    pub fn signed_by(&self, secret_id: &str) {
        *lock(&self.signed_by)
            .entry(secret_id.to_owned())
            .or_default() += 1;
    }

    /// Records the outcome of a request.
    pub fn answered(&self, outcome: &str) {
        *lock(&self.answers).entry(outcome.to_owned()).or_default() += 1;
    }

    /// Records the outcome of an STS or metadata call.
    pub fn credential_call(&self, action: &str, outcome: &str) {
        *lock(&self.credential_calls)
            .entry(format!("{action}:{outcome}"))
            .or_default() += 1;
    }

    /// Forgets everything seen so far (between benchmark phases).
    pub fn reset(&self) {
        *lock(&self.epoch) = Instant::now();
        self.received.store(0, Ordering::SeqCst);
        self.encrypted.store(0, Ordering::SeqCst);
        self.max_in_flight
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
        lock(&self.answers).clear();
        lock(&self.signed_by).clear();
        lock(&self.credential_calls).clear();
        lock(&self.arrivals).clear();
    }

    /// A consistent-enough copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut arrivals = lock(&self.arrivals).clone();
        arrivals.sort_unstable();
        let span_seconds = match (arrivals.first(), arrivals.last()) {
            (Some(first), Some(last)) => (last - first) as f64 / 1e6,
            _ => 0.0,
        };
        StatsSnapshot {
            received: self.received.load(Ordering::SeqCst),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            max_in_flight: self.max_in_flight.load(Ordering::SeqCst),
            encrypted: self.encrypted.load(Ordering::SeqCst),
            answers: lock(&self.answers).clone(),
            signed_by: lock(&self.signed_by).clone(),
            credential_calls: lock(&self.credential_calls).clone(),
            max_in_any_second: max_in_window(&arrivals, 1_000_000),
            span_seconds,
        }
    }
}

/// The most timestamps (sorted, microseconds) within any half-open window of
/// `window_micros`.
pub fn max_in_window(sorted: &[u64], window_micros: u64) -> u64 {
    let mut best = 0;
    let mut start = 0;
    for (end, &t) in sorted.iter().enumerate() {
        while t - sorted[start] >= window_micros {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best as u64
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_in_window_counts_the_densest_second() {
        assert_eq!(max_in_window(&[], 1_000_000), 0);
        // Three within 0.9 s, a fourth exactly 1 s after the first.
        let t = [0, 300_000, 900_000, 1_000_000, 2_500_000];
        assert_eq!(max_in_window(&t, 1_000_000), 3);
    }

    #[test]
    fn in_flight_is_tracked_by_guards() {
        let stats = Stats::default();
        {
            let _a = stats.begin();
            let _b = stats.begin();
            assert_eq!(stats.snapshot().in_flight, 2);
        }
        let snapshot = stats.snapshot();
        assert_eq!(
            (
                snapshot.in_flight,
                snapshot.max_in_flight,
                snapshot.received
            ),
            (0, 2, 2)
        );
    }
}
