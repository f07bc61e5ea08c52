//! A private `redis-server` on a loopback port, for the API tests
//! (`tests/api`) and the load tool (`src/bin/faceid-bench`), which both
//! include this one file with `#[path]`: it is not part of the library.
//!
//! The server binds its port itself. Probing for a free port and releasing
//! it before the server binds would race with every other process picking
//! ports, so instead a random port of the kernel's ephemeral range is tried,
//! and when `redis-server` exits because the port is taken, another one is.
//! The server counts as ready only once it answers `INFO server` with our
//! child's process id: a server of someone else on that port never passes
//! for ours.
//!
//! Only std and tokio: the two commands it sends (`PING`, `INFO server`)
//! are written and read as raw RESP.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::io::{self, Read as _};
use std::ops::RangeInclusive;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Ports tried before giving up.
const PORT_TRIES: usize = 20;
/// How long one start may take until the server answers as ours.
const READY_WITHIN: Duration = Duration::from_secs(15);
/// How long one probe (connect, command, answer) may take.
/// A probe that times out is simply tried again: short, so a port held by
/// a listener that never answers is soon seen to have made our child exit.
const PROBE_WITHIN: Duration = Duration::from_millis(250);

/// A `redis-server` child on `127.0.0.1`, without persistence, killed when
/// dropped.
pub struct RedisServer {
    /// `redis://127.0.0.1:<port>/0`.
    pub url: String,
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a random free port of the ephemeral range and
    /// waits until it answers as our child.
    pub async fn start() -> io::Result<Self> {
        let ports = ephemeral_ports();
        let mut taken = Vec::new();
        for _ in 0..PORT_TRIES {
            let port = random_port(&ports);
            match launch(port).await? {
                Launched::Ready(child) => {
                    return Ok(Self {
                        url: format!("redis://127.0.0.1:{port}/0"),
                        port,
                        child: Some(child),
                    });
                }
                Launched::PortTaken => taken.push(port),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("redis-server found no free port in {PORT_TRIES} tries (taken: {taken:?})"),
        ))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server at once (SIGKILL, as an outage would) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (the outage ends). Fails when
    /// another process took the port meanwhile.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.kill();
        match launch(self.port).await? {
            Launched::Ready(child) => {
                self.child = Some(child);
                Ok(())
            }
            Launched::PortTaken => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "cannot restart redis-server: port {} was taken by another process while it was down",
                    self.port
                ),
            )),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How one start on a given port ended.
enum Launched {
    /// The server answers as our child.
    Ready(Child),
    /// Someone else has the port; the child is gone.
    PortTaken,
}

/// Starts `redis-server` on `port` and waits until it answers as our child.
async fn launch(port: u16) -> io::Result<Launched> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            if error.kind() == io::ErrorKind::NotFound {
                io::Error::new(
                    error.kind(),
                    "redis-server is not installed (not on PATH): ./scripts/test installs it",
                )
            } else {
                io::Error::new(error.kind(), format!("cannot start redis-server: {error}"))
            }
        })?;
    let output = Output::collect(&mut child);
    let pid = child.id();
    let give_up = Instant::now() + READY_WITHIN;
    loop {
        if let Some(status) = child.try_wait()? {
            let log = output.finish();
            if log.contains("Address already in use") {
                return Ok(Launched::PortTaken);
            }
            return Err(io::Error::other(format!(
                "redis-server on port {port} exited ({status}) before answering:\n{log}"
            )));
        }
        if let Ok(Ok(info)) =
            tokio::time::timeout(PROBE_WITHIN, command(port, &["INFO", "server"])).await
        {
            if info_pid(&info) == Some(pid) {
                // Our child answers; PING proves it also takes commands
                // as the gateway sends them.
                let pong = tokio::time::timeout(PROBE_WITHIN, command(port, &["PING"])).await;
                if matches!(pong, Ok(Ok(ref text)) if text == "PONG") {
                    return Ok(Launched::Ready(child));
                }
            } else {
                // Another server holds the port; ours cannot bind it.
                let _ = child.kill();
                let _ = child.wait();
                return Ok(Launched::PortTaken);
            }
        }
        if Instant::now() >= give_up {
            let _ = child.kill();
            let _ = child.wait();
            let log = output.finish();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "redis-server (pid {pid}) did not answer on port {port} within {READY_WITHIN:?}:\n{log}"
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The child's stdout and stderr, read on threads of their own (so it
/// never blocks on a full pipe) into a log kept for error messages.
struct Output {
    log: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Output {
    fn collect(child: &mut Child) -> Self {
        let log = Arc::new(Mutex::new(String::new()));
        let pipes: [Option<Box<dyn io::Read + Send>>; 2] = [
            child.stdout.take().map(|pipe| Box::new(pipe) as _),
            child.stderr.take().map(|pipe| Box::new(pipe) as _),
        ];
        let readers = pipes
            .into_iter()
            .flatten()
            .map(|mut pipe| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let mut chunk = [0u8; 4096];
                    while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                        let mut log = log.lock().unwrap();
                        // Only error messages use it: the first 64 KiB do.
                        if log.len() < 64 * 1024 {
                            log.push_str(&String::from_utf8_lossy(&chunk[..n]));
                        }
                    }
                })
            })
            .collect();
        Self { log, readers }
    }

    /// Everything the child wrote, once it has exited (its pipes closed).
    fn finish(self) -> String {
        for reader in self.readers {
            let _ = reader.join();
        }
        self.log.lock().unwrap().clone()
    }
}

