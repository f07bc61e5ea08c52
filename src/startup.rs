//! Assembles the gateway: upstream client (Tencent or the in-process
//! simulator), gRPC services (ours, health, reflection), and the graceful
//! shutdown sequence. `Application::build` binds (port 0 works) so tests can
//! run the real server.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::admin;
use crate::auth::{self, AuthLayer, Authenticator};
use crate::batch::BatchSettings;
use crate::config::{EncryptionAlgorithm, ServeArgs, UpstreamEncryption};
use crate::crypto::{Algorithm, PublicKeys};
use crate::limit::{self, Limiter, RedisConfig, RedisLimiter};
use crate::metrics::Metrics;
use crate::proto::id_card_verification_service_server::IdCardVerificationServiceServer;
use crate::service::VerificationService;
use crate::simulator::{Simulator, SimulatorConfig};
use crate::tencent::{self, ClientConfig, CredentialProvider, Credentials};
use crate::tencent::{EncryptionMode, EncryptionSettings};
use crate::tls::{self, ReloadingAcceptor, TlsFiles};
use crate::upstream::{self, StackConfig};
use crate::validate::MAX_REQUEST_MESSAGE_BYTES;
use crate::verifier::{EncryptionPolicy, Verifier};
use tokio::sync::Semaphore;

/// The largest header block a call may send.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// How long a keepalive ping may go unanswered.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Limits on each client connection.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    max_concurrent_streams: u32,
    keepalive_interval: Duration,
    max_connection_age: Option<Duration>,
}

/// HTTP/2 flow-control window per stream: one large image in one go.
const STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
/// HTTP/2 flow-control window per connection.
const CONNECTION_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// The largest HTTP/2 frame accepted: fewer frames per image.
const MAX_FRAME_BYTES: u32 = 1024 * 1024;
/// The largest message the server sends: an answer with a portrait.
const MAX_RESPONSE_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Where the upstream calls go.
pub enum Upstream {
    /// Start the simulator in-process on a loopback port, with throwaway keys.
    Simulate,
    /// Call `ServeArgs::endpoint` with these credentials.
    Tencent(Arc<CredentialProvider>),
}

