//! Edge cases of routing, upgrades, timeouts and retries end to end: the
//! rarer header matchers and pseudo-headers, `h2c` and refused upgrades, the
//! route idle timeout, retry policy inheritance, the retry buffer limit,
//! `request_timeout` on a head, retries against the route deadline,
//! `total_weight`, and one `x-request-id` across attempts.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test should fail loudly")]

mod common;

use std::collections::HashSet;
use std::io::Read;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http::*;
use common::*;

/// The request target an upstream saw (`GET /x?y` → `/x?y`).
fn target(req: &SeenRequest) -> String {
    req.0.split(' ').nth(1).unwrap_or("").to_string()
}

/// A request header's value as an upstream saw it.
fn seen_header<'a>(req: &'a SeenRequest, name: &str) -> Option<&'a str> {
    req.1.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// An upstream that answers `status` to the first request for each target
/// (and to every request whose target contains `always`), and describes the
/// request otherwise.
fn first_fails_upstream(status: u16) -> HttpUpstream {
    let seen = Mutex::new(HashSet::new());
    HttpUpstream::serve(move |req, _| {
        let t = target(req);
        let first = seen.lock().unwrap().insert(t.clone());
        if first || t.contains("always") {
            Reply::Bytes(respond(status, "failed"))
        } else {
            Reply::Bytes(describe(req))
        }
    })
}

/// Everything to `cluster`, the route's further settings in `settings`
/// (YAML lines at the route's indentation).
fn routes_to(cluster: &str, settings: &str) -> String {
    format!(
        r#"            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route:
                  cluster: {cluster}
{settings}"#
    )
}

/// Everything to cluster `app`, with two retries on `retry_on`.
fn retry_routes(retry_on: &str) -> String {
    let policy = format!("{{retry_on: \"{retry_on}\", num_retries: 2, retry_back_off: {{base_interval: 0.001s}}}}");
    routes_to("app", &format!("                  retry_policy: {policy}\n"))
}

/// Reads once more and expects the peer's orderly close.
fn assert_closed(s: &mut std::net::TcpStream, what: &str) {
    let mut tmp = [0u8; 256];
    match s.read(&mut tmp) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: expected a close, got {:?}", String::from_utf8_lossy(&tmp[..n])),
        Err(e) => panic!("{what}: expected a close, got {e}"),
    }
}

const MATCHER_ROUTES: &str = r#"            - name: all
              domains: ["*"]
              routes:
              - match:
                  prefix: "/range"
                  headers: [{name: x-shard, range_match: {start: -10, end: 20}}]
                direct_response: {status: 200, body: {inline_string: "in-range"}}
              - match:
                  prefix: "/missing"
                  headers: [{name: x-tenant, string_match: {exact: ""}, treat_missing_header_as_empty: true}]
                direct_response: {status: 200, body: {inline_string: "empty-tenant"}}
              - match:
                  prefix: "/strict"
                  headers: [{name: x-tenant, string_match: {exact: ""}}]
                direct_response: {status: 200, body: {inline_string: "empty-tenant-strict"}}
              - match:
                  prefix: "/"
                  headers: [{name: ":path", exact_match: "/pq?x=1"}]
                direct_response: {status: 200, body: {inline_string: "path-with-query"}}
              - match:
                  prefix: "/"
                  headers: [{name: ":authority", exact_match: "auth.example:8080"}]
                direct_response: {status: 200, body: {inline_string: "authority"}}
              - match:
                  prefix: "/scheme"
                  headers: [{name: ":scheme", exact_match: "https"}]
                direct_response: {status: 200, body: {inline_string: "https"}}
              - match:
                  prefix: "/scheme"
                  headers: [{name: ":scheme", exact_match: "http"}]
                direct_response: {status: 200, body: {inline_string: "http"}}
              - match:
                  prefix: "/joined"
                  headers: [{name: x-multi, exact_match: "a,b"}]
                direct_response: {status: 200, body: {inline_string: "joined"}}
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: "default"}}
"#;

