//! Envoy's substitution format strings (`%REQ(:PATH)%`, `%START_TIME%`, ...):
//! parsed once at config time into a [`Format`], rendered per request from a
//! [`LogContext`] straight into the caller's buffer without allocating.
//!
//! connection manager → **format** → per-core buffer (`sink`) → writer thread
//!
//! The parser stands on its own (`Format::parse`) so that other config fields
//! that take Envoy's `%VARIABLE%` syntax can reuse it.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Envoy's default access log format.
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" \
%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \
\"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// `%START_TIME%` without an argument: `2026-11-22T04:15:56.123Z` (UTC).
const DEFAULT_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%E3SZ";

/// What one finished request looked like, borrowed from the connection
/// manager's own state. Every field is cheap to fill; a value that does not
/// apply is `None`, `0` or empty and prints as `-`.
#[derive(Debug, Clone, Copy)]
pub struct LogContext<'a> {
    /// When the first byte of the request head arrived.
    pub start: SystemTime,
    pub method: &'a str,
    /// The request target as received, query included.
    pub target: &'a str,
    /// `HTTP/1.1`, `HTTP/1.0`.
    pub protocol: &'a str,
    /// `http` (`%REQ(:SCHEME)%`).
    pub scheme: &'a str,
    /// The request headers as received from downstream.
    pub request_headers: &'a [(String, Vec<u8>)],
    /// The `x-request-id` the connection manager generated, when the request
    /// had none: `%REQ(X-REQUEST-ID)%` and `%STREAM_ID%` fall back to it.
    pub request_id: Option<&'a str>,
    /// The response headers as sent downstream (empty for a local reply).
    pub response_headers: &'a [(String, Vec<u8>)],
    /// `0` when no response was sent.
    pub response_code: u16,
    /// `-` (or empty) for none, else Envoy's short flags: `UF,URX`.
    pub response_flags: &'a str,
    /// `via_upstream`, `route_not_found`, ...; empty for none.
    pub response_code_details: &'a str,
    /// Request body bytes received from downstream.
    pub bytes_received: u64,
    /// Response body bytes sent downstream.
    pub bytes_sent: u64,
    /// From `start` to the last response byte sent.
    pub duration: Duration,
    /// From `start` to the last request byte received.
    pub request_duration: Option<Duration>,
    /// From `start` to the first response byte from upstream.
    pub response_duration: Option<Duration>,
    /// What `x-envoy-upstream-service-time` said; `%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%`
    /// falls back to it when `response_headers` do not carry the header.
    pub upstream_service_time: Option<Duration>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<&'a str>,
    /// The local address of the upstream connection.
    pub upstream_local: Option<SocketAddr>,
    /// The client as `use_remote_address` / `xff_num_trusted_hops` define it.
    pub downstream_remote: SocketAddr,
    /// The connection's peer, always (`%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%`).
    pub downstream_direct_remote: SocketAddr,
    pub downstream_local: Option<SocketAddr>,
    pub route_name: Option<&'a str>,
    pub connection_id: u64,
}

/// A parsed format string: literal text and operators, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Format {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(String),
    Op(Op),
}

/// Where an operator's value comes from.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    StartTime(TimeFormat),
    Req(HeaderOp),
    /// `%REQ_WITHOUT_QUERY(...)%`: the value up to its first `?`.
    ReqWithoutQuery(HeaderOp),
    Resp(HeaderOp),
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    BytesReceived,
    BytesSent,
    Duration,
    RequestDuration,
    ResponseDuration,
    Protocol,
    UpstreamHost,
    UpstreamHostWithoutPort,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamDirectRemoteAddress,
    DownstreamDirectRemoteAddressWithoutPort,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    DownstreamLocalPort,
    RouteName,
    StreamId,
    /// The machine's name, read once at parse time.
    Hostname(String),
    ConnectionId,
}

