//! Run with: cargo run -p ratelimit-axum-example
//!
//! Serves `POST /api/generate` on `127.0.0.1:3000`: five requests per 30 s
//! per client IP, answered by the offline model as an ai SDK v5 UI message
//! stream. `--config FILE` reads a TOML file (see
//! `ratelimit-axum-example.toml`); environment variables override it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use ratelimit_axum_example::{
    app, build_limiter, build_model, serve, AppOptions, BackendKind, Config, SecretUrl,
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
    if let Some(bind) = cli.bind {
        config.bind = bind;
    }
    if let Some(url) = cli.redis_url {
        config.backend.kind = BackendKind::Redis;
        config.backend.url = Some(url);
    }
    let options = AppOptions::from_config(&config).context("invalid configuration")?;
    let limiter = build_limiter(&config).await?;
    let model = build_model(&config)?;

    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    let addr = listener.local_addr()?;
    // Every secret in the model and the configuration prints as
    // `[redacted]`, so their Debug output is safe here.
    tracing::info!(
        %addr,
        policy = ?config.limit,
        backend = ?config.backend.kind,
        model = ?model,
        "listening; POST /api/generate"
    );
    let router = app(&options, limiter, model);
    serve(listener, router, &config.server, shutdown_signal()).await;
    tracing::info!("stopped");
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
