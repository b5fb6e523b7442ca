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
    /// The YAML this snapshot was built from, so it can be built again when
    /// a certificate file it names changes.
    pub source: Option<std::sync::Arc<str>>,
    /// Certificate, key and CA files the snapshot read (watched for rotation).
    pub watched_files: Vec<std::path::PathBuf>,
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
    /// Chosen per connection by `filter_chain_match` (`listener::choose_chain`).
    pub filter_chains: Vec<FilterChainConfig>,
    /// `envoy.filters.listener.tls_inspector`: read the ClientHello's SNI and
    /// ALPN before choosing a chain.
    pub tls_inspector: bool,
    /// How long the inspector may wait for a ClientHello
    /// (`listener_filters_timeout`, default 15 s) and what happens then.
    pub inspect_timeout: std::time::Duration,
    pub continue_on_inspect_timeout: bool,
}

#[derive(Debug, Clone)]
pub struct FilterChainConfig {
    pub name: String,
    pub matcher: ChainMatch,
    /// The terminal network filter; the chain's only filter for now.
    pub terminal: NetworkFilter,
    /// The chain terminates TLS (`DownstreamTlsContext`).
    pub tls: Option<std::sync::Arc<crate::tls::ServerContext>>,
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

/// A filter chain's `filter_chain_match`; an empty field matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainMatch {
    /// Lower-cased; `*.example.com` matches any name ending `.example.com`.
    pub server_names: Vec<String>,
    /// `Some(true)` for `tls`, `Some(false)` for `raw_buffer`.
    pub tls: Option<bool>,
    pub application_protocols: Vec<String>,
    pub destination_port: Option<u16>,
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
    /// `access_log`, in order; empty when there is none.
    pub access_logs: Vec<crate::access_log::AccessLogConfig>,
    /// `via`: appended to the `via` header of requests and responses.
    pub via: Option<String>,
    /// `delayed_close_timeout`: how long a connection ringway closes with
    /// the client still sending waits for the client to close; zero: no wait.
    pub delayed_close: Duration,
    /// Trusted proxies in front of ringway: the client is the address this
    /// many hops from the right of `x-forwarded-for`.
    pub xff_num_trusted_hops: u32,
    /// From a request's first byte to its last (`request_timeout`).
    pub request_timeout: Option<Duration>,
    /// A connection is closed after its request in flight once this old.
    pub max_connection_duration: Option<Duration>,
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
    pub name: Option<String>,
    pub path: PathMatch,
    pub case_sensitive: bool,
    /// Every one must hold, besides the path.
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
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

    /// Whether some value needs the request to be rendered (`%VARIABLE%`).
    pub fn is_dynamic(&self) -> bool {
        self.add.iter().any(|a| a.format.is_some())
    }
}

#[derive(Debug, Clone)]
pub struct HeaderAdd {
    pub name: String,
    /// The value as configured (with `%%` unescaped when it is a literal).
    pub value: String,
    /// Set when the value has `%VARIABLE%` operators: rendered per request
    /// with the access log's formatter. An empty result adds no header
    /// (Envoy's default, `keep_empty_value: false`).
    pub format: Option<std::sync::Arc<crate::access_log::Format>>,
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
    /// The prefix, followed by the end of the path or a `/`
    /// (`path_separated_prefix: /api` takes `/api` and `/api/x`, not `/apix`).
    SeparatedPrefix(String),
}

/// A `match.headers[]` condition on one request header (several headers
/// of one name are matched as their values joined with `,`).
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    /// Lower-cased; `:method`, `:path`, `:authority` and `:scheme` name the
    /// request line's parts.
    pub name: String,
    pub rule: HeaderRule,
    pub invert: bool,
    pub missing_as_empty: bool,
}

#[derive(Debug, Clone)]
pub enum HeaderRule {
    /// `present_match`: true matches a present header, false an absent one.
    Present(bool),
    Value(StringMatch),
    /// An integer value in `[start, end)`.
    Range(i64, i64),
}

/// Envoy's string matcher.
#[derive(Debug, Clone)]
pub struct StringMatch {
    pub kind: StringMatchKind,
    pub ignore_case: bool,
}

#[derive(Debug, Clone)]
pub enum StringMatchKind {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    /// Must match the whole value.
    Regex(regex::Regex),
}

/// A `match.query_parameters[]` condition: the parameter is present
/// (`value: None`) or has a value the matcher accepts.
#[derive(Debug, Clone)]
pub struct QueryMatch {
    pub name: String,
    pub value: Option<StringMatch>,
}

#[derive(Debug, Clone)]
pub enum RouteActionConfig {
    Forward(Box<ForwardConfig>),
    Direct { status: u16, body: String },
    Redirect(RedirectConfig),
}

/// A `route` action: proxy to a cluster.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    pub target: ForwardTarget,
    pub prefix_rewrite: Option<String>,
    /// `regex_rewrite`: every match in the path replaced (`\1` style groups
    /// already translated to the regex crate's `${1}`).
    pub regex_rewrite: Option<(regex::Regex, String)>,
    pub host_rewrite: Option<String>,
    /// Host becomes the picked endpoint's DNS name (STRICT_DNS clusters).
    pub auto_host_rewrite: bool,
    /// Whole upstream exchange, every attempt; `None` when disabled (`0s`).
    pub timeout: Option<Duration>,
    /// Replaces the connection manager's stream idle timeout on this route.
    pub idle_timeout: Option<Duration>,
    pub retry: Option<RetryConfig>,
    /// Upgrade types (lower-cased, e.g. `websocket`) tunnelled on this route.
    pub upgrades: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum ForwardTarget {
    Cluster(ClusterId),
    /// Picked by weight per request; each carries the header changes of its
    /// own entry followed by the route's.
    Weighted {
        clusters: Vec<WeightedTarget>,
        total_weight: u64,
    },
}

#[derive(Debug, Clone)]
pub struct WeightedTarget {
    pub cluster: ClusterId,
    pub weight: u32,
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
}

/// A route's (or its virtual host's) `retry_policy`.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub on: RetryOn,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub status_codes: Vec<u16>,
    pub base_interval: Duration,
    pub max_interval: Duration,
}

/// The conditions of `retry_on`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// Any 5xx, a reset, a connect failure or a per-try timeout.
    pub server_error: bool,
    /// 502, 503, 504, a reset, a connect failure or a per-try timeout.
    pub gateway_error: bool,
    pub connect_failure: bool,
    /// Reset or closed before a response head (and per-try timeouts).
    pub reset: bool,
    /// 409.
    pub retriable_4xx: bool,
    pub retriable_status_codes: bool,
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
    pub http: UpstreamHttpConfig,
    /// Connections to the hosts speak TLS (`UpstreamTlsContext`).
    pub tls: Option<std::sync::Arc<crate::tls::ClientContext>>,
}

/// Limits on a cluster's pooled HTTP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamHttpConfig {
    /// A pooled connection unused this long is closed (Envoy: 1 h).
    pub idle_timeout: Duration,
    /// A connection is closed after serving this many requests.
    pub max_requests_per_connection: Option<u32>,
    /// A connection this old is not reused.
    pub max_connection_duration: Option<Duration>,
}

impl Default for UpstreamHttpConfig {
    fn default() -> Self {
        UpstreamHttpConfig {
            idle_timeout: Duration::from_secs(3600),
            max_requests_per_connection: None,
            max_connection_duration: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    pub addr: SocketAddr,
    pub weight: u32,
    /// The DNS name it was resolved from (STRICT_DNS), for `auto_host_rewrite`.
    pub hostname: Option<String>,
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
