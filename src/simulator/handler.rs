//! One simulated API call: the checks Tencent makes, in the order it makes
//! them, then the answer the request's directives ask for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use secrecy::ExposeSecret;
use serde_json::json;

use super::SimulatorConfig;
use super::directives::{self, Directives, Fault};
use super::fault::{FaultRequest, FaultSwitch, ServerFault};
use super::identity::{Identity, PORTRAIT_PNG_BASE64};
use super::stats::Stats;
use super::sts::{self, Issuer};
use crate::tencent::EncryptionMode;
use crate::tencent::client::{SIMULATED_HEADER, unix_now};
use crate::tencent::crypto::{self, Algorithm, Iv, PrivateKeys, SessionKey};
use crate::tencent::image::{self, MAX_IMAGE_BASE64_LEN};
use crate::tencent::model::{ACTION, CheckIdCardInformationRequest, Config, SERVICE, VERSION};
use crate::tencent::sign::{self, CanonicalRequest, SigningKey};
use crate::upstream::limit::window::SlidingWindow;

/// Tencent's cap on a TC3-signed POST body.
pub(super) const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// Shared by every connection.
pub(super) struct State {
    pub(super) config: SimulatorConfig,
    /// Made on first use: RSA key generation is slow in debug builds and
    /// most runs never ask for encryption.
    private_keys: OnceLock<PrivateKeys>,
    pub(super) stats: Stats,
    limiter: Option<SlidingWindow>,
    fail_counters: Mutex<HashMap<String, u32>>,
    /// STS, the metadata server and the temporary keys they issued.
    pub(super) sts: Issuer,
    /// The fault of the whole server in force.
    pub(super) fault: FaultSwitch,
}

impl State {
    pub(super) fn new(config: SimulatorConfig) -> Self {
        let limiter = (config.rate_limit > 0).then(|| {
            SlidingWindow::new(
                config.rate_limit as usize,
                std::time::Duration::from_secs(1),
            )
        });
        Self {
            private_keys: OnceLock::new(),
            config,
            stats: Stats::default(),
            limiter,
            fail_counters: Mutex::new(HashMap::new()),
            sts: Issuer::default(),
            fault: FaultSwitch::default(),
        }
    }
}

impl State {
    /// The key pairs that unwrap callers' session keys.
    pub(super) fn private_keys(&self) -> &PrivateKeys {
        self.private_keys
            .get_or_init(|| match &self.config.private_keys {
                Some(keys) => keys.clone(),
                None => PrivateKeys::generate().expect("the OS random generator works"),
            })
    }
}

/// Dropping the connection unanswered, which hyper does when a service fails.
#[derive(Debug, thiserror::Error)]
pub(super) enum Drop {
    /// `fault=reset`.
    #[error("simulated connection reset")]
    Reset,
    /// The client's body could not be read.
    #[error("request body unreadable")]
    BodyUnreadable,
}

pub(super) type Answer = Result<Response<Full<Bytes>>, Drop>;

/// A Tencent error to answer with: the code and its message.
pub(super) struct ApiError(pub(super) &'static str, pub(super) String);

impl ApiError {
    pub(super) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self(code, message.into())
    }
}

/// Whose keys signed a request.
pub(super) enum Signer {
    /// A long-lived key of the configuration.
    LongLived,
    /// Temporary keys the simulated STS or metadata server issued.
    Temporary {
        /// Their session token, which `X-TC-Token` must carry.
        token: secrecy::SecretString,
        /// Unix seconds from which they are refused.
        expires_at: i64,
    },
}

