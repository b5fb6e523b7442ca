//! Access log files at serve time: opened by serving (never by validation),
//! an unopenable path fails the start or the reload with its field path, and
//! a reload that keeps a path keeps its writer.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test should fail loudly")]

mod common;

use std::path::PathBuf;

use common::{opts, stop};
use ringway::runtime::Server;

const LOG_FIELD: &str =
    "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.access_log[0].typed_config.path";

fn yaml(log_path: &str, body: &str) -> String {
    format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: http
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: "{log_path}"
              log_format: {{text_format_source: {{inline_string: "%REQ(:METHOD)% %RESPONSE_CODE%\n"}}}}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                direct_response: {{status: 200, body: {{inline_string: "{body}"}}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

/// A unique file under the temp dir, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        TempFile(std::env::temp_dir().join(format!("ringway-it-{tag}-{}-{nanos}.log", std::process::id())))
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn validation_creates_no_file_and_serving_opens_it() {
    let log = TempFile::new("open");
    let config = yaml(log.path(), "one");
    let snapshot = ringway::config::check_str(&config, 1).unwrap();
    assert!(!log.0.exists(), "validation must not create the log file");
    let server = Server::start(snapshot, opts(1)).unwrap();
    assert!(log.0.exists(), "serving opens (creates) the log file");
    assert!(ringway::access_log::is_open(log.path()));

    // A reload that keeps the path is taken; one that names an unopenable
    // path is refused at the path's field and the old config keeps serving.
    let v2 = server.reload_str(&yaml(log.path(), "two")).unwrap();
    let bad = yaml("/nonexistent-ringway-dir/access.log", "three");
    let e = server.reload_str(&bad).unwrap_err();
    assert!(e.starts_with(&format!("{LOG_FIELD}: cannot open `/nonexistent-ringway-dir/access.log`")), "{e}");
    assert_eq!(server.shared().snapshot.load().version, v2);
    stop(server);
}

#[test]
fn an_unopenable_path_fails_the_start() {
    let snapshot = ringway::config::check_str(&yaml("/nonexistent-ringway-dir/a.log", "x"), 1).unwrap();
    let e = Server::start(snapshot, opts(1)).err().expect("start should fail").to_string();
    assert!(e.starts_with(&format!("{LOG_FIELD}: cannot open")), "{e}");
}
