//! The upstream rate limit as a tower layer: one GCRA limiter (in process,
//! or shared through Redis) for every caller, connection, stream and retry.
//!
//! The limiter state lives behind an `Arc` in [`Limiter`], so the clones of
//! [`RateLimit`] that tonic and the retry layer make all draw from the same
//! budget (tower's own `RateLimit` keeps its state per clone and counts in
//! fixed windows, which allows twice the rate across a window edge).
//!
//! A call asks for a slot and may wait for it up to the smaller of the
//! layer's maximum wait and the caller's remaining deadline; when no slot
//! comes in time it fails at once with [`Rejected`] (and its retry delay)
//! instead of sleeping into the deadline.

pub(crate) mod gcra;
pub(crate) mod redis;
pub(crate) mod window;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument as _;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

pub(crate) use gcra::{Gcra, Quota, Rejected};
pub(crate) use redis::{RedisConfig, RedisLimiter, Unusable};
pub(crate) use window::SlidingWindow;

/// The window the limit is enforced over: one second plus 1%, so calls
/// spaced by the limiter still fit Tencent's one-second window after a few
/// milliseconds of network and scheduling jitter (99% of the limit is used).
pub(crate) const WINDOW: Duration = Duration::from_millis(1010);

/// The quota for `per_second` calls with `burst` extra, over [`WINDOW`].
pub(crate) fn per_second(per_second: u32, burst: u32) -> Quota {
    Quota::new(per_second, WINDOW, burst)
}

/// Requests that carry their caller's deadline.
pub(crate) trait Deadline {
    /// When the caller stops waiting, if it said.
    fn deadline(&self) -> Option<Instant>;
}

/// The limiter every clone of the layer shares.
#[derive(Debug, Clone)]
pub(crate) enum Limiter {
    /// This process only.
    Local(Arc<Gcra>),
    /// Shared by every replica through Redis, with a local fallback.
    Redis(Arc<RedisLimiter>),
}

impl Limiter {
    /// An in-process limiter with `quota`.
    pub(crate) fn local(quota: Quota) -> Self {
        Self::Local(Arc::new(Gcra::new(quota)))
    }

    /// Reserves a slot at most `max_wait` away; returns the wait.
    ///
    /// # Errors
    /// [`Rejected`] when no slot comes within `max_wait`.
    pub(crate) async fn reserve(&self, max_wait: Duration) -> Result<Duration, Rejected> {
        match self {
            Self::Local(gcra) => gcra.reserve(Instant::now(), max_wait),
            Self::Redis(redis) => redis.reserve(max_wait).await,
        }
    }
}

/// The metric handles the layer reports to (this module imports nothing
/// else of the crate).
#[derive(Debug, Clone)]
pub(crate) struct LimitMetrics {
    /// Time calls waited for a slot.
    pub(crate) wait_seconds: Histogram,
    /// Calls refused because no slot came within their wait.
    pub(crate) rejections: Counter,
}

/// Applies [`RateLimit`] with one shared [`Limiter`].
#[derive(Debug, Clone)]
pub(crate) struct RateLimitLayer {
    limiter: Limiter,
    gate: Arc<SlidingWindow>,
    max_wait: Duration,
    metrics: Option<LimitMetrics>,
    /// Whether each wait gets its own span.
    spans: bool,
}

impl RateLimitLayer {
    /// Calls wait at most `max_wait` for a slot from `limiter`, then pass a
    /// dispatch gate allowing `per_window` sends (rate plus burst) in any
    /// [`WINDOW`] by their actual send times.
    pub(crate) fn new(limiter: Limiter, per_window: u32, max_wait: Duration) -> Self {
        Self {
            limiter,
            gate: Arc::new(SlidingWindow::new(per_window.max(1) as usize, WINDOW)),
            max_wait,
            metrics: None,
            spans: true,
        }
    }

    /// Gives each wait its own span (`faceid.rate_limit.wait`), or not.
    pub(crate) fn with_spans(mut self, spans: bool) -> Self {
        self.spans = spans;
        self
    }

    /// Counts waits and refusals in `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: LimitMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The log of actual send times, whose length is the observed rate.
    pub(crate) fn dispatch_window(&self) -> Arc<SlidingWindow> {
        Arc::clone(&self.gate)
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            gate: Arc::clone(&self.gate),
            max_wait: self.max_wait,
            metrics: self.metrics.clone(),
            spans: self.spans,
        }
    }
}

/// Waits for a rate-limit slot before calling the inner service.
#[derive(Debug, Clone)]
pub(crate) struct RateLimit<S> {
    inner: S,
    limiter: Limiter,
    gate: Arc<SlidingWindow>,
    max_wait: Duration,
    metrics: Option<LimitMetrics>,
    spans: bool,
}

