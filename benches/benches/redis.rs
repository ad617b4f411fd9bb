//! ratelimit-redis next to `redis-benchmark`, on one private `redis-server`
//! this bench starts on a free loopback port.
//!
//! Run with: `cargo bench -p ratelimit-benches --bench redis`
//!
//! `REDIS_BENCH_SECONDS` sets each measurement's length (default 2),
//! `REDIS_BENCH_MODES=multiplexed` skips the pool, and
//! `REDIS_BENCH_RUNTIME=multi` runs the tasks on a two-worker tokio runtime
//! instead of the default current-thread one (on two cores the server has
//! one of them to itself).
//!
//! For each algorithm and connection mode, tasks check 10,000 keys (all
//! allowed) at 1, 16 and 64 concurrent tasks: decisions per second and
//! p50/p99 latency, and client commands per decision counted from
//! `INFO commandstats` (the commands the scripts run inside Redis are not
//! round trips and are left out). Beside them, `redis-benchmark` runs a
//! minimal one-key Lua script (`INCR` + `PEXPIRE`) by EVALSHA with `-c 1`,
//! `-c 50` and `-c 50 -P 16` on the same server in the same run.
//!
//! Prints a Markdown table and the goals (see BENCHMARKS.md).

// This bench's output is its report.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratelimit_core::{Limiter, Policy};
use ratelimit_redis::{ConnectionMode, RedisLimiter, RedisOptions};
use ratelimit_redis_harness::{redis_benchmark, RedisServer};

const KEYS: usize = 10_000;
/// The one-key script `redis-benchmark` runs: the floor of a Lua decision.
const MINIMAL_SCRIPT: &str =
    "local v = redis.call('INCR', KEYS[1]) redis.call('PEXPIRE', KEYS[1], 60000) return v";
const CONCURRENCY: [usize; 3] = [1, 16, 64];
/// Commands only ever run by scripts inside Redis, and the bench's own.
const NOT_ROUND_TRIPS: [&str; 7] = [
    "time",
    "get",
    "set",
    "incr",
    "pexpire",
    "info",
    "config|resetstat",
];

struct Row {
    what: String,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    commands: Option<f64>,
    /// Share of one core the server used during the run.
    redis_cpu: Option<f64>,
    /// Server-side µs per EVALSHA.
    script_us: Option<f64>,
}

