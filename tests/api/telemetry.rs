//! Traces, logs and metrics of the real binary: spans exported over OTLP
//! (gRPC and HTTP/protobuf) to a receiver in this test, flushed on SIGTERM,
//! in the caller's trace; log lines carrying trace ids; `/metrics` moving;
//! and no personal data or secret anywhere in them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use faceid_gateway::proto::id_card_verification_service_client::IdCardVerificationServiceClient;
use faceid_gateway::proto::verify_id_card_batch_response::Outcome;
use faceid_gateway::proto::{IdCard, Verdict, VerifyIdCardBatchRequest, VerifyIdCardResponse};
use http_body_util::{BodyExt as _, Full};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;

use crate::helpers::{png_with, request_with, venv_bin, within};
use crate::process::{Running, command};

/// Spans received by the test's OTLP endpoint.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Span>>>);

impl Received {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().unwrap();
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver on a loopback port.
async fn grpc_receiver() -> (SocketAddr, Received) {
    let received = Received::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(received.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, received)
}

/// An OTLP/HTTP (protobuf) receiver on a loopback port: `POST /v1/traces`.
async fn http_receiver() -> (SocketAddr, Received) {
    let received = Received::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = received.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let sink = sink.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            assert_eq!(request.uri().path(), "/v1/traces");
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            sink.add(
                                ExportTraceServiceRequest::decode(body).expect("OTLP protobuf"),
                            );
                            let reply = ExportTraceServiceResponse::default().encode_to_vec();
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::from(reply)))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value)
}

fn text(span: &Span, key: &str) -> Option<String> {
    match attribute(span, key)? {
        Value::StringValue(s) => Some(s),
        other => Some(format!("{other:?}")),
    }
}

fn int(span: &Span, key: &str) -> Option<i64> {
    match attribute(span, key)? {
        Value::IntValue(i) => Some(i),
        _ => None,
    }
}

fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
        .collect()
}

async fn scrape(admin: &str) -> String {
    faceid_gateway::install_crypto_provider();
    let client = reqwest::Client::new();
    let response = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    response.text().await.unwrap()
}

