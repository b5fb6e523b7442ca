//! The runtime: starts the pinned workers, the config thread and the admin
//! thread; publishes snapshots RCU-style; reloads and drains.
//!
//! ```text
//! config thread ── parse → validate → Snapshot ──► ArcSwap ──► nudge each worker
//! worker i (pinned, monoio) ── install latest between accepts; connections keep theirs
//! admin thread ── reads the ArcSwap and the stats shards
//! ```

pub mod worker;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use monoio::FusionRuntime;

use crate::config::{self, ConfigError, Snapshot};
use crate::listener;
use crate::stats::{Counter, Gauge, StatKey, Store};
use crate::tcp_proxy::RelayMode;
use worker::{Nudge, Worker};

/// Which io driver the workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverChoice {
    /// io_uring where the kernel allows it, else epoll (logged).
    Auto,
    /// epoll, whatever the kernel offers.
    Legacy,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Workers to start; `None` means one per CPU in the affinity mask.
    pub concurrency: Option<usize>,
    pub drain_time: Duration,
    pub relay: RelayMode,
    pub driver: DriverChoice,
    /// Where SIGHUP and `reload()` re-read the config from.
    pub config_path: Option<PathBuf>,
    /// Pin each worker to its CPU.
    pub pin: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: None,
            drain_time: Duration::from_secs(5),
            relay: RelayMode::from_env(),
            driver: DriverChoice::Auto,
            config_path: None,
            pin: true,
        }
    }
}

/// State every thread shares. Only the snapshot pointer and two atomics: the
/// data path reads them without locks.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    /// The version in `snapshot`, stored after it: a worker compares it on
    /// every accept (one atomic load) so that a connection accepted after a
    /// publish always gets the new config.
    pub version: AtomicU64,
    pub stats: Store,
    /// Downstream connections open on all workers (the overload limit).
    pub global_cx: AtomicU64,
    pub draining: AtomicBool,
    pub started: Instant,
    pub concurrency: usize,
    control: mpsc::Sender<Control>,
}

impl Shared {
    /// Asks the server to drain and stop (admin `/quitquitquit`, signals).
    pub fn request_shutdown(&self) {
        let _ = self.control.send(Control::Shutdown);
    }

    pub fn request_reload(&self) -> Result<u64, String> {
        let (tx, rx) = mpsc::channel();
        self.control
            .send(Control::Reload { text: None, reply: Some(tx) })
            .map_err(|_| "server is stopping".to_string())?;
        rx.recv_timeout(Duration::from_secs(60)).map_err(|_| "reload did not finish".to_string())?
    }
}

enum Control {
    /// Re-read the config file (`text: None`) or use the given YAML.
    Reload {
        text: Option<String>,
        reply: Option<mpsc::Sender<Result<u64, String>>>,
    },
    Shutdown,
}

/// A running ringway. Dropping it does not stop it; call `shutdown` and `wait`.
pub struct Server {
    shared: Arc<Shared>,
    control: mpsc::Sender<Control>,
    workers: Vec<JoinHandle<()>>,
    config_thread: Option<JoinHandle<()>>,
    admin: Option<crate::admin::AdminHandle>,
    listener_addrs: Vec<(String, SocketAddr)>,
}

/// The CPUs this process may run on, in order.
pub fn allowed_cores() -> Vec<core_affinity::CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

impl Server {
    /// Binds every listener on every worker, starts the threads and returns
    /// once all workers are accepting.
    pub fn start(snapshot: Snapshot, opts: Options) -> io::Result<Server> {
        let cores = allowed_cores();
        let concurrency = opts.concurrency.unwrap_or(cores.len()).max(1);
        // Access log files are opened (and their writer threads started) by
        // serving, never by validation.
        crate::access_log::open_writers(&snapshot).map_err(|e| io::Error::other(e.to_string()))?;

        // Bind everything before starting anything, so a bad address fails fast.
        let mut per_worker: Vec<Vec<std::net::TcpListener>> = (0..concurrency).map(|_| Vec::new()).collect();
        let mut listener_addrs = Vec::new();
        for l in &snapshot.listeners {
            let sockets = listener::bind_reuseport(l.addr, l.backlog, l.ipv6_only, concurrency)
                .map_err(|e| io::Error::new(e.kind(), format!("listener `{}` cannot bind {}: {e}", l.name, l.addr)))?;
            listener_addrs.push((l.name.clone(), sockets[0].local_addr()?));
            for (w, s) in sockets.into_iter().enumerate() {
                per_worker[w].push(s);
            }
        }
        let admin_socket = match &snapshot.admin {
            Some(a) => Some(
                std::net::TcpListener::bind(a.addr)
                    .map_err(|e| io::Error::new(e.kind(), format!("admin cannot bind {}: {e}", a.addr)))?,
            ),
            None => None,
        };

        let (control_tx, control_rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            version: AtomicU64::new(snapshot.version),
            snapshot: ArcSwap::from_pointee(snapshot),
            stats: Store::new(concurrency),
            global_cx: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            started: Instant::now(),
            concurrency,
            control: control_tx.clone(),
        });

