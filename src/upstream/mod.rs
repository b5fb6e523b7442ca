//! Upstream: the per-core cluster manager (hosts, load balancer state, stats)
//! that tcp_proxy and the router pick endpoints from, and the connector that
//! opens connections to them.

pub mod connector;
pub mod lb;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use std::time::{Duration, Instant};

use crate::config::{ClusterId, Snapshot, UpstreamHttpConfig};
use crate::stats::{Counter, Gauge, Histogram, Shard, StatKey};
use lb::LoadBalancer;

pub use connector::{UpstreamError, connect};

/// One core's view of every cluster in a snapshot. Built when the worker
/// installs the snapshot; `!Send` by design.
pub struct ClusterManager {
    clusters: Vec<Rc<Cluster>>,
}

impl ClusterManager {
    pub fn new(snapshot: &Snapshot, shard: &Arc<Shard>, seed: u64) -> Self {
        let clusters = snapshot
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let hosts: Vec<Host> = c
                    .endpoints
                    .iter()
                    .map(|e| Host {
                        addr: e.addr,
                        hostname: e.hostname.clone(),
                        weight: e.weight,
                        stats: HostStats::new(shard, &c.name, e.addr),
                        idle: RefCell::new(Vec::new()),
                        limits: c.http,
                    })
                    .collect();
                let weights: Vec<u32> = hosts.iter().map(|h| h.weight).collect();
                let tls = c.tls.clone().map(|ctx| {
                    let stats = crate::tls::TlsStats::new(shard, |stat| StatKey::cluster(&c.name, stat));
                    (ctx, stats)
                });
                Rc::new(Cluster {
                    tls,
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

    /// Closes expired pooled connections of every cluster (the worker's
    /// periodic tick), so an idle pool does not hold descriptors forever.
    pub fn sweep_pools(&self) {
        let now = Instant::now();
        for c in &self.clusters {
            for h in &c.hosts {
                h.sweep(now, &c.stats);
            }
        }
    }
}

pub struct Cluster {
    pub name: String,
    /// Connections to the hosts speak TLS, with these settings and stats.
    pub tls: Option<(Arc<crate::tls::ClientContext>, crate::tls::TlsStats)>,
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
    /// The DNS name the address came from (STRICT_DNS), for auto_host_rewrite.
    pub hostname: Option<String>,
    pub weight: u32,
    pub stats: HostStats,
    /// This core's idle keep-alive connections to the host (HTTP/1.1),
    /// each with when it was put back; the most recent last.
    idle: RefCell<Vec<(UpstreamConn, Instant)>>,
    limits: UpstreamHttpConfig,
}

/// An HTTP upstream connection. It counts in the cluster's and the host's
/// `cx_active` for as long as it lives, pooled or in use, and in
/// `upstream_cx_destroy` when it closes.
pub struct UpstreamConn {
    pub stream: crate::tls::Conn,
    /// Buffers that live as long as the connection, so a pooled connection
    /// carries a request without allocating: heads are written from
    /// `write_buf`, responses read into `read_buf`.
    pub write_buf: Vec<u8>,
    pub read_buf: Vec<u8>,
    guard: ConnGuard,
    created: Instant,
    /// Requests this connection has carried to completion.
    requests: u32,
}

/// Keeps a connection counted as active until dropped.
pub struct ConnGuard {
    cluster_active: Gauge,
    host_active: Gauge,
    destroy: Counter,
}

impl UpstreamConn {
    pub fn new(stream: crate::tls::Conn, cluster: &ClusterStats, host: &Host) -> Self {
        cluster.upstream_cx_active.inc();
        host.stats.cx_active.inc();
        let guard = ConnGuard {
            cluster_active: cluster.upstream_cx_active.clone(),
            host_active: host.stats.cx_active.clone(),
            destroy: cluster.upstream_cx_destroy.clone(),
        };
        UpstreamConn {
            stream,
            write_buf: Vec::with_capacity(1024),
            read_buf: Vec::with_capacity(INITIAL_READ_BUFFER),
            guard,
            created: Instant::now(),
            requests: 0,
        }
    }

    /// Whether this connection came out of the pool (and so may have been
    /// closed by the upstream while it sat there).
    pub fn reused(&self) -> bool {
        self.requests > 0
    }

    /// The socket, and the guard that keeps it counted while it is used
    /// outside the pool (an upgraded tunnel).
    pub fn into_parts(self) -> (crate::tls::Conn, ConnGuard) {
        (self.stream, self.guard)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.cluster_active.dec();
        self.host_active.dec();
        self.destroy.inc();
    }
}

/// A connection's response buffer to begin with; it grows for large bodies.
const INITIAL_READ_BUFFER: usize = 16 * 1024;
/// A pooled connection gives back response buffers grown past this.
const MAX_POOLED_READ_BUFFER: usize = 128 * 1024;

/// A pooled connection released this recently is assumed still open (see
/// `Host::take_idle`): upstream servers close idle connections after seconds
/// (nginx 75 s, Node.js 5 s), not within a second of a response.
const RECENTLY_USED: Duration = Duration::from_secs(1);

/// Idle connections kept per host per core; more are closed.
const MAX_IDLE_PER_HOST: usize = 64;

impl Host {
    /// An idle pooled connection that the peer has not closed meanwhile and
    /// that is within the cluster's limits.
    ///
    /// With `trust_recent`, a connection put back within `RECENTLY_USED` is
    /// taken without asking the kernel whether the peer closed it (one
    /// syscall saved per request under load); the caller must then be able
    /// to send the request again on a new connection if it turns out closed.
    pub fn take_idle(&self, stats: &ClusterStats, trust_recent: bool) -> Option<UpstreamConn> {
        let mut idle = self.idle.borrow_mut();
        let now = Instant::now();
        while let Some((conn, since)) = idle.pop() {
            if now.duration_since(since) >= self.limits.idle_timeout {
                stats.upstream_cx_idle_timeout.inc();
                continue;
            }
            if self.limits.max_connection_duration.is_some_and(|max| now.duration_since(conn.created) >= max) {
                stats.upstream_cx_max_duration_reached.inc();
                continue;
            }
            if (trust_recent && now.duration_since(since) < RECENTLY_USED) || still_open(&conn.stream) {
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection that finished its exchange cleanly to the pool,
    /// unless it has served its quota of requests or the pool is full.
    pub fn release(&self, mut conn: UpstreamConn, stats: &ClusterStats) {
        conn.requests = conn.requests.saturating_add(1);
        if conn.read_buf.capacity() > MAX_POOLED_READ_BUFFER {
            conn.read_buf = Vec::with_capacity(INITIAL_READ_BUFFER);
        }
        if self.limits.max_requests_per_connection.is_some_and(|max| conn.requests >= max) {
            stats.upstream_cx_max_requests.inc();
            return;
        }
        let mut idle = self.idle.borrow_mut();
        if idle.len() < MAX_IDLE_PER_HOST {
            idle.push((conn, Instant::now()));
        }
    }

    /// Closes pooled connections past the idle timeout or their maximum age.
    fn sweep(&self, now: Instant, stats: &ClusterStats) {
        let Ok(mut idle) = self.idle.try_borrow_mut() else { return };
        idle.retain(|(conn, since)| {
            if now.duration_since(*since) >= self.limits.idle_timeout {
                stats.upstream_cx_idle_timeout.inc();
                return false;
            }
            if self.limits.max_connection_duration.is_some_and(|max| now.duration_since(conn.created) >= max) {
                stats.upstream_cx_max_duration_reached.inc();
                return false;
            }
            true
        });
    }
}

fn still_open(conn: &crate::tls::Conn) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: recv into one byte we own; MSG_PEEK leaves the stream as it is.
    let n =
        unsafe { libc::recv(conn.as_raw_fd(), (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
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
    pub upstream_cx_http1_total: Counter,
    pub upstream_rq_total: Counter,
    pub upstream_rq_xx: [Counter; 5],
    pub upstream_rq_timeout: Counter,
    pub upstream_rq_rx_reset: Counter,
    pub upstream_cx_idle_timeout: Counter,
    /// Pooled connections the upstream had closed, found when reused.
    pub upstream_cx_destroy_remote: Counter,
    pub upstream_cx_max_requests: Counter,
    pub upstream_cx_max_duration_reached: Counter,
    pub upstream_rq_pending_total: Counter,
    pub upstream_rq_pending_active: Gauge,
    pub upstream_rq_pending_failure_eject: Counter,
    pub upstream_rq_retry: Counter,
    pub upstream_rq_retry_success: Counter,
    pub upstream_rq_retry_limit_exceeded: Counter,
    pub upstream_rq_per_try_timeout: Counter,
    /// Envoy's `upstream_rq_time` (ms).
    pub upstream_rq_time: Histogram,
    /// `upstream_rq_<code>`, registered the first time a code is seen on this
    /// core (the only time the data path touches the shard's registry).
    by_code: RefCell<HashMap<u16, Counter>>,
    shard: Arc<Shard>,
    name: String,
}

impl ClusterStats {
    fn new(shard: &Arc<Shard>, cluster: &str) -> Self {
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
            upstream_cx_http1_total: c("upstream_cx_http1_total"),
            upstream_rq_total: c("upstream_rq_total"),
            upstream_cx_idle_timeout: c("upstream_cx_idle_timeout"),
            upstream_cx_destroy_remote: c("upstream_cx_destroy_remote"),
            upstream_cx_max_requests: c("upstream_cx_max_requests"),
            upstream_cx_max_duration_reached: c("upstream_cx_max_duration_reached"),
            upstream_rq_pending_total: c("upstream_rq_pending_total"),
            upstream_rq_pending_active: g("upstream_rq_pending_active"),
            upstream_rq_pending_failure_eject: c("upstream_rq_pending_failure_eject"),
            upstream_rq_retry: c("upstream_rq_retry"),
            upstream_rq_retry_success: c("upstream_rq_retry_success"),
            upstream_rq_retry_limit_exceeded: c("upstream_rq_retry_limit_exceeded"),
            upstream_rq_per_try_timeout: c("upstream_rq_per_try_timeout"),
            upstream_rq_xx: [1, 2, 3, 4, 5].map(|class| {
                shard.counter(StatKey::with_class("cluster", cluster, "envoy_cluster_name", "upstream_rq", class))
            }),
            by_code: RefCell::new(HashMap::new()),
            shard: shard.clone(),
            name: cluster.to_string(),
            upstream_rq_timeout: c("upstream_rq_timeout"),
            upstream_rq_rx_reset: c("upstream_rq_rx_reset"),
            upstream_rq_time: shard.histogram(StatKey::cluster(cluster, "upstream_rq_time")),
        }
    }

    /// `upstream_rq_<class>xx` and `upstream_rq_<code>` for a response status.
    pub fn count_status(&self, status: u16) {
        if let Some(c) = self.upstream_rq_xx.get(usize::from(status / 100).wrapping_sub(1)) {
            c.inc();
        }
        let mut by_code = self.by_code.borrow_mut();
        by_code
            .entry(status)
            .or_insert_with(|| {
                self.shard.counter(StatKey::with_code(
                    "cluster",
                    &self.name,
                    "envoy_cluster_name",
                    "upstream_rq",
                    status,
                ))
            })
            .inc();
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
