//! The endpoints' shared health: the [`Detector`] state machine behind a
//! lock, with the clock, the metrics and the log lines around it. The
//! attempt service picks each attempt's endpoint here and reports its
//! outcome; the retry policy asks whether a call can move elsewhere at once.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use super::Error;
use super::endpoints::{Detector, EjectionPolicy, Health, Pick, Transition};
use crate::metrics::{EndpointLabels, Metrics};
use crate::tencent::{self, Reply};

/// The health of every endpoint, shared by every attempt of every call.
pub(super) struct Failover {
    detector: Mutex<Detector>,
    /// Each endpoint's `host[:port]`, for metrics and logs.
    labels: Vec<String>,
    /// The configured failures in a row, for the ejection log line.
    eject_after: u32,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover")
            .field("endpoints", &self.labels)
            .finish_non_exhaustive()
    }
}

impl Failover {
    /// Every endpoint of `labels` (in preference order) healthy, reported
    /// as such in `metrics`.
    pub(super) fn new(labels: Vec<String>, policy: EjectionPolicy, metrics: Arc<Metrics>) -> Self {
        for label in &labels {
            let endpoint = EndpointLabels {
                endpoint: label.clone(),
            };
            metrics.endpoint_up.get_or_create(&endpoint).set(1);
            drop(metrics.ejections.get_or_create(&endpoint));
        }
        if let Some((primary, backups)) = labels.split_first()
            && !backups.is_empty()
        {
            tracing::info!(
                primary = primary.as_str(),
                backups = ?backups,
                "upstream endpoints: calls go to the first healthy one"
            );
        }
        Self {
            detector: Mutex::new(Detector::new(labels.len(), policy)),
            eject_after: policy.after,
            labels,
            metrics,
        }
    }

    fn detector(&self) -> MutexGuard<'_, Detector> {
        self.detector
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many endpoints there are.
    pub(super) fn len(&self) -> usize {
        self.labels.len()
    }

    /// The `host[:port]` of endpoint `index`.
    pub(super) fn label(&self, index: usize) -> &str {
        &self.labels[index]
    }

    /// The endpoint for the next attempt of a call that went to `tried`.
    pub(super) fn pick(self: &Arc<Self>, tried: &[usize]) -> Reporter {
        let pick = self.detector().pick(Instant::now(), tried);
        if pick.is_probe() {
            tracing::info!(
                endpoint = self.label(pick.index),
                "probing an ejected upstream endpoint"
            );
        }
        Reporter {
            failover: Arc::clone(self),
            pick: Some(pick),
        }
    }

    /// Whether an endpoint the call has not tried would take an attempt now.
    pub(super) fn has_untried_available(&self, tried: &[usize]) -> bool {
        self.detector().has_untried_available(Instant::now(), tried)
    }

    fn record(&self, pick: Pick, health: Health) {
        let transition = self.detector().record(pick, health, Instant::now());
        match transition {
            Some(Transition::Ejected {
                index,
                duration,
                in_a_row,
            }) => {
                let endpoint = EndpointLabels {
                    endpoint: self.labels[index].clone(),
                };
                self.metrics.endpoint_up.get_or_create(&endpoint).set(0);
                self.metrics.ejections.get_or_create(&endpoint).inc();
                tracing::warn!(
                    endpoint = self.label(index),
                    ejected_for_s = duration.as_secs_f64(),
                    ejections_in_a_row = in_a_row,
                    eject_after = self.eject_after,
                    probe_failed = pick.is_probe(),
                    "upstream endpoint ejected"
                );
            }
            Some(Transition::Restored { index }) => {
                let endpoint = EndpointLabels {
                    endpoint: self.labels[index].clone(),
                };
                self.metrics.endpoint_up.get_or_create(&endpoint).set(1);
                tracing::info!(endpoint = self.label(index), "upstream endpoint restored");
            }
            None => {}
        }
    }
}

/// One attempt's endpoint, which reports the attempt's outcome exactly
/// once: when it finishes, or as [`Health::Unknown`] when the attempt is
/// dropped first (the caller went away), so a probe is never left claimed.
pub(super) struct Reporter {
    failover: Arc<Failover>,
    pick: Option<Pick>,
}

impl Reporter {
    /// The endpoint's position in the list.
    pub(super) fn index(&self) -> usize {
        self.pick.map_or(0, |pick| pick.index)
    }

