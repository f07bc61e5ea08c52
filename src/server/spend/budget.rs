//! Budgets: billable calls per day and per month (Beijing time), for the
//! whole gateway and per caller.
//!
//! A unit is reserved in every budget that applies before the upstream call
//! (all or none, atomically), and given back when the outcome turns out not
//! billable, so concurrent calls cannot overshoot. Counters live in a
//! [`BudgetStore`]: this process's memory ([`LocalBudgetStore`]), or Redis
//! ([`RedisBudgetStore`], one Lua script per decision) so every replica
//! shares them. Each counter's key names its period (`…:day:2026-11-30`),
//! so a new period starts from zero without anyone resetting anything.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use time::OffsetDateTime;

use crate::metrics::{BudgetLabels, Metrics};
use crate::net::redis_connection::RedisConnection;
use crate::server::error::Error;
use crate::server::spend::clock::{Clock, Period, until};

/// The share of a budget at which a warning is logged.
const WARN_AT_PERCENT: u64 = 80;
/// How long a counter outlives its period in Redis (late releases still
/// find it; then it goes).
const KEY_GRACE: Duration = Duration::from_secs(24 * 3600);
/// The `caller` label of the gateway-wide budgets (no caller name can hold
/// `*`).
pub(crate) const GATEWAY_LABEL: &str = "*";

/// A day and a month limit, either absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Billable calls per day.
    pub(crate) day: Option<u64>,
    /// Billable calls per month.
    pub(crate) month: Option<u64>,
}

impl Limits {
    fn of(self, period: Period) -> Option<u64> {
        match period {
            Period::Day => self.day,
            Period::Month => self.month,
        }
    }

    fn is_empty(self) -> bool {
        self.day.is_none() && self.month.is_none()
    }
}

/// A caller as budgets see it: its name and its own limits (from its
/// tokens-file line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Payer {
    /// The caller's name.
    pub(crate) name: Arc<str>,
    /// Its own budgets.
    pub(crate) limits: Limits,
}

/// Whose budget.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Subject {
    /// The whole gateway (every caller).
    Gateway,
    /// One caller.
    Caller(Arc<str>),
}

impl Subject {
    /// `gateway` or `caller:<name>`, as `QuotaFailure.subject` and keys
    /// write it.
    pub(crate) fn name(&self) -> String {
        match self {
            Subject::Gateway => "gateway".to_owned(),
            Subject::Caller(name) => format!("caller:{name}"),
        }
    }

    /// The `caller` label of its metrics.
    pub(crate) fn label(&self) -> String {
        match self {
            Subject::Gateway => GATEWAY_LABEL.to_owned(),
            Subject::Caller(name) => name.to_string(),
        }
    }
}

/// One counter a decision touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tally {
    /// The store key (names the subject, the period and its window).
    pub(crate) key: String,
    /// The most units it may hold.
    pub(crate) limit: u64,
    /// When the counter may go (its period's end plus a grace).
    pub(crate) expires_at: OffsetDateTime,
}

/// A store's answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reservation {
    /// A unit was taken from every counter; their counts after it.
    Granted {
        /// The counts, in the order asked.
        used: Vec<u64>,
        /// Taken from the local fallback (Redis did not answer): give it
        /// back there.
        fallback: bool,
    },
    /// Nothing was taken: the counter at `index` is full.
    Refused {
        /// The full counter's position in the order asked.
        index: usize,
        /// The counts, in the order asked.
        used: Vec<u64>,
    },
}

/// Where budget counters live.
pub(crate) trait BudgetStore: Send + Sync + 'static {
    /// Takes one unit from every counter, or none when any is full.
    fn reserve<'a>(&'a self, counters: &'a [Tally]) -> BoxFuture<'a, Reservation>;
    /// Gives one unit back to every counter; `fallback` as reserved.
    /// Returns the counts after.
    fn release<'a>(&'a self, counters: &'a [Tally], fallback: bool) -> BoxFuture<'a, Vec<u64>>;
    /// The counts of `counters`.
    fn used<'a>(&'a self, counters: &'a [Tally]) -> BoxFuture<'a, Vec<u64>>;
}

