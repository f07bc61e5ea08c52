//! Renewing temporary keys before they expire, in the background, one
//! renewal at a time. Calls keep the current keys and never wait for a
//! renewal while those are valid; only a call Tencent refused as if the
//! keys were stale waits for (at most) one renewal, then retries with the
//! new keys.
//!
//! A renewal is due when a tenth of the keys' lifetime is left, and at
//! least 5 s before the expiry, but never before half the lifetime has
//! passed (keys that live only seconds, as in tests). A failed renewal is
//! retried with exponential backoff (250 ms doubling to 10 s, jittered)
//! until one succeeds; if the keys expire first, the state turns
//! [`CredentialState::Expired`](super::CredentialState::Expired) until then.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::metadata::Metadata;
use super::sts::{AssumeRole, FetchError, Sts, WebIdentity};
use super::{CredentialProvider, Credentials, Report, STALE_KEY_CODES, Trust};
use crate::metrics::Metrics;

/// The `RetryInfo` delay of calls refused for expired keys when no renewal
/// attempt is scheduled.
pub(crate) const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Renew at least this long before the expiry (when the lifetime allows).
const MIN_MARGIN: Duration = Duration::from_secs(5);
/// The backoff after the first failed renewal; it doubles per failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest backoff between two renewal attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The longest the background task sleeps before looking at the clock
/// again (the wall clock can jump; the timers do not follow it).
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Attempts at start-up before giving up on a source that fails.
const START_ATTEMPTS: u32 = 3;
/// At most one renewal per this interval because Tencent refused the keys
/// (a burst of refused calls renews once; keys Tencent keeps refusing do
/// not turn every call into an STS call).
const MIN_REFUSAL_RENEWAL_GAP: Duration = Duration::from_secs(1);

/// The keys in use expired and no renewal has succeeded since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeysExpired {
    /// When a renewal will be tried next (at least a second).
    pub(crate) retry_after: Duration,
}

/// Where new temporary keys come from.
pub(super) enum Fetch {
    /// TKE pod identity: STS `AssumeRoleWithWebIdentity`.
    WebIdentity {
        /// STS.
        sts: Sts,
        /// The role, provider and token file.
        request: WebIdentity,
    },
    /// `--role-arn`: STS `AssumeRole`, signed with `base`'s keys.
    AssumeRole {
        /// STS.
        sts: Sts,
        /// The role.
        request: AssumeRole,
        /// The keys that sign the request (themselves kept current).
        base: Arc<CredentialProvider>,
    },
    /// The CVM instance's role, from the metadata server.
    CvmRole(Metadata),
}

impl Fetch {
    async fn fetch(&self) -> Result<Credentials, FetchError> {
        match self {
            Fetch::WebIdentity { sts, request } => sts.assume_role_with_web_identity(request).await,
            Fetch::AssumeRole { sts, request, base } => {
                let keys = base.usable().map_err(|_| FetchError::BaseExpired)?;
                let result = sts.assume_role(&keys, request).await;
                // Temporary base keys STS calls stale: renew them, once.
                if let Err(FetchError::Api { code, .. }) = &result
                    && keys.token().is_some()
                    && STALE_KEY_CODES.contains(&code.as_str())
                    && let Some(renewed) = renew_base(base, &keys).await
                {
                    return sts.assume_role(&renewed, request).await;
                }
                result
            }
            Fetch::CvmRole(metadata) => metadata.fetch().await,
        }
    }
}

/// `base.renew_after_refusal`, boxed: the base may itself be renewed by a
/// [`Fetch`], and an async call cycle needs a box to have a size.
fn renew_base<'a>(
    base: &'a CredentialProvider,
    keys: &'a Arc<Credentials>,
) -> std::pin::Pin<Box<dyn Future<Output = Option<Arc<Credentials>>> + Send + 'a>> {
    Box::pin(base.renew_after_refusal(keys))
}

/// The keys in use and when they were fetched (their lifetime starts
/// there, by this machine's clock).
struct Held {
    credentials: Arc<Credentials>,
    fetched: SystemTime,
}

/// Holds temporary keys and renews them.
pub(super) struct Refresher {
    fetch: Fetch,
    held: RwLock<Held>,
    /// One renewal at a time.
    renewing: tokio::sync::Mutex<()>,
    /// Wakes the background task when keys were renewed elsewhere.
    renewed: Notify,
    /// Unix milliseconds of the next attempt after a failure (0: none).
    next_attempt_ms: AtomicU64,
    /// Unix milliseconds of the last renewal Tencent's refusal asked for.
    last_refusal_renewal_ms: AtomicU64,
    spawned: AtomicBool,
    trust: Arc<Trust>,
    report: Arc<Report>,
}

