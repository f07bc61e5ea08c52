//! Serving HTTP/1.1 and HTTP/2 connections (hyper) for a tower service,
//! with what a port facing unknown clients needs:
//!
//! - a cap on open connections, refused at accept beyond it (counted);
//! - a handshake deadline: a connection that has not sent the HTTP/2
//!   preface (or an HTTP/1.1 request head), TLS included, is closed;
//! - an idle timeout: a connection with no open request is closed
//!   gracefully (GOAWAY);
//! - a maximum connection age, after which clients reconnect (and so
//!   rebalance across replicas);
//! - a graceful drain: on stop the port closes, every connection is asked
//!   to finish (GOAWAY, or `Connection: close`), and [`Draining`] waits for
//!   them up to a timeout, then cuts the rest.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceExt as _};

use super::listener::Listener;
use super::tls::ReloadingAcceptor;

/// Errors a served service may fail with (hyper then drops the connection).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bytes a client sends before a connection counts as established: the
/// length of the HTTP/2 connection preface (an HTTP/1.1 request line is
/// longer).
const HANDSHAKE_BYTES: u64 = 24;

/// How a port serves its connections.
#[derive(Debug, Clone, Default)]
pub(crate) struct HttpSettings {
    /// Whether HTTP/1.1 is spoken besides HTTP/2.
    pub(crate) http1: bool,
    /// HTTP/2 limits and keepalive.
    pub(crate) http2: Http2Settings,
    /// Close connections gracefully at this age.
    pub(crate) max_connection_age: Option<Duration>,
    /// Close a connection that has not shaken hands (TLS and the first
    /// bytes of HTTP) within this time.
    pub(crate) handshake_timeout: Option<Duration>,
    /// Close a connection gracefully after this long with no open request.
    pub(crate) idle_timeout: Option<Duration>,
    /// Refuse connections beyond this many open ones.
    pub(crate) max_connections: Option<usize>,
}

/// HTTP/2 settings; `None` keeps hyper's default.
#[derive(Debug, Clone, Default)]
pub(crate) struct Http2Settings {
    /// Flow-control window of each stream.
    pub(crate) initial_stream_window: Option<u32>,
    /// Flow-control window of the connection.
    pub(crate) initial_connection_window: Option<u32>,
    /// The largest frame accepted.
    pub(crate) max_frame_size: Option<u32>,
    /// Streams one connection may have open.
    pub(crate) max_concurrent_streams: Option<u32>,
    /// The largest header block accepted.
    pub(crate) max_header_list_size: Option<u32>,
    /// Ping an idle connection at this interval and drop it when a ping
    /// goes unanswered for the second duration.
    pub(crate) keepalive: Option<(Duration, Duration)>,
}

/// The counters a port reports its connections to (detached ones when the
/// port is not measured).
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionMetrics {
    /// Connections accepted and served.
    pub(crate) accepted: Counter,
    /// Connections refused at accept because the cap was reached.
    pub(crate) refused: Counter,
    /// Connections closed for not shaking hands in time.
    pub(crate) handshake_timeouts: Counter,
    /// Connections closed for being idle.
    pub(crate) idle_closed: Counter,
    /// Connections open now.
    pub(crate) open: Gauge,
}

/// A port: a listener, the service behind it, and how it serves.
pub(crate) struct HttpServer<S> {
    listener: Listener,
    service: S,
    settings: HttpSettings,
    tls: Option<Arc<ReloadingAcceptor>>,
    metrics: ConnectionMetrics,
}

