//! Scenario 4: the machine's ceiling with the limit out of the way: as many
//! calls per second as gateway and simulator manage, and the gateway's CPU
//! time per call.

use std::time::{Duration, Instant};

use faceid_gateway::proto::id_card_verification_service_client::IdCardVerificationServiceClient;
use faceid_gateway::proto::{VerifyIdCardRequest, verify_id_card_request::Source};

use crate::harness;

#[derive(clap::Args)]
pub struct Args {
    /// Concurrent callers (closed loop).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Image size.
    #[arg(long, value_parser = harness::parse_size, default_value = "10k")]
    image_size: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (simulator, endpoint) = harness::start_simulator(0).await?;
    let gateway = harness::start_gateway(
        &endpoint,
        &["--rate-limit", "1000000", "--max-in-flight", "4096"],
    )
    .await?;
    let client =
        IdCardVerificationServiceClient::connect(format!("http://{}", gateway.addr)).await?;
    let request = VerifyIdCardRequest {
        source: Some(Source::Image(harness::image_of(args.image_size))),
        ..Default::default()
    };
    client.clone().verify_id_card(request.clone()).await?;
    let (gateway_before, simulator_before) = (gateway.process.usage()?, simulator.usage()?);
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let mut client = client.clone();
        let request = request.clone();
        callers.spawn(async move {
            let mut latency = harness::histogram();
            let mut calls = 0u64;
            while Instant::now() < until {
                let call = Instant::now();
                if client.verify_id_card(request.clone()).await.is_ok() {
                    calls += 1;
                    let _ = latency.record(call.elapsed().as_micros() as u64);
                }
            }
            (calls, latency)
        });
    }
    let mut calls = 0;
    let mut latency = harness::histogram();
    while let Some(joined) = callers.join_next().await {
        let (n, h) = joined?;
        calls += n;
        latency.add(h)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let (gateway_after, simulator_after) = (gateway.process.usage()?, simulator.usage()?);
    let per_call = |before: harness::Usage, after: harness::Usage| {
        (after.cpu_seconds - before.cpu_seconds) / calls as f64 * 1e6
    };
    let p = harness::percentiles_ms(&latency);
    println!(
        "{} callers, {} KiB images, {seconds:.1} s",
        args.concurrency,
        args.image_size / 1024
    );
    println!(
        "calls {calls}: {:.0}/s, latency p50 {:.2} ms p99 {:.2} ms p999 {:.2} ms",
        calls as f64 / seconds,
        p[0],
        p[1],
        p[2]
    );
    println!(
        "gateway CPU {:.0} µs/call, simulator CPU {:.0} µs/call",
        per_call(gateway_before, gateway_after),
        per_call(simulator_before, simulator_after)
    );
    println!(
        "gateway peak RSS {:.1} MiB",
        gateway_after.peak_rss_kib as f64 / 1024.0
    );
    gateway.process.stop().await;
    simulator.stop().await;
    Ok(())
}
