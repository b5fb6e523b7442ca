//! The HTTP/1.1 connection manager end to end: requests through ringway to an
//! in-process upstream, one row per case where cases are many.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test should fail loudly")]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use common::http::*;
use common::*;

const ROUTES: &str = r#"            - name: backend
              domains: ["*"]
              routes:
              - match: {prefix: "/api/"}
                route: {cluster: app, prefix_rewrite: "/"}
              - match: {path: "/direct"}
                direct_response: {status: 200, body: {inline_string: "hello from ringway"}}
              - match: {prefix: "/renamed"}
                route: {cluster: app, host_rewrite_literal: "backend.internal"}
              - match: {prefix: "/slow"}
                route: {cluster: slow, timeout: 0.3s}
              - match: {prefix: "/broken"}
                route: {cluster: broken}
              - match: {prefix: "/down"}
                route: {cluster: down}
              - match: {prefix: "/app"}
                route: {cluster: app}
              - match: {prefix: "/chunked"}
                route: {cluster: chunked}
              - match: {prefix: "/moved/"}
                redirect: {host_redirect: "new.example", prefix_rewrite: "/here/", response_code: PERMANENT_REDIRECT}
"#;

const CHUNKED_REPLY: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\nX-Trailer: kept\r\n\r\n";

struct Rig {
    server: ringway::runtime::Server,
    addr: SocketAddr,
    upstream: HttpUpstream,
}

fn rig(extra_hcm: &str) -> Rig {
    let upstream = HttpUpstream::start();
    let slow = raw_upstream(b"");
    let broken = raw_upstream(b"HTTP/1.1 2000 What\r\n\r\n");
    let chunked = raw_upstream(CHUNKED_REPLY);
    let yaml = http_yaml(
        &[("app", upstream.addr), ("slow", slow), ("broken", broken), ("down", closed_port()), ("chunked", chunked)],
        ROUTES,
        extra_hcm,
    );
    let server = start(&yaml, opts(1));
    let addr = server.listener_addr("web").unwrap();
    Rig { server, addr, upstream }
}