impl Refresher {
    /// Fetches the first keys (a few attempts for transient failures).
    ///
    /// # Errors
    /// The source still fails after the attempts, or fails for good.
    pub(super) async fn start(
        fetch: Fetch,
        trust: Arc<Trust>,
        report: Arc<Report>,
    ) -> Result<Self, FetchError> {
        let mut attempt = 1;
        let (credentials, fetched) = loop {
            let started = SystemTime::now();
            match fetch.fetch().await {
                Ok(credentials) => break (credentials, started),
                Err(error) if attempt < START_ATTEMPTS && error.is_transient() => {
                    tracing::warn!(
                        source = report.label,
                        attempt,
                        error = %error,
                        "cannot get temporary Tencent keys yet; trying again"
                    );
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        };
        Ok(Self {
            fetch,
            held: RwLock::new(Held {
                credentials: Arc::new(credentials),
                fetched,
            }),
            renewing: tokio::sync::Mutex::new(()),
            renewed: Notify::new(),
            next_attempt_ms: AtomicU64::new(0),
            last_refusal_renewal_ms: AtomicU64::new(0),
            spawned: AtomicBool::new(false),
            trust,
            report,
        })
    }

    /// The keys in use: a read-lock clone of an `Arc`.
    pub(super) fn current(&self) -> Arc<Credentials> {
        Arc::clone(&self.read().credentials)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Held> {
        self.held
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long until the next renewal attempt, for `RetryInfo`.
    pub(super) fn next_attempt_in(&self) -> Duration {
        let at = self.next_attempt_ms.load(Ordering::Relaxed);
        let now = unix_ms(SystemTime::now());
        Duration::from_millis(at.saturating_sub(now))
            .max(DEFAULT_RETRY_AFTER)
            .min(MAX_BACKOFF)
    }

    /// Hands `metrics` to the keys this renews from, too.
    pub(super) fn report_to(&self, metrics: &Arc<Metrics>) {
        if let Fetch::AssumeRole { base, .. } = &self.fetch {
            base.report_to(metrics);
        }
    }

    /// Starts renewing in the background until `shutdown` (once; later
    /// calls do nothing), and keeps the keys this renews from current.
    pub(super) fn spawn(self: &Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        if self.spawned.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Fetch::AssumeRole { base, .. } = &self.fetch {
            base.spawn_reloader(interval, shutdown.clone());
        }
        tokio::spawn(Arc::clone(self).run(shutdown));
    }

    /// Renews now because Tencent refused `used` as stale, unless newer
    /// keys are already in (then returns those) or such a renewal happened
    /// less than [`MIN_REFUSAL_RENEWAL_GAP`] ago.
    pub(super) async fn renew_after_refusal(
        &self,
        used: &Arc<Credentials>,
    ) -> Option<Arc<Credentials>> {
        let result = self
            .renew(|held, now| {
                let now_ms = unix_ms(now);
                let last = self.last_refusal_renewal_ms.load(Ordering::Relaxed);
                let gap = u64::try_from(MIN_REFUSAL_RENEWAL_GAP.as_millis()).unwrap_or(u64::MAX);
                let due =
                    Arc::ptr_eq(&held.credentials, used) && now_ms.saturating_sub(last) >= gap;
                if due {
                    // Checked and set under the renewal lock: one at a time.
                    self.last_refusal_renewal_ms
                        .store(now_ms, Ordering::Relaxed);
                }
                due
            })
            .await;
        match result {
            Ok(credentials) if !Arc::ptr_eq(&credentials, used) => Some(credentials),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(
                    source = self.report.label,
                    error = %error,
                    "renewing refused temporary Tencent keys failed"
                );
                None
            }
        }
    }

    /// Renews the keys when `needed` (checked once this holds the renewal
    /// lock, so concurrent callers renew once); returns the keys in use
    /// after it.
    async fn renew(
        &self,
        needed: impl Fn(&Held, SystemTime) -> bool,
    ) -> Result<Arc<Credentials>, FetchError> {
        let _one_at_a_time = self.renewing.lock().await;
        {
            let held = self.read();
            if !needed(&held, SystemTime::now()) {
                return Ok(Arc::clone(&held.credentials));
            }
        }
        let started = SystemTime::now();
        let result = self.fetch.fetch().await;
        self.report.refreshed(result.is_ok());
        match result {
            Ok(credentials) => {
                let credentials = Arc::new(credentials);
                *self
                    .held
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Held {
                    credentials: Arc::clone(&credentials),
                    fetched: started,
                };
                self.next_attempt_ms.store(0, Ordering::Relaxed);
                self.report.expiry(&credentials);
                self.trust.keys_changed();
                self.renewed.notify_waiters();
                tracing::info!(
                    source = self.report.label,
                    seconds_left = seconds_left(&credentials),
                    "temporary Tencent keys renewed"
                );
                Ok(credentials)
            }
            Err(error) => {
                if self.current().expired_at(SystemTime::now()) {
                    self.trust.expired();
                }
                Err(error)
            }
        }
    }

    /// The background task: sleeps until a renewal is due, renews, and
    /// retries failures with backoff, until `shutdown`.
    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let now = SystemTime::now();
            let (due, expires) = {
                let held = self.read();
                let expires = held.credentials.expires_at().unwrap_or(now);
                (renewal_due(held.fetched, expires), expires)
            };
            let wait = if failures == 0 {
                due.duration_since(now).unwrap_or(Duration::ZERO)
            } else {
                // Wake at the expiry too, so the state turns on time.
                let backoff = backoff(failures);
                match expires.duration_since(now) {
                    Ok(left) if !left.is_zero() => backoff.min(left),
                    _ => backoff,
                }
            };
            if failures > 0 {
                self.next_attempt_ms
                    .store(unix_ms(now + wait), Ordering::Relaxed);
            }
            if !wait.is_zero() {
                let renewed = self.renewed.notified();
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = renewed => {
                        failures = 0;
                        continue;
                    }
                    () = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
                }
                if failures == 0 && wait > MAX_SLEEP {
                    continue;
                }
            }
            let retrying = failures > 0;
            let result = self
                .renew(|held, now| {
                    retrying
                        || now
                            >= renewal_due(
                                held.fetched,
                                held.credentials.expires_at().unwrap_or(now),
                            )
                })
                .await;
            match result {
                Ok(_) => failures = 0,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(
                        source = self.report.label,
                        error = %error,
                        failures,
                        seconds_left = seconds_left(&self.current()),
                        "renewing temporary Tencent keys failed; retrying with backoff"
                    );
                }
            }
        }
    }
}

