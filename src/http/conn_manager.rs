//! The HTTP/1.1 connection manager: reads requests off one downstream
//! connection, routes each, and answers it with a direct response or by
//! proxying it to an upstream host over a per-core keep-alive connection.
//! Requests on a connection are served one after another (pipelined ones
//! wait their turn), so responses go out in order.
//!
//! listener → filter chain → **connection manager** → router → cluster → lb → pool → upstream

use std::borrow::Cow;
use std::cell::Cell;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::tls::Conn;

use super::h1::{self, BodyFraming, Chunk, ChunkedDecoder, HeadError, Limits, RequestHead};
use super::router;
use super::router::RequestView;
use crate::access_log::format::write_u64;
use crate::access_log::{AccessLogger, LogContext};
use crate::config::{
    AppendAction, ClusterId, ForwardConfig, ForwardTarget, HcmConfig, HeaderMutations, PathMatch, RedirectConfig,
    RetryConfig, RouteActionConfig, RouteEntry,
};
use crate::listener::Terminal;
use crate::runtime::worker::{CoreTables, Worker};
use crate::stats::{Counter, Gauge, Shard, StatKey};
use crate::tcp_proxy::RelayMode;
use crate::tcp_proxy::splice::{self, NonBlocking, SpliceCut};
use crate::upstream::lb::Rng;
use crate::upstream::{Cluster, ClusterManager, Host, UpstreamConn, connect};

static NO_MUTATIONS: HeaderMutations = HeaderMutations { remove: Vec::new(), add: Vec::new() };

/// Bytes read from a socket per call.
const READ_CHUNK: usize = 64 * 1024;
/// Response heads from upstream may be at most this large.
const MAX_RESPONSE_HEAD: usize = 96 * 1024;
const MAX_RESPONSE_HEADERS: usize = 128;
/// Body bytes sent in the same write as the response head, at most.
const COALESCE_BODY: usize = 64 * 1024;

/// Envoy's `http.<stat_prefix>.*` stats.
pub struct HttpStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    pub downstream_cx_http1_total: Counter,
    pub downstream_cx_ssl_total: Counter,
    pub downstream_cx_protocol_error: Counter,
    pub downstream_rq_total: Counter,
    pub downstream_rq_active: Gauge,
    pub downstream_rq_xx: [Counter; 5],
    pub downstream_rq_timeout: Counter,
    pub downstream_rq_idle_timeout: Counter,
    pub downstream_rq_header_timeout: Counter,
    pub downstream_rq_too_large: Counter,
    pub downstream_rq_ws_on_non_ws_route: Counter,
    pub downstream_rq_rx_reset: Counter,
    pub downstream_rq_tx_reset: Counter,
    pub downstream_cx_upgrades_total: Counter,
    pub downstream_cx_upgrades_active: Gauge,
    pub rq_direct_response: Counter,
    pub rq_redirect: Counter,
    pub no_route: Counter,
    /// Envoy's `downstream_rq_time` (ms).
    pub downstream_rq_time: crate::stats::Histogram,
}

impl HttpStats {
    fn new(shard: &Shard, prefix: &str) -> Self {
        const LABEL: &str = "envoy_http_conn_manager_prefix";
        let key = |stat: &str| StatKey {
            name: format!("http.{prefix}.{stat}"),
            prom_name: format!("envoy_http_{stat}"),
            labels: vec![(LABEL, prefix.to_string())],
        };
        let c = |stat: &str| shard.counter(key(stat));
        HttpStats {
            downstream_cx_total: c("downstream_cx_total"),
            downstream_cx_active: shard.gauge(key("downstream_cx_active")),
            downstream_cx_http1_total: c("downstream_cx_http1_total"),
            downstream_cx_ssl_total: c("downstream_cx_ssl_total"),
            downstream_cx_protocol_error: c("downstream_cx_protocol_error"),
            downstream_rq_total: c("downstream_rq_total"),
            downstream_rq_active: shard.gauge(key("downstream_rq_active")),
            downstream_rq_xx: [1, 2, 3, 4, 5]
                .map(|class| shard.counter(StatKey::with_class("http", prefix, LABEL, "downstream_rq", class))),
            downstream_rq_timeout: c("downstream_rq_timeout"),
            downstream_rq_idle_timeout: c("downstream_rq_idle_timeout"),
            downstream_rq_header_timeout: c("downstream_rq_header_timeout"),
            downstream_rq_too_large: c("downstream_rq_too_large"),
            downstream_rq_ws_on_non_ws_route: c("downstream_rq_ws_on_non_ws_route"),
            downstream_rq_rx_reset: c("downstream_rq_rx_reset"),
            downstream_rq_tx_reset: c("downstream_rq_tx_reset"),
            downstream_cx_upgrades_total: c("downstream_cx_upgrades_total"),
            downstream_cx_upgrades_active: shard.gauge(key("downstream_cx_upgrades_active")),
            rq_direct_response: c("rq_direct_response"),
            rq_redirect: c("rq_redirect"),
            no_route: c("no_route"),
            downstream_rq_time: shard.histogram(key("downstream_rq_time")),
        }
    }

    fn count_status(&self, status: u16) {
        if let Some(c) = self.downstream_rq_xx.get(usize::from(status / 100).wrapping_sub(1)) {
            c.inc();
        }
    }
}

/// Serves one downstream connection of listener `index` until it closes,
/// errs or idles out. Each request is handled with the tables current when
/// its head arrives, so reloads and DNS changes reach keep-alive
/// connections too; once the server drains, the next response closes it.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, worker: &Worker, index: usize, chain: usize) {
    let first_tables = worker.tables();
    let Some(first) = manager(&first_tables, index, chain) else { return };
    let Some(listener) = first_tables.listeners.get(index) else { return };
    let Some(chain_rt) = listener.chains.get(chain) else { return };
    let Some(chain_config) = listener.config.filter_chains.get(chain) else { return };
    let cx_stats = (first.stats.downstream_cx_active.clone(), first.stats.downstream_cx_total.clone());
    let local = if first.needs_local_address { tcp.local_addr().ok() } else { None };
    // A TLS filter chain: the handshake comes first.
    let mut down = match (&chain_config.tls, &chain_rt.tls_stats) {
        (Some(ctx), Some(tls_stats)) => {
            let Some(tls) = crate::tls::accept(tcp, ctx, tls_stats).await else { return };
            first.stats.downstream_cx_ssl_total.inc();
            tls
        }
        _ => Conn::Plain(tcp),
    };
    first.stats.downstream_cx_http1_total.inc();
    cx_stats.1.inc();
    cx_stats.0.inc();
    let scheme = if down.is_tls() { "https" } else { "http" };
    drop(first_tables);
    let mut conn = ConnInfo {
        peer,
        relay: worker.relay,
        client: peer,
        local,
        scheme,
        request_started: Instant::now(),
        id: next_connection_id(worker.index),
    };
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut served: u32 = 0;
    let opened = Instant::now();
    // How long to wait for a client that may still be sending when ringway
    // closes (`delayed_close_timeout`); zero: no wait.
    let mut linger = Duration::ZERO;
    loop {
        let mut rules = match manager(&worker.tables(), index, chain) {
            Some(m) => m.head_rules(),
            None => break,
        };
        let end_of_life = rules.max_connection_duration.map(|d| opened + d);
        if let Some(end) = end_of_life {
            // An idle connection past max_connection_duration just closes.
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            rules.idle_timeout = rules.idle_timeout.min(left);
        }
        let read = read_head(rules, &mut down, &mut buf).await;
        let tables = worker.tables();
        let Some(hcm) = manager(&tables, index, chain) else { break };
        let stats = &hcm.stats;
        let (head, head_len) = match read {
            HeadRead::Head(h, n) => (h, n),
            HeadRead::Closed => break,
            HeadRead::Refused(e) => {
                stats.downstream_cx_protocol_error.inc();
                stats.downstream_rq_total.inc();
                stats.count_status(e.status());
                let _ = hcm.local_reply(&mut down, e.status(), &e.to_string(), false).await;
                if hcm.access_log.is_enabled() {
                    let flags = Flags::DOWNSTREAM_PROTOCOL_ERROR;
                    hcm.log_refused(e.status(), flags, "codec_error", &conn, SystemTime::now());
                }
                linger = hcm.config.delayed_close;
                break;
            }
            HeadRead::TimedOut => {
                stats.downstream_rq_header_timeout.inc();
                stats.downstream_rq_total.inc();
                stats.count_status(408);
                let _ = hcm.local_reply(&mut down, 408, "request header timeout", false).await;
                if hcm.access_log.is_enabled() {
                    let flags = Flags::STREAM_IDLE_TIMEOUT;
                    hcm.log_refused(408, flags, "request_header_timeout", &conn, SystemTime::now());
                }
                linger = hcm.config.delayed_close;
                break;
            }
        };
        buf.drain(..head_len);
        let request_started = Instant::now();
        conn.request_started = request_started;
        let wall_start = if hcm.access_log.is_enabled() { SystemTime::now() } else { SystemTime::UNIX_EPOCH };
        served += 1;
        stats.downstream_rq_total.inc();
        stats.downstream_rq_active.inc();
        let last = hcm.config.max_requests_per_connection.is_some_and(|max| served >= max)
            || end_of_life.is_some_and(|end| Instant::now() >= end)
            || worker.shared.draining.load(Ordering::Relaxed);
        if hcm.needs_local_address {
            conn.client = hcm.client_address(&head, peer);
        }
        let outcome = hcm.handle(&mut down, &mut buf, &head, &conn, &tables.clusters, last).await;
        stats.downstream_rq_active.dec();
        stats.count_status(outcome.status);
        stats.downstream_rq_time.record_duration(request_started.elapsed());
        if hcm.access_log.is_enabled() {
            hcm.log(&head, &outcome, &conn, (wall_start, request_started));
        }
        let reusable = outcome.reusable;
        if outcome.reset {
            abort_on_close(&down);
            cx_stats.0.dec();
            return;
        }
        if let Some(up) = outcome.upgraded {
            stats.downstream_cx_upgrades_total.inc();
            stats.downstream_cx_upgrades_active.inc();
            let active = stats.downstream_cx_upgrades_active.clone();
            drop(tables);
            tunnel(down, buf, up).await;
            active.dec();
            cx_stats.0.dec();
            return;
        }
        if !reusable || last {
            // Bytes ringway will not read (a body it answered without, a
            // pipelined request) would make the close a reset, which can
            // destroy the response still on its way.
            if !buf.is_empty() || has_unread(&down) {
                linger = hcm.config.delayed_close;
            }
            break;
        }
    }
    if !linger.is_zero() {
        linger_close(&mut down, buf, linger).await;
    } else if down.is_tls() {
        // close_notify, so that the client can tell the close from a cut.
        let _ = monoio::time::timeout(CLOSE_NOTIFY_WAIT, down.shutdown()).await;
    }
    cx_stats.0.dec();
}

/// The most a TLS close waits to send its close_notify.
const CLOSE_NOTIFY_WAIT: Duration = Duration::from_secs(1);

/// The most a closing connection reads and drops while it waits for the
/// client to stop sending.
const LINGER_BYTES: usize = 4 << 20;

