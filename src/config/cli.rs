//! The command line: `serve` (the default), `simulator` and `token`. Every
//! flag but `--check-config` also reads `FACEID_<FLAG_IN_CAPS>`; Tencent keys
//! come only from the `TENCENTCLOUD_*` variables or files, never from flags,
//! so they stay out of process listings.

use std::net::SocketAddr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use reqwest::Url;

/// Tencent's limit for `CheckIdCardInformation`: requests per second per
/// account (the simulator's default too).
const TENCENT_RATE_LIMIT: u32 = 100;
/// The similarity at or above which `Success` is `VERDICT_MATCH`.
const DEFAULT_MATCH_THRESHOLD: f64 = 70.0;

/// The gateway's command line.
#[derive(Debug, Parser)]
#[command(
    name = "faceid-gateway",
    version,
    about = "gRPC gateway to Tencent Cloud FaceID CheckIdCardInformation",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to run; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `serve` flags given without the word `serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl Cli {
    /// The subcommand to run, with `serve` as the default.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(Box::new(self.serve)))
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC gateway (the default).
    Serve(Box<ServeArgs>),
    /// Run the Tencent API simulator as a standalone HTTP server.
    Simulator(SimulatorArgs),
    /// Print a new caller token and its line for --auth-tokens-file.
    Token(TokenArgs),
}

/// Flags of `faceid-gateway token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The caller's name (letters, digits, '-', '_', '.'); it labels logs,
    /// spans and metrics.
    #[arg(long)]
    pub name: String,
    /// The caller's share of the upstream limit, calls per second.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub quota: Option<u32>,
    /// The caller's budget: billable calls per day (Beijing time).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub budget_day: Option<u64>,
    /// The caller's budget: billable calls per month (Beijing time).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub budget_month: Option<u64>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, text otherwise.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// Where the Tencent keys come from (`--credentials-source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CredentialsSource {
    /// The first that yields keys, in the official SDKs' order: the
    /// environment, the credentials files, TKE OIDC, the CVM role.
    Auto,
    /// `TENCENTCLOUD_SECRET_ID` / `_KEY` (and `_SESSION_TOKEN`).
    Env,
    /// `TENCENTCLOUD_CREDENTIALS_FILE`, `~/.tencentcloud/credentials` or
    /// `/etc/tencentcloud/credentials`.
    File,
    /// TKE pod identity: STS `AssumeRoleWithWebIdentity` with the
    /// projected service-account token (`TKE_*` variables).
    Oidc,
    /// The CAM role bound to the CVM instance, from its metadata server.
    #[value(name = "cvm-role")]
    CvmRole,
}

/// Tencent's sensitive-data encryption of answers, gateway-wide (a request
/// may override it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EncryptionDefault {
    /// No encryption beyond TLS.
    Off,
    /// The whole answer (IsEncryptResponse).
    Response,
    /// Name and ID number (IsEncrypt).
    Fields,
}

/// The symmetric algorithm of upstream encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EncryptionAlgorithm {
    /// AES-256-CBC, the key wrapped with RSA.
    #[value(name = "aes-256-cbc")]
    Aes256Cbc,
    /// SM4-GCM, the key wrapped with SM2.
    #[value(name = "sm4-gcm")]
    Sm4Gcm,
}

