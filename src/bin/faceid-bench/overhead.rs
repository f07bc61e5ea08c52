//! Scenario 1: what the gateway adds to one call. Path (a) is the project's
//! own Tencent client (body building, signing, HTTP) straight to the
//! simulator; path (b) is a gRPC call through the gateway to the same
//! simulator. Requests alternate between the two in one run.

use base64::Engine as _;
use std::time::Instant;

use faceid_gateway::proto::id_card_verification_service_client::IdCardVerificationServiceClient;
use faceid_gateway::proto::{VerifyIdCardRequest, verify_id_card_request::Source};
use faceid_gateway::tencent::RequestBody;
use faceid_gateway::tencent::model::CheckIdCardInformationRequest;

use crate::harness::{self};

#[derive(clap::Args)]
pub struct Args {
    /// Image sizes to measure.
    #[arg(long, value_delimiter = ',', value_parser = harness::parse_size, default_value = "10k,200k,5m")]
    sizes: Vec<usize>,
    /// Calls per path and size (large images get a tenth of it).
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Also measure HTTP/JSON (`POST /v1/idcard:verify`, HTTP/1.1 keep-alive,
    /// the JSON body built once beforehand) through the gateway.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (simulator, endpoint) = harness::start_simulator(0).await?;
    let gateway = harness::start_gateway(&endpoint, &["--rate-limit", "1000000"]).await?;
    let direct = harness::direct_client(&endpoint)?;
    let mut grpc = IdCardVerificationServiceClient::connect(format!("http://{}", gateway.addr))
        .await?
        .max_encoding_message_size(16 << 20)
        .max_decoding_message_size(16 << 20);

    let http = reqwest::Client::builder().http1_only().build()?;
    let json_url = format!("http://{}/v1/idcard:verify", gateway.addr);
    println!("size      calls  path        p50 ms   p99 ms  p999 ms");
    for size in args.sizes {
        let image = harness::image_of(size);
        let calls = if size > 1 << 20 {
            (args.requests / 10).max(50)
        } else {
            args.requests
        };
        let request = VerifyIdCardRequest {
            source: Some(Source::Image(image.clone())),
            ..Default::default()
        };
        let json_body = bytes::Bytes::from(
            serde_json::json!({
                "image": base64::engine::general_purpose::STANDARD.encode(&image)
            })
            .to_string(),
        );
        let (mut a, mut b, mut c) = (
            harness::histogram(),
            harness::histogram(),
            harness::histogram(),
        );
        let paths = if args.json { 3 } else { 2 };
        for i in 0..calls + calls / 10 {
            let warm = i < calls / 10;
            // Rotate which path goes first, so none is always warmest.
            for leg in 0..paths {
                match (leg + i) % paths {
                    0 => {
                        let started = Instant::now();
                        // What a caller without the gateway does: build, sign, send.
                        let body = RequestBody::with_image(
                            &image,
                            &CheckIdCardInformationRequest::default(),
                        );
                        direct.send(&body, None).await?;
                        if !warm {
                            a.record(started.elapsed().as_micros() as u64)?;
                        }
                    }
                    1 => {
                        let started = Instant::now();
                        grpc.verify_id_card(request.clone()).await?;
                        if !warm {
                            b.record(started.elapsed().as_micros() as u64)?;
                        }
                    }
                    _ => {
                        let started = Instant::now();
                        let answer = http
                            .post(&json_url)
                            .header("content-type", "application/json")
                            .body(json_body.clone())
                            .send()
                            .await?;
                        anyhow::ensure!(
                            answer.status() == 200,
                            "HTTP/JSON answered {}",
                            answer.status()
                        );
                        answer.bytes().await?;
                        if !warm {
                            c.record(started.elapsed().as_micros() as u64)?;
                        }
                    }
                }
            }
        }
        let (pa, pb) = (harness::percentiles_ms(&a), harness::percentiles_ms(&b));
        let label = format!("{}k", size / 1024);
        println!(
            "{label:<8} {calls:>6}  direct    {:>8.3} {:>8.3} {:>8.3}",
            pa[0], pa[1], pa[2]
        );
        println!(
            "{label:<8} {calls:>6}  gateway   {:>8.3} {:>8.3} {:>8.3}",
            pb[0], pb[1], pb[2]
        );
        println!(
            "{label:<8} {calls:>6}  added     {:>8.3} {:>8.3} {:>8.3}",
            pb[0] - pa[0],
            pb[1] - pa[1],
            pb[2] - pa[2]
        );
        if args.json {
            let pc = harness::percentiles_ms(&c);
            println!(
                "{label:<8} {calls:>6}  http/json {:>8.3} {:>8.3} {:>8.3}",
                pc[0], pc[1], pc[2]
            );
            println!(
                "{label:<8} {calls:>6}  added     {:>8.3} {:>8.3} {:>8.3}",
                pc[0] - pa[0],
                pc[1] - pa[1],
                pc[2] - pa[2]
            );
        }
    }
    gateway.process.stop().await;
    simulator.stop().await;
    Ok(())
}