/// Makes the socket's close a reset (SO_LINGER of zero).
fn abort_on_close(down: &Conn) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt with a valid option struct of its own size.
    unsafe {
        libc::setsockopt(
            down.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Whether the kernel holds bytes from the client that nobody has read.
fn has_unread(down: &Conn) -> bool {
    let mut byte = 0u8;
    // SAFETY: a one-byte peek into a local.
    let n = unsafe { libc::recv(down.as_raw_fd(), (&raw mut byte).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n > 0
}

/// Closes the way nginx's lingering close and Envoy's delayed close do: the
/// write side first (after the response, a TLS close_notify, then FIN), then
/// what the client still sends is read and dropped until it closes too, or
/// `time` or `LINGER_BYTES` run out. Closing with unread bytes would send a
/// reset instead, and a client that gets one before it has read the
/// response may lose it.
async fn linger_close(down: &mut Conn, mut buf: Vec<u8>, time: Duration) {
    let deadline = Instant::now() + time;
    if monoio::time::timeout(time, down.shutdown()).await.is_err() {
        return;
    }
    let mut dropped = 0;
    while dropped < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        buf.clear();
        match read_more(down, buf, left).await {
            (Ok(n), b) if n > 0 => {
                dropped += n;
                buf = b;
            }
            _ => return,
        }
    }
}

/// A downstream connection, as the access log names it.
struct ConnInfo {
    peer: SocketAddr,
    /// Whether bodies may be spliced (`RINGWAY_RELAY=copy` says no).
    relay: RelayMode,
    /// `https` on a TLS connection, else `http`.
    scheme: &'static str,
    /// The client of the request in flight as `xff_num_trusted_hops` and
    /// `use_remote_address` define it (Envoy's downstream remote address).
    client: SocketAddr,
    /// Looked up only when something logs it.
    local: Option<SocketAddr>,
    /// When the head of the request in flight was complete.
    request_started: Instant,
    id: u64,
}

thread_local! {
    static CONNECTION_IDS: Cell<u64> = const { Cell::new(0) };
}

/// `%CONNECTION_ID%`: unique within the process without sharing a counter
/// between cores: the worker's index in the top 16 bits, a per-core count
/// below.
fn next_connection_id(worker: usize) -> u64 {
    CONNECTION_IDS.with(|c| {
        let n = c.get().wrapping_add(1) & ((1 << 48) - 1);
        c.set(n);
        ((worker as u64) << 48) | n
    })
}

/// Relays an upgraded connection's bytes both ways until both sides close,
/// either fails, or nothing moves for the idle timeout. `early` holds what
/// the client sent after its request head, already meant for the upstream.
async fn tunnel(down: Conn, early: Vec<u8>, up: Upgraded) {
    let (mut stream, guard) = up.conn.into_parts();
    if !early.is_empty() {
        let (r, _) = write_all(&mut stream, early, up.idle).await;
        if r.is_err() {
            return;
        }
    }
    if let Err(e) = crate::tcp_proxy::tunnel(down.into_split(), stream.into_split(), up.idle, up.buffer).await {
        tracing::debug!("upgraded connection ended: {e}");
    }
    drop(guard);
}

/// The HTTP connection manager of listener `index` in `tables`.
fn manager(tables: &CoreTables, index: usize, chain: usize) -> Option<&HttpConnectionManager> {
    match &tables.listeners.get(index)?.chains.get(chain)?.terminal {
        Terminal::Http(hcm) => Some(hcm),
        Terminal::TcpProxy(_) => None,
    }
}

/// One core's instance of an HTTP connection manager from the snapshot.
pub struct HttpConnectionManager {
    config: HcmConfig,
    stats: HttpStats,
    rng: Rng,
    access_log: AccessLogger,
    /// The access log or a header value names the local address, so each
    /// connection looks it up once.
    needs_local_address: bool,
}

/// How a request ended, for the status counters and keep-alive.
struct Outcome<'a> {
    status: u16,
    /// The downstream connection can carry another request.
    reusable: bool,
    /// The upstream agreed to an upgrade: the connection becomes a tunnel.
    upgraded: Option<Upgraded>,
    /// The connection is to end in a reset, the one way to tell a client
    /// whose response the close was to end that it was cut short.
    reset: bool,
    /// What the access log says about the request.
    facts: Facts<'a>,
}

impl<'a> Outcome<'a> {
    fn new(status: u16, reusable: bool, facts: Facts<'a>) -> Self {
        Outcome { status, reusable, upgraded: None, reset: false, facts }
    }

    fn closing(status: u16, facts: Facts<'a>) -> Self {
        Outcome { status, reusable: false, upgraded: None, reset: false, facts }
    }
}

/// What became of a request, for the access log: Envoy's response flags
/// and details, the upstream it went to, and the body bytes each way.
#[derive(Default)]
struct Facts<'a> {
    flags: Flags,
    details: &'static str,
    route_name: Option<&'a str>,
    cluster: Option<&'a str>,
    upstream_host: Option<SocketAddr>,
    upstream_local: Option<SocketAddr>,
    /// The upstream's response headers as forwarded.
    response_headers: Vec<(String, Vec<u8>)>,
    upstream_service_time: Option<Duration>,
    bytes_received: u64,
    bytes_sent: u64,
    /// The `x-request-id` ringway generated, if it did.
    request_id: Option<RequestId>,
}

impl Facts<'_> {
    fn local(flags: Flags, details: &'static str, bytes_sent: usize) -> Self {
        Facts { flags, details, bytes_sent: bytes_sent as u64, ..Facts::default() }
    }
}

/// Envoy's response flags (`%RESPONSE_FLAGS%`), the ones ringway can raise.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Flags(u16);

impl Flags {
    const NO_HEALTHY_UPSTREAM: Flags = Flags(1);
    const UPSTREAM_CONNECTION_FAILURE: Flags = Flags(1 << 1);
    const UPSTREAM_CONNECTION_TERMINATION: Flags = Flags(1 << 2);
    const UPSTREAM_REQUEST_TIMEOUT: Flags = Flags(1 << 3);
    const UPSTREAM_RETRY_LIMIT_EXCEEDED: Flags = Flags(1 << 4);
    const UPSTREAM_PROTOCOL_ERROR: Flags = Flags(1 << 5);
    const STREAM_IDLE_TIMEOUT: Flags = Flags(1 << 6);
    const NO_ROUTE_FOUND: Flags = Flags(1 << 7);
    const DOWNSTREAM_CONNECTION_TERMINATION: Flags = Flags(1 << 8);
    const DOWNSTREAM_PROTOCOL_ERROR: Flags = Flags(1 << 9);
    const NONE: Flags = Flags(0);

    /// In Envoy's order of precedence for printing.
    const NAMES: [(Flags, &'static str); 10] = [
        (Flags::NO_HEALTHY_UPSTREAM, "UH"),
        (Flags::UPSTREAM_CONNECTION_FAILURE, "UF"),
        (Flags::UPSTREAM_CONNECTION_TERMINATION, "UC"),
        (Flags::UPSTREAM_REQUEST_TIMEOUT, "UT"),
        (Flags::UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX"),
        (Flags::NO_ROUTE_FOUND, "NR"),
        (Flags::DOWNSTREAM_CONNECTION_TERMINATION, "DC"),
        (Flags::STREAM_IDLE_TIMEOUT, "SI"),
        (Flags::UPSTREAM_PROTOCOL_ERROR, "UPE"),
        (Flags::DOWNSTREAM_PROTOCOL_ERROR, "DPE"),
    ];

    fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// `UF,URX`, or `-` for none.
    fn render(self, out: &mut String) {
        for (flag, name) in Flags::NAMES {
            if self.0 & flag.0 != 0 {
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(name);
            }
        }
        if out.is_empty() {
            out.push('-');
        }
    }
}

/// An upgraded (e.g. WebSocket) exchange: after the 101 both connections
/// carry opaque bytes until either side closes or `idle` passes.
struct Upgraded {
    conn: UpstreamConn,
    idle: Duration,
    buffer: usize,
}

/// One forwarded request: what every attempt at it needs.
struct Exchange<'a> {
    head: &'a RequestHead,
    conn: &'a ConnInfo,
    fwd: &'a ForwardConfig,
    matched: &'a PathMatch,
    request_headers: &'a HeaderMutations,
    response_headers: &'a HeaderMutations,
    /// The upgrade protocol asked for and allowed on the route.
    upgrade: Option<&'a str>,
    /// The `x-request-id` ringway adds, if the client sent none.
    request_id: Option<&'a str>,
    /// When the request head was complete (`request_timeout` runs from here).
    started: Instant,
    keep_alive: bool,
    /// The stream idle timeout in force (the route's, else the manager's).
    idle: Duration,
}

/// How one attempt at an upstream exchange ended. Lives on the stack for
/// one attempt, so its size does not matter.
#[allow(clippy::large_enum_variant)]
enum AttemptEnd<'c> {
    Response {
        conn: UpstreamConn,
        host: &'c Host,
        response: ResponseHead,
        ubuf: Vec<u8>,
        /// It came after the upstream refused a write of the request: the
        /// connection is not to be pooled.
        early: bool,
    },
    Failed(UpstreamFailure),
    /// The client's side failed; nothing to retry.
    Downstream(BodyError),
}

/// The route timeout: it starts when the request has been sent in full
/// (Envoy's rule) and spans every attempt.
struct Timing {
    route_deadline: Option<Instant>,
    route_timeout: Option<Duration>,
    /// The host the latest attempt went to, for the access log.
    upstream_host: Option<SocketAddr>,
}

impl Timing {
    fn start(&mut self) {
        if self.route_deadline.is_none() {
            self.route_deadline = self.route_timeout.map(|t| Instant::now() + t);
        }
    }

    /// `wait`, cut short by the route deadline.
    fn bound(&self, wait: Duration) -> Duration {
        match self.route_deadline {
            Some(d) => wait.min(d.saturating_duration_since(Instant::now())),
            None => wait,
        }
    }