impl<S, B> HttpServer<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// Serves `service` on `listener` as `settings` say, in clear.
    pub(crate) fn new(listener: Listener, service: S, settings: HttpSettings) -> Self {
        Self {
            listener,
            service,
            settings,
            tls: None,
            metrics: ConnectionMetrics::default(),
        }
    }

    /// Serves over TLS when `tls` is given.
    pub(crate) fn with_tls(mut self, tls: Option<Arc<ReloadingAcceptor>>) -> Self {
        self.tls = tls;
        self
    }

    /// Counts connections in `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: ConnectionMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Serves until `stop` is cancelled; then the port closes, every open
    /// connection is asked to finish, and the returned [`Draining`] waits
    /// for them.
    pub(crate) async fn serve(mut self, stop: CancellationToken) -> Draining {
        let connections = TaskTracker::new();
        let cut = CancellationToken::new();
        let cap = self
            .settings
            .max_connections
            .map(|max| (max, Arc::new(Semaphore::new(max))));
        let builder = Arc::new(builder(&self.settings));
        let mut refusing = false;
        loop {
            let (stream, _peer) = tokio::select! {
                () = stop.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let permit = match &cap {
                None => None,
                Some((max, slots)) => match Arc::clone(slots).try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        self.metrics.refused.inc();
                        if !refusing {
                            tracing::warn!(
                                max_connections = max,
                                "connection cap reached; refusing new connections"
                            );
                            refusing = true;
                        }
                        drop(stream);
                        continue;
                    }
                },
            };
            if refusing {
                tracing::info!("below the connection cap again; accepting");
                refusing = false;
            }
            self.metrics.accepted.inc();
            let connection = Connection {
                tls: self.tls.clone(),
                service: self.service.clone(),
                builder: Arc::clone(&builder),
                settings: self.settings.clone(),
                metrics: self.metrics.clone(),
                stop: stop.clone(),
                cut: cut.clone(),
                _permit: permit,
            };
            connections.spawn(connection.serve(stream));
        }
        // Dropping the listener closes the port: new clients are refused at
        // once instead of waiting for a server that will not answer.
        drop(self.listener);
        connections.close();
        Draining { connections, cut }
    }
}

/// The connections of a stopped port, finishing their open requests.
#[derive(Debug)]
pub(crate) struct Draining {
    connections: TaskTracker,
    cut: CancellationToken,
}

impl Draining {
    /// Waits until every connection has closed, at most `timeout`; then
    /// cuts the rest. Returns whether all finished in time.
    pub(crate) async fn finish_within(self, timeout: Duration) -> bool {
        let finished = tokio::time::timeout(timeout, self.connections.wait())
            .await
            .is_ok();
        if !finished {
            self.cut.cancel();
            self.connections.wait().await;
        }
        finished
    }
}

/// The hyper connection builder for `settings`.
fn builder(settings: &HttpSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if !settings.http1 {
        builder = builder.http2_only();
    }
    // hyper enforces the HTTP/1 header read timeout only with a timer.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.handshake_timeout);
    let h2 = &settings.http2;
    let mut http2 = builder.http2();
    http2
        .timer(TokioTimer::new())
        .initial_stream_window_size(h2.initial_stream_window)
        .initial_connection_window_size(h2.initial_connection_window)
        .max_frame_size(h2.max_frame_size)
        .max_concurrent_streams(h2.max_concurrent_streams);
    if let Some(max) = h2.max_header_list_size {
        http2.max_header_list_size(max);
    }
    if let Some((interval, timeout)) = h2.keepalive {
        http2
            .keep_alive_interval(interval)
            .keep_alive_timeout(timeout);
    }
    builder
}

/// One accepted connection and what it needs to serve itself.
struct Connection<S> {
    tls: Option<Arc<ReloadingAcceptor>>,
    service: S,
    builder: Arc<auto::Builder<TokioExecutor>>,
    settings: HttpSettings,
    metrics: ConnectionMetrics,
    /// Cancelled when the port stops: finish gracefully.
    stop: CancellationToken,
    /// Cancelled when the drain is over: close at once.
    cut: CancellationToken,
    /// The connection's slot under the cap, freed when it closes.
    _permit: Option<OwnedSemaphorePermit>,
}

