//! The upstream tower stack, built once at start-up and shared (cloned) by
//! every handler, connection and batch stream:
//!
//! ```text
//! concurrency cap ▸ retry (budget, backoff, deadline) ▸ rate limit ▸ attempt (timeout, signing, HTTP)
//! ```
//!
//! Because the rate limit sits inside the retry layer, every attempt passes
//! it again; because the client signs inside the attempt, every attempt is
//! signed with a fresh timestamp.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rand::Rng as _;
use tokio::time::Instant;
use tower::retry::budget::{Budget as _, TpsBudget};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder};

use tracing::Instrument as _;
use tracing::field::Empty;

use crate::error::Error;
use crate::limit::{Deadline, Limiter, RateLimitLayer, Rejected};
use crate::metrics::{ClassLabels, Metrics};
use crate::tencent::model::ACTION;
use crate::tencent::{self, Reply, RequestBody, RequestEncryption};

/// One verification on its way to Tencent.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// The signed-per-attempt body, shared by all attempts.
    pub body: RequestBody,
    /// When the caller stops waiting.
    pub deadline: Option<Instant>,
    /// 1 for the first attempt; the retry layer counts up.
    pub attempt: u32,
    /// The session key that opens an encrypted answer, when one was asked for.
    pub encryption: Option<Arc<RequestEncryption>>,
}

impl UpstreamRequest {
    /// A first attempt of `body` with an optional deadline.
    pub fn new(body: RequestBody, deadline: Option<Instant>) -> Self {
        Self {
            body,
            deadline,
            attempt: 1,
            encryption: None,
        }
    }
}

impl Deadline for UpstreamRequest {
    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

impl From<Rejected> for Error {
    fn from(rejected: Rejected) -> Self {
        Error::RateLimited {
            retry_after: rejected.retry_after,
        }
    }
}

/// The shared stack: `UpstreamRequest` in, a verification outcome out.
pub type Upstream = BoxCloneSyncService<UpstreamRequest, Reply, Error>;

/// Settings of the stack.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Upstream calls in flight at most, waiting ones included.
    pub max_in_flight: usize,
    /// Sends allowed in any rate-limit window (rate plus burst).
    pub rate_limit_per_window: u32,
    /// The longest a call may wait for a rate-limit slot.
    pub rate_limit_max_wait: Duration,
    /// Attempts per call at most, the first included.
    pub max_attempts: u32,
    /// The backoff before the first retry (doubling after, with full jitter).
    pub retry_base_delay: Duration,
    /// The longest backoff.
    pub retry_max_delay: Duration,
}

/// Builds the stack around `client`, drawing slots from `limiter` and
/// reporting to `metrics`.
pub fn build(
    client: tencent::Client,
    limiter: Limiter,
    config: &StackConfig,
    metrics: Arc<Metrics>,
) -> Upstream {
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
    let rate_limit = RateLimitLayer::new(
        limiter,
        config.rate_limit_per_window,
        config.rate_limit_max_wait,
    )
    .with_metrics(Arc::clone(&metrics));
    metrics.observe_dispatch_window(rate_limit.dispatch_window());
    let stack = ServiceBuilder::new()
        .concurrency_limit(config.max_in_flight)
        .retry(RetryPolicy {
            budget,
            max_attempts: config.max_attempts.max(1),
            base_delay: config.retry_base_delay,
            max_delay: config.retry_max_delay,
            jitter: full_jitter,
            metrics: Arc::clone(&metrics),
        })
        .layer(rate_limit)
        .service(Attempt { client, metrics });
    BoxCloneSyncService::new(stack)
}

/// One signed HTTP attempt, bounded by the caller's remaining deadline (the
/// client's own timeout bounds it otherwise), in an HTTP client span.
#[derive(Debug, Clone)]
struct Attempt {
    client: tencent::Client,
    metrics: Arc<Metrics>,
}

