//! Validation: the raw model (`raw`) becomes a `Snapshot` with durations as
//! `Duration`, names resolved to indices and every cross-reference checked.
//! Each error names the field path it is about.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ConfigError;
use super::raw;
use super::snapshot::*;
use super::types::PbDuration;

const TCP_PROXY_NAMES: &[&str] = &["envoy.filters.network.tcp_proxy", "envoy.tcp_proxy"];
const TCP_PROXY_TYPES: &[&str] = &[
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    "type.googleapis.com/envoy.config.filter.network.tcp_proxy.v2.TcpProxy",
];
const HCM_NAMES: &[&str] = &["envoy.filters.network.http_connection_manager", "envoy.http_connection_manager"];
const HCM_TYPES: &[&str] = &[
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "type.googleapis.com/envoy.config.filter.network.http_connection_manager.v2.HttpConnectionManager",
];
const ROUTER_NAMES: &[&str] = &["envoy.filters.http.router", "envoy.router"];
const ROUTER_TYPES: &[&str] = &["type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"];
const GLOBAL_CX_MONITOR: &str = "envoy.resource_monitors.global_downstream_max_connections";
const GLOBAL_CX_MONITOR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig";

/// Envoy's defaults where the file is silent.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_BUFFER_LIMIT: usize = 1024 * 1024;
const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(5);
/// Envoy's default backlog is the kernel's `somaxconn`; this is used where
/// it cannot be read.
const FALLBACK_BACKLOG: u32 = 4096;

fn default_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n: &u32| n > 0)
        .unwrap_or(FALLBACK_BACKLOG)
}

/// Decodes a JSON value into `T`, reporting errors under `path`.
pub(crate) fn decode<T: DeserializeOwned>(value: Value, path: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let inner = e.path().to_string();
        let full = join_path(path, if inner == "." { "" } else { &inner });
        ConfigError::from_serde(full, e.into_inner().to_string())
    })
}

pub(crate) fn join_path(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ if b.starts_with('[') => format!("{a}{b}"),
        _ => format!("{a}.{b}"),
    }
}

pub(super) fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(path, message)
}

/// Turns a parsed bootstrap into a snapshot. STRICT_DNS clusters come back with
/// no endpoints; the config thread resolves them (`dns::resolve_all`).
pub fn validate(mut bootstrap: raw::Bootstrap, version: u64) -> Result<Snapshot, ConfigError> {
    let node =
        bootstrap.node.as_ref().map(|n| NodeInfo { id: n.id.clone(), cluster: n.cluster.clone() }).unwrap_or_default();

    let admin = match &bootstrap.admin {
        Some(a) => Some(AdminConfig { addr: socket_addr(&a.address.socket_address, "admin.address.socket_address")? }),
        None => None,
    };

    let clusters = validate_clusters(&mut bootstrap.static_resources.clusters)?;
    let names: HashMap<&str, ClusterId> =
        clusters.iter().enumerate().map(|(i, c)| (c.name.as_str(), ClusterId(i))).collect();

    let mut listeners = Vec::new();
    let mut seen_names = HashSet::new();
    let mut seen_addrs: HashMap<SocketAddr, usize> = HashMap::new();
    for (i, l) in bootstrap.static_resources.listeners.iter_mut().enumerate() {
        let path = format!("static_resources.listeners[{i}]");
        let listener = validate_listener(l, &path, &names)?;
        if !seen_names.insert(listener.name.clone()) {
            return Err(err(format!("{path}.name"), format!("duplicate listener name `{}`", listener.name)));
        }
        if listener.addr.port() != 0
            && let Some(first) = seen_addrs.insert(listener.addr, i)
        {
            return Err(err(
                format!("{path}.address"),
                format!("{} is already used by static_resources.listeners[{first}]", listener.addr),
            ));
        }
        listeners.push(listener);
    }
    if let Some(admin) = &admin
        && let Some(l) = listeners.iter().find(|l| admin.addr.port() != 0 && l.addr == admin.addr)
    {
        return Err(err("admin.address", format!("{} is also listener `{}`", admin.addr, l.name)));
    }

    let overload = match &bootstrap.overload_manager {
        Some(om) => validate_overload(om)?,
        None => OverloadConfig::default(),
    };

    let effective =
        serde_json::to_value(&bootstrap).map_err(|e| err("", format!("cannot re-serialise config: {e}")))?;
    let mut watched_files = Vec::new();
    collect_filenames(&effective, &mut watched_files);
    Ok(Snapshot { version, node, admin, listeners, clusters, overload, effective, source: None, watched_files })
}

