//! tcp_proxy, the L4 terminal filter: picks a cluster and an endpoint, connects
//! (with the cluster's timeout, up to `max_connect_attempts` hosts), then relays
//! both directions until both sides have closed.
//!
//! listener → filter chain → **tcp_proxy** → cluster → lb pick → connect → relay

mod copy;
pub mod splice;

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent, Splitable};
use monoio::net::TcpStream;

use crate::config::{ClusterId, TcpProxyConfig, TcpRoute};
use crate::stats::{Counter, Shard, StatKey};
use crate::tls::Conn;
use crate::upstream::lb::Rng;
use crate::upstream::{ClusterManager, connect};
use splice::{Pipe, PumpEnd};

/// How bytes are moved once both sides are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// splice(2) through a pipe, driven by readiness (the default).
    Splice,
    /// read/write through a user-space buffer.
    Copy,
}

impl RelayMode {
    /// `RINGWAY_RELAY=copy` selects the buffered relay, for measurement.
    pub fn from_env() -> Self {
        match std::env::var("RINGWAY_RELAY").as_deref() {
            Ok("copy") => RelayMode::Copy,
            _ => RelayMode::Splice,
        }
    }
}

/// Envoy's `tcp.<stat_prefix>.*` stats.
pub struct TcpProxyStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_no_route: Counter,
    pub downstream_cx_tx_bytes_total: Counter,
    pub downstream_cx_rx_bytes_total: Counter,
    pub upstream_flush_total: Counter,
    pub idle_timeout: Counter,
    /// Connections relayed with copies because pipes were unavailable
    /// (ringway's own stat).
    pub downstream_cx_splice_fallback: Counter,
}

impl TcpProxyStats {
    fn new(shard: &Shard, prefix: &str) -> Self {
        let c = |stat: &str| shard.counter(StatKey::tcp(prefix, stat));
        TcpProxyStats {
            downstream_cx_total: c("downstream_cx_total"),
            downstream_cx_no_route: c("downstream_cx_no_route"),
            downstream_cx_tx_bytes_total: c("downstream_cx_tx_bytes_total"),
            downstream_cx_rx_bytes_total: c("downstream_cx_rx_bytes_total"),
            upstream_flush_total: c("upstream_flush_total"),
            idle_timeout: c("idle_timeout"),
            downstream_cx_splice_fallback: c("downstream_cx_splice_fallback"),
        }
    }
}

/// One core's instance of a tcp_proxy filter from the snapshot.
pub struct TcpProxy {
    config: TcpProxyConfig,
    stats: TcpProxyStats,
    rng: Rng,
}

/// Why a proxied connection ended early.
#[derive(Debug)]
enum RelayEnd {
    Idle,
    Io(io::Error),
}

impl TcpProxy {
    pub fn new(config: &TcpProxyConfig, shard: &Shard, seed: u64) -> Self {
        TcpProxy { config: config.clone(), stats: TcpProxyStats::new(shard, &config.stat_prefix), rng: Rng::new(seed) }
    }

    fn route(&self) -> Option<ClusterId> {
        match &self.config.route {
            TcpRoute::Cluster(id) => Some(*id),
            TcpRoute::Weighted { clusters, total_weight } => {
                let mut r = self.rng.below(*total_weight);
                for (id, w) in clusters {
                    if r < u64::from(*w) {
                        return Some(*id);
                    }
                    r -= u64::from(*w);
                }
                None
            }
        }
    }

