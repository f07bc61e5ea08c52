//! Whether this replica should get traffic, in one place for both probes
//! (`grpc.health.v1` on the gRPC port, `/readyz` on the admin port): not
//! while it drains for shutdown, not while Tencent refuses its credentials,
//! and not while its temporary keys have expired without a renewal, so
//! Kubernetes stops sending calls to a pod that cannot serve them. Both
//! recover by themselves: a call that succeeds, new keys, or a renewal make
//! the credentials usable again.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::proto::id_card_verification_service_server::IdCardVerificationServiceServer;
use crate::server::service::VerificationService;
use crate::tencent::credentials::CredentialState;

/// The inputs of readiness. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Readiness {
    draining: CancellationToken,
    credentials: watch::Receiver<CredentialState>,
}

impl Readiness {
    /// Not ready once `draining` is cancelled or while `credentials` are
    /// refused.
    pub(crate) fn new(
        draining: CancellationToken,
        credentials: watch::Receiver<CredentialState>,
    ) -> Self {
        Self {
            draining,
            credentials,
        }
    }

    /// Why this replica should get no traffic now, if it should not.
    pub(crate) fn not_ready_because(&self) -> Option<&'static str> {
        if self.draining.is_cancelled() {
            return Some("draining");
        }
        match *self.credentials.borrow() {
            CredentialState::Usable => None,
            CredentialState::Refused => Some("Tencent refuses the credentials"),
            CredentialState::Expired => {
                Some("the temporary Tencent keys expired and could not be renewed")
            }
        }
    }

    /// Keeps the gRPC health service (the gateway's service and the
    /// overall `""`) in step with readiness until `stop`.
    pub(crate) async fn drive(mut self, health: HealthReporter, stop: CancellationToken) {
        loop {
            let status = match self.not_ready_because() {
                None => ServingStatus::Serving,
                Some(_) => ServingStatus::NotServing,
            };
            health.set_service_status("", status).await;
            match status {
                ServingStatus::Serving => {
                    health
                        .set_serving::<IdCardVerificationServiceServer<VerificationService>>()
                        .await;
                }
                _ => {
                    health
                        .set_not_serving::<IdCardVerificationServiceServer<VerificationService>>()
                        .await;
                }
            }
            let draining = self.draining.clone();
            tokio::select! {
                () = stop.cancelled() => return,
                () = draining.cancelled(), if !draining.is_cancelled() => {}
                changed = self.credentials.changed() => {
                    if changed.is_err() {
                        // The credentials are gone with the gateway: stop.
                        return;
                    }
                }
            }
        }
    }
}
