//! The HTTP client for `CheckIdCardInformation`: one reqwest connection pool
//! (rustls), TC3 signing of each attempt with a fresh timestamp, and decoding
//! of Tencent's envelopes into a [`Reply`] or a classified [`Error`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::body::RequestBody;
use super::codes::Class;
use super::credentials::{CredentialProvider, Credentials, STALE_KEY_CODES};
use super::encryption::RequestEncryption;
use super::error::Error;
use super::model::{ACTION, CheckIdCardInformationResponse, Envelope, SERVICE, VERSION};
use super::sign::{self, CanonicalRequest, SigningKey};

/// The Content-Type sent and signed, byte for byte (no charset, as the SDKs).
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// The response header by which the built-in simulator marks invented answers.
pub const SIMULATED_HEADER: &str = "x-faceid-simulated";
/// Largest answer body read; Tencent's answers for this action are far smaller.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// `X-TC-RequestClient`: who is calling, for Tencent's side of a support case.
const REQUEST_CLIENT: &str = concat!("faceid-gateway/", env!("CARGO_PKG_VERSION"));

/// How to reach Tencent.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL, e.g. `https://faceid.intl.tencentcloudapi.com` (the
    /// primary, when [`Client::with_backups`] adds others).
    pub endpoint: Url,
    /// Sent as `X-TC-Region` when set (not needed for this action).
    pub region: Option<String>,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for one whole attempt.
    pub request_timeout: Duration,
}

/// A decoded answer that is a verification outcome: `Success` or a
/// [`Class::NoMatch`] code, from either envelope.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The answer's fields; `result` is always set.
    pub response: CheckIdCardInformationResponse,
    /// [`Class::Success`] or [`Class::NoMatch`].
    pub class: Class,
    /// True when the simulator produced the answer.
    pub simulated: bool,
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The endpoint is not an http(s) URL with a host.
    #[error("the endpoint must be an http:// or https:// URL with a host and no path")]
    Endpoint,
    /// The same endpoint is listed twice.
    #[error("an endpoint is listed twice in --endpoint")]
    DuplicateEndpoint,
    /// reqwest refused the configuration.
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
}

/// Signs and sends `CheckIdCardInformation` calls. Cheap to clone; all clones
/// share one connection pool and one signing-key cache.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// One Tencent endpoint a request can go to: its URL and the Host header
/// that is signed for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: Url,
    /// The Host header value reqwest sends (`host` or `host:port`), which
    /// is what gets signed.
    authority: String,
}

impl Endpoint {
    /// Checks that `url` can be an endpoint: `http://` or `https://`, a
    /// host, no user, no path, no query.
    ///
    /// # Errors
    /// [`BuildError::Endpoint`] when it cannot.
    pub fn new(url: Url) -> Result<Self, BuildError> {
        if !matches!(url.scheme(), "http" | "https")
            || !url.username().is_empty()
            || url.password().is_some()
            || url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(BuildError::Endpoint);
        }
        let authority = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(BuildError::Endpoint),
        };
        Ok(Self { url, authority })
    }

    /// The URL requests are posted to.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The host name, without the port (`server.address` in spans).
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// `host` or `host:port` as sent in the Host header: a bounded label
    /// for metrics and logs (the endpoint list is configuration).
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

struct Inner {
    http: reqwest::Client,
    /// The primary first, then the backups in order.
    endpoints: Vec<Endpoint>,
    region: Option<HeaderValue>,
    credentials: Arc<CredentialProvider>,
    key_cache: Mutex<Option<CachedKey>>,
}

