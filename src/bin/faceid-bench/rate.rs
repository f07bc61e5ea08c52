//! Scenario 2: the upstream limit under N× offered load, for one gateway or
//! several sharing Redis. The simulator enforces the limit strictly (a
//! sliding one-second window) and reports what it saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use faceid_gateway::proto::id_card_verification_service_client::IdCardVerificationServiceClient;
use faceid_gateway::proto::{VerifyIdCardRequest, verify_id_card_request::Source};
use tokio::time::{Instant, MissedTickBehavior};

use crate::harness;
use crate::redis_server::RedisServer;

#[derive(clap::Args)]
pub struct Args {
    /// The limit, calls per second (simulator and gateways).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Offered load as a multiple of the limit.
    #[arg(long, default_value_t = 3.0)]
    factor: f64,
    /// How long to offer it.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Gateway replicas; more than one share the limit through Redis.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (simulator, endpoint) = harness::start_simulator(args.limit).await?;
    let redis = if args.replicas > 1 {
        Some(RedisServer::start().await?)
    } else {
        None
    };
    let limit = args.limit.to_string();
    let mut flags = vec![
        "--rate-limit",
        limit.as_str(),
        "--rate-limit-max-wait",
        "2s",
    ];
    if let Some(redis) = &redis {
        flags.extend(["--rate-limit-redis", redis.url.as_str()]);
    }
    let mut gateways = Vec::new();
    for _ in 0..args.replicas {
        gateways.push(harness::start_gateway(&endpoint, &flags).await?);
    }
    let mut clients = Vec::new();
    for gateway in &gateways {
        clients.push(
            IdCardVerificationServiceClient::connect(format!("http://{}", gateway.addr)).await?,
        );
    }
    harness::reset_simulator(&endpoint).await?;

    let offered = f64::from(args.limit) * args.factor;
    let (ok, limited, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let request = VerifyIdCardRequest {
        source: Some(Source::Image(harness::image_of(10 * 1024))),
        ..Default::default()
    };
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / offered));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let mut calls = tokio::task::JoinSet::new();
    let mut sent = 0usize;
    // Open loop: one call per tick, whatever the earlier ones are doing.
    while ticks.tick().await < until {
        let mut client = clients[sent % clients.len()].clone();
        let request = request.clone();
        let (ok, limited, failed) = (Arc::clone(&ok), Arc::clone(&limited), Arc::clone(&failed));
        calls.spawn(async move {
            match client.verify_id_card(request).await {
                Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                    limited.fetch_add(1, Ordering::Relaxed)
                }
                Err(_) => failed.fetch_add(1, Ordering::Relaxed),
            };
        });
        sent += 1;
    }
    while calls.join_next().await.is_some() {}

    let stats = harness::simulator_stats(&endpoint).await?;
    let received = stats["received"].as_f64().unwrap_or(0.0);
    let successes = stats["answers"]["Success"].as_f64().unwrap_or(0.0);
    let rejected_upstream = stats["answers"]["RequestLimitExceeded"]
        .as_f64()
        .unwrap_or(0.0);
    let span = stats["span_seconds"].as_f64().unwrap_or(1.0);
    println!(
        "offered {offered:.0}/s for {} s to {} gateway(s), limit {}/s",
        args.seconds, args.replicas, args.limit
    );
    println!(
        "calls sent {sent}: ok {}, RESOURCE_EXHAUSTED {}, other errors {}",
        ok.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    println!("simulator: received {received}, RequestLimitExceeded {rejected_upstream}");
    println!(
        "max calls in any sliding second: {} (limit {})",
        stats["max_in_any_second"], args.limit
    );
    println!(
        "sustained upstream rate: {:.2}/s = {:.1}% of the limit",
        (successes - 1.0) / span,
        100.0 * (successes - 1.0) / span / f64::from(args.limit)
    );
    for (i, gateway) in gateways.iter().enumerate() {
        let metrics = reqwest::get(format!("http://{}/metrics", gateway.admin))
            .await?
            .text()
            .await?;
        let q = |q| {
            harness::histogram_quantile(&metrics, "faceid_rate_limit_wait_seconds", q)
                .unwrap_or(f64::NAN)
                * 1e3
        };
        println!(
            "gateway {i}: limiter wait p50 {:.0} ms, p99 {:.0} ms (from /metrics buckets)",
            q(0.5),
            q(0.99)
        );
    }
    for gateway in gateways {
        gateway.process.stop().await;
    }
    simulator.stop().await;
    Ok(())
}
