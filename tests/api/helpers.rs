//! Test harness: the real gateway and the real simulator on loopback port 0,
//! a typed gRPC client, and images that carry simulator directives.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

use bytes::Bytes;
use faceid_gateway::config::ServeArgs;
use faceid_gateway::proto::id_card_verification_service_client::IdCardVerificationServiceClient;
use faceid_gateway::proto::{VerifyIdCardRequest, verify_id_card_request::Source};
use faceid_gateway::simulator::{Simulator, SimulatorConfig, StatsSnapshot};
use faceid_gateway::startup::{Application, StartupError, UpstreamTarget};
use faceid_gateway::tencent::{CredentialProvider, Credentials};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::redis_server::RedisServer;

/// The key pair the test simulator accepts.
pub const SECRET_ID: &str = "AKIDgatewayTests000000000000000000000";
/// See [`SECRET_ID`].
pub const SECRET_KEY: &str = "gatewayTestsSecretKey000000000000";

/// A small valid PNG (the sample card of the README).
pub const SAMPLE_PNG: &[u8] = include_bytes!("../../examples/images/id-card.png");
/// The smallest real PNG: 1×1 (see tests/data/make_tiny_images.py).
pub const PIXEL_PNG: &[u8] = include_bytes!("../data/images/pixel.png");
/// The smallest real baseline JPEG: 1×1.
pub const PIXEL_JPEG: &[u8] = include_bytes!("../data/images/pixel.jpg");

static TRACING: Once = Once::new();

/// Logs go to the test output only when `TEST_LOG` is set.
pub fn init_test_logging() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
                .with_test_writer()
                .init();
        }
    });
}

/// How to set up one test's gateway.
pub struct Options {
    /// The key the gateway signs with (the simulator always expects [`SECRET_KEY`]).
    pub gateway_secret_key: String,
    /// Extra `serve` flags.
    pub flags: Vec<String>,
    /// The simulator's rate limit (0 = none).
    pub simulator_rate_limit: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            gateway_secret_key: SECRET_KEY.to_owned(),
            flags: Vec::new(),
            simulator_rate_limit: 0,
        }
    }
}

/// A running gateway and a client connected to it.
pub struct Gateway {
    /// The gateway's gRPC address.
    pub addr: SocketAddr,
    /// The gateway's admin (metrics) address.
    pub admin_addr: SocketAddr,
    /// A client connected to it.
    pub client: IdCardVerificationServiceClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), StartupError>>,
}

impl Gateway {
    /// A fresh channel to the gateway.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect to the gateway")
    }

    /// Triggers a graceful shutdown and waits for the server to return.
    pub async fn stop(mut self) -> Result<(), StartupError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.await.expect("server task")
    }
}

/// A running gateway, its own simulator and a client.
pub struct TestApp {
    /// The gateway's gRPC address.
    pub addr: SocketAddr,
    /// The gateway's admin (metrics) address.
    pub admin_addr: SocketAddr,
    /// A client connected to the gateway.
    pub client: IdCardVerificationServiceClient<Channel>,
    /// The upstream it calls.
    pub simulator: Simulator,
    gateway: Gateway,
}

impl TestApp {
    /// What the simulator has seen.
    pub fn upstream_stats(&self) -> StatsSnapshot {
        self.simulator.stats()
    }

    /// A fresh channel to the gateway.
    pub async fn channel(&self) -> Channel {
        self.gateway.channel().await
    }

    /// Triggers a graceful shutdown and waits for the server to return.
    pub async fn stop(self) -> Result<(), StartupError> {
        let result = self.gateway.stop().await;
        self.simulator.shutdown().await;
        result
    }
}

/// Starts a simulator accepting [`SECRET_ID`]/[`SECRET_KEY`] with the given
/// rate limit (0 = none).
pub async fn spawn_simulator(rate_limit: u32) -> Simulator {
    init_test_logging();
    let mut config = SimulatorConfig::new(SECRET_ID, SECRET_KEY);
    config.rate_limit = rate_limit;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::start(config, listener).unwrap()
}

/// Starts a simulator with `config` (whose key pair is usually
/// [`SECRET_ID`]/[`SECRET_KEY`]).
pub async fn spawn_simulator_with(config: SimulatorConfig) -> Simulator {
    init_test_logging();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::start(config, listener).unwrap()
}

