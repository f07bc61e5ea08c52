//! Tencent Cloud API keys: where they come from (environment variables or the
//! SDKs' INI credentials file), how they are held (secret types that never
//! print), and how a mounted file is re-read so keys rotate without a restart.

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

/// Environment variable with the SecretId (the official SDKs' name).
pub const ENV_SECRET_ID: &str = "TENCENTCLOUD_SECRET_ID";
/// Environment variable with the SecretKey (the official SDKs' name).
pub const ENV_SECRET_KEY: &str = "TENCENTCLOUD_SECRET_KEY";
/// Environment variable with a temporary key's session token (sent as `X-TC-Token`).
pub const ENV_SESSION_TOKEN: &str = "TENCENTCLOUD_SESSION_TOKEN";
/// Environment variable with the path of an INI credentials file.
pub const ENV_CREDENTIALS_FILE: &str = "TENCENTCLOUD_CREDENTIALS_FILE";

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
         at an INI file with a [default] section holding secret_id and secret_key; \
         or run `faceid-gateway serve --simulate` to try the gateway without them"
    )]
    Missing,
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

/// One SecretId/SecretKey pair and, for temporary keys, its session token.
pub struct Credentials {
    secret_id: String,
    secret_key: SecretString,
    token: Option<SecretString>,
    /// When temporary keys stop working (`expired_time` in the file).
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

/// Whether the keys in use work, as far as Tencent's answers tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialState {
    /// No reason to doubt them.
    Usable,
    /// Tencent answered `AuthFailure.*` to several calls in a row and to
    /// none since: the keys (or their permissions) are wrong.
    Refused,
}

/// Refused answers in a row, with no other answer between them, after
/// which the keys count as refused (one could be a clock hiccup).
const REFUSALS_IN_A_ROW: u32 = 3;

/// Hands out the current credentials; re-reads a credentials file when it
/// changes; keeps track of whether Tencent accepts them. Cheap to share
/// (`Arc`) and to read on every call.
pub struct CredentialProvider {
    source: Source,
    trust: Arc<Trust>,
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

    fn set(&self, state: CredentialState) {
        self.state.send_if_modified(|current| {
            if *current == state {
                return false;
            }
            match state {
                CredentialState::Refused => tracing::error!(
                    "Tencent refuses the credentials (AuthFailure on every call); \
                     readiness is NOT_SERVING until a call succeeds or the keys change"
                ),
                CredentialState::Usable => {
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
}

impl fmt::Debug for CredentialProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialProvider")
            .field("current", &*self.current())
            .field("from_file", &matches!(self.source, Source::File(_)))
            .finish()
    }
}

impl CredentialProvider {
    /// Credentials that never change.
    pub fn fixed(credentials: Credentials) -> Self {
        Self {
            source: Source::Fixed(Arc::new(credentials)),
            trust: Trust::new(),
        }
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
        let id = var(ENV_SECRET_ID).filter(|v| !v.is_empty());
        let key = var(ENV_SECRET_KEY).filter(|v| !v.is_empty());
        let token = var(ENV_SESSION_TOKEN).filter(|v| !v.is_empty());
        match (id, key) {
            (Some(id), Some(key)) => Ok(Self::fixed(Credentials::checked(
                id, key, token, ENV_NAMES, None,
            )?)),
            (Some(_), None) => Err(CredentialsError::Incomplete {
                present: ENV_SECRET_ID,
                missing: ENV_SECRET_KEY,
            }),
            (None, Some(_)) => Err(CredentialsError::Incomplete {
                present: ENV_SECRET_KEY,
                missing: ENV_SECRET_ID,
            }),
            (None, None) => match var(ENV_CREDENTIALS_FILE).filter(|v| !v.is_empty()) {
                Some(path) => Self::from_file(path),
                None => Err(CredentialsError::Missing),
            },
        }
    }

    /// Whether the keys work, and every later change of it.
    pub fn state(&self) -> watch::Receiver<CredentialState> {
        self.trust.state.subscribe()
    }

    /// Notes Tencent's verdict on the keys: `refused` for an `AuthFailure.*`
    /// answer, otherwise any answer Tencent gave (it got past
    /// authentication).
    pub(crate) fn note_answer(&self, refused: bool) {
        self.trust.note_answer(refused);
    }

    /// The credentials to sign the next call with.
    pub fn current(&self) -> Arc<Credentials> {
        match &self.source {
            Source::Fixed(credentials) => Arc::clone(credentials),
            Source::File(watched) => watched.current(),
        }
    }

    /// Re-reads the credentials file, if there is one, and switches to its
    /// keys when its contents changed. Returns whether they changed.
    ///
    /// # Errors
    /// The file became unreadable or invalid; the previous keys stay in use.
    pub fn reload(&self) -> Result<bool, CredentialsError> {
        let changed = match &self.source {
            Source::Fixed(_) => false,
            Source::File(watched) => watched.reload()?,
        };
        if changed {
            self.trust.keys_changed();
        }
        Ok(changed)
    }

    /// Polls the credentials file every `interval` until `shutdown`, logging
    /// (without values) when keys change, the file turns bad, or temporary
    /// keys come within ten minutes of their expiry without a replacement.
    pub fn spawn_reloader(&self, interval: Duration, shutdown: CancellationToken) {
        let Source::File(watched) = &self.source else {
            return;
        };
        // The fingerprint of the keys last warned about, to warn once.
        let warned = Mutex::new(None::<String>);
        let trust = Arc::clone(&self.trust);
        watched.spawn_reloader(interval, shutdown, move |current: &Credentials, changed| {
            if changed {
                trust.keys_changed();
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
