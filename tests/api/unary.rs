//! `VerifyIdCard` end to end: gateway → signed HTTP → simulator → mapping.

use bytes::Bytes;
use faceid_gateway::proto::{
    Checks, Verdict, VerifyIdCardRequest, Warning, verify_id_card_request::Source,
};
use faceid_gateway::tencent::image::MAX_IMAGE_BYTES;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{
    Options, image_request, png_with, request_with, spawn_app, spawn_app_with, verified,
};

#[tokio::test]
async fn a_plain_image_is_a_simulated_match() {
    let mut app = spawn_app().await;

    let response = app.client.verify_id_card(request_with("")).await.unwrap();

    let header_request_id = response
        .metadata()
        .get("x-tencent-request-id")
        .expect("request id header")
        .to_str()
        .unwrap()
        .to_owned();
    let answer = response.into_inner();
    assert_eq!(answer.verdict(), Verdict::Match);
    assert!(
        (90.0..100.0).contains(&answer.similarity),
        "{}",
        answer.similarity
    );
    assert_eq!(answer.result_code, "Success");
    assert!(answer.simulated);
    assert_eq!(answer.request_id, header_request_id);
    let card = answer.id_card.expect("card fields");
    assert_eq!(card.id_number.len(), 18);
    assert!(!card.name.is_empty() && card.address.contains("simulated"));
    assert!(answer.portrait.starts_with(b"\x89PNG"));
    assert!(answer.warnings.is_empty() && answer.quality.is_none());

    let stats = app.upstream_stats();
    assert_eq!((stats.received, stats.count("Success")), (1, 1));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_image_url_is_verified() {
    let mut app = spawn_app().await;
    let request = VerifyIdCardRequest {
        source: Some(Source::ImageUrl("https://example.com/card.jpg".into())),
        ..Default::default()
    };

    let answer = verified(&mut app.client, request).await;

    assert_eq!(answer.verdict(), Verdict::Match);
    assert_eq!(app.upstream_stats().received, 1);
}

#[tokio::test]
async fn success_below_the_threshold_is_not_a_match() {
    let mut app = spawn_app().await;

    let answer = verified(&mut app.client, request_with("sim=42.5")).await;

    assert_eq!(answer.verdict(), Verdict::LowSimilarity);
    assert_eq!(answer.similarity, 42.5);
    assert_eq!(answer.result_code, "Success");
}

#[tokio::test]
async fn the_match_threshold_is_configurable() {
    let mut app = spawn_app_with(Options {
        flags: vec!["--match-threshold".into(), "95".into()],
        ..Options::default()
    })
    .await;

    let below = app
        .client
        .verify_id_card(request_with("sim=93"))
        .await
        .unwrap();
    let above = app
        .client
        .verify_id_card(request_with("sim=96"))
        .await
        .unwrap();

    assert_eq!(below.into_inner().verdict(), Verdict::LowSimilarity);
    assert_eq!(above.into_inner().verdict(), Verdict::Match);
}

#[tokio::test]
async fn verdict_codes_are_ok_answers_from_either_envelope() {
    let mut app = spawn_app().await;
    let cases = [
        (
            "FailedOperation.CompareLowSimilarity",
            Verdict::LowSimilarity,
        ),
        ("FailedOperation.CompareFail", Verdict::CompareFailed),
        ("FailedOperation.IdNameMisMatch", Verdict::IdNameMismatch),
        ("FailedOperation.IdNoExistSystem", Verdict::IdNotFound),
        ("FailedOperation.IdPhotoNoExist", Verdict::IdPhotoNotFound),
        (
            "FailedOperation.IdPhotoPoorQuality",
            Verdict::IdPhotoPoorQuality,
        ),
        ("FailedOperation.OcrWarningOccurred", Verdict::Warning),
        (
            "FailedOperation.LifePhotoDetectFaces",
            Verdict::FaceRejected,
        ),
        ("FailedOperation.LifePhotoDetectFake", Verdict::FaceRejected),
        (
            "FailedOperation.LifePhotoDetectNoFaces",
            Verdict::FaceRejected,
        ),
        (
            "FailedOperation.LifePhotoPoorQuality",
            Verdict::FaceRejected,
        ),
        ("FailedOperation.LifePhotoSizeError", Verdict::FaceRejected),
        ("FailedOperation.ImageBlur", Verdict::ImageBlurry),
        ("FailedOperation.OcrFailed", Verdict::OcrFailed),
    ];
    for (code, verdict) in cases {
        for envelope in ["result", "error"] {
            // A high similarity must not turn a non-match into a match.
            let directives = format!("{envelope}={code},sim=99");
            let answer = app
                .client
                .verify_id_card(request_with(&directives))
                .await
                .unwrap_or_else(|s| panic!("{directives}: {s:?}"))
                .into_inner();
            assert_eq!(answer.verdict(), verdict, "{directives}");
            assert_eq!(answer.result_code, code, "{directives}");
        }
    }
}

#[tokio::test]
async fn warnings_fire_only_for_the_checks_requested() {
    let mut app = spawn_app().await;
    let mut request = request_with("warn=-9102|-9103");
    request.checks = Some(Checks {
        copy_warn: true,
        ..Checks::default()
    });

    let warned = verified(&mut app.client, request).await;
    let unchecked = verified(&mut app.client, request_with("warn=-9102|-9103")).await;

    assert_eq!(warned.verdict(), Verdict::Warning);
    assert_eq!(warned.warning_codes, ["-9102"]);
    assert_eq!(warned.warnings().collect::<Vec<_>>(), [Warning::Photocopy]);
    assert_eq!(unchecked.verdict(), Verdict::Match);
}

#[tokio::test]
async fn the_quality_score_comes_back_when_asked_for() {
    let mut app = spawn_app().await;
    let mut request = request_with("quality=77");
    request.checks = Some(Checks {
        quality: true,
        ..Checks::default()
    });

    let answer = verified(&mut app.client, request).await;

    assert_eq!(answer.quality, Some(77.0));
}

/// One directive per class of the table, and what the caller must get.
#[tokio::test]
async fn each_error_class_maps_to_its_grpc_code_with_details() {
    let mut app = spawn_app().await;
    let cases = [
        (
            "error=FailedOperation.ImageNoIdCard",
            Code::InvalidArgument,
            "FailedOperation.ImageNoIdCard",
        ),
        (
            "error=InvalidParameterValue",
            Code::InvalidArgument,
            "InvalidParameterValue",
        ),
        ("error=InternalError", Code::Unavailable, "InternalError"),
        (
            "result=FailedOperation.CompareSystemError",
            Code::Unavailable,
            "FailedOperation.CompareSystemError",
        ),
        (
            "error=RequestLimitExceeded",
            Code::ResourceExhausted,
            "RequestLimitExceeded",
        ),
        (
            "error=FailedOperation.RequestLimitExceeded",
            Code::ResourceExhausted,
            "FailedOperation.RequestLimitExceeded",
        ),
        (
            "error=AuthFailure.SecretIdNotFound",
            Code::Internal,
            "AuthFailure.SecretIdNotFound",
        ),
        (
            "error=FailedOperation.StsUnAuthErrError",
            Code::Internal,
            "FailedOperation.StsUnAuthErrError",
        ),
        (
            "error=UnauthorizedOperation.Arrears",
            Code::FailedPrecondition,
            "UnauthorizedOperation.Arrears",
        ),
        (
            "error=FailedOperation.SomethingNew",
            Code::Unknown,
            "FailedOperation.SomethingNew",
        ),
    ];
    for (directives, code, reason) in cases {
        let status = app
            .client
            .verify_id_card(request_with(directives))
            .await
            .unwrap_err();

        assert_eq!(status.code(), code, "{directives}: {status:?}");
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, reason, "{directives}");
        assert_eq!(info.domain, "faceid.tencentcloudapi.com");
        let request_id = info
            .metadata
            .get("request_id")
            .expect("request_id metadata");
        assert_eq!(
            status
                .metadata()
                .get("x-tencent-request-id")
                .unwrap()
                .to_str()
                .unwrap(),
            request_id
        );
        match code {
            Code::InvalidArgument => assert!(status.get_details_bad_request().is_some()),
            Code::Unavailable => assert!(status.get_details_retry_info().is_some()),
            Code::FailedPrecondition => {
                assert!(status.get_details_precondition_failure().is_some())
            }
            _ => {}
        }
    }
    let quota = app
        .client
        .verify_id_card(request_with("error=FailedOperation.RequestLimitExceeded"))
        .await
        .unwrap_err();
    assert!(quota.get_details_quota_failure().is_some());
    assert!(
        quota.get_details_retry_info().is_none(),
        "a quota is never worth retrying"
    );
}

