//! One private `redis-server` process.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{free_port, redis_benchmark, redis_cli, redis_server};

/// How long a server may take to accept connections after it is spawned.
const START_DEADLINE: Duration = Duration::from_secs(15);

/// What one `redis-benchmark` run measured ([`RedisServer::benchmark`]).
/// Its latencies are the tops of its histogram's buckets (8 µs wide below
/// about 2 ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchmarkSummary {
    /// Requests per second.
    pub requests_per_second: f64,
    /// Median latency in ms.
    pub p50_ms: f64,
    /// 99th percentile latency in ms.
    pub p99_ms: f64,
}

/// A `redis-server` on `127.0.0.1`, persisting nothing, in its own
/// temporary directory; killed on drop.
///
/// # Examples
///
/// ```no_run
/// use ratelimit_redis_harness::RedisServer;
///
/// let mut server = RedisServer::start();
/// server.cli(&["SET", "k", "v"]);
/// server.restart();
/// assert_eq!(server.cli(&["EXISTS", "k"]), "0", "nothing survives a restart");
/// ```
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    extra: Vec<String>,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a standalone server on a free port.
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing or does not start.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a standalone server with extra `redis-server` arguments, such
    /// as `["--requirepass", "secret"]`.
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing or does not start.
    #[must_use]
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_on(free_port(), extra)
    }

    /// Starts a server on `port` with extra arguments.
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing or does not start.
    #[must_use]
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ratelimit-redis-")
            .tempdir()
            .expect("a temporary directory for redis-server");
        let mut server = Self {
            port,
            extra: extra.iter().map(ToString::to_string).collect(),
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    /// The server's port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's private directory (its log is `redis.log` there).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process is running.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL: a crash, not a shutdown) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine: either way it is gone.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is
    /// answered, like a hung host. [`resume`](Self::resume) thaws it.
    ///
    /// # Panics
    ///
    /// When the server is not running or `kill` fails.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a [`pause`](Self::pause)d server (SIGCONT).
    ///
    /// # Panics
    ///
    /// When the server is not running or `kill` fails.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill {signal} failed: {status}");
    }

    /// Starts the server again on the same port, empty (nothing persists).
    ///
    /// # Panics
    ///
    /// When it does not come back.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Runs `redis-cli -p <port> <args>` and returns its trimmed output.
    ///
    /// # Panics
    ///
    /// When `redis-cli` cannot be run.
    #[must_use]
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// Runs `redis-benchmark` against this server with `args` (its options
    /// and the command) and reads its `--csv` summary.
    ///
    /// # Panics
    ///
    /// When `redis-benchmark` cannot be run or prints no summary.
    #[must_use]
    pub fn benchmark(&self, args: &[&str]) -> BenchmarkSummary {
        let out = Command::new(redis_benchmark())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--csv"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-benchmark: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
        // "p95_latency_ms","p99_latency_ms","max_latency_ms"
        let fields: Vec<f64> = text
            .lines()
            .last()
            .unwrap_or_default()
            .split("\",\"")
            .skip(1)
            .filter_map(|f| f.trim_matches('"').parse().ok())
            .collect();
        assert!(
            fields.len() >= 6,
            "unexpected redis-benchmark output: {text}"
        );
        BenchmarkSummary {
            requests_per_second: fields[0],
            p50_ms: fields[3],
            p99_ms: fields[5],
        }
    }

    /// A field of `INFO commandstats` for `command` since the server
    /// started or the last `CONFIG RESETSTAT`: `calls`, `usec`,
    /// `usec_per_call`, … `None` when the command has not run since.
    ///
    /// # Panics
    ///
    /// When `redis-cli` cannot be run.
    #[must_use]
    pub fn command_stat(&self, command: &str, field: &str) -> Option<f64> {
        let line_head = format!("cmdstat_{command}:");
        let field_head = format!("{field}=");
        self.cli(&["INFO", "commandstats"])
            .lines()
            .find_map(|l| l.strip_prefix(line_head.as_str()))?
            .split(',')
            .find_map(|f| f.strip_prefix(field_head.as_str()))?
            .parse()
            .ok()
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let log = dir.join("redis.log");
        let mut cmd = Command::new(redis_server());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn redis-server: {e}"));
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "redis-server on port {} exited at start ({status}); its log:\n{}",
                    self.port,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if pong(self.port) {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "redis-server on port {} did not answer PING within {START_DEADLINE:?}; its log:\n{}",
                    self.port,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too; no need to thaw it first.
        self.stop();
    }
}

/// Whether a server on `port` answers `PING` (with or without a password,
/// which answers `-NOAUTH`).
fn pong(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(n) => buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"),
        Err(_) => false,
    }
}

/// `redis-cli -p <port> <args>`, trimmed.
pub(crate) fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(redis_cli())
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