        let (ready_tx, ready_rx) = mpsc::channel::<Result<&'static str, String>>();
        let mut nudgers = Vec::new();
        let mut workers = Vec::new();
        for (index, sockets) in per_worker.into_iter().enumerate() {
            let (nudge_tx, nudge_rx) = async_channel::bounded(4);
            nudgers.push(nudge_tx);
            let core = if opts.pin && !cores.is_empty() { Some(cores[index % cores.len()]) } else { None };
            let shared = shared.clone();
            let ready = ready_tx.clone();
            let opts = opts.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ringway-worker-{index}"))
                .spawn(move || worker_thread(index, core, sockets, nudge_rx, shared, opts, ready))?;
            workers.push(handle);
        }
        drop(ready_tx);
        let mut driver = "";
        for _ in 0..concurrency {
            match ready_rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Ok(d)) => driver = d,
                Ok(Err(e)) => return Err(io::Error::other(e)),
                Err(_) => return Err(io::Error::other("a worker did not start")),
            }
        }
        shared.stats.server().gauge(StatKey::plain("server.concurrency")).set(concurrency as i64);
        set_membership(&shared.stats, &shared.snapshot.load());
        let snap = shared.snapshot.load();
        for (l, (_, bound)) in snap.listeners.iter().zip(&listener_addrs) {
            tracing::info!(
                "listener `{}` on {bound}: {} on {concurrency} worker(s)",
                l.name,
                l.filter_chains.iter().map(|c| c.terminal.name()).collect::<Vec<_>>().join(", ")
            );
        }
        tracing::info!("workers use the {driver} driver; relay: {:?}", opts.relay);
        drop(snap);
        let config_stats = config_thread_stats(&shared);

        let admin = match admin_socket {
            Some(sock) => Some(crate::admin::start(sock, shared.clone(), driver)?),
            None => None,
        };

        let config_thread = {
            let shared = shared.clone();
            let path = opts.config_path.clone();
            std::thread::Builder::new()
                .name("ringway-config".into())
                .spawn(move || config_thread(shared, control_rx, nudgers, path, config_stats))?
        };

        Ok(Server { shared, control: control_tx, workers, config_thread: Some(config_thread), admin, listener_addrs })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn stats(&self) -> &Store {
        &self.shared.stats
    }

    /// The bound address of the listener named `name` (port 0 resolved).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listener_addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// Re-reads the config file, as SIGHUP does.
    pub fn reload(&self) -> Result<u64, String> {
        self.shared.request_reload()
    }

    /// Validates and publishes `yaml` as the new config.
    pub fn reload_str(&self, yaml: &str) -> Result<u64, String> {
        let (tx, rx) = mpsc::channel();
        self.control
            .send(Control::Reload { text: Some(yaml.to_string()), reply: Some(tx) })
            .map_err(|_| "server is stopping".to_string())?;
        rx.recv_timeout(Duration::from_secs(60)).map_err(|_| "reload did not finish".to_string())?
    }

    /// Stops accepting and drains; `wait` returns when done.
    pub fn shutdown(&self) {
        let _ = self.control.send(Control::Shutdown);
    }

    /// Waits for the workers to finish draining, then stops the admin thread.
    pub fn wait(mut self) {
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        // The workers' last access log lines reach their files before exit.
        crate::access_log::sync_writers(Duration::from_secs(5));
        if let Some(t) = self.config_thread.take() {
            let _ = t.join();
        }
        if let Some(a) = self.admin.take() {
            a.stop();
        }
    }
}

