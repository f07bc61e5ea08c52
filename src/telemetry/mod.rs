//! Logs and traces: one `tracing` subscriber that writes log lines ([`logs`]:
//! JSON or text, each with the `trace_id` and `span_id` of its span) and
//! turns spans into OpenTelemetry spans, exported over OTLP (gRPC or
//! HTTP/protobuf) only when an endpoint is configured with the standard
//! `OTEL_*` variables.
//!
//! W3C Trace Context is the propagator: `traceparent`/`tracestate` from
//! incoming metadata become the parent of the RPC span ([`set_parent_from`]),
//! and [`traceresponse`] tells the caller which trace its call landed in.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tonic::metadata::{KeyRef, MetadataMap};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

mod logs;

use logs::{LineWriter, LineWriterGuard, LogLayer};

/// The service name when `OTEL_SERVICE_NAME` is not set.
pub const DEFAULT_SERVICE_NAME: &str = "faceid-gateway";
/// The instrumentation scope of every span.
const SCOPE: &str = "faceid-gateway";

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An `OTEL_*` variable holds a value this build does not support.
    #[error("{variable}={value:?} is not supported (use grpc or http/protobuf)")]
    UnsupportedProtocol {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP exporter")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Where spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// Export at all (an endpoint is configured).
    pub enabled: bool,
    /// The transport.
    pub protocol: Protocol,
    /// An explicit endpoint (full URL, `/v1/traces` included for HTTP);
    /// `None` lets the exporter read `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`.
    pub endpoint: Option<String>,
    /// `service.name` of the resource.
    pub service_name: String,
}

impl OtlpSettings {
    /// Reads the standard variables through `var` (`std::env::var` outside
    /// tests): nothing is exported unless `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and `OTEL_TRACES_EXPORTER`
    /// is not `none`); the protocol defaults to `http/protobuf`, as the
    /// OpenTelemetry specification says.
    ///
    /// # Errors
    /// An unsupported protocol value.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, TelemetryError> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let has_endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        let disabled = set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none");
        let (variable, value) = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
            Some(value) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", value),
            None => (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                set("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_else(|| "http/protobuf".into()),
            ),
        };
        let protocol = match value.trim() {
            "grpc" => Protocol::Grpc,
            "http/protobuf" => Protocol::HttpBinary,
            _ => return Err(TelemetryError::UnsupportedProtocol { variable, value }),
        };
        Ok(Self {
            enabled: has_endpoint && !disabled,
            protocol,
            endpoint: None,
            service_name: set("OTEL_SERVICE_NAME").unwrap_or_else(|| DEFAULT_SERVICE_NAME.into()),
        })
    }
}

/// Builds the tracer provider: with a batch OTLP exporter when `settings`
/// enable one (sampling per `OTEL_TRACES_SAMPLER`); otherwise without an
/// exporter and recording nothing, so spans cost next to nothing and only
/// give log lines and `traceresponse` their ids.
///
/// # Errors
/// The exporter cannot be built.
pub fn tracer_provider(settings: &OtlpSettings) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    if !settings.enabled {
        // Nothing to export to: spans still get ids (for log lines and
        // `traceresponse`) but are never recorded.
        return Ok(builder.with_sampler(Sampler::AlwaysOff).build());
    }
    let exporter = match settings.protocol {
        Protocol::Grpc => {
            let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            if let Some(endpoint) = &settings.endpoint {
                exporter = exporter.with_endpoint(endpoint.clone());
            }
            exporter.build()?
        }
        _ => {
            crate::net::install_crypto_provider();
            let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary);
            if let Some(endpoint) = &settings.endpoint {
                exporter = exporter.with_endpoint(endpoint.clone());
            }
            exporter.build()?
        }
    };
    Ok(builder.with_batch_exporter(exporter).build())
}

/// A subscriber writing log lines in `json` or text to `writer`, filtered by
/// `filter`, and recording spans through `provider` (built from
/// `settings`).
///
/// Without an exporter the OpenTelemetry layer only gives spans their ids
/// (for log lines and `traceresponse`): it then skips what only an
/// exported span shows (code locations, thread names, busy and idle time,
/// log lines copied in as span events), which would be built on every call
/// and dropped unread.
pub fn subscriber<W>(
    settings: &OtlpSettings,
    provider: &SdkTracerProvider,
    json: bool,
    writer: W,
    filter: EnvFilter,
) -> impl Subscriber + Send + Sync + for<'a> LookupSpan<'a>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let exported = settings
        .enabled
        .then(|| tracing_opentelemetry::layer().with_tracer(provider.tracer(SCOPE)));
    let ids_only = (!settings.enabled).then(|| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SCOPE))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(filter_fn(|metadata| metadata.is_span()))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(exported)
        .with(ids_only)
        .with(LogLayer::new(json, writer))
}

