//! Scenario 3: gateway memory against batch length. Each length runs on a
//! fresh gateway process, so its peak RSS (`VmHWM`) belongs to that batch.

use std::time::Instant;

use faceid_gateway::proto::id_card_verification_service_client::IdCardVerificationServiceClient;
use faceid_gateway::proto::{
    VerifyIdCardBatchRequest, VerifyIdCardRequest, verify_id_card_request::Source,
};

use crate::harness;

#[derive(clap::Args)]
pub struct Args {
    /// Batch lengths to compare.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    items: Vec<usize>,
    /// Image size per item.
    #[arg(long, value_parser = harness::parse_size, default_value = "1m")]
    image_size: usize,
    /// The gateway's upstream rate limit, calls per second.
    #[arg(long, default_value_t = 100)]
    rate_limit: u32,
    /// Items of the stream in flight at most (the gateway's --batch-concurrency).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (simulator, endpoint) = harness::start_simulator(0).await?;
    let image = harness::image_of(args.image_size);
    let rate = args.rate_limit.to_string();
    let concurrency = args.concurrency.to_string();
    println!(
        "items  image   idle RSS MiB  peak RSS MiB  above idle MiB  per in-flight item  items/s"
    );
    for items in args.items {
        let gateway = harness::start_gateway(
            &endpoint,
            &["--rate-limit", &rate, "--batch-concurrency", &concurrency],
        )
        .await?;
        let mut client =
            IdCardVerificationServiceClient::connect(format!("http://{}", gateway.addr))
                .await?
                .max_encoding_message_size(16 << 20);
        // Warm up (connections, allocator) with one small call.
        client
            .verify_id_card(VerifyIdCardRequest {
                source: Some(Source::Image(harness::image_of(1024))),
                ..Default::default()
            })
            .await?;
        let idle = gateway.process.usage()?;
        let image = image.clone();
        let stream = tokio_stream::iter((0..items).map(move |i| VerifyIdCardBatchRequest {
            item_id: format!("item-{i}"),
            request: Some(VerifyIdCardRequest {
                source: Some(Source::Image(image.clone())),
                ..Default::default()
            }),
        }));
        let started = Instant::now();
        let mut answers = client.verify_id_card_batch(stream).await?.into_inner();
        let mut answered = 0;
        while answers.message().await?.is_some() {
            answered += 1;
        }
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(answered == items, "{answered} answers for {items} items");
        let peak = gateway.process.usage()?;
        let above = (peak.peak_rss_kib.saturating_sub(idle.rss_kib)) as f64 / 1024.0;
        println!(
            "{items:>5}  {:>4}k  {:>12.1}  {:>12.1}  {:>14.1}  {:>11.2}× image  {:>7.1}",
            args.image_size / 1024,
            idle.rss_kib as f64 / 1024.0,
            peak.peak_rss_kib as f64 / 1024.0,
            above,
            above * 1024.0 * 1024.0 / args.image_size as f64 / args.concurrency as f64,
            items as f64 / seconds
        );
        gateway.process.stop().await;
    }
    simulator.stop().await;
    Ok(())
}
