//! Reloading the gateway profile on SIGHUP and when its file changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use notify_debouncer_mini::{new_debouncer, notify::RecursiveMode, DebounceEventResult};

use super::Gateway;
use crate::Config;

/// How long the file must be quiet before a change is read: an editor's
/// save is often several writes (or a write and a rename).
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(300);

/// Reloads `gateway` from the file at `path` (and the environment, as at
/// start-up) on every SIGHUP and whenever the file changes (debounced by
/// [`RELOAD_DEBOUNCE`]), from tasks on the current runtime, for the life
/// of the process. A file that cannot be read or is invalid is rejected
/// with one ERROR log naming the file, line and field (never a value) and
/// the configuration in force keeps running; see [`Gateway::reload`] for
/// what a valid one changes.
///
/// The file's directory is watched rather than the file, so a file
/// replaced by a rename (how most editors and config managers save) is
/// still seen.
///
/// # Errors
///
/// When the watch or the signal handler cannot be set up.
pub fn spawn_reloader(gateway: Arc<Gateway>, path: PathBuf) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(1);
    let file_name = path.file_name().map(ToOwned::to_owned);
    let watched = tx.clone();
    let mut debouncer = new_debouncer(RELOAD_DEBOUNCE, move |events: DebounceEventResult| {
        let ours = match events {
            Ok(events) => events
                .iter()
                .any(|e| e.path.file_name() == file_name.as_deref()),
            Err(err) => {
                tracing::warn!(%err, "watching the configuration file failed");
                false
            }
        };
        // A reload already pending reads the newest file anyway.
        if ours {
            let _ = watched.try_send("file");
        }
    })
    .context("cannot watch the configuration file")?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    debouncer
        .watcher()
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", dir.display()))?;

    #[cfg(unix)]
    {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot listen for SIGHUP")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = tx.send("sighup").await;
            }
        });
    }
    tracing::info!(file = %path.display(), "reloading the gateway profile on SIGHUP and on change");
    tokio::spawn(async move {
        // Dropping the debouncer stops the watch: it lives as long as this
        // task, which lives as long as the process.
        let _debouncer = debouncer;
        while let Some(cause) = rx.recv().await {
            reload_from(&gateway, &path, cause).await;
        }
    });
    Ok(())
}

/// One reload: the file read, checked and swapped in, or rejected.
async fn reload_from(gateway: &Gateway, path: &Path, cause: &str) {
    let loaded = Config::load(Some(path)).and_then(|config| {
        if config.is_gateway() {
            Ok(config)
        } else {
            anyhow::bail!("the new file has no `[tiers.*]`: it is not a gateway profile")
        }
    });
    let result = match loaded {
        Ok(config) => gateway
            .reload(&config, cause)
            .await
            .context("invalid gateway profile"),
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        tracing::error!(
            cause,
            error = format!("{err:#}"),
            "configuration reload rejected; the configuration in force keeps running"
        );
    }
}
