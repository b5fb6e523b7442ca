//! TLS with rustls (ring provider): the server side of a listener's filter
//! chain and the client side of a cluster, built once per snapshot from the
//! validated config, plus the pieces rustls leaves to us: Envoy's subject
//! alternative name matching, server-name rules for upstreams, choosing
//! among several certificates, and naming handshake failures for the stats.
//!
//! accept ─► [**TLS server**] ─► tcp_proxy | http ─► [**TLS client**] ─► upstream

use std::fmt;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use monoio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};

pub mod inspect;
mod stream;

use stream::TlsStream;
pub use stream::{Conn, ConnReader, ConnWriter, TlsReader, TlsWriter};

use crate::config::StringMatch;
use crate::stats::{Counter, Shard, StatKey};

/// How long a downstream TLS handshake may take by default (Envoy leaves
/// `transport_socket_connect_timeout` unset; ringway bounds every wait).
/// Upstream handshakes fit in the cluster's `connect_timeout` instead.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server side of a handshake on a filter chain's connection, within
/// the chain's `handshake_timeout`, counted in the listener's `ssl.*`. `None`:
/// it failed or timed out, and the connection is closed.
pub async fn accept(tcp: TcpStream, ctx: &ServerContext, stats: &TlsStats) -> Option<Conn> {
    let fd = tcp.as_raw_fd();
    match monoio::time::timeout(ctx.handshake_timeout, TlsStream::accept(tcp, ctx)).await {
        Ok(Ok(tls)) => {
            stats.handshake.inc();
            Some(Conn::tls(tls, fd))
        }
        Ok(Err(e)) => {
            stats.count_io_failure(&e);
            tracing::debug!("downstream TLS handshake failed: {e:?}");
            None
        }
        Err(_) => {
            stats.connection_error.inc();
            None
        }
    }
}

/// The client side of a handshake to an upstream at `ip`, within `limit`,
/// counted in the cluster's `ssl.*`. `Err(true)` when it timed out.
pub async fn connect(
    tcp: TcpStream,
    ip: IpAddr,
    ctx: &ClientContext,
    stats: &TlsStats,
    limit: Duration,
) -> Result<Conn, bool> {
    let fd = tcp.as_raw_fd();
    let handshake = TlsStream::connect(tcp, ctx.config.clone(), ctx.server_name(ip));
    match monoio::time::timeout(limit, handshake).await {
        Ok(Ok(tls)) => {
            stats.handshake.inc();
            Ok(Conn::tls(tls, fd))
        }
        Ok(Err(e)) => {
            stats.count_io_failure(&e);
            tracing::debug!("upstream TLS handshake failed: {e:?}");
            Err(false)
        }
        Err(_) => {
            stats.connection_error.inc();
            Err(true)
        }
    }
}

/// A certificate and key as loaded, for `/certs` and `/config_dump`.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// Where it came from: a file name or `<inline>`.
    pub source: String,
    pub subject: String,
    pub serial: String,
    pub sans: Vec<String>,
    pub not_after: SystemTime,
}

impl CertInfo {
    /// Whole days until `not_after`; 0 once passed.
    pub fn days_left(&self) -> i64 {
        self.not_after.duration_since(SystemTime::now()).map_or(0, |d| (d.as_secs() / 86_400) as i64)
    }
}

/// A listener filter chain's TLS (`DownstreamTlsContext`), ready to accept.
#[derive(Clone)]
pub struct ServerContext {
    pub config: Arc<rustls::ServerConfig>,
    /// `config` without ALPN, for clients that offer none of its protocols
    /// (Envoy carries on without ALPN; rustls alone would refuse them).
    /// `None` when the chain names no ALPN protocols.
    pub config_without_alpn: Option<Arc<rustls::ServerConfig>>,
    /// The CA client certificates are checked against, if any.
    pub ca: Vec<CertInfo>,
    /// The filter chain's `transport_socket_connect_timeout`: a handshake
    /// not done by then is closed and counted in `ssl.connection_error`.
    pub handshake_timeout: Duration,
    pub certificates: Vec<CertInfo>,
    pub require_client_certificate: bool,
}