/// Why the gateway could not start or stopped with an error.
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
    /// A Tencent public key file is unusable.
    #[error("cannot load Tencent's encryption public keys")]
    PublicKeys(#[from] crate::crypto::CryptoError),
    /// The TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The tokens file is unusable.
    #[error(transparent)]
    Tokens(#[from] auth::TokensFileError),
    /// The gRPC server failed.
    #[error("the gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
}

/// A bound, ready-to-run gateway.
pub struct Application {
    listener: TcpListener,
    /// TLS for the gRPC port, when configured.
    tls: Option<Arc<ReloadingAcceptor>>,
    /// Caller authentication (a pass-through when off).
    auth: AuthLayer,
    limits: ConnectionLimits,
    admin_listener: TcpListener,
    metrics: Arc<Metrics>,
    service: VerificationService,
    simulator: Option<Simulator>,
    drain_timeout: Duration,
    background: CancellationToken,
    /// Cancelled when shutdown starts, so batch streams begin draining.
    shutdown: CancellationToken,
}

impl Application {
    /// Binds the listener and builds the upstream client; starts the
    /// simulator first when asked to.
    ///
    /// # Errors
    /// Binding fails, or the upstream cannot be set up.
    pub async fn build(args: ServeArgs, upstream: Upstream) -> Result<Self, StartupError> {
        let background = CancellationToken::new();
        let shutdown = CancellationToken::new();
        let (endpoint, credentials, simulator, public_keys) = match upstream {
            Upstream::Simulate => {
                let (simulator, credentials) = start_simulator(args.simulator_rate_limit).await?;
                // The simulator's key pairs stand in for Tencent's.
                let public_keys = simulator.public_keys();
                (
                    simulator.endpoint(),
                    credentials,
                    Some(simulator),
                    public_keys,
                )
            }
            Upstream::Tencent(credentials) => {
                credentials.spawn_reloader(args.reload_interval, background.clone());
                let public_keys = PublicKeys::from_pem_files(
                    args.tencent_rsa_public_key.as_deref(),
                    args.tencent_sm2_public_key.as_deref(),
                )?;
                (args.endpoint.clone(), credentials, None, public_keys)
            }
        };
        let metrics = Arc::new(Metrics::new());
        metrics
            .rate_limit_configured
            .set(i64::from(args.rate_limit));
        let limiter = build_limiter(&args, &metrics)?;
        let client = tencent::Client::new(
            ClientConfig {
                endpoint,
                region: args.region.clone(),
                connect_timeout: args.connect_timeout,
                request_timeout: args.upstream_timeout,
            },
            credentials,
        )?;
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                let acceptor = Arc::new(ReloadingAcceptor::load(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: args.tls_client_ca.clone(),
                })?);
                acceptor.spawn_reloader(args.reload_interval, background.clone());
                Some(acceptor)
            }
            _ => None,
        };
        let authenticator = match &args.auth_tokens_file {
            Some(path) => {
                let authenticator = Arc::new(Authenticator::load(path)?);
                authenticator.spawn_reloader(args.reload_interval, background.clone());
                Some(authenticator)
            }
            None => None,
        };
        let listener = bind(args.listen).await?;
        let admin_listener = bind(args.admin_listen).await?;
        Ok(Self {
            listener,
            tls,
            auth: AuthLayer::new(authenticator, args.auth_allow_reflection),
            limits: ConnectionLimits {
                max_concurrent_streams: args.max_concurrent_streams,
                keepalive_interval: args.keepalive_interval,
                max_connection_age: args.max_connection_age,
            },
            service: VerificationService::new(
                Verifier::new(
                    upstream::build(client, limiter, &stack_config(&args), Arc::clone(&metrics)),
                    args.match_threshold,
                    encryption_policy(&args, public_keys),
                ),
                BatchSettings {
                    per_stream: args.batch_concurrency as usize,
                    global: Arc::new(Semaphore::new(args.batch_global_concurrency as usize)),
                    max_items: args.batch_max_items,
                    // Leave a second of the server's drain for the last answers.
                    drain_timeout: args.drain_timeout.saturating_sub(Duration::from_secs(1)),
                    metrics: Arc::clone(&metrics),
                },
                shutdown.clone(),
                Arc::clone(&metrics),
            ),
            admin_listener,
            metrics,
            shutdown,
            simulator,
            drain_timeout: args.drain_timeout,
            background,
        })
    }

    /// The address the gRPC server listens on.
    ///
    /// # Panics
    /// Never in practice: a bound listener has an address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The address of the admin HTTP port (`/metrics`).
    ///
    /// # Panics
    /// Never in practice: a bound listener has an address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The in-process simulator, when running with `--simulate`.
    pub fn simulator(&self) -> Option<&Simulator> {
        self.simulator.as_ref()
    }

    /// Serves until `shutdown` completes, then: health turns NOT_SERVING,
    /// new connections are refused, and in-flight calls get up to the drain
    /// timeout to finish.
    ///
    /// # Errors
    /// The gRPC server fails.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartupError> {
        let addr = self.local_addr();
        let admin_addr = self.admin_addr();
        tokio::spawn(admin::serve(
            self.admin_listener,
            Arc::clone(&self.metrics),
            self.shutdown.clone(),
            self.background.clone(),
        ));
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<IdCardVerificationServiceServer<VerificationService>>()
            .await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let verification = IdCardVerificationServiceServer::new(self.service)
            .max_decoding_message_size(MAX_REQUEST_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_MESSAGE_BYTES);

        let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut builder = Server::builder()
            // A 200 KB image needs no WINDOW_UPDATE round trips with a 1 MiB
            // stream window; 8 MiB per connection bounds what one client can
            // make the gateway buffer.
            .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
            .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES))
            .max_concurrent_streams(Some(self.limits.max_concurrent_streams))
            .concurrency_limit_per_connection(self.limits.max_concurrent_streams as usize)
            .http2_max_header_list_size(Some(MAX_HEADER_LIST_BYTES))
            .http2_keepalive_interval(Some(self.limits.keepalive_interval))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
        if let Some(age) = self.limits.max_connection_age {
            builder = builder.max_connection_age(age);
        }
        let router = builder
            .layer(self.auth)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(verification);
        let stop_signal = async {
            let _ = stopped.await;
        };
        let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
            match &self.tls {
                Some(acceptor) => Box::pin(router.serve_with_incoming_shutdown(
                    tls::incoming(self.listener, Arc::clone(acceptor), self.background.clone()),
                    stop_signal,
                )),
                None => Box::pin(
                    router.serve_with_incoming_shutdown(incoming(self.listener), stop_signal),
                ),
            };
        let mut server = server;
        tracing::info!(
            listen = %addr,
            admin_listen = %admin_addr,
            simulated = self.simulator.is_some(),
            tls = self.tls.is_some(),
            "faceid-gateway serving"
        );

        let ended_by_itself = tokio::select! {
            result = &mut server => Some(result),
            () = shutdown => None,
        };
        let result = match ended_by_itself {
            Some(result) => result.map_err(StartupError::from),
            None => {
                self.shutdown.cancel();
                drain(&health_reporter, stop_accepting, server, self.drain_timeout).await
            }
        };
        self.background.cancel();
        if let Some(simulator) = self.simulator {
            simulator.shutdown().await;
        }
        tracing::info!("faceid-gateway stopped");
        result
    }
}

