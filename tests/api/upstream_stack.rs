//! The shared upstream stack end to end: retries only where safe, deadlines
//! honoured, and the rate limit held across callers and replicas.

use std::time::{Duration, Instant};

use faceid_gateway::proto::Verdict;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{
    Options, metric, request_with, spawn_app_with, spawn_gateway, spawn_simulator, start_redis,
    within,
};

fn flags(list: &[&str]) -> Options {
    Options {
        flags: list.iter().map(|s| (*s).to_owned()).collect(),
        ..Options::default()
    }
}

#[tokio::test]
async fn a_transient_failure_is_retried_and_the_call_succeeds() {
    let mut app = spawn_app_with(flags(&["--retry-base-delay", "10ms"])).await;

    let answer = app
        .client
        .verify_id_card(request_with(
            "key=retry-once,fail-first=1,error=InternalError",
        ))
        .await
        .expect("the second attempt succeeds")
        .into_inner();

    assert_eq!(answer.verdict(), Verdict::Match);
    let stats = app.upstream_stats();
    assert_eq!(stats.received, 2);
    assert_eq!(
        (stats.count("InternalError"), stats.count("Success")),
        (1, 1)
    );
}

#[tokio::test]
async fn transport_faults_are_retried_too() {
    let mut app = spawn_app_with(flags(&["--retry-base-delay", "10ms"])).await;

    let reset = app
        .client
        .verify_id_card(request_with("key=reset-once,fail-first=1,fault=reset"))
        .await;
    let http = app
        .client
        .verify_id_card(request_with("key=503-twice,fail-first=2,http=503"))
        .await;

    assert_eq!(reset.unwrap().into_inner().verdict(), Verdict::Match);
    assert_eq!(http.unwrap().into_inner().verdict(), Verdict::Match);
    assert_eq!(app.upstream_stats().received, 2 + 3);
}

#[tokio::test]
async fn retries_stop_at_max_attempts() {
    let mut app =
        spawn_app_with(flags(&["--retry-base-delay", "5ms", "--max-attempts", "4"])).await;

    let status = app
        .client
        .verify_id_card(request_with("error=ServiceUnavailable"))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(app.upstream_stats().received, 4);
}

#[tokio::test]
async fn unsafe_outcomes_are_sent_exactly_once() {
    let mut app = spawn_app_with(flags(&["--retry-base-delay", "5ms"])).await;
    let once = [
        "error=AuthFailure.SignatureFailure",
        "error=FailedOperation.RequestLimitExceeded",
        "error=FailedOperation.ImageDecodeFailed",
        "error=UnauthorizedOperation.Arrears",
        "result=FailedOperation.IdNameMisMatch",
        "error=SomeBrandNewCode",
    ];
    for (i, directives) in once.iter().enumerate() {
        let _ = app.client.verify_id_card(request_with(directives)).await;
        assert_eq!(
            app.upstream_stats().received,
            i as u64 + 1,
            "{directives} was retried"
        );
    }
}

#[tokio::test]
async fn a_deadline_too_short_for_a_retry_ends_the_call_at_once() {
    // With full jitter a backoff is anywhere in [0, ceiling]. A ceiling of
    // 1000 h makes one that fits in the 5 s deadline practically impossible
    // (p < 2e-6), so any retry would overrun the deadline.
    let mut app = spawn_app_with(flags(&[
        "--retry-base-delay",
        "1000h",
        "--retry-max-delay",
        "1000h",
    ]))
    .await;
    let mut request = tonic::Request::new(request_with("error=InternalError,delay=100"));
    request.set_timeout(Duration::from_secs(5));
    let started = Instant::now();

    let status = app.client.verify_id_card(request).await.unwrap_err();

    let took = started.elapsed();
    // The upstream's own failure (not the deadline) ends the call, after
    // its one attempt, long before the 5 s deadline it would have waited out.
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.get_details_error_info().expect("ErrorInfo").reason,
        "InternalError"
    );
    assert_eq!(app.upstream_stats().received, 1, "no retry was attempted");
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