/// Flags of `faceid-gateway serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the gRPC server listens on.
    #[arg(long, env = "FACEID_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// Address of the admin HTTP port (Prometheus metrics at /metrics).
    #[arg(long, env = "FACEID_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    /// Tencent API endpoints, comma-separated: the first is preferred, the
    /// others are backups in order, which take the calls while outlier
    /// detection ejects the ones before them (`http://` is accepted for
    /// local tests).
    #[arg(
        long,
        env = "FACEID_ENDPOINT",
        value_delimiter = ',',
        default_value = "https://faceid.intl.tencentcloudapi.com"
    )]
    pub endpoint: Vec<Url>,

    /// Sent as X-TC-Region when set; not needed for this action.
    #[arg(long, env = "FACEID_REGION")]
    pub region: Option<String>,

    /// Where the Tencent keys come from: auto (the first of env, file,
    /// oidc, cvm-role that yields keys), env, file, oidc or cvm-role.
    #[arg(long, env = "FACEID_CREDENTIALS_SOURCE", value_enum, default_value_t = CredentialsSource::Auto)]
    pub credentials_source: CredentialsSource,

    /// A CAM role to assume with the keys found (STS AssumeRole): calls are
    /// then signed with the role's temporary keys, and the keys found are
    /// used for STS only.
    #[arg(long, env = "FACEID_ROLE_ARN")]
    pub role_arn: Option<String>,

    /// The session name of --role-arn (it shows in CloudAudit).
    #[arg(
        long,
        env = "FACEID_ROLE_SESSION_NAME",
        default_value = "faceid-gateway",
        requires = "role_arn"
    )]
    pub role_session_name: String,

    /// How long the temporary keys of --role-arn live (STS allows up to 12h).
    #[arg(long, env = "FACEID_ROLE_DURATION", default_value = "2h", value_parser = parse_role_duration, requires = "role_arn")]
    pub role_duration: Duration,

    /// Tencent Cloud STS, which turns a role (--role-arn, TKE OIDC) into
    /// temporary keys. `http://` is accepted for local tests.
    #[arg(
        long,
        env = "FACEID_STS_ENDPOINT",
        default_value = "https://sts.tencentcloudapi.com"
    )]
    pub sts_endpoint: Url,

    /// The CVM metadata server, which hands out the instance role's
    /// temporary keys.
    #[arg(
        long,
        env = "FACEID_METADATA_ENDPOINT",
        default_value = "http://metadata.tencentyun.com"
    )]
    pub metadata_endpoint: Url,
    /// Failures in a row that say nothing about the request (connect or
    /// TLS failure, timeout, HTTP 5xx, a body that is not Tencent's JSON,
    /// InternalError) after which an endpoint is ejected.
    #[arg(long, env = "FACEID_EJECT_AFTER", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub eject_after: u32,

    /// How long an ejected endpoint gets no calls before one call probes
    /// it; doubles per ejection in a row, up to 5 minutes.
    #[arg(long, env = "FACEID_EJECT_FOR", default_value = "30s", value_parser = parse_positive_duration)]
    pub eject_for: Duration,

    /// Check the configuration and exit instead of serving: the flags and
    /// variables are read as for `serve`, then the start-up checks that need
    /// no network run (a named file that is absent is not read); prints
    /// `configuration ok`, or the error `serve` would stop with. No
    /// variable: one left in a pod's environment would end every start.
    #[arg(long)]
    pub check_config: bool,

    /// Run the built-in simulator in-process and call it instead of Tencent
    /// (no credentials needed; results are marked simulated).
    #[arg(long, env = "FACEID_SIMULATE", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub simulate: bool,

    /// Requests per second the in-process simulator allows (with --simulate).
    #[arg(long, env = "FACEID_SIMULATOR_RATE_LIMIT", default_value_t = TENCENT_RATE_LIMIT)]
    pub simulator_rate_limit: u32,

    /// Upstream calls per second at most, in any sliding second, across
    /// every caller (and every replica sharing --rate-limit-redis).
    #[arg(long, env = "FACEID_RATE_LIMIT", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit: u32,

    /// Extra calls allowed back to back after a quiet period (0 = none
    /// beyond the rate).
    #[arg(long, env = "FACEID_RATE_BURST", default_value_t = 0)]
    pub rate_burst: u32,

    /// The longest a call waits for a rate-limit slot (the caller's deadline
    /// also bounds it); past it the call fails at once with RESOURCE_EXHAUSTED.
    #[arg(long, env = "FACEID_RATE_LIMIT_MAX_WAIT", default_value = "5s", value_parser = parse_duration)]
    pub rate_limit_max_wait: Duration,

    /// Redis URL of a limit shared by all replicas: `redis://host:6379/0`,
    /// or `rediss://:password@host:6379/0` for TLS (managed Redis).
    #[arg(long, env = "FACEID_RATE_LIMIT_REDIS")]
    pub rate_limit_redis: Option<String>,

    /// PEM CA certificates that a `rediss://` Redis's certificate must chain
    /// to (a private CA); re-read like the other watched files. Without it,
    /// the system's trusted roots.
    #[arg(
        long,
        env = "FACEID_RATE_LIMIT_REDIS_CA",
        requires = "rate_limit_redis"
    )]
    pub rate_limit_redis_ca: Option<std::path::PathBuf>,

    /// The Redis key of the shared limit (one per Tencent account).
    #[arg(
        long,
        env = "FACEID_RATE_LIMIT_REDIS_KEY",
        default_value = "faceid-gateway:rate-limit:CheckIdCardInformation"
    )]
    pub rate_limit_redis_key: String,

    /// How long a Redis round trip may take before this replica falls back.
    #[arg(long, env = "FACEID_RATE_LIMIT_REDIS_TIMEOUT", default_value = "100ms", value_parser = parse_positive_duration)]
    pub rate_limit_redis_timeout: Duration,

    /// The share of --rate-limit one replica uses while Redis is unreachable.
    #[arg(long, env = "FACEID_RATE_LIMIT_FALLBACK_SHARE", default_value_t = 0.25, value_parser = parse_share)]
    pub rate_limit_fallback_share: f64,

    /// Tencent codes that are billed, replacing Tencent's billing table
    /// (`Success`, `FailedOperation.IdNameMisMatch`,
    /// `FailedOperation.CompareLowSimilarity`); comma-separated.
    #[arg(long, env = "FACEID_BILLABLE_RESULTS", value_delimiter = ',')]
    pub billable_results: Option<Vec<String>>,

    /// Billable calls the whole gateway may make per day (Beijing time);
    /// shared by replicas through --rate-limit-redis.
    #[arg(long, env = "FACEID_BUDGET_DAY", value_parser = clap::value_parser!(u64).range(1..))]
    pub budget_day: Option<u64>,

    /// Billable calls the whole gateway may make per month (Beijing time).
    #[arg(long, env = "FACEID_BUDGET_MONTH", value_parser = clap::value_parser!(u64).range(1..))]
    pub budget_month: Option<u64>,

    /// How long an answer is kept for a repeated `idempotency-key`.
    #[arg(long, env = "FACEID_IDEMPOTENCY_TTL", default_value = "24h", value_parser = parse_positive_duration)]
    pub idempotency_ttl: Duration,

    /// Bytes the in-memory idempotency cache may hold (least recently used
    /// evicted beyond); not used with --rate-limit-redis, where Redis keeps
    /// the answers.
    #[arg(long, env = "FACEID_IDEMPOTENCY_CACHE_SIZE", default_value_t = 256 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub idempotency_cache_size: u64,

    /// Upstream calls in flight at most (waiting for a slot included), which
    /// bounds memory whatever callers send.
    #[arg(long, env = "FACEID_MAX_IN_FLIGHT", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// Attempts per upstream call at most, the first included (1 = no retry).
    #[arg(long, env = "FACEID_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub max_attempts: u32,

    /// Backoff ceiling before the first retry; it doubles per retry, with full jitter.
    #[arg(long, env = "FACEID_RETRY_BASE_DELAY", default_value = "100ms", value_parser = parse_duration)]
    pub retry_base_delay: Duration,

    /// The longest backoff between two attempts.
    #[arg(long, env = "FACEID_RETRY_MAX_DELAY", default_value = "2s", value_parser = parse_duration)]
    pub retry_max_delay: Duration,

    /// Items of one batch stream in flight at most.
    #[arg(long, env = "FACEID_BATCH_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_concurrency: u32,

    /// Items of all batch streams together in flight at most.
    #[arg(long, env = "FACEID_BATCH_GLOBAL_CONCURRENCY", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_global_concurrency: u32,

    /// Items one batch stream may carry at most (later ones get
    /// RESOURCE_EXHAUSTED); unlimited when unset.
    #[arg(long, env = "FACEID_BATCH_MAX_ITEMS", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_max_items: Option<u64>,

    /// Whether Tencent encrypts the personal data of its answers (a request
    /// may override it).
    #[arg(long, env = "FACEID_UPSTREAM_ENCRYPTION", value_enum, default_value_t = EncryptionDefault::Off)]
    pub upstream_encryption: EncryptionDefault,

    /// The symmetric algorithm of upstream encryption.
    #[arg(long, env = "FACEID_ENCRYPTION_ALGORITHM", value_enum, default_value_t = EncryptionAlgorithm::Aes256Cbc)]
    pub encryption_algorithm: EncryptionAlgorithm,

    /// PEM file with Tencent's RSA public key (default: the published one).
    #[arg(long, env = "FACEID_TENCENT_RSA_PUBLIC_KEY")]
    pub tencent_rsa_public_key: Option<std::path::PathBuf>,

    /// PEM file with Tencent's SM2 public key (default: the published one).
    #[arg(long, env = "FACEID_TENCENT_SM2_PUBLIC_KEY")]
    pub tencent_sm2_public_key: Option<std::path::PathBuf>,

    /// Let `image_url` name internal addresses: private, loopback,
    /// link-local, CGNAT and unique-local IPs, the unspecified address and
    /// `localhost`. Off by default, so no caller can make the Tencent account
    /// fetch them; for test setups whose images are served locally.
    #[arg(long, env = "FACEID_ALLOW_PRIVATE_IMAGE_URLS")]
    pub allow_private_image_urls: bool,

    /// Similarity (0-100) at or above which a Success is VERDICT_MATCH.
    #[arg(long, env = "FACEID_MATCH_THRESHOLD", default_value_t = DEFAULT_MATCH_THRESHOLD, value_parser = parse_threshold)]
    pub match_threshold: f64,

    /// Limit for one upstream attempt, e.g. `10s` or `500ms`.
    #[arg(long, env = "FACEID_UPSTREAM_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub upstream_timeout: Duration,

    /// Limit for connecting to the upstream.
    #[arg(long, env = "FACEID_CONNECT_TIMEOUT", default_value = "3s", value_parser = parse_positive_duration)]
    pub connect_timeout: Duration,

    /// How long in-flight calls may finish after SIGTERM before the process exits.
    #[arg(long, env = "FACEID_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// How often watched files (TENCENTCLOUD_CREDENTIALS_FILE, TLS
    /// certificates, caller tokens) are checked for changes.
    #[arg(long, alias = "credentials-reload-interval", env = "FACEID_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_positive_duration)]
    pub reload_interval: Duration,

    /// PEM certificate chain for TLS on the gRPC port (with --tls-key).
    #[arg(long, env = "FACEID_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "FACEID_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// PEM CA certificates that client certificates must chain to (mutual
    /// TLS: a client without one is refused at the handshake).
    #[arg(long, env = "FACEID_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,

    /// File of caller names and the SHA-256 of their bearer tokens; when
    /// set, every call but health needs `authorization: Bearer <token>`.
    #[arg(long, env = "FACEID_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<std::path::PathBuf>,

    /// Let server reflection through without a token.
    #[arg(long, env = "FACEID_AUTH_ALLOW_REFLECTION", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub auth_allow_reflection: bool,

    /// HTTP/2 streams one connection may have open at once.
    #[arg(long, env = "FACEID_MAX_CONCURRENT_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,

    /// How often HTTP/2 pings check an idle connection; a peer that does not
    /// answer within 20 s is dropped (0 = no pings).
    #[arg(long, env = "FACEID_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration_or_off)]
    pub keepalive_interval: DurationOrOff,

    /// Close connections gracefully at this age so clients rebalance across
    /// replicas (0 or unset = no limit, as in gRPC).
    #[arg(long, env = "FACEID_MAX_CONNECTION_AGE", default_value = "0", value_parser = parse_duration_or_off)]
    pub max_connection_age: DurationOrOff,

    /// Close a connection whose client has not shaken hands (TLS, and the
    /// HTTP/2 preface or an HTTP/1.1 request head) within this time (0 = no
    /// limit).
    #[arg(long, env = "FACEID_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration_or_off)]
    pub handshake_timeout: DurationOrOff,

    /// Close a connection gracefully after this long with no call open on
    /// it (0 = never).
    #[arg(long, env = "FACEID_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration_or_off)]
    pub idle_timeout: DurationOrOff,

    /// Connections open at most, per port (gRPC and admin); beyond it new
    /// connections are closed at accept and counted.
    #[arg(long, env = "FACEID_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Log line format.
    #[arg(long, env = "FACEID_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

