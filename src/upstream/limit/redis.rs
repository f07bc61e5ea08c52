//! GCRA in Redis, so every replica shares one limit.
//!
//! The algorithm is go-redis/redis_rate's GCRA: one key holds the theoretical
//! arrival time (TAT) in microseconds, Redis `TIME` is the only clock (replica
//! clocks never matter), and a call is allowed when `TAT - burst tolerance`
//! is not in the future. As in the in-process [`super::gcra`], a caller that
//! may wait reserves the next slot: the script advances the TAT and returns
//! the wait, all in one atomic script run.
//!
//! When Redis is unreachable or slower than the timeout, each replica falls
//! back to an in-process limiter at a share of the limit (never unlimited),
//! logs the switch once and counts every fallback decision. The connection
//! manager reconnects by itself; the next successful call ends the fallback.
//!
//! Switching limiters is where a limit usually leaks: the calls made under
//! the old limiter in the last window are unknown to the new one. So each
//! switch holds the new limiter for one window first: entering fallback
//! holds the replica's fallback limiter, and the first Redis call made while
//! falling back asks the script to hold the shared TAT (`ARGV[4]`), which
//! pauses every replica until the fallback traffic has left the window.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

use super::gcra::{Gcra, Quota, Rejected};
use crate::net::redis_connection::RedisConnection;

/// `KEYS[1]`: the TAT key. `ARGV`: emission interval, burst tolerance, the
/// longest acceptable wait and a hold (no slot before now + hold), all in
/// microseconds. Returns `{1, wait}` with a reserved slot, or
/// `{0, retry_after}`.
const GCRA_SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local hold = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
if hold > 0 and tat < now + hold + tolerance then tat = now + hold + tolerance end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
if wait > max_wait then return {0, wait} end
local next_tat = tat + interval
local ttl_ms = math.ceil((next_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', ttl_ms)
return {1, wait}
";

/// Settings of the shared limiter.
#[derive(Debug, Clone)]
pub(crate) struct RedisConfig {
    /// The Redis client (`redis://` or `rediss://`, with its CA).
    pub(crate) client: redis::Client,
    /// The key holding the TAT; replicas sharing a Tencent account share it.
    pub(crate) key: String,
    /// The shared limit.
    pub(crate) quota: Quota,
    /// The in-process limit used while Redis is unreachable.
    pub(crate) fallback_quota: Quota,
    /// How long one Redis round trip may take before falling back.
    pub(crate) timeout: Duration,
    /// How long a switch between the shared and the fallback limiter holds
    /// the new one (one rate-limit window).
    pub(crate) switch_hold: Duration,
    /// Counts the fallback's decisions (a Prometheus counter).
    pub(crate) fallback_decisions: Counter,
}

/// The shared limiter with its fallback.
pub(crate) struct RedisLimiter {
    /// Replaced when the client changes (a rotated CA bundle).
    connection: RedisConnection,
    script: redis::Script,
    key: String,
    quota: Quota,
    timeout: Duration,
    switch_hold: Duration,
    fallback: Gcra,
    falling_back: AtomicBool,
    fallback_decisions: Counter,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("key", &self.key)
            .field("quota", &self.quota)
            .field("falling_back", &self.falling_back)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Prepares the limiter; connects lazily, so a Redis that is down at
    /// start-up only means starting in fallback.
    ///
    /// # Errors
    /// The URL is not a Redis URL.
    pub(crate) fn new(config: RedisConfig) -> Result<Self, redis::RedisError> {
        Ok(Self {
            connection: RedisConnection::new(config.client, config.timeout)?,
            script: redis::Script::new(GCRA_SCRIPT),
            key: config.key,
            quota: config.quota,
            timeout: config.timeout,
            switch_hold: config.switch_hold,
            fallback: Gcra::new(config.fallback_quota),
            falling_back: AtomicBool::new(false),
            fallback_decisions: config.fallback_decisions,
        })
    }

    /// Reserves a slot in the shared limit, or in the fallback limit when
    /// Redis does not answer in time.
    ///
    /// # Errors
    /// [`Rejected`] when the slot is further away than `max_wait`.
    pub(crate) async fn reserve(&self, max_wait: Duration) -> Result<Duration, Rejected> {
        let hold = if self.is_falling_back() {
            self.switch_hold
        } else {
            Duration::ZERO
        };
        let mut invocation = self.script.key(&self.key);
        invocation
            .arg(micros(self.quota.emission_interval))
            .arg(micros(self.quota.burst_tolerance))
            .arg(micros(max_wait))
            .arg(micros(hold));
        let mut connection = self.connection.current();
        let answer = tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<(i64, i64)>(&mut connection),
        )
        .await;
        match answer {
            Ok(Ok((granted, micros))) => {
                if self.falling_back.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis rate limiter reachable again; shared limit restored");
                }
                let duration = Duration::from_micros(u64::try_from(micros).unwrap_or(0));
                if granted == 1 {
                    Ok(duration)
                } else {
                    Err(Rejected {
                        retry_after: duration,
                    })
                }
            }
            Ok(Err(error)) => self.fall_back(max_wait, failure(&error)),
            Err(_) => self.fall_back(max_wait, "timed out"),
        }
    }

    /// Connects through `client` from now on (its CA bundle changed).
    ///
    /// # Errors
    /// The client's settings are unusable; the previous connection stays.
    pub(crate) fn reconnect(&self, client: redis::Client) -> Result<(), redis::RedisError> {
        self.connection.reconnect(client)
    }

    /// One round trip to Redis (`PING`) within `timeout`, to tell at
    /// start-up a refused password or certificate from a Redis that is
    /// only down.
    ///
    /// # Errors
    /// What Redis or the connection answered.
    pub(crate) async fn probe(&self, timeout: Duration) -> Result<(), Unusable> {
        let mut connection = self.connection.current();
        let ping = redis::cmd("PING");
        match tokio::time::timeout(timeout, ping.query_async::<String>(&mut connection)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(Unusable::of(&error)),
            Err(_) => Err(Unusable::Unreachable("timed out".to_owned())),
        }
    }

    fn fall_back(&self, max_wait: Duration, why: &str) -> Result<Duration, Rejected> {
        self.fallback_decisions.inc();
        if !self.falling_back.swap(true, Ordering::Relaxed) {
            self.fallback.hold(Instant::now(), self.switch_hold);
            tracing::warn!(
                reason = why,
                fallback_interval = ?self.fallback.quota().emission_interval,
                "Redis rate limiter unusable; falling back to this replica's share of the limit"
            );
        }
        self.fallback.reserve(Instant::now(), max_wait)
    }

    /// Whether the last decision came from the fallback limiter.
    pub(crate) fn is_falling_back(&self) -> bool {
        self.falling_back.load(Ordering::Relaxed)
    }
}