/// `%REQ(X?Y):Z%`: header `X`, else `Y`, cut to `Z` bytes.
#[derive(Debug, Clone, PartialEq)]
struct HeaderOp {
    main: HeaderRef,
    alt: Option<HeaderRef>,
    max_len: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum HeaderRef {
    Method,
    Path,
    Authority,
    Scheme,
    /// `:status` (responses only).
    Status,
    /// A header by lower-case name.
    Named(String),
}

/// The value of one operator for one request.
enum Val<'a> {
    Missing,
    Bytes(&'a [u8]),
    Num(u64),
    Addr(SocketAddr),
    Ip(IpAddr),
    Time(SystemTime, &'a TimeFormat),
}

/// Operators Envoy has that ringway does not render (yet): named in the
/// error so that it does not read like a typo.
const UNSUPPORTED: &[&str] = &[
    "TRAILER",
    "DYNAMIC_METADATA",
    "CLUSTER_METADATA",
    "UPSTREAM_METADATA",
    "FILTER_STATE",
    "UPSTREAM_FILTER_STATE",
    "REQUESTED_SERVER_NAME",
    "UPSTREAM_TRANSPORT_FAILURE_REASON",
    "LOCAL_REPLY_BODY",
    "CONNECTION_TERMINATION_DETAILS",
    "UPSTREAM_REQUEST_ATTEMPT_COUNT",
    "VIRTUAL_CLUSTER_NAME",
    "GRPC_STATUS",
    "GRPC_STATUS_NUMBER",
    "REQUEST_HEADERS_BYTES",
    "RESPONSE_HEADERS_BYTES",
    "RESPONSE_TRAILERS_BYTES",
    "UPSTREAM_WIRE_BYTES_SENT",
    "UPSTREAM_WIRE_BYTES_RECEIVED",
    "DOWNSTREAM_WIRE_BYTES_SENT",
    "DOWNSTREAM_WIRE_BYTES_RECEIVED",
    "DOWNSTREAM_PEER_SUBJECT",
    "DOWNSTREAM_PEER_URI_SAN",
    "DOWNSTREAM_LOCAL_URI_SAN",
    "DOWNSTREAM_TLS_VERSION",
    "DOWNSTREAM_TLS_CIPHER",
    "UPSTREAM_CONNECTION_ID",
    "UPSTREAM_PROTOCOL",
    "ENVIRONMENT",
];

impl Format {
    /// Parses an Envoy format string. Errors name the offending operator.
    pub fn parse(s: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let Some(off) = s[i..].find('%') else {
                literal.push_str(&s[i..]);
                break;
            };
            literal.push_str(&s[i..i + off]);
            let start = i + off;
            if bytes.get(start + 1) == Some(&b'%') {
                literal.push('%');
                i = start + 2;
                continue;
            }
            let name_end =
                start + 1 + bytes[start + 1..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
            let name = &s[start + 1..name_end];
            if name.is_empty() {
                return Err(format!(
                    "a lone `%` at byte {start}: write %% for a literal %, or an operator such as %START_TIME%"
                ));
            }
            let mut j = name_end;
            let mut arg = None;
            if bytes.get(j) == Some(&b'(') {
                // A time format may itself contain `)`; it ends at `)%`.
                let close = if name == "START_TIME" { s[j + 1..].find(")%") } else { s[j + 1..].find(')') };
                let Some(close) = close.map(|c| j + 1 + c) else {
                    return Err(format!("`%{name}(` has no closing `)`"));
                };
                arg = Some(&s[j + 1..close]);
                j = close + 1;
            }
            let mut max_len = None;
            if bytes.get(j) == Some(&b':') {
                let digits = bytes[j + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
                let text = &s[j + 1..j + 1 + digits];
                let n: usize = text
                    .parse()
                    .map_err(|_| format!("`{}`: expected a length after `:`", &s[start..j + 1 + digits]))?;
                max_len = Some(n);
                j += 1 + digits;
            }
            if bytes.get(j) != Some(&b'%') {
                return Err(format!("`{}` is not closed with `%`", &s[start..j.min(s.len())]));
            }
            let text = &s[start..=j];
            let op = Op::parse(name, arg, max_len, text)?;
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Op(op));
            i = j + 1;
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Format { pieces })
    }

    /// Envoy's default access log format (`DEFAULT_FORMAT`).
    pub fn envoy_default() -> Format {
        // The constant is covered by a test; an empty format is the fallback
        // should it ever not parse.
        Format::parse(DEFAULT_FORMAT).unwrap_or(Format { pieces: Vec::new() })
    }

    /// Whether the string has any operator (else it renders to a constant).
    pub fn has_operators(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Op(_)))
    }

    /// The text itself when there is no operator (`%%` already turned into `%`).
    pub fn as_literal(&self) -> Option<String> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Literal(s) => out.push_str(s),
                Piece::Op(_) => return None,
            }
        }
        Some(out)
    }

    /// Appends the rendered line to `out`; a missing value is `-`.
    pub fn render(&self, ctx: &LogContext<'_>, out: &mut Vec<u8>) {
        self.render_missing_as(ctx, out, b"-");
    }

    /// Appends the rendered line to `out`, writing `missing` for a value that
    /// is not there (`omit_empty_values` uses the empty string).
    pub fn render_missing_as(&self, ctx: &LogContext<'_>, out: &mut Vec<u8>, missing: &[u8]) {
        for p in &self.pieces {
            match p {
                Piece::Literal(s) => out.extend_from_slice(s.as_bytes()),
                Piece::Op(op) => write_text(&op.eval(ctx), out, missing),
            }
        }
    }

    /// The single operator when the string is exactly one (JSON values of
    /// such fields keep their type).
    fn single_op(&self) -> Option<&Op> {
        match self.pieces.as_slice() {
            [Piece::Op(op)] => Some(op),
            _ => None,
        }
    }
}

