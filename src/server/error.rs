//! The gateway's error type and the one place it becomes a `tonic::Status`
//! with `google.rpc` details: `ErrorInfo` always, `BadRequest` for invalid
//! input, `RetryInfo` where a retry may succeed, `QuotaFailure` and
//! `PreconditionFailure` for account problems. Messages carry codes, never
//! input, upstream text, keys or personal data.

use std::collections::HashMap;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_types::{
    BadRequest, ErrorDetail, ErrorInfo, FieldViolation, PreconditionFailure, QuotaFailure,
    RetryInfo, StatusExt,
};

use crate::server::validate::{InvalidArgument, MAX_REQUEST_MESSAGE_BYTES};
use crate::tencent::image::MAX_IMAGE_BYTES;
use crate::tencent::{self, Class};
use crate::upstream;

/// `ErrorInfo.domain` of every error.
pub(crate) const ERROR_DOMAIN: &str = "faceid.tencentcloudapi.com";
/// Response metadata key with Tencent's `RequestId`.
pub(crate) const REQUEST_ID_METADATA: &str = "x-tencent-request-id";
/// The delay suggested in `RetryInfo` after transient upstream trouble.
const TRANSIENT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Why a call without a valid caller token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No `authorization: Bearer` metadata.
    Missing,
    /// A token no caller has.
    Unknown,
}

