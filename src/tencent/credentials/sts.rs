//! Tencent Cloud STS (API version 2018-08-13), which turns a role into
//! temporary keys: `AssumeRoleWithWebIdentity` for TKE pod identity (sent
//! unsigned, `Authorization: SKIP`, as STS documents) and `AssumeRole` for
//! `--role-arn` (TC3-signed, service `sts`, with the keys found). Each call
//! runs in an HTTP client span that records codes and ids, never keys,
//! tokens or the role ARN (it holds the account id).
//!
//! Also the error type of every renewal, STS or the CVM metadata server.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use tracing::Instrument as _;
use tracing::field::Empty;

use super::{Credentials, CredentialsError};
use crate::tencent::client::unix_now;
use crate::tencent::sign::{self, CanonicalRequest, SigningKey};

/// The STS API version both actions belong to.
const VERSION: &str = "2018-08-13";
/// The service of the TC3 credential scope.
const SERVICE: &str = "sts";
/// The region STS is asked in when neither `TKE_REGION` nor `--region` says
/// (the official SDKs' default).
pub(super) const DEFAULT_REGION: &str = "ap-guangzhou";
/// Largest answer read from STS or the metadata server.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// `X-TC-RequestClient`.
const REQUEST_CLIENT: &str = concat!("faceid-gateway/", env!("CARGO_PKG_VERSION"));

/// Why temporary keys could not be obtained. Messages name files, services
/// and codes, never a key, a token or the role ARN.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The projected service-account token could not be read.
    #[error("cannot read the web identity token file {}", path.display())]
    TokenFile {
        /// The file (`TKE_WEB_IDENTITY_TOKEN_FILE`).
        path: PathBuf,
    },
    /// No connection could be made.
    #[error("could not connect to {service}")]
    Connect {
        /// `STS` or `the CVM metadata server`.
        service: &'static str,
    },
    /// The call took longer than allowed.
    #[error("{service} did not answer in time")]
    Timeout {
        /// See [`FetchError::Connect`].
        service: &'static str,
    },
    /// The exchange failed midway.
    #[error("the exchange with {service} failed")]
    Transport {
        /// See [`FetchError::Connect`].
        service: &'static str,
    },
    /// An HTTP status that is not an answer.
    #[error("{service} answered HTTP {status}")]
    HttpStatus {
        /// See [`FetchError::Connect`].
        service: &'static str,
        /// The status code.
        status: u16,
    },
    /// The answer is not what the service sends.
    #[error("{service}'s answer could not be read ({what})")]
    Malformed {
        /// See [`FetchError::Connect`].
        service: &'static str,
        /// What is wrong, in a few words.
        what: &'static str,
    },
    /// The service refused, with this code.
    #[error("{service} answered {code}")]
    Api {
        /// See [`FetchError::Connect`].
        service: &'static str,
        /// Tencent's code (only letters, digits, `.`, `_` and `-` kept).
        code: String,
        /// Tencent's `RequestId`, when there was one.
        request_id: Option<String>,
    },
    /// The metadata server knows no role for this instance.
    #[error("no CAM role is bound to this CVM instance")]
    NoRole,
    /// The keys `AssumeRole` is signed with have expired themselves.
    #[error("the keys that sign AssumeRole expired and were not renewed")]
    BaseExpired,
    /// The request could not be signed (the clock is outside the calendar).
    #[error("the STS request could not be signed")]
    Signing,
}

impl FetchError {
    /// A short stable name for spans (`error.type`) and logs.
    pub(super) fn kind(&self) -> &str {
        match self {
            FetchError::TokenFile { .. } => "WebIdentityTokenFileUnreadable",
            FetchError::Connect { .. } => "ConnectFailed",
            FetchError::Timeout { .. } => "Timeout",
            FetchError::Transport { .. } => "TransportFailed",
            FetchError::HttpStatus { .. } => "HttpError",
            FetchError::Malformed { .. } => "MalformedResponse",
            FetchError::Api { code, .. } => code,
            FetchError::NoRole => "NoRoleBound",
            FetchError::BaseExpired => "BaseKeysExpired",
            FetchError::Signing => "SigningFailed",
        }
    }

    /// Whether trying again soon may help (what a start-up retries).
    pub(super) fn is_transient(&self) -> bool {
        match self {
            FetchError::Connect { .. }
            | FetchError::Timeout { .. }
            | FetchError::Transport { .. }
            | FetchError::HttpStatus { .. }
            | FetchError::Malformed { .. } => true,
            FetchError::Api { code, .. } => {
                code.starts_with("InternalError") || code.starts_with("RequestLimitExceeded")
            }
            FetchError::TokenFile { .. }
            | FetchError::NoRole
            | FetchError::BaseExpired
            | FetchError::Signing => false,
        }
    }
}

