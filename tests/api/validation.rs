//! Input the gateway refuses itself, before any billed upstream call: each
//! refusal is INVALID_ARGUMENT with the Tencent reason, `checked_by:
//! gateway` and a `BadRequest` naming the field, and the simulator sees
//! nothing.

use std::sync::Arc;

use bytes::Bytes;
use faceid_gateway::proto::verify_id_card_batch_response::Outcome;
use faceid_gateway::proto::{
    Verdict, VerifyIdCardBatchRequest, VerifyIdCardBatchResponse, VerifyIdCardRequest,
    verify_id_card_request::Source,
};
use faceid_gateway::tencent::model::CheckIdCardInformationRequest;
use faceid_gateway::tencent::{self, CredentialProvider, Credentials, RequestBody};
use tonic::Code;
use tonic_types::{ErrorDetails, RpcStatusExt, StatusExt};

use crate::helpers::{
    Options, PIXEL_JPEG, PIXEL_PNG, SAMPLE_PNG, SECRET_ID, SECRET_KEY, TestApp, image_request,
    spawn_app, spawn_app_with, spawn_simulator, verified,
};

/// Checks the details of a gateway refusal of `field` with `reason` and
/// returns the violation's description.
fn refusal(code: i32, details: &ErrorDetails, field: &str, reason: &str) -> String {
    assert_eq!(code, Code::InvalidArgument as i32, "{field}: {details:?}");
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, reason, "{field}");
    assert_eq!(
        info.metadata.get("checked_by").map(String::as_str),
        Some("gateway")
    );
    let violations = &details.bad_request().expect("BadRequest").field_violations;
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].field, field);
    let description = violations[0].description.clone();
    assert!(
        !description.chars().any(char::is_control),
        "no raw bytes in {description:?}"
    );
    description
}

/// Calls `VerifyIdCard` and checks it is refused; returns the description.
async fn refused(
    app: &mut TestApp,
    request: VerifyIdCardRequest,
    field: &str,
    reason: &str,
) -> String {
    let status = app.client.verify_id_card(request).await.unwrap_err();
    let details = status.get_error_details();
    let description = refusal(status.code() as i32, &details, field, reason);
    assert!(status.message().contains(&description), "{status:?}");
    description
}

/// Sends `items` as one batch stream and returns the answers by item id.
async fn batch(
    app: &mut TestApp,
    items: Vec<VerifyIdCardBatchRequest>,
) -> std::collections::HashMap<String, VerifyIdCardBatchResponse> {
    let count = items.len();
    let mut stream = app
        .client
        .verify_id_card_batch(tokio_stream::iter(items))
        .await
        .expect("the stream opens")
        .into_inner();
    let mut answers = std::collections::HashMap::new();
    while let Some(answer) = stream.message().await.expect("the stream ends OK") {
        answers.insert(answer.item_id.clone(), answer);
    }
    assert_eq!(answers.len(), count, "one answer per item");
    answers
}

/// Checks that a batch answer is a gateway refusal; returns the description.
fn item_refusal(answer: &VerifyIdCardBatchResponse, field: &str, reason: &str) -> String {
    let Some(Outcome::Error(status)) = &answer.outcome else {
        panic!(
            "{}: expected an error, got {:?}",
            answer.item_id, answer.outcome
        );
    };
    refusal(status.code, &status.get_error_details(), field, reason)
}

fn item(item_id: &str, request: VerifyIdCardRequest) -> VerifyIdCardBatchRequest {
    VerifyIdCardBatchRequest {
        item_id: item_id.to_owned(),
        request: Some(request),
    }
}

/// `image` with the bytes at `at` replaced by `with`.
fn patched(image: &[u8], at: usize, with: &[u8]) -> Bytes {
    let mut image = image.to_vec();
    image[at..at + with.len()].copy_from_slice(with);
    Bytes::from(image)
}

/// Where the pixel JPEG's frame header (SOF0) starts.
fn jpeg_frame_header() -> usize {
    PIXEL_JPEG
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .unwrap()
}

