//! Outlier detection across Tencent endpoints, as a pure state machine:
//! which endpoint an attempt goes to ([`Detector::pick`]) and what its
//! outcome does to that endpoint ([`Detector::record`]). The time comes in
//! as an argument, so every rule is tested without a clock or a network.
//!
//! The rules (Envoy's consecutive-failure outlier detection, with the
//! primary preferred instead of load balancing):
//!
//! - traffic goes to the first healthy endpoint of the list, so the primary
//!   takes everything while it is healthy;
//! - an endpoint is ejected after `eject_after` failures in a row that say
//!   nothing about the request ([`Health::Failed`]); any answer Tencent
//!   gives otherwise, a verdict, an input error, `AuthFailure`, counts as
//!   healthy and resets the count;
//! - an ejection lasts `base`, doubled for each ejection in a row, at most
//!   `max`; then one call (and one only) probes the endpoint; its success
//!   restores the endpoint and resets the doubling, its failure ejects it
//!   again for twice as long;
//! - with every endpoint ejected, the one whose ejection ends first is used:
//!   the gateway never refuses a call because of ejections.

use std::time::Duration;

use tokio::time::Instant;

/// What an attempt's outcome says about the endpoint that handled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// The endpoint answered as Tencent answers: a verdict, an API error
    /// about the request or the account, anything but `InternalError*`.
    Answered,
    /// A failure that says nothing about the request: connect or TLS
    /// failure, timeout, HTTP 5xx, a body that is not Tencent's JSON,
    /// `InternalError*`.
    Failed,
    /// Nothing learned: the caller gave up first, or nothing was sent.
    Unknown,
}

/// When endpoints are ejected and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EjectionPolicy {
    /// Failures in a row that eject an endpoint (at least 1).
    pub(crate) after: u32,
    /// The first ejection's length; it doubles per ejection in a row.
    pub(crate) base: Duration,
    /// The longest ejection.
    pub(crate) max: Duration,
}

impl EjectionPolicy {
    /// How long the `nth` ejection in a row (1-based) lasts.
    fn duration(&self, nth: u32) -> Duration {
        let doublings = nth.saturating_sub(1).min(20);
        self.base
            .saturating_mul(1 << doublings)
            .min(self.max.max(self.base))
    }
}

/// Why an endpoint was picked, which decides what its outcome does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A healthy endpoint: its outcome counts towards ejection.
    Normal,
    /// The one call that tries an endpoint whose ejection is over.
    Probe,
    /// An ejected endpoint, used because every endpoint is ejected.
    LastResort,
}

/// One attempt's endpoint, handed back to [`Detector::record`] with the
/// attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pick {
    /// The endpoint's position in the list (0 = the primary).
    pub(crate) index: usize,
    role: Role,
    /// The endpoint's epoch when picked (see [`Endpoint::epoch`]).
    epoch: u64,
}

impl Pick {
    /// Whether this attempt probes an endpoint whose ejection is over.
    pub(crate) fn is_probe(&self) -> bool {
        self.role == Role::Probe
    }
}

/// What a recorded outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// The endpoint was ejected (again, when `in_a_row` > 1).
    Ejected {
        /// Which endpoint.
        index: usize,
        /// For how long.
        duration: Duration,
        /// Ejections in a row, this one included.
        in_a_row: u32,
    },
    /// The endpoint answered after an ejection and takes traffic again.
    Restored {
        /// Which endpoint.
        index: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Takes traffic; `failures` in a row so far.
    Healthy { failures: u32 },
    /// Takes no traffic until `until` (unless every endpoint is ejected).
    Ejected { until: Instant },
    /// Its ejection is over and one probe is in flight.
    Probing,
}

#[derive(Debug, Clone)]
struct Endpoint {
    state: State,
    /// Ejections since the last success (the doubling).
    ejections_in_a_row: u32,
    /// Bumped at each ejection and restoration: an outcome of an attempt
    /// picked before the change (a slow call that started before the
    /// ejection) is not counted against the new state.
    epoch: u64,
}

/// The health of every endpoint, in preference order.
#[derive(Debug, Clone)]
pub(crate) struct Detector {
    endpoints: Vec<Endpoint>,
    policy: EjectionPolicy,
}

impl Detector {
    /// `count` endpoints (at least one), all healthy.
    pub(crate) fn new(count: usize, policy: EjectionPolicy) -> Self {
        let healthy = Endpoint {
            state: State::Healthy { failures: 0 },
            ejections_in_a_row: 0,
            epoch: 0,
        };
        Self {
            endpoints: vec![healthy; count.max(1)],
            policy: EjectionPolicy {
                after: policy.after.max(1),
                ..policy
            },
        }
    }

    /// Whether the endpoint takes traffic (not ejected, not being probed).
    #[cfg(test)]
    fn is_up(&self, index: usize) -> bool {
        matches!(self.endpoints[index].state, State::Healthy { .. })
    }