fn main() {
    let seconds: f64 = std::env::var("REDIS_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let measure = Duration::from_secs_f64(seconds);
    let server = RedisServer::start();
    let rt = match std::env::var("REDIS_BENCH_RUNTIME").as_deref() {
        Ok("multi") => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .expect("a tokio runtime builds");

    let mut rows = Vec::new();
    let requests = |rps_guess: f64| ((rps_guess * seconds) as u64).max(10_000);
    let baseline_c1 = redis_benchmark_row(&server, &["-c", "1"], requests(15_000.0));
    let baseline_c50 = redis_benchmark_row(&server, &["-c", "50"], requests(60_000.0));
    let baseline_p16 = redis_benchmark_row(&server, &["-c", "50", "-P", "16"], requests(200_000.0));

    let mut ours = HashMap::new();
    let modes: &[ConnectionMode] = match std::env::var("REDIS_BENCH_MODES").as_deref() {
        Ok("multiplexed") => &[ConnectionMode::Multiplexed],
        _ => &[ConnectionMode::Multiplexed, ConnectionMode::Pool],
    };
    for &mode in modes {
        for policy in policies() {
            for tasks in CONCURRENCY {
                // The goals compare with a redis-benchmark run taken just
                // before, so that both see the same load on a shared host.
                let adjacent = match (mode, tasks) {
                    (ConnectionMode::Multiplexed, 1) => Some(
                        redis_benchmark_row(&server, &["-c", "1"], requests(15_000.0))
                            .rate_and_p50(),
                    ),
                    (ConnectionMode::Multiplexed, 64) => Some(
                        redis_benchmark_row(&server, &["-c", "50"], requests(60_000.0))
                            .rate_and_p50(),
                    ),
                    _ => None,
                };
                let row = rt.block_on(run(&server, policy, mode, tasks, measure));
                ours.insert(
                    (mode, policy.algorithm_name(), tasks),
                    (row.rate, row.p50_ms, row.commands, adjacent),
                );
                rows.push(row);
            }
        }
    }
    // The client library's own floor: the minimal script by EVALSHA on one
    // redis-rs multiplexed connection, as ratelimit-redis sends its own.
    for tasks in [1, 64] {
        rows.push(rt.block_on(raw_redis_rs(&server, tasks, measure)));
    }
    let (c50, p16) = (baseline_c50.rate_and_p50(), baseline_p16.rate_and_p50());
    rows.push(baseline_c1);
    rows.push(baseline_c50);
    rows.push(baseline_p16);

    println!("| run | decisions/s | × rb -c 50 | p50 ms | p99 ms | commands/decision | server µs/EVALSHA | server CPU |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let commands = row.commands.map_or("–".to_string(), |c| format!("{c:.2}"));
        println!(
            "| {} | {:.0} | {:.2} | {:.3} | {:.3} | {commands} | {:.2} | {:.0} % |",
            row.what,
            row.rate,
            row.rate / c50.0,
            row.p50_ms,
            row.p99_ms,
            row.script_us.unwrap_or(f64::NAN),
            row.redis_cpu.unwrap_or(f64::NAN) * 100.0,
        );
    }
    println!();
    println!("Goals (multiplexed, the default):");
    for policy in policies() {
        let name = policy.algorithm_name();
        let (_, p50_1, commands, c1) = ours[&(ConnectionMode::Multiplexed, name, 1)];
        let (rate_64, _, _, c50) = ours[&(ConnectionMode::Multiplexed, name, 64)];
        let (c1, c50) = (c1.unwrap_or_default(), c50.unwrap_or_default());
        let one = commands.is_some_and(|c| (c - 1.0).abs() < 0.01);
        let speed = rate_64 / c50.0;
        let latency = p50_1 / c1.1;
        println!(
            "- {name}: one command per decision: {}; 64 tasks = {rate_64:.0}/s = {speed:.2}× \
             rb -c 50 just before ({:.0}/s; goal ≥ 1.5): {}; 1 task p50 = {:.3} ms = \
             {latency:.2}× rb -c 1 just before ({:.3} ms; goal ≤ 1.2): {}",
            verdict(one),
            c50.0,
            verdict(speed >= 1.5),
            p50_1,
            c1.1,
            verdict(latency <= 1.2)
        );
    }
    println!("- (rb -c 50 -P 16: {:.0}/s, for scale)", p16.0);
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

impl Row {
    /// `(rate, p50_ms)`.
    fn rate_and_p50(&self) -> (f64, f64) {
        (self.rate, self.p50_ms)
    }
}

/// Limits far above what a run can take, so every decision is an admission.
fn policies() -> [Policy; 3] {
    [
        Policy::fixed_window(1_000_000, Duration::from_secs(60)).expect("valid"),
        Policy::sliding_window(1_000_000, Duration::from_secs(60)).expect("valid"),
        Policy::token_bucket(1_000_000, 1_000_000, Duration::from_secs(1)).expect("valid"),
    ]
}

async fn run(
    server: &RedisServer,
    policy: Policy,
    mode: ConnectionMode,
    tasks: usize,
    measure: Duration,
) -> Row {
    let mode_name = match mode {
        ConnectionMode::Pool => "pool",
        _ => "multiplexed",
    };
    let options = RedisOptions::standalone(server.url())
        .with_prefix(format!("bench-{mode_name}-{tasks}:"))
        .with_timeout(Duration::from_secs(2))
        .with_connection_mode(mode)
        .with_pool_size(std::num::NonZeroUsize::new(64).expect("64 is not zero"));
    let limiter = Arc::new(
        RedisLimiter::connect(policy, options)
            .await
            .expect("connect"),
    );
    let keys: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..KEYS)
            .map(|i| format!("user:{i}").into_bytes())
            .collect(),
    );

    // Warm up: connections, the pool, every key once.
    for key in keys.iter().take(KEYS / tasks.max(1)) {
        assert!(limiter.check_one(key).await.expect("warm-up").allowed);
    }
    let _ = server.cli(&["CONFIG", "RESETSTAT"]);
    let cpu_before = redis_cpu_seconds(server);

    let started = Instant::now();
    let deadline = started + measure;
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let limiter = Arc::clone(&limiter);
            let keys = Arc::clone(&keys);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut i = t * (KEYS / tasks.max(1));
                while Instant::now() < deadline {
                    let key = &keys[i % KEYS];
                    i += 1;
                    let at = Instant::now();
                    let d = limiter.check_one(key).await.expect("Redis decides");
                    latencies.push(at.elapsed());
                    assert!(d.allowed, "every decision is an admission");
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.await.expect("a bench task finishes"));
    }
    let elapsed = started.elapsed();
    let commands = client_commands(server);
    let redis_cpu = (redis_cpu_seconds(server) - cpu_before) / elapsed.as_secs_f64();
    let script_us = evalsha_usec_per_call(server);
    summarize(
        format!(
            "ratelimit-redis {} {mode_name}, {tasks} task{}",
            policy.algorithm_name(),
            if tasks == 1 { "" } else { "s" }
        ),
        latencies,
        elapsed,
        commands,
        redis_cpu,
        script_us,
    )
}