#[tokio::test]
async fn the_callers_deadline_bounds_a_slow_upstream_attempt() {
    let mut app = spawn_app_with(Options::default()).await;
    let mut request = tonic::Request::new(request_with("delay=10000"));
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();

    let status = app.client.verify_id_card(request).await.unwrap_err();

    let took = started.elapsed();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    // The caller did not wait for the 10 s attempt: the upstream has not
    // answered yet, and the call ended long before it would have.
    assert_eq!(app.upstream_stats().count("Success"), 0);
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn a_call_that_cannot_get_a_slot_in_time_fails_fast_with_retry_info() {
    let mut app = spawn_app_with(flags(&["--rate-limit", "1", "--retry-base-delay", "5ms"])).await;
    app.client.verify_id_card(request_with("")).await.unwrap();
    // The next slot is over 500 ms away (RetryInfo below says so), so a
    // 500 ms deadline cannot get it: waiting into the deadline would take
    // 500 ms, while failing at once takes one round trip.
    let mut request = tonic::Request::new(request_with(""));
    request.set_timeout(Duration::from_millis(500));
    let started = Instant::now();

    let status = app.client.verify_id_card(request).await.unwrap_err();

    let took = started.elapsed();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        took < Duration::from_millis(400),
        "failed fast, not at the 500 ms deadline: {took:?}"
    );
    assert_eq!(
        metric(app.admin_addr, "faceid_rate_limit_rejections_total").await,
        1,
        "the limiter refused the call (no deadline ran out)"
    );
    let retry = status.get_details_retry_info().expect("RetryInfo");
    let delay = retry.retry_delay.expect("a delay");
    assert!(
        delay > Duration::from_millis(500) && delay <= Duration::from_millis(1010),
        "{delay:?}"
    );
    let info = status.get_details_error_info().unwrap();
    assert_eq!(
        info.metadata.get("checked_by").map(String::as_str),
        Some("gateway")
    );
    assert_eq!(
        app.upstream_stats().received,
        1,
        "the refused call never went upstream"
    );
}

