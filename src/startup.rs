//! Assembles the gateway from its layers: the upstream client (Tencent or
//! the in-process simulator) and the shared stack, the gRPC services (ours,
//! health, reflection) behind caller authentication, the admin port, and the
//! graceful shutdown sequence. `Application::build` binds (port 0 works) so
//! tests run the real server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::ServiceBuilder;

use crate::config::watch::Watched;
use crate::config::{EncryptionAlgorithm, EncryptionDefault, ServeArgs};
use crate::metrics::{ClosedLabels, Metrics, PortLabels};
use crate::net::http::{ConnectionMetrics, Http2Settings, HttpServer, HttpSettings};
use crate::net::listener::Listener;
pub use crate::net::tls::TlsError;
use crate::net::tls::{ReloadingAcceptor, TlsFiles};
use crate::proto::id_card_verification_service_server::IdCardVerificationServiceServer;
use crate::server::admin;
use crate::server::auth::{self, AuthLayer, Authenticator};
use crate::server::batch::BatchSettings;
use crate::server::guard::{Guard, GuardLayer};
use crate::server::json::Transcode;
use crate::server::readiness::Readiness;
use crate::server::service::VerificationService;
use crate::server::spend::billing::Billing;
use crate::server::spend::budget::{
    BudgetStore, Budgets, Limits, LocalBudgetStore, RedisBudgetStore,
};
use crate::server::spend::clock::{Clock, SystemClock};
use crate::server::spend::idempotency::{
    Idempotency, IdempotencyStore, LocalIdempotencyStore, RedisIdempotencyStore,
};
use crate::server::spend::{Reconnect, Spend};
use crate::server::validate::{InputRules, MAX_REQUEST_MESSAGE_BYTES};
use crate::server::verifier::{EncryptionPolicy, Verifier};
use crate::simulator::{Simulator, SimulatorConfig};
use crate::tencent::crypto::{Algorithm, PrivateKeys, PublicKeys};
use crate::tencent::{self, ClientConfig, CredentialProvider, Credentials};
use crate::tencent::{EncryptionMode, EncryptionSettings};
use crate::upstream::limit::{self, Limiter, RedisConfig, RedisLimiter, Unusable};
use crate::upstream::{self, StackConfig};