    /// Whether this attempt probes an ejected endpoint.
    pub(super) fn is_probe(&self) -> bool {
        self.pick.is_some_and(|pick| pick.is_probe())
    }

    /// Reports the attempt's outcome.
    pub(super) fn report(mut self, result: &Result<Reply, Error>) {
        if let Some(pick) = self.pick.take() {
            self.failover.record(pick, health_of(result));
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(pick) = self.pick.take() {
            self.failover.record(pick, Health::Unknown);
        }
    }
}

/// What an attempt's outcome says about its endpoint. Every answer Tencent
/// gives counts as healthy (a verdict, an input error, `AuthFailure`, a
/// rate limit, an answer that does not decrypt), except `InternalError*`;
/// transport failures, HTTP 5xx and bodies that are not Tencent's JSON
/// count against it; what says nothing (the caller's deadline, a request
/// never sent, another HTTP status) counts neither way.
pub(super) fn health_of(result: &Result<Reply, Error>) -> Health {
    let error = match result {
        Ok(_) => return Health::Answered,
        Err(Error::Tencent(error)) => error,
        Err(Error::DeadlineExceeded | Error::RateLimited { .. }) => return Health::Unknown,
    };
    match error {
        tencent::Error::Connect(_)
        | tencent::Error::Timeout
        | tencent::Error::Transport(_)
        | tencent::Error::Malformed { .. } => Health::Failed,
        tencent::Error::HttpStatus { status } if *status >= 500 => Health::Failed,
        tencent::Error::HttpStatus { .. }
        | tencent::Error::Signing
        | tencent::Error::CredentialsExpired { .. } => Health::Unknown,
        tencent::Error::Api { code, .. } if code.starts_with("InternalError") => Health::Failed,
        tencent::Error::Api { .. } | tencent::Error::Decryption(_) => Health::Answered,
    }
}

/// The endpoints one call's attempts went to, oldest first. Shared by the
/// clones of its request, so the retry policy sees where each attempt went.
#[derive(Debug, Clone, Default)]
pub(super) struct Tried(Arc<Mutex<Vec<usize>>>);

impl Tried {
    fn list(&self) -> MutexGuard<'_, Vec<usize>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The endpoints tried so far, oldest first.
    pub(super) fn snapshot(&self) -> Vec<usize> {
        self.list().clone()
    }

    /// Notes that an attempt went to `index`.
    pub(super) fn push(&self, index: usize) {
        self.list().push(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str) -> Result<Reply, Error> {
        Err(Error::Tencent(tencent::Error::api(
            code,
            Some("r".to_owned()),
        )))
    }

    #[test]
    fn answers_from_tencent_are_healthy_except_internal_errors() {
        for code in [
            "AuthFailure.SignatureFailure",
            "InvalidParameterValue",
            "FailedOperation.ImageDecodeFailed",
            "RequestLimitExceeded",
            "FailedOperation.RequestLimitExceeded",
            "UnauthorizedOperation.Arrears",
            "FailedOperation.UnKnown",
            "SomethingNew",
        ] {
            assert_eq!(health_of(&api(code)), Health::Answered, "{code}");
        }
        for code in ["InternalError", "InternalError.EncryptSystemError"] {
            assert_eq!(health_of(&api(code)), Health::Failed, "{code}");
        }
    }

    #[test]
    fn transport_failures_5xx_and_foreign_bodies_are_failures() {
        for error in [
            tencent::Error::Timeout,
            tencent::Error::HttpStatus { status: 502 },
            tencent::Error::HttpStatus { status: 503 },
            tencent::Error::Malformed {
                what: "not a Tencent JSON envelope",
                request_id: None,
            },
        ] {
            assert_eq!(health_of(&Err(Error::Tencent(error))), Health::Failed);
        }
    }

    #[test]
    fn what_says_nothing_about_the_endpoint_counts_neither_way() {
        for result in [
            Err(Error::DeadlineExceeded),
            Err(Error::Tencent(tencent::Error::HttpStatus { status: 404 })),
            Err(Error::Tencent(tencent::Error::Signing)),
        ] {
            assert_eq!(health_of(&result), Health::Unknown);
        }
    }

    #[test]
    fn clones_of_a_request_share_where_it_went() {
        let tried = Tried::default();
        let clone = tried.clone();
        clone.push(1);
        tried.push(0);
        assert_eq!(tried.snapshot(), [1, 0]);
    }
}