/// Counters in this process's memory.
pub(crate) struct LocalBudgetStore {
    counters: Mutex<HashMap<String, (u64, OffsetDateTime)>>,
    clock: Arc<dyn Clock>,
}

impl LocalBudgetStore {
    /// An empty store whose counters expire by `clock`.
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            counters: Mutex::new(HashMap::new()),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, OffsetDateTime)>> {
        self.counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`BudgetStore::reserve`], synchronously, with `limits` in place of
    /// the counters' own (the Redis fallback's shares).
    fn reserve_with(&self, counters: &[Tally], limits: &[u64]) -> Reservation {
        let now = self.clock.now();
        let mut map = self.lock();
        map.retain(|_, (_, expires_at)| *expires_at > now);
        let used: Vec<u64> = counters
            .iter()
            .map(|c| map.get(&c.key).map_or(0, |(used, _)| *used))
            .collect();
        if let Some(index) = used
            .iter()
            .zip(limits)
            .position(|(used, limit)| used >= limit)
        {
            return Reservation::Refused { index, used };
        }
        let used = counters
            .iter()
            .map(|c| {
                let entry = map.entry(c.key.clone()).or_insert((0, c.expires_at));
                entry.0 += 1;
                entry.0
            })
            .collect();
        Reservation::Granted {
            used,
            fallback: false,
        }
    }

    fn release_now(&self, counters: &[Tally]) -> Vec<u64> {
        let mut map = self.lock();
        counters
            .iter()
            .map(|c| match map.get_mut(&c.key) {
                Some((used, _)) => {
                    *used = used.saturating_sub(1);
                    *used
                }
                None => 0,
            })
            .collect()
    }

    fn used_now(&self, counters: &[Tally]) -> Vec<u64> {
        let map = self.lock();
        counters
            .iter()
            .map(|c| map.get(&c.key).map_or(0, |(used, _)| *used))
            .collect()
    }
}

impl BudgetStore for LocalBudgetStore {
    fn reserve<'a>(&'a self, counters: &'a [Tally]) -> BoxFuture<'a, Reservation> {
        let limits: Vec<u64> = counters.iter().map(|c| c.limit).collect();
        Box::pin(std::future::ready(self.reserve_with(counters, &limits)))
    }

    fn release<'a>(&'a self, counters: &'a [Tally], _fallback: bool) -> BoxFuture<'a, Vec<u64>> {
        Box::pin(std::future::ready(self.release_now(counters)))
    }

    fn used<'a>(&'a self, counters: &'a [Tally]) -> BoxFuture<'a, Vec<u64>> {
        Box::pin(std::future::ready(self.used_now(counters)))
    }
}