/// The largest header block a call may send.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// How long a keepalive ping may go unanswered.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// HTTP/2 flow-control window per stream: one large image in one go.
const STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
/// HTTP/2 flow-control window per connection.
const CONNECTION_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// The largest HTTP/2 frame accepted: fewer frames per image.
const MAX_FRAME_BYTES: u32 = 1024 * 1024;
/// The largest message the server sends: an answer with a portrait.
const MAX_RESPONSE_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Where the upstream calls go.
pub enum UpstreamTarget {
    /// Start the simulator in-process on a loopback port, with throwaway keys.
    BuiltInSimulator,
    /// Call `ServeArgs::endpoint` with these credentials.
    Tencent(Arc<CredentialProvider>),
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The upstream client could not be built.
    #[error(transparent)]
    Client(#[from] tencent::client::BuildError),
    /// The in-process simulator failed to start.
    #[error("cannot start the built-in simulator")]
    Simulator(#[source] std::io::Error),
    /// Reflection descriptors are invalid (a build problem).
    #[error("cannot build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The Redis URL of the shared rate limit is not usable.
    #[error("--rate-limit-redis is not a usable Redis URL")]
    Redis(#[source] redis::RedisError),
    /// Redis refused the password of `--rate-limit-redis`.
    #[error(
        "Redis refused to authenticate (no password or a wrong one in --rate-limit-redis, \
         e.g. rediss://:PASSWORD@host:6379/0)"
    )]
    RedisAuthentication,
    /// The TLS handshake with Redis failed.
    #[error(
        "the TLS handshake with Redis failed: its certificate is not trusted (give its CA with \
         --rate-limit-redis-ca) or it does not speak TLS on that port"
    )]
    RedisTls,
    /// The CA bundle of `--rate-limit-redis-ca` cannot be read.
    #[error("cannot read the Redis CA bundle {}", .0.display())]
    RedisCa(std::path::PathBuf),
    /// A Tencent public key file is unusable.
    #[error("cannot load Tencent's encryption public keys")]
    PublicKeys(#[from] crate::tencent::crypto::CryptoError),
    /// The TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The tokens file is unusable.
    #[error(transparent)]
    Tokens(#[from] auth::TokensFileError),
}

/// The gRPC port's service: our RPCs (over gRPC and HTTP/JSON), health and
/// reflection behind caller authentication.
type GrpcService = auth::Auth<Guard<Transcode<Routes>>>;

/// A bound, ready-to-run gateway.
pub struct Application {
    grpc: Listener,
    grpc_service: GrpcService,
    grpc_settings: HttpSettings,
    /// TLS for the gRPC port, when configured.
    tls: Option<Arc<ReloadingAcceptor>>,
    health: HealthReporter,
    admin: Listener,
    admin_settings: HttpSettings,
    metrics: Arc<Metrics>,
    simulator: Option<Simulator>,
    drain_timeout: Duration,
    /// Stops the background tasks (file reloaders) when cancelled; cancelled
    /// when the application is dropped, built or not.
    background: tokio_util::sync::DropGuard,
    /// A clone of the background token, for tasks started when serving.
    background_token: CancellationToken,
    /// Cancelled when shutdown starts, so batch streams begin draining and
    /// readiness turns 503.
    draining: CancellationToken,
    /// What both readiness probes report.
    readiness: Readiness,
    /// Billing, budgets and idempotency (the admin port reports budgets).
    spend: Arc<Spend>,
    /// The callers, when tokens are on (the admin port lists their budgets).
    authenticator: Option<Arc<Authenticator>>,
}

/// The in-process simulator, bound but not started.
struct BoundSimulator {
    listener: TcpListener,
    config: SimulatorConfig,
    credentials: Arc<CredentialProvider>,
    /// The public halves of the simulator's key pairs, which stand in for
    /// Tencent's.
    public_keys: PublicKeys,
}

impl Application {
    /// Binds the listeners and builds every layer; starts the simulator
    /// when asked to. Everything that can fail is done before any
    /// background task starts, so a failed build leaves nothing running.
    ///
    /// # Errors
    /// Binding fails, or a layer cannot be set up.
    pub async fn build(args: ServeArgs, target: UpstreamTarget) -> Result<Self, StartupError> {
        let (bound_simulator, credentials, reloading_credentials) = match target {
            UpstreamTarget::BuiltInSimulator => {
                let simulator = bind_simulator(args.simulator_rate_limit).await?;
                let credentials = Arc::clone(&simulator.credentials);
                (Some(simulator), credentials, None)
            }
            UpstreamTarget::Tencent(credentials) => {
                (None, Arc::clone(&credentials), Some(credentials))
            }
        };
        let credentials_state = credentials.state();
        let (endpoint, backups) = match &bound_simulator {
            Some(simulator) => (simulator_endpoint(&simulator.listener)?, Vec::new()),
            None => match args.endpoint.split_first() {
                Some((primary, backups)) => (primary.clone(), backups.to_vec()),
                None => return Err(tencent::client::BuildError::Endpoint.into()),
            },
        };
        let public_keys = match &bound_simulator {
            // The simulator's key pairs stand in for Tencent's.
            Some(simulator) => simulator.public_keys.clone(),
            None => PublicKeys::from_pem_files(
                args.tencent_rsa_public_key.as_deref(),
                args.tencent_sm2_public_key.as_deref(),
            )?,
        };
        let metrics = Arc::new(Metrics::new());
        credentials.report_to(&metrics);
        metrics
            .rate_limit_configured
            .set(i64::from(args.rate_limit));
        let redis = SharedRedis::of(&args)?;
        let limiter = build_limiter(&args, redis.as_ref(), &metrics)?;
        let shared_limiter = match &limiter {
            Limiter::Redis(shared) => {
                check_redis(shared, args.rate_limit_redis_timeout).await?;
                Some(Arc::clone(shared))
            }
            Limiter::Local(_) => None,
        };
        let spend = Arc::new(build_spend(&args, redis.as_ref(), &metrics)?);
        let client =
            tencent::Client::with_backups(client_config(&args, endpoint), backups, credentials)?;
        let tls = match tls_files(&args) {
            Some(files) => Some(Arc::new(ReloadingAcceptor::load(files)?)),
            None => None,
        };
        let authenticator = match &args.auth_tokens_file {
            Some(path) => Some(Arc::new(Authenticator::load(path)?)),
            None => None,
        };
        let grpc = bind(args.listen, "grpc").await?;
        let admin = bind(args.admin_listen, "admin").await?;

        let draining = CancellationToken::new();
        let verification = VerificationService::new(
            Verifier::new(
                upstream::build(client, limiter, &stack_config(&args), Arc::clone(&metrics)),
                args.match_threshold,
                encryption_policy(&args, public_keys),
                InputRules {
                    allow_private_image_urls: args.allow_private_image_urls,
                },
            )
            .with_spend(Arc::clone(&spend)),
            BatchSettings {
                per_stream: args.batch_concurrency as usize,
                global: Arc::new(Semaphore::new(args.batch_global_concurrency as usize)),
                max_items: args.batch_max_items,
                // Leave a second of the server's drain for the last answers.
                drain_timeout: args.drain_timeout.saturating_sub(Duration::from_secs(1)),
                metrics: Arc::clone(&metrics),
            },
            draining.clone(),
            Arc::clone(&metrics),
        );
        let (health, health_service) = tonic_health::server::health_reporter();
        let open_routes = Routes::new(health_service.clone())
            .add_service(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    .build_v1()?,
            )
            .add_service(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    .build_v1alpha()?,
            )
            .prepare();
        let routes = Routes::new(health_service)
            .add_service(reflection_v1()?)
            .add_service(reflection_v1alpha()?)
            .add_service(
                IdCardVerificationServiceServer::new(verification.clone())
                    .max_decoding_message_size(MAX_REQUEST_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_RESPONSE_MESSAGE_BYTES)
                    // Many clients compress; the size limit applies once
                    // decompressed.
                    .accept_compressed(CompressionEncoding::Gzip)
                    .send_compressed(CompressionEncoding::Gzip),
            )
            .prepare();
        let grpc_service = ServiceBuilder::new()
            .layer(AuthLayer::new(
                authenticator.clone(),
                args.auth_allow_reflection,
                open_routes,
                Arc::clone(&metrics),
            ))
            .layer(GuardLayer::new(Arc::clone(&metrics)))
            .service(Transcode::new(routes, verification, Arc::clone(&metrics)));

        let simulator = match bound_simulator {
            Some(bound) => {
                let simulator = Simulator::start(bound.config, bound.listener)
                    .map_err(StartupError::Simulator)?;
                tracing::info!(
                    endpoint = %simulator.endpoint(),
                    "built-in simulator started; answers are simulated"
                );
                Some(simulator)
            }
            None => None,
        };

        // Nothing below can fail: start the background work.
        let background = CancellationToken::new();
        if let Some(credentials) = reloading_credentials {
            credentials.spawn_reloader(args.reload_interval, background.clone());
        }
        if let Some(tls) = &tls {
            tls.spawn_reloader(args.reload_interval, background.clone());
        }
        if let Some(authenticator) = &authenticator {
            authenticator.spawn_reloader(args.reload_interval, background.clone());
        }
        if let (Some(redis), Some(limiter)) = (redis, shared_limiter) {
            redis.follow_ca(
                limiter,
                Arc::clone(&spend),
                args.reload_interval,
                background.clone(),
            );
        }
        Ok(Self {
            grpc,
            grpc_service,
            grpc_settings: grpc_settings(&args),
            admin_settings: admin_settings(&args),
            tls,
            health,
            admin,
            metrics,
            simulator,
            drain_timeout: args.drain_timeout,
            background_token: background.clone(),
            background: background.drop_guard(),
            readiness: Readiness::new(draining.clone(), credentials_state),
            draining,
            spend,
            authenticator,
        })
    }

    /// The address the gRPC server listens on.
    ///
    /// # Panics
    /// Never in practice: a bound listener has an address.
    pub fn local_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The address of the admin HTTP port (`/metrics`).
    ///
    /// # Panics
    /// Never in practice: a bound listener has an address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The in-process simulator, when running with `--simulate`.
    pub fn simulator(&self) -> Option<&Simulator> {
        self.simulator.as_ref()
    }

    /// Serves until `shutdown` completes, then: health turns NOT_SERVING,
    /// the port closes, and in-flight calls get up to the drain timeout to
    /// finish.
    ///
    /// # Errors
    /// None today; the signature leaves room for a server that fails.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartupError> {
        let addr = self.local_addr();
        let admin_addr = self.admin_addr();
        let stop_admin = self.background_token.child_token();
        let admin = HttpServer::new(
            self.admin,
            admin::service(
                Arc::clone(&self.metrics),
                self.readiness.clone(),
                admin::BudgetSource {
                    spend: Arc::clone(&self.spend),
                    authenticator: self.authenticator.clone(),
                },
            ),
            self.admin_settings,
        )
        .with_metrics(connection_metrics(&self.metrics, "admin"))
        .serve(stop_admin.clone());
        let admin = tokio::spawn(async move { admin.await.finish_within(Duration::ZERO).await });

        tokio::spawn(
            self.readiness
                .clone()
                .drive(self.health.clone(), self.background_token.child_token()),
        );
        let stop_grpc = CancellationToken::new();
        let grpc = HttpServer::new(self.grpc, self.grpc_service, self.grpc_settings)
            .with_tls(self.tls.clone())
            .with_metrics(connection_metrics(&self.metrics, "grpc"))
            .serve(stop_grpc.clone());
        tracing::info!(
            listen = %addr,
            admin_listen = %admin_addr,
            simulated = self.simulator.is_some(),
            tls = self.tls.is_some(),
            "faceid-gateway serving"
        );
        let grpc = tokio::spawn(grpc);
        shutdown.await;

        self.draining.cancel();
        self.health
            .set_not_serving::<IdCardVerificationServiceServer<VerificationService>>()
            .await;
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        stop_grpc.cancel();
        tracing::info!(drain_timeout = ?self.drain_timeout, "draining in-flight calls");
        if let Ok(draining) = grpc.await
            && !draining.finish_within(self.drain_timeout).await
        {
            tracing::warn!(
                drain_timeout = ?self.drain_timeout,
                "drain timeout reached; abandoning remaining calls"
            );
        }
        stop_admin.cancel();
        let _ = admin.await;
        drop(self.background);
        if let Some(simulator) = self.simulator {
            simulator.shutdown().await;
        }
        tracing::info!("faceid-gateway stopped");
        Ok(())
    }
}

