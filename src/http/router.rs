//! The router's match: Host header → virtual host (exact, then the longest
//! `*.suffix`, then the longest `prefix*`, then `*`), then the first route
//! whose path matcher accepts the request path.
//!
//! connection manager → **router** → cluster | direct response

use std::borrow::Cow;

use crate::config::{
    DomainMatch, HeaderMatch, HeaderRule, PathMatch, QueryMatch, RouteEntry, RouteTable, StringMatch, StringMatchKind,
    VirtualHostConfig,
};

/// What a route matches on.
pub struct RequestView<'a> {
    /// The Host header (or the authority of an absolute-form target).
    pub host: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query after `?`, without it ("" when none).
    pub query: &'a str,
    pub method: &'a str,
    pub headers: &'a [(String, Vec<u8>)],
}

/// The first route of the request's virtual host whose path, header and
/// query parameter conditions all hold.
pub fn route<'a>(table: &'a RouteTable, req: &RequestView<'_>) -> Option<&'a RouteEntry> {
    let vhost = virtual_host(table, req.host)?;
    vhost.routes.iter().find(|r| {
        path_matches(r, req.path)
            && r.headers.iter().all(|h| header_matches(h, req))
            && r.query.iter().all(|q| query_matches(q, req.query))
    })
}

/// Envoy's precedence: exact, then the longest `*.suffix`, then the longest
/// `prefix*`, then `*`. A `domains` entry may name a port (`a.com:8080`) or
/// not (`a.com`): a Host with a port is matched both as written and without
/// its port, and the better match of the two wins (as written on a tie).
/// (Envoy itself ignores the port only with `strip_any_host_port`; ringway
/// always does, so `domains: [a.com]` serves `Host: a.com:8080`.)
pub fn virtual_host<'a>(table: &'a RouteTable, host: &str) -> Option<&'a VirtualHostConfig> {
    let host = host.to_ascii_lowercase();
    let without_port = strip_port(&host);
    let as_written = best_virtual_host(table, &host);
    let portless = if without_port == host { None } else { best_virtual_host(table, without_port) };
    match (as_written, portless) {
        (Some((r1, v1)), Some((r2, v2))) => Some(if r2 > r1 { v2 } else { v1 }),
        (a, b) => a.or(b).map(|(_, v)| v),
    }
}

/// The best virtual host for `host` and its rank: (kind, pattern length),
/// kind 3 exact, 2 suffix, 1 prefix, 0 any.
fn best_virtual_host<'a>(table: &'a RouteTable, host: &str) -> Option<((u8, usize), &'a VirtualHostConfig)> {
    let mut best: Option<((u8, usize), &VirtualHostConfig)> = None;
    for vh in &table.virtual_hosts {
        for d in &vh.domains {
            let rank = match d {
                DomainMatch::Exact(e) if e == host => (3, e.len()),
                DomainMatch::Suffix(s) if host.len() > s.len() && host.ends_with(s.as_str()) => (2, s.len()),
                DomainMatch::Prefix(p) if host.len() > p.len() && host.starts_with(p.as_str()) => (1, p.len()),
                DomainMatch::Any => (0, 0),
                _ => continue,
            };
            if best.is_none_or(|(r, _)| rank > r) {
                best = Some((rank, vh));
            }
        }
    }
    best
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i + 1..].is_empty() && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            let h = &host[..i];
            // A bare IPv6 address has colons but no brackets: leave it.
            if h.contains(':') && !h.ends_with(']') { host } else { h }
        }
        _ => host,
    }
}

fn path_matches(r: &RouteEntry, path: &str) -> bool {
    match &r.path {
        PathMatch::Prefix(p) if r.case_sensitive => path.starts_with(p.as_str()),
        PathMatch::Prefix(p) => {
            path.len() >= p.len() && path.is_char_boundary(p.len()) && path[..p.len()].eq_ignore_ascii_case(p)
        }
        PathMatch::Exact(p) if r.case_sensitive => path == p,
        PathMatch::Exact(p) => path.eq_ignore_ascii_case(p),
        PathMatch::Regex(re) => re.is_match(path),
        PathMatch::SeparatedPrefix(p) => {
            let head_matches = path.len() >= p.len()
                && path.is_char_boundary(p.len())
                && if r.case_sensitive {
                    path.starts_with(p.as_str())
                } else {
                    path[..p.len()].eq_ignore_ascii_case(p)
                };
            head_matches && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
        }
    }
}

