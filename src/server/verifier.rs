//! One verification from validated input to the gRPC answer, shared by the
//! unary handler and every batch item: validate, build the body, call the
//! shared upstream stack, map the outcome.

use std::sync::Arc;

use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::proto::{VerifyIdCardRequest, VerifyIdCardResponse};
use crate::server::auth::{Caller, CallerQuotas};
use crate::server::error::Error;
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
        }
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
    ) -> Result<VerifyIdCardResponse, Error> {
        let verification = self.parse(request, field_prefix)?;
        self.verify_valid(verification, caller, deadline).await
    }

    /// Verifies input that already passed validation, within `caller`'s
    /// share of the upstream limit. The image is released as soon as the
    /// request body is built.
    ///
    /// # Errors
    /// The caller's share is used up, or the upstream call failed.
    pub(crate) async fn verify_valid(
        &self,
        verification: Verification,
        caller: Option<&Caller>,
        deadline: Option<Instant>,
    ) -> Result<VerifyIdCardResponse, Error> {
        self.quotas.check(caller)?;
        let mode = match verification.encryption {
            EncryptionChoice::GatewayDefault => self.encryption.default_mode,
            EncryptionChoice::Off => None,
            EncryptionChoice::On(mode) => Some(mode),
        };
        let (body, encryption) = verification
            .into_encrypted_body(mode, &self.encryption.settings)
            .map_err(Error::EncryptionSetup)?;
        let mut call = UpstreamRequest::new(body, deadline);
        call.encryption = encryption.map(Arc::new);
        let reply = self.upstream.clone().oneshot(call).await?;
        Ok(verdict::to_response(reply, self.match_threshold))
    }
}
