//! The `faceid-gateway` binary as an operator runs it: exit messages, the
//! `--simulate` quick start, SIGTERM, and the standalone simulator with
//! credentials from the environment or a file.

use std::time::Duration;

use faceid_gateway::proto::id_card_verification_service_client::IdCardVerificationServiceClient;
use faceid_gateway::proto::{Verdict, VerifyIdCardRequest, verify_id_card_request::Source};

use crate::helpers::request_with;
use crate::process::{Running, command};

const SECRET_ID: &str = "AKIDcliTests";
const SECRET_KEY: &str = "cli-tests-secret-key-value";

async fn verify_through(addr: &str) -> Verdict {
    let mut client = IdCardVerificationServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let answer = client
        .verify_id_card(request_with(""))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.simulated);
    answer.verdict()
}

#[tokio::test]
async fn serve_without_credentials_exits_and_says_what_to_set() {
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        command(&["serve", "--listen", "127.0.0.1:0"]).output(),
    )
    .await
    .expect("exits at once")
    .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TENCENTCLOUD_SECRET_ID"), "{stderr}");
    assert!(stderr.contains("TENCENTCLOUD_CREDENTIALS_FILE"), "{stderr}");
    assert!(stderr.contains("--simulate"), "{stderr}");
}

#[tokio::test]
async fn an_explicit_credentials_source_without_keys_exits_and_says_why() {
    let mut oidc = command(&["serve", "--listen", "127.0.0.1:0"]);
    oidc.env("FACEID_CREDENTIALS_SOURCE", "oidc")
        .env("TKE_ROLE_ARN", "qcs::cam::uin/100000000001:roleName/r");
    let output = tokio::time::timeout(Duration::from_secs(20), oidc.output())
        .await
        .expect("exits at once")
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--credentials-source oidc"), "{stderr}");
    assert!(
        stderr.contains("TKE_PROVIDER_ID") && stderr.contains("TKE_WEB_IDENTITY_TOKEN_FILE"),
        "{stderr}"
    );
    assert!(!stderr.contains("100000000001"), "{stderr}");
}

#[tokio::test]
async fn serve_simulate_verifies_and_stops_cleanly_on_sigterm() {
    let mut gateway = Running::start(command(&["--simulate", "--listen", "127.0.0.1:0"]));
    let serving = gateway.wait_for("faceid-gateway serving").await;
    let addr = serving["listen"].as_str().unwrap().to_owned();

    assert_eq!(verify_through(&addr).await, Verdict::Match);

    let (clean, logs) = gateway.terminate().await;
    assert!(clean, "{logs}");
    // Without an OTLP endpoint nothing is exported, but lines still carry ids.
    let completed: serde_json::Value = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "rpc completed")
        .expect("a completion line");
    assert_eq!(
        completed["trace_id"].as_str().map(str::len),
        Some(32),
        "{completed}"
    );
    assert_eq!(
        completed["span_id"].as_str().map(str::len),
        Some(16),
        "{completed}"
    );
    assert!(logs.contains("draining in-flight calls"), "{logs}");
    assert!(logs.contains("faceid-gateway stopped"), "{logs}");
}

#[tokio::test]
async fn the_standalone_simulator_serves_a_gateway_with_env_or_file_credentials() {
    let mut simulator = Running::start(command(&[
        "simulator",
        "--listen",
        "127.0.0.1:0",
        "--secret-id",
        SECRET_ID,
        "--secret-key",
        SECRET_KEY,
    ]));
    let endpoint = simulator.wait_for("Tencent FaceID simulator serving").await["endpoint"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut from_env = command(&["serve", "--listen", "127.0.0.1:0", "--endpoint", &endpoint]);
    from_env
        .env("TENCENTCLOUD_SECRET_ID", SECRET_ID)
        .env("TENCENTCLOUD_SECRET_KEY", SECRET_KEY);
    let mut gateway = Running::start(from_env);
    let addr = gateway.wait_for("faceid-gateway serving").await["listen"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(verify_through(&addr).await, Verdict::Match);
    let (_, env_logs) = gateway.terminate().await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        format!("[default]\nsecret_id = {SECRET_ID}\nsecret_key = {SECRET_KEY}\n"),
    )
    .unwrap();
    let mut from_file = command(&["serve", "--listen", "127.0.0.1:0", "--endpoint", &endpoint]);
    from_file.env("TENCENTCLOUD_CREDENTIALS_FILE", &file);
    let mut gateway = Running::start(from_file);
    // The start-up names the source and why the one before was passed over.
    let chosen = gateway
        .wait_for("Tencent Cloud credentials source chosen")
        .await;
    assert_eq!(chosen["source"], "file", "{chosen}");
    assert_eq!(
        chosen["skipped"], "env: TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY are not set",
        "{chosen}"
    );
    let addr = gateway.wait_for("faceid-gateway serving").await["listen"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(verify_through(&addr).await, Verdict::Match);
    let (_, file_logs) = gateway.terminate().await;

    let (_, simulator_logs) = simulator.terminate().await;
    for logs in [env_logs, file_logs, simulator_logs] {
        assert!(
            !logs.contains(SECRET_KEY),
            "the secret key leaked into a log: {logs}"
        );
    }
}

#[tokio::test]
async fn internal_image_urls_can_be_allowed_through_the_environment() {
    let mut simulate = command(&["--simulate", "--listen", "127.0.0.1:0"]);
    simulate.env("FACEID_ALLOW_PRIVATE_IMAGE_URLS", "true");
    let mut gateway = Running::start(simulate);
    let addr = gateway.wait_for("faceid-gateway serving").await["listen"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut client = IdCardVerificationServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    let answer = client
        .verify_id_card(VerifyIdCardRequest {
            source: Some(Source::ImageUrl("http://127.0.0.1:8080/card.jpg".into())),
            ..Default::default()
        })
        .await;

    let (clean, logs) = gateway.terminate().await;
    assert_eq!(
        answer.expect("allowed").into_inner().verdict(),
        Verdict::Match
    );
    assert!(clean, "{logs}");
}
