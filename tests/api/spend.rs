//! Spend control: budgets of billable calls (per caller and gateway-wide,
//! in memory and shared through Redis) and idempotency keys (one upstream
//! call per key and request, replays marked, nothing personal in Redis).

use std::time::Duration;

use faceid_gateway::proto::VerifyIdCardBatchRequest;
use faceid_gateway::proto::verify_id_card_batch_response::Outcome;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::helpers::{
    Options, SAMPLE_PNG, image_request, png_with, request_with, spawn_app_with, spawn_gateway,
    spawn_simulator, start_redis, within,
};

const CALL_WITHIN: Duration = Duration::from_secs(30);

fn options(flags: Vec<String>) -> Options {
    Options {
        flags,
        ..Options::default()
    }
}

/// A tokens file with one caller `name` and `options`; returns its token,
/// the file's folder (kept alive) and path.
fn tokens_file(name: &str, day: Option<u64>) -> (String, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let (token, line) =
        faceid_gateway::server::new_token_with_budgets(name, None, day, None).unwrap();
    let path = dir.path().join("tokens");
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let path = path.display().to_string();
    (token, dir, path)
}

fn with_token(
    token: &str,
    request: faceid_gateway::proto::VerifyIdCardRequest,
) -> tonic::Request<faceid_gateway::proto::VerifyIdCardRequest> {
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn with_key(
    key: &str,
    request: faceid_gateway::proto::VerifyIdCardRequest,
) -> tonic::Request<faceid_gateway::proto::VerifyIdCardRequest> {
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("idempotency-key", key.parse().unwrap());
    request
}

/// The text of the admin port's `path`.
async fn admin_text(admin: std::net::SocketAddr, path: &str) -> String {
    faceid_gateway::install_crypto_provider();
    reqwest::get(format!("http://{admin}{path}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn assert_budget_exhausted(status: &tonic::Status, subject: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "BudgetExhausted"
    );
    let quota = status.get_details_quota_failure().expect("QuotaFailure");
    assert_eq!(quota.violations[0].subject, subject);
    assert!(
        quota.violations[0].description.contains("per day"),
        "{}",
        quota.violations[0].description
    );
    let retry = status.get_details_retry_info().expect("RetryInfo");
    let delay = retry.retry_delay.expect("a delay");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(24 * 3600),
        "until the next Beijing midnight: {delay:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_day_budget_gives_exactly_its_billable_answers_and_unbilled_ones_are_free() {
    let (token, _dir, tokens) = tokens_file("batch-job", Some(5));
    let mut app = spawn_app_with(options(vec![
        "--auth-tokens-file".into(),
        tokens,
        "--max-attempts".into(),
        "1".into(),
    ]))
    .await;

    // Upstream InternalError and a result Tencent does not bill: free.
    for directive in [
        "error=InternalError",
        "result=FailedOperation.IdPhotoPoorQuality",
    ] {
        let _ = within(
            "an unbilled call",
            CALL_WITHIN,
            app.client
                .verify_id_card(with_token(&token, request_with(directive))),
        )
        .await;
    }
    let mut billed = 0;
    let mut refusals = Vec::new();
    for _ in 0..8 {
        match within(
            "a call",
            CALL_WITHIN,
            app.client
                .verify_id_card(with_token(&token, request_with(""))),
        )
        .await
        {
            Ok(_) => billed += 1,
            Err(status) => refusals.push(status),
        }
    }
    assert_eq!(billed, 5, "exactly the budget: {refusals:?}");
    assert_eq!(refusals.len(), 3);
    for status in &refusals {
        assert_budget_exhausted(status, "caller:batch-job");
    }
    assert_eq!(
        app.upstream_stats().received,
        7,
        "refused calls never reach Tencent"
    );

    let metrics = admin_text(app.admin_addr, "/metrics").await;
    for line in [
        r#"faceid_billable_calls_total{caller="batch-job"} 5"#,
        r#"faceid_calls_by_result_total{caller="batch-job",result="InternalError*"} 1"#,
        r#"faceid_calls_by_result_total{caller="batch-job",result="FailedOperation.IdPhotoPoorQuality"} 1"#,
        r#"faceid_budget_used{caller="batch-job",period="day"} 5"#,
        r#"faceid_budget_limit{caller="batch-job",period="day"} 5"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    let budgets: serde_json::Value =
        serde_json::from_str(&admin_text(app.admin_addr, "/budgets").await).unwrap();
    let day = &budgets["budgets"][0];
    assert_eq!(day["caller"], "batch-job");
    assert_eq!(day["period"], "day");
    assert_eq!(
        (day["limit"].as_u64(), day["used"].as_u64()),
        (Some(5), Some(5))
    );
    assert!(
        day["resets_at"]
            .as_str()
            .unwrap()
            .ends_with("T00:00:00+08:00"),
        "{day}"
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_share_one_budget_exactly_under_concurrent_load() {
    let redis = start_redis().await;
    let simulator = spawn_simulator(0).await;
    let flags = || {
        options(vec![
            "--rate-limit-redis".into(),
            redis.url.clone(),
            "--rate-limit-redis-timeout".into(),
            "2s".into(),
            "--budget-day".into(),
            "12".into(),
        ])
    };
    let first = spawn_gateway(&simulator, flags()).await;
    let second = spawn_gateway(&simulator, flags()).await;
    let calls: Vec<_> = (0..36)
        .map(|i| {
            let mut client = if i % 2 == 0 {
                first.client.clone()
            } else {
                second.client.clone()
            };
            tokio::spawn(async move {
                within(
                    "a concurrent call",
                    CALL_WITHIN,
                    client.verify_id_card(request_with("delay=50")),
                )
                .await
            })
        })
        .collect();
    let mut ok = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => assert_budget_exhausted(&status, "gateway"),
        }
    }
    assert_eq!(ok, 12, "one budget across both gateways");
    assert_eq!(simulator.stats().received, 12);
    first.stop().await.unwrap();
    second.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_is_answered_once_and_replays_say_so() {
    let mut app = spawn_app_with(Options::default()).await;
    let first = within(
        "the first call",
        CALL_WITHIN,
        app.client
            .verify_id_card(with_key("order-1", request_with(""))),
    )
    .await
    .unwrap();
    let second = within(
        "the repeated call",
        CALL_WITHIN,
        app.client
            .verify_id_card(with_key("order-1", request_with(""))),
    )
    .await
    .unwrap();
    assert_eq!(app.upstream_stats().received, 1, "one upstream call");
    assert!(first.metadata().get("idempotent-replay").is_none());
    assert_eq!(second.metadata().get("idempotent-replay").unwrap(), "true");
    assert_eq!(first.into_inner(), second.into_inner(), "identical answers");

    // The same key with another image.
    let reused = within(
        "a call reusing the key",
        CALL_WITHIN,
        app.client
            .verify_id_card(with_key("order-1", request_with("sim=50"))),
    )
    .await
    .unwrap_err();
    assert_eq!(reused.code(), Code::InvalidArgument);
    assert_eq!(
        reused.get_details_error_info().unwrap().reason,
        "IdempotencyKeyReused"
    );
    assert_eq!(app.upstream_stats().received, 1);

    // Ten at once with a new key: one upstream call, ten equal answers.
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                within(
                    "a concurrent call",
                    CALL_WITHIN,
                    client.verify_id_card(with_key("order-2", request_with("delay=300"))),
                )
                .await
                .map(tonic::Response::into_inner)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap().unwrap());
    }
    assert_eq!(app.upstream_stats().received, 2, "one more upstream call");
    assert!(answers.windows(2).all(|pair| pair[0] == pair[1]));

    // Over HTTP/JSON, the key travels as a header.
    let url = format!("http://{}/v1/idcard:verify", app.addr);
    let body = serde_json::json!({
        "image": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, SAMPLE_PNG)
    });
    let client = reqwest::Client::new();
    for expected_replay in [false, true] {
        let response = client
            .post(&url)
            .header("idempotency-key", "order-3")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers().get("idempotent-replay").is_some(),
            expected_replay
        );
    }
    assert_eq!(app.upstream_stats().received, 3);

    // A key longer than 128 characters is refused before anything is sent.
    let long = within(
        "a call with a long key",
        CALL_WITHIN,
        app.client
            .verify_id_card(with_key(&"k".repeat(129), request_with(""))),
    )
    .await
    .unwrap_err();
    assert_eq!(long.code(), Code::InvalidArgument);
    assert_eq!(app.upstream_stats().received, 3);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_answer_one_key_with_one_upstream_call() {
    let redis = start_redis().await;
    let simulator = spawn_simulator(0).await;
    let flags = || {
        options(vec![
            "--rate-limit-redis".into(),
            redis.url.clone(),
            "--rate-limit-redis-timeout".into(),
            "2s".into(),
        ])
    };
    let first = spawn_gateway(&simulator, flags()).await;
    let second = spawn_gateway(&simulator, flags()).await;
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let mut client = if i % 2 == 0 {
                first.client.clone()
            } else {
                second.client.clone()
            };
            tokio::spawn(async move {
                within(
                    "a call on either gateway",
                    CALL_WITHIN,
                    client.verify_id_card(with_key("shared-1", request_with("delay=300"))),
                )
                .await
                .map(tonic::Response::into_inner)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap().unwrap());
    }
    assert!(answers.windows(2).all(|pair| pair[0] == pair[1]));
    assert_eq!(
        simulator.stats().received,
        1,
        "the second gateway waited for the first's answer"
    );
    first.stop().await.unwrap();
    second.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_times_out_and_retries_pays_once() {
    let mut app = spawn_app_with(Options::default()).await;
    let mut impatient = with_key("slow-1", request_with("delay=1500"));
    impatient.set_timeout(Duration::from_millis(300));
    let gave_up = within(
        "the impatient call",
        CALL_WITHIN,
        app.client.verify_id_card(impatient),
    )
    .await
    .unwrap_err();
    // Whichever side notices the deadline first (tonic's client says
    // CANCELLED).
    assert!(
        matches!(gave_up.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{gave_up:?}"
    );
    // The retry waits for the first call, still running upstream.
    let retried = within(
        "the retry",
        CALL_WITHIN,
        app.client
            .verify_id_card(with_key("slow-1", request_with("delay=1500"))),
    )
    .await
    .expect("the first call's answer");
    assert_eq!(retried.metadata().get("idempotent-replay").unwrap(), "true");
    assert_eq!(app.upstream_stats().received, 1, "Tencent was called once");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_not_replayed() {
    let mut app = spawn_app_with(options(vec!["--max-attempts".into(), "1".into()])).await;
    let request = || request_with("key=flaky,fail-first=1,error=InternalError");
    let failed = within(
        "the failing call",
        CALL_WITHIN,
        app.client.verify_id_card(with_key("retry-me", request())),
    )
    .await
    .unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable);
    let retried = within(
        "the retry",
        CALL_WITHIN,
        app.client.verify_id_card(with_key("retry-me", request())),
    )
    .await
    .expect("the retry goes upstream and succeeds");
    assert!(retried.metadata().get("idempotent-replay").is_none());
    assert_eq!(app.upstream_stats().received, 2);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_batch_pays_only_for_items_not_done_before() {
    let mut app = spawn_app_with(Options::default()).await;
    let item = |id: &str, directives: &str| VerifyIdCardBatchRequest {
        item_id: id.to_owned(),
        request: Some(request_with(directives)),
    };
    let mut run = async |items: Vec<VerifyIdCardBatchRequest>| {
        let mut request = tonic::Request::new(tokio_stream::iter(items));
        request
            .metadata_mut()
            .insert("idempotency-key", "nightly-2026-11-30".parse().unwrap());
        let mut answers = within(
            "the batch",
            CALL_WITHIN,
            app.client.verify_id_card_batch(request),
        )
        .await
        .unwrap()
        .into_inner();
        let mut ok = 0;
        while let Some(answer) = within("an answer", CALL_WITHIN, answers.message())
            .await
            .unwrap()
        {
            if matches!(answer.outcome, Some(Outcome::Result(_))) {
                ok += 1;
            }
        }
        ok
    };
    assert_eq!(run(vec![item("a", ""), item("b", "sim=60")]).await, 2);
    assert_eq!(
        run(vec![
            item("a", ""),
            item("b", "sim=60"),
            item("c", "sim=80")
        ])
        .await,
        3
    );
    assert_eq!(
        app.upstream_stats().received,
        3,
        "the resent items were replayed"
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_no_personal_data_nor_portrait() {
    let redis = start_redis().await;
    let mut app = spawn_app_with(options(vec![
        "--rate-limit-redis".into(),
        redis.url.clone(),
        "--rate-limit-redis-timeout".into(),
        "2s".into(),
        "--budget-day".into(),
        "100".into(),
    ]))
    .await;
    let mut answers = Vec::new();
    for (key, directives) in [
        ("p-1", ""),
        ("p-2", "sim=40"),
        ("p-3", "result=FailedOperation.IdNameMisMatch"),
    ] {
        answers.push(
            within(
                "a call",
                CALL_WITHIN,
                app.client
                    .verify_id_card(with_key(key, image_request(png_with(directives)))),
            )
            .await
            .unwrap()
            .into_inner(),
        );
    }
    // The answers are in Redis: replays work.
    let again = within(
        "a replay",
        CALL_WITHIN,
        app.client.verify_id_card(with_key("p-1", request_with(""))),
    )
    .await
    .unwrap();
    assert_eq!(again.metadata().get("idempotent-replay").unwrap(), "true");

    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(
        keys.len() >= 4,
        "budget counters and three answers: {}",
        keys.len()
    );
    let mut dump: Vec<Vec<u8>> = Vec::new();
    for key in keys {
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap_or(None);
        dump.push(key);
        dump.extend(value);
    }
    let contains = |needle: &[u8]| {
        dump.iter()
            .any(|blob| blob.windows(needle.len()).any(|window| window == needle))
    };
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for answer in &answers {
        let card = answer
            .id_card
            .as_ref()
            .expect("the simulator fills the card");
        for field in [&card.name, &card.id_number, &card.address, &card.birth] {
            assert!(!field.is_empty());
            secrets.push(field.as_bytes().to_vec());
        }
        assert!(answer.portrait.len() > 16);
        secrets.push(answer.portrait.to_vec());
        secrets.push(answer.portrait[..16].to_vec());
        secrets.push(
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &answer.portrait)
                .into_bytes(),
        );
    }
    secrets.push(SAMPLE_PNG[..64].to_vec());
    for secret in &secrets {
        assert!(!contains(secret), "Redis holds personal data");
    }
    app.stop().await.unwrap();
}
