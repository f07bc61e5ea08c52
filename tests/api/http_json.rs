//! HTTP/JSON on the gRPC port: the same service as gRPC, reached with a
//! POST of proto3 JSON over HTTP/1.1 or HTTP/2, its errors as grpc-gateway
//! maps them with typed details, its batch as NDJSON.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use crate::helpers::{Options, metric, png_with, spawn_app_with, within};

const VERIFY: &str = "/v1/idcard:verify";
const VERIFY_BATCH: &str = "/v1/idcard:verifyBatch";

fn flags(list: &[&str]) -> Options {
    Options {
        flags: list.iter().map(|s| (*s).to_owned()).collect(),
        ..Options::default()
    }
}

/// The two transports an HTTP/JSON caller may use.
#[derive(Debug, Clone, Copy)]
enum Version {
    Http1,
    Http2,
}

fn client(version: Version) -> reqwest::Client {
    faceid_gateway::install_crypto_provider();
    let builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    match version {
        Version::Http1 => builder.http1_only(),
        Version::Http2 => builder.http2_prior_knowledge(),
    }
    .build()
    .unwrap()
}

fn image_json(directives: &str) -> Value {
    json!({ "image": base64::engine::general_purpose::STANDARD.encode(png_with(directives)) })
}

/// POSTs `body` as JSON to `path`; returns the status, headers and JSON.
async fn post(
    version: Version,
    addr: SocketAddr,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = client(version)
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = within(
        "an HTTP/JSON answer",
        Duration::from_secs(30),
        request.send(),
    )
    .await
    .expect("the gateway answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, headers, json)
}

/// The detail of `@type` google.rpc.`name` in an error body.
fn detail<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details: {body}"))
        .iter()
        .find(|d| d["@type"] == format!("type.googleapis.com/google.rpc.{name}"))
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

#[tokio::test]
async fn a_match_over_http1_and_http2_is_the_proto3_json_answer() {
    let app = spawn_app_with(flags(&[])).await;
    for version in [Version::Http1, Version::Http2] {
        let (status, headers, body) = post(version, app.addr, VERIFY, &image_json(""), &[]).await;

        assert_eq!(status, 200, "{version:?}: {body}");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(body["verdict"], "VERDICT_MATCH", "{body}");
        assert_eq!(body["simulated"], true);
        assert!(body["similarity"].as_f64().unwrap() >= 70.0);
        let request_id = body["requestId"].as_str().expect("requestId").to_owned();
        assert_eq!(headers["x-tencent-request-id"], request_id.as_str());
    }
    assert_eq!(
        metric(
            app.admin_addr,
            r#"faceid_rpcs_total{method="http.VerifyIdCard",caller="anonymous",code="OK"}"#
        )
        .await,
        2
    );
}

#[tokio::test]
async fn snake_case_names_and_image_urls_are_read_too() {
    let app = spawn_app_with(flags(&[])).await;
    let body = json!({
        "image_url": "https://example.com/FACEID-SIM[result=FailedOperation.IdNameMisMatch]",
        "checks": {"copy_warn": true},
    });
    let (status, _, answer) = post(Version::Http1, app.addr, VERIFY, &body, &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["verdict"], "VERDICT_ID_NAME_MISMATCH");
}

#[tokio::test]
async fn each_error_class_has_grpc_gateways_status_and_typed_details() {
    let app = spawn_app_with(flags(&[])).await;
    for (directives, http, code, reason, more) in [
        (
            "error=InternalError",
            503,
            14,
            "InternalError",
            Some("RetryInfo"),
        ),
        (
            "error=FailedOperation.ImageNoIdCard",
            400,
            3,
            "FailedOperation.ImageNoIdCard",
            Some("BadRequest"),
        ),
        (
            "error=UnauthorizedOperation.Arrears",
            400,
            9,
            "UnauthorizedOperation.Arrears",
            Some("PreconditionFailure"),
        ),
        (
            "error=AuthFailure.SignatureFailure",
            500,
            13,
            "AuthFailure.SignatureFailure",
            None,
        ),
        (
            "error=FailedOperation.RequestLimitExceeded",
            429,
            8,
            "FailedOperation.RequestLimitExceeded",
            Some("QuotaFailure"),
        ),
        ("error=Strange.NewCode", 500, 2, "Strange.NewCode", None),
    ] {
        let (status, headers, body) = post(
            Version::Http1,
            app.addr,
            VERIFY,
            &image_json(directives),
            &[],
        )
        .await;

        assert_eq!(status, http, "{directives}: {body}");
        assert_eq!(body["code"], code, "{directives}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(
            body["details"][0]["@type"],
            "type.googleapis.com/google.rpc.ErrorInfo"
        );
        assert_eq!(detail(&body, "ErrorInfo")["reason"], reason, "{body}");
        if let Some(name) = more {
            detail(&body, name);
        }
        if http == 503 {
            assert!(headers.contains_key("retry-after"), "{headers:?}");
        }
    }
}

#[tokio::test]
async fn bad_input_is_a_400_with_a_bad_request_and_never_an_upstream_call() {
    let app = spawn_app_with(flags(&[])).await;
    let (status, _, body) =
        post(Version::Http1, app.addr, VERIFY, &json!({"image": ""}), &[]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        detail(&body, "BadRequest")["fieldViolations"][0]["field"],
        "image"
    );

    // Syntax errors and unknown fields point at the problem.
    for (text, field) in [
        (r#"{"image": "#, "body"),
        (r#"{"imageUrl": 42}"#, "body"),
        (r#"{"image": "AAAA", "nickname": "x"}"#, "nickname"),
    ] {
        let response = client(Version::Http1)
            .post(format!("http://{}{VERIFY}", app.addr))
            .header("content-type", "application/json")
            .body(text)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{text}");
        let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        let violation = &detail(&body, "BadRequest")["fieldViolations"][0];
        assert_eq!(violation["field"], field, "{text}: {body}");
        assert_eq!(detail(&body, "ErrorInfo")["reason"], "MalformedMessage");
        assert!(!body.to_string().contains("42"), "{body}");
    }
    // Wrong content type, wrong method, unknown route.
    let response = client(Version::Http1)
        .post(format!("http://{}{VERIFY}", app.addr))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = client(Version::Http1)
        .get(format!("http://{}{VERIFY}", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let response = client(Version::Http1)
        .post(format!("http://{}/v1/idcard:guess", app.addr))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(app.upstream_stats().received, 0);
}

#[tokio::test]
async fn a_body_over_the_largest_valid_image_is_refused_429() {
    let app = spawn_app_with(flags(&[])).await;
    let huge = json!({ "image": "A".repeat(8 * 1024 * 1024) });
    let (status, _, body) = post(Version::Http2, app.addr, VERIFY, &huge, &[]).await;
    assert_eq!(
        status,
        429,
        "{}",
        &body.to_string()[..200.min(body.to_string().len())]
    );
    assert_eq!(detail(&body, "ErrorInfo")["reason"], "MessageTooLarge");
    assert_eq!(app.upstream_stats().received, 0);
}

#[tokio::test]
async fn the_deadline_header_bounds_the_call_and_answers_504() {
    let app = spawn_app_with(flags(&[])).await;
    for header in [("x-request-timeout", "0.3"), ("grpc-timeout", "300m")] {
        let (status, _, body) = post(
            Version::Http1,
            app.addr,
            VERIFY,
            &image_json("delay=3000"),
            &[header],
        )
        .await;
        assert_eq!(status, 504, "{header:?}: {body}");
        assert_eq!(body["code"], 4);
    }
    let (status, _, body) = post(
        Version::Http1,
        app.addr,
        VERIFY,
        &image_json(""),
        &[("x-request-timeout", "soon")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        detail(&body, "BadRequest")["fieldViolations"][0]["field"],
        "x-request-timeout"
    );
}

#[tokio::test]
async fn callers_need_a_token_like_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let (token, line) = faceid_gateway::server::new_token("php-shop", Some(1)).unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, line).unwrap();
    let app = spawn_app_with(flags(&["--auth-tokens-file", tokens.to_str().unwrap()])).await;

    let (status, _, body) = post(Version::Http1, app.addr, VERIFY, &image_json(""), &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(detail(&body, "ErrorInfo")["reason"], "MissingToken");

    let bearer = format!("Bearer {token}");
    let (status, _, body) = post(
        Version::Http1,
        app.addr,
        VERIFY,
        &image_json(""),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The caller's share (quota=1) holds over HTTP/JSON too.
    let (status, headers, body) = post(
        Version::Http1,
        app.addr,
        VERIFY,
        &image_json(""),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        detail(&body, "QuotaFailure")["violations"][0]["subject"],
        "caller:php-shop"
    );
    assert!(headers.contains_key("retry-after"));
}

/// The lines of an NDJSON answer.
fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect()
}

fn batch_body(items: &[(&str, Value)]) -> String {
    items
        .iter()
        .map(|(id, request)| json!({"itemId": id, "request": request}).to_string() + "\n")
        .collect()
}

#[tokio::test]
async fn an_ndjson_batch_answers_each_item_once_then_sums_up() {
    let app = spawn_app_with(flags(&[])).await;
    let body = batch_body(&[
        ("a", image_json("")),
        ("b", json!({"image": ""})),
        (
            "c",
            image_json("result=FailedOperation.CompareLowSimilarity"),
        ),
    ]);
    for version in [Version::Http1, Version::Http2] {
        let response = client(version)
            .post(format!("http://{}{VERIFY_BATCH}", app.addr))
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/x-ndjson");
        let lines = ndjson(&response.text().await.unwrap());

        assert_eq!(lines.len(), 4, "{version:?}: {lines:?}");
        let (answers, summary) = lines.split_at(3);
        let mut ids: Vec<&str> = answers
            .iter()
            .map(|l| l["itemId"].as_str().unwrap())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, ["a", "b", "c"]);
        for answer in answers {
            match answer["itemId"].as_str().unwrap() {
                "a" => assert_eq!(answer["result"]["verdict"], "VERDICT_MATCH"),
                "b" => {
                    assert_eq!(answer["error"]["code"], 3);
                    assert_eq!(
                        detail(&answer["error"], "BadRequest")["fieldViolations"][0]["field"],
                        "request.image"
                    );
                }
                _ => assert_eq!(answer["result"]["verdict"], "VERDICT_LOW_SIMILARITY"),
            }
        }
        let summary = &summary[0]["summary"];
        assert_eq!(summary["received"], 3, "{summary}");
        assert_eq!(summary["succeeded"], 2);
        assert_eq!(summary["failed"], 1);
        assert_eq!(summary["status"]["code"], 0);
    }
}

#[tokio::test]
async fn a_bad_ndjson_line_ends_the_batch_after_the_items_before_it() {
    let app = spawn_app_with(flags(&[])).await;
    let mut body = batch_body(&[("first", image_json(""))]);
    body.push_str("{not json\n");
    body.push_str(&batch_body(&[("never", image_json(""))]));
    let response = client(Version::Http1)
        .post(format!("http://{}{VERIFY_BATCH}", app.addr))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    let lines = ndjson(&response.text().await.unwrap());
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["itemId"], "first");
    let status = &lines[1]["summary"]["status"];
    assert_eq!(status["code"], 3, "{status}");
    assert_eq!(
        detail(status, "BadRequest")["fieldViolations"][0]["field"],
        "line 2"
    );
}

#[tokio::test]
async fn over_http2_the_batch_counts_also_come_as_trailers() {
    let app = spawn_app_with(flags(&[])).await;
    let stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{}{VERIFY_BATCH}", app.addr))
        .header("content-type", "application/x-ndjson")
        .body(http_body_util::Full::new(Bytes::from(batch_body(&[
            ("x", image_json("")),
            ("y", image_json("")),
        ]))))
        .unwrap();

    let response = within(
        "the batch answer",
        Duration::from_secs(30),
        sender.send_request(request),
    )
    .await
    .unwrap();
    let collected = within(
        "the batch body",
        Duration::from_secs(30),
        response.into_body().collect(),
    )
    .await
    .unwrap();

    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["x-batch-received"], "2");
    assert_eq!(trailers["x-batch-succeeded"], "2");
    assert_eq!(trailers["x-batch-failed"], "0");
    let text = String::from_utf8(collected.to_bytes().to_vec()).unwrap();
    assert_eq!(ndjson(&text).len(), 3);
}

#[tokio::test]
async fn traceparent_in_gives_traceresponse_out_in_the_callers_trace() {
    let mut gateway = crate::process::Running::start(crate::process::command(&[
        "serve",
        "--simulate",
        "--listen",
        "127.0.0.1:0",
    ]));
    let serving = gateway.wait_for("faceid-gateway serving").await;
    let addr: SocketAddr = serving["listen"].as_str().unwrap().parse().unwrap();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");

    for (body, status) in [(image_json(""), 200), (json!({"image": ""}), 400)] {
        let (got, headers, answer) = post(
            Version::Http1,
            addr,
            VERIFY,
            &body,
            &[("traceparent", &traceparent)],
        )
        .await;
        assert_eq!(got, status, "{answer}");
        let traceresponse = headers["traceresponse"].to_str().unwrap();
        assert!(
            traceresponse.starts_with(&format!("00-{trace}-")),
            "{traceresponse}"
        );
    }
    let (clean, logs) = gateway.terminate().await;
    assert!(clean, "{logs}");
    assert!(
        logs.contains(r#""rpc.method":"http.VerifyIdCard""#),
        "{logs}"
    );
}
