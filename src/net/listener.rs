//! The accept loop of every listening port. Accepting never fails for the
//! caller: a peer that gave up before it was taken is skipped, and a failure
//! of the process (out of file descriptors, memory or buffers) makes the loop
//! back off instead of spinning, with one log line per burst of failures.
//! Every accepted socket gets `TCP_NODELAY` (a gRPC answer is several small
//! writes; with Nagle's algorithm on, delayed ACKs add ~40 ms to each call)
//! and TCP keepalive (dead peers are noticed), TLS or not.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};

/// The first pause after a failed accept; it doubles per failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
/// The longest pause between two accepts that fail.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Idle time before the first keepalive probe.
const KEEPALIVE_TIME: Duration = Duration::from_secs(60);
/// Time between keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// A bound TCP listener and the state of its accept loop.
#[derive(Debug)]
pub(crate) struct Listener {
    tcp: TcpListener,
    /// Which port this is, for log lines ("grpc", "admin", "simulator").
    port: &'static str,
    /// Failed accepts since the last success.
    failures_in_a_row: u64,
}

impl Listener {
    /// Wraps a bound listener; `port` names it in log lines.
    pub(crate) fn new(tcp: TcpListener, port: &'static str) -> Self {
        Self {
            tcp,
            port,
            failures_in_a_row: 0,
        }
    }

    /// The address it is bound to.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The next connection, tuned. Waits (backing off) through accept
    /// failures; cancel-safe.
    pub(crate) async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.tcp.accept().await {
                Ok((stream, peer)) => {
                    if self.failures_in_a_row > 0 {
                        tracing::info!(
                            port = self.port,
                            failures = self.failures_in_a_row,
                            "accepting connections again"
                        );
                        self.failures_in_a_row = 0;
                    }
                    tune(&stream);
                    return (stream, peer);
                }
                // The peer went away between its SYN and our accept.
                Err(error) if is_peer_error(&error) => {}
                Err(error) => {
                    if self.failures_in_a_row == 0 {
                        tracing::warn!(
                            port = self.port,
                            %error,
                            "cannot accept connections; backing off until it works again"
                        );
                    }
                    self.failures_in_a_row += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Errors of one half-open connection, not of the listener.
fn is_peer_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// `TCP_NODELAY` and keepalive; a socket that refuses them still works.
fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL);
    let _ = SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_have_nodelay_and_keepalive() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut listener = Listener::new(tcp, "test");
        let _client = TcpStream::connect(addr).await.unwrap();

        let (stream, _) = listener.accept().await;

        assert!(stream.nodelay().unwrap());
        assert!(SockRef::from(&stream).keepalive().unwrap());
    }

    #[test]
    fn only_peer_failures_are_skipped_without_backoff() {
        assert!(is_peer_error(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        // EMFILE: the process is out of file descriptors.
        assert!(!is_peer_error(&io::Error::from_raw_os_error(24)));
    }
}
