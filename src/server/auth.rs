//! Who may call: bearer tokens checked against a file of SHA-256 hashes
//! (never the tokens themselves), re-read when it changes, and each caller's
//! share of the upstream limit.
//!
//! The file has one caller per line, `#` starts a comment:
//!
//! ```text
//! # name        sha256(token), hex                                           options
//! billing       9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 quota=20 budget_day=5000
//! onboarding    60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752 budget_month=20000
//! ```
//!
//! Options: `quota=N` (upstream calls per second), `budget_day=N` and
//! `budget_month=N` (billable calls per day and month, Beijing time; see
//! `server::spend`).
//!
//! `faceid-gateway token --name NAME [--quota N] [--budget-day N]
//! [--budget-month N]` makes a token and its line.
//! Names are letters, digits, `-`, `_` and `.`; they label spans, log lines
//! and metrics, so they must not be personal data.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tower::{Layer, Service};

use crate::config::watch::Watched;
use crate::metrics::Metrics;
use crate::server::error::{Error, Refusal};
use crate::server::observe::{self, Refused};
use crate::server::spend::budget::{Limits, Payer};
use crate::upstream::limit::{Gcra, Quota};

/// The prefix of tokens `faceid-gateway token` makes.
const TOKEN_PREFIX: &str = "fgw_";
/// The longest caller name.
const MAX_NAME_LEN: usize = 64;

/// An authenticated caller, put in each request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The name from the tokens file.
    pub(crate) name: Arc<str>,
    /// Calls per second this caller may make upstream, if capped.
    pub(crate) quota: Option<u32>,
    /// Billable calls this caller may make per day and per month.
    pub(crate) budgets: Limits,
}

impl Caller {
    /// The caller as budgets see it.
    pub(crate) fn payer(&self) -> Payer {
        Payer {
            name: Arc::clone(&self.name),
            limits: self.budgets,
        }
    }
}

/// How telemetry names the caller of a call: its name, or `anonymous`
/// when authentication is off.
pub(crate) fn caller_name(caller: Option<&Caller>) -> &str {
    caller.map_or("anonymous", |caller| &caller.name)
}

/// One line of the tokens file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    caller: Caller,
    hash: [u8; 32],
}

/// Why a tokens file was refused. Messages name lines, never their content.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokensFileError {
    /// The file could not be read.
    #[error("cannot read the tokens file {0}")]
    Read(PathBuf),
    /// A line is malformed.
    #[error("tokens file line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Parses a tokens file.
///
/// # Errors
/// The first malformed line: a bad name, a hash that is not 64 hex
/// characters, an unknown option, or a repeated name or hash.
pub(crate) fn parse_tokens(text: &str) -> Result<Vec<(Caller, [u8; 32])>, TokensFileError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let fail = |reason| TokensFileError::Line { line, reason };
        let content = raw.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let mut words = content.split_whitespace();
        let name = words.next().ok_or_else(|| fail("missing name"))?;
        if !is_valid_name(name) {
            return Err(fail(
                "the name must be 1-64 letters, digits, '-', '_' or '.'",
            ));
        }
        let hex_hash = words
            .next()
            .ok_or_else(|| fail("missing the token's SHA-256"))?;
        let mut hash = [0u8; 32];
        hex::decode_to_slice(hex_hash, &mut hash)
            .map_err(|_| fail("the token's SHA-256 must be 64 hex characters"))?;
        let mut quota = None;
        let mut budgets = Limits::default();
        for option in words {
            let (name, value) = option.split_once('=').ok_or_else(|| {
                fail("unknown option (only quota=N, budget_day=N, budget_month=N)")
            })?;
            match name {
                "quota" => {
                    let calls: u32 = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        fail("quota must be a positive number of calls per second")
                    })?;
                    quota = Some(calls);
                }
                "budget_day" | "budget_month" => {
                    let calls: u64 = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        fail("a budget must be a positive number of billable calls")
                    })?;
                    if name == "budget_day" {
                        budgets.day = Some(calls);
                    } else {
                        budgets.month = Some(calls);
                    }
                }
                _ => {
                    return Err(fail(
                        "unknown option (only quota=N, budget_day=N, budget_month=N)",
                    ));
                }
            }
        }
        if entries.iter().any(|e| &*e.caller.name == name) {
            return Err(fail("repeats a caller name"));
        }
        if entries.iter().any(|e| e.hash == hash) {
            return Err(fail("repeats a token"));
        }
        entries.push(Entry {
            caller: Caller {
                name: Arc::from(name),
                quota,
                budgets,
            },
            hash,
        });
    }
    Ok(entries.into_iter().map(|e| (e.caller, e.hash)).collect())
}