/// `KEYS`: the counters. `ARGV`: their limits, then their expiry times
/// (Unix ms). Either every counter has room and each is incremented
/// (`{1, counts…}`), or none is touched (`{0, index of the full one
/// (1-based), counts…}`).
const RESERVE_SCRIPT: &str = r"
local n = #KEYS
local used = {}
for i = 1, n do
  used[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
end
for i = 1, n do
  if used[i] >= tonumber(ARGV[i]) then
    local answer = {0, i}
    for j = 1, n do answer[j + 2] = used[j] end
    return answer
  end
end
local answer = {1}
for i = 1, n do
  answer[i + 1] = redis.call('INCR', KEYS[i])
  redis.call('PEXPIREAT', KEYS[i], ARGV[n + i])
end
return answer
";

/// `KEYS`: the counters; each above zero is decremented. Returns the
/// counts after.
const RELEASE_SCRIPT: &str = r"
local answer = {}
for i = 1, #KEYS do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used > 0 then used = redis.call('DECR', KEYS[i]) end
  answer[i] = used
end
return answer
";

/// Counters in Redis, shared by every replica; this replica's share of
/// what is left while Redis does not answer.
pub(crate) struct RedisBudgetStore {
    connection: RedisConnection,
    reserve: redis::Script,
    release: redis::Script,
    timeout: Duration,
    /// The share of the remaining budget one replica may use while Redis
    /// does not answer.
    share: f64,
    /// What Redis last said was left, per key.
    remaining: Mutex<HashMap<String, u64>>,
    /// The counts taken while falling back.
    fallback: LocalBudgetStore,
    falling_back: AtomicBool,
    fallback_decisions: Counter,
}

impl RedisBudgetStore {
    /// A store in the Redis of `client`; `timeout` per round trip; `share`
    /// of the remaining budget while Redis does not answer.
    ///
    /// # Errors
    /// The client cannot make a connection manager.
    pub(crate) fn new(
        client: redis::Client,
        timeout: Duration,
        share: f64,
        clock: Arc<dyn Clock>,
        fallback_decisions: Counter,
    ) -> Result<Self, redis::RedisError> {
        Ok(Self {
            connection: RedisConnection::new(client, timeout)?,
            reserve: redis::Script::new(RESERVE_SCRIPT),
            release: redis::Script::new(RELEASE_SCRIPT),
            timeout,
            share,
            remaining: Mutex::new(HashMap::new()),
            fallback: LocalBudgetStore::new(clock),
            falling_back: AtomicBool::new(false),
            fallback_decisions,
        })
    }

    /// Switches to a new client (a rotated CA bundle).
    ///
    /// # Errors
    /// The client cannot make a connection manager.
    pub(crate) fn reconnect(&self, client: redis::Client) -> Result<(), redis::RedisError> {
        self.connection.reconnect(client)
    }

    async fn run(&self, invocation: redis::ScriptInvocation<'_>) -> Option<Vec<u64>> {
        let mut connection = self.connection.current();
        let answer: Result<Vec<i64>, redis::RedisError> = match tokio::time::timeout(
            self.timeout,
            invocation.invoke_async(&mut connection),
        )
        .await
        {
            Ok(answer) => answer,
            Err(_) => Err(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            ))),
        };
        match answer {
            Ok(values) => {
                if self.falling_back.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again; budgets are shared again");
                }
                Some(values.into_iter().map(|v| v.max(0) as u64).collect())
            }
            Err(error) => {
                if !self.falling_back.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        kind = ?error.kind(),
                        share = self.share,
                        "Redis does not answer; this replica counts budgets itself, within its share of what was left"
                    );
                }
                None
            }
        }
    }

    fn remember(&self, counters: &[Tally], used: &[u64]) {
        let mut remaining = self
            .remaining
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (counter, used) in counters.iter().zip(used) {
            remaining.insert(counter.key.clone(), counter.limit.saturating_sub(*used));
        }
    }

    /// The counts as this replica believes them while falling back: what
    /// Redis last showed used, plus what the fallback took.
    fn fallback_view(&self, counters: &[Tally], local: &[u64]) -> Vec<u64> {
        let remaining = self
            .remaining
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        counters
            .iter()
            .zip(local)
            .map(|(c, local)| {
                let seen_used = remaining
                    .get(&c.key)
                    .map_or(0, |left| c.limit.saturating_sub(*left));
                seen_used + local
            })
            .collect()
    }
}