impl Op {
    fn parse(name: &str, arg: Option<&str>, max_len: Option<usize>, text: &str) -> Result<Op, String> {
        let header = || -> Result<HeaderOp, String> {
            let arg = arg.ok_or_else(|| format!("`{text}`: {name} needs a header name: %{name}(X-HEADER)%"))?;
            HeaderOp::parse(arg, max_len, name == "RESP", text)
        };
        let op = match name {
            "REQ" => return Ok(Op::Req(header()?)),
            "REQ_WITHOUT_QUERY" => return Ok(Op::ReqWithoutQuery(header()?)),
            "RESP" => return Ok(Op::Resp(header()?)),
            "START_TIME" => {
                if max_len.is_some() {
                    return Err(format!("`{text}`: START_TIME takes no length limit"));
                }
                let f = arg.unwrap_or(DEFAULT_TIME_FORMAT);
                return TimeFormat::parse(f).map(Op::StartTime).map_err(|e| format!("`{text}`: {e}"));
            }
            "RESPONSE_CODE" => Op::ResponseCode,
            "RESPONSE_FLAGS" => Op::ResponseFlags,
            "RESPONSE_CODE_DETAILS" => Op::ResponseCodeDetails,
            "BYTES_RECEIVED" => Op::BytesReceived,
            "BYTES_SENT" => Op::BytesSent,
            "DURATION" => Op::Duration,
            "REQUEST_DURATION" => Op::RequestDuration,
            "RESPONSE_DURATION" => Op::ResponseDuration,
            "PROTOCOL" => Op::Protocol,
            "UPSTREAM_HOST" | "UPSTREAM_REMOTE_ADDRESS" => Op::UpstreamHost,
            "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::UpstreamHostWithoutPort,
            "UPSTREAM_CLUSTER" => Op::UpstreamCluster,
            "UPSTREAM_LOCAL_ADDRESS" => Op::UpstreamLocalAddress,
            // ringway takes no client address from x-forwarded-for, so the
            // "direct" forms are the same.
            "DOWNSTREAM_REMOTE_ADDRESS" => Op::DownstreamRemoteAddress,
            "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => Op::DownstreamDirectRemoteAddress,
            "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => Op::DownstreamDirectRemoteAddressWithoutPort,
            "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::DownstreamRemoteAddressWithoutPort,
            "DOWNSTREAM_LOCAL_ADDRESS" => Op::DownstreamLocalAddress,
            "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Op::DownstreamLocalAddressWithoutPort,
            "DOWNSTREAM_LOCAL_PORT" => Op::DownstreamLocalPort,
            "ROUTE_NAME" => Op::RouteName,
            "STREAM_ID" => Op::StreamId,
            "HOSTNAME" => Op::Hostname(hostname()),
            "CONNECTION_ID" => Op::ConnectionId,
            _ if UNSUPPORTED.contains(&name) => {
                return Err(format!("operator `{text}` is not supported yet"));
            }
            _ => return Err(format!("unknown operator `{text}`")),
        };
        if arg.is_some() || max_len.is_some() {
            return Err(format!("`{text}`: {name} takes no argument; write %{name}%"));
        }
        Ok(op)
    }

    fn eval<'a>(&'a self, ctx: &LogContext<'a>) -> Val<'a> {
        let ms = |d: Duration| Val::Num(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let text = |s: &'a str| if s.is_empty() || s == "-" { Val::Missing } else { Val::Bytes(s.as_bytes()) };
        match self {
            Op::StartTime(f) => Val::Time(ctx.start, f),
            Op::Req(h) => h.eval(ctx, false, false),
            Op::ReqWithoutQuery(h) => h.eval(ctx, false, true),
            Op::Resp(h) => h.eval(ctx, true, false),
            Op::ResponseCode => Val::Num(u64::from(ctx.response_code)),
            Op::ResponseFlags => text(ctx.response_flags),
            Op::ResponseCodeDetails => text(ctx.response_code_details),
            Op::BytesReceived => Val::Num(ctx.bytes_received),
            Op::BytesSent => Val::Num(ctx.bytes_sent),
            Op::Duration => ms(ctx.duration),
            Op::RequestDuration => ctx.request_duration.map_or(Val::Missing, ms),
            Op::ResponseDuration => ctx.response_duration.map_or(Val::Missing, ms),
            Op::Protocol => text(ctx.protocol),
            Op::UpstreamHost => ctx.upstream_host.map_or(Val::Missing, Val::Addr),
            Op::UpstreamHostWithoutPort => ctx.upstream_host.map_or(Val::Missing, |a| Val::Ip(a.ip())),
            Op::UpstreamCluster => ctx.upstream_cluster.map_or(Val::Missing, text),
            Op::UpstreamLocalAddress => ctx.upstream_local.map_or(Val::Missing, Val::Addr),
            Op::DownstreamRemoteAddress => Val::Addr(ctx.downstream_remote),
            Op::DownstreamRemoteAddressWithoutPort => Val::Ip(ctx.downstream_remote.ip()),
            Op::DownstreamDirectRemoteAddress => Val::Addr(ctx.downstream_direct_remote),
            Op::DownstreamDirectRemoteAddressWithoutPort => Val::Ip(ctx.downstream_direct_remote.ip()),
            Op::DownstreamLocalAddress => ctx.downstream_local.map_or(Val::Missing, Val::Addr),
            Op::DownstreamLocalAddressWithoutPort => ctx.downstream_local.map_or(Val::Missing, |a| Val::Ip(a.ip())),
            Op::DownstreamLocalPort => ctx.downstream_local.map_or(Val::Missing, |a| Val::Num(u64::from(a.port()))),
            Op::RouteName => ctx.route_name.map_or(Val::Missing, text),
            Op::StreamId => match header(ctx.request_headers, "x-request-id") {
                Some(v) => Val::Bytes(v),
                None => ctx.request_id.map_or(Val::Missing, text),
            },
            Op::Hostname(h) => text(h),
            Op::ConnectionId => Val::Num(ctx.connection_id),
        }
    }
}

impl HeaderOp {
    fn parse(arg: &str, max_len: Option<usize>, response: bool, text: &str) -> Result<HeaderOp, String> {
        let (main, alt) = match arg.split_once('?') {
            Some((m, a)) => (m, Some(a)),
            None => (arg, None),
        };
        let main = HeaderRef::parse(main, response).map_err(|e| format!("`{text}`: {e}"))?;
        let alt = match alt {
            Some(a) if a.contains('?') => return Err(format!("`{text}`: give at most one alternative (X?Y)")),
            Some(a) => Some(HeaderRef::parse(a, response).map_err(|e| format!("`{text}`: {e}"))?),
            None => None,
        };
        Ok(HeaderOp { main, alt, max_len })
    }