/// Why Redis could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// Redis refused the password (or asked for one).
    Authentication,
    /// The TLS handshake failed: Redis's certificate is not trusted, or
    /// Redis does not speak TLS there.
    Tls,
    /// Redis did not answer (down, unreachable, too slow).
    Unreachable(String),
}

impl Unusable {
    fn of(error: &redis::RedisError) -> Self {
        match failure(error) {
            AUTHENTICATION_FAILED => Self::Authentication,
            TLS_FAILED => Self::Tls,
            other => Self::Unreachable(other.to_owned()),
        }
    }
}

const AUTHENTICATION_FAILED: &str = "authentication failed";
const TLS_FAILED: &str = "TLS handshake failed";

/// A few words on why a Redis call failed, for log lines: never the URL
/// or the password.
fn failure(error: &redis::RedisError) -> &'static str {
    let refused_password = error.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("NOAUTH" | "WRONGPASS"));
    if refused_password {
        return AUTHENTICATION_FAILED;
    }
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(cause) = source {
        if cause.downcast_ref::<rustls::Error>().is_some()
            || cause.to_string().contains("certificate")
        {
            return TLS_FAILED;
        }
        source = cause.source();
    }
    if error.is_timeout() {
        "timed out"
    } else if error.is_connection_refusal() {
        "connection refused"
    } else if error.is_io_error() {
        "connection failed"
    } else {
        "unexpected answer"
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
