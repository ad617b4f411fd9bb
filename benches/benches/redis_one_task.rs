//! Where one task's latency goes: the same fixed-window decision sent one
//! at a time by several clients, against one private `redis-server`.
//!
//! Run with: `cargo bench -p ratelimit-benches --bench redis_one_task`
//! (`REDIS_ONE_TASK_ROUNDS`, default 5, interleaved rounds of
//! `REDIS_ONE_TASK_CALLS`, default 40,000, sequential calls per client).
//!
//! Clients, each round in this order:
//!
//! - `redis-benchmark -c 1` with the minimal `INCR` + `PEXPIRE` script (the
//!   figure the goal compares with), and with this crate's fixed-window
//!   code and arguments, by `EVALSHA` of the script and by `FCALL` of it
//!   loaded as a function library (what the limiter sends by default);
//! - a blocking `std::net::TcpStream` writing the packed `EVALSHA` and
//!   reading the 32-byte reply: the floor of any client;
//! - the same on a tokio `TcpStream`: the floor of a tokio client;
//! - redis-rs's multiplexed connection and its `ConnectionManager` (what
//!   the limiter's batched calls use);
//! - the limiter itself (`check_one`, default options: a lone request goes
//!   at once from its task, past the batcher, as an `FCALL`), the limiter
//!   with `max_batch = 1` (no batcher at all), and the limiter on the
//!   script path (`with_functions(false)`: an `EVALSHA`, as the clients
//!   above); all call through redis-rs's `ConnectionManager`, and rotate
//!   which goes first from one round to the next. (Until the lean connection was removed, the default one
//!   wrote and read its own socket: this pair measured what that gained.)
//!
//! Each line gives the p50 in µs per round and this process's CPU time
//! per call (user + system, from `/proc/self/stat`, so 10 ms ticks over
//! the round). redis-benchmark's p50 is the top of an 8 µs histogram
//! bucket (its resolution at this range), the others' exact.
//!
//! `taskset -c 1 cargo bench …` runs everything, the server included, on
//! one core: no cross-core wake-ups.

// This bench's output is its report.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use ratelimit_core::{Limiter, Policy};
use ratelimit_redis::{RedisLimiter, RedisOptions};
use ratelimit_redis_harness::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MINIMAL_SCRIPT: &str =
    "local v = redis.call('INCR', KEYS[1]) redis.call('PEXPIRE', KEYS[1], 60000) return v";
/// This crate's fixed-window script, as `ratelimit-redis` builds it.
const FIXED_WINDOW_SCRIPT: &str = concat!(
    "local SIZE, PARAMS = 16, 2\n",
    include_str!("../../crates/ratelimit-redis/src/lua/prelude.lua"),
    include_str!("../../crates/ratelimit-redis/src/lua/fixed_window.lua"),
    include_str!("../../crates/ratelimit-redis/src/lua/decide_all.lua")
);
/// The same code as a function library, as `ratelimit-redis` loads it.
fn fixed_window_library() -> String {
    format!("#!lua name=bench_fw\n{FIXED_WINDOW_SCRIPT}").replace(
        "--@ENTRY@\nreturn main(KEYS, ARGV)",
        "redis.register_function('bench_fw', main)",
    )
}
/// Its arguments after the key: server time, no TTL floor, limit, window
/// in µs, cost.
const FIXED_WINDOW_ARGS: [&str; 5] = ["", "0", "1000000000", "60000000", "1"];
const KEYS: usize = 10_000;
/// `$25\r\n` + 25 bytes + `\r\n`: one decision.
const REPLY_BYTES: usize = 32;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// This process's CPU time so far, in µs (10 ms resolution).
fn cpu_micros() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // utime and stime are fields 14 and 15, counted after the `(comm)`.
    let after_comm = &stat[stat.rfind(')').expect("a comm field") + 2..];
    let ticks: f64 = after_comm
        .split(' ')
        .skip(11)
        .take(2)
        .map(|f| f.parse::<f64>().expect("a tick count"))
        .sum();
    ticks * 10_000.0
}

/// One client's figures over the rounds.
struct Line {
    what: &'static str,
    p50_us: Vec<f64>,
    cpu_us: Vec<f64>,
}