    fn expired(&self) -> bool {
        self.route_deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// A request body on its way upstream, and a copy of what was sent while it
/// fits the buffer limit, so a retry can send it again.
struct RequestBody {
    progress: BodyProgress,
    /// Body bytes taken from the client so far.
    received: u64,
    complete: bool,
    replay: Option<Vec<u8>>,
    limit: usize,
    continue_sent: bool,
    started: Instant,
    /// A stale pooled connection was met: take only checked ones now.
    fresh_only: bool,
}

enum BodyProgress {
    /// Bytes still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
}

impl RequestBody {
    /// `limit` 0 keeps no copy (no retry policy).
    fn new(framing: BodyFraming, limit: usize, started: Instant) -> Self {
        let (progress, complete) = match framing {
            BodyFraming::None => (BodyProgress::Length(0), true),
            BodyFraming::ContentLength(n) => (BodyProgress::Length(n), false),
            BodyFraming::Chunked => (BodyProgress::Chunked(ChunkedDecoder::new()), false),
        };
        let replay = (complete || limit > 0).then(Vec::new);
        RequestBody { progress, received: 0, complete, replay, limit, continue_sent: false, started, fresh_only: false }
    }

    fn keep(&mut self, sent: &[u8]) {
        if let Some(r) = &mut self.replay {
            if r.len() + sent.len() > self.limit {
                // Too large to hold: this request can no longer be retried.
                self.replay = None;
            } else {
                r.extend_from_slice(sent);
            }
        }
    }

    /// Whether every byte sent so far can be sent again.
    fn replayable(&self) -> bool {
        self.replay.is_some()
    }
}

/// RFC 9110's idempotent methods: sending one twice does what sending it
/// once does.
fn idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE")
}

fn retriable_status(r: &RetryConfig, status: u16) -> bool {
    (r.on.server_error && (500..600).contains(&status))
        || (r.on.gateway_error && (502..=504).contains(&status))
        || (r.on.retriable_4xx && status == 409)
        || (r.on.retriable_status_codes && r.status_codes.contains(&status))
}

fn retriable_failure(r: &RetryConfig, f: &UpstreamFailure) -> bool {
    let any_reset = r.on.server_error || r.on.gateway_error || r.on.reset;
    match f {
        UpstreamFailure::Connect => any_reset || r.on.connect_failure,
        UpstreamFailure::Reset
        | UpstreamFailure::Stale
        | UpstreamFailure::Malformed
        | UpstreamFailure::PerTryTimeout => any_reset,
        UpstreamFailure::NoHost | UpstreamFailure::Timeout | UpstreamFailure::StreamIdle => false,
    }
}

/// The cluster stats an upstream failure counts in.
fn count_failure(cluster: &Cluster, f: &UpstreamFailure) {
    let cs = &cluster.stats;
    match f {
        UpstreamFailure::Reset | UpstreamFailure::Stale | UpstreamFailure::Malformed => cs.upstream_rq_rx_reset.inc(),
        UpstreamFailure::Timeout => cs.upstream_rq_timeout.inc(),
        UpstreamFailure::PerTryTimeout => cs.upstream_rq_per_try_timeout.inc(),
        UpstreamFailure::NoHost | UpstreamFailure::Connect | UpstreamFailure::StreamIdle => {}
    }
    if !matches!(f, UpstreamFailure::StreamIdle) {
        cs.count_status(f.reply().0);
    }
}

/// The protocol a request asks to upgrade to (`Connection: upgrade` plus
/// `Upgrade: websocket`), lower-cased. `h2c` is not an upgrade ringway
/// makes: such a request is served as plain HTTP/1.1 (Envoy does the same).
fn requested_upgrade(head: &RequestHead) -> Option<String> {
    if head.minor_version == 0 {
        return None;
    }
    let asks = head.headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("connection")
            && v.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    let value = head.header("upgrade")?;
    let first = value.split(|&b| b == b',').next()?.trim_ascii();
    let kind = std::str::from_utf8(first).ok()?.to_ascii_lowercase();
    (asks && !kind.is_empty() && kind != "h2c").then_some(kind)
}

/// Why an upstream exchange failed before a response started downstream.
#[derive(Debug)]
enum UpstreamFailure {
    NoHost,
    Connect,
    /// Reset or closed before a complete response head.
    Reset,
    /// A pooled connection turned out closed before anything of the response
    /// arrived (the upstream closed it while idle). Made again once on a new
    /// connection; otherwise a `Reset`.
    Stale,
    Timeout,
    /// The retry policy's per_try_timeout passed before a response head.
    PerTryTimeout,
    /// Nothing moved for `stream_idle_timeout` before the response head.
    StreamIdle,
    Malformed,
}

impl UpstreamFailure {
    /// Envoy's answer for each.
    fn reply(&self) -> (u16, &'static str) {
        match self {
            UpstreamFailure::NoHost => (503, "no healthy upstream"),
            UpstreamFailure::Connect => {
                (503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure")
            }
            UpstreamFailure::Reset | UpstreamFailure::Stale => {
                (503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination")
            }
            UpstreamFailure::Timeout | UpstreamFailure::PerTryTimeout => (504, "upstream request timeout"),
            // The request is complete by then, so Envoy answers 504 (408 is for
            // a request still arriving).
            UpstreamFailure::StreamIdle => (504, "stream timeout"),
            UpstreamFailure::Malformed => (502, "upstream sent a malformed response"),
        }
    }

    /// The access log's flag and details.
    fn log_flag(&self) -> (Flags, &'static str) {
        match self {
            UpstreamFailure::NoHost => (Flags::NO_HEALTHY_UPSTREAM, "no_healthy_upstream"),
            UpstreamFailure::Connect => (Flags::UPSTREAM_CONNECTION_FAILURE, "upstream_reset_before_response_started"),
            UpstreamFailure::Reset | UpstreamFailure::Stale => {
                (Flags::UPSTREAM_CONNECTION_TERMINATION, "upstream_reset_before_response_started")
            }
            UpstreamFailure::Timeout | UpstreamFailure::PerTryTimeout => {
                (Flags::UPSTREAM_REQUEST_TIMEOUT, "upstream_response_timeout")
            }
            UpstreamFailure::StreamIdle => (Flags::STREAM_IDLE_TIMEOUT, "stream_idle_timeout"),
            UpstreamFailure::Malformed => (Flags::UPSTREAM_PROTOCOL_ERROR, "upstream_reset_before_response_started"),
        }
    }
}

/// A read or write that did not finish in time, or failed.
#[derive(Debug)]
enum IoFail {
    Timeout,
    Io(io::Error),
}

async fn read_more(s: &mut Conn, mut buf: Vec<u8>, limit: Duration) -> (Result<usize, IoFail>, Vec<u8>) {
    // Grow only when little room is left, so a connection's buffer is
    // allocated once and reused.
    if buf.capacity() - buf.len() < READ_CHUNK / 8 {
        buf.reserve(READ_CHUNK);
    }
    let len = buf.len();
    match monoio::time::timeout(limit, s.read(buf.slice_mut(len..))).await {
        Ok((Ok(n), slice)) => (Ok(n), slice.into_inner()),
        Ok((Err(e), slice)) => (Err(IoFail::Io(e)), slice.into_inner()),
        // The read was cancelled with its buffer; start a fresh one.
        Err(_) => (Err(IoFail::Timeout), Vec::new()),
    }
}

async fn write_all<B: IoBuf + 'static>(s: &mut Conn, data: B, limit: Duration) -> (Result<(), IoFail>, Option<B>) {
    match monoio::time::timeout(limit, s.write_all(data)).await {
        Ok((Ok(_), b)) => (Ok(()), Some(b)),
        Ok((Err(e), b)) => (Err(IoFail::Io(e)), Some(b)),
        Err(_) => (Err(IoFail::Timeout), None),
    }
}

/// Writes `buf[range]` and hands `buf` back (or an empty one if the write
/// was cancelled by its timeout).
async fn write_range(
    s: &mut Conn,
    buf: Vec<u8>,
    range: std::ops::Range<usize>,
    limit: Duration,
) -> (Result<(), IoFail>, Vec<u8>) {
    if range.is_empty() {
        return (Ok(()), buf);
    }
    let (r, back) = write_all(s, buf.slice(range), limit).await;
    (r, back.map(|b| b.into_inner()).unwrap_or_default())
}

impl HttpConnectionManager {
    pub fn new(config: &HcmConfig, shard: &Shard, seed: u64) -> Self {
        HttpConnectionManager {
            config: config.clone(),
            stats: HttpStats::new(shard, &config.stat_prefix),
            rng: Rng::new(seed),
            access_log: AccessLogger::new(&config.access_logs, shard),
            needs_local_address: !config.access_logs.is_empty() || has_dynamic_headers(&config.routes),
        }
    }

    fn limits(&self) -> Limits {
        Limits { max_head_bytes: self.config.max_head_bytes, max_headers: self.config.max_headers, ..Limits::default() }
    }

    /// What reading a request head needs, copied out so no snapshot is held
    /// while a connection sits idle.
    fn head_rules(&self) -> HeadRules {
        let headers_timeout = match self.config.request_timeout {
            Some(t) => t.min(self.config.request_headers_timeout),
            None => self.config.request_headers_timeout,
        };
        HeadRules {
            limits: self.limits(),
            request_headers_timeout: headers_timeout,
            idle_timeout: self.config.idle_timeout,
            max_connection_duration: self.config.max_connection_duration,
        }
    }

    async fn handle<'a>(
        &'a self,
        down: &mut Conn,
        buf: &mut Vec<u8>,
        head: &RequestHead,
        conn: &ConnInfo,
        clusters: &'a ClusterManager,
        last: bool,
    ) -> Outcome<'a> {
        let has_body = head.body != BodyFraming::None;
        let keep_alive = head.keep_alive && !last;
        // A body left unread would be taken for the next request, so a local
        // answer to a request with one closes the connection.
        let reusable = keep_alive && !has_body;
        let body_len = |body: &str| if head.method == "HEAD" { 0 } else { body.len() };
        let (host, path_and_query) = route_key(head);
        let (path, query) = path_and_query.split_once('?').unwrap_or((&path_and_query, ""));
        let view = RequestView { host: &host, path, query, method: &head.method, headers: &head.headers };
        let Some(entry) = router::route(&self.config.routes, &view) else {
            self.stats.no_route.inc();
            let ok = self.local_reply(down, 404, "", reusable).await;
            return Outcome::new(404, reusable && ok, Facts::local(Flags::NO_ROUTE_FOUND, "route_not_found", 0));
        };
        let mut outcome = match &entry.action {
            RouteActionConfig::Direct { status, body } => {
                self.stats.rq_direct_response.inc();
                let adds = Adds::new(&entry.response_headers, head, conn, *status);
                let ok = self.direct_reply(down, *status, body, reusable, &head.method, &adds).await;
                Outcome::new(*status, reusable && ok, Facts::local(Flags::NONE, "direct_response", body_len(body)))
            }
            RouteActionConfig::Redirect(rd) => {
                self.stats.rq_redirect.inc();
                let location = redirect_location(rd, &entry.path, &host, &head.target);
                let adds = Adds::new(&entry.response_headers, head, conn, rd.status);
                let ok = self.redirect_reply(down, rd.status, &location, reusable, &adds).await;
                Outcome::new(rd.status, reusable && ok, Facts::local(Flags::NONE, "direct_response", 0))
            }
            RouteActionConfig::Forward(fwd) => {
                let upgrade = requested_upgrade(head);
                if let Some(kind) = &upgrade
                    && !fwd.upgrades.iter().any(|u| u.eq_ignore_ascii_case(kind))
                {
                    // Envoy refuses an upgrade the route does not allow.
                    self.stats.downstream_rq_ws_on_non_ws_route.inc();
                    let _ = self.local_reply(down, 403, "", false).await;
                    return Outcome::closing(403, Facts::local(Flags::NONE, "upgrade_failed", 0));
                }
                let (cluster_id, request_headers, response_headers) = self.pick_target(fwd, entry);
                // One id for every attempt, and for the access log.
                let generated_id = (self.config.generate_request_id && head.header("x-request-id").is_none())
                    .then(|| uuid4(&self.rng));
                let exchange = Exchange {
                    head,
                    conn,
                    fwd,
                    matched: &entry.path,
                    request_headers,
                    response_headers,
                    upgrade: upgrade.as_deref(),
                    request_id: generated_id.as_ref().map(RequestId::as_str),
                    started: conn.request_started,
                    keep_alive,
                    idle: fwd.idle_timeout.unwrap_or(self.config.stream_idle_timeout),
                };
                let mut outcome = self.proxy(down, buf, &exchange, clusters.get(cluster_id)).await;
                outcome.facts.request_id = generated_id;
                outcome
            }
        };
        outcome.facts.route_name = entry.name.as_deref();
        outcome
    }

    /// Envoy's "trusted client address": with `use_remote_address`, the
    /// peer, or the `xff_num_trusted_hops`th address from the right of
    /// `x-forwarded-for`; without it, the address one further left (the
    /// peer is then itself a trusted proxy). The peer when the list is too
    /// short or the entry is not an IP.
    fn client_address(&self, head: &RequestHead, peer: SocketAddr) -> SocketAddr {
        let hops = self.config.xff_num_trusted_hops as usize;
        let from_right = if self.config.use_remote_address { hops } else { hops + 1 };
        if from_right == 0 {
            return peer;
        }
        let mut list: Vec<&[u8]> = Vec::new();
        for (name, value) in &head.headers {
            if name.eq_ignore_ascii_case("x-forwarded-for") {
                list.extend(value.split(|&b| b == b',').map(|v| v.trim_ascii()));
            }
        }
        list.len()
            .checked_sub(from_right)
            .and_then(|i| std::str::from_utf8(list[i]).ok())
            .and_then(|s| s.parse::<std::net::IpAddr>().ok())
            .map_or(peer, |ip| SocketAddr::new(ip, 0))
    }

    /// Writes the access log line for a finished request.
    fn log(&self, head: &RequestHead, outcome: &Outcome<'_>, conn: &ConnInfo, started: (SystemTime, Instant)) {
        let f = &outcome.facts;
        let mut flags = String::new();
        f.flags.render(&mut flags);
        let protocol = if head.minor_version == 0 { "HTTP/1.0" } else { "HTTP/1.1" };
        self.access_log.log(&LogContext {
            start: started.0,
            method: &head.method,
            target: &head.target,
            protocol,
            scheme: conn.scheme,
            request_headers: &head.headers,
            request_id: f.request_id.as_ref().map(RequestId::as_str),
            response_headers: &f.response_headers,
            response_code: outcome.status,
            response_flags: &flags,
            response_code_details: f.details,
            bytes_received: f.bytes_received,
            bytes_sent: f.bytes_sent,
            duration: started.1.elapsed(),
            request_duration: None,
            response_duration: f.upstream_service_time,
            upstream_service_time: f.upstream_service_time,
            upstream_host: f.upstream_host,
            upstream_cluster: f.cluster,
            upstream_local: f.upstream_local,
            downstream_remote: conn.client,
            downstream_direct_remote: conn.peer,
            downstream_local: conn.local,
            route_name: f.route_name,
            connection_id: conn.id,
        });
    }

