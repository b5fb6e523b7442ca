//! TLS under tcp_proxy end to end: certificates made here with rcgen, a
//! ringway in this process terminating and originating TLS, rustls clients
//! in the test, and config validation of `transport_socket` / `tls_context`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test should fail loudly")]

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use ringway::runtime::Server;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{Value, json};

// ---- certificates ----------------------------------------------------------

/// A certificate authority made for one test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

/// A certificate and its key, issued by a `Ca`.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { pem: cert.pem(), der: cert.der().clone(), issuer: Issuer::new(params, key) }
    }

    /// A leaf for `sans`, for `usage`, adjusted by `tweak` (validity...).
    fn issue(
        &self,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "ringway test leaf");
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        tweak(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    fn server(&self, dns: &str) -> Leaf {
        self.issue(vec![dns_san(dns)], ExtendedKeyUsagePurpose::ServerAuth, |_| {})
    }

    fn client(&self, uri: &str) -> Leaf {
        self.issue(vec![uri_san(uri)], ExtendedKeyUsagePurpose::ClientAuth, |_| {})
    }
}

fn dns_san(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

fn uri_san(uri: &str) -> SanType {
    SanType::URI(uri.try_into().unwrap())
}

impl Leaf {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// A `TlsCertificate` with both halves inline.
    fn inline(&self) -> Value {
        json!({
            "certificate_chain": {"inline_string": self.cert_pem},
            "private_key": {"inline_string": self.key_pem},
        })
    }

    /// A `TlsCertificate` naming files written into `dir`.
    fn files(&self, dir: &TempDir, name: &str) -> Value {
        json!({
            "certificate_chain": {"filename": dir.write(&format!("{name}.crt"), &self.cert_pem)},
            "private_key": {"filename": dir.write(&format!("{name}.key"), &self.key_pem)},
        })
    }
}

/// The usual cast: one CA, the server `server.test`, the client
/// `spiffe://test/client`.
struct Pki {
    ca: Ca,
    server: Leaf,
    client: Leaf,
}

impl Pki {
    fn new() -> Pki {
        let ca = Ca::new("ringway test CA");
        let server = ca.server("server.test");
        let client = ca.client("spiffe://test/client");
        Pki { ca, server, client }
    }
}

/// A directory under the system temp dir, removed with its files on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ringway-tls-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `contents` to `name` and returns the full path.
    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- config ----------------------------------------------------------------

const DOWNSTREAM: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const TCP_PROXY: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

/// A tcp_proxy listener on 127.0.0.1:`port` to `cluster`; `chain` is merged
/// into its filter chain (transport_socket, timeouts).
fn tcp_listener(name: &str, port: u16, cluster: &str, chain: Value) -> Value {
    let mut fc = json!({"filters": [{
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {"@type": TCP_PROXY, "stat_prefix": name, "cluster": cluster},
    }]});
    merge(&mut fc, chain);
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [fc],
    })
}

/// A STATIC cluster of one endpoint; `extra` is merged in (transport_socket).
fn cluster(name: &str, addr: SocketAddr, extra: Value) -> Value {
    let mut c = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()},
        }}}]}]},
    });
    merge(&mut c, extra);
    c
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

/// The bootstrap, as JSON (which is YAML).
fn bootstrap(listeners: Vec<Value>, clusters: Vec<Value>) -> String {
    json!({"static_resources": {"listeners": listeners, "clusters": clusters}}).to_string()
}

fn tls_socket(context: Value) -> Value {
    json!({"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": context}})
}

/// A `DownstreamTlsContext` presenting `cert`; `common` is merged into its
/// common_tls_context (validation_context, tls_params, alpn_protocols).
fn server_context(cert: Value, common: Value, require_client_certificate: bool) -> Value {
    let mut c = json!({"tls_certificates": [cert]});
    merge(&mut c, common);
    json!({"@type": DOWNSTREAM, "common_tls_context": c, "require_client_certificate": require_client_certificate})
}

/// An `UpstreamTlsContext` with `common` as its common_tls_context.
fn client_context(sni: &str, common: Value) -> Value {
    json!({"@type": UPSTREAM, "sni": sni, "common_tls_context": common})
}

fn validation(trusted_ca: Value, sans: Vec<Value>) -> Value {
    json!({"validation_context": {"trusted_ca": trusted_ca, "match_typed_subject_alt_names": sans}})
}

fn san(kind: &str, exact: &str) -> Value {
    json!({"san_type": kind, "matcher": {"exact": exact}})
}

