//! Which source the keys come from (`--credentials-source`). `auto` takes
//! the first that yields keys, in the official SDKs' order:
//!
//! 1. `env`: `TENCENTCLOUD_SECRET_ID` / `_KEY` (+ `_SESSION_TOKEN`);
//! 2. `file`: `TENCENTCLOUD_CREDENTIALS_FILE`, else
//!    `~/.tencentcloud/credentials`, else `/etc/tencentcloud/credentials`;
//! 3. `oidc`: TKE pod identity, when `TKE_ROLE_ARN`, `TKE_PROVIDER_ID` and
//!    `TKE_WEB_IDENTITY_TOKEN_FILE` are set (`TKE_REGION` is the STS region);
//! 4. `cvm-role`: the instance's role, when the metadata server answers
//!    within 1 s.
//!
//! A source that is configured but broken (half a key pair, an unreadable
//! file that was named, some but not all `TKE_*` variables) stops the
//! start-up with a message rather than falling through to the next one: a
//! pod meant to use its own identity must not quietly run on the node's.
//! With `--role-arn`, the keys found only sign STS `AssumeRole`, whose
//! temporary keys sign the calls. The start-up log names the source chosen
//! and why each earlier one was passed over; never a value.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

use super::metadata::{self, Metadata};
use super::refresh::{Fetch, Refresher};
use super::sts::{self, AssumeRole, FetchError, Sts, WebIdentity};
use super::{
    CredentialProvider, CredentialsError, ENV_CREDENTIALS_FILE, ENV_SECRET_ID, ENV_SECRET_KEY,
    Report, Trust, env_keys,
};
use crate::config::{CredentialsSource, ServeArgs};

/// The role to assume (TKE pod identity's, from its webhook).
const TKE_ROLE_ARN: &str = "TKE_ROLE_ARN";
/// The CAM OIDC identity provider.
const TKE_PROVIDER_ID: &str = "TKE_PROVIDER_ID";
/// The projected service-account token.
const TKE_WEB_IDENTITY_TOKEN_FILE: &str = "TKE_WEB_IDENTITY_TOKEN_FILE";
/// The cluster's region: the STS region of `AssumeRoleWithWebIdentity`.
const TKE_REGION: &str = "TKE_REGION";
/// How long TKE OIDC keys are asked to live (the SDKs' 7200 s).
const OIDC_DURATION: Duration = Duration::from_secs(7200);

/// `--role-arn` and its settings.
#[derive(Debug, Clone)]
pub struct RoleSettings {
    /// The role's ARN (it holds the account id: never logged).
    pub arn: String,
    /// `RoleSessionName`.
    pub session_name: String,
    /// `DurationSeconds`.
    pub duration: Duration,
}

/// What the chain needs: the flags, and where the system-wide credentials
/// file lives (a parameter so tests can use a directory of their own).
#[derive(Debug, Clone)]
pub struct ChainSettings {
    /// `--credentials-source`.
    pub source: CredentialsSource,
    /// `--role-arn` and friends.
    pub role: Option<RoleSettings>,
    /// `--sts-endpoint`.
    pub sts_endpoint: Url,
    /// `--metadata-endpoint`.
    pub metadata_endpoint: Url,
    /// `--region`: the STS region when `TKE_REGION` is not set.
    pub region: Option<String>,
    /// The directory `etc/tencentcloud/credentials` is looked up under:
    /// `/` outside tests.
    pub system_root: PathBuf,
    /// Limit for connecting to STS.
    pub connect_timeout: Duration,
    /// Limit for one STS call.
    pub request_timeout: Duration,
}

impl ChainSettings {
    /// The settings of the `serve` flags.
    pub fn from_args(args: &ServeArgs) -> Self {
        Self {
            source: args.credentials_source,
            role: args.role_arn.as_ref().map(|arn| RoleSettings {
                arn: arn.clone(),
                session_name: args.role_session_name.clone(),
                duration: args.role_duration,
            }),
            sts_endpoint: args.sts_endpoint.clone(),
            metadata_endpoint: args.metadata_endpoint.clone(),
            region: args.region.clone(),
            system_root: PathBuf::from("/"),
            connect_timeout: args.connect_timeout,
            request_timeout: args.upstream_timeout,
        }
    }