/// The derived key of one UTC day for one set of credentials.
struct CachedKey {
    credentials: Arc<Credentials>,
    date: String,
    key: SigningKey,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field(
                "endpoints",
                &self
                    .inner
                    .endpoints
                    .iter()
                    .map(Endpoint::authority)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds the client and its connection pool.
    ///
    /// # Errors
    /// The endpoint is not usable, or the HTTP client cannot be built.
    pub fn new(
        config: ClientConfig,
        credentials: Arc<CredentialProvider>,
    ) -> Result<Self, BuildError> {
        Self::with_backups(config, Vec::new(), credentials)
    }

    /// Builds the client for `config.endpoint` and `backups` (in order of
    /// preference): one connection pool for all of them, one signing-key
    /// cache.
    ///
    /// # Errors
    /// An endpoint is not usable or listed twice, or the HTTP client cannot
    /// be built.
    pub fn with_backups(
        config: ClientConfig,
        backups: Vec<Url>,
        credentials: Arc<CredentialProvider>,
    ) -> Result<Self, BuildError> {
        let mut endpoints: Vec<Endpoint> = Vec::with_capacity(1 + backups.len());
        for url in std::iter::once(config.endpoint).chain(backups) {
            let endpoint = Endpoint::new(url)?;
            if endpoints
                .iter()
                .any(|known| known.url.origin() == endpoint.url.origin())
            {
                return Err(BuildError::DuplicateEndpoint);
            }
            endpoints.push(endpoint);
        }
        crate::net::install_crypto_provider();
        let all_https = endpoints.iter().all(|e| e.url.scheme() == "https");
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(REQUEST_CLIENT)
            .https_only(all_https)
            // Tencent never redirects; an endpoint that does (a proxy, a
            // hijacked name) must not get the signed body sent on anywhere.
            // A 3xx is an HttpStatus error.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(BuildError::Http)?;
        let region = config
            .region
            .filter(|r| !r.is_empty())
            .map(|r| HeaderValue::from_str(&r).map_err(|_| BuildError::Endpoint))
            .transpose()?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                endpoints,
                region,
                credentials,
                key_cache: Mutex::new(None),
            }),
        })
    }

    /// The primary endpoint's URL.
    pub fn endpoint(&self) -> &Url {
        &self.inner.endpoints[0].url
    }

    /// The host name (without port) of the primary endpoint, for telemetry.
    pub fn host(&self) -> &str {
        self.inner.endpoints[0].host()
    }

    /// Every endpoint, the primary first, then the backups in order.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.inner.endpoints
    }

    /// Sends one attempt: signs `body` with the current credentials and the
    /// current time, posts it, and decodes the answer (opening it with
    /// `encryption` when the request asked for an encrypted one).
    ///
    /// Expired temporary keys fail at once, nothing sent. When Tencent
    /// refuses temporary keys as stale (`AuthFailure.TokenFailure`,
    /// `AuthFailure.SecretIdNotFound`: not billed), the keys are renewed
    /// and the attempt is sent once more with the new ones.
    ///
    /// # Errors
    /// Any [`Error`]; [`Error::class`] says whether a retry may help.
    pub async fn send(
        &self,
        body: &RequestBody,
        encryption: Option<&RequestEncryption>,
    ) -> Result<Reply, Error> {
        self.send_to(&self.inner.endpoints[0], body, encryption)
            .await
    }

    /// [`Self::send`] to `endpoint` (one of [`Self::endpoints`]), signed
    /// for its Host.
    ///
    /// # Errors
    /// Any [`Error`]; [`Error::class`] says whether a retry may help.
    pub async fn send_to(
        &self,
        endpoint: &Endpoint,
        body: &RequestBody,
        encryption: Option<&RequestEncryption>,
    ) -> Result<Reply, Error> {
        let provider = &self.inner.credentials;
        let credentials = provider
            .usable()
            .map_err(|expired| Error::CredentialsExpired {
                retry_after: expired.retry_after,
            })?;
        let result = self
            .send_with(endpoint, &credentials, body, encryption)
            .await;
        if let Err(Error::Api { code, .. }) = &result
            && credentials.token().is_some()
            && STALE_KEY_CODES.contains(&code.as_str())
            && let Some(renewed) = provider.renew_after_refusal(&credentials).await
        {
            tracing::info!(
                tencent.code = code.as_str(),
                "Tencent refused the temporary keys as stale; sending again with renewed keys"
            );
            return self.send_with(endpoint, &renewed, body, encryption).await;
        }
        result
    }

    /// [`Self::send_to`] with `credentials`.
    async fn send_with(
        &self,
        endpoint: &Endpoint,
        credentials: &Arc<Credentials>,
        body: &RequestBody,
        encryption: Option<&RequestEncryption>,
    ) -> Result<Reply, Error> {
        let timestamp = unix_now();
        let headers = self.headers_signed_with(endpoint, credentials, body, timestamp)?;
        let response = self
            .inner
            .http
            .post(endpoint.url.clone())
            .headers(headers)
            .body(body.bytes())
            .send()
            .await
            .map_err(map_send_error)?;
        let status = response.status();
        let simulated = response.headers().contains_key(SIMULATED_HEADER);
        if status != reqwest::StatusCode::OK {
            return Err(Error::HttpStatus {
                status: status.as_u16(),
            });
        }
        let bytes = read_capped(response).await?;
        let decoded = decode(&bytes, simulated, encryption);
        // Whatever Tencent answered tells whether it accepts the keys.
        match &decoded {
            Ok(_) => self.inner.credentials.note_answer(false),
            Err(Error::Api { code, .. }) => self
                .inner
                .credentials
                .note_answer(code.starts_with("AuthFailure")),
            Err(_) => {}
        }
        decoded
    }

    /// The headers of one attempt, signed for `timestamp`.
    ///
    /// # Errors
    /// [`Error::Signing`] when the clock is outside the calendar or the keys
    /// cannot go in a header (neither happens with keys that passed
    /// [`Credentials::new`]).
    pub fn signed_headers(&self, body: &RequestBody, timestamp: i64) -> Result<HeaderMap, Error> {
        self.signed_headers_for(&self.inner.endpoints[0], body, timestamp)
    }

    /// [`Self::signed_headers`] for `endpoint`: its Host is what gets
    /// signed.
    ///
    /// # Errors
    /// As [`Self::signed_headers`].
    pub fn signed_headers_for(
        &self,
        endpoint: &Endpoint,
        body: &RequestBody,
        timestamp: i64,
    ) -> Result<HeaderMap, Error> {
        self.headers_signed_with(endpoint, &self.inner.credentials.current(), body, timestamp)
    }

    /// [`Self::signed_headers_for`] with `credentials`.
    fn headers_signed_with(
        &self,
        endpoint: &Endpoint,
        credentials: &Arc<Credentials>,
        body: &RequestBody,
        timestamp: i64,
    ) -> Result<HeaderMap, Error> {
        let date = sign::credential_date(timestamp).ok_or(Error::Signing)?;
        let canonical = CanonicalRequest {
            method: "POST",
            query: "",
            headers: &[
                ("content-type", JSON_CONTENT_TYPE),
                ("host", &endpoint.authority),
            ],
            payload_sha256: body.sha256_hex(),
        };
        let string_to_sign = sign::string_to_sign(timestamp, &date, SERVICE, &canonical.to_text());
        let signature = self.with_signing_key(credentials, &date, |key| key.sign(&string_to_sign));
        let authorization = sign::authorization(
            credentials.secret_id(),
            &date,
            SERVICE,
            &canonical.signed_headers(),
            &signature,
        );

        let mut headers = HeaderMap::with_capacity(9);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
        let authorization = HeaderValue::from_str(&authorization).map_err(|_| Error::Signing)?;
        headers.insert(AUTHORIZATION, sensitive(authorization));
        headers.insert(header("x-tc-action"), HeaderValue::from_static(ACTION));
        headers.insert(header("x-tc-version"), HeaderValue::from_static(VERSION));
        headers.insert(header("x-tc-timestamp"), HeaderValue::from(timestamp));
        headers.insert(
            header("x-tc-requestclient"),
            HeaderValue::from_static(REQUEST_CLIENT),
        );
        headers.insert(header("x-tc-language"), HeaderValue::from_static("en-US"));
        if let Some(region) = &self.inner.region {
            headers.insert(header("x-tc-region"), region.clone());
        }
        if let Some(token) = credentials.token() {
            let token = HeaderValue::from_str(token).map_err(|_| Error::Signing)?;
            headers.insert(header("x-tc-token"), sensitive(token));
        }
        Ok(headers)
    }

    /// Runs `f` with the signing key for `date`, deriving it only when the
    /// day or the credentials changed.
    fn with_signing_key<T>(
        &self,
        credentials: &Arc<Credentials>,
        date: &str,
        f: impl FnOnce(&SigningKey) -> T,
    ) -> T {
        let mut cache = self
            .inner
            .key_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match cache.as_ref() {
            Some(cached)
                if cached.date == date && Arc::ptr_eq(&cached.credentials, credentials) =>
            {
                f(&cached.key)
            }
            _ => {
                let cached = cache.insert(CachedKey {
                    credentials: Arc::clone(credentials),
                    date: date.to_owned(),
                    key: SigningKey::derive(credentials.secret_key(), date, SERVICE),
                });
                f(&cached.key)
            }
        }
    }
}