/// Images that start like a PNG or JPEG but are not one, and what the
/// refusal says about each.
fn broken_images() -> Vec<(Bytes, &'static str)> {
    let sof = jpeg_frame_header();
    vec![
        (
            Bytes::from_static(b"\x89PNG\r\n\x1a\n"),
            "is a PNG signature without an IHDR header (truncated?)",
        ),
        (
            Bytes::from_static(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            "is a PNG with a chunk that runs past the end of the data (truncated?)",
        ),
        (
            Bytes::copy_from_slice(&SAMPLE_PNG[..SAMPLE_PNG.len() / 2]),
            "is a PNG with a chunk that runs past the end of the data (truncated?)",
        ),
        (
            Bytes::copy_from_slice(&SAMPLE_PNG[..SAMPLE_PNG.len() - 12]),
            "is a PNG without an IEND chunk (truncated?)",
        ),
        // IHDR's width is at byte 16, its height at byte 20.
        (
            patched(PIXEL_PNG, 16, &[0, 0, 0, 0]),
            "is a PNG whose IHDR header gives a width of 0",
        ),
        (
            patched(PIXEL_PNG, 20, &20_000u32.to_be_bytes()),
            "is a PNG whose IHDR header gives a height of 20000 pixels; the limit is 16384",
        ),
        (
            Bytes::from_static(&[0xFF, 0xD8, 0xFF]),
            "is a JPEG without an EOI marker (truncated?)",
        ),
        (
            Bytes::from_static(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F']),
            "is a JPEG with a segment that runs past the end of the data (truncated?)",
        ),
        (
            Bytes::copy_from_slice(&PIXEL_JPEG[..PIXEL_JPEG.len() - 2]),
            "is a JPEG without an EOI marker (truncated?)",
        ),
        (
            Bytes::from_static(&[0xFF, 0xD8, 0xFF, 0xD9]),
            "is a JPEG that ends before any scan",
        ),
        // SOF0: marker, length, precision, then height and width.
        (
            patched(PIXEL_JPEG, sof + 7, &[0, 0]),
            "is a JPEG whose frame header gives a width of 0",
        ),
        // The frame header turned into a DHT segment: no frame header left.
        (
            patched(PIXEL_JPEG, sof + 1, &[0xC4]),
            "is a JPEG with a scan before any frame header",
        ),
    ]
}

#[tokio::test]
async fn truncated_and_fake_images_are_refused_before_any_upstream_call() {
    let mut app = spawn_app().await;

    for (image, expected) in broken_images() {
        let description = refused(
            &mut app,
            image_request(image),
            "image",
            "FailedOperation.ImageDecodeFailed",
        )
        .await;

        assert_eq!(description, expected);
    }
    assert_eq!(
        app.upstream_stats().received,
        0,
        "nothing may reach the billed API"
    );
}

#[tokio::test]
async fn the_smallest_real_images_pass_with_directives_after_their_end() {
    let mut app = spawn_app().await;
    let with_directives = |image: &[u8], directives: &str| {
        let mut image = image.to_vec();
        image.extend_from_slice(format!("FACEID-SIM[{directives}]").as_bytes());
        image_request(Bytes::from(image))
    };

    let png = verified(
        &mut app.client,
        image_request(Bytes::from_static(PIXEL_PNG)),
    )
    .await;
    let jpeg = verified(
        &mut app.client,
        image_request(Bytes::from_static(PIXEL_JPEG)),
    )
    .await;
    let png_low = verified(&mut app.client, with_directives(PIXEL_PNG, "sim=42.5")).await;
    let jpeg_low = verified(&mut app.client, with_directives(PIXEL_JPEG, "sim=41")).await;

    assert_eq!(
        (png.verdict(), jpeg.verdict()),
        (Verdict::Match, Verdict::Match)
    );
    assert_eq!(png_low.verdict(), Verdict::LowSimilarity);
    assert_eq!(png_low.similarity, 42.5);
    assert_eq!(jpeg_low.similarity, 41.0);
    assert_eq!(app.upstream_stats().count("Success"), 4);
}

#[tokio::test]
async fn the_simulator_refuses_the_images_the_gateway_refuses() {
    let simulator = spawn_simulator(0).await;
    faceid_gateway::install_crypto_provider();
    let client = tencent::Client::new(
        tencent::ClientConfig {
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
    let params = CheckIdCardInformationRequest::default();
    let broken = broken_images();

    for (image, expected) in &broken {
        let error = client
            .send(&RequestBody::with_image(image, &params), None)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, tencent::Error::Api { code, .. } if code == "FailedOperation.ImageDecodeFailed"),
            "{expected}: {error:?}"
        );
    }
    for whole in [PIXEL_PNG, PIXEL_JPEG, SAMPLE_PNG] {
        let reply = client
            .send(&RequestBody::with_image(whole, &params), None)
            .await;
        assert!(reply.is_ok(), "{reply:?}");
    }

    let stats = simulator.stats();
    assert_eq!(
        stats.count("FailedOperation.ImageDecodeFailed"),
        broken.len() as u64
    );
    assert_eq!(stats.count("Success"), 3);
}

#[tokio::test]
async fn a_broken_image_in_a_batch_is_refused_alone() {
    let mut app = spawn_app().await;
    let (truncated, _) = broken_images().remove(3);

    let answers = batch(
        &mut app,
        vec![
            item("truncated", image_request(truncated)),
            item("whole", image_request(Bytes::from_static(PIXEL_JPEG))),
        ],
    )
    .await;

    let description = item_refusal(
        &answers["truncated"],
        "request.image",
        "FailedOperation.ImageDecodeFailed",
    );
    assert_eq!(description, "is a PNG without an IEND chunk (truncated?)");
    assert!(matches!(answers["whole"].outcome, Some(Outcome::Result(_))));
    assert_eq!(app.upstream_stats().received, 1, "only the whole image");
}

#[tokio::test]
async fn unknown_upstream_encryption_values_are_refused_before_any_upstream_call() {
    let mut app = spawn_app().await;

    for value in [4, 99, -1] {
        let mut request = image_request(Bytes::from_static(PIXEL_PNG));
        request.upstream_encryption = value;
        refused(
            &mut app,
            request,
            "upstream_encryption",
            "InvalidParameterValue",
        )
        .await;
    }
    let mut in_a_batch = image_request(Bytes::from_static(PIXEL_PNG));
    in_a_batch.upstream_encryption = 99;
    let answers = batch(&mut app, vec![item("unknown", in_a_batch)]).await;
    item_refusal(
        &answers["unknown"],
        "request.upstream_encryption",
        "InvalidParameterValue",
    );

    assert_eq!(app.upstream_stats().received, 0);
}

fn url_request(url: &str) -> VerifyIdCardRequest {
    VerifyIdCardRequest {
        source: Some(Source::ImageUrl(url.to_owned())),
        ..Default::default()
    }
}

/// URLs no caller may make the Tencent account fetch, and a word of each
/// refusal.
const INTERNAL_URLS: &[(&str, &str)] = &[
    ("http://127.0.0.1/a.jpg", "loopback"),
    ("http://2130706433/a.jpg", "loopback"),
    ("http://0x7f.0.0.1/a.jpg", "loopback"),
    ("http://[::1]/a.jpg", "loopback"),
    ("http://[::ffff:127.0.0.1]/a.jpg", "loopback"),
    ("http://10.0.0.8/a.jpg", "private"),
    ("http://172.16.5.4/a.jpg", "private"),
    ("http://192.168.0.10/a.jpg", "private"),
    ("http://[::ffff:192.168.0.10]/a.jpg", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/a.jpg", "link-local"),
    ("http://0.0.0.0/a.jpg", "unspecified"),
    ("http://[::]/a.jpg", "unspecified"),
    ("http://100.64.0.1/a.jpg", "CGNAT"),
    ("http://[fd00::1]/a.jpg", "unique-local"),
    ("http://localhost:9000/a.jpg", "localhost"),
    ("http://cards.localhost/a.jpg", "localhost"),
];

/// URLs that are not what they look like, and a word of each refusal.
const MALFORMED_URLS: &[(&str, &str)] = &[
    ("http:///a.jpg", "right after http://"),
    ("https:///example.com/a.jpg", "right after http://"),
    ("http:/example.com/a.jpg", "right after http://"),
    ("http:example.com/a.jpg", "right after http://"),
    ("https://example.com/a b.jpg", "whitespace"),
    ("https://example.com/a.jpg ", "whitespace"),
    (
        "https://example.com/a\r\nX-Injected: 1",
        "control characters",
    ),
    ("https://exam\tple.com/a.jpg", "control characters"),
    ("https://example.com/a\0.jpg", "control characters"),
];

#[tokio::test]
async fn internal_and_malformed_image_urls_are_refused_before_any_upstream_call() {
    let mut app = spawn_app().await;

    for (url, words) in INTERNAL_URLS.iter().chain(MALFORMED_URLS) {
        let description = refused(
            &mut app,
            url_request(url),
            "image_url",
            "InvalidParameterValue",
        )
        .await;

        assert!(description.contains(words), "{url:?}: {description}");
        assert!(!description.contains("a.jpg") && !description.contains("example"));
    }
    let answers = batch(
        &mut app,
        vec![
            item("no-host", url_request("http:///a.jpg")),
            item("metadata", url_request("http://169.254.169.254/")),
        ],
    )
    .await;
    for id in ["no-host", "metadata"] {
        item_refusal(&answers[id], "request.image_url", "InvalidParameterValue");
    }

    assert_eq!(
        app.upstream_stats().received,
        0,
        "nothing may reach the billed API"
    );
}

#[tokio::test]
async fn internal_image_urls_pass_only_with_allow_private_image_urls() {
    let mut app = spawn_app_with(Options {
        flags: vec!["--allow-private-image-urls".into()],
        ..Options::default()
    })
    .await;

    for (url, _) in INTERNAL_URLS {
        let answer = verified(&mut app.client, url_request(url)).await;
        assert_eq!(answer.verdict(), Verdict::Match, "{url}");
    }
    for (url, words) in MALFORMED_URLS {
        let description = refused(
            &mut app,
            url_request(url),
            "image_url",
            "InvalidParameterValue",
        )
        .await;
        assert!(description.contains(words), "{url:?}: {description}");
    }

    assert_eq!(app.upstream_stats().received, INTERNAL_URLS.len() as u64);
}

#[tokio::test]
async fn the_image_url_limit_counts_characters_not_bytes() {
    let mut app = spawn_app().await;
    let prefix = "https://example.com/";
    // 证 is three bytes in UTF-8.
    let url_of = |chars: usize| format!("{prefix}{}", "证".repeat(chars - prefix.len()));
    let at_limit = url_of(2048);
    assert!(at_limit.len() > 6000);

    let answer = verified(&mut app.client, url_request(&at_limit)).await;
    let description = refused(
        &mut app,
        url_request(&url_of(2049)),
        "image_url",
        "InvalidParameterValue",
    )
    .await;

    assert_eq!(answer.verdict(), Verdict::Match);
    assert_eq!(description, "is 2049 characters; the limit is 2048");
    assert_eq!(
        app.upstream_stats().received,
        1,
        "only the URL at the limit"
    );
}

#[tokio::test]
async fn the_item_id_limit_counts_characters_not_bytes() {
    let mut app = spawn_app().await;
    let image = || image_request(Bytes::from_static(PIXEL_PNG));
    // 43 Chinese characters are 129 bytes; 128 of them are 384.
    let short = "证".repeat(43);
    let at_limit = "证".repeat(128);
    let over = "证".repeat(129);

    let answers = batch(
        &mut app,
        vec![
            item(&short, image()),
            item(&at_limit, image()),
            item(&over, image()),
        ],
    )
    .await;

    for accepted in [&short, &at_limit] {
        assert!(
            matches!(answers[accepted].outcome, Some(Outcome::Result(_))),
            "{} characters: {:?}",
            accepted.chars().count(),
            answers[accepted].outcome
        );
    }
    let description = item_refusal(&answers[&over], "item_id", "InvalidParameterValue");
    assert_eq!(description, "is longer than 128 characters");
    assert_eq!(app.upstream_stats().received, 2);
}