impl fmt::Debug for ServerContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerContext").field("certificates", &self.certificates).finish_non_exhaustive()
    }
}

/// A cluster's TLS (`UpstreamTlsContext`), ready to connect.
#[derive(Clone)]
pub struct ClientContext {
    pub config: Arc<rustls::ClientConfig>,
    /// The trusted CA given in the config (none: the public roots).
    pub ca: Vec<CertInfo>,
    /// The SNI to send, if configured; the verifier checks the server's
    /// certificate against it when no SAN matchers are given.
    pub sni: Option<ServerName<'static>>,
    pub certificates: Vec<CertInfo>,
}

impl fmt::Debug for ClientContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientContext").field("sni", &self.sni).finish_non_exhaustive()
    }
}

impl ClientContext {
    /// The name to hand rustls for a connection to `addr`: the SNI, or the
    /// address itself (rustls sends no SNI for an IP address, and our
    /// verifier ignores it).
    pub fn server_name(&self, addr: IpAddr) -> ServerName<'static> {
        self.sni.clone().unwrap_or(ServerName::IpAddress(addr.into()))
    }
}

/// One `match_subject_alt_names` / `match_typed_subject_alt_names` entry.
#[derive(Debug, Clone)]
pub struct SanMatcher {
    /// `None` (the untyped form) tries DNS, URI, email and IP SANs.
    pub kind: Option<SanKind>,
    pub matcher: StringMatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanKind {
    Dns,
    Uri,
    Email,
    Ip,
}

/// A certificate's subject alternative names, by kind.
fn sans(der: &[u8]) -> Vec<(SanKind, String)> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else { return Vec::new() };
    let Ok(Some(ext)) = cert.subject_alternative_name() else { return Vec::new() };
    ext.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(s) => Some((SanKind::Dns, s.to_string())),
            GeneralName::URI(s) => Some((SanKind::Uri, s.to_string())),
            GeneralName::RFC822Name(s) => Some((SanKind::Email, s.to_string())),
            GeneralName::IPAddress(b) => ip_from_bytes(b).map(|ip| (SanKind::Ip, ip.to_string())),
            _ => None,
        })
        .collect()
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Envoy's rule: the certificate passes if any SAN satisfies any matcher.
/// An exact DNS matcher also accepts a wildcard SAN covering it
/// (`*.example.com` for `a.example.com`).
fn sans_match(der: &[u8], matchers: &[SanMatcher]) -> bool {
    let names = sans(der);
    matchers.iter().any(|m| {
        names.iter().any(|(kind, value)| {
            if m.kind.is_some_and(|k| k != *kind) {
                return false;
            }
            if crate::http::router::string_matches(&m.matcher, value) {
                return true;
            }
            match (&m.matcher.kind, *kind) {
                (crate::config::StringMatchKind::Exact(want), SanKind::Dns) => wildcard_covers(value, want),
                _ => false,
            }
        })
    })
}

/// Whether a wildcard DNS SAN (`*.example.com`) covers `name` (one label).
fn wildcard_covers(san: &str, name: &str) -> bool {
    let Some(suffix) = san.strip_prefix("*.") else { return false };
    match name.split_once('.') {
        Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(suffix),
        None => false,
    }
}

/// Reads what `/certs` shows from a DER certificate.
pub fn cert_info(der: &[u8], source: &str) -> Option<CertInfo> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    Some(CertInfo {
        source: source.to_string(),
        subject: cert.subject().to_string(),
        serial: cert.raw_serial_as_string(),
        sans: sans(der).into_iter().map(|(_, v)| v).collect(),
        not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(not_after),
    })
}

/// Checks a client certificate with webpki against the trusted CA, then
/// the SAN matchers.
#[derive(Debug)]
pub struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    matchers: Vec<SanMatcher>,
}

