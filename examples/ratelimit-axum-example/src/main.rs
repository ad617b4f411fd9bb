//! Run with: cargo run -p ratelimit-axum-example
//!
//! Serves `POST /api/generate` on `127.0.0.1:3000`: five requests per 30 s
//! per client IP, answered by the offline model as an ai SDK v5 UI message
//! stream. `--config FILE` reads a TOML file (see
//! `ratelimit-axum-example.toml`); environment variables override it.
//! `RATELIMIT_METRICS_BIND=127.0.0.1:9090` (or `[metrics] bind`) also
//! serves Prometheus metrics at `GET /metrics` there.
//!
//! `--config examples/ratelimit-axum-example/gateway.toml` runs the route
//! as an LLM gateway (API-key tiers; requests, tokens and streams checked
//! at once; SIGHUP or a change to the file reloads its tiers and keys
//! without resetting counters). `hash-key` prints the hash of an API key read from stdin,
//! for its `[[keys]]` entry.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ratelimit_axum_example::{
    app, build_backend, build_model, build_set_limiter_factory, gateway_app, gateway_metrics_app,
    install_recorder, metrics_app, serve, spawn_reloader, AppOptions, BackendKind, Config, Gateway,
    KeyHasher, SecretUrl, ServerConfig,
};
use tracing_subscriber::EnvFilter;

/// Command-line options; each overrides the file and the environment.
#[derive(Debug, Parser)]
#[command(version, about = "A rate-limited streaming generate endpoint")]
struct Cli {
    /// A TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The address to listen on (default 127.0.0.1:3000).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Count in Redis at this URL instead of in memory.
    #[arg(long)]
    redis_url: Option<SecretUrl>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prints the `[[keys]] hash` of an API key read from stdin (one line),
    /// keyed with `gateway.key_secret` or RATELIMIT_KEY_SECRET. The key is
    /// read from stdin so it stays out of the shell history and `ps`.
    HashKey,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The whole cause chain on one line, with no backtrace: a
            // start-up error is the operator's to fix, not a crash.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info")),
        )
        // Logs go to stderr, so stdout stays free for the program's output;
        // colours only on a terminal, so files and pipes stay plain.
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let cli = Cli::parse();
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(Command::HashKey) = cli.command {
        return hash_key(&config);
    }
    if let Some(bind) = cli.bind {
        config.bind = bind;
    }
    if let Some(url) = cli.redis_url {
        config.backend.kind = BackendKind::Redis;
        config.backend.url = Some(url);
    }
    let options = AppOptions::from_config(&config).context("invalid configuration")?;
    // Before the backend: its layers register their metrics as they are
    // built, with the recorder installed then.
    let recorder = match config.metrics.bind {
        Some(_) => Some(install_recorder()?),
        None => None,
    };
    let model = build_model(&config)?;

    // The gateway profile counts in set limiters of its own: the
    // single-policy backend is neither built nor connected.
    let (router, metrics_router) = if config.is_gateway() {
        let factory = build_set_limiter_factory(&config).context("invalid `[backend]`")?;
        let gateway = Arc::new(
            Gateway::from_config(&config, factory)
                .await
                .context("invalid gateway profile")?,
        );
        if let Some(path) = &cli.config {
            spawn_reloader(Arc::clone(&gateway), path.clone())?;
        }
        let router = gateway_app(&options, Arc::clone(&gateway), Arc::clone(&model));
        (router, recorder.map(gateway_metrics_app))
    } else {
        let backend = build_backend(&config).await?;
        let router = app(&options, backend.limiter(), Arc::clone(&model));
        (router, recorder.map(|handle| metrics_app(handle, backend)))
    };

    if let (Some(metrics_router), Some(bind)) = (metrics_router, config.metrics.bind) {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen for metrics on {bind}"))?;
        let url = format!("http://{}/metrics", listener.local_addr()?);
        tracing::info!(%url, "serving Prometheus metrics");
        // Its own few connections, with the public server's deadlines: a
        // scraper is one client, not a crowd.
        let server = ServerConfig {
            max_connections: std::num::NonZeroUsize::new(16).expect("16 is not zero"),
            ..config.server.clone()
        };
        // Ends with the process: metrics are worth serving until the last
        // in-flight request has finished.
        tokio::spawn(async move {
            serve(listener, metrics_router, &server, std::future::pending()).await;
        });
    }

    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    let addr = listener.local_addr()?;
    // Every secret in the model and the configuration prints as
    // `[redacted]`, so their Debug output is safe here.
    if config.is_gateway() {
        let tiers: Vec<&String> = config.tiers.keys().collect();
        tracing::info!(
            %addr,
            ?tiers,
            keys = config.keys.len(),
            backend = ?config.backend.kind,
            failure = %config.backend.failure,
            model = ?model,
            "listening; POST /api/generate as an LLM gateway (API-key tiers; requests, tokens \
             and streams checked at once)"
        );
    } else {
        tracing::info!(
            %addr,
            policy = ?config.limit,
            backend = ?config.backend.kind,
            failure = %config.backend.failure,
            model = ?model,
            "listening; POST /api/generate"
        );
    }
    serve(listener, router, &config.server, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// `hash-key`: one line from stdin, hashed, printed in hex.
fn hash_key(config: &Config) -> anyhow::Result<()> {
    use std::io::{BufRead as _, Write as _};
    let secret = config.gateway.key_secret.clone().context(
        "hash-key needs the key secret: `gateway.key_secret` in --config, or RATELIMIT_KEY_SECRET",
    )?;
    let hasher = KeyHasher::new(secret)?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the key from stdin")?;
    let key = line.trim_end_matches(['\n', '\r']);
    if key.is_empty() {
        anyhow::bail!("no key on stdin");
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", hasher.hex(key.as_bytes()))?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM; the server then stops accepting and
/// gives in-flight responses, streams included, `server.shutdown_grace`
/// to finish.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down; letting in-flight requests finish");
}
