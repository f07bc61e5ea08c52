//! A local, deterministic stand-in for Tencent's FaceID endpoint, for
//! development, tests, demos and benchmarks (Tencent has no sandbox for this
//! action). It is a real HTTP/1.1 and HTTP/2 server speaking the API 3.0 wire
//! format, so the official SDKs can be pointed at it, and it checks what
//! Tencent checks: action and version, the TC3 signature and its timestamp,
//! the JSON body, base64, image format and size, and the rate limit.
//!
//! Sensitive-data encryption works as Tencent's does, with the simulator's
//! own key pairs (see [`Simulator::public_keys`]).
//!
//! Outcomes are chosen by [`directives`] embedded in the image. Invented
//! answers carry the `X-FaceID-Simulated` header and a simulated address, so
//! they can never pass for real ones.
//!
//! It also plays Tencent Cloud STS (`AssumeRole`, checked against its
//! long-lived key, and `AssumeRoleWithWebIdentity`, checked against a token
//! file it re-reads) by `X-TC-Action` on `POST /`, and the CVM metadata
//! server on `GET /latest/meta-data/cam/security-credentials/…` (`sts.rs`).
//! The temporary keys it issues live [`SimulatorConfig::temporary_credentials_ttl`]
//! and are accepted, with their token, until then, as Tencent does.
//!
//! Besides the API at `POST /`, it serves `GET /__simulator/stats` (JSON
//! [`StatsSnapshot`]), `POST /__simulator/reset`,
//! `POST /__simulator/{sts,metadata}/{down,up}` to take STS or the metadata
//! server away (they answer HTTP 503) and bring them back,
//! `POST /__simulator/sts/revoke` to forget the temporary keys issued, and
//! `GET`/`POST /__simulator/fault`: a [`ServerFault`] of the whole server
//! (down, 5xx, slow), also switchable through [`Simulator::set_fault`].
//!
//! May import: [`crate::tencent`] (the wire model, signing, the image rules
//! and the cryptography it plays Tencent's side of), [`crate::net`] and
//! [`crate::upstream::limit`] (its sliding window). The gateway's server
//! layer is never used: the simulator checks requests as Tencent would.

mod directives;
mod fault;
mod handler;
mod identity;
mod stats;
mod sts;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::net::http::{HttpServer, HttpSettings};
use crate::net::listener::Listener;
use crate::tencent::crypto::{PrivateKeys, PublicKeys};
pub use fault::{ParseFaultError, ServerFault};
pub use stats::StatsSnapshot;

/// Tencent's default limit for this action, which the simulator enforces
/// unless told otherwise.
pub const DEFAULT_RATE_LIMIT: u32 = 100;

/// What the simulator accepts.
pub struct SimulatorConfig {
    /// The only SecretId it accepts.
    pub secret_id: String,
    /// The key it verifies signatures with.
    pub secret_key: SecretString,
    /// The session token it requires, if any.
    pub session_token: Option<SecretString>,
    /// Requests per sliding second before `RequestLimitExceeded`; 0 = no limit.
    pub rate_limit: u32,
    /// The clock skew tolerated before `AuthFailure.SignatureExpire`.
    pub max_clock_skew: Duration,
    /// The key pairs that unwrap callers' session keys; fresh random ones
    /// (made on first use) when `None`.
    pub private_keys: Option<PrivateKeys>,
    /// More SecretId/SecretKey pairs accepted besides the first (a key
    /// being rotated in or out).
    pub also_accepted: Vec<(String, SecretString)>,
    /// How long the temporary keys issued by its STS and metadata server
    /// live (whole seconds, at least one).
    pub temporary_credentials_ttl: Duration,
    /// The file holding the only web-identity token
    /// `AssumeRoleWithWebIdentity` accepts, re-read at every call (so a
    /// test can rotate it); without one, every token is refused.
    pub web_identity_token_file: Option<std::path::PathBuf>,
    /// The CAM role its metadata server says the instance has; `None`
    /// answers 404, as for an instance without a role.
    pub cvm_role_name: Option<String>,
}

impl SimulatorConfig {
    /// The SecretKey of an accepted SecretId.
    pub fn secret_key_of(&self, secret_id: &str) -> Option<&str> {
        if secret_id == self.secret_id {
            return Some(self.secret_key.expose_secret());
        }
        self.also_accepted
            .iter()
            .find(|(id, _)| id == secret_id)
            .map(|(_, key)| key.expose_secret())
    }
}

impl SimulatorConfig {
    /// A configuration with Tencent's defaults for the given key pair.
    pub fn new(secret_id: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self {
            secret_id: secret_id.into(),
            secret_key: SecretString::from(secret_key.into()),
            session_token: None,
            rate_limit: DEFAULT_RATE_LIMIT,
            max_clock_skew: Duration::from_secs(300),
            private_keys: None,
            also_accepted: Vec::new(),
            temporary_credentials_ttl: Duration::from_secs(2 * 3600),
            web_identity_token_file: None,
            cvm_role_name: Some(DEFAULT_CVM_ROLE.to_owned()),
        }
    }
}

/// The CAM role name the simulated metadata server hands out by default.
pub const DEFAULT_CVM_ROLE: &str = "faceid-gateway-simulated-role";

