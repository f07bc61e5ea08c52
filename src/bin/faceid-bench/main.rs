//! `faceid-bench`: the project's load tool. Each scenario is one command
//! that starts its own simulator, gateway (and Redis) as child processes on
//! loopback ports, drives them with tonic clients, and prints its figures
//! (latency percentiles from HDR histograms, the gateway's CPU time and peak
//! RSS from `/proc`). Build with `cargo build --release --features bench --bins`.

mod batch;
mod ceiling;
mod failover;
mod h2load;
mod harness;
mod otlp_sink;
mod overhead;
mod rate;
// The redis-server launcher, one file shared with the API tests (which also
// use its kill and restart).
#[allow(dead_code)]
#[path = "../../../tests/support/redis.rs"]
mod redis_server;
mod sdk;
mod spend;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "faceid-bench",
    about = "Benchmarks of faceid-gateway (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Added latency: the same image sent directly (the project's own signed
    /// client) and through the gateway, interleaved in one run.
    Overhead(overhead::Args),
    /// The rate limit under load: N× the limit offered, what the simulator saw.
    Rate(rate::Args),
    /// Gateway peak memory for batches of different lengths.
    BatchMemory(batch::Args),
    /// As many calls per second as the machine does, and CPU per call.
    Ceiling(ceiling::Args),
    /// h2load straight at the simulator versus through the gateway, one run:
    /// the calls-per-second ratio and the gateway's CPU per call.
    H2load(h2load::Args),
    /// Tencent's official Python SDK calling the simulator directly versus
    /// grpcio calling the gateway.
    Sdk(sdk::Args),
    /// What budgets and idempotency keys add to a call, in memory and in
    /// Redis, and what a replay costs.
    Spend(spend::Args),
    /// Two endpoints; the primary is killed mid-run and started again:
    /// calls and errors per second, and where the calls went.
    Failover(failover::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    faceid_gateway::install_crypto_provider();
    match Cli::parse().scenario {
        Scenario::Overhead(args) => overhead::run(args).await,
        Scenario::Rate(args) => rate::run(args).await,
        Scenario::H2load(args) => h2load::run(args).await,
        Scenario::BatchMemory(args) => batch::run(args).await,
        Scenario::Ceiling(args) => ceiling::run(args).await,
        Scenario::Sdk(args) => sdk::run(args).await,
        Scenario::Spend(args) => spend::run(args).await,
        Scenario::Failover(args) => failover::run(args).await,
    }
}