    fn eval<'a>(&'a self, ctx: &LogContext<'a>, response: bool, strip_query: bool) -> Val<'a> {
        let mut v = self.main.eval(ctx, response);
        if matches!(v, Val::Missing)
            && let Some(alt) = &self.alt
        {
            v = alt.eval(ctx, response);
        }
        if let Val::Bytes(mut b) = v {
            if strip_query && let Some(q) = b.iter().position(|&c| c == b'?') {
                b = &b[..q];
            }
            if let Some(max) = self.max_len {
                b = &b[..b.len().min(max)];
            }
            return Val::Bytes(b);
        }
        v
    }
}

impl HeaderRef {
    fn parse(name: &str, response: bool) -> Result<HeaderRef, String> {
        let lower = name.trim().to_ascii_lowercase();
        if lower.is_empty() {
            return Err("empty header name".into());
        }
        if let Some(pseudo) = lower.strip_prefix(':') {
            return match (pseudo, response) {
                ("method", false) => Ok(HeaderRef::Method),
                ("path", false) => Ok(HeaderRef::Path),
                ("authority", false) => Ok(HeaderRef::Authority),
                ("scheme", false) => Ok(HeaderRef::Scheme),
                ("status", true) => Ok(HeaderRef::Status),
                (_, false) => Err(format!("`{name}`: expected :method, :path, :authority or :scheme")),
                (_, true) => Err(format!("`{name}`: the only response pseudo-header is :status")),
            };
        }
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$&'*+-.^_`|~".contains(&b);
        if !lower.bytes().all(token) {
            return Err(format!("`{name}` is not a valid header name"));
        }
        Ok(HeaderRef::Named(lower))
    }

    fn eval<'a>(&'a self, ctx: &LogContext<'a>, response: bool) -> Val<'a> {
        let present = |s: &'a str| if s.is_empty() { Val::Missing } else { Val::Bytes(s.as_bytes()) };
        match self {
            HeaderRef::Method => present(ctx.method),
            HeaderRef::Path => present(ctx.target),
            HeaderRef::Authority => header(ctx.request_headers, "host").map_or(Val::Missing, Val::Bytes),
            HeaderRef::Scheme => present(ctx.scheme),
            HeaderRef::Status if ctx.response_code == 0 => Val::Missing,
            HeaderRef::Status => Val::Num(u64::from(ctx.response_code)),
            HeaderRef::Named(n) if response => match header(ctx.response_headers, n) {
                Some(v) => Val::Bytes(v),
                None if n == "x-envoy-upstream-service-time" => ctx
                    .upstream_service_time
                    .map_or(Val::Missing, |d| Val::Num(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
                None => Val::Missing,
            },
            HeaderRef::Named(n) => match header(ctx.request_headers, n) {
                Some(v) => Val::Bytes(v),
                None if n == "x-request-id" => ctx.request_id.map_or(Val::Missing, present),
                None => Val::Missing,
            },
        }
    }
}

/// The first value of header `name` (any case); an empty value counts as absent.
fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice()).filter(|v| !v.is_empty())
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname writes at
    // most that many and we stop at the first NUL (or the end).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn write_text(v: &Val<'_>, out: &mut Vec<u8>, missing: &[u8]) {
    match v {
        Val::Missing => out.extend_from_slice(missing),
        Val::Bytes([]) => out.extend_from_slice(missing),
        Val::Bytes(b) => out.extend_from_slice(b),
        Val::Num(n) => write_u64(out, *n),
        // Writing to a Vec cannot fail.
        Val::Addr(a) => {
            let _ = write!(out, "{a}");
        }
        Val::Ip(ip) => {
            let _ = write!(out, "{ip}");
        }
        Val::Time(t, f) => f.render(*t, out),
    }
}

/// `n` in decimal, without the formatting machinery (also used for the
/// numbers in every proxied response head).
pub(crate) fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Writes `n` with at least `width` digits, zero-padded.
fn write_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for _ in (digits.len() - i)..width {
        out.push(b'0');
    }
    out.extend_from_slice(&digits[i..]);
}

// ---- JSON (`json_format`)

/// A `json_format` dictionary: keys in the order Envoy writes them (sorted),
/// values that are format strings, constants or nested dictionaries.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonFormat {
    fields: Vec<(String, JsonValue)>,
}

#[derive(Debug, Clone, PartialEq)]
enum JsonValue {
    /// A number, bool or null from the config, already serialised.
    Constant(String),
    Format(Format),
    Object(JsonFormat),
}

impl JsonFormat {
    /// Parses a `json_format` mapping. Errors name the key path (`a.b`).
    pub fn parse(map: &serde_json::Map<String, serde_json::Value>) -> Result<JsonFormat, (String, String)> {
        let mut fields = Vec::new();
        for (key, value) in map {
            let v = match value {
                serde_json::Value::String(s) => JsonValue::Format(Format::parse(s).map_err(|e| (key.clone(), e))?),
                serde_json::Value::Object(m) => {
                    JsonValue::Object(JsonFormat::parse(m).map_err(|(p, e)| (format!("{key}.{p}"), e))?)
                }
                serde_json::Value::Array(_) => {
                    return Err((key.clone(), "lists are not supported; use strings, numbers or mappings".into()));
                }
                other => JsonValue::Constant(other.to_string()),
            };
            // The key is written escaped once, here.
            fields.push((serde_json::Value::String(key.clone()).to_string(), v));
        }
        Ok(JsonFormat { fields })
    }