impl ServeArgs {
    /// The defaults, as if no flag and no variable were set.
    pub fn defaults() -> Self {
        Self::from_flags(std::iter::empty::<&str>())
    }

    /// Parses `serve` flags given without the program name; `FACEID_*`
    /// variables still apply. For tests and embedding.
    ///
    /// # Panics
    /// When the flags are invalid.
    pub fn from_flags<I, T>(flags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ServeArgs,
        }
        let argv =
            std::iter::once("faceid-gateway".into()).chain(flags.into_iter().map(Into::into));
        Wrapper::parse_from(argv).args
    }
}

/// Flags of `faceid-gateway simulator`.
#[derive(Debug, Clone, Args)]
pub struct SimulatorArgs {
    /// Address the simulator listens on.
    #[arg(long, env = "FACEID_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,

    /// The SecretId the simulator accepts.
    #[arg(long, env = "FACEID_SECRET_ID")]
    pub secret_id: String,

    /// The SecretKey it verifies signatures with.
    #[arg(long, env = "FACEID_SECRET_KEY", hide_env_values = true)]
    pub secret_key: String,

    /// A session token it requires in X-TC-Token (temporary keys).
    #[arg(long, env = "FACEID_SESSION_TOKEN", hide_env_values = true)]
    pub session_token: Option<String>,