impl BudgetStore for RedisBudgetStore {
    fn reserve<'a>(&'a self, counters: &'a [Tally]) -> BoxFuture<'a, Reservation> {
        Box::pin(async move {
            let mut invocation = self.reserve.prepare_invoke();
            for counter in counters {
                invocation.key(&counter.key);
            }
            for counter in counters {
                invocation.arg(counter.limit);
            }
            for counter in counters {
                let expires = counter.expires_at + KEY_GRACE;
                invocation.arg((expires.unix_timestamp_nanos() / 1_000_000) as i64);
            }
            if let Some(answer) = self.run(invocation).await {
                let (granted, index, used) = match answer.split_first() {
                    Some((1, used)) => (true, 0, used.to_vec()),
                    Some((_, rest)) if !rest.is_empty() => (
                        false,
                        rest[0].saturating_sub(1) as usize,
                        rest[1..].to_vec(),
                    ),
                    _ => (false, 0, vec![0; counters.len()]),
                };
                self.remember(counters, &used);
                return if granted {
                    Reservation::Granted {
                        used,
                        fallback: false,
                    }
                } else {
                    Reservation::Refused { index, used }
                };
            }
            self.fallback_decisions.inc();
            let shares: Vec<u64> = {
                let remaining = self
                    .remaining
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                counters
                    .iter()
                    .map(|c| {
                        let left = remaining.get(&c.key).copied().unwrap_or(c.limit);
                        (left as f64 * self.share).floor() as u64
                    })
                    .collect()
            };
            match self.fallback.reserve_with(counters, &shares) {
                Reservation::Granted { used, .. } => Reservation::Granted {
                    used: self.fallback_view(counters, &used),
                    fallback: true,
                },
                Reservation::Refused { index, used } => Reservation::Refused {
                    index,
                    used: self.fallback_view(counters, &used),
                },
            }
        })
    }

    fn release<'a>(&'a self, counters: &'a [Tally], fallback: bool) -> BoxFuture<'a, Vec<u64>> {
        Box::pin(async move {
            if !fallback {
                let mut invocation = self.release.prepare_invoke();
                for counter in counters {
                    invocation.key(&counter.key);
                }
                if let Some(used) = self.run(invocation).await {
                    self.remember(counters, &used);
                    return used;
                }
                // The unit stays taken in Redis: a budget errs on the side
                // of spending less.
            }
            let local = self.fallback.release_now(counters);
            self.fallback_view(counters, &local)
        })
    }

    fn used<'a>(&'a self, counters: &'a [Tally]) -> BoxFuture<'a, Vec<u64>> {
        Box::pin(async move {
            let mut connection = self.connection.current();
            let keys: Vec<&str> = counters.iter().map(|c| c.key.as_str()).collect();
            let answer = tokio::time::timeout(
                self.timeout,
                redis::cmd("MGET")
                    .arg(&keys)
                    .query_async::<Vec<Option<u64>>>(&mut connection),
            )
            .await;
            match answer {
                Ok(Ok(values)) => {
                    let used: Vec<u64> =
                        values.into_iter().map(Option::unwrap_or_default).collect();
                    self.remember(counters, &used);
                    used
                }
                _ => {
                    let local = self.fallback.used_now(counters);
                    self.fallback_view(counters, &local)
                }
            }
        })
    }
}

/// One budget that applies to a call.
#[derive(Debug, Clone)]
struct Scope {
    subject: Subject,
    period: Period,
    resets_at: OffsetDateTime,
}

/// Units taken for one call, to give back when its outcome is not billed.
#[derive(Debug)]
pub(crate) struct Hold {
    scopes: Vec<Scope>,
    counters: Vec<Tally>,
    fallback: bool,
}

/// One budget as `GET /budgets` shows it.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub(crate) struct BudgetReport {
    /// `*` for the gateway, or the caller's name.
    pub(crate) caller: String,
    /// `day` or `month`.
    pub(crate) period: &'static str,
    /// Billable calls allowed.
    pub(crate) limit: u64,
    /// Billable calls counted (reserved included).
    pub(crate) used: u64,
    /// When the period ends, RFC 3339 in Beijing time.
    pub(crate) resets_at: String,
}

