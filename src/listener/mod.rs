//! Listeners: one SO_REUSEPORT socket per worker per configured listener, and
//! the accept loop that hands each connection to the listener's filter chain.
//!
//! **listener** → filter chain → tcp_proxy | connection manager → ...

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{ChainMatch, FilterChainConfig, ListenerConfig, NetworkFilter, Snapshot};
use crate::http::conn_manager::HttpConnectionManager;
use crate::runtime::worker::Worker;
use crate::stats::{Counter, Gauge, Shard, StatKey};
use crate::tcp_proxy::TcpProxy;
use crate::tls::inspect::Hello;

/// Binds `count` sockets to `addr` with SO_REUSEPORT so each worker accepts on
/// its own and the kernel spreads connections among them. With port 0, the
/// first socket picks the port and the others join it.
///
/// SO_REUSEPORT would also let this process silently share a port with
/// another one (a second ringway, a stale instance); a probe bind without it
/// first turns that into a clear "address in use".
pub fn bind_reuseport(
    addr: SocketAddr,
    backlog: u32,
    ipv6_only: bool,
    count: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    let new_socket = |addr: SocketAddr| -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(ipv6_only)?;
        }
        Ok(socket)
    };
    if addr.port() != 0 {
        let probe = new_socket(addr)?;
        probe.bind(&addr.into())?;
    }
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = new_socket(addr)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(backlog.min(i32::MAX as u32) as i32)?;
        let listener: std::net::TcpListener = socket.into();
        if addr.port() == 0 {
            addr = listener.local_addr()?;
        }
        out.push(listener);
    }
    Ok(out)
}

/// Envoy's `listener.<addr>.*` stats, plus this worker's `worker_<n>` ones.
#[derive(Clone)]
pub struct ListenerStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    pub downstream_cx_destroy: Counter,
    pub downstream_global_cx_overflow: Counter,
    /// Accept failures (EMFILE, ENFILE, ...); ringway's own stat.
    pub downstream_cx_accept_error: Counter,
    pub worker_downstream_cx_total: Counter,
    pub worker_downstream_cx_active: Gauge,
}

impl ListenerStats {
    fn new(shard: &Shard, stat_name: &str, worker: usize) -> Self {
        let c = |stat: &str| shard.counter(StatKey::listener(stat_name, stat));
        ListenerStats {
            downstream_cx_total: c("downstream_cx_total"),
            downstream_cx_active: shard.gauge(StatKey::listener(stat_name, "downstream_cx_active")),
            downstream_cx_destroy: c("downstream_cx_destroy"),
            downstream_global_cx_overflow: c("downstream_global_cx_overflow"),
            downstream_cx_accept_error: c("downstream_cx_accept_error"),
            worker_downstream_cx_total: shard.counter(StatKey::listener_worker(
                stat_name,
                worker,
                "downstream_cx_total",
            )),
            worker_downstream_cx_active: shard.gauge(StatKey::listener_worker(
                stat_name,
                worker,
                "downstream_cx_active",
            )),
        }
    }
}

/// One core's instance of a listener from the snapshot: its stats and, for
/// each filter chain, the terminal filter and TLS stats.
pub struct ListenerRt {
    pub config: ListenerConfig,
    pub stats: ListenerStats,
    pub chains: Vec<ChainRt>,
    /// `listener.<addr>.no_filter_chain_match`.
    pub no_filter_chain_match: Counter,
}

pub struct ChainRt {
    pub terminal: Terminal,
    /// `listener.<addr>.ssl.*`, for a chain that terminates TLS (chains of
    /// one listener share them).
    pub tls_stats: Option<crate::tls::TlsStats>,
}

pub enum Terminal {
    TcpProxy(TcpProxy),
    Http(Box<HttpConnectionManager>),
}

