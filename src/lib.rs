//! faceid-gateway: a gRPC service that verifies Chinese resident ID cards
//! through Tencent Cloud FaceID `CheckIdCardInformation`.
//!
//! The layers, and the one direction their imports go (README "Code map"):
//!
//! - `server`: what callers see (gRPC service, batches, auth, validation,
//!   errors, the admin port), built on
//! - `upstream`: the shared tower stack (concurrency cap, retries, the GCRA
//!   rate limit), built on
//! - [`tencent`]: signing, the HTTP client, the wire model, the code table,
//!   credentials and answer encryption;
//! - [`simulator`]: a local Tencent stand-in that checks signatures;
//! - `net`: the accept loop, HTTP connection serving and TLS of every port;
//! - [`config`], [`telemetry`], `metrics`, [`proto`]: settings, logs and
//!   traces, Prometheus metrics, the generated contract;
//! - [`startup`]: assembles the layers into a running gateway.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub(crate) mod metrics;
pub(crate) mod net;
pub mod proto;
pub mod server;
pub mod simulator;
pub mod startup;
pub mod telemetry;
pub mod tencent;
pub(crate) mod upstream;

pub use net::install_crypto_provider;