async fn drain(
    health: &HealthReporter,
    stop_accepting: tokio::sync::oneshot::Sender<()>,
    server: impl Future<Output = Result<(), tonic::transport::Error>>,
    drain_timeout: Duration,
) -> Result<(), StartupError> {
    health
        .set_not_serving::<IdCardVerificationServiceServer<VerificationService>>()
        .await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let _ = stop_accepting.send(());
    tracing::info!(?drain_timeout, "draining in-flight calls");
    match tokio::time::timeout(drain_timeout, server).await {
        Ok(result) => result.map_err(StartupError::from),
        Err(_) => {
            tracing::warn!(
                ?drain_timeout,
                "drain timeout reached; abandoning remaining calls"
            );
            Ok(())
        }
    }
}

/// Accepted connections, with Nagle's algorithm off (a gRPC answer is
/// several small writes; with it on, delayed ACKs add ~40 ms to each call)
/// and TCP keepalive so dead peers are noticed.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { addr, source })
}

/// The upstream rate limiter: shared through Redis when configured,
/// otherwise this process's own.
fn build_limiter(args: &ServeArgs, metrics: &Metrics) -> Result<Limiter, StartupError> {
    let quota = limit::per_second(args.rate_limit, args.rate_burst);
    let Some(url) = &args.rate_limit_redis else {
        return Ok(Limiter::local(quota));
    };
    let share = (f64::from(args.rate_limit) * args.rate_limit_fallback_share).floor();
    // At least one call per second, so a replica never stops entirely.
    let fallback_rate = (share as u32).max(1);
    let redis = RedisLimiter::new(RedisConfig {
        url: url.clone(),
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

fn encryption_policy(args: &ServeArgs, public_keys: PublicKeys) -> EncryptionPolicy {
    let default_mode = match args.upstream_encryption {
        UpstreamEncryption::Off => None,
        UpstreamEncryption::Response => Some(EncryptionMode::Response),
        UpstreamEncryption::Fields => Some(EncryptionMode::Fields),
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

fn stack_config(args: &ServeArgs) -> StackConfig {
    StackConfig {
        max_in_flight: args.max_in_flight as usize,
        rate_limit_per_window: args.rate_limit.saturating_add(args.rate_burst),
        rate_limit_max_wait: args.rate_limit_max_wait,
        max_attempts: args.max_attempts,
        retry_base_delay: args.retry_base_delay,
        retry_max_delay: args.retry_max_delay,
    }
}

/// Starts the simulator on a loopback port with fresh random keys.
async fn start_simulator(
    rate_limit: u32,
) -> Result<(Simulator, Arc<CredentialProvider>), StartupError> {
    let secret_id = format!("AKIDsimulated{}", uuid::Uuid::new_v4().simple());
    let secret_key = uuid::Uuid::new_v4().simple().to_string();
    let mut config = SimulatorConfig::new(secret_id.clone(), secret_key.clone());
    config.rate_limit = rate_limit;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let simulator = Simulator::bind(config, loopback)
        .await
        .map_err(StartupError::Simulator)?;
    let credentials =
        Credentials::new(secret_id, secret_key, None).expect("generated keys are well-formed");
    tracing::info!(
        endpoint = %simulator.endpoint(),
        "built-in simulator started; answers are simulated"
    );
    Ok((simulator, Arc::new(CredentialProvider::fixed(credentials))))
}