/// Builds the HTTP client of STS or the metadata server: rustls, the given
/// timeouts, no redirects (neither service sends one; following one could
/// carry a token elsewhere).
pub(super) fn http_client(
    endpoint: &Url,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<reqwest::Client, CredentialsError> {
    crate::net::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(REQUEST_CLIENT)
        .https_only(endpoint.scheme() == "https")
        .build()
        .map_err(|_| {
            CredentialsError::Setup("cannot build the HTTP client of STS or the metadata server")
        })
}

/// Maps a reqwest failure to a [`FetchError`] of `service`.
pub(super) fn send_error(service: &'static str, error: &reqwest::Error) -> FetchError {
    if error.is_timeout() {
        FetchError::Timeout { service }
    } else if error.is_connect() {
        FetchError::Connect { service }
    } else {
        FetchError::Transport { service }
    }
}

/// Reads an answer body, refusing one larger than any real answer.
pub(super) async fn read_capped(
    service: &'static str,
    mut response: reqwest::Response,
) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| send_error(service, &error))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(FetchError::Malformed {
                service,
                what: "answer too large",
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Keeps a code from an answer as a label-safe word: letters, digits, `.`,
/// `_` and `-`, at most 64 of them (a server that is not Tencent's could
/// send anything).
pub(super) fn safe_code(code: &str) -> String {
    let safe = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if safe {
        code.to_owned()
    } else {
        "InvalidCode".to_owned()
    }
}

/// An `ExpiredTime` (Unix seconds) as a time that must lie ahead.
pub(super) fn expiry(service: &'static str, seconds: i64) -> Result<SystemTime, FetchError> {
    let at = u64::try_from(seconds)
        .ok()
        .map(|seconds| UNIX_EPOCH + Duration::from_secs(seconds))
        .filter(|at| *at > SystemTime::now())
        .ok_or(FetchError::Malformed {
            service,
            what: "ExpiredTime is missing or already past",
        })?;
    Ok(at)
}

/// TKE pod identity's request: the role, the identity provider and where
/// the service-account token is (read afresh at every call, since the
/// kubelet rotates it).
pub(crate) struct WebIdentity {
    /// `TKE_PROVIDER_ID`.
    pub(super) provider_id: String,
    /// `TKE_ROLE_ARN`.
    pub(super) role_arn: String,
    /// `TKE_WEB_IDENTITY_TOKEN_FILE`.
    pub(super) token_file: PathBuf,
    /// How long the keys should live.
    pub(super) duration: Duration,
}

/// `--role-arn`'s request.
pub(crate) struct AssumeRole {
    /// The role.
    pub(super) role_arn: String,
    /// `--role-session-name`.
    pub(super) session_name: String,
    /// `--role-duration`.
    pub(super) duration: Duration,
}

/// A client of STS at one endpoint and region.
pub(crate) struct Sts {
    http: reqwest::Client,
    endpoint: Url,
    /// The Host header value, which `AssumeRole` signs.
    host: String,
    region: HeaderValue,
}

/// How an STS request is authenticated.
enum Auth<'a> {
    /// `Authorization: SKIP` (`AssumeRoleWithWebIdentity`).
    Skip,
    /// TC3-HMAC-SHA256 with these keys.
    Signed(&'a Credentials),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Response")]
    response: Answer,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "Error")]
    error: Option<ApiError>,
    #[serde(rename = "Credentials")]
    credentials: Option<Issued>,
    #[serde(rename = "ExpiredTime")]
    expired_time: Option<i64>,
    #[serde(rename = "RequestId")]
    request_id: Option<String>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(rename = "Code")]
    code: String,
}

/// The keys in an answer (no `Debug`: it would print them).
#[derive(Deserialize)]
struct Issued {
    #[serde(rename = "TmpSecretId")]
    tmp_secret_id: String,
    #[serde(rename = "TmpSecretKey")]
    tmp_secret_key: String,
    #[serde(rename = "Token")]
    token: String,
}

const STS: &str = "STS";