/// Whether `name` may name a caller: it labels spans, log lines and
/// metrics, so only a short run of safe characters.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Why `faceid-gateway token` could not make a token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NewTokenError {
    /// The caller name is not usable.
    #[error(
        "--name must be 1-64 letters, digits, '-', '_' or '.' (it labels logs, spans and metrics)"
    )]
    InvalidName,
    /// The OS random generator failed.
    #[error("the operating system's random generator failed")]
    Random,
}

/// A new random token and its tokens-file line.
///
/// # Errors
/// [`NewTokenError`] when the name is not usable or no randomness is
/// available.
pub fn new_token(name: &str, quota: Option<u32>) -> Result<(String, String), NewTokenError> {
    new_token_with_budgets(name, quota, None, None)
}

/// [`new_token`] with per-caller budgets: billable calls per day and per
/// month (Beijing time).
///
/// # Errors
/// [`NewTokenError`] when the name is not usable or no randomness is
/// available.
pub fn new_token_with_budgets(
    name: &str,
    quota: Option<u32>,
    budget_day: Option<u64>,
    budget_month: Option<u64>,
) -> Result<(String, String), NewTokenError> {
    if !is_valid_name(name) {
        return Err(NewTokenError::InvalidName);
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|_| NewTokenError::Random)?;
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    );
    let mut line = format!("{name} {}", hex::encode(Sha256::digest(token.as_bytes())));
    if let Some(quota) = quota {
        line.push_str(&format!(" quota={quota}"));
    }
    if let Some(day) = budget_day {
        line.push_str(&format!(" budget_day={day}"));
    }
    if let Some(month) = budget_month {
        line.push_str(&format!(" budget_month={month}"));
    }
    debug_assert!(parse_tokens(&line).is_ok(), "a made line parses");
    Ok((token, line))
}

/// Checks bearer tokens against the tokens file, re-reading it when it
/// changes.
#[derive(Debug)]
pub(crate) struct Authenticator {
    tokens: Arc<Watched<Vec<Entry>, TokensFileError>>,
}

impl Authenticator {
    /// Loads the tokens file.
    ///
    /// # Errors
    /// The file cannot be read or parsed.
    pub(crate) fn load(path: impl Into<PathBuf>) -> Result<Self, TokensFileError> {
        let tokens = Watched::load(
            "caller tokens",
            vec![path.into()],
            |path| TokensFileError::Read(path.to_owned()),
            |contents| {
                let text =
                    std::str::from_utf8(&contents[0]).map_err(|_| TokensFileError::Line {
                        line: 0,
                        reason: "the file is not UTF-8",
                    })?;
                Ok(parse_tokens(text)?
                    .into_iter()
                    .map(|(caller, hash)| Entry { caller, hash })
                    .collect())
            },
        )?;
        Ok(Self {
            tokens: Arc::new(tokens),
        })
    }

    /// The caller holding `token`, compared with every entry in constant
    /// time (no early exit on a match, no timing hint of which entry).
    pub(crate) fn identify(&self, token: &str) -> Option<Caller> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for entry in self.tokens.current().iter() {
            if bool::from(entry.hash.ct_eq(&presented)) {
                found = Some(entry.caller.clone());
            }
        }
        found
    }

    /// Every caller of the current file.
    pub(crate) fn callers(&self) -> Vec<Caller> {
        self.tokens
            .current()
            .iter()
            .map(|entry| entry.caller.clone())
            .collect()
    }

    /// The caller named by an `authorization` header value.
    ///
    /// # Errors
    /// [`Refusal`] when the header is missing, not a bearer token, or
    /// unknown.
    pub(crate) fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, Refusal> {
        let token = authorization
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or(Refusal::Missing)?;
        self.identify(token).ok_or(Refusal::Unknown)
    }

    #[cfg(test)]
    /// Re-reads the file and switches to it when it changed (the reloader
    /// does this on its interval; tests call it directly).
    ///
    /// # Errors
    /// The file became unreadable or invalid; the previous tokens stay.
    pub(crate) fn reload(&self) -> Result<bool, TokensFileError> {
        self.tokens.reload()
    }

    /// Polls the file every `interval` until `shutdown`.
    pub(crate) fn spawn_reloader(&self, interval: Duration, shutdown: CancellationToken) {
        self.tokens.spawn_reloader(interval, shutdown, |_, _| {});
    }
}

/// Per-caller shares of the upstream limit: one in-process GCRA per caller
/// with a `quota`, refusing at once (no waiting) when the share is used up.
#[derive(Debug, Default)]
pub(crate) struct CallerQuotas {
    limiters: Mutex<HashMap<Arc<str>, Share>>,
}

/// One caller's quota and the limiter enforcing it.
type Share = (u32, Arc<Gcra>);

