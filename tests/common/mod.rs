//! Test kit: in-process upstream stubs on 127.0.0.1:0, a config builder, a
//! ringway started in this process, and waits on conditions (never sleeps).

#![allow(dead_code)]

pub mod http;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ringway::runtime::{DriverChoice, Options, Server};
use ringway::tcp_proxy::RelayMode;

pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `cond` until it holds or `WAIT` passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An upstream that echoes everything back, prefixed with nothing, and
/// half-closes when its peer does. `tag` is sent first if not empty, so tests
/// can tell upstreams apart.
pub struct Upstream {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    pub fn echo() -> Self {
        Self::start(b"")
    }

    pub fn tagged(tag: &'static [u8]) -> Self {
        Self::start(tag)
    }

    fn start(tag: &'static [u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (acc, st) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Acquire) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                acc.fetch_add(1, Ordering::AcqRel);
                std::thread::spawn(move || {
                    if !tag.is_empty() && conn.write_all(tag).is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if conn.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = conn.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Upstream { addr, accepted, stop }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

/// A port on 127.0.0.1 with nothing listening: one for a test to bind later
/// (a listener another part of its config must name) or to stand for an
/// upstream that refuses.
///
/// Not a port the kernel chose: it may hand that one out again at once, to
/// another test's `bind(:0)` or outgoing connection, and the test fails with
/// `AddrInUse` or reaches a stranger. These come from below the ephemeral
/// range, which the kernel never hands out by itself, one after another from
/// a per-process counter, so two tests of one binary never share one; each
/// is checked free when picked.
pub fn closed_port() -> SocketAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let ephemeral_start: usize = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, span) = (10_000, ephemeral_start.saturating_sub(10_000));
    if span < 1000 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        return l.local_addr().unwrap();
    }
    let offset = std::process::id() as usize * 7919;
    for _ in 0..span {
        let port = low + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return l.local_addr().unwrap();
        }
    }
    panic!("no free port below the ephemeral range");
}

/// Envoy YAML for one tcp_proxy listener on 127.0.0.1:0 to a STATIC cluster.
pub struct TcpConfig {
    pub endpoints: Vec<SocketAddr>,
    pub connect_timeout: &'static str,
    pub extra_proxy: String,
    pub extra_bootstrap: String,
    pub admin: bool,
}

impl TcpConfig {
    pub fn to(endpoints: &[SocketAddr]) -> Self {
        TcpConfig {
            endpoints: endpoints.to_vec(),
            connect_timeout: "1s",
            extra_proxy: String::new(),
            extra_bootstrap: String::new(),
            admin: true,
        }
    }

    pub fn yaml(&self) -> String {
        let endpoints: String = self
            .endpoints
            .iter()
            .map(|a| {
                format!(
                    "        - endpoint: {{address: {{socket_address: {{address: \"{}\", port_value: {}}}}}}}\n",
                    a.ip(),
                    a.port()
                )
            })
            .collect();
        let admin =
            if self.admin { "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n" } else { "" };
        format!(
            r#"{admin}{extra_bootstrap}static_resources:
  listeners:
  - name: proxy
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: test
          cluster: backend
{extra_proxy}
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: {ct}
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
{endpoints}"#,
            extra_bootstrap = self.extra_bootstrap,
            extra_proxy = self.extra_proxy,
            ct = self.connect_timeout,
        )
    }
}

pub fn opts(workers: usize) -> Options {
    Options { concurrency: Some(workers), drain_time: Duration::from_secs(2), pin: false, ..Options::default() }
}

pub fn opts_with(workers: usize, driver: DriverChoice, relay: RelayMode) -> Options {
    Options { driver, relay, ..opts(workers) }
}

pub fn start(yaml: &str, opts: Options) -> Server {
    let snapshot = ringway::config::load_str(yaml, 1).unwrap_or_else(|e| panic!("config: {e}\n{yaml}"));
    Server::start(snapshot, opts).unwrap()
}

pub fn stop(server: Server) {
    server.shutdown();
    server.wait();
}

pub fn stat(server: &Server, name: &str) -> i128 {
    server.stats().get(name).unwrap_or_else(|| panic!("no stat {name}"))
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s
}

/// Writes `msg` and reads back exactly as many bytes.
pub fn round_trip(s: &mut (impl Read + Write), msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    back
}

/// True once the peer has closed: a read returns EOF or a reset.
pub fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0) | Err(_))
}

/// A plain HTTP/1.1 GET to the admin port; returns (status, body).
pub fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    admin_request(addr, "GET", path)
}

pub fn admin_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = connect(addr);
    write!(s, "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// FNV-1a, enough to compare 16 MiB streams.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
