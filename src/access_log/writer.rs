//! Where rendered access log lines go: a per-core buffer per destination
//! (`CoreSink`, on the worker thread, no locks), handed in batches over a
//! bounded channel to one writer thread per destination path (`Writer`,
//! shared by every core) which does the blocking file IO.
//!
//! connection manager → format → **per-core buffer → writer thread → file**
//!
//! Writers live in a process-wide registry keyed by path, touched only when
//! a config is installed (never per request): a reload that keeps a path
//! keeps its writer and file, so reloads leak nothing. A writer whose path
//! leaves the config stays idle until the process exits.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::stats::{Counter, Shard, StatKey};

/// A core hands its buffer to the writer once it holds this much.
pub const BATCH_BYTES: usize = 64 * 1024;
/// Room above `BATCH_BYTES` so the line that crosses it does not reallocate.
const LINE_SLACK: usize = 8 * 1024;
/// Batches queued per writer before cores start dropping them.
const QUEUE_BATCHES: usize = 256;

enum Msg {
    Batch(Vec<u8>),
    /// Reply once everything queued before this is written.
    Sync(mpsc::Sender<()>),
}

/// Outcomes counted by a writer thread, claimed (swapped to zero) by the
/// cores' periodic flush into their own stats shard: a stat keeps one writer.
#[derive(Default)]
struct WriterStats {
    completed: AtomicU64,
    failed: AtomicU64,
}

/// One destination path and its writer thread.
pub(crate) struct Writer {
    tx: SyncSender<Msg>,
    stats: Arc<WriterStats>,
}

static WRITERS: Mutex<BTreeMap<String, Arc<Writer>>> = Mutex::new(BTreeMap::new());

fn registry() -> MutexGuard<'static, BTreeMap<String, Arc<Writer>>> {
    // The map holds only channel ends; a panic elsewhere leaves it usable.
    WRITERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a writer for `path` is already running.
pub fn is_open(path: &str) -> bool {
    registry().contains_key(path)
}

enum Target {
    Stdout,
    Stderr,
    File(File),
}

impl Target {
    fn open(path: &str) -> io::Result<Target> {
        match path {
            // The process's own streams, also when they are sockets or pipes
            // that cannot be reopened by name.
            "/dev/stdout" => Ok(Target::Stdout),
            "/dev/stderr" => Ok(Target::Stderr),
            _ => OpenOptions::new().append(true).create(true).open(path).map(Target::File),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            // Under the stream's lock, so lines never interleave with
            // other writes to it (the log on stderr).
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(data)?;
                out.flush()
            }
            Target::Stderr => io::stderr().lock().write_all(data),
            Target::File(f) => f.write_all(data),
        }
    }
}

/// The writer for `path`, opening the file and starting its thread the first
/// time. Blocking (it opens a file): call it when a config is installed.
pub(crate) fn writer(path: &str) -> io::Result<Arc<Writer>> {
    let mut map = registry();
    if let Some(w) = map.get(path) {
        return Ok(w.clone());
    }
    let target = Target::open(path)?;
    let (tx, rx) = mpsc::sync_channel(QUEUE_BATCHES);
    let stats = Arc::new(WriterStats::default());
    let thread_stats = stats.clone();
    let shown = path.to_string();
    std::thread::Builder::new()
        .name(format!("ringway-log-{}", map.len()))
        .spawn(move || write_loop(rx, target, &thread_stats, &shown))?;
    let w = Arc::new(Writer { tx, stats });
    map.insert(path.to_string(), w.clone());
    Ok(w)
}

fn write_loop(rx: Receiver<Msg>, mut target: Target, stats: &WriterStats, path: &str) {
    let mut failures: u64 = 0;
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Batch(batch) => match target.write_all(&batch) {
                Ok(()) => {
                    stats.completed.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    stats.failed.fetch_add(1, Relaxed);
                    // The first failure and then every 1000th, so a full disk
                    // does not flood the log.
                    if failures.is_multiple_of(1000) {
                        tracing::error!("access log {path}: write failed ({} so far): {e}", failures + 1);
                    }
                    failures += 1;
                }
            },
            Msg::Sync(reply) => {
                let _ = reply.send(());
            }
        }
    }
}