impl CallerQuotas {
    /// Takes one call from `caller`'s share.
    ///
    /// # Errors
    /// [`Error::CallerQuota`] when the share is used up.
    pub(crate) fn check(&self, caller: Option<&Caller>) -> Result<(), Error> {
        let Some((caller, quota)) = caller.and_then(|c| c.quota.map(|q| (c, q))) else {
            return Ok(());
        };
        let limiter = {
            let mut limiters = self
                .limiters
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let entry = limiters
                .entry(Arc::clone(&caller.name))
                .or_insert_with(|| (quota, Arc::new(Gcra::new(caller_quota(quota)))));
            if entry.0 != quota {
                // The tokens file changed this caller's quota.
                *entry = (quota, Arc::new(Gcra::new(caller_quota(quota))));
            }
            Arc::clone(&entry.1)
        };
        limiter
            .reserve(Instant::now(), Duration::ZERO)
            .map(|_| ())
            .map_err(|rejected| Error::CallerQuota {
                caller: Arc::clone(&caller.name),
                quota,
                retry_after: rejected.retry_after,
            })
    }
}

/// A caller's share: `quota` calls per second, a second's worth in a burst.
fn caller_quota(quota: u32) -> Quota {
    Quota::new(quota, Duration::from_secs(1), quota.saturating_sub(1))
}

/// What a call asks for, as authentication sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    /// Health checks: always open.
    Health,
    /// Server reflection: open with `--auth-allow-reflection`, otherwise
    /// the full descriptors need a token and callers without one see the
    /// health service only (so `grpcurl … grpc.health.v1.Health/Check`
    /// works without a token).
    Reflection,
    /// Everything else: a token is required.
    Guarded,
}

fn door(path: &str) -> Door {
    if path.starts_with("/grpc.health.v1.Health/") {
        Door::Health
    } else if path.starts_with("/grpc.reflection.") {
        Door::Reflection
    } else {
        Door::Guarded
    }
}

/// Checks the bearer token of every call (health stays open, reflection as
/// [`Door::Reflection`] says) and puts the [`Caller`] in the request
/// extensions. Without an authenticator every call passes, with no caller.
#[derive(Debug, Clone)]
pub(crate) struct AuthLayer {
    authenticator: Option<Arc<Authenticator>>,
    allow_reflection: bool,
    /// Health and reflection of the health service only, for callers
    /// without a token.
    open: Routes,
    metrics: Arc<Metrics>,
}

impl AuthLayer {
    /// Authentication with `authenticator` (none: off); reflection open
    /// when `allow_reflection`; `open` answers reflection without a token;
    /// refusals are counted in `metrics`.
    pub(crate) fn new(
        authenticator: Option<Arc<Authenticator>>,
        allow_reflection: bool,
        open: Routes,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            authenticator,
            allow_reflection,
            open,
            metrics,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Debug, Clone)]
