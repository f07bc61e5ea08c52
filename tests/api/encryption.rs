//! Tencent's sensitive-data encryption through the simulator: both
//! algorithms in both modes give the caller the same answer as no
//! encryption, the personal fields never cross the wire in clear, and a bad
//! ciphertext is a clear error.

use std::sync::Arc;

use faceid_gateway::proto::{UpstreamEncryption, Verdict, VerifyIdCardResponse};
use faceid_gateway::simulator::Simulator;
use faceid_gateway::tencent::model::{CheckIdCardInformationRequest, Envelope};
use faceid_gateway::tencent::{
    CredentialProvider, Credentials, EncryptionMode, EncryptionSettings, RequestBody,
    RequestEncryption,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{
    Gateway, Options, SAMPLE_PNG, SECRET_ID, SECRET_KEY, request_with, spawn_gateway,
    spawn_simulator, verified,
};

/// Writes the simulator's public keys where a gateway can load them.
fn key_flags(simulator: &Simulator, dir: &tempfile::TempDir) -> Vec<String> {
    let keys = simulator.public_keys();
    let rsa = dir.path().join("rsa.pem");
    let sm2 = dir.path().join("sm2.pem");
    std::fs::write(&rsa, keys.rsa_pem().unwrap()).unwrap();
    std::fs::write(&sm2, keys.sm2_pem().unwrap()).unwrap();
    vec![
        "--tencent-rsa-public-key".into(),
        rsa.display().to_string(),
        "--tencent-sm2-public-key".into(),
        sm2.display().to_string(),
    ]
}

async fn gateway(simulator: &Simulator, dir: &tempfile::TempDir, extra: &[&str]) -> Gateway {
    let mut flags = key_flags(simulator, dir);
    flags.extend(extra.iter().map(|s| (*s).to_owned()));
    spawn_gateway(
        simulator,
        Options {
            flags,
            ..Options::default()
        },
    )
    .await
}

/// The answer without the parts that differ per call.
fn comparable(mut answer: VerifyIdCardResponse) -> VerifyIdCardResponse {
    answer.request_id.clear();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_algorithms_in_both_modes_answer_as_without_encryption() {
    let simulator = spawn_simulator(0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut plain_gateway = gateway(&simulator, &dir, &[]).await;
    let expected = verified(&mut plain_gateway.client, request_with("")).await;
    assert_eq!(simulator.stats().encrypted, 0);
    assert_eq!(expected.verdict(), Verdict::Match);

    let mut encrypted_answers = 0;
    for algorithm in ["aes-256-cbc", "sm4-gcm"] {
        for mode in ["response", "fields"] {
            let mut encrypted = gateway(
                &simulator,
                &dir,
                &[
                    "--upstream-encryption",
                    mode,
                    "--encryption-algorithm",
                    algorithm,
                ],
            )
            .await;

            let answer = verified(&mut encrypted.client, request_with("")).await;

            encrypted_answers += 1;
            assert_eq!(
                simulator.stats().encrypted,
                encrypted_answers,
                "{algorithm} {mode}"
            );
            assert_eq!(
                comparable(answer),
                comparable(expected.clone()),
                "{algorithm} {mode}"
            );
            // Verdict codes that carry card fields come back opened too.
            let mismatch = verified(
                &mut encrypted.client,
                request_with("result=FailedOperation.IdNameMisMatch"),
            )
            .await;
            encrypted_answers += 1;
            assert_eq!(mismatch.verdict(), Verdict::IdNameMismatch);
            assert_eq!(
                mismatch.id_card.unwrap().id_number.len(),
                18,
                "{algorithm} {mode}"
            );
        }
    }
}

#[tokio::test]
async fn a_request_can_turn_encryption_on_or_off() {
    let simulator = spawn_simulator(0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = gateway(&simulator, &dir, &[]).await;

    let mut request = request_with("");
    request.set_upstream_encryption(UpstreamEncryption::Response);
    gateway.client.verify_id_card(request).await.unwrap();
    assert_eq!(simulator.stats().encrypted, 1);

    let mut gateway = self::gateway(&simulator, &dir, &["--upstream-encryption", "fields"]).await;
    let mut request = request_with("");
    request.set_upstream_encryption(UpstreamEncryption::Off);
    gateway.client.verify_id_card(request).await.unwrap();
    assert_eq!(
        simulator.stats().encrypted,
        1,
        "turned off for this request"
    );
}

#[tokio::test]
async fn a_tampered_or_missing_ciphertext_is_unavailable_without_the_ciphertext() {
    let simulator = spawn_simulator(0).await;
    let dir = tempfile::tempdir().unwrap();
    for (algorithm, mode, directive) in [
        ("aes-256-cbc", "fields", "crypto=tamper"),
        ("sm4-gcm", "response", "crypto=tamper"),
        ("sm4-gcm", "fields", "crypto=tamper"),
        ("aes-256-cbc", "response", "crypto=omit"),
    ] {
        let mut gateway = gateway(
            &simulator,
            &dir,
            &[
                "--upstream-encryption",
                mode,
                "--encryption-algorithm",
                algorithm,
                "--max-attempts",
                "1",
            ],
        )
        .await;

        let status = gateway
            .client
            .verify_id_card(request_with(directive))
            .await
            .unwrap_err();

        assert_eq!(
            status.code(),
            Code::Unavailable,
            "{algorithm} {mode} {directive}: {status:?}"
        );
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "UpstreamDecryptionFailed");
        assert!(
            status.message().len() < 200 && !status.message().contains("=="),
            "{}",
            status.message()
        );
    }
}

#[tokio::test]
async fn personal_fields_never_cross_the_wire_in_clear() {
    let simulator = spawn_simulator(0).await;
    faceid_gateway::install_crypto_provider();
    let client = faceid_gateway::tencent::Client::new(
        faceid_gateway::tencent::ClientConfig {
            endpoint: simulator.endpoint(),
            region: None,
            connect_timeout: std::time::Duration::from_secs(2),
            request_timeout: std::time::Duration::from_secs(10),
        },
        Arc::new(CredentialProvider::fixed(
            Credentials::new(SECRET_ID, SECRET_KEY, None).unwrap(),
        )),
    )
    .unwrap();
    let plain = client
        .send(
            &RequestBody::with_image(SAMPLE_PNG, &CheckIdCardInformationRequest::default()),
            None,
        )
        .await
        .unwrap();
    let name = plain.response.name.unwrap();
    let id_number = plain.response.id_num.unwrap();

    for algorithm in faceid_gateway::tencent::crypto::Algorithm::ALL {
        for mode in [EncryptionMode::Response, EncryptionMode::Fields] {
            let settings = EncryptionSettings {
                algorithm,
                public_keys: Arc::new(simulator.public_keys()),
            };
            let mut params = CheckIdCardInformationRequest::default();
            let encryption = RequestEncryption::start(mode, &settings, &mut params).unwrap();
            let body = RequestBody::with_image(SAMPLE_PNG, &params);
            // The raw answer, as it travels.
            let headers = client
                .signed_headers(&body, faceid_gateway::tencent::client::unix_now())
                .expect("valid keys sign");
            let raw = reqwest::Client::new()
                .post(simulator.endpoint())
                .headers(headers)
                .body(body.bytes())
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(
                !raw.contains(&name) && !raw.contains(&id_number),
                "{algorithm:?} {mode:?}: {raw}"
            );
            let envelope: Envelope = serde_json::from_str(&raw).unwrap();
            let opened = encryption.open(envelope.response).unwrap();
            assert_eq!(opened.name.as_deref(), Some(name.as_str()));
            assert_eq!(opened.id_num.as_deref(), Some(id_number.as_str()));
        }
    }
}
