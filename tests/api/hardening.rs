//! What an attacker or a careless client gets: keys with control
//! characters, bytes that are not a protobuf message, messages over the
//! limit, compressed requests, connections that never speak or never leave,
//! panics, cancelled streams, refused keys. Each answer is a clear gRPC
//! status with details, never a billed upstream call, never a crash.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf as _, BufMut as _, Bytes};
use faceid_gateway::proto::{VerifyIdCardBatchRequest, VerifyIdCardRequest};
use prost::Message as _;
use tokio::io::AsyncReadExt as _;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_types::StatusExt as _;

use crate::helpers::{
    Options, SAMPLE_PNG, SECRET_ID, SECRET_KEY, TestApp, request_with, spawn_app_with,
    spawn_simulator, verified,
};
use crate::process::{Running, command};

const VERIFY: &str = "/faceid.v1.IdCardVerificationService/VerifyIdCard";
const VERIFY_BATCH: &str = "/faceid.v1.IdCardVerificationService/VerifyIdCardBatch";

fn flags(list: &[&str]) -> Options {
    Options {
        flags: list.iter().map(|s| (*s).to_owned()).collect(),
        ..Options::default()
    }
}

async fn metrics_text(admin: SocketAddr) -> String {
    faceid_gateway::install_crypto_provider();
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("the admin port answers")
        .text()
        .await
        .unwrap()
}

/// The value of the sample `line` (name and labels) in `text`, 0 if absent.
fn sample(text: &str, line: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `condition` every 50 ms until it holds, failing after `timeout`
/// with `what` was awaited.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A codec that sends whatever bytes it is given as the message and hands
/// back the answer's bytes undecoded: how a broken or hostile client talks.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

async fn raw_client(addr: SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    tonic::client::Grpc::new(channel).max_encoding_message_size(64 * 1024 * 1024)
}

async fn raw_unary(addr: SocketAddr, message: Bytes) -> Result<Bytes, tonic::Status> {
    let mut client = raw_client(addr).await;
    client.ready().await.unwrap();
    client
        .unary(
            tonic::Request::new(message),
            http::uri::PathAndQuery::from_static(VERIFY),
            RawCodec,
        )
        .await
        .map(tonic::Response::into_inner)
}

/// Sends `messages` as one batch stream; returns the answers and how the
/// stream ended (with its trailers when it ended with a status).
async fn raw_batch(
    addr: SocketAddr,
    messages: Vec<Bytes>,
) -> (
    Vec<faceid_gateway::proto::VerifyIdCardBatchResponse>,
    tonic::Status,
) {
    let mut client = raw_client(addr).await;
    client.ready().await.unwrap();
    let mut request = tonic::Request::new(tokio_stream::iter(messages));
    request.set_timeout(Duration::from_secs(30));
    let mut stream = client
        .streaming(
            request,
            http::uri::PathAndQuery::from_static(VERIFY_BATCH),
            RawCodec,
        )
        .await
        .expect("the stream opens")
        .into_inner();
    let mut answers = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(bytes)) => answers.push(
                faceid_gateway::proto::VerifyIdCardBatchResponse::decode(bytes)
                    .expect("answers decode"),
            ),
            Ok(None) => {
                let trailers = stream.trailers().await.ok().flatten().unwrap_or_default();
                let mut ok = tonic::Status::ok("");
                *ok.metadata_mut() = trailers;
                return (answers, ok);
            }
            Err(status) => return (answers, status),
        }
    }
}

fn batch_item(id: &str) -> Bytes {
    VerifyIdCardBatchRequest {
        item_id: id.to_owned(),
        request: Some(request_with("")),
    }
    .encode_to_vec()
    .into()
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("ErrorInfo expected: {status:?}"))
        .reason
}

async fn app(list: &[&str]) -> TestApp {
    spawn_app_with(flags(list)).await
}

// --- 1. Keys with control characters; keys Tencent refuses -------------