/// Parses `text` with the official Python Prometheus client (strict
/// OpenMetrics parser); returns `metric{labels}` → value for every sample.
async fn parse_metrics(text: String) -> HashMap<String, f64> {
    let python = venv_bin("python");
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = std::process::Command::new(python)
            .args([
                "-c",
                "import sys, json\n\
                 from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
                 out = {}\n\
                 for family in text_string_to_metric_families(sys.stdin.read()):\n\
                 \x20   for s in family.samples:\n\
                 \x20       labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))\n\
                 \x20       out[f'{s.name}{{{labels}}}'] = s.value\n\
                 print(json.dumps(out))",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "/metrics is not valid OpenMetrics: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Runs the scenario against a binary exporting with `protocol` to
/// `endpoint`: calls in the caller's trace, a batch and a refused call, then
/// SIGTERM; then checks the spans, log lines and metrics they left, and
/// that nothing personal or secret is among them.
async fn scenario(protocol: &str, endpoint: String, received: Received) {
    let (gateway, addr, admin) = start_a_gateway_exporting_to(protocol, endpoint).await;
    let before = parse_metrics(scrape(&admin).await).await;
    let mut client = IdCardVerificationServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let unary = a_retried_call_in_the_callers_trace_matches(&mut client).await;
    let batch_cards = a_batch_of_five_and_a_refused_call(&mut client).await;
    let metrics_text = scrape(&admin).await;
    let after = parse_metrics(metrics_text.clone()).await;
    let (spans, logs) = sigterm_exits_cleanly_and_flushes_the_spans(gateway, &received).await;

    let rpc = the_rpc_span_is_a_child_of_the_callers_span(&spans, &unary);
    its_children_are_two_waits_two_attempts_and_one_backoff(&spans, rpc, &unary);
    each_batch_item_has_a_span_and_a_request_id_of_its_own(&spans);
    each_completed_call_logs_one_line_with_trace_ids(&logs, &unary);
    the_metrics_counted_every_call_and_retry(&before, &after);
    nothing_personal_or_secret_leaks(
        &[&format!("{spans:?}"), &logs, &metrics_text],
        &unary,
        &batch_cards,
    );
}

/// `serve --simulate` exporting spans with `protocol` to `endpoint`, once
/// it serves; returns it with its gRPC and admin addresses.
async fn start_a_gateway_exporting_to(
    protocol: &str,
    endpoint: String,
) -> (Running, String, String) {
    let mut gateway = command(&["serve", "--simulate", "--listen", "127.0.0.1:0"]);
    gateway
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("OTEL_SERVICE_NAME", "faceid-gateway-test")
        .env("FACEID_RETRY_BASE_DELAY", "10ms")
        .env("RUST_LOG", "info");
    let mut gateway = Running::start(gateway);
    let serving = gateway.wait_for("faceid-gateway serving").await;
    let addr = serving["listen"].as_str().unwrap().to_owned();
    let admin = serving["admin_listen"].as_str().unwrap().to_owned();
    (gateway, addr, admin)
}

/// The unary call of the scenario and what it returned.
struct UnaryCall {
    /// The image sent.
    image: Bytes,
    /// The answer.
    answer: VerifyIdCardResponse,
    /// Its `x-tencent-request-id`.
    request_id: String,
    /// Its `traceresponse`.
    traceresponse: String,
}

/// A unary call in the caller's trace, failing once upstream and retried:
/// it matches, and `traceresponse` continues the caller's trace.
async fn a_retried_call_in_the_callers_trace_matches(
    client: &mut IdCardVerificationServiceClient<Channel>,
) -> UnaryCall {
    let image = png_with("key=traced,fail-first=1,error=InternalError");
    let mut request = tonic::Request::new(crate::helpers::image_request(image.clone()));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
            .parse()
            .unwrap(),
    );
    let response = client.verify_id_card(request).await.unwrap();
    let traceresponse = response
        .metadata()
        .get("traceresponse")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let request_id = response
        .metadata()
        .get("x-tencent-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let answer = response.into_inner();
    assert_eq!(answer.verdict(), Verdict::Match);
    assert!(
        traceresponse.starts_with(&format!("00-{CALLER_TRACE}-")),
        "{traceresponse}"
    );
    UnaryCall {
        image,
        answer,
        request_id,
        traceresponse,
    }
}

/// A batch of five items (all answered with a card) and one request refused
/// for its image; returns the batch's cards.
async fn a_batch_of_five_and_a_refused_call(
    client: &mut IdCardVerificationServiceClient<Channel>,
) -> Vec<IdCard> {
    let items: Vec<_> = (0..5)
        .map(|i| VerifyIdCardBatchRequest {
            item_id: format!("item-{i}"),
            request: Some(request_with(&format!("sim=9{i}"))),
        })
        .collect();
    let mut stream = client
        .verify_id_card_batch(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    let mut batch_cards = Vec::new();
    within("the batch stream to end", Duration::from_secs(30), async {
        while let Some(item) = stream.message().await.unwrap() {
            if let Some(Outcome::Result(r)) = item.outcome {
                batch_cards.push(r.id_card.unwrap());
            }
        }
    })
    .await;
    assert_eq!(batch_cards.len(), 5);
    let _ = client
        .verify_id_card(crate::helpers::image_request(Bytes::from_static(
            b"GIF89a private pixels",
        )))
        .await
        .unwrap_err();
    batch_cards
}

/// SIGTERM: the gateway exits cleanly, and the spans of the last calls are
/// still exported. Returns the spans received and the gateway's logs.
async fn sigterm_exits_cleanly_and_flushes_the_spans(
    gateway: Running,
    received: &Received,
) -> (Vec<Span>, String) {
    let (clean, logs) = gateway.terminate().await;
    assert!(clean, "{logs}");
    (received.spans(), logs)
}

/// The unary call's RPC span is the child of the caller's span, with the
/// RPC's attributes and the request id, and is the span `traceresponse`
/// names.
fn the_rpc_span_is_a_child_of_the_callers_span<'a>(
    spans: &'a [Span],
    unary: &UnaryCall,
) -> &'a Span {
    let rpc = spans
        .iter()
        .find(|s| {
            s.name == "faceid.v1.IdCardVerificationService/VerifyIdCard"
                && hex(&s.trace_id) == CALLER_TRACE
        })
        .unwrap_or_else(|| {
            panic!(
                "no RPC span in the caller's trace among {} spans",
                spans.len()
            )
        });
    assert_eq!(hex(&rpc.parent_span_id), CALLER_SPAN);
    assert_eq!(rpc.kind, SpanKind::Server as i32);
    assert_eq!(text(rpc, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        text(rpc, "rpc.service").as_deref(),
        Some("faceid.v1.IdCardVerificationService")
    );
    assert_eq!(text(rpc, "rpc.method").as_deref(), Some("VerifyIdCard"));
    assert_eq!(int(rpc, "rpc.grpc.status_code"), Some(0));
    assert_eq!(
        text(rpc, "tencent.request_id").as_deref(),
        Some(unary.request_id.as_str())
    );
    assert_eq!(
        text(rpc, "faceid.verdict").as_deref(),
        Some("VERDICT_MATCH")
    );
    assert_eq!(
        unary.traceresponse,
        format!("00-{CALLER_TRACE}-{}-01", hex(&rpc.span_id))
    );
    rpc
}

/// Under the RPC span: two rate-limit waits, two HTTP client attempts (the
/// first failed with InternalError and was retried), one backoff.
fn its_children_are_two_waits_two_attempts_and_one_backoff(
    spans: &[Span],
    rpc: &Span,
    unary: &UnaryCall,
) {
    let kids = children(spans, rpc);
    let attempts: Vec<_> = kids.iter().filter(|s| s.name == "POST").collect();
    let waits = kids
        .iter()
        .filter(|s| s.name == "faceid.rate_limit.wait")
        .count();
    let backoffs = kids
        .iter()
        .filter(|s| s.name == "faceid.retry.backoff")
        .count();
    assert_eq!((attempts.len(), waits, backoffs), (2, 2, 1), "{kids:#?}");
    let (first, second) = if int(attempts[0], "http.request.resend_count").is_none() {
        (attempts[0], attempts[1])
    } else {
        (attempts[1], attempts[0])
    };
    assert_eq!(first.kind, SpanKind::Client as i32);
    assert_eq!(text(first, "error.type").as_deref(), Some("InternalError"));
    assert_eq!(
        text(first, "tencent.code").as_deref(),
        Some("InternalError")
    );
    assert_eq!(text(first, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(text(first, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(int(first, "http.response.status_code"), Some(200));
    assert_eq!(
        text(first, "tencent.action").as_deref(),
        Some("CheckIdCardInformation")
    );
    assert_eq!(int(second, "http.request.resend_count"), Some(1));
    assert_eq!(
        text(second, "tencent.request_id").as_deref(),
        Some(unary.request_id.as_str())
    );
    assert_eq!(text(second, "tencent.code").as_deref(), Some("Success"));
}

/// The batch: one span per item under the stream's span, five distinct
/// request ids, one HTTP attempt under each item.
fn each_batch_item_has_a_span_and_a_request_id_of_its_own(spans: &[Span]) {
    let stream_span = spans
        .iter()
        .find(|s| s.name == "faceid.v1.IdCardVerificationService/VerifyIdCardBatch")
        .expect("the batch stream span");
    let items = children(spans, stream_span);
    assert_eq!(items.len(), 5, "{items:#?}");
    let mut ids: Vec<_> = items
        .iter()
        .filter_map(|s| text(s, "tencent.request_id"))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    for item in &items {
        assert_eq!(
            children(spans, item)
                .iter()
                .filter(|s| s.name == "POST")
                .count(),
            1
        );
    }
}

/// One "rpc completed" line per completed call (unary, five items, the
/// refused one), each with trace and span ids; the unary call's in the
/// caller's trace, with its request id.
fn each_completed_call_logs_one_line_with_trace_ids(logs: &str, unary: &UnaryCall) {
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let completed: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "rpc completed")
        .collect();
    assert_eq!(completed.len(), 1 + 5 + 1, "{completed:#?}");
    assert!(
        completed
            .iter()
            .all(|l| l["trace_id"].is_string() && l["span_id"].is_string())
    );
    let line = completed
        .iter()
        .find(|l| l["rpc.method"] == "VerifyIdCard" && l["rpc.grpc.status_code"] == "OK")
        .unwrap();
    assert_eq!(line["trace_id"], CALLER_TRACE);
    assert_eq!(line["tencent.request_id"], unary.request_id.as_str());
}

/// The metrics moved by exactly the calls, upstream answers and the retry
/// (and parse as OpenMetrics, which `before` and `after` already did).
fn the_metrics_counted_every_call_and_retry(
    before: &HashMap<String, f64>,
    after: &HashMap<String, f64>,
) {
    // Upstream figures are per endpoint: add them up.
    let total = |metrics: &HashMap<String, f64>, key: &str| -> f64 {
        metrics
            .iter()
            .filter(|(sample, _)| without_endpoint(sample) == key)
            .map(|(_, value)| value)
            .sum()
    };
    let delta = |key: &str| total(after, key) - total(before, key);
    assert_eq!(
        delta("faceid_rpcs_total{caller=anonymous,code=OK,method=VerifyIdCard}"),
        1.0
    );
    assert_eq!(
        delta("faceid_rpcs_total{caller=anonymous,code=INVALID_ARGUMENT,method=VerifyIdCard}"),
        1.0
    );
    assert_eq!(
        delta("faceid_rpcs_total{caller=anonymous,code=OK,method=VerifyIdCardBatch.item}"),
        5.0
    );
    assert_eq!(
        delta("faceid_rpcs_total{caller=anonymous,code=OK,method=VerifyIdCardBatch}"),
        1.0
    );
    assert_eq!(
        delta("faceid_tencent_responses_total{class=transient,code=InternalError*}"),
        1.0
    );
    assert_eq!(
        delta("faceid_tencent_responses_total{class=success,code=Success}"),
        6.0
    );
    assert_eq!(delta("faceid_upstream_retries_total{class=transient}"), 1.0);
    assert_eq!(after["faceid_upstream_rate_limit{}"], 100.0);
    assert!(total(after, "faceid_upstream_attempt_duration_seconds_count{}") >= 7.0);
}

/// A sample's key (`name{a=1,endpoint=host:port,z=2}`) without its
/// `endpoint` label.
fn without_endpoint(key: &str) -> String {
    let Some(start) = key.find("endpoint=") else {
        return key.to_owned();
    };
    let end = key[start..]
        .find([',', '}'])
        .map_or(key.len(), |offset| start + offset);
    let (head, tail) = (&key[..start], &key[end..]);
    match head.strip_suffix(',') {
        Some(head) => format!("{head}{tail}"),
        None => format!("{head}{}", tail.strip_prefix(',').unwrap_or(tail)),
    }
}

/// No card holder's field, image bytes, signature or item id appears in any
/// of `telemetry` (spans, log lines, metrics).
fn nothing_personal_or_secret_leaks(telemetry: &[&str], unary: &UnaryCall, batch_cards: &[IdCard]) {
    let everything = telemetry.join("\n");
    let image_base64 = base64::engine::general_purpose::STANDARD.encode(&unary.image);
    let card = unary.answer.id_card.as_ref().unwrap();
    let mut forbidden = vec![
        card.name.clone(),
        card.id_number.clone(),
        card.address.clone(),
        image_base64[..40].to_owned(),
        "private pixels".to_owned(),
        "Signature=".to_owned(),
        "item-3".to_owned(),
    ];
    for card in batch_cards {
        forbidden.extend([
            card.name.clone(),
            card.id_number.clone(),
            card.address.clone(),
        ]);
    }
    for value in forbidden {
        assert!(
            !everything.contains(&value),
            "{value:?} leaked into telemetry"
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_over_otlp_grpc_follow_every_request_id_and_nothing_leaks() {
    let (addr, received) = grpc_receiver().await;
    scenario("grpc", format!("http://{addr}"), received).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_over_otlp_http_protobuf_arrive_too() {
    let (addr, received) = http_receiver().await;
    scenario("http/protobuf", format!("http://{addr}"), received).await;
}

/// The leak test with secrets the test knows: the Tencent secret key, a
/// caller token, the card holders' fields and the image bytes must appear in
/// no log line, exported span or metric of a run that covers unary calls,
/// a batch, refused input, upstream errors and retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_known_secrets_leaks_none_of_them() {
    let (otlp, received) = grpc_receiver().await;
    let simulator = crate::helpers::spawn_simulator(0).await;
    let dir = tempfile::tempdir().unwrap();
    let (token, line) = faceid_gateway::server::new_token("leak-test", None).unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, line).unwrap();
    let (gateway, addr, admin) =
        start_a_gateway_with_known_secrets(&simulator, &tokens, &format!("http://{otlp}")).await;

    let (image, cards) = calls_of_every_kind_with_a_token(&addr, &token).await;
    let metrics = scrape(&admin).await;
    let (clean, logs) = gateway.terminate().await;
    assert!(clean);
    let spans = received.spans();
    assert!(
        !spans.is_empty() && logs.lines().count() > 50,
        "the run produced telemetry"
    );
    assert!(
        logs.contains("faceid-gateway stopped"),
        "every log line of the run was read, to the last"
    );

    no_known_secret_appears_in(
        &format!("{spans:?}\n{logs}\n{metrics}"),
        &token,
        &image,
        &cards,
    );
    assert!(
        metrics.contains(r#"caller="leak-test""#),
        "the caller is a metric label"
    );
}

/// `serve` calling `simulator` with the test's Tencent keys, the caller
/// tokens in `tokens`, TRACE logs and OTLP/gRPC export to `otlp`, once it
/// serves; returns it with its gRPC and admin addresses.
async fn start_a_gateway_with_known_secrets(
    simulator: &faceid_gateway::simulator::Simulator,
    tokens: &std::path::Path,
    otlp: &str,
) -> (Running, String, String) {
    let mut gateway = command(&["serve", "--listen", "127.0.0.1:0"]);
    gateway
        .env("TENCENTCLOUD_SECRET_ID", crate::helpers::SECRET_ID)
        .env("TENCENTCLOUD_SECRET_KEY", crate::helpers::SECRET_KEY)
        .env("FACEID_ENDPOINT", simulator.endpoint().as_str())
        .env("FACEID_AUTH_TOKENS_FILE", tokens)
        .env("FACEID_RETRY_BASE_DELAY", "5ms")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("RUST_LOG", "trace");
    let mut gateway = Running::start(gateway);
    let serving = gateway.wait_for("faceid-gateway serving").await;
    let addr = serving["listen"].as_str().unwrap().to_owned();
    let admin = serving["admin_listen"].as_str().unwrap().to_owned();
    (gateway, addr, admin)
}

/// With `token`: a unary call retried once, a batch of three, three upstream
/// errors and a refused image; then one call without a token. Returns the
/// retried call's image and every card answered.
async fn calls_of_every_kind_with_a_token(addr: &str, token: &str) -> (Bytes, Vec<IdCard>) {
    let mut client = IdCardVerificationServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let authorized = |request| {
        let mut request = tonic::Request::new(request);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };

    let image = png_with("key=leak-retry,fail-first=1,error=InternalError");
    let answer = client
        .verify_id_card(authorized(crate::helpers::image_request(image.clone())))
        .await
        .unwrap()
        .into_inner();
    let mut cards = vec![answer.id_card.unwrap()];
    let items: Vec<_> = (0..3)
        .map(|i| VerifyIdCardBatchRequest {
            item_id: format!("applicant-{i}"),
            request: Some(request_with(&format!("sim=9{i}"))),
        })
        .collect();
    let mut stream = client
        .verify_id_card_batch(authorized_stream(items, token))
        .await
        .unwrap()
        .into_inner();
    within("the batch stream to end", Duration::from_secs(30), async {
        while let Some(item) = stream.message().await.unwrap() {
            if let Some(Outcome::Result(r)) = item.outcome {
                cards.push(r.id_card.unwrap());
            }
        }
    })
    .await;
    for directives in [
        "error=FailedOperation.IdNameMisMatch",
        "error=ServiceUnavailable",
        "error=AuthFailure.SignatureFailure",
    ] {
        let _ = client
            .verify_id_card(authorized(request_with(directives)))
            .await;
    }
    let _ = client
        .verify_id_card(authorized(crate::helpers::image_request(
            Bytes::from_static(b"GIF89a secret pixels"),
        )))
        .await;
    let _ = client.verify_id_card(request_with("")).await; // no token
    (image, cards)
}

/// Neither the secret key, nor `token` (or a piece of it), nor a piece of
/// `image`, nor a batch item id, nor a signature, nor a field of `cards`
/// appears in `everything`.
fn no_known_secret_appears_in(everything: &str, token: &str, image: &[u8], cards: &[IdCard]) {
    let image_base64 = base64::engine::general_purpose::STANDARD.encode(image);
    let mut forbidden = vec![
        crate::helpers::SECRET_KEY.to_owned(),
        token.to_owned(),
        token[4..20].to_owned(),
        image_base64[..40].to_owned(),
        image_base64[image_base64.len() / 2..image_base64.len() / 2 + 40].to_owned(),
        "secret pixels".to_owned(),
        "applicant-1".to_owned(),
        "Signature=".to_owned(),
    ];
    for card in cards {
        forbidden.extend([
            card.name.clone(),
            card.id_number.clone(),
            card.address.clone(),
        ]);
    }
    for value in forbidden {
        assert!(!value.is_empty());
        assert!(
            !everything.contains(&value),
            "{value:?} leaked into logs, spans or metrics"
        );
    }
}

fn authorized_stream(
    items: Vec<VerifyIdCardBatchRequest>,
    token: &str,
) -> tonic::Request<impl tokio_stream::Stream<Item = VerifyIdCardBatchRequest> + use<>> {
    let mut request = tonic::Request::new(tokio_stream::iter(items));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The leak test on temporary keys: the real binary gets its keys from TKE
/// OIDC (a known web-identity token) and assumes a role with them
/// (`--role-arn`), both renewed every second or two, one call is refused
/// for revoked keys and sent again; neither the token, nor any temporary
/// key or session token the simulator issued, nor the role ARN's account id
/// appears in a log line (TRACE), an exported span or `/metrics`, while the
/// STS calls do have their spans and the renewals their metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_temporary_keys_leaks_none_of_them() {
    let (otlp, received) = grpc_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let web_identity_token = "eyJhbGciOiJSUzI1NiJ9.known-web-identity-token.c2lnbmF0dXJl";
    std::fs::write(&token_file, web_identity_token).unwrap();
    let mut config = faceid_gateway::simulator::SimulatorConfig::new(
        crate::helpers::SECRET_ID,
        crate::helpers::SECRET_KEY,
    );
    config.rate_limit = 0;
    config.temporary_credentials_ttl = Duration::from_secs(3);
    config.web_identity_token_file = Some(token_file.clone());
    let simulator = crate::helpers::spawn_simulator_with(config).await;

    let mut gateway = command(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--credentials-source",
        "oidc",
        "--role-arn",
        crate::credentials::ROLE_ARN,
    ]);
    gateway
        .env("TKE_ROLE_ARN", crate::credentials::ROLE_ARN)
        .env("TKE_PROVIDER_ID", "tke-oidc-test")
        .env("TKE_WEB_IDENTITY_TOKEN_FILE", &token_file)
        .env("TKE_REGION", "ap-singapore")
        .env("FACEID_STS_ENDPOINT", simulator.endpoint().as_str())
        .env("FACEID_ENDPOINT", simulator.endpoint().as_str())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("RUST_LOG", "trace");
    let mut gateway = Running::start(gateway);
    let serving = gateway.wait_for("faceid-gateway serving").await;
    let addr = serving["listen"].as_str().unwrap().to_owned();
    let admin = serving["admin_listen"].as_str().unwrap().to_owned();
    let mut client = IdCardVerificationServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    // Calls for a few seconds: both layers of keys renew meanwhile.
    let mut issued = simulator.issued_temporary_credentials();
    for _ in 0..8 {
        client.verify_id_card(request_with("")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        issued.extend(simulator.issued_temporary_credentials());
    }
    // A call refused for revoked keys renews them and goes through.
    simulator.revoke_temporary_credentials();
    client.verify_id_card(request_with("")).await.unwrap();
    issued.extend(simulator.issued_temporary_credentials());
    let metrics = scrape(&admin).await;
    let (clean, logs) = gateway.terminate().await;
    assert!(clean);
    let spans = received.spans();

    let stats = simulator.stats();
    assert!(
        stats.credential_calls("AssumeRoleWithWebIdentity:Success") >= 2
            && stats.credential_calls("AssumeRole:Success") >= 3,
        "both layers renewed: {:?}",
        stats.credential_calls
    );
    // (Zero when a scheduled renewal slipped in between the revocation and
    // the call; the leak checks below hold either way.)
    assert!(stats.count("AuthFailure.SecretIdNotFound") <= 1);
    for action in ["AssumeRoleWithWebIdentity", "AssumeRole"] {
        assert!(
            spans.iter().any(|span| span.kind == SpanKind::Client as i32
                && text(span, "tencent.action").as_deref() == Some(action)
                && text(span, "tencent.code").as_deref() == Some("Success")),
            "an STS client span for {action}"
        );
    }
    assert!(
        metrics
            .contains(r#"faceid_credentials_refresh_total{source="role-arn",outcome="success"}"#)
            && metrics.contains(r#"faceid_credentials_expiry_timestamp_seconds{source="oidc"}"#),
        "{metrics}"
    );

    assert!(
        logs.contains("temporary Tencent keys renewed")
            && logs.contains("faceid-gateway stopped")
            && logs.contains("Tencent refused the temporary keys as stale")
                == (stats.count("AuthFailure.SecretIdNotFound") == 1),
        "the whole run was logged: the renewals and the refusal"
    );

    let everything = format!("{spans:?}\n{logs}\n{metrics}");
    let mut forbidden = vec![
        web_identity_token.to_owned(),
        "known-web-identity-token".to_owned(),
        "100000000001".to_owned(),
        crate::helpers::SECRET_KEY.to_owned(),
        "Signature=".to_owned(),
    ];
    assert!(issued.len() >= 5, "keys were issued: {}", issued.len());
    for (secret_id, secret_key, token) in &issued {
        use secrecy::ExposeSecret as _;
        forbidden.extend([
            secret_id.clone(),
            secret_key.expose_secret().to_owned(),
            token.expose_secret().to_owned(),
        ]);
    }
    for value in forbidden {
        assert!(
            !everything.contains(&value),
            "{value:?} leaked into logs, spans or metrics"
        );
    }
}

/// Failover seen from outside: each attempt span names the endpoint it went
/// to (a retry moves from the failing primary to the backup; the probe that
/// restores the primary is marked), and the ejection and the restoration
/// are logged once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_spans_name_their_endpoint_and_ejection_and_restoration_are_logged_once() {
    use faceid_gateway::simulator::ServerFault;

    let (otlp, received) = grpc_receiver().await;
    let primary = crate::helpers::spawn_simulator(0).await;
    let backup = crate::helpers::spawn_simulator(0).await;
    primary.set_fault(ServerFault::Http(503), None);
    let mut gateway = command(&["serve", "--listen", "127.0.0.1:0"]);
    gateway
        .env("TENCENTCLOUD_SECRET_ID", crate::helpers::SECRET_ID)
        .env("TENCENTCLOUD_SECRET_KEY", crate::helpers::SECRET_KEY)
        .env(
            "FACEID_ENDPOINT",
            format!("{},{}", primary.endpoint(), backup.endpoint()),
        )
        .env("FACEID_EJECT_AFTER", "2")
        .env("FACEID_EJECT_FOR", "1s")
        .env("FACEID_RETRY_BASE_DELAY", "5ms")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("RUST_LOG", "info");
    let mut gateway = Running::start(gateway);
    let serving = gateway.wait_for("faceid-gateway serving").await;
    let mut client = IdCardVerificationServiceClient::connect(format!(
        "http://{}",
        serving["listen"].as_str().unwrap()
    ))
    .await
    .unwrap();

    // Two calls fail at the primary (ejecting it) and succeed at the backup.
    for _ in 0..4 {
        client.verify_id_card(request_with("")).await.unwrap();
    }
    assert_eq!(primary.stats().received, 2);
    // The primary heals; after the ejection a probe restores it.
    primary.set_fault(ServerFault::None, None);
    crate::helpers::wait_until(
        "a probe to restore the primary",
        Duration::from_secs(20),
        async || {
            client.verify_id_card(request_with("")).await.unwrap();
            primary.stats().received > 2
        },
    )
    .await;
    let (clean, logs) = gateway.terminate().await;
    assert!(clean);

    let count = |message: &str| {
        logs.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["message"] == message)
            .count()
    };
    assert_eq!(count("upstream endpoint ejected"), 1, "{logs}");
    assert_eq!(count("upstream endpoint restored"), 1, "{logs}");

    let spans = received.spans();
    let attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32 && s.name == "POST")
        .collect();
    let port =
        |simulator: &faceid_gateway::simulator::Simulator| i64::from(simulator.local_addr().port());
    for attempt in &attempts {
        assert_eq!(
            text(attempt, "server.address").as_deref(),
            Some("127.0.0.1")
        );
    }
    // The first call: the primary, then the retry at the backup.
    let first_trace = trace_of_the_first_attempt(&attempts);
    let mut first: Vec<&&Span> = attempts
        .iter()
        .filter(|s| s.trace_id == first_trace)
        .collect();
    first.sort_by_key(|s| s.start_time_unix_nano);
    let ports: Vec<_> = first.iter().map(|s| int(s, "server.port")).collect();
    assert_eq!(ports, [Some(port(&primary)), Some(port(&backup))]);
    assert_eq!(int(first[0], "http.response.status_code"), Some(503));
    assert_eq!(int(first[1], "http.request.resend_count"), Some(1));
    // The probe went to the primary and is marked as such.
    let probes: Vec<_> = attempts
        .iter()
        .filter(|s| attribute(s, "faceid.upstream.probe").is_some())
        .collect();
    assert_eq!(probes.len(), 1, "{probes:?}");
    assert_eq!(int(probes[0], "server.port"), Some(port(&primary)));
    assert_eq!(
        text(probes[0], "url.full"),
        Some(primary.endpoint().to_string())
    );
}

/// The trace of the earliest attempt span.
fn trace_of_the_first_attempt(attempts: &[&Span]) -> Vec<u8> {
    attempts
        .iter()
        .min_by_key(|s| s.start_time_unix_nano)
        .map(|s| s.trace_id.clone())
        .unwrap()
}
