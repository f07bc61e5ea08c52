//! Tencent Cloud API keys: where they come from, how they are held (secret
//! types that never print), and how they stay current without a failed call.
//!
//! - long-lived keys from the environment or the SDKs' INI file, the file
//!   re-read so a rotated Secret takes effect without a restart;
//! - temporary keys from TKE OIDC, the CVM metadata server or STS
//!   `AssumeRole` (`chain.rs` picks the source in the SDKs' order), renewed
//!   in the background before they expire (`refresh.rs`) by `sts.rs` and
//!   `metadata.rs` calls;
//! - what Tencent's answers and the clock say of the keys in use
//!   ([`CredentialState`]), which readiness follows.
//!
//! Reading the keys for a call ([`CredentialProvider::current`]) is a
//! read-lock clone of an `Arc`: it never waits for a renewal.

mod chain;
mod metadata;
mod refresh;
mod sts;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::watch::Watched;
use crate::metrics::{CredentialLabels, Metrics, RefreshLabels};
pub use chain::{ChainSettings, RoleSettings};
pub(crate) use refresh::KeysExpired;
use refresh::Refresher;
pub use sts::FetchError;

/// Environment variable with the SecretId (the official SDKs' name).
pub const ENV_SECRET_ID: &str = "TENCENTCLOUD_SECRET_ID";
/// Environment variable with the SecretKey (the official SDKs' name).
pub const ENV_SECRET_KEY: &str = "TENCENTCLOUD_SECRET_KEY";
/// Environment variable with a temporary key's session token (sent as `X-TC-Token`).
pub const ENV_SESSION_TOKEN: &str = "TENCENTCLOUD_SESSION_TOKEN";
/// Environment variable with the path of an INI credentials file.
pub const ENV_CREDENTIALS_FILE: &str = "TENCENTCLOUD_CREDENTIALS_FILE";

/// Tencent's answers to temporary keys it no longer knows (expired early,
/// revoked, or replaced): renewing the keys and sending again can help.
pub(crate) const STALE_KEY_CODES: [&str; 2] =
    ["AuthFailure.TokenFailure", "AuthFailure.SecretIdNotFound"];

/// The INI section the SDKs read.
const PROFILE_SECTION: &str = "default";
/// How long before temporary keys expire a missing replacement is logged.
const EXPIRY_WARNING: Duration = Duration::from_secs(600);

/// Why credentials could not be loaded. Messages name variables and files,
/// never their values.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Nothing was configured.
    #[error(
        "no Tencent Cloud credentials: set {ENV_SECRET_ID} and {ENV_SECRET_KEY} \
         (and {ENV_SESSION_TOKEN} for temporary keys), or point {ENV_CREDENTIALS_FILE} \
         at an INI file with a [default] section holding secret_id and secret_key \
         (~/.tencentcloud/credentials and /etc/tencentcloud/credentials are read too), \
         or run on TKE with pod identity (TKE_ROLE_ARN, TKE_PROVIDER_ID, \
         TKE_WEB_IDENTITY_TOKEN_FILE) or on a CVM with a CAM role; \
         or run `faceid-gateway serve --simulate` to try the gateway without them"
    )]
    Missing,
    /// The source asked for with `--credentials-source` has no keys.
    #[error("--credentials-source {chosen}: {reason}")]
    Unavailable {
        /// The source asked for.
        chosen: &'static str,
        /// Why it has none (names variables and files, never values).
        reason: String,
    },
    /// Temporary keys could not be obtained at start-up.
    #[error("cannot get temporary keys ({origin}): {error}")]
    Fetch {
        /// Where they were asked for: `oidc`, `cvm-role` or `role-arn`.
        origin: &'static str,
        /// What went wrong.
        #[source]
        error: FetchError,
    },
    /// A client for STS or the metadata server could not be built.
    #[error("{0}")]
    Setup(&'static str),
    /// One half of a key pair was configured.
    #[error("{present} is set but {missing} is not; set both")]
    Incomplete {
        /// The variable that is set.
        present: &'static str,
        /// The variable that is missing.
        missing: &'static str,
    },
    /// A value is empty or holds a character that is not visible ASCII
    /// (whitespace, a control character, a non-ASCII letter): it could not
    /// be sent in a header, or would fail every signature.
    #[error("{name}{} must be visible ASCII: not empty, no spaces, no control or non-ASCII characters", in_file(.file))]
    Malformed {
        /// The variable or INI key holding it.
        name: &'static str,
        /// The credentials file, when it came from one.
        file: Option<PathBuf>,
    },
    /// The credentials file could not be read.
    #[error("cannot read the credentials file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
    },
    /// The credentials file is not in the expected format.
    #[error(
        "the credentials file {} needs a [default] section with secret_id and secret_key ({reason})",
        path.display()
    )]
    FileFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong, without any value from the file.
        reason: &'static str,
    },
}