/// A request header's value for matching: the request line's parts for the
/// pseudo-headers, several headers of one name joined with `,`.
fn header_value<'a>(name: &str, req: &RequestView<'a>) -> Option<Cow<'a, str>> {
    match name {
        ":method" => return Some(Cow::Borrowed(req.method)),
        // Host is :authority (an absolute-form target's authority replaces it).
        ":authority" | "host" => return Some(Cow::Borrowed(req.host)),
        ":scheme" => return Some(Cow::Borrowed("http")),
        ":path" if req.query.is_empty() => return Some(Cow::Borrowed(req.path)),
        ":path" => return Some(Cow::Owned(format!("{}?{}", req.path, req.query))),
        _ => {}
    }
    let mut found: Option<Cow<'a, str>> = None;
    for (n, v) in req.headers {
        if n.eq_ignore_ascii_case(name) {
            let v = String::from_utf8_lossy(v);
            found = Some(match found {
                None => v,
                Some(prev) => Cow::Owned(format!("{prev},{v}")),
            });
        }
    }
    found
}

fn header_matches(h: &HeaderMatch, req: &RequestView<'_>) -> bool {
    let value = match header_value(&h.name, req) {
        Some(v) => v,
        None if h.missing_as_empty => Cow::Borrowed(""),
        // Absent: only a presence test can hold (present_match: false, or an
        // inverted present_match: true).
        None => return matches!(h.rule, HeaderRule::Present(p) if p == h.invert),
    };
    let hit = match &h.rule {
        HeaderRule::Present(p) => *p,
        HeaderRule::Value(m) => string_matches(m, &value),
        HeaderRule::Range(start, end) => value.trim().parse::<i64>().is_ok_and(|n| *start <= n && n < *end),
    };
    hit != h.invert
}

fn query_matches(q: &QueryMatch, query: &str) -> bool {
    let value = query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == q.name).then_some(v)
    });
    match (value, &q.value) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(v), Some(m)) => string_matches(m, v),
    }
}

