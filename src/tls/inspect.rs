//! The TLS inspector (`envoy.filters.listener.tls_inspector`): peeks at a
//! new connection's first bytes, without consuming them, to tell TLS from
//! plaintext and to read the ClientHello's SNI and ALPN, so the listener can
//! choose a filter chain before any handshake.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

/// What the first bytes say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hello {
    pub tls: bool,
    pub sni: Option<String>,
    pub alpn: Vec<String>,
}

/// A ClientHello larger than this is not waited for.
const MAX_HELLO: usize = 16 * 1024 + 5;

#[derive(Debug, PartialEq, Eq)]
enum Parse {
    NeedMore,
    Done(Hello),
}

/// Peeks until the ClientHello is complete (or the bytes are plainly not
/// TLS). `None` when `timeout` passes first or the peer goes away.
pub async fn inspect(stream: &TcpStream, timeout: Duration) -> Option<Hello> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_HELLO];
    let mut last_len = 0;
    let mut pause = Duration::from_millis(1);
    loop {
        let n = match peek(stream, &mut buf) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => return None,
        };
        if n > 0 {
            match parse(&buf[..n]) {
                Parse::Done(h) => return Some(h),
                // A hello that does not fit is read no further: no SNI.
                Parse::NeedMore if n >= MAX_HELLO => return Some(Hello { tls: true, ..Hello::default() }),
                Parse::NeedMore => {}
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        if n == 0 || n == last_len {
            // Peeked bytes stay readable, so readiness would not wait for
            // more: wait for the socket only while it is empty, else pause.
            if n == 0 {
                match monoio::time::timeout(left, stream.readable(false)).await {
                    Ok(Ok(())) => {}
                    _ => return None,
                }
            } else {
                monoio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
        last_len = n;
    }
}

fn peek(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv into a buffer we own, of its length; MSG_PEEK leaves the
    // bytes for the handshake that follows.
    let n = unsafe {
        libc::recv(stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// Reads the handshake message out of one or more TLS records.
fn parse(bytes: &[u8]) -> Parse {
    let not_tls = Parse::Done(Hello::default());
    // Record header: handshake (22), version 3.x, length.
    if bytes.is_empty() {
        return Parse::NeedMore;
    }
    if bytes[0] != 0x16 {
        return not_tls;
    }
    if bytes.len() >= 2 && bytes[1] != 0x03 {
        return not_tls;
    }
    let mut handshake = Vec::new();
    let mut at = 0;
    while at + 5 <= bytes.len() {
        if bytes[at] != 0x16 {
            return not_tls;
        }
        let len = usize::from(u16::from_be_bytes([bytes[at + 3], bytes[at + 4]]));
        let body = &bytes[at + 5..];
        if body.len() < len {
            handshake.extend_from_slice(body);
            break;
        }
        handshake.extend_from_slice(&body[..len]);
        at += 5 + len;
        if handshake.len() >= 4 {
            let need =
                4 + (usize::from(handshake[1]) << 16 | usize::from(handshake[2]) << 8 | usize::from(handshake[3]));
            if handshake.len() >= need {
                break;
            }
        }
    }
    if handshake.len() < 4 {
        return Parse::NeedMore;
    }
    if handshake[0] != 0x01 {
        // Not a ClientHello: TLS, but nothing to read.
        return Parse::Done(Hello { tls: true, ..Hello::default() });
    }
    let len = usize::from(handshake[1]) << 16 | usize::from(handshake[2]) << 8 | usize::from(handshake[3]);
    if handshake.len() < 4 + len {
        return Parse::NeedMore;
    }
    Parse::Done(client_hello(&handshake[4..4 + len]).unwrap_or(Hello { tls: true, ..Hello::default() }))
}

/// SNI and ALPN from a ClientHello body; `None` if it is malformed (the
/// handshake will then fail on its own).
fn client_hello(b: &[u8]) -> Option<Hello> {
    let mut r = Reader(b);
    r.skip(2 + 32)?; // version, random
    let sid = r.u8()?;
    r.skip(usize::from(sid))?;
    let suites = r.u16()?;
    r.skip(usize::from(suites))?;
    let comp = r.u8()?;
    r.skip(usize::from(comp))?;
    let mut hello = Hello { tls: true, ..Hello::default() };
    if r.0.is_empty() {
        return Some(hello);
    }
    let ext_len = r.u16()?;
    let mut exts = Reader(r.take(usize::from(ext_len))?);
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let len = exts.u16()?;
        let mut data = Reader(exts.take(usize::from(len))?);
        match ty {
            0x0000 => {
                let n = usize::from(data.u16()?);
                let mut list = Reader(data.take(n)?);
                while !list.0.is_empty() {
                    let kind = list.u8()?;
                    let n = usize::from(list.u16()?);
                    let name = list.take(n)?;
                    if kind == 0 {
                        hello.sni = std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
                    }
                }
            }
            0x0010 => {
                let n = usize::from(data.u16()?);
                let mut list = Reader(data.take(n)?);
                while !list.0.is_empty() {
                    let n = list.u8()?;
                    if let Ok(p) = std::str::from_utf8(list.take(usize::from(n))?) {
                        hello.alpn.push(p.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls writes it, for `name` with `alpn`.
    fn real_hello(name: &str, alpn: &[&str]) -> Vec<u8> {
        use std::sync::Arc;
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_sni_and_alpn_from_a_real_client_hello() {
        let bytes = real_hello("Api.Example.com", &["h2", "http/1.1"]);
        let want = Hello { tls: true, sni: Some("api.example.com".into()), alpn: vec!["h2".into(), "http/1.1".into()] };
        assert_eq!(parse(&bytes), Parse::Done(want));
        // Cut short anywhere: wait for more.
        for cut in [1, 3, 5, 9, bytes.len() - 1] {
            assert_eq!(parse(&bytes[..cut]), Parse::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn plaintext_and_garbage_are_not_tls() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parse::Done(Hello::default()));
        assert_eq!(parse(&[0x16, 0x09, 0, 0]), Parse::Done(Hello::default()));
        // A TLS record whose hello is malformed: TLS without SNI.
        let bad = [0x16, 0x03, 0x01, 0x00, 0x06, 0x01, 0x00, 0x00, 0x02, 0xff, 0xff];
        assert_eq!(parse(&bad), Parse::Done(Hello { tls: true, ..Hello::default() }));
    }
}
