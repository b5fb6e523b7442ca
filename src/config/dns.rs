//! STRICT_DNS resolution, run on the config thread (never on a worker): turns a
//! cluster's host names into the endpoint list of the next snapshot.

use std::net::{SocketAddr, ToSocketAddrs};

use super::snapshot::{ClusterKind, DnsConfig, DnsFamily, EndpointConfig, Snapshot};

/// Resolves every STRICT_DNS cluster once. A name that does not resolve leaves
/// its cluster without those hosts (and is logged); the next refresh retries.
pub fn resolve_all(snapshot: &mut Snapshot) {
    for cluster in &mut snapshot.clusters {
        if let (ClusterKind::StrictDns, Some(dns)) = (cluster.kind, &cluster.dns) {
            match resolve_cluster(dns) {
                Ok(endpoints) => cluster.endpoints = endpoints,
                Err(e) => tracing::warn!(cluster = %cluster.name, "DNS resolution failed: {e}"),
            }
        }
    }
}

/// What one STRICT_DNS refresh of one cluster found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    Changed,
    Unchanged,
    Failed,
}

/// Re-resolves the STRICT_DNS clusters of `current`; returns the snapshot to
/// publish next if any endpoint list changed, and each cluster's outcome. A
/// failed lookup keeps the cluster's previous hosts, as Envoy does.
pub fn refresh(current: &Snapshot) -> (Option<Snapshot>, Vec<(String, RefreshOutcome)>) {
    let mut outcomes = Vec::new();
    let mut clusters = current.clusters.clone();
    for cluster in &mut clusters {
        if let (ClusterKind::StrictDns, Some(dns)) = (cluster.kind, &cluster.dns) {
            let outcome = match resolve_cluster(dns) {
                Ok(endpoints) if endpoints != cluster.endpoints => {
                    tracing::info!(cluster = %cluster.name, hosts = endpoints.len(), "DNS refresh changed hosts");
                    cluster.endpoints = endpoints;
                    RefreshOutcome::Changed
                }
                Ok(_) => RefreshOutcome::Unchanged,
                Err(e) => {
                    tracing::warn!(cluster = %cluster.name, "DNS refresh failed, keeping hosts: {e}");
                    RefreshOutcome::Failed
                }
            };
            outcomes.push((cluster.name.clone(), outcome));
        }
    }
    let changed = outcomes.iter().any(|(_, o)| *o == RefreshOutcome::Changed);
    let next = changed.then(|| Snapshot { version: current.version + 1, clusters, ..current.clone() });
    (next, outcomes)
}

/// The shortest refresh interval among STRICT_DNS clusters, if there are any.
pub fn refresh_interval(snapshot: &Snapshot) -> Option<std::time::Duration> {
    snapshot.clusters.iter().filter_map(|c| c.dns.as_ref()).map(|d| d.refresh_rate).min()
}

fn resolve_cluster(dns: &DnsConfig) -> std::io::Result<Vec<EndpointConfig>> {
    let mut out = Vec::new();
    for target in &dns.targets {
        let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port).to_socket_addrs()?.collect();
        for addr in pick_family(&addrs, dns.family) {
            let ep = EndpointConfig { addr, weight: target.weight };
            if !out.contains(&ep) {
                out.push(ep);
            }
        }
    }
    Ok(out)
}

/// Envoy's `dns_lookup_family`: AUTO prefers IPv6 and falls back to IPv4,
/// V4_PREFERRED the other way round, ALL keeps both.
fn pick_family(addrs: &[SocketAddr], family: DnsFamily) -> Vec<SocketAddr> {
    let v4: Vec<SocketAddr> = addrs.iter().copied().filter(SocketAddr::is_ipv4).collect();
    let v6: Vec<SocketAddr> = addrs.iter().copied().filter(SocketAddr::is_ipv6).collect();
    match family {
        DnsFamily::V4Only => v4,
        DnsFamily::V6Only => v6,
        DnsFamily::Auto if !v6.is_empty() => v6,
        DnsFamily::Auto => v4,
        DnsFamily::V4Preferred if !v4.is_empty() => v4,
        DnsFamily::V4Preferred => v6,
        DnsFamily::All => addrs.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_pick_like_envoy() {
        let both: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().unwrap(), "[::1]:1".parse().unwrap()];
        assert!(pick_family(&both, DnsFamily::Auto)[0].is_ipv6());
        assert!(pick_family(&both, DnsFamily::V4Preferred)[0].is_ipv4());
        assert_eq!(pick_family(&both, DnsFamily::All).len(), 2);
        assert!(pick_family(&both[..1], DnsFamily::Auto)[0].is_ipv4());
        assert!(pick_family(&both[..1], DnsFamily::V6Only).is_empty());
    }
}