/// Flushes and stops the exporter, and writes the last log lines, when
/// dropped (or on [`Self::shutdown`]).
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    _log_writer: LineWriterGuard,
}

impl TelemetryGuard {
    /// Exports the spans still buffered and stops the exporter.
    pub fn shutdown(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("faceid-gateway: exporting the last spans failed: {error}");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Whether spans leave the process. True until [`init`] says otherwise, so
/// a gateway built without `init` (in tests, under their own subscriber)
/// keeps every span.
static SPANS_EXPORTED: AtomicBool = AtomicBool::new(true);

/// Whether spans are exported, so worth the cost of the finer ones (the
/// rate-limit wait, each upstream attempt). Log lines need only the call's
/// span.
pub(crate) fn spans_exported() -> bool {
    SPANS_EXPORTED.load(Ordering::Relaxed)
}

/// Installs the global subscriber and the W3C propagator from the
/// environment (`RUST_LOG`, `OTEL_*`). Call once, inside the runtime.
///
/// # Errors
/// Bad `OTEL_*` values or an exporter that cannot be built.
pub fn init(format: LogFormat) -> Result<TelemetryGuard, TelemetryError> {
    let settings = OtlpSettings::from_env(|name| std::env::var(name).ok())?;
    let provider = tracer_provider(&settings)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Lines are written by a background thread, in batches, so a slow
    // stderr reader never stalls a request; when too much is pending,
    // callers wait rather than lines being dropped.
    let (writer, log_writer) = LineWriter::stderr();
    subscriber(&settings, &provider, json, writer, filter).init();
    install_panic_hook();
    SPANS_EXPORTED.store(settings.enabled, Ordering::Relaxed);
    if settings.enabled {
        tracing::info!(
            protocol = ?settings.protocol,
            service.name = %settings.service_name,
            "exporting traces over OTLP"
        );
    }
    Ok(TelemetryGuard {
        provider: Some(provider),
        _log_writer: log_writer,
    })
}

/// Logs every panic as one line with where it happened, in the current
/// span (so with its trace id), and never its message: a panic message may
/// hold a value from a request. The call it happened in is answered
/// `INTERNAL` (reason `GatewayPanic`) and the gateway goes on.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|at| format!("{}:{}", at.file(), at.line()))
            .unwrap_or_default();
        tracing::error!(
            panic.location = %location,
            "panic in the gateway; the call it happened in is answered INTERNAL (GatewayPanic)"
        );
    }));
}

/// Reads W3C Trace Context from gRPC metadata.
struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                KeyRef::Ascii(key) => Some(key.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Makes the caller's `traceparent` (if any) the parent of `span`.
pub(crate) fn set_parent_from(span: &tracing::Span, metadata: &MetadataMap) {
    let parent = TraceContextPropagator::new().extract(&MetadataExtractor(metadata));
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed.
        let _ = span.set_parent(parent);
    }
}

/// The W3C `traceresponse` value naming `span`'s trace and span, or `None`
/// when the span has no OpenTelemetry context.
pub(crate) fn traceresponse(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<OtlpSettings, TelemetryError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        OtlpSettings::from_env(|name| map.get(name).map(|v| (*v).to_owned()))
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        let s = settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap();
        assert!(!s.enabled);
        assert_eq!(s.service_name, DEFAULT_SERVICE_NAME);
    }

    #[test]
    fn an_endpoint_enables_export_with_http_protobuf_by_default() {
        let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]).unwrap();
        assert!(s.enabled);
        assert_eq!(s.protocol, Protocol::HttpBinary);
        let s = settings(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://collector:4317",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "idcheck"),
        ])
        .unwrap();
        assert_eq!(
            (s.protocol, s.service_name.as_str()),
            (Protocol::Grpc, "idcheck")
        );
    }

    #[test]
    fn traces_exporter_none_disables_export_and_json_protocol_is_refused() {
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ])
        .unwrap();
        assert!(!s.enabled);
        assert!(settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).is_err());
    }
}
