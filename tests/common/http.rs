//! HTTP test kit: upstream stubs that speak HTTP/1.1, a config builder for an
//! HTTP connection manager, and a client that reads one response.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An HTTP/1.1 upstream that answers every request with a description of it:
/// `METHOD TARGET`, then selected headers, then the request body. Keep-alive.
pub struct HttpUpstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

/// Request line, lower-cased headers, decoded body.
pub type SeenRequest = (String, Vec<(String, String)>, Vec<u8>);

pub fn read_request(c: &mut TcpStream, buf: &mut Vec<u8>) -> Option<SeenRequest> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = req.parse(buf) {
            let line = format!("{} {}", req.method.unwrap(), req.path.unwrap());
            let hs: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            buf.drain(..n);
            let cl = hs.iter().find(|(k, _)| k == "content-length").map(|(_, v)| v.parse::<usize>().unwrap());
            let chunked = hs.iter().any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
            let mut body = Vec::new();
            if let Some(len) = cl {
                while buf.len() < len {
                    let mut tmp = [0u8; 65536];
                    let n = c.read(&mut tmp).ok()?;
                    if n == 0 {
                        return None;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                body = buf.drain(..len).collect();
            } else if chunked {
                // Decode the chunked body (test upstream: trusts its input).
                loop {
                    while !buf.windows(2).any(|w| w == b"\r\n") {
                        let mut tmp = [0u8; 65536];
                        let n = c.read(&mut tmp).ok()?;
                        buf.extend_from_slice(&tmp[..n]);
                    }
                    let eol = buf.windows(2).position(|w| w == b"\r\n").unwrap();
                    let size =
                        usize::from_str_radix(std::str::from_utf8(&buf[..eol]).unwrap().split(';').next().unwrap(), 16)
                            .unwrap();
                    buf.drain(..eol + 2);
                    while buf.len() < size + 2 {
                        let mut tmp = [0u8; 65536];
                        let n = c.read(&mut tmp).ok()?;
                        buf.extend_from_slice(&tmp[..n]);
                    }
                    if size == 0 {
                        buf.drain(..2);
                        break;
                    }
                    body.extend_from_slice(&buf[..size]);
                    buf.drain(..size + 2);
                }
            }
            return Some((line, hs, body));
        }
        let mut tmp = [0u8; 65536];
        let n = c.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// What a scripted upstream does with one request.
pub enum Reply {
    /// Write these bytes (a whole response) and keep the connection.
    Bytes(Vec<u8>),
    /// Write these bytes, then close the connection.
    BytesThenClose(Vec<u8>),
    /// Close the connection without answering.
    Close,
}

impl HttpUpstream {
    /// Answers every request with a description of it (see `describe`).
    pub fn start() -> Self {
        Self::serve(|req, _| Reply::Bytes(describe(req)))
    }

    /// Answers each request with `handler(request, n)`, `n` counting the
    /// requests this upstream has seen (from 1), over keep-alive connections.
    pub fn serve(handler: impl Fn(&SeenRequest, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let handler = Arc::new(handler);
        let seen = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { continue };
                count.fetch_add(1, Ordering::AcqRel);
                let handler = handler.clone();
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    while let Some(req) = read_request(&mut c, &mut buf) {
                        let n = seen.fetch_add(1, Ordering::AcqRel) + 1;
                        match handler(&req, n) {
                            Reply::Bytes(out) => {
                                if c.write_all(&out).is_err() {
                                    return;
                                }
                            }
                            Reply::BytesThenClose(out) => {
                                let _ = c.write_all(&out);
                                return;
                            }
                            Reply::Close => return,
                        }
                    }
                });
            }
        });
        HttpUpstream { addr, connections }
    }
}

/// A 200 whose body describes the request: `METHOD TARGET`, then host,
/// x-forwarded-proto, x-forwarded-for, whether x-request-id was set,
/// connection, then every `x-test*` header, then the request body.
pub fn describe((line, hs, body): &SeenRequest) -> Vec<u8> {
    let get = |k: &str| hs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let mut out = format!(
        "{line}\nhost={}\nxfp={}\nxff={}\nrid={}\nconnection={}\n",
        get("host"),
        get("x-forwarded-proto"),
        get("x-forwarded-for"),
        !get("x-request-id").is_empty(),
        get("connection")
    )
    .into_bytes();
    for (k, v) in hs.iter().filter(|(k, _)| k.starts_with("x-test")) {
        out.extend_from_slice(format!("{k}={v}\n").as_bytes());
    }
    out.extend_from_slice(body);
    let mut response =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nServer: upstream\r\nX-Up: 1\r\n\r\n", out.len()).into_bytes();
    response.extend_from_slice(&out);
    response
}