/// Why `serve --check-config` refused the configuration: the error `serve`
/// would stop with, unchanged (same message, same causes).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// An `OTEL_*` setting `serve` refuses.
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    /// Credentials `serve` would not start with.
    #[error(transparent)]
    Credentials(#[from] tencent::credentials::CredentialsError),
    /// Anything else [`Application::build`] refuses.
    #[error(transparent)]
    Startup(#[from] StartupError),
}

/// `serve --check-config`: the checks `serve` makes before it serves, in
/// the same order and with the same errors, but without binding a port,
/// contacting anything, or installing the global subscriber. `var` looks a
/// variable up (`std::env::var` outside tests).
///
/// Not made, as they need the network: temporary keys (STS, TKE OIDC, the
/// CVM metadata server; `--role-arn`'s keys), and whether Redis answers and
/// accepts the password and certificate. Not made for a named file that is
/// absent (a Secret not mounted where the check runs): its contents, and
/// the checks that need them (TLS files, the tokens file, Tencent public
/// keys, the Redis CA bundle, the credentials file). A file that is present
/// is read and checked as `serve` reads it.
///
/// # Errors
/// The first check that fails, as `serve` reports it.
pub async fn check_config(
    args: &ServeArgs,
    var: impl Fn(&str) -> Option<String>,
) -> Result<(), CheckError> {
    // What telemetry::init checks: the OTLP settings and the exporter.
    let otlp = crate::telemetry::OtlpSettings::from_env(&var)?;
    let _unused = crate::telemetry::tracer_provider(&otlp)?.shutdown();
    if !args.simulate
        && let Some(settings) = offline_credentials(args, &var)
    {
        CredentialProvider::from_chain(&settings, &var).await?;
    }
    check_build(&present_files_only(args))?;
    Ok(())
}

/// The credential settings whose check needs no network, or `None` when
/// every check would: the keys found are checked without `--role-arn`'s STS
/// call, and `auto` only when it stops before TKE OIDC's or the CVM role's
/// first request (keys in the environment, a credentials file, or a TKE
/// setup that is half there).
fn offline_credentials(
    args: &ServeArgs,
    var: &impl Fn(&str) -> Option<String>,
) -> Option<tencent::credentials::ChainSettings> {
    use crate::config::CredentialsSource;
    use tencent::credentials::{ENV_CREDENTIALS_FILE, ENV_SECRET_ID, ENV_SECRET_KEY};

    let set = |name: &str| var(name).is_some_and(|value| !value.is_empty());
    // A file that is named must be there: when it is not (yet), it cannot
    // be read here.
    let named_file_absent = var(ENV_CREDENTIALS_FILE)
        .filter(|path| !path.is_empty())
        .is_some_and(|path| !std::path::Path::new(&path).exists());
    let default_file = var("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| std::path::Path::new(&home).join(".tencentcloud/credentials"))
        .into_iter()
        .chain([std::path::PathBuf::from("/etc/tencentcloud/credentials")])
        .any(|path| path.exists());
    let tke = [
        "TKE_ROLE_ARN",
        "TKE_PROVIDER_ID",
        "TKE_WEB_IDENTITY_TOKEN_FILE",
    ]
    .iter()
    .filter(|name| set(name))
    .count();
    let offline = match args.credentials_source {
        CredentialsSource::Env => true,
        CredentialsSource::File => !named_file_absent,
        // All three set: STS is asked.
        CredentialsSource::Oidc => tke < 3,
        CredentialsSource::CvmRole => false,
        CredentialsSource::Auto => {
            set(ENV_SECRET_ID)
                || set(ENV_SECRET_KEY)
                || (!named_file_absent && (set(ENV_CREDENTIALS_FILE) || default_file))
                || (!named_file_absent && (1..3).contains(&tke))
        }
    };
    let mut settings = tencent::credentials::ChainSettings::from_args(args);
    settings.role = None;
    offline.then_some(settings)
}

/// `args` with every named file that is absent unset, so the checks below
/// skip what they cannot read; TLS needs both its certificate and its key.
fn present_files_only(args: &ServeArgs) -> ServeArgs {
    fn present(path: &Option<std::path::PathBuf>) -> Option<std::path::PathBuf> {
        path.clone().filter(|path| path.exists())
    }
    let mut args = args.clone();
    args.tencent_rsa_public_key = present(&args.tencent_rsa_public_key);
    args.tencent_sm2_public_key = present(&args.tencent_sm2_public_key);
    args.rate_limit_redis_ca = present(&args.rate_limit_redis_ca);
    args.auth_tokens_file = present(&args.auth_tokens_file);
    args.tls_client_ca = present(&args.tls_client_ca);
    if present(&args.tls_cert).is_none() || present(&args.tls_key).is_none() {
        (args.tls_cert, args.tls_key, args.tls_client_ca) = (None, None, None);
    }
    args
}

/// The steps of [`Application::build`] that need neither the network nor a
/// port, in its order (keep the two in step).
fn check_build(args: &ServeArgs) -> Result<(), StartupError> {
    let endpoints = if args.simulate {
        None
    } else {
        let Some((primary, backups)) = args.endpoint.split_first() else {
            return Err(tencent::client::BuildError::Endpoint.into());
        };
        PublicKeys::from_pem_files(
            args.tencent_rsa_public_key.as_deref(),
            args.tencent_sm2_public_key.as_deref(),
        )?;
        Some((primary.clone(), backups.to_vec()))
    };
    let metrics = Arc::new(Metrics::new());
    let redis = SharedRedis::of(args)?;
    build_limiter(args, redis.as_ref(), &metrics)?;
    build_spend(args, redis.as_ref(), &metrics)?;
    if let Some((endpoint, backups)) = endpoints {
        // Throwaway keys: only the endpoints, the region and the HTTP
        // client's settings are checked.
        let keys = Credentials::new("AKIDcheckconfig", "check-config", None)
            .expect("constant keys are visible ASCII");
        tencent::Client::with_backups(
            client_config(args, endpoint),
            backups,
            Arc::new(CredentialProvider::fixed(keys)),
        )?;
    }
    if let Some(files) = tls_files(args) {
        ReloadingAcceptor::load(files)?;
    }
    if let Some(path) = &args.auth_tokens_file {
        Authenticator::load(path)?;
    }
    Ok(())
}

/// Completes when the process receives SIGTERM (Kubernetes) or SIGINT
/// (Ctrl-C): the signal that starts a graceful shutdown. The handlers are
/// installed when this is called, not when the future is first polled, so
/// a SIGTERM sent as soon as "faceid-gateway serving" is logged is not lost
/// (it would otherwise kill the process before the drain).
///
/// # Panics
/// When called outside a Tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        let (interrupt, terminate) = (received(interrupt), received(terminate));
        #[cfg(not(unix))]
        let (interrupt, terminate) = (
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
            std::future::pending::<()>(),
        );
        tokio::select! {
            () = interrupt => tracing::info!("SIGINT received; shutting down"),
            () = terminate => tracing::info!("SIGTERM received; shutting down"),
        }
    }
}