fn worker_thread(
    index: usize,
    core: Option<core_affinity::CoreId>,
    sockets: Vec<std::net::TcpListener>,
    nudges: async_channel::Receiver<Nudge>,
    shared: Arc<Shared>,
    opts: Options,
    ready: mpsc::Sender<Result<&'static str, String>>,
) {
    if let Some(core) = core
        && !core_affinity::set_for_current(core)
    {
        tracing::warn!(worker = index, "could not pin to CPU {}", core.id);
    }
    let shard = shared.stats.worker(index);
    let drain = opts.drain_time;
    let started = ready.clone();
    let main = move |driver: &'static str| {
        let worker = Rc::new(Worker::new(index, shard, shared, opts.relay));
        let _ = started.send(Ok(driver));
        worker::run(worker, sockets, nudges, drain)
    };
    let entries = 4096;
    match opts.driver {
        DriverChoice::Auto => {
            match fusion_runtime(entries) {
                Ok(FusionRuntime::Uring(mut rt)) => rt.block_on(main("io_uring")),
                Ok(FusionRuntime::Legacy(mut rt)) => {
                    tracing::warn!(
                        worker = index,
                        "io_uring unavailable or MONOIO_FORCE_LEGACY_DRIVER set; using epoll"
                    );
                    rt.block_on(main("epoll"))
                }
                // io_uring is there but the ring could not be made (memlock on
                // older kernels, say): epoll still works.
                Err(e) => match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build() {
                    Ok(mut rt) => {
                        tracing::warn!(worker = index, "cannot set up io_uring ({e}); using epoll");
                        rt.block_on(main("epoll"))
                    }
                    Err(e2) => {
                        let _ = ready.send(Err(format!("worker {index}: no io driver: io_uring: {e}; epoll: {e2}")));
                    }
                },
            }
        }
        DriverChoice::Legacy => match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build() {
            Ok(mut rt) => rt.block_on(main("epoll")),
            Err(e) => {
                let _ = ready.send(Err(format!("worker {index}: cannot start epoll driver: {e}")));
            }
        },
    }
}

/// The worker's ring, set up for one thread that alone submits and reaps:
/// completions are run when the worker asks for them (`DEFER_TASKRUN`)
/// instead of interrupting it as they arrive, which batches them and spares
/// the kernel's task-work signalling. Kernels older than 6.1 refuse these
/// flags; the ring is then set up plainly. `RINGWAY_URING_SETUP=plain` asks
/// for the plain ring, for measurement.
fn fusion_runtime(
    entries: u32,
) -> std::io::Result<
    FusionRuntime<monoio::time::TimeDriver<monoio::IoUringDriver>, monoio::time::TimeDriver<monoio::LegacyDriver>>,
> {
    let plain = || monoio::RuntimeBuilder::<monoio::FusionDriver>::new().with_entries(entries).enable_timer().build();
    if std::env::var("RINGWAY_URING_SETUP").as_deref() == Ok("plain") {
        return plain();
    }
    let mut lean = io_uring::IoUring::builder();
    lean.setup_coop_taskrun().setup_single_issuer().setup_defer_taskrun();
    match monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(entries)
        .uring_builder(lean)
        .enable_timer()
        .build()
    {
        Ok(rt) => Ok(rt),
        Err(e) => {
            tracing::debug!("io_uring refused single-issuer/deferred task running ({e}); plain ring");
            plain()
        }
    }
}

struct ReloadStats {
    success: Counter,
    failure: Counter,
    version: Gauge,
}

/// The config thread's stats, made (at zero) before the admin port opens,
/// so that `/stats` lists them from its first answer.
fn config_thread_stats(shared: &Shared) -> (ReloadStats, CertStats) {
    let server = shared.stats.server();
    let stats = ReloadStats {
        success: server.counter(StatKey::plain("server.config_reload_success")),
        failure: server.counter(StatKey::plain("server.config_reload_failure")),
        version: server.gauge(StatKey::plain("server.config_version")),
    };
    stats.version.set(shared.snapshot.load().version as i64);
    let certs = CertStats {
        success: server.counter(StatKey::plain("server.tls_certificate_reload_success")),
        failure: server.counter(StatKey::plain("server.tls_certificate_reload_failure")),
        days_left: server.gauge(StatKey::plain("server.days_until_first_cert_expiring")),
    };
    certs.days_left.set(days_until_first_expiry(&shared.snapshot.load()));
    (stats, certs)
}

