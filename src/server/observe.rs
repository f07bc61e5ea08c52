//! What every RPC and batch item reports when it finishes, in one place: the
//! span (RPC semantic conventions, plus the Tencent request id and the
//! verdict), one log line inside that span (so it carries its trace and span
//! ids), and the metrics. Nothing personal goes into any of them: batch items
//! are identified by their position in the stream, not their `item_id`.

use std::time::Duration;

use std::sync::Arc;

use tokio::time::Instant;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tracing::Span;
use tracing::field::Empty;

use crate::metrics::Metrics;
use crate::proto::VerifyIdCardResponse;
use crate::server::error::{Error, REQUEST_ID_METADATA, grpc_name};
use crate::telemetry;

/// The full name of the service, as `rpc.service` reports it.
pub(crate) const SERVICE: &str = "faceid.v1.IdCardVerificationService";
/// How a call reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// gRPC (HTTP/2).
    Grpc,
    /// HTTP/JSON on the same port (HTTP/1.1 or HTTP/2), transcoded.
    HttpJson,
}

/// What a report is about: one of the service's methods (or one item of a
/// batch), over one transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rpc {
    /// `VerifyIdCard`.
    Verify(Transport),
    /// `VerifyIdCardBatch`, the stream.
    Batch(Transport),
    /// One item of a `VerifyIdCardBatch` stream.
    BatchItem(Transport),
}

impl Rpc {
    /// The `method` label of metrics and log lines (`rpc.method`): the proto
    /// method, prefixed `http.` for HTTP/JSON.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Rpc::Verify(Transport::Grpc) => "VerifyIdCard",
            Rpc::Batch(Transport::Grpc) => "VerifyIdCardBatch",
            Rpc::BatchItem(Transport::Grpc) => "VerifyIdCardBatch.item",
            Rpc::Verify(Transport::HttpJson) => "http.VerifyIdCard",
            Rpc::Batch(Transport::HttpJson) => "http.VerifyIdCardBatch",
            Rpc::BatchItem(Transport::HttpJson) => "http.VerifyIdCardBatch.item",
        }
    }

    /// The span name: the gRPC full method name, or the HTTP route.
    fn span_name(self) -> &'static str {
        match self {
            Rpc::Verify(Transport::Grpc) => "faceid.v1.IdCardVerificationService/VerifyIdCard",
            Rpc::Batch(Transport::Grpc) => "faceid.v1.IdCardVerificationService/VerifyIdCardBatch",
            Rpc::Verify(Transport::HttpJson) => "POST /v1/idcard:verify",
            Rpc::Batch(Transport::HttpJson) => "POST /v1/idcard:verifyBatch",
            Rpc::BatchItem(_) => "faceid.v1.IdCardVerificationService/VerifyIdCardBatch item",
        }
    }

    /// `rpc.system`.
    fn system(self) -> &'static str {
        match self {
            Rpc::Verify(Transport::Grpc)
            | Rpc::Batch(Transport::Grpc)
            | Rpc::BatchItem(Transport::Grpc) => "grpc",
            _ => "http",
        }
    }

    /// The item of this batch stream.
    pub(crate) fn item(self) -> Self {
        match self {
            Rpc::Verify(transport) | Rpc::Batch(transport) | Rpc::BatchItem(transport) => {
                Rpc::BatchItem(transport)
            }
        }
    }
}

/// Response metadata naming the trace a call landed in (W3C Trace Context
/// level 2).
pub(crate) const TRACERESPONSE_METADATA: &str = "traceresponse";

/// The RPC a path reaches, over gRPC or HTTP/JSON, if it is one of ours.
pub(crate) fn rpc_of(path: &str) -> Option<Rpc> {
    match path {
        "/faceid.v1.IdCardVerificationService/VerifyIdCard" => Some(Rpc::Verify(Transport::Grpc)),
        "/faceid.v1.IdCardVerificationService/VerifyIdCardBatch" => {
            Some(Rpc::Batch(Transport::Grpc))
        }
        JSON_VERIFY => Some(Rpc::Verify(Transport::HttpJson)),
        JSON_VERIFY_BATCH => Some(Rpc::Batch(Transport::HttpJson)),
        _ => None,
    }
}