/// Completes at the first signal of `stream`; never without one.
#[cfg(unix)]
async fn received(stream: Option<tokio::signal::unix::Signal>) {
    match stream {
        Some(mut stream) => {
            stream.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

async fn bind(addr: SocketAddr, port: &'static str) -> Result<Listener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map(|tcp| Listener::new(tcp, port))
        .map_err(|source| StartupError::Bind { addr, source })
}

/// How the admin port serves its connections: HTTP/1.1 or HTTP/2, with
/// the same handshake, idle and connection limits as the gRPC port.
fn admin_settings(args: &ServeArgs) -> HttpSettings {
    HttpSettings {
        http1: true,
        handshake_timeout: args.handshake_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: Some(args.max_connections as usize),
        ..HttpSettings::default()
    }
}

/// The connection counters of `port`.
fn connection_metrics(metrics: &Metrics, port: &'static str) -> ConnectionMetrics {
    let closed = |reason| {
        metrics
            .connections_closed
            .get_or_create(&ClosedLabels { port, reason })
            .clone()
    };
    ConnectionMetrics {
        accepted: metrics
            .connections_accepted
            .get_or_create(&PortLabels { port })
            .clone(),
        refused: metrics
            .connections_refused
            .get_or_create(&PortLabels { port })
            .clone(),
        handshake_timeouts: closed("handshake_timeout"),
        idle_closed: closed("idle"),
        open: metrics
            .connections_open
            .get_or_create(&PortLabels { port })
            .clone(),
    }
}

/// How the gRPC port serves its connections.
fn grpc_settings(args: &ServeArgs) -> HttpSettings {
    HttpSettings {
        // HTTP/1.1 too: the HTTP/JSON routes answer on this port.
        http1: true,
        http2: Http2Settings {
            // A 200 KB image needs no WINDOW_UPDATE round trips with a 1 MiB
            // stream window; 8 MiB per connection bounds what one client can
            // make the gateway buffer.
            initial_stream_window: Some(STREAM_WINDOW_BYTES),
            initial_connection_window: Some(CONNECTION_WINDOW_BYTES),
            max_frame_size: Some(MAX_FRAME_BYTES),
            max_concurrent_streams: Some(args.max_concurrent_streams),
            max_header_list_size: Some(MAX_HEADER_LIST_BYTES),
            keepalive: args
                .keepalive_interval
                .map(|interval| (interval, KEEPALIVE_TIMEOUT)),
        },
        max_connection_age: args.max_connection_age,
        handshake_timeout: args.handshake_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: Some(args.max_connections as usize),
    }
}

fn reflection_v1() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    StartupError,
> {
    Ok(tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?)
}

fn reflection_v1alpha() -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
    StartupError,
> {
    Ok(tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?)
}

/// The Redis shared by the replicas, when configured: its client and the
/// CA bundle it trusts (followed on disk).
struct SharedRedis {
    url: String,
    ca: Option<Arc<Watched<Vec<u8>, StartupError>>>,
}

impl SharedRedis {
    fn of(args: &ServeArgs) -> Result<Option<Self>, StartupError> {
        let Some(url) = &args.rate_limit_redis else {
            return Ok(None);
        };
        let ca = match &args.rate_limit_redis_ca {
            Some(path) => Some(Arc::new(Watched::load(
                "Redis CA certificates",
                vec![path.clone()],
                |path| StartupError::RedisCa(path.to_owned()),
                |contents| Ok(contents[0].clone()),
            )?)),
            None => None,
        };
        let shared = Self {
            url: url.clone(),
            ca,
        };
        shared.client()?;
        Ok(Some(shared))
    }

    /// A client for the URL, trusting the current CA bundle.
    fn client(&self) -> Result<redis::Client, StartupError> {
        let ca = self.ca.as_ref().map(|ca| ca.current());
        client_trusting(&self.url, ca.as_deref().map(Vec::as_slice)).map_err(StartupError::Redis)
    }

    /// Reconnects `limiter` and the spend stores with the CA bundle each
    /// time its file changes.
    fn follow_ca(
        self,
        limiter: Arc<RedisLimiter>,
        spend: Arc<Spend>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let Some(ca) = self.ca else {
            return;
        };
        let url = self.url;
        ca.spawn_reloader(interval, shutdown, move |pem: &Vec<u8>, changed| {
            if !changed {
                return;
            }
            match client_trusting(&url, Some(pem)).and_then(|client| {
                spend.reconnect(&client)?;
                limiter.reconnect(client)
            }) {
                Ok(()) => tracing::info!("Redis CA bundle changed; new connections trust it"),
                Err(error) => tracing::warn!(
                    kind = ?error.kind(),
                    "the new Redis CA bundle is unusable; keeping the previous one"
                ),
            }
        });
    }
}

/// A Redis client for `url`, trusting `ca` (PEM) instead of the system's
/// roots when given.
fn client_trusting(url: &str, ca: Option<&[u8]>) -> redis::RedisResult<redis::Client> {
    match ca {
        None => redis::Client::open(url),
        Some(ca) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.to_vec()),
            },
        ),
    }
}