#[tokio::test]
async fn upstream_faults_are_unavailable() {
    let mut app = spawn_app_with(Options {
        flags: vec!["--upstream-timeout".into(), "300ms".into()],
        ..Options::default()
    })
    .await;
    let cases = [
        ("http=503", "UpstreamHttpError"),
        ("http=404", "UpstreamHttpError"),
        ("fault=reset", "UpstreamTransportFailed"),
        ("fault=malformed", "UpstreamMalformedResponse"),
        ("fault=html", "UpstreamMalformedResponse"),
        ("delay=2000", "UpstreamTimeout"),
    ];
    for (directives, reason) in cases {
        let status = app
            .client
            .verify_id_card(request_with(directives))
            .await
            .unwrap_err();

        assert_eq!(status.code(), Code::Unavailable, "{directives}: {status:?}");
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            reason,
            "{directives}"
        );
        assert!(status.get_details_retry_info().is_some(), "{directives}");
    }
}

#[tokio::test]
async fn a_wrong_secret_key_is_an_internal_signature_failure() {
    let mut app = spawn_app_with(Options {
        gateway_secret_key: "not-the-right-key".into(),
        ..Options::default()
    })
    .await;

    let status = app
        .client
        .verify_id_card(request_with(""))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::Internal);
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "AuthFailure.SignatureFailure"
    );
    assert!(!status.message().contains("not-the-right-key"));
    let stats = app.upstream_stats();
    assert_eq!(stats.count("AuthFailure.SignatureFailure"), 1);
}