const TLS_INSPECTOR_NAMES: &[&str] = &["envoy.filters.listener.tls_inspector", "envoy.listener.tls_inspector"];
const TLS_INSPECTOR_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
/// Envoy's default `listener_filters_timeout`.
const DEFAULT_INSPECT_TIMEOUT: Duration = Duration::from_secs(15);

fn validate_listener(
    l: &mut raw::Listener,
    path: &str,
    clusters: &HashMap<&str, ClusterId>,
) -> Result<ListenerConfig, ConfigError> {
    let addr = socket_addr(&l.address.socket_address, &format!("{path}.address.socket_address"))?;
    let name = l.name.clone().unwrap_or_else(|| addr.to_string());
    if l.filter_chains.is_empty() {
        return Err(err(format!("{path}.filter_chains"), "a listener needs at least one filter chain"));
    }
    let mut tls_inspector = false;
    for (i, f) in l.listener_filters.iter().enumerate() {
        let fpath = format!("{path}.listener_filters[{i}]");
        let ty = f.typed_config.as_ref().or(f.config.as_ref()).and_then(|v| v.get("@type")).and_then(Value::as_str);
        let known = match ty {
            Some(t) => t == TLS_INSPECTOR_TYPE,
            None => TLS_INSPECTOR_NAMES.contains(&f.name.as_str()),
        };
        if !known {
            return Err(err(
                format!("{fpath}.name"),
                format!(
                    "listener filter `{}` is not supported; expected envoy.filters.listener.tls_inspector",
                    ty.unwrap_or(&f.name)
                ),
            ));
        }
        tls_inspector = true;
    }
    let mut filter_chains: Vec<FilterChainConfig> = Vec::new();
    for (ci, chain) in l.filter_chains.iter_mut().enumerate() {
        let chain_path = format!("{path}.filter_chains[{ci}]");
        let matcher = chain_match(chain.filter_chain_match.as_ref(), &format!("{chain_path}.filter_chain_match"))?;
        let inspects =
            !matcher.server_names.is_empty() || matcher.tls.is_some() || !matcher.application_protocols.is_empty();
        if inspects && !tls_inspector {
            return Err(err(
                format!("{chain_path}.filter_chain_match"),
                "server_names, transport_protocol and application_protocols need listener_filters: [envoy.filters.listener.tls_inspector]",
            ));
        }
        if let Some(j) = filter_chains.iter().position(|c| overlaps(&c.matcher, &matcher)) {
            return Err(err(
                format!("{chain_path}.filter_chain_match"),
                format!("matches the same connections as filter_chains[{j}]"),
            ));
        }
        if chain.filters.is_empty() {
            return Err(err(
                format!("{chain_path}.filters"),
                "a filter chain needs a terminal filter such as tcp_proxy",
            ));
        }
        if chain.filters.len() > 1 {
            return Err(err(
                format!("{chain_path}.filters[1]"),
                "only one network filter (the terminal tcp_proxy or http_connection_manager) is supported per chain",
            ));
        }
        let terminal = validate_network_filter(&mut chain.filters[0], &format!("{chain_path}.filters[0]"), clusters)?;
        let handshake_timeout = match chain.transport_socket_connect_timeout {
            Some(d) if d.0.is_zero() => Duration::from_secs(86_400),
            Some(d) => d.0,
            None => crate::tls::HANDSHAKE_TIMEOUT,
        };
        let tls = super::tls::downstream(
            chain.transport_socket.as_ref(),
            chain.tls_context.as_ref(),
            &chain_path,
            handshake_timeout,
        )?;
        filter_chains.push(FilterChainConfig { name: chain.name.clone().unwrap_or_default(), matcher, terminal, tls });
    }
    let buffer_limit = l.per_connection_buffer_limit_bytes.map_or(DEFAULT_BUFFER_LIMIT, |b| b as usize);
    if buffer_limit == 0 {
        return Err(err(format!("{path}.per_connection_buffer_limit_bytes"), "must be greater than 0"));
    }
    let backlog = match l.tcp_backlog_size {
        Some(0) => return Err(err(format!("{path}.tcp_backlog_size"), "must be at least 1")),
        Some(n) => n,
        None => default_backlog(),
    };
    let ipv6_only = addr.is_ipv6() && !l.address.socket_address.ipv4_compat.unwrap_or(false);
    let inspect_timeout = match l.listener_filters_timeout {
        Some(d) if d.0.is_zero() => Duration::from_secs(86_400),
        Some(d) => d.0,
        None => DEFAULT_INSPECT_TIMEOUT,
    };
    Ok(ListenerConfig {
        name,
        addr,
        stat_name: stat_name_for(&addr),
        buffer_limit,
        backlog,
        ipv6_only,
        filter_chains,
        tls_inspector,
        inspect_timeout,
        continue_on_inspect_timeout: l.continue_on_listener_filters_timeout.unwrap_or(false),
    })
}