/// Everything a verification can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The request broke a rule; nothing was sent upstream.
    #[error(transparent)]
    InvalidArgument(#[from] InvalidArgument),
    /// The upstream call failed (after the gateway's own retries).
    #[error(transparent)]
    Upstream(#[from] tencent::Error),
    /// No upstream rate-limit slot could come within the allowed wait.
    #[error("no upstream rate-limit slot within the allowed wait")]
    RateLimited {
        /// When a slot frees.
        retry_after: Duration,
    },
    /// The caller's deadline passed before Tencent answered.
    #[error("the caller's deadline passed")]
    DeadlineExceeded,
    /// The call carried no valid caller token.
    #[error("the call is not authenticated")]
    Unauthenticated(Refusal),
    /// The caller used up its share of the upstream limit.
    #[error("the caller's share of the upstream limit is used up")]
    CallerQuota {
        /// The caller's name.
        caller: std::sync::Arc<str>,
        /// Its share, calls per second.
        quota: u32,
        /// When the share has room again.
        retry_after: Duration,
    },
    /// A budget of billable calls is spent for its period.
    #[error("the {period} budget of {subject} is spent")]
    BudgetExhausted {
        /// `gateway` or `caller:<name>`.
        subject: String,
        /// `day` or `month`.
        period: &'static str,
        /// Billable calls the budget allows per period.
        limit: u64,
        /// Until the period resets.
        retry_after: Duration,
    },
    /// The idempotency key was used, within its TTL, for another request.
    #[error("the idempotency key was used for another request")]
    IdempotencyKeyReused,
    /// A batch stream sent more items than `--batch-max-items`.
    #[error("the batch stream exceeded {max_items} items")]
    BatchTooLarge {
        /// The configured cap.
        max_items: u64,
    },
    /// The gateway is shutting down and took no new work.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// The session key that asks Tencent to encrypt its answer could not be
    /// made or wrapped (the OS random generator or a public key failed): the
    /// gateway's own fault, nothing was sent.
    #[error("the answer's encryption could not be set up")]
    EncryptionSetup(#[source] crate::tencent::crypto::CryptoError),
    /// The request's bytes are not a valid protobuf message of the method.
    #[error("the request message does not decode")]
    MalformedMessage {
        /// Its position in a batch stream (0-based), for a batch.
        index: Option<u64>,
    },
    /// An HTTP/JSON body (or NDJSON line, or header) that is not what the
    /// route takes.
    #[error("the JSON request does not decode")]
    InvalidJson {
        /// Where: `body`, `line N`, a field name, or a header.
        field: String,
        /// What is wrong, never the value.
        description: String,
    },
    /// The request message is larger than the largest valid one.
    #[error("the request message is too large")]
    MessageTooLarge {
        /// Its position in a batch stream (0-based), for a batch.
        index: Option<u64>,
    },
    /// The caller cancelled the call or went away.
    #[error("the caller cancelled the call")]
    Cancelled,
    /// The gateway's own code panicked on this call; the call is answered
    /// and the gateway goes on.
    #[error("the gateway failed on this call")]
    Panicked,
    /// The gateway's temporary Tencent keys expired and no renewal has
    /// succeeded yet (STS or the metadata server is unreachable); nothing
    /// was sent.
    #[error("the gateway's temporary Tencent keys expired")]
    CredentialsExpired {
        /// When the gateway tries to renew them next.
        retry_after: Duration,
    },
}

impl From<upstream::Error> for Error {
    fn from(error: upstream::Error) -> Self {
        match error {
            upstream::Error::Tencent(tencent::Error::CredentialsExpired { retry_after }) => {
                Error::CredentialsExpired { retry_after }
            }
            upstream::Error::Tencent(error) => Error::Upstream(error),
            upstream::Error::RateLimited { retry_after } => Error::RateLimited { retry_after },
            upstream::Error::DeadlineExceeded => Error::DeadlineExceeded,
        }
    }
}

impl Error {
    /// The gRPC code this error maps to.
    pub(crate) fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::Upstream(error) => code_for(error.class()),
            Error::RateLimited { .. }
            | Error::BatchTooLarge { .. }
            | Error::CallerQuota { .. }
            | Error::BudgetExhausted { .. } => Code::ResourceExhausted,
            Error::IdempotencyKeyReused => Code::InvalidArgument,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::DeadlineExceeded => Code::DeadlineExceeded,
            Error::ShuttingDown | Error::CredentialsExpired { .. } => Code::Unavailable,
            Error::EncryptionSetup(_) | Error::Panicked => Code::Internal,
            Error::MalformedMessage { .. } | Error::InvalidJson { .. } => Code::InvalidArgument,
            Error::MessageTooLarge { .. } => Code::ResourceExhausted,
            Error::Cancelled => Code::Cancelled,
        }
    }

    /// Tencent's `RequestId`, when the upstream answered.
    pub(crate) fn request_id(&self) -> Option<&str> {
        match self {
            Error::Upstream(error) => error.request_id(),
            _ => None,
        }
    }

    /// The `ErrorInfo.reason` this error carries.
    pub(crate) fn reason(&self) -> &str {
        match self {
            Error::InvalidArgument(invalid) => invalid.reason(),
            Error::Upstream(error) => error.reason(),
            Error::RateLimited { .. } => "RequestLimitExceeded",
            Error::DeadlineExceeded => "DeadlineExceeded",
            Error::BatchTooLarge { .. } => "BatchTooLarge",
            Error::Unauthenticated(Refusal::Missing) => "MissingToken",
            Error::Unauthenticated(Refusal::Unknown) => "UnknownToken",
            Error::CallerQuota { .. } => "CallerQuotaExceeded",
            Error::BudgetExhausted { .. } => "BudgetExhausted",
            Error::IdempotencyKeyReused => "IdempotencyKeyReused",
            Error::ShuttingDown => "GatewayShuttingDown",
            Error::EncryptionSetup(_) => "GatewayEncryptionFailed",
            Error::MalformedMessage { .. } | Error::InvalidJson { .. } => "MalformedMessage",
            Error::MessageTooLarge { .. } => "MessageTooLarge",
            Error::Panicked => "GatewayPanic",
            Error::Cancelled => "CallerCancelled",
            Error::CredentialsExpired { .. } => "CredentialsExpired",
        }
    }

    /// The code Tencent answered, when this error is Tencent's own refusal
    /// (logged as `tencent.code`); every other reason is the gateway's
    /// (logged as `faceid.reason`).
    pub(crate) fn tencent_code(&self) -> Option<&str> {
        match self {
            Error::Upstream(tencent::Error::Api { code, .. }) => Some(code),
            _ => None,
        }
    }
}

/// The gRPC code each class of Tencent code maps to.
pub(crate) fn code_for(class: Class) -> Code {
    match class {
        Class::InvalidInput => Code::InvalidArgument,
        Class::Transient => Code::Unavailable,
        Class::RateLimited | Class::Quota => Code::ResourceExhausted,
        Class::GatewaySetup => Code::Internal,
        Class::AccountState => Code::FailedPrecondition,
        // Verification outcomes are OK answers, never errors; an error
        // carrying one would be a bug, reported as UNKNOWN.
        Class::Unknown | Class::Success | Class::NoMatch(_) => Code::Unknown,
    }
}

