//! tcp_proxy end to end: real sockets on 127.0.0.1, upstream stubs in this
//! process, ringway's workers in threads of this process.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test should fail loudly")]

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::*;
use ringway::runtime::DriverChoice;
use ringway::tcp_proxy::RelayMode;

/// 16 MiB each way through the proxy arrive intact, on every driver and relay.
#[test]
fn sixteen_mib_each_way_arrive_intact() {
    let upstream = Upstream::echo();
    let yaml = TcpConfig::to(&[upstream.addr]).yaml();
    for (driver, relay) in [
        (DriverChoice::Auto, RelayMode::Splice),
        (DriverChoice::Legacy, RelayMode::Splice),
        (DriverChoice::Auto, RelayMode::Copy),
    ] {
        let server = start(&yaml, opts_with(1, driver, relay));
        let addr = server.listener_addr("proxy").unwrap();
        let data = random_bytes(16 << 20, 7);
        let sent_sum = checksum(&data);
        let mut s = connect(addr);
        let mut writer = s.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            writer.write_all(&data).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::with_capacity(16 << 20);
        s.read_to_end(&mut back).unwrap();
        sender.join().unwrap();
        assert_eq!(back.len(), 16 << 20, "{driver:?}/{relay:?}");
        assert_eq!(checksum(&back), sent_sum, "{driver:?}/{relay:?}");
        wait_until("connection teardown", || stat(&server, "cluster.backend.upstream_cx_active") == 0);
        assert_eq!(stat(&server, "cluster.backend.upstream_cx_tx_bytes_total"), 16 << 20);
        assert_eq!(stat(&server, "cluster.backend.upstream_cx_rx_bytes_total"), 16 << 20);
        assert_eq!(stat(&server, "tcp.test.downstream_cx_rx_bytes_total"), 16 << 20);
        assert_eq!(stat(&server, "tcp.test.downstream_cx_total"), 1);
        stop(server);
    }
}

/// A FIN from the client reaches the upstream, and the upstream's reply after
/// it still reaches the client.
#[test]
fn half_close_is_propagated() {
    // An upstream that reads to EOF, then answers with what it counted.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        c.write_all(format!("got {} bytes after your FIN", got.len()).as_bytes()).unwrap();
    });
    let server = start(&TcpConfig::to(&[up]).yaml(), opts(1));
    let mut s = connect(server.listener_addr("proxy").unwrap());
    s.write_all(b"hello").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "got 5 bytes after your FIN");
    wait_until("teardown", || stat(&server, "listener.127.0.0.1_0.downstream_cx_active") == 0);
    stop(server);
}

#[test]
fn refused_upstream_closes_the_client_and_counts() {
    let mut cfg = TcpConfig::to(&[closed_port(), closed_port()]);
    cfg.extra_proxy = "          max_connect_attempts: 2".into();
    let server = start(&cfg.yaml(), opts(1));
    let mut s = connect(server.listener_addr("proxy").unwrap());
    assert!(closed_by_peer(&mut s));
    wait_until("connect failures", || stat(&server, "cluster.backend.upstream_cx_connect_attempts_exceeded") == 1);
    assert_eq!(stat(&server, "cluster.backend.upstream_cx_connect_fail"), 2);
    assert_eq!(stat(&server, "cluster.backend.upstream_cx_total"), 2);
    assert_eq!(stat(&server, "cluster.backend.upstream_cx_connect_timeout"), 0);
    stop(server);
}

/// The second attempt reaches a live host after the first is refused.
#[test]
fn connect_attempts_move_on_to_the_next_host() {
    let upstream = Upstream::echo();
    let mut cfg = TcpConfig::to(&[closed_port(), upstream.addr]);
    cfg.extra_proxy = "          max_connect_attempts: 2".into();
    let server = start(&cfg.yaml(), opts(1));
    let addr = server.listener_addr("proxy").unwrap();
    for _ in 0..4 {
        let mut s = connect(addr);
        assert_eq!(round_trip(&mut s, b"ping"), b"ping");
    }
    assert_eq!(stat(&server, "cluster.backend.upstream_cx_connect_attempts_exceeded"), 0);
    assert!(stat(&server, "cluster.backend.upstream_cx_connect_fail") >= 2);
    stop(server);
}

/// A loopback listener whose accept queue is full never completes a
/// handshake: the cluster's connect_timeout must fire.
#[test]
fn connect_timeout_fires_on_a_full_backlog() {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    socket.listen(0).unwrap();
    let black_hole = socket.local_addr().unwrap().as_socket().unwrap();
    // Fill the accept queue; later SYNs are dropped.
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(&black_hole, Duration::from_millis(200)) {
            fillers.push(s);
        }
    }
    let mut cfg = TcpConfig::to(&[black_hole]);
    cfg.connect_timeout = "0.25s";
    let server = start(&cfg.yaml(), opts(1));
    let started = Instant::now();
    let mut s = connect(server.listener_addr("proxy").unwrap());
    assert!(closed_by_peer(&mut s));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(5), "took {took:?}");
    wait_until("timeout counted", || stat(&server, "cluster.backend.upstream_cx_connect_timeout") == 1);
    assert_eq!(stat(&server, "cluster.backend.upstream_cx_connect_fail"), 1);
    stop(server);
    drop(fillers);
}

