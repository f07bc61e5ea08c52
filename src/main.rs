//! The `faceid-gateway` binary: parses the command line and runs the gateway
//! or the standalone simulator.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use faceid_gateway::config::{Cli, Command, ServeArgs, SimulatorArgs, TokenArgs};
use faceid_gateway::simulator::{ServerFault, Simulator, SimulatorConfig};
use faceid_gateway::startup::{self, Application, UpstreamTarget, shutdown_signal};
use faceid_gateway::telemetry;
use faceid_gateway::tencent::CredentialProvider;
use faceid_gateway::tencent::credentials::ChainSettings;
use secrecy::SecretString;

/// Every call allocates and frees image-sized buffers (hundreds of KiB):
/// glibc hands those to the kernel and back each time (page faults,
/// zeroing); mimalloc keeps them for reuse.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let command = Cli::parse().into_command();
    faceid_gateway::install_crypto_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("faceid-gateway: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Serve(args) if args.check_config => check_config(&args).await,
            Command::Serve(args) => serve(*args).await,
            Command::Simulator(args) => simulator(args).await,
            Command::Token(args) => token(&args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("faceid-gateway: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let telemetry = telemetry::init(args.log_format)?;
    let target = if args.simulate {
        UpstreamTarget::BuiltInSimulator
    } else {
        let credentials =
            CredentialProvider::from_chain(&ChainSettings::from_args(&args), |name| {
                std::env::var(name).ok()
            })
            .await?;
        UpstreamTarget::Tencent(Arc::new(credentials))
    };
    let app = Application::build(args, target).await?;
    let served = app.run_until_stopped(shutdown_signal()).await;
    // Export the spans of the last requests before exiting.
    telemetry.shutdown();
    Ok(served?)
}

/// `serve --check-config`: the start-up checks that need no network, then
/// one line on stdout; a failure is printed by `main` as `serve` prints it.
async fn check_config(args: &ServeArgs) -> anyhow::Result<()> {
    startup::check_config(args, |name| std::env::var(name).ok()).await?;
    println!("configuration ok");
    Ok(())
}

/// Prints a new token (to give the caller) and its tokens-file line (to add
/// to --auth-tokens-file); only the line's hash is ever stored.
fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let (token, line) = faceid_gateway::server::new_token_with_budgets(
        &args.name,
        args.quota,
        args.budget_day,
        args.budget_month,
    )?;
    println!("token (give it to the caller; it is not stored anywhere): {token}");
    println!("line for --auth-tokens-file: {line}");
    Ok(())
}

async fn simulator(args: SimulatorArgs) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(args.log_format)?;
    let fault = args
        .fault
        .as_deref()
        .map(str::parse::<ServerFault>)
        .transpose()
        .context("--fault")?;
    let mut config = SimulatorConfig::new(args.secret_id, args.secret_key);
    config.session_token = args.session_token.map(SecretString::from);
    config.rate_limit = args.rate_limit;
    config.temporary_credentials_ttl = args.temporary_credentials_ttl;
    config.web_identity_token_file = args.web_identity_token_file;
    let simulator = Simulator::bind(config, args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    if let Some(fault) = fault {
        simulator.set_fault(fault, args.fault_for);
    }
    if let Some(dir) = &args.public_keys_dir {
        let keys = simulator.public_keys();
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("rsa.pem"), keys.rsa_pem()?)?;
        std::fs::write(dir.join("sm2.pem"), keys.sm2_pem()?)?;
        tracing::info!(dir = %dir.display(), "simulator encryption public keys written");
    }
    tracing::info!(
        endpoint = %simulator.endpoint(),
        rate_limit = args.rate_limit,
        "Tencent FaceID simulator serving"
    );
    let cancel = simulator.cancellation();
    tokio::spawn(async move {
        shutdown_signal().await;
        cancel.cancel();
    });
    simulator.wait().await;
    Ok(())
}
