//! Validation of `transport_socket` (and the v2 `tls_context`) on filter
//! chains and clusters into ready rustls configs (`crate::tls`). Certificate
//! files are read here, so a bad file fails the load (or the reload) with
//! the field that names it.

use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::{RootCertStore, SupportedCipherSuite};
use serde_json::Value;

use super::ConfigError;
use super::raw;
use super::routes::string_match;
use super::validate::{decode, err};
use crate::tls::{self, CertChooser, CertInfo, ClientContext, ClientVerifier, SanKind, SanMatcher, ServerContext};

const TLS_SOCKET_NAMES: &[&str] = &["envoy.transport_sockets.tls", "tls"];
const RAW_SOCKET_NAMES: &[&str] = &["envoy.transport_sockets.raw_buffer", "raw_buffer"];
const DOWNSTREAM_TYPES: &[&str] = &[
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    "type.googleapis.com/envoy.api.v2.auth.DownstreamTlsContext",
];
const UPSTREAM_TYPES: &[&str] = &[
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    "type.googleapis.com/envoy.api.v2.auth.UpstreamTlsContext",
];
/// Certificate and key files larger than this are refused.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The TLS settings given by `transport_socket` or (v2) `tls_context`, as
/// a JSON value and its path, or `None` for plaintext.
fn tls_settings<'a>(
    socket: Option<&'a raw::TransportSocket>,
    v2: Option<&'a Value>,
    path: &str,
    types: &[&str],
) -> Result<Option<(Value, String)>, ConfigError> {
    match (socket, v2) {
        (Some(_), Some(_)) => Err(err(format!("{path}.tls_context"), "give transport_socket or tls_context, not both")),
        (None, None) => Ok(None),
        (None, Some(v)) => Ok(Some((v.clone(), format!("{path}.tls_context")))),
        (Some(ts), None) => {
            let tpath = format!("{path}.transport_socket");
            if RAW_SOCKET_NAMES.contains(&ts.name.as_str()) {
                return Ok(None);
            }
            if !TLS_SOCKET_NAMES.contains(&ts.name.as_str()) {
                return Err(err(
                    format!("{tpath}.name"),
                    format!(
                        "transport socket `{}` is not supported; expected envoy.transport_sockets.tls or envoy.transport_sockets.raw_buffer",
                        ts.name
                    ),
                ));
            }
            let (settings, spath) = match (&ts.typed_config, &ts.config) {
                (Some(v), None) => (v.clone(), format!("{tpath}.typed_config")),
                (None, Some(v)) => (v.clone(), format!("{tpath}.config")),
                (None, None) => return Err(err(format!("{tpath}.typed_config"), "missing: give the TLS context")),
                (Some(_), Some(_)) => {
                    return Err(err(format!("{tpath}.config"), "give typed_config or config, not both"));
                }
            };
            if let Some(t) = settings.get("@type").and_then(Value::as_str)
                && !types.contains(&t)
            {
                return Err(err(
                    format!("{spath}.@type"),
                    format!("`{t}` is not expected here; expected {}", types[0]),
                ));
            }
            Ok(Some((settings, spath)))
        }
    }
}

/// A filter chain's `DownstreamTlsContext`, if it has one.
pub(super) fn downstream(
    socket: Option<&raw::TransportSocket>,
    v2: Option<&Value>,
    path: &str,
    handshake_timeout: Duration,
) -> Result<Option<Arc<ServerContext>>, ConfigError> {
    let Some((settings, path)) = tls_settings(socket, v2, path, DOWNSTREAM_TYPES)? else { return Ok(None) };
    let ctx: raw::DownstreamTlsContext = decode(settings, &path)?;
    let common = ctx.common_tls_context.unwrap_or_default();
    let cpath = format!("{path}.common_tls_context");
    let provider = provider(&common, &cpath)?;
    let versions = versions(&common, &cpath)?;
    if common.tls_certificates.is_empty() {
        return Err(err(format!("{cpath}.tls_certificates"), "a TLS listener needs at least one certificate"));
    }
    let (keys, certificates) =
        certified_keys(&common.tls_certificates, &format!("{cpath}.tls_certificates"), &provider)?;
    let require = ctx.require_client_certificate.unwrap_or(false);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| err(format!("{cpath}.tls_params"), e.to_string()))?;
    let mut ca_infos = Vec::new();
    let builder = match &common.validation_context {
        Some(vc) => {
            let vpath = format!("{cpath}.validation_context");
            let Some(ca) = &vc.trusted_ca else {
                return Err(err(format!("{vpath}.trusted_ca"), "missing: client certificates are checked against it"));
            };
            let (roots, infos) = roots(ca, &format!("{vpath}.trusted_ca"))?;
            ca_infos = infos;
            let matchers = san_matchers(vc, &vpath)?;
            let verifier = ClientVerifier::new(roots, matchers, require, provider.clone())
                .map_err(|e| err(format!("{vpath}.trusted_ca"), e))?;
            builder.with_client_cert_verifier(Arc::new(verifier))
        }
        None if require => {
            return Err(err(
                format!("{path}.require_client_certificate"),
                "needs common_tls_context.validation_context.trusted_ca to check the certificates against",
            ));
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(CertChooser::new(keys)));
    let alpn_protocols = alpn(&common, &cpath)?;
    let config_without_alpn = (!alpn_protocols.is_empty()).then(|| Arc::new(config.clone()));
    config.alpn_protocols = alpn_protocols;
    Ok(Some(Arc::new(ServerContext {
        config: Arc::new(config),
        config_without_alpn,
        ca: ca_infos,
        handshake_timeout,
        certificates,
        require_client_certificate: require,
    })))
}

