//! Spend control: what each caller costs, caps on it, and never paying
//! twice for one verification.
//!
//! - [`billing`]: which outcomes Tencent bills (its table, or
//!   `--billable-results`), counted per caller;
//! - [`budget`]: billable calls per day and month (Beijing time), per caller
//!   and gateway-wide, in memory or in Redis;
//! - [`idempotency`]: the same request under the same `idempotency-key`
//!   gets the first answer without a second upstream call;
//! - [`clock`]: the calendar, injectable for tests.
//!
//! [`Spend`] is what a verification goes through (see
//! `server::verifier`): idempotency first, then the budget reservation,
//! the upstream call, and the settlement (release when not billed).

pub(crate) mod billing;
pub(crate) mod budget;
pub(crate) mod clock;
pub(crate) mod idempotency;

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{CallerLabels, Metrics, ResultLabels};
use crate::proto::VerifyIdCardResponse;
use crate::server::error::Error;
use billing::{Billed, Billing};
use budget::{BudgetReport, Budgets, Hold, Limits, LocalBudgetStore, Payer};
use clock::SystemClock;
use idempotency::{Idempotency, LocalIdempotencyStore};

/// The default of `--idempotency-ttl`.
pub(crate) const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// The default of `--idempotency-cache-size`, bytes.
pub(crate) const DEFAULT_IDEMPOTENCY_CACHE_BYTES: usize = 256 * 1024 * 1024;

/// A store kept in Redis, which follows a rotated CA bundle.
pub(crate) trait Reconnect: Send + Sync {
    /// Switches to `client` for new connections.
    ///
    /// # Errors
    /// The client cannot make a connection manager.
    fn reconnect(&self, client: redis::Client) -> Result<(), redis::RedisError>;
}

impl Reconnect for budget::RedisBudgetStore {
    fn reconnect(&self, client: redis::Client) -> Result<(), redis::RedisError> {
        budget::RedisBudgetStore::reconnect(self, client)
    }
}

impl Reconnect for idempotency::RedisIdempotencyStore {
    fn reconnect(&self, client: redis::Client) -> Result<(), redis::RedisError> {
        idempotency::RedisIdempotencyStore::reconnect(self, client)
    }
}

/// Billing, budgets and idempotency, shared by every verification.
pub(crate) struct Spend {
    billing: Billing,
    budgets: Budgets,
    idempotency: Idempotency,
    metrics: Arc<Metrics>,
    /// The stores kept in Redis, if any.
    redis_stores: Vec<Arc<dyn Reconnect>>,
}

impl std::fmt::Debug for Spend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spend")
            .field("billing", &self.billing)
            .field("budgets", &self.budgets)
            .field("idempotency", &self.idempotency)
            .finish()
    }
}

impl Spend {
    /// Spend control from its parts.
    pub(crate) fn new(
        billing: Billing,
        budgets: Budgets,
        idempotency: Idempotency,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            billing,
            budgets,
            idempotency,
            metrics,
            redis_stores: Vec::new(),
        }
    }

    /// Remembers `stores` as kept in Redis, for [`Spend::reconnect`].
    pub(crate) fn with_redis_stores(mut self, stores: Vec<Arc<dyn Reconnect>>) -> Self {
        self.redis_stores = stores;
        self
    }

    /// Switches the Redis stores to `client` (a rotated CA bundle).
    ///
    /// # Errors
    /// The client cannot make a connection manager.
    pub(crate) fn reconnect(&self, client: &redis::Client) -> Result<(), redis::RedisError> {
        for store in &self.redis_stores {
            store.reconnect(client.clone())?;
        }
        Ok(())
    }

    /// Tencent's billing table, no budgets, idempotency in memory.
    pub(crate) fn in_memory(metrics: Arc<Metrics>) -> Self {
        let clock = Arc::new(SystemClock);
        Self::new(
            Billing::default(),
            Budgets::new(
                Limits::default(),
                Arc::new(LocalBudgetStore::new(clock.clone())),
                clock,
                "faceid-gateway:budget",
                Arc::clone(&metrics),
            ),
            Idempotency::new(
                Arc::new(LocalIdempotencyStore::new(
                    DEFAULT_IDEMPOTENCY_CACHE_BYTES,
                    &metrics,
                )),
                DEFAULT_IDEMPOTENCY_TTL,
                Arc::clone(&metrics),
            ),
            metrics,
        )
    }

    /// Idempotency.
    pub(crate) fn idempotency(&self) -> &Idempotency {
        &self.idempotency
    }

    /// Takes a unit of every budget that applies to `caller`.
    ///
    /// # Errors
    /// [`Error::BudgetExhausted`] when one is spent.
    pub(crate) async fn reserve(&self, caller: Option<&Payer>) -> Result<Option<Hold>, Error> {
        self.budgets.reserve(caller).await
    }

    /// Gives an unused reservation back (nothing was sent).
    pub(crate) async fn cancel(&self, hold: Option<Hold>) {
        if let Some(hold) = hold {
            self.budgets.release(hold).await;
        }
    }

    /// Counts an upstream outcome for `caller` and gives the reservation
    /// back when the outcome was not billed.
    pub(crate) async fn settle(
        &self,
        caller: &str,
        result: &Result<VerifyIdCardResponse, Error>,
        hold: Option<Hold>,
    ) {
        self.metrics
            .calls_by_result
            .get_or_create(&ResultLabels {
                caller: caller.to_owned(),
                result: billing::result_label(result),
            })
            .inc();
        match self.billing.billed(result) {
            Billed::Yes => {
                self.metrics
                    .billable_calls
                    .get_or_create(&CallerLabels {
                        caller: caller.to_owned(),
                    })
                    .inc();
            }
            Billed::No => self.cancel(hold).await,
            // It may have been billed: the unit stays spent.
            Billed::Unknown => {}
        }
    }

    /// Every budget of the gateway and of `callers`.
    pub(crate) async fn report(&self, callers: &[Payer]) -> Vec<BudgetReport> {
        self.budgets.report(callers).await
    }
}