    /// The endpoint for the next attempt of a call that already went to
    /// `tried` (oldest first): the first healthy endpoint not tried yet,
    /// else the one tried longest ago that is healthy, else, with every
    /// endpoint ejected, the one whose ejection ends first (untried ones
    /// first). An endpoint whose ejection is over counts as healthy for
    /// one caller, whose attempt is its probe.
    pub(crate) fn pick(&mut self, now: Instant, tried: &[usize]) -> Pick {
        let untried = (0..self.endpoints.len()).filter(|i| !tried.contains(i));
        let mut seen = Vec::with_capacity(tried.len());
        let retried = tried.iter().copied().filter(|&i| {
            let first = i < self.endpoints.len() && !seen.contains(&i);
            seen.push(i);
            first
        });
        let candidates: Vec<usize> = untried.chain(retried).collect();
        if let Some(index) = candidates.iter().copied().find(|&i| self.available(i, now)) {
            return self.claim(index);
        }
        let index = candidates
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|&(order, i)| (tried.contains(&i), self.ejection_end(i, now), order))
            .map_or(0, |(_, i)| i);
        Pick {
            index,
            role: Role::LastResort,
            epoch: self.endpoints[index].epoch,
        }
    }

    /// Whether an endpoint not in `tried` would take an attempt now.
    pub(crate) fn has_untried_available(&self, now: Instant, tried: &[usize]) -> bool {
        (0..self.endpoints.len()).any(|i| !tried.contains(&i) && self.available(i, now))
    }

    /// Applies the outcome of the attempt that went to `pick`.
    pub(crate) fn record(
        &mut self,
        pick: Pick,
        health: Health,
        now: Instant,
    ) -> Option<Transition> {
        let policy = self.policy;
        let endpoint = self.endpoints.get_mut(pick.index)?;
        if endpoint.epoch != pick.epoch {
            return None;
        }
        match (pick.role, health, endpoint.state) {
            (Role::Normal, Health::Answered, State::Healthy { .. }) => {
                endpoint.state = State::Healthy { failures: 0 };
                None
            }
            (Role::Normal, Health::Failed, State::Healthy { failures }) => {
                let failures = failures + 1;
                if failures >= policy.after {
                    Some(eject(endpoint, pick.index, &policy, now))
                } else {
                    endpoint.state = State::Healthy { failures };
                    None
                }
            }
            (Role::Probe, Health::Failed, State::Probing) => {
                Some(eject(endpoint, pick.index, &policy, now))
            }
            // The probe learned nothing (the caller gave up): the next call
            // probes instead.
            (Role::Probe, Health::Unknown, State::Probing) => {
                endpoint.state = State::Ejected { until: now };
                None
            }
            // A probe, or a call sent while everything was ejected, got an
            // answer: the endpoint works again.
            (
                Role::Probe | Role::LastResort,
                Health::Answered,
                State::Ejected { .. } | State::Probing,
            ) => {
                endpoint.state = State::Healthy { failures: 0 };
                endpoint.ejections_in_a_row = 0;
                endpoint.epoch += 1;
                Some(Transition::Restored { index: pick.index })
            }
            _ => None,
        }
    }

    /// Whether `index` would take an attempt now.
    fn available(&self, index: usize, now: Instant) -> bool {
        match self.endpoints[index].state {
            State::Healthy { .. } => true,
            State::Ejected { until } => until <= now,
            State::Probing => false,
        }
    }

    /// When `index`'s ejection ends (now for a healthy or probed one).
    fn ejection_end(&self, index: usize, now: Instant) -> Instant {
        match self.endpoints[index].state {
            State::Ejected { until } => until.max(now),
            State::Healthy { .. } | State::Probing => now,
        }
    }

    /// Takes `index` (available) for one attempt: a probe when its
    /// ejection is over.
    fn claim(&mut self, index: usize) -> Pick {
        let endpoint = &mut self.endpoints[index];
        let role = match endpoint.state {
            State::Ejected { .. } => {
                endpoint.state = State::Probing;
                Role::Probe
            }
            State::Healthy { .. } | State::Probing => Role::Normal,
        };
        Pick {
            index,
            role,
            epoch: endpoint.epoch,
        }
    }
}