    /// Serves one downstream connection to its end: the TLS handshake first
    /// when the filter chain terminates TLS.
    pub async fn serve(
        &self,
        downstream: TcpStream,
        tls: Option<(&crate::tls::ServerContext, &crate::tls::TlsStats)>,
        clusters: &ClusterManager,
        relay: RelayMode,
        buffer_limit: usize,
    ) {
        self.stats.downstream_cx_total.inc();
        let downstream = match tls {
            None => Conn::Plain(downstream),
            Some((ctx, stats)) => {
                // A TLS socket keeps the kernel's autotuned buffers: bounded
                // like a plain one, it cost 7% more CPU per Gbit through the
                // double proxy (perf/ab.sh, per CPU-second).
                let Some(tls) = crate::tls::accept(downstream, ctx, stats).await else { return };
                tls
            }
        };
        let Some(cluster_id) = self.route() else {
            self.stats.downstream_cx_no_route.inc();
            return;
        };
        let cluster = clusters.get(cluster_id);
        let cs = &cluster.stats;

        let limit = buffer_limit.min(cluster.buffer_limit);
        let mut connected = None;
        // Whether the last failure was one another host might not have.
        let mut retryable = false;
        for _ in 0..self.config.max_connect_attempts {
            let Some(host) = cluster.pick() else {
                cs.upstream_cx_none_healthy.inc();
                break;
            };
            cs.upstream_cx_total.inc();
            host.stats.cx_total.inc();
            let connect_started = Instant::now();
            let failure = match connect(host.addr, cluster.connect_timeout).await {
                Ok(stream) => {
                    // As downstream: a TLS socket keeps autotuned buffers.
                    if cluster.tls.is_none() {
                        bound_socket_buffers(&stream, limit);
                    }
                    match &cluster.tls {
                        None => {
                            connected = Some((Conn::Plain(stream), host));
                            break;
                        }
                        // A TLS upstream is connected once its handshake is
                        // done: connect_timeout covers both (Envoy's rule).
                        Some((ctx, stats)) => match crate::tls::connect(
                            stream,
                            host.addr.ip(),
                            ctx,
                            stats,
                            cluster.connect_timeout.saturating_sub(connect_started.elapsed()),
                        )
                        .await
                        {
                            Ok(tls) => {
                                connected = Some((tls, host));
                                break;
                            }
                            Err(timed_out) => {
                                tracing::debug!(cluster = %cluster.name, host = %host.addr, "upstream TLS handshake failed");
                                (timed_out, true)
                            }
                        },
                    }
                }
                Err(e) => {
                    tracing::debug!(cluster = %cluster.name, "{e}");
                    (e.is_timeout(), e.is_retryable())
                }
            };
            let (timed_out, retry) = failure;
            if timed_out {
                cs.upstream_cx_connect_timeout.inc();
            }
            cs.upstream_cx_connect_fail.inc();
            host.stats.cx_connect_fail.inc();
            retryable = retry;
            if !retry {
                break;
            }
        }
        let Some((upstream, host)) = connected else {
            if retryable {
                cs.upstream_cx_connect_attempts_exceeded.inc();
            }
            // Dropping the downstream stream closes it.
            return;
        };

        cs.upstream_cx_active.inc();
        host.stats.cx_active.inc();
        if let Conn::Plain(d) = &downstream {
            bound_socket_buffers(d, limit);
        }
        let counters = (&cs.upstream_cx_tx_bytes_total, &cs.upstream_cx_rx_bytes_total);
        let result = match (downstream, upstream) {
            (Conn::Plain(d), Conn::Plain(u)) => self.relay(d, u, relay, limit, counters.0, counters.1).await,
            (d, u) => self.relay_tls(d, u, limit, counters).await,
        };
        match result {
            Ok((to_upstream, _)) => {
                if to_upstream.flushed_after_close {
                    self.stats.upstream_flush_total.inc();
                }
            }
            Err(RelayEnd::Idle) => self.stats.idle_timeout.inc(),
            Err(RelayEnd::Io(e)) => tracing::debug!(cluster = %cluster.name, "relay ended: {e}"),
        }
        cs.upstream_cx_destroy.inc();
        cs.upstream_cx_active.dec();
        host.stats.cx_active.dec();
    }

