//! Prometheus metrics (OpenMetrics text at `/metrics` on the admin port).
//!
//! Every label value comes from a closed set (method names, gRPC codes,
//! code classes, the code table's patterns, fixed failure names, caller
//! names from the tokens file, upstream endpoints from `--endpoint`), so no
//! label ever holds personal data, a
//! request id or another unbounded value; the callers choose the values,
//! this module only holds the families. It imports nothing else of the
//! crate, so every layer may report here.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a finished RPC or batch item.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RpcLabels {
    /// `VerifyIdCard`, `VerifyIdCardBatch` or `VerifyIdCardBatch.item`.
    pub(crate) method: &'static str,
    /// The caller's name from the tokens file (`anonymous` without one).
    pub(crate) caller: String,
    /// The gRPC code, e.g. `OK`, `INVALID_ARGUMENT`.
    pub(crate) code: &'static str,
}

/// Labels of an RPC method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabels {
    /// The method.
    pub(crate) method: &'static str,
}

/// Labels of one upstream outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TencentLabels {
    /// The class in the code table (`success`, `transient`, …).
    pub(crate) class: &'static str,
    /// The code's row in the table (`AuthFailure*`, `Success`), a fixed
    /// transport failure name, or `other` for codes the table lacks.
    pub(crate) code: String,
    /// The endpoint the attempt went to (`host` or `host:port`).
    pub(crate) endpoint: String,
}

/// Labels of an upstream endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EndpointLabels {
    /// `host` or `host:port`, one of `--endpoint`.
    pub(crate) endpoint: String,
}

/// Labels of a retry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ClassLabels {
    /// The class of the failure that was retried.
    pub(crate) class: &'static str,
}

/// Labels of a listening port's connections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PortLabels {
    /// `grpc` or `admin`.
    pub(crate) port: &'static str,
}

/// Labels of connections the gateway closed itself.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ClosedLabels {
    /// `grpc` or `admin`.
    pub(crate) port: &'static str,
    /// `handshake_timeout` or `idle`.
    pub(crate) reason: &'static str,
}

/// Labels of a caller's spend.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CallerLabels {
    /// The caller's name from the tokens file (`anonymous` without one).
    pub(crate) caller: String,
}

/// Labels of an upstream outcome by caller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    /// The caller's name from the tokens file (`anonymous` without one).
    pub(crate) caller: String,
    /// The outcome's row in the code table, a fixed failure name, or
    /// `other`.
    pub(crate) result: String,
}

/// Labels of a budget.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BudgetLabels {
    /// The caller's name, or `*` for the gateway-wide budget.
    pub(crate) caller: String,
    /// `day` or `month`.
    pub(crate) period: &'static str,
}

/// Labels of the Tencent keys in use.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CredentialLabels {
    /// Where they come from: `env`, `file`, `oidc`, `cvm-role` or `role-arn`.
    pub(crate) source: &'static str,
}

/// Labels of one attempt to renew temporary keys.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefreshLabels {
    /// Where the keys come from (see [`CredentialLabels`]).
    pub(crate) source: &'static str,
    /// `success` or `failure`.
    pub(crate) outcome: &'static str,
}