/// The canonical upper-case name of a gRPC code, as logs and docs write it.
pub(crate) fn grpc_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = error.code();
        let reason = error.reason();
        let mut more = Vec::new();
        let message = match &error {
            Error::InvalidArgument(invalid) => return invalid_argument_status(invalid),
            Error::Upstream(upstream) => return upstream_status(upstream),
            Error::RateLimited { retry_after } => {
                more.push(RetryInfo::new(Some(*retry_after)).into());
                more.push(
                    QuotaFailure::with_violation(
                        "faceid-gateway",
                        "the shared upstream rate limit has no slot within the wait allowed",
                    )
                    .into(),
                );
                format!(
                    "the upstream rate limit has no free slot in time; one frees in {} ms",
                    retry_after.as_millis()
                )
            }
            Error::DeadlineExceeded => {
                "the call's deadline passed before Tencent answered".to_owned()
            }
            Error::Unauthenticated(Refusal::Missing) => {
                "this gateway needs `authorization: Bearer <token>` metadata".to_owned()
            }
            Error::Unauthenticated(Refusal::Unknown) => {
                "the bearer token is not known to this gateway".to_owned()
            }
            Error::CallerQuota {
                caller,
                quota,
                retry_after,
            } => {
                more.push(RetryInfo::new(Some(*retry_after)).into());
                more.push(
                    QuotaFailure::with_violation(
                        format!("caller:{caller}"),
                        format!("this caller may make {quota} upstream calls per second"),
                    )
                    .into(),
                );
                format!("caller {caller} used up its share of {quota} calls per second")
            }
            Error::BudgetExhausted {
                subject,
                period,
                limit,
                retry_after,
            } => {
                more.push(RetryInfo::new(Some(*retry_after)).into());
                more.push(
                    QuotaFailure::with_violation(
                        subject.as_str(),
                        format!(
                            "at most {limit} billable calls per {period} (Beijing time); the {period} resets in {} s",
                            retry_after.as_secs()
                        ),
                    )
                    .into(),
                );
                format!(
                    "the {period} budget of {subject} ({limit} billable calls) is spent; nothing was sent"
                )
            }
            Error::IdempotencyKeyReused => {
                more.push(
                    BadRequest::with_violation(
                        "idempotency-key",
                        "was used for another request (image, checks or encryption) within its TTL",
                    )
                    .into(),
                );
                "this idempotency-key was used for another request; use a new key for a new request; nothing was sent".to_owned()
            }
            Error::BatchTooLarge { max_items } => {
                more.push(
                    QuotaFailure::with_violation(
                        "batch-stream",
                        format!("a batch stream may carry at most {max_items} items"),
                    )
                    .into(),
                );
                format!(
                    "this stream already sent {max_items} items, the most one stream may carry; start another"
                )
            }
            Error::ShuttingDown => {
                more.push(RetryInfo::new(Some(TRANSIENT_RETRY_DELAY)).into());
                "the gateway is shutting down; retry on another replica".to_owned()
            }
            Error::EncryptionSetup(_) => {
                "the gateway could not set up the encryption of Tencent's answer; nothing was sent; see the gateway logs".to_owned()
            }
            Error::MalformedMessage { index } => format!(
                "{} is not a valid protobuf message of this method; nothing was sent",
                message_name(*index)
            ),
            Error::InvalidJson { field, description } => {
                more.push(BadRequest::with_violation(field, description).into());
                format!("{field} {description}; nothing was sent")
            }
            Error::MessageTooLarge { index } => {
                more.push(
                    BadRequest::with_violation(
                        "image",
                        format!("the largest image accepted is {MAX_IMAGE_BYTES} bytes"),
                    )
                    .into(),
                );
                format!(
                    "{} is larger than {MAX_REQUEST_MESSAGE_BYTES} bytes, the largest valid image \
                     ({MAX_IMAGE_BYTES} bytes, Tencent's 7 MiB in base64) and its other fields; nothing was sent",
                    message_name(*index)
                )
            }
            Error::Panicked => {
                "the gateway failed on this call (a bug, logged and counted); nothing more was sent".to_owned()
            }
            Error::Cancelled => "the caller cancelled the call".to_owned(),
            Error::CredentialsExpired { retry_after } => {
                more.push(RetryInfo::new(Some(*retry_after)).into());
                "the gateway's temporary Tencent keys expired and could not be renewed yet \
                 (STS or the metadata server is unreachable); nothing was sent; retry shortly \
                 or on another replica"
                    .to_owned()
            }
        };
        with_details(code, message, reason, gateway_metadata(), more)
    }
}