pub(super) async fn handle(state: Arc<State>, request: Request<Incoming>) -> Answer {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/__simulator/stats") => {
            let body = serde_json::to_vec(&state.stats.snapshot()).expect("stats serialize");
            Ok(plain(StatusCode::OK, "application/json", body))
        }
        (&Method::POST, "/__simulator/reset") => {
            state.stats.reset();
            Ok(plain(StatusCode::OK, "text/plain", b"reset\n".to_vec()))
        }
        (&Method::POST, path) if path.starts_with("/__simulator/sts/") => {
            Ok(sts::switch(&state, path))
        }
        (&Method::POST, path) if path.starts_with("/__simulator/metadata/") => {
            Ok(sts::switch(&state, path))
        }
        (&Method::GET, path) if path.starts_with(sts::METADATA_PREFIX) => {
            Ok(sts::metadata(&state, path))
        }
        (_, "/") if sts::is_sts_action(request.headers()) => sts::api_call(&state, request).await,
        (&Method::GET, "/__simulator/fault") => Ok(fault_status(&state)),
        (&Method::POST, "/__simulator/fault") => switch_fault(state, request).await,
        (_, "/") => api_call(&state, request).await,
        _ => Ok(plain(
            StatusCode::NOT_FOUND,
            "text/plain",
            b"not found\n".to_vec(),
        )),
    }
}

/// `GET /__simulator/fault`: the fault in force.
fn fault_status(state: &State) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&state.fault.status()).expect("the status serializes");
    plain(StatusCode::OK, "application/json", body)
}

/// `POST /__simulator/fault` with `{"mode": "5xx", "for": "10s"}`: switches
/// the fault of the whole server. `down` takes effect just after the
/// answer is sent, so the caller gets it before the port closes.
async fn switch_fault(state: Arc<State>, request: Request<Incoming>) -> Answer {
    let bad = |why: String| {
        Ok(plain(
            StatusCode::BAD_REQUEST,
            "text/plain",
            format!("{why}\n").into_bytes(),
        ))
    };
    let body = match Limited::new(request.into_body(), 4096).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return bad("the body is unreadable or too long".to_owned()),
    };
    let asked: FaultRequest = match serde_json::from_slice(&body) {
        Ok(asked) => asked,
        Err(error) => {
            return bad(format!(
                "expected {{\"mode\": \"down\", \"for\": \"10s\"}}: {error}"
            ));
        }
    };
    let fault = match asked.mode.parse::<ServerFault>() {
        Ok(fault) => fault,
        Err(error) => return bad(error.to_string()),
    };
    let duration = match asked.duration.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(duration)) => Some(duration),
        Some(Err(error)) => return bad(format!("\"for\" is not a duration (10s, 500ms): {error}")),
    };
    if fault == ServerFault::Down {
        let answered = plain(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec(&serde_json::json!({
                "mode": fault.to_string(),
                "remaining_ms": duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            }))
            .expect("JSON values serialize"),
        );
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            state.fault.set(fault, duration);
        });
        return Ok(answered);
    }
    state.fault.set(fault, duration);
    Ok(fault_status(&state))
}

async fn api_call(state: &State, request: Request<Incoming>) -> Answer {
    // The rate limit counts arrivals, as a front-end limiter does: reading
    // the body and checking the signature must not shift a request's time.
    let arrived = tokio::time::Instant::now();
    let _in_flight = state.stats.begin();
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            let e = ApiError::new(
                "RequestSizeLimitExceeded",
                "The request body exceeds 10 MB.",
            );
            return Ok(error_answer(state, &e, &request_id));
        }
        Err(_) => return Err(Drop::BodyUnreadable),
    };
    match state.fault.current() {
        ServerFault::None => {}
        ServerFault::Http(status) => {
            state.stats.answered(&format!("http:{status}"));
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let body = format!("simulated HTTP {} (server fault)\n", status.as_u16());
            return Ok(simulated(status, "text/plain", body.into_bytes()));
        }
        ServerFault::Slow(delay) => tokio::time::sleep(delay).await,
        // Arrived as the port was closing.
        ServerFault::Down => {
            state.stats.answered("fault:down");
            return Err(Drop::Reset);
        }
    }
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or_default()
        .to_owned();

    if let Err(error) = check_envelope(state, &parts.method, &parts.headers, &host, &body) {
        return Ok(error_answer(state, &error, &request_id));
    }
    if let Some(limiter) = &state.limiter
        && limiter.try_admit(arrived).is_err()
    {
        let e = ApiError::new(
            "RequestLimitExceeded",
            "Your current request rate has reached the limit of the action (simulated).",
        );
        return Ok(error_answer(state, &e, &request_id));
    }
    match business(state, &body) {
        Ok(outcome) => deliver(state, outcome, &request_id).await,
        Err(error) => Ok(error_answer(state, &error, &request_id)),
    }
}

