//! Access logging for the HTTP connection manager: Envoy's file, stdout and
//! stderr access loggers with its format strings and JSON dictionaries.
//!
//! connection manager (request done) → **access log**: format (`format`) →
//! per-core buffer → writer thread per path (`writer`) → file
//!
//! Config time: `config::validate` decodes `access_log` entries
//! (`validate_access_logs`) into [`AccessLogConfig`]s with compiled formats;
//! nothing is opened, so `--mode validate` creates no files. Serve time: the
//! runtime opens every path of a snapshot it is about to publish
//! ([`open_writers`]), so an unopenable path fails the start or the reload.
//! Install time, on each worker: the connection manager builds an
//! [`AccessLogger`] (its core's sinks). Per request: [`AccessLogger::log`]
//! renders into the core's buffer; the worker's periodic flush
//! ([`flush_core`]) and full buffers hand batches to the writer threads,
//! which never block a worker: a full queue drops the batch and counts it.

mod config;
pub mod format;
mod writer;

use std::rc::Rc;
use std::sync::Arc;

use crate::config::{ConfigError, NetworkFilter, Snapshot};
use crate::stats::Shard;

pub use config::validate_access_logs;
pub use format::{DEFAULT_FORMAT, Format, JsonFormat, LogContext};
pub use writer::{BATCH_BYTES, flush_core, is_open, sync_writers};

/// One validated `access_log` entry.
#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    /// A file path, `/dev/stdout` or `/dev/stderr`.
    pub path: String,
    pub format: Arc<LogFormat>,
    /// The config field the path came from, for an error if it cannot be
    /// opened (`...access_log[0].typed_config.path`).
    pub field: String,
}

/// How a line is written.
#[derive(Debug, Clone, PartialEq)]
pub enum LogFormat {
    /// A format string; it carries its own newline (Envoy adds none).
    Text { format: Format, omit_empty: bool },
    /// A JSON object per line, newline added.
    Json { format: JsonFormat, omit_empty: bool },
}

impl LogFormat {
    /// Appends one rendered line to `out`.
    pub fn render(&self, ctx: &LogContext<'_>, out: &mut Vec<u8>) {
        match self {
            LogFormat::Text { format, omit_empty: false } => format.render(ctx, out),
            LogFormat::Text { format, omit_empty: true } => format.render_missing_as(ctx, out, b""),
            LogFormat::Json { format, omit_empty } => {
                format.render(ctx, out, *omit_empty);
                out.push(b'\n');
            }
        }
    }
}

/// Starts (or finds) the writer of every access log path in `snapshot`.
/// The runtime calls it before publishing a snapshot: at start and on each
/// reload, off the workers. An unopenable path is an error at its field.
pub fn open_writers(snapshot: &Snapshot) -> Result<(), ConfigError> {
    for l in &snapshot.listeners {
        for chain in &l.filter_chains {
            if let NetworkFilter::HttpConnectionManager(hcm) = &chain.terminal {
                for a in &hcm.access_logs {
                    writer::writer(&a.path)
                        .map_err(|e| ConfigError::new(a.field.clone(), format!("cannot open `{}`: {e}", a.path)))?;
                }
            }
        }
    }
    Ok(())
}

/// One connection manager's access logs on one core. Built when the core
/// installs a snapshot; `log` is the per-request call.
#[derive(Default)]
pub struct AccessLogger {
    entries: Vec<(Arc<LogFormat>, Rc<writer::CoreSink>)>,
}

impl AccessLogger {
    /// This core's logger for `configs` (`HcmConfig::access_logs`). Runs on
    /// the worker thread at install time; counters go to `shard`. A path the
    /// runtime has not opened is opened here; one that cannot be is logged
    /// and skipped.
    pub fn new(configs: &[AccessLogConfig], shard: &Shard) -> AccessLogger {
        let mut entries = Vec::with_capacity(configs.len());
        for c in configs {
            match writer::core_sink(&c.path, shard) {
                Ok(sink) => entries.push((c.format.clone(), sink)),
                Err(e) => tracing::error!("{}: cannot open access log `{}`: {e}; not logging there", c.field, c.path),
            }
        }
        AccessLogger { entries }
    }