/// Whether two chains would claim the same connections (Envoy refuses
/// that): equal on every field but server names, and sharing a server name
/// (or both without any).
fn overlaps(a: &ChainMatch, b: &ChainMatch) -> bool {
    let same_set = |x: &[String], y: &[String]| x.iter().all(|v| y.contains(v)) && y.iter().all(|v| x.contains(v));
    a.destination_port == b.destination_port
        && a.tls == b.tls
        && same_set(&a.application_protocols, &b.application_protocols)
        && ((a.server_names.is_empty() && b.server_names.is_empty())
            || a.server_names.iter().any(|n| b.server_names.contains(n)))
}

fn chain_match(m: Option<&raw::FilterChainMatch>, path: &str) -> Result<ChainMatch, ConfigError> {
    let Some(m) = m else { return Ok(ChainMatch::default()) };
    let mut server_names = Vec::new();
    for (i, n) in m.server_names.iter().enumerate() {
        let lower = n.to_ascii_lowercase();
        let body = lower.strip_prefix("*.").unwrap_or(&lower);
        if body.is_empty()
            || body.contains('*')
            || !body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(err(
                format!("{path}.server_names[{i}]"),
                format!("`{n}` is not a host name (a leading `*.` is the only wildcard)"),
            ));
        }
        server_names.push(lower);
    }
    let tls = match m.transport_protocol.as_deref() {
        None | Some("") => None,
        Some("tls") => Some(true),
        Some("raw_buffer") => Some(false),
        Some(other) => {
            return Err(err(format!("{path}.transport_protocol"), format!("`{other}`: expected tls or raw_buffer")));
        }
    };
    let destination_port = match m.destination_port {
        None => None,
        Some(p) => Some(
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| err(format!("{path}.destination_port"), "must be in 1..=65535"))?,
        ),
    };
    Ok(ChainMatch { server_names, tls, application_protocols: m.application_protocols.clone(), destination_port })
}

