//! Which failed attempts are tried again: transient and rate-limited
//! failures only, with exponential backoff and full jitter, inside a retry
//! budget, never past the caller's deadline. The attempt service sends a
//! retry to the next healthy endpoint; a call whose connection failed
//! (nothing sent, nothing billed) moves to an endpoint it has not tried at
//! once.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio::time::Instant;
use tower::retry::budget::{Budget as _, TpsBudget};
use tracing::Instrument as _;

use super::failover::Failover;
use super::{Error, StackConfig, UpstreamRequest};
use crate::metrics::{ClassLabels, Metrics};
use crate::tencent::Reply;

/// Retries transient and rate-limited failures only, with exponential
/// backoff and full jitter, inside a retry budget, never past the deadline.
#[derive(Clone)]
pub(super) struct RetryPolicy {
    budget: Arc<TpsBudget>,
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    /// Picks the actual delay under a ceiling ([`full_jitter`] in service).
    jitter: fn(Duration) -> Duration,
    /// Which endpoints would take an attempt now.
    failover: Arc<Failover>,
    metrics: Arc<Metrics>,
}

impl RetryPolicy {
    /// The policy of `config`, drawing from `budget`, moving calls between
    /// the endpoints of `failover`, counting in `metrics`.
    pub(super) fn new(
        budget: Arc<TpsBudget>,
        config: &StackConfig,
        failover: Arc<Failover>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            budget,
            max_attempts: config.max_attempts.max(1),
            base_delay: config.retry_base_delay,
            max_delay: config.retry_max_delay,
            jitter: full_jitter,
            failover,
            metrics,
        }
    }

    /// The jittered delay under `min(max, base × 2^(attempt-1))`.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        (self.jitter)(ceiling)
    }
}