/// A complete response with `status` and `body`.
pub fn respond(status: u16, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// A listener on a free port that runs `serve` on a thread of its own for
/// each connection.
pub fn serve_each(serve: impl Fn(TcpStream) + Send + Sync + Copy + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(c) = conn else { continue };
            std::thread::spawn(move || serve(c));
        }
    });
    addr
}

/// A raw upstream that answers every connection with `reply` (or nothing).
pub fn raw_upstream(reply: &'static [u8]) -> SocketAddr {
    serve_each(move |mut c| {
        let mut buf = [0u8; 4096];
        let _ = c.read(&mut buf);
        if !reply.is_empty() {
            let _ = c.write_all(reply);
        }
        // Hold the connection until the peer goes away.
        while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
    })
}

pub fn http_yaml(clusters: &[(&str, SocketAddr)], routes: &str, extra_hcm: &str) -> String {
    let clusters: String = clusters
        .iter()
        .map(|(name, a)| {
            format!(
                "  - name: {name}\n    connect_timeout: 0.5s\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{address: {{socket_address: {{address: \"{}\", port_value: {}}}}}}}\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: web
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
{extra_hcm}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
          route_config:
            name: local
            virtual_hosts:
{routes}
  clusters:
{clusters}"#
    )
}

/// Sends raw request bytes, reads one response; returns (status, head, body).
pub fn exchange(s: &mut TcpStream, request: &[u8]) -> (u16, String, Vec<u8>) {
    s.write_all(request).unwrap();
    read_response(s)
}

pub fn read_response(s: &mut impl Read) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    loop {
        if let Some((status, head, body, _)) = parse_response(&buf) {
            return (status, head, body);
        }
        let k = s.read(&mut tmp).unwrap();
        assert!(k > 0, "connection closed before a whole response: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&tmp[..k]);
    }
}

/// The first whole response (framed by Content-Length, none meaning empty)
/// at the start of `buf`: status, head, body, and the bytes it took.
pub fn parse_response(buf: &[u8]) -> Option<(u16, String, Vec<u8>, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = resp.parse(buf).ok()? else { return None };
    let cl: usize = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
        .unwrap_or(0);
    if buf.len() < n + cl {
        return None;
    }
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    Some((resp.code.unwrap(), head, buf[n..n + cl].to_vec(), n + cl))
}

/// Starts ringway on `yaml` (one worker) and returns it with the address of
/// its listener `web`.
pub fn serve(yaml: &str) -> (ringway::runtime::Server, SocketAddr) {
    let server = super::start(yaml, super::opts(1));
    let addr = server.listener_addr("web").unwrap();
    (server, addr)
}

/// One request on a new connection: status, head, body as text.
pub fn get(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = super::connect(addr);
    let (status, head, body) = exchange(&mut s, request.as_bytes());
    (status, head, String::from_utf8(body).unwrap())
}

/// A WebSocket-ish upstream: answers an upgrade with 101, then echoes.
pub fn upgrading_upstream() -> SocketAddr {
    serve_each(|mut c| {
        let mut buf = Vec::new();
        let Some((_, headers, _)) = read_request(&mut c, &mut buf) else { return };
        let upgrade = headers.iter().any(|(k, v)| k == "upgrade" && v == "websocket")
            && headers.iter().any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("upgrade"));
        if !upgrade {
            let _ = c.write_all(&respond(400, "not an upgrade"));
            return;
        }
        c.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhi")
            .unwrap();
        // Anything that came with the head is echoed first.
        if !buf.is_empty() && c.write_all(&buf).is_err() {
            return;
        }
        let mut tmp = [0u8; 4096];
        while let Ok(n) = c.read(&mut tmp) {
            if n == 0 || c.write_all(&tmp[..n]).is_err() {
                return;
            }
        }
    })
}