/// Reads a filter's settings from `typed_config` (v3) or `config` (v2) and
/// rewrites the raw filter into the v3 spelling for `/config_dump`.
fn filter_settings(f: &mut raw::Filter, path: &str, known_types: &[&str]) -> Result<(Value, String), ConfigError> {
    let (mut value, field) = match (f.typed_config.take(), f.config.take()) {
        (Some(_), Some(_)) => {
            return Err(err(format!("{path}.config"), "give either typed_config or config, not both"));
        }
        (Some(v), None) => (v, "typed_config"),
        (None, Some(v)) => (v, "config"),
        (None, None) => (Value::Object(Default::default()), "typed_config"),
    };
    let field_path = format!("{path}.{field}");
    let Value::Object(map) = &mut value else {
        return Err(err(field_path, "expected a mapping"));
    };
    match map.remove("@type") {
        Some(Value::String(t)) if !known_types.contains(&t.as_str()) => {
            return Err(err(
                format!("{field_path}.@type"),
                format!("`{t}` does not match filter `{}`; expected {}", f.name, known_types[0]),
            ));
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err(err(format!("{field_path}.@type"), "expected a type URL string")),
        // v3 `typed_config` is a protobuf Any and must say its type; v2
        // `config` never did.
        None if field == "typed_config" => {
            return Err(err(format!("{field_path}.@type"), format!("missing; expected {}", known_types[0])));
        }
        None => {}
    }
    let settings = value.clone();
    if let Value::Object(m) = &mut value {
        m.insert("@type".into(), Value::String(known_types[0].into()));
    }
    f.typed_config = Some(value);
    Ok((settings, field_path))
}

fn filter_type(f: &raw::Filter) -> Option<&str> {
    f.typed_config.as_ref().or(f.config.as_ref())?.get("@type")?.as_str()
}

fn validate_network_filter(
    f: &mut raw::Filter,
    path: &str,
    clusters: &HashMap<&str, ClusterId>,
) -> Result<NetworkFilter, ConfigError> {
    let known = |names: &[&str], types: &[&str]| match filter_type(f) {
        Some(t) => types.contains(&t),
        None => names.contains(&f.name.as_str()),
    };
    if known(HCM_NAMES, HCM_TYPES) {
        let (settings, settings_path) = filter_settings(f, path, HCM_TYPES)?;
        return validate_hcm(settings, &settings_path, clusters).map(NetworkFilter::HttpConnectionManager);
    }
    if !known(TCP_PROXY_NAMES, TCP_PROXY_TYPES) {
        let what = filter_type(f).map_or_else(|| f.name.clone(), str::to_string);
        return Err(err(
            format!("{path}.name"),
            format!(
                "network filter `{what}` is not supported; expected envoy.filters.network.tcp_proxy or envoy.filters.network.http_connection_manager"
            ),
        ));
    }
    let (settings, settings_path) = filter_settings(f, path, TCP_PROXY_TYPES)?;
    let tp: raw::TcpProxy = decode(settings, &settings_path)?;
    if tp.stat_prefix.is_empty() {
        return Err(err(format!("{settings_path}.stat_prefix"), "must not be empty"));
    }
    let route = match (&tp.cluster, &tp.weighted_clusters) {
        (Some(_), Some(_)) => {
            return Err(err(format!("{settings_path}.weighted_clusters"), "give either cluster or weighted_clusters"));
        }
        (Some(name), None) => TcpRoute::Cluster(cluster_ref(clusters, name, &format!("{settings_path}.cluster"))?),
        (None, Some(w)) => {
            if w.clusters.is_empty() {
                return Err(err(format!("{settings_path}.weighted_clusters.clusters"), "must not be empty"));
            }
            let mut out = Vec::new();
            let mut total: u64 = 0;
            for (i, c) in w.clusters.iter().enumerate() {
                let p = format!("{settings_path}.weighted_clusters.clusters[{i}]");
                let id = cluster_ref(clusters, &c.name, &format!("{p}.name"))?;
                if c.weight == 0 {
                    return Err(err(format!("{p}.weight"), "must be at least 1"));
                }
                total += u64::from(c.weight);
                out.push((id, c.weight));
            }
            TcpRoute::Weighted { clusters: out, total_weight: total }
        }
        (None, None) => {
            return Err(err(format!("{settings_path}.cluster"), "missing: give cluster or weighted_clusters"));
        }
    };
    let idle_timeout = match tp.idle_timeout {
        None => Some(DEFAULT_TCP_IDLE_TIMEOUT),
        Some(d) if d.0.is_zero() => None,
        Some(d) => Some(d.0),
    };
    let max_connect_attempts = tp.max_connect_attempts.unwrap_or(1);
    if max_connect_attempts == 0 {
        return Err(err(format!("{settings_path}.max_connect_attempts"), "must be at least 1"));
    }
    Ok(NetworkFilter::TcpProxy(TcpProxyConfig {
        stat_prefix: tp.stat_prefix,
        route,
        idle_timeout,
        max_connect_attempts,
    }))
}

/// Envoy's HTTP defaults where the file is silent.
const DEFAULT_MAX_HEADERS_KB: u32 = 60;
const DEFAULT_MAX_HEADERS: u32 = 100;
const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Envoy has no request_headers_timeout by default; ringway bounds every
/// wait, so a head that never completes is answered 408 after this.
const DEFAULT_REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(60);
/// Envoy's `delayed_close_timeout` default.
const DEFAULT_DELAYED_CLOSE: Duration = Duration::from_secs(1);

fn validate_hcm(settings: Value, path: &str, clusters: &HashMap<&str, ClusterId>) -> Result<HcmConfig, ConfigError> {
    let hcm: raw::HttpConnectionManager = decode(settings, path)?;
    if hcm.stat_prefix.is_empty() {
        return Err(err(format!("{path}.stat_prefix"), "must not be empty"));
    }
    match hcm.codec_type.unwrap_or(raw::CodecType::Auto) {
        raw::CodecType::Auto | raw::CodecType::Http1 => {}
        other => {
            return Err(err(
                format!("{path}.codec_type"),
                format!("{} is not supported yet; expected AUTO or HTTP1", other.as_str()),
            ));
        }
    }
    // The router must be the last (and for now the only) HTTP filter.
    if hcm.http_filters.is_empty() {
        return Err(err(format!("{path}.http_filters"), "must end with envoy.filters.http.router"));
    }
    for (i, f) in hcm.http_filters.iter().enumerate() {
        let fpath = format!("{path}.http_filters[{i}]");
        let ty = f.typed_config.as_ref().or(f.config.as_ref()).and_then(|v| v.get("@type")).and_then(Value::as_str);
        let is_router = match ty {
            Some(t) => ROUTER_TYPES.contains(&t),
            None => ROUTER_NAMES.contains(&f.name.as_str()),
        };
        if !is_router {
            return Err(err(
                format!("{fpath}.name"),
                format!("HTTP filter `{}` is not supported; expected envoy.filters.http.router", ty.unwrap_or(&f.name)),
            ));
        }
        if i + 1 != hcm.http_filters.len() {
            return Err(err(fpath, "the router must be the last HTTP filter"));
        }
    }
    let Some(rc) = &hcm.route_config else {
        return Err(err(
            format!("{path}.route_config"),
            "missing: give an inline route_config (RDS is not supported yet)",
        ));
    };
    let mut upgrades: Vec<String> = Vec::new();
    for (i, u) in hcm.upgrade_configs.iter().enumerate() {
        let ty = super::routes::upgrade_type(u, &format!("{path}.upgrade_configs[{i}]"))?;
        if u.enabled.unwrap_or(true) && !upgrades.contains(&ty) {
            upgrades.push(ty);
        }
    }
    let defaults = super::routes::HcmDefaults { upgrades: &upgrades };
    let routes = super::routes::validate_routes(rc, &format!("{path}.route_config"), clusters, &defaults)?;
    if let Some(v) = &hcm.via
        && (v.is_empty() || v.bytes().any(|b| b.is_ascii_control()))
    {
        return Err(err(format!("{path}.via"), "must be a non-empty header value without control characters"));
    }
    let opts = hcm.common_http_protocol_options.as_ref();
    let kb = hcm.max_request_headers_kb.unwrap_or(DEFAULT_MAX_HEADERS_KB);
    if kb == 0 || kb > 8192 {
        return Err(err(format!("{path}.max_request_headers_kb"), "must be in 1..=8192"));
    }
    let max_headers = opts.and_then(|o| o.max_headers_count).unwrap_or(DEFAULT_MAX_HEADERS);
    if max_headers == 0 {
        return Err(err(format!("{path}.common_http_protocol_options.max_headers_count"), "must be at least 1"));
    }
    // `0s` disables a timeout in Envoy; ringway keeps a bound on every wait,
    // so disabled means a day.
    let or_day = |d: Option<PbDuration>, default: Duration| match d {
        Some(d) if d.0.is_zero() => Duration::from_secs(86_400),
        Some(d) => d.0,
        None => default,
    };
    Ok(HcmConfig {
        stat_prefix: hcm.stat_prefix.clone(),
        routes,
        max_head_bytes: kb as usize * 1024,
        max_headers: max_headers as usize,
        request_headers_timeout: or_day(hcm.request_headers_timeout, DEFAULT_REQUEST_HEADERS_TIMEOUT),
        idle_timeout: or_day(opts.and_then(|o| o.idle_timeout), DEFAULT_HTTP_IDLE_TIMEOUT),
        stream_idle_timeout: or_day(hcm.stream_idle_timeout, DEFAULT_STREAM_IDLE_TIMEOUT),
        max_requests_per_connection: opts.and_then(|o| o.max_requests_per_connection).filter(|&n| n > 0),
        use_remote_address: hcm.use_remote_address.unwrap_or(false),
        skip_xff_append: hcm.skip_xff_append.unwrap_or(false),
        generate_request_id: hcm.generate_request_id.unwrap_or(true),
        server_name: hcm.server_name.clone().unwrap_or_else(|| "ringway".to_string()),
        access_logs: crate::access_log::validate_access_logs(&hcm.access_log, &format!("{path}.access_log"))?,
        via: hcm.via.clone(),
        delayed_close: hcm.delayed_close_timeout.map_or(DEFAULT_DELAYED_CLOSE, |d| d.0),
        xff_num_trusted_hops: hcm.xff_num_trusted_hops.unwrap_or(0),
        request_timeout: hcm.request_timeout.map(|d| d.0).filter(|d| !d.is_zero()),
        max_connection_duration: opts.and_then(|o| o.max_connection_duration).map(|d| d.0).filter(|d| !d.is_zero()),
    })
}

const UPSTREAM_HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const UPSTREAM_HTTP_OPTIONS_TYPE: &str = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// A cluster's upstream HTTP settings, from any of Envoy's three spellings.
fn upstream_http(c: &raw::Cluster, path: &str) -> Result<UpstreamHttpConfig, ConfigError> {
    let h2 = "upstream HTTP/2 is not supported yet; ringway speaks HTTP/1.1 to upstreams";
    if c.http2_protocol_options.is_some() {
        return Err(err(format!("{path}.http2_protocol_options"), h2));
    }
    let mut common = c.common_http_protocol_options.clone();
    let mut common_path = format!("{path}.common_http_protocol_options");
    if let Some(map) = &c.typed_extension_protocol_options {
        for (key, value) in map {
            let kpath = format!("{path}.typed_extension_protocol_options.{key}");
            if key != UPSTREAM_HTTP_OPTIONS {
                return Err(err(kpath, format!("not supported; expected {UPSTREAM_HTTP_OPTIONS}")));
            }
            let opts: raw::UpstreamHttpProtocolOptions = decode(value.clone(), &kpath)?;
            if opts.type_url != UPSTREAM_HTTP_OPTIONS_TYPE {
                return Err(err(format!("{kpath}.@type"), format!("expected {UPSTREAM_HTTP_OPTIONS_TYPE}")));
            }
            if opts.explicit_http_config.as_ref().is_some_and(|e| e.http2_protocol_options.is_some()) {
                return Err(err(format!("{kpath}.explicit_http_config.http2_protocol_options"), h2));
            }
            if let Some(o) = opts.common_http_protocol_options {
                if common.is_some() {
                    return Err(err(
                        format!("{kpath}.common_http_protocol_options"),
                        "also given on the cluster; give it in one place",
                    ));
                }
                common = Some(o);
                common_path = format!("{kpath}.common_http_protocol_options");
            }
        }
    }
    let mut out = UpstreamHttpConfig::default();
    if let Some(o) = &common {
        if o.max_headers_count.is_some() {
            return Err(err(format!("{common_path}.max_headers_count"), "not supported for upstream connections"));
        }
        if let Some(d) = o.idle_timeout {
            // 0s disables it in Envoy; every wait here has a bound.
            out.idle_timeout = if d.0.is_zero() { Duration::from_secs(86_400) } else { d.0 };
        }
        out.max_connection_duration = o.max_connection_duration.map(|d| d.0).filter(|d| !d.is_zero());
        out.max_requests_per_connection = o.max_requests_per_connection.filter(|&n| n > 0);
    }
    if let Some(n) = c.max_requests_per_connection.filter(|&n| n > 0) {
        if out.max_requests_per_connection.is_some() {
            return Err(err(
                format!("{path}.max_requests_per_connection"),
                "also given in common_http_protocol_options; give it in one place",
            ));
        }
        out.max_requests_per_connection = Some(n);
    }
    Ok(out)
}

/// Every `filename` of a data source in the config (certificates, keys,
/// CAs: the only data sources read from files).
fn collect_filenames(v: &Value, out: &mut Vec<std::path::PathBuf>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("filename", Value::String(f)) => {
                        let p = std::path::PathBuf::from(f);
                        if !out.contains(&p) {
                            out.push(p);
                        }
                    }
                    _ => collect_filenames(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_filenames(i, out)),
        _ => {}
    }
}