/// Refuses to start when Redis answers but refuses the gateway (a wrong
/// password, an untrusted certificate); a Redis that does not answer only
/// means starting on the fallback share, as if it went away later.
async fn check_redis(redis: &RedisLimiter, timeout: Duration) -> Result<(), StartupError> {
    match redis.probe(timeout.max(Duration::from_secs(2))).await {
        Ok(()) => Ok(()),
        Err(Unusable::Authentication) => Err(StartupError::RedisAuthentication),
        Err(Unusable::Tls) => Err(StartupError::RedisTls),
        Err(Unusable::Unreachable(why)) => {
            tracing::warn!(
                reason = why,
                "Redis does not answer at start-up; starting on this replica's share of the limit"
            );
            Ok(())
        }
    }
}

/// The upstream rate limiter: shared through Redis when configured,
/// otherwise this process's own.
fn build_limiter(
    args: &ServeArgs,
    redis: Option<&SharedRedis>,
    metrics: &Metrics,
) -> Result<Limiter, StartupError> {
    let quota = limit::per_second(args.rate_limit, args.rate_burst);
    let Some(redis) = redis else {
        return Ok(Limiter::local(quota));
    };
    let share = (f64::from(args.rate_limit) * args.rate_limit_fallback_share).floor();
    // At least one call per second, so a replica never stops entirely.
    let fallback_rate = (share as u32).max(1);
    let redis = RedisLimiter::new(RedisConfig {
        client: redis.client()?,
        key: args.rate_limit_redis_key.clone(),
        quota,
        fallback_quota: limit::per_second(fallback_rate, 0),
        timeout: args.rate_limit_redis_timeout,
        switch_hold: limit::WINDOW,
        fallback_decisions: metrics.rate_limit_fallbacks.clone(),
    })
    .map_err(StartupError::Redis)?;
    tracing::info!(
        rate_limit = args.rate_limit,
        fallback_rate,
        "upstream rate limit shared through Redis"
    );
    Ok(Limiter::Redis(Arc::new(redis)))
}

