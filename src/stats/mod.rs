//! Stats: each worker writes its own shard of counters, gauges and histograms
//! with Envoy's names; the admin thread merges the shards on read
//! (`Store::merged`).
//!
//! Every metric has exactly one writer thread (the shard's owner), so an update
//! is a plain load and store on an atomic it alone writes: no lock prefix, no
//! lock, no contended cache line. Histograms record into a buffer of the
//! writer's own and reach the shard once per flush (`histogram`).
//! Registration takes the shard's mutex; it happens when a worker installs a
//! snapshot, never per connection.

mod format;
mod histogram;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

pub use format::{prometheus, text, text_json};
pub use histogram::{DEFAULT_BUCKETS, Histogram, HistogramValue, SUPPORTED_QUANTILES, Samples, flush_local_histograms};

/// A monotonically increasing count, written by its shard's owner only.
#[derive(Clone, Debug)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn add(&self, n: u64) {
        // Single writer: a load and a store cannot lose an update.
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    pub fn value(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// A counter registered nowhere, for code paths built without a store.
    pub fn detached() -> Self {
        Counter(Arc::default())
    }
}

/// A value that goes up and down (`downstream_cx_active`), per shard; the
/// merged value is the sum over shards.
#[derive(Clone, Debug)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn dec(&self) {
        self.add(-1);
    }

    #[inline]
    pub fn add(&self, n: i64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }

    pub fn value(&self) -> i64 {
        self.0.load(Relaxed)
    }

    pub fn detached() -> Self {
        Gauge(Arc::default())
    }
}

/// A stat's Envoy name and the Prometheus name and labels Envoy's tag
/// extraction would give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatKey {
    pub name: String,
    pub prom_name: String,
    pub labels: Vec<(&'static str, String)>,
}

impl StatKey {
    /// `server.live` → `envoy_server_live`.
    pub fn plain(name: &str) -> Self {
        StatKey { name: name.to_string(), prom_name: format!("envoy_{}", sanitize(name)), labels: vec![] }
    }

    /// `cluster.<name>.<stat>`, labelled `envoy_cluster_name`.
    pub fn cluster(cluster: &str, stat: &str) -> Self {
        Self::tagged("cluster", cluster, stat, "envoy_cluster_name")
    }

    /// `listener.<addr>.<stat>`, labelled `envoy_listener_address`.
    pub fn listener(addr: &str, stat: &str) -> Self {
        Self::tagged("listener", addr, stat, "envoy_listener_address")
    }

    /// `listener.<addr>.worker_<n>.<stat>`.
    pub fn listener_worker(addr: &str, worker: usize, stat: &str) -> Self {
        StatKey {
            name: format!("listener.{addr}.worker_{worker}.{stat}"),
            prom_name: format!("envoy_listener_worker_{}", sanitize(stat)),
            labels: vec![("envoy_listener_address", addr.to_string()), ("envoy_worker_id", worker.to_string())],
        }
    }

    /// `tcp.<stat_prefix>.<stat>`, labelled `envoy_tcp_prefix`.
    pub fn tcp(prefix: &str, stat: &str) -> Self {
        Self::tagged("tcp", prefix, stat, "envoy_tcp_prefix")
    }

    /// `<scope>.<tag>.<stem>_<code>` (`cluster.a.upstream_rq_200`), which
    /// Envoy's tag extraction exports as `envoy_<scope>_<stem>` with an
    /// `envoy_response_code` label.
    pub fn with_code(scope: &str, tag: &str, label: &'static str, stem: &str, code: u16) -> Self {
        StatKey {
            name: format!("{scope}.{tag}.{stem}_{code}"),
            prom_name: format!("envoy_{scope}_{stem}"),
            labels: vec![(label, tag.to_string()), ("envoy_response_code", code.to_string())],
        }
    }

    /// `<scope>.<tag>.<stem>_<class>xx` (`http.ingress.downstream_rq_2xx`),
    /// exported as `envoy_<scope>_<stem>_xx` with `envoy_response_code_class`.
    pub fn with_class(scope: &str, tag: &str, label: &'static str, stem: &str, class: u8) -> Self {
        StatKey {
            name: format!("{scope}.{tag}.{stem}_{class}xx"),
            prom_name: format!("envoy_{scope}_{stem}_xx"),
            labels: vec![(label, tag.to_string()), ("envoy_response_code_class", class.to_string())],
        }
    }