/// CPU seconds the server has used (user + system).
fn redis_cpu_seconds(server: &RedisServer) -> f64 {
    server
        .cli(&["INFO", "cpu"])
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            matches!(name, "used_cpu_sys" | "used_cpu_user")
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Server-side µs per EVALSHA (the script's own cost) since the last reset.
fn evalsha_usec_per_call(server: &RedisServer) -> f64 {
    server
        .cli(&["INFO", "commandstats"])
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
        .and_then(|l| {
            l.split(',')
                .find_map(|f| f.strip_prefix("usec_per_call="))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(f64::NAN)
}

/// The minimal script through redis-rs alone, `tasks` at a time.
async fn raw_redis_rs(server: &RedisServer, tasks: usize, measure: Duration) -> Row {
    let client = redis::Client::open(server.url()).expect("a valid URL");
    let connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let script = Arc::new(redis::Script::new(MINIMAL_SCRIPT));
    let _ = server.cli(&["CONFIG", "RESETSTAT"]);
    let cpu_before = redis_cpu_seconds(server);
    let started = Instant::now();
    let deadline = started + measure;
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let mut connection = connection.clone();
            let script = Arc::clone(&script);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut i = t * (KEYS / tasks.max(1));
                while Instant::now() < deadline {
                    let key = format!("raw:{}", i % KEYS);
                    i += 1;
                    let at = Instant::now();
                    let _: i64 = script
                        .key(key)
                        .invoke_async(&mut connection)
                        .await
                        .expect("Redis answers");
                    latencies.push(at.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.await.expect("a bench task finishes"));
    }
    let elapsed = started.elapsed();
    let redis_cpu = (redis_cpu_seconds(server) - cpu_before) / elapsed.as_secs_f64();
    let commands = client_commands(server);
    summarize(
        format!(
            "redis-rs alone, EVALSHA INCR+PEXPIRE, {tasks} task{}",
            if tasks == 1 { "" } else { "s" }
        ),
        latencies,
        elapsed,
        commands,
        redis_cpu,
        evalsha_usec_per_call(server),
    )
}

/// A row from the latencies of one run.
fn summarize(
    what: String,
    mut latencies: Vec<Duration>,
    elapsed: Duration,
    commands: f64,
    redis_cpu: f64,
    script_us: f64,
) -> Row {
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let decisions = latencies.len() as f64;
    Row {
        what,
        rate: decisions / elapsed.as_secs_f64(),
        p50_ms: pct(0.50).as_secs_f64() * 1e3,
        p99_ms: pct(0.99).as_secs_f64() * 1e3,
        commands: Some(commands / decisions),
        redis_cpu: Some(redis_cpu),
        script_us: Some(script_us),
    }
}

/// Client commands since the last `CONFIG RESETSTAT`.
fn client_commands(server: &RedisServer) -> f64 {
    server
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let calls: f64 = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            (!NOT_ROUND_TRIPS.contains(&name)).then_some(calls)
        })
        .sum()
}

/// `redis-benchmark` running EVALSHA of `INCR` + `PEXPIRE` on 10,000 keys.
fn redis_benchmark_row(server: &RedisServer, extra: &[&str], requests: u64) -> Row {
    let sha = server.cli(&["SCRIPT", "LOAD", MINIMAL_SCRIPT]);
    let _ = server.cli(&["CONFIG", "RESETSTAT"]);
    let cpu_before = redis_cpu_seconds(server);
    let started = Instant::now();
    let out = Command::new(redis_benchmark())
        .args(["-h", "127.0.0.1", "-p", &server.port().to_string()])
        .args(extra)
        .args([
            "-n",
            &requests.to_string(),
            "-r",
            &KEYS.to_string(),
            "--csv",
        ])
        .args(["EVALSHA", &sha, "1", "rb:__rand_int__"])
        .output()
        .expect("redis-benchmark runs");
    let redis_cpu = (redis_cpu_seconds(server) - cpu_before) / started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps","avg","min","p50","p95","p99","max"
    let line = text.lines().last().unwrap_or_default();
    let fields: Vec<f64> = line
        .split("\",\"")
        .skip(1)
        .filter_map(|f| f.trim_matches('"').parse().ok())
        .collect();
    assert!(
        fields.len() >= 6,
        "unexpected redis-benchmark output: {text}"
    );
    Row {
        what: format!("redis-benchmark EVALSHA INCR+PEXPIRE {}", extra.join(" ")),
        rate: fields[0],
        p50_ms: fields[3],
        p99_ms: fields[5],
        commands: None,
        redis_cpu: Some(redis_cpu),
        script_us: Some(evalsha_usec_per_call(server)),
    }
}
