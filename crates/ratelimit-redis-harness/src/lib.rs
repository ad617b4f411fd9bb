//! Private `redis-server` processes for the tests and benchmarks of
//! `ratelimit-redis`.
//!
//! Every server listens on a free loopback port, keeps its files in its own
//! temporary directory, persists nothing, and is killed when its handle is
//! dropped. Tests never touch a server they did not start.
//!
//! A missing `redis-server` (or `redis-cli`) binary is a loud panic that
//! says how to install it, never a silent skip: the project's test script
//! installs both with `apt-get install redis-server` (which also provides
//! `redis-cli` and `redis-benchmark`). `REDIS_SERVER_BIN`, `REDIS_CLI_BIN`
//! and `REDIS_BENCHMARK_BIN` override the binaries found on `PATH`.
//!
//! # Examples
//!
//! ```no_run
//! use ratelimit_redis_harness::RedisServer;
//!
//! let server = RedisServer::start();
//! assert_eq!(server.cli(&["PING"]), "PONG");
//! assert!(server.url().starts_with("redis://127.0.0.1:"));
//! ```

mod binaries;
mod cluster;
mod ports;
mod server;
mod tls;

pub use binaries::{redis_benchmark, redis_cli, redis_server};
pub use cluster::RedisCluster;
pub use ports::{free_port, free_port_with_bus};
pub use server::{BenchmarkSummary, RedisServer};
pub use tls::TestCertificates;
