//! The raw config model: serde structs that mirror Envoy's v3 bootstrap YAML
//! (plus the v2 spellings tutorials still use). Nothing here reaches the data
//! path; `validate` turns these into the `Snapshot` types.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::types::{PbDuration, envoy_enum};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
    #[serde(default)]
    pub static_resources: StaticResources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overload_manager: Option<OverloadManager>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub sub_zone: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub address: Address,
    /// Accepted for compatibility; ringway's admin access log is not written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_path: Option<String>,
    /// Accepted for compatibility; profiling is done with `perf` (see perf/).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_path: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub socket_address: SocketAddress,
}

envoy_enum! {
    pub enum SocketProtocol { Tcp = "TCP", Udp = "UDP" }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SocketAddress {
    pub address: String,
    /// Signed and wide so that out-of-range values reach validation and get
    /// a clear message instead of a type error.
    #[serde(default)]
    pub port_value: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<SocketProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_compat: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticResources {
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub clusters: Vec<Cluster>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub address: Address,
    #[serde(default)]
    pub filter_chains: Vec<FilterChain>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listener_filters: Vec<ListenerFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_filters_timeout: Option<PbDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_on_listener_filters_timeout: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_connection_buffer_limit_bytes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_backlog_size: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterChain {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_chain_match: Option<FilterChainMatch>,
    #[serde(default)]
    pub filters: Vec<Filter>,
    /// `envoy.transport_sockets.tls` with a `DownstreamTlsContext`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_socket: Option<TransportSocket>,
    /// v2 spelling: a `DownstreamTlsContext` directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_context: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_socket_connect_timeout: Option<PbDuration>,
}

/// `listener_filters[]`: only the TLS inspector is known.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFilter {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typed_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterChainMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub application_protocols: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<u32>,
}

/// A `transport_socket`: its settings are decoded once the name or `@type`
/// says which.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSocket {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typed_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

/// A network filter. Its settings arrive as `typed_config` (v3, with `@type`) or
/// `config` (v2) and are decoded once the filter is known.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typed_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProxy {
    pub stat_prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weighted_clusters: Option<WeightedClusters>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<PbDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connect_attempts: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedClusters {
    pub clusters: Vec<ClusterWeight>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterWeight {
    pub name: String,
    pub weight: u32,
}

envoy_enum! {
    pub enum DiscoveryType {
        Static = "STATIC",
        StrictDns = "STRICT_DNS",
        LogicalDns = "LOGICAL_DNS",
        Eds = "EDS",
        OriginalDst = "ORIGINAL_DST",
    }
}

envoy_enum! {
    pub enum LbPolicy {
        RoundRobin = "ROUND_ROBIN",
        LeastRequest = "LEAST_REQUEST",
        RingHash = "RING_HASH",
        Random = "RANDOM",
        Maglev = "MAGLEV",
        ClusterProvided = "CLUSTER_PROVIDED",
    }
}

envoy_enum! {
    pub enum DnsLookupFamily {
        Auto = "AUTO",
        V4Only = "V4_ONLY",
        V6Only = "V6_ONLY",
        V4Preferred = "V4_PREFERRED",
        All = "ALL",
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<DiscoveryType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<PbDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb_policy: Option<LbPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_assignment: Option<ClusterLoadAssignment>,
    /// v2 spelling of `load_assignment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<Address>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_lookup_family: Option<DnsLookupFamily>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_refresh_rate: Option<PbDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_connection_buffer_limit_bytes: Option<u32>,
    /// Deprecated in v3 for `typed_extension_protocol_options`, still common.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_http_protocol_options: Option<HttpProtocolOptions>,
    /// v2-era cluster-level spelling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// Upstream HTTP/2 (`{}`); accepted by name so the error can say why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_protocol_options: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_protocol_options: Option<Value>,
    /// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions` by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typed_extension_protocol_options: Option<serde_json::Map<String, Value>>,
    /// `envoy.transport_sockets.tls` with an `UpstreamTlsContext`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_socket: Option<TransportSocket>,
    /// v2 spelling: an `UpstreamTlsContext` directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_context: Option<Value>,
}

/// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamHttpProtocolOptions {
    #[serde(rename = "@type")]
    pub type_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_http_protocol_options: Option<HttpProtocolOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explicit_http_config: Option<ExplicitHttpConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExplicitHttpConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_protocol_options: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_protocol_options: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterLoadAssignment {
    #[serde(default)]
    pub cluster_name: String,
    #[serde(default)]
    pub endpoints: Vec<LocalityLbEndpoints>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalityLbEndpoints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
    #[serde(default)]
    pub lb_endpoints: Vec<LbEndpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing_weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LbEndpoint {
    pub endpoint: Endpoint,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing_weight: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub address: Address,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OverloadManager {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<PbDuration>,
    #[serde(default)]
    pub resource_monitors: Vec<ResourceMonitor>,
    /// Overload actions are not implemented yet; only an empty list is accepted.
    #[serde(default)]
    pub actions: Vec<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceMonitor {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typed_config: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DownstreamConnectionsConfig {
    pub max_active_downstream_connections: i64,
}

// ---- HTTP connection manager (envoy.filters.network.http_connection_manager)

envoy_enum! {
    pub enum CodecType { Auto = "AUTO", Http1 = "HTTP1", Http2 = "HTTP2", Http3 = "HTTP3" }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConnectionManager {
    pub stat_prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec_type: Option<CodecType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_config: Option<RouteConfiguration>,
    #[serde(default)]
    pub http_filters: Vec<HttpFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_headers_kb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers_timeout: Option<PbDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_idle_timeout: Option<PbDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_http_protocol_options: Option<HttpProtocolOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_remote_address: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_xff_append: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_request_id: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_log: Vec<AccessLog>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delayed_close_timeout: Option<PbDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xff_num_trusted_hops: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<PbDuration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upgrade_configs: Vec<UpgradeConfig>,
}

/// An access logger (`HttpConnectionManager.access_log[i]`). Its settings
/// arrive as `typed_config` (v3, with `@type`) or `config` (v2) and are
/// decoded once the logger is known (`access_log::validate_access_logs`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    #[serde(default)]
    pub name: String,
    /// Access log filters are refused (with this path) by validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typed_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

/// `envoy.extensions.access_loggers.file.v3.FileAccessLog`, and v2's
/// `envoy.config.accesslog.v2.FileAccessLog` (`format`, `json_format`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccessLog {
    #[serde(default)]
    pub path: String,
    /// v2; deprecated in v3 in favour of `log_format`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// v2; deprecated in v3 in favour of `log_format`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_format: Option<Value>,
    /// Deprecated; read as `json_format`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typed_json_format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<SubstitutionFormatString>,
}

/// `envoy.extensions.access_loggers.stream.v3.StdoutAccessLog` and `StderrAccessLog`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamAccessLog {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<SubstitutionFormatString>,
}

/// `envoy.config.core.v3.SubstitutionFormatString`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubstitutionFormatString {
    /// Deprecated in favour of `text_format_source`, still common.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_format_source: Option<DataSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omit_empty_values: Option<bool>,
    /// Accepted for compatibility; it matters only for local replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Formatter extensions; only an empty list is accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub formatters: Vec<Value>,
    /// Accepted for compatibility (`sort_properties`); keys are always sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_format_options: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProtocolOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<PbDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<PbDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_headers_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFilter {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typed_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfiguration {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHost>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_remove: Vec<String>,
}

/// A header to add (`request_headers_to_add` and friends).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValueOption {
    pub header: HeaderValue,
    /// v2-era: true (the default) appends, false overwrites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_action: Option<HeaderAppendAction>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValue {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

envoy_enum! {
    pub enum HeaderAppendAction {
        AppendIfExistsOrAdd = "APPEND_IF_EXISTS_OR_ADD",
        AddIfAbsent = "ADD_IF_ABSENT",
        OverwriteIfExistsOrAdd = "OVERWRITE_IF_EXISTS_OR_ADD",
        OverwriteIfExists = "OVERWRITE_IF_EXISTS",
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_remove: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub route_match: RouteMatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RedirectAction>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_remove: Vec<String>,
}

envoy_enum! {
    pub enum RedirectResponseCode {
        MovedPermanently = "MOVED_PERMANENTLY",
        Found = "FOUND",
        SeeOther = "SEE_OTHER",
        TemporaryRedirect = "TEMPORARY_REDIRECT",
        PermanentRedirect = "PERMANENT_REDIRECT",
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme_redirect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_redirect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_redirect: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_redirect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_code: Option<RedirectResponseCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_query: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_regex: Option<RegexMatcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_separated_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_sensitive: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatcher>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_parameters: Vec<QueryParameterMatcher>,
}

/// `match.headers[]`: one header's condition. Exactly one of the value
/// matchers (or none, meaning "present").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatcher {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_match: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_regex_match: Option<RegexMatcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_match: Option<Int64Range>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present_match: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_match: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix_match: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains_match: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_match: Option<StringMatcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invert_match: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub treat_missing_header_as_empty: Option<bool>,
}

/// `[start, end)`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Int64Range {
    #[serde(default)]
    pub start: i64,
    #[serde(default)]
    pub end: i64,
}

/// Envoy's `type.matcher.v3.StringMatcher`: one of the five.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StringMatcher {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_regex: Option<RegexMatcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_case: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParameterMatcher {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_match: Option<StringMatcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present_match: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegexMatcher {
    pub regex: String,
    /// Accepted for compatibility (`google_re2: {}`); the engine is Rust's regex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_re2: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weighted_clusters: Option<RouteWeightedClusters>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex_rewrite: Option<RegexMatchAndSubstitute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_host_rewrite: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<PbDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upgrade_configs: Vec<UpgradeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite_literal: Option<String>,
    /// v2 spelling of `host_rewrite_literal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<PbDuration>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<DataSource>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteWeightedClusters {
    pub clusters: Vec<RouteWeightedCluster>,
    /// v2-era; v3 sums the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_weight: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteWeightedCluster {
    pub name: String,
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_remove: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegexMatchAndSubstitute {
    pub pattern: RegexMatcher,
    pub substitution: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<PbDuration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retriable_status_codes: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_back_off: Option<RetryBackOff>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBackOff {
    pub base_interval: PbDuration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<PbDuration>,
}

/// `upgrade_configs[]` on the connection manager or a route.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeConfig {
    pub upgrade_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

// ---- TLS (envoy.transport_sockets.tls)

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DownstreamTlsContext {
    #[serde(rename = "@type", default, skip_serializing_if = "Option::is_none")]
    pub type_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_tls_context: Option<CommonTlsContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_client_certificate: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsContext {
    #[serde(rename = "@type", default, skip_serializing_if = "Option::is_none")]
    pub type_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_tls_context: Option<CommonTlsContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_renegotiation: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommonTlsContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_params: Option<TlsParameters>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<TlsCertificate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_context: Option<CertificateValidationContext>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn_protocols: Vec<String>,
}

envoy_enum! {
    pub enum TlsProtocol {
        Auto = "TLS_AUTO",
        V1_0 = "TLSv1_0",
        V1_1 = "TLSv1_1",
        V1_2 = "TLSv1_2",
        V1_3 = "TLSv1_3",
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsParameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_minimum_protocol_version: Option<TlsProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_maximum_protocol_version: Option<TlsProtocol>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ecdh_curves: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_chain: Option<DataSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<DataSource>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateValidationContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_ca: Option<DataSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_subject_alt_names: Vec<StringMatcher>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_typed_subject_alt_names: Vec<SubjectAltNameMatcher>,
    /// v2-era: exact SAN values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_subject_alt_name: Vec<String>,
}

envoy_enum! {
    pub enum SanType {
        Email = "EMAIL",
        Dns = "DNS",
        Uri = "URI",
        IpAddress = "IP_ADDRESS",
        OtherName = "OTHER_NAME",
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectAltNameMatcher {
    pub san_type: SanType,
    pub matcher: StringMatcher,
}
