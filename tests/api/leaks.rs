//! Nothing secret or personal reaches a log line: every event of a run
//! (all crates, TRACE level) is captured and searched for the secret key,
//! the signature, the image and the card holder's fields.

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use faceid_gateway::proto::{VerifyIdCardRequest, verify_id_card_request::Source};
use faceid_gateway::telemetry::{self, OtlpSettings};
use tracing_subscriber::fmt::MakeWriter;

use crate::helpers::{Options, SECRET_KEY, image_request, png_with, spawn_app_with, verified};

/// Collects every formatted log line in memory.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// current_thread runtime: every task of the run logs on this thread, where
// the capturing subscriber is the default.
#[tokio::test(flavor = "current_thread")]
async fn no_log_line_holds_keys_signatures_images_or_personal_data() {
    let capture = Capture::default();
    // The production subscriber (JSON lines, OpenTelemetry layer), at TRACE.
    let settings = OtlpSettings::from_env(|_| None).unwrap();
    let provider = telemetry::tracer_provider(&settings).unwrap();
    let filter = tracing_subscriber::EnvFilter::new("trace");
    let subscriber = telemetry::subscriber(&settings, &provider, true, capture.clone(), filter);
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut app = spawn_app_with(Options::default()).await;
    let image = png_with("sim=97.5");
    let answer = verified(&mut app.client, image_request(image.clone())).await;
    let card = answer.id_card.clone().unwrap();
    let private_url = "https://example.com/cards/zhang-san-110101199001011234.jpg";
    let _ = app
        .client
        .verify_id_card(VerifyIdCardRequest {
            source: Some(Source::ImageUrl(format!(
                "{private_url}#FACEID-SIM[error=InternalError]"
            ))),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let _ = app
        .client
        .verify_id_card(image_request(Bytes::from_static(b"GIF89a private pixels")))
        .await
        .unwrap_err();
    let _ = app
        .client
        .verify_id_card(image_request(png_with(
            "error=FailedOperation.IdNameMisMatch",
        )))
        .await;
    app.stop().await.unwrap();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("rpc completed"), "the run did log");
    assert!(
        logs.contains("h2::") && logs.contains("hyper_util"),
        "dependencies are captured at TRACE too"
    );
    let image_base64 = base64::engine::general_purpose::STANDARD.encode(&image);
    let forbidden = [
        ("secret key", SECRET_KEY.to_owned()),
        ("signature", "Signature=".to_owned()),
        ("authorization", "TC3-HMAC-SHA256".to_owned()),
        ("image (base64)", image_base64[..40].to_owned()),
        ("image (raw)", "private pixels".to_owned()),
        ("name", card.name.clone()),
        ("ID number", card.id_number.clone()),
        ("address", card.address.clone()),
        ("image URL", "zhang-san".to_owned()),
    ];
    for (what, value) in forbidden {
        assert!(!value.is_empty());
        assert!(!logs.contains(&value), "the {what} leaked into the logs");
    }
}

// The same capture on temporary keys: TKE OIDC with a known web-identity
// token, keys that live 3 s (renewed during the run), and a call refused for
// revoked keys, renewed and sent again.
#[tokio::test(flavor = "current_thread")]
async fn no_log_line_holds_the_web_identity_token_or_temporary_keys() {
    use faceid_gateway::config::CredentialsSource;
    use faceid_gateway::simulator::SimulatorConfig;
    use faceid_gateway::tencent::CredentialProvider;
    use faceid_gateway::tencent::credentials::ChainSettings;
    use secrecy::ExposeSecret as _;

    use crate::helpers::{SECRET_ID, spawn_gateway_with_credentials, spawn_simulator_with};

    let capture = Capture::default();
    let settings = OtlpSettings::from_env(|_| None).unwrap();
    let provider = telemetry::tracer_provider(&settings).unwrap();
    let filter = tracing_subscriber::EnvFilter::new("trace");
    let subscriber = telemetry::subscriber(&settings, &provider, true, capture.clone(), filter);
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let web_identity_token = "eyJhbGciOiJSUzI1NiJ9.in-process-known-token.c2ln";
    std::fs::write(&token_file, web_identity_token).unwrap();
    let mut config = SimulatorConfig::new(SECRET_ID, SECRET_KEY);
    config.rate_limit = 0;
    config.temporary_credentials_ttl = std::time::Duration::from_secs(3);
    config.web_identity_token_file = Some(token_file.clone());
    let simulator = spawn_simulator_with(config).await;
    let chain = ChainSettings {
        source: CredentialsSource::Oidc,
        role: None,
        sts_endpoint: simulator.endpoint(),
        metadata_endpoint: simulator.endpoint(),
        region: None,
        system_root: dir.path().to_owned(),
        connect_timeout: std::time::Duration::from_secs(2),
        request_timeout: std::time::Duration::from_secs(5),
    };
    let token_path = token_file.display().to_string();
    let credentials = CredentialProvider::from_chain(&chain, |name| match name {
        "TKE_ROLE_ARN" => Some(crate::credentials::ROLE_ARN.to_owned()),
        "TKE_PROVIDER_ID" => Some("tke-oidc-test".to_owned()),
        "TKE_WEB_IDENTITY_TOKEN_FILE" => Some(token_path.clone()),
        _ => None,
    })
    .await
    .unwrap();
    let gateway = spawn_gateway_with_credentials(&simulator, Options::default(), credentials).await;
    let mut client = gateway.client.clone();

    let mut issued = simulator.issued_temporary_credentials();
    for _ in 0..8 {
        verified(&mut client, image_request(png_with(""))).await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        issued.extend(simulator.issued_temporary_credentials());
    }
    simulator.revoke_temporary_credentials();
    verified(&mut client, image_request(png_with(""))).await;
    issued.extend(simulator.issued_temporary_credentials());
    gateway.stop().await.unwrap();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    // The renewals happened (their log lines may be filtered out here: a
    // callsite first reached on another test's thread, which has no
    // subscriber, can be cached as uninteresting; the binary-level run in
    // telemetry.rs captures them for sure).
    assert!(
        simulator
            .stats()
            .credential_calls("AssumeRoleWithWebIdentity:Success")
            >= 3,
        "{:?}",
        simulator.stats().credential_calls
    );
    assert!(
        logs.contains("credentials source chosen"),
        "the run did log"
    );
    let mut forbidden = vec![
        web_identity_token.to_owned(),
        "in-process-known-token".to_owned(),
        "100000000001".to_owned(),
        "Signature=".to_owned(),
    ];
    assert!(issued.len() >= 3, "keys were issued: {}", issued.len());
    for (secret_id, secret_key, token) in &issued {
        forbidden.extend([
            secret_id.clone(),
            secret_key.expose_secret().to_owned(),
            token.expose_secret().to_owned(),
        ]);
    }
    for value in forbidden {
        assert!(!logs.contains(&value), "{value:?} leaked into the logs");
    }
}