/// Method, headers, action, version, timestamp, signature and token.
fn check_envelope(
    state: &State,
    method: &Method,
    headers: &HeaderMap,
    host: &str,
    body: &[u8],
) -> Result<(), ApiError> {
    if method != Method::POST {
        return Err(ApiError::new(
            "UnsupportedProtocol",
            "The simulator accepts POST requests only.",
        ));
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let action = header("x-tc-action")
        .ok_or_else(|| ApiError::new("MissingParameter", "The X-TC-Action header is missing."))?;
    if action != ACTION {
        return Err(ApiError::new(
            "InvalidAction",
            "The simulator implements CheckIdCardInformation only.",
        ));
    }
    let version = header("x-tc-version")
        .ok_or_else(|| ApiError::new("MissingParameter", "The X-TC-Version header is missing."))?;
    if version != VERSION {
        return Err(ApiError::new(
            "NoSuchVersion",
            "The simulator implements version 2018-03-01 only.",
        ));
    }
    let signer = check_signed(state, headers, host, body, SERVICE)?;
    check_token(state, headers, signer)
}

/// The session token: temporary keys need theirs, before they expire;
/// long-lived keys need the configured one, if any.
pub(super) fn check_token(
    state: &State,
    headers: &HeaderMap,
    signer: Signer,
) -> Result<(), ApiError> {
    let sent = headers.get("x-tc-token").and_then(|v| v.to_str().ok());
    let refused = |message: &str| ApiError::new("AuthFailure.TokenFailure", message);
    match signer {
        Signer::Temporary { token, expires_at } => {
            if sent != Some(token.expose_secret()) {
                return Err(refused("The session token is missing or invalid."));
            }
            if unix_now() >= expires_at {
                return Err(refused("The session token has expired."));
            }
            Ok(())
        }
        Signer::LongLived => {
            let expected = state
                .config
                .session_token
                .as_ref()
                .map(|t| t.expose_secret());
            if sent != expected {
                return Err(refused("The session token is missing or invalid."));
            }
            Ok(())
        }
    }
}

/// Timestamp, content type and the TC3 signature for `service`.
pub(super) fn check_signed(
    state: &State,
    headers: &HeaderMap,
    host: &str,
    body: &[u8],
    service: &str,
) -> Result<Signer, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let timestamp: i64 = header("x-tc-timestamp")
        .ok_or_else(|| ApiError::new("MissingParameter", "The X-TC-Timestamp header is missing."))?
        .parse()
        .map_err(|_| ApiError::new("InvalidParameter", "X-TC-Timestamp is not an integer."))?;
    let now = unix_now();
    if now.abs_diff(timestamp) > state.config.max_clock_skew.as_secs() {
        return Err(ApiError::new(
            "AuthFailure.SignatureExpire",
            "The request timestamp is too far from the server time.",
        ));
    }
    let content_type = header(CONTENT_TYPE.as_str()).unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            "InvalidParameter",
            "The simulator accepts application/json bodies only.",
        ));
    }
    verify_signature(state, headers, host, timestamp, body, service)
}