    /// Appends one JSON object (no newline). A field that is exactly one
    /// operator keeps its type (numbers stay numbers) and a missing value is
    /// `null`, or left out with `omit_empty`; a field mixing text and
    /// operators is a string with `-` (or nothing) for missing values.
    pub fn render(&self, ctx: &LogContext<'_>, out: &mut Vec<u8>, omit_empty: bool) {
        out.push(b'{');
        let mut first = true;
        for (key, value) in &self.fields {
            let single = match value {
                JsonValue::Format(f) => f.single_op().map(|op| op.eval(ctx)),
                _ => None,
            };
            if omit_empty && single.as_ref().is_some_and(Val::is_missing) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(key.as_bytes());
            out.push(b':');
            match (value, single) {
                (_, Some(v)) => write_json(&v, out),
                (JsonValue::Constant(c), None) => out.extend_from_slice(c.as_bytes()),
                (JsonValue::Object(o), None) => o.render(ctx, out, omit_empty),
                (JsonValue::Format(f), None) => {
                    out.push(b'"');
                    let start = out.len();
                    f.render_missing_as(ctx, out, if omit_empty { b"" } else { b"-" });
                    escape_in_place(out, start);
                    out.push(b'"');
                }
            }
        }
        out.push(b'}');
    }
}

impl Val<'_> {
    fn is_missing(&self) -> bool {
        match self {
            Val::Missing => true,
            Val::Bytes(b) => b.is_empty(),
            _ => false,
        }
    }
}

fn write_json(v: &Val<'_>, out: &mut Vec<u8>) {
    match v {
        Val::Num(n) => write_u64(out, *n),
        v if v.is_missing() => out.extend_from_slice(b"null"),
        v => {
            out.push(b'"');
            let start = out.len();
            write_text(v, out, b"");
            escape_in_place(out, start);
            out.push(b'"');
        }
    }
}

/// Makes `out[start..]` a valid JSON string body: quotes, backslashes and
/// control characters escaped, invalid UTF-8 replaced. Allocates only when
/// there is something to change.
fn escape_in_place(out: &mut Vec<u8>, start: usize) {
    let tail = &out[start..];
    let clean = tail.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\') && std::str::from_utf8(tail).is_ok();
    if clean {
        return;
    }
    let raw = out.split_off(start);
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
}

// ---- START_TIME

/// A strftime-style format, always rendered in UTC.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TimeFormat {
    pieces: Vec<TimePiece>,
}

#[derive(Debug, Clone, PartialEq)]
enum TimePiece {
    Literal(String),
    /// `%Y`
    Year,
    /// `%y`
    Year2,
    /// `%m`
    Month,
    /// `%d`
    Day,
    /// `%e`: day, space-padded.
    DaySpace,
    /// `%j`
    DayOfYear,
    /// `%H`
    Hour,
    /// `%I`
    Hour12,
    /// `%p`
    AmPm,
    /// `%M`
    Minute,
    /// `%S`
    Second,
    /// `%f` (9 digits), `%3f`, `%E3S`'s fraction: this many digits, truncated.
    Fraction(u8),
    /// `%E*S`'s fraction: `.` and as many digits as needed, nothing for zero.
    FractionTrimmed,
    /// `%s`
    EpochSeconds,
    /// `%z`: `+0000`.
    Offset,
    /// `%Ez`: `+00:00`.
    OffsetColon,
    /// `%Z`: `UTC`.
    Zone,
    /// `%b`, `%h`
    MonthAbbr,
    /// `%B`
    MonthName,
    /// `%a`
    WeekdayAbbr,
    /// `%A`
    WeekdayName,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

impl TimeFormat {
    fn parse(f: &str) -> Result<TimeFormat, String> {
        use TimePiece::*;
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = f.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let Some(spec) = chars.next() else { return Err("the time format ends in a lone `%`".into()) };
            let mut add: Vec<TimePiece> = match spec {
                '%' => {
                    literal.push('%');
                    continue;
                }
                'n' => {
                    literal.push('\n');
                    continue;
                }
                't' => {
                    literal.push('\t');
                    continue;
                }
                'Y' => vec![Year],
                'y' => vec![Year2],
                'm' => vec![Month],
                'd' => vec![Day],
                'e' => vec![DaySpace],
                'j' => vec![DayOfYear],
                'H' => vec![Hour],
                'I' => vec![Hour12],
                'p' => vec![AmPm],
                'M' => vec![Minute],
                'S' => vec![Second],
                's' => vec![EpochSeconds],
                'z' => vec![Offset],
                'Z' => vec![Zone],
                'b' | 'h' => vec![MonthAbbr],
                'B' => vec![MonthName],
                'a' => vec![WeekdayAbbr],
                'A' => vec![WeekdayName],
                'T' => vec![Hour, Literal(":".into()), Minute, Literal(":".into()), Second],
                'F' => vec![Year, Literal("-".into()), Month, Literal("-".into()), Day],
                'R' => vec![Hour, Literal(":".into()), Minute],
                'f' => vec![Fraction(9)],
                d @ '1'..='9' if chars.peek() == Some(&'f') => {
                    chars.next();
                    vec![Fraction(d as u8 - b'0')]
                }
                'E' => match (chars.next(), chars.peek()) {
                    (Some('z'), _) => vec![OffsetColon],
                    (Some('*'), Some('S')) => {
                        chars.next();
                        vec![Second, FractionTrimmed]
                    }
                    (Some(d @ '0'..='9'), Some('S')) => {
                        chars.next();
                        let digits = d as u8 - b'0';
                        if digits == 0 { vec![Second] } else { vec![Second, Literal(".".into()), Fraction(digits)] }
                    }
                    _ => return Err("`%E` must be followed by z, *S or a digit and S (as in %E3S)".into()),
                },
                other => return Err(format!("unsupported time specifier `%{other}`")),
            };
            if !literal.is_empty() {
                pieces.push(Literal(std::mem::take(&mut literal)));
            }
            pieces.append(&mut add);
        }
        if !literal.is_empty() {
            pieces.push(Literal(literal));
        }
        // Merge neighbouring literals (from %T and friends).
        let mut merged: Vec<TimePiece> = Vec::with_capacity(pieces.len());
        for p in pieces {
            match (merged.last_mut(), p) {
                (Some(Literal(a)), Literal(b)) => a.push_str(&b),
                (_, p) => merged.push(p),
            }
        }
        Ok(TimeFormat { pieces: merged })
    }