/// How an error message names the request message: "the request" for a
/// unary call, "batch message #N" (0-based) in a stream.
fn message_name(index: Option<u64>) -> String {
    match index {
        Some(index) => format!("batch message #{index}"),
        None => "the request".to_owned(),
    }
}

/// A status whose details start with `ErrorInfo` (so a client reading the
/// first detail finds it, whatever else follows), then `more`.
fn with_details(
    code: Code,
    message: String,
    reason: &str,
    metadata: HashMap<String, String>,
    more: Vec<ErrorDetail>,
) -> Status {
    let mut details = vec![ErrorInfo::new(reason, ERROR_DOMAIN, metadata).into()];
    details.extend(more);
    Status::with_error_details_vec(code, message, details)
}

/// `ErrorInfo.metadata` of errors the gateway raises without asking Tencent.
fn gateway_metadata() -> HashMap<String, String> {
    HashMap::from([("checked_by".to_owned(), "gateway".to_owned())])
}

fn invalid_argument_status(invalid: &InvalidArgument) -> Status {
    let violations: Vec<FieldViolation> = invalid
        .violations
        .iter()
        .map(|v| FieldViolation::new(&v.field, &v.description))
        .collect();
    with_details(
        Code::InvalidArgument,
        invalid.to_string(),
        invalid.reason(),
        gateway_metadata(),
        vec![BadRequest::new(violations).into()],
    )
}

