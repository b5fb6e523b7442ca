//! HTTPS through the HTTP connection manager: TLS terminated on a listener,
//! and originated to an HTTPS upstream, with certificates made here.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test should fail loudly")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use common::http::*;
use common::*;

struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
}

/// A CA and a server certificate for `front.test` signed by it.
fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["front.test".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    Pki { ca_pem: ca_cert.pem(), server_cert: cert.pem(), server_key: key.serialize_pem() }
}

/// YAML for an inline PEM block at `indent` spaces.
fn inline(pem: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let body: String = pem.lines().map(|l| format!("{pad}  {l}\n")).collect();
    format!("|\n{body}")
}

/// A filter chain's `transport_socket` serving `cert`/`key` (inline PEM),
/// with `extra` lines (e.g. `alpn_protocols`) in its common_tls_context.
fn tls_server_block(cert: &str, key: &str, extra: &str) -> String {
    format!(
        r#"      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
{extra}            tls_certificates:
            - certificate_chain:
                inline_string: {}
              private_key:
                inline_string: {}
"#,
        inline(cert, 16),
        inline(key, 16)
    )
}

/// A cluster's `transport_socket` trusting `ca_pem`, with SNI `front.test`;
/// it follows the cluster's `connect_timeout` line `timeout_line`.
fn tls_client_block(timeout_line: &str, ca_pem: &str) -> String {
    format!(
        r#"{timeout_line}    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: front.test
        common_tls_context:
          validation_context:
            trusted_ca:
              inline_string: {}
"#,
        inline(ca_pem, 14)
    )
}

fn https_listener_yaml(app: std::net::SocketAddr, pki: &Pki) -> String {
    https_listener_yaml_with(app, pki, "          use_remote_address: true")
}

/// The same with `hcm` lines in the connection manager's config.
fn https_listener_yaml_with(app: std::net::SocketAddr, pki: &Pki, hcm: &str) -> String {
    let plain = http_yaml(&[("app", app)], ALL_TO_APP, hcm);
    let tls = tls_server_block(&pki.server_cert, &pki.server_key, "            alpn_protocols: [http/1.1]\n");
    // The chain's transport socket goes after its filters.
    plain.replace("  clusters:\n", &format!("{tls}  clusters:\n"))
}

/// A rustls client that trusts `ca_pem`, talking to `addr` as `sni`.
fn tls_connect(ca_pem: &str, sni: &str, addr: std::net::SocketAddr, alpn: &[&[u8]]) -> std::io::Result<TlsClient> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(ringway::tls::parse_certs(ca_pem.as_bytes()).unwrap());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr)?);
    tls.sock.set_read_timeout(Some(WAIT))?;
    Ok(tls)
}

type TlsClient = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Every request to the cluster `app`.
const ALL_TO_APP: &str = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/\"}\n                route: {cluster: app}\n";