/// A cluster's `UpstreamTlsContext`, if it has one.
pub(super) fn upstream(
    socket: Option<&raw::TransportSocket>,
    v2: Option<&Value>,
    path: &str,
) -> Result<Option<Arc<ClientContext>>, ConfigError> {
    let Some((settings, path)) = tls_settings(socket, v2, path, UPSTREAM_TYPES)? else { return Ok(None) };
    let ctx: raw::UpstreamTlsContext = decode(settings, &path)?;
    if ctx.allow_renegotiation == Some(true) {
        return Err(err(format!("{path}.allow_renegotiation"), "rustls does not renegotiate; must be false"));
    }
    let common = ctx.common_tls_context.unwrap_or_default();
    let cpath = format!("{path}.common_tls_context");
    let provider = provider(&common, &cpath)?;
    let versions = versions(&common, &cpath)?;
    let sni = match ctx.sni.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            ServerName::try_from(s.to_string())
                .map_err(|_| err(format!("{path}.sni"), format!("`{s}` is not a valid server name")))?,
        ),
    };
    // No trusted CA: the public roots, never no verification.
    let (roots, ca_infos, matchers) = match &common.validation_context {
        Some(vc) => {
            let vpath = format!("{cpath}.validation_context");
            let (roots, infos) = match &vc.trusted_ca {
                Some(ca) => roots(ca, &format!("{vpath}.trusted_ca"))?,
                None => (public_roots(), Vec::new()),
            };
            (roots, infos, san_matchers(vc, &vpath)?)
        }
        None => (public_roots(), Vec::new(), Vec::new()),
    };
    let verifier = tls::ServerVerifier::new(roots, matchers, sni.clone(), &provider);
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| err(format!("{cpath}.tls_params"), e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let (mut config, certificates) = match common.tls_certificates.as_slice() {
        [] => (builder.with_no_client_auth(), Vec::new()),
        [one] => {
            let tpath = format!("{cpath}.tls_certificates[0]");
            let (chain, key, info) = load_pair(one, &tpath)?;
            let config = builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| err(tpath, format!("certificate and key do not go together: {e}")))?;
            (config, vec![info])
        }
        _ => {
            return Err(err(format!("{cpath}.tls_certificates[1]"), "an upstream connection presents one certificate"));
        }
    };
    config.enable_sni = sni.is_some();
    config.alpn_protocols = alpn(&common, &cpath)?;
    Ok(Some(Arc::new(ClientContext { config: Arc::new(config), ca: ca_infos, sni, certificates })))
}

fn public_roots() -> RootCertStore {
    RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
}

/// The bytes of a `DataSource` (`filename` or `inline_string`).
fn read_source(ds: &raw::DataSource, path: &str) -> Result<(Vec<u8>, String), ConfigError> {
    match (&ds.filename, &ds.inline_string) {
        (Some(f), None) => {
            let fpath = format!("{path}.filename");
            let meta = std::fs::metadata(f).map_err(|e| err(&fpath, format!("cannot read `{f}`: {e}")))?;
            if meta.len() > MAX_PEM_BYTES {
                return Err(err(fpath, format!("`{f}` is larger than {MAX_PEM_BYTES} bytes")));
            }
            let bytes = std::fs::read(f).map_err(|e| err(&fpath, format!("cannot read `{f}`: {e}")))?;
            Ok((bytes, f.clone()))
        }
        (None, Some(s)) => Ok((s.as_bytes().to_vec(), "<inline>".to_string())),
        (None, None) => Err(err(path, "give filename or inline_string")),
        (Some(_), Some(_)) => Err(err(path, "give filename or inline_string, not both")),
    }
}

