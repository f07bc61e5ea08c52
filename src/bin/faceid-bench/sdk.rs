//! Scenario 5: what a Python caller sees. `bench/sdk_vs_gateway.py` (run with
//! the test venv's Python) calls (a) the simulator directly through Tencent's
//! official Python SDK and (b) the gateway through grpcio, interleaved, and
//! reports latency and client CPU per call.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::harness::{self, SECRET_ID, SECRET_KEY};

#[derive(clap::Args)]
pub struct Args {
    /// Image size.
    #[arg(long, value_parser = harness::parse_size, default_value = "200k")]
    image_size: usize,
    /// Calls per path.
    #[arg(long, default_value_t = 500)]
    requests: usize,
    /// The Python with tencentcloud-sdk-python, grpcio and grpcio-tools.
    #[arg(long, default_value = "target/venv/bin/python")]
    python: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (simulator, endpoint) = harness::start_simulator(0).await?;
    let gateway = harness::start_gateway(&endpoint, &["--rate-limit", "1000000"]).await?;
    let status = tokio::process::Command::new(&args.python)
        .arg("bench/sdk_vs_gateway.py")
        .args([
            "--simulator",
            endpoint.trim_start_matches("http://").trim_end_matches('/'),
        ])
        .args([
            "--gateway",
            &gateway.addr,
            "--secret-id",
            SECRET_ID,
            "--secret-key",
            SECRET_KEY,
        ])
        .args([
            "--image-size",
            &args.image_size.to_string(),
            "--requests",
            &args.requests.to_string(),
        ])
        .status()
        .await
        .with_context(|| format!("cannot run {}", args.python.display()))?;
    anyhow::ensure!(status.success(), "bench/sdk_vs_gateway.py failed");
    gateway.process.stop().await;
    simulator.stop().await;
    Ok(())
}