fn verify_signature(
    state: &State,
    headers: &HeaderMap,
    host: &str,
    timestamp: i64,
    body: &[u8],
    service: &str,
) -> Result<Signer, ApiError> {
    let invalid = || {
        ApiError::new(
            "AuthFailure.InvalidAuthorization",
            "The Authorization header is missing or malformed.",
        )
    };
    let authorization = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(invalid)?;
    let parsed = sign::parse_authorization(authorization).ok_or_else(invalid)?;
    let names: Vec<&str> = parsed.signed_headers.split(';').collect();
    if !names.contains(&"content-type") || !names.contains(&"host") {
        return Err(invalid());
    }
    let (secret_key, signer) = match state.config.secret_key_of(parsed.secret_id) {
        Some(key) => (
            secrecy::SecretString::from(key.to_owned()),
            Signer::LongLived,
        ),
        None => match state.sts.issued(parsed.secret_id) {
            Some(issued) => (
                issued.secret_key,
                Signer::Temporary {
                    token: issued.token,
                    expires_at: issued.expires_at,
                },
            ),
            None => {
                return Err(ApiError::new(
                    "AuthFailure.SecretIdNotFound",
                    "The SecretId is not found.",
                ));
            }
        },
    };
    let mismatch = || {
        ApiError::new(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. Please check your signature.",
        )
    };
    if Some(parsed.date) != sign::credential_date(timestamp).as_deref() || parsed.service != service
    {
        return Err(mismatch());
    }
    // Canonical header lines: lower-case names (as listed, which must be
    // sorted), values trimmed and lower-cased, as Tencent's docs describe.
    let mut values = Vec::with_capacity(names.len());
    for name in &names {
        let value = if *name == "host" {
            host.to_owned()
        } else {
            headers
                .get(*name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(mismatch)?
                .to_owned()
        };
        values.push(value.trim().to_ascii_lowercase());
    }
    let signed: Vec<(&str, &str)> = names
        .iter()
        .copied()
        .zip(values.iter().map(String::as_str))
        .collect();
    if !signed.is_sorted_by_key(|(name, _)| *name) {
        return Err(mismatch());
    }
    let payload_sha256 = sign::sha256_hex(body);
    let canonical = CanonicalRequest {
        method: "POST",
        query: "",
        headers: &signed,
        payload_sha256: &payload_sha256,
    };
    let string_to_sign =
        sign::string_to_sign(timestamp, parsed.date, service, &canonical.to_text());
    let key = SigningKey::derive(secret_key.expose_secret(), parsed.date, service);
    if !key.verify(&string_to_sign, parsed.signature) {
        return Err(mismatch());
    }
    if matches!(signer, Signer::LongLived) {
        // Temporary SecretIds are new at every renewal: not a stats key.
        state.stats.signed_by(parsed.secret_id);
    }
    Ok(signer)
}

/// What the business layer decided to answer.
struct Outcome {
    directives: Directives,
    config: Config,
    /// The bytes the invented identity derives from (image or URL).
    seed: Bytes,
    /// The caller's session key, when it asked for an encrypted answer.
    encryption: Option<ServerEncryption>,
}

/// The server side of one encrypted answer.
struct ServerEncryption {
    mode: EncryptionMode,
    key: SessionKey,
    /// The IV the caller sent (used for field encryption, as Tencent does).
    request_iv: Option<Iv>,
}

/// Body parsing and the action's own input checks.
fn business(state: &State, body: &[u8]) -> Result<Outcome, ApiError> {
    let request: CheckIdCardInformationRequest = serde_json::from_slice(body).map_err(|e| {
        if e.to_string().starts_with("unknown field") {
            ApiError::new(
                "UnknownParameter",
                "The body holds a parameter this action does not have.",
            )
        } else {
            ApiError::new(
                "InvalidParameter",
                "The body is not a valid CheckIdCardInformation request.",
            )
        }
    })?;
    let encryption = server_encryption(state, &request)?;
    let config = match request.config.as_deref() {
        None | Some("") => Config::default(),
        Some(text) => serde_json::from_str(text).map_err(|_| {
            ApiError::new(
                "InvalidParameterValue",
                "Config must be a JSON object of the six boolean switches.",
            )
        })?,
    };
    let (seed, found) = match (&request.image_url, &request.image_base64) {
        // ImageUrl wins when both are present, as the API page says.
        (Some(url), _) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ApiError::new(
                    "FailedOperation.DownLoadError",
                    "File download failed.",
                ));
            }
            let bytes = Bytes::copy_from_slice(url.as_bytes());
            (bytes.clone(), directives::find(&bytes))
        }
        (None, Some(encoded)) => {
            let image = decode_image(encoded)?;
            let found = directives::find(&image);
            (image, found)
        }
        (None, None) => {
            return Err(ApiError::new(
                "InvalidParameter",
                "Either ImageBase64 or ImageUrl must be provided.",
            ));
        }
    };
    let directives = found
        .map_err(|reason| {
            ApiError::new(
                "InvalidParameterValue",
                format!("Simulator directive error: {reason}."),
            )
        })?
        .unwrap_or_default();
    let directives = apply_fail_first(state, directives);
    Ok(Outcome {
        directives,
        config,
        seed,
        encryption,
    })
}