#[test]
fn idle_timeout_closes_a_silent_connection() {
    let upstream = Upstream::echo();
    let mut cfg = TcpConfig::to(&[upstream.addr]);
    cfg.extra_proxy = "          idle_timeout: 0.3s".into();
    let server = start(&cfg.yaml(), opts(1));
    let addr = server.listener_addr("proxy").unwrap();
    // An active connection survives past the timeout...
    let mut busy = connect(addr);
    for _ in 0..6 {
        assert_eq!(round_trip(&mut busy, b"still here"), b"still here");
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...a silent one is closed.
    let started = Instant::now();
    let mut idle = connect(addr);
    assert!(closed_by_peer(&mut idle));
    assert!(started.elapsed() >= Duration::from_millis(250), "closed too early: {:?}", started.elapsed());
    wait_until("idle timeout counted", || stat(&server, "tcp.test.idle_timeout") >= 1);
    stop(server);
}

#[test]
fn two_workers_both_accept() {
    let upstream = Upstream::echo();
    let server = start(&TcpConfig::to(&[upstream.addr]).yaml(), opts(2));
    let addr = server.listener_addr("proxy").unwrap();
    let name = |w: usize| format!("listener.{}.worker_{w}.downstream_cx_total", stat_addr(addr));
    let mut n = 0;
    while stat(&server, &name(0)) == 0 || stat(&server, &name(1)) == 0 {
        let mut s = connect(addr);
        assert_eq!(round_trip(&mut s, b"x"), b"x");
        n += 1;
        assert!(n < 500, "the kernel sent 500 connections to one worker");
    }
    let total = stat(&server, &format!("listener.{}.downstream_cx_total", stat_addr(addr)));
    assert_eq!(total, stat(&server, &name(0)) + stat(&server, &name(1)));
    stop(server);
}

/// The listener's stat name is its configured address (port 0 here).
fn stat_addr(_bound: std::net::SocketAddr) -> &'static str {
    "127.0.0.1_0"
}

#[test]
fn global_connection_limit_closes_the_excess() {
    let upstream = Upstream::echo();
    let mut cfg = TcpConfig::to(&[upstream.addr]);
    cfg.extra_bootstrap = r#"overload_manager:
  resource_monitors:
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: 2
"#
    .into();
    let server = start(&cfg.yaml(), opts(1));
    let addr = server.listener_addr("proxy").unwrap();
    let mut a = connect(addr);
    let mut b = connect(addr);
    assert_eq!(round_trip(&mut a, b"a"), b"a");
    assert_eq!(round_trip(&mut b, b"b"), b"b");
    let mut c = connect(addr);
    assert!(closed_by_peer(&mut c));
    assert_eq!(stat(&server, "listener.127.0.0.1_0.downstream_global_cx_overflow"), 1);
    drop(a);
    wait_until("slot freed", || stat(&server, "listener.127.0.0.1_0.downstream_cx_active") == 1);
    let mut d = connect(addr);
    assert_eq!(round_trip(&mut d, b"d"), b"d");
    stop(server);
}

#[test]
fn weighted_clusters_split_connections() {
    let a = Upstream::tagged(b"A");
    let b = Upstream::tagged(b"B");
    let yaml = format!(
        r#"static_resources:
  listeners:
  - name: proxy
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: split
          weighted_clusters:
            clusters: [{{name: a, weight: 1}}, {{name: b, weight: 1}}]
  clusters:
  - name: a
    hosts: [{{socket_address: {{address: 127.0.0.1, port_value: {}}}}}]
  - name: b
    hosts: [{{socket_address: {{address: 127.0.0.1, port_value: {}}}}}]
"#,
        a.addr.port(),
        b.addr.port()
    );
    let server = start(&yaml, opts(1));
    let addr = server.listener_addr("proxy").unwrap();
    let mut seen = [0; 2];
    for _ in 0..40 {
        let mut s = connect(addr);
        let mut tag = [0u8; 1];
        s.read_exact(&mut tag).unwrap();
        seen[usize::from(tag[0] == b'B')] += 1;
    }
    assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
    stop(server);
}