#[test]
fn requests_route_rewrite_and_count() {
    let rig = rig("");
    let mut s = connect(rig.addr);
    let (status, head, body) = exchange(&mut s, b"GET /api/users?id=1 HTTP/1.1\r\nHost: shop.example\r\n\r\n");
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{head}{body}");
    assert!(body.starts_with("GET /users?id=1\nhost=shop.example\nxfp=http\nxff=\nrid=true\n"), "{body}");
    assert!(head.contains("server: ringway\r\n") && !head.contains("Server: upstream"), "{head}");
    assert!(head.contains("x-envoy-upstream-service-time: "), "{head}");
    assert!(head.contains("X-Up: 1\r\n"), "{head}");

    // Same connection: host rewrite, and the upstream connection is reused.
    let (status, _, body) = exchange(&mut s, b"GET /renamed HTTP/1.1\r\nHost: shop.example\r\n\r\n");
    assert_eq!(status, 200);
    assert!(String::from_utf8(body).unwrap().contains("host=backend.internal\n"));
    assert_eq!(rig.upstream.connections.load(Ordering::Acquire), 1, "the pooled upstream connection was not reused");

    let (status, head, body) = exchange(&mut s, b"GET /direct HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((status, body.as_slice()), (200, &b"hello from ringway"[..]), "{head}");

    let st = |n: &str| stat(&rig.server, n);
    // Counters move just after the response is written.
    wait_until("three requests counted", || st("http.ingress.downstream_rq_2xx") == 3);
    assert_eq!(st("http.ingress.downstream_rq_total"), 3);
    assert_eq!(st("http.ingress.downstream_rq_2xx"), 3);
    assert_eq!(st("http.ingress.rq_direct_response"), 1);
    assert_eq!(st("cluster.app.upstream_rq_total"), 2);
    assert_eq!(st("cluster.app.upstream_rq_2xx"), 2);
    assert_eq!(st("cluster.app.upstream_rq_200"), 2);
    let (_, prom) = admin_get(rig.server.admin_addr().unwrap(), "/stats/prometheus");
    for line in [
        "envoy_cluster_upstream_rq{envoy_cluster_name=\"app\",envoy_response_code=\"200\"} 2\n",
        "envoy_cluster_upstream_rq_xx{envoy_cluster_name=\"app\",envoy_response_code_class=\"2\"} 2\n",
        "envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix=\"ingress\",envoy_response_code_class=\"2\"} 3\n",
    ] {
        assert!(prom.contains(line), "missing {line} in\n{prom}");
    }
    assert_eq!(st("cluster.app.upstream_cx_total"), 1);
    assert_eq!(st("http.ingress.downstream_cx_total"), 1);
    // Latency histograms reach the admin within a flush interval (1 s).
    let admin = rig.server.admin_addr().unwrap();
    wait_until("histogram samples flushed", || {
        let (_, prom) = admin_get(admin, "/stats/prometheus");
        prom.contains("envoy_http_downstream_rq_time_count{envoy_http_conn_manager_prefix=\"ingress\"} 3\n")
            && prom.contains("envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"app\"} 2\n")
    });
    let (_, text) = admin_get(admin, "/stats?filter=^cluster.app.upstream_rq_time$");
    assert!(text.starts_with("cluster.app.upstream_rq_time: P0(") && !text.contains("No recorded"), "{text}");
    drop(s);
    stop(rig.server);
}

#[test]
fn bodies_stream_both_framings() {
    let rig = rig("");
    let mut s = connect(rig.addr);
    let big = random_bytes(3 << 20, 9);
    let mut req = format!("POST /app/upload HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", big.len()).into_bytes();
    req.extend_from_slice(&big);
    let (status, _, body) = exchange(&mut s, &req);
    assert_eq!(status, 200);
    assert!(body.ends_with(&big), "content-length body was not forwarded intact");

    let chunked = b"POST /app/chunks HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
    let (status, _, body) = exchange(&mut s, chunked);
    assert_eq!(status, 200);
    assert!(String::from_utf8(body).unwrap().ends_with("\nhello world"));

    // Expect: 100-continue gets its interim response first.
    s.write_all(b"POST /app/x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n").unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"ok").unwrap();
    let (status, _, body) = read_response(&mut s);
    assert_eq!(status, 200);
    assert!(body.ends_with(b"ok"));
    drop(s);
    stop(rig.server);
}