    fn tagged(scope: &str, tag: &str, stat: &str, label: &'static str) -> Self {
        StatKey {
            name: format!("{scope}.{tag}.{stat}"),
            prom_name: format!("envoy_{scope}_{}", sanitize(stat)),
            labels: vec![(label, tag.to_string())],
        }
    }
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

#[derive(Clone, Debug)]
enum Metric {
    Counter(Counter),
    Gauge(Gauge),
    /// The flushed samples; the unflushed ones are in the writer's buffers.
    Histogram(Box<HistogramValue>),
}

struct Entry {
    key: StatKey,
    metric: Metric,
}

/// Per-host counters and gauges, shown by `/clusters` rather than `/stats`.
type HostKey = (String, SocketAddr, &'static str);

#[derive(Default)]
struct ShardInner {
    stats: BTreeMap<String, Entry>,
    hosts: BTreeMap<HostKey, Metric>,
}

/// One writer's stats. Workers own one each; the config and admin threads
/// share the `server` shard for the few stats they write.
#[derive(Default)]
pub struct Shard {
    /// An `Arc` so that the writer's histogram buffers can find it at flush.
    inner: Arc<Mutex<ShardInner>>,
}

fn lock_inner(inner: &Mutex<ShardInner>) -> MutexGuard<'_, ShardInner> {
    // A poisoned shard still holds valid integers; keep serving them.
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, ShardInner> {
        lock_inner(&self.inner)
    }

    pub fn counter(&self, key: StatKey) -> Counter {
        let mut inner = self.lock();
        let entry = inner
            .stats
            .entry(key.name.clone())
            .or_insert_with(|| Entry { key, metric: Metric::Counter(Counter::detached()) });
        match &entry.metric {
            Metric::Counter(c) => c.clone(),
            // A name registered as another kind elsewhere: keep the first kind.
            _ => Counter::detached(),
        }
    }

    pub fn gauge(&self, key: StatKey) -> Gauge {
        let mut inner = self.lock();
        let entry = inner
            .stats
            .entry(key.name.clone())
            .or_insert_with(|| Entry { key, metric: Metric::Gauge(Gauge::detached()) });
        match &entry.metric {
            Metric::Gauge(g) => g.clone(),
            _ => Gauge::detached(),
        }
    }

    /// A latency histogram (ms). Register it on the thread that records it:
    /// that thread's `flush_local_histograms` publishes the samples. The same
    /// name registered again on that thread feeds the same buffer.
    pub fn histogram(&self, key: StatKey) -> Histogram {
        histogram::register(&self.inner, key)
    }

    pub fn host_counter(&self, cluster: &str, addr: SocketAddr, stat: &'static str) -> Counter {
        let mut inner = self.lock();
        match inner
            .hosts
            .entry((cluster.to_string(), addr, stat))
            .or_insert_with(|| Metric::Counter(Counter::detached()))
        {
            Metric::Counter(c) => c.clone(),
            _ => Counter::detached(),
        }
    }

    pub fn host_gauge(&self, cluster: &str, addr: SocketAddr, stat: &'static str) -> Gauge {
        let mut inner = self.lock();
        match inner.hosts.entry((cluster.to_string(), addr, stat)).or_insert_with(|| Metric::Gauge(Gauge::detached())) {
            Metric::Gauge(g) => g.clone(),
            _ => Gauge::detached(),
        }
    }
}

/// The value of one stat merged over all shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Counter(u64),
    Gauge(i64),
    Histogram(Box<HistogramValue>),
}

impl Value {
    /// A counter's or gauge's value; a histogram's cumulative sample count.
    pub fn as_i128(&self) -> i128 {
        match self {
            Value::Counter(v) => i128::from(*v),
            Value::Gauge(v) => i128::from(*v),
            Value::Histogram(h) => i128::from(h.cumulative.count()),
        }
    }

    fn of(metric: &Metric) -> Self {
        match metric {
            Metric::Counter(c) => Value::Counter(c.value()),
            Metric::Gauge(g) => Value::Gauge(g.value()),
            Metric::Histogram(h) => Value::Histogram(h.clone()),
        }
    }

    /// Adds another shard's value of the same stat; a kind mismatch keeps this one.
    fn merge(&mut self, metric: &Metric) {
        match (self, metric) {
            (Value::Counter(a), Metric::Counter(b)) => *a = a.wrapping_add(b.value()),
            (Value::Gauge(a), Metric::Gauge(b)) => *a = a.wrapping_add(b.value()),
            (Value::Histogram(a), Metric::Histogram(b)) => a.merge(b),
            _ => {}
        }
    }
}