/// Waits, up to `timeout` in all, until every writer has written what was
/// queued before this call. The runtime calls it after the workers stop so
/// the last lines reach their files before the process exits.
pub fn sync_writers(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let writers: Vec<Arc<Writer>> = registry().values().cloned().collect();
    let mut replies = Vec::new();
    for w in writers {
        let (tx, rx) = mpsc::channel();
        let mut msg = Msg::Sync(tx);
        loop {
            match w.tx.try_send(msg) {
                Ok(()) => {
                    replies.push(rx);
                    break;
                }
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break,
            }
        }
    }
    for rx in replies {
        let _ = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

/// Envoy's `filesystem.*` stats for access log files, plus ringway's drop
/// count; per core, in the worker's shard.
struct SinkStats {
    /// Lines rendered into a buffer.
    write_buffered: Counter,
    /// Buffers handed to the writer by the periodic flush (not because full).
    flushed_by_timer: Counter,
    /// Buffers written to their file.
    write_completed: Counter,
    /// Writes that failed.
    write_failed: Counter,
    /// Buffers dropped because the writer's queue was full (or it is gone).
    batches_dropped: Counter,
}

/// One core's buffer for one destination path.
pub(crate) struct CoreSink {
    buf: RefCell<Vec<u8>>,
    writer: Arc<Writer>,
    stats: SinkStats,
}

/// This core's sinks, one per path.
struct Sinks(Vec<(String, Rc<CoreSink>)>);

impl Drop for Sinks {
    /// A worker thread that ends hands over what it still buffers (lines
    /// logged after its last flush), so no line is lost at shutdown.
    fn drop(&mut self) {
        for (_, sink) in &self.0 {
            sink.flush();
        }
    }
}

thread_local! {
    /// This core's sinks, one per path, shared by every connection manager
    /// on the core and kept across reloads.
    static SINKS: RefCell<Sinks> = const { RefCell::new(Sinks(Vec::new())) };
}

/// This core's sink for `path`, created (and the writer opened, if the
/// runtime has not already) the first time. Called when a config is
/// installed, not per request.
pub(crate) fn core_sink(path: &str, shard: &Shard) -> io::Result<Rc<CoreSink>> {
    SINKS.with(|sinks| {
        if let Some((_, s)) = sinks.borrow().0.iter().find(|(p, _)| p == path) {
            return Ok(s.clone());
        }
        let writer = writer(path)?;
        let c = |name: &str| shard.counter(StatKey::plain(name));
        let sink = Rc::new(CoreSink {
            buf: RefCell::new(Vec::with_capacity(BATCH_BYTES + LINE_SLACK)),
            writer,
            stats: SinkStats {
                write_buffered: c("filesystem.write_buffered"),
                flushed_by_timer: c("filesystem.flushed_by_timer"),
                write_completed: c("filesystem.write_completed"),
                write_failed: c("filesystem.write_failed"),
                batches_dropped: c("access_log.batches_dropped"),
            },
        });
        sinks.borrow_mut().0.push((path.to_string(), sink.clone()));
        Ok(sink)
    })
}

impl CoreSink {
    /// Appends one line with `render`; hands the buffer over once it is full.
    #[inline]
    pub(crate) fn append(&self, render: impl FnOnce(&mut Vec<u8>)) {
        let mut buf = self.buf.borrow_mut();
        render(&mut buf);
        self.stats.write_buffered.inc();
        if buf.len() >= BATCH_BYTES {
            self.hand_over(&mut buf);
        }
    }

    fn hand_over(&self, buf: &mut Vec<u8>) -> bool {
        let batch = std::mem::replace(buf, Vec::with_capacity(BATCH_BYTES + LINE_SLACK));
        let sent = self.writer.tx.try_send(Msg::Batch(batch)).is_ok();
        if !sent {
            self.stats.batches_dropped.inc();
        }
        sent
    }

    /// The periodic flush: hands over a non-empty buffer and collects the
    /// writer's counts.
    fn flush(&self) {
        let mut buf = self.buf.borrow_mut();
        if !buf.is_empty() && self.hand_over(&mut buf) {
            self.stats.flushed_by_timer.inc();
        }
        let claim = |from: &AtomicU64, to: &Counter| {
            if from.load(Relaxed) != 0 {
                to.add(from.swap(0, Relaxed));
            }
        };
        claim(&self.writer.stats.completed, &self.stats.write_completed);
        claim(&self.writer.stats.failed, &self.stats.write_failed);
    }
}

/// Hands this core's buffered access log lines to the writer threads. The
/// worker calls it every `FLUSH_INTERVAL` and when it stops.
pub fn flush_core() {
    let _ = SINKS.try_with(|sinks| {
        for (_, sink) in &sinks.borrow().0 {
            sink.flush();
        }
    });
}
