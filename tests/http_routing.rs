//! The router's richer matches and actions end to end: header and query
//! matchers, path_separated_prefix, weighted clusters, regex and host
//! rewrites, retry policies, WebSocket upgrades, `via`, and the
//! connection-level timeouts.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test should fail loudly")]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::http::*;
use common::*;

#[test]
fn header_query_and_separated_prefix_matches_choose_the_route() {
    let app = HttpUpstream::start();
    let routes = r#"            - name: all
              domains: ["*"]
              routes:
              - match:
                  prefix: "/"
                  headers:
                  - {name: x-canary, string_match: {exact: "yes"}}
                  - {name: x-debug, present_match: true, invert_match: true}
                direct_response: {status: 200, body: {inline_string: "canary"}}
              - match:
                  prefix: "/"
                  query_parameters:
                  - {name: v, string_match: {prefix: "beta", ignore_case: true}}
                direct_response: {status: 200, body: {inline_string: "beta"}}
              - match:
                  prefix: "/"
                  headers: [{name: ":method", exact_match: "DELETE"}]
                direct_response: {status: 405, body: {inline_string: "no deletes"}}
              - match: {path_separated_prefix: "/api"}
                route: {cluster: app}
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: "default"}}
"#;
    let (server, addr) = serve(&http_yaml(&[("app", app.addr)], routes, ""));
    let cases = [
        ("GET /x HTTP/1.1\r\nHost: h\r\nX-Canary: yes\r\n\r\n", 200, "canary"),
        ("GET /x HTTP/1.1\r\nHost: h\r\nX-Canary: yes\r\nX-Debug: 1\r\n\r\n", 200, "default"),
        ("GET /x?a=1&v=BETA-2 HTTP/1.1\r\nHost: h\r\n\r\n", 200, "beta"),
        ("GET /x?v=stable HTTP/1.1\r\nHost: h\r\n\r\n", 200, "default"),
        ("DELETE /api HTTP/1.1\r\nHost: h\r\n\r\n", 405, "no deletes"),
        ("GET /api HTTP/1.1\r\nHost: h\r\n\r\n", 200, "GET /api\n"),
        ("GET /api/users HTTP/1.1\r\nHost: h\r\n\r\n", 200, "GET /api/users\n"),
        ("GET /apiary HTTP/1.1\r\nHost: h\r\n\r\n", 200, "default"),
    ];
    for (request, want_status, want_body) in cases {
        let (status, head, body) = get(addr, request);
        assert_eq!(status, want_status, "{request:?}: {head}{body}");
        assert!(body.starts_with(want_body), "{request:?}: got {body:?}");
    }
    stop(server);
}

#[test]
fn weighted_clusters_split_traffic_and_add_their_own_headers() {
    let (a, b) = (HttpUpstream::start(), HttpUpstream::start());
    let routes = r#"            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/only-a"}
                route:
                  weighted_clusters:
                    clusters:
                    - {name: a, weight: 1}
                    - {name: b, weight: 0}
              - match: {prefix: "/"}
                request_headers_to_add: [{header: {key: x-test-route, value: "r"}}]
                route:
                  weighted_clusters:
                    clusters:
                    - name: a
                      weight: 50
                      request_headers_to_add: [{header: {key: x-test-cluster, value: "a"}}]
                    - name: b
                      weight: 50
                      request_headers_to_add: [{header: {key: x-test-cluster, value: "b"}}]
"#;
    let (server, addr) = serve(&http_yaml(&[("a", a.addr), ("b", b.addr)], routes, ""));
    let mut s = connect(addr);
    for _ in 0..20 {
        let (status, _, _) = exchange(&mut s, b"GET /only-a HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status, 200);
    }
    wait_until("20 requests to a", || stat(&server, "cluster.a.upstream_rq_200") == 20);
    assert_eq!(stat(&server, "cluster.b.upstream_rq_total"), 0);

    let (mut to_a, mut to_b) = (0, 0);
    for _ in 0..200 {
        let (status, _, body) = exchange(&mut s, b"GET /split HTTP/1.1\r\nHost: h\r\n\r\n");
        let body = String::from_utf8(body).unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("x-test-route=r\n"), "{body}");
        match (body.contains("x-test-cluster=a\n"), body.contains("x-test-cluster=b\n")) {
            (true, false) => to_a += 1,
            (false, true) => to_b += 1,
            _ => panic!("exactly one cluster header expected: {body}"),
        }
    }
    // Even odds over 200 requests: fewer than 40 either way is ~1e-18 unlikely.
    assert!(to_a > 40 && to_b > 40, "a {to_a}, b {to_b}");
    wait_until("split counted", || stat(&server, "cluster.b.upstream_rq_200") == to_b);
    assert_eq!(stat(&server, "cluster.a.upstream_rq_200"), 20 + to_a);
    stop(server);
}