fn roots(ca: &raw::DataSource, path: &str) -> Result<(RootCertStore, Vec<CertInfo>), ConfigError> {
    let (pem, source) = read_source(ca, path)?;
    let certs = tls::parse_certs(&pem).map_err(|e| err(path, e))?;
    let infos = certs.iter().filter_map(|c| tls::cert_info(c, &source)).collect();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(err(path, "no usable CA certificate"));
    }
    Ok((roots, infos))
}

type Pair = (Vec<rustls::pki_types::CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>, CertInfo);

fn load_pair(c: &raw::TlsCertificate, path: &str) -> Result<Pair, ConfigError> {
    let chain_path = format!("{path}.certificate_chain");
    let key_path = format!("{path}.private_key");
    let Some(chain_src) = &c.certificate_chain else { return Err(err(chain_path, "missing")) };
    let Some(key_src) = &c.private_key else { return Err(err(key_path, "missing")) };
    let (chain_pem, source) = read_source(chain_src, &chain_path)?;
    let (key_pem, _) = read_source(key_src, &key_path)?;
    let chain = tls::parse_certs(&chain_pem).map_err(|e| err(&chain_path, e))?;
    let key = tls::parse_key(&key_pem).map_err(|e| err(&key_path, e))?;
    let info = tls::cert_info(&chain[0], &source)
        .ok_or_else(|| err(&chain_path, "the first certificate cannot be parsed as X.509"))?;
    Ok((chain, key, info))
}

fn certified_keys(
    certs: &[raw::TlsCertificate],
    path: &str,
    provider: &CryptoProvider,
) -> Result<(Vec<Arc<rustls::sign::CertifiedKey>>, Vec<CertInfo>), ConfigError> {
    let mut keys = Vec::new();
    let mut infos = Vec::new();
    for (i, c) in certs.iter().enumerate() {
        let cpath = format!("{path}[{i}]");
        let (chain, key, info) = load_pair(c, &cpath)?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| err(format!("{cpath}.private_key"), format!("unusable private key: {e}")))?;
        let certified = rustls::sign::CertifiedKey::new(chain, signing);
        certified
            .keys_match()
            .map_err(|e| err(&cpath, format!("certificate and private key do not go together: {e}")))?;
        keys.push(Arc::new(certified));
        infos.push(info);
    }
    Ok((keys, infos))
}

fn alpn(common: &raw::CommonTlsContext, path: &str) -> Result<Vec<Vec<u8>>, ConfigError> {
    common
        .alpn_protocols
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if p.is_empty() || p.len() > 255 {
                Err(err(format!("{path}.alpn_protocols[{i}]"), "must be 1 to 255 bytes"))
            } else {
                Ok(p.as_bytes().to_vec())
            }
        })
        .collect()
}