#[tokio::test]
async fn keys_that_are_not_visible_ascii_stop_the_start_naming_the_variable() {
    for (secret_id, secret_key) in [
        ("AKID\n123", "secret-key-value"),
        ("AKIDé123", "secret-key-value"),
        ("AKIDgood", "secret\x01key"),
        ("AKIDgood", "secret\x7fkey"),
        ("AKIDgood", "secret-key\r\n"),
    ] {
        let output = tokio::time::timeout(
            Duration::from_secs(20),
            command(&["serve", "--listen", "127.0.0.1:0"])
                .env("TENCENTCLOUD_SECRET_ID", secret_id)
                .env("TENCENTCLOUD_SECRET_KEY", secret_key)
                .output(),
        )
        .await
        .expect("exits at once")
        .unwrap();

        assert!(!output.status.success(), "{secret_id:?} {secret_key:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let variable = if secret_id == "AKIDgood" {
            "TENCENTCLOUD_SECRET_KEY"
        } else {
            "TENCENTCLOUD_SECRET_ID"
        };
        assert!(stderr.contains(variable), "{stderr}");
        assert!(stderr.contains("visible ASCII"), "{stderr}");
        assert!(
            !stderr.contains("secret") && !stderr.contains("AKID"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn a_credentials_file_rewritten_with_a_control_character_keeps_the_previous_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials");
    let good = format!("[default]\nsecret_id = {SECRET_ID}\nsecret_key = {SECRET_KEY}\n");
    std::fs::write(&file, &good).unwrap();
    let simulator = spawn_simulator(0).await;
    let provider = faceid_gateway::tencent::CredentialProvider::from_file(&file).unwrap();
    let gateway = crate::helpers::spawn_gateway_with_credentials(
        &simulator,
        flags(&["--reload-interval", "50ms"]),
        provider,
    )
    .await;
    let mut client = gateway.client.clone();
    verified(&mut client, request_with("")).await;

    std::fs::write(
        &file,
        format!("[default]\nsecret_id = {SECRET_ID}\nsecret_key = {SECRET_KEY}\x01\n"),
    )
    .unwrap();
    // Several reload intervals pass with the bad file in place.
    tokio::time::sleep(Duration::from_millis(400)).await;

    for _ in 0..3 {
        let answer = verified(&mut client, request_with("")).await;
        assert!(answer.simulated);
    }
    assert_eq!(simulator.stats().count("Success"), 4);
}

#[tokio::test]
async fn keys_tencent_refuses_turn_readiness_not_serving_until_a_call_succeeds() {
    let app = app(&[]).await;
    let mut client = app.client.clone();
    let health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    let readyz = format!("http://{}/readyz", app.admin_addr);
    faceid_gateway::install_crypto_provider();
    let health_of = |health: &mut tonic_health::pb::health_client::HealthClient<_>| {
        let mut health = health.clone();
        async move {
            health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .status
        }
    };
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;

    // Tencent refuses three calls in a row (the simulator answers as it
    // would for a wrong key).
    for _ in 0..3 {
        let status = client
            .verify_id_card(request_with("error=AuthFailure.SignatureFailure"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Internal);
    }
    eventually(
        "health NOT_SERVING after refused keys",
        Duration::from_secs(5),
        || {
            let mut health = health.clone();
            async move { health_of(&mut health).await == not_serving }
        },
    )
    .await;
    let answer = reqwest::get(&readyz).await.unwrap();
    assert_eq!(answer.status(), 503);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("refuses the credentials")
    );

    // One call Tencent accepts restores readiness, without a restart.
    verified(&mut client, request_with("")).await;
    eventually(
        "health SERVING after an accepted call",
        Duration::from_secs(5),
        || {
            let mut health = health.clone();
            async move { health_of(&mut health).await == serving }
        },
    )
    .await;
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);
}

// --- 2. Connections that never speak, never leave, or are too many ------

/// Opens `n` TCP connections to `addr` that send nothing.
async fn silent_connections(addr: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut connections = Vec::with_capacity(n);
    for _ in 0..n {
        connections.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    connections
}

/// Waits until the peer has closed every one of `connections`, failing
/// after `timeout`.
async fn wait_all_closed(connections: &mut [tokio::net::TcpStream], timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    for (index, connection) in connections.iter_mut().enumerate() {
        while !closed_by_peer(connection).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "connection {index} still open after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether the peer has closed `connection` (reads end or fail).
async fn closed_by_peer(connection: &mut tokio::net::TcpStream) -> bool {
    let mut buffer = [0u8; 64];
    loop {
        match tokio::time::timeout(Duration::from_millis(10), connection.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return true,
            // The server may send its HTTP/2 settings before closing.
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn connections_that_never_shake_hands_are_closed_and_counted() {
    let app = app(&["--handshake-timeout", "500ms"]).await;
    let mut silent = silent_connections(app.addr, 200).await;

    wait_all_closed(&mut silent, Duration::from_secs(10)).await;
    let text = metrics_text(app.admin_addr).await;
    assert!(
        sample(
            &text,
            r#"faceid_connections_closed_total{port="grpc",reason="handshake_timeout"}"#
        ) >= 200.0,
        "{text}"
    );
    // A client that speaks is served meanwhile and after.
    let mut client = app.client.clone();
    verified(&mut client, request_with("")).await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_at_accept_and_counted() {
    let app = app(&["--max-connections", "5", "--handshake-timeout", "0"]).await;
    let mut held = silent_connections(app.addr, 5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let extra = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    wait_all_closed(&mut [extra], Duration::from_secs(5)).await;
    for connection in &mut held {
        assert!(
            !closed_by_peer(connection).await,
            "held connections stay open"
        );
    }
    let text = metrics_text(app.admin_addr).await;
    assert!(
        sample(&text, r#"faceid_connections_refused_total{port="grpc"}"#) >= 1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"faceid_connections_open{port="grpc"}"#),
        5.0,
        "{text}"
    );

    drop(held);
    eventually(
        "a call served once the held connections left",
        Duration::from_secs(5),
        || {
            let mut client = app.client.clone();
            async move { client.verify_id_card(request_with("")).await.is_ok() }
        },
    )
    .await;
}

#[tokio::test]
async fn a_connection_with_no_open_call_is_closed_after_the_idle_timeout() {
    let app = app(&["--idle-timeout", "300ms"]).await;
    let mut client = app.client.clone();
    verified(&mut client, request_with("")).await;

    eventually(
        "the idle connection closed",
        Duration::from_secs(5),
        || async {
            let text = metrics_text(app.admin_addr).await;
            sample(
                &text,
                r#"faceid_connections_closed_total{port="grpc",reason="idle"}"#,
            ) >= 1.0
        },
    )
    .await;
    // The client reconnects by itself.
    verified(&mut client, request_with("")).await;
}

#[tokio::test]
async fn out_of_file_descriptors_the_gateway_backs_off_instead_of_spinning() {
    // A file-descriptor limit the silent connections exhaust.
    let binary = env!("CARGO_BIN_EXE_faceid-gateway");
    let mut shell = tokio::process::Command::new("sh");
    shell
        .args([
            "-c",
            &format!(
                "ulimit -n 64 && exec {binary} serve --simulate --listen 127.0.0.1:0 \
                 --admin-listen 127.0.0.1:0 --handshake-timeout 2s --log-format json"
            ),
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut gateway = Running::start(shell);
    let serving = gateway.wait_for("faceid-gateway serving").await;
    let addr: SocketAddr = serving["listen"].as_str().unwrap().parse().unwrap();
    let pid = gateway.pid();

    let silent = silent_connections(addr, 120).await;
    let cpu_before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let busy = cpu_seconds(pid) - cpu_before;

    assert!(
        busy < 0.5,
        "{busy} s of CPU in 1.5 s: the accept loop spins"
    );
    gateway
        .wait_for("cannot accept connections; backing off until it works again")
        .await;
    drop(silent);
    // Once the silent connections are gone (or timed out), calls work.
    eventually("a call served after the exhaustion", Duration::from_secs(10), || async move {
        let Ok(mut client) = faceid_gateway::proto::id_card_verification_service_client::IdCardVerificationServiceClient::connect(format!("http://{addr}")).await else {
            return false;
        };
        client.verify_id_card(request_with("")).await.is_ok()
    })
    .await;
    let (clean, logs) = gateway.terminate().await;
    assert!(clean, "{logs}");
}

/// User plus system CPU seconds of process `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name in parentheses; utime and stime are
    // the 14th and 15th fields of the whole line.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

// --- 3. Bytes that are not a message, messages over the limit, gzip ----

#[tokio::test]
async fn bytes_that_are_not_a_request_message_are_invalid_argument_with_details() {
    let app = app(&[]).await;
    let variants: Vec<Bytes> = vec![
        Bytes::from_static(b"\xff\xff\xff\xff"),
        Bytes::from_static(b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"),
        Bytes::from_static(b"\x0a\x05ab"),
        Bytes::from_static(b"\x07"),
        Bytes::from_static(b"\x12\xff"),
        Bytes::from_static(b"\x0b\x0c"),
        Bytes::from_static(b"\x08"),
        Bytes::from_static(&[0x0a, 0x10, 1, 2, 3]),
        Bytes::from_static(b"\x1a\x03\x08\x80"),
    ];
    for message in variants {
        let status = raw_unary(app.addr, message.clone()).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{message:?}: {status:?}"
        );
        assert_eq!(reason(&status), "MalformedMessage", "{message:?}");
        assert!(
            status.message().contains("not a valid protobuf"),
            "{status:?}"
        );
    }
    assert_eq!(app.upstream_stats().received, 0);
}

#[tokio::test]
async fn an_undecodable_batch_message_ends_the_stream_after_answering_every_item_read() {
    let app = app(&[]).await;
    let messages = vec![
        batch_item("first"),
        batch_item("second"),
        Bytes::from_static(b"\xff\xff\xff"),
        batch_item("never-read"),
    ];

    let (answers, status) = raw_batch(app.addr, messages).await;

    let mut ids: Vec<&str> = answers.iter().map(|a| a.item_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["first", "second"]);
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason(&status), "MalformedMessage");
    assert!(status.message().contains("batch message #2"), "{status:?}");
    assert_eq!(status.metadata().get("x-batch-received").unwrap(), "2");
}

fn oversized_request() -> Bytes {
    let mut image = SAMPLE_PNG.to_vec();
    image.resize(6 * 1024 * 1024, 0);
    VerifyIdCardRequest {
        source: Some(faceid_gateway::proto::verify_id_card_request::Source::Image(image.into())),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

#[tokio::test]
async fn a_message_over_the_limit_is_resource_exhausted_with_details() {
    let app = app(&[]).await;

    let status = raw_unary(app.addr, oversized_request()).await.unwrap_err();

    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "MessageTooLarge");
    assert!(status.get_details_bad_request().is_some());
    assert_eq!(app.upstream_stats().received, 0);

    let oversized_item: Bytes = {
        let request = VerifyIdCardRequest::decode(oversized_request()).unwrap();
        VerifyIdCardBatchRequest {
            item_id: "big".into(),
            request: Some(request),
        }
        .encode_to_vec()
        .into()
    };
    let (answers, status) = raw_batch(app.addr, vec![batch_item("small"), oversized_item]).await;
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].item_id, "small");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "MessageTooLarge");
    assert!(status.message().contains("batch message #1"), "{status:?}");
    assert_eq!(status.metadata().get("x-batch-received").unwrap(), "1");
    assert_eq!(status.metadata().get("x-batch-succeeded").unwrap(), "1");
}

#[tokio::test]
async fn gzip_compressed_requests_are_accepted_and_answered_in_gzip_when_asked() {
    let app = app(&[]).await;
    let mut client = app
        .client
        .clone()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);

    let response = client.verify_id_card(request_with("")).await.unwrap();

    assert_eq!(response.metadata().get("grpc-encoding").unwrap(), "gzip");
    assert!(response.into_inner().simulated);
}

// --- 8. Cancelled batch streams ----------------------------------------

#[tokio::test]
async fn a_cancelled_batch_stream_is_logged_and_counted_as_cancelled() {
    let app = app(&[]).await;
    let mut client = app.client.clone();
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender
        .send(VerifyIdCardBatchRequest {
            item_id: "slow".into(),
            request: Some(request_with("delay=5000")),
        })
        .await
        .unwrap();
    let stream = client
        .verify_id_card_batch(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap();
    eventually(
        "the slow item reached the simulator",
        Duration::from_secs(5),
        || async { app.upstream_stats().in_flight == 1 },
    )
    .await;

    drop(stream);
    drop(sender);

    eventually("the stream counted as CANCELLED", Duration::from_secs(5), || async {
        let text = metrics_text(app.admin_addr).await;
        sample(
            &text,
            r#"faceid_rpcs_total{method="VerifyIdCardBatch",caller="anonymous",code="CANCELLED"}"#,
        ) == 1.0
            && sample(
                &text,
                r#"faceid_rpcs_total{method="VerifyIdCardBatch.item",caller="anonymous",code="CANCELLED"}"#,
            ) == 1.0
    })
    .await;
}

// --- 10. What the documentation promises -------------------------------

#[tokio::test]
async fn every_retry_family_is_present_at_zero_from_the_start() {
    let app = app(&[]).await;
    let text = metrics_text(app.admin_addr).await;
    for line in [
        r#"faceid_upstream_retries_total{class="transient"} 0"#,
        r#"faceid_upstream_retries_total{class="rate_limited"} 0"#,
        "faceid_panics_total 0",
        "faceid_rate_limit_rejections_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
}

#[tokio::test]
async fn zero_durations_mean_off_or_are_refused_with_a_message() {
    for flag in [
        "--upstream-timeout",
        "--connect-timeout",
        "--reload-interval",
        "--eject-for",
    ] {
        let output = command(&["serve", "--simulate", "--listen", "127.0.0.1:0", flag, "0s"])
            .output()
            .await
            .unwrap();
        assert!(!output.status.success(), "{flag} 0s");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("must be more than 0"), "{flag}: {stderr}");
    }
    // 0 means "no limit", as in gRPC: calls are served, no GOAWAY at once.
    let app = app(&[
        "--max-connection-age",
        "0s",
        "--idle-timeout",
        "0",
        "--keepalive-interval",
        "0s",
    ])
    .await;
    let mut client = app.client.clone();
    for _ in 0..3 {
        verified(&mut client, request_with("")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn boolean_variables_take_the_usual_spellings() {
    for value in ["1", "yes", "on", "true"] {
        let mut gateway = Running::start({
            let mut command = command(&["serve", "--listen", "127.0.0.1:0"]);
            command.env("FACEID_SIMULATE", value);
            command
        });
        let serving = gateway.wait_for("faceid-gateway serving").await;
        assert_eq!(serving["simulated"], true, "FACEID_SIMULATE={value}");
        let (clean, logs) = gateway.terminate().await;
        assert!(clean, "{logs}");
    }
    let output = command(&["serve", "--listen", "127.0.0.1:0"])
        .env("FACEID_SIMULATE", "perhaps")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--simulate") && stderr.contains("perhaps"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_bad_token_name_is_reported_as_a_name_problem() {
    let output = command(&["token", "--name", "bad name"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--name"), "{stderr}");
    assert!(!stderr.contains("tokens file"), "{stderr}");
}

#[tokio::test]
async fn refusals_for_a_missing_or_unknown_token_carry_traceresponse_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (_token, line) = faceid_gateway::server::new_token("billing", None).unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, line).unwrap();
    let mut gateway = Running::start(command(&[
        "serve",
        "--simulate",
        "--listen",
        "127.0.0.1:0",
        "--auth-tokens-file",
        tokens.to_str().unwrap(),
    ]));
    let serving = gateway.wait_for("faceid-gateway serving").await;
    let addr = serving["listen"].as_str().unwrap().to_owned();
    let admin: SocketAddr = serving["admin_listen"].as_str().unwrap().parse().unwrap();
    let mut client =
        faceid_gateway::proto::id_card_verification_service_client::IdCardVerificationServiceClient::connect(
            format!("http://{addr}"),
        )
        .await
        .unwrap();

    let missing = client.verify_id_card(request_with("")).await.unwrap_err();
    let mut unknown_request = tonic::Request::new(request_with(""));
    unknown_request
        .metadata_mut()
        .insert("authorization", "Bearer fgw_unknown".parse().unwrap());
    let unknown = client.verify_id_card(unknown_request).await.unwrap_err();

    for (status, why) in [(missing, "MissingToken"), (unknown, "UnknownToken")] {
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(reason(&status), why);
        let traceresponse = status
            .metadata()
            .get("traceresponse")
            .unwrap_or_else(|| panic!("{why}: no traceresponse"))
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            traceresponse.starts_with("00-") && traceresponse.len() == 55,
            "{traceresponse}"
        );
    }
    let text = metrics_text(admin).await;
    assert_eq!(
        sample(
            &text,
            r#"faceid_rpcs_total{method="VerifyIdCard",caller="anonymous",code="UNAUTHENTICATED"}"#
        ),
        2.0,
        "{text}"
    );
    let (clean, logs) = gateway.terminate().await;
    assert!(clean, "{logs}");
}

// --- 7. Shutdown answers every item read --------------------------------

#[tokio::test]
async fn shutdown_answers_every_batch_item_read_and_exits_within_the_drain_timeout() {
    let mut gateway = Running::start(command(&[
        "serve",
        "--simulate",
        "--listen",
        "127.0.0.1:0",
        "--rate-limit",
        "20",
        "--drain-timeout",
        "3s",
        "--batch-concurrency",
        "200",
        "--batch-global-concurrency",
        "200",
        "--rate-limit-max-wait",
        "30s",
    ]));
    let serving = gateway.wait_for("faceid-gateway serving").await;
    let addr = serving["listen"].as_str().unwrap().to_owned();
    let mut client =
        faceid_gateway::proto::id_card_verification_service_client::IdCardVerificationServiceClient::connect(
            format!("http://{addr}"),
        )
        .await
        .unwrap();
    let items: Vec<VerifyIdCardBatchRequest> = (0..200)
        .map(|i| VerifyIdCardBatchRequest {
            item_id: format!("item-{i}"),
            request: Some(request_with("")),
        })
        .collect();
    let mut stream = client
        .verify_id_card_batch(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    // Some answers arrive (20 per second), then the gateway is told to stop.
    let mut answers = Vec::new();
    while answers.len() < 10 {
        answers.push(stream.message().await.unwrap().expect("an answer"));
    }
    let pid = gateway.pid();
    let stopping = tokio::spawn(gateway.terminate_timed());

    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(answer))) => answers.push(answer),
            Ok(Ok(None)) => break tonic::Status::ok(""),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the stream neither answered nor ended within 10 s"),
        }
    };
    let (clean, took, logs) = stopping.await.unwrap();

    let mut ids: Vec<&str> = answers.iter().map(|a| a.item_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        200,
        "one answer per item ({} answers, end {end:?}, exit {took:?}):\n{logs}",
        answers.len()
    );
    assert_eq!(answers.len(), 200, "exactly one answer per item");
    let shutting_down = answers
        .iter()
        .filter(|a| {
            matches!(&a.outcome, Some(faceid_gateway::proto::verify_id_card_batch_response::Outcome::Error(e))
                if e.code == Code::Unavailable as i32)
        })
        .count();
    assert!(shutting_down > 0, "the rest answered GatewayShuttingDown");
    assert!(
        matches!(end.code(), Code::Ok | Code::Unavailable),
        "{end:?}"
    );
    assert!(clean, "{logs}");
    assert!(
        took <= Duration::from_secs(4),
        "exited {took:?} after SIGTERM (pid {pid}); the drain timeout is 3 s"
    );
}

// --- Fuzz: random and mutated messages and images -----------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_random_and_mutated_messages_get_only_clear_answers() {
    use rand::{Rng as _, SeedableRng as _};
    let app = app(&["--rate-limit", "1000000"]).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_f00d);
    let valid = VerifyIdCardRequest {
        source: Some(
            faceid_gateway::proto::verify_id_card_request::Source::Image(Bytes::from_static(
                SAMPLE_PNG,
            )),
        ),
        ..Default::default()
    }
    .encode_to_vec();
    let started = std::time::Instant::now();
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for round in 0..3000u32 {
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
        let message: Vec<u8> = match round % 4 {
            // Random bytes.
            0 => (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
            // A valid message with bytes flipped.
            1 => {
                let mut bytes = valid.clone();
                for _ in 0..rng.random_range(1..8) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = rng.random();
                }
                bytes
            }
            // A valid message cut short.
            2 => valid[..rng.random_range(0..valid.len())].to_vec(),
            // A valid envelope around a mutated image.
            _ => {
                let mut image = SAMPLE_PNG.to_vec();
                for _ in 0..rng.random_range(1..16) {
                    let at = rng.random_range(0..image.len());
                    image[at] = rng.random();
                }
                image.truncate(rng.random_range(1..=image.len()));
                VerifyIdCardRequest {
                    source: Some(
                        faceid_gateway::proto::verify_id_card_request::Source::Image(image.into()),
                    ),
                    ..Default::default()
                }
                .encode_to_vec()
            }
        };
        let code = match raw_unary(app.addr, message.into()).await {
            Ok(_) => Code::Ok,
            Err(status) => {
                assert!(
                    matches!(
                        status.code(),
                        Code::InvalidArgument | Code::ResourceExhausted
                    ),
                    "round {round}: {status:?}"
                );
                assert!(
                    status.get_details_error_info().is_some(),
                    "round {round}: {status:?}"
                );
                status.code()
            }
        };
        *counts.entry(format!("{code:?}")).or_default() += 1;
    }
    assert!(counts.values().sum::<u32>() >= 500, "{counts:?}");
    // The gateway still answers a normal call.
    let mut client = app.client.clone();
    verified(&mut client, request_with("")).await;
    let text = metrics_text(app.admin_addr).await;
    assert_eq!(sample(&text, "faceid_panics_total"), 0.0);
}
