//! Tencent Cloud FaceID `CheckIdCardInformation` (API 3.0, version 2018-03-01).
//!
//! The upstream contract: a signed JSON POST to `/` of the endpoint, answered
//! with HTTP 200 and `{"Response": {...}}` for everything the API layer
//! processed. Failures arrive as `Response.Error.Code`; this action also puts
//! business outcomes in `Response.Result`. [`codes`] classifies both.
//!
//! - [`sign`]: pure TC3-HMAC-SHA256 signing;
//! - [`model`]: the JSON wire types; [`image`]: what Tencent accepts as an
//!   image;
//! - [`body`]: the request body, built in one pass over the image;
//! - [`client`]: signing, sending and decoding one attempt, to any of the
//!   configured endpoints;
//! - [`credentials`]: keys from the environment, a reloaded file, TKE OIDC,
//!   the CVM metadata server or STS `AssumeRole`, temporary ones renewed in
//!   the background;
//! - [`encryption`] and [`crypto`]: asking for and opening Tencent's
//!   encrypted answers;
//! - [`codes`] and [`error`]: the classification table and the error type;
//!   [`billing`]: which of those codes Tencent bills.
//!
//! May import: [`crate::config`] (watched files), [`crate::net`] (the TLS
//! provider) and [`crate::metrics`]; never the server or the upstream stack.

pub(crate) mod billing;
pub mod body;
pub mod client;
pub(crate) mod codes;
pub mod credentials;
pub mod crypto;
pub mod encryption;
pub(crate) mod error;
pub mod image;
pub mod model;
pub mod sign;

pub use body::RequestBody;
pub use client::{Client, ClientConfig, Endpoint, Reply};
pub use codes::{Class, NoMatch};
pub use credentials::{CredentialProvider, Credentials};
pub use encryption::{EncryptionSettings, Mode as EncryptionMode, RequestEncryption};
pub use error::Error;