/// Starts a simulator like [`spawn_simulator`] (no rate limit) on `addr`:
/// a simulator that was shut down, started again on its port.
pub async fn spawn_simulator_at(addr: SocketAddr) -> Simulator {
    init_test_logging();
    let mut config = SimulatorConfig::new(SECRET_ID, SECRET_KEY);
    config.rate_limit = 0;
    within(
        "the simulator's port to be free again",
        Duration::from_secs(10),
        async {
            loop {
                match TcpListener::bind(addr).await {
                    Ok(listener) => return Simulator::start(config, listener).unwrap(),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        },
    )
    .await
}

/// Starts a gateway calling `primary`, with `backups` after it in
/// `--endpoint` (in order).
pub async fn spawn_gateway_with_backups(
    primary: &Simulator,
    backups: &[&Simulator],
    mut options: Options,
) -> Gateway {
    for backup in backups {
        // A repeated --endpoint adds to the list, as a comma does.
        options
            .flags
            .extend(["--endpoint".to_owned(), backup.endpoint().to_string()]);
    }
    spawn_gateway(primary, options).await
}

/// Starts a simulator (with [`SECRET_ID`]/[`SECRET_KEY`]) and a gateway that
/// calls it.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

/// [`spawn_app`] with options.
pub async fn spawn_app_with(options: Options) -> TestApp {
    let simulator = spawn_simulator(options.simulator_rate_limit).await;
    let gateway = spawn_gateway(&simulator, options).await;
    TestApp {
        addr: gateway.addr,
        admin_addr: gateway.admin_addr,
        client: gateway.client.clone(),
        simulator,
        gateway,
    }
}

/// Starts a gateway calling `simulator`.
pub async fn spawn_gateway(simulator: &Simulator, options: Options) -> Gateway {
    let credentials =
        Credentials::new(SECRET_ID, options.gateway_secret_key.clone(), None).unwrap();
    spawn_gateway_with_credentials(simulator, options, CredentialProvider::fixed(credentials)).await
}

/// Starts a gateway calling `simulator` with the keys of `credentials`.
pub async fn spawn_gateway_with_credentials(
    simulator: &Simulator,
    options: Options,
    credentials: CredentialProvider,
) -> Gateway {
    init_test_logging();
    let mut flags = vec![
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--admin-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--endpoint".to_owned(),
        simulator.endpoint().to_string(),
    ];
    if !options.flags.iter().any(|flag| flag == "--drain-timeout") {
        flags.extend(["--drain-timeout".to_owned(), "5s".to_owned()]);
    }
    flags.extend(options.flags);
    let args = ServeArgs::from_flags(flags);
    let app = Application::build(args, UpstreamTarget::Tencent(Arc::new(credentials)))
        .await
        .expect("gateway builds");
    let addr = app.local_addr();
    let admin_addr = app.admin_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    // Lazy: a TLS gateway refuses this plaintext channel, and tests that use
    // TLS bring their own.
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let client = IdCardVerificationServiceClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    Gateway {
        addr,
        admin_addr,
        client,
        stop: Some(stop),
        server,
    }
}

/// A `redis-server` of this test's own on a loopback port (see
/// `tests/support/redis.rs`), stopped on drop. A missing redis-server fails
/// the test (./scripts/test installs it).
pub async fn start_redis() -> RedisServer {
    RedisServer::start()
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// Checks `condition` every 20 ms until it holds. Fails the test, saying
/// `what` was awaited, when it does not hold within `timeout` (a check that
/// itself hangs past `timeout` fails it too).
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(give_up, condition()).await {
            Ok(true) => return,
            Ok(false) if tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => panic!("waited {timeout:?} for {what}, in vain"),
        }
    }
}

/// Awaits `future`, failing the test, saying `what` was awaited, when it
/// takes longer than `timeout`: for calls and streams without a deadline.
pub async fn within<T>(what: &str, timeout: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, future)
        .await
        .unwrap_or_else(|_| panic!("waited {timeout:?} for {what}, in vain"))
}

/// The value of the unlabelled, integer-valued metric `name` on the admin
/// port `admin`; fails the test when it is not there.
pub async fn metric(admin: SocketAddr, name: &str) -> u64 {
    faceid_gateway::install_crypto_provider();
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// The sample PNG with a simulator directive block appended.
pub fn png_with(directives: &str) -> Bytes {
    let mut image = SAMPLE_PNG.to_vec();
    if !directives.is_empty() {
        image.extend_from_slice(format!("FACEID-SIM[{directives}]").as_bytes());
    }
    Bytes::from(image)
}

/// A request for `image`.
pub fn image_request(image: Bytes) -> VerifyIdCardRequest {
    VerifyIdCardRequest {
        source: Some(Source::Image(image)),
        ..Default::default()
    }
}

/// A request for the sample PNG with `directives`.
pub fn request_with(directives: &str) -> VerifyIdCardRequest {
    image_request(png_with(directives))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test venv's executables (`target/venv/bin/<name>`), which
/// `./scripts/test` creates. A missing venv fails the test, never skips it.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = repo_root().join("target/venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run ./scripts/test (it creates target/venv)",
        path.display()
    );
    path
}

/// Calls `VerifyIdCard` and returns the answer, failing the test on an error.
pub async fn verified(
    client: &mut IdCardVerificationServiceClient<Channel>,
    request: VerifyIdCardRequest,
) -> faceid_gateway::proto::VerifyIdCardResponse {
    client
        .verify_id_card(request)
        .await
        .expect("the call succeeds")
        .into_inner()
}
