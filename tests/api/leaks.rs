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
    let subscriber = telemetry::subscriber(&provider, true, capture.clone(), filter);
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
