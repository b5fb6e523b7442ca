//! The router's match: Host header → virtual host (exact, then the longest
//! `*.suffix`, then the longest `prefix*`, then `*`), then the first route
//! whose path matcher accepts the request path.
//!
//! connection manager → **router** → cluster | direct response

use crate::config::{DomainMatch, PathMatch, RouteEntry, RouteTable, VirtualHostConfig};

/// The route for a request to `host` (the Host header) and `path` (the
/// request target without its query), if any.
pub fn route<'a>(table: &'a RouteTable, host: &str, path: &str) -> Option<&'a RouteEntry> {
    let vhost = virtual_host(table, host)?;
    vhost.routes.iter().find(|r| path_matches(r, path))
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteActionConfig;

    fn entry(path: PathMatch, case_sensitive: bool, tag: u16) -> RouteEntry {
        RouteEntry {
            path,
            case_sensitive,
            action: RouteActionConfig::Direct { status: tag, body: String::new() },
            request_headers: Default::default(),
            response_headers: Default::default(),
        }
    }

    fn tag(e: Option<&RouteEntry>) -> Option<u16> {
        match e?.action {
            RouteActionConfig::Direct { status, .. } => Some(status),
            RouteActionConfig::Cluster { .. } | RouteActionConfig::Redirect(_) => None,
        }
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
            assert_eq!(tag(route(&table, host, "/")), Some(want), "{host}");
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
            assert_eq!(tag(route(&table, "h", path)), want, "{path}");
        }
    }

    #[test]
    fn ports_strip_safely() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("a.com:"), "a.com:");
    }
}
