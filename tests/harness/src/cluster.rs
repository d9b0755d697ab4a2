//! A real Redis Cluster: six redis-server processes (3 masters, 3 replicas) with a short
//! node timeout, joined by `redis-cli --cluster create`, stopped when dropped.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::RedisServer;

/// Node timeout: failover of a killed master takes a few times this.
pub const NODE_TIMEOUT_MS: u64 = 1000;

pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

/// A port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = l.local_addr().expect("addr").port();
        if p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let timeout = NODE_TIMEOUT_MS.to_string();
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::start_on(
                    cluster_port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        &timeout,
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok(Duration::from_secs(20));
        cluster.wait_for_replicas(Duration::from_secs(30));
        cluster
    }

    /// Seed URLs for a client.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// Wait until every running node reports cluster_state:ok and all slots are served.
    pub fn wait_until_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let ok = self.nodes.iter().all(|n| {
                n.command(&["CLUSTER", "INFO"])
                    .map(|i| i.contains("cluster_state:ok") && i.contains("cluster_slots_ok:16384"))
                    .unwrap_or(true)
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("cluster did not reach cluster_state:ok within {within:?}");
    }

    /// Wait until every replica has finished its initial sync: a replica that never synced is
    /// not allowed to take over, and a failover test would see the cluster go down instead.
    pub fn wait_for_replicas(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let synced = self.nodes.iter().all(|n| {
                let info = n.command(&["INFO", "replication"]).unwrap_or_default();
                info.contains("role:master") || info.contains("master_link_status:up")
            });
            let replicas = self
                .nodes
                .iter()
                .filter(|n| n.command(&["INFO", "replication"]).unwrap_or_default().contains("role:slave"))
                .count();
            if synced && replicas == 3 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("replicas did not sync within {within:?}");
    }

    /// Wait until the replicas of node `master` hold everything it has written so far.
    /// Replication is asynchronous: a master killed before its replicas caught up takes its last
    /// writes with it, and a failover test would see counts vanish for a reason it does not test.
    pub fn wait_for_replication(&self, master: usize, within: Duration) {
        let field = |info: &str, key: &str| {
            info.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse::<u64>().ok())
        };
        let info = self.nodes[master].command(&["INFO", "replication"]).expect("the master answers");
        let written = field(&info, "master_repl_offset:").expect("master_repl_offset in INFO replication");
        // "slave0:ip=127.0.0.1,port=7001,state=online,offset=...,lag=0"
        let replicas: Vec<u16> = info
            .lines()
            .filter(|l| l.starts_with("slave"))
            .filter_map(|l| l.split(',').find_map(|kv| kv.strip_prefix("port="))?.parse().ok())
            .collect();
        assert!(!replicas.is_empty(), "node {master} has no replica: {info}");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let caught_up = replicas.iter().all(|port| {
                self.nodes
                    .iter()
                    .find(|n| n.port() == *port)
                    .and_then(|n| n.command(&["INFO", "replication"]).ok())
                    .and_then(|i| field(&i, "slave_repl_offset:"))
                    .is_some_and(|applied| applied >= written)
            });
            if caught_up {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the replicas of node {master} did not reach offset {written} within {within:?}");
    }

    /// Index of the node that is master for `slot` now.
    pub fn master_for_slot(&self, slot: u16) -> usize {
        for n in &self.nodes {
            let Ok(text) = n.command(&["CLUSTER", "NODES"]) else { continue };
            for line in text.lines() {
                let f: Vec<&str> = line.split(' ').collect();
                if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                    continue;
                }
                let serves = f[8..].iter().any(|r| match r.split_once('-') {
                    Some((a, b)) => {
                        a.parse::<u16>().is_ok_and(|a| a <= slot) && b.parse::<u16>().is_ok_and(|b| slot <= b)
                    }
                    None => r.parse::<u16>() == Ok(slot),
                });
                if serves {
                    let port: u16 = f[1].split([':', '@']).nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
                    if let Some(i) = self.nodes.iter().position(|n| n.port() == port) {
                        return i;
                    }
                }
            }
        }
        panic!("no master serves slot {slot}");
    }
}