/// Offers `per_second` calls a second for `for_how_long`: that many
/// callers, each wanting one call a second (staggered, and waiting for its
/// previous call first); returns (ok, rate-limited) counts.
async fn load(
    client: &faceid_gateway::proto::id_card_verification_service_client::IdCardVerificationServiceClient<
        tonic::transport::Channel,
    >,
    per_second: usize,
    for_how_long: Duration,
) -> (u64, u64) {
    let start = tokio::time::Instant::now();
    let until = start + for_how_long;
    let tasks: Vec<_> = (0..per_second)
        .map(|i| {
            let mut client = client.clone();
            let offset = Duration::from_secs(1) * i as u32 / per_second as u32;
            tokio::spawn(async move {
                let (mut ok, mut limited) = (0u64, 0u64);
                let mut ticks = tokio::time::interval_at(start + offset, Duration::from_secs(1));
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    if ticks.tick().await >= until {
                        break;
                    }
                    let call = client.verify_id_card(request_with(""));
                    match within("a call under load", Duration::from_secs(10), call).await {
                        Ok(_) => ok += 1,
                        Err(status) if status.code() == Code::ResourceExhausted => limited += 1,
                        Err(status) => panic!("unexpected {status:?}"),
                    }
                }
                (ok, limited)
            })
        })
        .collect();
    let mut totals = (0, 0);
    for task in tasks {
        let (ok, limited) = task.await.unwrap();
        totals.0 += ok;
        totals.1 += limited;
    }
    totals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_times_the_limit_from_many_callers_stays_within_it() {
    const LIMIT: u32 = 40;
    let simulator = spawn_simulator(LIMIT).await;
    let gateway = spawn_gateway(
        &simulator,
        flags(&[
            "--rate-limit",
            &LIMIT.to_string(),
            "--rate-limit-max-wait",
            "1s",
        ]),
    )
    .await;

    // 3× the limit offered: 80 unary callers each wanting one call a
    // second, and a batch stream of 120 items at once.
    let mut batch_client = gateway.client.clone();
    let batch = tokio::spawn(async move {
        let items: Vec<_> = (0..120)
            .map(|i| faceid_gateway::proto::VerifyIdCardBatchRequest {
                item_id: format!("b{i}"),
                request: Some(request_with("")),
            })
            .collect();
        let mut stream = batch_client
            .verify_id_card_batch(tokio_stream::iter(items))
            .await
            .unwrap()
            .into_inner();
        let mut answered = 0;
        within("the batch stream to end", Duration::from_secs(30), async {
            while stream.message().await.unwrap().is_some() {
                answered += 1;
            }
        })
        .await;
        answered
    });
    let _ = load(&gateway.client, 2 * LIMIT as usize, Duration::from_secs(3)).await;
    assert_eq!(batch.await.unwrap(), 120, "every batch item answered");

    let stats = simulator.stats();
    assert_eq!(stats.count("RequestLimitExceeded"), 0, "{stats:?}");
    assert!(stats.max_in_any_second <= u64::from(LIMIT), "{stats:?}");
    let sustained = (stats.count("Success") - 1) as f64 / stats.span_seconds;
    assert!(
        sustained >= 0.95 * f64::from(LIMIT),
        "sustained {sustained:.1}/s: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_stay_within_one_limit_and_survive_its_loss() {
    const LIMIT: u32 = 40;
    let mut redis = start_redis().await;
    let simulator = spawn_simulator(LIMIT).await;
    let shared = |redis_url: &str| {
        flags(&[
            "--rate-limit",
            &LIMIT.to_string(),
            "--rate-limit-redis",
            redis_url,
            "--rate-limit-redis-key",
            "tests:two-gateways",
            "--rate-limit-max-wait",
            "1s",
            "--rate-limit-redis-timeout",
            "100ms",
        ])
    };
    let first = spawn_gateway(&simulator, shared(&redis.url)).await;
    let second = spawn_gateway(&simulator, shared(&redis.url)).await;

    // Both loaded, together 3× the shared limit.
    let (a, b) = tokio::join!(
        load(&first.client, 60, Duration::from_secs(3)),
        load(&second.client, 60, Duration::from_secs(3)),
    );
    let together = simulator.stats();
    assert!(a.0 > 0 && b.0 > 0, "both gateways served: {a:?} {b:?}");
    assert_eq!(together.count("RequestLimitExceeded"), 0, "{together:?}");
    assert!(
        together.max_in_any_second <= u64::from(LIMIT),
        "{together:?}"
    );
    let sustained = (together.count("Success") - 1) as f64 / together.span_seconds;
    assert!(
        sustained >= 0.95 * f64::from(LIMIT),
        "sustained {sustained:.1}/s: {together:?}"
    );

    // Redis dies: each gateway goes on alone at a quarter of the limit.
    redis.kill();
    simulator.reset_stats();
    let (a, b) = tokio::join!(
        load(&first.client, 20, Duration::from_secs(3)),
        load(&second.client, 20, Duration::from_secs(3)),
    );
    let fallback = simulator.stats();
    assert!(
        a.0 > 0 && b.0 > 0,
        "both gateways kept serving: {a:?} {b:?}"
    );
    assert_eq!(fallback.count("RequestLimitExceeded"), 0, "{fallback:?}");
    // Two replicas × 10/s, with one second of slack for the phase edges.
    assert!(
        fallback.max_in_any_second <= 2 * u64::from(LIMIT / 4),
        "{fallback:?}"
    );
    assert!(
        fallback.count("Success") <= 2 * u64::from(LIMIT / 4) * 4,
        "{fallback:?}"
    );

    // Redis comes back: the gateways reconnect by themselves and share the
    // limit again (the fallback makes no more decisions).
    redis
        .restart()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let _ = tokio::join!(
        load(&first.client, 40, Duration::from_secs(2)),
        load(&second.client, 40, Duration::from_secs(2)),
    );
    simulator.reset_stats();
    let before = [
        fallback_decisions(&first).await,
        fallback_decisions(&second).await,
    ];
    let _ = tokio::join!(
        load(&first.client, 40, Duration::from_secs(2)),
        load(&second.client, 40, Duration::from_secs(2)),
    );
    let after = [
        fallback_decisions(&first).await,
        fallback_decisions(&second).await,
    ];
    let recovered = simulator.stats();
    assert_eq!(before, after, "no fallback decision once Redis is back");
    assert_eq!(recovered.count("RequestLimitExceeded"), 0, "{recovered:?}");
    assert!(
        recovered.max_in_any_second <= u64::from(LIMIT),
        "{recovered:?}"
    );
    assert!(
        recovered.max_in_any_second > 2 * u64::from(LIMIT / 4),
        "shared again: {recovered:?}"
    );
}

/// The gateway's count of decisions its local fallback limiter made.
async fn fallback_decisions(gateway: &crate::helpers::Gateway) -> u64 {
    metric(
        gateway.admin_addr,
        "faceid_rate_limit_fallback_decisions_total",
    )
    .await
}