pub(super) fn cluster_ref(
    clusters: &HashMap<&str, ClusterId>,
    name: &str,
    path: &str,
) -> Result<ClusterId, ConfigError> {
    clusters.get(name).copied().ok_or_else(|| {
        err(path, format!("unknown cluster `{name}`: no cluster of that name in static_resources.clusters"))
    })
}

fn validate_clusters(raw_clusters: &mut [raw::Cluster]) -> Result<Vec<ClusterConfig>, ConfigError> {
    let mut out: Vec<ClusterConfig> = Vec::new();
    for (i, c) in raw_clusters.iter_mut().enumerate() {
        let path = format!("static_resources.clusters[{i}]");
        if c.name.is_empty() {
            return Err(err(format!("{path}.name"), "must not be empty"));
        }
        if let Some(j) = out.iter().position(|o| o.name == c.name) {
            return Err(err(
                format!("{path}.name"),
                format!("duplicate cluster name `{}` (also static_resources.clusters[{j}])", c.name),
            ));
        }
        out.push(validate_cluster(c, &path)?);
    }
    Ok(out)
}

fn validate_cluster(c: &mut raw::Cluster, path: &str) -> Result<ClusterConfig, ConfigError> {
    let kind = match c.kind.unwrap_or(raw::DiscoveryType::Static) {
        raw::DiscoveryType::Static => ClusterKind::Static,
        raw::DiscoveryType::StrictDns => ClusterKind::StrictDns,
        other => {
            return Err(err(
                format!("{path}.type"),
                format!("cluster type {} is not supported yet; expected STATIC or STRICT_DNS", other.as_str()),
            ));
        }
    };
    let lb = match c.lb_policy.unwrap_or(raw::LbPolicy::RoundRobin) {
        raw::LbPolicy::RoundRobin => LbKind::RoundRobin,
        raw::LbPolicy::Random => LbKind::Random,
        other => {
            return Err(err(
                format!("{path}.lb_policy"),
                format!("lb_policy {} is not supported yet; expected ROUND_ROBIN or RANDOM", other.as_str()),
            ));
        }
    };
    let connect_timeout = c.connect_timeout.map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0);
    if connect_timeout.is_zero() {
        return Err(err(format!("{path}.connect_timeout"), "must be greater than 0s"));
    }
    let family = match c.dns_lookup_family.unwrap_or(raw::DnsLookupFamily::Auto) {
        raw::DnsLookupFamily::Auto => DnsFamily::Auto,
        raw::DnsLookupFamily::V4Only => DnsFamily::V4Only,
        raw::DnsLookupFamily::V6Only => DnsFamily::V6Only,
        raw::DnsLookupFamily::V4Preferred => DnsFamily::V4Preferred,
        raw::DnsLookupFamily::All => DnsFamily::All,
    };
    let refresh_rate = c.dns_refresh_rate.map_or(DEFAULT_DNS_REFRESH, |d| d.0);
    if kind == ClusterKind::StrictDns && refresh_rate < Duration::from_millis(1) {
        return Err(err(format!("{path}.dns_refresh_rate"), "must be at least 1ms"));
    }

    // v2 `hosts:` becomes a v3 load_assignment.
    let la_path;
    if let Some(hosts) = c.hosts.take() {
        if c.load_assignment.is_some() {
            return Err(err(format!("{path}.hosts"), "give either hosts (v2) or load_assignment, not both"));
        }
        la_path = format!("{path}.hosts");
        c.load_assignment = Some(raw::ClusterLoadAssignment {
            cluster_name: c.name.clone(),
            endpoints: vec![raw::LocalityLbEndpoints {
                locality: None,
                lb_endpoints: hosts
                    .into_iter()
                    .map(|address| raw::LbEndpoint {
                        endpoint: raw::Endpoint { address, hostname: None },
                        load_balancing_weight: None,
                    })
                    .collect(),
                load_balancing_weight: None,
                priority: None,
            }],
        });
    } else {
        la_path = format!("{path}.load_assignment");
    }

    let mut endpoints = Vec::new();
    let mut targets = Vec::new();
    if let Some(la) = &c.load_assignment {
        for (li, loc) in la.endpoints.iter().enumerate() {
            for (ei, lbe) in loc.lb_endpoints.iter().enumerate() {
                let ep_path = if la_path.ends_with("hosts") {
                    format!("{la_path}[{ei}].socket_address")
                } else {
                    format!("{la_path}.endpoints[{li}].lb_endpoints[{ei}].endpoint.address.socket_address")
                };
                let weight = lbe.load_balancing_weight.unwrap_or(1);
                if weight == 0 {
                    return Err(err(
                        format!("{la_path}.endpoints[{li}].lb_endpoints[{ei}].load_balancing_weight"),
                        "must be at least 1",
                    ));
                }
                let sa = &lbe.endpoint.address.socket_address;
                let port = port_of(sa, &ep_path)?;
                if port == 0 {
                    return Err(err(format!("{ep_path}.port_value"), "an upstream endpoint needs a port in 1..=65535"));
                }
                match kind {
                    ClusterKind::Static => {
                        let ip: IpAddr = sa.address.parse().map_err(|_| {
                            err(
                                format!("{ep_path}.address"),
                                format!("`{}` is not an IP address; a STATIC cluster needs IP literals (use STRICT_DNS for host names)", sa.address),
                            )
                        })?;
                        endpoints.push(EndpointConfig { addr: SocketAddr::new(ip, port), weight, hostname: None });
                    }
                    ClusterKind::StrictDns => {
                        if sa.address.is_empty() {
                            return Err(err(format!("{ep_path}.address"), "must not be empty"));
                        }
                        targets.push(DnsTarget { host: sa.address.clone(), port, weight });
                    }
                }
            }
        }
    }
    let dns = (kind == ClusterKind::StrictDns).then(|| DnsConfig {
        resolved: vec![Vec::new(); targets.len()],
        targets,
        refresh_rate,
        family,
    });
    let buffer_limit = c.per_connection_buffer_limit_bytes.map_or(DEFAULT_BUFFER_LIMIT, |b| b as usize);
    if buffer_limit == 0 {
        return Err(err(format!("{path}.per_connection_buffer_limit_bytes"), "must be greater than 0"));
    }
    let http = upstream_http(c, path)?;
    let tls = super::tls::upstream(c.transport_socket.as_ref(), c.tls_context.as_ref(), path)?;
    Ok(ClusterConfig { name: c.name.clone(), kind, connect_timeout, lb, buffer_limit, endpoints, dns, http, tls })
}

