//! The connection to Redis: multiplexed, pooled, or to a cluster.

use std::time::Duration;

#[cfg(feature = "pool")]
use deadpool_redis::{Manager, Pool, Runtime};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
#[cfg(feature = "pool")]
use redis::AsyncConnectionConfig;
use redis::{Client, Cmd, FromRedisValue, RedisError, Script, ScriptInvocation, Value};

use crate::connect_error::{classify, invalid_config, redact};
use crate::options::{ConnectionMode, RedisOptions, Target};
use crate::ConnectError;

/// One handle to Redis, cheap to clone per call. Each reconnects on its
/// own: the connection manager and the cluster connection re-dial after a
/// dropped connection; the pool (feature `pool`) discards connections that
/// fail their recycle `PING`.
#[derive(Clone)]
pub(crate) enum Connection {
    Multiplexed(ConnectionManager),
    #[cfg(feature = "pool")]
    Pool(Pool),
    Cluster(ClusterConnection),
}

/// Either a Redis error or a pool error, as a limiter error's cause.
pub(crate) type CallError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl Connection {
    /// Connects as `options` say and checks the server is what they name,
    /// with every step bounded by `deadline`; loads the function `library`
    /// if given, else (or when the server refuses it) `script`. With it:
    /// whether the server took the library (`false` when it answered with
    /// an error: an older Redis, an ACL without `FUNCTION LOAD`, a proxy
    /// that does not pass it on; logged at INFO, and the script is called
    /// instead).
    pub(crate) async fn open(
        options: &RedisOptions,
        script: &Script,
        library: Option<&str>,
        deadline: Duration,
    ) -> Result<(Self, bool), ConnectError> {
        let timeout = options.timeout;
        let connection = match (&options.target, options.connection) {
            (Target::Standalone(url), ConnectionMode::Multiplexed) => {
                let client = Client::open(url.as_str()).map_err(|e| invalid_config(url, e))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    // Retrying inside the manager would make a caller wait
                    // several timeouts; the breaker does the retrying.
                    .set_number_of_retries(0);
                let manager = bounded(
                    url,
                    deadline,
                    ConnectionManager::new_with_config(client, config),
                )
                .await?;
                Self::Multiplexed(manager)
            }
            #[cfg(feature = "pool")]
            (Target::Standalone(url), ConnectionMode::Pool) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                let manager = Manager::new_with_config(url.as_str(), config)
                    .map_err(|e| invalid_config(url, e))?;
                let pool = Pool::builder(manager)
                    .max_size(options.pool_size.get())
                    .runtime(Runtime::Tokio1)
                    .wait_timeout(Some(timeout))
                    .create_timeout(Some(timeout))
                    .recycle_timeout(Some(timeout))
                    .build()
                    .map_err(|e| invalid_config(url, e))?;
                Self::Pool(pool)
            }
            (Target::Cluster(urls), _) => {
                let shown = urls
                    .iter()
                    .map(|u| redact(u))
                    .collect::<Vec<_>>()
                    .join(", ");
                let client = ClusterClient::builder(urls.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .build()
                    .map_err(|e| invalid_config(&shown, e))?;
                let connection = bounded(&shown, deadline, client.get_async_connection()).await?;
                Self::Cluster(connection)
            }
        };
        let place = match &options.target {
            Target::Standalone(url) => redact(url),
            Target::Cluster(urls) => urls
                .iter()
                .map(|u| redact(u))
                .collect::<Vec<_>>()
                .join(", "),
        };
        if let Target::Standalone(_) = options.target {
            let info: String = bounded(
                &place,
                deadline,
                connection.query(redis::cmd("INFO").arg("cluster")),
            )
            .await?;
            if info.contains("cluster_enabled:1") {
                return Err(ConnectError::new(
                    crate::ConnectErrorKind::IsACluster,
                    format!(
                        "{place} is a Redis Cluster node: configure it under `cluster` \
                         (a list of node URLs), not `url`"
                    ),
                ));
            }
        }
        // The library first, where asked for: the code is then never called
        // as a script, so the script is loaded only when the library is
        // not taken.
        let functions = match library {
            None => false,
            Some(code) => match tokio::time::timeout(deadline, connection.load_library(code)).await
            {
                Ok(Ok(())) => true,
                Ok(Err(e)) if matches!(e.kind(), redis::ErrorKind::Server(_)) => {
                    tracing::info!(
                        error = %e,
                        "{place} refused to load the limiter's function library; \
                         its Lua code runs as a script (EVALSHA) instead"
                    );
                    false
                }
                Ok(Err(e)) => return Err(classify(&place, e)),
                Err(_) => return Err(timed_out(&place, deadline)),
            },
        };
        if !functions {
            // Loading the script up front checks that scripting works here
            // and saves the first call its NOSCRIPT round trip.
            bounded(&place, deadline, connection.load(script)).await?;
        }
        Ok((connection, functions))
    }

    /// Runs `invocation`, redis-rs's script call: `EVALSHA`, and on
    /// `NOSCRIPT` (a restarted server, `SCRIPT FLUSH`) `SCRIPT LOAD` and the
    /// call again, on the same connection.
    pub(crate) async fn invoke(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<Value, RedisError> {
        match self {
            Self::Multiplexed(m) => invocation.invoke_async(&mut m.clone()).await,
            Self::Cluster(c) => invocation.invoke_async(&mut c.clone()).await,
            #[cfg(feature = "pool")]
            Self::Pool(pool) => {
                let mut c = pool.get().await.map_err(pool_error)?;
                invocation.invoke_async(&mut c).await
            }
        }
    }

    /// Loads (or replaces) a Redis function library: on a cluster, on
    /// every primary.
    pub(crate) async fn load_library(&self, code: &str) -> Result<(), RedisError> {
        self.query::<Value>(redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(code))
            .await
            .map(drop)
    }

    /// Runs `fcall`, an `FCALL` of a function of the library `code`; when
    /// the server lost the library since it was loaded (a restart without
    /// persistence, `FUNCTION FLUSH`), loads it and runs `fcall` again, as
    /// redis-rs does for a script on `NOSCRIPT`.
    pub(crate) async fn fcall(&self, fcall: &Cmd, code: &str) -> Result<Value, RedisError> {
        match self.query(fcall).await {
            Err(e)
                if e.detail()
                    .is_some_and(|d| d.starts_with("Function not found")) =>
            {
                self.load_library(code).await?;
                self.query(fcall).await
            }
            reply => reply,
        }
    }

    /// Deletes one key.
    pub(crate) async fn del(&self, key: &[u8]) -> Result<(), CallError> {
        Ok(self.query(redis::cmd("DEL").arg(key)).await?)
    }

    /// Deletes keys of one hash slot, in one command.
    pub(crate) async fn del_all(&self, keys: &[Vec<u8>]) -> Result<(), CallError> {
        Ok(self.query(redis::cmd("DEL").arg(keys)).await?)
    }

    /// Runs one command.
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisError> {
        match self {
            Self::Multiplexed(m) => cmd.query_async(&mut m.clone()).await,
            Self::Cluster(c) => cmd.query_async(&mut c.clone()).await,
            #[cfg(feature = "pool")]
            Self::Pool(pool) => {
                let mut c = pool.get().await.map_err(pool_error)?;
                cmd.query_async(&mut c).await
            }
        }
    }

    async fn load(&self, script: &Script) -> Result<(), RedisError> {
        match self {
            Self::Multiplexed(m) => script.load_async(&mut m.clone()).await?,
            Self::Cluster(c) => script.load_async(&mut c.clone()).await?,
            #[cfg(feature = "pool")]
            Self::Pool(pool) => {
                let mut c = pool.get().await.map_err(pool_error)?;
                script.load_async(&mut c).await?
            }
        };
        Ok(())
    }
}

/// A pool error as a Redis error, keeping the Redis error when there is one.
#[cfg(feature = "pool")]
fn pool_error(e: deadpool_redis::PoolError) -> RedisError {
    match e {
        deadpool_redis::PoolError::Backend(e) => e,
        other => RedisError::from((redis::ErrorKind::Io, "connection pool", other.to_string())),
    }
}

/// `fut` within `deadline`, its error classified for `place`.
async fn bounded<T>(
    place: &str,
    deadline: Duration,
    fut: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, ConnectError> {
    match tokio::time::timeout(deadline, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(classify(place, e)),
        Err(_) => Err(timed_out(place, deadline)),
    }
}

/// The error of a step `place` did not answer within `deadline`.
fn timed_out(place: &str, deadline: Duration) -> ConnectError {
    ConnectError::new(
        crate::ConnectErrorKind::Timeout,
        format!(
            "Redis at {} did not answer within {deadline:?}; check the host and port",
            redact(place)
        ),
    )
}