    /// Logs a request whose head was refused or never completed.
    fn log_refused(&self, status: u16, flags: Flags, details: &'static str, conn: &ConnInfo, at: SystemTime) {
        let mut rendered = String::new();
        flags.render(&mut rendered);
        self.access_log.log(&LogContext {
            start: at,
            method: "",
            target: "",
            protocol: "",
            scheme: "http",
            request_headers: &[],
            request_id: None,
            response_headers: &[],
            response_code: status,
            response_flags: &rendered,
            response_code_details: details,
            bytes_received: 0,
            bytes_sent: 0,
            duration: Duration::ZERO,
            request_duration: None,
            response_duration: None,
            upstream_service_time: None,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local: None,
            downstream_remote: conn.peer,
            downstream_direct_remote: conn.peer,
            downstream_local: conn.local,
            route_name: None,
            connection_id: conn.id,
        });
    }

    /// The cluster a forwarded request goes to (by weight, for
    /// weighted_clusters) and the header changes that apply.
    fn pick_target<'e>(
        &self,
        fwd: &'e ForwardConfig,
        entry: &'e RouteEntry,
    ) -> (ClusterId, &'e HeaderMutations, &'e HeaderMutations) {
        match &fwd.target {
            ForwardTarget::Cluster(id) => (*id, &entry.request_headers, &entry.response_headers),
            ForwardTarget::Weighted { clusters, total_weight } => {
                let mut ticket = self.rng.next_u64() % (*total_weight).max(1);
                let last = clusters.len().saturating_sub(1);
                for (i, w) in clusters.iter().enumerate() {
                    if ticket < u64::from(w.weight) || i == last {
                        return (w.cluster, &w.request_headers, &w.response_headers);
                    }
                    ticket -= u64::from(w.weight);
                }
                // Unreachable: validation refuses an empty list.
                (ClusterId(0), &entry.request_headers, &entry.response_headers)
            }
        }
    }

    async fn redirect_reply(
        &self,
        down: &mut Conn,
        status: u16,
        location: &str,
        keep_alive: bool,
        adds: &Adds<'_>,
    ) -> bool {
        let mut out = Vec::with_capacity(256 + location.len());
        let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
        push_header(&mut out, b"location", location.as_bytes());
        push_header(&mut out, b"content-length", b"0");
        push_header(&mut out, b"server", self.config.server_name.as_bytes());
        push_adds(&mut out, adds.mutations, |_| false, adds.context.as_ref());
        if !keep_alive {
            push_header(&mut out, b"connection", b"close");
        }
        out.extend_from_slice(b"\r\n");
        write_all(down, out, self.config.stream_idle_timeout).await.0.is_ok()
    }

    /// A response ringway writes itself (direct responses, errors).
    async fn local_reply(&self, down: &mut Conn, status: u16, body: &str, keep_alive: bool) -> bool {
        self.local_reply_head_aware(down, status, body, keep_alive, "GET").await
    }

    async fn local_reply_head_aware(
        &self,
        down: &mut Conn,
        status: u16,
        body: &str,
        keep_alive: bool,
        method: &str,
    ) -> bool {
        self.direct_reply(down, status, body, keep_alive, method, &Adds::none()).await
    }

    /// A response ringway writes itself, with the route's
    /// `response_headers_to_add` (a direct response) or none (errors).
    async fn direct_reply(
        &self,
        down: &mut Conn,
        status: u16,
        body: &str,
        keep_alive: bool,
        method: &str,
        adds: &Adds<'_>,
    ) -> bool {
        let mut out = Vec::with_capacity(256 + body.len());
        let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
        if !body.is_empty() {
            out.extend_from_slice(b"content-type: text/plain\r\n");
        }
        let _ = write!(out, "content-length: {}\r\nserver: {}\r\n", body.len(), self.config.server_name);
        push_adds(&mut out, adds.mutations, |_| false, adds.context.as_ref());
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if method != "HEAD" {
            out.extend_from_slice(body.as_bytes());
        }
        write_all(down, out, self.config.stream_idle_timeout).await.0.is_ok()
    }

    /// Proxies one request to `cluster`, retrying as the route's retry
    /// policy allows, and streams the response back.
    async fn proxy<'a>(
        &self,
        down: &mut Conn,
        buf: &mut Vec<u8>,
        ex: &Exchange<'_>,
        cluster: &'a Cluster,
    ) -> Outcome<'a> {
        let started = Instant::now();
        let cs = &cluster.stats;
        let is_head = ex.head.method == "HEAD";
        // Upgrades are never retried: the tunnel starts with the first 101.
        let retry = ex.fwd.retry.as_ref().filter(|_| ex.upgrade.is_none());
        let mut body = RequestBody::new(ex.head.body, retry.map_or(0, |_| cluster.buffer_limit), ex.started);
        let mut timing = Timing { route_deadline: None, route_timeout: ex.fwd.timeout, upstream_host: None };
        let mut retries_left = retry.map_or(0, |r| r.num_retries);
        let mut attempts: u32 = 0;
        let (mut conn, host, response, mut ubuf, retry_flags, early) = loop {
            attempts += 1;
            cs.upstream_rq_total.inc();
            let end = self.attempt(down, buf, ex, cluster, &mut body, &mut timing).await;
            if let AttemptEnd::Failed(UpstreamFailure::Stale) = end {
                cs.upstream_cx_destroy_remote.inc();
                if !body.fresh_only && body.replayable() && !timing.expired() {
                    // Not a retry: the request never reached a live upstream.
                    body.fresh_only = true;
                    attempts -= 1;
                    continue;
                }
            }
            let retriable = match (&end, retry) {
                (_, None) => false,
                (AttemptEnd::Response { response, .. }, Some(r)) => retriable_status(r, response.status),
                (AttemptEnd::Failed(f), Some(r)) => retriable_failure(r, f),
                (AttemptEnd::Downstream(_), _) => false,
            };
            if retriable && retries_left > 0 && body.replayable() && !timing.expired() {
                retries_left -= 1;
                match &end {
                    AttemptEnd::Response { response, .. } => cs.count_status(response.status),
                    AttemptEnd::Failed(f) => count_failure(cluster, f),
                    AttemptEnd::Downstream(_) => {}
                }
                // The attempt's connection (if any) is dropped, never reused.
                drop(end);
                cs.upstream_rq_retry.inc();
                let backoff = retry.map_or(Duration::ZERO, |r| self.backoff(r, attempts));
                monoio::time::sleep(timing.bound(backoff)).await;
                if !timing.expired() {
                    continue;
                }
                // The route deadline passed during the back-off: no new try.
                let f = UpstreamFailure::Timeout;
                let (flag, details) = f.log_flag();
                let (_, reply) = f.reply();
                let facts = Facts {
                    cluster: Some(cluster.name.as_str()),
                    upstream_host: timing.upstream_host,
                    bytes_received: body.received,
                    ..Facts::local(flag, details, if is_head { 0 } else { reply.len() })
                };
                return self.fail(down, cluster, f, ex.keep_alive && body.complete, is_head, facts).await;
            }
            let mut flags = Flags::NONE;
            if retriable && retries_left == 0 {
                cs.upstream_rq_retry_limit_exceeded.inc();
                flags = Flags::UPSTREAM_RETRY_LIMIT_EXCEEDED;
            }
            // What the log says of a request that ends here.
            let ended = |flags: Flags, details: &'static str, bytes_sent: usize| Facts {
                cluster: Some(cluster.name.as_str()),
                upstream_host: timing.upstream_host,
                bytes_received: body.received,
                ..Facts::local(flags, details, bytes_sent)
            };
            match end {
                AttemptEnd::Response { conn, host, response, ubuf, early } => {
                    if attempts > 1 && !retriable {
                        cs.upstream_rq_retry_success.inc();
                    }
                    break (conn, host, response, ubuf, flags, early);
                }
                AttemptEnd::Failed(f) => {
                    // After a refused upgrade the client may already be
                    // speaking the new protocol: close.
                    let keep = ex.keep_alive && body.complete && ex.upgrade.is_none();
                    let (_, reply) = f.reply();
                    let (flag, details) = f.log_flag();
                    let facts = ended(flags.with(flag), details, if is_head { 0 } else { reply.len() });
                    return self.fail(down, cluster, f, keep, is_head, facts).await;
                }
                AttemptEnd::Downstream(BodyError::Downstream(0)) => {
                    // The client went away mid-request.
                    self.stats.downstream_rq_rx_reset.inc();
                    let facts = ended(Flags::DOWNSTREAM_CONNECTION_TERMINATION, "downstream_remote_disconnect", 0);
                    return Outcome::closing(0, facts);
                }
                AttemptEnd::Downstream(BodyError::Downstream(status)) => {
                    self.stats.downstream_cx_protocol_error.inc();
                    let reply = "bad request body";
                    let _ = self.local_reply(down, status, reply, false).await;
                    let facts = ended(Flags::DOWNSTREAM_PROTOCOL_ERROR, "codec_error", reply.len());
                    return Outcome::closing(status, facts);
                }
                AttemptEnd::Downstream(BodyError::DownstreamTimeout(request_timeout)) => {
                    let (counter, details, reply) = if request_timeout {
                        (&self.stats.downstream_rq_timeout, "request_overall_timeout", "request timeout")
                    } else {
                        (&self.stats.downstream_rq_idle_timeout, "stream_idle_timeout", "stream timeout")
                    };
                    counter.inc();
                    let _ = self.local_reply(down, 408, reply, false).await;
                    let facts = ended(Flags::STREAM_IDLE_TIMEOUT, details, reply.len());
                    return Outcome::closing(408, facts);
                }
                AttemptEnd::Downstream(BodyError::Upstream(_)) => {
                    let f = UpstreamFailure::Reset;
                    let (flag, details) = f.log_flag();
                    let facts = ended(flags.with(flag), details, 0);
                    return self.fail(down, cluster, f, false, is_head, facts).await;
                }
            }
        };
        cs.count_status(response.status);

        let upgraded = ex.upgrade.is_some() && response.status == 101;
        let no_body = is_head || response.status == 204 || response.status == 304 || upgraded;
        let framing = if no_body { ResponseFraming::None } else { response.framing };
        // An HTTP/1.0 client knows no chunks: it gets the bare data, ended by
        // the close.
        let dechunk = framing == ResponseFraming::Chunked && ex.head.minor_version == 0;
        let close_ends_body = framing == ResponseFraming::UntilClose || dechunk;
        // A refused upgrade may leave the client mid-protocol: close after it.
        // So does an early answer: the rest of the body is still to come.
        let downstream_keeps = ex.keep_alive && body.complete && !close_ends_body && (ex.upgrade.is_none() || upgraded);
        let service_ms = started.elapsed().as_millis();
        let upgrade_header = upgraded.then(|| response.header(&ubuf, "upgrade").unwrap_or(b"websocket"));
        // Owned copies of the upstream's headers only when something reads them.
        let dynamic = ex.response_headers.is_dynamic();
        let owned = if dynamic || self.access_log.is_enabled() { response.owned_headers(&ubuf) } else { Vec::new() };
        let context = dynamic.then(|| header_context(ex.head, ex.conn, ex.request_id, response.status, &owned));
        let mut out = std::mem::take(&mut conn.write_buf);
        out.clear();
        self.downstream_response_head(
            &mut out,
            &response,
            &ubuf,
            ex.response_headers,
            (downstream_keeps, !dechunk),
            service_ms,
            upgrade_header,
            context.as_ref(),
        );
        ubuf.drain(..response.head_len);
        // A sized body already read rides in the same write as the head (the
        // usual case for small responses: one write instead of two).
        let mut framing_left = framing;
        if let ResponseFraming::Length(n) = framing {
            let now = (ubuf.len() as u64).min(n).min(COALESCE_BODY as u64) as usize;
            out.extend_from_slice(&ubuf[..now]);
            ubuf.drain(..now);
            framing_left = ResponseFraming::Length(n - now as u64);
        }
        if upgraded {
            // Whatever the upstream sent after its 101 is the tunnel's first bytes.
            out.append(&mut ubuf);
        }
        let coalesced = match (framing, framing_left) {
            (ResponseFraming::Length(n), ResponseFraming::Length(m)) => n - m,
            _ => 0,
        };
        let (r, back) = write_all(down, out, ex.idle).await;
        conn.write_buf = back.unwrap_or_default();
        let mut facts = Facts {
            flags: retry_flags,
            details: "via_upstream",
            cluster: Some(cluster.name.as_str()),
            upstream_host: Some(host.addr),
            upstream_local: None,
            upstream_service_time: Some(Duration::from_millis(service_ms as u64)),
            bytes_received: body.received,
            response_headers: owned,
            ..Facts::default()
        };
        if r.is_err() {
            self.stats.downstream_rq_rx_reset.inc();
            facts.flags = Flags::DOWNSTREAM_CONNECTION_TERMINATION;
            return Outcome::closing(response.status, facts);
        }
        facts.bytes_sent = coalesced;
        if upgraded {
            let mut outcome = Outcome::closing(101, facts);
            outcome.upgraded = Some(Upgraded { conn, idle: ex.idle, buffer: cluster.buffer_limit });
            return outcome;
        }

        // The rest of the response body, streamed as framed.
        let wait = || timing.bound(ex.idle);
        let body_ok = match framing_left {
            // A long sized body moves socket to socket through a pipe,
            // never copied through user space.
            ResponseFraming::Length(n) if n >= SPLICE_MIN && ex.conn.relay == RelayMode::Splice => {
                let (up, sent) = (&mut conn.stream, &mut facts.bytes_sent);
                splice_response_body(up, down, &mut ubuf, n, cluster.buffer_limit, ex.idle, wait, sent).await
            }
            _ => {
                let (up, sent) = (&mut conn.stream, &mut facts.bytes_sent);
                forward_response_body(up, down, &mut ubuf, framing_left, dechunk, ex.idle, wait, sent).await
            }
        };
        conn.read_buf = ubuf;
        let status = response.status;
        match body_ok {
            Ok(leftover_empty) => {
                cs.upstream_rq_time.record_duration(started.elapsed());
                if response.upstream_keep_alive && framing != ResponseFraming::UntilClose && leftover_empty && !early {
                    host.release(conn, cs);
                }
                Outcome::new(status, downstream_keeps, facts)
            }
            Err(BodyCut::Downstream) => {
                self.stats.downstream_rq_rx_reset.inc();
                facts.flags = Flags::DOWNSTREAM_CONNECTION_TERMINATION;
                Outcome::closing(status, facts)
            }
            Err(BodyCut::Upstream(e)) => {
                // The response is cut short: the client sees the connection
                // close before the framing completes.
                self.stats.downstream_rq_tx_reset.inc();
                cs.upstream_rq_rx_reset.inc();
                if timing.expired() {
                    cs.upstream_rq_timeout.inc();
                }
                facts.flags = Flags::UPSTREAM_CONNECTION_TERMINATION;
                if timing.expired() {
                    facts.flags = facts.flags.with(Flags::UPSTREAM_REQUEST_TIMEOUT);
                }
                if let IoFail::Io(e) = e {
                    tracing::debug!(cluster = %cluster.name, "response body cut short: {e}");
                }
                let mut outcome = Outcome::closing(status, facts);
                // Cut short where the close was to end it: only a reset says so.
                outcome.reset = close_ends_body;
                outcome
            }
        }
    }

    /// Envoy's jittered exponential back-off before retry `attempt`
    /// (1-based): uniform in `[0, (2^attempt - 1) * base)`, capped.
    fn backoff(&self, r: &RetryConfig, attempt: u32) -> Duration {
        let factor = (1u64 << attempt.min(20)) - 1;
        let cap = r.max_interval.as_millis() as u64;
        let ceiling = (r.base_interval.as_millis() as u64).saturating_mul(factor).min(cap);
        Duration::from_millis(self.rng.next_u64() % ceiling.max(1))
    }

    /// One try: a connection, the request head and body, the response head.
    #[allow(clippy::too_many_arguments)]
    async fn attempt<'c>(
        &self,
        down: &mut Conn,
        buf: &mut Vec<u8>,
        ex: &Exchange<'_>,
        cluster: &'c Cluster,
        body: &mut RequestBody,
        timing: &mut Timing,
    ) -> AttemptEnd<'c> {
        // A retry's writes are bounded by the route deadline too.
        let idle = timing.bound(ex.idle);
        // A write the upstream refused (reset: its socket was closed) never
        // reached it, so on a pooled connection it is stale; one it stopped
        // taking (timeout) is a stalled upstream, never stale.
        let write_failure = |timing: &Timing, reused: bool, fail: IoFail| match fail {
            _ if timing.expired() => UpstreamFailure::Timeout,
            IoFail::Timeout => UpstreamFailure::StreamIdle,
            IoFail::Io(_) if reused => UpstreamFailure::Stale,
            IoFail::Io(_) => UpstreamFailure::Reset,
        };
        let Some(host) = cluster.pick() else {
            cluster.stats.upstream_cx_none_healthy.inc();
            return AttemptEnd::Failed(UpstreamFailure::NoHost);
        };
        timing.upstream_host = Some(host.addr);
        // A request that can be sent again may take a recently pooled
        // connection unchecked; if the upstream had closed it, the attempt
        // ends `Stale` and is made again on a new connection.
        // Only for a method that may go again after a close before any
        // response byte (a non-idempotent one would then fail as a reset).
        let trust_recent = !body.fresh_only && body.replayable() && idempotent(&ex.head.method);
        let mut conn = match self.upstream_connection(cluster, host, trust_recent).await {
            Ok(c) => c,
            Err(f) => return AttemptEnd::Failed(f),
        };
        if ex.head.expect_continue && !body.continue_sent {
            body.continue_sent = true;
            let (r, _) = write_all(down, b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(), idle).await;
            if r.is_err() {
                return AttemptEnd::Downstream(BodyError::Downstream(0));
            }
        }
        let mut request_head = std::mem::take(&mut conn.write_buf);
        request_head.clear();
        self.upstream_request_head(&mut request_head, ex, host.hostname.as_deref());
        let up = &mut conn.stream;
        let (r, back) = write_all(up, request_head, idle).await;
        if let Err(fail) = r {
            return AttemptEnd::Failed(write_failure(timing, conn.reused(), fail));
        }
        conn.write_buf = back.unwrap_or_default();
        let up = &mut conn.stream;
        // The upstream refusing the rest of the body may have answered
        // first (a 413, a 401): that answer goes to the client, which then
        // sees the connection close. Without one, this is the failure.
        let early = match self.forward_request_body(down, up, buf, body, idle, timing).await {
            Ok(()) => None,
            Err(BodyError::Upstream(IoFail::Io(e))) => Some(write_failure(timing, conn.reused(), IoFail::Io(e))),
            Err(BodyError::Upstream(fail)) => return AttemptEnd::Failed(write_failure(timing, conn.reused(), fail)),
            Err(e) => return AttemptEnd::Downstream(e),
        };
        // The route timeout runs from the end of the request (Envoy's rule)
        // across every attempt; a per-try timeout bounds this one.
        timing.start();
        let per_try = (ex.upgrade.is_none())
            .then(|| ex.fwd.retry.as_ref().and_then(|r| r.per_try_timeout))
            .flatten()
            .map(|t| Instant::now() + t);
        let wait = || {
            let w = timing.bound(idle);
            per_try.map_or(w, |d| w.min(d.saturating_duration_since(Instant::now())))
        };

        // Response head (skipping 1xx interim responses, except the 101 an
        // upgrade waits for).
        let mut ubuf = std::mem::take(&mut conn.read_buf);
        ubuf.clear();
        loop {
            match parse_response_head(&ubuf) {
                Ok(Some(r)) if r.status == 101 && ex.upgrade.is_some() => {
                    return AttemptEnd::Response { conn, host, response: r, ubuf, early: early.is_some() };
                }
                Ok(Some(r)) if (100..200).contains(&r.status) => {
                    ubuf.drain(..r.head_len);
                    continue;
                }
                Ok(Some(r)) => return AttemptEnd::Response { conn, host, response: r, ubuf, early: early.is_some() },
                Ok(None) if ubuf.len() > MAX_RESPONSE_HEAD => return AttemptEnd::Failed(UpstreamFailure::Malformed),
                Ok(None) => {}
                Err(()) => return AttemptEnd::Failed(UpstreamFailure::Malformed),
            }
            let (r, b) = read_more(&mut conn.stream, ubuf, wait()).await;
            ubuf = b;
            match r {
                // After a refused write: what the upstream sent first was all
                // there was. Some of a head and no more is no stale close.
                Ok(0) | Err(IoFail::Io(_)) if let Some(failure) = early => {
                    let failure = match failure {
                        UpstreamFailure::Stale if !ubuf.is_empty() => UpstreamFailure::Reset,
                        f => f,
                    };
                    return AttemptEnd::Failed(failure);
                }
                // A pooled connection closed before any response byte: most
                // likely the upstream closed it while idle, but it may have
                // taken the request first, so only an idempotent one goes
                // again unasked.
                Ok(0) | Err(IoFail::Io(_)) if ubuf.is_empty() && conn.reused() && idempotent(&ex.head.method) => {
                    return AttemptEnd::Failed(UpstreamFailure::Stale);
                }
                Ok(0) | Err(IoFail::Io(_)) => return AttemptEnd::Failed(UpstreamFailure::Reset),
                Ok(_) => {}
                Err(IoFail::Timeout) => {
                    let failure = if timing.expired() {
                        UpstreamFailure::Timeout
                    } else if per_try.is_some_and(|d| Instant::now() >= d) {
                        UpstreamFailure::PerTryTimeout
                    } else {
                        UpstreamFailure::StreamIdle
                    };
                    return AttemptEnd::Failed(failure);
                }
            }
        }
    }

    /// A pooled connection that is still open, or a new one.
    async fn upstream_connection(
        &self,
        cluster: &Cluster,
        host: &Host,
        trust_recent: bool,
    ) -> Result<UpstreamConn, UpstreamFailure> {
        let cs = &cluster.stats;
        if let Some(conn) = host.take_idle(cs, trust_recent) {
            return Ok(conn);
        }
        // No pooled connection: the request waits for a new one.
        cs.upstream_rq_pending_total.inc();
        cs.upstream_rq_pending_active.inc();
        cs.upstream_cx_total.inc();
        cs.upstream_cx_http1_total.inc();
        host.stats.cx_total.inc();
        let connect_started = Instant::now();
        let connected = connect(host.addr, cluster.connect_timeout).await;
        let connected = match (connected, &cluster.tls) {
            // Connected once the handshake is done: connect_timeout covers
            // both (Envoy's rule).
            (Ok(tcp), Some((ctx, tls_stats))) => {
                let left = cluster.connect_timeout.saturating_sub(connect_started.elapsed());
                let stream = crate::tls::connect(tcp, host.addr.ip(), ctx, tls_stats, left).await;
                cs.upstream_rq_pending_active.dec();
                return match stream {
                    Ok(s) => Ok(UpstreamConn::new(s, cs, host)),
                    Err(timed_out) => {
                        if timed_out {
                            cs.upstream_cx_connect_timeout.inc();
                        }
                        cs.upstream_cx_connect_fail.inc();
                        cs.upstream_rq_pending_failure_eject.inc();
                        host.stats.cx_connect_fail.inc();
                        Err(UpstreamFailure::Connect)
                    }
                };
            }
            (other, _) => other,
        };
        cs.upstream_rq_pending_active.dec();
        match connected {
            Ok(c) => Ok(UpstreamConn::new(Conn::Plain(c), cs, host)),
            Err(e) => {
                if e.is_timeout() {
                    cs.upstream_cx_connect_timeout.inc();
                }
                cs.upstream_cx_connect_fail.inc();
                cs.upstream_rq_pending_failure_eject.inc();
                host.stats.cx_connect_fail.inc();
                Err(UpstreamFailure::Connect)
            }
        }
    }

    /// Answers a failed upstream exchange the way Envoy does.
    async fn fail<'a>(
        &self,
        down: &mut Conn,
        cluster: &Cluster,
        f: UpstreamFailure,
        keep_alive: bool,
        is_head: bool,
        facts: Facts<'a>,
    ) -> Outcome<'a> {
        let (status, body) = f.reply();
        count_failure(cluster, &f);
        if matches!(f, UpstreamFailure::StreamIdle) {
            self.stats.downstream_rq_idle_timeout.inc();
        }
        let method = if is_head { "HEAD" } else { "GET" };
        let ok = self.local_reply_head_aware(down, status, body, keep_alive, method).await;
        Outcome::new(status, keep_alive && ok, facts)
    }

    /// Writes the request head to send upstream into `out`.
    fn upstream_request_head(&self, out: &mut Vec<u8>, ex: &Exchange<'_>, upstream_hostname: Option<&str>) {
        let head = ex.head;
        let rewrite = Rewrite { fwd: ex.fwd, matched: ex.matched };
        let mutations = ex.request_headers;
        out.extend_from_slice(head.method.as_bytes());
        out.push(b' ');
        // Upstream requests are origin-form; an absolute-form target's
        // authority becomes the Host (RFC 9112 §3.2.2).
        let absolute = split_absolute(&head.target);
        let target = absolute.as_ref().map_or(head.target.as_str(), |(_, origin)| origin.as_ref());
        rewrite.write_path(out, target);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let hop = hop_by_hop(request_fields(head));
        let host_rewrite =
            ex.fwd.host_rewrite.as_deref().or(if ex.fwd.auto_host_rewrite { upstream_hostname } else { None });
        let mut has_xfp = false;
        let mut has_request_id = false;
        let mut xff: Option<Vec<u8>> = None;
        let mut length_sent = false;
        for (name, value) in request_fields(head) {
            if hop.contains(name) || name.eq_ignore_ascii_case(b"expect") || drops(mutations, name) {
                continue;
            }
            let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
            if is("host") && (host_rewrite.is_some() || absolute.is_some()) {
                continue;
            } else if is("content-length") {
                // Every value agreed (h1 checked): one plain one goes on.
                if !std::mem::replace(&mut length_sent, true) {
                    let first = value.split(|&b| b == b',').next().unwrap_or_default();
                    push_header(out, name, first.trim_ascii());
                }
                continue;
            } else if is("x-forwarded-for") {
                // Several x-forwarded-for headers are one list.
                match &mut xff {
                    Some(list) => {
                        list.extend_from_slice(b", ");
                        list.extend_from_slice(value);
                    }
                    None => xff = Some(value.to_vec()),
                }
                continue;
            } else if is("x-forwarded-proto") {
                // With use_remote_address ringway is the edge and says the
                // scheme itself; otherwise a client's value passes through.
                if self.config.use_remote_address {
                    continue;
                }
                has_xfp = true;
            } else if is("x-request-id") {
                has_request_id = true;
            }
            push_header(out, name, value);
        }
        if let Some(h) = host_rewrite {
            push_header(out, b"host", h.as_bytes());
        } else if let Some((authority, _)) = &absolute {
            push_header(out, b"host", authority.as_bytes());
        } else if head.minor_version == 0 && head.header("host").is_none() {
            push_header(out, b"host", b"");
        }
        // Envoy appends the peer to x-forwarded-for only with use_remote_address.
        let append = self.config.use_remote_address && !self.config.skip_xff_append;
        if xff.is_some() || append {
            out.extend_from_slice(b"x-forwarded-for: ");
            if let Some(list) = &xff {
                out.extend_from_slice(list);
            }
            if append {
                if xff.is_some() {
                    out.extend_from_slice(b", ");
                }
                let _ = write!(out, "{}", ex.conn.peer.ip());
            }
            out.extend_from_slice(b"\r\n");
        }
        if !has_xfp {
            push_header(out, b"x-forwarded-proto", ex.conn.scheme.as_bytes());
        }
        if let (false, Some(id)) = (has_request_id, ex.request_id) {
            push_header(out, b"x-request-id", id.as_bytes());
        }
        if let Some(via) = &self.config.via {
            push_header(out, b"via", via.as_bytes());
        }
        if let (Some(_), Some(value)) = (ex.upgrade, head.header("upgrade")) {
            push_header(out, b"connection", b"upgrade");
            push_header(out, b"upgrade", value);
        }
        let context = mutations.is_dynamic().then(|| header_context(head, ex.conn, ex.request_id, 0, &[]));
        push_adds(out, mutations, |n| head.header(n).is_some(), context.as_ref());
        out.extend_from_slice(b"\r\n");
    }

    /// Writes the response head to send downstream into `out`; `raw` is the
    /// buffer `r` was parsed from.
    #[allow(clippy::too_many_arguments)]
    fn downstream_response_head(
        &self,
        out: &mut Vec<u8>,
        r: &ResponseHead,
        raw: &[u8],
        mutations: &HeaderMutations,
        (keep_alive, chunks): (bool, bool),
        service_ms: u128,
        upgrade: Option<&[u8]>,
        context: Option<&LogContext<'_>>,
    ) {
        out.extend_from_slice(b"HTTP/1.1 ");
        write_u64(out, u64::from(r.status));
        out.push(b' ');
        out.extend_from_slice(&raw[r.reason.clone()]);
        out.extend_from_slice(b"\r\n");
        let hop = hop_by_hop(r.fields(raw));
        for (name, value) in r.fields(raw) {
            // Framing is re-added below as this hop frames it.
            if hop.contains(name)
                || name.eq_ignore_ascii_case(b"server")
                || name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"content-length")
                || drops(mutations, name)
            {
                continue;
            }
            push_header(out, name, value);
        }
        push_adds(out, mutations, |n| r.header(raw, n).is_some(), context);
        match r.framing {
            // One plain value, however the upstream spelled it.
            ResponseFraming::Length(n) => {
                out.extend_from_slice(b"content-length: ");
                write_u64(out, n);
                out.extend_from_slice(b"\r\n");
            }
            ResponseFraming::Chunked if upgrade.is_none() && chunks => {
                push_header(out, b"transfer-encoding", b"chunked");
            }
            _ => {}
        }
        push_header(out, b"server", self.config.server_name.as_bytes());
        out.extend_from_slice(b"x-envoy-upstream-service-time: ");
        write_u64(out, u64::try_from(service_ms).unwrap_or(u64::MAX));
        out.extend_from_slice(b"\r\n");
        if let Some(via) = &self.config.via {
            push_header(out, b"via", via.as_bytes());
        }
        if let Some(kind) = upgrade {
            push_header(out, b"connection", b"upgrade");
            push_header(out, b"upgrade", kind);
        } else if !keep_alive {
            push_header(out, b"connection", b"close");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Streams the request body from `down` (starting with what is already in
    /// `buf`) to `up`; on a retry, first replays what earlier attempts sent.
    /// On return, `buf` holds only bytes after the body.
    async fn forward_request_body(
        &self,
        down: &mut Conn,
        up: &mut Conn,
        buf: &mut Vec<u8>,
        body: &mut RequestBody,
        idle: Duration,
        timing: &Timing,
    ) -> Result<(), BodyError> {
        let request_deadline = self.config.request_timeout.map(|t| body.started + t);
        let wait = || match request_deadline {
            Some(d) => idle.min(d.saturating_duration_since(Instant::now())),
            None => idle,
        };
        // An upstream that stops taking the body: the request is still
        // arriving, so this is the stream's timeout, answered as a read's.
        // A retry's writes are bounded by the route deadline too: past it,
        // the request timed out upstream (504).
        let write_error = |fail: IoFail| match fail {
            IoFail::Timeout if !timing.expired() => {
                BodyError::DownstreamTimeout(request_deadline.is_some_and(|d| Instant::now() >= d))
            }
            fail => BodyError::Upstream(fail),
        };
        // What an earlier attempt sent goes first, whole.
        if let Some(sent) = body.replay.take_if(|sent| !sent.is_empty()) {
            let n = sent.len();
            let (r, back) = write_range(up, sent, 0..n, wait()).await;
            body.replay = (back.len() == n).then_some(back);
            r.map_err(write_error)?;
        }
        if body.complete {
            return Ok(());
        }
        loop {
            // How much of `buf` belongs to the body; it is forwarded raw.
            let (used, done) = match &mut body.progress {
                BodyProgress::Length(left) => {
                    let n = (buf.len() as u64).min(*left) as usize;
                    *left -= n as u64;
                    (n, *left == 0)
                }
                BodyProgress::Chunked(decoder) => decoder.scan(buf).map_err(|e| BodyError::Downstream(e.status()))?,
            };
            body.keep(&buf[..used]);
            body.received += used as u64;
            let had = buf.len();
            let (r, b) = write_range(up, std::mem::take(buf), 0..used, wait()).await;
            // The bytes are counted as sent (and kept) even if the write
            // failed: a retry sends them from the kept copy.
            let lost = b.len() != had;
            *buf = b;
            buf.drain(..used.min(buf.len()));
            if let Err(fail) = r {
                if lost {
                    // A cancelled write takes the buffer, and what was read
                    // past this piece with it: the body cannot be sent again.
                    body.replay = None;
                }
                return Err(write_error(fail));
            }
            if done {
                body.complete = true;
                return Ok(());
            }
            let (r, b) = read_more(down, std::mem::take(buf), wait()).await;
            *buf = b;
            match r {
                Ok(0) | Err(IoFail::Io(_)) => return Err(BodyError::Downstream(0)),
                Ok(_) => {}
                Err(IoFail::Timeout) => {
                    let by_request_timeout = request_deadline.is_some_and(|d| Instant::now() >= d);
                    return Err(BodyError::DownstreamTimeout(by_request_timeout));
                }
            }
        }
    }
}

/// Streams the response body from `up` to `down`; `Ok(true)` when the
/// upstream sent nothing past the body (so its connection can be reused).
/// Response bodies at least this long (after what rode with the head) are
/// spliced.
const SPLICE_MIN: u64 = 128 * 1024;

/// Moves the `len` remaining bytes of a sized response body from `up` to
/// `down`: first what is already in `ubuf`, then the rest with splice. Falls
/// back to copying when no pipe can be had. `Ok(true)`: nothing was read
/// past the body.
#[allow(clippy::too_many_arguments)]
async fn splice_response_body(
    up_conn: &mut Conn,
    down_conn: &mut Conn,
    ubuf: &mut Vec<u8>,
    len: u64,
    pipe_size: usize,
    idle: Duration,
    wait: impl Fn() -> Duration,
    sent: &mut u64,
) -> Result<bool, BodyCut> {
    let mut left = len;
    if !ubuf.is_empty() {
        let n = (ubuf.len() as u64).min(left) as usize;
        let (r, b) = write_range(down_conn, std::mem::take(ubuf), 0..n, idle).await;
        *ubuf = b;
        r.map_err(|_| BodyCut::Downstream)?;
        ubuf.drain(..n.min(ubuf.len()));
        *sent += n as u64;
        left -= n as u64;
    }
    // Splice needs both ends to be plain sockets.
    let setup = match (up_conn.plain(), down_conn.plain()) {
        (Some(up), Some(down)) => (|| -> io::Result<_> {
            let pipe = splice::take_pipe(pipe_size)?;
            Ok((pipe, NonBlocking::set(up)?, NonBlocking::set(down)?, up, down))
        })()
        .ok(),
        _ => None,
    };
    let Some((pipe, up_guard, down_guard, up, down)) = setup else {
        let framing = ResponseFraming::Length(left);
        return forward_response_body(up_conn, down_conn, ubuf, framing, false, idle, wait, sent).await;
    };
    let result = splice::pump_exact(up, down, &pipe, left, wait, &mut |n| *sent += n).await;
    drop((up_guard, down_guard));
    match result {
        Ok(()) => {
            splice::return_pipe(pipe);
            Ok(ubuf.is_empty())
        }
        Err(SpliceCut::Destination(_)) => Err(BodyCut::Downstream),
        Err(SpliceCut::Source(e)) if e.kind() == io::ErrorKind::TimedOut => Err(BodyCut::Upstream(IoFail::Timeout)),
        Err(SpliceCut::Source(e)) => Err(BodyCut::Upstream(IoFail::Io(e))),
    }
}

/// `dechunk`: a chunked body goes out as its bare data (to an HTTP/1.0
/// client, which knows no chunks: the close ends it), its trailers dropped.
#[allow(clippy::too_many_arguments)]
async fn forward_response_body(
    up: &mut Conn,
    down: &mut Conn,
    ubuf: &mut Vec<u8>,
    framing: ResponseFraming,
    dechunk: bool,
    idle: Duration,
    wait: impl Fn() -> Duration,
    sent: &mut u64,
) -> Result<bool, BodyCut> {
    let mut decoder = ChunkedDecoder::new();
    let mut left = match framing {
        ResponseFraming::None | ResponseFraming::Length(0) => return Ok(ubuf.is_empty()),
        ResponseFraming::Length(n) => n,
        _ => u64::MAX,
    };
    let malformed = || BodyCut::Upstream(IoFail::Io(io::ErrorKind::InvalidData.into()));
    loop {
        // Bytes to send from the start of `ubuf`, bytes of it used up.
        let (take, used, done) = match framing {
            ResponseFraming::Length(_) => {
                let n = (ubuf.len() as u64).min(left) as usize;
                left -= n as u64;
                (n, n, left == 0)
            }
            ResponseFraming::Chunked if dechunk => dechunk_in_place(&mut decoder, ubuf).map_err(|_| malformed())?,
            ResponseFraming::Chunked => {
                let (n, done) = decoder.scan(ubuf).map_err(|_| malformed())?;
                (n, n, done)
            }
            _ => (ubuf.len(), ubuf.len(), false),
        };
        let (r, b) = write_range(down, std::mem::take(ubuf), 0..take, idle).await;
        *ubuf = b;
        r.map_err(|_| BodyCut::Downstream)?;
        *sent += take as u64;
        ubuf.drain(..used.min(ubuf.len()));
        if done {
            return Ok(ubuf.is_empty());
        }
        let (r, b) = read_more(up, std::mem::take(ubuf), wait()).await;
        *ubuf = b;
        match r.map_err(BodyCut::Upstream)? {
            0 if framing == ResponseFraming::UntilClose => return Ok(false),
            0 => return Err(BodyCut::Upstream(IoFail::Io(io::ErrorKind::UnexpectedEof.into()))),
            _ => {}
        }
    }
}

/// Decodes the chunked body at the start of `buf` in place: its data moves
/// to the front. Returns the data's length, the bytes of `buf` used, and
/// whether the body ended.
fn dechunk_in_place(decoder: &mut ChunkedDecoder, buf: &mut [u8]) -> Result<(usize, usize, bool), HeadError> {
    let (mut data, mut used) = (0, 0);
    while used < buf.len() {
        let (chunk, n) = decoder.decode(&buf[used..])?;
        match chunk {
            Chunk::Data { at, len } => {
                buf.copy_within(used + at..used + at + len, data);
                data += len;
            }
            Chunk::End { .. } => return Ok((data, used + n, true)),
            Chunk::NeedMore => return Ok((data, used + n, false)),
        }
        used += n;
    }
    Ok((data, used, false))
}

/// An absolute-form target (`GET http://user@host:80/p?q`) split into its
/// authority (`host:80`, user info dropped) and origin-form rest (`/p?q`).
fn split_absolute(target: &str) -> Option<(&str, std::borrow::Cow<'_, str>)> {
    let scheme_end = target.find("://")?;
    let scheme = &target[..scheme_end];
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let tail = &rest[end..];
    let origin = if tail.starts_with('/') { tail.into() } else { format!("/{tail}").into() };
    Some((authority, origin))
}

/// The `location` of a redirect: the request's URL with the parts the
/// route's `redirect` names replaced.
fn redirect_location(rd: &RedirectConfig, matched: &PathMatch, host: &str, target: &str) -> String {
    let origin = split_absolute(target).map_or_else(|| target.to_string(), |(_, o)| o.into_owned());
    let (path, query) = match origin.find('?') {
        Some(i) => (&origin[..i], &origin[i..]),
        None => (origin.as_str(), ""),
    };
    let scheme = rd.scheme.as_deref().unwrap_or("http");
    let (host_name, host_port) = match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) && !host[..i].contains(':') => {
            (&host[..i], Some(&host[i + 1..]))
        }
        Some(i) if host.starts_with('[') && host[..i].ends_with(']') => (&host[..i], Some(&host[i + 1..])),
        _ => (host, None),
    };
    let host_name = rd.host.as_deref().unwrap_or(host_name);
    // A host_redirect that names its own port replaces the request's port.
    let redirect_has_port = rd.host.as_deref().is_some_and(|h| {
        h.rsplit_once(':').is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    let host_port = if redirect_has_port { None } else { host_port };
    let port = match (rd.port, host_port) {
        (Some(p), _) => Some(p.to_string()),
        // A new scheme drops the old scheme's port.
        (None, Some(p)) if rd.scheme.is_none() && !p.is_empty() => Some(p.to_string()),
        _ => None,
    };
    let new_path = match (&rd.path, &rd.prefix_rewrite, matched) {
        (Some(p), _, _) => p.clone(),
        (None, Some(rw), PathMatch::Prefix(prefix))
            if path.len() >= prefix.len() && path.is_char_boundary(prefix.len()) =>
        {
            format!("{rw}{}", &path[prefix.len()..])
        }
        (None, Some(rw), _) => rw.clone(),
        (None, None, _) => path.to_string(),
    };
    // A query in path_redirect replaces the request's; otherwise it is kept
    // unless strip_query.
    let query = if new_path.contains('?') || rd.strip_query { "" } else { query };
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    format!("{scheme}://{host_name}{port}{new_path}{query}")
}

/// The host and path (with its query) a request is routed by. An absolute-form target names
/// both; otherwise Host and the origin-form path.
fn route_key(head: &RequestHead) -> (Cow<'_, str>, Cow<'_, str>) {
    match split_absolute(&head.target) {
        Some((authority, origin)) => (Cow::Borrowed(authority), origin),
        None => {
            let host = head.header("host").and_then(|h| std::str::from_utf8(h).ok()).unwrap_or("");
            (Cow::Borrowed(host), Cow::Borrowed(head.target.as_str()))
        }
    }
}

#[derive(Clone, Copy)]
struct HeadRules {
    limits: Limits,
    request_headers_timeout: Duration,
    idle_timeout: Duration,
    max_connection_duration: Option<Duration>,
}

/// Reads until `buf` holds a complete request head. Waiting for a request to
/// start is idle time; once bytes arrive, the head must complete within
/// `request_headers_timeout`.
async fn read_head(rules: HeadRules, down: &mut Conn, buf: &mut Vec<u8>) -> HeadRead {
    let mut head_deadline = (!buf.is_empty()).then(|| Instant::now() + rules.request_headers_timeout);
    let mut scan = h1::HeadScan::default();
    loop {
        match scan.parse(buf, &rules.limits) {
            Ok(Some((head, n))) => return HeadRead::Head(head, n),
            Ok(None) => {}
            Err(e) => return HeadRead::Refused(e),
        }
        let wait = match head_deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => rules.idle_timeout,
        };
        let (r, b) = read_more(down, std::mem::take(buf), wait).await;
        *buf = b;
        match r {
            Ok(0) if buf.is_empty() => return HeadRead::Closed,
            Ok(0) => return HeadRead::Refused(HeadError::BadRequest("connection closed mid-request")),
            Ok(_) => {
                head_deadline.get_or_insert_with(|| Instant::now() + rules.request_headers_timeout);
            }
            Err(IoFail::Timeout) if head_deadline.is_some() => return HeadRead::TimedOut,
            Err(_) => return HeadRead::Closed,
        }
    }
}

