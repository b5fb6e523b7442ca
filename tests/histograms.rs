//! Latency histograms in the admin output of a running server: registered
//! when the workers build their tables, shown before any sample.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test should fail loudly")]

mod common;

use common::*;

fn yaml(cluster: std::net::SocketAddr) -> String {
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
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
          route_config:
            name: local
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: app}}
  clusters:
  - name: app
    connect_timeout: 0.5s
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: "{}", port_value: {}}}}}}}
"#,
        cluster.ip(),
        cluster.port()
    )
}

#[test]
fn registered_histograms_show_in_every_stats_format() {
    let server = start(&yaml(closed_port()), opts(2));
    let admin = server.admin_addr().unwrap();

    let (status, text) = admin_get(admin, "/stats");
    assert_eq!(status, 200);
    for line in
        ["http.ingress.downstream_rq_time: No recorded values\n", "cluster.app.upstream_rq_time: No recorded values\n"]
    {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // Sorted by name among the counters and gauges.
    let names: Vec<&str> = text.lines().map(|l| l.split(": ").next().unwrap()).collect();
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "{text}");

    // The filter applies to histograms too.
    let (_, filtered) = admin_get(admin, "/stats?filter=rq_time%24");
    assert_eq!(
        filtered,
        "cluster.app.upstream_rq_time: No recorded values\nhttp.ingress.downstream_rq_time: No recorded values\n"
    );
    let (_, none) = admin_get(admin, "/stats?filter=%5Ecluster%5C.app%5C.upstream_cx_total%24");
    assert_eq!(none, "cluster.app.upstream_cx_total: 0\n");

    let (_, json) = admin_get(admin, "/stats?format=json&filter=rq_time%24");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let stats = v["stats"].as_array().unwrap();
    assert_eq!(stats.len(), 1, "{json}");
    let h = &stats[0]["histograms"];
    assert_eq!(h["supported_quantiles"].to_string(), "[0,25,50,75,90,95,99,99.5,99.9,100]");
    assert_eq!(h["computed_quantiles"][0]["name"], "cluster.app.upstream_rq_time");
    assert_eq!(h["computed_quantiles"][1]["name"], "http.ingress.downstream_rq_time");
    assert_eq!(h["computed_quantiles"][1]["values"][0], serde_json::json!({"interval": null, "cumulative": null}));

    let (_, prom) = admin_get(admin, "/stats/prometheus");
    for (family, labels) in [
        ("envoy_cluster_upstream_rq_time", r#"envoy_cluster_name="app""#),
        ("envoy_http_downstream_rq_time", r#"envoy_http_conn_manager_prefix="ingress""#),
    ] {
        for line in [
            format!("# TYPE {family} histogram\n"),
            format!("{family}_bucket{{{labels},le=\"0.5\"}} 0\n"),
            format!("{family}_bucket{{{labels},le=\"3600000\"}} 0\n"),
            format!("{family}_bucket{{{labels},le=\"+Inf\"}} 0\n"),
            format!("{family}_sum{{{labels}}} 0\n"),
            format!("{family}_count{{{labels}}} 0\n"),
        ] {
            assert!(prom.contains(&line), "missing {line:?} in\n{prom}");
        }
        assert_eq!(prom.matches(&format!("{family}_bucket{{")).count(), 20, "{prom}");
    }
    let (_, filtered) = admin_get(admin, "/stats/prometheus?filter=downstream_rq_time");
    assert!(filtered.starts_with("# TYPE envoy_http_downstream_rq_time histogram\n"), "{filtered}");
    assert!(!filtered.contains("upstream_rq_time"), "{filtered}");

    stop(server);
}
