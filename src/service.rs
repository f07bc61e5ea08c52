//! The gRPC handlers of `faceid.v1.IdCardVerificationService`: read the
//! deadline, hand the work to the [`Verifier`] (unary) or the batch driver
//! (stream), log the outcome. No HTTP, signing or status building here.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::batch::{self, BatchSettings, BatchStream};
use crate::deadline;
use crate::error::{REQUEST_ID_METADATA, grpc_name};
use crate::proto::id_card_verification_service_server::IdCardVerificationService;
use crate::proto::{VerifyIdCardBatchRequest, VerifyIdCardRequest, VerifyIdCardResponse};
use crate::verifier::Verifier;

/// The service implementation, shared by every connection.
#[derive(Debug, Clone)]
pub struct VerificationService {
    verifier: Verifier,
    batch: BatchSettings,
    shutdown: CancellationToken,
}

impl VerificationService {
    /// A service running verifications with `verifier`; batch streams use
    /// `batch` limits and drain when `shutdown` is cancelled.
    pub fn new(verifier: Verifier, batch: BatchSettings, shutdown: CancellationToken) -> Self {
        Self {
            verifier,
            batch,
            shutdown,
        }
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
        let outcome = self
            .verifier
            .verify(request.into_inner(), "", deadline)
            .await;
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
        request: Request<Streaming<VerifyIdCardBatchRequest>>,
    ) -> Result<Response<Self::VerifyIdCardBatchStream>, Status> {
        let deadline = deadline::from_metadata(request.metadata(), Instant::now());
        Ok(Response::new(batch::start(
            self.verifier.clone(),
            self.batch.clone(),
            request.into_inner(),
            deadline,
            self.shutdown.clone(),
        )))
    }
}