impl Sts {
    /// A client of STS at `endpoint`, asking in `region`.
    ///
    /// # Errors
    /// The endpoint is not an http(s) URL with a host, or the region cannot
    /// go in a header.
    pub(super) fn new(
        endpoint: &Url,
        region: &str,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self, CredentialsError> {
        let host = match (endpoint.host_str(), endpoint.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(CredentialsError::Setup("--sts-endpoint has no host")),
        };
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(CredentialsError::Setup(
                "--sts-endpoint must be an http:// or https:// URL",
            ));
        }
        let region = HeaderValue::from_str(region)
            .map_err(|_| CredentialsError::Setup("the STS region must be visible ASCII"))?;
        Ok(Self {
            http: http_client(endpoint, connect_timeout, timeout)?,
            endpoint: endpoint.clone(),
            host,
            region,
        })
    }

    /// TKE pod identity: the current service-account token for the role's
    /// temporary keys.
    ///
    /// # Errors
    /// The token file is unreadable, or STS refused or failed.
    pub(super) async fn assume_role_with_web_identity(
        &self,
        request: &WebIdentity,
    ) -> Result<Credentials, FetchError> {
        let token = tokio::fs::read(&request.token_file)
            .await
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty())
            .ok_or_else(|| FetchError::TokenFile {
                path: request.token_file.clone(),
            })?;
        // The SDKs' session name: a fixed prefix and the time in µs.
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_micros());
        let body = serde_json::json!({
            "ProviderId": request.provider_id,
            "WebIdentityToken": token,
            "RoleArn": request.role_arn,
            "RoleSessionName": format!("faceid-gateway-{micros}"),
            "DurationSeconds": request.duration.as_secs(),
        });
        self.call("AssumeRoleWithWebIdentity", &body, Auth::Skip)
            .await
    }

    /// `AssumeRole`, signed with `keys`.
    ///
    /// # Errors
    /// STS refused or failed.
    pub(super) async fn assume_role(
        &self,
        keys: &Credentials,
        request: &AssumeRole,
    ) -> Result<Credentials, FetchError> {
        let body = serde_json::json!({
            "RoleArn": request.role_arn,
            "RoleSessionName": request.session_name,
            "DurationSeconds": request.duration.as_secs(),
        });
        self.call("AssumeRole", &body, Auth::Signed(keys)).await
    }

    /// One STS call in an HTTP client span.
    async fn call(
        &self,
        action: &'static str,
        body: &serde_json::Value,
        auth: Auth<'_>,
    ) -> Result<Credentials, FetchError> {
        let span = tracing::info_span!(
            "sts call",
            otel.name = "POST",
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = "POST",
            server.address = self.endpoint.host_str().unwrap_or_default(),
            server.port = self.endpoint.port_or_known_default().map(i64::from),
            url.full = self.endpoint.as_str(),
            http.response.status_code = Empty,
            error.type = Empty,
            tencent.action = action,
            tencent.code = Empty,
            tencent.request_id = Empty,
        );
        let call = async {
            let result = self.exchange(action, body, auth).await;
            let span = tracing::Span::current();
            match &result {
                Ok(_) => {
                    span.record("tencent.code", "Success");
                }
                Err(error) => {
                    span.record("otel.status_code", "error");
                    span.record("error.type", error.kind());
                    if let FetchError::Api {
                        code, request_id, ..
                    } = error
                    {
                        span.record("tencent.code", code.as_str());
                        if let Some(request_id) = request_id {
                            span.record("tencent.request_id", request_id.as_str());
                        }
                    }
                }
            }
            result
        };
        call.instrument(span).await
    }

    async fn exchange(
        &self,
        action: &'static str,
        body: &serde_json::Value,
        auth: Auth<'_>,
    ) -> Result<Credentials, FetchError> {
        let body = serde_json::to_vec(body).expect("JSON values serialize");
        let headers = self.headers(action, &body, auth)?;
        let response = self
            .http
            .post(self.endpoint.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|error| send_error(STS, &error))?;
        let status = response.status();
        tracing::Span::current().record("http.response.status_code", i64::from(status.as_u16()));
        if status != reqwest::StatusCode::OK {
            return Err(FetchError::HttpStatus {
                service: STS,
                status: status.as_u16(),
            });
        }
        let bytes = read_capped(STS, response).await?;
        decode(&bytes)
    }

    /// The request headers, signed or `SKIP`.
    fn headers(
        &self,
        action: &'static str,
        body: &[u8],
        auth: Auth<'_>,
    ) -> Result<HeaderMap, FetchError> {
        let timestamp = unix_now();
        let mut headers = HeaderMap::with_capacity(9);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header("x-tc-action"), HeaderValue::from_static(action));
        headers.insert(header("x-tc-version"), HeaderValue::from_static(VERSION));
        headers.insert(header("x-tc-timestamp"), HeaderValue::from(timestamp));
        headers.insert(header("x-tc-region"), self.region.clone());
        headers.insert(
            header("x-tc-requestclient"),
            HeaderValue::from_static(REQUEST_CLIENT),
        );
        let authorization = match auth {
            Auth::Skip => HeaderValue::from_static("SKIP"),
            Auth::Signed(keys) => {
                let date = sign::credential_date(timestamp).ok_or(FetchError::Signing)?;
                let payload_sha256 = sign::sha256_hex(body);
                let canonical = CanonicalRequest {
                    method: "POST",
                    query: "",
                    headers: &[("content-type", "application/json"), ("host", &self.host)],
                    payload_sha256: &payload_sha256,
                };
                let string_to_sign =
                    sign::string_to_sign(timestamp, &date, SERVICE, &canonical.to_text());
                let signature =
                    SigningKey::derive(keys.secret_key(), &date, SERVICE).sign(&string_to_sign);
                if let Some(token) = keys.token() {
                    let token = HeaderValue::from_str(token).map_err(|_| FetchError::Signing)?;
                    headers.insert(header("x-tc-token"), sensitive(token));
                }
                let value = sign::authorization(
                    keys.secret_id(),
                    &date,
                    SERVICE,
                    &canonical.signed_headers(),
                    &signature,
                );
                HeaderValue::from_str(&value).map_err(|_| FetchError::Signing)?
            }
        };
        headers.insert(AUTHORIZATION, sensitive(authorization));
        Ok(headers)
    }
}