/// Every metric the gateway exports.
pub(crate) struct Metrics {
    registry: Registry,
    /// RPCs by method and gRPC code.
    pub(crate) rpcs: Family<RpcLabels, Counter>,
    /// RPC latency by method.
    pub(crate) rpc_seconds: Family<MethodLabels, Histogram>,
    /// Upstream attempts by the class and code of their outcome, per endpoint.
    pub(crate) tencent_responses: Family<TencentLabels, Counter>,
    /// Upstream attempt latency, per endpoint.
    pub(crate) attempt_seconds: Family<EndpointLabels, Histogram>,
    /// 1 while an endpoint takes traffic, 0 while it is ejected.
    pub(crate) endpoint_up: Family<EndpointLabels, Gauge>,
    /// Ejections of an endpoint by outlier detection.
    pub(crate) ejections: Family<EndpointLabels, Counter>,
    /// Upstream attempts in flight.
    pub(crate) upstream_in_flight: Gauge,
    /// Retries by the class of the failure retried.
    pub(crate) retries: Family<ClassLabels, Counter>,
    /// Time spent waiting for a rate-limit slot.
    pub(crate) rate_limit_wait_seconds: Histogram,
    /// Calls refused because no slot came in time.
    pub(crate) rate_limit_rejections: Counter,
    /// Decisions made by the local fallback while Redis was unreachable.
    pub(crate) rate_limit_fallbacks: Counter,
    /// The configured limit, calls per second.
    pub(crate) rate_limit_configured: Gauge,
    /// Calls sent upstream in the last rate-limit window (refreshed per scrape).
    pub(crate) upstream_rate_observed: Gauge,
    /// Batch items in flight, all streams.
    pub(crate) batch_items_in_flight: Gauge,
    /// Panics caught in calls (each answered `INTERNAL` `GatewayPanic`).
    pub(crate) panics: Counter,
    /// Connections accepted, by port.
    pub(crate) connections_accepted: Family<PortLabels, Counter>,
    /// Connections refused at accept (the cap was reached), by port.
    pub(crate) connections_refused: Family<PortLabels, Counter>,
    /// Connections the gateway closed (no handshake in time, idle), by port.
    pub(crate) connections_closed: Family<ClosedLabels, Counter>,
    /// Connections open now, by port.
    pub(crate) connections_open: Family<PortLabels, Gauge>,
    /// Upstream outcomes Tencent bills, by caller.
    pub(crate) billable_calls: Family<CallerLabels, Counter>,
    /// Upstream outcomes by caller and result.
    pub(crate) calls_by_result: Family<ResultLabels, Counter>,
    /// Billable calls counted against each budget in its current period.
    pub(crate) budget_used: Family<BudgetLabels, Gauge>,
    /// Each budget's limit.
    pub(crate) budget_limit: Family<BudgetLabels, Gauge>,
    /// Budget decisions taken locally while Redis was unreachable.
    pub(crate) budget_fallback_decisions: Counter,
    /// Answers replayed for a repeated idempotency key, by caller.
    pub(crate) idempotent_replays: Family<CallerLabels, Counter>,
    /// Idempotency entries evicted from the in-memory cache to stay within
    /// its size.
    pub(crate) idempotency_evictions: Counter,
    /// Bytes held by the in-memory idempotency cache.
    pub(crate) idempotency_cache_bytes: Gauge,
    /// When the keys in use expire (Unix seconds), by source; temporary
    /// keys only.
    pub(crate) credentials_expiry: Family<CredentialLabels, Gauge>,
    /// Attempts to renew temporary keys (STS, the metadata server), by
    /// source and outcome.
    pub(crate) credentials_refreshes: Family<RefreshLabels, Counter>,
    /// Reads the upstream calls sent in the last window, at each scrape.
    upstream_rate_source: OnceLock<RateSource>,
}

