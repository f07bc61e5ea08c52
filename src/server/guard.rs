//! The last line of defence around every call of the gRPC port:
//!
//! - a panic in a handler is caught: the call is answered `INTERNAL`
//!   (reason `GatewayPanic`), counted, and the gateway goes on (the panic
//!   hook installed by `telemetry::init` logs where it happened);
//! - what tonic answers by itself before our handler runs, for a request
//!   message that does not decode or is too large, becomes the gateway's
//!   own error (`INVALID_ARGUMENT` `MalformedMessage`, `RESOURCE_EXHAUSTED`
//!   `MessageTooLarge`) with details, a completion line, metrics and
//!   `traceresponse`, like every other error.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt as _;
use http::{Request, Response};
use tonic::Code;
use tower::{Layer, Service};

use crate::metrics::Metrics;
use crate::server::auth::{Caller, caller_name};
use crate::server::error::Error;
use crate::server::observe::{self, Refused};

/// Applies [`Guard`].
#[derive(Debug, Clone)]
pub(crate) struct GuardLayer {
    metrics: Arc<Metrics>,
}

impl GuardLayer {
    /// Guards calls, counting panics in `metrics`.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// The service [`GuardLayer`] makes.
#[derive(Debug, Clone)]
pub(crate) struct Guard<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<Request<B>> for Guard<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        let refused = observe::rpc_of(path).map(|rpc| {
            let caller = caller_name(request.extensions().get::<Caller>());
            Refused::of(rpc, Arc::from(caller), request.headers())
        });
        // The ready service is the one that must be called; leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = Arc::clone(&self.metrics);
        let answer = inner.call(request);
        Box::pin(async move {
            match AssertUnwindSafe(answer).catch_unwind().await {
                Ok(Ok(response)) => match (refused, tonic_refusal(&response)) {
                    (Some(refused), Some(error)) => Ok(refused.answer(error, &metrics)),
                    _ => Ok(response),
                },
                Err(_panic) => {
                    metrics.panics.inc();
                    Ok(match refused {
                        Some(refused) => refused.answer(Error::Panicked, &metrics),
                        None => tonic::Status::from(Error::Panicked).into_http(),
                    })
                }
            }
        })
    }
}

/// The gateway's error for a status tonic answered by itself before the
/// handler ran: a trailers-only answer without details (every error of the
/// gateway's handlers carries `ErrorInfo`).
fn tonic_refusal(response: &Response<tonic::body::Body>) -> Option<Error> {
    let headers = response.headers();
    if headers.contains_key("grpc-status-details-bin") {
        return None;
    }
    let code: i32 = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    match Code::from(code) {
        // A body that does not decode as the request message, a truncated
        // frame, a compressed frame without an encoding, no message at all.
        Code::Internal => Some(Error::MalformedMessage { index: None }),
        // Over the size limit, raw or once decompressed.
        Code::OutOfRange | Code::ResourceExhausted => Some(Error::MessageTooLarge { index: None }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt as _;
    use tower::ServiceExt as _;

    use super::*;

    fn guarded<F, Fut>(handler: F) -> (Guard<tower::util::ServiceFn<F>>, Arc<Metrics>)
    where
        F: FnMut(Request<()>) -> Fut,
        Fut: Future<Output = Result<Response<tonic::body::Body>, Infallible>>,
    {
        let metrics = Arc::new(Metrics::new());
        let service = GuardLayer::new(Arc::clone(&metrics)).layer(tower::service_fn(handler));
        (service, metrics)
    }

    fn call_to(method: &str) -> Request<()> {
        Request::builder()
            .uri(format!("/faceid.v1.IdCardVerificationService/{method}"))
            .body(())
            .unwrap()
    }

    fn status_of(response: &Response<tonic::body::Body>) -> tonic::Status {
        tonic::Status::from_header_map(response.headers()).expect("a gRPC status")
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_internal_and_counted() {
        let (service, metrics) = guarded(|_request: Request<()>| async {
            if true {
                panic!("a bug in a handler");
            }
            Ok(Response::new(tonic::body::Body::empty()))
        });

        let response = service.oneshot(call_to("VerifyIdCard")).await.unwrap();

        let status = status_of(&response);
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "GatewayPanic"
        );
        assert_eq!(metrics.panics.get(), 1);
        assert!(metrics.encode().contains(
            r#"faceid_rpcs_total{method="VerifyIdCard",caller="anonymous",code="INTERNAL"} 1"#
        ));
    }

    #[tokio::test]
    async fn tonics_own_decode_and_size_errors_become_the_gateways() {
        for (tonic_status, code, reason) in [
            (
                tonic::Status::internal("failed to decode Protobuf message"),
                Code::InvalidArgument,
                "MalformedMessage",
            ),
            (
                tonic::Status::out_of_range("decoded message length too large"),
                Code::ResourceExhausted,
                "MessageTooLarge",
            ),
        ] {
            let (service, _metrics) = guarded(move |_request: Request<()>| {
                let status = tonic_status.clone();
                async move { Ok(status.into_http()) }
            });

            let response = service.oneshot(call_to("VerifyIdCard")).await.unwrap();

            let status = status_of(&response);
            assert_eq!(status.code(), code);
            assert_eq!(status.get_details_error_info().unwrap().reason, reason);
        }
    }

    #[tokio::test]
    async fn the_handlers_own_errors_and_other_services_pass_untouched() {
        let ours: tonic::Status = Error::Panicked.into();
        let (service, _metrics) = guarded(move |_request: Request<()>| {
            let status = ours.clone();
            async move { Ok(status.into_http()) }
        });
        let response = service.oneshot(call_to("VerifyIdCard")).await.unwrap();
        assert!(!response.headers().contains_key("traceresponse"));

        let (service, _metrics) = guarded(|_request: Request<()>| async {
            Ok(tonic::Status::internal("health is not ours").into_http())
        });
        let request = Request::builder()
            .uri("/grpc.health.v1.Health/Check")
            .body(())
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(status_of(&response).message(), "health is not ours");
    }
}