/// Where budgets and idempotency answers are kept, and which of those
/// stores follow the Redis CA bundle.
type SpendStores = (
    Arc<dyn BudgetStore>,
    Arc<dyn IdempotencyStore>,
    Vec<Arc<dyn Reconnect>>,
);

/// Billing, budgets and idempotency: in Redis when the rate limit is
/// shared there (so replicas share budgets and answers), else in memory.
fn build_spend(
    args: &ServeArgs,
    redis: Option<&SharedRedis>,
    metrics: &Arc<Metrics>,
) -> Result<Spend, StartupError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (budget_store, idempotency_store, redis_stores): SpendStores = match redis {
        Some(redis) => {
            let budgets = Arc::new(
                RedisBudgetStore::new(
                    redis.client()?,
                    args.rate_limit_redis_timeout,
                    args.rate_limit_fallback_share,
                    Arc::clone(&clock),
                    metrics.budget_fallback_decisions.clone(),
                )
                .map_err(StartupError::Redis)?,
            );
            let answers = Arc::new(
                RedisIdempotencyStore::new(
                    redis.client()?,
                    "faceid-gateway:idempotency",
                    args.rate_limit_redis_timeout,
                )
                .map_err(StartupError::Redis)?,
            );
            (
                budgets.clone(),
                answers.clone(),
                vec![budgets as Arc<dyn Reconnect>, answers],
            )
        }
        None => (
            Arc::new(LocalBudgetStore::new(Arc::clone(&clock))),
            Arc::new(LocalIdempotencyStore::new(
                usize::try_from(args.idempotency_cache_size).unwrap_or(usize::MAX),
                metrics,
            )),
            Vec::new(),
        ),
    };
    let budgets = Budgets::new(
        Limits {
            day: args.budget_day,
            month: args.budget_month,
        },
        budget_store,
        clock,
        "faceid-gateway:budget",
        Arc::clone(metrics),
    );
    Ok(Spend::new(
        Billing::new(args.billable_results.as_deref()),
        budgets,
        Idempotency::new(idempotency_store, args.idempotency_ttl, Arc::clone(metrics)),
        Arc::clone(metrics),
    )
    .with_redis_stores(redis_stores))
}