    /// The STS client, asking in `TKE_REGION`, else `--region`, else the
    /// SDKs' default region.
    fn sts(&self, var: &impl Fn(&str) -> Option<String>) -> Result<Sts, CredentialsError> {
        let region = non_empty(var(TKE_REGION))
            .or_else(|| self.region.clone().filter(|r| !r.is_empty()))
            .unwrap_or_else(|| sts::DEFAULT_REGION.to_owned());
        Sts::new(
            &self.sts_endpoint,
            &region,
            self.connect_timeout,
            self.request_timeout,
        )
    }
}

/// Why a source yields no keys (names variables and files, never values).
type Skipped = String;

impl CredentialProvider {
    /// The keys of the source `settings` choose (see the module's page),
    /// with temporary keys already fetched. `var` looks a variable up (it
    /// is `std::env::var` outside tests; `HOME` included).
    ///
    /// # Errors
    /// No source yields keys, a configured source is broken, or temporary
    /// keys cannot be had.
    pub async fn from_chain(
        settings: &ChainSettings,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, CredentialsError> {
        if let Some(role) = &settings.role {
            check_session_name(&role.session_name)?;
        }
        let mut skipped: Vec<String> = Vec::new();
        let mut found = None;
        for source in [
            CredentialsSource::Env,
            CredentialsSource::File,
            CredentialsSource::Oidc,
            CredentialsSource::CvmRole,
        ] {
            if settings.source != CredentialsSource::Auto && settings.source != source {
                continue;
            }
            match try_source(source, settings, &var).await? {
                Ok(provider) => {
                    found = Some(provider);
                    break;
                }
                Err(reason) if settings.source == source => {
                    return Err(CredentialsError::Unavailable {
                        chosen: label(source),
                        reason,
                    });
                }
                Err(reason) => skipped.push(format!("{}: {reason}", label(source))),
            }
        }
        let Some(base) = found else {
            tracing::warn!(skipped = %skipped.join("; "), "no Tencent Cloud credentials found");
            return Err(CredentialsError::Missing);
        };
        let chosen = base.source_label();
        let provider = match &settings.role {
            None => base,
            Some(role) => assume_role(settings, &var, role, base).await?,
        };
        tracing::info!(
            source = chosen,
            role_arn = settings.role.is_some(),
            skipped = %skipped.join("; "),
            "Tencent Cloud credentials source chosen"
        );
        Ok(provider)
    }
}

/// The provider of one source, `Err(reason)` when it has nothing, or an
/// error when it is configured but broken.
async fn try_source(
    source: CredentialsSource,
    settings: &ChainSettings,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<Result<CredentialProvider, Skipped>, CredentialsError> {
    match source {
        CredentialsSource::Env => Ok(match env_keys(var)? {
            Some(credentials) => Ok(CredentialProvider::fixed(credentials)),
            None => Err(format!("{ENV_SECRET_ID} and {ENV_SECRET_KEY} are not set")),
        }),
        CredentialsSource::File => Ok(match credentials_file(settings, var)? {
            Some(path) => Ok(CredentialProvider::from_file(path)?),
            None => Err(format!(
                "{ENV_CREDENTIALS_FILE} is not set and neither ~/.tencentcloud/credentials nor \
                 {} exists",
                system_file(settings).display()
            )),
        }),
        CredentialsSource::Oidc => oidc(settings, var).await,
        CredentialsSource::CvmRole => cvm_role(settings).await,
        CredentialsSource::Auto => unreachable!("auto is the order of the others"),
    }
}

/// The credentials file to read: the one named, else the first of the two
/// default places that exists.
fn credentials_file(
    settings: &ChainSettings,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<Option<PathBuf>, CredentialsError> {
    if let Some(named) = non_empty(var(ENV_CREDENTIALS_FILE)) {
        // Named: it must be there (from_file says so if it is not).
        return Ok(Some(PathBuf::from(named)));
    }
    let home =
        non_empty(var("HOME")).map(|home| Path::new(&home).join(".tencentcloud/credentials"));
    for path in home.into_iter().chain([system_file(settings)]) {
        if path.exists() {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

fn system_file(settings: &ChainSettings) -> PathBuf {
    settings.system_root.join("etc/tencentcloud/credentials")
}

/// TKE pod identity, when its three variables are set.
async fn oidc(
    settings: &ChainSettings,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<Result<CredentialProvider, Skipped>, CredentialsError> {
    let names = [TKE_ROLE_ARN, TKE_PROVIDER_ID, TKE_WEB_IDENTITY_TOKEN_FILE];
    let values: Vec<Option<String>> = names.iter().map(|name| non_empty(var(name))).collect();
    let (Some(role_arn), Some(provider_id), Some(token_file)) =
        (values[0].clone(), values[1].clone(), values[2].clone())
    else {
        let set: Vec<&str> = names
            .iter()
            .zip(&values)
            .filter_map(|(name, value)| value.as_ref().map(|_| *name))
            .collect();
        let unset: Vec<&str> = names
            .iter()
            .zip(&values)
            .filter_map(|(name, value)| value.is_none().then_some(*name))
            .collect();
        if set.is_empty() {
            return Ok(Err(format!("{} are not set", unset.join(", "))));
        }
        return Err(CredentialsError::Unavailable {
            chosen: "oidc",
            reason: format!(
                "{} set but {} not: set all three (TKE's pod-identity webhook does)",
                set.join(", "),
                unset.join(", ")
            ),
        });
    };
    let fetch = Fetch::WebIdentity {
        sts: settings.sts(var)?,
        request: WebIdentity {
            provider_id,
            role_arn,
            token_file: PathBuf::from(token_file),
            duration: OIDC_DURATION,
        },
    };
    renewed(fetch, "oidc").await.map(Ok)
}

/// The CVM instance's role, when the metadata server answers in time.
async fn cvm_role(
    settings: &ChainSettings,
) -> Result<Result<CredentialProvider, Skipped>, CredentialsError> {
    let metadata = Metadata::new(&settings.metadata_endpoint)?;
    match metadata.probe().await {
        Ok(()) => {}
        Err(FetchError::NoRole) => {
            return Ok(Err(
                "the metadata server knows no CAM role for this instance".to_owned(),
            ));
        }
        Err(error) => {
            return Ok(Err(format!(
                "no metadata server answered within {} s ({})",
                metadata::PROBE_TIMEOUT.as_secs(),
                error.kind()
            )));
        }
    }
    renewed(Fetch::CvmRole(metadata), "cvm-role").await.map(Ok)
}

/// `--role-arn`: STS `AssumeRole` signed with `base`'s keys.
async fn assume_role(
    settings: &ChainSettings,
    var: &impl Fn(&str) -> Option<String>,
    role: &RoleSettings,
    base: CredentialProvider,
) -> Result<CredentialProvider, CredentialsError> {
    let fetch = Fetch::AssumeRole {
        sts: settings.sts(var)?,
        request: AssumeRole {
            role_arn: role.arn.clone(),
            session_name: role.session_name.clone(),
            duration: role.duration,
        },
        base: Arc::new(base),
    };
    renewed(fetch, "role-arn").await
}

/// A provider of temporary keys from `fetch`, its first keys in.
async fn renewed(
    fetch: Fetch,
    source: &'static str,
) -> Result<CredentialProvider, CredentialsError> {
    let trust = Trust::new();
    let report = Report::new(source);
    let refresher = Refresher::start(fetch, Arc::clone(&trust), Arc::clone(&report))
        .await
        .map_err(|error| CredentialsError::Fetch {
            origin: source,
            error,
        })?;
    Ok(CredentialProvider::renewed(refresher, trust, report))
}

/// STS takes a `RoleSessionName` of 2 to 64 letters, digits and `=,.@_-`.
fn check_session_name(name: &str) -> Result<(), CredentialsError> {
    let valid = (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=,.@_-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(CredentialsError::Setup(
            "--role-session-name must be 2 to 64 letters, digits and =,.@_-",
        ))
    }
}

fn label(source: CredentialsSource) -> &'static str {
    match source {
        CredentialsSource::Auto => "auto",
        CredentialsSource::Env => "env",
        CredentialsSource::File => "file",
        CredentialsSource::Oidc => "oidc",
        CredentialsSource::CvmRole => "cvm-role",
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(source: CredentialsSource, root: &Path) -> ChainSettings {
        ChainSettings {
            source,
            role: None,
            sts_endpoint: Url::parse("http://127.0.0.1:9/").unwrap(),
            // Nothing listens on port 9 of loopback: the probe fails at once.
            metadata_endpoint: Url::parse("http://127.0.0.1:9/").unwrap(),
            region: None,
            system_root: root.to_owned(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
        }
    }

    fn env(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn write_ini(path: &Path, id: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            path,
            format!("[default]\nsecret_id = {id}\nsecret_key = k\n"),
        )
        .unwrap();
    }

    #[tokio::test]
    async fn the_home_file_comes_before_the_system_file() {
        let root = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        write_ini(
            &root.path().join("etc/tencentcloud/credentials"),
            "AKIDsystem",
        );
        let settings = settings(CredentialsSource::Auto, root.path());
        let home_env = env(&[("HOME", home.path().display().to_string())]);

        let provider = CredentialProvider::from_chain(&settings, &home_env)
            .await
            .unwrap();
        assert_eq!(provider.current().secret_id(), "AKIDsystem");
        assert_eq!(provider.source_label(), "file");

        write_ini(&home.path().join(".tencentcloud/credentials"), "AKIDhome");
        let provider = CredentialProvider::from_chain(&settings, &home_env)
            .await
            .unwrap();
        assert_eq!(provider.current().secret_id(), "AKIDhome");
    }

    #[tokio::test]
    async fn env_keys_come_before_any_file() {
        let root = tempfile::tempdir().unwrap();
        write_ini(
            &root.path().join("etc/tencentcloud/credentials"),
            "AKIDsystem",
        );
        let provider = CredentialProvider::from_chain(
            &settings(CredentialsSource::Auto, root.path()),
            env(&[
                (ENV_SECRET_ID, "AKIDenv".to_owned()),
                (ENV_SECRET_KEY, "k".to_owned()),
            ]),
        )
        .await
        .unwrap();
        assert_eq!(provider.current().secret_id(), "AKIDenv");
        assert_eq!(provider.source_label(), "env");
    }

    #[tokio::test]
    async fn nothing_anywhere_is_missing_and_an_explicit_source_says_why() {
        let root = tempfile::tempdir().unwrap();
        let error = CredentialProvider::from_chain(
            &settings(CredentialsSource::Auto, root.path()),
            env(&[]),
        )
        .await
        .unwrap_err();
        assert!(matches!(error, CredentialsError::Missing), "{error}");

        let error = CredentialProvider::from_chain(
            &settings(CredentialsSource::Env, root.path()),
            env(&[]),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("--credentials-source env: "), "{error}");
        assert!(error.contains(ENV_SECRET_ID), "{error}");

        let error = CredentialProvider::from_chain(
            &settings(CredentialsSource::CvmRole, root.path()),
            env(&[]),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(error.contains("metadata server"), "{error}");
    }

    #[tokio::test]
    async fn some_but_not_all_tke_variables_stop_the_start_up() {
        let root = tempfile::tempdir().unwrap();
        let error = CredentialProvider::from_chain(
            &settings(CredentialsSource::Auto, root.path()),
            env(&[(
                TKE_ROLE_ARN,
                "qcs::cam::uin/100000000001:roleName/r".to_owned(),
            )]),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(error.contains("TKE_ROLE_ARN set but"), "{error}");
        assert!(error.contains("TKE_PROVIDER_ID"), "{error}");
        assert!(!error.contains("100000000001"), "{error}");
    }

    #[test]
    fn session_names_follow_sts_rules() {
        assert!(check_session_name("faceid-gateway").is_ok());
        for bad in ["a", "with space", &"x".repeat(65), "ünïcode"] {
            assert!(check_session_name(bad).is_err(), "{bad}");
        }
    }
}