impl ListenerRt {
    pub fn new(config: &ListenerConfig, shard: &Shard, worker: usize, seed: u64) -> Self {
        let chains = config
            .filter_chains
            .iter()
            .enumerate()
            .map(|(i, chain)| {
                let seed = seed.wrapping_add((i as u64) << 32);
                let terminal = match &chain.terminal {
                    NetworkFilter::TcpProxy(tp) => Terminal::TcpProxy(TcpProxy::new(tp, shard, seed)),
                    NetworkFilter::HttpConnectionManager(hcm) => {
                        Terminal::Http(Box::new(HttpConnectionManager::new(hcm, shard, seed)))
                    }
                };
                let tls_stats = chain
                    .tls
                    .as_ref()
                    .map(|_| crate::tls::TlsStats::new(shard, |stat| StatKey::listener(&config.stat_name, stat)));
                ChainRt { terminal, tls_stats }
            })
            .collect();
        ListenerRt {
            config: config.clone(),
            stats: ListenerStats::new(shard, &config.stat_name, worker),
            chains,
            no_filter_chain_match: shard.counter(StatKey::listener(&config.stat_name, "no_filter_chain_match")),
        }
    }
}

/// Envoy's filter chain choice: the most specific match at each step, in
/// order: destination port, server name (exact, then the longest `*.`
/// suffix), transport protocol, application protocol; an unset field is the
/// fallback at its step. `None` when no chain is left.
pub fn choose_chain(chains: &[FilterChainConfig], port: u16, hello: Option<&Hello>) -> Option<usize> {
    let mut left: Vec<usize> = (0..chains.len()).collect();
    let narrow = |left: &mut Vec<usize>, rank: &dyn Fn(&ChainMatch) -> Option<usize>| {
        let best = left.iter().filter_map(|&i| rank(&chains[i].matcher)).max();
        if let Some(best) = best {
            left.retain(|&i| rank(&chains[i].matcher) == Some(best));
        } else {
            left.clear();
        }
    };
    // Rank: 0 for a chain that leaves the field unset, higher for a match,
    // None for a mismatch.
    narrow(&mut left, &|m| match m.destination_port {
        None => Some(0),
        Some(p) if p == port => Some(1),
        Some(_) => None,
    });
    let sni = hello.and_then(|h| h.sni.as_deref());
    narrow(&mut left, &|m| {
        if m.server_names.is_empty() {
            return Some(0);
        }
        let sni = sni?;
        m.server_names
            .iter()
            .filter_map(|n| match n.strip_prefix('*') {
                // `*.example.com`: ranked by suffix length, below any exact name.
                Some(suffix) => (sni.len() > suffix.len() && sni.ends_with(suffix)).then_some(1 + suffix.len()),
                None => (n == sni).then_some(usize::MAX),
            })
            .max()
    });
    let tls = hello.is_some_and(|h| h.tls);
    narrow(&mut left, &|m| match m.tls {
        None => Some(0),
        Some(t) if t == tls => Some(1),
        Some(_) => None,
    });
    let alpn = hello.map(|h| h.alpn.as_slice()).unwrap_or(&[]);
    narrow(&mut left, &|m| {
        if m.application_protocols.is_empty() {
            Some(0)
        } else if m.application_protocols.iter().any(|p| alpn.contains(p)) {
            Some(1)
        } else {
            None
        }
    });
    left.first().copied()
}

/// Whether two snapshots have the same listeners (names and addresses), which
/// is what a reload may not change yet.
pub fn same_listeners(a: &Snapshot, b: &Snapshot) -> bool {
    a.listeners.len() == b.listeners.len()
        && a.listeners.iter().zip(&b.listeners).all(|(x, y)| {
            x.name == y.name
                && x.addr == y.addr
                && x.filter_chains.len() == y.filter_chains.len()
                && x.filter_chains
                    .iter()
                    .zip(&y.filter_chains)
                    // Open HTTP connections keep their chain's index.
                    .all(|(a, b)| {
                        a.matcher == b.matcher
                            && std::mem::discriminant(&a.terminal) == std::mem::discriminant(&b.terminal)
                    })
        })
}