/// Counts the upstream calls sent in the last rate-limit window.
type RateSource = Box<dyn Fn() -> usize + Send + Sync>;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics in its own registry.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("faceid");
        let rpcs = Family::<RpcLabels, Counter>::default();
        registry.register(
            "rpcs",
            "gRPC calls (and batch items) by method and code",
            rpcs.clone(),
        );
        let rpc_seconds = Family::<MethodLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "rpc_duration_seconds",
            "gRPC call latency by method",
            rpc_seconds.clone(),
        );
        let tencent_responses = Family::<TencentLabels, Counter>::default();
        registry.register(
            "tencent_responses",
            "Upstream attempt outcomes by code class, code table row and endpoint",
            tencent_responses.clone(),
        );
        let attempt_seconds = Family::<EndpointLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "upstream_attempt_duration_seconds",
            "Latency of one upstream attempt, by endpoint",
            attempt_seconds.clone(),
        );
        let endpoint_up = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "upstream_endpoint_up",
            "1 while an upstream endpoint takes traffic, 0 while outlier detection ejects it",
            endpoint_up.clone(),
        );
        let ejections = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "upstream_ejections",
            "Ejections of an upstream endpoint by outlier detection",
            ejections.clone(),
        );
        let upstream_in_flight = Gauge::default();
        registry.register(
            "upstream_in_flight",
            "Upstream attempts in flight",
            upstream_in_flight.clone(),
        );
        let retries = Family::<ClassLabels, Counter>::default();
        registry.register(
            "upstream_retries",
            "Upstream retries by failure class",
            retries.clone(),
        );
        // The only classes ever retried: present at zero from the start, so
        // a dashboard's rate() has a series before the first retry.
        for class in ["transient", "rate_limited"] {
            drop(retries.get_or_create(&ClassLabels { class }));
        }
        let rate_limit_wait_seconds = Histogram::new([
            0.0, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        registry.register(
            "rate_limit_wait_seconds",
            "Time calls waited for an upstream rate-limit slot",
            rate_limit_wait_seconds.clone(),
        );
        let rate_limit_rejections = Counter::default();
        registry.register(
            "rate_limit_rejections",
            "Calls refused because no rate-limit slot came within their wait",
            rate_limit_rejections.clone(),
        );
        let rate_limit_fallbacks = Counter::default();
        registry.register(
            "rate_limit_fallback_decisions",
            "Rate-limit decisions taken by the local fallback while Redis was unreachable",
            rate_limit_fallbacks.clone(),
        );
        let rate_limit_configured = Gauge::default();
        registry.register(
            "upstream_rate_limit",
            "Configured upstream calls per second",
            rate_limit_configured.clone(),
        );
        let upstream_rate_observed = Gauge::default();
        registry.register(
            "upstream_rate_observed",
            "Upstream calls sent in the last rate-limit window (about one second)",
            upstream_rate_observed.clone(),
        );
        let batch_items_in_flight = Gauge::default();
        registry.register(
            "batch_items_in_flight",
            "Batch items in flight, all streams",
            batch_items_in_flight.clone(),
        );
        let panics = Counter::default();
        registry.register(
            "panics",
            "Panics caught in calls and batch items, each answered INTERNAL (reason GatewayPanic)",
            panics.clone(),
        );
        let connections_accepted = Family::<PortLabels, Counter>::default();
        registry.register(
            "connections_accepted",
            "Connections accepted, by port",
            connections_accepted.clone(),
        );
        let connections_refused = Family::<PortLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections refused at accept because --max-connections were open, by port",
            connections_refused.clone(),
        );
        let connections_closed = Family::<ClosedLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections the gateway closed itself (no handshake in time, idle), by port and reason",
            connections_closed.clone(),
        );
        let connections_open = Family::<PortLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Connections open now, by port",
            connections_open.clone(),
        );
        let billable_calls = Family::<CallerLabels, Counter>::default();
        registry.register(
            "billable_calls",
            "Upstream outcomes Tencent bills (its billing table or --billable-results), by caller",
            billable_calls.clone(),
        );
        let calls_by_result = Family::<ResultLabels, Counter>::default();
        registry.register(
            "calls_by_result",
            "Upstream outcomes by caller and result (code table row, failure name, or other)",
            calls_by_result.clone(),
        );
        let budget_used = Family::<BudgetLabels, Gauge>::default();
        registry.register(
            "budget_used",
            "Billable calls counted against a budget in its current period (caller * = gateway-wide)",
            budget_used.clone(),
        );
        let budget_limit = Family::<BudgetLabels, Gauge>::default();
        registry.register(
            "budget_limit",
            "Billable calls a budget allows per period (caller * = gateway-wide)",
            budget_limit.clone(),
        );
        let budget_fallback_decisions = Counter::default();
        registry.register(
            "budget_fallback_decisions",
            "Budget decisions taken by this replica alone while Redis was unreachable",
            budget_fallback_decisions.clone(),
        );
        let idempotent_replays = Family::<CallerLabels, Counter>::default();
        registry.register(
            "idempotent_replays",
            "Answers replayed for a repeated idempotency key (no upstream call), by caller",
            idempotent_replays.clone(),
        );
        let idempotency_evictions = Counter::default();
        registry.register(
            "idempotency_evictions",
            "Idempotency entries evicted from the in-memory cache (--idempotency-cache-size)",
            idempotency_evictions.clone(),
        );
        let idempotency_cache_bytes = Gauge::default();
        registry.register(
            "idempotency_cache_bytes",
            "Bytes held by the in-memory idempotency cache",
            idempotency_cache_bytes.clone(),
        );
        let credentials_expiry = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "credentials_expiry_timestamp_seconds",
            "When the temporary Tencent keys in use expire (Unix seconds), by source",
            credentials_expiry.clone(),
        );
        let credentials_refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "credentials_refresh",
            "Attempts to renew temporary Tencent keys, by source and outcome",
            credentials_refreshes.clone(),
        );
        Self {
            registry,
            rpcs,
            rpc_seconds,
            tencent_responses,
            attempt_seconds,
            endpoint_up,
            ejections,
            upstream_in_flight,
            retries,
            rate_limit_wait_seconds,
            rate_limit_rejections,
            rate_limit_fallbacks,
            rate_limit_configured,
            upstream_rate_observed,
            batch_items_in_flight,
            panics,
            connections_accepted,
            connections_refused,
            connections_closed,
            connections_open,
            billable_calls,
            calls_by_result,
            budget_used,
            budget_limit,
            budget_fallback_decisions,
            idempotent_replays,
            idempotency_evictions,
            idempotency_cache_bytes,
            credentials_expiry,
            credentials_refreshes,
            upstream_rate_source: OnceLock::new(),
        }
    }

    /// Records a finished RPC (or batch item) with the canonical name of
    /// its gRPC code (`OK`, `INVALID_ARGUMENT`, …).
    pub(crate) fn rpc_finished(
        &self,
        method: &'static str,
        caller: &str,
        code: &'static str,
        elapsed: Duration,
    ) {
        self.rpcs
            .get_or_create(&RpcLabels {
                method,
                caller: caller.to_owned(),
                code,
            })
            .inc();
        self.rpc_seconds
            .get_or_create(&MethodLabels { method })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one upstream attempt's outcome: the class of its code and
    /// the code's row in the table (or the transport failure's name), and
    /// the endpoint it went to.
    pub(crate) fn attempt_finished(
        &self,
        class: &'static str,
        row: &str,
        endpoint: &str,
        elapsed: Duration,
    ) {
        self.tencent_responses
            .get_or_create(&TencentLabels {
                class,
                code: row.to_owned(),
                endpoint: endpoint.to_owned(),
            })
            .inc();
        self.attempt_seconds
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Lets scrapes report the upstream rate counted by `source`.
    pub(crate) fn observe_upstream_rate(&self, source: impl Fn() -> usize + Send + Sync + 'static) {
        let _ = self.upstream_rate_source.set(Box::new(source));
    }

    /// The OpenMetrics text of every metric.
    pub(crate) fn encode(&self) -> String {
        if let Some(source) = self.upstream_rate_source.get() {
            self.upstream_rate_observed
                .set(i64::try_from(source()).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_has_every_family_and_the_labels_given() {
        let metrics = Metrics::new();
        metrics.attempt_finished(
            "gateway_setup",
            "AuthFailure*",
            "faceid.tencentcloudapi.com",
            Duration::ZERO,
        );
        metrics.rpc_finished(
            "VerifyIdCard",
            "billing",
            "INVALID_ARGUMENT",
            Duration::from_millis(3),
        );
        metrics.observe_upstream_rate(|| 42);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"faceid_tencent_responses_total{class="gateway_setup",code="AuthFailure*",endpoint="faceid.tencentcloudapi.com"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"faceid_rpcs_total{method="VerifyIdCard",caller="billing",code="INVALID_ARGUMENT"} 1"#
        ));
        assert!(text.contains("faceid_upstream_rate_observed 42"), "{text}");
        assert!(
            text.contains(r#"faceid_upstream_retries_total{class="transient"} 0"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