fn inline(pem: &str) -> Value {
    json!({"inline_string": pem})
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `listener.<addr>.ssl.<stat>` for a listener configured on `port`.
fn listener_ssl(server: &Server, port: u16, name: &str) -> i128 {
    stat(server, &format!("listener.127.0.0.1_{port}.ssl.{name}"))
}

const FAILURES: [&str; 4] = ["connection_error", "fail_verify_no_cert", "fail_verify_error", "fail_verify_san"];

/// All failed handshakes under `scope` (`listener.<addr>` or `cluster.<name>`).
fn ssl_failures(server: &Server, scope: &str) -> i128 {
    FAILURES.iter().map(|f| stat(server, &format!("{scope}.ssl.{f}"))).sum()
}

// ---- a rustls client in the test -------------------------------------------

type TlsClient = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

const BOTH: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

fn client_config(
    ca: &Ca,
    cert: Option<&Leaf>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&str],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert {
        Some(leaf) => builder.with_client_auth_cert(vec![leaf.cert_der.clone()], leaf.key()).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// Connects and completes the handshake, verifying the server as
/// `server.test`.
fn tls_connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> io::Result<TlsClient> {
    let sock = connect(addr);
    let conn = rustls::ClientConnection::new(config, ServerName::try_from("server.test").unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

fn tls_round_trip(s: &mut TlsClient, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).unwrap();
    s.flush().unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    back
}

/// Connects as `config` and expects the server to refuse: during the
/// handshake (TLS 1.2), or right after the client's Finished (TLS 1.3, where
/// the server judges the client certificate after the client is done).
/// Returns the client's error, which names the server's alert.
fn expect_refused(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> String {
    let mut s = match tls_connect(addr, config) {
        Err(e) => return e.to_string(),
        Ok(s) => s,
    };
    // Either may fail: the server may already have closed.
    let _ = s.write_all(b"let me in");
    let _ = s.flush();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Err(e) => e.to_string(),
        Ok(0) => "closed without an alert".to_string(),
        Ok(n) => panic!("a refused client read {:?}", String::from_utf8_lossy(&buf[..n])),
    }
}

// ---- 1. the double proxy -----------------------------------------------------

/// One ringway as both ends of a mutual-TLS tunnel: listener `plain` takes
/// cleartext to cluster `tunnel`, which reaches listener `terminate` on
/// `b_port` with the client certificate; `terminate` requires it (SAN
/// `spiffe://test/client`) and relays to `upstream` (cluster `echo`).
/// `server_cert` and `client_cert` are `TlsCertificate`s, `ca` a
/// `DataSource`.
fn tunnel_config(server_cert: Value, client_cert: Value, ca: Value, upstream: SocketAddr, b_port: u16) -> String {
    let terminate = server_context(server_cert, validation(ca.clone(), vec![san("URI", "spiffe://test/client")]), true);
    let mut originate = json!({"tls_certificates": [client_cert]});
    merge(&mut originate, validation(ca, vec![san("DNS", "server.test")]));
    bootstrap(
        vec![
            tcp_listener("plain", 0, "tunnel", json!({})),
            tcp_listener("terminate", b_port, "echo", tls_socket(terminate)),
        ],
        vec![
            cluster("tunnel", loopback(b_port), tls_socket(client_context("server.test", originate))),
            cluster("echo", upstream, json!({})),
        ],
    )
}

fn inline_tunnel(pki: &Pki, upstream: SocketAddr, b_port: u16) -> String {
    tunnel_config(pki.server.inline(), pki.client.inline(), inline(&pki.ca.pem), upstream, b_port)
}

/// The tunnel carries 16 MiB each way intact, with certificates read from
/// files, and counts one handshake at each end.
#[test]
fn double_proxy_carries_sixteen_mib_each_way_over_mutual_tls() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let echo = Upstream::echo();
    let b_port = closed_port().port();
    let yaml = tunnel_config(
        pki.server.files(&dir, "server"),
        pki.client.files(&dir, "client"),
        json!({"filename": dir.write("ca.pem", &pki.ca.pem)}),
        echo.addr,
        b_port,
    );
    let server = start(&yaml, opts(2));
    let addr = server.listener_addr("plain").unwrap();
    assert_eq!(server.listener_addr("terminate").unwrap(), loopback(b_port));

    let data = random_bytes(16 << 20, 11);
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
    assert_eq!(back.len(), 16 << 20);
    assert_eq!(checksum(&back), sent_sum);

    wait_until("teardown", || {
        stat(&server, "cluster.tunnel.upstream_cx_active") == 0 && stat(&server, "cluster.echo.upstream_cx_active") == 0
    });
    assert_eq!(listener_ssl(&server, b_port, "handshake"), 1);
    assert_eq!(stat(&server, "cluster.tunnel.ssl.handshake"), 1);
    assert_eq!(ssl_failures(&server, &format!("listener.127.0.0.1_{b_port}")), 0);
    assert_eq!(ssl_failures(&server, "cluster.tunnel"), 0);
    // Bytes are counted in cleartext on both hops.
    for c in ["tunnel", "echo"] {
        assert_eq!(stat(&server, &format!("cluster.{c}.upstream_cx_tx_bytes_total")), 16 << 20, "{c}");
        assert_eq!(stat(&server, &format!("cluster.{c}.upstream_cx_rx_bytes_total")), 16 << 20, "{c}");
    }
    assert_eq!(stat(&server, "tcp.terminate.downstream_cx_total"), 1);
    assert_eq!(echo.accepted.load(Ordering::Acquire), 1);
    stop(server);
    drop(dir);
}

/// Half-closes cross the tunnel both ways. Client first: the upstream reads
/// to EOF, then answers. Upstream first: it sends a greeting and its FIN,
/// and the client's data sent after that still arrives.
#[test]
fn double_proxy_passes_half_closes_both_ways() {
    let pki = Pki::new();

    // The client closes first.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listener.local_addr().unwrap();
    let answerer = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        c.write_all(format!("got {} bytes after your FIN", got.len()).as_bytes()).unwrap();
    });
    let server = start(&inline_tunnel(&pki, up, closed_port().port()), opts(1));
    let mut s = connect(server.listener_addr("plain").unwrap());
    s.write_all(&random_bytes(100_000, 3)).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "got 100000 bytes after your FIN");
    answerer.join().unwrap();
    stop(server);

    // The upstream closes first.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        c.write_all(b"hello, and goodbye").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        got
    });
    let server = start(&inline_tunnel(&pki, up, closed_port().port()), opts(1));
    let mut s = connect(server.listener_addr("plain").unwrap());
    let mut greeting = Vec::new();
    s.read_to_end(&mut greeting).unwrap();
    assert_eq!(greeting, b"hello, and goodbye");
    let late = random_bytes(100_000, 5);
    s.write_all(&late).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let got = reader.join().unwrap();
    assert_eq!(got.len(), late.len());
    assert_eq!(checksum(&got), checksum(&late));
    wait_until("teardown", || stat(&server, "cluster.tunnel.upstream_cx_active") == 0);
    stop(server);
}

// ---- 2. rejections -----------------------------------------------------------

/// A listener requiring a client certificate from `pki.ca` with the SAN
/// `spiffe://test/client`, relaying to an echo server.
fn mtls_server(pki: &Pki, echo: &Upstream) -> Server {
    let ctx = server_context(
        pki.server.inline(),
        validation(inline(&pki.ca.pem), vec![san("URI", "spiffe://test/client")]),
        true,
    );
    let yaml =
        bootstrap(vec![tcp_listener("mtls", 0, "echo", tls_socket(ctx))], vec![cluster("echo", echo.addr, json!({}))]);
    start(&yaml, opts(1))
}

