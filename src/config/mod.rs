//! Configuration: Envoy bootstrap YAML → raw model (`raw`) → validated
//! `Snapshot` (`validate`), plus DNS resolution for STRICT_DNS clusters (`dns`).
//!
//! The pipeline is `parse_yaml` → `validate::validate` → `dns::resolve_all`;
//! `load_str` runs all three. The data path only ever sees `Snapshot`.

pub mod dns;
pub mod raw;
mod routes;
pub mod snapshot;
mod tls;
mod types;
pub mod validate;

use std::fmt;
use std::path::Path;

pub use snapshot::*;
pub use types::PbDuration;

/// Config files larger than this are refused before parsing.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// A config that cannot be used, and the field path it is about
/// (`static_resources.clusters[1].lb_policy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { path: path.into(), message: message.into() }
    }

    /// Serde reports an unknown field at its parent; move the field name into
    /// the path so the error reads `clusters[1].lb_polcy: unknown field`.
    pub(crate) fn from_serde(path: String, message: String) -> Self {
        if let Some(rest) = message.strip_prefix("unknown field `")
            && let Some((field, tail)) = rest.split_once('`')
        {
            let tail = tail.trim_start_matches(',').trim();
            let message = if tail.is_empty() { "unknown field".to_string() } else { format!("unknown field, {tail}") };
            let at_field = path.ends_with(&format!(".{field}")) || path == field;
            let path = if at_field { path } else { validate::join_path(&path, field) };
            return ConfigError { path, message };
        }
        ConfigError { path, message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

impl std::error::Error for ConfigError {}

/// Parses YAML (or JSON, which is YAML) into the raw model.
pub fn parse_yaml(text: &str) -> Result<raw::Bootstrap, ConfigError> {
    let value: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| ConfigError::new("", format!("invalid YAML: {e}")))?;
    if value.is_null() {
        return Err(ConfigError::new("", "the config is empty"));
    }
    if !value.is_object() {
        return Err(ConfigError::new("", "expected a mapping at the top level (a bootstrap config)"));
    }
    validate::decode(value, "")
}

/// Parses and validates, resolving STRICT_DNS clusters once.
pub fn load_str(text: &str, version: u64) -> Result<Snapshot, ConfigError> {
    let mut snapshot = check_str(text, version)?;
    dns::resolve_all(&mut snapshot, None);
    Ok(snapshot)
}

/// Parses and validates without resolving anything (`--mode validate`, tests):
/// STRICT_DNS clusters come back with no endpoints.
pub fn check_str(text: &str, version: u64) -> Result<Snapshot, ConfigError> {
    let mut snapshot = validate::validate(parse_yaml(text)?, version)?;
    snapshot.source = Some(text.into());
    Ok(snapshot)
}

/// Reads a config file, with a size limit, then `load_str`.
pub fn load_file(path: &Path, version: u64) -> Result<Snapshot, ConfigError> {
    let text = read_file(path)?;
    load_str(&text, version)
}

pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| ConfigError::new("", format!("cannot read {shown}: {e}")))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::new("", format!("{shown} is larger than {MAX_CONFIG_BYTES} bytes")));
    }
    std::fs::read_to_string(path).map_err(|e| ConfigError::new("", format!("cannot read {shown}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(yaml: &str) -> String {
        match load_str(yaml, 1) {
            Ok(_) => panic!("config should be rejected:\n{yaml}"),
            Err(e) => e.to_string(),
        }
    }

    const GOOD: &str = r#"
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: a
  clusters:
  - name: a
    type: STATIC
    connect_timeout: 0.25s
    load_assignment:
      cluster_name: a
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9000}}}
"#;

    #[test]
    fn a_good_config_loads() {
        let snap = load_str(GOOD, 1).unwrap();
        assert_eq!(snap.listeners[0].stat_name, "127.0.0.1_10000");
        assert_eq!(snap.clusters[0].connect_timeout, std::time::Duration::from_millis(250));
        assert_eq!(snap.clusters[0].endpoints[0].addr, "127.0.0.1:9000".parse().unwrap());
    }

    #[test]
    fn errors_name_the_field_path() {
        let cases = [
            (
                GOOD.replace("type: STATIC", "type: STATIC\n    lb_polcy: RANDOM"),
                "static_resources.clusters[0].lb_polcy: unknown field",
            ),
            (
                GOOD.replace("type: STATIC", "type: EDS"),
                "static_resources.clusters[0].type: cluster type EDS is not supported",
            ),
            (GOOD.replace("type: STATIC", "type: BOGUS"), "static_resources.clusters[0].type: unknown value `BOGUS`"),
            (
                GOOD.replace("cluster: a", "cluster: b"),
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.cluster: unknown cluster `b`",
            ),
            (
                GOOD.replace("port_value: 10000", "port_value: 70000"),
                "static_resources.listeners[0].address.socket_address.port_value: 70000 is out of range",
            ),
            (GOOD.replace("0.25s", "250ms"), "static_resources.clusters[0].connect_timeout: invalid duration `250ms`"),
            (
                GOOD.replace("stat_prefix: tcp", "stat_prefix: tcp\n          bogus: 1"),
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.bogus: unknown field",
            ),
            (
                GOOD.replace("envoy.filters.network.tcp_proxy\n", "envoy.filters.network.redis_proxy\n").replace(
                    "\"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "\"@type\": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy",
                ),
                "filters[0].name: network filter `type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy` is not supported",
            ),
            (
                GOOD.replace("address: 127.0.0.1, port_value: 9000", "address: backend.local, port_value: 9000"),
                "is not an IP address; a STATIC cluster needs IP literals",
            ),
        ];
        for (yaml, want) in cases {
            let got = error_of(&yaml);
            assert!(got.contains(want), "want `{want}` in `{got}`");
        }
    }

    #[test]
    fn duplicates_are_refused() {
        let dup_cluster = GOOD.to_string() + "  - name: a\n    load_assignment: {cluster_name: a, endpoints: []}\n";
        assert!(error_of(&dup_cluster).contains("static_resources.clusters[1].name: duplicate cluster name `a`"));
        let listener = &GOOD[GOOD.find("  - name: l").unwrap()..GOOD.find("  clusters:").unwrap()];
        let dup_addr = GOOD.replace("  clusters:", &format!("{}  clusters:", listener.replace("name: l", "name: m")));
        assert!(error_of(&dup_addr).contains("static_resources.listeners[1].address: 127.0.0.1:10000 is already used"));
    }

    #[test]
    fn v2_spellings_are_accepted() {
        let v2 = r#"
static_resources:
  listeners:
  - address: {socket_address: {address: "::1", port_value: 10001}}
    filter_chains:
    - filters:
      - name: envoy.tcp_proxy
        config: {stat_prefix: tcp, cluster: svc}
  clusters:
  - name: svc
    type: strict_dns
    lb_policy: random
    connect_timeout: 1s
    hosts: [{socket_address: {address: localhost, port_value: 9000}}]
"#;
        let snap = check_str(v2, 1).unwrap();
        assert_eq!(snap.listeners[0].stat_name, "[__1]_10001");
        assert_eq!(snap.clusters[0].lb, LbKind::Random);
        assert_eq!(snap.clusters[0].dns.as_ref().unwrap().targets[0].host, "localhost");
        // The effective config is written back in v3 spellings.
        let dump = snap.effective.to_string();
        assert!(dump.contains("load_assignment") && !dump.contains("\"hosts\""), "{dump}");
        assert!(dump.contains("tcp_proxy.v3.TcpProxy"), "{dump}");
    }
}
