//! Upstream: the per-core cluster manager (hosts, load balancer state, stats)
//! that tcp_proxy and the router pick endpoints from, and the connector that
//! opens connections to them.

pub mod connector;
pub mod lb;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::config::{ClusterId, Snapshot};
use crate::stats::{Counter, Gauge, Shard, StatKey};
use lb::LoadBalancer;

pub use connector::{UpstreamError, connect};

/// One core's view of every cluster in a snapshot. Built when the worker
/// installs the snapshot; `!Send` by design.
pub struct ClusterManager {
    clusters: Vec<Rc<Cluster>>,
}

impl ClusterManager {
    pub fn new(snapshot: &Snapshot, shard: &Shard, seed: u64) -> Self {
        let clusters = snapshot
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let hosts: Vec<Host> = c
                    .endpoints
                    .iter()
                    .map(|e| Host { addr: e.addr, weight: e.weight, stats: HostStats::new(shard, &c.name, e.addr) })
                    .collect();
                let weights: Vec<u32> = hosts.iter().map(|h| h.weight).collect();
                Rc::new(Cluster {
                    name: c.name.clone(),
                    connect_timeout: c.connect_timeout,
                    buffer_limit: c.buffer_limit,
                    lb: LoadBalancer::new(c.lb, &weights, seed.wrapping_add(i as u64)),
                    hosts,
                    stats: ClusterStats::new(shard, &c.name),
                })
            })
            .collect();
        ClusterManager { clusters }
    }

    pub fn get(&self, id: ClusterId) -> &Rc<Cluster> {
        &self.clusters[id.0]
    }
}

pub struct Cluster {
    pub name: String,
    pub connect_timeout: Duration,
    pub buffer_limit: usize,
    pub hosts: Vec<Host>,
    lb: LoadBalancer,
    pub stats: ClusterStats,
}

impl Cluster {
    /// The host the next connection should go to.
    pub fn pick(&self) -> Option<&Host> {
        self.lb.pick().and_then(|i| self.hosts.get(i))
    }
}

pub struct Host {
    pub addr: SocketAddr,
    pub weight: u32,
    pub stats: HostStats,
}

/// Envoy's `cluster.<name>.*` stats that the L4 path writes.
pub struct ClusterStats {
    pub upstream_cx_total: Counter,
    pub upstream_cx_active: Gauge,
    pub upstream_cx_connect_fail: Counter,
    pub upstream_cx_connect_timeout: Counter,
    pub upstream_cx_connect_attempts_exceeded: Counter,
    pub upstream_cx_none_healthy: Counter,
    pub upstream_cx_destroy: Counter,
    pub upstream_cx_tx_bytes_total: Counter,
    pub upstream_cx_rx_bytes_total: Counter,
}

impl ClusterStats {
    fn new(shard: &Shard, cluster: &str) -> Self {
        let c = |stat: &str| shard.counter(StatKey::cluster(cluster, stat));
        let g = |stat: &str| shard.gauge(StatKey::cluster(cluster, stat));
        ClusterStats {
            upstream_cx_total: c("upstream_cx_total"),
            upstream_cx_active: g("upstream_cx_active"),
            upstream_cx_connect_fail: c("upstream_cx_connect_fail"),
            upstream_cx_connect_timeout: c("upstream_cx_connect_timeout"),
            upstream_cx_connect_attempts_exceeded: c("upstream_cx_connect_attempts_exceeded"),
            upstream_cx_none_healthy: c("upstream_cx_none_healthy"),
            upstream_cx_destroy: c("upstream_cx_destroy"),
            upstream_cx_tx_bytes_total: c("upstream_cx_tx_bytes_total"),
            upstream_cx_rx_bytes_total: c("upstream_cx_rx_bytes_total"),
        }
    }
}

/// Per-host stats, shown by `/clusters` as `cluster::host:port::cx_active::N`.
pub struct HostStats {
    pub cx_total: Counter,
    pub cx_active: Gauge,
    pub cx_connect_fail: Counter,
}

impl HostStats {
    fn new(shard: &Shard, cluster: &str, addr: SocketAddr) -> Self {
        HostStats {
            cx_total: shard.host_counter(cluster, addr, "cx_total"),
            cx_active: shard.host_gauge(cluster, addr, "cx_active"),
            cx_connect_fail: shard.host_counter(cluster, addr, "cx_connect_fail"),
        }
    }
}
