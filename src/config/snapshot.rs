//! The validated, immutable configuration the data path runs on. One `Snapshot`
//! is published to every worker at a time; connections keep the one they
//! started with.

use std::net::SocketAddr;
use std::time::Duration;

/// Index of a cluster in `Snapshot::clusters`; names are resolved at validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterId(pub usize);

#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Increases by one with every publish (reload or DNS change).
    pub version: u64,
    pub node: NodeInfo,
    pub admin: Option<AdminConfig>,
    pub listeners: Vec<ListenerConfig>,
    pub clusters: Vec<ClusterConfig>,
    pub overload: OverloadConfig,
    /// The effective config, normalised to v3 spellings, for `/config_dump`.
    pub effective: serde_json::Value,
}

impl Snapshot {
    pub fn cluster(&self, id: ClusterId) -> &ClusterConfig {
        &self.clusters[id.0]
    }

    pub fn cluster_by_name(&self, name: &str) -> Option<ClusterId> {
        self.clusters.iter().position(|c| c.name == name).map(ClusterId)
    }
}

#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub id: String,
    pub cluster: String,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Default)]
pub struct OverloadConfig {
    /// `envoy.resource_monitors.global_downstream_max_connections`.
    pub max_downstream_connections: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub addr: SocketAddr,
    /// The address as Envoy writes it in stat names: `127.0.0.1_10000`.
    pub stat_name: String,
    pub buffer_limit: usize,
    pub backlog: u32,
    /// IPv6 listeners refuse IPv4-mapped peers unless `ipv4_compat`.
    pub ipv6_only: bool,
    pub filter_chain: FilterChainConfig,
}

#[derive(Debug, Clone)]
pub struct FilterChainConfig {
    pub name: String,
    /// The terminal network filter; the chain's only filter for now.
    pub terminal: NetworkFilter,
}

#[derive(Debug, Clone)]
pub enum NetworkFilter {
    TcpProxy(TcpProxyConfig),
    HttpConnectionManager(HcmConfig),
}

impl NetworkFilter {
    pub fn name(&self) -> &'static str {
        match self {
            NetworkFilter::TcpProxy(_) => "envoy.filters.network.tcp_proxy",
            NetworkFilter::HttpConnectionManager(_) => "envoy.filters.network.http_connection_manager",
        }
    }
}

/// `envoy.filters.network.http_connection_manager` with the router filter.
#[derive(Debug, Clone)]
pub struct HcmConfig {
    pub stat_prefix: String,
    pub routes: RouteTable,
    pub max_head_bytes: usize,
    pub max_headers: usize,
    /// From a connection's first byte (or the end of its last request) to a
    /// complete request head.
    pub request_headers_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// No bytes either way on a request in flight for this long: 408 or reset.
    pub stream_idle_timeout: Duration,
    pub max_requests_per_connection: Option<u32>,
    pub use_remote_address: bool,
    pub skip_xff_append: bool,
    pub generate_request_id: bool,
    pub server_name: String,
}

#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    pub virtual_hosts: Vec<VirtualHostConfig>,
}

#[derive(Debug, Clone)]
pub struct VirtualHostConfig {
    pub name: String,
    pub domains: Vec<DomainMatch>,
    pub routes: Vec<RouteEntry>,
}

/// A `domains` entry: `example.com`, `*.example.com`, `example.*` or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainMatch {
    Exact(String),
    /// `*.example.com`: stores `.example.com`.
    Suffix(String),
    /// `example.*`: stores `example.`.
    Prefix(String),
    Any,
}

#[derive(Debug, Clone)]
pub struct RouteEntry {
    pub path: PathMatch,
    pub case_sensitive: bool,
    pub action: RouteActionConfig,
    /// Route, then virtual host, then route-config header changes, in
    /// Envoy's order, for requests sent upstream.
    pub request_headers: HeaderMutations,
    /// The same for responses from upstream.
    pub response_headers: HeaderMutations,
}

/// Headers to remove, then headers to add, names lower-cased.
#[derive(Debug, Clone, Default)]
pub struct HeaderMutations {
    pub remove: Vec<String>,
    pub add: Vec<HeaderAdd>,
}

impl HeaderMutations {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct HeaderAdd {
    pub name: String,
    pub value: String,
    pub action: AppendAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// Must match the whole path (query excluded).
    Regex(regex::Regex),
}

#[derive(Debug, Clone)]
pub enum RouteActionConfig {
    Cluster {
        cluster: ClusterId,
        prefix_rewrite: Option<String>,
        host_rewrite: Option<String>,
        /// Whole upstream exchange; `None` when disabled (`0s`).
        timeout: Option<Duration>,
    },
    Direct {
        status: u16,
        body: String,
    },
    Redirect(RedirectConfig),
}

/// A `redirect` route action: each field replaces that part of the request's
/// URL in the `location` it answers with.
#[derive(Debug, Clone)]
pub struct RedirectConfig {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub status: u16,
    pub strip_query: bool,
}

#[derive(Debug, Clone)]
pub struct TcpProxyConfig {
    pub stat_prefix: String,
    pub route: TcpRoute,
    /// `None` when the timeout is disabled (`0s`).
    pub idle_timeout: Option<Duration>,
    pub max_connect_attempts: u32,
}

#[derive(Debug, Clone)]
pub enum TcpRoute {
    Cluster(ClusterId),
    Weighted { clusters: Vec<(ClusterId, u32)>, total_weight: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterKind {
    Static,
    StrictDns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbKind {
    RoundRobin,
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFamily {
    Auto,
    V4Only,
    V6Only,
    V4Preferred,
    All,
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: String,
    pub kind: ClusterKind,
    pub connect_timeout: Duration,
    pub lb: LbKind,
    pub buffer_limit: usize,
    /// The hosts the load balancer picks from: for STRICT_DNS, the addresses the
    /// last resolution returned.
    pub endpoints: Vec<EndpointConfig>,
    /// For STRICT_DNS: what to resolve, and how often.
    pub dns: Option<DnsConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    pub addr: SocketAddr,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub targets: Vec<DnsTarget>,
    /// The last good answer for each target, index for index.
    pub resolved: Vec<Vec<SocketAddr>>,
    pub refresh_rate: Duration,
    pub family: DnsFamily,
}

#[derive(Debug, Clone)]
pub struct DnsTarget {
    pub host: String,
    pub port: u16,
    pub weight: u32,
}

/// Envoy writes a listener's address in stat names with `:` replaced: `[::1]:80`
/// becomes `[__1]_80`.
pub fn stat_name_for(addr: &SocketAddr) -> String {
    addr.to_string().replace(':', "_")
}