/// A reload swaps endpoints for new connections; an open connection keeps
/// talking to the upstream it started with.
#[test]
fn reload_swaps_endpoints_and_spares_open_connections() {
    let a = Upstream::tagged(b"A");
    let b = Upstream::tagged(b"B");
    let server = start(&TcpConfig::to(&[a.addr]).yaml(), opts(2));
    let addr = server.listener_addr("proxy").unwrap();
    let mut old = connect(addr);
    let mut tag = [0u8; 1];
    old.read_exact(&mut tag).unwrap();
    assert_eq!(&tag, b"A");

    // The new config keeps the listener (same configured address) and moves
    // the cluster to B.
    let version = server.reload_str(&TcpConfig::to(&[b.addr]).yaml()).unwrap();
    assert_eq!(version, 2);
    for _ in 0..8 {
        let mut s = connect(addr);
        s.read_exact(&mut tag).unwrap();
        assert_eq!(&tag, b"B");
    }
    assert_eq!(round_trip(&mut old, b"old connection still works"), b"old connection still works");
    assert_eq!(stat(&server, "server.config_reload_success"), 1);

    // A bad config is rejected whole; B keeps serving.
    let bad = TcpConfig::to(&[b.addr]).yaml().replace("type: STATIC", "type: STATIC\n    lb_polcy: RANDOM");
    let err = server.reload_str(&bad).unwrap_err();
    assert!(err.contains("static_resources.clusters[0].lb_polcy: unknown field"), "{err}");
    assert_eq!(stat(&server, "server.config_reload_failure"), 1);
    assert_eq!(stat(&server, "server.config_version"), 2);
    let mut s = connect(addr);
    s.read_exact(&mut tag).unwrap();
    assert_eq!(&tag, b"B");

    // Moving a listener needs a restart and is refused clearly.
    let moved = TcpConfig::to(&[b.addr]).yaml().replace("name: proxy", "name: other");
    assert!(server.reload_str(&moved).unwrap_err().contains("static_resources.listeners"));
    stop(server);
}

/// IPv6 on both sides: a listener on [::1] proxying to an upstream on [::1].
#[test]
fn ipv6_listener_and_upstream() {
    let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    };
    let up = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).unwrap();
        c.write_all(&buf).unwrap();
    });
    let yaml = TcpConfig::to(&[up]).yaml().replace(
        "address: 127.0.0.1, port_value: 0}}\n    filter_chains",
        "address: \"::1\", port_value: 0}}\n    filter_chains",
    );
    let server = start(&yaml, opts(1));
    let addr = server.listener_addr("proxy").unwrap();
    assert!(addr.is_ipv6(), "{addr}");
    let mut s = connect(addr);
    assert_eq!(round_trip(&mut s, b"six!"), b"six!");
    assert_eq!(stat(&server, "listener.[__1]_0.downstream_cx_total"), 1);
    stop(server);
}

/// A STRICT_DNS cluster resolves its host name (here `localhost`, from
/// /etc/hosts, never the network) off the workers and proxies to it.
#[test]
fn strict_dns_cluster_resolves_localhost() {
    let upstream = Upstream::echo();
    let yaml = TcpConfig::to(&[upstream.addr])
        .yaml()
        .replace("type: STATIC", "type: STRICT_DNS\n    dns_lookup_family: V4_ONLY\n    dns_refresh_rate: 0.2s")
        .replace("address: \"127.0.0.1\"", "address: localhost");
    let server = start(&yaml, opts(1));
    assert_eq!(stat(&server, "cluster.backend.membership_total"), 1);
    let addr = server.listener_addr("proxy").unwrap();
    let mut s = connect(addr);
    assert_eq!(round_trip(&mut s, b"dns"), b"dns");
    // Refreshes run (and find nothing new) without disturbing traffic.
    wait_until("three DNS refreshes", || server.stats().get("cluster.backend.update_no_rebuild").unwrap_or(0) >= 3);
    assert_eq!(stat(&server, "cluster.backend.update_failure"), 0);
    let mut s = connect(addr);
    assert_eq!(round_trip(&mut s, b"again"), b"again");
    assert_eq!(stat(&server, "server.config_version"), 1);
    stop(server);
}

/// `idle_timeout: 0s` disables the timeout (Envoy's meaning).
#[test]
fn zero_idle_timeout_disables_it() {
    let upstream = Upstream::echo();
    let mut cfg = TcpConfig::to(&[upstream.addr]);
    cfg.extra_proxy = "          idle_timeout: 0s".into();
    let server = start(&cfg.yaml(), opts(1));
    let mut s = connect(server.listener_addr("proxy").unwrap());
    assert_eq!(round_trip(&mut s, b"no timer"), b"no timer");
    drop(s);
    assert_eq!(stat(&server, "tcp.test.idle_timeout"), 0);
    stop(server);
}

/// SO_REUSEPORT must not let a second instance silently share a port.
#[test]
fn a_port_already_in_use_is_refused() {
    let upstream = Upstream::echo();
    let first = start(&TcpConfig::to(&[upstream.addr]).yaml(), opts(2));
    let port = first.listener_addr("proxy").unwrap().port();
    let mut cfg = TcpConfig::to(&[upstream.addr]);
    cfg.admin = false;
    let yaml =
        cfg.yaml().replace("port_value: 0}}\n    filter_chains", &format!("port_value: {port}}}}}\n    filter_chains"));
    let snapshot = ringway::config::load_str(&yaml, 1).unwrap();
    let err = ringway::runtime::Server::start(snapshot, opts(1)).err().expect("second bind must fail");
    assert!(err.to_string().contains("cannot bind"), "{err}");
    stop(first);
}
