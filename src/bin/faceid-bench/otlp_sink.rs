//! An OTLP/HTTP (protobuf) receiver in the bench process, so a scenario can
//! measure the gateway with span export on: it answers every
//! `POST /v1/traces` with an empty `ExportTraceServiceResponse` and counts
//! the spans it decoded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tokio::net::TcpListener;

/// What the sink has received so far.
#[derive(Default)]
struct Counts {
    exports: AtomicU64,
    spans: AtomicU64,
    undecodable: AtomicU64,
}

/// A running sink; stops with the bench process.
pub struct OtlpSink {
    addr: SocketAddr,
    counts: Arc<Counts>,
}

impl OtlpSink {
    /// Listens on a loopback port and serves until the process ends.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let served = Arc::clone(&counts);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counts = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = service_fn(move |request| receive(request, Arc::clone(&counts)));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, counts })
    }

    /// The environment that points a gateway's exporter here.
    pub fn gateway_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                format!("http://{}", self.addr),
            ),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(),
                "http/protobuf".to_owned(),
            ),
        ]
    }

    /// Spans decoded so far.
    pub fn spans(&self) -> u64 {
        self.counts.spans.load(Ordering::Relaxed)
    }

    /// Export requests received so far, and how many could not be decoded.
    pub fn exports(&self) -> (u64, u64) {
        (
            self.counts.exports.load(Ordering::Relaxed),
            self.counts.undecodable.load(Ordering::Relaxed),
        )
    }
}

async fn receive(
    request: Request<Incoming>,
    counts: Arc<Counts>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/v1/traces" {
        return Ok(status(StatusCode::NOT_FOUND));
    }
    let Ok(body) = request.into_body().collect().await else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    counts.exports.fetch_add(1, Ordering::Relaxed);
    let Ok(export) = ExportTraceServiceRequest::decode(body.to_bytes()) else {
        counts.undecodable.fetch_add(1, Ordering::Relaxed);
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    let spans: usize = export
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .map(|scope| scope.spans.len())
        .sum();
    counts.spans.fetch_add(spans as u64, Ordering::Relaxed);
    let mut response = Response::new(Full::new(Bytes::new()));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    Ok(response)
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}