enum HeadRead {
    Head(RequestHead, usize),
    Closed,
    Refused(HeadError),
    TimedOut,
}

/// Which side ended a response body early.
enum BodyCut {
    /// The client stopped taking it (gone, or stalled past the idle timeout).
    Downstream,
    Upstream(IoFail),
}

enum BodyError {
    /// The client's body was bad or it went away; the status to answer, or 0.
    Downstream(u16),
    /// The client sent nothing for the stream idle timeout, or (true) the
    /// request_timeout passed.
    DownstreamTimeout(bool),
    /// A write to the upstream failed, or timed out.
    Upstream(IoFail),
}

/// The path rewrite of a matched route.
struct Rewrite<'a> {
    fwd: &'a ForwardConfig,
    matched: &'a PathMatch,
}

impl Rewrite<'_> {
    /// `prefix_rewrite` replaces the matched prefix (or the whole matched
    /// path); `regex_rewrite` replaces every match in the path. The query is
    /// kept as it was.
    fn write_path(&self, out: &mut Vec<u8>, target: &str) {
        let (path, query) = match target.find('?') {
            Some(i) => (&target[..i], &target[i..]),
            None => (target, ""),
        };
        if let Some((re, substitution)) = &self.fwd.regex_rewrite {
            out.extend_from_slice(re.replace_all(path, substitution.as_str()).as_bytes());
        } else if let Some(new_prefix) = self.fwd.prefix_rewrite.as_deref() {
            let rest = match self.matched {
                PathMatch::Prefix(p) | PathMatch::SeparatedPrefix(p) if path.len() >= p.len() => &path[p.len()..],
                _ => "",
            };
            out.extend_from_slice(new_prefix.as_bytes());
            out.extend_from_slice(rest.as_bytes());
        } else {
            out.extend_from_slice(path.as_bytes());
        }
        out.extend_from_slice(query.as_bytes());
    }

    #[cfg(test)]
    fn path(&self, target: &str) -> String {
        let mut out = Vec::new();
        self.write_path(&mut out, target);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseFraming {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

struct ResponseHead {
    status: u16,
    /// Where the reason phrase and each header's name and value are in the
    /// buffer the head was parsed from: the head is not copied.
    reason: Range<usize>,
    headers: Vec<(Range<usize>, Range<usize>)>,
    head_len: usize,
    framing: ResponseFraming,
    upstream_keep_alive: bool,
}

impl ResponseHead {
    /// Name and value of each header, in order, from the parsed buffer.
    fn fields<'b>(&'b self, raw: &'b [u8]) -> impl Iterator<Item = (&'b [u8], &'b [u8])> + 'b {
        self.headers.iter().map(move |(n, v)| (&raw[n.clone()], &raw[v.clone()]))
    }

    fn header<'b>(&'b self, raw: &'b [u8], name: &str) -> Option<&'b [u8]> {
        self.fields(raw).find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }

    /// An owned copy, for the access log and `%RESP(...)%`.
    fn owned_headers(&self, raw: &[u8]) -> Vec<(String, Vec<u8>)> {
        self.fields(raw).map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), v.to_vec())).collect()
    }
}