pub(crate) struct Auth<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B> Service<http::Request<B>> for Auth<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(authenticator) = &self.layer.authenticator {
            let door = door(request.uri().path());
            let open =
                door == Door::Health || (door == Door::Reflection && self.layer.allow_reflection);
            if !open {
                let header = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok());
                match (authenticator.authenticate(header), door) {
                    (Ok(caller), _) => {
                        request.extensions_mut().insert(caller);
                    }
                    (Err(_), Door::Reflection) => {
                        let mut open = self.layer.open.clone();
                        return Box::pin(async move { open.call(request).await });
                    }
                    (Err(refusal), _) => {
                        let error = Error::Unauthenticated(refusal);
                        // Our RPCs are reported like every call; any other
                        // path only gets the refusal.
                        let answer = match observe::rpc_of(request.uri().path()) {
                            Some(rpc) => {
                                Refused::of(rpc, Arc::from(caller_name(None)), request.headers())
                                    .answer(error, &self.layer.metrics)
                            }
                            None => tonic::Status::from(error).into_http(),
                        };
                        return Box::pin(async move { Ok(answer) });
                    }
                }
            }
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(text: &str) -> (tempfile::TempDir, Authenticator) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, text).unwrap();
        let authenticator = Authenticator::load(&path).unwrap();
        (dir, authenticator)
    }

    #[test]
    fn a_made_token_authenticates_and_only_its_hash_is_stored() {
        let (token, line) = new_token("billing", Some(20)).unwrap();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() > 40);
        assert!(!line.contains(&token));
        let (_dir, auth) = authenticator(&format!("# callers\n{line}\n"));
        let caller = auth.authenticate(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(&*caller.name, "billing");
        assert_eq!(caller.quota, Some(20));
        assert_eq!(
            auth.authenticate(Some(&format!("bearer  {token} ")))
                .unwrap()
                .name,
            caller.name
        );
    }

    #[test]
    fn budgets_on_a_line_reach_the_caller() {
        let (token, line) = new_token_with_budgets("batch", Some(2), Some(5), Some(100)).unwrap();
        assert!(
            line.ends_with(" quota=2 budget_day=5 budget_month=100"),
            "{line}"
        );
        let (_dir, auth) = authenticator(&line);
        let caller = auth.identify(&token).unwrap();
        assert_eq!(
            caller.budgets,
            Limits {
                day: Some(5),
                month: Some(100)
            }
        );
        assert_eq!(auth.callers(), vec![caller]);
    }

    #[test]
    fn a_token_for_an_unusable_name_is_refused_as_a_name_problem() {
        for name in ["bad name", "", "名字", &"a".repeat(65)] {
            let error = new_token(name, None).unwrap_err();
            assert_eq!(error, NewTokenError::InvalidName);
            assert!(!error.to_string().contains("tokens file"), "{error}");
        }
    }

    #[test]
    fn missing_malformed_and_unknown_tokens_are_refused() {
        let (_token, line) = new_token("a", None).unwrap();
        let (_dir, auth) = authenticator(&line);
        assert_eq!(auth.authenticate(None), Err(Refusal::Missing));
        assert_eq!(auth.authenticate(Some("Basic abc")), Err(Refusal::Missing));
        assert_eq!(auth.authenticate(Some("Bearer ")), Err(Refusal::Missing));
        assert_eq!(
            auth.authenticate(Some("Bearer fgw_nope")),
            Err(Refusal::Unknown)
        );
    }

    #[test]
    fn a_changed_file_takes_effect_on_reload_and_a_bad_one_is_ignored() {
        let (old, old_line) = new_token("a", None).unwrap();
        let (new, new_line) = new_token("b", None).unwrap();
        let (dir, auth) = authenticator(&old_line);
        let path = dir.path().join("tokens");
        assert!(!auth.reload().unwrap());
        std::fs::write(&path, &new_line).unwrap();
        assert!(auth.reload().unwrap());
        assert!(auth.identify(&old).is_none());
        assert_eq!(&*auth.identify(&new).unwrap().name, "b");
        std::fs::write(&path, "b not-a-hash").unwrap();
        assert!(auth.reload().is_err());
        assert!(auth.identify(&new).is_some(), "the previous tokens stay");
    }

    #[test]
    fn bad_lines_are_reported_by_number_without_their_content() {
        let hash = "a".repeat(64);
        for (text, line) in [
            ("bad name! ".to_owned() + &hash, 1),
            ("ok\n".to_owned(), 1),
            (format!("a {hash}\nb deadbeef"), 2),
            (format!("a {hash} color=red"), 1),
            (format!("a {hash} quota=0"), 1),
            (format!("a {hash} budget_day=0"), 1),
            (format!("a {hash} budget_month=x"), 1),
            (format!("a {hash} budget_week=3"), 1),
            (format!("a {hash}\na {}", "b".repeat(64)), 2),
            (format!("a {hash}\nb {hash}"), 2),
        ] {
            let error = parse_tokens(&text).unwrap_err();
            assert!(
                matches!(error, TokensFileError::Line { line: l, .. } if l == line),
                "{text}: {error}"
            );
            assert!(!error.to_string().contains(&hash));
        }
        assert_eq!(parse_tokens("# only comments\n\n").unwrap(), vec![]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_callers_share_refuses_beyond_its_quota_and_others_go_on() {
        let quotas = CallerQuotas::default();
        let greedy = Caller {
            name: Arc::from("greedy"),
            quota: Some(5),
            budgets: Limits::default(),
        };
        let other = Caller {
            name: Arc::from("other"),
            quota: Some(5),
            budgets: Limits::default(),
        };
        let allowed = (0..20)
            .filter(|_| quotas.check(Some(&greedy)).is_ok())
            .count();
        assert_eq!(allowed, 5, "a second's worth in a burst");
        assert!(matches!(
            quotas.check(Some(&greedy)),
            Err(Error::CallerQuota { .. })
        ));
        assert!(quotas.check(Some(&other)).is_ok());
        assert!(quotas.check(None).is_ok(), "no caller (auth off): no quota");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(quotas.check(Some(&greedy)).is_ok(), "the share refills");
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn the_parser_never_panics(text in any::<String>()) {
                let _ = parse_tokens(&text);
            }

            #[test]
            fn the_parser_never_panics_on_line_shaped_input(
                lines in proptest::collection::vec("[a-z._-]{0,70}( [0-9a-fA-F]{0,70})?( (quota|budget_day|budget_month)=[0-9a-z]{0,12})*( #.*)?", 0..8)
            ) {
                let _ = parse_tokens(&lines.join("\n"));
            }
        }
    }
}