/// The ways a client certificate is refused: the client config, the alert
/// the client should see, and the counter Envoy would bump.
fn bad_clients(pki: &Pki) -> Vec<(&'static str, Arc<rustls::ClientConfig>, &'static str, &'static str)> {
    let stranger = Ca::new("another CA").client("spiffe://test/client");
    let expired = pki.ca.issue(vec![uri_san("spiffe://test/client")], ExtendedKeyUsagePurpose::ClientAuth, |p| {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    let impostor = pki.ca.client("spiffe://test/impostor");
    vec![
        (
            "no client certificate",
            client_config(&pki.ca, None, BOTH, &[]),
            "CertificateRequired",
            "fail_verify_no_cert",
        ),
        ("another CA", client_config(&pki.ca, Some(&stranger), BOTH, &[]), "UnknownCA", "fail_verify_error"),
        ("expired", client_config(&pki.ca, Some(&expired), BOTH, &[]), "CertificateExpired", "fail_verify_error"),
        ("SAN mismatch", client_config(&pki.ca, Some(&impostor), BOTH, &[]), "AccessDenied", "fail_verify_san"),
    ]
}

/// Each bad client certificate is refused with the right alert and counted
/// by reason as Envoy does (no certificate: `ssl.fail_verify_no_cert`; an
/// untrusted or expired one: `ssl.fail_verify_error`; a SAN mismatch:
/// `ssl.fail_verify_san`); nothing reaches the upstream; the good client
/// still gets through.
#[test]
fn bad_client_certificates_are_refused_and_counted_by_reason() {
    let pki = Pki::new();
    let echo = Upstream::echo();
    let server = mtls_server(&pki, &echo);
    let addr = server.listener_addr("mtls").unwrap();
    let count = |name: &str| listener_ssl(&server, 0, name);
    let mut want = std::collections::HashMap::new();
    for (what, config, alert, counter) in bad_clients(&pki) {
        let error = expect_refused(addr, config);
        assert!(error.contains(alert), "{what}: expected alert {alert}, got: {error}");
        *want.entry(counter).or_insert(0i128) += 1;
        let expected = |f: &str| want.get(f).copied().unwrap_or(0);
        wait_until(what, || ssl_failures(&server, "listener.127.0.0.1_0") == want.values().sum::<i128>());
        for f in FAILURES {
            assert_eq!(count(f), expected(f), "{what}: ssl.{f}");
        }
    }
    assert_eq!(count("handshake"), 0);
    assert_eq!(echo.accepted.load(Ordering::Acquire), 0);
    wait_until("the refused connections closed", || stat(&server, "listener.127.0.0.1_0.downstream_cx_active") == 0);

    let mut good = tls_connect(addr, client_config(&pki.ca, Some(&pki.client), BOTH, &[])).unwrap();
    assert_eq!(tls_round_trip(&mut good, b"hello"), b"hello");
    assert_eq!(count("handshake"), 1);
    drop(good);
    stop(server);
}

/// With a validation context but `require_client_certificate: false`, a
/// client without a certificate gets in, and one presenting a bad
/// certificate is still refused and counted (as in Envoy).
#[test]
fn optional_client_certificates_are_still_checked_when_presented() {
    let pki = Pki::new();
    let echo = Upstream::echo();
    let ctx = server_context(
        pki.server.inline(),
        validation(inline(&pki.ca.pem), vec![san("URI", "spiffe://test/client")]),
        false,
    );
    let yaml = bootstrap(
        vec![tcp_listener("optional", 0, "echo", tls_socket(ctx))],
        vec![cluster("echo", echo.addr, json!({}))],
    );
    let server = start(&yaml, opts(1));
    let addr = server.listener_addr("optional").unwrap();
    for (what, cert) in [("no certificate", None), ("the good certificate", Some(&pki.client))] {
        let mut s = tls_connect(addr, client_config(&pki.ca, cert, BOTH, &[])).unwrap();
        assert_eq!(tls_round_trip(&mut s, b"hello"), b"hello", "{what}");
    }
    assert_eq!(listener_ssl(&server, 0, "handshake"), 2);
    let mut want = std::collections::HashMap::new();
    for (what, config, alert, counter) in bad_clients(&pki).into_iter().filter(|c| c.0 != "no client certificate") {
        let error = expect_refused(addr, config);
        assert!(error.contains(alert), "{what}: expected alert {alert}, got: {error}");
        *want.entry(counter).or_insert(0i128) += 1;
        wait_until(what, || ssl_failures(&server, "listener.127.0.0.1_0") == want.values().sum::<i128>());
        assert_eq!(listener_ssl(&server, 0, counter), want[counter], "{what}");
    }
    assert_eq!(listener_ssl(&server, 0, "handshake"), 2);
    stop(server);
}

/// ringway as the client of its own mTLS listener `terminate`, through a
/// cluster `bad` (merged with `tls`) whose certificate the listener refuses.
fn refused_upstream(pki: &Pki, echo: &Upstream, b_port: u16, bad: Value) -> Server {
    let terminate = server_context(
        pki.server.inline(),
        validation(inline(&pki.ca.pem), vec![san("URI", "spiffe://test/client")]),
        true,
    );
    let mut common = validation(inline(&pki.ca.pem), vec![]);
    merge(&mut common, bad);
    let yaml = bootstrap(
        vec![
            tcp_listener("plain", 0, "bad", json!({})),
            tcp_listener("terminate", b_port, "echo", tls_socket(terminate)),
        ],
        vec![
            cluster("bad", loopback(b_port), tls_socket(client_context("server.test", common))),
            cluster("echo", echo.addr, json!({})),
        ],
    );
    start(&yaml, opts(1))
}

/// With TLS 1.2 the listener refuses a cluster without a client certificate
/// inside the handshake: the cluster counts a connection error (the alert)
/// and no handshake, the listener `ssl.fail_verify_no_cert`, and the
/// cleartext client is closed.
#[test]
fn ringway_upstream_without_a_client_certificate_is_refused_over_tls12() {
    let pki = Pki::new();
    let echo = Upstream::echo();
    let b_port = closed_port().port();
    let tls12 = json!({"tls_params": {"tls_maximum_protocol_version": "TLSv1_2"}});
    let server = refused_upstream(&pki, &echo, b_port, tls12);
    let mut s = connect(server.listener_addr("plain").unwrap());
    let _ = s.write_all(b"hello");
    assert!(closed_by_peer(&mut s));
    wait_until("the cluster's failure", || ssl_failures(&server, "cluster.bad") == 1);
    assert_eq!(stat(&server, "cluster.bad.ssl.connection_error"), 1);
    assert_eq!(stat(&server, "cluster.bad.ssl.handshake"), 0);
    wait_until("the listener's failure", || ssl_failures(&server, &format!("listener.127.0.0.1_{b_port}")) == 1);
    assert_eq!(listener_ssl(&server, b_port, "fail_verify_no_cert"), 1);
    assert_eq!(listener_ssl(&server, b_port, "handshake"), 0);
    assert_eq!(echo.accepted.load(Ordering::Acquire), 0);
    stop(server);
}

/// With TLS 1.3 the server judges the client certificate after the client
/// has finished, so the cluster counts a handshake; the listener refuses
/// the SAN (`ssl.fail_verify_san`) and the cleartext client is closed.
#[test]
fn ringway_upstream_with_the_wrong_client_san_is_refused_over_tls13() {
    let pki = Pki::new();
    let echo = Upstream::echo();
    let b_port = closed_port().port();
    let impostor = pki.ca.client("spiffe://test/impostor");
    let server = refused_upstream(&pki, &echo, b_port, json!({"tls_certificates": [impostor.inline()]}));
    let mut s = connect(server.listener_addr("plain").unwrap());
    let _ = s.write_all(b"hello");
    assert!(closed_by_peer(&mut s));
    wait_until("the listener's failure", || ssl_failures(&server, &format!("listener.127.0.0.1_{b_port}")) == 1);
    assert_eq!(listener_ssl(&server, b_port, "fail_verify_san"), 1);
    assert_eq!(listener_ssl(&server, b_port, "handshake"), 0);
    wait_until("teardown", || stat(&server, "cluster.bad.upstream_cx_active") == 0);
    assert_eq!(stat(&server, "cluster.bad.ssl.handshake"), 1);
    assert_eq!(ssl_failures(&server, "cluster.bad"), 0);
    assert_eq!(echo.accepted.load(Ordering::Acquire), 0);
    stop(server);
}

/// A config with a TLS listener on `b_port` presenting `cert`, and a plain
/// listener whose cluster `picky` reaches it over TLS trusting `pki.ca`,
/// with `sni` and the SAN matchers `sans`.
fn picky_upstream(pki: &Pki, cert: &Leaf, echo: &Upstream, b_port: u16, sni: &str, sans: Vec<Value>) -> Server {
    let terminate = server_context(cert.inline(), json!({}), false);
    let yaml = bootstrap(
        vec![
            tcp_listener("plain", 0, "picky", json!({})),
            tcp_listener("terminate", b_port, "echo", tls_socket(terminate)),
        ],
        vec![
            cluster("picky", loopback(b_port), tls_socket(client_context(sni, validation(inline(&pki.ca.pem), sans)))),
            cluster("echo", echo.addr, json!({})),
        ],
    );
    start(&yaml, opts(1))
}

/// A cluster refuses a server certificate that its SAN matchers (or, with
/// none, its SNI) reject, as `ssl.fail_verify_san`, and one from another CA
/// or expired, as `ssl.fail_verify_error`: the cleartext client is closed,
/// nothing reaches the echo server, the listener counts the client's alert
/// as a connection error, and no connection is left counted active.
#[test]
fn upstream_refuses_a_bad_server_certificate_and_counts_the_reason() {
    let pki = Pki::new();
    let stranger = Ca::new("another CA").server("server.test");
    let expired = pki.ca.issue(vec![dns_san("server.test")], ExtendedKeyUsagePurpose::ServerAuth, |p| {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    let cases = [
        ("SAN mismatch", &pki.server, "server.test", vec![san("DNS", "other.test")], "fail_verify_san"),
        ("SNI mismatch", &pki.server, "other.test", vec![], "fail_verify_san"),
        ("another CA", &stranger, "server.test", vec![san("DNS", "server.test")], "fail_verify_error"),
        ("expired", &expired, "server.test", vec![san("DNS", "server.test")], "fail_verify_error"),
    ];
    for (what, cert, sni, sans, counter) in cases {
        let echo = Upstream::echo();
        let b_port = closed_port().port();
        let server = picky_upstream(&pki, cert, &echo, b_port, sni, sans);
        let mut s = connect(server.listener_addr("plain").unwrap());
        let _ = s.write_all(b"hello");
        assert!(closed_by_peer(&mut s), "{what}");
        wait_until(what, || ssl_failures(&server, "cluster.picky") == 1);
        assert_eq!(stat(&server, &format!("cluster.picky.ssl.{counter}")), 1, "{what}");
        assert_eq!(stat(&server, "cluster.picky.ssl.handshake"), 0, "{what}");
        wait_until(what, || ssl_failures(&server, &format!("listener.127.0.0.1_{b_port}")) == 1);
        assert_eq!(listener_ssl(&server, b_port, "connection_error"), 1, "{what}");
        assert_eq!(listener_ssl(&server, b_port, "handshake"), 0, "{what}");
        wait_until("teardown", || {
            stat(&server, "cluster.picky.upstream_cx_active") == 0
                && stat(&server, "listener.127.0.0.1_0.downstream_cx_active") == 0
                && stat(&server, &format!("listener.127.0.0.1_{b_port}.downstream_cx_active")) == 0
        });
        assert_eq!(echo.accepted.load(Ordering::Acquire), 0, "{what}");
        stop(server);
    }
}

/// What a cluster accepts: the SAN it asks for; a wildcard SAN covering the
/// name an exact DNS matcher asks for; with no matchers, the SNI; with
/// neither, any certificate from the trusted CA (Envoy's rule).
#[test]
fn upstream_accepts_a_matching_server_certificate() {
    let pki = Pki::new();
    let wildcard = pki.ca.server("*.test");
    let cases = [
        ("SAN", &pki.server, "server.test", vec![san("DNS", "server.test")]),
        ("wildcard SAN", &wildcard, "server.test", vec![san("DNS", "server.test")]),
        ("SNI", &pki.server, "server.test", vec![]),
        ("the CA alone", &pki.server, "", vec![]),
    ];
    for (what, cert, sni, sans) in cases {
        let echo = Upstream::echo();
        let server = picky_upstream(&pki, cert, &echo, closed_port().port(), sni, sans);
        let mut s = connect(server.listener_addr("plain").unwrap());
        assert_eq!(round_trip(&mut s, b"hello"), b"hello", "{what}");
        assert_eq!(stat(&server, "cluster.picky.ssl.handshake"), 1, "{what}");
        assert_eq!(ssl_failures(&server, "cluster.picky"), 0, "{what}");
        drop(s);
        stop(server);
    }
}

// ---- 3. what is not a TLS handshake ------------------------------------------

fn quick_server(pki: &Pki, echo: &Upstream) -> Server {
    let mut chain = tls_socket(server_context(pki.server.inline(), json!({}), false));
    merge(&mut chain, json!({"transport_socket_connect_timeout": "0.3s"}));
    let yaml = bootstrap(vec![tcp_listener("quick", 0, "echo", chain)], vec![cluster("echo", echo.addr, json!({}))]);
    start(&yaml, opts(1))
}

/// With `transport_socket_connect_timeout: 0.3s`: a client that says nothing,
/// or trickles its ClientHello, is closed after about 0.3 s; one that sends
/// cleartext or a mangled ClientHello is answered with an alert and closed
/// at once; each is counted in `ssl.connection_error`. A good connection
/// made before them keeps working past the timeout.
#[test]
fn silent_and_garbage_clients_are_closed_and_counted() {
    let pki = Pki::new();
    let echo = Upstream::echo();
    let server = quick_server(&pki, &echo);
    let addr = server.listener_addr("quick").unwrap();
    let error = || listener_ssl(&server, 0, "connection_error");

    let mut good = tls_connect(addr, client_config(&pki.ca, None, BOTH, &[])).unwrap();
    assert_eq!(tls_round_trip(&mut good, b"first"), b"first");

    let started = Instant::now();
    let mut silent = connect(addr);
    assert!(closed_by_peer(&mut silent));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "closed after {took:?}");
    wait_until("the timeout counted", || error() == 1);

    // The timeout bounds the whole handshake, not each read: a ClientHello
    // trickled a byte at a time is cut off as well.
    let started = Instant::now();
    let mut trickle = connect(addr);
    trickle.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    trickle.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match trickle.read(&mut buf) {
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Ok(0) | Err(_) => break,
            Ok(n) => panic!("the server answered a partial ClientHello: {:?}", &buf[..n]),
        }
        assert!(started.elapsed() < WAIT, "the trickling client was never cut off");
        let _ = trickle.write_all(&[0x01]);
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "trickle closed after {took:?}");
    wait_until("the trickle counted", || error() == 2);

    let garbage: [&[u8]; 2] = [
        b"GET / HTTP/1.1\r\nHost: server.test\r\n\r\n",
        // A handshake record whose ClientHello is nonsense.
        &[0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef],
    ];
    for (n, bytes) in garbage.into_iter().enumerate() {
        let started = Instant::now();
        let mut s = connect(addr);
        s.write_all(bytes).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let took = started.elapsed();
        // A fatal alert record: rustls refused it; the timeout sends none.
        assert_eq!(reply.first(), Some(&0x15), "garbage {n}: reply {reply:?}");
        assert!(took < Duration::from_secs(2), "garbage {n} closed after {took:?}");
        wait_until("the garbage counted", || error() == n as i128 + 3);
    }

    // The good connection outlives the handshake timeout several times over.
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(100));
        let msg = format!("still here {i}");
        assert_eq!(tls_round_trip(&mut good, msg.as_bytes()), msg.as_bytes());
    }
    assert_eq!(listener_ssl(&server, 0, "handshake"), 1);
    assert_eq!(ssl_failures(&server, "listener.127.0.0.1_0"), 4);
    assert_eq!(echo.accepted.load(Ordering::Acquire), 1);
    drop(good);
    stop(server);
}

