//! The CVM metadata server, which hands the CAM role bound to the instance
//! out as temporary keys: `GET …/cam/security-credentials/` names the role,
//! `GET …/cam/security-credentials/{role}` gives its keys (`TmpSecretId`,
//! `TmpSecretKey`, `Token`, `ExpiredTime`, `Code`). Calls are bounded (1 s
//! to connect, 2 s in all; 1 s in all for the start-up probe) and run in
//! HTTP client spans that leave the role name out.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::Deserialize;
use tracing::Instrument as _;
use tracing::field::Empty;

use super::sts::{FetchError, expiry, http_client, read_capped, safe_code, send_error};
use super::{Credentials, CredentialsError};

/// Where the role's name and keys are, under the metadata endpoint.
const ROLE_PATH: &str = "latest/meta-data/cam/security-credentials/";
/// The longest wait for a connection to the metadata server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest wait for one answer of the metadata server.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long `auto` waits for the metadata server before passing over it.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

const SERVICE: &str = "the CVM metadata server";

/// The keys answer (no `Debug`: it would print them).
#[derive(Deserialize)]
struct RoleKeys {
    #[serde(rename = "TmpSecretId")]
    tmp_secret_id: String,
    #[serde(rename = "TmpSecretKey")]
    tmp_secret_key: String,
    #[serde(rename = "Token")]
    token: String,
    #[serde(rename = "ExpiredTime")]
    expired_time: i64,
    #[serde(rename = "Code")]
    code: Option<String>,
}

/// A client of one metadata server; remembers the role's name.
pub(crate) struct Metadata {
    http: reqwest::Client,
    probe: reqwest::Client,
    /// `{endpoint}/latest/meta-data/cam/security-credentials/`.
    roles: Url,
    role: Mutex<Option<String>>,
}

impl Metadata {
    /// A client of the metadata server at `endpoint`.
    ///
    /// # Errors
    /// The endpoint cannot take the path, or the client cannot be built.
    pub(super) fn new(endpoint: &Url) -> Result<Self, CredentialsError> {
        let mut base = endpoint.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let roles = base
            .join(ROLE_PATH)
            .map_err(|_| CredentialsError::Setup("--metadata-endpoint is not a usable URL"))?;
        Ok(Self {
            http: http_client(endpoint, CONNECT_TIMEOUT, TIMEOUT)?,
            probe: http_client(endpoint, PROBE_TIMEOUT, PROBE_TIMEOUT)?,
            roles,
            role: Mutex::new(None),
        })
    }

    /// Whether a metadata server answers within [`PROBE_TIMEOUT`] with the
    /// name of a role; remembers the name.
    ///
    /// # Errors
    /// No answer in time, or no role bound.
    pub(super) async fn probe(&self) -> Result<(), FetchError> {
        let name = self.role_name(&self.probe).await?;
        *self.lock() = Some(name);
        Ok(())
    }

    /// The role's current temporary keys.
    ///
    /// # Errors
    /// The server failed, knows no role, or refused.
    pub(super) async fn fetch(&self) -> Result<Credentials, FetchError> {
        let known = self.lock().clone();
        let role = match known {
            Some(role) => role,
            None => {
                let role = self.role_name(&self.http).await?;
                *self.lock() = Some(role.clone());
                role
            }
        };
        let result = self.keys(&role).await;
        if matches!(result, Err(FetchError::NoRole)) {
            // The instance's role changed: ask its name again next time.
            *self.lock() = None;
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.role
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `GET …/security-credentials/`: the role's name.
    async fn role_name(&self, http: &reqwest::Client) -> Result<String, FetchError> {
        let span = get_span(Some(self.roles.as_str()), None);
        async {
            let body = get(http, self.roles.clone()).await?;
            let text = String::from_utf8(body).map_err(|_| FetchError::Malformed {
                service: SERVICE,
                what: "the role name is not UTF-8",
            })?;
            let name = text.lines().next().unwrap_or_default().trim().to_owned();
            if !is_role_name(&name) {
                return Err(FetchError::Malformed {
                    service: SERVICE,
                    what: "not a CAM role name",
                });
            }
            Ok(name)
        }
        .instrument(span)
        .await
    }

    /// `GET …/security-credentials/{role}`: its keys.
    async fn keys(&self, role: &str) -> Result<Credentials, FetchError> {
        let url = self.roles.join(role).map_err(|_| FetchError::Malformed {
            service: SERVICE,
            what: "not a CAM role name",
        })?;
        let template = format!("/{ROLE_PATH}{{role}}");
        let span = get_span(None, Some(&template));
        async {
            let body = get(&self.http, url).await?;
            let keys: RoleKeys =
                serde_json::from_slice(&body).map_err(|_| FetchError::Malformed {
                    service: SERVICE,
                    what: "not the keys' JSON",
                })?;
            let code = keys.code.as_deref().unwrap_or("Success");
            if code != "Success" {
                return Err(FetchError::Api {
                    service: SERVICE,
                    code: safe_code(code),
                    request_id: None,
                });
            }
            let expires_at = expiry(SERVICE, keys.expired_time)?;
            Credentials::temporary(
                keys.tmp_secret_id,
                keys.tmp_secret_key,
                keys.token,
                expires_at,
            )
            .map_err(|_| FetchError::Malformed {
                service: SERVICE,
                what: "the keys are not visible ASCII",
            })
        }
        .instrument(span)
        .await
    }
}

/// An HTTP client span for one metadata GET: the full URL when it holds
/// nothing but the server's address and fixed path, else the path's
/// template (the role name stays out).
fn get_span(full: Option<&str>, template: Option<&str>) -> tracing::Span {
    tracing::info_span!(
        "metadata call",
        otel.name = "GET",
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = "GET",
        url.full = full,
        url.template = template,
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

/// One GET: the body of a 200; a 404 means no role is bound.
async fn get(http: &reqwest::Client, url: Url) -> Result<Vec<u8>, FetchError> {
    let result = async {
        let response = http
            .get(url)
            .send()
            .await
            .map_err(|error| send_error(SERVICE, &error))?;
        let status = response.status();
        tracing::Span::current().record("http.response.status_code", i64::from(status.as_u16()));
        match status {
            StatusCode::OK => read_capped(SERVICE, response).await,
            StatusCode::NOT_FOUND => Err(FetchError::NoRole),
            other => Err(FetchError::HttpStatus {
                service: SERVICE,
                status: other.as_u16(),
            }),
        }
    }
    .await;
    if let Err(error) = &result {
        let span = tracing::Span::current();
        span.record("otel.status_code", "error");
        span.record("error.type", error.kind());
    }
    result
}

/// A CAM role name: 1 to 128 of letters, digits and `+=,.@_-`.
fn is_role_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_one_path_segment_of_cam_characters() {
        assert!(is_role_name("CVM_QcsRole"));
        assert!(is_role_name("role.name@team+1"));
        for bad in ["", "../admin", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(!is_role_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_role_path_goes_under_the_endpoint() {
        for endpoint in [
            "http://metadata.tencentyun.com",
            "http://127.0.0.1:9/prefix",
        ] {
            let metadata = Metadata::new(&Url::parse(endpoint).unwrap()).unwrap();
            assert!(
                metadata
                    .roles
                    .as_str()
                    .ends_with("/latest/meta-data/cam/security-credentials/"),
                "{}",
                metadata.roles
            );
        }
    }
}