/// One row per upstream failure: path in, status and body out, counter moved.
#[test]
fn upstream_failures_map_like_envoy() {
    let rig = rig("");
    let rows = [
        (
            "/down",
            503,
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            "cluster.down.upstream_cx_connect_fail",
        ),
        ("/slow", 504, "upstream request timeout", "cluster.slow.upstream_rq_timeout"),
        ("/broken", 502, "upstream sent a malformed response", "cluster.broken.upstream_rq_5xx"),
    ];
    for (path, want_status, want_body, counter) in rows {
        let mut s = connect(rig.addr);
        let (status, _, body) = exchange(&mut s, format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(status, want_status, "{path}");
        assert_eq!(String::from_utf8(body).unwrap(), want_body, "{path}");
        assert_eq!(stat(&rig.server, counter), 1, "{path}: {counter}");
    }
    wait_until("5xx counted", || stat(&rig.server, "http.ingress.downstream_rq_5xx") == 3);
    stop(rig.server);
}

/// Bad requests through the real listener: status out, never forwarded.
#[test]
fn malformed_requests_get_envoys_answers() {
    let rig = rig("          request_headers_timeout: 0.3s\n");
    let rows: &[(&[u8], u16)] = &[
        (b"POST /app HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /app HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        (b"POST /app HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET /app HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400),
        (b"GET /app HTTP/1.1\r\nHost : h\r\n\r\n", 400),
        (b"GET /app HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400),
        (b"GET /app HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (b"POST /app HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET /nowhere HTTP/1.1\r\n\r\n", 400),
        (b"GET /app HTTP/1.1\r\nHost: h\r\nX-Partial: never finished", 408),
    ];
    for (request, want) in rows {
        let mut s = connect(rig.addr);
        let (status, _, _) = exchange(&mut s, request);
        assert_eq!(status, *want, "{:?}", String::from_utf8_lossy(request));
    }
    let big = format!("GET /app HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n", "v".repeat(70 * 1024));
    let mut s = connect(rig.addr);
    assert_eq!(exchange(&mut s, big.as_bytes()).0, 431);
    // None reached the upstream (the chunked row was forwarded up to its bad size line).
    assert!(rig.upstream.connections.load(Ordering::Acquire) <= 1);
    wait_until("protocol errors counted", || stat(&rig.server, "http.ingress.downstream_cx_protocol_error") >= 9);
    wait_until("header timeout counted", || stat(&rig.server, "http.ingress.downstream_rq_header_timeout") == 1);
    stop(rig.server);
}

#[test]
fn no_route_is_404_and_counted() {
    let upstream = HttpUpstream::start();
    let routes = "            - name: only\n              domains: [\"shop.example\"]\n              routes:\n              - match: {prefix: \"/\"}\n                route: {cluster: app}\n";
    let server = start(&http_yaml(&[("app", upstream.addr)], routes, ""), opts(1));
    let mut s = connect(server.listener_addr("web").unwrap());
    assert_eq!(exchange(&mut s, b"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n").0, 404);
    assert_eq!(exchange(&mut s, b"GET / HTTP/1.1\r\nHost: shop.example:8080\r\n\r\n").0, 200);
    wait_until("no_route counted", || stat(&server, "http.ingress.no_route") == 1);
    drop(s);
    stop(server);
}

#[test]
fn http10_and_connection_close_end_the_connection() {
    let rig = rig("");
    let mut s = connect(rig.addr);
    let (status, head, _) = exchange(&mut s, b"GET /app HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200);
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert!(closed_by_peer(&mut s));
    let mut s = connect(rig.addr);
    let (status, head, _) = exchange(&mut s, b"GET /app HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert!(closed_by_peer(&mut s));
    stop(rig.server);
}

/// With use_remote_address ringway is the edge: it appends the peer to
/// x-forwarded-for and sets x-forwarded-proto itself; without it, a client's
/// values pass through untouched.
#[test]
fn forwarded_headers_follow_use_remote_address() {
    let request = b"GET /app HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: https\r\nX-Request-Id: abc\r\n\r\n";
    let edge = rig("          use_remote_address: true\n");
    let mut s = connect(edge.addr);
    let body = String::from_utf8(exchange(&mut s, request).2).unwrap();
    assert!(body.contains("\nxfp=http\nxff=192.0.2.7, 127.0.0.1\nrid=true\n"), "{body}");
    drop(s);
    stop(edge.server);

    let inner = rig("");
    let mut s = connect(inner.addr);
    let body = String::from_utf8(exchange(&mut s, request).2).unwrap();
    assert!(body.contains("\nxfp=https\nxff=192.0.2.7\nrid=true\n"), "{body}");
    drop(s);
    stop(inner.server);
}

/// A chunked response passes through as sent, extensions and trailers kept.
#[test]
fn chunked_responses_keep_their_trailers() {
    let rig = rig("");
    let mut s = connect(rig.addr);
    s.write_all(b"GET /chunked HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    while !got.ends_with(b"0\r\nX-Trailer: kept\r\n\r\n") {
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&tmp[..n]);
    }
    let text = String::from_utf8(got).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert_eq!(text.to_ascii_lowercase().matches("transfer-encoding").count(), 1, "{text}");
    assert!(text.ends_with("\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\nX-Trailer: kept\r\n\r\n"), "{text}");
    drop(s);
    stop(rig.server);
}

/// A reload reaches a keep-alive connection at its next request.
#[test]
fn reloads_apply_to_the_next_request_on_a_kept_alive_connection() {
    let upstream = HttpUpstream::start();
    let routes = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/\"}\n                route: {cluster: app}\n";
    let before = http_yaml(&[("app", upstream.addr)], routes, "");
    let server = start(&before, opts(1));
    let mut s = connect(server.listener_addr("web").unwrap());
    let (status, _, body) = exchange(&mut s, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 200);
    assert!(body.starts_with(b"GET /x\n"));

    let after =
        before.replace("route: {cluster: app}", "direct_response: {status: 200, body: {inline_string: \"reloaded\"}}");
    server.reload_str(&after).unwrap();
    let (status, _, body) = exchange(&mut s, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((status, body.as_slice()), (200, &b"reloaded"[..]));
    drop(s);
    stop(server);
}

/// Failure replies to HEAD carry no body, so the connection stays in sync.
#[test]
fn head_requests_get_bodiless_error_replies() {
    let rig = rig("");
    let mut s = connect(rig.addr);
    s.write_all(b"HEAD /down HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    // The next response on the connection starts right away: no stray body.
    let (status, _, body) = exchange(&mut s, b"GET /direct HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((status, body.as_slice()), (200, &b"hello from ringway"[..]));
    drop(s);
    stop(rig.server);
}

/// An absolute-form target routes by its own authority and path, and goes
/// upstream in origin form with that authority as Host.
#[test]
fn absolute_form_targets_are_forwarded_in_origin_form() {
    let rig = rig("");
    let mut s = connect(rig.addr);
    let (status, _, body) =
        exchange(&mut s, b"GET http://shop.example/api/users?id=2 HTTP/1.1\r\nHost: ignored\r\n\r\n");
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("GET /users?id=2\nhost=shop.example\n"), "{body}");
    drop(s);
    stop(rig.server);
}

#[test]
fn redirects_answer_with_a_location() {
    let rig = rig("");
    let mut s = connect(rig.addr);
    let (status, head, body) = exchange(&mut s, b"GET /moved/a?b=1 HTTP/1.1\r\nHost: old.example:8080\r\n\r\n");
    assert_eq!(status, 308, "{head}");
    assert!(head.contains("location: http://new.example:8080/here/a?b=1\r\n"), "{head}");
    assert!(body.is_empty());
    // The connection stays usable.
    assert_eq!(exchange(&mut s, b"GET /direct HTTP/1.1\r\nHost: x\r\n\r\n").0, 200);
    wait_until("redirect counted", || stat(&rig.server, "http.ingress.rq_redirect") == 1);
    drop(s);
    stop(rig.server);
}

#[test]
fn bad_route_actions_are_refused_by_path() {
    let base = http_yaml(
        &[("app", closed_port())],
        ROUTES.split("              - match: {prefix: \"/slow\"}").next().unwrap(),
        "",
    );
    let cases = [
        (
            base.replace("route: {cluster: app, prefix_rewrite: \"/\"}", "redirect: {path_redirect: \"nope\"}"),
            "virtual_hosts[0].routes[0].redirect.path_redirect: must start with /",
        ),
        (
            base.replace(
                "route: {cluster: app, prefix_rewrite: \"/\"}",
                "route: {cluster: app}\n                redirect: {https_redirect: true}",
            ),
            "virtual_hosts[0].routes[0]: give only one of route, direct_response or redirect",
        ),
        (
            base.replace("route: {cluster: app, prefix_rewrite: \"/\"}", "redirect: {response_code: GONE}"),
            "virtual_hosts[0].routes[0].redirect.response_code: unknown value `GONE`",
        ),
        // Framing headers are ringway's to write, hop by hop.
        (
            base.replace(
                "route: {cluster: app, prefix_rewrite: \"/\"}",
                "route: {cluster: app}\n                request_headers_to_remove: [Content-Length]",
            ),
            "virtual_hosts[0].routes[0].request_headers_to_remove[0]: frames the message",
        ),
        (
            base.replace(
                "route: {cluster: app, prefix_rewrite: \"/\"}",
                "route: {cluster: app}\n                response_headers_to_add: [{header: {key: transfer-encoding, value: chunked}}]",
            ),
            "virtual_hosts[0].routes[0].response_headers_to_add[0].header.key: frames the message",
        ),
    ];
    for (yaml, want) in cases {
        let err = ringway::config::check_str(&yaml, 1).expect_err(want).to_string();
        assert!(err.contains(want), "want {want} in {err}");
    }
}

/// Header additions and removals at route, virtual host and route-config
/// level, in Envoy's order, on both the request and the response.
#[test]
fn header_mutations_apply_to_requests_and_responses() {
    let upstream = HttpUpstream::start();
    let routes = r#"            - name: mut
              domains: ["*"]
              request_headers_to_add: [{header: {key: x-test-vh, value: vhost}}]
              response_headers_to_add: [{header: {key: x-resp-vh, value: "1"}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]
              routes:
              - match: {prefix: "/"}
                route: {cluster: app}
                request_headers_to_add:
                - {header: {key: x-test-route, value: route}}
                - {header: {key: x-test-keep, value: added}, append_action: ADD_IF_ABSENT}
                - {header: {key: x-test-over, value: "100%%"}, append: false}
                request_headers_to_remove: [x-test-secret]
                response_headers_to_remove: [x-up]
"#;
    let server = start(&http_yaml(&[("app", upstream.addr)], routes, ""), opts(1));
    let mut s = connect(server.listener_addr("web").unwrap());
    let (status, head, body) = exchange(
        &mut s,
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Test-Secret: s\r\nX-Test-Keep: client\r\nX-Test-Over: old\r\n\r\n",
    );
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 200);
    assert!(!body.contains("x-test-secret"), "{body}");
    assert!(body.contains("x-test-keep=client\n") && !body.contains("x-test-keep=added"), "{body}");
    assert!(body.contains("x-test-over=100%\n") && !body.contains("x-test-over=old"), "{body}");
    assert!(body.contains("x-test-route=route\n") && body.contains("x-test-vh=vhost\n"), "{body}");
    assert!(!head.contains("X-Up"), "{head}");
    assert!(head.contains("x-resp-vh: 1\r\n"), "{head}");
    drop(s);
    stop(server);

    let bad = http_yaml(&[("app", upstream.addr)], &routes.replace("value: route", "value: \"%NO_SUCH_THING%\""), "");
    let err = ringway::config::check_str(&bad, 1).unwrap_err().to_string();
    assert!(err.contains("routes[0].request_headers_to_add[0].header.value: "), "{err}");
    assert!(err.contains("NO_SUCH_THING"), "{err}");
}

#[test]
fn header_values_render_envoys_variables() {
    let upstream = HttpUpstream::start();
    let routes = r#"            - name: v
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: app}
                request_headers_to_add:
                - {header: {key: x-test-client, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}
                - {header: {key: x-test-ua, value: "ua=%REQ(user-agent)% 100%%"}}
                - {header: {key: x-test-missing, value: "%REQ(x-none)%"}}
                response_headers_to_add:
                - {header: {key: x-code, value: "%RESPONSE_CODE% via %PROTOCOL%"}}
                - {header: {key: x-upstream-said, value: "%RESP(x-up)%"}}
"#;
    let server = start(&http_yaml(&[("app", upstream.addr)], routes, ""), opts(1));
    let mut s = connect(server.listener_addr("web").unwrap());
    let (status, head, body) = exchange(&mut s, b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: curl/8\r\n\r\n");
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("x-test-client=127.0.0.1\n"), "{body}");
    assert!(body.contains("x-test-ua=ua=curl/8 100%\n"), "{body}");
    // A value that renders empty adds no header (Envoy's keep_empty_value: false).
    assert!(!body.contains("x-test-missing"), "{body}");
    assert!(head.contains("x-code: 200 via HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("x-upstream-said: 1\r\n"), "{head}");
    // Without use_remote_address the client is the rightmost x-forwarded-for
    // entry; each xff_num_trusted_hops moves one further left.
    let xff = b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2\r\n\r\n";
    let (_, _, body) = exchange(&mut s, xff);
    assert!(String::from_utf8(body).unwrap().contains("x-test-client=2.2.2.2\n"));
    drop(s);
    stop(server);
    let hops = http_yaml(&[("app", upstream.addr)], routes, "          xff_num_trusted_hops: 1");
    let server = start(&hops, opts(1));
    let mut s = connect(server.listener_addr("web").unwrap());
    let (_, _, body) = exchange(&mut s, xff);
    assert!(String::from_utf8(body).unwrap().contains("x-test-client=1.1.1.1\n"));
    drop(s);
    stop(server);
}

#[test]
fn a_connection_closed_with_input_unread_ends_with_fin_not_reset() {
    let routes = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/\"}\n                direct_response: {status: 403, body: {inline_string: \"denied\"}}\n";
    // `delayed_close_timeout: 0s` closes at once, as in Envoy: the unread
    // bytes make that close a reset.
    for (extra, orderly) in [("", true), ("          delayed_close_timeout: 0s\n", false)] {
        closing_with_input_unread(routes, extra, orderly);
    }
}

fn closing_with_input_unread(routes: &str, extra_hcm: &str, orderly: bool) {
    let (server, addr) = serve(&http_yaml(&[("unused", closed_port())], routes, extra_hcm));
    // (what is sent, the status): a reply before the body is read, and a
    // head refused for its size while more of it is on the way.
    let mut big_head = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
    while big_head.len() < 80 * 1024 {
        big_head.extend_from_slice(b"x-filler: 0123456789012345678901234567890123456789\r\n");
    }
    let mut body_unread = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", 1 << 20).into_bytes();
    body_unread.extend_from_slice(&[b'a'; 64 * 1024]);
    for (request, status) in [(body_unread, 403), (big_head, 431)] {
        let mut s = connect(addr);
        let (got, _, _) = exchange(&mut s, &request);
        assert_eq!(got, status);
        // The close is ringway's FIN: a reset here could have destroyed the
        // response in flight.
        let mut tmp = [0u8; 64];
        match s.read(&mut tmp) {
            Ok(0) if orderly => {}
            Err(e) if !orderly && e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => {
                panic!("{status}: expected an {} close, got {other:?}", if orderly { "orderly" } else { "abrupt" })
            }
        }
    }
    stop(server);
}

/// Everything to cluster `app`.
const APP_ROUTES: &str = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/\"}\n                route: {cluster: app}\n";

/// Reads to the end of the stream: the bytes, and whether it ended in an
/// orderly close (else a reset).
fn read_to_close(s: &mut std::net::TcpStream) -> (Vec<u8>, bool) {
    let mut all = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        match s.read(&mut tmp) {
            Ok(0) => return (all, true),
            Ok(n) => all.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (all, false),
            Err(e) => panic!("read: {e}; got {:?}", String::from_utf8_lossy(&all)),
        }
    }
}

#[test]
fn an_http10_client_gets_a_chunked_response_as_bare_data_ended_by_the_close() {
    // Chunks with an extension, then trailers; the upstream keeps its
    // connection, or (cut) closes it midway.
    const WHOLE: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n";
    let app = serve_each(|mut c| {
        let mut buf = Vec::new();
        while read_request(&mut c, &mut buf).is_some() {
            if c.write_all(WHOLE).is_err() {
                return;
            }
        }
    });
    let cut = serve_each(|mut c| {
        let mut tmp = [0u8; 4096];
        let _ = c.read(&mut tmp);
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    });
    let (server, addr) = serve(&http_yaml(&[("app", app), ("cut", cut)], APP_ROUTES, ""));
    for request in ["GET / HTTP/1.0\r\n\r\n", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"] {
        let mut s = connect(addr);
        s.write_all(request.as_bytes()).unwrap();
        let (all, orderly) = read_to_close(&mut s);
        let text = String::from_utf8_lossy(&all);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert!(!head.to_ascii_lowercase().contains("transfer-encoding"), "{head}");
        assert!(!head.to_ascii_lowercase().contains("content-length"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(head.contains("x-up: 1") || head.contains("X-Up: 1"), "{head}");
        assert_eq!((body, orderly), ("hello, world", true), "{request:?}");
    }
    // An HTTP/1.1 client still gets the chunks, trailers and all.
    let mut s = connect(addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").unwrap();
    let (all, _) = read_to_close(&mut s);
    let text = String::from_utf8_lossy(&all);
    assert!(text.ends_with("\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"), "{text}");
    // Cut short upstream, the close that would end the body is a reset, so
    // the client knows it is not the whole.
    let yaml = http_yaml(&[("app", cut)], APP_ROUTES, "");
    let (cut_server, cut_addr) = serve(&yaml);
    let mut s = connect(cut_addr);
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let (all, orderly) = read_to_close(&mut s);
    assert!(String::from_utf8_lossy(&all).ends_with("\r\n\r\nhello"), "{}", String::from_utf8_lossy(&all));
    assert!(!orderly, "a cut body ended in an orderly close");
    stop(cut_server);
    stop(server);
}

#[test]
fn content_length_goes_on_as_one_plain_value_and_a_signed_one_is_refused() {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let app = serve_each(|mut c| {
        let mut buf = Vec::new();
        while let Some((line, headers, body)) = read_request(&mut c, &mut buf) {
            let lengths: Vec<String> =
                headers.iter().filter(|(k, _)| k == "content-length").map(|(_, v)| v.clone()).collect();
            SEEN.lock().unwrap().push(format!("{line} {lengths:?} {}", body.len()));
            let reply: &[u8] = match line.as_str() {
                "GET /listed" => b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\nhello",
                "GET /signed" => b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
                _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            };
            if c.write_all(reply).is_err() {
                return;
            }
        }
    });
    let (server, addr) = serve(&http_yaml(&[("app", app)], APP_ROUTES, ""));
    let mut s = connect(addr);
    let (status, head, body) = exchange(&mut s, b"GET /listed HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(head.to_ascii_lowercase().matches("content-length").count(), 1, "{head}");
    assert!(head.contains("content-length: 5\r\n"), "{head}");
    let (status, _, _) = exchange(&mut s, b"POST /body HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc");
    assert_eq!(status, 200);
    assert_eq!(SEEN.lock().unwrap().last().unwrap(), "POST /body [\"3\"] 3");
    let (status, _, _) = exchange(&mut s, b"GET /signed HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 502);
    stop(server);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let app = HttpUpstream::start();
    let (server, addr) = serve(&http_yaml(&[("app", app.addr)], APP_ROUTES, ""));
    let mut s = connect(addr);
    // Three requests in one write, the middle one with a body, the last
    // asking to close so that every answer can be read to the end.
    s.write_all(
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n\
          POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello\
          GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let mut at = 0;
    for want in ["GET /a\n", "POST /b\n", "GET /c\n"] {
        let (status, _, body, used) = parse_response(&all[at..]).expect("an answer for each request");
        at += used;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 200);
        assert!(body.starts_with(want), "expected {want:?} next, got {body}");
    }
    assert!(String::from_utf8_lossy(&all[at..]).is_empty(), "more than three answers");
    assert!(String::from_utf8_lossy(&all).contains("hello"));
    assert_eq!(stat(&server, "http.ingress.downstream_rq_total"), 3);
    stop(server);
}