// ---- 5. TLS 1.2 only, ALPN ----------------------------------------------------

fn tls12_alpn_server(pki: &Pki, echo: &Upstream) -> Server {
    let common = json!({
        "tls_params": {"tls_maximum_protocol_version": "TLSv1_2"},
        "alpn_protocols": ["h2", "http/1.1"],
    });
    let ctx = server_context(pki.server.inline(), common, false);
    let yaml =
        bootstrap(vec![tcp_listener("alpn", 0, "echo", tls_socket(ctx))], vec![cluster("echo", echo.addr, json!({}))]);
    start(&yaml, opts(1))
}

/// A TLS 1.2-only listener advertising h2 and http/1.1 negotiates TLS 1.2
/// and the listener's first protocol the client offers; a TLS 1.3-only
/// client is refused and counted.
#[test]
fn tls12_only_listener_negotiates_alpn() {
    let pki = Pki::new();
    let echo = Upstream::echo();
    let server = tls12_alpn_server(&pki, &echo);
    let addr = server.listener_addr("alpn").unwrap();
    let offers: [(&[&str], Option<&[u8]>); 4] = [
        (&["h2", "http/1.1"], Some(b"h2")),
        (&["http/1.1", "h2"], Some(b"h2")),
        (&["http/1.1"], Some(b"http/1.1")),
        (&[], None),
    ];
    for (offer, want) in offers {
        let mut s = tls_connect(addr, client_config(&pki.ca, None, BOTH, offer)).unwrap();
        assert_eq!(s.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2), "{offer:?}");
        assert_eq!(s.conn.alpn_protocol(), want, "{offer:?}");
        assert_eq!(tls_round_trip(&mut s, b"over tls 1.2"), b"over tls 1.2");
    }
    assert_eq!(listener_ssl(&server, 0, "handshake"), 4);

    let tls13_only = client_config(&pki.ca, None, &[&rustls::version::TLS13], &["h2"]);
    let Err(error) = tls_connect(addr, tls13_only) else { panic!("a TLS 1.3-only client got in") };
    assert!(error.to_string().contains("ProtocolVersion"), "{error}");
    wait_until("the refusal counted", || ssl_failures(&server, "listener.127.0.0.1_0") == 1);
    assert_eq!(listener_ssl(&server, 0, "handshake"), 4);
    stop(server);
}