fn header(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

fn sensitive(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// Seconds since the Unix epoch by the system clock (what `X-TC-Timestamp`
/// carries).
pub fn unix_now() -> i64 {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

fn map_send_error(error: reqwest::Error) -> Error {
    // Connect first: a connect timeout is a connect failure (nothing was
    // sent, so the request may go to another endpoint), not a timeout of
    // a request Tencent may be working on.
    if error.is_connect() {
        Error::Connect(error)
    } else if error.is_timeout() {
        Error::Timeout
    } else {
        Error::Transport(error)
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<Bytes, Error> {
    let mut buffer = Vec::with_capacity(
        response
            .content_length()
            .map_or(4096, |n| usize::try_from(n).unwrap_or(MAX_RESPONSE_BYTES))
            .min(MAX_RESPONSE_BYTES),
    );
    while let Some(chunk) = response.chunk().await.map_err(map_send_error)? {
        if buffer.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(Error::Malformed {
                what: "answer too large",
                request_id: None,
            });
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buffer))
}

/// Decodes an HTTP 200 body into a verification outcome or an error, wherever
/// the code arrives (`Error.Code` or `Result`).
///
/// # Errors
/// [`Error::Malformed`] for bodies that are not Tencent's envelope;
/// [`Error::Api`] for every code that is not a verification outcome.
pub fn decode(
    bytes: &[u8],
    simulated: bool,
    encryption: Option<&RequestEncryption>,
) -> Result<Reply, Error> {
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(|_| Error::Malformed {
        what: "not a Tencent JSON envelope",
        request_id: None,
    })?;
    let mut response = envelope.response;
    if let (None, Some(encryption)) = (&response.error, encryption) {
        // Errors come in clear; everything else must open.
        response = encryption.open(response).map_err(Error::Decryption)?;
    }
    let code = match (&response.error, &response.result) {
        (Some(error), _) => error.code.clone(),
        (None, Some(result)) => result.clone(),
        (None, None) => {
            return Err(Error::Malformed {
                what: "neither Error nor Result",
                request_id: response.request_id,
            });
        }
    };
    match super::codes::classify(&code) {
        class @ (Class::Success | Class::NoMatch(_)) => {
            if response.error.take().is_some() {
                // A verification outcome sent as an error: keep the code,
                // drop Tencent's free text.
                response.result = Some(code);
            }
            Ok(Reply {
                response,
                class,
                simulated,
            })
        }
        _ => Err(Error::api(code, response.request_id)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::codes::NoMatch;
    use super::*;

    /// A loopback server that answers every connection with `reply` and
    /// counts the connections.
    async fn raw_server(
        reply: String,
    ) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut request = vec![0; 64 * 1024];
                    let _ = stream.read(&mut request).await;
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        (addr, connections)
    }

    #[tokio::test]
    async fn a_redirect_is_an_error_and_the_body_goes_nowhere_else() {
        let ok = r#"{"Response":{"Result":"0","RequestId":"r"}}"#;
        let (elsewhere, reached) = raw_server(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{ok}",
            ok.len()
        ))
        .await;
        let (redirector, _) = raw_server(format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{elsewhere}/\r\nContent-Length: 0\r\n\r\n"
        ))
        .await;
        let credentials = Credentials::new("AKIDredirecttest", "key", None).unwrap();
        let client = Client::new(
            ClientConfig {
                endpoint: format!("http://{redirector}/").parse().unwrap(),
                region: None,
                connect_timeout: Duration::from_secs(3),
                request_timeout: Duration::from_secs(5),
            },
            Arc::new(CredentialProvider::fixed(credentials)),
        )
        .unwrap();
        let body = RequestBody::with_image(b"image", &Default::default());

        let error = client.send(&body, None).await.unwrap_err();

        assert!(
            matches!(error, Error::HttpStatus { status: 307 }),
            "{error:?}"
        );
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    fn decode_plain(bytes: &[u8]) -> Result<Reply, Error> {
        decode(bytes, false, None)
    }

    #[test]
    fn success_result_is_a_reply() {
        let reply =
            decode_plain(br#"{"Response":{"Result":"Success","Sim":88.5,"RequestId":"r1"}}"#)
                .unwrap();
        assert_eq!(reply.class, Class::Success);
        assert_eq!(reply.response.sim, Some(88.5));
    }

    #[test]
    fn verdict_codes_are_replies_from_either_envelope() {
        let from_result = decode_plain(
            br#"{"Response":{"Result":"FailedOperation.IdNameMisMatch","Sim":0,"RequestId":"r"}}"#,
        )
        .unwrap();
        let from_error = decode_plain(br#"{"Response":{"Error":{"Code":"FailedOperation.IdNameMisMatch","Message":"m"},"RequestId":"r"}}"#)
        .unwrap();
        for reply in [from_result, from_error] {
            assert_eq!(reply.class, Class::NoMatch(NoMatch::IdNameMismatch));
            assert_eq!(
                reply.response.result.as_deref(),
                Some("FailedOperation.IdNameMisMatch")
            );
        }
    }

    #[test]
    fn error_codes_are_errors_from_either_envelope() {
        for body in [
            r#"{"Response":{"Error":{"Code":"FailedOperation.ImageDecodeFailed","Message":"m"},"RequestId":"r"}}"#,
            r#"{"Response":{"Result":"FailedOperation.ImageDecodeFailed","RequestId":"r"}}"#,
        ] {
            let error = decode_plain(body.as_bytes()).unwrap_err();
            assert_eq!(error.class(), Class::InvalidInput);
            assert_eq!(error.reason(), "FailedOperation.ImageDecodeFailed");
            assert_eq!(error.request_id(), Some("r"));
        }
    }

    #[test]
    fn garbage_is_malformed_and_transient() {
        for body in [
            &b"<html>"[..],
            b"{\"Response\":{",
            b"{\"Response\":{\"RequestId\":\"r\"}}",
        ] {
            let error = decode_plain(body).unwrap_err();
            assert!(matches!(error, Error::Malformed { .. }));
            assert_eq!(error.class(), Class::Transient);
        }
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::{Map, Value, json};

        use super::*;

        /// Any JSON value, a few levels deep.
        fn any_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(|f| json!(f)),
                ".{0,12}".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    proptest::collection::hash_map(".{0,8}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// A `Response` object with the real field names and arbitrary values.
        fn envelope() -> impl Strategy<Value = Value> {
            let key = prop_oneof![
                Just("Error"),
                Just("Result"),
                Just("Sim"),
                Just("RequestId"),
                Just("Name"),
                Just("IdNum"),
                Just("Warnings"),
                Just("Quality"),
                Just("Encryption"),
                Just("EncryptedBody"),
                Just("Code"),
                Just("Portrait"),
            ];
            proptest::collection::vec((key, any_json()), 0..8).prop_map(|fields| {
                let response: Map<String, Value> =
                    fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                json!({ "Response": response })
            })
        }

        fn classified(result: Result<Reply, Error>) -> Result<(), TestCaseError> {
            match result {
                Ok(reply) => {
                    prop_assert!(matches!(reply.class, Class::Success | Class::NoMatch(_)));
                    prop_assert!(reply.response.result.is_some());
                }
                Err(error) => {
                    prop_assert!(!error.reason().is_empty() && error.class() != Class::Success)
                }
            }
            Ok(())
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic_and_are_classified(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                classified(decode(&bytes, false, None))?;
            }

            #[test]
            fn arbitrary_json_never_panics_and_is_classified(value in any_json()) {
                classified(decode(value.to_string().as_bytes(), false, None))?;
            }

            #[test]
            fn arbitrary_envelopes_never_panic_and_are_classified(value in envelope()) {
                classified(decode(value.to_string().as_bytes(), false, None))?;
            }
        }
    }
}
