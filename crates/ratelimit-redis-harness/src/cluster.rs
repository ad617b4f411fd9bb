//! A private Redis Cluster: three masters, three replicas.

use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::server::cli;
use crate::{free_port_with_bus, redis_cli, RedisServer};

/// How long the cluster may take to form, or to fail over.
const DEADLINE: Duration = Duration::from_secs(30);

/// A Redis Cluster of three masters and three replicas on loopback, each
/// node a [`RedisServer`]; all killed on drop.
///
/// The node timeout is one second, so a killed master's replica takes over
/// within a few seconds.
///
/// # Examples
///
/// ```no_run
/// use ratelimit_redis_harness::RedisCluster;
///
/// let mut cluster = RedisCluster::start();
/// assert_eq!(cluster.urls().len(), 6);
/// let master = cluster.masters()[0];
/// cluster.kill_master(master);
/// assert_eq!(cluster.masters().len(), 3, "a replica took over");
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six nodes, joins them with `redis-cli --cluster create
    /// --cluster-replicas 1`, and waits until every node reports
    /// `cluster_state:ok` and every replica is in sync.
    ///
    /// # Panics
    ///
    /// When a binary is missing or the cluster does not form in time.
    #[must_use]
    pub fn start() -> Self {
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1000",
            // Any replica may take over, however long it was disconnected.
            "--cluster-replica-validity-factor",
            "0",
        ];
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| RedisServer::start_on(free_port_with_bus(), &args))
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new(redis_cli())
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli --cluster create: {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_until("the cluster to form", || {
            cluster.all_ok() && cluster.masters().len() == 3 && cluster.replicas_in_sync()
        });
        cluster
    }

    /// The URLs of all six nodes.
    #[must_use]
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes, by index.
    #[must_use]
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Indices of the running nodes that are masters now.
    #[must_use]
    pub fn masters(&self) -> Vec<usize> {
        self.running()
            .filter(|(_, n)| n.cli(&["ROLE"]).lines().next() == Some("master"))
            .map(|(i, _)| i)
            .collect()
    }

    /// Kills master `index` and waits until the others have noticed, one of
    /// its replicas has taken over, and the cluster is whole again.
    ///
    /// # Panics
    ///
    /// When `index` is not a running master or the failover does not
    /// complete in time.
    pub fn kill_master(&mut self, index: usize) {
        assert!(
            self.masters().contains(&index),
            "node {index} is not a running master"
        );
        let id = self.nodes[index].cli(&["CLUSTER", "MYID"]);
        // Replication is asynchronous: wait until the replicas have every
        // write, so that what a test sees after the failover is the
        // client's doing, not a lost write.
        self.wait_until("the replicas to catch up", || {
            replicas_caught_up(&self.nodes[index].cli(&["INFO", "replication"]))
        });
        self.nodes[index].stop();
        self.wait_until("the killed master to be replaced", || {
            let seen_failed = self.running().all(|(_, n)| {
                n.cli(&["CLUSTER", "NODES"])
                    .lines()
                    .any(|l| l.starts_with(&id) && l.contains("fail") && !l.contains("fail?"))
            });
            seen_failed && self.all_ok() && self.masters().len() == 3
        });
    }

    /// Runs `redis-cli` against node `index`.
    ///
    /// # Panics
    ///
    /// When `redis-cli` cannot be run.
    #[must_use]
    pub fn cli(&self, index: usize, args: &[&str]) -> String {
        cli(self.nodes[index].port(), args)
    }

    fn running(&self) -> impl Iterator<Item = (usize, &RedisServer)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_running())
    }

    fn all_ok(&self) -> bool {
        self.running()
            .all(|(_, n)| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
    }

    fn replicas_in_sync(&self) -> bool {
        self.running().all(|(_, n)| {
            let info = n.cli(&["INFO", "replication"]);
            info.contains("role:master") || info.contains("master_link_status:up")
        })
    }

    fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out after {DEADLINE:?} waiting for {what}; nodes:\n{}",
                self.running()
                    .next()
                    .map(|(_, n)| n.cli(&["CLUSTER", "NODES"]))
                    .unwrap_or_default()
            );
            sleep(Duration::from_millis(100));
        }
    }
}

/// Whether a master's `INFO replication` shows at least one replica, every
/// replica at the master's offset.
fn replicas_caught_up(info: &str) -> bool {
    let field = |line: &str, name: &str| -> Option<u64> {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    let Some(offset) = info
        .lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return false;
    };
    let replicas: Vec<Option<u64>> = info
        .lines()
        .filter(|l| l.starts_with("slave") && l.contains("offset="))
        .map(|l| field(l, "offset="))
        .collect();
    !replicas.is_empty() && replicas.iter().all(|o| *o == Some(offset))
}