/// `cipher_suites` limits the TLS 1.2 suites a listener agrees to.
#[test]
fn tls12_cipher_suites_limit_what_is_negotiated() {
    use rustls::CipherSuite as C;
    let pki = Pki::new();
    let echo = Upstream::echo();
    let common = json!({"tls_params": {
        "tls_maximum_protocol_version": "TLSv1_2",
        "cipher_suites": ["ECDHE-ECDSA-CHACHA20-POLY1305"],
    }});
    let ctx = server_context(pki.server.inline(), common, false);
    let yaml = bootstrap(
        vec![tcp_listener("narrow", 0, "echo", tls_socket(ctx))],
        vec![cluster("echo", echo.addr, json!({}))],
    );
    let server = start(&yaml, opts(1));
    let addr = server.listener_addr("narrow").unwrap();

    let mut s = tls_connect(addr, client_config(&pki.ca, None, BOTH, &[])).unwrap();
    let suite = s.conn.negotiated_cipher_suite().unwrap().suite();
    assert_eq!(suite, C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256);
    assert_eq!(tls_round_trip(&mut s, b"chacha"), b"chacha");

    // A client offering only AES-GCM finds nothing in common.
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|s| {
        matches!(s.suite(), C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der.clone()).unwrap();
    let aes_only = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let Err(error) = tls_connect(addr, Arc::new(aes_only)) else { panic!("an AES-only client got in") };
    assert!(error.to_string().contains("HandshakeFailure"), "{error}");
    wait_until("the refusal counted", || listener_ssl(&server, 0, "connection_error") == 1);
    assert_eq!(listener_ssl(&server, 0, "handshake"), 1);
    drop(s);
    stop(server);
}

/// A TLS 1.3 client that updates its keys mid-stream and asks for ours in
/// turn: ringway reads the KeyUpdate while it relays the other direction,
/// answers with its own before any data under the new keys, and the
/// connection carries on; several times over, with 64 KiB each way between.
#[test]
fn key_updates_mid_stream_are_answered() {
    let pki = Pki::new();
    let echo = Upstream::echo();
    let server = quick_server(&pki, &echo);
    let addr = server.listener_addr("quick").unwrap();
    let config = client_config(&pki.ca, None, &[&rustls::version::TLS13], &[]);
    let mut s = tls_connect(addr, config).unwrap();
    assert_eq!(tls_round_trip(&mut s, b"before"), b"before");
    let bulk: Vec<u8> = (0..64u32 << 10).map(|i| (i % 253) as u8).collect();
    for round in 0..4 {
        s.conn.refresh_traffic_keys().unwrap();
        assert_eq!(tls_round_trip(&mut s, b"after a key update"), b"after a key update", "round {round}");
        assert!(tls_round_trip(&mut s, &bulk) == bulk, "round {round}: 64 KiB came back different");
    }
    assert_eq!(listener_ssl(&server, 0, "handshake"), 1);
    assert_eq!(ssl_failures(&server, "listener.127.0.0.1_0"), 0);
    stop(server);
}

/// Envoy (BoringSSL) answers a client whose ALPN offer shares nothing with
/// the listener's list by negotiating no protocol (SSL_TLSEXT_ERR_NOACK); it
/// does not fail the handshake.
#[test]
fn alpn_without_overlap_negotiates_no_protocol() {
    let pki = Pki::new();
    let echo = Upstream::echo();
    let server = tls12_alpn_server(&pki, &echo);
    let addr = server.listener_addr("alpn").unwrap();
    let mut s = tls_connect(addr, client_config(&pki.ca, None, BOTH, &["spdy/3"])).unwrap();
    assert_eq!(s.conn.alpn_protocol(), None);
    assert_eq!(tls_round_trip(&mut s, b"no alpn"), b"no alpn");
    stop(server);
}

// ---- 4. config errors -------------------------------------------------------

const CHAIN: &str = "static_resources.listeners[0].filter_chains[0]";
const CTX: &str = "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config";
const CLUSTER_CTX: &str = "static_resources.clusters[0].transport_socket.typed_config";

/// A valid config: a TLS tcp_proxy listener with client certificates, and
/// a cluster with TLS and a client certificate.
fn valid_config(pki: &Pki) -> Value {
    let ctx = server_context(pki.server.inline(), validation(inline(&pki.ca.pem), vec![]), true);
    let mut common = json!({"tls_certificates": [pki.client.inline()]});
    merge(&mut common, validation(inline(&pki.ca.pem), vec![san("DNS", "server.test")]));
    let upstream = client_context("server.test", common);
    json!({"static_resources": {
        "listeners": [tcp_listener("tls", 10000, "backend", tls_socket(ctx))],
        "clusters": [cluster("backend", loopback(10001), tls_socket(upstream))],
    }})
}

/// Validates `config` after `edit`, expecting an error at `path` whose
/// message contains `message`.
fn expect_error(config: &Value, edit: impl FnOnce(&mut Value), path: &str, message: &str) {
    let mut config = config.clone();
    edit(&mut config);
    match ringway::config::check_str(&config.to_string(), 1) {
        Ok(_) => panic!("accepted; expected an error at {path}"),
        Err(e) => {
            assert_eq!(e.path, path, "message: {}", e.message);
            assert!(e.message.contains(message), "at {path}: {:?} lacks {message:?}", e.message);
        }
    }
}

fn at<'a>(v: &'a mut Value, pointer: &str) -> &'a mut Value {
    v.pointer_mut(pointer).unwrap_or_else(|| panic!("no {pointer}"))
}

