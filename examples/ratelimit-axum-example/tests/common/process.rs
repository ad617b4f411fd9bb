//! The compiled service as a child process, for the tests that need a
//! real process (signals, start-up failures, what it prints): started with
//! none of the caller's configuration variables, both output streams read
//! on threads so no pipe fills up, killed and reaped on drop.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a process may take to start listening, or to exit when it
/// should, on a loaded machine.
pub const START: Duration = Duration::from_secs(20);

/// The variables besides `RATELIMIT_*` that configure the service: a
/// test sets them explicitly or not at all, whatever `cargo test` runs in.
const CONFIGURING: [&str; 3] = ["REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"];

/// A running (or exited) service process and everything it printed.
pub struct Process {
    child: Child,
    /// The stderr lines so far (the log).
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Process {
    /// Starts the service on a free loopback port with `args`, `envs`
    /// and `RUST_LOG=rust_log`.
    pub fn start(args: &[&str], envs: &[(&str, &str)], rust_log: &str) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ratelimit-axum-example"));
        command.args(["--bind", "127.0.0.1:0"]).args(args);
        for (name, _) in std::env::vars_os() {
            let configures = name
                .to_str()
                .is_some_and(|name| name.starts_with("RATELIMIT_") || CONFIGURING.contains(&name));
            if configures {
                command.env_remove(name);
            }
        }
        let mut child = command
            .env("RUST_LOG", rust_log)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            {
                let pipe = child.stderr.take().unwrap();
                let lines = Arc::clone(&stderr);
                std::thread::spawn(move || {
                    for line in BufReader::new(pipe).lines() {
                        let Ok(line) = line else { break };
                        lines.lock().unwrap().push(line);
                    }
                })
            },
            {
                let mut pipe = child.stdout.take().unwrap();
                let text = Arc::clone(&stdout);
                std::thread::spawn(move || {
                    let mut all = String::new();
                    pipe.read_to_string(&mut all).ok();
                    *text.lock().unwrap() = all;
                })
            },
        ];
        Self {
            child,
            stderr,
            stdout,
            readers,
        }
    }

    /// The process id, for signals.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The log (stderr) lines written so far.
    pub fn lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// The value of field `name` on the first log line containing `marker`
    /// and the field, waiting for it at most [`START`].
    ///
    /// # Panics
    ///
    /// When the process exits or [`START`] passes first, with the log.
    pub fn wait_for_field(&mut self, marker: &str, name: &str) -> String {
        let started = Instant::now();
        let field = format!(" {name}=");
        loop {
            let found = self.stderr.lock().unwrap().iter().find_map(|line| {
                let rest = line
                    .split(&field)
                    .nth(1)
                    .filter(|_| line.contains(marker))?;
                Some(rest.split_whitespace().next().unwrap_or("").to_owned())
            });
            if let Some(value) = found {
                return value;
            }
            let exited = self.child.try_wait().unwrap().is_some();
            assert!(
                !exited && started.elapsed() < START,
                "no `{marker}` line with `{name}` from service {}:\n{}",
                self.id(),
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address the service listens on, once it does.
    pub fn addr(&mut self) -> SocketAddr {
        self.wait_for_field("listening", "addr").parse().unwrap()
    }

    /// Sends SIGTERM: the service starts its graceful shutdown.
    pub fn sigterm(&self) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    }

    /// Sends SIGHUP: the gateway profile reloads its file.
    pub fn sighup(&self) {
        let sent = Command::new("kill")
            .args(["-HUP", &self.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// SIGKILL: the process dies at once, releasing nothing.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// How many log lines so far contain every one of `markers`.
    pub fn count_lines(&self, markers: &[&str]) -> usize {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|line| markers.iter().all(|m| line.contains(m)))
            .count()
    }

    /// Waits at most [`START`] for the `n`th log line containing every one
    /// of `markers`.
    ///
    /// # Panics
    ///
    /// When it does not come, with the log.
    pub fn wait_for_lines(&self, markers: &[&str], n: usize) {
        let started = Instant::now();
        while self.count_lines(markers) < n {
            assert!(
                started.elapsed() < START,
                "no {n} lines with {markers:?}:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits at most `bound` for the process to exit.
    ///
    /// # Panics
    ///
    /// When it is still running after `bound` (it is killed on drop).
    pub fn exits_within(&mut self, bound: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < bound, "still running after {bound:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process printed, stdout then stderr, once it has
    /// exited (at most [`START`] from now).
    pub fn output(&mut self) -> String {
        self.exits_within(START);
        // Both pipes are at their end once the process is gone.
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        format!(
            "{}\n{}",
            self.stdout.lock().unwrap(),
            self.lines().join("\n")
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A failing test leaves no server behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration file in the temporary directory, removed on drop.
pub struct ConfigFile(PathBuf);

impl ConfigFile {
    /// Writes `text` to a file of its own (named after `name`, the test
    /// process and a counter, so parallel tests never share one).
    pub fn new(name: &str, text: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ratelimit-example-{}-{}-{name}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path as a command-line argument.
    pub fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Starts a generate request to `addr` and waits for its first delta;
/// returns the reader with the stream still running (reads time out after
/// `read_timeout`).
pub fn start_stream(addr: SocketAddr, read_timeout: Duration) -> BufReader<TcpStream> {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(read_timeout)).unwrap();
    let body = r#"{"messages":[{"role":"user","content":"Hi"}]}"#;
    write!(
        conn,
        "POST /api/generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(conn);
    let mut head = String::new();
    while !head.contains("text-delta") {
        assert!(
            reader.read_line(&mut head).unwrap() > 0,
            "closed early: {head}"
        );
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    reader
}
