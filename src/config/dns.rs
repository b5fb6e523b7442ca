//! STRICT_DNS resolution, run on the config thread (never on a worker): turns a
//! cluster's host names into the endpoint list of the next snapshot.
//!
//! Each host name keeps its last good answer: a lookup that fails leaves that
//! name's addresses as they were (Envoy's behaviour), and a name that has never
//! resolved contributes no hosts until it does.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

use super::snapshot::{ClusterConfig, DnsFamily, EndpointConfig, Snapshot};

/// What one refresh of one cluster found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshOutcome {
    /// The endpoint list differs from before (publish a new snapshot).
    pub changed: bool,
    /// At least one name failed; its previous addresses were kept.
    pub failed: bool,
}

/// Resolves every STRICT_DNS cluster of a new snapshot. Names that fail keep
/// the addresses `previous` (the running snapshot, on reload) had for them.
pub fn resolve_all(snapshot: &mut Snapshot, previous: Option<&Snapshot>) {
    for cluster in &mut snapshot.clusters {
        let before = previous.and_then(|p| p.clusters.iter().find(|c| c.name == cluster.name));
        if let Some(before) = before {
            seed_from(cluster, before);
        }
        if resolve_cluster(cluster).failed {
            tracing::warn!(
                cluster = %cluster.name,
                "DNS resolution failed for some hosts; they keep their previous addresses (none if new) until it works"
            );
        }
    }
}

/// Re-resolves the STRICT_DNS clusters named in `due`; returns the snapshot to
/// publish if any endpoint list changed, and each cluster's outcome.
pub fn refresh(current: &Snapshot, due: &[String]) -> (Option<Snapshot>, Vec<(String, RefreshOutcome)>) {
    let mut outcomes = Vec::new();
    let mut clusters = current.clusters.clone();
    for cluster in clusters.iter_mut().filter(|c| c.dns.is_some() && due.contains(&c.name)) {
        let outcome = resolve_cluster(cluster);
        if outcome.changed {
            tracing::info!(cluster = %cluster.name, hosts = cluster.endpoints.len(), "DNS refresh changed hosts");
        }
        if outcome.failed {
            tracing::warn!(cluster = %cluster.name, "DNS refresh failed for some hosts; keeping their previous addresses");
        }
        outcomes.push((cluster.name.clone(), outcome));
    }
    let changed = outcomes.iter().any(|(_, o)| o.changed);
    let next = changed.then(|| Snapshot { version: current.version + 1, clusters, ..current.clone() });
    (next, outcomes)
}

/// When each STRICT_DNS cluster is next due, by name.
pub fn schedule(snapshot: &Snapshot, now: Instant) -> HashMap<String, Instant> {
    snapshot.clusters.iter().filter_map(|c| Some((c.name.clone(), now + c.dns.as_ref()?.refresh_rate))).collect()
}

/// Copies the last good answers of names `cluster` shares with `before`.
fn seed_from(cluster: &mut ClusterConfig, before: &ClusterConfig) {
    let (Some(dns), Some(old)) = (cluster.dns.as_mut(), before.dns.as_ref()) else { return };
    for (target, resolved) in dns.targets.iter().zip(dns.resolved.iter_mut()) {
        if let Some(i) = old.targets.iter().position(|t| t.host == target.host && t.port == target.port) {
            resolved.clone_from(&old.resolved[i]);
        }
    }
}

/// Looks every name of `cluster` up again and rebuilds its endpoints.
fn resolve_cluster(cluster: &mut ClusterConfig) -> RefreshOutcome {
    let Some(dns) = cluster.dns.as_mut() else { return RefreshOutcome { changed: false, failed: false } };
    let mut failed = false;
    for (target, resolved) in dns.targets.iter().zip(dns.resolved.iter_mut()) {
        match (target.host.as_str(), target.port).to_socket_addrs() {
            Ok(addrs) => *resolved = pick_family(&addrs.collect::<Vec<_>>(), dns.family),
            Err(e) => {
                tracing::debug!(cluster = %cluster.name, host = %target.host, "lookup failed: {e}");
                failed = true;
            }
        }
    }
    let mut endpoints = Vec::new();
    for (target, resolved) in dns.targets.iter().zip(&dns.resolved) {
        for &addr in resolved {
            let ep = EndpointConfig { addr, weight: target.weight, hostname: Some(target.host.clone()) };
            if !endpoints.contains(&ep) {
                endpoints.push(ep);
            }
        }
    }
    let changed = endpoints != cluster.endpoints;
    cluster.endpoints = endpoints;
    RefreshOutcome { changed, failed }
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
    use crate::config::snapshot::{ClusterKind, DnsConfig, DnsTarget, LbKind};
    use std::time::Duration;

    #[test]
    fn families_pick_like_envoy() {
        let both: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().unwrap(), "[::1]:1".parse().unwrap()];
        assert!(pick_family(&both, DnsFamily::Auto)[0].is_ipv6());
        assert!(pick_family(&both, DnsFamily::V4Preferred)[0].is_ipv4());
        assert_eq!(pick_family(&both, DnsFamily::All).len(), 2);
        assert!(pick_family(&both[..1], DnsFamily::Auto)[0].is_ipv4());
        assert!(pick_family(&both[..1], DnsFamily::V6Only).is_empty());
    }

    /// A name that fails keeps its last answer; the others still resolve.
    #[test]
    fn a_failing_name_keeps_its_last_answer() {
        let target = |host: &str| DnsTarget { host: host.into(), port: 80, weight: 1 };
        let kept: SocketAddr = "127.0.0.9:80".parse().unwrap();
        let mut cluster = ClusterConfig {
            name: "c".into(),
            kind: ClusterKind::StrictDns,
            connect_timeout: Duration::from_secs(1),
            lb: LbKind::RoundRobin,
            buffer_limit: 1,
            http: Default::default(),
            tls: None,
            endpoints: vec![],
            dns: Some(DnsConfig {
                // An IP literal resolves without any lookup; the empty name
                // fails without touching the network.
                targets: vec![target("127.0.0.1"), target("")],
                resolved: vec![vec![], vec![kept]],
                refresh_rate: Duration::from_secs(5),
                family: DnsFamily::V4Only,
            }),
        };
        assert_eq!(resolve_cluster(&mut cluster), RefreshOutcome { changed: true, failed: true });
        let addrs: Vec<SocketAddr> = cluster.endpoints.iter().map(|e| e.addr).collect();
        assert_eq!(addrs, vec!["127.0.0.1:80".parse().unwrap(), kept]);
    }
}