const LISTENER_COMMON: &str =
    "/static_resources/listeners/0/filter_chains/0/transport_socket/typed_config/common_tls_context";
const CLUSTER_COMMON: &str = "/static_resources/clusters/0/transport_socket/typed_config/common_tls_context";

#[test]
fn the_valid_config_is_valid() {
    let pki = Pki::new();
    let snap = ringway::config::check_str(&valid_config(&pki).to_string(), 1).unwrap_or_else(|e| panic!("{e:?}"));
    let tls = snap.listeners[0].filter_chains[0].tls.as_ref().unwrap();
    assert!(tls.require_client_certificate);
    assert_eq!(tls.certificates.len(), 1);
    assert_eq!(tls.certificates[0].sans, ["server.test"]);
    assert_eq!(tls.handshake_timeout, Duration::from_secs(10), "the default");
    let upstream = snap.clusters[0].tls.as_ref().unwrap();
    assert_eq!(upstream.certificates[0].sans, ["spiffe://test/client"]);
}

#[test]
fn tls_versions_below_1_2_are_refused() {
    let pki = Pki::new();
    let config = valid_config(&pki);
    for (common, path) in [(LISTENER_COMMON, CTX), (CLUSTER_COMMON, CLUSTER_CTX)] {
        for field in ["tls_minimum_protocol_version", "tls_maximum_protocol_version"] {
            for version in ["TLSv1_0", "TLSv1_1"] {
                expect_error(
                    &config,
                    |c| at(c, common)["tls_params"] = json!({field: version}),
                    &format!("{path}.common_tls_context.tls_params.{field}"),
                    &format!("{version} is not supported"),
                );
            }
        }
    }
    expect_error(
        &config,
        |c| {
            at(c, LISTENER_COMMON)["tls_params"] =
                json!({"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_2"})
        },
        &format!("{CTX}.common_tls_context.tls_params.tls_minimum_protocol_version"),
        "above tls_maximum_protocol_version",
    );
}

