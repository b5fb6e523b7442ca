//! Access log files at serve time: opened by serving (never by validation),
//! an unopenable path fails the start or the reload with its field path, and
//! a reload that keeps a path keeps its writer.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test should fail loudly")]

mod common;

use std::path::PathBuf;

use common::http::*;
use common::*;
use ringway::runtime::Server;

const LOG_FIELD: &str =
    "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.access_log[0].typed_config.path";

fn yaml(log_path: &str, body: &str) -> String {
    let routes = format!(
        "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {{prefix: \"/\"}}\n                direct_response: {{status: 200, body: {{inline_string: \"{body}\"}}}}\n"
    );
    http_yaml(
        &[("app", closed_port())],
        &routes,
        &logger(log_path, r#"log_format: {text_format_source: {inline_string: "%REQ(:METHOD)% %RESPONSE_CODE%\n"}}"#),
    )
}

/// HCM lines for one file access log at `path` with `format` (a YAML line).
fn logger(path: &str, format: &str) -> String {
    format!(
        r#"          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: "{path}"
              {format}"#
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

#[test]
fn requests_are_logged_with_envoys_fields_and_flags() {
    let app = HttpUpstream::start();
    let default_log = TempFile::new("default");
    let custom_log = TempFile::new("custom");
    let routes = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: \"/app\"}\n                name: to-app\n                route: {cluster: app}\n              - match: {prefix: \"/down\"}\n                route: {cluster: down}\n";
    let custom = r#"log_format: {text_format_source: {inline_string: "%RESPONSE_CODE% %RESPONSE_FLAGS% %ROUTE_NAME% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %BYTES_RECEIVED% %BYTES_SENT% %REQ(X-TEST-TAG)% %RESPONSE_CODE_DETAILS%\n"}}"#;
    let loggers = format!(
        "{}\n{}",
        logger(default_log.path(), ""),
        logger(custom_log.path(), custom).replacen("          access_log:\n", "", 1)
    );
    let yaml = http_yaml(&[("app", app.addr), ("down", closed_port())], routes, &loggers);
    let server = start(&yaml, opts(1));
    let addr = server.listener_addr("web").unwrap();
    let mut s = connect(addr);
    let (status, _, body) = exchange(&mut s, b"POST /app/x?q=1 HTTP/1.1\r\nHost: shop\r\nX-Test-Tag: t1\r\nUser-Agent: ua/1\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(status, 200);
    let (status, _, _) = exchange(&mut s, b"GET /down HTTP/1.1\r\nHost: shop\r\n\r\n");
    assert_eq!(status, 503);
    let (status, _, _) = exchange(&mut s, b"GET /nowhere HTTP/1.1\r\nHost: shop\r\n\r\n");
    assert_eq!(status, 404);
    // Lines reach the files within a flush interval.
    let read = |f: &TempFile| std::fs::read_to_string(&f.0).unwrap_or_default();
    wait_until("three custom lines", || read(&custom_log).lines().count() == 3);
    let lines: Vec<String> = read(&custom_log).lines().map(str::to_string).collect();
    assert_eq!(lines[0], format!("200 - to-app app {} 5 {} t1 via_upstream", app.addr, body.len()));
    assert!(lines[1].starts_with("503 UF - down 127.0.0.1:"), "{}", lines[1]);
    assert!(lines[1].ends_with(" 0 91 - upstream_reset_before_response_started"), "{}", lines[1]);
    assert_eq!(lines[2], "404 NR - - - 0 0 - route_not_found");
    wait_until("three default lines", || read(&default_log).lines().count() == 3);
    let first = read(&default_log).lines().next().unwrap().to_string();
    let want = format!("\"POST /app/x?q=1 HTTP/1.1\" 200 - 5 {} ", body.len());
    assert!(first.starts_with('[') && first.contains(&want), "{first}");
    assert!(
        first.contains("\"ua/1\"") && first.contains("\"shop\"") && first.ends_with(&format!("\"{}\"", app.addr)),
        "{first}"
    );
    stop(server);
}
