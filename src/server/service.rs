//! The gRPC handlers of `faceid.v1.IdCardVerificationService`: open the RPC
//! span (parented by the caller's trace), read the deadline, hand the work to
//! the [`Verifier`] (unary) or the batch driver (stream), and report. No
//! HTTP, signing or status building happens here.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Extensions, Request, Response, Status, Streaming};
use tracing::Instrument as _;

use crate::metrics::Metrics;
use crate::proto::id_card_verification_service_server::IdCardVerificationService;
use crate::proto::{VerifyIdCardBatchRequest, VerifyIdCardRequest, VerifyIdCardResponse};
use crate::server::auth::{Caller, caller_name};
use crate::server::batch::{self, BatchSettings, BatchStream, Inbound, StreamCall};
use crate::server::deadline;
use crate::server::error::Error;
use crate::server::observe::{self, Outcome, Rpc, Transport, tag};
use crate::server::spend::idempotency::{self, IdempotencyKey};
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

impl VerificationService {
    /// One `VerifyIdCard`, whatever the transport (the JSON gateway puts
    /// [`Transport::HttpJson`] in the extensions): the span (parented by the
    /// caller's trace), the deadline, the verification, the report, and
    /// `traceresponse` / `x-tencent-request-id` on the answer or the error.
    pub(crate) async fn verify(
        &self,
        request: Request<VerifyIdCardRequest>,
    ) -> Result<Response<VerifyIdCardResponse>, Status> {
        let started = Instant::now();
        let rpc = Rpc::Verify(transport_of(request.extensions()));
        let span = observe::rpc_span(rpc, request.metadata());
        let deadline = deadline::from_metadata(request.metadata(), started);
        let caller = request.extensions().get::<Caller>().cloned();
        let name = caller_name(caller.as_ref()).to_owned();
        observe::record_caller(&span, &name);
        let verified = match IdempotencyKey::from_metadata(request.metadata()) {
            Ok(key) => {
                self.verifier
                    .verify(
                        request.into_inner(),
                        "",
                        caller.as_ref(),
                        deadline,
                        key.as_ref(),
                    )
                    .instrument(span.clone())
                    .await
            }
            Err(invalid) => idempotency::Outcome {
                result: Err(Error::from(invalid)),
                replayed: false,
            },
        };
        let replayed = verified.replayed;
        let result = verified.result;
        observe::report(
            &span,
            rpc,
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
                if replayed {
                    mark_replay(response.metadata_mut());
                }
                Ok(response)
            }
            Err(error) => {
                let mut status = Status::from(error);
                // The request id is already in the status metadata.
                tag(status.metadata_mut(), &span, None);
                if replayed {
                    mark_replay(status.metadata_mut());
                }
                Err(status)
            }
        }
    }

    /// Opens one `VerifyIdCardBatch` stream over `inbound`, whatever the
    /// transport; the answers stream back as they complete.
    pub(crate) fn open_batch(
        &self,
        metadata: &MetadataMap,
        extensions: &Extensions,
        inbound: Inbound,
    ) -> Response<BatchStream> {
        let rpc = Rpc::Batch(transport_of(extensions));
        let span = observe::rpc_span(rpc, metadata);
        let deadline = deadline::from_metadata(metadata, Instant::now());
        let caller = extensions.get::<Caller>().cloned();
        observe::record_caller(&span, caller_name(caller.as_ref()));
        let idempotency_key = match IdempotencyKey::from_metadata(metadata) {
            Ok(key) => key,
            Err(invalid) => {
                let mut status = Status::from(Error::from(invalid));
                tag(status.metadata_mut(), &span, None);
                let refused: BatchStream =
                    Box::pin(futures_util::stream::once(std::future::ready(Err(status))));
                return Response::new(refused);
            }
        };
        let answers = batch::start(
            self.verifier.clone(),
            self.batch.clone(),
            inbound,
            self.shutdown.clone(),
            StreamCall {
                span: span.clone(),
                rpc,
                deadline,
                caller,
                idempotency_key,
            },
        );
        let mut response = Response::new(answers);
        tag(response.metadata_mut(), &span, None);
        response
    }
}

/// Marks an answer as a replay of an earlier call's.
fn mark_replay(metadata: &mut MetadataMap) {
    metadata.insert(
        idempotency::REPLAY_METADATA,
        tonic::metadata::MetadataValue::from_static("true"),
    );
}

/// The transport a request came by (gRPC unless the JSON gateway says).
fn transport_of(extensions: &Extensions) -> Transport {
    extensions
        .get::<Transport>()
        .copied()
        .unwrap_or(Transport::Grpc)
}

#[tonic::async_trait]
impl IdCardVerificationService for VerificationService {
    async fn verify_id_card(
        &self,
        request: Request<VerifyIdCardRequest>,
    ) -> Result<Response<VerifyIdCardResponse>, Status> {
        self.verify(request).await
    }

    type VerifyIdCardBatchStream = BatchStream;

    async fn verify_id_card_batch(
        &self,
        request: Request<Streaming<VerifyIdCardBatchRequest>>,
    ) -> Result<Response<Self::VerifyIdCardBatchStream>, Status> {
        let (metadata, extensions, inbound) = request.into_parts();
        Ok(self.open_batch(&metadata, &extensions, Box::pin(inbound)))
    }
}