    fn render(&self, t: SystemTime, out: &mut Vec<u8>) {
        let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let (s, n) = (d.as_secs() as i64, d.subsec_nanos());
                if n == 0 { (-s, 0) } else { (-s - 1, 1_000_000_000 - n) }
            }
        };
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400) as u64;
        let (year, month, day) = civil_from_days(days);
        let (hour, minute, second) = (sod / 3600, sod / 60 % 60, sod % 60);
        for p in &self.pieces {
            match p {
                TimePiece::Literal(s) => out.extend_from_slice(s.as_bytes()),
                TimePiece::Year => {
                    if year < 0 {
                        out.push(b'-');
                    }
                    write_padded(out, year.unsigned_abs(), 4);
                }
                TimePiece::Year2 => write_padded(out, year.rem_euclid(100) as u64, 2),
                TimePiece::Month => write_padded(out, u64::from(month), 2),
                TimePiece::Day => write_padded(out, u64::from(day), 2),
                TimePiece::DaySpace => {
                    if day < 10 {
                        out.push(b' ');
                    }
                    write_u64(out, u64::from(day));
                }
                TimePiece::DayOfYear => write_padded(out, u64::from(day_of_year(year, month, day)), 3),
                TimePiece::Hour => write_padded(out, hour, 2),
                TimePiece::Hour12 => write_padded(out, if hour % 12 == 0 { 12 } else { hour % 12 }, 2),
                TimePiece::AmPm => out.extend_from_slice(if hour < 12 { b"AM" } else { b"PM" }),
                TimePiece::Minute => write_padded(out, minute, 2),
                TimePiece::Second => write_padded(out, second, 2),
                TimePiece::Fraction(digits) => {
                    let d = u32::from(*digits).min(9);
                    write_padded(out, u64::from(nanos / 10u32.pow(9 - d)), d as usize);
                }
                TimePiece::FractionTrimmed => {
                    if nanos != 0 {
                        let mut n = nanos;
                        let mut width = 9;
                        while n % 10 == 0 {
                            n /= 10;
                            width -= 1;
                        }
                        out.push(b'.');
                        write_padded(out, u64::from(n), width);
                    }
                }
                TimePiece::EpochSeconds => {
                    if secs < 0 {
                        out.push(b'-');
                    }
                    write_u64(out, secs.unsigned_abs());
                }
                TimePiece::Offset => out.extend_from_slice(b"+0000"),
                TimePiece::OffsetColon => out.extend_from_slice(b"+00:00"),
                TimePiece::Zone => out.extend_from_slice(b"UTC"),
                TimePiece::MonthAbbr => out.extend_from_slice(&MONTHS[month as usize - 1].as_bytes()[..3]),
                TimePiece::MonthName => out.extend_from_slice(MONTHS[month as usize - 1].as_bytes()),
                TimePiece::WeekdayAbbr => out.extend_from_slice(&WEEKDAYS[weekday(days)].as_bytes()[..3]),
                TimePiece::WeekdayName => out.extend_from_slice(WEEKDAYS[weekday(days)].as_bytes()),
            }
        }
    }
}

/// Year, month (1..=12) and day (1..=31) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn day_of_year(year: i64, month: u32, day: u32) -> u32 {
    const BEFORE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    BEFORE[month as usize - 1] + day + u32::from(leap && month > 2)
}