impl<S, R> Service<R> for RateLimit<S>
where
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: From<Rejected>,
    R: Deadline + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        // The ready service is the one that must be called; leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        let gate = Arc::clone(&self.gate);
        let metrics = self.metrics.clone();
        let max_wait = match request.deadline() {
            Some(deadline) => self
                .max_wait
                .min(deadline.saturating_duration_since(Instant::now())),
            None => self.max_wait,
        };
        let spans = self.spans;
        Box::pin(async move {
            let span = if spans {
                tracing::info_span!(
                    "rate limit wait",
                    otel.name = "faceid.rate_limit.wait",
                    otel.status_code = tracing::field::Empty,
                    faceid.rate_limit.wait_ms = tracing::field::Empty,
                    faceid.rate_limit.retry_after_ms = tracing::field::Empty,
                )
            } else {
                tracing::Span::none()
            };
            let wait_span = span.clone();
            let wait = async {
                let asked = Instant::now();
                let wait = match limiter.reserve(max_wait).await {
                    Ok(wait) => wait,
                    Err(rejected) => {
                        wait_span.record("otel.status_code", "error");
                        let retry_ms = rejected.retry_after.as_secs_f64() * 1e3;
                        wait_span.record("faceid.rate_limit.retry_after_ms", retry_ms);
                        if let Some(metrics) = &metrics {
                            metrics.rejections.inc();
                        }
                        return Err(rejected);
                    }
                };
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                // A late wake-up must not bunch this send with the next one.
                while let Err(more) = gate.try_admit(Instant::now()) {
                    tokio::time::sleep(more).await;
                }
                let waited = asked.elapsed();
                wait_span.record("faceid.rate_limit.wait_ms", waited.as_secs_f64() * 1e3);
                if let Some(metrics) = &metrics {
                    metrics.wait_seconds.observe(waited.as_secs_f64());
                }
                Ok::<_, Rejected>(waited)
            }
            .instrument(span)
            .await;
            wait?;
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tower::ServiceExt as _;

    use super::*;

    /// A request with an optional deadline.
    struct Call(Option<Instant>);

    impl Deadline for Call {
        fn deadline(&self) -> Option<Instant> {
            self.0
        }
    }

    #[derive(Debug, PartialEq)]
    enum TestError {
        Limited(Duration),
    }

    impl From<Rejected> for TestError {
        fn from(rejected: Rejected) -> Self {
            Self::Limited(rejected.retry_after)
        }
    }

    /// Records when each call got through.
    fn recording_service(
        log: Arc<Mutex<Vec<(usize, Instant)>>>,
    ) -> tower::util::BoxCloneSyncService<(usize, Call), (), TestError> {
        tower::util::BoxCloneSyncService::new(tower::service_fn(
            move |(id, _call): (usize, Call)| {
                let log = Arc::clone(&log);
                async move {
                    log.lock().unwrap().push((id, Instant::now()));
                    Ok::<_, TestError>(())
                }
            },
        ))
    }

    impl Deadline for (usize, Call) {
        fn deadline(&self) -> Option<Instant> {
            self.1.deadline()
        }
    }

    fn layer(per_second: u32) -> RateLimitLayer {
        RateLimitLayer::new(
            Limiter::local(super::per_second(per_second, 0)),
            per_second,
            Duration::from_secs(60),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_one_limit_and_no_second_holds_more_than_the_rate() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let service = layer(10).layer(recording_service(Arc::clone(&log)));
        let start = Instant::now();

        // 35 callers, each through its own clone (as tonic does per connection).
        let calls: Vec<_> = (0..35)
            .map(|id| service.clone().oneshot((id, Call(None))))
            .collect();
        futures_util::future::try_join_all(calls).await.unwrap();

        let times: Vec<Duration> = log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| *t - start)
            .collect();
        assert_eq!(times.len(), 35);
        for (i, t) in times.iter().enumerate() {
            let in_window = times
                .iter()
                .filter(|u| **u >= *t && **u < *t + Duration::from_secs(1))
                .count();
            assert!(
                in_window <= 10,
                "{in_window} calls in the second after call {i}"
            );
        }
        // Slots 101 ms apart: ten per second, 1% of the window kept spare.
        assert_eq!(*times.last().unwrap(), Duration::from_millis(34 * 101));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_first_come_first_served() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let service = layer(5).layer(recording_service(Arc::clone(&log)));
        let mut handles = Vec::new();
        for id in 0..12 {
            handles.push(tokio::spawn(service.clone().oneshot((id, Call(None)))));
            // Each caller arrives a little after the previous one.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for handle in handles {
            handle.await.unwrap().unwrap();
        }
        let order: Vec<usize> = log.lock().unwrap().iter().map(|(id, _)| *id).collect();
        assert_eq!(order, (0..12).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_too_short_for_the_next_slot_fails_at_once() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let service = layer(10).layer(recording_service(Arc::clone(&log)));
        for id in 0..5 {
            service.clone().oneshot((id, Call(None))).await.unwrap();
        }
        // The next slot is 101 ms after the fifth call was granted.
        let started = Instant::now();
        let deadline = started + Duration::from_millis(50);

        let result = service.clone().oneshot((99, Call(Some(deadline)))).await;

        assert_eq!(result, Err(TestError::Limited(Duration::from_millis(101))));
        assert_eq!(Instant::now(), started, "failed without sleeping");
        assert_eq!(log.lock().unwrap().len(), 5, "the refused call never ran");
    }

    #[tokio::test(start_paused = true)]
    async fn the_layers_own_maximum_wait_applies_without_a_deadline() {
        let limiter = Limiter::local(super::per_second(1, 0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let service = RateLimitLayer::new(limiter, 1, Duration::from_millis(500))
            .layer(recording_service(Arc::clone(&log)));
        service.clone().oneshot((0, Call(None))).await.unwrap();

        let refused = service.clone().oneshot((1, Call(None))).await;

        assert_eq!(refused, Err(TestError::Limited(WINDOW)));
    }
}