/// Shortest and longest pause after an accept failure such as EMFILE.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(1);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Accepts on this worker's socket for listener `index` until `stop` closes.
/// Each connection is served on this core with the tables current when it was
/// accepted.
pub async fn accept_loop(listener: TcpListener, index: usize, worker: Rc<Worker>, stop: async_channel::Receiver<()>) {
    let mut backoff = Duration::ZERO;
    let mut last_warn: Option<Instant> = None;
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = stop.recv() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::ZERO;
                let tables = worker.tables();
                let Some(l) = tables.listeners.get(index) else { continue };
                if !worker.admit_connection() {
                    l.stats.downstream_global_cx_overflow.inc();
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let worker = worker.clone();
                monoio::spawn(async move {
                    // The guard keeps its own stat handles, not the tables.
                    let stats = tables.listeners[index].stats.clone();
                    let _guard = ConnectionGuard::new(&worker, &stats);
                    let l = &tables.listeners[index];
                    let hello = if l.config.tls_inspector {
                        match crate::tls::inspect::inspect(&stream, l.config.inspect_timeout).await {
                            Some(h) => Some(h),
                            None if l.config.continue_on_inspect_timeout => None,
                            // Nothing arrived in time, or the peer left.
                            None => return,
                        }
                    } else {
                        None
                    };
                    let port = stream.local_addr().map_or(l.config.addr.port(), |a| a.port());
                    let Some(chain) = choose_chain(&l.config.filter_chains, port, hello.as_ref()) else {
                        l.no_filter_chain_match.inc();
                        return;
                    };
                    match &l.chains[chain].terminal {
                        // A TCP connection lives on the tables it started with.
                        Terminal::TcpProxy(tp) => {
                            let tls =
                                l.config.filter_chains[chain].tls.as_deref().zip(l.chains[chain].tls_stats.as_ref());
                            tp.serve(stream, tls, &tables.clusters, worker.relay, l.config.buffer_limit).await;
                        }
                        // An HTTP connection takes fresh tables per request;
                        // holding these would keep an old snapshot (and its
                        // upstream pools) alive for the connection's life.
                        Terminal::Http(_) => {
                            drop(tables);
                            crate::http::conn_manager::serve(stream, peer, &worker, index, chain).await;
                        }
                    }
                });
            }
            Err(e) => {
                let stats = &worker.tables().listeners[index].stats;
                stats.downstream_cx_accept_error.inc();
                let transient = matches!(
                    e.raw_os_error(),
                    Some(libc::ECONNABORTED | libc::EINTR | libc::EAGAIN | libc::EPROTO | libc::EPERM)
                );
                if transient {
                    continue;
                }
                // Out of descriptors or memory: pause so the loop cannot spin,
                // longer each time, and retry; open connections free them.
                backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    tracing::warn!(worker = worker.index, "accept failed: {e}; pausing {backoff:?}");
                    last_warn = Some(Instant::now());
                }
                monoio::select! {
                    _ = monoio::time::sleep(backoff) => {},
                    _ = stop.recv() => return,
                }
            }
        }
    }
}

/// Counts a connection in for its lifetime: listener gauges, this worker's
/// count (for drain) and the global count (for the overload limit).
struct ConnectionGuard<'a> {
    worker: &'a Worker,
    stats: &'a ListenerStats,
}

impl<'a> ConnectionGuard<'a> {
    fn new(worker: &'a Worker, stats: &'a ListenerStats) -> Self {
        stats.downstream_cx_total.inc();
        stats.downstream_cx_active.inc();
        stats.worker_downstream_cx_total.inc();
        stats.worker_downstream_cx_active.inc();
        worker.active.set(worker.active.get() + 1);
        ConnectionGuard { worker, stats }
    }
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.stats.downstream_cx_active.dec();
        self.stats.worker_downstream_cx_active.dec();
        self.stats.downstream_cx_destroy.inc();
        self.worker.active.set(self.worker.active.get() - 1);
        self.worker.shared.global_cx.fetch_sub(1, Ordering::Relaxed);
    }
}