fn in_file(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|path| format!(" in {}", path.display()))
        .unwrap_or_default()
}

/// The names of the three values where they came from, for error messages.
#[derive(Debug, Clone, Copy)]
struct Names {
    secret_id: &'static str,
    secret_key: &'static str,
    token: &'static str,
}

/// The values as environment variables.
const ENV_NAMES: Names = Names {
    secret_id: ENV_SECRET_ID,
    secret_key: ENV_SECRET_KEY,
    token: ENV_SESSION_TOKEN,
};

/// The values as keys of the INI file.
const FILE_NAMES: Names = Names {
    secret_id: "secret_id",
    secret_key: "secret_key",
    token: "token",
};

/// The values as fields of STS and metadata-server answers.
const TEMPORARY_NAMES: Names = Names {
    secret_id: "TmpSecretId",
    secret_key: "TmpSecretKey",
    token: "Token",
};

/// One SecretId/SecretKey pair and, for temporary keys, its session token.
pub struct Credentials {
    secret_id: String,
    secret_key: SecretString,
    token: Option<SecretString>,
    /// When temporary keys stop working (`expired_time` in the file, or
    /// `ExpiredTime` from STS and the metadata server).
    expires_at: Option<SystemTime>,
}

impl Credentials {
    /// Checks and wraps a key pair.
    ///
    /// # Errors
    /// [`CredentialsError::Malformed`] when a value is empty or holds
    /// anything but visible ASCII (a padded copy-paste, a newline from a
    /// file, a non-ASCII letter: each would fail every call).
    pub fn new(
        secret_id: impl Into<String>,
        secret_key: impl Into<String>,
        token: Option<String>,
    ) -> Result<Self, CredentialsError> {
        Self::checked(secret_id.into(), secret_key.into(), token, FILE_NAMES, None)
    }

    /// Temporary keys as STS or the metadata server hand them out.
    fn temporary(
        secret_id: String,
        secret_key: String,
        token: String,
        expires_at: SystemTime,
    ) -> Result<Self, CredentialsError> {
        Ok(
            Self::checked(secret_id, secret_key, Some(token), TEMPORARY_NAMES, None)?
                .expiring_at(expires_at),
        )
    }

    /// [`Self::new`], naming the values as `names` (and `file`) in errors.
    fn checked(
        secret_id: String,
        secret_key: String,
        token: Option<String>,
        names: Names,
        file: Option<&Path>,
    ) -> Result<Self, CredentialsError> {
        let check = |value: &str, name| {
            if is_visible_ascii(value) {
                Ok(())
            } else {
                Err(CredentialsError::Malformed {
                    name,
                    file: file.map(Path::to_owned),
                })
            }
        };
        check(&secret_id, names.secret_id)?;
        check(&secret_key, names.secret_key)?;
        if let Some(token) = &token {
            check(token, names.token)?;
        }
        Ok(Self {
            secret_id,
            secret_key: SecretString::from(secret_key),
            token: token.map(SecretString::from),
            expires_at: None,
        })
    }

    /// The same keys, known to expire at `expires_at`.
    pub fn expiring_at(mut self, expires_at: SystemTime) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// When temporary keys expire, if known.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// Whether the keys are known to have expired at `now`.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// The SecretId (an identifier, sent in clear in `Authorization`).
    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    /// The SecretKey. Only the signer should look at it.
    pub fn secret_key(&self) -> &str {
        self.secret_key.expose_secret()
    }

