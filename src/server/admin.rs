//! The admin HTTP port, kept off the gRPC port so it can be scraped and
//! probed without gRPC (or its TLS) and firewalled separately:
//! `GET /metrics` (Prometheus), `GET /healthz` (the process is up),
//! `GET /readyz` (it takes calls; 503 once draining) and `GET /budgets`
//! (every budget: limit, used, when it resets; JSON).

use std::convert::Infallible;
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::server::auth::Authenticator;
use crate::server::readiness::Readiness;
use crate::server::spend::Spend;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

/// The OpenMetrics content type Prometheus negotiates for.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Where `GET /budgets` reads from.
#[derive(Clone)]
pub(crate) struct BudgetSource {
    /// The budgets.
    pub(crate) spend: Arc<Spend>,
    /// The callers (their budgets), when tokens are on.
    pub(crate) authenticator: Option<Arc<Authenticator>>,
}

impl BudgetSource {
    /// `{"budgets": [{caller, period, limit, used, resets_at}, …]}`.
    async fn json(&self) -> String {
        let callers = self
            .authenticator
            .as_ref()
            .map(|authenticator| {
                authenticator
                    .callers()
                    .iter()
                    .map(crate::server::auth::Caller::payer)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let budgets = self.spend.report(&callers).await;
        let mut body = serde_json::json!({ "budgets": budgets }).to_string();
        body.push('\n');
        body
    }
}

/// The admin endpoints as a service; `/readyz` follows `readiness`.
pub(crate) fn service(
    metrics: Arc<Metrics>,
    readiness: Readiness,
    budgets: BudgetSource,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |request: Request<Incoming>| {
        let budgets = budgets.clone();
        let response = if request.method() == Method::GET && request.uri().path() == "/budgets" {
            None
        } else {
            Some(route(&request, &metrics, readiness.not_ready_because()))
        };
        async move {
            let response = match response {
                Some(response) => response,
                None => Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(budgets.json().await)))
                    .expect("static parts make a valid response"),
            };
            Ok::<_, Infallible>(response)
        }
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
            "faceid-gateway admin: GET /metrics, /healthz, /readyz, /budgets\n".to_owned(),
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
