//! Scenario: what spend control costs one call. Four gateways on one
//! simulator, called in turn in one run: without and with budgets plus an
//! `idempotency-key` per call, each with counters and answers in memory and
//! in Redis (the Redis baseline shares its rate limit through the same
//! Redis, as a real deployment does). A fifth leg repeats one key: the
//! replay, which makes no upstream call at all.

use std::time::Instant;

use faceid_gateway::proto::id_card_verification_service_client::IdCardVerificationServiceClient;
use faceid_gateway::proto::{VerifyIdCardRequest, verify_id_card_request::Source};
use tonic::transport::Channel;

use crate::harness;
use crate::redis_server::RedisServer;

#[derive(clap::Args)]
pub struct Args {
    /// Image size.
    #[arg(long, value_parser = harness::parse_size, default_value = "200k")]
    size: usize,
    /// Calls per leg.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
}

/// One way of calling.
struct Leg {
    name: &'static str,
    client: IdCardVerificationServiceClient<Channel>,
    /// `Some(prefix)`: a fresh key per call; `Some("")`: one key always.
    key: Option<&'static str>,
    histogram: hdrhistogram::Histogram<u64>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (simulator, endpoint) = harness::start_simulator(0).await?;
    let redis = RedisServer::start().await?;
    let open = ["--rate-limit", "1000000"];
    let budgets = ["--budget-day", "1000000000", "--budget-month", "1000000000"];
    let shared = ["--rate-limit-redis", redis.url.as_str()];
    let mut gateways = Vec::new();
    for flags in [
        open.to_vec(),
        [open.as_slice(), &budgets].concat(),
        [open.as_slice(), &shared].concat(),
        [open.as_slice(), &shared, &budgets].concat(),
    ] {
        gateways.push(harness::start_gateway(&endpoint, &flags).await?);
    }
    let mut clients = Vec::new();
    for gateway in &gateways {
        clients.push(
            IdCardVerificationServiceClient::connect(format!("http://{}", gateway.addr))
                .await?
                .max_encoding_message_size(16 << 20)
                .max_decoding_message_size(16 << 20),
        );
    }
    let leg = |name, client: &IdCardVerificationServiceClient<Channel>, key| Leg {
        name,
        client: client.clone(),
        key,
        histogram: harness::histogram(),
    };
    let mut legs = vec![
        leg("memory, off", &clients[0], None),
        leg("memory, budget+key", &clients[1], Some("m")),
        leg("memory, replay", &clients[1], Some("")),
        leg("redis, off", &clients[2], None),
        leg("redis, budget+key", &clients[3], Some("r")),
        leg("redis, replay", &clients[3], Some("")),
    ];
    let image = harness::image_of(args.size);
    let request = VerifyIdCardRequest {
        source: Some(Source::Image(image)),
        ..Default::default()
    };
    let warm = args.requests / 10;
    let count = legs.len();
    for i in 0..args.requests + warm {
        // A different leg goes first each round.
        let first = i % count;
        for n in 0..count {
            let leg = &mut legs[(first + n) % count];
            let mut call = tonic::Request::new(request.clone());
            match leg.key {
                Some("") => {
                    call.metadata_mut()
                        .insert("idempotency-key", "bench-replay".parse()?);
                }
                Some(prefix) => {
                    call.metadata_mut()
                        .insert("idempotency-key", format!("bench-{prefix}-{i}").parse()?);
                }
                None => {}
            }
            let started = Instant::now();
            leg.client.verify_id_card(call).await?;
            if i >= warm {
                leg.histogram.record(started.elapsed().as_micros() as u64)?;
            }
        }
    }
    println!(
        "{} KiB image, {} calls per leg\nleg                    p50 ms   p99 ms  p999 ms",
        args.size / 1024,
        args.requests
    );
    let mut medians = Vec::new();
    for leg in &legs {
        let p = harness::percentiles_ms(&leg.histogram);
        medians.push(p);
        println!("{:<20} {:>8.3} {:>8.3} {:>8.3}", leg.name, p[0], p[1], p[2]);
    }
    for (name, with, without) in [("memory", 1, 0), ("redis", 4, 3)] {
        println!(
            "added by budget+key ({name}): p50 {:+.3} ms, p99 {:+.3} ms",
            medians[with][0] - medians[without][0],
            medians[with][1] - medians[without][1]
        );
    }
    for gateway in gateways {
        gateway.process.stop().await;
    }
    simulator.stop().await;
    drop(redis);
    Ok(())
}