/// Envoy's string matcher. Patterns of an `ignore_case` matcher are stored
/// lower-cased.
pub fn string_matches(m: &StringMatch, value: &str) -> bool {
    let folded;
    let v = if m.ignore_case && !matches!(m.kind, StringMatchKind::Regex(_)) {
        folded = value.to_ascii_lowercase();
        folded.as_str()
    } else {
        value
    };
    match &m.kind {
        StringMatchKind::Exact(s) => v == s,
        StringMatchKind::Prefix(s) => v.starts_with(s.as_str()),
        StringMatchKind::Suffix(s) => v.ends_with(s.as_str()),
        StringMatchKind::Contains(s) => v.contains(s.as_str()),
        StringMatchKind::Regex(re) => re.is_match(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteActionConfig;

    fn entry(path: PathMatch, case_sensitive: bool, tag: u16) -> RouteEntry {
        RouteEntry {
            name: None,
            path,
            case_sensitive,
            headers: vec![],
            query: vec![],
            action: RouteActionConfig::Direct { status: tag, body: String::new() },
            request_headers: Default::default(),
            response_headers: Default::default(),
        }
    }

    fn tag(e: Option<&RouteEntry>) -> Option<u16> {
        match e?.action {
            RouteActionConfig::Direct { status, .. } => Some(status),
            RouteActionConfig::Forward(_) | RouteActionConfig::Redirect(_) => None,
        }
    }

    fn view<'a>(host: &'a str, path: &'a str, query: &'a str, headers: &'a [(String, Vec<u8>)]) -> RequestView<'a> {
        RequestView { host, path, query, method: "GET", headers }
    }

    fn vhost(name: &str, domains: Vec<DomainMatch>, tag: u16) -> VirtualHostConfig {
        VirtualHostConfig { name: name.into(), domains, routes: vec![entry(PathMatch::Prefix("/".into()), true, tag)] }
    }

    #[test]
    fn virtual_hosts_follow_envoys_precedence() {
        let table = RouteTable {
            virtual_hosts: vec![
                vhost("any", vec![DomainMatch::Any], 200),
                vhost("prefix", vec![DomainMatch::Prefix("api.".into())], 201),
                vhost("suffix", vec![DomainMatch::Suffix(".example.com".into())], 202),
                vhost("longer-suffix", vec![DomainMatch::Suffix(".eu.example.com".into())], 203),
                vhost(
                    "exact",
                    vec![DomainMatch::Exact("www.example.com".into()), DomainMatch::Exact("a:8080".into())],
                    204,
                ),
            ],
        };
        let cases = [
            ("www.example.com", 204),
            ("WWW.Example.COM:80", 204),
            ("a:8080", 204),
            ("a:9090", 200),
            ("api.example.com:8080", 202),
            ("x.example.com", 202),
            ("x.eu.example.com", 203),
            ("api.example.com", 202),
            ("api.other.org", 201),
            ("other.org", 200),
        ];
        for (host, want) in cases {
            assert_eq!(tag(route(&table, &view(host, "/", "", &[]))), Some(want), "{host}");
        }
    }

    #[test]
    fn routes_match_in_order() {
        let re = regex::Regex::new("^(?:/item/[0-9]+)$").unwrap();
        let table = RouteTable {
            virtual_hosts: vec![VirtualHostConfig {
                name: "v".into(),
                domains: vec![DomainMatch::Any],
                routes: vec![
                    entry(PathMatch::Exact("/exact".into()), true, 201),
                    entry(PathMatch::Regex(re), true, 202),
                    entry(PathMatch::Prefix("/API/".into()), false, 203),
                    entry(PathMatch::Prefix("/service/1".into()), true, 204),
                ],
            }],
        };
        let cases = [
            ("/exact", Some(201)),
            ("/exact/more", None),
            ("/item/42", Some(202)),
            ("/item/42x", None),
            ("/api/users", Some(203)),
            ("/service/1/x", Some(204)),
            ("/Service/1", None),
        ];
        for (path, want) in cases {
            assert_eq!(tag(route(&table, &view("h", path, "", &[]))), want, "{path}");
        }
    }

    #[test]
    fn headers_query_and_separated_prefixes_narrow_routes() {
        let exact = |s: &str| StringMatch { kind: StringMatchKind::Exact(s.into()), ignore_case: false };
        let h = |name: &str, rule: HeaderRule, invert: bool| HeaderMatch {
            name: name.into(),
            rule,
            invert,
            missing_as_empty: false,
        };
        let mut canary = entry(PathMatch::Prefix("/".into()), true, 201);
        canary.headers = vec![h("x-canary", HeaderRule::Value(exact("yes")), false)];
        let mut not_get = entry(PathMatch::Prefix("/".into()), true, 202);
        not_get.headers = vec![h(":method", HeaderRule::Value(exact("GET")), true)];
        let mut versioned = entry(PathMatch::Prefix("/".into()), true, 203);
        versioned.query = vec![QueryMatch {
            name: "v".into(),
            value: Some(StringMatch { kind: StringMatchKind::Prefix("beta".into()), ignore_case: true }),
        }];
        let mut ranged = entry(PathMatch::Prefix("/".into()), true, 204);
        ranged.headers = vec![h("x-shard", HeaderRule::Range(0, 10), false)];
        let mut no_debug = entry(PathMatch::SeparatedPrefix("/api".into()), true, 205);
        no_debug.headers = vec![h("x-debug", HeaderRule::Present(false), false)];
        let table = RouteTable {
            virtual_hosts: vec![VirtualHostConfig {
                name: "v".into(),
                domains: vec![DomainMatch::Any],
                routes: vec![canary, versioned, ranged, no_debug, not_get],
            }],
        };
        let hdr = |n: &str, v: &str| (n.to_string(), v.as_bytes().to_vec());
        let canary_h = [hdr("X-Canary", "yes")];
        let shard_h = [hdr("x-shard", "7")];
        let far_shard_h = [hdr("x-shard", "10")];
        let debug_h = [hdr("x-debug", "1")];
        type Case<'a> = (&'a str, &'a str, &'a [(String, Vec<u8>)], Option<u16>);
        let cases: Vec<Case> = vec![
            ("/x", "", &canary_h, Some(201)),
            ("/x", "a=1&v=BETA2", &[], Some(203)),
            ("/x", "v", &[], None),
            ("/x", "", &shard_h, Some(204)),
            ("/x", "", &far_shard_h, None),
            ("/api", "", &[], Some(205)),
            ("/api/x", "", &[], Some(205)),
            ("/apix", "", &[], None),
            ("/api", "", &debug_h, None),
        ];
        for (path, query, headers, want) in cases {
            assert_eq!(tag(route(&table, &view("h", path, query, headers))), want, "{path}?{query} {headers:?}");
        }
        let post = RequestView { host: "h", path: "/apix", query: "", method: "POST", headers: &[] };
        assert_eq!(tag(route(&table, &post)), Some(202));
    }

    #[test]
    fn ports_strip_safely() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("a.com:"), "a.com:");
    }
}
