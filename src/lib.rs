//! faceid-gateway: a gRPC service that verifies Chinese resident ID cards
//! through Tencent Cloud FaceID `CheckIdCardInformation`.
//!
//! - [`proto`]: the generated `faceid.v1` contract;
//! - [`tencent`]: the signed upstream client;
//! - [`simulator`]: a local Tencent stand-in that checks signatures;
//! - [`crypto`]: sensitive-data encryption (RSA/SM2 key wrap, AES-CBC, SM4-GCM);
//! - [`validate`], [`verdict`], [`error`]: input checks, answer mapping and
//!   the one mapping to `tonic::Status`;
//! - [`upstream`], [`limit`]: the shared tower stack (concurrency cap,
//!   retries, GCRA rate limit, attempts);
//! - [`verifier`], [`batch`]: one verification, and the batch stream driver;
//! - [`telemetry`], [`observe`], [`metrics`], [`admin`]: logs and traces,
//!   what each RPC reports, Prometheus metrics and the admin port;
//! - [`auth`], [`tls`]: caller tokens and quotas; TLS and mutual TLS;
//! - [`service`], [`startup`], [`config`]: the gRPC server and its settings.

pub mod admin;
pub mod auth;
pub mod batch;
pub mod config;
pub mod crypto;
pub mod deadline;
pub mod error;
pub mod limit;
pub mod metrics;
pub mod observe;
pub mod proto;
pub mod service;
pub mod shutdown;
pub mod simulator;
pub mod startup;
pub mod telemetry;
pub mod tencent;
pub mod tls;
pub mod upstream;
pub mod validate;
pub mod verdict;
pub mod verifier;
pub mod watch;