/// Parses an upstream response head; `Err` for anything malformed or
/// ambiguous (both framings, conflicting lengths, unknown codings).
fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, ()> {
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let head_len =
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut slots) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(()),
        };
    let (Some(status), Some(minor)) = (resp.code, resp.version) else { return Err(()) };
    if !(100..600).contains(&status) {
        return Err(());
    }
    // httparse hands out slices of `buf`; keep their positions.
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let mut headers = Vec::with_capacity(resp.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = minor == 0;
    for h in resp.headers.iter() {
        let (name, value) = (h.name, h.value);
        headers.push((span(name.as_bytes()), span(value)));
        if name.eq_ignore_ascii_case("content-length") {
            // Digits only, as for requests; `5, 5` is one length said twice.
            for part in value.split(|&b| b == b',') {
                let n = h1::parse_length(part.trim_ascii()).ok_or(())?;
                if length.is_some_and(|l| l != n) {
                    return Err(());
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.trim_ascii().eq_ignore_ascii_case(b"chunked") || chunked {
                return Err(());
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',') {
                let t = token.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && minor == 0 {
                    close = false;
                }
            }
        }
    }
    let framing = match (chunked, length) {
        (true, Some(_)) => return Err(()),
        (true, None) => ResponseFraming::Chunked,
        (false, Some(n)) => ResponseFraming::Length(n),
        (false, None) if (100..200).contains(&status) || status == 204 || status == 304 => ResponseFraming::None,
        (false, None) => ResponseFraming::UntilClose,
    };
    let reason = resp.reason.map_or(0..0, |r| span(r.as_bytes()));
    Ok(Some(ResponseHead { status, reason, headers, head_len, framing, upstream_keep_alive: !close }))
}

/// Headers that describe one hop and are never forwarded: the standard set
/// plus any named in `Connection`. (Transfer-Encoding is framing; the
/// response side re-adds it, the request side forwards it as validated.)
struct HopByHop<'h> {
    /// Extra names from `Connection` (allocated only when there are some).
    named: Vec<&'h [u8]>,
}

const HOP_BY_HOP: [&[u8]; 6] = [b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"];

impl HopByHop<'_> {
    fn contains(&self, name: &[u8]) -> bool {
        HOP_BY_HOP.iter().chain(self.named.iter()).any(|h| h.eq_ignore_ascii_case(name))
    }
}

fn hop_by_hop<'h>(headers: impl Iterator<Item = (&'h [u8], &'h [u8])>) -> HopByHop<'h> {
    let mut named = Vec::new();
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case(b"connection") {
            continue;
        }
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            let kept = [&b""[..], b"close", b"content-length", b"transfer-encoding", b"host"]
                .iter()
                .chain(HOP_BY_HOP.iter())
                .any(|t| t.eq_ignore_ascii_case(token));
            if !kept {
                named.push(token);
            }
        }
    }
    HopByHop { named }
}