/// Unwraps the caller's session key when it asked for encryption.
fn server_encryption(
    state: &State,
    request: &CheckIdCardInformationRequest,
) -> Result<Option<ServerEncryption>, ApiError> {
    let mode = match (request.is_encrypt_response, request.is_encrypt) {
        (Some(true), _) => EncryptionMode::Response,
        (_, Some(true)) => EncryptionMode::Fields,
        _ => return Ok(None),
    };
    let invalid = |what: &str| {
        ApiError::new(
            "InvalidParameterValue",
            format!("Encryption.{what} is missing or invalid."),
        )
    };
    let encryption = request
        .encryption
        .as_ref()
        .ok_or_else(|| invalid("CiphertextBlob"))?;
    let algorithm = match encryption.algorithm.as_deref() {
        None | Some("") => Algorithm::default(),
        Some(name) => Algorithm::from_wire(name).map_err(|_| invalid("Algorithm"))?,
    };
    let blob = encryption
        .ciphertext_blob
        .as_deref()
        .ok_or_else(|| invalid("CiphertextBlob"))?;
    let key = crypto::unwrap_key(state.private_keys(), algorithm, blob)
        .map_err(|_| ApiError::new("FailedOperation.EncryptSystemError", "Encryption failed."))?;
    let request_iv = match encryption.iv.as_deref() {
        None | Some("") => None,
        Some(iv) => Some(Iv::from_base64(algorithm, iv).map_err(|_| invalid("Iv"))?),
    };
    if mode == EncryptionMode::Fields && request_iv.is_none() {
        return Err(invalid("Iv"));
    }
    Ok(Some(ServerEncryption {
        mode,
        key,
        request_iv,
    }))
}

