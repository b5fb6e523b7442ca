//! The HTTP/1.1 request codec: parses a request head with httparse, then
//! applies the rules that keep a proxy safe from request smuggling and
//! resource abuse, and decides how the body is framed. Every refusal carries
//! the status Envoy answers with; nothing refused is ever forwarded.

use std::fmt;
use std::mem::MaybeUninit;

/// Limits on a request head (`max_request_headers_kb`, `max_headers_count`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The whole head: request line and headers (Envoy's default 60 KiB).
    pub max_head_bytes: usize,
    /// Header lines (Envoy's default 100).
    pub max_headers: usize,
    /// The request line alone; past it the answer is 414.
    pub max_request_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_head_bytes: 60 * 1024, max_headers: 100, max_request_line: 16 * 1024 }
    }
}

/// Why a request head is refused. `status()` is the answer Envoy gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed syntax, ambiguous framing, bare CR/LF/NUL, obs-fold... (400).
    BadRequest(&'static str),
    /// Request line longer than `max_request_line` (414).
    UriTooLong,
    /// Head over `max_head_bytes` or more than `max_headers` lines (431).
    HeadersTooLarge,
    /// A transfer coding other than a lone `chunked` (501).
    UnsupportedTransferEncoding,
    /// Not HTTP/1.0 or HTTP/1.1 (505).
    VersionNotSupported,
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::BadRequest(_) => 400,
            HeadError::UriTooLong => 414,
            HeadError::HeadersTooLarge => 431,
            HeadError::UnsupportedTransferEncoding => 501,
            HeadError::VersionNotSupported => 505,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::BadRequest(why) => write!(f, "bad request: {why}"),
            HeadError::UriTooLong => f.write_str("request line too long"),
            HeadError::HeadersTooLarge => f.write_str("request headers too large"),
            HeadError::UnsupportedTransferEncoding => f.write_str("unsupported transfer encoding"),
            HeadError::VersionNotSupported => f.write_str("HTTP version not supported"),
        }
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    ContentLength(u64),
    Chunked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: BodyFraming,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    pub expect_continue: bool,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }
}

/// Header slots kept on the stack; Envoy's default `max_headers_count` is 100.
const STACK_HEADERS: usize = 128;