/// The HTTP/JSON route of `VerifyIdCard` (`google.api.http` in the proto).
pub(crate) const JSON_VERIFY: &str = "/v1/idcard:verify";
/// The HTTP/JSON route of `VerifyIdCardBatch`.
pub(crate) const JSON_VERIFY_BATCH: &str = "/v1/idcard:verifyBatch";

/// Adds `traceresponse` (and Tencent's request id, when known) to response
/// or error metadata.
pub(crate) fn tag(metadata: &mut MetadataMap, span: &Span, request_id: Option<&str>) {
    if let Some(value) =
        telemetry::traceresponse(span).and_then(|v| MetadataValue::try_from(v).ok())
    {
        metadata.insert(TRACERESPONSE_METADATA, value);
    }
    if let Some(value) = request_id
        .filter(|id| !id.is_empty())
        .and_then(|id| MetadataValue::try_from(id).ok())
    {
        metadata.insert(REQUEST_ID_METADATA, value);
    }
}

/// What a call refused before its handler ran still reports: who called
/// and the caller's trace context (the only request headers kept).
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    rpc: Rpc,
    caller: Arc<str>,
    trace_context: MetadataMap,
    started: Instant,
}

impl Refused {
    /// Captures what is needed from a request for `rpc` by `caller`.
    pub(crate) fn of(rpc: Rpc, caller: Arc<str>, headers: &http::HeaderMap) -> Self {
        let mut trace_context = MetadataMap::new();
        for name in ["traceparent", "tracestate"] {
            if let Some(value) = headers
                .get(name)
                .and_then(|value| MetadataValue::try_from(value.as_bytes()).ok())
            {
                trace_context.insert(name, value);
            }
        }
        Self {
            rpc,
            caller,
            trace_context,
            started: Instant::now(),
        }
    }

    /// Reports the call as failed with `error` (its span, its completion
    /// line, its metrics) and returns the gRPC answer, with
    /// `traceresponse` like every other answer.
    pub(crate) fn answer(
        self,
        error: Error,
        metrics: &Metrics,
    ) -> http::Response<tonic::body::Body> {
        let span = rpc_span(self.rpc, &self.trace_context);
        record_caller(&span, &self.caller);
        report(
            &span,
            self.rpc,
            &self.caller,
            Outcome::failed(&error),
            self.started.elapsed(),
            metrics,
        );
        let mut status = Status::from(error);
        tag(status.metadata_mut(), &span, None);
        match self.rpc {
            Rpc::Verify(Transport::HttpJson)
            | Rpc::Batch(Transport::HttpJson)
            | Rpc::BatchItem(Transport::HttpJson) => {
                crate::server::http_error::error_response(&status)
            }
            _ => status.into_http(),
        }
    }
}

/// A server span for one RPC, child of the caller's `traceparent` if any.
pub(crate) fn rpc_span(rpc: Rpc, metadata: &MetadataMap) -> Span {
    let span = tracing::info_span!(
        "rpc",
        otel.name = rpc.span_name(),
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = rpc.system(),
        rpc.service = SERVICE,
        rpc.method = rpc.label(),
        rpc.grpc.status_code = Empty,
        tencent.request_id = Empty,
        faceid.verdict = Empty,
        faceid.caller = Empty,
    );
    telemetry::set_parent_from(&span, metadata);
    span
}

/// Records who called on an RPC span.
pub(crate) fn record_caller(span: &Span, caller: &str) {
    span.record("faceid.caller", caller);
}

/// The span of one batch item, child of the stream's span.
pub(crate) fn item_span(stream: &Span, index: u64) -> Span {
    tracing::info_span!(
        parent: stream,
        "batch item",
        otel.name = Rpc::BatchItem(Transport::Grpc).span_name(),
        otel.status_code = Empty,
        faceid.batch.item_index = i64::try_from(index).unwrap_or(i64::MAX),
        rpc.grpc.status_code = Empty,
        tencent.request_id = Empty,
        faceid.verdict = Empty,
    )
}