    /// The session token of temporary keys.
    pub fn token(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.expose_secret())
    }

    /// A short, non-reversible fingerprint of the whole set, to tell keys
    /// apart in logs and caches without showing them.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.secret_id.as_bytes());
        hasher.update([0]);
        hasher.update(self.secret_key.expose_secret().as_bytes());
        hasher.update([0]);
        hasher.update(self.token().unwrap_or("").as_bytes());
        hex::encode(&hasher.finalize()[..6])
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("fingerprint", &self.fingerprint())
            .field("temporary", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

/// Non-empty, and every byte a visible ASCII character (`!` to `~`): what
/// an HTTP header and Tencent's signature accept.
fn is_visible_ascii(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_graphic())
}

/// Whether the keys in use work, as far as Tencent's answers and the clock
/// tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialState {
    /// No reason to doubt them.
    Usable,
    /// Tencent answered `AuthFailure.*` to several calls in a row and to
    /// none since: the keys (or their permissions) are wrong.
    Refused,
    /// The temporary keys expired and no renewal has succeeded since: calls
    /// fail at once, without being sent, until one does.
    Expired,
}

/// Refused answers in a row, with no other answer between them, after
/// which the keys count as refused (one could be a clock hiccup).
const REFUSALS_IN_A_ROW: u32 = 3;

/// Hands out the current credentials; re-reads a credentials file when it
/// changes; renews temporary keys before they expire; keeps track of
/// whether Tencent accepts them. Cheap to share (`Arc`) and to read on
/// every call.
pub struct CredentialProvider {
    source: Source,
    trust: Arc<Trust>,
    report: Arc<Report>,
}

/// Where the provider reports its keys' expiry and renewals: the source's
/// label, and the metrics once the gateway hands them over.
pub(crate) struct Report {
    /// `env`, `file`, `oidc`, `cvm-role` or `role-arn`.
    label: &'static str,
    metrics: std::sync::OnceLock<Arc<Metrics>>,
}

impl Report {
    fn new(label: &'static str) -> Arc<Self> {
        Arc::new(Self {
            label,
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// Publishes when `credentials` expire (temporary keys only).
    fn expiry(&self, credentials: &Credentials) {
        let (Some(metrics), Some(at)) = (self.metrics.get(), credentials.expires_at()) else {
            return;
        };
        let seconds = at.duration_since(UNIX_EPOCH).map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        });
        metrics
            .credentials_expiry
            .get_or_create(&CredentialLabels { source: self.label })
            .set(seconds);
    }

    /// Counts one renewal attempt.
    fn refreshed(&self, success: bool) {
        if let Some(metrics) = self.metrics.get() {
            let outcome = if success { "success" } else { "failure" };
            metrics
                .credentials_refreshes
                .get_or_create(&RefreshLabels {
                    source: self.label,
                    outcome,
                })
                .inc();
        }
    }
}

/// What Tencent's answers say of the keys in use.
struct Trust {
    /// `AuthFailure` answers since the last other answer.
    refusals_in_a_row: AtomicU32,
    state: watch::Sender<CredentialState>,
}

impl Trust {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            refusals_in_a_row: AtomicU32::new(0),
            state: watch::Sender::new(CredentialState::Usable),
        })
    }

    fn note_answer(&self, refused: bool) {
        if *self.state.borrow() == CredentialState::Expired {
            // Only a renewal ends that (an answer to keys signed just
            // before the expiry says nothing of the keys now).
            return;
        }
        if refused {
            let in_a_row = self.refusals_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
            if in_a_row >= REFUSALS_IN_A_ROW {
                self.set(CredentialState::Refused);
            }
        } else {
            self.refusals_in_a_row.store(0, Ordering::Relaxed);
            self.set(CredentialState::Usable);
        }
    }

    /// New keys get the benefit of the doubt.
    fn keys_changed(&self) {
        self.refusals_in_a_row.store(0, Ordering::Relaxed);
        self.set(CredentialState::Usable);
    }

    /// The keys in use expired without a renewal.
    fn expired(&self) {
        self.set(CredentialState::Expired);
    }

    fn is_expired(&self) -> bool {
        *self.state.borrow() == CredentialState::Expired
    }

    fn set(&self, state: CredentialState) {
        self.state.send_if_modified(|current| {
            if *current == state {
                return false;
            }
            match (*current, state) {
                (_, CredentialState::Refused) => tracing::error!(
                    "Tencent refuses the credentials (AuthFailure on every call); \
                     readiness is NOT_SERVING until a call succeeds or the keys change"
                ),
                (_, CredentialState::Expired) => tracing::error!(
                    "the temporary Tencent keys expired and could not be renewed; calls fail \
                     UNAVAILABLE (CredentialsExpired) without being sent and readiness is \
                     NOT_SERVING until a renewal succeeds"
                ),
                (CredentialState::Expired, CredentialState::Usable) => {
                    tracing::info!("temporary Tencent keys renewed; calls and readiness restored");
                }
                (_, CredentialState::Usable) => {
                    tracing::info!("Tencent accepts the credentials; readiness restored");
                }
            }
            *current = state;
            true
        });
    }
}