#[test]
fn https_is_terminated_and_originated() {
    let pki = pki();
    let app = HttpUpstream::start();
    // B: HTTPS in, plain HTTP to the app.
    let b = start(&https_listener_yaml(app.addr, &pki), opts(1));
    let b_addr = b.listener_addr("web").unwrap();

    // A client with the CA trusts B.
    let mut tls = tls_connect(&pki.ca_pem, "front.test", b_addr, &[b"http/1.1"]).unwrap();
    for _ in 0..2 {
        tls.write_all(b"GET /x HTTP/1.1\r\nHost: front.test\r\n\r\n").unwrap();
        let (status, head, body) = read_response(&mut tls);
        let body = String::from_utf8(body).unwrap();
        assert_eq!(status, 200, "{head}{body}");
        // ringway says the client came over TLS.
        assert!(body.contains("\nxfp=https\n"), "{body}");
    }
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    // Listener stats are named by the configured address (port 0 here).
    assert_eq!(stat(&b, "listener.127.0.0.1_0.ssl.handshake"), 1);
    assert_eq!(stat(&b, "http.ingress.downstream_cx_ssl_total"), 1);
    drop(tls);

    // A: plain HTTP in, HTTPS out to B (checked against the CA and the SNI).
    let a_yaml = http_yaml(
        &[("secure", b_addr)],
        "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/\"}\n                route: {cluster: secure}\n",
        "",
    )
    .replace("    connect_timeout: 0.5s\n", &tls_client_block("    connect_timeout: 0.5s\n", &pki.ca_pem));
    let a = start(&a_yaml, opts(1));
    let mut s = connect(a.listener_addr("web").unwrap());
    for _ in 0..3 {
        let (status, head, body) = exchange(&mut s, b"GET /y HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status, 200, "{head}{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8(body).unwrap().starts_with("GET /y\n"));
    }
    // One TLS connection to B, pooled and reused.
    assert_eq!(stat(&a, "cluster.secure.ssl.handshake"), 1);
    assert_eq!(stat(&a, "cluster.secure.upstream_cx_total"), 1);
    drop(s);
    stop(a);

    // The wrong SNI: B's certificate does not match, nothing is sent.
    let wrong = start(&a_yaml.replace("sni: front.test", "sni: other.test"), opts(1));
    let mut s = connect(wrong.listener_addr("web").unwrap());
    let (status, _, _) = exchange(&mut s, b"GET /y HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 503);
    assert_eq!(stat(&wrong, "cluster.secure.ssl.fail_verify_san"), 1);
    drop(s);
    stop(wrong);
    stop(b);
}

/// A certificate for `names` signed by a fresh CA; returns (CA, cert, key).
fn cert_for(issuer: &rcgen::Issuer<'_, rcgen::KeyPair>, names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn tls_client(ca_pem: &str, sni: &str, addr: std::net::SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut tls = tls_connect(ca_pem, sni, addr, &[])?;
    tls.write_all(b"hello")?;
    let mut tag = [0u8; 1];
    std::io::Read::read_exact(&mut tls, &mut tag)?;
    Ok(tag.to_vec())
}

#[test]
fn the_tls_inspector_picks_chains_by_sni_and_transport() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let (ups, tags): (Vec<Upstream>, Vec<&[u8]>) =
        [&b"A"[..], b"B", b"C", b"P"].iter().map(|t| (Upstream::tagged(t), *t)).unzip();
    let chain = |matcher: &str, up: &Upstream, cert: Option<(String, String)>| {
        let tls = cert.map_or(String::new(), |(c, k)| tls_server_block(&c, &k, ""));
        format!(
            "    - filter_chain_match: {matcher}\n      filters:\n      - name: envoy.filters.network.tcp_proxy\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          stat_prefix: t\n          cluster: up{}\n{tls}",
            up.addr.port()
        )
    };
    let chains = [
        chain("{server_names: [a.test]}", &ups[0], Some(cert_for(&issuer, &["a.test"]))),
        chain("{server_names: [\"*.b.test\"]}", &ups[1], Some(cert_for(&issuer, &["x.b.test"]))),
        chain("{transport_protocol: tls}", &ups[2], Some(cert_for(&issuer, &["other.test"]))),
        chain("{transport_protocol: raw_buffer}", &ups[3], None),
    ]
    .concat();
    let clusters: String = ups
        .iter()
        .map(|u| {
            format!(
                "  - name: up{p}\n    load_assignment:\n      cluster_name: up{p}\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {p}}}}}}}\n",
                p = u.addr.port()
            )
        })
        .collect();
    let yaml = format!(
        "admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}\nstatic_resources:\n  listeners:\n  - name: front\n    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\n    listener_filters: [{{name: envoy.filters.listener.tls_inspector}}]\n    filter_chains:\n{chains}  - name: strict\n    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\n    listener_filters: [{{name: envoy.filters.listener.tls_inspector}}]\n    listener_filters_timeout: 0.3s\n    filter_chains:\n{}  clusters:\n{clusters}",
        chain("{server_names: [a.test]}", &ups[0], Some(cert_for(&issuer, &["a.test"])))
    );
    let server = start(&yaml, opts(1));
    let front = server.listener_addr("front").unwrap();
    assert_eq!(tls_client(&ca_pem, "a.test", front).unwrap(), tags[0]);
    assert_eq!(tls_client(&ca_pem, "x.b.test", front).unwrap(), tags[1]);
    assert_eq!(tls_client(&ca_pem, "other.test", front).unwrap(), tags[2]);
    // Plaintext beside TLS on the same port.
    let mut plain = connect(front);
    plain.write_all(b"hi").unwrap();
    let mut tag = [0u8; 1];
    std::io::Read::read_exact(&mut plain, &mut tag).unwrap();
    assert_eq!(&tag[..], tags[3]);
    drop(plain);
    assert_eq!(stat(&server, "listener.127.0.0.1_0.ssl.handshake"), 3);

    // No chain for this name: closed and counted.
    let strict = server.listener_addr("strict").unwrap();
    assert!(tls_client(&ca_pem, "z.test", strict).is_err());
    wait_until("no match counted", || stat(&server, "listener.127.0.0.1_0.no_filter_chain_match") == 1);
    // A client that sends nothing is let go after listener_filters_timeout.
    let mut idle = connect(strict);
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut idle, &mut buf).unwrap_or(0), 0);
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
    stop(server);
}