#[test]
fn range_missing_as_empty_pseudo_and_repeated_headers_match_like_envoy() {
    let (server, addr) = serve(&http_yaml(&[("app", closed_port())], MATCHER_ROUTES, ""));
    let cases = [
        // range_match is [start, end), on the value as a signed integer.
        ("GET /range HTTP/1.1\r\nHost: h\r\nX-Shard: -10\r\n\r\n", "in-range"),
        ("GET /range HTTP/1.1\r\nHost: h\r\nX-Shard: 0\r\n\r\n", "in-range"),
        ("GET /range HTTP/1.1\r\nHost: h\r\nX-Shard: 19\r\n\r\n", "in-range"),
        ("GET /range HTTP/1.1\r\nHost: h\r\nX-Shard: 20\r\n\r\n", "default"),
        ("GET /range HTTP/1.1\r\nHost: h\r\nX-Shard: -11\r\n\r\n", "default"),
        ("GET /range HTTP/1.1\r\nHost: h\r\nX-Shard: abc\r\n\r\n", "default"),
        ("GET /range HTTP/1.1\r\nHost: h\r\nX-Shard: 1.5\r\n\r\n", "default"),
        ("GET /range HTTP/1.1\r\nHost: h\r\nX-Shard:\r\n\r\n", "default"),
        ("GET /range HTTP/1.1\r\nHost: h\r\n\r\n", "default"),
        // treat_missing_header_as_empty: an absent header is matched as "".
        ("GET /missing HTTP/1.1\r\nHost: h\r\n\r\n", "empty-tenant"),
        ("GET /missing HTTP/1.1\r\nHost: h\r\nX-Tenant:\r\n\r\n", "empty-tenant"),
        ("GET /missing HTTP/1.1\r\nHost: h\r\nX-Tenant: acme\r\n\r\n", "default"),
        // Without it, an absent header matches no value matcher.
        ("GET /strict HTTP/1.1\r\nHost: h\r\n\r\n", "default"),
        ("GET /strict HTTP/1.1\r\nHost: h\r\nX-Tenant:\r\n\r\n", "empty-tenant-strict"),
        // :path carries the query.
        ("GET /pq?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", "path-with-query"),
        ("GET /pq HTTP/1.1\r\nHost: h\r\n\r\n", "default"),
        ("GET /pq?x=2 HTTP/1.1\r\nHost: h\r\n\r\n", "default"),
        // :authority is the Host header, or an absolute-form target's authority.
        ("GET /a HTTP/1.1\r\nHost: auth.example:8080\r\n\r\n", "authority"),
        ("GET /a HTTP/1.1\r\nHost: auth.example\r\n\r\n", "default"),
        ("GET http://auth.example:8080/a HTTP/1.1\r\nHost: other\r\n\r\n", "authority"),
        // :scheme is always http (no TLS downstream).
        ("GET /scheme HTTP/1.1\r\nHost: h\r\n\r\n", "http"),
        ("GET /scheme HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\n\r\n", "http"),
        // Several headers of one name are matched as one value joined with ",".
        ("GET /joined HTTP/1.1\r\nHost: h\r\nX-Multi: a\r\nX-Multi: b\r\n\r\n", "joined"),
        ("GET /joined HTTP/1.1\r\nHost: h\r\nX-Multi: a,b\r\n\r\n", "joined"),
        ("GET /joined HTTP/1.1\r\nHost: h\r\nX-Multi: b\r\nX-Multi: a\r\n\r\n", "default"),
        ("GET /joined HTTP/1.1\r\nHost: h\r\nX-Multi: a\r\n\r\n", "default"),
    ];
    for (request, want) in cases {
        let (status, head, body) = get(addr, request);
        assert_eq!((status, body.as_str()), (200, want), "{request:?}: {head}");
    }
    wait_until("every request answered directly", || {
        stat(&server, "http.ingress.rq_direct_response") == cases.len() as i128
    });
    assert_eq!(stat(&server, "http.ingress.no_route"), 0);
    stop(server);
}

#[test]
fn an_h2c_upgrade_request_is_served_as_plain_http1() {
    let app = HttpUpstream::serve(|req, _| {
        let body = format!(
            "upgrade={:?} connection={:?} http2-settings={:?}",
            seen_header(req, "upgrade"),
            seen_header(req, "connection"),
            seen_header(req, "http2-settings"),
        );
        Reply::Bytes(respond(200, &body))
    });
    // No upgrade_configs anywhere: h2c is not an upgrade ringway makes.
    let routes = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/\"}\n                route: {cluster: app}\n";
    let (server, addr) = serve(&http_yaml(&[("app", app.addr)], routes, ""));
    let mut s = connect(addr);
    let request = b"GET /h2 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    for round in 0..2 {
        let (status, head, body) = exchange(&mut s, request);
        let body = String::from_utf8(body).unwrap();
        assert_eq!(status, 200, "round {round}: {head}{body}");
        assert_eq!(body, "upgrade=None connection=None http2-settings=None", "round {round}");
        let lower = head.to_ascii_lowercase();
        assert!(!lower.contains("\r\nupgrade:") && !lower.contains("\r\nconnection:"), "round {round}: {head}");
    }
    // The same connection carried both: nothing was upgraded or refused.
    wait_until("both answered", || stat(&server, "http.ingress.downstream_rq_2xx") == 2);
    assert_eq!(stat(&server, "http.ingress.downstream_cx_upgrades_total"), 0);
    assert_eq!(stat(&server, "http.ingress.downstream_rq_ws_on_non_ws_route"), 0);
    assert_eq!(stat(&server, "http.ingress.downstream_cx_total"), 1);
    stop(server);
}

