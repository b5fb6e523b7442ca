//! Just enough HTTP/1.1 for the admin port: one request per connection, with a
//! size limit and a read timeout, answered and closed.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const MAX_HEAD: usize = 16 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
}

impl Request {
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
pub enum RequestError {
    Io(io::Error),
    TooLarge,
    Malformed,
}

impl RequestError {
    pub fn status(&self) -> u16 {
        match self {
            RequestError::Io(_) => 408,
            RequestError::TooLarge => 431,
            RequestError::Malformed => 400,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Io(e) => write!(f, "cannot read request: {e}"),
            RequestError::TooLarge => f.write_str("request head too large"),
            RequestError::Malformed => f.write_str("malformed request"),
        }
    }
}

/// Reads one request head, which must arrive whole within `READ_TIMEOUT`
/// (not per read: a client dribbling a byte at a time would otherwise hold
/// one of the admin port's few slots for as long as it liked).
pub fn read_request(mut conn: &TcpStream) -> Result<Request, RequestError> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_HEAD {
            return Err(RequestError::TooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RequestError::Io(io::ErrorKind::TimedOut.into()));
        }
        conn.set_read_timeout(Some(left)).map_err(RequestError::Io)?;
        let n = conn.read(&mut chunk).map_err(RequestError::Io)?;
        if n == 0 {
            return Err(RequestError::Malformed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_head(&buf)
}

fn parse_head(buf: &[u8]) -> Result<Request, RequestError> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n").ok_or(RequestError::Malformed)?;
    let line = std::str::from_utf8(&buf[..line_end]).map_err(|_| RequestError::Malformed)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err(RequestError::Malformed);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Ok(Request { method: method.to_string(), path: path.to_string(), query })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: String) -> Self {
        Response { status, content_type, body }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Self::new(status, "text/plain; charset=UTF-8", body.to_string())
    }

    pub fn json(status: u16, body: String) -> Self {
        Self::new(status, "application/json", body)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Writes `r`; for a HEAD request (`head_only`) the body is left out but its
/// length still announced.
pub fn write_response(mut conn: &TcpStream, r: &Response, head_only: bool) -> io::Result<()> {
    conn.set_write_timeout(Some(READ_TIMEOUT))?;
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\ncache-control: no-cache, max-age=0\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    conn.write_all(head.as_bytes())?;
    if !head_only {
        conn.write_all(r.body.as_bytes())?;
    }
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_lines_and_queries() {
        let r = parse_head(b"GET /stats?filter=%5Ecluster%5C.&format=json HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(r.path, "/stats");
        assert_eq!(r.query("filter"), Some("^cluster\\."));
        assert_eq!(r.query("format"), Some("json"));
        for bad in [
            &b"GET\r\n\r\n"[..],
            b"GET stats HTTP/1.1\r\n\r\n",
            b"GET /x SPDY/3\r\n\r\n",
            b"\xff\xfe /x HTTP/1.1\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err());
        }
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
