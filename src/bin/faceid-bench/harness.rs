//! What every scenario needs: the gateway and the simulator as real child
//! processes on loopback ports (Redis comes from `crate::redis_server`),
//! their CPU time and peak memory from `/proc`, test images, and latency
//! histograms.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The key pair the benchmark simulator accepts.
pub const SECRET_ID: &str = "AKIDbenchmark000000000000000000000000";
/// See [`SECRET_ID`].
pub const SECRET_KEY: &str = "benchmarkSecretKey00000000000000";

/// A child process that logs JSON lines; killed when dropped.
pub struct Process {
    child: Child,
    /// The fields of the "ready" log line.
    pub ready: Value,
}

impl Process {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    /// CPU seconds (user + system) and peak RSS (KiB) so far.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        Usage::of(self.pid())
    }

    /// Kills it at once (SIGKILL: no drain, the kernel closes its sockets)
    /// and waits.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }

    /// Stops it with SIGTERM and waits.
    pub async fn stop(mut self) {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status().await;
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

/// Resource use of a process, read from `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Peak resident set size (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// Current resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
}

impl Usage {
    /// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields of the whole line.
        let after = stat.rsplit_once(')').context("malformed stat")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Ok(Self {
            cpu_seconds: ticks as f64 / clock_ticks_per_second(),
            peak_rss_kib: kib("VmHWM:"),
            rss_kib: kib("VmRSS:"),
        })
    }
}

fn clock_ticks_per_second() -> f64 {
    // Linux's USER_HZ is 100 on every mainstream architecture.
    100.0
}

/// The `faceid-gateway` binary next to this one (build both with
/// `cargo build --release --bins`).
pub fn gateway_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name("faceid-gateway");
    if !path.exists() {
        bail!(
            "{} not found: run `cargo build --release --bins`",
            path.display()
        );
    }
    Ok(path)
}

async fn spawn(mut command: Command, ready_message: &str) -> anyhow::Result<Process> {
    let log_level = std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    command
        .env("FACEID_LOG_FORMAT", "json")
        .env("RUST_LOG", log_level)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().context("cannot start the gateway binary")?;
    let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Ok(json) = serde_json::from_str::<Value>(&line)
                && json["message"] == ready_message
            {
                return Ok(json);
            }
        }
        bail!("exited before logging {ready_message:?}")
    })
    .await
    .context("not ready within 30 s")??;
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Process { child, ready })
}

/// Starts `faceid-gateway simulator` allowing `rate_limit` calls a second (0 = no limit).
pub async fn start_simulator(rate_limit: u32) -> anyhow::Result<(Process, String)> {
    start_simulator_at("127.0.0.1:0", rate_limit).await
}

/// [`start_simulator`] listening on `listen` (a port it had before).
pub async fn start_simulator_at(
    listen: &str,
    rate_limit: u32,
) -> anyhow::Result<(Process, String)> {
    let mut command = Command::new(gateway_binary()?);
    command.args(["simulator", "--listen", listen, "--secret-id", SECRET_ID]);
    command.args([
        "--secret-key",
        SECRET_KEY,
        "--rate-limit",
        &rate_limit.to_string(),
    ]);
    let process = spawn(command, "Tencent FaceID simulator serving").await?;
    let endpoint = process.ready["endpoint"]
        .as_str()
        .context("endpoint")?
        .to_owned();
    Ok((process, endpoint))
}

/// A running gateway and its addresses.
pub struct Gateway {
    /// The process.
    pub process: Process,
    /// The gRPC address.
    pub addr: String,
    /// The admin address.
    pub admin: String,
}

/// Starts `faceid-gateway serve` against `endpoint` with extra `flags`.
pub async fn start_gateway(endpoint: &str, flags: &[&str]) -> anyhow::Result<Gateway> {
    start_gateway_with_env(endpoint, flags, &[]).await
}