/// Ejects `endpoint` from `now`, for longer each time in a row.
fn eject(
    endpoint: &mut Endpoint,
    index: usize,
    policy: &EjectionPolicy,
    now: Instant,
) -> Transition {
    endpoint.ejections_in_a_row = endpoint.ejections_in_a_row.saturating_add(1);
    let duration = policy.duration(endpoint.ejections_in_a_row);
    endpoint.state = State::Ejected {
        until: now + duration,
    };
    endpoint.epoch += 1;
    Transition::Ejected {
        index,
        duration,
        in_a_row: endpoint.ejections_in_a_row,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn detector(count: usize) -> Detector {
        Detector::new(
            count,
            EjectionPolicy {
                after: 5,
                base: Duration::from_secs(30),
                max: Duration::from_secs(300),
            },
        )
    }

    /// Picks for a first attempt and records `health` for it.
    fn attempt(
        detector: &mut Detector,
        now: Instant,
        health: Health,
    ) -> (usize, Option<Transition>) {
        let pick = detector.pick(now, &[]);
        (pick.index, detector.record(pick, health, now))
    }

    #[test]
    fn the_primary_takes_every_call_while_healthy() {
        let mut detector = detector(3);
        let now = Instant::now();
        for _ in 0..20 {
            assert_eq!(attempt(&mut detector, now, Health::Answered), (0, None));
        }
    }

    #[test]
    fn ejection_comes_at_the_configured_failure_in_a_row_and_not_before() {
        let mut detector = detector(2);
        let now = Instant::now();
        for _ in 0..4 {
            assert_eq!(attempt(&mut detector, now, Health::Failed), (0, None));
        }
        assert!(detector.is_up(0));
        let (index, transition) = attempt(&mut detector, now, Health::Failed);
        assert_eq!(index, 0);
        assert_eq!(
            transition,
            Some(Transition::Ejected {
                index: 0,
                duration: Duration::from_secs(30),
                in_a_row: 1
            })
        );
        assert!(!detector.is_up(0));
        assert_eq!(
            detector.pick(now, &[]).index,
            1,
            "traffic moves to the backup"
        );
    }

    #[test]
    fn any_answer_resets_the_count_so_healthy_traffic_never_ejects() {
        // The SDK breaker's bug was counting successes as failures: here
        // answers (verdicts, input errors, AuthFailure) reset the count.
        let mut detector = detector(2);
        let now = Instant::now();
        for _ in 0..10 {
            for _ in 0..4 {
                attempt(&mut detector, now, Health::Failed);
            }
            assert_eq!(attempt(&mut detector, now, Health::Answered), (0, None));
        }
        for _ in 0..100 {
            attempt(&mut detector, now, Health::Answered);
        }
        assert!(detector.is_up(0));
    }

    #[test]
    fn unknown_outcomes_neither_count_nor_reset() {
        let mut detector = detector(2);
        let now = Instant::now();
        for _ in 0..4 {
            attempt(&mut detector, now, Health::Failed);
        }
        for _ in 0..10 {
            attempt(&mut detector, now, Health::Unknown);
        }
        let (_, transition) = attempt(&mut detector, now, Health::Failed);
        assert!(matches!(
            transition,
            Some(Transition::Ejected { index: 0, .. })
        ));
    }

    fn eject_primary(detector: &mut Detector, now: Instant) -> Transition {
        loop {
            let pick = detector.pick(now, &[]);
            assert_eq!(pick.index, 0, "the primary is picked until ejected");
            if let Some(transition) = detector.record(pick, Health::Failed, now) {
                return transition;
            }
        }
    }

    #[test]
    fn after_the_ejection_one_call_probes_and_its_success_restores_the_endpoint() {
        let mut detector = detector(2);
        let start = Instant::now();
        eject_primary(&mut detector, start);
        assert_eq!(detector.pick(start + 29 * SECOND, &[]).index, 1);

        let later = start + 30 * SECOND;
        let probe = detector.pick(later, &[]);
        assert_eq!(probe.index, 0);
        assert!(probe.is_probe());
        // Half-open: while the probe is in flight, other calls go to the backup.
        for _ in 0..5 {
            let other = detector.pick(later, &[]);
            assert_eq!(other.index, 1);
            assert!(!other.is_probe());
        }
        assert_eq!(
            detector.record(probe, Health::Answered, later),
            Some(Transition::Restored { index: 0 })
        );
        assert!(detector.is_up(0));
        assert_eq!(
            detector.pick(later, &[]).index,
            0,
            "traffic returns to the primary"
        );
    }

    #[test]
    fn a_failed_probe_ejects_again_for_twice_as_long_up_to_the_maximum() {
        let mut detector = detector(2);
        let mut now = Instant::now();
        eject_primary(&mut detector, now);
        let mut lengths = Vec::new();
        for _ in 0..6 {
            now += Duration::from_secs(600);
            let probe = detector.pick(now, &[]);
            assert!(probe.is_probe());
            match detector.record(probe, Health::Failed, now) {
                Some(Transition::Ejected { duration, .. }) => lengths.push(duration.as_secs()),
                other => panic!("expected an ejection, got {other:?}"),
            }
        }
        assert_eq!(lengths, [60, 120, 240, 300, 300, 300]);
    }

    #[test]
    fn a_success_resets_the_doubling() {
        let mut detector = detector(2);
        let mut now = Instant::now();
        eject_primary(&mut detector, now);
        now += Duration::from_secs(30);
        let probe = detector.pick(now, &[]);
        detector.record(probe, Health::Failed, now); // 60 s
        now += Duration::from_secs(60);
        let probe = detector.pick(now, &[]);
        detector.record(probe, Health::Answered, now);
        assert_eq!(
            eject_primary(&mut detector, now),
            Transition::Ejected {
                index: 0,
                duration: Duration::from_secs(30),
                in_a_row: 1
            }
        );
    }

    #[test]
    fn a_probe_that_learned_nothing_lets_the_next_call_probe() {
        let mut detector = detector(2);
        let mut now = Instant::now();
        eject_primary(&mut detector, now);
        now += Duration::from_secs(30);
        let probe = detector.pick(now, &[]);
        assert!(probe.is_probe());
        assert_eq!(detector.record(probe, Health::Unknown, now), None);
        let next = detector.pick(now, &[]);
        assert!(next.is_probe());
        assert_eq!(next.index, 0);
    }

    #[test]
    fn outcomes_of_calls_picked_before_an_ejection_are_ignored() {
        let mut detector = detector(2);
        let now = Instant::now();
        let slow = detector.pick(now, &[]);
        eject_primary(&mut detector, now);
        // A call sent before the ejection answers late: it neither restores
        // the endpoint nor counts towards anything.
        assert_eq!(detector.record(slow, Health::Answered, now), None);
        assert!(!detector.is_up(0));
    }

    #[test]
    fn a_retry_goes_to_the_next_healthy_endpoint() {
        let mut detector = detector(3);
        let now = Instant::now();
        assert_eq!(detector.pick(now, &[0]).index, 1);
        assert_eq!(detector.pick(now, &[0, 1]).index, 2);
        // Every endpoint tried: the one tried longest ago.
        assert_eq!(detector.pick(now, &[1, 2, 0]).index, 1);
        // An ejected backup is skipped for a healthy one already tried.
        let mut two = detector_with_backup_ejected(now);
        assert_eq!(two.pick(now, &[0]).index, 0);
    }

    fn detector_with_backup_ejected(now: Instant) -> Detector {
        let mut detector = detector(2);
        for _ in 0..5 {
            let pick = detector.pick(now, &[0]);
            assert_eq!(pick.index, 1);
            detector.record(pick, Health::Failed, now);
        }
        assert!(!detector.is_up(1));
        detector
    }

    #[test]
    fn with_every_endpoint_ejected_the_one_ending_first_is_used() {
        let mut detector = detector(3);
        let start = Instant::now();
        // Eject 2 first, then 0, then 1: 2's ejection ends first.
        for (index, at) in [(2, 0), (0, 5), (1, 10)] {
            let now = start + Duration::from_secs(at);
            for _ in 0..5 {
                let pick = Pick {
                    index,
                    role: Role::Normal,
                    epoch: detector.endpoints[index].epoch,
                };
                detector.record(pick, Health::Failed, now);
            }
        }
        let now = start + Duration::from_secs(12);
        let pick = detector.pick(now, &[]);
        assert_eq!(pick.index, 2);
        assert!(!pick.is_probe());
        // A retry prefers an endpoint it has not tried yet.
        assert_eq!(detector.pick(now, &[2]).index, 0);
        // Failures of such calls do not extend the ejection...
        assert_eq!(detector.record(pick, Health::Failed, now), None);
        // ...and a success restores the endpoint.
        assert_eq!(
            detector.record(pick, Health::Answered, now),
            Some(Transition::Restored { index: 2 })
        );
        assert_eq!(detector.pick(now, &[]).index, 2);
    }

    #[test]
    fn untried_availability_is_what_a_retry_would_find() {
        let now = Instant::now();
        let detector = detector(2);
        assert!(detector.has_untried_available(now, &[0]));
        assert!(!detector.has_untried_available(now, &[0, 1]));
        let ejected = detector_with_backup_ejected(now);
        assert!(!ejected.has_untried_available(now, &[0]));
        assert!(ejected.has_untried_available(now + Duration::from_secs(30), &[0]));
    }

    #[test]
    fn durations_double_and_stop_at_the_maximum() {
        let policy = EjectionPolicy {
            after: 5,
            base: Duration::from_secs(30),
            max: Duration::from_secs(300),
        };
        let lengths: Vec<u64> = (1..=7).map(|n| policy.duration(n).as_secs()).collect();
        assert_eq!(lengths, [30, 60, 120, 240, 300, 300, 300]);
        let long = EjectionPolicy {
            base: Duration::from_secs(600),
            ..policy
        };
        assert_eq!(
            long.duration(3),
            Duration::from_secs(600),
            "never below the base"
        );
    }
}
