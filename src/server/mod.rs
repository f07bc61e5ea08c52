//! The server layer: what callers see. The gRPC service and its batch
//! driver, caller authentication and quotas, input validation, the mapping of
//! Tencent's answers and of every error to what a caller receives, deadlines,
//! what each call reports (span, log line, metrics), spend control (billing,
//! budgets, idempotency), and the admin port.
//!
//! May import: [`crate::upstream`] (the shared stack every call goes
//! through), [`crate::tencent`] (its types), [`crate::net`],
//! [`crate::config`], [`crate::metrics`], [`crate::telemetry`] and
//! [`crate::proto`]. Nothing below imports the server: arrows point server →
//! upstream → tencent.

pub(crate) mod admin;
pub(crate) mod auth;
pub(crate) mod batch;
pub(crate) mod deadline;
pub(crate) mod error;
pub(crate) mod guard;
pub(crate) mod http_error;
pub(crate) mod json;
pub(crate) mod observe;
pub(crate) mod readiness;
pub(crate) mod service;
pub(crate) mod spend;
pub(crate) mod validate;
pub(crate) mod verdict;
pub(crate) mod verifier;

pub use auth::{NewTokenError, TokensFileError, new_token, new_token_with_budgets};