/// Reads an STS answer: the keys, or the error code.
fn decode(bytes: &[u8]) -> Result<Credentials, FetchError> {
    let malformed = |what| FetchError::Malformed { service: STS, what };
    let envelope: Envelope =
        serde_json::from_slice(bytes).map_err(|_| malformed("not a Tencent JSON envelope"))?;
    let answer = envelope.response;
    if let Some(error) = answer.error {
        return Err(FetchError::Api {
            service: STS,
            code: safe_code(&error.code),
            request_id: answer.request_id.as_deref().map(safe_code),
        });
    }
    let issued = answer.credentials.ok_or(malformed("no Credentials"))?;
    let expires_at = expiry(STS, answer.expired_time.unwrap_or_default())?;
    if let Some(request_id) = &answer.request_id {
        tracing::Span::current().record("tencent.request_id", safe_code(request_id).as_str());
    }
    Credentials::temporary(
        issued.tmp_secret_id,
        issued.tmp_secret_key,
        issued.token,
        expires_at,
    )
    .map_err(|_| malformed("the keys are not visible ASCII"))
}

fn header(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

fn sensitive(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_with_keys_decodes_to_temporary_keys() {
        let ahead = unix_now() + 3600;
        let body = format!(
            r#"{{"Response":{{"Credentials":{{"Token":"tok","TmpSecretId":"AKIDtmp","TmpSecretKey":"key"}},"ExpiredTime":{ahead},"Expiration":"x","RequestId":"r1"}}}}"#
        );
        let keys = decode(body.as_bytes()).unwrap();
        assert_eq!(keys.secret_id(), "AKIDtmp");
        assert_eq!(keys.token(), Some("tok"));
        assert!(keys.expires_at().is_some());
    }

    #[test]
    fn an_error_answer_keeps_the_code_and_nothing_else() {
        let body = br#"{"Response":{"Error":{"Code":"InvalidParameter.WebIdentityTokenError","Message":"secret detail"},"RequestId":"r2"}}"#;
        let error = decode(body).unwrap_err();
        assert_eq!(error.kind(), "InvalidParameter.WebIdentityTokenError");
        assert!(!error.to_string().contains("secret detail"));
        assert!(!error.is_transient());
    }

    #[test]
    fn past_or_missing_expiry_and_garbage_are_malformed() {
        for body in [
            r#"{"Response":{"Credentials":{"Token":"t","TmpSecretId":"a","TmpSecretKey":"k"},"ExpiredTime":1}}"#,
            r#"{"Response":{"Credentials":{"Token":"t","TmpSecretId":"a","TmpSecretKey":"k"}}}"#,
            r#"{"Response":{}}"#,
            "<html>",
        ] {
            let error = decode(body.as_bytes()).unwrap_err();
            assert!(matches!(error, FetchError::Malformed { .. }), "{body}");
        }
    }

    #[test]
    fn codes_from_elsewhere_are_kept_only_when_label_safe() {
        assert_eq!(
            safe_code("AuthFailure.TokenFailure"),
            "AuthFailure.TokenFailure"
        );
        assert_eq!(safe_code("a b"), "InvalidCode");
        assert_eq!(safe_code(&"x".repeat(65)), "InvalidCode");
    }
}