/// The `process_id` field of an `INFO server` answer.
fn info_pid(info: &str) -> Option<u32> {
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

/// Sends one command to `127.0.0.1:port` over a fresh connection and
/// returns the answer: the text of a simple string or a bulk string.
async fn command(port: u16, words: &[&str]) -> io::Result<String> {
    let mut request = format!("*{}\r\n", words.len());
    for word in words {
        request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
    }
    let mut stream = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await?);
    stream.get_mut().write_all(request.as_bytes()).await?;
    let mut header = String::new();
    stream.read_line(&mut header).await?;
    let header = header.trim_end();
    if let Some(text) = header.strip_prefix('+') {
        return Ok(text.to_owned());
    }
    if let Some(length) = header.strip_prefix('$') {
        let length: usize = length
            .parse()
            .map_err(|_| io::Error::other(format!("not a RESP bulk length: {header:?}")))?;
        let mut body = vec![0; length + 2];
        stream.read_exact(&mut body).await?;
        body.truncate(length);
        return String::from_utf8(body).map_err(io::Error::other);
    }
    Err(io::Error::other(format!("unexpected answer {header:?}")))
}

/// The kernel's ephemeral port range (IANA's when it cannot be read).
fn ephemeral_ports() -> RangeInclusive<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(str::parse::<u16>);
            match (bounds.next()?.ok()?, bounds.next()?.ok()?) {
                (low, high) if low <= high => Some(low..=high),
                _ => None,
            }
        })
        .unwrap_or(49152..=65535)
}

/// A random port of `range`, from std's randomly seeded hasher.
fn random_port(range: &RangeInclusive<u16>) -> u16 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    let span = u64::from(range.end() - range.start()) + 1;
    range.start() + (hasher.finish() % span) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(error: io::Error) -> RedisServer {
        panic!("{error}")
    }

    #[tokio::test]
    async fn two_servers_get_ports_of_their_own_and_answer_as_our_children() {
        let first = RedisServer::start().await.unwrap_or_else(fail);
        let second = RedisServer::start().await.unwrap_or_else(fail);

        assert_ne!(first.port(), second.port());
        for server in [&first, &second] {
            assert!(ephemeral_ports().contains(&server.port()), "{}", server.url);
            assert_eq!(server.url, format!("redis://127.0.0.1:{}/0", server.port()));
            let info = command(server.port(), &["INFO", "server"]).await.unwrap();
            assert_eq!(info_pid(&info), server.pid(), "{info}");
            assert_eq!(command(server.port(), &["PING"]).await.unwrap(), "PONG");
        }
    }

    #[tokio::test]
    async fn kill_stops_the_server_and_restart_brings_it_back_on_the_same_port() {
        let mut server = RedisServer::start().await.unwrap_or_else(fail);
        let port = server.port();

        server.kill();
        assert!(server.pid().is_none());
        assert!(
            command(port, &["PING"]).await.is_err(),
            "a killed server answers no more"
        );
        server.restart().await.unwrap();

        assert_eq!(server.port(), port);
        assert_eq!(command(port, &["PING"]).await.unwrap(), "PONG");
        let info = command(port, &["INFO", "server"]).await.unwrap();
        assert_eq!(info_pid(&info), server.pid(), "{info}");
    }

    #[tokio::test]
    async fn a_port_taken_while_the_server_was_down_fails_the_restart_clearly() {
        let mut server = RedisServer::start().await.unwrap_or_else(fail);
        let port = server.port();
        server.kill();
        let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();

        let error = server.restart().await.unwrap_err();

        assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{error}");
        assert!(
            error
                .to_string()
                .contains(&format!("port {port} was taken")),
            "{error}"
        );
        drop(squatter);
    }

    #[tokio::test]
    async fn a_port_served_by_someone_else_is_never_taken_for_ours() {
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = squatter.local_addr().unwrap().port();

        let launched = launch(port).await.unwrap();

        assert!(matches!(launched, Launched::PortTaken));
    }

    #[test]
    fn random_ports_stay_in_the_range_and_vary() {
        let range = 40000..=40009;
        let ports: std::collections::BTreeSet<_> = (0..200).map(|_| random_port(&range)).collect();
        assert!(ports.iter().all(|port| range.contains(port)), "{ports:?}");
        assert!(ports.len() > 5, "{ports:?}");
    }

    #[test]
    fn the_process_id_is_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nprocess_id:4242\r\ntcp_port:6379\r\n";
        assert_eq!(info_pid(info), Some(4242));
        assert_eq!(info_pid("# Server\r\n"), None);
    }
}