impl std::fmt::Debug for SimulatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatorConfig")
            .field("rate_limit", &self.rate_limit)
            .field("max_clock_skew", &self.max_clock_skew)
            .finish_non_exhaustive()
    }
}

/// A running simulator. Dropping it does not stop it; call [`Self::shutdown`].
pub struct Simulator {
    addr: SocketAddr,
    state: Arc<handler::State>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Simulator {
    /// Serves the simulator on an already-bound listener.
    ///
    /// # Errors
    /// The listener's address cannot be read.
    pub fn start(config: SimulatorConfig, listener: TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(handler::State::new(config));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(listener, Arc::clone(&state), cancel.clone()));
        Ok(Self {
            addr,
            state,
            cancel,
            task,
        })
    }

    /// Binds `addr` and serves the simulator there.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(config: SimulatorConfig, addr: SocketAddr) -> std::io::Result<Self> {
        Self::start(config, TcpListener::bind(addr).await?)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint URL to give a client, e.g. `http://127.0.0.1:9000/`.
    pub fn endpoint(&self) -> Url {
        Url::parse(&format!("http://{}/", self.addr)).expect("a socket address makes a URL")
    }

    /// What it has seen so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.state.stats.snapshot()
    }

    /// The public keys a gateway must wrap session keys with to talk to
    /// this simulator (its own key pairs stand in for Tencent's).
    pub fn public_keys(&self) -> PublicKeys {
        self.state.private_keys().public_keys()
    }

    /// Forgets what it has seen so far.
    pub fn reset_stats(&self) {
        self.state.stats.reset();
    }

    /// Takes its STS away (`false`: every STS call answers HTTP 503) or
    /// brings it back.
    pub fn set_sts_available(&self, available: bool) {
        self.state.sts.set_sts_available(available);
    }

    /// Forgets every temporary key issued so far: calls signed with one
    /// are answered `AuthFailure.SecretIdNotFound`.
    pub fn revoke_temporary_credentials(&self) {
        self.state.sts.revoke_all();
    }

    /// The temporary keys issued and not revoked (SecretId, SecretKey,
    /// token), for tests that look for them where they must not be.
    pub fn issued_temporary_credentials(&self) -> Vec<(String, SecretString, SecretString)> {
        self.state.sts.all()
    }

    /// Takes its metadata server away (`false`: every GET answers HTTP 503)
    /// or brings it back.
    pub fn set_metadata_available(&self, available: bool) {
        self.state.sts.set_metadata_available(available);
    }

    /// Puts a fault of the whole server in force, for `duration` or until
    /// switched again ([`ServerFault::None`] ends it). `Down` closes the
    /// port at once and cuts open connections; the port opens again on
    /// the same address when the fault ends.
    pub fn set_fault(&self, fault: ServerFault, duration: Option<Duration>) {
        self.state.fault.set(fault, duration);
    }

    /// The fault in force now.
    pub fn fault(&self) -> ServerFault {
        self.state.fault.current()
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }

    /// Waits until the simulator stops (it runs until cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A token that stops the simulator when cancelled.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

/// Serves the simulator on `listener` until `cancel`, then drops every
/// connection at once (a stopped simulator is an outage, not a drain).
/// While the [`ServerFault::Down`] fault is in force the port is closed
/// (connections are refused) and open connections are cut; it is bound
/// again on the same address when the fault ends.
async fn serve(listener: TcpListener, state: Arc<handler::State>, cancel: CancellationToken) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let mut faults = state.fault.subscribe();
    let mut listener = Some(listener);
    loop {
        if let Some(tcp) = listener.take() {
            let handler_state = Arc::clone(&state);
            let service = tower::service_fn(move |request| {
                handler::handle(Arc::clone(&handler_state), request)
            });
            let settings = HttpSettings {
                http1: true,
                ..HttpSettings::default()
            };
            let stop = cancel.child_token();
            let server = HttpServer::new(Listener::new(tcp, "simulator"), service, settings)
                .serve(stop.clone());
            let server = tokio::spawn(server);
            let down = tokio::select! {
                () = cancel.cancelled() => false,
                () = until_down(&mut faults) => true,
            };
            stop.cancel();
            if let Ok(draining) = server.await {
                draining.finish_within(Duration::ZERO).await;
            }
            if !down {
                return;
            }
            tracing::info!(%addr, "simulator down: connections refused");
        }
        // Down: wait for the fault to end (by itself or switched).
        let until = faults.borrow_and_update().until;
        tokio::select! {
            () = cancel.cancelled() => return,
            () = sleep_until(until) => {}
            changed = faults.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        if state.fault.current() == ServerFault::Down {
            continue;
        }
        // Up again, on the same address (retrying while it is taken).
        loop {
            match TcpListener::bind(addr).await {
                Ok(tcp) => {
                    tracing::info!(%addr, "simulator up again");
                    listener = Some(tcp);
                    break;
                }
                Err(error) => {
                    tracing::warn!(%addr, %error, "cannot bind the simulator's address again yet");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }
}

/// Completes when the `down` fault is in force.
async fn until_down(faults: &mut tokio::sync::watch::Receiver<fault::Setting>) {
    loop {
        let setting = *faults.borrow_and_update();
        if setting.at(tokio::time::Instant::now()) == ServerFault::Down {
            return;
        }
        if faults.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Sleeps until `until`, or forever without one.
async fn sleep_until(until: Option<tokio::time::Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}