/// A uniformly random delay in `[0, ceiling]` ("full jitter").
fn full_jitter(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

impl tower::retry::Policy<UpstreamRequest, Reply, Error> for RetryPolicy {
    type Future = tracing::instrument::Instrumented<tokio::time::Sleep>;

    fn retry(
        &mut self,
        request: &mut UpstreamRequest,
        result: &mut Result<Reply, Error>,
    ) -> Option<Self::Future> {
        let error = match result {
            Ok(_) => {
                self.budget.deposit();
                return None;
            }
            Err(error) => error,
        };
        if !error.is_retryable() {
            return None;
        }
        let tried = request.tried.snapshot();
        if error.never_sent()
            && tried.len() < self.failover.len()
            && self.failover.has_untried_available(&tried)
        {
            // Nothing left the gateway, so nothing was billed: another
            // endpoint gets the call at once, outside the budget and the
            // attempt count (as many attempts as endpoints at most).
            return Some(self.again(request, error, Duration::ZERO));
        }
        if request.attempt >= self.max_attempts {
            return None;
        }
        let delay = self.backoff(request.attempt);
        if request
            .deadline
            .is_some_and(|deadline| Instant::now() + delay >= deadline)
        {
            tracing::debug!(
                attempt = request.attempt,
                "no retry: the deadline is too close"
            );
            return None;
        }
        if !self.budget.withdraw() {
            tracing::warn!(
                attempt = request.attempt,
                "no retry: the retry budget is spent"
            );
            return None;
        }
        Some(self.again(request, error, delay))
    }

    fn clone_request(&mut self, request: &UpstreamRequest) -> Option<UpstreamRequest> {
        Some(request.clone())
    }
}

impl RetryPolicy {
    /// Counts a retry of `request` after `delay` and returns the wait.
    fn again(
        &self,
        request: &mut UpstreamRequest,
        error: &Error,
        delay: Duration,
    ) -> tracing::instrument::Instrumented<tokio::time::Sleep> {
        let class = match error {
            Error::Tencent(upstream) => upstream.class().as_str(),
            _ => "other",
        };
        self.metrics
            .retries
            .get_or_create(&ClassLabels { class })
            .inc();
        tracing::debug!(
            attempt = request.attempt,
            reason = error.reason(),
            backoff_ms = delay.as_secs_f64() * 1e3,
            "retrying upstream call"
        );
        let span = tracing::info_span!(
            "retry backoff",
            otel.name = "faceid.retry.backoff",
            faceid.retry.attempt = i64::from(request.attempt),
            faceid.retry.reason = error.reason(),
            faceid.retry.backoff_ms = delay.as_secs_f64() * 1e3,
        );
        request.attempt += 1;
        tokio::time::sleep(delay).instrument(span)
    }
}

#[cfg(test)]
mod tests {
    use tower::retry::Policy as _;

    use super::*;
    use crate::tencent::model::CheckIdCardInformationRequest;
    use crate::tencent::{self, RequestBody};
    use crate::upstream::endpoints::EjectionPolicy;

    fn policy(max_attempts: u32) -> RetryPolicy {
        policy_with_endpoints(max_attempts, 1)
    }

    fn policy_with_endpoints(max_attempts: u32, endpoints: usize) -> RetryPolicy {
        let metrics = Arc::new(Metrics::new());
        RetryPolicy {
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            max_attempts,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            // The ceiling itself, so decisions are deterministic.
            jitter: |ceiling| ceiling,
            failover: Arc::new(Failover::new(
                (0..endpoints).map(|i| format!("endpoint-{i}")).collect(),
                EjectionPolicy {
                    after: 5,
                    base: Duration::from_secs(30),
                    max: Duration::from_secs(300),
                },
                Arc::clone(&metrics),
            )),
            metrics,
        }
    }

    /// A connection refused: a port that was just bound and released.
    async fn refused() -> Error {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        crate::net::install_crypto_provider();
        let error = reqwest::Client::new()
            .post(format!("http://{addr}/"))
            .send()
            .await
            .expect_err("nothing listens there");
        assert!(error.is_connect(), "{error:?}");
        Error::Tencent(tencent::Error::Connect(error))
    }

    fn request(deadline: Option<Instant>) -> UpstreamRequest {
        let body = RequestBody::new(&CheckIdCardInformationRequest::default());
        UpstreamRequest::new(body, deadline)
    }

    fn failure(code: &str) -> Result<Reply, Error> {
        Err(Error::Tencent(tencent::Error::api(code, None)))
    }

    #[test]
    fn full_jitter_stays_under_the_ceiling() {
        for _ in 0..100 {
            assert!(full_jitter(Duration::from_millis(50)) <= Duration::from_millis(50));
        }
    }

    #[test]
    fn backoff_ceiling_doubles_up_to_the_maximum() {
        let policy = policy(10);
        let ceilings: Vec<_> = (1..=6).map(|a| policy.backoff(a).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_and_rate_limited_failures_are_retried_until_max_attempts() {
        for code in ["InternalError", "RequestLimitExceeded.UinLimitExceeded"] {
            assert!(tencent::codes::classify(code).is_retryable());
            let mut policy = policy(3);
            let mut call = request(None);
            assert!(
                policy.retry(&mut call, &mut failure(code)).is_some(),
                "{code}"
            );
            assert_eq!(call.attempt, 2);
            assert!(
                policy.retry(&mut call, &mut failure(code)).is_some(),
                "{code}"
            );
            assert_eq!(call.attempt, 3);
            assert!(
                policy.retry(&mut call, &mut failure(code)).is_none(),
                "{code}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn other_failures_are_never_retried() {
        for code in [
            "AuthFailure.SignatureFailure",
            "FailedOperation.RequestLimitExceeded",
            "FailedOperation.ImageDecodeFailed",
            "UnauthorizedOperation.Arrears",
            "SomethingUnknown",
        ] {
            assert!(!tencent::codes::classify(code).is_retryable(), "{code}");
            let mut call = request(None);
            assert!(
                policy(3).retry(&mut call, &mut failure(code)).is_none(),
                "{code}"
            );
        }
        let mut call = request(None);
        for mut result in [
            Err(Error::DeadlineExceeded),
            Err(Error::RateLimited {
                retry_after: Duration::from_secs(1),
            }),
        ] {
            assert!(policy(3).retry(&mut call, &mut result).is_none());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_when_the_backoff_would_pass_the_deadline() {
        // The first backoff is 100 ms; a deadline 50 ms away leaves no room.
        let mut close = request(Some(Instant::now() + Duration::from_millis(50)));
        assert!(
            policy(3)
                .retry(&mut close, &mut failure("InternalError"))
                .is_none()
        );
        assert_eq!(close.attempt, 1);

        let mut roomy = request(Some(Instant::now() + Duration::from_secs(5)));
        assert!(
            policy(3)
                .retry(&mut roomy, &mut failure("InternalError"))
                .is_some()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_caps_retries_during_an_outage() {
        // A budget with no reserve and 10% of deposits: nothing deposited yet.
        let mut policy = policy(3);
        policy.budget = Arc::new(TpsBudget::new(Duration::from_secs(1), 0, 0.1));
        let mut call = request(None);
        assert!(
            policy
                .retry(&mut call, &mut failure("InternalError"))
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_call_never_sent_moves_to_an_untried_endpoint_at_once_outside_budget_and_count() {
        let mut policy = policy_with_endpoints(1, 2);
        // No budget at all, and no retries allowed by the attempt count.
        policy.budget = Arc::new(TpsBudget::new(Duration::from_secs(1), 0, 0.1));
        let mut call = request(None);
        call.tried.push(0);

        let mut result = Err(refused().await);
        let wait = policy
            .retry(&mut call, &mut result)
            .expect("the backup gets the call");
        assert_eq!(call.attempt, 2);
        let started = Instant::now();
        wait.await;
        assert!(started.elapsed() < Duration::from_millis(50), "no backoff");

        // Both endpoints tried: the ordinary rules decide, and say no.
        call.tried.push(1);
        let mut result = Err(refused().await);
        assert!(policy.retry(&mut call, &mut result).is_none());

        // However the attempts were spread, never more of them than
        // endpoints outside the ordinary rules.
        let mut again = request(None);
        again.tried.push(0);
        again.tried.push(0);
        let mut result = Err(refused().await);
        assert!(policy.retry(&mut again, &mut result).is_none());
    }

    #[tokio::test]
    async fn with_one_endpoint_a_refused_connection_follows_the_ordinary_rules() {
        let mut policy = policy_with_endpoints(1, 1);
        let mut call = request(None);
        call.tried.push(0);
        let mut result = Err(refused().await);
        assert!(policy.retry(&mut call, &mut result).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_that_may_have_reached_tencent_never_skip_the_rules() {
        // A 503 may have been processed: no immediate move, no extra attempt.
        let mut policy = policy_with_endpoints(1, 2);
        let mut call = request(None);
        call.tried.push(0);
        let mut result = Err(Error::Tencent(tencent::Error::HttpStatus { status: 503 }));
        assert!(policy.retry(&mut call, &mut result).is_none());
        // And nothing the table forbids is retried, whatever the endpoints.
        let mut result = failure("AuthFailure.SignatureFailure");
        assert!(
            policy_with_endpoints(3, 3)
                .retry(&mut call, &mut result)
                .is_none()
        );
    }
}