/// What telemetry needs to know of a finished verification.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome<'a> {
    code: Code,
    /// The code Tencent answered, when it answered.
    tencent_code: Option<&'a str>,
    /// The gateway's reason for an error Tencent did not give.
    gateway_reason: Option<&'a str>,
    request_id: &'a str,
    verdict: Option<&'static str>,
}

impl<'a> Outcome<'a> {
    /// The outcome of an answered verification.
    pub(crate) fn answered(answer: &'a VerifyIdCardResponse) -> Self {
        Self {
            code: Code::Ok,
            tencent_code: Some(&answer.result_code),
            gateway_reason: None,
            request_id: &answer.request_id,
            verdict: Some(answer.verdict().as_str_name()),
        }
    }

    /// The outcome of a failed verification.
    pub(crate) fn failed(error: &'a Error) -> Self {
        Self {
            code: error.code(),
            tencent_code: error.tencent_code(),
            gateway_reason: error.tencent_code().is_none().then(|| error.reason()),
            request_id: error.request_id().unwrap_or_default(),
            verdict: None,
        }
    }

    /// Either of the above.
    pub(crate) fn of(result: &'a Result<VerifyIdCardResponse, Error>) -> Self {
        match result {
            Ok(answer) => Self::answered(answer),
            Err(error) => Self::failed(error),
        }
    }
}

/// Whether a gRPC server span with this code is an error (OpenTelemetry's
/// RPC conventions: server-side faults only, not the caller's mistakes).
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

fn record_code(span: &Span, code: Code) {
    span.record("rpc.grpc.status_code", code as i64);
    if is_server_error(code) {
        span.record("otel.status_code", "error");
    }
}

/// Records `outcome` on `span`, writes the completion line inside it and
/// counts it under `method` and `caller`.
pub(crate) fn report(
    span: &Span,
    rpc: Rpc,
    caller: &str,
    outcome: Outcome<'_>,
    elapsed: Duration,
    metrics: &Metrics,
) {
    record_code(span, outcome.code);
    if !outcome.request_id.is_empty() {
        span.record("tencent.request_id", outcome.request_id);
    }
    if let Some(verdict) = outcome.verdict {
        span.record("faceid.verdict", verdict);
    }
    let method = rpc.label();
    metrics.rpc_finished(method, caller, grpc_name(outcome.code), elapsed);
    let latency_ms = elapsed.as_secs_f64() * 1e3;
    let code = grpc_name(outcome.code);
    let verdict = outcome.verdict.unwrap_or_default();
    // Server faults at WARN, everything else (callers' mistakes included)
    // at INFO; the level of a tracing event must be a constant.
    macro_rules! completed {
        ($level:expr) => {
            tracing::event!(
                $level,
                rpc.method = method,
                caller,
                rpc.grpc.status_code = code,
                tencent.code = outcome.tencent_code,
                faceid.reason = outcome.gateway_reason,
                tencent.request_id = outcome.request_id,
                verdict,
                latency_ms,
                "rpc completed"
            )
        };
    }
    span.in_scope(|| {
        if is_server_error(outcome.code) {
            completed!(tracing::Level::WARN);
        } else {
            completed!(tracing::Level::INFO);
        }
    });
}

/// Item counts of a finished batch stream.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BatchCounts {
    /// Items read.
    pub(crate) received: u64,
    /// Items answered with a result.
    pub(crate) succeeded: u64,
    /// Items answered with an error.
    pub(crate) failed: u64,
}

/// Records the end of a batch stream on its span, logs it and counts it.
pub(crate) fn report_stream(
    span: &Span,
    rpc: Rpc,
    caller: &str,
    code: Code,
    counts: BatchCounts,
    elapsed: Duration,
    metrics: &Metrics,
) {
    record_code(span, code);
    metrics.rpc_finished(rpc.label(), caller, grpc_name(code), elapsed);
    span.in_scope(|| {
        tracing::info!(
            rpc.method = rpc.label(),
            caller,
            rpc.grpc.status_code = grpc_name(code),
            batch.received = counts.received,
            batch.succeeded = counts.succeeded,
            batch.failed = counts.failed,
            latency_ms = elapsed.as_secs_f64() * 1e3,
            "batch stream completed"
        );
    });
}
