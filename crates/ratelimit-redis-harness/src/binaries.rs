//! Where the Redis binaries are, or a loud failure that says how to get them.

use std::path::PathBuf;
use std::process::Command;

/// The `redis-server` binary: `$REDIS_SERVER_BIN`, else `redis-server` on
/// `PATH`.
///
/// # Panics
///
/// When it cannot be run, with the command that installs it.
#[must_use]
pub fn redis_server() -> PathBuf {
    find("REDIS_SERVER_BIN", "redis-server")
}

/// The `redis-cli` binary: `$REDIS_CLI_BIN`, else `redis-cli` on `PATH`.
///
/// # Panics
///
/// When it cannot be run, with the command that installs it.
#[must_use]
pub fn redis_cli() -> PathBuf {
    find("REDIS_CLI_BIN", "redis-cli")
}

/// The `redis-benchmark` binary: `$REDIS_BENCHMARK_BIN`, else
/// `redis-benchmark` on `PATH`.
///
/// # Panics
///
/// When it cannot be run, with the command that installs it.
#[must_use]
pub fn redis_benchmark() -> PathBuf {
    find("REDIS_BENCHMARK_BIN", "redis-benchmark")
}

fn find(var: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(name), PathBuf::from);
    match Command::new(&path).arg("--version").output() {
        Ok(out) if out.status.success() => path,
        Ok(out) => panic!(
            "`{} --version` failed ({}): the Redis tests need a working {name}; \
             install it with `sudo apt-get install -y redis-server` or set {var}",
            path.display(),
            out.status
        ),
        Err(e) => panic!(
            "cannot run `{}` ({e}): the Redis tests start private Redis servers and \
             need {name}; install it with `sudo apt-get install -y redis-server` \
             (provides redis-server, redis-cli and redis-benchmark) or set {var}",
            path.display()
        ),
    }
}