#[test]
fn an_upgrade_the_upstream_refuses_is_answered_then_the_connection_closes() {
    for refusal in [200u16, 400] {
        let app = HttpUpstream::serve(move |req, _| {
            let body = format!("upgrade={:?}", seen_header(req, "upgrade"));
            Reply::Bytes(respond(refusal, &body))
        });
        let routes = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/\"}\n                route: {cluster: app}\n";
        let hcm = "          upgrade_configs: [{upgrade_type: websocket}]";
        let (server, addr) = serve(&http_yaml(&[("app", app.addr)], routes, hcm));
        let mut s = connect(addr);
        let (status, head, body) =
            exchange(&mut s, b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        let body = String::from_utf8(body).unwrap();
        // The upstream was asked to upgrade, and its answer reaches the client.
        assert_eq!((status, body.as_str()), (refusal, "upgrade=Some(\"websocket\")"), "{head}");
        assert!(head.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{refusal}: {head}");
        assert_closed(&mut s, &format!("after a refused upgrade ({refusal})"));
        assert_eq!(stat(&server, "http.ingress.downstream_cx_upgrades_total"), 0);
        assert_eq!(stat(&server, &format!("cluster.app.upstream_rq_{refusal}")), 1);
        stop(server);
    }
}

const IDLE_ROUTES: &str = r#"            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: silent, timeout: 30s, idle_timeout: 0.2s}
"#;

/// A GET to an upstream that reads it and never answers, under a route
/// `idle_timeout` of 0.2 s (and 30 s for everything else). Checks what does
/// not depend on the status and returns (status, body).
fn silent_upstream_meets_the_route_idle_timeout() -> (u16, String) {
    let silent = raw_upstream(b"");
    let (server, addr) = serve(&http_yaml(&[("silent", silent)], IDLE_ROUTES, "          stream_idle_timeout: 30s"));
    let started = Instant::now();
    let (status, _, body) = get(addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(190), "answered before the idle timeout: {took:?}");
    assert!(took < Duration::from_secs(3), "the route's idle_timeout did not apply: {took:?}");
    wait_until("idle timeout counted", || stat(&server, "http.ingress.downstream_rq_idle_timeout") == 1);
    // Not the route timeout, and not an upstream status.
    assert_eq!(stat(&server, "cluster.silent.upstream_rq_timeout"), 0);
    assert_eq!(stat(&server, "cluster.silent.upstream_rq_total"), 1);
    assert_eq!(stat(&server, "cluster.silent.upstream_rq_4xx") + stat(&server, "cluster.silent.upstream_rq_5xx"), 0);
    stop(server);
    (status, body)
}

#[test]
fn a_route_idle_timeout_answers_a_silent_upstream_with_stream_timeout() {
    // The status is pinned by the next test (504: the request was complete).
    let (status, body) = silent_upstream_meets_the_route_idle_timeout();
    assert_eq!(status, 504);
    assert_eq!(body, "stream timeout");
}

#[test]
fn a_stream_idle_timeout_after_a_complete_request_is_a_504() {
    // Envoy: sendLocalReply(maybeRequestTimeoutCode(remoteDecodeComplete()),
    // "stream timeout"): 504 if the request was complete, 408 only if not.
    let (status, body) = silent_upstream_meets_the_route_idle_timeout();
    assert_eq!((status, body.as_str()), (504, "stream timeout"));
}

#[test]
fn a_route_idle_timeout_cuts_a_stalled_request_body_with_408() {
    let silent = raw_upstream(b"");
    let (server, addr) = serve(&http_yaml(&[("silent", silent)], IDLE_ROUTES, "          stream_idle_timeout: 30s"));
    let mut s = connect(addr);
    let started = Instant::now();
    // Two of ten body bytes, then nothing.
    let (status, head, body) = exchange(&mut s, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab");
    let took = started.elapsed();
    assert_eq!((status, body.as_slice()), (408, &b"stream timeout"[..]), "{head}");
    assert!(took >= Duration::from_millis(190), "answered before the idle timeout: {took:?}");
    assert!(took < Duration::from_secs(3), "the route's idle_timeout did not apply: {took:?}");
    assert_closed(&mut s, "after a stalled body");
    wait_until("idle timeout counted", || stat(&server, "http.ingress.downstream_rq_idle_timeout") == 1);
    assert_eq!(stat(&server, "http.ingress.downstream_rq_timeout"), 0);
    wait_until("the 408 counted", || stat(&server, "http.ingress.downstream_rq_4xx") == 1);
    stop(server);
}

#[test]
fn a_virtual_host_retry_policy_applies_unless_the_route_has_its_own() {
    let app = first_fails_upstream(503);
    let routes = r#"            - name: all
              domains: ["*"]
              retry_policy: {retry_on: "5xx", num_retries: 3, retry_back_off: {base_interval: 0.001s}}
              routes:
              - match: {prefix: "/inherit"}
                route: {cluster: inherit}
              - match: {prefix: "/connect-only"}
                route:
                  cluster: connect_only
                  retry_policy: {retry_on: connect-failure, num_retries: 3, retry_back_off: {base_interval: 0.001s}}
              - match: {prefix: "/defaults"}
                route:
                  cluster: defaults
                  retry_policy: {retry_on: "5xx", retry_back_off: {base_interval: 0.001s}}
"#;
    let clusters = [("inherit", app.addr), ("connect_only", app.addr), ("defaults", app.addr)];
    let (server, addr) = serve(&http_yaml(&clusters, routes, ""));
    let st = |n: &str| stat(&server, n);

    // No policy on the route: the virtual host's retries the first 503.
    let (status, _, body) = get(addr, "GET /inherit/once HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    wait_until("inherited retry counted", || st("cluster.inherit.upstream_rq_retry_success") == 1);
    assert_eq!(st("cluster.inherit.upstream_rq_retry"), 1);
    // ...and allows its own num_retries: one try and three retries.
    let (status, _, _) = get(addr, "GET /inherit/always HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 503);
    wait_until("inherited limit reached", || st("cluster.inherit.upstream_rq_retry_limit_exceeded") == 1);
    assert_eq!(st("cluster.inherit.upstream_rq_total"), 2 + 4);

    // The route's policy replaces the virtual host's whole: connect-failure
    // alone does not cover a 503.
    let (status, _, body) = get(addr, "GET /connect-only/once HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((status, body.as_str()), (503, "failed"));
    wait_until("one try", || st("cluster.connect_only.upstream_rq_503") == 1);
    assert_eq!(st("cluster.connect_only.upstream_rq_total"), 1);
    assert_eq!(st("cluster.connect_only.upstream_rq_retry"), 0);

    // ...and nothing of it is merged in: num_retries is the default 1, not 3.
    let (status, _, _) = get(addr, "GET /defaults/always HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 503);
    wait_until("default limit reached", || st("cluster.defaults.upstream_rq_retry_limit_exceeded") == 1);
    assert_eq!(st("cluster.defaults.upstream_rq_total"), 2);
    assert_eq!(st("cluster.defaults.upstream_rq_retry"), 1);
    stop(server);
}

#[test]
fn a_body_over_the_clusters_buffer_limit_is_not_retried() {
    let app = first_fails_upstream(503);
    let yaml = http_yaml(&[("app", app.addr)], &retry_routes("5xx"), "")
        .replace("connect_timeout: 0.5s\n", "connect_timeout: 0.5s\n    per_connection_buffer_limit_bytes: 1024\n");
    assert!(yaml.contains("per_connection_buffer_limit_bytes: 1024"), "the limit did not apply");
    let (server, addr) = serve(&yaml);
    let st = |n: &str| stat(&server, n);
    // (body size, retried): a copy of up to the limit is kept for a retry.
    let cases = [(100usize, true), (1024, true), (1025, false), (4096, false)];
    let mut total = 0;
    let mut retries = 0;
    for (size, retried) in cases {
        let payload = random_bytes(size, size as u64).iter().map(|b| b'a' + b % 26).collect::<Vec<u8>>();
        let mut request =
            format!("POST /body/{size} HTTP/1.1\r\nHost: h\r\nContent-Length: {size}\r\n\r\n").into_bytes();
        request.extend_from_slice(&payload);
        let mut s = connect(addr);
        let (status, _, body) = exchange(&mut s, &request);
        total += if retried { 2 } else { 1 };
        if retried {
            retries += 1;
            assert_eq!(status, 200, "{size} bytes: {}", String::from_utf8_lossy(&body));
            // The retry replayed the whole body.
            assert!(body.ends_with(&payload), "{size} bytes: the body was not replayed whole");
        } else {
            assert_eq!((status, body.as_slice()), (503, &b"failed"[..]), "{size} bytes");
        }
        wait_until("attempts counted", || st("cluster.app.upstream_rq_total") == total);
        assert_eq!(st("cluster.app.upstream_rq_retry"), retries, "{size} bytes");
    }
    // Not retried for want of a copy is not a retry limit.
    assert_eq!(st("cluster.app.upstream_rq_retry_limit_exceeded"), 0);
    assert_eq!(st("cluster.app.upstream_rq_503"), 4);
    stop(server);
}

#[test]
fn request_timeout_bounds_an_unfinished_head_as_a_header_timeout() {
    let routes = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/\"}\n                direct_response: {status: 200}\n";
    // (hcm settings, the bound that applies): the shorter of the two.
    let cases = [
        ("          request_timeout: 0.3s\n          request_headers_timeout: 30s", Duration::from_millis(300)),
        ("          request_timeout: 30s\n          request_headers_timeout: 0.3s", Duration::from_millis(300)),
        ("          request_headers_timeout: 0.3s", Duration::from_millis(300)),
    ];
    for (hcm, bound) in cases {
        let (server, addr) = serve(&http_yaml(&[("app", closed_port())], routes, hcm));
        let mut s = connect(addr);
        let started = Instant::now();
        let (status, head, body) = exchange(&mut s, b"GET / HTTP/1.1\r\nHost: h\r\nX-Half");
        let took = started.elapsed();
        assert_eq!((status, body.as_slice()), (408, &b"request header timeout"[..]), "{hcm}: {head}");
        assert!(head.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{hcm}: {head}");
        assert!(took >= bound - Duration::from_millis(10), "{hcm}: answered early, {took:?}");
        assert!(took < bound + Duration::from_secs(2), "{hcm}: the shorter bound did not apply: {took:?}");
        assert_closed(&mut s, hcm);
        // Documented (docs/stats.md): a head cut short by request_timeout
        // counts as a header timeout, not in downstream_rq_timeout.
        wait_until("header timeout counted", || stat(&server, "http.ingress.downstream_rq_header_timeout") == 1);
        assert_eq!(stat(&server, "http.ingress.downstream_rq_timeout"), 0, "{hcm}");
        assert_eq!(stat(&server, "http.ingress.downstream_rq_4xx"), 1, "{hcm}");
        assert_eq!(stat(&server, "http.ingress.downstream_rq_total"), 1, "{hcm}");
        stop(server);
    }
}

#[test]
fn retries_stop_at_the_route_deadline_with_a_504() {
    let slow = HttpUpstream::serve(|_, _| {
        std::thread::sleep(Duration::from_millis(150));
        Reply::Bytes(respond(503, "busy"))
    });
    let routes = routes_to(
        "slow",
        "                  timeout: 0.4s\n                  retry_policy: {retry_on: \"5xx\", num_retries: 10, retry_back_off: {base_interval: 0.01s}}\n",
    );
    let (server, addr) = serve(&http_yaml(&[("slow", slow.addr)], &routes, ""));
    let st = |n: &str| stat(&server, n);
    let started = Instant::now();
    let (status, _, body) = get(addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let took = started.elapsed();
    assert_eq!((status, body.as_str()), (504, "upstream request timeout"));
    assert!(took >= Duration::from_millis(390), "answered before the route deadline: {took:?}");
    // Eleven tries would take 1.65 s; the deadline cuts them off at 0.4 s.
    assert!(took < Duration::from_millis(1200), "retries outlived the route timeout: {took:?}");
    wait_until("the timeout counted", || st("cluster.slow.upstream_rq_timeout") == 1);
    let total = st("cluster.slow.upstream_rq_total");
    assert!((2..=4).contains(&total), "{total} tries within 0.4 s of 150 ms each");
    assert_eq!(st("cluster.slow.upstream_rq_retry"), total - 1);
    assert_eq!(st("cluster.slow.upstream_rq_503"), total - 1);
    assert_eq!(st("cluster.slow.upstream_rq_504"), 1);
    assert_eq!(st("cluster.slow.upstream_rq_retry_limit_exceeded"), 0);
    wait_until("the 504 counted", || st("http.ingress.downstream_rq_5xx") == 1);
    stop(server);
}

#[test]
fn weighted_clusters_total_weight_must_match_the_sum() {
    let (a, b) = (HttpUpstream::start(), HttpUpstream::start());
    let routes = |total: u32| {
        format!(
            r#"            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route:
                  weighted_clusters:
                    total_weight: {total}
                    clusters:
                    - {{name: a, weight: 100}}
                    - {{name: b, weight: 0}}
"#
        )
    };
    // A total_weight equal to the sum is accepted and routes by weight.
    let (server, addr) = serve(&http_yaml(&[("a", a.addr), ("b", b.addr)], &routes(100), ""));
    let mut s = connect(addr);
    for _ in 0..10 {
        let (status, _, _) = exchange(&mut s, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status, 200);
    }
    wait_until("all to a", || stat(&server, "cluster.a.upstream_rq_200") == 10);
    assert_eq!(stat(&server, "cluster.b.upstream_rq_total"), 0);
    stop(server);

    // Any other total_weight is refused, by path.
    for total in [90u32, 101, 1] {
        let yaml = http_yaml(&[("a", a.addr), ("b", b.addr)], &routes(total), "");
        let want = format!(
            "virtual_hosts[0].routes[0].route.weighted_clusters.total_weight: is {total} but the weights sum to 100"
        );
        let err = ringway::config::check_str(&yaml, 1).expect_err(&want).to_string();
        assert!(err.contains(&want), "want {want} in {err}");
    }
}

#[test]
fn a_retried_request_keeps_one_x_request_id() {
    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let app = HttpUpstream::serve(move |req, _| {
        let t = target(req);
        let mut log = record.lock().unwrap();
        let first = !log.iter().any(|(p, _)| *p == t);
        log.push((t, seen_header(req, "x-request-id").map(str::to_string)));
        drop(log);
        if first {
            // Silent past the per-try timeout.
            std::thread::sleep(Duration::from_secs(1));
            return Reply::Close;
        }
        Reply::Bytes(describe(req))
    });
    let routes = r#"            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route:
                  cluster: app
                  timeout: 5s
                  retry_policy:
                    retry_on: "5xx"
                    num_retries: 1
                    per_try_timeout: 0.2s
                    retry_back_off: {base_interval: 0.001s}
"#;
    let (server, addr) = serve(&http_yaml(&[("app", app.addr)], routes, ""));
    // (target, the client's x-request-id): ringway's own id, or the client's.
    let cases = [("/generated", None), ("/given", Some("client-id-1"))];
    for (i, (path, given)) in cases.into_iter().enumerate() {
        let extra = given.map(|id| format!("X-Request-Id: {id}\r\n")).unwrap_or_default();
        let (status, _, body) = get(addr, &format!("GET {path} HTTP/1.1\r\nHost: h\r\n{extra}\r\n"));
        assert_eq!(status, 200, "{path}: {body}");
        wait_until("per-try timeout counted", || {
            stat(&server, "cluster.app.upstream_rq_per_try_timeout") == i as i128 + 1
        });
        let ids: Vec<Option<String>> =
            seen.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, id)| id.clone()).collect();
        assert_eq!(ids.len(), 2, "{path}: two attempts expected, saw {ids:?}");
        let first = ids[0].clone().unwrap_or_else(|| panic!("{path}: the first attempt had no x-request-id"));
        assert!(!first.is_empty(), "{path}");
        if let Some(id) = given {
            assert_eq!(first, id, "{path}: the client's id was replaced");
        }
        assert_eq!(ids[1].as_deref(), Some(first.as_str()), "{path}: the retry carried another id");
    }
    assert_eq!(stat(&server, "cluster.app.upstream_rq_retry"), 2);
    stop(server);
}

#[test]
fn a_host_matcher_sees_the_authority_of_an_absolute_form_target() {
    // Envoy maps `host` to `:authority`, and its codec replaces the Host of
    // an absolute-form request with the target's authority (RFC 9112 3.2.2),
    // as ringway does for routing and for the Host it sends upstream.
    let routes = r#"            - name: all
              domains: ["*"]
              routes:
              - match:
                  prefix: "/"
                  headers: [{name: host, exact_match: "abs.example"}]
                direct_response: {status: 200, body: {inline_string: "host-matched"}}
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: "default"}}
"#;
    let (server, addr) = serve(&http_yaml(&[("app", closed_port())], routes, ""));
    let cases = [
        ("GET /x HTTP/1.1\r\nHost: abs.example\r\n\r\n", "host-matched"),
        ("GET http://abs.example/x HTTP/1.1\r\nHost: other\r\n\r\n", "host-matched"),
        ("GET http://other/x HTTP/1.1\r\nHost: abs.example\r\n\r\n", "default"),
    ];
    for (request, want) in cases {
        let (status, _, body) = get(addr, request);
        assert_eq!((status, body.as_str()), (200, want), "{request:?}");
    }
    stop(server);
}

#[test]
fn a_retry_after_a_reset_mid_body_sends_the_body_once_and_whole() {
    // Each round's first try takes the head and some of the body, then
    // resets; every other request is answered with what it carried.
    static ARMED: AtomicBool = AtomicBool::new(false);
    static RESETS: AtomicUsize = AtomicUsize::new(0);
    let app = serve_each(|mut c| {
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        loop {
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
            if buf.starts_with(b"POST /up ") && ARMED.swap(false, Ordering::AcqRel) {
                while buf.len() < 8 * 1024 {
                    match c.read(&mut tmp) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO)).unwrap();
                drop(c);
                RESETS.fetch_add(1, Ordering::AcqRel);
                return;
            }
            let Some(req) = read_request(&mut c, &mut buf) else { return };
            if c.write_all(&describe(&req)).is_err() {
                return;
            }
        }
    });
    let (server, addr) = serve(&http_yaml(&[("app", app)], &retry_routes("reset"), ""));
    let payload: Vec<u8> = random_bytes(200 * 1024, 7).iter().map(|b| b'a' + b % 26).collect();
    let (first, rest) = payload.split_at(16 * 1024);
    let chunk = |data: &[u8]| {
        let mut out = format!("{:x}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        out
    };
    for (round, chunked) in [false, true].into_iter().enumerate() {
        ARMED.store(true, Ordering::Release);
        let mut s = connect(addr);
        let (mut head, mut tail) = if chunked {
            let mut tail = chunk(rest);
            tail.extend_from_slice(b"0\r\n\r\n");
            (b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), tail)
        } else {
            (
                format!("POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", payload.len()).into_bytes(),
                rest.to_vec(),
            )
        };
        head.extend_from_slice(&if chunked { chunk(first) } else { first.to_vec() });
        s.write_all(&head).unwrap();
        // The rest only once the upstream has reset: ringway's next write to
        // it fails midway through the body.
        wait_until("the first try reset", || RESETS.load(Ordering::Acquire) == round + 1);
        // A request pipelined behind: it must come out as a request of its
        // own, not as body bytes or garbage. (It closes the connection, so
        // that both answers can be read to the end at once: they may arrive
        // in one read.)
        tail.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        s.write_all(&tail).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let (status, _, body, used) = parse_response(&all).expect("a first answer");
        assert_eq!(status, 200, "chunked={chunked}: {}", String::from_utf8_lossy(&body));
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("POST /up\n"), "chunked={chunked}: {text:.200}");
        assert!(body.ends_with(&payload), "chunked={chunked}: the upstream did not get the body once and whole");
        assert_eq!(body.len() - body.windows(payload.len()).position(|w| w == payload).unwrap(), payload.len());
        let (status, _, body, _) = parse_response(&all[used..]).expect("a second answer");
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).starts_with("GET /next\n"), "{}", String::from_utf8_lossy(&body));
        // Two tries of the POST and the GET: on a new connection the reset is
        // a retry; on a pooled one ringway takes it for a stale connection
        // and makes the request again unasked.
        wait_until("the tries counted", || stat(&server, "cluster.app.upstream_rq_total") == 3 * (round as i128 + 1));
    }
    assert_eq!(stat(&server, "cluster.app.upstream_rq_retry"), 1);
    stop(server);
}

#[test]
fn a_stale_pooled_connection_met_mid_body_is_replaced_and_the_body_sent_whole() {
    // Each connection answers one request and then closes, as an upstream
    // with a short keep-alive timeout does while ringway keeps it pooled.
    static CLOSED: AtomicUsize = AtomicUsize::new(0);
    let app = serve_each(|mut c| {
        let mut buf = Vec::new();
        if let Some(req) = read_request(&mut c, &mut buf) {
            let _ = c.write_all(&describe(&req));
        }
        drop(c);
        CLOSED.fetch_add(1, Ordering::AcqRel);
    });
    let (server, addr) = serve(&http_yaml(&[("app", app)], &retry_routes("reset"), ""));
    let mut s = connect(addr);
    let (status, _, _) = exchange(&mut s, b"POST /one HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(status, 200);
    wait_until("the upstream closed its connection", || CLOSED.load(Ordering::Acquire) == 1);
    let payload: Vec<u8> = random_bytes(64 * 1024, 9).iter().map(|b| b'a' + b % 26).collect();
    let mut request = format!("PUT /two HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", payload.len()).into_bytes();
    request.extend_from_slice(&payload);
    let (status, _, body) = exchange(&mut s, &request);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(body.ends_with(&payload), "the new connection did not get the whole body");
    // Made again on a new connection, which is not a retry.
    assert_eq!(stat(&server, "cluster.app.upstream_rq_retry"), 0);
    assert_eq!(stat(&server, "cluster.app.upstream_cx_total"), 2);
    // A POST without a body could not go again after a close before any
    // answer: it takes a pooled connection only once it is checked open, so
    // the closed one is passed over.
    wait_until("the upstream closed its second connection", || CLOSED.load(Ordering::Acquire) == 2);
    let (status, _, body) = exchange(&mut s, b"POST /three HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(stat(&server, "cluster.app.upstream_cx_total"), 3);
    drop(s);
    stop(server);
}

#[test]
fn only_an_idempotent_request_is_made_again_when_a_pooled_connection_closes_unanswered() {
    // Each connection answers its first request, then takes the second and
    // closes without a word: an upstream that may have acted on it.
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let app = serve_each(|mut c| {
        let mut buf = Vec::new();
        let mut answered = false;
        while let Some(req) = read_request(&mut c, &mut buf) {
            SEEN.lock().unwrap().push(req.0.clone());
            if answered {
                return;
            }
            answered = true;
            if c.write_all(&describe(&req)).is_err() {
                return;
            }
        }
    });
    let routes = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/\"}\n                route: {cluster: app}\n";
    let (server, addr) = serve(&http_yaml(&[("app", app)], routes, ""));
    let seen = |line: &str| SEEN.lock().unwrap().iter().filter(|l| *l == line).count();
    for (method, again) in [("POST", false), ("DELETE", true), ("PATCH", false), ("GET", true)] {
        let mut s = connect(addr);
        let (status, _, _) = exchange(&mut s, format!("GET /warm-{method} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(status, 200);
        let line = format!("{method} /act");
        let before = seen(&line);
        let (status, _, body) =
            exchange(&mut s, format!("{method} /act HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").as_bytes());
        if again {
            assert_eq!(status, 200, "{method}: {}", String::from_utf8_lossy(&body));
            assert_eq!(seen(&line) - before, 2, "{method}: made once more on a new connection");
        } else {
            assert_eq!(status, 503, "{method}: {}", String::from_utf8_lossy(&body));
            assert_eq!(seen(&line) - before, 1, "{method} was sent twice");
        }
    }
    stop(server);
}

#[test]
fn an_upstream_answering_before_the_body_is_read_gets_its_answer_through() {
    // Reads the head, answers 413 and closes with the body unread (so its
    // close is a reset).
    let app = serve_each(|mut c| {
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match c.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let _ = c.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!");
    });
    let (server, addr) = serve(&http_yaml(&[("app", app)], &retry_routes("connect-failure"), ""));
    let mut s = connect(addr);
    let mut writer = s.try_clone().unwrap();
    let len = 8 << 20;
    std::thread::spawn(move || {
        let _ =
            writer.write_all(format!("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {len}\r\n\r\n").as_bytes());
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..len / chunk.len() {
            if writer.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let (status, head, body) = read_response(&mut s);
    assert_eq!((status, body.as_slice()), (413, &b"too big!"[..]), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    wait_until("the 413 counted", || stat(&server, "cluster.app.upstream_rq_413") == 1);
    assert_eq!(stat(&server, "cluster.app.upstream_rq_total"), 1);
    stop(server);
}

#[test]
fn a_retry_whose_body_the_upstream_stops_taking_ends_at_the_route_deadline_with_a_504() {
    // First connection: a 503 once the whole body is in, so the request is
    // retried. Later ones: the head is read and then nothing more, with a
    // receive buffer too small for the body, so the retry's body write
    // waits until the route deadline.
    static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
    let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.set_recv_buffer_size(4096).unwrap();
    listener.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    listener.listen(16).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let app = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                if CONNECTIONS.fetch_add(1, Ordering::AcqRel) == 0 {
                    let mut buf = Vec::new();
                    if read_request(&mut c, &mut buf).is_some() {
                        let _ = c.write_all(&respond(503, "busy"));
                    }
                } else {
                    let mut tmp = [0u8; 512];
                    let _ = c.read(&mut tmp);
                }
                // Hold the connection, unread, until the peer goes away.
                std::thread::sleep(Duration::from_secs(3));
            });
        }
    });
    let routes = routes_to(
        "app",
        "                  timeout: 0.5s\n                  retry_policy: {retry_on: \"5xx\", num_retries: 1, retry_back_off: {base_interval: 0.001s}}\n",
    );
    // A copy of the whole body is kept for the retry: larger than the
    // socket buffers can take.
    let yaml = http_yaml(&[("app", app)], &routes, "")
        .replace("connect_timeout: 0.5s\n", "connect_timeout: 0.5s\n    per_connection_buffer_limit_bytes: 16777216\n");
    let (server, addr) = serve(&yaml);
    let body = vec![b'x'; 12 << 20];
    let mut request = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    request.extend_from_slice(&body);
    let started = Instant::now();
    let mut s = connect(addr);
    let (status, _, reply) = exchange(&mut s, &request);
    let took = started.elapsed();
    assert_eq!((status, reply.as_slice()), (504, &b"upstream request timeout"[..]));
    assert!(took < Duration::from_secs(3), "not cut off at the route deadline: {took:?}");
    wait_until("the timeout counted", || stat(&server, "cluster.app.upstream_rq_timeout") == 1);
    assert_eq!(stat(&server, "cluster.app.upstream_rq_retry"), 1);
    drop(s);
    stop(server);
}
