//! Everything that can go wrong with one upstream attempt, typed so the retry
//! policy and the gRPC mapping can decide from the variant and the code class.
//! Display texts never contain bodies, keys, images or personal data.

use super::codes::{self, Class};

/// The failure of one upstream attempt.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be made (DNS, TCP, TLS, or the connect
    /// timeout): nothing was sent.
    #[error("could not connect to the upstream")]
    Connect(#[source] reqwest::Error),
    /// The attempt took longer than the per-attempt timeout.
    #[error("the upstream attempt timed out")]
    Timeout,
    /// The connection failed mid-exchange (reset, closed, protocol error).
    #[error("the upstream exchange failed")]
    Transport(#[source] reqwest::Error),
    /// An HTTP status other than 200: an infrastructure problem, since the
    /// API layer answers everything it processed with 200.
    #[error("the upstream answered HTTP {status}")]
    HttpStatus {
        /// The HTTP status code.
        status: u16,
    },
    /// The body is not the JSON envelope Tencent sends.
    #[error("the upstream answer could not be decoded ({what})")]
    Malformed {
        /// What is wrong, in a few words.
        what: &'static str,
        /// The request id, when the envelope got that far.
        request_id: Option<String>,
    },
    /// The encrypted answer could not be opened.
    #[error("the encrypted answer could not be opened: {0}")]
    Decryption(#[source] super::encryption::DecryptError),
    /// The request could not be signed: the clock is outside the calendar,
    /// or a key cannot go in a header. The gateway's own setup, nothing was
    /// sent.
    #[error("the request could not be signed")]
    Signing,
    /// The temporary keys expired and no renewal has succeeded since:
    /// nothing was sent (Tencent would refuse them).
    #[error("the temporary Tencent keys expired and could not be renewed yet")]
    CredentialsExpired {
        /// When a renewal will be tried next.
        retry_after: std::time::Duration,
    },
    /// Tencent answered with an error code (`Error.Code`, or a business
    /// `Result` that is not a verification outcome).
    #[error("Tencent answered {code}")]
    Api {
        /// The raw Tencent code.
        code: String,
        /// Its class in the code table.
        class: Class,
        /// Tencent's `RequestId`.
        request_id: Option<String>,
    },
}

impl Error {
    /// An API error for `code`, classified by the table.
    pub(crate) fn api(code: impl Into<String>, request_id: Option<String>) -> Self {
        let code = code.into();
        Self::Api {
            class: codes::classify(&code),
            code,
            request_id,
        }
    }

    /// The class that decides retries and the gRPC status: transport
    /// failures and undecodable answers are transient.
    pub(crate) fn class(&self) -> Class {
        match self {
            Error::Api { class, .. } => *class,
            Error::Signing => Class::GatewaySetup,
            Error::Connect(_)
            | Error::Timeout
            | Error::Transport(_)
            | Error::HttpStatus { .. }
            | Error::Malformed { .. }
            | Error::Decryption(_)
            | Error::CredentialsExpired { .. } => Class::Transient,
        }
    }

    /// Whether another attempt of the same request may succeed. Expired
    /// keys are transient but not retried at once: the renewal runs on its
    /// own schedule, and the caller is told when to come back.
    pub(crate) fn is_retryable(&self) -> bool {
        !matches!(self, Error::CredentialsExpired { .. }) && self.class().is_retryable()
    }

    /// The `ErrorInfo.reason`: the Tencent code, or a name for the failure.
    pub(crate) fn reason(&self) -> &str {
        match self {
            Error::Api { code, .. } => code,
            Error::Connect(_) => "UpstreamConnectFailed",
            Error::Timeout => "UpstreamTimeout",
            Error::Transport(_) => "UpstreamTransportFailed",
            Error::HttpStatus { .. } => "UpstreamHttpError",
            Error::Malformed { .. } => "UpstreamMalformedResponse",
            Error::Decryption(_) => "UpstreamDecryptionFailed",
            Error::Signing => "GatewaySigningFailed",
            Error::CredentialsExpired { .. } => "CredentialsExpired",
        }
    }

    /// Whether the request certainly never left the gateway (no connection
    /// was made), so sending it to another endpoint cannot make a second
    /// billed call.
    pub(crate) fn never_sent(&self) -> bool {
        matches!(self, Error::Connect(_))
    }

    /// Tencent's `RequestId`, when the answer carried one.
    pub(crate) fn request_id(&self) -> Option<&str> {
        match self {
            Error::Api { request_id, .. } | Error::Malformed { request_id, .. } => {
                request_id.as_deref()
            }
            _ => None,
        }
    }
}