/// Encrypts a `Result` answer as the caller asked: the whole body into
/// `EncryptedBody` with a fresh IV, or `Name` and `IdNum` with the caller's
/// IV (Tencent's scheme; under GCM the two fields share a nonce).
fn seal(
    mut body: serde_json::Value,
    encryption: &ServerEncryption,
    tamper: bool,
    omit: bool,
) -> Result<serde_json::Value, crypto::CryptoError> {
    let algorithm = encryption.key.algorithm();
    let response = body["Response"]
        .as_object_mut()
        .expect("result bodies are objects");
    let request_id = response.remove("RequestId").unwrap_or_default();
    match encryption.mode {
        EncryptionMode::Response => {
            for field in ["Encryption", "EncryptedBody"] {
                response.remove(field);
            }
            let plain = serde_json::to_vec(&response).expect("JSON values serialize");
            let iv = Iv::generate(algorithm)?;
            let sealed = crypto::encrypt(&encryption.key, &iv, &plain)?;
            let mut ciphertext = sealed.ciphertext_b64;
            if tamper {
                flip_one_character(&mut ciphertext);
            }
            let mut outer = json!({
                "EncryptedBody": ciphertext,
                "Encryption": {
                    "EncryptList": ["EncryptionBody"],
                    "CiphertextBlob": null,
                    "Iv": iv.to_base64(),
                    "Algorithm": algorithm.as_wire(),
                    "TagList": sealed.tag_b64.map(|tag| vec![tag]),
                },
                "RequestId": request_id,
            });
            if omit {
                outer
                    .as_object_mut()
                    .expect("an object")
                    .remove("EncryptedBody");
            }
            Ok(json!({ "Response": outer }))
        }
        EncryptionMode::Fields => {
            let iv = encryption
                .request_iv
                .clone()
                .expect("checked when the request arrived");
            let mut tags = Vec::new();
            for field in ["Name", "IdNum"] {
                let plain = response[field].as_str().unwrap_or_default().to_owned();
                if plain.is_empty() {
                    continue;
                }
                let sealed = crypto::encrypt(&encryption.key, &iv, plain.as_bytes())?;
                let mut ciphertext = sealed.ciphertext_b64;
                if tamper {
                    flip_one_character(&mut ciphertext);
                }
                response.insert(field.to_owned(), ciphertext.into());
                tags.extend(sealed.tag_b64);
            }
            response.insert(
                "Encryption".to_owned(),
                json!({
                    "EncryptList": ["Name", "IdNum"],
                    "CiphertextBlob": null,
                    "Iv": iv.to_base64(),
                    "Algorithm": algorithm.as_wire(),
                    "TagList": (!tags.is_empty()).then_some(tags),
                }),
            );
            response.insert("RequestId".to_owned(), request_id);
            Ok(body)
        }
    }
}

/// Changes one base64 character so the ciphertext no longer decrypts.
fn flip_one_character(text: &mut String) {
    let mut bytes = std::mem::take(text).into_bytes();
    if let Some(byte) = bytes.get_mut(2) {
        *byte = if *byte == b'A' { b'B' } else { b'A' };
    }
    *text = String::from_utf8(bytes).expect("base64 is ASCII");
}

fn decode_image(encoded: &str) -> Result<Bytes, ApiError> {
    if encoded.is_empty() {
        return Err(ApiError::new(
            "FailedOperation.EmptyImageError",
            "Image content is empty.",
        ));
    }
    if encoded.len() > MAX_IMAGE_BASE64_LEN {
        return Err(ApiError::new(
            "FailedOperation.ImageSizeTooLarge",
            "The image is too large.",
        ));
    }
    let image = STANDARD.decode(encoded).map_err(|_| {
        ApiError::new(
            "FailedOperation.ImageDecodeFailed",
            "Image decoding failed.",
        )
    })?;
    if image.is_empty() {
        return Err(ApiError::new(
            "FailedOperation.EmptyImageError",
            "Image content is empty.",
        ));
    }
    if image::check_structure(&image).is_err() {
        return Err(ApiError::new(
            "FailedOperation.ImageDecodeFailed",
            "Image decoding failed.",
        ));
    }
    Ok(Bytes::from(image))
}

fn apply_fail_first(state: &State, directives: Directives) -> Directives {
    let (Some(key), Some(limit)) = (&directives.key, directives.fail_first) else {
        return directives;
    };
    let seen = {
        let mut counters = state
            .fail_counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counters.entry(key.clone()).or_default();
        *count += 1;
        *count
    };
    if seen > limit {
        directives.without_failures()
    } else {
        directives
    }
}