fn upstream_status(error: &tencent::Error) -> Status {
    let class = error.class();
    let reason = error.reason();
    let request_id = error.request_id();
    let mut metadata = HashMap::new();
    if let Some(request_id) = request_id {
        metadata.insert("request_id".to_owned(), request_id.to_owned());
    }
    let mut more: Vec<ErrorDetail> = Vec::new();
    let message = match class {
        Class::InvalidInput => {
            let field = if reason == "FailedOperation.DownLoadError" {
                "image_url"
            } else {
                "source"
            };
            let description = format!("Tencent refused the input ({reason})");
            more.push(BadRequest::with_violation(field, description).into());
            format!("Tencent refused the input: {reason}")
        }
        Class::Transient => {
            more.push(RetryInfo::new(Some(TRANSIENT_RETRY_DELAY)).into());
            format!("Tencent FaceID is unavailable: {error}")
        }
        Class::RateLimited => {
            more.push(RetryInfo::new(Some(TRANSIENT_RETRY_DELAY)).into());
            format!("Tencent's rate limit was exceeded: {reason}")
        }
        Class::Quota => {
            more.push(
                QuotaFailure::with_violation(
                    "tencent-account",
                    "the account's CheckIdCardInformation call quota is used up",
                )
                .into(),
            );
            format!("the Tencent account's call quota is used up: {reason}")
        }
        Class::GatewaySetup => {
            format!("the gateway's Tencent setup was refused: {reason}; see the gateway logs")
        }
        Class::AccountState => {
            more.push(
                PreconditionFailure::with_violation(
                    "TENCENT_ACCOUNT",
                    "faceid",
                    format!("the Tencent account cannot use FaceID ({reason})"),
                )
                .into(),
            );
            format!("the Tencent account cannot use FaceID: {reason}")
        }
        Class::Unknown | Class::Success | Class::NoMatch(_) => {
            format!("Tencent answered an unknown code: {reason}")
        }
    };
    let mut status = with_details(code_for(class), message, reason, metadata, more);
    if let Some(request_id) = request_id
        && let Ok(value) = MetadataValue::try_from(request_id)
    {
        status.metadata_mut().insert(REQUEST_ID_METADATA, value);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tencent::codes::TABLE;

    fn status_for(code: &str) -> Status {
        Error::Upstream(tencent::Error::api(code, Some("req-1".into()))).into()
    }

    #[test]
    fn every_error_carries_error_info_with_the_tencent_code() {
        for (pattern, class) in TABLE {
            if matches!(class, Class::Success | Class::NoMatch(_)) {
                continue;
            }
            let code = pattern.display().trim_end_matches('*').to_owned();
            let status = status_for(&code);
            assert_eq!(status.code(), code_for(*class), "{code}");
            let info = status.get_details_error_info().expect("ErrorInfo");
            assert_eq!(info.reason, code);
            assert_eq!(info.domain, ERROR_DOMAIN);
            assert_eq!(
                info.metadata.get("request_id").map(String::as_str),
                Some("req-1")
            );
            assert_eq!(status.metadata().get(REQUEST_ID_METADATA).unwrap(), "req-1");
        }
    }

    #[test]
    fn error_info_is_always_the_first_detail() {
        let statuses: Vec<Status> = vec![
            status_for("InternalError"),
            status_for("RequestLimitExceeded"),
            status_for("FailedOperation.ImageNoIdCard"),
            Error::RateLimited {
                retry_after: Duration::from_secs(1),
            }
            .into(),
            Error::ShuttingDown.into(),
            Error::InvalidArgument(InvalidArgument::new("image", "bad", "MissingParameter")).into(),
        ];
        for status in statuses {
            let first = status.get_error_details_vec().into_iter().next();
            assert!(
                matches!(first, Some(ErrorDetail::ErrorInfo(_))),
                "{status:?}"
            );
        }
    }

    #[test]
    fn transient_and_rate_limited_errors_suggest_a_retry() {
        for code in [
            "InternalError",
            "RequestLimitExceeded",
            "FailedOperation.CompareSystemError",
        ] {
            assert!(
                status_for(code).get_details_retry_info().is_some(),
                "{code}"
            );
        }
        for code in [
            "FailedOperation.RequestLimitExceeded",
            "AuthFailure.SignatureFailure",
        ] {
            assert!(
                status_for(code).get_details_retry_info().is_none(),
                "{code}"
            );
        }
    }

    #[test]
    fn input_errors_carry_bad_request() {
        let status = status_for("FailedOperation.DownLoadError");
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().unwrap();
        assert_eq!(bad.field_violations[0].field, "image_url");
    }

    #[test]
    fn gateway_validation_errors_use_the_equivalent_tencent_reason() {
        let invalid = InvalidArgument::new(
            "image",
            "must not be empty",
            "FailedOperation.EmptyImageError",
        );
        let status: Status = Error::InvalidArgument(invalid).into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "FailedOperation.EmptyImageError"
        );
        assert_eq!(
            status.get_details_bad_request().unwrap().field_violations[0].field,
            "image"
        );
        assert!(status.message().contains("image: must not be empty"));
    }

    #[test]
    fn expired_keys_are_unavailable_with_a_retry_delay_and_nothing_sent() {
        let upstream = upstream::Error::Tencent(tencent::Error::CredentialsExpired {
            retry_after: Duration::from_secs(3),
        });
        let status: Status = Error::from(upstream).into();
        assert_eq!(status.code(), Code::Unavailable);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "CredentialsExpired");
        assert_eq!(info.metadata.get("checked_by").unwrap(), "gateway");
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(3))
        );
        assert!(status.message().contains("nothing was sent"));
    }

    #[test]
    fn transport_failures_are_unavailable() {
        let status: Status = Error::Upstream(tencent::Error::Timeout).into();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "UpstreamTimeout"
        );
    }

    /// README.md shows the table: one row per pattern, with its gRPC code.
    #[test]
    fn readme_shows_every_row_of_the_table_with_its_grpc_code() {
        let readme = include_str!("../../README.md");
        let missing: Vec<String> = TABLE
            .iter()
            .map(|(pattern, class)| {
                let grpc = match class {
                    Class::Success | Class::NoMatch(_) => "OK".to_owned(),
                    other => grpc_name(code_for(*other)).to_owned(),
                };
                format!("| `{}` | {} | {grpc} |", pattern.display(), class.as_str())
            })
            .filter(|row| !readme.contains(row.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "README.md lacks rows:\n{}",
            missing.join("\n")
        );
    }
}