#[test]
fn regex_rewrite_and_auto_host_rewrite_reach_the_upstream() {
    let app = HttpUpstream::start();
    let routes = r#"            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/service/"}
                route:
                  cluster: app
                  regex_rewrite:
                    pattern: {regex: "^/service/([^/]+)(/.*)$"}
                    substitution: "\\2/instance/\\1"
              - match: {prefix: "/named"}
                route: {cluster: named, auto_host_rewrite: true}
"#;
    let named = format!(
        "  - name: named\n    type: STRICT_DNS\n    dns_lookup_family: V4_ONLY\n    connect_timeout: 0.5s\n    load_assignment:\n      cluster_name: named\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{address: {{socket_address: {{address: localhost, port_value: {}}}}}}}\n",
        app.addr.port()
    );
    let yaml = format!("{}{named}", http_yaml(&[("app", app.addr)], routes, ""));
    let (server, addr) = serve(&yaml);
    let (status, _, body) = get(addr, "GET /service/foo/v1/api?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 200);
    assert!(body.starts_with("GET /v1/api/instance/foo?x=1\nhost=h\n"), "{body}");
    let (status, _, body) = get(addr, "GET /named HTTP/1.1\r\nHost: public.example\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\nhost=localhost\n"), "{body}");
    stop(server);
}

const RETRY_ROUTES: &str = r#"            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/5xx"}
                route:
                  cluster: flaky
                  retry_policy: {retry_on: "5xx", num_retries: 2, retry_back_off: {base_interval: 0.001s}}
              - match: {prefix: "/none"}
                route: {cluster: flaky}
              - match: {prefix: "/codes"}
                route:
                  cluster: flaky
                  retry_policy:
                    retry_on: retriable-status-codes
                    retriable_status_codes: [418]
                    retry_back_off: {base_interval: 0.001s}
              - match: {prefix: "/connect"}
                route:
                  cluster: half_down
                  retry_policy: {retry_on: connect-failure, num_retries: 1, retry_back_off: {base_interval: 0.001s}}
              - match: {prefix: "/per-try"}
                route:
                  cluster: flaky
                  timeout: 5s
                  retry_policy:
                    retry_on: "5xx"
                    num_retries: 1
                    per_try_timeout: 0.2s
                    retry_back_off: {base_interval: 0.001s}
"#;

/// An upstream whose answer depends on the request: `/5xx/fail-N` fails
/// (503) until it has seen N requests in all, `/codes` answers 418 first,
/// `/per-try` is silent on its first request, anything else succeeds.
fn flaky_upstream() -> HttpUpstream {
    HttpUpstream::serve(|req, n| {
        let target = req.0.split(' ').nth(1).unwrap_or("");
        let fail_until: usize = target.rsplit("fail-").next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if target.contains("/per-try") && n == 1 {
            std::thread::sleep(Duration::from_secs(1));
            return Reply::Close;
        }
        if target.starts_with("/codes") && n == 1 {
            return Reply::Bytes(respond(418, "teapot"));
        }
        if n <= fail_until {
            return Reply::Bytes(respond(503, "try again"));
        }
        Reply::Bytes(describe(req))
    })
}