/// The gateway's budgets.
pub(crate) struct Budgets {
    gateway: Limits,
    store: Arc<dyn BudgetStore>,
    clock: Arc<dyn Clock>,
    prefix: String,
    /// Counters already warned about (their keys name the period, so a new
    /// period warns again).
    warned: Mutex<HashSet<String>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budgets")
            .field("gateway", &self.gateway)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Budgets {
    /// Budgets with the gateway-wide `gateway` limits, counted in `store`
    /// under keys starting `prefix`, periods read from `clock`.
    pub(crate) fn new(
        gateway: Limits,
        store: Arc<dyn BudgetStore>,
        clock: Arc<dyn Clock>,
        prefix: impl Into<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let budgets = Self {
            gateway,
            store,
            clock,
            prefix: prefix.into(),
            warned: Mutex::new(HashSet::new()),
            metrics,
        };
        for period in Period::ALL {
            if let Some(limit) = gateway.of(period) {
                budgets.set_limit(&Subject::Gateway, period, limit);
            }
        }
        budgets
    }

    /// The budgets that apply to `caller`, with their counters, now.
    fn scopes(&self, caller: Option<&Payer>) -> (Vec<Scope>, Vec<Tally>) {
        let mut applying: Vec<(Subject, Limits)> = Vec::new();
        if !self.gateway.is_empty() {
            applying.push((Subject::Gateway, self.gateway));
        }
        if let Some(caller) = caller
            && !caller.limits.is_empty()
        {
            applying.push((Subject::Caller(Arc::clone(&caller.name)), caller.limits));
        }
        let now = self.clock.now();
        let mut scopes = Vec::new();
        let mut counters = Vec::new();
        for (subject, limits) in applying {
            for period in Period::ALL {
                let Some(limit) = limits.of(period) else {
                    continue;
                };
                let window = period.window(now);
                counters.push(Tally {
                    key: format!(
                        "{}:{}:{}:{}",
                        self.prefix,
                        subject.name(),
                        period.as_str(),
                        window.id
                    ),
                    limit,
                    expires_at: window.resets_at,
                });
                scopes.push(Scope {
                    subject: subject.clone(),
                    period,
                    resets_at: window.resets_at,
                });
            }
        }
        (scopes, counters)
    }

    /// Takes one unit from every budget that applies to `caller`.
    ///
    /// # Errors
    /// [`Error::BudgetExhausted`] naming the first spent budget; nothing is
    /// taken then.
    pub(crate) async fn reserve(&self, caller: Option<&Payer>) -> Result<Option<Hold>, Error> {
        let (scopes, counters) = self.scopes(caller);
        if counters.is_empty() {
            return Ok(None);
        }
        match self.store.reserve(&counters).await {
            Reservation::Granted { used, fallback } => {
                self.show(&scopes, &counters, &used);
                Ok(Some(Hold {
                    scopes,
                    counters,
                    fallback,
                }))
            }
            Reservation::Refused { index, used } => {
                self.show(&scopes, &counters, &used);
                let scope = &scopes[index.min(scopes.len() - 1)];
                let counter = &counters[index.min(counters.len() - 1)];
                Err(Error::BudgetExhausted {
                    subject: scope.subject.name(),
                    period: scope.period.as_str(),
                    limit: counter.limit,
                    retry_after: until(self.clock.now(), scope.resets_at),
                })
            }
        }
    }

    /// Gives `hold`'s units back (the outcome was not billed).
    pub(crate) async fn release(&self, hold: Hold) {
        let used = self.store.release(&hold.counters, hold.fallback).await;
        self.show(&hold.scopes, &hold.counters, &used);
    }

    /// Every budget of the gateway and of `callers`, as they stand.
    pub(crate) async fn report(&self, callers: &[Payer]) -> Vec<BudgetReport> {
        let mut scopes = Vec::new();
        let mut counters = Vec::new();
        let (gateway_scopes, gateway_counters) = self.scopes(None);
        scopes.extend(gateway_scopes);
        counters.extend(gateway_counters);
        for caller in callers {
            let (caller_scopes, caller_counters) = self.scopes_of_caller(caller);
            scopes.extend(caller_scopes);
            counters.extend(caller_counters);
        }
        if counters.is_empty() {
            return Vec::new();
        }
        let used = self.store.used(&counters).await;
        self.show(&scopes, &counters, &used);
        scopes
            .iter()
            .zip(&counters)
            .zip(&used)
            .map(|((scope, counter), used)| BudgetReport {
                caller: scope.subject.label(),
                period: scope.period.as_str(),
                limit: counter.limit,
                used: *used,
                resets_at: scope
                    .resets_at
                    .to_offset(crate::server::spend::clock::BEIJING)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            })
            .collect()
    }

    fn scopes_of_caller(&self, caller: &Payer) -> (Vec<Scope>, Vec<Tally>) {
        let (scopes, counters) = self.scopes(Some(caller));
        scopes
            .into_iter()
            .zip(counters)
            .filter(|(scope, _)| scope.subject != Subject::Gateway)
            .unzip()
    }

    fn set_limit(&self, subject: &Subject, period: Period, limit: u64) {
        self.metrics
            .budget_limit
            .get_or_create(&BudgetLabels {
                caller: subject.label(),
                period: period.as_str(),
            })
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// Updates the gauges, and warns once per period past 80%.
    fn show(&self, scopes: &[Scope], counters: &[Tally], used: &[u64]) {
        for ((scope, counter), used) in scopes.iter().zip(counters).zip(used) {
            let labels = BudgetLabels {
                caller: scope.subject.label(),
                period: scope.period.as_str(),
            };
            self.metrics
                .budget_used
                .get_or_create(&labels)
                .set(i64::try_from(*used).unwrap_or(i64::MAX));
            self.set_limit(&scope.subject, scope.period, counter.limit);
            if used * 100 >= counter.limit * WARN_AT_PERCENT
                && self
                    .warned
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(counter.key.clone())
            {
                tracing::warn!(
                    budget = %scope.subject.name(),
                    period = scope.period.as_str(),
                    used,
                    limit = counter.limit,
                    "a budget has passed 80% of its limit"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::server::spend::clock::tests::ManualClock;

    fn caller(name: &str, day: Option<u64>, month: Option<u64>) -> Payer {
        Payer {
            name: Arc::from(name),
            limits: Limits { day, month },
        }
    }

    fn budgets(gateway: Limits, clock: Arc<ManualClock>) -> Budgets {
        let store = Arc::new(LocalBudgetStore::new(clock.clone()));
        Budgets::new(gateway, store, clock, "test", Arc::new(Metrics::new()))
    }

    #[tokio::test]
    async fn a_caller_gets_exactly_its_day_and_released_units_come_back() {
        let clock = Arc::new(ManualClock::at(datetime!(2026-11-30 10:00:00 UTC)));
        let budgets = budgets(Limits::default(), clock);
        let billing = caller("billing", Some(3), None);
        let mut holds = Vec::new();
        for _ in 0..3 {
            holds.push(budgets.reserve(Some(&billing)).await.unwrap().unwrap());
        }
        let Err(Error::BudgetExhausted {
            subject,
            period,
            limit,
            retry_after,
        }) = budgets.reserve(Some(&billing)).await
        else {
            panic!("the fourth unit is refused");
        };
        assert_eq!(
            (subject.as_str(), period, limit),
            ("caller:billing", "day", 3)
        );
        // 10:00 UTC is 18:00 in Beijing: six hours to midnight.
        assert_eq!(retry_after, Duration::from_secs(6 * 3600));
        budgets.release(holds.pop().unwrap()).await;
        assert!(budgets.reserve(Some(&billing)).await.is_ok());
        assert!(
            budgets
                .reserve(Some(&caller("other", Some(1), None)))
                .await
                .is_ok(),
            "other callers have their own budgets"
        );
        assert!(budgets.reserve(None).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_day_rolls_over_at_beijing_midnight_and_the_month_does_not() {
        let clock = Arc::new(ManualClock::at(datetime!(2026-11-30 15:59:00 UTC)));
        let budgets = budgets(Limits::default(), Arc::clone(&clock));
        let billing = caller("billing", Some(2), Some(3));
        budgets.reserve(Some(&billing)).await.unwrap();
        budgets.reserve(Some(&billing)).await.unwrap();
        assert!(budgets.reserve(Some(&billing)).await.is_err());
        // Midnight in Beijing: a new day (and, here, a new month).
        clock.set(datetime!(2026-11-30 16:00:00 UTC));
        assert!(budgets.reserve(Some(&billing)).await.is_ok());
        // Within one month, the month budget binds after the day resets.
        let clock = Arc::new(ManualClock::at(datetime!(2026-12-01 15:00:00 UTC)));
        let budgets = self::budgets(Limits::default(), Arc::clone(&clock));
        budgets.reserve(Some(&billing)).await.unwrap();
        budgets.reserve(Some(&billing)).await.unwrap();
        clock.set(datetime!(2026-12-01 16:00:00 UTC));
        budgets.reserve(Some(&billing)).await.unwrap();
        let Err(Error::BudgetExhausted { period, .. }) = budgets.reserve(Some(&billing)).await
        else {
            panic!("the month is spent");
        };
        assert_eq!(period, "month");
    }

    #[tokio::test]
    async fn without_redis_a_replica_gets_its_share_of_what_it_last_saw_never_more() {
        // Nothing listens on port 1: every Redis call fails at once.
        let client = redis::Client::open("redis://127.0.0.1:1/0").unwrap();
        let clock = Arc::new(ManualClock::at(datetime!(2026-11-30 10:00:00 UTC)));
        let metrics = Arc::new(Metrics::new());
        let store = RedisBudgetStore::new(
            client,
            Duration::from_millis(200),
            0.5,
            clock.clone(),
            metrics.budget_fallback_decisions.clone(),
        )
        .unwrap();
        // Redis said earlier that 6 of 10 were used: 4 left, half of it here.
        let tally = Tally {
            key: "test:caller:a:day:2026-11-30".to_owned(),
            limit: 10,
            expires_at: datetime!(2026-11-30 16:00:00 UTC),
        };
        store.remember(std::slice::from_ref(&tally), &[6]);
        let counters = [tally];
        let mut granted = 0;
        for _ in 0..5 {
            if let Reservation::Granted { used, fallback } = store.reserve(&counters).await {
                assert!(fallback);
                granted += 1;
                assert_eq!(used, vec![6 + granted]);
            }
        }
        assert_eq!(granted, 2, "half of the 4 left");
        assert_eq!(metrics.budget_fallback_decisions.get(), 5);
        // A counter Redis never showed: half of its limit.
        let fresh = [Tally {
            key: "test:caller:b:day:2026-11-30".to_owned(),
            limit: 4,
            expires_at: datetime!(2026-11-30 16:00:00 UTC),
        }];
        let mut granted = 0;
        for _ in 0..4 {
            if matches!(store.reserve(&fresh).await, Reservation::Granted { .. }) {
                granted += 1;
            }
        }
        assert_eq!(granted, 2);
    }

    #[tokio::test]
    async fn a_refusal_takes_nothing_from_the_other_budgets() {
        let clock = Arc::new(ManualClock::at(datetime!(2026-11-30 10:00:00 UTC)));
        let budgets = budgets(
            Limits {
                day: Some(2),
                month: None,
            },
            clock,
        );
        let small = caller("small", Some(1), None);
        budgets.reserve(Some(&small)).await.unwrap();
        let Err(Error::BudgetExhausted { subject, .. }) = budgets.reserve(Some(&small)).await
        else {
            panic!("the caller's day is spent");
        };
        assert_eq!(subject, "caller:small");
        // The refused call took no unit of the gateway's day.
        budgets
            .reserve(Some(&caller("big", None, None)))
            .await
            .unwrap();
        let Err(Error::BudgetExhausted { subject, .. }) = budgets.reserve(None).await else {
            panic!("the gateway's day is spent");
        };
        assert_eq!(subject, "gateway");
        let report = budgets.report(&[small]).await;
        assert_eq!(report.len(), 2);
        assert_eq!((report[0].used, report[0].limit), (2, 2));
        assert_eq!(report[1].resets_at, "2026-12-01T00:00:00+08:00");
    }
}