/// Parses one request head from the start of `buf`. `Ok(None)` means more
/// bytes are needed (and the limits still allow them); `Ok(Some((head, n)))`
/// means the head took `n` bytes.
pub fn parse_request_head(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, HeadError> {
    HeadScan::default().parse(buf, limits)
}

/// How far the search for the end of a head has got in a buffer that only
/// grows while the head arrives, so that each try searches only the new
/// bytes: a head sent a byte at a time costs its length, not its square.
#[derive(Debug, Default)]
pub struct HeadScan {
    /// Bytes already searched for the blank line (and, until it was found,
    /// for the request line's end).
    searched: usize,
    /// The request line ended within its limit.
    line_checked: bool,
}

impl HeadScan {
    /// `parse_request_head` on `buf`, which holds every byte of the earlier
    /// tries and maybe more.
    pub fn parse(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, HeadError> {
        let searched = self.searched.min(buf.len());
        // The blank line may straddle the old end.
        let from = searched.saturating_sub(3);
        let head_end = memchr::memmem::find(&buf[from..], b"\r\n\r\n").map(|i| from + i + 4);
        let scanned = head_end.unwrap_or(buf.len());
        // The request line alone must fit its limit.
        if !self.line_checked {
            match memchr::memchr(b'\n', &buf[searched.min(scanned)..scanned]) {
                Some(i) if searched + i > limits.max_request_line => return Err(HeadError::UriTooLong),
                Some(_) => self.line_checked = true,
                None if buf.len() > limits.max_request_line => return Err(HeadError::UriTooLong),
                None => {}
            }
        }
        self.searched = buf.len();
        parse_complete_head(buf, head_end, limits)
    }
}

/// The rest of `parse_request_head`, once the head's end is known (or known
/// not to be in `buf` yet).
fn parse_complete_head(
    buf: &[u8],
    head_end: Option<usize>,
    limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let Some(head_len) = head_end else {
        if buf.len() > limits.max_head_bytes {
            return Err(HeadError::HeadersTooLarge);
        }
        return Ok(None);
    };
    if head_len > limits.max_head_bytes {
        return Err(HeadError::HeadersTooLarge);
    }
    check_line_endings(&buf[..head_len])?;

    // Header slots need no initialising: on the stack for the usual limit,
    // on the heap only for a larger `max_headers_count`, and never more than
    // the head could hold (a header line is at least 4 bytes), whatever the
    // limit says.
    let wanted = limits.max_headers.min(head_len / 4 + 1);
    let mut stack = [const { MaybeUninit::<httparse::Header>::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots = if wanted <= STACK_HEADERS {
        &mut stack[..wanted]
    } else {
        heap.resize_with(wanted, MaybeUninit::uninit);
        &mut heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    let status = req.parse_with_uninit_headers(&buf[..head_len], slots).map_err(|e| match e {
        httparse::Error::TooManyHeaders => HeadError::HeadersTooLarge,
        httparse::Error::Version => HeadError::VersionNotSupported,
        httparse::Error::HeaderName => {
            HeadError::BadRequest("invalid header name (or whitespace before the colon, or obs-fold)")
        }
        httparse::Error::HeaderValue => HeadError::BadRequest("invalid header value"),
        httparse::Error::Token => HeadError::BadRequest("invalid method"),
        httparse::Error::NewLine => HeadError::BadRequest("invalid line ending"),
        _ => HeadError::BadRequest("malformed request"),
    })?;
    if status.is_partial() {
        return Err(HeadError::BadRequest("malformed request head"));
    }
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::BadRequest("malformed request line"));
    };
    if target.is_empty() {
        return Err(HeadError::BadRequest("empty request target"));
    }
    let headers: Vec<(String, Vec<u8>)> = req.headers.iter().map(|h| (h.name.to_string(), h.value.to_vec())).collect();

    let body = body_framing(&headers, minor_version)?;
    let hosts = headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("host")).count();
    if hosts > 1 {
        return Err(HeadError::BadRequest("more than one Host header"));
    }
    if minor_version == 1 && hosts == 0 {
        return Err(HeadError::BadRequest("HTTP/1.1 request without Host"));
    }
    let connection_has = |token: &str| {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(|&b| b == b','))
            .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
    };
    let keep_alive = if minor_version == 1 { !connection_has("close") } else { connection_has("keep-alive") };
    let expect_continue = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("expect") && trim_ows(v).eq_ignore_ascii_case(b"100-continue"));
    let head = RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        minor_version,
        headers,
        body,
        keep_alive,
        expect_continue,
    };
    Ok(Some((head, head_len)))
}

/// Every LF must follow a CR, every CR must precede an LF, and no NUL may
/// appear: parsers that disagree on these are how requests get smuggled.
/// Jumps from one CR, LF or NUL to the next (a few per line).
fn check_line_endings(head: &[u8]) -> Result<(), HeadError> {
    for i in memchr::memchr3_iter(b'\r', b'\n', 0, head) {
        match head[i] {
            b'\n' if i == 0 || head[i - 1] != b'\r' => return Err(HeadError::BadRequest("bare LF")),
            b'\r' if head.get(i + 1) != Some(&b'\n') => return Err(HeadError::BadRequest("bare CR")),
            0 => return Err(HeadError::BadRequest("NUL in request head")),
            _ => {}
        }
    }
    Ok(())
}

