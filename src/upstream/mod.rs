//! The upstream layer: one tower stack, built once at start-up and shared
//! (cloned) by every handler, connection and batch stream:
//!
//! ```text
//! concurrency cap ▸ retry (budget, backoff, deadline) ▸ rate limit ▸ attempt (timeout, signing, HTTP)
//! ```
//!
//! Because the rate limit sits inside the retry layer, every attempt passes
//! it again; because the client signs inside the attempt, every attempt is
//! signed with a fresh timestamp. The attempt also picks the endpoint
//! ([`endpoints`]: outlier detection across `--endpoint`, primary
//! preferred), so a retry goes to the next healthy endpoint while the rate
//! limit stays one limit for the account, wherever calls go.
//!
//! May import: [`crate::tencent`] (the client it drives),
//! [`crate::metrics`] and [`crate::net`] (the Redis connection). Never the
//! server: arrows point server → upstream → tencent. [`limit`] imports
//! nothing else of the crate but that Redis connection.

mod attempt;
mod endpoints;
mod failover;
pub(crate) mod limit;
mod retry;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::ServiceBuilder;
use tower::retry::budget::TpsBudget;
use tower::util::BoxCloneSyncService;

use crate::metrics::Metrics;
use crate::tencent::{self, Reply, RequestBody, RequestEncryption};
use attempt::Attempt;
use endpoints::EjectionPolicy;
use failover::{Failover, Tried};
use limit::{Deadline, LimitMetrics, Limiter, RateLimitLayer, Rejected};
use retry::RetryPolicy;

/// Why an upstream call failed, after the stack's own retries.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The last attempt failed, or Tencent refused the call.
    #[error(transparent)]
    Tencent(#[from] tencent::Error),
    /// No rate-limit slot could come within the allowed wait.
    #[error("no upstream rate-limit slot within the allowed wait")]
    RateLimited {
        /// When a slot frees.
        retry_after: Duration,
    },
    /// The caller's deadline passed before Tencent answered.
    #[error("the caller's deadline passed")]
    DeadlineExceeded,
}

impl Error {
    /// Whether another attempt may succeed (the retry policy asks).
    fn is_retryable(&self) -> bool {
        match self {
            Error::Tencent(error) => error.is_retryable(),
            Error::RateLimited { .. } | Error::DeadlineExceeded => false,
        }
    }

    /// Whether the request certainly never left the gateway, so another
    /// endpoint may have it without risk of a second billed call.
    fn never_sent(&self) -> bool {
        matches!(self, Error::Tencent(error) if error.never_sent())
    }

    /// A short name for spans and logs: the Tencent code or the failure.
    fn reason(&self) -> &str {
        match self {
            Error::Tencent(error) => error.reason(),
            Error::RateLimited { .. } => "RequestLimitExceeded",
            Error::DeadlineExceeded => "DeadlineExceeded",
        }
    }
}

impl From<Rejected> for Error {
    fn from(rejected: Rejected) -> Self {
        Error::RateLimited {
            retry_after: rejected.retry_after,
        }
    }
}

/// One verification on its way to Tencent.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamRequest {
    /// The signed-per-attempt body, shared by all attempts.
    pub(crate) body: RequestBody,
    /// When the caller stops waiting.
    pub(crate) deadline: Option<Instant>,
    /// 1 for the first attempt; the retry layer counts up.
    attempt: u32,
    /// The session key that opens an encrypted answer, when one was asked for.
    pub(crate) encryption: Option<Arc<RequestEncryption>>,
    /// The endpoints its attempts went to, shared by the retry layer's
    /// clones so a retry can prefer another one.
    tried: Tried,
}

impl UpstreamRequest {
    /// A first attempt of `body` with an optional deadline.
    pub(crate) fn new(body: RequestBody, deadline: Option<Instant>) -> Self {
        Self {
            body,
            deadline,
            attempt: 1,
            encryption: None,
            tried: Tried::default(),
        }
    }
}

impl Deadline for UpstreamRequest {
    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// The shared stack: an [`UpstreamRequest`] in, a verification outcome out.
pub(crate) type Stack = BoxCloneSyncService<UpstreamRequest, Reply, Error>;

/// Settings of the stack.
#[derive(Debug, Clone)]
pub(crate) struct StackConfig {
    /// Upstream calls in flight at most, waiting ones included.
    pub(crate) max_in_flight: usize,
    /// Sends allowed in any rate-limit window (rate plus burst).
    pub(crate) rate_limit_per_window: u32,
    /// The longest a call may wait for a rate-limit slot.
    pub(crate) rate_limit_max_wait: Duration,
    /// Attempts per call at most, the first included.
    pub(crate) max_attempts: u32,
    /// The backoff before the first retry (doubling after, with full jitter).
    pub(crate) retry_base_delay: Duration,
    /// The longest backoff.
    pub(crate) retry_max_delay: Duration,
    /// Failures in a row that say nothing about the request after which an
    /// endpoint is ejected.
    pub(crate) eject_after: u32,
    /// The first ejection's length (doubling per ejection in a row).
    pub(crate) eject_for: Duration,
    /// Whether the rate-limit wait and each attempt get their own span.
    /// They are only worth their cost when spans are exported; otherwise
    /// the call's span carries the log lines and `traceresponse` alone.
    pub(crate) detailed_spans: bool,
}

/// The longest ejection, however often an endpoint fails in a row (or
/// `eject_for`, when that is longer).
const MAX_EJECTION: Duration = Duration::from_secs(5 * 60);

/// Builds the stack around `client`, drawing slots from `limiter` and
/// reporting to `metrics`.
pub(crate) fn build(
    client: tencent::Client,
    limiter: Limiter,
    config: &StackConfig,
    metrics: Arc<Metrics>,
) -> Stack {
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
    let rate_limit = RateLimitLayer::new(
        limiter,
        config.rate_limit_per_window,
        config.rate_limit_max_wait,
    )
    .with_metrics(LimitMetrics {
        wait_seconds: metrics.rate_limit_wait_seconds.clone(),
        rejections: metrics.rate_limit_rejections.clone(),
    })
    .with_spans(config.detailed_spans);
    let window = rate_limit.dispatch_window();
    metrics.observe_upstream_rate(move || window.recent(Instant::now()));
    let failover = Arc::new(Failover::new(
        client
            .endpoints()
            .iter()
            .map(|endpoint| endpoint.authority().to_owned())
            .collect(),
        EjectionPolicy {
            after: config.eject_after,
            base: config.eject_for,
            max: MAX_EJECTION,
        },
        Arc::clone(&metrics),
    ));
    let stack = ServiceBuilder::new()
        .concurrency_limit(config.max_in_flight)
        .retry(RetryPolicy::new(
            budget,
            config,
            Arc::clone(&failover),
            Arc::clone(&metrics),
        ))
        .layer(rate_limit)
        .service(Attempt::new(
            client,
            failover,
            metrics,
            config.detailed_spans,
        ));
    BoxCloneSyncService::new(stack)
}
