//! The gRPC handlers of `faceid.v1.IdCardVerificationService`: validate,
//! call the upstream, map the answer. No HTTP, signing or status building
//! happens here.

use std::pin::Pin;

use futures_util::Stream;
use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};
use tower::ServiceExt as _;

use crate::deadline;
use crate::error::{Error, REQUEST_ID_METADATA, grpc_name};
use crate::proto::id_card_verification_service_server::IdCardVerificationService;
use crate::proto::{
    VerifyIdCardBatchRequest, VerifyIdCardBatchResponse, VerifyIdCardRequest, VerifyIdCardResponse,
};
use crate::upstream::{Upstream, UpstreamRequest};
use crate::validate::Verification;
use crate::verdict;

/// The answer stream of `VerifyIdCardBatch`.
pub type BatchStream =
    Pin<Box<dyn Stream<Item = Result<VerifyIdCardBatchResponse, Status>> + Send + 'static>>;

/// The service implementation, shared by every connection.
#[derive(Debug, Clone)]
pub struct VerificationService {
    upstream: Upstream,
    match_threshold: f64,
}

impl VerificationService {
    /// A service calling the shared `upstream` stack, matching at `match_threshold`.
    pub fn new(upstream: Upstream, match_threshold: f64) -> Self {
        Self {
            upstream,
            match_threshold,
        }
    }

    /// One verification, from validated input to the gRPC answer.
    async fn verify(
        &self,
        request: VerifyIdCardRequest,
        deadline: Option<Instant>,
    ) -> Result<VerifyIdCardResponse, Error> {
        let verification = Verification::parse(request, "")?;
        let call = UpstreamRequest::new(verification.into_body(), deadline);
        let reply = self.upstream.clone().oneshot(call).await?;
        Ok(verdict::to_response(reply, self.match_threshold))
    }
}

#[tonic::async_trait]
impl IdCardVerificationService for VerificationService {
    async fn verify_id_card(
        &self,
        request: Request<VerifyIdCardRequest>,
    ) -> Result<Response<VerifyIdCardResponse>, Status> {
        let started = Instant::now();
        let deadline = deadline::from_metadata(request.metadata(), started);
        let outcome = self.verify(request.into_inner(), deadline).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        match outcome {
            Ok(answer) => {
                tracing::info!(
                    rpc.method = "VerifyIdCard",
                    rpc.grpc.status_code = "OK",
                    tencent.result = %answer.result_code,
                    tencent.request_id = %answer.request_id,
                    verdict = answer.verdict().as_str_name(),
                    latency_ms,
                    "rpc completed"
                );
                let request_id = MetadataValue::try_from(answer.request_id.as_str()).ok();
                let mut response = Response::new(answer);
                if let Some(value) = request_id {
                    response.metadata_mut().insert(REQUEST_ID_METADATA, value);
                }
                Ok(response)
            }
            Err(error) => {
                let status = Status::from(error);
                let request_id = status
                    .metadata()
                    .get(REQUEST_ID_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info!(
                    rpc.method = "VerifyIdCard",
                    rpc.grpc.status_code = grpc_name(status.code()),
                    tencent.request_id = request_id,
                    latency_ms,
                    "rpc completed"
                );
                Err(status)
            }
        }
    }

    type VerifyIdCardBatchStream = BatchStream;

    async fn verify_id_card_batch(
        &self,
        _request: Request<Streaming<VerifyIdCardBatchRequest>>,
    ) -> Result<Response<Self::VerifyIdCardBatchStream>, Status> {
        Err(Status::unimplemented(
            "VerifyIdCardBatch is not available in this version",
        ))
    }
}