/// When keys fetched at `fetched` and expiring at `expires` are due for
/// renewal: a tenth of their lifetime before the expiry, at least
/// [`MIN_MARGIN`] before, but not before half their lifetime.
fn renewal_due(fetched: SystemTime, expires: SystemTime) -> SystemTime {
    let lifetime = expires.duration_since(fetched).unwrap_or(Duration::ZERO);
    let margin = (lifetime / 10).max(MIN_MARGIN).min(lifetime / 2);
    expires - margin
}

/// The backoff after `failures` failures: doubling from [`FIRST_BACKOFF`]
/// to [`MAX_BACKOFF`], then a random 50% to 100% of it (replicas that
/// failed together do not retry together).
fn backoff(failures: u32) -> Duration {
    let ceiling = FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    ceiling.mul_f64(rand::rng().random_range(0.5..=1.0))
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

/// Whole seconds until `credentials` expire, for log lines.
fn seconds_left(credentials: &Credentials) -> u64 {
    credentials
        .expires_at()
        .and_then(|at| at.duration_since(SystemTime::now()).ok())
        .map_or(0, |left| left.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn long_lived_keys_are_renewed_when_a_tenth_of_their_life_is_left() {
        // Two hours: 12 minutes before the expiry.
        assert_eq!(renewal_due(at(0), at(7200)), at(7200 - 720));
    }

    #[test]
    fn the_margin_is_at_least_five_seconds() {
        // 30 s keys: a tenth is 3 s, so 5 s before.
        assert_eq!(renewal_due(at(0), at(30)), at(25));
    }

    #[test]
    fn keys_that_live_seconds_are_renewed_at_half_life() {
        assert_eq!(renewal_due(at(0), at(4)), at(2));
        // Already expired: due at once.
        assert!(renewal_due(at(10), at(5)) <= at(5));
    }

    #[test]
    fn backoff_doubles_to_a_ceiling_with_jitter() {
        for (failures, ceiling) in [(1, 250), (2, 500), (3, 1000), (10, 10_000), (40, 10_000)] {
            let delay = backoff(failures);
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                delay <= ceiling && delay >= ceiling / 2,
                "{failures}: {delay:?}"
            );
        }
    }
}