fn encryption_policy(args: &ServeArgs, public_keys: PublicKeys) -> EncryptionPolicy {
    let default_mode = match args.upstream_encryption {
        EncryptionDefault::Off => None,
        EncryptionDefault::Response => Some(EncryptionMode::Response),
        EncryptionDefault::Fields => Some(EncryptionMode::Fields),
    };
    let algorithm = match args.encryption_algorithm {
        EncryptionAlgorithm::Aes256Cbc => Algorithm::Aes256Cbc,
        EncryptionAlgorithm::Sm4Gcm => Algorithm::Sm4Gcm,
    };
    EncryptionPolicy {
        default_mode,
        settings: EncryptionSettings {
            algorithm,
            public_keys: Arc::new(public_keys),
        },
    }
}

/// The Tencent client's settings from the flags, for `endpoint`.
fn client_config(args: &ServeArgs, endpoint: reqwest::Url) -> ClientConfig {
    ClientConfig {
        endpoint,
        region: args.region.clone(),
        connect_timeout: args.connect_timeout,
        request_timeout: args.upstream_timeout,
    }
}

/// The gRPC port's TLS files, when both a certificate and a key are named.
fn tls_files(args: &ServeArgs) -> Option<TlsFiles> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
        }),
        _ => None,
    }
}

