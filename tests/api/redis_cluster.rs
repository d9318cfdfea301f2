//! A real Redis Cluster for one test: three masters, each with a replica, started from the
//! `redis-server` and `redis-cli` on `PATH` on free loopback ports, in a directory of its own,
//! and stopped when dropped.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How long a master may be silent before its replica takes over (redis.conf's default is
/// 15 s): long enough that a busy test machine does not fail a master over by itself.
const NODE_TIMEOUT_MS: u64 = 5000;
/// The same, for a test that kills a master: short, so the failover completes within it.
pub const QUICK_NODE_TIMEOUT_MS: u64 = 1000;

pub struct RedisCluster {
    servers: Vec<(u16, Child)>,
    _dir: tempfile::TempDir,
}

/// A port that is free, and whose cluster bus port (the port + 10000) is free too.
fn free_port_pair(taken: &[u16]) -> u16 {
    for _ in 0..1000 {
        let Ok(listener) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let port = listener.local_addr().unwrap().port();
        if port > 55_535 || taken.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free pair of loopback ports for a Redis Cluster node");
}

fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli runs (install redis-tools, or run scripts/test)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits (at most 30 s) until `ready` holds, polling every 50 ms.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "Redis Cluster: timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts one cluster node on `port`; `None` when it exits at once (the port was taken after
/// it was found free).
fn start_node(dir: &std::path::Path, port: u16, node_timeout_ms: u64) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        .args(["--cluster-node-timeout", &node_timeout_ms.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--logfile", &format!("redis-{port}.log")])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server starts (install redis-server, or run scripts/test)");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        if cli(port, &["PING"]).trim() == "PONG" {
            return Some(child);
        }
        assert!(
            Instant::now() < deadline,
            "redis-server on {port} never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl RedisCluster {
    /// Starts six nodes and joins them into a cluster whose slots are all served.
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(NODE_TIMEOUT_MS)
    }

    /// [`RedisCluster::start`], with masters failed over after `node_timeout_ms` of silence.
    pub fn start_with(node_timeout_ms: u64) -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut servers = Vec::new();
        let mut ports = Vec::new();
        while servers.len() < 6 {
            assert!(
                ports.len() < 30,
                "redis-server keeps exiting at start; its last log:\n{}",
                std::fs::read_to_string(
                    dir.path()
                        .join(format!("redis-{}.log", ports.last().copied().unwrap_or(0)))
                )
                .unwrap_or_default()
            );
            let port = free_port_pair(&ports);
            ports.push(port);
            if let Some(child) = start_node(dir.path(), port, node_timeout_ms) {
                servers.push((port, child));
            }
        }
        let ports: Vec<u16> = servers.iter().map(|(port, _)| *port).collect();
        let cluster = RedisCluster { servers, _dir: dir };
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        for &port in &ports {
            wait_for("every node to see every slot served", || {
                cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        // Replicas must be attached and synchronised before one can take over.
        wait_for("the replicas to synchronise", || {
            let nodes = cluster.nodes();
            let replicas: Vec<&ClusterNode> = nodes.iter().filter(|n| !n.master).collect();
            replicas.len() == 3
                && replicas.iter().all(|n| {
                    cli(n.port, &["INFO", "replication"]).contains("master_link_status:up")
                })
        });
        cluster
    }

    /// The cluster's nodes as a `REDIS_URL`: comma-separated seeds.
    pub fn url(&self) -> String {
        self.servers
            .iter()
            .map(|(port, _)| format!("redis://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes as one living node sees them.
    fn nodes(&self) -> Vec<ClusterNode> {
        let port = self.living_port();
        cli(port, &["CLUSTER", "NODES"])
            .lines()
            .filter_map(ClusterNode::parse)
            .collect()
    }

    fn living_port(&self) -> u16 {
        self.servers
            .iter()
            .map(|(port, _)| *port)
            .find(|&port| cli(port, &["PING"]).trim() == "PONG")
            .expect("a living Redis Cluster node")
    }

    /// The port of the master that serves `key`'s slot now.
    pub fn master_of(&self, key: &str) -> u16 {
        let slot: u16 = cli(self.living_port(), &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap();
        self.nodes()
            .into_iter()
            .find(|n| n.master && !n.failed && n.slots.iter().any(|r| r.contains(&slot)))
            .map(|n| n.port)
            .expect("a master for the slot")
    }

    /// Kills the master serving `key`'s slot (SIGKILL) and waits until its replica has taken
    /// over and every living node sees the slots served again. Returns the new master's port.
    pub fn kill_master_of(&mut self, key: &str) -> u16 {
        let victim = self.master_of(key);
        let (_, child) = self
            .servers
            .iter_mut()
            .find(|(port, _)| *port == victim)
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        wait_for("a replica to take over", || {
            self.nodes()
                .iter()
                .any(|n| n.master && !n.failed && n.port != victim && n.serves_slot_of(key, self))
        });
        let living: Vec<u16> = self
            .servers
            .iter()
            .map(|(port, _)| *port)
            .filter(|&port| port != victim)
            .collect();
        for port in living {
            wait_for("the cluster to be whole again", || {
                cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        self.master_of(key)
    }

    /// Makes the replica of the master serving `key`'s slot take over, as an operator does
    /// (`CLUSTER FAILOVER`: the master stops, its replica catches up and is promoted, and the old
    /// master becomes its replica). Returns the new master's port.
    pub fn fail_over_to_replica_of(&self, key: &str) -> u16 {
        let master = self.master_of(key);
        let master_id = cli(master, &["CLUSTER", "MYID"]).trim().to_owned();
        let replica = cli(master, &["CLUSTER", "NODES"])
            .lines()
            .find(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                fields.get(3) == Some(&master_id.as_str()) && !fields[2].contains("fail")
            })
            .and_then(ClusterNode::parse)
            .expect("the master has a replica")
            .port;
        assert_eq!(cli(replica, &["CLUSTER", "FAILOVER"]).trim(), "OK");
        wait_for("the replica to take over", || {
            self.master_of(key) == replica
        });
        replica
    }

    /// How many clients are subscribed to the sharded channel on all living nodes together (a
    /// replica serves its master's sharded channels too).
    pub fn shard_subscribers_anywhere(&self, channel: &str) -> i64 {
        self.servers
            .iter()
            .map(|(port, _)| *port)
            .filter(|&port| cli(port, &["PING"]).trim() == "PONG")
            .map(|port| self.shard_subscribers(port, channel))
            .sum()
    }

    /// How many clients the node at `port` has subscribed to the sharded channel.
    pub fn shard_subscribers(&self, port: u16, channel: &str) -> i64 {
        cli(port, &["PUBSUB", "SHARDNUMSUB", channel])
            .lines()
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One line of `CLUSTER NODES`.
struct ClusterNode {
    port: u16,
    master: bool,
    failed: bool,
    slots: Vec<std::ops::RangeInclusive<u16>>,
}

impl ClusterNode {
    fn parse(line: &str) -> Option<ClusterNode> {
        let fields: Vec<&str> = line.split(' ').collect();
        let address = fields.get(1)?.split('@').next()?;
        let port = address.rsplit(':').next()?.parse().ok()?;
        let flags = fields.get(2)?;
        let slots = fields
            .iter()
            .skip(8)
            .filter(|f| !f.starts_with('['))
            .filter_map(|range| {
                let (start, end) = range.split_once('-').unwrap_or((range, range));
                Some(start.parse().ok()?..=end.parse().ok()?)
            })
            .collect();
        Some(ClusterNode {
            port,
            master: flags.contains("master"),
            failed: flags.contains("fail"),
            slots,
        })
    }

    fn serves_slot_of(&self, key: &str, cluster: &RedisCluster) -> bool {
        let slot: u16 = cli(cluster.living_port(), &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap_or(u16::MAX);
        self.slots.iter().any(|r| r.contains(&slot))
    }
}