#[tokio::test]
async fn bad_input_is_refused_without_any_upstream_call() {
    let mut app = spawn_app().await;
    let mut oversized = png_with("").to_vec();
    oversized.resize(MAX_IMAGE_BYTES + 1, 0);
    let cases: Vec<(VerifyIdCardRequest, &str, &str)> = vec![
        (
            image_request(Bytes::new()),
            "image",
            "FailedOperation.EmptyImageError",
        ),
        (
            image_request(Bytes::from_static(b"GIF89a\x01\x00\x01\x00")),
            "image",
            "FailedOperation.ImageDecodeFailed",
        ),
        (
            image_request(Bytes::from_static(b"RIFF\0\0\0\0WEBPVP8 ")),
            "image",
            "FailedOperation.ImageDecodeFailed",
        ),
        (
            image_request(Bytes::from_static(b"BM\0\0\0\0")),
            "image",
            "FailedOperation.ImageDecodeFailed",
        ),
        (
            image_request(Bytes::from_static(b"just some random bytes")),
            "image",
            "FailedOperation.ImageDecodeFailed",
        ),
        (
            image_request(Bytes::from(oversized)),
            "image",
            "FailedOperation.ImageSizeTooLarge",
        ),
        (VerifyIdCardRequest::default(), "image", "MissingParameter"),
        (
            VerifyIdCardRequest {
                source: Some(Source::ImageUrl("ftp://example.com/a.jpg".into())),
                ..Default::default()
            },
            "image_url",
            "InvalidParameterValue",
        ),
    ];
    for (request, field, reason) in cases {
        let status = app.client.verify_id_card(request).await.unwrap_err();

        assert_eq!(status.code(), Code::InvalidArgument, "{reason}: {status:?}");
        let bad_request = status.get_details_bad_request().expect("BadRequest");
        assert_eq!(bad_request.field_violations[0].field, field);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, reason);
        assert_eq!(
            info.metadata.get("checked_by").map(String::as_str),
            Some("gateway")
        );
    }
    assert_eq!(
        app.upstream_stats().received,
        0,
        "nothing may reach the billed API"
    );
}

#[tokio::test]
async fn the_largest_valid_image_fits_and_anything_larger_is_refused() {
    let mut app = spawn_app().await;
    let mut largest = png_with("").to_vec();
    largest.resize(MAX_IMAGE_BYTES, b'x');
    let mut far_too_large = largest.clone();
    far_too_large.resize(MAX_IMAGE_BYTES + 64 * 1024, b'x');

    let answer = verified(&mut app.client, image_request(Bytes::from(largest))).await;
    let refused = app
        .client
        .verify_id_card(image_request(Bytes::from(far_too_large)))
        .await
        .unwrap_err();

    assert_eq!(answer.verdict(), Verdict::Match);
    assert_ne!(refused.code(), Code::Ok);
    assert_eq!(
        app.upstream_stats().received,
        1,
        "only the valid image went upstream"
    );
}