enum Source {
    Fixed(Arc<Credentials>),
    File(Arc<Watched<Credentials, CredentialsError>>),
    /// Temporary keys renewed in the background.
    Renewed(Arc<Refresher>),
}

impl fmt::Debug for CredentialProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialProvider")
            .field("current", &*self.current())
            .field("source", &self.report.label)
            .finish()
    }
}

impl CredentialProvider {
    /// Credentials that never change.
    pub fn fixed(credentials: Credentials) -> Self {
        Self::labelled_fixed(credentials, "env")
    }

    fn labelled_fixed(credentials: Credentials, label: &'static str) -> Self {
        Self {
            source: Source::Fixed(Arc::new(credentials)),
            trust: Trust::new(),
            report: Report::new(label),
        }
    }

    /// Temporary keys renewed by `refresher` (whose first keys are in).
    fn renewed(refresher: Refresher, trust: Arc<Trust>, report: Arc<Report>) -> Self {
        Self {
            source: Source::Renewed(Arc::new(refresher)),
            trust,
            report,
        }
    }

    /// Where the keys come from: `env`, `file`, `oidc`, `cvm-role` or
    /// `role-arn` (a metric label, never a value).
    pub fn source_label(&self) -> &'static str {
        self.report.label
    }

    /// Credentials from an INI file (`[default]` with `secret_id`,
    /// `secret_key`, and for temporary keys `token` and `expired_time`),
    /// re-read by [`Self::reload`].
    ///
    /// # Errors
    /// The file cannot be read or lacks the keys.
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, CredentialsError> {
        let path = path.into();
        let file = path.clone();
        let watched = Watched::load(
            "Tencent Cloud credentials",
            vec![path],
            |path| CredentialsError::Read {
                path: path.to_owned(),
            },
            move |contents| parse_file(&file, &contents[0]),
        )?;
        Ok(Self {
            source: Source::File(Arc::new(watched)),
            trust: Trust::new(),
            report: Report::new("file"),
        })
    }

    /// Credentials the way the gateway documents them: the key pair from
    /// `TENCENTCLOUD_SECRET_ID` / `TENCENTCLOUD_SECRET_KEY` (plus
    /// `TENCENTCLOUD_SESSION_TOKEN`), else the file named by
    /// `TENCENTCLOUD_CREDENTIALS_FILE`. `var` looks a variable up (it is
    /// `std::env::var` outside tests).
    ///
    /// # Errors
    /// Nothing is configured, only half a pair is, or the file is unusable.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, CredentialsError> {
        match env_keys(&var)? {
            Some(credentials) => Ok(Self::fixed(credentials)),
            None => match var(ENV_CREDENTIALS_FILE).filter(|v| !v.is_empty()) {
                Some(path) => Self::from_file(path),
                None => Err(CredentialsError::Missing),
            },
        }
    }

    /// Whether the keys work, and every later change of it.
    pub fn state(&self) -> watch::Receiver<CredentialState> {
        self.trust.state.subscribe()
    }

    /// Hands over the metrics the provider reports its keys' expiry and
    /// renewals to (and those of the keys it renews from).
    pub(crate) fn report_to(&self, metrics: &Arc<Metrics>) {
        let _ = self.report.metrics.set(Arc::clone(metrics));
        self.report.expiry(&self.current());
        if let Source::Renewed(refresher) = &self.source {
            // Both outcomes from the start, so a dashboard's rate() and an
            // alert on failures have a series before the first renewal.
            for outcome in ["success", "failure"] {
                drop(metrics.credentials_refreshes.get_or_create(&RefreshLabels {
                    source: self.report.label,
                    outcome,
                }));
            }
            refresher.report_to(metrics);
        }
    }

    /// Notes Tencent's verdict on the keys: `refused` for an `AuthFailure.*`
    /// answer, otherwise any answer Tencent gave (it got past
    /// authentication).
    pub(crate) fn note_answer(&self, refused: bool) {
        self.trust.note_answer(refused);
    }

    /// The credentials to sign the next call with. Never waits for a
    /// renewal.
    pub fn current(&self) -> Arc<Credentials> {
        match &self.source {
            Source::Fixed(credentials) => Arc::clone(credentials),
            Source::File(watched) => watched.current(),
            Source::Renewed(refresher) => refresher.current(),
        }
    }

    /// [`Self::current`], unless those keys have expired (no renewal
    /// succeeded in time): then nothing should be sent with them.
    ///
    /// # Errors
    /// [`KeysExpired`], with when a renewal will be tried next.
    pub(crate) fn usable(&self) -> Result<Arc<Credentials>, KeysExpired> {
        let credentials = self.current();
        if !credentials.expired_at(SystemTime::now()) {
            return Ok(credentials);
        }
        if !self.trust.is_expired() {
            self.trust.expired();
        }
        let retry_after = match &self.source {
            Source::Renewed(refresher) => refresher.next_attempt_in(),
            _ => refresh::DEFAULT_RETRY_AFTER,
        };
        Err(KeysExpired { retry_after })
    }

    /// Called when Tencent refused `used` as if the token were bad or the
    /// SecretId unknown (temporary keys that expired early, or were
    /// replaced): renews the keys now, unless that already happened, and
    /// returns the keys to retry with. `None` when there is nothing newer
    /// to try.
    pub(crate) async fn renew_after_refusal(
        &self,
        used: &Arc<Credentials>,
    ) -> Option<Arc<Credentials>> {
        match &self.source {
            Source::Fixed(_) => None,
            Source::File(_) => {
                // Maybe the file was just rewritten: read it now.
                let _ = self.reload();
                let current = self.current();
                (!Arc::ptr_eq(&current, used)).then_some(current)
            }
            Source::Renewed(refresher) => refresher.renew_after_refusal(used).await,
        }
    }

    /// Re-reads the credentials file, if there is one, and switches to its
    /// keys when its contents changed. Returns whether they changed.
    ///
    /// # Errors
    /// The file became unreadable or invalid; the previous keys stay in use.
    pub fn reload(&self) -> Result<bool, CredentialsError> {
        let changed = match &self.source {
            Source::Fixed(_) | Source::Renewed(_) => false,
            Source::File(watched) => watched.reload()?,
        };
        if changed {
            self.trust.keys_changed();
            self.report.expiry(&self.current());
        }
        Ok(changed)
    }

    /// Keeps the keys current until `shutdown`: temporary keys are renewed
    /// in the background before they expire; a credentials file is polled
    /// every `interval`, logging (without values) when keys change, the file
    /// turns bad, or temporary keys in it come within ten minutes of their
    /// expiry without a replacement.
    pub fn spawn_reloader(&self, interval: Duration, shutdown: CancellationToken) {
        let watched = match &self.source {
            Source::Fixed(_) => return,
            Source::Renewed(refresher) => {
                refresher.spawn(interval, shutdown);
                return;
            }
            Source::File(watched) => watched,
        };
        // The fingerprint of the keys last warned about, to warn once.
        let warned = Mutex::new(None::<String>);
        let trust = Arc::clone(&self.trust);
        let report = Arc::clone(&self.report);
        watched.spawn_reloader(interval, shutdown, move |current: &Credentials, changed| {
            if changed {
                trust.keys_changed();
                report.expiry(current);
            }
            if current.expired_at(SystemTime::now()) && !trust.is_expired() {
                trust.expired();
            }
            let left = current.expires_at().map(|at| {
                at.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            });
            let Some(left) = left.filter(|left| *left < EXPIRY_WARNING) else {
                return;
            };
            let fingerprint = current.fingerprint();
            let mut warned = warned
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if warned.as_deref() != Some(fingerprint.as_str()) {
                tracing::warn!(
                    seconds_left = left.as_secs(),
                    "temporary Tencent Cloud keys expire soon; replace the credentials file"
                );
                *warned = Some(fingerprint);
            }
        });
    }
}

