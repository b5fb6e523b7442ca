//! Latency histograms (`downstream_rq_time`, `upstream_rq_time`): a worker
//! records into its own core's hdrhistogram with no lock and nothing shared,
//! and hands the samples to its stat shard once per `FLUSH_INTERVAL`
//! (`flush_local_histograms`); the admin thread merges the shards on read.
//!
//! Each registered name keeps two views per shard, as Envoy does: `interval`,
//! the samples of the latest flush only, and `cumulative`, every sample since
//! start.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Entry, Metric, ShardInner, StatKey, lock_inner};

/// Two significant figures: every value below 256 ms is kept exactly, larger
/// ones within 1%. Envoy's own histograms (circllhist) keep two as well, and
/// an auto-resizing histogram this coarse stays at a few KiB per name.
const SIGFIG: u8 = 2;

/// Larger values are recorded as this (24 h), which bounds how far a
/// histogram can grow.
const MAX_MS: u64 = 24 * 3600 * 1000;

/// Envoy's quantiles, in percent: `P0` ... `P100` in `/stats`.
pub const SUPPORTED_QUANTILES: [f64; 10] = [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0];

/// Envoy's default bucket bounds (ms): the `le` labels of `/stats/prometheus`.
pub const DEFAULT_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// A set of samples in milliseconds, with their exact sum.
#[derive(Clone, Default, PartialEq)]
pub struct Samples {
    /// `None` until the first sample, so an unused name costs nothing.
    hist: Option<hdrhistogram::Histogram<u64>>,
    sum: u64,
}

// `hdrhistogram`'s equality compares every count, so it is reflexive.
impl Eq for Samples {}

impl fmt::Debug for Samples {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Samples").field("count", &self.count()).field("sum", &self.sum).finish()
    }
}

impl Samples {
    fn record(&mut self, ms: u64) {
        let ms = ms.min(MAX_MS);
        if self.hist.is_none() {
            // Cannot fail: SIGFIG is within hdrhistogram's 0..=5.
            self.hist = hdrhistogram::Histogram::new(SIGFIG).ok();
        }
        // An auto-resizing histogram accepts any value up to MAX_MS.
        if let Some(h) = &mut self.hist
            && h.record(ms).is_ok()
        {
            self.sum = self.sum.saturating_add(ms);
        }
    }

    /// Adds `other`'s samples to these.
    pub fn merge(&mut self, other: &Samples) {
        let Some(theirs) = other.hist.as_ref().filter(|h| !h.is_empty()) else { return };
        match &mut self.hist {
            // Both auto-resize, so adding cannot run out of range.
            Some(ours) => {
                if ours.add(theirs).is_ok() {
                    self.sum = self.sum.saturating_add(other.sum);
                }
            }
            None => *self = other.clone(),
        }
    }

    /// Empties the set, keeping its memory for the next interval.
    fn clear(&mut self) {
        if let Some(h) = &mut self.hist
            && !h.is_empty()
        {
            h.reset();
        }
        self.sum = 0;
    }

    pub fn count(&self) -> u64 {
        self.hist.as_ref().map_or(0, |h| h.len())
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// The exact sum of the samples (ms).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The value at `percent` (0 to 100), or `None` without samples. Within
    /// the histogram's precision: the highest value equivalent to the one at
    /// that rank (the lowest for P0).
    pub fn percentile(&self, percent: f64) -> Option<f64> {
        let h = self.hist.as_ref().filter(|h| !h.is_empty())?;
        Some(h.value_at_quantile(percent / 100.0) as f64)
    }

    /// Samples at or below `bound` ms: a Prometheus `le` bucket. Values are
    /// whole milliseconds, so `le="0.5"` counts the zeros; above 255 ms a
    /// bucket's edge is as precise as the histogram (1%).
    pub fn count_at_most(&self, bound: f64) -> u64 {
        match &self.hist {
            Some(h) if bound >= 0.0 && !h.is_empty() => h.count_between(0, bound.floor() as u64),
            _ => 0,
        }
    }
}

/// A histogram merged over shards, as `/stats` shows it: the samples of each
/// worker's latest flush (`interval`) and every sample so far (`cumulative`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramValue {
    pub interval: Samples,
    pub cumulative: Samples,
}

impl HistogramValue {
    pub fn merge(&mut self, other: &HistogramValue) {
        self.interval.merge(&other.interval);
        self.cumulative.merge(&other.cumulative);
    }

    /// Envoy's `used()`: a sample was ever recorded.
    pub fn used(&self) -> bool {
        !self.cumulative.is_empty()
    }
}

