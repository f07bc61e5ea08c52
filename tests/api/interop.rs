//! The official `tencentcloud-sdk-python` against the standalone simulator:
//! proof that the simulator speaks Tencent's wire format (signing, headers,
//! envelopes) and not just our own client's dialect.

use std::process::Command;

use faceid_gateway::simulator::{Simulator, SimulatorConfig};
use serde_json::Value;

use crate::helpers::{SAMPLE_PNG, SECRET_ID, SECRET_KEY, repo_root, venv_bin};

/// Runs the SDK script against `simulator` with `secret_key` and `image`.
async fn sdk_call(simulator: &Simulator, secret_key: &str, image: &[u8]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let image_path = dir.path().join("card.png");
    std::fs::write(&image_path, image).unwrap();
    let python = venv_bin("python");
    let script = repo_root().join("tests/interop/tencent_sdk_call.py");
    let endpoint = simulator.local_addr().to_string();
    let key = secret_key.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([endpoint.as_str(), SECRET_ID, key.as_str()])
            .arg(&image_path)
            .output()
            .expect("run the SDK script")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "SDK script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

async fn start_simulator() -> Simulator {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::start(SimulatorConfig::new(SECRET_ID, SECRET_KEY), listener).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_gets_a_parsed_success() {
    let simulator = start_simulator().await;

    let answer = sdk_call(&simulator, SECRET_KEY, SAMPLE_PNG).await;

    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["Result"], "Success");
    assert!(answer["Sim"].as_f64().unwrap() >= 90.0);
    assert_eq!(answer["IdNum"].as_str().unwrap().len(), 18);
    assert_eq!(answer["Portrait"], true);
    assert_eq!(simulator.stats().count("Success"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_with_a_wrong_key_gets_signature_failure() {
    let simulator = start_simulator().await;

    let answer = sdk_call(&simulator, "a-wrong-secret-key", SAMPLE_PNG).await;

    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(answer["code"], "AuthFailure.SignatureFailure");
    assert!(!answer["request_id"].as_str().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_sees_simulated_error_codes() {
    let simulator = start_simulator().await;
    let mut image = SAMPLE_PNG.to_vec();
    image.extend_from_slice(b"FACEID-SIM[error=FailedOperation.ImageNoIdCard]");

    let answer = sdk_call(&simulator, SECRET_KEY, &image).await;

    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(answer["code"], "FailedOperation.ImageNoIdCard");
}