    /// Requests per sliding second before RequestLimitExceeded (0 = no limit).
    #[arg(long, env = "FACEID_RATE_LIMIT", default_value_t = TENCENT_RATE_LIMIT)]
    pub rate_limit: u32,

    /// How long the temporary keys its STS and metadata server issue live.
    #[arg(long, env = "FACEID_TEMPORARY_CREDENTIALS_TTL", default_value = "2h", value_parser = parse_positive_duration)]
    pub temporary_credentials_ttl: Duration,

    /// A file holding the only web-identity token its
    /// AssumeRoleWithWebIdentity accepts (re-read at every call, like a
    /// projected service-account token); without it, that action is refused.
    #[arg(long, env = "FACEID_WEB_IDENTITY_TOKEN_FILE")]
    pub web_identity_token_file: Option<std::path::PathBuf>,
    /// A fault of the whole server to start with: `down` (refuse
    /// connections), `5xx` or `5xx=502` (every call answered with that HTTP
    /// status), `slow` or `slow=2s` (every call waits that long first), or
    /// `none`. `POST /__simulator/fault` switches it at run time.
    #[arg(long, env = "FACEID_FAULT")]
    pub fault: Option<String>,

    /// How long the --fault lasts (until switched when unset).
    #[arg(long, env = "FACEID_FAULT_FOR", requires = "fault", value_parser = parse_positive_duration)]
    pub fault_for: Option<Duration>,

