//! The `faceid-gateway` binary as a child process: a clean environment,
//! JSON logs read line by line, SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const BINARY: &str = env!("CARGO_BIN_EXE_faceid-gateway");

/// The binary with a clean environment: no inherited `FACEID_*` or
/// `TENCENTCLOUD_*` variables, JSON logs.
pub fn command(args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("FACEID_LOG_FORMAT", "json")
        .env("FACEID_ADMIN_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

pub struct Running {
    child: Child,
    /// stderr, line by line, read by a task of its own from the start: a
    /// pipe nobody reads fills up (64 KiB, a few hundred TRACE lines), the
    /// gateway's log writer then stalls, and the lines still queued when it
    /// exits are lost.
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

/// A log line as text, whatever its bytes (a dependency's TRACE output need
/// not be UTF-8, and must not end the reading).
fn text(line: Vec<u8>) -> String {
    String::from_utf8(line)
        .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

impl Running {
    pub fn start(mut command: Command) -> Self {
        let mut child = command.spawn().expect("start the binary");
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).split(b'\n');
        let (sender, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_segment().await {
                if sender.send(text(line)).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads log lines until one has `message`; returns it parsed.
    pub async fn wait_for(&mut self, message: &str) -> serde_json::Value {
        let wait = async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line.clone());
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                    && json["message"] == message
                {
                    return json;
                }
            }
            panic!("exited before logging {message:?}: {:?}", self.seen);
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .unwrap_or_else(|_| panic!("no {message:?} within 20 s"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends SIGTERM and waits for the exit; returns (success, remaining logs).
    pub async fn terminate(self) -> (bool, String) {
        let (clean, _took, logs) = self.terminate_timed().await;
        (clean, logs)
    }

    /// [`Self::terminate`], also returning how long the exit took.
    pub async fn terminate_timed(mut self) -> (bool, Duration, String) {
        let pid = self.child.id().expect("running").to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        let signalled = std::time::Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exits within 20 s after SIGTERM")
            .unwrap();
        let took = signalled.elapsed();
        // The pipe closes with the exit; bounded all the same, in case
        // something the binary started still holds it.
        let rest = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line);
            }
        })
        .await;
        assert!(rest.is_ok(), "stderr still open 10 s after the exit");
        (status.success(), took, self.seen.join("\n"))
    }
}