    /// The relay when either side speaks TLS: each direction reads,
    /// decrypts or encrypts, and writes through a buffer of up to `limit`.
    async fn relay_tls(
        &self,
        downstream: Conn,
        upstream: Conn,
        limit: usize,
        (up_tx, up_rx): (&Counter, &Counter),
    ) -> Result<(PumpEnd, PumpEnd), RelayEnd> {
        let last_activity = Cell::new(Instant::now());
        let tx = |n: u64| {
            up_tx.add(n);
            self.stats.downstream_cx_rx_bytes_total.add(n);
        };
        let rx = |n: u64| {
            up_rx.add(n);
            self.stats.downstream_cx_tx_bytes_total.add(n);
        };
        // TLS records are at most 16 KiB; a few per read is plenty (256 KiB
        // measured 3% more CPU per Gbit, perf/ab.sh per CPU-second).
        let buffer = limit.clamp(16 * 1024, 64 * 1024);
        // The plain side too by readiness and non-blocking calls: 4% less
        // CPU per byte than io_uring operations (perf/ab.sh, per CPU-second).
        let (mut dr, mut dw) = downstream.into_poll_split();
        let (mut ur, mut uw) = upstream.into_poll_split();
        let a = copy::pump(&mut dr, &mut uw, buffer, &last_activity, &tx);
        let b = copy::pump(&mut ur, &mut dw, buffer, &last_activity, &rx);
        drive(a, b, self.config.idle_timeout, &last_activity).await
    }

    async fn relay(
        &self,
        downstream: TcpStream,
        upstream: TcpStream,
        mode: RelayMode,
        limit: usize,
        up_tx: &Counter,
        up_rx: &Counter,
    ) -> Result<(PumpEnd, PumpEnd), RelayEnd> {
        let last_activity = Cell::new(Instant::now());
        let idle = self.config.idle_timeout;
        let tx = |n: u64| {
            up_tx.add(n);
            self.stats.downstream_cx_rx_bytes_total.add(n);
        };
        let rx = |n: u64| {
            up_rx.add(n);
            self.stats.downstream_cx_tx_bytes_total.add(n);
        };
        if mode == RelayMode::Splice {
            match splice_setup(&downstream, &upstream, limit) {
                Ok((p1, p2)) => {
                    let a = splice::pump(&downstream, &upstream, &p1, &last_activity, &tx);
                    let b = splice::pump(&upstream, &downstream, &p2, &last_activity, &rx);
                    return drive(a, b, idle, &last_activity).await;
                }
                // No pipes (descriptors or the per-user pipe quota ran out):
                // the buffered relay still works, so use it for this one.
                Err(e) => {
                    self.stats.downstream_cx_splice_fallback.inc();
                    tracing::debug!("splice unavailable ({e}); relaying with copies");
                }
            }
        }
        let (mut dr, mut dw) = downstream.into_split();
        let (mut ur, mut uw) = upstream.into_split();
        let a = copy::pump(&mut dr, &mut uw, limit, &last_activity, &tx);
        let b = copy::pump(&mut ur, &mut dw, limit, &last_activity, &rx);
        drive(a, b, idle, &last_activity).await
    }
}

/// Relays bytes both ways between two connections through user-space
/// buffers of `buffer` bytes, until both directions end (half-closes are
/// passed on), either fails, or nothing moves for `idle`. For upgraded HTTP
/// connections, whose traffic is small messages rather than bulk.
pub async fn tunnel<AR, AW, BR, BW>(
    (mut ar, mut aw): (AR, AW),
    (mut br, mut bw): (BR, BW),
    idle: Duration,
    buffer: usize,
) -> io::Result<()>
where
    AR: AsyncReadRent,
    AW: AsyncWriteRent,
    BR: AsyncReadRent,
    BW: AsyncWriteRent,
{
    let last_activity = Cell::new(Instant::now());
    let buffer = buffer.clamp(4096, 64 * 1024);
    let up = copy::pump(&mut ar, &mut bw, buffer, &last_activity, &|_| {});
    let down = copy::pump(&mut br, &mut aw, buffer, &last_activity, &|_| {});
    match drive(up, down, Some(idle), &last_activity).await {
        Ok(_) => Ok(()),
        Err(RelayEnd::Idle) => Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")),
        Err(RelayEnd::Io(e)) => Err(e),
    }
}

