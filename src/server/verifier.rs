//! One verification from validated input to the gRPC answer, shared by the
//! unary handler and every batch item: validate; replay an earlier answer
//! under the same idempotency key, or wait for it; take the caller's share
//! and a unit of its budgets; build the body, call the shared upstream
//! stack, map the outcome; give the unit back when it was not billed.

use std::sync::Arc;

use tokio::time::Instant;
use tower::ServiceExt as _;
use tracing::Instrument as _;

use crate::proto::{VerifyIdCardRequest, VerifyIdCardResponse};
use crate::server::auth::{Caller, CallerQuotas, caller_name};
use crate::server::error::Error;
use crate::server::spend::Spend;
use crate::server::spend::idempotency::{IdempotencyKey, Identity, Outcome};
use crate::server::validate::{EncryptionChoice, InputRules, InvalidArgument, Verification};
use crate::server::verdict;
use crate::tencent::{EncryptionMode, EncryptionSettings};
use crate::upstream::{Stack, UpstreamRequest};

/// Runs verifications through the shared upstream stack. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Verifier {
    upstream: Stack,
    match_threshold: f64,
    encryption: EncryptionPolicy,
    rules: InputRules,
    quotas: Arc<CallerQuotas>,
    spend: Arc<Spend>,
}

/// How answers are protected between Tencent and the gateway.
#[derive(Debug, Clone)]
pub(crate) struct EncryptionPolicy {
    /// The mode when a request does not choose (None = off).
    pub(crate) default_mode: Option<EncryptionMode>,
    /// The algorithm and public keys.
    pub(crate) settings: EncryptionSettings,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("match_threshold", &self.match_threshold)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier calling `upstream`, matching at `match_threshold`,
    /// asking for encrypted answers per `encryption`, validating input
    /// under `rules`.
    pub(crate) fn new(
        upstream: Stack,
        match_threshold: f64,
        encryption: EncryptionPolicy,
        rules: InputRules,
    ) -> Self {
        Self {
            upstream,
            match_threshold,
            encryption,
            rules,
            quotas: Arc::new(CallerQuotas::default()),
            spend: Arc::new(Spend::in_memory(Arc::new(crate::metrics::Metrics::new()))),
        }
    }

    /// This verifier with `spend` (billing, budgets, idempotency) in place
    /// of the in-memory default.
    pub(crate) fn with_spend(mut self, spend: Arc<Spend>) -> Self {
        self.spend = spend;
        self
    }

    /// Validates `request` under this gateway's input rules (field paths
    /// prefixed with `field_prefix`).
    ///
    /// # Errors
    /// [`InvalidArgument`] naming the first broken rule.
    pub(crate) fn parse(
        &self,
        request: VerifyIdCardRequest,
        field_prefix: &str,
    ) -> Result<Verification, InvalidArgument> {
        Verification::parse(request, field_prefix, self.rules)
    }

    /// Validates `request` (field paths prefixed with `field_prefix`) and
    /// verifies it.
    ///
    /// # Errors
    /// Invalid input (nothing sent upstream) or a failed upstream call.
    pub(crate) async fn verify(
        &self,
        request: VerifyIdCardRequest,
        field_prefix: &str,
        caller: Option<&Caller>,
        deadline: Option<Instant>,
        key: Option<&IdempotencyKey>,
    ) -> Outcome {
        match self.parse(request, field_prefix) {
            Ok(verification) => self.verify_keyed(verification, caller, deadline, key).await,
            Err(invalid) => Outcome {
                result: Err(invalid.into()),
                replayed: false,
            },
        }
    }

    /// Verifies input that already passed validation; with an idempotency
    /// `key`, an earlier call's answer to the same request is replayed (or
    /// awaited while it runs) instead of calling upstream again.
    ///
    /// A keyed verification runs to its end even when its caller stops
    /// waiting (deadline, cancellation): Tencent may bill it either way, so
    /// its answer is kept for the retry that will come with the same key.
    pub(crate) async fn verify_keyed(
        &self,
        verification: Verification,
        caller: Option<&Caller>,
        deadline: Option<Instant>,
        key: Option<&IdempotencyKey>,
    ) -> Outcome {
        let Some(key) = key else {
            return Outcome {
                result: self.verify_valid(verification, caller, deadline).await,
                replayed: false,
            };
        };
        let name = caller_name(caller).to_owned();
        let id = Identity::of(&name, key, &verification);
        let verifier = self.clone();
        let caller = caller.cloned();
        let detached = tokio::spawn(
            async move {
                let spend = Arc::clone(&verifier.spend);
                spend
                    .idempotency()
                    .run(&name, &id, None, || {
                        verifier.verify_valid(verification, caller.as_ref(), None)
                    })
                    .await
            }
            .instrument(tracing::Span::current()),
        );
        let joined = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, detached).await {
                Ok(joined) => joined,
                Err(_) => {
                    return Outcome {
                        result: Err(Error::DeadlineExceeded),
                        replayed: false,
                    };
                }
            },
            None => detached.await,
        };
        joined.unwrap_or_else(|_| Outcome {
            // The panic hook logged where.
            result: Err(Error::Panicked),
            replayed: false,
        })
    }

    /// Verifies input that already passed validation, within `caller`'s
    /// share of the upstream limit and its budgets. The image is released
    /// as soon as the request body is built.
    ///
    /// # Errors
    /// The caller's share or a budget is used up, or the upstream call
    /// failed.
    pub(crate) async fn verify_valid(
        &self,
        verification: Verification,
        caller: Option<&Caller>,
        deadline: Option<Instant>,
    ) -> Result<VerifyIdCardResponse, Error> {
        self.quotas.check(caller)?;
        let payer = caller.map(Caller::payer);
        let hold = self.spend.reserve(payer.as_ref()).await?;
        let mode = match verification.encryption {
            EncryptionChoice::GatewayDefault => self.encryption.default_mode,
            EncryptionChoice::Off => None,
            EncryptionChoice::On(mode) => Some(mode),
        };
        let (body, encryption) =
            match verification.into_encrypted_body(mode, &self.encryption.settings) {
                Ok(built) => built,
                Err(error) => {
                    self.spend.cancel(hold).await;
                    return Err(Error::EncryptionSetup(error));
                }
            };
        let mut call = UpstreamRequest::new(body, deadline);
        call.encryption = encryption.map(Arc::new);
        // Dropped here (the caller went away), the reservation stays taken:
        // the call may have reached Tencent.
        let result = match self.upstream.clone().oneshot(call).await {
            Ok(reply) => Ok(verdict::to_response(reply, self.match_threshold)),
            Err(error) => Err(Error::from(error)),
        };
        self.spend.settle(caller_name(caller), &result, hold).await;
        result
    }
}