/// The config thread: owns reloads and DNS refreshes, and is the only writer
/// of the published snapshot.
fn config_thread(
    shared: Arc<Shared>,
    control: mpsc::Receiver<Control>,
    nudgers: Vec<async_channel::Sender<Nudge>>,
    path: Option<PathBuf>,
    (stats, certs): (ReloadStats, CertStats),
) {
    let publish = |snapshot: Snapshot| {
        let version = snapshot.version;
        set_membership(&shared.stats, &snapshot);
        shared.snapshot.store(Arc::new(snapshot));
        shared.version.store(version, Ordering::Release);
        stats.version.set(version as i64);
        for n in &nudgers {
            // A full queue already holds a nudge; the worker will see this version.
            let _ = n.try_send(Nudge::Check);
        }
    };
    let mut dns_due = config::dns::schedule(&shared.snapshot.load(), Instant::now());
    let mut watch = CertWatch::new(&shared.snapshot.load());
    loop {
        let next_dns = dns_due.values().min().copied();
        let next = next_dns.map_or(watch.next_check, |t| t.min(watch.next_check));
        let wait = next.saturating_duration_since(Instant::now());
        match control.recv_timeout(wait) {
            Ok(Control::Reload { text, reply }) => {
                let current = shared.snapshot.load_full();
                let result = reload(&current, text, path.as_deref());
                let answer = match result {
                    Ok(snapshot) => {
                        let v = snapshot.version;
                        dns_due = config::dns::schedule(&snapshot, Instant::now());
                        watch = CertWatch::new(&snapshot);
                        certs.days_left.set(days_until_first_expiry(&snapshot));
                        publish(snapshot);
                        stats.success.inc();
                        tracing::info!(version = v, "config reloaded");
                        Ok(v)
                    }
                    Err(e) => {
                        stats.failure.inc();
                        tracing::error!("config rejected, keeping version {}: {e}", current.version);
                        Err(e.to_string())
                    }
                };
                if let Some(reply) = reply {
                    let _ = reply.send(answer);
                }
            }
            Ok(Control::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= watch.next_check => {
                let current = shared.snapshot.load_full();
                // The gauge counts down on a long-running server too.
                certs.days_left.set(days_until_first_expiry(&current));
                if let Some(next) = watch.check(&current, &certs) {
                    dns_due = config::dns::schedule(&next, Instant::now());
                    certs.days_left.set(days_until_first_expiry(&next));
                    publish(next);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                let due: Vec<String> = dns_due.iter().filter(|(_, t)| **t <= now).map(|(n, _)| n.clone()).collect();
                let current = shared.snapshot.load_full();
                let (next, outcomes) = config::dns::refresh(&current, &due);
                count_dns_outcomes(&shared.stats, &outcomes);
                if let Some(next) = next {
                    publish(next);
                }
                let rates = config::dns::schedule(&current, Instant::now());
                for name in due {
                    match rates.get(&name) {
                        Some(t) => dns_due.insert(name, *t),
                        None => dns_due.remove(&name),
                    };
                }
            }
        }
    }
    tracing::info!("draining");
    shared.draining.store(true, Ordering::Release);
    for n in &nudgers {
        // Closing the channel wakes a worker even if its queue is full.
        let _ = n.try_send(Nudge::Check);
        n.close();
    }
}

/// How often the files of loaded certificates are checked for changes.
const CERT_POLL: Duration = Duration::from_secs(2);

struct CertStats {
    success: Counter,
    failure: Counter,
    /// Envoy's `server.days_until_first_cert_expiring`.
    days_left: Gauge,
}

/// A file's identity and content version, as far as `stat` tells.
type Stamp = Option<(std::time::SystemTime, u64, u64)>;

/// Watches the certificate, key and CA files of the published snapshot: a
/// change rebuilds the snapshot from the same YAML with the new files, for
/// new handshakes (open connections keep theirs). A new set that does not
/// load (unreadable, or a key that does not match) is refused and the old
/// certificates stay; it is tried again when the files change again.
struct CertWatch {
    stamps: Vec<Stamp>,
    refused: Option<Vec<Stamp>>,
    next_check: Instant,
}

impl CertWatch {
    fn new(snapshot: &Snapshot) -> Self {
        CertWatch { stamps: stamps(&snapshot.watched_files), refused: None, next_check: Instant::now() + CERT_POLL }
    }

    fn check(&mut self, current: &Snapshot, stats: &CertStats) -> Option<Snapshot> {
        self.next_check = Instant::now() + CERT_POLL;
        let now = stamps(&current.watched_files);
        if now == self.stamps || self.refused.as_ref() == Some(&now) {
            return None;
        }
        let text = current.source.as_deref()?.to_string();
        match reload(current, Some(text), None) {
            Ok(next) => {
                stats.success.inc();
                tracing::info!(version = next.version, "certificate files changed; reloaded");
                // The files as they were before the reload read them: a
                // change made meanwhile is seen at the next check.
                self.stamps = now;
                self.refused = None;
                Some(next)
            }
            Err(e) => {
                stats.failure.inc();
                tracing::error!("certificate files changed but do not load, keeping the current ones: {e}");
                self.refused = Some(now);
                None
            }
        }
    }
}

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    use std::os::unix::fs::MetadataExt;
    files.iter().map(|f| std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())))).collect()
}