/// A request's headers as name and value bytes.
fn request_fields(head: &RequestHead) -> impl Iterator<Item = (&[u8], &[u8])> {
    head.headers.iter().map(|(n, v)| (n.as_bytes(), v.as_slice()))
}

/// Whether a header named `name` from the other side is dropped by `m`:
/// removed, or about to be overwritten by one of its adds.
fn drops(m: &HeaderMutations, name: &[u8]) -> bool {
    !m.is_empty()
        && (m.remove.iter().any(|r| r.as_bytes().eq_ignore_ascii_case(name))
            || m.add.iter().any(|a| {
                a.name.as_bytes().eq_ignore_ascii_case(name)
                    && matches!(a.action, AppendAction::OverwriteIfExistsOrAdd | AppendAction::OverwriteIfExists)
            }))
}

/// Writes `m`'s adds; `original` (whether the other side has a header of
/// that name) decides the conditional ones. A header removed by `m` counts
/// as absent.
fn push_adds(out: &mut Vec<u8>, m: &HeaderMutations, original: impl Fn(&str) -> bool, ctx: Option<&LogContext<'_>>) {
    let present = |name: &str| !m.remove.iter().any(|r| r == name) && original(name);
    for a in &m.add {
        let write = match a.action {
            AppendAction::AppendIfExistsOrAdd | AppendAction::OverwriteIfExistsOrAdd => true,
            AppendAction::AddIfAbsent => !present(&a.name),
            AppendAction::OverwriteIfExists => present(&a.name),
        };
        if !write {
            continue;
        }
        match (&a.format, ctx) {
            (Some(format), Some(ctx)) => {
                let mut value = Vec::new();
                format.render_missing_as(ctx, &mut value, b"");
                // A rendered value cannot break the head: control bytes go.
                value.retain(|&b| b != b'\r' && b != b'\n' && b != 0);
                if !value.is_empty() {
                    push_header(out, a.name.as_bytes(), &value);
                }
            }
            // No context (cannot happen for callers that check is_dynamic):
            // leave the header out rather than send the raw template.
            (Some(_), None) => {}
            (None, _) => push_header(out, a.name.as_bytes(), a.value.as_bytes()),
        }
    }
}