fn stack_config(args: &ServeArgs) -> StackConfig {
    StackConfig {
        max_in_flight: args.max_in_flight as usize,
        rate_limit_per_window: args.rate_limit.saturating_add(args.rate_burst),
        rate_limit_max_wait: args.rate_limit_max_wait,
        max_attempts: args.max_attempts,
        retry_base_delay: args.retry_base_delay,
        retry_max_delay: args.retry_max_delay,
        eject_after: args.eject_after,
        eject_for: args.eject_for,
        detailed_spans: crate::telemetry::spans_exported(),
    }
}

/// Binds the simulator on a loopback port, with fresh random keys; it
/// starts serving at the end of the build.
async fn bind_simulator(rate_limit: u32) -> Result<BoundSimulator, StartupError> {
    let secret_id = format!("AKIDsimulated{}", uuid::Uuid::new_v4().simple());
    let secret_key = uuid::Uuid::new_v4().simple().to_string();
    let mut config = SimulatorConfig::new(secret_id.clone(), secret_key.clone());
    config.rate_limit = rate_limit;
    let private_keys = PrivateKeys::generate()?;
    let public_keys = private_keys.public_keys();
    config.private_keys = Some(private_keys);
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(StartupError::Simulator)?;
    let credentials = Credentials::new(secret_id, secret_key, None)
        .map_err(|_| StartupError::Simulator(std::io::ErrorKind::InvalidData.into()))?;
    Ok(BoundSimulator {
        listener,
        config,
        credentials: Arc::new(CredentialProvider::fixed(credentials)),
        public_keys,
    })
}

/// The endpoint URL of a bound simulator.
fn simulator_endpoint(listener: &TcpListener) -> Result<reqwest::Url, StartupError> {
    let addr = listener.local_addr().map_err(StartupError::Simulator)?;
    reqwest::Url::parse(&format!("http://{addr}/"))
        .map_err(|_| StartupError::Simulator(std::io::ErrorKind::InvalidInput.into()))
}
