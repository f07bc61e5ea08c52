//! The gRPC handlers of `faceid.v1.IdCardVerificationService`: open the RPC
//! span (parented by the caller's trace), read the deadline, hand the work to
//! the [`Verifier`] (unary) or the batch driver (stream), and report. No
//! HTTP, signing or status building happens here.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use crate::metrics::Metrics;
use crate::proto::id_card_verification_service_server::IdCardVerificationService;
use crate::proto::{VerifyIdCardBatchRequest, VerifyIdCardRequest, VerifyIdCardResponse};
use crate::server::auth::{Caller, caller_name};
use crate::server::batch::{self, BatchSettings, BatchStream};
use crate::server::deadline;
use crate::server::observe::{self, Outcome, tag};
use crate::server::verifier::Verifier;

/// The service implementation, shared by every connection.
#[derive(Debug, Clone)]
pub(crate) struct VerificationService {
    verifier: Verifier,
    batch: BatchSettings,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
}

impl VerificationService {
    /// A service running verifications with `verifier`; batch streams use
    /// `batch` limits and drain when `shutdown` is cancelled.
    pub(crate) fn new(
        verifier: Verifier,
        batch: BatchSettings,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            verifier,
            batch,
            shutdown,
            metrics,
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
        let span = observe::rpc_span("VerifyIdCard", request.metadata());
        let deadline = deadline::from_metadata(request.metadata(), started);
        let caller = request.extensions().get::<Caller>().cloned();
        let name = caller_name(caller.as_ref()).to_owned();
        observe::record_caller(&span, &name);
        let result = self
            .verifier
            .verify(request.into_inner(), "", caller.as_ref(), deadline)
            .instrument(span.clone())
            .await;
        observe::report(
            &span,
            "VerifyIdCard",
            &name,
            Outcome::of(&result),
            started.elapsed(),
            &self.metrics,
        );
        match result {
            Ok(answer) => {
                let request_id = answer.request_id.clone();
                let mut response = Response::new(answer);
                tag(response.metadata_mut(), &span, Some(&request_id));
                Ok(response)
            }
            Err(error) => {
                let mut status = Status::from(error);
                // The request id is already in the status metadata.
                tag(status.metadata_mut(), &span, None);
                Err(status)
            }
        }
    }

    type VerifyIdCardBatchStream = BatchStream;

    async fn verify_id_card_batch(
        &self,
        request: Request<Streaming<VerifyIdCardBatchRequest>>,
    ) -> Result<Response<Self::VerifyIdCardBatchStream>, Status> {
        let span = observe::rpc_span("VerifyIdCardBatch", request.metadata());
        let deadline = deadline::from_metadata(request.metadata(), Instant::now());
        let caller = request.extensions().get::<Caller>().cloned();
        observe::record_caller(&span, caller_name(caller.as_ref()));
        let answers = batch::start(
            self.verifier.clone(),
            self.batch.clone(),
            request.into_inner(),
            deadline,
            caller,
            self.shutdown.clone(),
            span.clone(),
        );
        let mut response = Response::new(answers);
        tag(response.metadata_mut(), &span, None);
        Ok(response)
    }
}