fn versions(
    common: &raw::CommonTlsContext,
    path: &str,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, ConfigError> {
    use raw::TlsProtocol as P;
    let params = common.tls_params.as_ref();
    let ppath = format!("{path}.tls_params");
    let unsupported = |field: &str, v: P| {
        err(
            format!("{ppath}.{field}"),
            format!("{} is not supported: rustls speaks TLSv1_2 and TLSv1_3 only", v.as_str()),
        )
    };
    let min = match params.and_then(|p| p.tls_minimum_protocol_version).unwrap_or(P::Auto) {
        P::Auto | P::V1_2 => 2,
        P::V1_3 => 3,
        v @ (P::V1_0 | P::V1_1) => return Err(unsupported("tls_minimum_protocol_version", v)),
    };
    let max = match params.and_then(|p| p.tls_maximum_protocol_version).unwrap_or(P::Auto) {
        P::Auto | P::V1_3 => 3,
        P::V1_2 => 2,
        v @ (P::V1_0 | P::V1_1) => return Err(unsupported("tls_maximum_protocol_version", v)),
    };
    if min > max {
        return Err(err(format!("{ppath}.tls_minimum_protocol_version"), "is above tls_maximum_protocol_version"));
    }
    let mut out = Vec::new();
    if max >= 3 {
        out.push(&rustls::version::TLS13);
    }
    if min <= 2 {
        out.push(&rustls::version::TLS12);
    }
    Ok(out)
}

/// The ring provider, its TLS 1.2 suites cut down to `cipher_suites` if
/// given (Envoy's OpenSSL names, `[A|B]` groups allowed). TLS 1.3 suites are
/// not configurable, in Envoy as here.
fn provider(common: &raw::CommonTlsContext, path: &str) -> Result<Arc<CryptoProvider>, ConfigError> {
    let mut provider = rustls::crypto::ring::default_provider();
    // Envoy (BoringSSL) prefers AES-128-GCM; rustls lists AES-256 first. The
    // 128-bit suites are as safe in practice and cheaper per byte, so ringway
    // offers and picks them first too.
    provider.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        _ => 1,
    });
    let Some(params) = &common.tls_params else { return Ok(Arc::new(provider)) };
    if !params.ecdh_curves.is_empty() {
        let mut groups = Vec::new();
        for (i, curve) in params.ecdh_curves.iter().enumerate() {
            let want = match curve.as_str() {
                "X25519" => rustls::NamedGroup::X25519,
                "P-256" => rustls::NamedGroup::secp256r1,
                "P-384" => rustls::NamedGroup::secp384r1,
                other => {
                    return Err(err(
                        format!("{path}.tls_params.ecdh_curves[{i}]"),
                        format!("`{other}` is not supported; expected X25519, P-256 or P-384"),
                    ));
                }
            };
            if let Some(g) = provider.kx_groups.iter().find(|g| g.name() == want) {
                groups.push(*g);
            }
        }
        provider.kx_groups = groups;
    }
    if params.cipher_suites.is_empty() {
        return Ok(Arc::new(provider));
    }
    let mut chosen: Vec<SupportedCipherSuite> =
        provider.cipher_suites.iter().copied().filter(|s| matches!(s, SupportedCipherSuite::Tls13(_))).collect();
    for (i, entry) in params.cipher_suites.iter().enumerate() {
        let names = entry.trim_start_matches('[').trim_end_matches(']').split('|');
        for name in names {
            let Some(suite) = tls12_suite(name.trim()) else {
                return Err(err(
                    format!("{path}.tls_params.cipher_suites[{i}]"),
                    format!(
                        "`{name}` is not a cipher suite rustls implements; expected ECDHE with AES-GCM or CHACHA20-POLY1305"
                    ),
                ));
            };
            if let Some(s) = provider.cipher_suites.iter().find(|s| s.suite() == suite)
                && !chosen.contains(s)
            {
                chosen.push(*s);
            }
        }
    }
    provider.cipher_suites = chosen;
    Ok(Arc::new(provider))
}

fn tls12_suite(openssl_name: &str) -> Option<rustls::CipherSuite> {
    use rustls::CipherSuite as C;
    Some(match openssl_name {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES256-GCM-SHA384" => C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-CHACHA20-POLY1305" => C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256" => C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES256-GCM-SHA384" => C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-CHACHA20-POLY1305" => C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        _ => return None,
    })
}

fn san_matchers(vc: &raw::CertificateValidationContext, path: &str) -> Result<Vec<SanMatcher>, ConfigError> {
    let mut out = Vec::new();
    for (i, m) in vc.match_subject_alt_names.iter().enumerate() {
        let matcher = string_match(m, &format!("{path}.match_subject_alt_names[{i}]"))?;
        out.push(SanMatcher { kind: None, matcher });
    }
    for (i, m) in vc.match_typed_subject_alt_names.iter().enumerate() {
        let mpath = format!("{path}.match_typed_subject_alt_names[{i}]");
        let kind = match m.san_type {
            raw::SanType::Dns => SanKind::Dns,
            raw::SanType::Uri => SanKind::Uri,
            raw::SanType::Email => SanKind::Email,
            raw::SanType::IpAddress => SanKind::Ip,
            raw::SanType::OtherName => return Err(err(format!("{mpath}.san_type"), "OTHER_NAME is not supported")),
        };
        out.push(SanMatcher { kind: Some(kind), matcher: string_match(&m.matcher, &format!("{mpath}.matcher"))? });
    }
    for v in &vc.verify_subject_alt_name {
        let kind = crate::config::StringMatchKind::Exact(v.clone());
        out.push(SanMatcher { kind: None, matcher: crate::config::StringMatch { kind, ignore_case: false } });
    }
    Ok(out)
}