/// Whole days until the soonest certificate expiry in `snapshot` (0 when
/// expired; a large number when there are no certificates).
fn days_until_first_expiry(snapshot: &Snapshot) -> i64 {
    let listeners = snapshot.listeners.iter().flat_map(|l| &l.filter_chains).filter_map(|c| c.tls.as_deref());
    let certs = listeners.flat_map(|t| t.certificates.iter().chain(&t.ca)).chain(
        snapshot.clusters.iter().filter_map(|c| c.tls.as_deref()).flat_map(|t| t.certificates.iter().chain(&t.ca)),
    );
    certs.map(crate::tls::CertInfo::days_left).min().unwrap_or(i64::from(u32::MAX))
}

/// Envoy's `cluster.<name>.update_*` counters for DNS refreshes.
fn count_dns_outcomes(stats: &Store, outcomes: &[(String, config::dns::RefreshOutcome)]) {
    for (cluster, outcome) in outcomes {
        let c = |stat: &str| stats.server().counter(StatKey::cluster(cluster, stat));
        let (attempt, success, no_rebuild, failure) =
            (c("update_attempt"), c("update_success"), c("update_no_rebuild"), c("update_failure"));
        attempt.inc();
        if outcome.failed {
            failure.inc();
        } else {
            success.inc();
            if !outcome.changed {
                no_rebuild.inc();
            }
        }
    }
}

/// `cluster.<name>.membership_*`, written by one thread at a time: the
/// starting thread, then the config thread.
fn set_membership(stats: &Store, snapshot: &Snapshot) {
    for c in &snapshot.clusters {
        let hosts = c.endpoints.len() as i64;
        stats.server().gauge(StatKey::cluster(&c.name, "membership_total")).set(hosts);
        stats.server().gauge(StatKey::cluster(&c.name, "membership_healthy")).set(hosts);
    }
}

/// Builds the next snapshot from a file or text; refuses changes a running
/// server cannot take yet.
fn reload(current: &Snapshot, text: Option<String>, path: Option<&std::path::Path>) -> Result<Snapshot, ConfigError> {
    let text = match (text, path) {
        (Some(t), _) => t,
        (None, Some(p)) => config::read_file(p)?,
        (None, None) => return Err(ConfigError::new("", "no config file to reload")),
    };
    let mut next = config::check_str(&text, current.version + 1)?;
    if !listener::same_listeners(current, &next) {
        return Err(ConfigError::new(
            "static_resources.listeners",
            "adding, removing, renaming or moving listeners, or changing their filter chains' types or matches, needs a restart for now",
        ));
    }
    if current.admin.as_ref().map(|a| a.addr) != next.admin.as_ref().map(|a| a.addr) {
        return Err(ConfigError::new("admin.address", "changing the admin address needs a restart"));
    }
    crate::access_log::open_writers(&next)?;
    // Names are looked up only for a config that will be taken.
    config::dns::resolve_all(&mut next, Some(current));
    Ok(next)
}