/// [`start_gateway`] with extra environment variables (e.g. `OTEL_*`).
pub async fn start_gateway_with_env(
    endpoint: &str,
    flags: &[&str],
    env: &[(String, String)],
) -> anyhow::Result<Gateway> {
    let mut command = Command::new(gateway_binary()?);
    command.envs(env.iter().map(|(name, value)| (name, value)));
    command.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    command.args(["--endpoint", endpoint]).args(flags);
    command
        .env("TENCENTCLOUD_SECRET_ID", SECRET_ID)
        .env("TENCENTCLOUD_SECRET_KEY", SECRET_KEY);
    let process = spawn(command, "faceid-gateway serving").await?;
    let addr = process.ready["listen"]
        .as_str()
        .context("listen")?
        .to_owned();
    let admin = process.ready["admin_listen"]
        .as_str()
        .context("admin")?
        .to_owned();
    Ok(Gateway {
        process,
        addr,
        admin,
    })
}

/// The simulator's statistics (`GET /__simulator/stats`).
pub async fn simulator_stats(endpoint: &str) -> anyhow::Result<Value> {
    let url = format!("{endpoint}__simulator/stats");
    let text = reqwest::get(url).await?.text().await?;
    Ok(serde_json::from_str(&text)?)
}

/// Clears the simulator's statistics.
pub async fn reset_simulator(endpoint: &str) -> anyhow::Result<()> {
    reqwest::Client::new()
        .post(format!("{endpoint}__simulator/reset"))
        .send()
        .await?;
    Ok(())
}

/// The smallest real PNG (1×1), which the gateway's structure check accepts.
const PIXEL_PNG: &[u8] = include_bytes!("../../../tests/data/images/pixel.png");

/// A PNG of `size` bytes (at least the 1×1 image's): a real image, then
/// filler bytes after its IEND chunk, which decoders (and the gateway) ignore.
pub fn image_of(size: usize) -> bytes::Bytes {
    let mut image = PIXEL_PNG.to_vec();
    let end = image.len();
    image.resize(size.max(end), 0);
    for (i, byte) in image.iter_mut().enumerate().skip(end) {
        *byte = (i * 31 % 251) as u8;
    }
    bytes::Bytes::from(image)
}

/// Parses sizes such as `10k`, `200k`, `1m`, `5m` (binary units).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim().to_ascii_lowercase();
    let (digits, unit) = match text.strip_suffix('k') {
        Some(d) => (d, 1024),
        None => match text.strip_suffix('m') {
            Some(d) => (d, 1024 * 1024),
            None => (text.as_str(), 1),
        },
    };
    digits
        .parse::<usize>()
        .map(|n| n * unit)
        .map_err(|_| format!("bad size {text:?} (examples: 10k, 200k, 5m)"))
}

/// A latency histogram in microseconds, 1 µs to 100 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid bounds")
}

/// `p50/p99/p999` of a microsecond histogram, in milliseconds.
pub fn percentiles_ms(histogram: &Histogram<u64>) -> [f64; 3] {
    [0.5, 0.99, 0.999].map(|q| histogram.value_at_quantile(q) as f64 / 1e3)
}

/// Reads a Prometheus histogram from `/metrics` text and estimates its
/// quantile `q` by linear interpolation within the buckets.
pub fn histogram_quantile(metrics: &str, name: &str, q: f64) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&format!("{name}_bucket{{le=\""))?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.split_whitespace().next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let mut previous = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(previous.0);
            }
            let share = if count > previous.1 {
                (rank - previous.1) / (count - previous.1)
            } else {
                1.0
            };
            return Some(previous.0 + (le - previous.0) * share);
        }
        previous = (le, count);
    }
    None
}

/// The project's own Tencent client, signing with the bench keys, straight
/// at the simulator `endpoint`: path (a) of the side-by-side scenarios.
pub fn direct_client(endpoint: &str) -> anyhow::Result<faceid_gateway::tencent::Client> {
    use faceid_gateway::tencent::{Client, ClientConfig, CredentialProvider, Credentials};
    let credentials = Credentials::new(SECRET_ID, SECRET_KEY, None)?;
    Ok(Client::new(
        ClientConfig {
            endpoint: endpoint.parse()?,
            region: None,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
        },
        std::sync::Arc::new(CredentialProvider::fixed(credentials)),
    )?)
}