impl Line {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            p50_us: Vec::new(),
            cpu_us: Vec::new(),
        }
    }

    /// Records a round: its latencies and the CPU µs it used.
    fn record(&mut self, mut latencies: Vec<Duration>, cpu_us: f64) {
        self.cpu_us.push(cpu_us / latencies.len() as f64);
        latencies.sort_unstable();
        self.p50_us
            .push(latencies[latencies.len() / 2].as_secs_f64() * 1e6);
    }

    fn print(&self) {
        let show = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut sorted = self.p50_us.clone();
        sorted.sort_by(f64::total_cmp);
        print!(
            "| {} | {:.1} | {} |",
            self.what,
            sorted[sorted.len() / 2],
            show(&self.p50_us)
        );
        if self.cpu_us.is_empty() {
            println!(" – |");
        } else {
            println!(" {} |", show(&self.cpu_us));
        }
    }
}

/// `redis-benchmark -c 1` p50 in µs for `command`.
fn redis_benchmark_p50(server: &RedisServer, calls: usize, command: &[&str]) -> f64 {
    let (n, keys) = (calls.to_string(), KEYS.to_string());
    let mut args = vec!["-c", "1", "-n", &n, "-r", &keys];
    args.extend(command);
    server.benchmark(&args).p50_ms * 1e3
}

/// The limiter's call for key `i`, by hand.
fn fixed_window_call(sha: &str, i: usize) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha)
        .arg(1)
        .arg(format!("one:fw:{{user:{}}}", i % KEYS))
        .arg(&FIXED_WINDOW_ARGS[..]);
    cmd
}

/// `calls` sequential calls on a redis-rs connection, timed.
async fn redis_rs_calls(
    connection: &mut impl redis::aio::ConnectionLike,
    sha: &str,
    calls: usize,
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(calls);
    for i in 0..calls {
        let cmd = fixed_window_call(sha, i);
        let at = Instant::now();
        let _: redis::Value = cmd.query_async(connection).await.expect("a reply");
        latencies.push(at.elapsed());
    }
    latencies
}