/// Content-Length and Transfer-Encoding, with no ambiguity tolerated.
fn body_framing(headers: &[(String, Vec<u8>)], minor_version: u8) -> Result<BodyFraming, HeadError> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te_seen = false;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-length") {
            // `5, 5` and repeated headers are the same length said twice:
            // allowed only if every value agrees.
            for part in value.split(|&b| b == b',') {
                let n = parse_length(trim_ows(part)).ok_or(HeadError::BadRequest("invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(HeadError::BadRequest("conflicting Content-Length values"));
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if te_seen {
                return Err(HeadError::UnsupportedTransferEncoding);
            }
            te_seen = true;
            if !trim_ows(value).eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::UnsupportedTransferEncoding);
            }
            chunked = true;
        }
    }
    match (length, chunked) {
        (Some(_), true) => Err(HeadError::BadRequest("both Content-Length and Transfer-Encoding")),
        (_, true) if minor_version == 0 => Err(HeadError::BadRequest("Transfer-Encoding in an HTTP/1.0 request")),
        (_, true) => Ok(BodyFraming::Chunked),
        (Some(0) | None, false) => Ok(BodyFraming::None),
        (Some(n), false) => Ok(BodyFraming::ContentLength(n)),
    }
}

/// Digits only (no sign, no spaces inside), at most 18 of them.
pub fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Incremental decoder for a chunked body: feed it bytes, it says how many
/// are framing and where the data is. Chunk sizes, extensions and trailers
/// are bounded.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Bytes of the current size line or trailer section seen so far.
    line_len: usize,
    trailer_bytes: usize,
    /// The chunk size being read, until its line ends.
    pending: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    SizeDigitsDone,
    Extension,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

/// What `ChunkedDecoder::decode` found in the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// `len` bytes of body data start at `at` in the input.
    Data { at: usize, len: usize },
    /// The body (with any trailers) ended; `consumed` bytes of input used.
    End { consumed: usize },
    /// All input was framing; more is needed.
    NeedMore,
}