/// A latency histogram handle for one core, in milliseconds. Recording
/// touches only this core's buffer: no lock, no atomic, nothing shared. The
/// samples reach `/stats` at the worker's next flush (at most
/// `FLUSH_INTERVAL` later). `!Send`: it belongs to the thread that registered
/// it, which must be the one that calls `flush_local_histograms`.
#[derive(Clone, Debug)]
pub struct Histogram(Option<Rc<RefCell<Samples>>>);

impl Histogram {
    /// Records one sample of `ms` milliseconds.
    #[inline]
    pub fn record(&self, ms: u64) {
        if let Some(local) = &self.0
            && let Ok(mut samples) = local.try_borrow_mut()
        {
            samples.record(ms);
        }
    }

    /// Records `d` in whole milliseconds (truncated, as Envoy does).
    #[inline]
    pub fn record_duration(&self, d: Duration) {
        self.record(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    }

    /// A histogram registered nowhere: samples are dropped.
    pub fn detached() -> Self {
        Histogram(None)
    }
}

/// This thread's buffers for one shard: one per name, shared by every handle
/// of that name (tables are rebuilt on reload; the new handles get the same
/// buffer as the old ones still held by open connections).
struct LocalShard {
    shard: Arc<Mutex<ShardInner>>,
    buffers: HashMap<String, Rc<RefCell<Samples>>>,
}

thread_local! {
    static LOCAL: RefCell<Vec<LocalShard>> = const { RefCell::new(Vec::new()) };
}

/// `Shard::histogram`: the shared entry under the shard's lock, then this
/// thread's buffer for the name.
pub(super) fn register(shard: &Arc<Mutex<ShardInner>>, key: StatKey) -> Histogram {
    {
        let mut inner = lock_inner(shard);
        let entry = inner
            .stats
            .entry(key.name.clone())
            .or_insert_with(|| Entry { key: key.clone(), metric: Metric::Histogram(Box::default()) });
        // A name registered as a counter or gauge elsewhere: keep the first kind.
        if !matches!(entry.metric, Metric::Histogram(_)) {
            return Histogram::detached();
        }
    }
    let buffer = LOCAL.try_with(|local| {
        let mut local = local.try_borrow_mut().ok()?;
        let index = match local.iter().position(|l| Arc::ptr_eq(&l.shard, shard)) {
            Some(i) => i,
            None => {
                local.push(LocalShard { shard: shard.clone(), buffers: HashMap::new() });
                local.len() - 1
            }
        };
        Some(local[index].buffers.entry(key.name).or_default().clone())
    });
    Histogram(buffer.ok().flatten())
}

/// Moves the samples this thread recorded since its last flush into its
/// shards: each name's `interval` becomes those samples (empty if none) and
/// they are added to `cumulative`. A worker calls this every `FLUSH_INTERVAL`
/// and once more when it stops. Buffers no handle holds any more are flushed
/// until empty, then forgotten, so a name dropped by a reload ends with an
/// empty interval rather than a stale one.
pub fn flush_local_histograms() {
    let _ = LOCAL.try_with(|local| {
        let Ok(mut local) = local.try_borrow_mut() else { return };
        local.retain_mut(|l| {
            let mut inner = lock_inner(&l.shard);
            l.buffers.retain(|name, buffer| {
                let Ok(mut pending) = buffer.try_borrow_mut() else { return true };
                let idle = pending.is_empty();
                if let Some(Entry { metric: Metric::Histogram(h), .. }) = inner.stats.get_mut(name) {
                    h.cumulative.merge(&pending);
                    // The pending samples become the interval; the old
                    // interval's memory becomes the next pending buffer.
                    std::mem::swap(&mut h.interval, &mut *pending);
                    pending.clear();
                }
                drop(pending);
                Rc::strong_count(buffer) > 1 || !idle
            });
            !l.buffers.is_empty()
        });
    });
}

#[cfg(test)]
mod tests {
    use super::super::{Store, Value};
    use super::*;

    fn rq_time() -> StatKey {
        StatKey::cluster("c", "upstream_rq_time")
    }

    /// This thread's live buffers (for the forgetting test).
    fn local_buffers() -> usize {
        LOCAL.with(|l| l.borrow().iter().map(|s| s.buffers.len()).sum())
    }