impl<S, B> Connection<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    async fn serve(self, stream: TcpStream) {
        let _open = GaugeGuard::up(&self.metrics.open);
        let started = Instant::now();
        let handshake_deadline = self.settings.handshake_timeout.map(|t| started + t);
        let io = match &self.tls {
            None => Either::Left(stream),
            Some(acceptor) => {
                let handshake = acceptor.acceptor().accept(stream);
                let accepted = tokio::select! {
                    accepted = handshake => accepted,
                    () = sleep_until(handshake_deadline) => {
                        self.metrics.handshake_timeouts.inc();
                        tracing::debug!("TLS handshake not finished in time; closing");
                        return;
                    }
                    () = self.stop.cancelled() => return,
                };
                match accepted {
                    Ok(stream) => Either::Right(stream),
                    Err(error) => {
                        tracing::debug!(%error, "TLS handshake refused");
                        return;
                    }
                }
            }
        };
        let received = Arc::new(AtomicU64::new(0));
        let io = CountingIo {
            inner: io,
            received: Arc::clone(&received),
        };
        let activity = Arc::new(Activity::new());
        let service = Tracked {
            inner: self.service.clone(),
            activity: Arc::clone(&activity),
        };
        let connection = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let age_limit = self.settings.max_connection_age.map(|age| started + age);
        let mut handshake_pending = handshake_deadline.is_some();
        let mut closing = false;
        loop {
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(error) = served {
                        tracing::debug!(error = %error, "connection ended with an error");
                    }
                    return;
                }
                () = self.cut.cancelled() => return,
                () = self.stop.cancelled(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = sleep_until(handshake_deadline), if handshake_pending => {
                    if received.load(Ordering::Relaxed) < HANDSHAKE_BYTES {
                        self.metrics.handshake_timeouts.inc();
                        tracing::debug!("no HTTP handshake in time; closing");
                        return;
                    }
                    handshake_pending = false;
                }
                () = sleep_until(age_limit), if !closing && age_limit.is_some() => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = activity.idle_for(self.settings.idle_timeout), if !closing => {
                    self.metrics.idle_closed.inc();
                    tracing::debug!("connection idle; closing");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Holds a gauge one up while alive.
struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn up(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A connection's IO, counting the bytes the client sent.
struct CountingIo<T> {
    inner: T,
    received: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for CountingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        if read > 0 {
            self.received.fetch_add(read, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountingIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The open requests of one connection, and since when it has had none.
struct Activity {
    open: AtomicUsize,
    /// When the last open request finished (or the connection opened).
    idle_since: std::sync::Mutex<Instant>,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            open: AtomicUsize::new(0),
            idle_since: std::sync::Mutex::new(Instant::now()),
            changed: Notify::new(),
        }
    }

    fn request_started(&self) {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    fn request_finished(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self
                .idle_since
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
        }
        self.changed.notify_waiters();
    }

    /// Completes once the connection has had no open request for `timeout`
    /// (never without a timeout).
    async fn idle_for(&self, timeout: Option<Duration>) {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                let since = *self
                    .idle_since
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                tokio::select! {
                    () = tokio::time::sleep_until(since + timeout) => {
                        if self.open.load(Ordering::Acquire) == 0 {
                            return;
                        }
                    }
                    () = &mut changed => {}
                }
            } else {
                changed.await;
            }
        }
    }
}

/// Marks a request open until its answer's body is done or dropped.
struct OpenRequest(Arc<Activity>);

impl OpenRequest {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.request_started();
        Self(Arc::clone(activity))
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// The service of one connection: the port's service, with each request
/// counted open until its answer is fully sent.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let open = OpenRequest::start(&self.activity);
        let answer = self.inner.clone().oneshot(request);
        Box::pin(async move {
            let response = answer.await.map_err(Into::into)?;
            Ok(response.map(|body| TrackedBody { body, _open: open }))
        })
    }
}

/// An answer's body, holding its request open until it ends.
pub(crate) struct TrackedBody<B> {
    body: B,
    _open: OpenRequest,
}

impl<B> Body for TrackedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body)
            .poll_frame(cx)
            .map(|frame| frame.map(|frame| frame.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