#[derive(Clone, Debug)]
pub struct MergedStat {
    pub key: StatKey,
    pub value: Value,
}

/// Per-host values merged over shards: `(cluster, host) → stat → value`.
pub type HostStats = BTreeMap<(String, SocketAddr), BTreeMap<&'static str, i64>>;

/// All shards. `Send + Sync`; shared by workers (each holding its own shard),
/// the config thread and the admin thread.
pub struct Store {
    workers: Vec<Arc<Shard>>,
    server: Arc<Shard>,
}

impl Store {
    pub fn new(workers: usize) -> Self {
        Store { workers: (0..workers).map(|_| Arc::default()).collect(), server: Arc::default() }
    }

    pub fn worker(&self, index: usize) -> Arc<Shard> {
        self.workers[index].clone()
    }

    /// The shard written by the config thread (reload counters) and no one else.
    pub fn server(&self) -> &Shard {
        &self.server
    }

    /// Every stat, summed over shards, sorted by name.
    pub fn merged(&self) -> Vec<MergedStat> {
        let mut out: BTreeMap<String, MergedStat> = BTreeMap::new();
        for shard in self.workers.iter().chain(std::iter::once(&self.server)) {
            let inner = shard.lock();
            for (name, entry) in &inner.stats {
                match out.get_mut(name) {
                    Some(m) => m.value.merge(&entry.metric),
                    None => {
                        out.insert(
                            name.clone(),
                            MergedStat { key: entry.key.clone(), value: Value::of(&entry.metric) },
                        );
                    }
                }
            }
        }
        out.into_values().collect()
    }

    pub fn merged_hosts(&self) -> HostStats {
        let mut out = HostStats::new();
        for shard in &self.workers {
            let inner = shard.lock();
            for ((cluster, addr, stat), metric) in &inner.hosts {
                let v = match metric {
                    Metric::Counter(c) => c.value() as i64,
                    Metric::Gauge(g) => g.value(),
                    Metric::Histogram(_) => continue,
                };
                *out.entry((cluster.clone(), *addr)).or_default().entry(stat).or_default() += v;
            }
        }
        out
    }

    /// One merged counter or gauge by name, for tests and `/server_info`.
    /// `None` for a histogram (see `histogram`).
    pub fn get(&self, name: &str) -> Option<i128> {
        let mut found = None;
        for shard in self.workers.iter().chain(std::iter::once(&self.server)) {
            if let Some(e) = shard.lock().stats.get(name) {
                let v = match &e.metric {
                    Metric::Counter(c) => i128::from(c.value()),
                    Metric::Gauge(g) => i128::from(g.value()),
                    Metric::Histogram(_) => return None,
                };
                found = Some(found.unwrap_or(0) + v);
            }
        }
        found
    }

    /// One histogram by name, merged over shards (flushed samples only).
    pub fn histogram(&self, name: &str) -> Option<HistogramValue> {
        let mut found: Option<HistogramValue> = None;
        for shard in self.workers.iter().chain(std::iter::once(&self.server)) {
            if let Some(Entry { metric: Metric::Histogram(h), .. }) = shard.lock().stats.get(name) {
                match &mut found {
                    Some(f) => f.merge(h),
                    None => found = Some((**h).clone()),
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge_by_name() {
        let store = Store::new(2);
        let a = store.worker(0).counter(StatKey::cluster("c", "upstream_cx_total"));
        let b = store.worker(1).counter(StatKey::cluster("c", "upstream_cx_total"));
        a.add(2);
        b.inc();
        let g0 = store.worker(0).gauge(StatKey::cluster("c", "upstream_cx_active"));
        let g1 = store.worker(1).gauge(StatKey::cluster("c", "upstream_cx_active"));
        g0.inc();
        g1.inc();
        g1.dec();
        assert_eq!(store.get("cluster.c.upstream_cx_total"), Some(3));
        assert_eq!(store.get("cluster.c.upstream_cx_active"), Some(1));
        let merged = store.merged();
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[1].key.prom_name, "envoy_cluster_upstream_cx_total");
        assert_eq!(merged[1].value, Value::Counter(3));
    }

    #[test]
    fn registering_twice_returns_the_same_metric() {
        let store = Store::new(1);
        let shard = store.worker(0);
        shard.counter(StatKey::plain("x")).inc();
        shard.counter(StatKey::plain("x")).inc();
        assert_eq!(store.get("x"), Some(2));
    }
}