#[test]
fn retries_recover_from_5xx_and_replay_the_body() {
    let flaky = flaky_upstream();
    let yaml = http_yaml(&[("flaky", flaky.addr), ("half_down", closed_port())], RETRY_ROUTES, "");
    let (server, addr) = serve(&yaml);
    let st = |n: &str| stat(&server, n);
    // The first attempt gets 503, the retry sends the same body again.
    let (status, _, body) = get(addr, "POST /5xx/fail-1 HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("POST /5xx/fail-1\n") && body.ends_with("\nhello world"), "{body}");
    wait_until("the retry counted", || st("cluster.flaky.upstream_rq_retry_success") == 1);
    assert_eq!(st("cluster.flaky.upstream_rq_retry"), 1);
    assert_eq!(st("cluster.flaky.upstream_rq_503"), 1);
    assert_eq!(st("cluster.flaky.upstream_rq_200"), 1);
    assert_eq!(st("cluster.flaky.upstream_rq_total"), 2);
    wait_until("the response counted", || st("http.ingress.downstream_rq_2xx") == 1);
    stop(server);
}

#[test]
fn retries_stop_at_num_retries_and_only_where_configured() {
    let flaky = flaky_upstream();
    let yaml = http_yaml(&[("flaky", flaky.addr), ("half_down", closed_port())], RETRY_ROUTES, "");
    let (server, addr) = serve(&yaml);
    let st = |n: &str| stat(&server, n);
    // Always failing: one try and two retries, then the 503 goes to the client.
    let (status, _, body) = get(addr, "GET /5xx/fail-99 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((status, body.as_str()), (503, "try again"));
    wait_until("limit counted", || st("cluster.flaky.upstream_rq_retry_limit_exceeded") == 1);
    assert_eq!(st("cluster.flaky.upstream_rq_total"), 3);
    assert_eq!(st("cluster.flaky.upstream_rq_retry"), 2);
    assert_eq!(st("cluster.flaky.upstream_rq_503"), 3);
    // No retry policy: the first 503 is the answer.
    let (status, _, _) = get(addr, "GET /none/fail-99 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 503);
    wait_until("one more try", || st("cluster.flaky.upstream_rq_total") == 4);
    assert_eq!(st("cluster.flaky.upstream_rq_retry"), 2);
    stop(server);
}

#[test]
fn retriable_status_codes_connect_failures_and_per_try_timeouts_retry() {
    let flaky = flaky_upstream();
    let good = HttpUpstream::start();
    let refusing = closed_port();
    let mut yaml = http_yaml(&[("flaky", flaky.addr), ("half_down", refusing)], RETRY_ROUTES, "");
    // half_down: a refusing endpoint beside a working one.
    let endpoint = |port: u16| {
        format!("        - endpoint: {{address: {{socket_address: {{address: \"127.0.0.1\", port_value: {port}}}}}}}\n")
    };
    yaml = yaml
        .replace(&endpoint(refusing.port()), &format!("{}{}", endpoint(refusing.port()), endpoint(good.addr.port())));
    assert!(yaml.contains(&good.addr.port().to_string()), "the half_down rewrite did not apply");
    let (server, addr) = serve(&yaml);
    let st = |n: &str| stat(&server, n);

    let (status, _, body) = get(addr, "GET /codes HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    wait_until("418 retried", || st("cluster.flaky.upstream_rq_418") == 1);

    // Round robin over a refusing and a working host: every request lands.
    for _ in 0..4 {
        let (status, _, body) = get(addr, "GET /connect HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status, 200, "{body}");
    }
    assert!(st("cluster.half_down.upstream_cx_connect_fail") >= 1);
    assert_eq!(st("cluster.half_down.upstream_rq_retry"), st("cluster.half_down.upstream_cx_connect_fail"));

    // The first try hears nothing for its 0.2 s; the second answers.
    let flaky2 = flaky_upstream();
    stop(server);
    let yaml = http_yaml(&[("flaky", flaky2.addr), ("half_down", closed_port())], RETRY_ROUTES, "");
    let (server, addr) = serve(&yaml);
    let started = Instant::now();
    let (status, _, body) = get(addr, "GET /per-try HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(1), "the per-try timeout did not cut the first try short");
    wait_until("per-try timeout counted", || stat(&server, "cluster.flaky.upstream_rq_per_try_timeout") == 1);
    assert_eq!(stat(&server, "cluster.flaky.upstream_rq_retry"), 1);
    stop(server);
}

#[test]
fn websocket_upgrades_tunnel_after_the_upstreams_101() {
    let ws = upgrading_upstream();
    let routes = r#"            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/chat"}
                route: {cluster: ws}
              - match: {prefix: "/plain"}
                route:
                  cluster: ws
                  upgrade_configs: [{upgrade_type: websocket, enabled: false}]
"#;
    let hcm = "          upgrade_configs: [{upgrade_type: websocket}]";
    let (server, addr) = serve(&http_yaml(&[("ws", ws)], routes, hcm));
    let mut s = connect(addr);
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly").unwrap();
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    while !got.ends_with(b"hiearly") {
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&tmp[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    assert!(text.to_ascii_lowercase().contains("\r\nupgrade: websocket\r\n"), "{text}");
    assert!(text.to_ascii_lowercase().contains("\r\nconnection: upgrade\r\n"), "{text}");
    // The tunnel carries bytes both ways.
    for msg in [&b"frame one"[..], &[0u8, 255, 13, 10, 13, 10][..]] {
        assert_eq!(round_trip(&mut s, msg), msg);
    }
    wait_until("upgrade counted", || stat(&server, "http.ingress.downstream_cx_upgrades_active") == 1);
    assert_eq!(stat(&server, "http.ingress.downstream_cx_upgrades_total"), 1);
    drop(s);
    wait_until("tunnel closed", || stat(&server, "http.ingress.downstream_cx_upgrades_active") == 0);

    // A route with upgrades turned off refuses them.
    let (status, _, _) =
        get(addr, "GET /plain HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(status, 403);
    wait_until("refusal counted", || stat(&server, "http.ingress.downstream_rq_ws_on_non_ws_route") == 1);
    stop(server);
}

#[test]
fn via_is_added_to_requests_and_responses() {
    let app = HttpUpstream::serve(|(_, headers, _), _| {
        let via = headers.iter().filter(|(k, _)| k == "via").map(|(_, v)| v.as_str()).collect::<Vec<_>>().join("|");
        Reply::Bytes(respond(200, &via))
    });
    let routes = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/\"}\n                route: {cluster: app}\n";
    let (server, addr) = serve(&http_yaml(&[("app", app.addr)], routes, "          via: \"1.1 ringway\""));
    let (status, head, body) = get(addr, "GET / HTTP/1.1\r\nHost: h\r\nVia: 1.0 client-proxy\r\n\r\n");
    assert_eq!(status, 200);
    assert_eq!(body, "1.0 client-proxy|1.1 ringway");
    assert!(head.contains("\r\nvia: 1.1 ringway\r\n"), "{head}");
    stop(server);
}

#[test]
fn request_timeout_and_max_connection_duration_bound_connections() {
    let app = HttpUpstream::start();
    let routes = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/\"}\n                route: {cluster: app}\n";
    let hcm =
        "          request_timeout: 0.3s\n          common_http_protocol_options: {max_connection_duration: 0.5s}";
    let (server, addr) = serve(&http_yaml(&[("app", app.addr)], routes, hcm));

    // A body that stops arriving: 408 once request_timeout passes.
    let mut s = connect(addr);
    let started = Instant::now();
    let (status, _, _) = exchange(&mut s, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab");
    assert_eq!(status, 408);
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    wait_until("timeout counted", || stat(&server, "http.ingress.downstream_rq_timeout") == 1);

    // A kept-alive connection is closed once max_connection_duration passes.
    let mut s = connect(addr);
    let (status, _, _) = exchange(&mut s, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 200);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tmp = [0u8; 16];
    assert_eq!(s.read(&mut tmp).unwrap(), 0, "the connection outlived max_connection_duration");
    stop(server);
}

#[test]
fn bad_matchers_and_policies_are_refused_by_path() {
    let routes = |route: &str| {
        format!(
            "            - name: all\n              domains: [\"*\"]\n              routes:\n              - {route}\n"
        )
    };
    let cases = [
        (
            r#"match: {prefix: "/", headers: [{name: x, exact_match: a, prefix_match: b}]}
                route: {cluster: app}"#,
            "routes[0].match.headers[0]: give only one of",
        ),
        (
            r#"match: {prefix: "/", query_parameters: [{name: q, string_match: {}}]}
                route: {cluster: app}"#,
            "routes[0].match.query_parameters[0].string_match: give one of",
        ),
        (
            r#"match: {prefix: "/", path_separated_prefix: "/a"}
                route: {cluster: app}"#,
            "routes[0].match: give only one of prefix, path, safe_regex or path_separated_prefix",
        ),
        (
            r#"match: {path_separated_prefix: "/a/"}
                route: {cluster: app}"#,
            "routes[0].match.path_separated_prefix: must start with / and not end with one",
        ),
        (
            r#"match: {prefix: "/"}
                route: {cluster: app, retry_policy: {retry_on: "5xx,sometimes"}}"#,
            "routes[0].route.retry_policy.retry_on: `sometimes` is not supported",
        ),
        (
            r#"match: {prefix: "/"}
                route: {cluster: app, regex_rewrite: {pattern: {regex: "^/(a)$"}, substitution: "\\2"}}"#,
            "routes[0].route.regex_rewrite.substitution: \\2 names a group the pattern does not have",
        ),
        (
            r#"match: {prefix: "/"}
                route: {cluster: app, weighted_clusters: {clusters: [{name: app, weight: 1}]}}"#,
            "routes[0].route.weighted_clusters: give cluster or weighted_clusters, not both",
        ),
        (
            r#"match: {prefix: "/"}
                route: {weighted_clusters: {clusters: [{name: nope, weight: 1}]}}"#,
            "routes[0].route.weighted_clusters.clusters[0].name: unknown cluster `nope`",
        ),
        (
            r#"match: {prefix: "/"}
                route: {cluster: app, upgrade_configs: [{upgrade_type: CONNECT}]}"#,
            "routes[0].route.upgrade_configs[0].upgrade_type: CONNECT is not supported yet",
        ),
    ];
    for (route, want) in cases {
        let yaml = http_yaml(&[("app", closed_port())], &routes(route), "");
        let err = ringway::config::check_str(&yaml, 1).expect_err(want).to_string();
        assert!(err.contains(want), "want {want} in {err}");
    }
}

#[test]
fn upstream_pools_honour_max_requests_and_idle_timeout() {
    let app = HttpUpstream::start();
    let routes = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/\"}\n                route: {cluster: app}\n                response_headers_to_add: [{header: {key: x-route, value: r1}}]\n";
    let options = r#"connect_timeout: 0.5s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options: {idle_timeout: 0.2s, max_requests_per_connection: 2}
        explicit_http_config: {http_protocol_options: {}}
"#;
    let yaml = http_yaml(&[("app", app.addr)], routes, "").replace("connect_timeout: 0.5s\n", options);
    let (server, addr) = serve(&yaml);
    let st = |n: &str| stat(&server, n);
    let mut s = connect(addr);
    for _ in 0..4 {
        let (status, head, _) = exchange(&mut s, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status, 200);
        assert!(head.contains("\r\nx-route: r1\r\n"), "{head}");
    }
    // Two requests per upstream connection: four requests, two connections.
    wait_until("quota reached twice", || st("cluster.app.upstream_cx_max_requests") == 2);
    assert_eq!(st("cluster.app.upstream_cx_total"), 2);
    assert_eq!(app.connections.load(std::sync::atomic::Ordering::Acquire), 2);
    // One more leaves a pooled connection, which the idle timeout closes.
    let (status, _, _) = exchange(&mut s, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 200);
    wait_until("idle connection closed", || {
        st("cluster.app.upstream_cx_idle_timeout") == 1 && st("cluster.app.upstream_cx_active") == 0
    });
    stop(server);
}

#[test]
fn direct_responses_and_redirects_carry_response_headers_to_add() {
    let routes = r#"            - name: all
              domains: ["*"]
              response_headers_to_add: [{header: {key: x-vhost, value: v}}]
              routes:
              - match: {prefix: "/old"}
                redirect: {path_redirect: "/new"}
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: "ok"}}
                response_headers_to_add: [{header: {key: x-route, value: r}}]
"#;
    let (server, addr) = serve(&http_yaml(&[("app", closed_port())], routes, ""));
    let (status, head, body) = get(addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert!(head.contains("\r\nx-route: r\r\n") && head.contains("\r\nx-vhost: v\r\n"), "{head}");
    let (status, head, _) = get(addr, "GET /old HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 301);
    assert!(head.contains("\r\nx-vhost: v\r\n"), "{head}");
    stop(server);
}

#[test]
fn upstream_http2_and_unknown_protocol_options_are_refused_by_path() {
    let base = http_yaml(&[("app", closed_port())], "            - name: all\n              domains: [\"*\"]\n", "");
    let cases = [
        (
            "connect_timeout: 0.5s\n    http2_protocol_options: {}\n",
            "clusters[0].http2_protocol_options: upstream HTTP/2 is not supported yet",
        ),
        (
            "connect_timeout: 0.5s\n    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: {http2_protocol_options: {}}\n",
            "explicit_http_config.http2_protocol_options: upstream HTTP/2 is not supported yet",
        ),
        (
            "connect_timeout: 0.5s\n    typed_extension_protocol_options:\n      envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions: {}\n",
            "typed_extension_protocol_options.envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions: not supported",
        ),
        (
            "connect_timeout: 0.5s\n    common_http_protocol_options: {idle_timeout: 1s, max_headers_count: 5}\n",
            "clusters[0].common_http_protocol_options.max_headers_count: not supported for upstream connections",
        ),
    ];
    for (options, want) in cases {
        let yaml = base.replace("connect_timeout: 0.5s\n", options);
        let err = ringway::config::check_str(&yaml, 1).expect_err(want).to_string();
        assert!(err.contains(want), "want {want} in {err}");
    }
}

#[test]
fn a_response_cut_short_upstream_is_a_tx_reset() {
    let cut = HttpUpstream::serve(|_, _| {
        Reply::BytesThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part".to_vec())
    });
    let routes = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/\"}\n                route: {cluster: cut}\n";
    let (server, addr) = serve(&http_yaml(&[("cut", cut.addr)], routes, ""));
    let mut s = connect(addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 ") && text.ends_with("\r\n\r\nonly part"), "{text}");
    wait_until("tx reset counted", || stat(&server, "http.ingress.downstream_rq_tx_reset") == 1);
    assert_eq!(stat(&server, "cluster.cut.upstream_rq_rx_reset"), 1);
    stop(server);
}

#[test]
fn large_sized_responses_arrive_intact_on_every_driver_and_relay() {
    use ringway::runtime::DriverChoice;
    use ringway::tcp_proxy::RelayMode;
    let big = random_bytes(3 << 20, 42);
    let body = big.clone();
    let app = HttpUpstream::serve(move |_, _| {
        let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        out.extend_from_slice(&body);
        Reply::Bytes(out)
    });
    let routes = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/\"}\n                route: {cluster: app}\n";
    let yaml = http_yaml(&[("app", app.addr)], routes, "");
    for (driver, relay) in [
        (DriverChoice::Auto, RelayMode::Splice),
        (DriverChoice::Legacy, RelayMode::Splice),
        (DriverChoice::Auto, RelayMode::Copy),
    ] {
        let server = start(&yaml, opts_with(1, driver, relay));
        let mut s = connect(server.listener_addr("web").unwrap());
        // Twice on one connection: the connection is still good after a
        // spliced body, on both sides.
        for _ in 0..2 {
            let (status, _, got) = exchange(&mut s, b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(status, 200);
            assert!(got == big, "{driver:?}/{relay:?}: body differs ({} bytes)", got.len());
        }
        let (status, _, _) = exchange(&mut s, b"GET /small HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status, 200);
        assert_eq!(stat(&server, "cluster.app.upstream_cx_total"), 1, "{driver:?}/{relay:?}");
        stop(server);
    }
}

#[test]
fn a_pooled_connection_the_upstream_closed_is_replaced_transparently() {
    // Closes every connection right after its response, without saying so.
    let app = HttpUpstream::serve(|_, n| Reply::BytesThenClose(respond(200, &format!("answer {n}"))));
    let routes = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/\"}\n                route: {cluster: app}\n";
    let (server, addr) = serve(&http_yaml(&[("app", app.addr)], routes, ""));
    let mut s = connect(addr);
    for _ in 0..5 {
        let (status, _, body) = exchange(&mut s, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    // Each request after the first met a closed pooled connection (or the
    // kernel told the pool first); none of it reached the client.
    assert_eq!(stat(&server, "cluster.app.upstream_rq_retry"), 0);
    assert_eq!(stat(&server, "cluster.app.upstream_cx_total"), 5);
    wait_until("five 2xx", || stat(&server, "http.ingress.downstream_rq_2xx") == 5);
    drop(s);
    stop(server);
}
