//! Scenario: the ceiling as h2load (Debian's `nghttp2-client`) sees it,
//! side by side in one run: h2load replaying one signed request straight at
//! the simulator, then the same image as gRPC through the gateway to the same
//! simulator. Prints calls per second of both, their ratio, and the
//! gateway's CPU time per call (from `/proc`).

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context as _, bail};
use faceid_gateway::proto::{VerifyIdCardRequest, verify_id_card_request::Source};
use faceid_gateway::tencent::RequestBody;
use faceid_gateway::tencent::model::CheckIdCardInformationRequest;
use prost::Message as _;

use crate::harness::{self};
use crate::otlp_sink::OtlpSink;

#[derive(clap::Args)]
pub struct Args {
    /// Requests per run.
    #[arg(long, default_value_t = 50_000)]
    requests: u64,
    /// h2load clients (connections).
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Concurrent streams per connection.
    #[arg(long, default_value_t = 16)]
    streams: u32,
    /// Image size.
    #[arg(long, value_parser = harness::parse_size, default_value = "8k")]
    image_size: usize,
    /// Extra `serve` flags for the gateway (e.g. `--log-format=json`).
    #[arg(long = "gateway-flag", allow_hyphen_values = true)]
    gateway_flags: Vec<String>,
    /// Export the gateway's spans (OTLP/HTTP) to a receiver in this process,
    /// which decodes and counts them.
    #[arg(long)]
    otlp: bool,
}

/// What one h2load run reports.
struct Run {
    requests_per_second: f64,
    succeeded: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    which_h2load()?;
    let (simulator, endpoint) = harness::start_simulator(0).await?;
    let mut flags = vec!["--rate-limit", "1000000", "--max-in-flight", "4096"];
    flags.extend(args.gateway_flags.iter().map(String::as_str));
    let sink = match args.otlp {
        true => Some(OtlpSink::start().await?),
        false => None,
    };
    let env = sink.as_ref().map(OtlpSink::gateway_env).unwrap_or_default();
    let gateway = harness::start_gateway_with_env(&endpoint, &flags, &env).await?;
    let dir = tempfile::tempdir()?;
    let image = harness::image_of(args.image_size);

    // (a) One signed request, replayed straight at the simulator (the
    // signature stays valid for the simulator's 5-minute clock skew).
    let direct = harness::direct_client(&endpoint)?;
    let body = RequestBody::with_image(&image, &CheckIdCardInformationRequest::default());
    let headers = direct.signed_headers(&body, faceid_gateway::tencent::client::unix_now())?;
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, body.bytes())?;
    let mut direct_headers = Vec::new();
    for (name, value) in &headers {
        direct_headers.push(format!("{}: {}", name, value.to_str()?));
    }

    // (b) The same image as one gRPC message (length-prefixed frame).
    let message = VerifyIdCardRequest {
        source: Some(Source::Image(image.clone())),
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
    frame.extend_from_slice(&message);
    let frame_file = dir.path().join("frame.bin");
    std::fs::write(&frame_file, &frame)?;
    let grpc_headers = vec![
        "content-type: application/grpc".to_owned(),
        "te: trailers".to_owned(),
    ];

    let warmup = args.requests / 10;
    h2load(&args, &endpoint, &body_file, &direct_headers, warmup)?;
    harness::reset_simulator(&endpoint).await?;
    let straight = h2load(&args, &endpoint, &body_file, &direct_headers, args.requests)?;
    let stats = harness::simulator_stats(&endpoint).await?;
    let direct_ok = stats["answers"]["Success"].as_u64().unwrap_or(0);

    let grpc_url = format!(
        "http://{}/faceid.v1.IdCardVerificationService/VerifyIdCard",
        gateway.addr
    );
    h2load(&args, &grpc_url, &frame_file, &grpc_headers, warmup)?;
    harness::reset_simulator(&endpoint).await?;
    let before = gateway.process.usage()?;
    let through = h2load(&args, &grpc_url, &frame_file, &grpc_headers, args.requests)?;
    let after = gateway.process.usage()?;
    let stats = harness::simulator_stats(&endpoint).await?;
    let through_ok = stats["answers"]["Success"].as_u64().unwrap_or(0);

    let cpu_per_call =
        (after.cpu_seconds - before.cpu_seconds) / through.succeeded.max(1) as f64 * 1e6;
    println!(
        "{} requests, {} KiB image, {} connections x {} streams",
        args.requests,
        args.image_size / 1024,
        args.clients,
        args.streams
    );
    println!("path              calls/s   Success at the simulator");
    println!(
        "straight          {:>7.0}   {direct_ok}",
        straight.requests_per_second
    );
    println!(
        "via the gateway   {:>7.0}   {through_ok}",
        through.requests_per_second
    );
    println!(
        "ratio {:.2}, gateway CPU {cpu_per_call:.1} µs per call",
        through.requests_per_second / straight.requests_per_second
    );
    // Stopping the gateway flushes its exporter.
    gateway.process.stop().await;
    simulator.stop().await;
    if let Some(sink) = &sink {
        let (exports, undecodable) = sink.exports();
        let calls = warmup.max(1) + args.requests;
        println!(
            "OTLP: {} spans received in {exports} exports ({undecodable} undecodable), {:.2} per call",
            sink.spans(),
            sink.spans() as f64 / calls as f64
        );
    }
    if direct_ok < args.requests || through_ok < args.requests {
        bail!(
            "some calls failed: {direct_ok} and {through_ok} of {} succeeded",
            args.requests
        );
    }
    Ok(())
}

fn which_h2load() -> anyhow::Result<()> {
    let found = std::process::Command::new("h2load")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        bail!("h2load is not installed: apt-get install nghttp2-client");
    }
    Ok(())
}

/// Runs h2load with `requests` POSTs of `data` to `url`.
fn h2load(
    args: &Args,
    url: &str,
    data: &Path,
    headers: &[String],
    requests: u64,
) -> anyhow::Result<Run> {
    let mut command = std::process::Command::new("h2load");
    command
        .arg("-n")
        .arg(requests.max(1).to_string())
        .arg("-c")
        .arg(args.clients.to_string())
        .arg("-m")
        .arg(args.streams.to_string())
        .arg("-d")
        .arg(data);
    for header in headers {
        command.arg("-H").arg(header);
    }
    let output = command.arg(url).output().context("run h2load")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("h2load failed: {text}");
    }
    let requests_per_second = text
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("finished in ")?;
            let rate = rest.split(", ").nth(1)?.strip_suffix(" req/s")?;
            rate.parse().ok()
        })
        .with_context(|| format!("no rate in h2load's output: {text}"))?;
    let succeeded = text
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("requests: ")?;
            rest.split(", ")
                .find_map(|part| part.strip_suffix(" succeeded")?.parse().ok())
        })
        .with_context(|| format!("no request counts in h2load's output: {text}"))?;
    Ok(Run {
        requests_per_second,
        succeeded,
    })
}