/// Waits as told, then answers as told.
async fn deliver(state: &State, outcome: Outcome, request_id: &str) -> Answer {
    let d = &outcome.directives;
    if let Some(delay) = d.delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(fault) = d.fault {
        return match fault {
            Fault::Reset => {
                state.stats.answered("fault:reset");
                Err(Drop::Reset)
            }
            Fault::Malformed => {
                state.stats.answered("fault:malformed");
                let body = format!(r#"{{"Response": {{"RequestId": "{request_id}", "Sim": "#);
                Ok(simulated(
                    StatusCode::OK,
                    "application/json",
                    body.into_bytes(),
                ))
            }
            Fault::Html => {
                state.stats.answered("fault:html");
                let body = b"<html><body>502 Bad Gateway (simulated)</body></html>".to_vec();
                Ok(simulated(StatusCode::OK, "text/html", body))
            }
        };
    }
    if let Some(status) = d.http {
        state.stats.answered(&format!("http:{status}"));
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        let body = format!("simulated HTTP {}\n", status.as_u16()).into_bytes();
        return Ok(simulated(status, "text/plain", body));
    }
    if let Some(code) = &d.error {
        state.stats.answered(code);
        let body = json!({"Response": {
            "Error": {"Code": code, "Message": description(code)},
            "RequestId": request_id,
        }});
        return Ok(json_answer(&body));
    }
    let body = result_body(&outcome, request_id, state);
    let Some(encryption) = &outcome.encryption else {
        return Ok(json_answer(&body));
    };
    state.stats.encrypted();
    match seal(body, encryption, d.crypto_tamper, d.crypto_omit) {
        Ok(sealed) => Ok(json_answer(&sealed)),
        Err(_) => {
            let e = ApiError::new("FailedOperation.EncryptSystemError", "Encryption failed.");
            Ok(error_answer(state, &e, request_id))
        }
    }
}

/// The `Result`-carrying answer: success, a chosen result code, or warnings.
fn result_body(outcome: &Outcome, request_id: &str, state: &State) -> serde_json::Value {
    let d = &outcome.directives;
    let config = &outcome.config;
    let fired: Vec<&str> = d
        .warn
        .iter()
        .map(String::as_str)
        .filter(|code| warning_enabled(code, config))
        .collect();
    let identity = Identity::for_input(&outcome.seed);
    let (result, sim) = if !fired.is_empty() {
        ("FailedOperation.OcrWarningOccurred".to_owned(), 0.0)
    } else if let Some(code) = &d.result {
        (code.clone(), d.sim.unwrap_or(0.0))
    } else {
        ("Success".to_owned(), d.sim.unwrap_or(identity.similarity))
    };
    state.stats.answered(&result);
    let card_read = result == "Success"
        || !result.starts_with("FailedOperation.")
        || matches!(
            result.as_str(),
            "FailedOperation.OcrWarningOccurred"
                | "FailedOperation.CompareLowSimilarity"
                | "FailedOperation.CompareFail"
                | "FailedOperation.IdNameMisMatch"
                | "FailedOperation.IdPhotoPoorQuality"
        );
    let text = |value: &str| {
        if card_read {
            value.to_owned()
        } else {
            String::new()
        }
    };
    let quality = config.quality.then(|| d.quality.unwrap_or(88.0));
    json!({"Response": {
        "Sim": sim,
        "Result": result,
        "Description": description(&result),
        "Name": text(&identity.name),
        "Sex": text(identity.sex),
        "Nation": text(identity.nation),
        "Birth": text(&identity.birth),
        "Address": text(&identity.address),
        "IdNum": text(&identity.id_number),
        "Portrait": if card_read && !d.no_portrait { PORTRAIT_PNG_BASE64 } else { "" },
        "Warnings": fired.join("|"),
        "Quality": quality,
        "Encryption": null,
        "EncryptedBody": "",
        "RequestId": request_id,
    }})
}

/// Whether `Config` turned on the check that raises this warning; codes the
/// simulator does not know always fire, to exercise unknown-code handling.
fn warning_enabled(code: &str, config: &Config) -> bool {
    match code {
        "-9101" | "-9105" => config.border_check_warn,
        "-9102" => config.copy_warn,
        "-9103" => config.reshoot_warn,
        "-9104" => config.temp_id_warn,
        "-9106" => config.detect_ps_warn,
        "-8001" => config.quality,
        _ => true,
    }
}

/// The API page's text for a code (what `Description`/`Message` say).
fn description(code: &str) -> &'static str {
    match code {
        "Success" => "Success (simulated)",
        "FailedOperation.CompareFail" => "Comparison failed.",
        "FailedOperation.CompareLowSimilarity" => {
            "The comparison similarity did not reach the passing standard."
        }
        "FailedOperation.CompareSystemError" => "Error calling the comparison engine API.",
        "FailedOperation.DownLoadError" => "File download failed.",
        "FailedOperation.EmptyImageError" => "Image content is empty.",
        "FailedOperation.EncryptSystemError" | "InternalError.EncryptSystemError" => {
            "Encryption failed."
        }
        "FailedOperation.FileSaveError" => "Failed to store file. Please retry later.",
        "FailedOperation.IdFormatError" => "Input identity card number error.",
        "FailedOperation.IdNameMisMatch" => "Name and ID card number mismatch.",
        "FailedOperation.IdNoExistSystem" => "The number is not found in the database.",
        "FailedOperation.IdPhotoNoExist" => {
            "The photo of this number is not found in the database."
        }
        "FailedOperation.IdPhotoPoorQuality" => "Document image is of poor quality.",
        "FailedOperation.IdPhotoSystemNoanswer" => {
            "The authentication center failed to return the photo."
        }
        "FailedOperation.ImageBlur" => "The image is blurry.",
        "FailedOperation.ImageDecodeFailed" => "Image decoding failed.",
        "FailedOperation.ImageNoIdCard" => "No ID card is detected in the image.",
        "FailedOperation.ImageSizeTooLarge" => "The image is too large.",
        "FailedOperation.LifePhotoDetectFaces" => "Multiple faces are detected.",
        "FailedOperation.LifePhotoDetectFake" => "Real person comparison failed.",
        "FailedOperation.LifePhotoDetectNoFaces" => "Failed to detect a full face.",
        "FailedOperation.LifePhotoPoorQuality" => "The resolution of the image is too low.",
        "FailedOperation.LifePhotoSizeError" => "The image is too large or too small.",
        "FailedOperation.OcrFailed" => "Ocr recognition failed.",
        "FailedOperation.OcrWarningOccurred" => "OCR alert occurred",
        "FailedOperation.RequestLimitExceeded" => "The number of calls exceeded the limit.",
        "FailedOperation.StsUnAuthErrError" => "STS unauthorized.",
        "FailedOperation.UnKnown" | "InternalError.UnKnown" | "InternalError" => {
            "Unknown internal error."
        }
        "UnauthorizedOperation.Arrears" => "The account is in arrears.",
        "UnauthorizedOperation.ChargeStatusException" => "The billing status is abnormal.",
        "UnauthorizedOperation.Nonactivated" => "The service has not been activated.",
        _ => "Simulated outcome.",
    }
}

fn error_answer(state: &State, error: &ApiError, request_id: &str) -> Response<Full<Bytes>> {
    state.stats.answered(error.0);
    json_answer(&json!({"Response": {
        "Error": {"Code": error.0, "Message": error.1},
        "RequestId": request_id,
    }}))
}

pub(super) fn json_answer(body: &serde_json::Value) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).expect("JSON values serialize");
    simulated(StatusCode::OK, "application/json", bytes)
}

fn simulated(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = plain(status, content_type, body);
    response
        .headers_mut()
        .insert(SIMULATED_HEADER, http::HeaderValue::from_static("true"));
    response
}

pub(super) fn plain(
    status: StatusCode,
    content_type: &str,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static parts make a valid response")
}