#[test]
fn cipher_suites_rustls_lacks_are_refused() {
    let pki = Pki::new();
    let config = valid_config(&pki);
    for (i, suites) in
        [json!(["AES128-SHA"]), json!(["ECDHE-RSA-AES128-GCM-SHA256", "[ECDHE-ECDSA-AES128-GCM-SHA256|DES-CBC3-SHA]"])]
            .into_iter()
            .enumerate()
    {
        let bad = if i == 0 { "AES128-SHA" } else { "DES-CBC3-SHA" };
        expect_error(
            &config,
            |c| at(c, LISTENER_COMMON)["tls_params"] = json!({"cipher_suites": suites}),
            &format!("{CTX}.common_tls_context.tls_params.cipher_suites[{i}]"),
            &format!("`{bad}` is not a cipher suite rustls implements"),
        );
    }
    // The ones it has are fine, `[A|B]` groups included.
    let mut ok = config.clone();
    at(&mut ok, LISTENER_COMMON)["tls_params"] = json!({"cipher_suites": ["[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]", "ECDHE-RSA-AES256-GCM-SHA384"]});
    ringway::config::check_str(&ok.to_string(), 1).unwrap_or_else(|e| panic!("{e:?}"));
}

#[test]
fn a_certificate_and_key_that_do_not_match_are_refused() {
    let pki = Pki::new();
    let config = valid_config(&pki);
    let mismatched = json!({
        "certificate_chain": {"inline_string": pki.server.cert_pem},
        "private_key": {"inline_string": pki.client.key_pem},
    });
    expect_error(
        &config,
        |c| at(c, LISTENER_COMMON)["tls_certificates"] = json!([mismatched]),
        &format!("{CTX}.common_tls_context.tls_certificates[0]"),
        "do not go together",
    );
    expect_error(
        &config,
        |c| at(c, CLUSTER_COMMON)["tls_certificates"] = json!([mismatched]),
        &format!("{CLUSTER_CTX}.common_tls_context.tls_certificates[0]"),
        "do not go together",
    );
}

#[test]
fn missing_and_unreadable_pem_files_are_refused() {
    let pki = Pki::new();
    let config = valid_config(&pki);
    let dir = TempDir::new();
    let missing = dir.0.join("nope.pem").to_str().unwrap().to_string();
    let key = dir.write("server.key", &pki.server.key_pem);
    let not_pem = dir.write("not.pem", "this is not PEM\n");
    expect_error(
        &config,
        |c| {
            at(c, LISTENER_COMMON)["tls_certificates"] =
                json!([{"certificate_chain": {"filename": missing}, "private_key": {"filename": key}}]);
        },
        &format!("{CTX}.common_tls_context.tls_certificates[0].certificate_chain.filename"),
        &format!("cannot read `{missing}`"),
    );
    expect_error(
        &config,
        |c| at(c, LISTENER_COMMON)["validation_context"]["trusted_ca"] = json!({"filename": missing}),
        &format!("{CTX}.common_tls_context.validation_context.trusted_ca.filename"),
        "cannot read",
    );
    expect_error(
        &config,
        |c| at(c, CLUSTER_COMMON)["validation_context"]["trusted_ca"] = json!({"filename": not_pem}),
        &format!("{CLUSTER_CTX}.common_tls_context.validation_context.trusted_ca"),
        "no PEM certificate",
    );
    expect_error(
        &config,
        |c| at(c, LISTENER_COMMON)["tls_certificates"][0]["private_key"] = json!({"inline_string": "not a key"}),
        &format!("{CTX}.common_tls_context.tls_certificates[0].private_key"),
        "no usable PEM private key",
    );
}

#[test]
fn require_client_certificate_needs_a_validation_context() {
    let pki = Pki::new();
    let config = valid_config(&pki);
    expect_error(
        &config,
        |c| {
            at(c, LISTENER_COMMON).as_object_mut().unwrap().remove("validation_context");
        },
        &format!("{CTX}.require_client_certificate"),
        "needs common_tls_context.validation_context.trusted_ca",
    );
    expect_error(
        &config,
        |c| {
            at(c, LISTENER_COMMON)["validation_context"].as_object_mut().unwrap().remove("trusted_ca");
        },
        &format!("{CTX}.common_tls_context.validation_context.trusted_ca"),
        "missing",
    );
    // Without the requirement, no validation context is fine.
    let mut ok = config.clone();
    at(&mut ok, LISTENER_COMMON).as_object_mut().unwrap().remove("validation_context");
    at(&mut ok, "/static_resources/listeners/0/filter_chains/0/transport_socket/typed_config")["require_client_certificate"] =
        json!(false);
    ringway::config::check_str(&ok.to_string(), 1).unwrap_or_else(|e| panic!("{e:?}"));
}