    /// Write the simulator's encryption public keys (rsa.pem, sm2.pem) to
    /// this folder, for a gateway's --tencent-rsa/sm2-public-key.
    #[arg(long, env = "FACEID_PUBLIC_KEYS_DIR")]
    pub public_keys_dir: Option<std::path::PathBuf>,

    /// Log line format.
    #[arg(long, env = "FACEID_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

/// Parses `10s`, `500ms`, `1m 30s` and the like.
///
/// # Errors
/// Text that is not a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 10s, 500ms, 2m)"))
}

/// A duration that must be above zero (a zero timeout would fail every call,
/// a zero interval spin).
fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("must be more than 0 (examples: 10s, 500ms)".to_owned()),
        duration => Ok(duration),
    }
}

/// A duration flag where 0 means "off" (`None`). An alias, so clap's derive
/// parses the whole value with [`parse_duration_or_off`] instead of making
/// the flag optional.
pub type DurationOrOff = Option<Duration>;

/// A limit where 0 means "no limit", as gRPC servers read it.
fn parse_duration_or_off(text: &str) -> Result<Option<Duration>, String> {
    parse_duration(text).map(|duration| (!duration.is_zero()).then_some(duration))
}

/// STS `AssumeRole` takes `DurationSeconds` up to 43200 (12 hours).
fn parse_role_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        duration if duration < Duration::from_secs(1) => {
            Err("must be at least 1s (examples: 2h, 30m)".to_owned())
        }
        duration if duration > Duration::from_secs(43_200) => {
            Err("STS issues role keys for 12h at most (examples: 2h, 12h)".to_owned())
        }
        duration => Ok(duration),
    }
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value > 0.0 && value <= 1.0 => Ok(value),
        _ => Err("must be a fraction above 0 and at most 1, e.g. 0.25".to_owned()),
    }
}

