//! The admin HTTP port, kept off the gRPC port so it can be scraped and
//! probed without gRPC (or its TLS) and firewalled separately:
//! `GET /metrics` (Prometheus), `GET /healthz` (the process is up) and
//! `GET /readyz` (it takes calls; 503 once draining).

use std::convert::Infallible;
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::server::readiness::Readiness;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

/// The OpenMetrics content type Prometheus negotiates for.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The admin endpoints as a service; `/readyz` follows `readiness`.
pub(crate) fn service(
    metrics: Arc<Metrics>,
    readiness: Readiness,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |request: Request<Incoming>| {
        let response = route(&request, &metrics, readiness.not_ready_because());
        std::future::ready(Ok::<_, Infallible>(response))
    })
}

fn route(
    request: &Request<Incoming>,
    metrics: &Metrics,
    not_ready_because: Option<&str>,
) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, OPENMETRICS, metrics.encode()),
        (&Method::GET, "/healthz") => (StatusCode::OK, TEXT, "ok\n".to_owned()),
        (&Method::GET, "/readyz") => match not_ready_because {
            None => (StatusCode::OK, TEXT, "serving\n".to_owned()),
            Some(why) => (StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
        },
        (&Method::GET, "/") => (
            StatusCode::OK,
            TEXT,
            "faceid-gateway admin: GET /metrics, /healthz, /readyz\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n".to_owned(),
        ),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static parts make a valid response")
}