const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// For pass-through: how many bytes at the start of `input` belong to the
    /// chunked body (all of them until it ends), and whether it ended there.
    pub fn scan(&mut self, input: &[u8]) -> Result<(usize, bool), HeadError> {
        let mut used = 0;
        while used < input.len() {
            let (chunk, n) = self.decode(&input[used..])?;
            used += n;
            match chunk {
                Chunk::End { .. } => return Ok((used, true)),
                Chunk::NeedMore => break,
                Chunk::Data { .. } => {}
            }
        }
        Ok((used, false))
    }

    /// Decodes from the start of `input`. Returns the first piece of data (or
    /// the end) and how many input bytes were used before it; call again with
    /// the rest.
    pub fn decode(&mut self, input: &[u8]) -> Result<(Chunk, usize), HeadError> {
        let bad = |why| Err(HeadError::BadRequest(why));
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size | ChunkState::SizeDigitsDone | ChunkState::Extension => {
                    self.line_len += 1;
                    if self.line_len > MAX_CHUNK_LINE {
                        return bad("chunk size line too long");
                    }
                    match (self.state, b) {
                        (ChunkState::Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                            let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                            self.pending = match self.pending.checked_mul(16).and_then(|s| s.checked_add(digit)) {
                                Some(s) if s < (1 << 60) => s,
                                _ => return bad("chunk size too large"),
                            };
                        }
                        (ChunkState::Size, b';') if self.line_len > 1 => self.state = ChunkState::Extension,
                        (ChunkState::Size, b' ' | b'\t') if self.line_len > 1 => {
                            self.state = ChunkState::SizeDigitsDone
                        }
                        (ChunkState::SizeDigitsDone, b' ' | b'\t') => {}
                        (ChunkState::SizeDigitsDone, b';') => self.state = ChunkState::Extension,
                        (ChunkState::Size | ChunkState::SizeDigitsDone, b'\r') if self.line_len > 1 => {
                            self.state = ChunkState::SizeLf
                        }
                        (ChunkState::Extension, b'\r') => self.state = ChunkState::SizeLf,
                        (ChunkState::Extension, b'\n' | 0) => return bad("bad chunk extension"),
                        (ChunkState::Extension, _) => {}
                        _ => return bad("bad chunk size"),
                    }
                    i += 1;
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return bad("bad chunk size line ending");
                    }
                    i += 1;
                    self.line_len = 0;
                    let len = std::mem::take(&mut self.pending);
                    self.state = if len == 0 { ChunkState::TrailerLineStart } else { ChunkState::Data(len) };
                }
                ChunkState::Data(left) => {
                    let n = left.min((input.len() - i) as u64) as usize;
                    let rest = left - n as u64;
                    self.state = if rest == 0 { ChunkState::DataCr } else { ChunkState::Data(rest) };
                    return Ok((Chunk::Data { at: i, len: n }, i + n));
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return bad("chunk data longer than its size");
                    }
                    self.state = ChunkState::DataLf;
                    i += 1;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return bad("bad chunk data line ending");
                    }
                    self.state = ChunkState::Size;
                    i += 1;
                }
                ChunkState::TrailerLineStart => {
                    i += 1;
                    self.trailer_bytes += 1;
                    self.state = if b == b'\r' { ChunkState::FinalLf } else { ChunkState::TrailerLine };
                    if b == b'\n' || b == 0 {
                        return bad("bad trailer");
                    }
                }
                ChunkState::TrailerLine => {
                    i += 1;
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILERS {
                        return Err(HeadError::HeadersTooLarge);
                    }
                    match b {
                        b'\r' => self.state = ChunkState::TrailerLf,
                        b'\n' | 0 => return bad("bad trailer"),
                        _ => {}
                    }
                }
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return bad("bad trailer line ending");
                    }
                    i += 1;
                    self.state = ChunkState::TrailerLineStart;
                }
                ChunkState::FinalLf => {
                    if b != b'\n' {
                        return bad("bad end of chunked body");
                    }
                    i += 1;
                    self.state = ChunkState::Done;
                    return Ok((Chunk::End { consumed: i }, i));
                }
                ChunkState::Done => return Ok((Chunk::End { consumed: i }, i)),
            }
        }
        Ok((Chunk::NeedMore, i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row per case: request bytes in, the status out (200 = accepted).
    #[test]
    fn request_heads_get_envoys_answers() {
        let long_header = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "v".repeat(61 * 1024));
        let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "p".repeat(17 * 1024));
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        let many_headers = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        let rows: Vec<(&str, &[u8], u16)> = vec![
            ("simple GET", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 200),
            ("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n", 200),
            ("content-length body", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", 200),
            (
                "identical duplicate CL",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                200,
            ),
            ("chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 200),
            ("chunked, any case", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n", 200),
            (
                "CL and TE",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "differing duplicate CL",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                400,
            ),
            ("CL list that disagrees", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400),
            ("signed CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
            ("CL not a number", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: five\r\n\r\n", 400),
            ("CL overflow", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            ("unknown TE", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            ("TE list", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("obfuscated TE", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
            ("TE with a vertical tab", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0b\r\n\r\n", 400),
            (
                "two TE headers",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                501,
            ),
            ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
            ("space before colon", b"GET / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n", 400),
            ("bare LF", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),
            ("bare CR in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
            ("NUL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
            ("no Host in HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n", 400),
            ("two Host headers", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("bad method", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("HTTP/2.0 on the wire", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
            ("headers over 60 KiB", long_header.as_bytes(), 431),
            ("101 headers", many_headers.as_bytes(), 431),
            ("request line over 16 KiB", long_line.as_bytes(), 414),
        ];
        let limits = Limits::default();
        for (name, bytes, want) in rows {
            let got = match parse_request_head(bytes, &limits) {
                Ok(Some(_)) => 200,
                Ok(None) => panic!("{name}: head reported incomplete"),
                Err(e) => e.status(),
            };
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_head_parsed_as_it_arrives_reads_as_one_parsed_whole() {
        let limits = Limits::default();
        let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(17 * 1024));
        let heads: [&[u8]; 5] = [
            b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\nGET /next",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok",
            b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            long_line.as_bytes(),
        ];
        for whole in heads {
            let once = parse_request_head(whole, &limits);
            // Every way of cutting it in two, and a byte at a time.
            let mut cuts: Vec<Vec<usize>> = (1..whole.len()).step_by(7).map(|k| vec![k, whole.len()]).collect();
            cuts.push((1..=whole.len()).collect());
            for ends in cuts {
                let mut scan = HeadScan::default();
                let mut got = Ok(None);
                for end in ends {
                    got = scan.parse(&whole[..end], &limits);
                    if !matches!(got, Ok(None)) {
                        break;
                    }
                }
                assert_eq!(got, once, "{:?}", String::from_utf8_lossy(&whole[..whole.len().min(40)]));
            }
        }
    }

    #[test]
    fn a_huge_header_count_limit_costs_no_more_than_the_head() {
        let limits = Limits { max_headers: u32::MAX as usize, ..Limits::default() };
        let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..300 {
            head.extend_from_slice(format!("x{i}:\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let (h, _) = parse_request_head(&head, &limits).unwrap().unwrap();
        assert_eq!(h.headers.len(), 301);
        assert!(parse_request_head(&head, &Limits { max_headers: 300, ..limits }).is_err());
    }

    #[test]
    fn incomplete_heads_wait_for_more_until_a_limit() {
        let limits = Limits::default();
        assert_eq!(parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\n", &limits), Ok(None));
        let endless = vec![b'a'; 70 * 1024];
        assert_eq!(parse_request_head(&endless, &limits), Err(HeadError::UriTooLong));
        let mut endless_headers = b"GET / HTTP/1.1\r\n".to_vec();
        endless_headers.extend(std::iter::repeat_n(b"X: y\r\n".iter().copied(), 11_000).flatten());
        assert_eq!(parse_request_head(&endless_headers, &limits), Err(HeadError::HeadersTooLarge));
    }

    #[test]
    fn head_fields_and_keep_alive() {
        let limits = Limits::default();
        let input = b"POST /x?y HTTP/1.1\r\nHost: a\r\nConnection: Close\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc";
        let (h, n) = parse_request_head(input, &limits).unwrap().unwrap();
        assert_eq!((h.method.as_str(), h.target.as_str(), h.minor_version), ("POST", "/x?y", 1));
        assert_eq!(h.body, BodyFraming::ContentLength(3));
        assert!(!h.keep_alive && h.expect_continue);
        assert_eq!(n, input.len() - 3);
        let (h, _) = parse_request_head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &limits).unwrap().unwrap();
        assert!(h.keep_alive);
        let (h, _) = parse_request_head(b"GET / HTTP/1.0\r\n\r\n", &limits).unwrap().unwrap();
        assert!(!h.keep_alive);
    }

    /// Decodes a whole chunked body that arrives `step` bytes at a time;
    /// returns the data and how many bytes the body took.
    fn decode_all(body: &[u8], step: usize) -> Result<(Vec<u8>, usize), HeadError> {
        let mut dec = ChunkedDecoder::new();
        let (mut out, mut pos, mut avail) = (Vec::new(), 0, 0);
        loop {
            avail = (avail + step).min(body.len());
            while pos < avail {
                let (chunk, used) = dec.decode(&body[pos..avail])?;
                match chunk {
                    Chunk::Data { at, len } => out.extend_from_slice(&body[pos + at..pos + at + len]),
                    Chunk::End { .. } => return Ok((out, pos + used)),
                    Chunk::NeedMore => {}
                }
                pos += used;
                if chunk == Chunk::NeedMore {
                    break;
                }
            }
            if avail == body.len() {
                return Err(HeadError::BadRequest("unterminated"));
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_in_any_split() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 64] {
            let (data, used) = decode_all(body, step).unwrap();
            assert_eq!(data, b"hello world", "step {step}");
            assert_eq!(used, body.len() - 4, "step {step}");
        }
    }

    #[test]
    fn bad_chunked_bodies_are_refused() {
        for bad in [
            &b"g\r\nx\r\n0\r\n\r\n"[..],
            b"\r\n",
            b";ext\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"fffffffffffffffffff\r\n",
            b"0\r\nbad\ntrailer\r\n\r\n",
            b"-1\r\n",
        ] {
            assert!(matches!(decode_all(bad, 64), Err(HeadError::BadRequest(_))), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