    #[test]
    fn samples_from_two_shards_merge_on_read() {
        let store = Store::new(2);
        let h0 = store.worker(0).histogram(rq_time());
        let h1 = store.worker(1).histogram(rq_time());
        h0.record(1);
        h0.record(2);
        h1.record(3);
        // Nothing is visible before the flush.
        assert_eq!(store.histogram("cluster.c.upstream_rq_time"), Some(HistogramValue::default()));
        flush_local_histograms();
        let h = store.histogram("cluster.c.upstream_rq_time").unwrap();
        assert_eq!((h.cumulative.count(), h.cumulative.sum()), (3, 6));
        assert_eq!((h.interval.count(), h.interval.sum()), (3, 6));
        assert_eq!(h.cumulative.percentile(0.0), Some(1.0));
        assert_eq!(h.cumulative.percentile(100.0), Some(3.0));
        let merged = store.merged();
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].key.prom_name, "envoy_cluster_upstream_rq_time");
        assert_eq!(merged[0].value, Value::Histogram(Box::new(h)));
        assert_eq!(store.get("cluster.c.upstream_rq_time"), None);
    }

    #[test]
    fn interval_holds_the_latest_flush_and_cumulative_everything() {
        let store = Store::new(1);
        let h = store.worker(0).histogram(rq_time());
        let read = || store.histogram("cluster.c.upstream_rq_time").unwrap();
        h.record(10);
        flush_local_histograms();
        assert_eq!((read().interval.count(), read().cumulative.count()), (1, 1));
        h.record(20);
        h.record(30);
        flush_local_histograms();
        let v = read();
        assert_eq!((v.interval.count(), v.interval.sum()), (2, 50));
        assert_eq!((v.cumulative.count(), v.cumulative.sum()), (3, 60));
        assert_eq!(v.interval.percentile(0.0), Some(20.0));
        assert_eq!(v.cumulative.percentile(0.0), Some(10.0));
        // A flush with nothing recorded empties the interval only.
        flush_local_histograms();
        let v = read();
        assert!(v.interval.is_empty() && v.interval.percentile(50.0).is_none());
        assert_eq!(v.cumulative.count(), 3);
        assert!(v.used());
    }

    #[test]
    fn reregistered_names_share_a_buffer_and_dropped_handles_are_flushed_then_forgotten() {
        let store = Store::new(1);
        let shard = store.worker(0);
        let old = shard.histogram(rq_time());
        let new = shard.histogram(rq_time()); // a reload's tables
        assert_eq!(local_buffers(), 1);
        old.record(5);
        new.record(7);
        drop(old);
        drop(new);
        // Unflushed samples of dropped handles still arrive...
        flush_local_histograms();
        let v = store.histogram("cluster.c.upstream_rq_time").unwrap();
        assert_eq!((v.interval.count(), v.cumulative.count()), (2, 2));
        assert_eq!(local_buffers(), 1);
        // ...then the interval empties and the buffer is forgotten.
        flush_local_histograms();
        let v = store.histogram("cluster.c.upstream_rq_time").unwrap();
        assert_eq!((v.interval.count(), v.cumulative.count()), (0, 2));
        assert_eq!(local_buffers(), 0);
        // Registering again starts a new buffer feeding the same histogram.
        shard.histogram(rq_time()).record(9);
        flush_local_histograms();
        assert_eq!(store.histogram("cluster.c.upstream_rq_time").unwrap().cumulative.sum(), 21);
    }

    #[test]
    fn a_name_keeps_its_first_kind() {
        let store = Store::new(1);
        let shard = store.worker(0);
        shard.counter(StatKey::plain("x")).inc();
        shard.histogram(StatKey::plain("x")).record(1);
        shard.histogram(StatKey::plain("y")).record(1);
        shard.counter(StatKey::plain("y")).inc();
        flush_local_histograms();
        assert_eq!(store.get("x"), Some(1));
        assert_eq!(store.histogram("y").unwrap().cumulative.count(), 1);
    }

    #[test]
    fn durations_are_whole_milliseconds_and_huge_values_are_capped() {
        let store = Store::new(1);
        let h = store.worker(0).histogram(rq_time());
        h.record_duration(Duration::from_micros(1999));
        h.record_duration(Duration::from_secs(u64::MAX));
        Histogram::detached().record(3);
        flush_local_histograms();
        let v = store.histogram("cluster.c.upstream_rq_time").unwrap();
        assert_eq!(v.cumulative.count(), 2);
        assert_eq!(v.cumulative.sum(), 1 + MAX_MS);
        assert_eq!(v.cumulative.percentile(0.0), Some(1.0));
    }

    #[test]
    fn buckets_count_samples_at_or_below_their_bound() {
        let mut s = Samples::default();
        for v in [0, 1, 7, 300, 4000] {
            s.record(v);
        }
        let counts: Vec<u64> = DEFAULT_BUCKETS.iter().map(|b| s.count_at_most(*b)).collect();
        assert_eq!(counts, [1, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5]);
        assert_eq!(Samples::default().count_at_most(1.0), 0);
    }
}