/// Header additions with the context their `%VARIABLE%` values render in.
struct Adds<'a> {
    mutations: &'a HeaderMutations,
    context: Option<LogContext<'a>>,
}

impl<'a> Adds<'a> {
    fn new(mutations: &'a HeaderMutations, head: &'a RequestHead, conn: &ConnInfo, status: u16) -> Self {
        let context = mutations.is_dynamic().then(|| header_context(head, conn, None, status, &[]));
        Adds { mutations, context }
    }

    fn none() -> Self {
        Adds { mutations: &NO_MUTATIONS, context: None }
    }
}

/// What a header value's `%VARIABLE%` operators can see: the request, the
/// connection, and (for response headers) the status and upstream headers.
fn header_context<'a>(
    head: &'a RequestHead,
    conn: &ConnInfo,
    request_id: Option<&'a str>,
    status: u16,
    response_headers: &'a [(String, Vec<u8>)],
) -> LogContext<'a> {
    LogContext {
        start: SystemTime::now(),
        method: &head.method,
        target: &head.target,
        protocol: if head.minor_version == 0 { "HTTP/1.0" } else { "HTTP/1.1" },
        scheme: conn.scheme,
        request_headers: &head.headers,
        request_id,
        response_headers,
        response_code: status,
        response_flags: "",
        response_code_details: "",
        bytes_received: 0,
        bytes_sent: 0,
        duration: Duration::ZERO,
        request_duration: None,
        response_duration: None,
        upstream_service_time: None,
        upstream_host: None,
        upstream_cluster: None,
        upstream_local: None,
        downstream_remote: conn.client,
        downstream_direct_remote: conn.peer,
        downstream_local: conn.local,
        route_name: None,
        connection_id: conn.id,
    }
}

/// Whether any route's header additions render per request.
fn has_dynamic_headers(routes: &crate::config::RouteTable) -> bool {
    routes.virtual_hosts.iter().flat_map(|v| &v.routes).any(|r| {
        r.request_headers.is_dynamic()
            || r.response_headers.is_dynamic()
            || match &r.action {
                RouteActionConfig::Forward(f) => match &f.target {
                    ForwardTarget::Weighted { clusters, .. } => {
                        clusters.iter().any(|w| w.request_headers.is_dynamic() || w.response_headers.is_dynamic())
                    }
                    ForwardTarget::Cluster(_) => false,
                },
                _ => false,
            }
    })
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A random (version 4) UUID for `x-request-id`, formatted without
/// allocating.
struct RequestId([u8; 36]);

impl RequestId {
    fn as_str(&self) -> &str {
        // Only ASCII hex digits and dashes are ever written.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

fn uuid4(rng: &Rng) -> RequestId {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (a, b) = (rng.next_u64(), rng.next_u64());
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let bits = (u128::from(a) << 64) | u128::from(b);
    let mut out = [b'-'; 36];
    let mut nibble = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        *slot = HEX[((bits >> (124 - 4 * nibble)) & 0xf) as usize];
        nibble += 1;
    }
    RequestId(out)
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Entity",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        511 => "Network Authentication Required",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads_frame_strictly() {
        let ok = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap().unwrap();
        assert_eq!((ok.status, ok.framing, ok.upstream_keep_alive), (200, ResponseFraming::Length(5), true));
        let ch = parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!(ch.framing, ResponseFraming::Chunked);
        let close = parse_response_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((close.framing, close.upstream_keep_alive), (ResponseFraming::UntilClose, false));
        assert_eq!(
            parse_response_head(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap().unwrap().framing,
            ResponseFraming::None
        );
        assert!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n").is_err()
        );
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n").is_err());
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").is_err());
        assert!(parse_response_head(b"HTTP/1.1 999 What\r\n\r\n").is_err());
        assert!(parse_response_head(b"garbage\r\n\r\n").is_err());
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
    }

    #[test]
    fn path_rewrites_keep_the_rest_and_the_query() {
        let fwd = |prefix: Option<&str>, regex: Option<(&str, &str)>| ForwardConfig {
            target: ForwardTarget::Cluster(ClusterId(0)),
            prefix_rewrite: prefix.map(str::to_string),
            regex_rewrite: regex.map(|(re, sub)| (regex::Regex::new(re).unwrap(), sub.to_string())),
            host_rewrite: None,
            auto_host_rewrite: false,
            timeout: None,
            idle_timeout: None,
            retry: None,
            upgrades: vec![],
        };
        let m = PathMatch::Prefix("/api/".into());
        let prefixed = fwd(Some("/"), None);
        assert_eq!(Rewrite { fwd: &prefixed, matched: &m }.path("/api/users?id=1"), "/users?id=1");
        let plain = fwd(None, None);
        assert_eq!(Rewrite { fwd: &plain, matched: &m }.path("/api/x"), "/api/x");
        let sep = PathMatch::SeparatedPrefix("/v1".into());
        assert_eq!(Rewrite { fwd: &fwd(Some("/v2"), None), matched: &sep }.path("/v1/a"), "/v2/a");
        // Envoy's documented example: /service/foo/v1/api → /v1/api/instance/foo.
        let re = fwd(None, Some(("^/service/([^/]+)(/.*)$", "${2}/instance/${1}")));
        assert_eq!(Rewrite { fwd: &re, matched: &m }.path("/service/foo/v1/api?x=1"), "/v1/api/instance/foo?x=1");
    }

    #[test]
    fn absolute_targets_split_into_authority_and_origin() {
        let cases = [
            ("http://h/api/x?q=1", Some(("h", "/api/x?q=1"))),
            ("HTTPS://user:pw@h:8443/", Some(("h:8443", "/"))),
            ("http://h?q", Some(("h", "/?q"))),
            ("http://h", Some(("h", "/"))),
            ("/origin/form", None),
            ("ftp://h/x", None),
        ];
        for (target, want) in cases {
            let got = split_absolute(target);
            assert_eq!(got.as_ref().map(|(a, o)| (*a, o.as_ref())), want, "{target}");
        }
    }

    #[test]
    fn redirects_replace_only_what_they_name() {
        let base = RedirectConfig {
            scheme: None,
            host: None,
            port: None,
            path: None,
            prefix_rewrite: None,
            status: 301,
            strip_query: false,
        };
        let prefix = PathMatch::Prefix("/old/".into());
        let https = RedirectConfig { scheme: Some("https".into()), ..base.clone() };
        let cases = [
            (&https, "a.com:8080", "/x?q=1", "https://a.com/x?q=1"),
            (&RedirectConfig { host: Some("b.com".into()), ..base.clone() }, "a.com:8080", "/x", "http://b.com:8080/x"),
            (&RedirectConfig { port: Some(9000), ..base.clone() }, "a.com", "/x", "http://a.com:9000/x"),
            (
                &RedirectConfig { host: Some("b.com:81".into()), ..base.clone() },
                "a.com:8080",
                "/x",
                "http://b.com:81/x",
            ),
            (&RedirectConfig { path: Some("/new".into()), ..base.clone() }, "a.com", "/x?q=1", "http://a.com/new?q=1"),
            (
                &RedirectConfig { path: Some("/new?z=2".into()), ..base.clone() },
                "a.com",
                "/x?q=1",
                "http://a.com/new?z=2",
            ),
            (
                &RedirectConfig { prefix_rewrite: Some("/new/".into()), ..base.clone() },
                "a.com",
                "/old/p",
                "http://a.com/new/p",
            ),
            (&RedirectConfig { strip_query: true, ..base.clone() }, "a.com", "/x?q=1", "http://a.com/x"),
        ];
        for (rd, host, target, want) in cases {
            assert_eq!(redirect_location(rd, &prefix, host, target), want, "{target}");
        }
    }

    #[test]
    fn request_ids_look_like_uuid4() {
        let id = uuid4(&Rng::new(7));
        let id = id.as_str();
        let rng = Rng::new(7);
        let (a, b) = (rng.next_u64(), rng.next_u64());
        let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
        let want = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        );
        assert_eq!(id, want);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
    }

    #[test]
    fn hop_by_hop_includes_connection_tokens() {
        let h: [(&[u8], &[u8]); 1] = [(b"Connection", b"close, X-Secret")];
        let hop = hop_by_hop(h.into_iter());
        assert!(hop.contains(b"x-secret") && hop.contains(b"Connection") && hop.contains(b"TE"));
        assert!(!hop.contains(b"close") && !hop.contains(b"host") && hop.named.len() == 1);
    }
}