fn parse_threshold(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=100.0).contains(&value) => Ok(value),
        _ => Err("must be a number from 0 to 100".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_arguments_means_serve_with_defaults() {
        let cli = Cli::parse_from(["faceid-gateway"]);
        let Command::Serve(args) = cli.into_command() else {
            panic!("expected serve");
        };
        assert_eq!(args.listen.to_string(), "0.0.0.0:50051");
        assert_eq!(
            args.endpoint.iter().map(Url::as_str).collect::<Vec<_>>(),
            ["https://faceid.intl.tencentcloudapi.com/"]
        );
        assert_eq!(args.eject_after, 5);
        assert_eq!(args.eject_for, Duration::from_secs(30));
        assert_eq!(args.match_threshold, 70.0);
        assert!(!args.simulate);
        assert!(!args.allow_private_image_urls);
        assert_eq!(args.credentials_source, CredentialsSource::Auto);
        assert_eq!(args.role_session_name, "faceid-gateway");
        assert_eq!(args.role_duration, Duration::from_secs(7200));
        assert_eq!(
            args.sts_endpoint.as_str(),
            "https://sts.tencentcloudapi.com/"
        );
        assert_eq!(
            args.metadata_endpoint.as_str(),
            "http://metadata.tencentyun.com/"
        );
    }

    #[test]
    fn serve_flags_work_with_and_without_the_word_serve() {
        for argv in [
            vec!["faceid-gateway", "--simulate", "--listen", "127.0.0.1:0"],
            vec![
                "faceid-gateway",
                "serve",
                "--simulate",
                "--listen",
                "127.0.0.1:0",
            ],
        ] {
            let Command::Serve(args) = Cli::parse_from(argv).into_command() else {
                panic!("expected serve");
            };
            assert!(args.simulate);
            assert_eq!(args.listen.port(), 0);
        }
    }

    #[test]
    fn endpoints_are_a_comma_separated_list_in_order() {
        let args = ServeArgs::from_flags([
            "--endpoint",
            "https://faceid.tencentcloudapi.com, https://faceid.ap-guangzhou.tencentcloudapi.com",
            "--endpoint",
            "http://127.0.0.1:9000",
        ]);
        let hosts: Vec<_> = args.endpoint.iter().map(|url| url.as_str()).collect();
        assert_eq!(
            hosts,
            [
                "https://faceid.tencentcloudapi.com/",
                "https://faceid.ap-guangzhou.tencentcloudapi.com/",
                "http://127.0.0.1:9000/"
            ]
        );
        for bad in [
            vec![
                "faceid-gateway",
                "--endpoint",
                "https://a.example,not a url",
            ],
            vec!["faceid-gateway", "--eject-after", "0"],
            vec!["faceid-gateway", "--eject-for", "0"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err());
        }
    }

    #[test]
    fn simulator_subcommand_parses() {
        let cli = Cli::parse_from([
            "faceid-gateway",
            "simulator",
            "--listen",
            "127.0.0.1:9000",
            "--secret-id",
            "AKID",
            "--secret-key",
            "KEY",
            "--rate-limit",
            "1000",
            "--temporary-credentials-ttl",
            "3s",
            "--web-identity-token-file",
            "/var/run/token",
        ]);
        let Command::Simulator(args) = cli.into_command() else {
            panic!("expected simulator");
        };
        assert_eq!(args.rate_limit, 1000);
        assert_eq!(args.temporary_credentials_ttl, Duration::from_secs(3));
        assert!(args.web_identity_token_file.is_some());
    }

    #[test]
    fn bad_values_are_refused() {
        for argv in [
            vec!["faceid-gateway", "--match-threshold", "101"],
            vec!["faceid-gateway", "--upstream-timeout", "soon"],
            vec!["faceid-gateway", "--listen", "nowhere"],
            vec!["faceid-gateway", "--rate-limit", "0"],
            vec!["faceid-gateway", "--rate-limit-fallback-share", "0"],
            vec!["faceid-gateway", "--max-attempts", "0"],
            vec!["faceid-gateway", "--tls-cert", "cert.pem"],
            vec!["faceid-gateway", "token"],
            vec!["faceid-gateway", "--credentials-source", "vault"],
            vec![
                "faceid-gateway",
                "--role-arn",
                "a",
                "--role-duration",
                "13h",
            ],
            vec!["faceid-gateway", "--role-duration", "1h"],
        ] {
            assert!(Cli::try_parse_from(argv).is_err());
        }
    }

    #[test]
    fn a_zero_reload_interval_is_refused_at_parse_time() {
        // The file watchers tick at this interval; zero would panic there.
        for zero in ["0", "0s", "0ms", "0m 0s"] {
            let error = Cli::try_parse_from(["faceid-gateway", "--reload-interval", zero])
                .expect_err(zero)
                .to_string();
            assert!(error.contains("must be more than 0"), "{error}");
        }
        assert_eq!(
            ServeArgs::from_flags(["--reload-interval", "1ms"]).reload_interval,
            Duration::from_millis(1)
        );
    }

    #[test]
    fn check_config_is_a_serve_flag_without_a_variable() {
        for argv in [
            vec!["faceid-gateway", "--check-config"],
            vec!["faceid-gateway", "serve", "--check-config", "--simulate"],
        ] {
            let Command::Serve(args) = Cli::parse_from(argv).into_command() else {
                panic!("expected serve");
            };
            assert!(args.check_config);
        }
        assert!(!ServeArgs::defaults().check_config);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    }
}