/// 0 = Sunday; 1970-01-01 was a Thursday.
fn weekday(days: i64) -> usize {
    (days + 4).rem_euclid(7) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_as_format_writes_them() {
        for n in [0, 7, 10, 99, 200, 304, 65_535, 1 << 40, u64::MAX] {
            let mut out = b"x".to_vec();
            write_u64(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    /// 2026-11-22T04:15:56.123456789Z
    fn start() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_795_320_956, 123_456_789)
    }

    const REQ: &[(&str, &str)] = &[
        ("Host", "example.com"),
        ("User-Agent", "curl/8.5.0"),
        ("X-Request-Id", "6b1e3b1a-4b0e-4c7e-9b1e-0c1f2a3b4c5d"),
        ("X-Forwarded-For", "10.0.0.1"),
    ];

    fn headers(h: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        h.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect()
    }

    fn ctx<'a>(req: &'a [(String, Vec<u8>)], resp: &'a [(String, Vec<u8>)]) -> LogContext<'a> {
        LogContext {
            start: start(),
            method: "GET",
            target: "/service/1?x=1",
            protocol: "HTTP/1.1",
            scheme: "http",
            request_headers: req,
            request_id: None,
            response_headers: resp,
            response_code: 200,
            response_flags: "-",
            response_code_details: "via_upstream",
            bytes_received: 0,
            bytes_sent: 1234,
            duration: Duration::from_micros(12_900),
            request_duration: Some(Duration::from_millis(1)),
            response_duration: None,
            upstream_service_time: Some(Duration::from_millis(11)),
            upstream_host: Some("10.1.2.3:8000".parse().unwrap()),
            upstream_cluster: Some("service1"),
            upstream_local: None,
            downstream_remote: "192.0.2.7:51234".parse().unwrap(),
            downstream_direct_remote: "192.0.2.7:51234".parse().unwrap(),
            downstream_local: Some("[::1]:8080".parse().unwrap()),
            route_name: None,
            connection_id: 42,
        }
    }

    fn render(format: &str, c: &LogContext<'_>) -> String {
        let mut out = Vec::new();
        Format::parse(format).unwrap().render(c, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_default_format_matches_envoy() {
        let req = headers(REQ);
        let resp = headers(&[("X-Envoy-Upstream-Service-Time", "11")]);
        let line = render(DEFAULT_FORMAT, &ctx(&req, &resp));
        assert_eq!(
            line,
            "[2026-11-22T04:15:56.123Z] \"GET /service/1?x=1 HTTP/1.1\" 200 - 0 1234 12 11 \"10.0.0.1\" \
\"curl/8.5.0\" \"6b1e3b1a-4b0e-4c7e-9b1e-0c1f2a3b4c5d\" \"example.com\" \"10.1.2.3:8000\"\n"
        );
        assert_eq!(Format::envoy_default(), Format::parse(DEFAULT_FORMAT).unwrap());
    }

    #[test]
    fn missing_values_print_a_dash() {
        let mut c = ctx(&[], &[]);
        c.upstream_host = None;
        c.upstream_service_time = None;
        c.response_code = 0;
        let line = render(DEFAULT_FORMAT, &c);
        assert_eq!(
            line,
            "[2026-11-22T04:15:56.123Z] \"GET /service/1?x=1 HTTP/1.1\" 0 - 0 1234 12 - \"-\" \"-\" \"-\" \"-\" \"-\"\n"
        );
        // With a generated request id, REQ(X-REQUEST-ID) and STREAM_ID show it.
        c.request_id = Some("gen-id");
        assert_eq!(render("%REQ(X-REQUEST-ID)% %STREAM_ID%", &c), "gen-id gen-id");
        let mut out = Vec::new();
        Format::parse("a%ROUTE_NAME%b").unwrap().render_missing_as(&c, &mut out, b"");
        assert_eq!(out, b"ab");
    }

    #[test]
    fn header_operators_take_an_alternative_and_a_length() {
        let req = headers(&[("X-Envoy-Original-Path", "/orig?q=1"), ("User-Agent", "Mozilla/5.0 (X11)")]);
        let resp = headers(&[("Content-Type", "text/plain")]);
        let c = ctx(&req, &resp);
        let cases = [
            ("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "/orig?q=1"),
            ("%REQ(X-MISSING?:PATH)%", "/service/1?x=1"),
            ("%REQ(X-MISSING?X-ALSO-MISSING)%", "-"),
            ("%REQ(USER-AGENT):7%", "Mozilla"),
            ("%REQ(x-missing?user-agent):3%", "Moz"),
            ("%REQ(:METHOD)% %REQ(:SCHEME)% %REQ(:AUTHORITY)%", "GET http -"),
            ("%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH)%", "/orig"),
            ("%REQ_WITHOUT_QUERY(:PATH)%", "/service/1"),
            ("%RESP(CONTENT-TYPE)% %RESP(:STATUS)%", "text/plain 200"),
            // Not in the headers: falls back to the measured service time.
            ("%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", "11"),
            ("100%% %PROTOCOL%", "100% HTTP/1.1"),
        ];
        for (f, want) in cases {
            assert_eq!(render(f, &c), want, "{f}");
        }
    }

    #[test]
    fn connection_and_upstream_operators() {
        let mut c = ctx(&[], &[]);
        c.upstream_local = Some("10.0.0.9:40000".parse().unwrap());
        c.route_name = Some("r1");
        let f = "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_ADDRESS% \
%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_PORT% %UPSTREAM_HOST% %UPSTREAM_CLUSTER% \
%UPSTREAM_LOCAL_ADDRESS% %ROUTE_NAME% %CONNECTION_ID% %RESPONSE_CODE_DETAILS% %REQUEST_DURATION% %RESPONSE_DURATION%";
        assert_eq!(
            render(f, &c),
            "192.0.2.7:51234 192.0.2.7 [::1]:8080 ::1 8080 10.1.2.3:8000 service1 10.0.0.9:40000 r1 42 via_upstream 1 -"
        );
        assert!(!render("%HOSTNAME%", &c).is_empty());
    }

    #[test]
    fn start_time_formats() {
        let c = ctx(&[], &[]);
        let cases = [
            ("%START_TIME%", "2026-11-22T04:15:56.123Z"),
            ("%START_TIME(%Y-%m-%dT%H:%M:%S%z)%", "2026-11-22T04:15:56+0000"),
            ("%START_TIME(%s.%3f)%", "1795320956.123"),
            ("%START_TIME(%s.%6f)%", "1795320956.123456"),
            ("%START_TIME(%f)%", "123456789"),
            ("%START_TIME(%E6S|%E*S|%E0S)%", "56.123456|56.123456789|56"),
            (
                "%START_TIME(%a %b %e %T %Y %Z %j %p %I %y %Ez %%)%",
                "Sun Nov 22 04:15:56 2026 UTC 326 AM 04 26 +00:00 %",
            ),
            ("%START_TIME(%A, %d %B %F (%R))%", "Sunday, 22 November 2026-11-22 (04:15)"),
        ];
        for (f, want) in cases {
            assert_eq!(render(f, &c), want, "{f}");
        }
        let mut c = c;
        c.start = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(render("%START_TIME(%F %j)%", &c), "2000-02-29 060");
        c.start = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(render("%START_TIME%", &c), "1969-12-31T23:59:58.500Z");
    }

    #[test]
    fn civil_dates_round_trip() {
        // Every day from 1900 to 2200 follows the one before.
        let mut prev = civil_from_days(-25_567);
        assert_eq!(prev, (1900, 1, 1));
        for d in -25_566..84_000 {
            let cur = civil_from_days(d);
            let next_day = prev.2 + 1;
            assert!(
                cur == (prev.0, prev.1, next_day)
                    || (cur.2 == 1 && (cur.1 == prev.1 + 1 || (cur.1 == 1 && cur.0 == prev.0 + 1))),
                "{prev:?} -> {cur:?}"
            );
            prev = cur;
        }
    }

    #[test]
    fn bad_format_strings_are_refused() {
        let cases = [
            ("%FOO%", "unknown operator `%FOO%`"),
            ("[%START_TIME%] %REQ(:METHOD)% %BOGUS_OP%\n", "unknown operator `%BOGUS_OP%`"),
            ("%TRAILER(grpc-status)%", "operator `%TRAILER(grpc-status)%` is not supported yet"),
            ("50% off", "a lone `%` at byte 2"),
            ("%REQ(:METHOD)", "`%REQ(:METHOD)` is not closed with `%`"),
            ("%REQ(:METHOD%", "`%REQ(` has no closing `)`"),
            ("%REQ%", "REQ needs a header name"),
            ("%REQ(a?b?c)%", "at most one alternative"),
            ("%REQ(:PAHT)%", "expected :method, :path, :authority or :scheme"),
            ("%REQ(bad header)%", "is not a valid header name"),
            ("%REQ(x):%", "expected a length after `:`"),
            ("%DURATION(x)%", "DURATION takes no argument"),
            ("%DURATION%", ""),
            ("%START_TIME(%Q)%", "unsupported time specifier `%Q`"),
            ("%START_TIME:3%", "START_TIME takes no length limit"),
            ("%RESPONSE_CODE", "is not closed"),
        ];
        for (f, want) in cases {
            match Format::parse(f) {
                Ok(_) if want.is_empty() => {}
                Ok(_) => panic!("`{f}` should be refused"),
                Err(e) => assert!(!want.is_empty() && e.contains(want), "`{f}`: want `{want}` in `{e}`"),
            }
        }
    }

    #[test]
    fn literals_and_operator_detection() {
        let f = Format::parse("plain 100%% text").unwrap();
        assert!(!f.has_operators());
        assert_eq!(f.as_literal().as_deref(), Some("plain 100% text"));
        let f = Format::parse("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%").unwrap();
        assert!(f.has_operators());
        assert_eq!(f.as_literal(), None);
        assert!(!Format::parse("").unwrap().has_operators());
    }

    fn json(map: serde_json::Value, c: &LogContext<'_>, omit_empty: bool) -> serde_json::Value {
        let serde_json::Value::Object(m) = map else { panic!("not a map") };
        let f = JsonFormat::parse(&m).unwrap();
        let mut out = Vec::new();
        f.render(c, &mut out, omit_empty);
        serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
    }

    #[test]
    fn json_values_keep_their_types() {
        let req = headers(&[("User-Agent", "say \"hi\"\\\u{1}"), ("X-Bin", "caf\u{e9}")]);
        let c = ctx(&req, &[]);
        let format = serde_json::json!({
            "start": "%START_TIME%",
            "code": "%RESPONSE_CODE%",
            "bytes": "%BYTES_SENT%",
            "ua": "%REQ(USER-AGENT)%",
            "missing": "%REQ(X-NOPE)%",
            "mixed": "%REQ(:METHOD)% %REQ(X-NOPE)%",
            "nested": {"up": "%UPSTREAM_HOST%", "port": "%DOWNSTREAM_LOCAL_PORT%"},
            "constant": 7,
            "flag": true,
            "text": "literal",
            "bin": "%REQ(X-BIN)%",
        });
        let got = json(format.clone(), &c, false);
        assert_eq!(
            got,
            serde_json::json!({
                "start": "2026-11-22T04:15:56.123Z",
                "code": 200,
                "bytes": 1234,
                "ua": "say \"hi\"\\\u{1}",
                "missing": null,
                "mixed": "GET -",
                "nested": {"up": "10.1.2.3:8000", "port": 8080},
                "constant": 7,
                "flag": true,
                "text": "literal",
                "bin": "caf\u{e9}",
            })
        );
        let omitted = json(format, &c, true);
        assert!(omitted.get("missing").is_none(), "{omitted}");
        assert_eq!(omitted["mixed"], "GET ");
    }

    #[test]
    fn json_strings_escape_invalid_utf8() {
        let req = vec![("x".to_string(), vec![b'a', 0xff, b'"'])];
        let c = ctx(&req, &[]);
        let got = json(serde_json::json!({"x": "%REQ(X)%"}), &c, false);
        assert_eq!(got["x"], "a\u{fffd}\"");
    }

    #[test]
    fn json_format_errors_name_the_key() {
        let m = serde_json::json!({"a": {"b": "%NOPE%"}});
        let serde_json::Value::Object(m) = m else { unreachable!() };
        let (key, e) = JsonFormat::parse(&m).unwrap_err();
        assert_eq!(key, "a.b");
        assert!(e.contains("unknown operator `%NOPE%`"), "{e}");
        let m = serde_json::json!({"l": ["%DURATION%"]});
        let serde_json::Value::Object(m) = m else { unreachable!() };
        assert_eq!(JsonFormat::parse(&m).unwrap_err().0, "l");
    }
}