impl Service<UpstreamRequest> for Attempt {
    type Response = Reply;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: UpstreamRequest) -> Self::Future {
        let client = self.client.clone();
        let metrics = Arc::clone(&self.metrics);
        let endpoint = client.endpoint();
        let span = tracing::info_span!(
            "upstream attempt",
            otel.name = "POST",
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = "POST",
            server.address = client.host(),
            server.port = endpoint.port_or_known_default().map(i64::from),
            url.full = endpoint.as_str(),
            http.request.resend_count = Empty,
            http.response.status_code = Empty,
            error.type = Empty,
            tencent.action = ACTION,
            tencent.code = Empty,
            tencent.request_id = Empty,
        );
        if request.attempt > 1 {
            // Integers as i64: tracing-opentelemetry keeps those as numbers.
            span.record("http.request.resend_count", i64::from(request.attempt - 1));
        }
        let attempt = async move {
            let _in_flight = InFlight::up(&metrics);
            let started = Instant::now();
            let send = client.send(&request.body, request.encryption.as_deref());
            let result = match request.deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, send).await {
                    Ok(result) => result.map_err(Error::from),
                    Err(_) => Err(Error::DeadlineExceeded),
                },
                None => send.await.map_err(Error::from),
            };
            record_attempt(
                &tracing::Span::current(),
                &result,
                started.elapsed(),
                &metrics,
            );
            result
        };
        Box::pin(attempt.instrument(span))
    }
}

/// Records an attempt's outcome on its span (HTTP and Tencent attributes)
/// and in the metrics.
fn record_attempt(
    span: &tracing::Span,
    result: &Result<Reply, Error>,
    elapsed: Duration,
    metrics: &Metrics,
) {
    match result {
        Ok(reply) => {
            let code = reply.response.result.as_deref().unwrap_or_default();
            span.record("http.response.status_code", 200);
            span.record("tencent.code", code);
            if let Some(request_id) = &reply.response.request_id {
                span.record("tencent.request_id", request_id.as_str());
            }
            metrics.attempt_finished(reply.class, code, elapsed);
        }
        Err(error) => {
            span.record("otel.status_code", "error");
            span.record("error.type", error.reason());
            if let Error::Upstream(upstream) = error {
                match upstream {
                    tencent::Error::HttpStatus { status } => {
                        span.record("http.response.status_code", i64::from(*status));
                    }
                    tencent::Error::Api { code, .. } => {
                        span.record("http.response.status_code", 200);
                        span.record("tencent.code", code.as_str());
                    }
                    tencent::Error::Malformed { .. } => {
                        span.record("http.response.status_code", 200);
                    }
                    _ => {}
                }
                if let Some(request_id) = upstream.request_id() {
                    span.record("tencent.request_id", request_id);
                }
                metrics.attempt_finished(upstream.class(), upstream.reason(), elapsed);
            }
        }
    }
}

/// Holds the in-flight gauge one up while an attempt runs (or is dropped).
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn up(metrics: &Metrics) -> Self {
        metrics.upstream_in_flight.inc();
        Self(metrics.upstream_in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Retries transient and rate-limited failures only, with exponential
/// backoff and full jitter, inside a retry budget, never past the deadline.
#[derive(Clone)]
struct RetryPolicy {
    budget: Arc<TpsBudget>,
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    /// Picks the actual delay under a ceiling ([`full_jitter`] in service).
    jitter: fn(Duration) -> Duration,
    metrics: Arc<Metrics>,
}

impl RetryPolicy {
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
        if !error.is_retryable() || request.attempt >= self.max_attempts {
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
        let class = match error {
            Error::Upstream(upstream) => upstream.class().as_str(),
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
        Some(tokio::time::sleep(delay).instrument(span))
    }

    fn clone_request(&mut self, request: &UpstreamRequest) -> Option<UpstreamRequest> {
        Some(request.clone())
    }
}

#[cfg(test)]
mod tests {
    use tower::retry::Policy as _;

    use super::*;
    use crate::tencent::model::CheckIdCardInformationRequest;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            max_attempts,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            // The ceiling itself, so decisions are deterministic.
            jitter: |ceiling| ceiling,
            metrics: Arc::new(Metrics::new()),
        }
    }

    fn request(deadline: Option<Instant>) -> UpstreamRequest {
        let body = RequestBody::new(&CheckIdCardInformationRequest::default());
        UpstreamRequest::new(body, deadline)
    }

    fn failure(code: &str) -> Result<Reply, Error> {
        Err(Error::Upstream(tencent::Error::api(code, None)))
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
}