/// The peer certificate a fresh TLS connection to `addr` is shown, and the
/// connection (kept open by the caller when it wants to).
fn handshake(ca_pem: &str, addr: std::net::SocketAddr) -> (Vec<u8>, TlsClient) {
    let mut tls = tls_connect(ca_pem, "front.test", addr, &[]).unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: front.test\r\n\r\n").unwrap();
    let (status, _, _) = read_response(&mut tls);
    assert_eq!(status, 200);
    let cert = tls.conn.peer_certificates().unwrap()[0].to_vec();
    (cert, tls)
}

#[test]
fn renewed_certificates_are_picked_up_and_bad_ones_refused() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let dir = std::env::temp_dir().join(format!("ringway-rotate-{}-{}", std::process::id(), line!()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    // Replaces the files the way a renewal tool does: new file, then rename.
    let install = |cert: &str, key: &str| {
        for (path, data) in [(&key_path, key), (&cert_path, cert)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, data).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    };
    let (cert1, key1) = cert_for(&issuer, &["front.test"]);
    install(&cert1, &key1);
    let routes = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/\"}\n                direct_response: {status: 200, body: {inline_string: ok}}\n";
    let tls = format!(
        "      transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n          common_tls_context:\n            tls_certificates:\n            - certificate_chain: {{filename: \"{}\"}}\n              private_key: {{filename: \"{}\"}}\n",
        cert_path.display(),
        key_path.display()
    );
    let yaml =
        http_yaml(&[("app", closed_port())], routes, "").replace("  clusters:\n", &format!("{tls}  clusters:\n"));
    let server = start(&yaml, opts(1));
    let addr = server.listener_addr("web").unwrap();
    let der = |pem: &str| ringway::tls::parse_certs(pem.as_bytes()).unwrap()[0].to_vec();
    let (seen, mut before) = handshake(&ca_pem, addr);
    assert_eq!(seen, der(&cert1));

    // Renewed: new handshakes get the new certificate, the open connection
    // goes on.
    let (cert2, key2) = cert_for(&issuer, &["front.test"]);
    install(&cert2, &key2);
    wait_until("the renewed certificate", || handshake(&ca_pem, addr).0 == der(&cert2));
    assert!(stat(&server, "server.tls_certificate_reload_success") >= 1);
    before.write_all(b"GET / HTTP/1.1\r\nHost: front.test\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut before).0, 200);

    // A certificate without its key: refused, the last good pair stays.
    let (cert3, _) = cert_for(&issuer, &["front.test"]);
    install(&cert3, &key2);
    wait_until("the bad pair refused", || stat(&server, "server.tls_certificate_reload_failure") >= 1);
    assert_eq!(handshake(&ca_pem, addr).0, der(&cert2));

    // /certs lists what is served, with days to expiry.
    let (status, body) = admin_get(server.admin_addr().unwrap(), "/certs");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let chain = &v["certificates"][0]["cert_chain"][0];
    assert_eq!(chain["path"], cert_path.display().to_string());
    assert_eq!(chain["subject_alt_names"][0], "front.test");
    assert!(chain["days_until_expiration"].as_str().unwrap().parse::<u64>().unwrap() > 300, "{chain}");
    assert!(stat(&server, "server.days_until_first_cert_expiring") > 300);
    drop(before);
    stop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn chains_that_claim_the_same_connections_are_refused() {
    let chain = |m: &str| {
        format!(
            "    - filter_chain_match: {m}\n      filters:\n      - name: envoy.filters.network.tcp_proxy\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          stat_prefix: t\n          cluster: c\n"
        )
    };
    let yaml = |a: &str, b: &str| {
        format!(
            "static_resources:\n  listeners:\n  - address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\n    listener_filters: [{{name: envoy.filters.listener.tls_inspector}}]\n    filter_chains:\n{}{}  clusters:\n  - name: c\n    load_assignment:\n      cluster_name: c\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 1}}}}}}\n",
            chain(a),
            chain(b)
        )
    };
    let want = "static_resources.listeners[0].filter_chains[1].filter_chain_match: matches the same connections as filter_chains[0]";
    for (a, b) in [
        ("{server_names: [a.test, b.test]}", "{server_names: [b.test]}"),
        ("{application_protocols: [h2, http/1.1]}", "{application_protocols: [http/1.1, h2]}"),
        ("{}", "{}"),
    ] {
        let e = ringway::config::check_str(&yaml(a, b), 1).expect_err(a).to_string();
        assert!(e.starts_with(want), "{a} / {b}: {e}");
    }
    // Different names, or a different transport: fine.
    for (a, b) in [
        ("{server_names: [a.test]}", "{server_names: [b.test]}"),
        ("{transport_protocol: tls}", "{transport_protocol: raw_buffer}"),
    ] {
        ringway::config::check_str(&yaml(a, b), 1).unwrap();
    }
}

#[test]
fn tcp_proxy_tries_another_host_when_a_tls_handshake_fails() {
    let pki = pki();
    let echo = Upstream::echo();
    // B: TLS in, plain echo out.
    let tls_in = tls_server_block(&pki.server_cert, &pki.server_key, "");
    let mut b_config = TcpConfig::to(&[echo.addr]);
    b_config.extra_proxy = tls_in;
    let b = start(&b_config.yaml(), opts(1));
    let good = b.listener_addr("proxy").unwrap();
    // A: plain in, TLS out to [a plain echo that cannot do TLS, B].
    let bad = Upstream::echo();
    let mut a_config = TcpConfig::to(&[bad.addr, good]);
    a_config.extra_proxy = "          max_connect_attempts: 2".to_string();
    let a_yaml = a_config
        .yaml()
        .replace("    connect_timeout: 1s\n", &tls_client_block("    connect_timeout: 1s\n", &pki.ca_pem));
    let a = start(&a_yaml, opts(1));
    for i in 0..4u8 {
        let mut s = connect(a.listener_addr("proxy").unwrap());
        assert_eq!(round_trip(&mut s, &[b'x', i]), [b'x', i]);
    }
    // Every connection got through; the ones that met the plain host first
    // counted a failed connect (and a TLS failure) on the way.
    assert!(stat(&a, "cluster.backend.upstream_cx_connect_fail") >= 1);
    assert_eq!(stat(&a, "cluster.backend.upstream_cx_connect_fail"), stat(&a, "cluster.backend.ssl.connection_error"));
    assert_eq!(stat(&a, "cluster.backend.ssl.handshake"), 4);
    stop(a);
    stop(b);
}

/// A cluster's `connect_timeout` bounds the TCP connect and the TLS handshake
/// together (Envoy's rule): an upstream that takes the connection and never
/// answers the ClientHello (a listener that never accepts) is given up on
/// when `connect_timeout` runs out, and counts as a connect timeout, under
/// tcp_proxy (the client is closed) and under the HTTP router (503).
#[test]
fn connect_timeout_bounds_the_upstream_handshake() {
    let pki = pki();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();

    let tcp_yaml = TcpConfig::to(&[silent_addr])
        .yaml()
        .replace("    connect_timeout: 1s\n", &tls_client_block("    connect_timeout: 0.4s\n", &pki.ca_pem));
    let tcp = start(&tcp_yaml, opts(1));
    let started = std::time::Instant::now();
    let mut s = connect(tcp.listener_addr("proxy").unwrap());
    let _ = s.write_all(b"hello");
    assert!(closed_by_peer(&mut s));
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(350) && took < std::time::Duration::from_secs(3), "{took:?}");
    wait_until("tcp_proxy's failure", || stat(&tcp, "cluster.backend.upstream_cx_connect_fail") == 1);
    assert_eq!(stat(&tcp, "cluster.backend.upstream_cx_connect_timeout"), 1);
    assert_eq!(stat(&tcp, "cluster.backend.ssl.connection_error"), 1);
    stop(tcp);

    let routes = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/\"}\n                route: {cluster: secure}\n";
    let http_yaml = http_yaml(&[("secure", silent_addr)], routes, "")
        .replace("    connect_timeout: 0.5s\n", &tls_client_block("    connect_timeout: 0.4s\n", &pki.ca_pem));
    let http = start(&http_yaml, opts(1));
    let started = std::time::Instant::now();
    let mut s = connect(http.listener_addr("web").unwrap());
    let (status, head, _) = exchange(&mut s, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let took = started.elapsed();
    assert_eq!(status, 503, "{head}");
    assert!(took >= std::time::Duration::from_millis(350) && took < std::time::Duration::from_secs(3), "{took:?}");
    assert_eq!(stat(&http, "cluster.secure.upstream_cx_connect_timeout"), 1);
    assert_eq!(stat(&http, "cluster.secure.upstream_cx_connect_fail"), 1);
    assert_eq!(stat(&http, "cluster.secure.ssl.connection_error"), 1);
    stop(http);
    drop(silent);
}

/// Sends a WebSocket upgrade with `early` bytes after the head; reads until
/// the upstream's 101 and its greeting and echo (`hi` + `early`).
fn upgrade(s: &mut (impl Read + Write), early: &[u8]) -> String {
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
    s.write_all(early).unwrap();
    let want = [&b"hi"[..], early].concat();
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    while !got.ends_with(&want) {
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&tmp[..n]);
    }
    String::from_utf8_lossy(&got).to_string()
}

/// WebSocket over TLS: B terminates TLS and tunnels to a plain upstream; A
/// takes plain WebSocket in and carries it over TLS to B. Both tunnels move
/// bytes both ways at once.
#[test]
fn websocket_upgrades_tunnel_over_tls() {
    let pki = pki();
    let ws = upgrading_upstream();
    let hcm = "          upgrade_configs: [{upgrade_type: websocket}]";
    let b = start(&https_listener_yaml_with(ws, &pki, hcm), opts(1));
    let b_addr = b.listener_addr("web").unwrap();

    let mut tls = tls_connect(&pki.ca_pem, "front.test", b_addr, &[b"http/1.1"]).unwrap();
    let text = upgrade(&mut tls, b"early");
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    for msg in [&b"frame one"[..], &[0u8, 255, 13, 10, 13, 10][..]] {
        assert_eq!(round_trip(&mut tls, msg), msg);
    }
    assert_eq!(stat(&b, "http.ingress.downstream_cx_upgrades_total"), 1);

    let a_yaml = http_yaml(&[("app", b_addr)], ALL_TO_APP, hcm)
        .replace("    connect_timeout: 0.5s\n", &tls_client_block("    connect_timeout: 0.5s\n", &pki.ca_pem));
    let a = start(&a_yaml, opts(1));
    let mut s = connect(a.listener_addr("web").unwrap());
    let text = upgrade(&mut s, b"through a");
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    // 4 MiB each way at once: written by one thread while read by this one.
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut writer = s.try_clone().unwrap();
    let sent = data.clone();
    let feeder = std::thread::spawn(move || writer.write_all(&sent).unwrap());
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).unwrap();
    feeder.join().unwrap();
    assert!(back == data, "the echo through both tunnels differs");
    assert_eq!(stat(&a, "http.ingress.downstream_cx_upgrades_total"), 1);
    assert_eq!(stat(&a, "cluster.app.ssl.handshake"), 1);
    assert_eq!(stat(&b, "http.ingress.downstream_cx_upgrades_total"), 2);

    // Closing the client ends both tunnels.
    drop(s);
    drop(tls);
    wait_until("A's tunnel closed", || stat(&a, "http.ingress.downstream_cx_upgrades_active") == 0);
    wait_until("B's tunnels closed", || stat(&b, "http.ingress.downstream_cx_upgrades_active") == 0);
    stop(a);
    stop(b);
}

#[test]
fn an_https_connection_ringway_closes_ends_with_close_notify() {
    let pki = pki();
    let app = HttpUpstream::start();
    let server = start(&https_listener_yaml(app.addr, &pki), opts(1));
    let addr = server.listener_addr("web").unwrap();
    let mut tls = tls_connect(&pki.ca_pem, "front.test", addr, &[b"http/1.1"]).unwrap();
    tls.write_all(b"GET /x HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n").unwrap();
    let (status, _, _) = read_response(&mut tls);
    assert_eq!(status, 200);
    // rustls reports a close without close_notify as UnexpectedEof.
    let mut rest = Vec::new();
    let end = tls.read_to_end(&mut rest);
    assert!(matches!(end, Ok(0)), "{end:?}");
    stop(server);
}