impl ClientVerifier {
    pub fn new(
        roots: RootCertStore,
        matchers: Vec<SanMatcher>,
        required: bool,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let builder = if required { builder } else { builder.allow_unauthenticated() };
        let inner = builder.build().map_err(|e| e.to_string())?;
        Ok(ClientVerifier { inner, matchers })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        if !self.matchers.is_empty() && !sans_match(end_entity, &self.matchers) {
            return Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Checks an upstream's certificate: the chain against the trusted CA (or
/// the webpki roots), always; then the SAN matchers if any are given, else
/// the configured SNI. With neither, the chain alone decides (Envoy's rule).
#[derive(Debug)]
pub struct ServerVerifier {
    roots: Arc<RootCertStore>,
    matchers: Vec<SanMatcher>,
    sni: Option<ServerName<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerVerifier {
    pub fn new(
        roots: RootCertStore,
        matchers: Vec<SanMatcher>,
        sni: Option<ServerName<'static>>,
        provider: &CryptoProvider,
    ) -> Self {
        ServerVerifier { roots: Arc::new(roots), matchers, sni, algorithms: provider.signature_verification_algorithms }
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if !self.matchers.is_empty() {
            if !sans_match(end_entity, &self.matchers) {
                return Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
            }
        } else if let Some(sni) = &self.sni {
            rustls::client::verify_server_name(&cert, sni)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Serves the first configured certificate whose key can sign with a scheme
/// the client offers (an RSA and an ECDSA certificate side by side, as Envoy
/// allows).
#[derive(Debug)]
pub struct CertChooser {
    keys: Vec<Arc<CertifiedKey>>,
}

impl CertChooser {
    pub fn new(keys: Vec<Arc<CertifiedKey>>) -> Self {
        CertChooser { keys }
    }
}

impl ResolvesServerCert for CertChooser {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offered = hello.signature_schemes();
        self.keys.iter().find(|k| k.key.choose_scheme(offered).is_some()).or(self.keys.first()).cloned()
    }
}

/// PEM certificates from `pem`, in order; `what` names the field for errors.
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
}

pub fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no usable PEM private key: {e}"))
}

/// TLS stats, Envoy's `ssl.*` names under a listener or cluster scope.
#[derive(Clone)]
pub struct TlsStats {
    pub handshake: Counter,
    pub connection_error: Counter,
    pub fail_verify_no_cert: Counter,
    pub fail_verify_error: Counter,
    pub fail_verify_san: Counter,
}

impl TlsStats {
    /// `scope` is `listener.<addr>` or `cluster.<name>` with its label.
    pub fn new(shard: &Shard, key: impl Fn(&str) -> StatKey) -> Self {
        let c = |stat: &str| shard.counter(key(stat));
        TlsStats {
            handshake: c("ssl.handshake"),
            connection_error: c("ssl.connection_error"),
            fail_verify_no_cert: c("ssl.fail_verify_no_cert"),
            fail_verify_error: c("ssl.fail_verify_error"),
            fail_verify_san: c("ssl.fail_verify_san"),
        }
    }

    /// Counts a failed handshake by its reason: the rustls error the
    /// io::Error carries, if any.
    pub fn count_io_failure(&self, e: &std::io::Error) {
        self.count(e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()));
    }

    fn count(&self, rustls_error: Option<&Error>) {
        let counter = match rustls_error {
            Some(Error::NoCertificatesPresented) => &self.fail_verify_no_cert,
            Some(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure
                | CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. },
            )) => &self.fail_verify_san,
            Some(Error::InvalidCertificate(_)) => &self.fail_verify_error,
            _ => &self.connection_error,
        };
        counter.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(wildcard_covers("*.example.com", "a.example.com"));
        assert!(wildcard_covers("*.example.com", "A.EXAMPLE.com"));
        assert!(!wildcard_covers("*.example.com", "a.b.example.com"));
        assert!(!wildcard_covers("*.example.com", "example.com"));
        assert!(!wildcard_covers("example.com", "example.com"));
    }
}
