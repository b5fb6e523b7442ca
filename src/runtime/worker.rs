//! A worker: one pinned OS thread running one monoio runtime, accepting on its
//! own SO_REUSEPORT sockets and serving every connection it accepts to the end.
//! Its tables (`CoreTables`) are rebuilt from each published snapshot;
//! connections keep the `Rc` they started with.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::config::Snapshot;
use crate::listener::{self, ListenerRt};
use crate::stats::Shard;
use crate::tcp_proxy::RelayMode;
use crate::upstream::ClusterManager;
use crate::upstream::lb::Rng;

use super::Shared;

/// Everything a connection on this core needs from one snapshot.
pub struct CoreTables {
    pub snapshot: Arc<Snapshot>,
    pub clusters: ClusterManager,
    pub listeners: Vec<ListenerRt>,
}

impl CoreTables {
    fn build(snapshot: Arc<Snapshot>, shard: &Arc<Shard>, worker: usize) -> Self {
        let seed = Rng::seed() ^ (worker as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let clusters = ClusterManager::new(&snapshot, shard, seed);
        let listeners = snapshot
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| ListenerRt::new(l, shard, worker, seed.wrapping_add(i as u64)))
            .collect();
        CoreTables { snapshot, clusters, listeners }
    }
}

/// Messages from the config thread. Each is only a nudge: the worker reads the
/// latest snapshot and the drain flag from `Shared`, so a lost nudge is caught
/// up by the next one.
#[derive(Debug, Clone, Copy)]
pub enum Nudge {
    Check,
}

pub struct Worker {
    pub index: usize,
    pub shard: Arc<Shard>,
    pub shared: Arc<Shared>,
    pub relay: RelayMode,
    /// Connections open on this core.
    pub active: Cell<u64>,
    tables: RefCell<Rc<CoreTables>>,
}

impl Worker {
    pub fn new(index: usize, shard: Arc<Shard>, shared: Arc<Shared>, relay: RelayMode) -> Self {
        let snapshot = shared.snapshot.load_full();
        let tables = CoreTables::build(snapshot, &shard, index);
        Worker { index, shard, shared, relay, active: Cell::new(0), tables: RefCell::new(Rc::new(tables)) }
    }

    /// The tables a new connection should use: the latest published.
    pub fn tables(&self) -> Rc<CoreTables> {
        if self.shared.version.load(Ordering::Acquire) != self.tables.borrow().snapshot.version {
            self.install_latest();
        }
        self.tables.borrow().clone()
    }

    /// Installs the latest published snapshot if it is newer than ours.
    fn install_latest(&self) {
        let latest = self.shared.snapshot.load_full();
        if latest.version == self.tables.borrow().snapshot.version {
            return;
        }
        let version = latest.version;
        let tables = CoreTables::build(latest, &self.shard, self.index);
        *self.tables.borrow_mut() = Rc::new(tables);
        tracing::debug!(worker = self.index, version, "installed snapshot");
    }

    /// Takes a slot under the global downstream connection limit, if any.
    pub fn admit_connection(&self) -> bool {
        let limit = self.tables.borrow().snapshot.overload.max_downstream_connections;
        let before = self.shared.global_cx.fetch_add(1, Ordering::Relaxed);
        match limit {
            Some(max) if before >= max => {
                self.shared.global_cx.fetch_sub(1, Ordering::Relaxed);
                false
            }
            _ => true,
        }
    }
}

/// The worker's main task: starts an accept loop per listener, then follows
/// the config thread's nudges until told to drain.
pub async fn run(
    worker: Rc<Worker>,
    sockets: Vec<std::net::TcpListener>,
    nudges: async_channel::Receiver<Nudge>,
    drain_time: Duration,
) {
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    for (index, socket) in sockets.into_iter().enumerate() {
        match monoio::net::TcpListener::from_std(socket) {
            Ok(l) => {
                monoio::spawn(listener::accept_loop(l, index, worker.clone(), stop_rx.clone()));
            }
            Err(e) => tracing::error!(worker = worker.index, "cannot register listener {index}: {e}"),
        }
    }
    drop(stop_rx);
    monoio::spawn(flush_periodically(worker.clone()));

    while nudges.recv().await.is_ok() {
        if worker.shared.draining.load(Ordering::Acquire) {
            break;
        }
        worker.install_latest();
    }

    // Drain: stop accepting (the accept loops see the channel close), then let
    // open connections finish, up to the drain time.
    drop(stop_tx);
    let deadline = Instant::now() + drain_time;
    while worker.active.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    if worker.active.get() > 0 {
        tracing::info!(worker = worker.index, open = worker.active.get(), "drain time over; closing open connections");
    }
    flush(&worker);
}

/// How often a worker hands what it buffers on its own core (histogram
/// samples, access log lines) to the threads that read or write them.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

async fn flush_periodically(worker: Rc<Worker>) {
    loop {
        monoio::time::sleep(FLUSH_INTERVAL).await;
        flush(&worker);
    }
}

/// Publishes this core's buffered observations. Runs on the worker thread,
/// every `FLUSH_INTERVAL` and once more when the worker stops.
fn flush(worker: &Worker) {
    worker.tables.borrow().clusters.sweep_pools();
    crate::stats::flush_local_histograms();
    crate::access_log::flush_core();
}
