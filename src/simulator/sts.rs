//! The simulator's Tencent Cloud STS and CVM metadata server, which issue
//! temporary keys the FaceID side then accepts with their token until they
//! expire, as Tencent does.
//!
//! - STS, on `POST /` by `X-TC-Action` (version 2018-08-13):
//!   `AssumeRole`, TC3-signed (service `sts`) with a key the simulator
//!   accepts; `AssumeRoleWithWebIdentity`, unsigned (`Authorization: SKIP`),
//!   whose `WebIdentityToken` must equal the contents of the configured
//!   token file, read at every call. Refusals use STS's documented codes
//!   (`InvalidParameter.WebIdentityTokenError`, `MissingParameter`,
//!   `InvalidParameter.ParamError`, `InvalidParameter.OverTimeError`, the
//!   common `AuthFailure.*`).
//! - The metadata server, on `GET /latest/meta-data/cam/security-credentials/`
//!   (the role's name, 404 without one) and `…/{role}` (its keys).
//!
//! Both can be taken away (HTTP 503) and brought back, by
//! `POST /__simulator/{sts,metadata}/{down,up}` or the [`Simulator`]'s
//! methods, so tests can watch keys expire and recover; and
//! `POST /__simulator/sts/revoke` forgets every key issued.
//!
//! [`Simulator`]: super::Simulator

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use secrecy::SecretString;
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;

use super::handler::{
    Answer, ApiError, Drop, MAX_BODY_BYTES, State, check_signed, check_token, json_answer, plain,
};
use crate::tencent::client::{SIMULATED_HEADER, unix_now};

/// Where the metadata server's paths start.
pub(super) const METADATA_PREFIX: &str = "/latest/meta-data/";
/// The role's name, and under it its keys.
const ROLES_PATH: &str = "/latest/meta-data/cam/security-credentials/";
/// STS's API version.
const VERSION: &str = "2018-08-13";
/// The TC3 service of STS.
const SERVICE: &str = "sts";
/// STS issues role keys for 12 hours at most.
const MAX_DURATION_SECONDS: u64 = 43_200;
/// `DurationSeconds` when a request leaves it out.
const DEFAULT_DURATION_SECONDS: u64 = 7_200;
/// Issued keys kept at most; expired ones are dropped first.
const MAX_ISSUED: usize = 100_000;

/// Temporary keys this simulator issued.
#[derive(Clone)]
pub(super) struct Issued {
    /// The key they sign with.
    pub(super) secret_key: SecretString,
    /// The token `X-TC-Token` must carry.
    pub(super) token: SecretString,
    /// Unix seconds from which they are refused (`ExpiredTime`).
    pub(super) expires_at: i64,
}

/// The keys issued so far, and whether STS and the metadata server answer.
#[derive(Default)]
pub(super) struct Issuer {
    issued: Mutex<HashMap<String, Issued>>,
    sts_down: AtomicBool,
    metadata_down: AtomicBool,
}

impl Issuer {
    /// The temporary keys of `secret_id`, if this simulator issued them.
    pub(super) fn issued(&self, secret_id: &str) -> Option<Issued> {
        self.lock().get(secret_id).cloned()
    }

    /// Takes STS away or brings it back.
    pub(super) fn set_sts_available(&self, available: bool) {
        self.sts_down.store(!available, Ordering::SeqCst);
    }

    /// Takes the metadata server away or brings it back.
    pub(super) fn set_metadata_available(&self, available: bool) {
        self.metadata_down.store(!available, Ordering::SeqCst);
    }

    /// Forgets every key issued so far: Tencent then answers
    /// `AuthFailure.SecretIdNotFound` to them (keys revoked, or issued by
    /// another STS region that has not heard of them).
    pub(super) fn revoke_all(&self) {
        self.lock().clear();
    }

