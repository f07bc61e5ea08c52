//! Health, reflection and graceful shutdown of the real server.

use std::time::Duration;

use faceid_gateway::proto::Verdict;
use futures_util::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1alpha;

use crate::helpers::{request_with, spawn_app, wait_until, within};

#[tokio::test]
async fn health_reports_serving_overall_and_for_the_service() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);

    for service in ["", "faceid.v1.IdCardVerificationService"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
}

async fn reflect(app: &crate::helpers::TestApp, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(app.channel().await);
    let outbound = tokio_stream::iter([ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    }]);
    let mut inbound = client
        .server_reflection_info(outbound)
        .await
        .unwrap()
        .into_inner();
    inbound
        .next()
        .await
        .expect("one answer")
        .unwrap()
        .message_response
        .expect("a message")
}

#[tokio::test]
async fn reflection_v1_lists_the_services_and_serves_error_details() {
    let app = spawn_app().await;

    let MessageResponse::ListServicesResponse(list) =
        reflect(&app, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"faceid.v1.IdCardVerificationService"),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    for symbol in [
        "faceid.v1.VerifyIdCardRequest",
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
        "google.rpc.RetryInfo",
        "google.rpc.Status",
    ] {
        let answer = reflect(&app, MessageRequest::FileContainingSymbol(symbol.into())).await;
        assert!(
            matches!(answer, MessageResponse::FileDescriptorResponse(ref f) if !f.file_descriptor_proto.is_empty()),
            "{symbol}: {answer:?}"
        );
    }
}

#[tokio::test]
async fn reflection_v1alpha_answers_for_older_grpcurl() {
    let app = spawn_app().await;
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel().await);
    let outbound = tokio_stream::iter([v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    }]);

    let answer = client
        .server_reflection_info(outbound)
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();

    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("expected a service list");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "faceid.v1.IdCardVerificationService")
    );
}

#[tokio::test]
async fn shutdown_lets_in_flight_calls_finish_then_refuses_new_ones() {
    let app = spawn_app().await;
    let addr = app.addr;
    let mut client = app.client.clone();
    // The call takes 2 s upstream: the window in which the gateway drains.
    let in_flight =
        tokio::spawn(async move { client.verify_id_card(request_with("delay=2000")).await });
    // Let the call reach the simulator before shutting down.
    wait_until(
        "the call to reach the simulator",
        Duration::from_secs(10),
        async || app.upstream_stats().in_flight > 0,
    )
    .await;

    faceid_gateway::install_crypto_provider();
    let readyz = format!("http://{}/readyz", app.admin_addr);
    let stopping = tokio::spawn(app.stop());
    // While the call drains, the admin port says "not ready".
    wait_until(
        "/readyz to answer 503 while the call drains",
        Duration::from_secs(10),
        async || matches!(reqwest::get(&readyz).await, Ok(answer) if answer.status() == 503),
    )
    .await;
    within("the drain to end", Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .expect("clean shutdown");

    let answer = in_flight
        .await
        .unwrap()
        .expect("the in-flight call completed");
    assert_eq!(answer.into_inner().verdict(), Verdict::Match);
    let reconnect = tokio::time::timeout(
        Duration::from_secs(2),
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect(),
    )
    .await;
    assert!(
        !matches!(reconnect, Ok(Ok(_))),
        "a stopped gateway must not accept connections"
    );
}

#[tokio::test]
async fn the_admin_port_serves_metrics_that_count_calls() {
    let mut app = spawn_app().await;
    faceid_gateway::install_crypto_provider();
    let metrics_url = format!("http://{}/metrics", app.admin_addr);

    app.client.verify_id_card(request_with("")).await.unwrap();
    let _ = app
        .client
        .verify_id_card(crate::helpers::image_request(bytes::Bytes::new()))
        .await
        .unwrap_err();
    let text = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let upstream = app.simulator.local_addr();
    for line in [
        r#"faceid_rpcs_total{method="VerifyIdCard",caller="anonymous",code="OK"} 1"#.to_owned(),
        r#"faceid_rpcs_total{method="VerifyIdCard",caller="anonymous",code="INVALID_ARGUMENT"} 1"#
            .to_owned(),
        format!(
            r#"faceid_tencent_responses_total{{class="success",code="Success",endpoint="{upstream}"}} 1"#
        ),
        format!(r#"faceid_upstream_attempt_duration_seconds_count{{endpoint="{upstream}"}} 1"#),
        format!(r#"faceid_upstream_endpoint_up{{endpoint="{upstream}"}} 1"#),
        format!(r#"faceid_upstream_ejections_total{{endpoint="{upstream}"}} 0"#),
        "faceid_upstream_rate_limit 100".to_owned(),
        "faceid_upstream_rate_observed 1".to_owned(),
        "faceid_upstream_in_flight 0".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    let not_found = reqwest::get(format!("http://{}/nope", app.admin_addr))
        .await
        .unwrap();
    assert_eq!(not_found.status(), 404);
}