/// The key pair of `TENCENTCLOUD_SECRET_ID` / `_KEY` (and the token of
/// `TENCENTCLOUD_SESSION_TOKEN`); `None` when neither half is set.
///
/// # Errors
/// Only one half is set, or a value is malformed.
fn env_keys(
    var: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Credentials>, CredentialsError> {
    let id = var(ENV_SECRET_ID).filter(|v| !v.is_empty());
    let key = var(ENV_SECRET_KEY).filter(|v| !v.is_empty());
    let token = var(ENV_SESSION_TOKEN).filter(|v| !v.is_empty());
    match (id, key) {
        (Some(id), Some(key)) => Ok(Some(Credentials::checked(id, key, token, ENV_NAMES, None)?)),
        (Some(_), None) => Err(CredentialsError::Incomplete {
            present: ENV_SECRET_ID,
            missing: ENV_SECRET_KEY,
        }),
        (None, Some(_)) => Err(CredentialsError::Incomplete {
            present: ENV_SECRET_KEY,
            missing: ENV_SECRET_ID,
        }),
        (None, None) => Ok(None),
    }
}

fn parse_file(path: &Path, bytes: &[u8]) -> Result<Credentials, CredentialsError> {
    let format_error = |reason| CredentialsError::FileFormat {
        path: path.to_owned(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| format_error("not UTF-8"))?;
    let ini = ini::Ini::load_from_str(text).map_err(|_| format_error("not an INI file"))?;
    let section = ini
        .section(Some(PROFILE_SECTION))
        .ok_or_else(|| format_error("no [default] section"))?;
    let id = section
        .get("secret_id")
        .ok_or_else(|| format_error("no secret_id"))?;
    let key = section
        .get("secret_key")
        .ok_or_else(|| format_error("no secret_key"))?;
    let token = section.get("token").map(str::to_owned);
    let credentials =
        Credentials::checked(id.to_owned(), key.to_owned(), token, FILE_NAMES, Some(path))?;
    match section.get("expired_time") {
        None => Ok(credentials),
        Some(seconds) => {
            let seconds: u64 = seconds
                .trim()
                .parse()
                .map_err(|_| format_error("expired_time is not Unix seconds"))?;
            Ok(credentials.expiring_at(UNIX_EPOCH + Duration::from_secs(seconds)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn env_pair_with_token() {
        let provider = CredentialProvider::from_env(env(&[
            (ENV_SECRET_ID, "AKIDtest"),
            (ENV_SECRET_KEY, "key"),
            (ENV_SESSION_TOKEN, "tok"),
        ]))
        .unwrap();
        let credentials = provider.current();
        assert_eq!(credentials.secret_id(), "AKIDtest");
        assert_eq!(credentials.secret_key(), "key");
        assert_eq!(credentials.token(), Some("tok"));
    }

    #[test]
    fn nothing_configured_says_what_to_set() {
        let error = CredentialProvider::from_env(env(&[])).unwrap_err();
        let message = error.to_string();
        assert!(message.contains(ENV_SECRET_ID) && message.contains("--simulate"));
    }

    #[test]
    fn half_a_pair_is_refused() {
        let error = CredentialProvider::from_env(env(&[(ENV_SECRET_ID, "AKID")])).unwrap_err();
        assert!(matches!(error, CredentialsError::Incomplete { .. }));
    }

    #[test]
    fn padded_keys_are_refused_without_echoing_them() {
        let error = CredentialProvider::from_env(env(&[
            (ENV_SECRET_ID, "AKID"),
            (ENV_SECRET_KEY, " padded-secret "),
        ]))
        .unwrap_err();
        assert!(!error.to_string().contains("padded-secret"));
    }

    #[test]
    fn keys_that_are_not_visible_ascii_are_refused_naming_the_variable() {
        for bad in [
            "AKID\n123",
            "AKID\r\n",
            "AKID\x01",
            "AKID\x7f",
            "AKIDé123",
            "AK ID",
            "",
        ] {
            let error =
                CredentialProvider::from_env(env(&[(ENV_SECRET_ID, bad), (ENV_SECRET_KEY, "key")]));
            // An empty variable counts as unset.
            if bad.is_empty() {
                assert!(matches!(error, Err(CredentialsError::Incomplete { .. })));
                continue;
            }
            let error = error.unwrap_err();
            assert!(error.to_string().starts_with(ENV_SECRET_ID), "{error}");
            assert!(!error.to_string().contains("AKID"), "{error}");
            let error = CredentialProvider::from_env(env(&[
                (ENV_SECRET_ID, "AKID"),
                (ENV_SECRET_KEY, bad),
            ]))
            .unwrap_err();
            assert!(error.to_string().starts_with(ENV_SECRET_KEY), "{error}");
        }
    }

    #[test]
    fn a_file_with_a_control_character_is_refused_naming_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "[default]\nsecret_id = AKID1\nsecret_key = key1\x07\n",
        )
        .unwrap();
        let error = CredentialProvider::from_file(&path)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("secret_key in "), "{error}");
        assert!(error.contains(path.to_str().unwrap()), "{error}");
        assert!(!error.contains("key1"), "{error}");
    }

    #[test]
    fn debug_shows_no_key_material() {
        let credentials =
            Credentials::new("AKIDvisible", "the-secret-key", Some("the-token".into())).unwrap();
        let text = format!("{credentials:?}");
        assert!(!text.contains("the-secret-key") && !text.contains("the-token"));
        assert!(!text.contains("AKIDvisible"));
    }

    #[test]
    fn file_is_read_and_reloaded_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(&path, "[default]\nsecret_id = AKID1\nsecret_key = key1\n").unwrap();
        let provider =
            CredentialProvider::from_env(env(&[(ENV_CREDENTIALS_FILE, path.to_str().unwrap())]))
                .unwrap();
        assert_eq!(provider.current().secret_id(), "AKID1");
        assert!(
            !provider.reload().unwrap(),
            "unchanged file is not a change"
        );

        std::fs::write(
            &path,
            "[default]\nsecret_id = AKID2\nsecret_key = key2\ntoken = t2\nexpired_time = 1893456000\n",
        )
        .unwrap();
        assert!(provider.reload().unwrap());
        assert_eq!(provider.current().secret_id(), "AKID2");
        assert_eq!(provider.current().token(), Some("t2"));
        assert_eq!(
            provider.current().expires_at(),
            Some(UNIX_EPOCH + Duration::from_secs(1_893_456_000))
        );

        std::fs::write(&path, "[other]\nsecret_id = AKID3\n").unwrap();
        assert!(provider.reload().is_err());
        assert_eq!(
            provider.current().secret_id(),
            "AKID2",
            "bad file keeps old keys"
        );
    }

    #[test]
    fn file_without_keys_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(&path, "[default]\nsecret_id = AKID1\n").unwrap();
        let error = CredentialProvider::from_file(&path).unwrap_err();
        assert!(error.to_string().contains("secret_key"));
    }
}