/// Sizes a proxied socket's kernel buffers from the connection's buffer limit
/// instead of letting TCP autotune them (up to `tcp_rmem`'s maximum, often
/// 6-32 MiB). This bounds what one connection can hold, and it keeps less
/// data in flight through the proxy, which measured faster end to end: the
/// peers' data stays in cache (perf/README.md). Each direction gets a quarter
/// of the limit; the kernel doubles the figure for its own bookkeeping and
/// caps it at `net.core.rmem_max`/`wmem_max`.
fn bound_socket_buffers(stream: &TcpStream, limit: usize) {
    use std::os::fd::AsRawFd;
    let bytes = (limit / 4).clamp(MIN_SOCKET_BUFFER, i32::MAX as usize) as libc::c_int;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: setsockopt with a pointer to a live c_int and its size.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!("setsockopt({opt}) failed: {}", io::Error::last_os_error());
        }
    }
}

/// Socket buffers below this would throttle even a LAN connection.
const MIN_SOCKET_BUFFER: usize = 64 * 1024;

/// Pipes smaller than this make splice slower than copying.
const MIN_USEFUL_PIPE: usize = 64 * 1024;

/// Non-blocking sockets and two pipes for the splice relay.
fn splice_setup(downstream: &TcpStream, upstream: &TcpStream, limit: usize) -> io::Result<(Pipe, Pipe)> {
    use std::os::fd::AsRawFd;
    let (p1, p2) = (Pipe::new(limit)?, Pipe::new(limit)?);
    // Past the kernel's per-user pipe quota new pipes get a page or two.
    let want = limit.min(MIN_USEFUL_PIPE);
    if p1.capacity() < want || p2.capacity() < want {
        return Err(io::Error::other(format!("pipes got only {} bytes", p1.capacity().min(p2.capacity()))));
    }
    splice::set_nonblocking(downstream.as_raw_fd())?;
    splice::set_nonblocking(upstream.as_raw_fd())?;
    Ok((p1, p2))
}

/// Runs both directions to completion, or until either fails or nothing has
/// moved for `idle`. Dropping the pending direction on failure closes both.
async fn drive(
    a: impl Future<Output = io::Result<PumpEnd>>,
    b: impl Future<Output = io::Result<PumpEnd>>,
    idle: Option<Duration>,
    last_activity: &Cell<Instant>,
) -> Result<(PumpEnd, PumpEnd), RelayEnd> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    let (mut a_end, mut b_end) = (None, None);
    // With no idle timeout the timer still ticks (daily) but never closes.
    let (period, enforce) = match idle {
        Some(d) => (d, true),
        None => (Duration::from_secs(86_400), false),
    };
    let mut timer = pin!(monoio::time::sleep(period));
    std::future::poll_fn(|cx| {
        if a_end.is_none()
            && let Poll::Ready(r) = a.as_mut().poll(cx)
        {
            a_end = Some(r.map_err(RelayEnd::Io)?);
        }
        if b_end.is_none()
            && let Poll::Ready(r) = b.as_mut().poll(cx)
        {
            b_end = Some(r.map_err(RelayEnd::Io)?);
        }
        if let (Some(x), Some(y)) = (a_end, b_end) {
            return Poll::Ready(Ok((x, y)));
        }
        // On expiry, close if nothing moved for a whole period; otherwise
        // re-arm for one period after the last activity.
        while timer.as_mut().poll(cx).is_ready() {
            let last = last_activity.get();
            if enforce && last.elapsed() >= period {
                return Poll::Ready(Err(RelayEnd::Idle));
            }
            let next = if enforce { last + period } else { Instant::now() + period };
            timer.as_mut().reset(monoio::time::Instant::from_std(next));
        }
        Poll::Pending
    })
    .await
}
