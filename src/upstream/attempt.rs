//! One signed HTTP attempt at Tencent, at the endpoint outlier detection
//! picks, in an HTTP client span, bounded by the caller's deadline,
//! recorded in the span, the metrics and the endpoint's health.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::Service;
use tracing::Instrument as _;
use tracing::field::Empty;

use super::failover::Failover;
use super::{Error, UpstreamRequest};
use crate::metrics::Metrics;
use crate::tencent::model::ACTION;
use crate::tencent::{self, Class, Reply, codes};

/// One signed HTTP attempt, bounded by the caller's remaining deadline (the
/// client's own timeout bounds it otherwise), in an HTTP client span.
#[derive(Debug, Clone)]
pub(super) struct Attempt {
    client: tencent::Client,
    failover: Arc<Failover>,
    metrics: Arc<Metrics>,
    /// Whether each attempt gets its own HTTP client span (only worth it
    /// when spans are exported).
    spans: bool,
}

impl Attempt {
    /// Attempts through `client`, at the endpoints `failover` picks,
    /// counted in `metrics`.
    pub(super) fn new(
        client: tencent::Client,
        failover: Arc<Failover>,
        metrics: Arc<Metrics>,
        spans: bool,
    ) -> Self {
        Self {
            client,
            failover,
            metrics,
            spans,
        }
    }
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
        // Picked here, after the rate-limit wait: the health is current.
        let reporter = self.failover.pick(&request.tried.snapshot());
        request.tried.push(reporter.index());
        let label = self.failover.label(reporter.index()).to_owned();
        let endpoint = &client.endpoints()[reporter.index()];
        let span = if !self.spans {
            tracing::Span::none()
        } else {
            tracing::info_span!(
            "upstream attempt",
            otel.name = "POST",
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = "POST",
            server.address = endpoint.host(),
            server.port = endpoint.url().port_or_known_default().map(i64::from),
            url.full = endpoint.url().as_str(),
            http.request.resend_count = Empty,
            http.response.status_code = Empty,
            error.type = Empty,
            tencent.action = ACTION,
            tencent.code = Empty,
            tencent.request_id = Empty,
            faceid.upstream.probe = Empty,
            )
        };
        if reporter.is_probe() {
            span.record("faceid.upstream.probe", true);
        }
        if request.attempt > 1 {
            // Integers as i64: tracing-opentelemetry keeps those as numbers.
            span.record("http.request.resend_count", i64::from(request.attempt - 1));
        }
        let attempt_span = span.clone();
        let attempt = async move {
            let _in_flight = InFlight::up(&metrics);
            let started = Instant::now();
            let endpoint = &client.endpoints()[reporter.index()];
            let send = client.send_to(endpoint, &request.body, request.encryption.as_deref());
            let result = match request.deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, send).await {
                    Ok(result) => result.map_err(Error::Tencent),
                    Err(_) => Err(Error::DeadlineExceeded),
                },
                None => send.await.map_err(Error::Tencent),
            };
            record_attempt(&attempt_span, &result, &label, started.elapsed(), &metrics);
            reporter.report(&result);
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
    endpoint: &str,
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
            metrics.attempt_finished(
                reply.class.as_str(),
                &code_row(reply.class, code),
                endpoint,
                elapsed,
            );
        }
        Err(error) => {
            span.record("otel.status_code", "error");
            span.record("error.type", error.reason());
            if let Error::Tencent(upstream) = error {
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
                let class = upstream.class();
                let row = code_row(class, upstream.reason());
                metrics.attempt_finished(class.as_str(), &row, endpoint, elapsed);
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

/// The label of an attempt's outcome: the row of the code table that
/// matched Tencent's code (`AuthFailure*`, `Success`), the gateway's name of
/// a transport failure (`UpstreamTimeout`, …), or `other`: a closed set,
/// whatever Tencent sends.
fn code_row(class: Class, code: &str) -> String {
    match codes::lookup(code) {
        Some((pattern, _)) => pattern.display(),
        None if class == Class::Transient => code.to_owned(),
        None => "other".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_come_from_a_closed_set() {
        assert_eq!(
            code_row(Class::GatewaySetup, "AuthFailure.SignatureFailure"),
            "AuthFailure*"
        );
        assert_eq!(
            code_row(Class::Unknown, "Weird.Code.From.Upstream"),
            "other"
        );
        assert_eq!(
            code_row(Class::Transient, "UpstreamTimeout"),
            "UpstreamTimeout"
        );
    }
}