    /// Whether there is anything to log (so a caller can skip building the
    /// context).
    #[inline]
    pub fn is_enabled(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Writes one line per access log for a finished request. Never blocks
    /// and does not allocate in steady state.
    pub fn log(&self, ctx: &LogContext<'_>) {
        for (format, sink) in &self.entries {
            sink.append(|buf| format.render(ctx, buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Store;
    use std::time::{Duration, Instant, SystemTime};

    fn ctx<'a>(target: &'a str, req: &'a [(String, Vec<u8>)]) -> LogContext<'a> {
        LogContext {
            start: SystemTime::now(),
            method: "GET",
            target,
            protocol: "HTTP/1.1",
            scheme: "http",
            request_headers: req,
            request_id: None,
            response_headers: &[],
            response_code: 200,
            response_flags: "-",
            response_code_details: "",
            bytes_received: 0,
            bytes_sent: 5,
            duration: Duration::from_millis(3),
            request_duration: None,
            response_duration: None,
            upstream_service_time: None,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local: None,
            downstream_remote: "127.0.0.1:40000".parse().unwrap(),
            downstream_direct_remote: "127.0.0.1:40000".parse().unwrap(),
            downstream_local: None,
            route_name: None,
            connection_id: 1,
        }
    }

    /// Removes the file when the test ends, however it ends.
    struct TempFile(std::path::PathBuf);

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn temp_path(tag: &str) -> TempFile {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
        TempFile(std::env::temp_dir().join(format!("ringway-access-log-{tag}-{}-{nanos}.log", std::process::id())))
    }

    fn wait_for_lines(path: &std::path::Path, want: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= want || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn config(path: &str, format: &str) -> AccessLogConfig {
        AccessLogConfig {
            path: path.to_string(),
            format: Arc::new(LogFormat::Text { format: Format::parse(format).unwrap(), omit_empty: false }),
            field: "test.access_log[0].typed_config.path".into(),
        }
    }

    #[test]
    fn lines_reach_the_file_through_the_writer_thread() {
        let file = temp_path("writer");
        let path = file.0.to_str().unwrap().to_string();
        let store = Store::new(1);
        let shard = store.worker(0);
        let logger = AccessLogger::new(&[config(&path, "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%\n")], &shard);
        assert!(logger.is_enabled());
        // A second manager on the same core shares the core's buffer.
        let json = AccessLogConfig {
            format: Arc::new(LogFormat::Json {
                format: {
                    let serde_json::Value::Object(m) =
                        serde_json::json!({"path": "%REQ(:PATH)%", "code": "%RESPONSE_CODE%"})
                    else {
                        unreachable!()
                    };
                    JsonFormat::parse(&m).unwrap()
                },
                omit_empty: false,
            }),
            ..config(&path, "")
        };
        let other = AccessLogger::new(&[json], &shard);

        for i in 0..3 {
            logger.log(&ctx(&format!("/small/{i}"), &[]));
        }
        other.log(&ctx("/json", &[]));
        // Nothing is written until the periodic flush hands the buffer over.
        flush_core();
        let text = wait_for_lines(&file.0, 4);
        assert_eq!(text, "GET /small/0 200\nGET /small/1 200\nGET /small/2 200\n{\"code\":200,\"path\":\"/json\"}\n");

        // Enough lines to fill buffers: handed over without a flush.
        let long = "x".repeat(1000);
        let n = 3 * BATCH_BYTES / 1000;
        for _ in 0..n {
            logger.log(&ctx(&long, &[]));
        }
        let line_len = format!("GET {long} 200\n").len();
        let per_batch = BATCH_BYTES.div_ceil(line_len);
        let handed_over = n / per_batch * per_batch;
        assert!(handed_over > 0 && handed_over < n);
        let text = wait_for_lines(&file.0, 4 + handed_over);
        // Full buffers only: the rest waits for the flush.
        assert_eq!(text.lines().count(), 4 + handed_over);
        flush_core();
        let text = wait_for_lines(&file.0, 4 + n);
        assert_eq!(text.lines().count(), 4 + n);
        assert!(text.lines().skip(4).all(|l| l == format!("GET {long} 200")));

        sync_writers(Duration::from_secs(5));
        flush_core();
        assert_eq!(store.get("filesystem.write_buffered"), Some(4 + n as i128));
        assert!(store.get("filesystem.flushed_by_timer").unwrap() >= 2);
        assert!(store.get("filesystem.write_completed").unwrap() >= 4);
        assert_eq!(store.get("filesystem.write_failed"), Some(0));
        assert_eq!(store.get("access_log.batches_dropped"), Some(0));
    }
}