#[test]
fn unknown_transport_sockets_are_refused() {
    let pki = Pki::new();
    let config = valid_config(&pki);
    expect_error(
        &config,
        |c| {
            at(c, "/static_resources/listeners/0/filter_chains/0/transport_socket")["name"] =
                json!("envoy.transport_sockets.alts")
        },
        &format!("{CHAIN}.transport_socket.name"),
        "transport socket `envoy.transport_sockets.alts` is not supported",
    );
    expect_error(
        &config,
        |c| at(c, "/static_resources/clusters/0/transport_socket")["name"] = json!("envoy.transport_sockets.starttls"),
        "static_resources.clusters[0].transport_socket.name",
        "is not supported",
    );
    // An UpstreamTlsContext where a DownstreamTlsContext belongs.
    expect_error(
        &config,
        |c| {
            at(c, "/static_resources/listeners/0/filter_chains/0/transport_socket/typed_config")["@type"] =
                json!(UPSTREAM)
        },
        &format!("{CTX}.@type"),
        "is not expected here",
    );
    // raw_buffer is plaintext.
    let mut plain = config.clone();
    *at(&mut plain, "/static_resources/listeners/0/filter_chains/0/transport_socket") =
        json!({"name": "envoy.transport_sockets.raw_buffer"});
    let snap = ringway::config::check_str(&plain.to_string(), 1).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(snap.listeners[0].filter_chains[0].tls.is_none());
}

/// TLS on an http_connection_manager chain (refused until 2da0feb, served
/// since), in both spellings.
#[test]
fn tls_on_an_http_connection_manager_chain_is_accepted() {
    let pki = Pki::new();
    let ctx = server_context(pki.server.inline(), json!({}), false);
    let mut chain = tls_socket(ctx.clone());
    merge(
        &mut chain,
        json!({"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "ingress",
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]},
                "http_filters": [{"name": "envoy.filters.http.router"}],
            },
        }]}),
    );
    let mut config = valid_config(&pki);
    at(&mut config, "/static_resources/listeners/0/filter_chains")[0] = chain;
    let snap = ringway::config::check_str(&config.to_string(), 1).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(snap.listeners[0].filter_chains[0].tls.is_some());
    let fc = at(&mut config, "/static_resources/listeners/0/filter_chains/0").as_object_mut().unwrap();
    fc.remove("transport_socket");
    fc.insert("tls_context".into(), ctx);
    let snap = ringway::config::check_str(&config.to_string(), 1).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(snap.listeners[0].filter_chains[0].tls.is_some());
}

/// The v2 spelling, `tls_context` holding the context directly, on a filter
/// chain and on a cluster.
#[test]
fn v2_tls_context_is_accepted_on_chains_and_clusters() {
    let pki = Pki::new();
    let mut config = valid_config(&pki);
    for owner in ["/static_resources/listeners/0/filter_chains/0", "/static_resources/clusters/0"] {
        let o = at(&mut config, owner).as_object_mut().unwrap();
        let mut ctx = o.remove("transport_socket").unwrap()["typed_config"].take();
        ctx.as_object_mut().unwrap().remove("@type");
        o.insert("tls_context".into(), ctx);
    }
    let snap = ringway::config::check_str(&config.to_string(), 1).unwrap_or_else(|e| panic!("{e:?}"));
    let tls = snap.listeners[0].filter_chains[0].tls.as_ref().unwrap();
    assert!(tls.require_client_certificate);
    assert_eq!(
        snap.clusters[0].tls.as_ref().unwrap().sni.as_ref().map(|n| n.to_str().into_owned()),
        Some("server.test".into())
    );

    // Both spellings at once is an error.
    let mut both = config.clone();
    at(&mut both, "/static_resources/listeners/0/filter_chains/0")["transport_socket"] =
        json!({"name": "envoy.transport_sockets.raw_buffer"});
    expect_error(&both, |_| {}, &format!("{CHAIN}.tls_context"), "not both");

    // v2 names inside a transport_socket: `config` and the v2 @types.
    let mut v2_socket = valid_config(&pki);
    for (owner, t) in [
        (
            "/static_resources/listeners/0/filter_chains/0/transport_socket",
            "type.googleapis.com/envoy.api.v2.auth.DownstreamTlsContext",
        ),
        ("/static_resources/clusters/0/transport_socket", "type.googleapis.com/envoy.api.v2.auth.UpstreamTlsContext"),
    ] {
        let s = at(&mut v2_socket, owner).as_object_mut().unwrap();
        let mut ctx = s.remove("typed_config").unwrap();
        ctx["@type"] = json!(t);
        s.insert("config".into(), ctx);
        s.insert("name".into(), json!("tls"));
    }
    let snap = ringway::config::check_str(&v2_socket.to_string(), 1).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(snap.listeners[0].filter_chains[0].tls.is_some() && snap.clusters[0].tls.is_some());
}

/// A live v2 `tls_context` listener and cluster carry traffic.
#[test]
fn v2_tls_context_carries_traffic() {
    let pki = Pki::new();
    let echo = Upstream::echo();
    let b_port = closed_port().port();
    let mut terminate = server_context(pki.server.inline(), json!({}), false);
    terminate.as_object_mut().unwrap().remove("@type");
    let originate = client_context("server.test", validation(inline(&pki.ca.pem), vec![]));
    let yaml = bootstrap(
        vec![
            tcp_listener("plain", 0, "tunnel", json!({})),
            tcp_listener("terminate", b_port, "echo", json!({"tls_context": terminate})),
        ],
        vec![
            cluster("tunnel", loopback(b_port), json!({"tls_context": originate})),
            cluster("echo", echo.addr, json!({})),
        ],
    );
    let server = start(&yaml, opts(1));
    let mut s = connect(server.listener_addr("plain").unwrap());
    assert_eq!(round_trip(&mut s, b"v2 says hi"), b"v2 says hi");
    assert_eq!(stat(&server, "cluster.tunnel.ssl.handshake"), 1);
    assert_eq!(listener_ssl(&server, b_port, "handshake"), 1);
    drop(s);
    stop(server);
}
