//! The admin endpoints' output, checked against a server with traffic on it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test should fail loudly")]

mod common;

use common::*;

#[test]
fn admin_endpoints_answer_like_envoy() {
    let upstream = Upstream::echo();
    let server = start(&TcpConfig::to(&[upstream.addr]).yaml(), opts(2));
    let admin = server.admin_addr().unwrap();
    let mut s = connect(server.listener_addr("proxy").unwrap());
    assert_eq!(round_trip(&mut s, b"hello"), b"hello");

    assert_eq!(admin_get(admin, "/ready"), (200, "LIVE\n".into()));

    let (status, text) = admin_get(admin, "/stats");
    assert_eq!(status, 200);
    for line in [
        "cluster.backend.upstream_cx_total: 1\n",
        "cluster.backend.upstream_cx_active: 1\n",
        "cluster.backend.upstream_cx_tx_bytes_total: 5\n",
        "listener.127.0.0.1_0.downstream_cx_total: 1\n",
        "listener.127.0.0.1_0.downstream_cx_active: 1\n",
        "tcp.test.downstream_cx_total: 1\n",
        "server.concurrency: 2\n",
        "server.live: 1\n",
        "cluster.backend.membership_total: 1\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("listener.127.0.0.1_0.worker_0.downstream_cx_total: "));
    assert!(text.contains("listener.127.0.0.1_0.worker_1.downstream_cx_total: "));

    let (_, filtered) = admin_get(admin, "/stats?filter=%5Etcp%5C.");
    assert!(!filtered.is_empty() && filtered.lines().all(|l| l.starts_with("tcp.")), "{filtered}");
    assert_eq!(admin_get(admin, "/stats?filter=(").0, 400);

    let (_, json) = admin_get(admin, "/stats?format=json&filter=upstream_cx_total");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["stats"][0]["name"], "cluster.backend.upstream_cx_total");
    assert_eq!(v["stats"][0]["value"], 1);

    let (_, prom) = admin_get(admin, "/stats/prometheus");
    assert!(prom.contains("# TYPE envoy_cluster_upstream_cx_total counter\n"), "{prom}");
    assert!(prom.contains("envoy_cluster_upstream_cx_total{envoy_cluster_name=\"backend\"} 1\n"), "{prom}");
    assert!(prom.contains("envoy_listener_downstream_cx_active{envoy_listener_address=\"127.0.0.1_0\"} 1\n"));

    let (_, clusters) = admin_get(admin, "/clusters");
    let host = upstream.addr;
    assert!(clusters.contains(&format!("backend::{host}::cx_active::1\n")), "{clusters}");
    assert!(clusters.contains(&format!("backend::{host}::cx_total::1\n")), "{clusters}");
    assert!(clusters.contains(&format!("backend::{host}::health_flags::healthy\n")));
    let (_, cj) = admin_get(admin, "/clusters?format=json");
    let v: serde_json::Value = serde_json::from_str(&cj).unwrap();
    assert_eq!(v["cluster_statuses"][0]["name"], "backend");
    assert_eq!(v["cluster_statuses"][0]["host_statuses"][0]["address"]["socket_address"]["port_value"], host.port());

    let (_, dump) = admin_get(admin, "/config_dump");
    let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let boot = &v["configs"][0]["bootstrap"];
    assert_eq!(boot["static_resources"]["clusters"][0]["name"], "backend");
    assert_eq!(
        boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefix"],
        "test"
    );

    let (_, info) = admin_get(admin, "/server_info");
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["state"], "LIVE");
    assert_eq!(v["command_line_options"]["concurrency"], 2);
    assert!(v["version"].as_str().unwrap().starts_with("ringway/"));

    assert!(admin_get(admin, "/help").1.contains("/quitquitquit"));
    assert_eq!(admin_get(admin, "/nope").0, 404);

    // Mutating endpoints refuse GET.
    assert_eq!(admin_get(admin, "/quitquitquit").0, 405);
    assert_eq!(admin_get(admin, "/ready").0, 200);
    drop(s);

    // POST /quitquitquit drains and stops the server.
    assert_eq!(admin_request(admin, "POST", "/quitquitquit"), (200, "OK\n".into()));
    server.wait();
}

#[test]
fn a_request_head_dribbled_in_is_cut_off_after_five_seconds_in_all() {
    use std::io::{Read, Write};
    let upstream = Upstream::echo();
    let server = start(&TcpConfig::to(&[upstream.addr]).yaml(), opts(1));
    let admin = server.admin_addr().unwrap();
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(15))).unwrap();
    let mut writer = s.try_clone().unwrap();
    let started = std::time::Instant::now();
    // A byte every 200 ms, each well inside any per-read timeout, never
    // finishing the head.
    std::thread::spawn(move || {
        let _ = writer.write_all(b"GET /ready HTTP/1.1\r\n");
        while writer.write_all(b"x").is_ok() {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    });
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < std::time::Duration::from_secs(8), "held for {took:?}");
    stop(server);
}