    /// Every key issued and not revoked: SecretId, SecretKey and token.
    pub(super) fn all(&self) -> Vec<(String, SecretString, SecretString)> {
        self.lock()
            .iter()
            .map(|(id, keys)| (id.clone(), keys.secret_key.clone(), keys.token.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Issued>> {
        self.issued
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Issues new keys that live `seconds`; returns the three values and
    /// `ExpiredTime`.
    fn issue(&self, seconds: u64) -> (String, String, String, i64) {
        let secret_id = format!("AKIDtmp{}", uuid::Uuid::new_v4().simple());
        let secret_key = uuid::Uuid::new_v4().simple().to_string();
        let token = format!(
            "simtoken{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let expires_at = unix_now().saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX));
        let mut issued = self.lock();
        if issued.len() >= MAX_ISSUED {
            let now = unix_now();
            issued.retain(|_, keys| keys.expires_at > now);
        }
        issued.insert(
            secret_id.clone(),
            Issued {
                secret_key: SecretString::from(secret_key.clone()),
                token: SecretString::from(token.clone()),
                expires_at,
            },
        );
        (secret_id, secret_key, token, expires_at)
    }
}

/// Whether `headers` name an STS action.
pub(super) fn is_sts_action(headers: &HeaderMap) -> bool {
    matches!(
        headers.get("x-tc-action").and_then(|v| v.to_str().ok()),
        Some("AssumeRole" | "AssumeRoleWithWebIdentity")
    )
}

/// `POST /__simulator/{sts,metadata}/{down,up}`.
pub(super) fn switch(state: &State, path: &str) -> http::Response<Full<Bytes>> {
    if path == "/__simulator/sts/revoke" {
        state.sts.revoke_all();
        return plain(StatusCode::OK, "text/plain", b"ok\n".to_vec());
    }
    let flag = match path.strip_prefix("/__simulator/") {
        Some("sts/down") => Some((true, false)),
        Some("sts/up") => Some((true, true)),
        Some("metadata/down") => Some((false, false)),
        Some("metadata/up") => Some((false, true)),
        _ => None,
    };
    match flag {
        Some((true, available)) => state.sts.set_sts_available(available),
        Some((false, available)) => state.sts.set_metadata_available(available),
        None => return plain(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    }
    plain(StatusCode::OK, "text/plain", b"ok\n".to_vec())
}

/// One STS call.
pub(super) async fn api_call(state: &State, request: Request<Incoming>) -> Answer {
    let (parts, body) = request.into_parts();
    let action = parts
        .headers
        .get("x-tc-action")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if state.sts.sts_down.load(Ordering::SeqCst) {
        state.stats.credential_call("sts", "unavailable");
        return Ok(unavailable());
    }
    let body = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| Drop::BodyUnreadable)?
        .to_bytes();
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or_default()
        .to_owned();
    let request_id = uuid::Uuid::new_v4().to_string();
    let result = match action.as_str() {
        "AssumeRole" => assume_role(state, &parts.headers, &host, &body),
        _ => assume_role_with_web_identity(state, &parts.headers, &body),
    };
    let answer = match result {
        Ok(seconds) => {
            state.stats.credential_call(&action, "Success");
            let (secret_id, secret_key, token, expires_at) = state.sts.issue(seconds);
            json!({"Response": {
                "Credentials": {
                    "Token": token,
                    "TmpSecretId": secret_id,
                    "TmpSecretKey": secret_key,
                },
                "ExpiredTime": expires_at,
                "Expiration": iso8601(expires_at),
                "RequestId": request_id,
            }})
        }
        Err(error) => {
            state.stats.credential_call(&action, error.0);
            json!({"Response": {
                "Error": {"Code": error.0, "Message": error.1},
                "RequestId": request_id,
            }})
        }
    };
    Ok(json_answer(&answer))
}

/// The version, then what both actions take: `RoleArn`, `RoleSessionName`
/// and `DurationSeconds`; returns the lifetime of the keys to issue.
fn role_request(state: &State, headers: &HeaderMap, params: &Value) -> Result<u64, ApiError> {
    if headers.get("x-tc-version").and_then(|v| v.to_str().ok()) != Some(VERSION) {
        return Err(ApiError::new(
            "NoSuchVersion",
            "The simulated STS implements version 2018-08-13 only.",
        ));
    }
    let role_arn = text(params, "RoleArn")?;
    if !is_role_arn(role_arn) {
        return Err(ApiError::new(
            "InvalidParameter.ParamError",
            "RoleArn is not qcs::cam::uin/<account>:roleName/<role>.",
        ));
    }
    let session = text(params, "RoleSessionName")?;
    let session_ok = (2..=64).contains(&session.len())
        && session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=,.@_-".contains(&b));
    if !session_ok {
        return Err(ApiError::new(
            "InvalidParameter.ParamError",
            "RoleSessionName must be 2 to 64 letters, digits and =,.@_-.",
        ));
    }
    let duration = match params.get("DurationSeconds") {
        None | Some(Value::Null) => DEFAULT_DURATION_SECONDS,
        Some(value) => value
            .as_u64()
            .filter(|seconds| (1..=MAX_DURATION_SECONDS).contains(seconds))
            .ok_or_else(|| {
                ApiError::new(
                    "InvalidParameter.OverTimeError",
                    "DurationSeconds must be 1 to 43200.",
                )
            })?,
    };
    let ttl = state.config.temporary_credentials_ttl.as_secs().max(1);
    Ok(duration.min(ttl))
}

/// `AssumeRole`: signed with a key the simulator accepts (long-lived, or
/// temporary with its token).
fn assume_role(
    state: &State,
    headers: &HeaderMap,
    host: &str,
    body: &[u8],
) -> Result<u64, ApiError> {
    let signer = check_signed(state, headers, host, body, SERVICE)?;
    check_token(state, headers, signer)?;
    role_request(state, headers, &params(body)?)
}

/// `AssumeRoleWithWebIdentity`: unsigned; the token must be the file's.
fn assume_role_with_web_identity(
    state: &State,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<u64, ApiError> {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("SKIP") {
        return Err(ApiError::new(
            "AuthFailure.InvalidAuthorization",
            "AssumeRoleWithWebIdentity takes Authorization: SKIP.",
        ));
    }
    let params = params(body)?;
    let seconds = role_request(state, headers, &params)?;
    text(&params, "ProviderId")?;
    let token = text(&params, "WebIdentityToken")?;
    let expected = state
        .config
        .web_identity_token_file
        .as_ref()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty());
    let accepted = expected
        .is_some_and(|expected| bool::from(expected.as_bytes().ct_eq(token.trim().as_bytes())));
    if !accepted {
        return Err(ApiError::new(
            "InvalidParameter.WebIdentityTokenError",
            "The WebIdentityToken is invalid or expired.",
        ));
    }
    Ok(seconds)
}

fn params(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            ApiError::new(
                "InvalidParameter.ParamError",
                "The body is not a JSON object.",
            )
        })
}

/// A required string parameter.
fn text<'a>(params: &'a Value, name: &'static str) -> Result<&'a str, ApiError> {
    params
        .get(name)
        .and_then(Value::as_str)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| ApiError::new("MissingParameter", format!("{name} is missing.")))
}

/// `qcs::cam::uin/<digits>:roleName/<name>`.
fn is_role_arn(arn: &str) -> bool {
    let Some(rest) = arn.strip_prefix("qcs::cam::uin/") else {
        return false;
    };
    let Some((account, role)) = rest.split_once(":roleName/") else {
        return false;
    };
    !account.is_empty()
        && account.bytes().all(|b| b.is_ascii_digit())
        && !role.is_empty()
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

/// One metadata-server GET.
pub(super) fn metadata(state: &State, path: &str) -> http::Response<Full<Bytes>> {
    if state.sts.metadata_down.load(Ordering::SeqCst) {
        state.stats.credential_call("metadata", "unavailable");
        return unavailable();
    }
    let role = state.config.cvm_role_name.as_deref();
    let not_found = || plain(StatusCode::NOT_FOUND, "text/plain", b"Not Found\n".to_vec());
    match (path.strip_prefix(ROLES_PATH), role) {
        (Some(""), Some(role)) => {
            state.stats.credential_call("metadata", "RoleName");
            plain(StatusCode::OK, "text/plain", role.as_bytes().to_vec())
        }
        (Some(asked), Some(role)) if asked == role => {
            state.stats.credential_call("metadata", "Success");
            let ttl = state.config.temporary_credentials_ttl.as_secs().max(1);
            let (secret_id, secret_key, token, expires_at) = state.sts.issue(ttl);
            let body = json!({
                "TmpSecretId": secret_id,
                "TmpSecretKey": secret_key,
                "ExpiredTime": expires_at,
                "Expiration": iso8601(expires_at),
                "Token": token,
                "Code": "Success",
            });
            plain(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec(&body).expect("JSON values serialize"),
            )
        }
        _ => {
            state.stats.credential_call("metadata", "NotFound");
            not_found()
        }
    }
}

/// What an unreachable service looks like behind a load balancer.
fn unavailable() -> http::Response<Full<Bytes>> {
    let mut response = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        b"simulated outage\n".to_vec(),
    );
    response
        .headers_mut()
        .insert(SIMULATED_HEADER, http::HeaderValue::from_static("true"));
    response
}

/// `Expiration`: the expiry as `YYYY-MM-DDTHH:MM:SSZ`.
fn iso8601(unix_seconds: i64) -> String {
    let Ok(at) = time::OffsetDateTime::from_unix_timestamp(unix_seconds) else {
        return String::new();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn role_arns_name_an_account_and_a_role() {
        assert!(is_role_arn("qcs::cam::uin/100000000001:roleName/faceid"));
        for bad in [
            "",
            "qcs::cam::uin/:roleName/r",
            "qcs::cam::uin/12a:roleName/r",
            "qcs::cam::uin/1:roleName/",
            "arn:aws:iam::1:role/r",
        ] {
            assert!(!is_role_arn(bad), "{bad}");
        }
    }

    #[test]
    fn expirations_are_iso_8601_utc() {
        assert_eq!(iso8601(1_543_914_376), "2018-12-04T09:06:16Z");
    }

    #[test]
    fn issued_keys_are_found_with_their_token_and_expiry() {
        let issuer = Issuer::default();
        let (id, key, token, expires_at) = issuer.issue(60);
        let issued = issuer.issued(&id).unwrap();
        assert_eq!(issued.secret_key.expose_secret(), key);
        assert_eq!(issued.token.expose_secret(), token);
        assert_eq!(issued.expires_at, expires_at);
        assert!(issuer.issued("AKIDother").is_none());
    }
}