fn port_of(sa: &raw::SocketAddress, path: &str) -> Result<u16, ConfigError> {
    if let Some(p) = sa.protocol
        && p != raw::SocketProtocol::Tcp
    {
        return Err(err(format!("{path}.protocol"), "only TCP is supported"));
    }
    u16::try_from(sa.port_value).map_err(|_| {
        err(format!("{path}.port_value"), format!("{} is out of range; expected 0..=65535", sa.port_value))
    })
}

/// A bind address: an IP literal and a port.
fn socket_addr(sa: &raw::SocketAddress, path: &str) -> Result<SocketAddr, ConfigError> {
    let port = port_of(sa, path)?;
    let ip: IpAddr = sa.address.parse().map_err(|_| {
        err(
            format!("{path}.address"),
            format!("`{}` is not an IP address; expected e.g. 0.0.0.0, 127.0.0.1 or ::", sa.address),
        )
    })?;
    Ok(SocketAddr::new(ip, port))
}

fn validate_overload(om: &raw::OverloadManager) -> Result<OverloadConfig, ConfigError> {
    if !om.actions.is_empty() {
        return Err(err("overload_manager.actions", "overload actions are not supported yet"));
    }
    let mut cfg = OverloadConfig::default();
    for (i, m) in om.resource_monitors.iter().enumerate() {
        let path = format!("overload_manager.resource_monitors[{i}]");
        if m.name != GLOBAL_CX_MONITOR {
            return Err(err(
                format!("{path}.name"),
                format!("resource monitor `{}` is not supported; expected {GLOBAL_CX_MONITOR}", m.name),
            ));
        }
        let mut value = m.typed_config.clone().unwrap_or(Value::Object(Default::default()));
        let tpath = format!("{path}.typed_config");
        if let Value::Object(map) = &mut value {
            match map.remove("@type") {
                Some(Value::String(t)) if t == GLOBAL_CX_MONITOR_TYPE => {}
                None => {}
                Some(other) => {
                    return Err(err(format!("{tpath}.@type"), format!("{other} is not {GLOBAL_CX_MONITOR_TYPE}")));
                }
            }
        }
        let dc: raw::DownstreamConnectionsConfig = decode(value, &tpath)?;
        if dc.max_active_downstream_connections <= 0 {
            return Err(err(format!("{tpath}.max_active_downstream_connections"), "must be greater than 0"));
        }
        cfg.max_downstream_connections = Some(dc.max_active_downstream_connections as u64);
    }
    Ok(cfg)
}