fn main() {
    let rounds = env("REDIS_ONE_TASK_ROUNDS", 5);
    let calls = env("REDIS_ONE_TASK_CALLS", 40_000);
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime builds");
    let minimal_sha = server.cli(&["SCRIPT", "LOAD", MINIMAL_SCRIPT]);
    let sha = server.cli(&["SCRIPT", "LOAD", FIXED_WINDOW_SCRIPT]);
    assert_eq!(sha, redis::Script::new(FIXED_WINDOW_SCRIPT).get_hash());

    let mut rb_minimal = Line::new("redis-benchmark -c 1, minimal script");
    let mut rb_ours = Line::new("redis-benchmark -c 1, this crate's script");
    assert_eq!(
        server.cli(&["FUNCTION", "LOAD", "REPLACE", &fixed_window_library()]),
        "bench_fw"
    );
    let mut rb_function = Line::new("redis-benchmark -c 1, this crate's code as a function");
    let mut lines = [
        Line::new("tokio TcpStream by hand, this crate's script"),
        Line::new("redis-rs multiplexed connection, this crate's script"),
        Line::new("redis-rs ConnectionManager, this crate's script"),
        Line::new("ratelimit-redis `check_one` (FCALL)"),
        Line::new("ratelimit-redis `check_one`, max_batch = 1 (no batcher, FCALL)"),
        Line::new("ratelimit-redis `check_one`, script path (EVALSHA)"),
    ];
    let url = server.url();
    let port = server.port();
    let mut blocking = Line::new("std TcpStream, blocking, this crate's script");
    for round in 0..rounds {
        // Blocking system calls, no runtime: the floor of any client.
        {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            stream.set_nodelay(true).expect("TCP_NODELAY");
            let mut reply = [0u8; 256];
            let mut packed = Vec::new();
            let mut latencies = Vec::with_capacity(calls);
            let cpu0 = cpu_micros();
            for i in 0..calls {
                packed.clear();
                fixed_window_call(&sha, i).write_packed_command(&mut packed);
                let at = Instant::now();
                stream.write_all(&packed).expect("write");
                let mut got = 0;
                while got < REPLY_BYTES {
                    got += stream.read(&mut reply[got..]).expect("read");
                }
                latencies.push(at.elapsed());
            }
            blocking.record(latencies, cpu_micros() - cpu0);
        }
        let p50 = redis_benchmark_p50(
            &server,
            calls,
            &["EVALSHA", &minimal_sha, "1", "rb:__rand_int__"],
        );
        rb_minimal.p50_us.push(p50);
        let mut command = vec!["EVALSHA", &sha, "1", "one:fw:{user:__rand_int__}"];
        command.extend(FIXED_WINDOW_ARGS);
        rb_ours
            .p50_us
            .push(redis_benchmark_p50(&server, calls, &command));
        let mut command = vec!["FCALL", "bench_fw", "1", "one:fw:{user:__rand_int__}"];
        command.extend(FIXED_WINDOW_ARGS);
        rb_function
            .p50_us
            .push(redis_benchmark_p50(&server, calls, &command));

        // In a spawned task, as a request handler runs.
        let (url, sha) = (url.clone(), sha.clone());
        let (latencies, cpu) = rt
            .block_on(rt.spawn(async move {
                let mut latencies: [Vec<Duration>; 6] = Default::default();
                let mut cpu = [0.0; 6];

                let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect");
                stream.set_nodelay(true).expect("TCP_NODELAY");
                let mut reply = [0u8; 256];
                let mut packed = Vec::new();
                let started = cpu_micros();
                for i in 0..calls {
                    packed.clear();
                    fixed_window_call(&sha, i).write_packed_command(&mut packed);
                    let at = Instant::now();
                    stream.write_all(&packed).await.expect("write");
                    let mut got = 0;
                    while got < REPLY_BYTES {
                        got += stream.read(&mut reply[got..]).await.expect("read");
                    }
                    latencies[0].push(at.elapsed());
                }
                cpu[0] = cpu_micros() - started;

                let client = redis::Client::open(url.as_str()).expect("a valid URL");
                let mut multiplexed = client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("connect");
                let started = cpu_micros();
                latencies[1] = redis_rs_calls(&mut multiplexed, &sha, calls).await;
                cpu[1] = cpu_micros() - started;
                let mut manager = redis::aio::ConnectionManager::new(client)
                    .await
                    .expect("connect");
                let started = cpu_micros();
                latencies[2] = redis_rs_calls(&mut manager, &sha, calls).await;
                cpu[2] = cpu_micros() - started;

                let policy =
                    Policy::fixed_window(1_000_000_000, Duration::from_secs(60)).expect("valid");
                let keys: Vec<Vec<u8>> = (0..KEYS)
                    .map(|i| format!("user:{i}").into_bytes())
                    .collect();
                // The default limiter, the one without a batcher and the
                // one on the script path, first in turn.
                let order = [[3, 4, 5], [4, 5, 3], [5, 3, 4]][round % 3];
                for line in order {
                    let options = RedisOptions::standalone(url.clone())
                        .with_prefix(format!("one-limiter-{line}:"));
                    let options = match line {
                        4 => options.with_max_batch(std::num::NonZeroUsize::MIN),
                        5 => options.with_functions(false),
                        _ => options,
                    };
                    let limiter = RedisLimiter::connect(policy, options)
                        .await
                        .expect("connect");
                    let started = cpu_micros();
                    for i in 0..calls {
                        let at = Instant::now();
                        let decision = limiter
                            .check_one(&keys[i % KEYS])
                            .await
                            .expect("Redis decides");
                        latencies[line].push(at.elapsed());
                        assert!(decision.allowed);
                    }
                    cpu[line] = cpu_micros() - started;
                }
                (latencies, cpu)
            }))
            .expect("the round's task finishes");
        // Each client's CPU, from its first call to its last.
        for ((line, latencies), cpu) in lines.iter_mut().zip(latencies).zip(cpu) {
            line.record(latencies, cpu);
        }
    }
    println!("| client, one call at a time | p50 µs (median) | p50 µs per round | client CPU µs per call, per round |");
    println!("|---|---:|---|---|");
    rb_minimal.print();
    rb_ours.print();
    rb_function.print();
    blocking.print();
    for line in &lines {
        line.print();
    }
}
