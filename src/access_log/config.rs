//! Validation of the connection manager's `access_log` list: the raw entries
//! (`raw::AccessLog`, v3 `typed_config` with `@type` or v2 `config`) become
//! [`AccessLogConfig`]s with compiled formats. Errors name the field path.
//!
//! config → validate_hcm → **access log config** → `HcmConfig::access_logs`

use std::sync::Arc;

use serde_json::Value;

use super::{AccessLogConfig, Format, JsonFormat, LogFormat};
use crate::config::ConfigError;
use crate::config::raw;
use crate::config::validate::decode;

const FILE_NAMES: &[&str] = &["envoy.access_loggers.file", "envoy.file_access_log"];
const FILE_TYPES: &[&str] = &[
    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
    "type.googleapis.com/envoy.config.accesslog.v2.FileAccessLog",
];
const STDOUT_NAMES: &[&str] = &["envoy.access_loggers.stdout"];
const STDOUT_TYPES: &[&str] = &["type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"];
const STDERR_NAMES: &[&str] = &["envoy.access_loggers.stderr"];
const STDERR_TYPES: &[&str] = &["type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Stdout,
    Stderr,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(path, message)
}

/// Validates `access_log` (at `path`, e.g. `...typed_config.access_log`).
pub fn validate_access_logs(logs: &[raw::AccessLog], path: &str) -> Result<Vec<AccessLogConfig>, ConfigError> {
    logs.iter().enumerate().map(|(i, log)| validate_access_log(log, &format!("{path}[{i}]"))).collect()
}

fn validate_access_log(log: &raw::AccessLog, path: &str) -> Result<AccessLogConfig, ConfigError> {
    if log.filter.is_some() {
        return Err(err(
            format!("{path}.filter"),
            "access log filters are not supported yet; without `filter` every request is logged",
        ));
    }
    let (value, field) = match (&log.typed_config, &log.config) {
        (Some(_), Some(_)) => {
            return Err(err(format!("{path}.config"), "give either typed_config or config, not both"));
        }
        (Some(v), None) => (v.clone(), "typed_config"),
        (None, Some(v)) => (v.clone(), "config"),
        (None, None) => (Value::Object(Default::default()), "typed_config"),
    };
    let settings_path = format!("{path}.{field}");
    let Value::Object(mut map) = value else {
        return Err(err(settings_path, "expected a mapping"));
    };
    let by_type = |t: &str| {
        [(FILE_TYPES, Kind::File), (STDOUT_TYPES, Kind::Stdout), (STDERR_TYPES, Kind::Stderr)]
            .into_iter()
            .find(|(types, _)| types.contains(&t))
            .map(|(_, k)| k)
    };
    let by_name = |n: &str| {
        [(FILE_NAMES, Kind::File), (STDOUT_NAMES, Kind::Stdout), (STDERR_NAMES, Kind::Stderr)]
            .into_iter()
            .find(|(names, _)| names.contains(&n))
            .map(|(_, k)| k)
    };
    let kind = match map.remove("@type") {
        Some(Value::String(t)) => by_type(&t).ok_or_else(|| {
            err(
                format!("{settings_path}.@type"),
                format!(
                    "`{t}` is not a supported access logger; expected {}, {} or {}",
                    FILE_TYPES[0], STDOUT_TYPES[0], STDERR_TYPES[0]
                ),
            )
        })?,
        Some(_) => return Err(err(format!("{settings_path}.@type"), "expected a type URL string")),
        None => {
            let kind = by_name(&log.name).ok_or_else(|| {
                err(
                    format!("{path}.name"),
                    format!(
                        "access logger `{}` is not supported; expected envoy.access_loggers.file, \
                         envoy.access_loggers.stdout or envoy.access_loggers.stderr",
                        log.name
                    ),
                )
            })?;
            // v3 `typed_config` is a protobuf Any and must say its type; v2
            // `config` never did.
            if field == "typed_config" && log.typed_config.is_some() {
                let want = match kind {
                    Kind::File => FILE_TYPES[0],
                    Kind::Stdout => STDOUT_TYPES[0],
                    Kind::Stderr => STDERR_TYPES[0],
                };
                return Err(err(format!("{settings_path}.@type"), format!("missing; expected {want}")));
            }
            kind
        }
    };
    let settings = Value::Object(map);
    let (dest, dest_field, format) = match kind {
        Kind::File => {
            let f: raw::FileAccessLog = decode(settings, &settings_path)?;
            if f.path.is_empty() {
                return Err(err(format!("{settings_path}.path"), "must not be empty"));
            }
            let format = file_format(&f, &settings_path)?;
            (f.path, format!("{settings_path}.path"), format)
        }
        Kind::Stdout | Kind::Stderr => {
            let s: raw::StreamAccessLog = decode(settings, &settings_path)?;
            let format = match &s.log_format {
                Some(lf) => log_format(lf, &format!("{settings_path}.log_format"))?,
                None => default_format(),
            };
            let dest = if kind == Kind::Stdout { "/dev/stdout" } else { "/dev/stderr" };
            (dest.to_string(), settings_path, format)
        }
    };
    Ok(AccessLogConfig { path: dest, format: Arc::new(format), field: dest_field })
}

fn default_format() -> LogFormat {
    LogFormat::Text { format: Format::envoy_default(), omit_empty: false }
}

/// FileAccessLog's format: `log_format` (v3), or the older `format`,
/// `json_format`, `typed_json_format` (v2, deprecated in v3); at most one.
fn file_format(f: &raw::FileAccessLog, path: &str) -> Result<LogFormat, ConfigError> {
    let given: Vec<&str> = [
        ("format", f.format.is_some()),
        ("json_format", f.json_format.is_some()),
        ("typed_json_format", f.typed_json_format.is_some()),
        ("log_format", f.log_format.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(name, _)| name)
    .collect();
    if let [_, second, ..] = given.as_slice() {
        return Err(err(format!("{path}.{second}"), format!("give only one of {}", given.join(", "))));
    }
    if let Some(text) = &f.format {
        return text_format(text, &format!("{path}.format"), false);
    }
    if let Some(json) = f.json_format.as_ref().or(f.typed_json_format.as_ref()) {
        let field = if f.json_format.is_some() { "json_format" } else { "typed_json_format" };
        return json_format(json, &format!("{path}.{field}"), false);
    }
    match &f.log_format {
        Some(lf) => log_format(lf, &format!("{path}.log_format")),
        None => Ok(default_format()),
    }
}

/// A `SubstitutionFormatString`: exactly one of `text_format`,
/// `text_format_source` or `json_format`.
fn log_format(lf: &raw::SubstitutionFormatString, path: &str) -> Result<LogFormat, ConfigError> {
    if !lf.formatters.is_empty() {
        return Err(err(format!("{path}.formatters"), "custom formatter extensions are not supported"));
    }
    let omit = lf.omit_empty_values.unwrap_or(false);
    match (&lf.text_format, &lf.text_format_source, &lf.json_format) {
        (Some(t), None, None) => text_format(t, &format!("{path}.text_format"), omit),
        (None, Some(src), None) => {
            let Some(t) = &src.inline_string else {
                return Err(err(
                    format!("{path}.text_format_source.inline_string"),
                    "missing; only inline_string is supported",
                ));
            };
            text_format(t, &format!("{path}.text_format_source.inline_string"), omit)
        }
        (None, None, Some(j)) => json_format(j, &format!("{path}.json_format"), omit),
        (None, None, None) => Err(err(path, "give one of text_format, text_format_source or json_format")),
        _ => Err(err(path, "give only one of text_format, text_format_source or json_format")),
    }
}

fn text_format(text: &str, path: &str, omit_empty: bool) -> Result<LogFormat, ConfigError> {
    let format = Format::parse(text).map_err(|e| err(path, e))?;
    Ok(LogFormat::Text { format, omit_empty })
}

fn json_format(value: &Value, path: &str, omit_empty: bool) -> Result<LogFormat, ConfigError> {
    let Value::Object(map) = value else {
        return Err(err(path, "expected a mapping of keys to format strings"));
    };
    let format = JsonFormat::parse(map).map_err(|(key, e)| err(format!("{path}.{key}"), e))?;
    Ok(LogFormat::Json { format, omit_empty })
}

#[cfg(test)]
mod tests {
    use super::super::{LogContext, open_writers};
    use super::*;
    use crate::config::{NetworkFilter, Snapshot, check_str};

    /// An HTTP listener; `ACCESS_LOG` is replaced with the entries under test.
    const BASE: &str = r#"
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
ACCESS_LOG
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response: {status: 200}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#;

    const V2_BASE: &str = r#"
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.http_connection_manager
        config:
          stat_prefix: ingress
ACCESS_LOG
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response: {status: 200}
          http_filters:
          - name: envoy.router
"#;

    const HCM: &str = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";

    fn with(base: &str, access_log: &str) -> String {
        let indented: String = access_log.lines().map(|l| format!("          {l}\n")).collect();
        base.replace("ACCESS_LOG\n", &indented)
    }

    fn logs(s: &Snapshot) -> &[AccessLogConfig] {
        match &s.listeners[0].filter_chains[0].terminal {
            NetworkFilter::HttpConnectionManager(h) => &h.access_logs,
            NetworkFilter::TcpProxy(_) => panic!("not an HTTP listener"),
        }
    }

    fn render(c: &AccessLogConfig) -> String {
        let req = vec![("User-Agent".to_string(), b"curl".to_vec())];
        let ctx = LogContext {
            start: std::time::UNIX_EPOCH,
            method: "GET",
            target: "/x",
            protocol: "HTTP/1.1",
            scheme: "http",
            request_headers: &req,
            request_id: None,
            response_headers: &[],
            response_code: 200,
            response_flags: "",
            response_code_details: "",
            bytes_received: 0,
            bytes_sent: 2,
            duration: std::time::Duration::from_millis(1),
            request_duration: None,
            response_duration: None,
            upstream_service_time: None,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local: None,
            downstream_remote: "127.0.0.1:1".parse().unwrap(),
            downstream_direct_remote: "127.0.0.1:1".parse().unwrap(),
            downstream_local: None,
            route_name: None,
            connection_id: 1,
        };
        let mut out = Vec::new();
        c.format.render(&ctx, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn v3_spellings_are_accepted() {
        let yaml = with(
            BASE,
            r#"access_log:
- name: envoy.access_loggers.file
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
    path: /dev/stdout
    log_format:
      text_format_source: {inline_string: "%REQ(:METHOD)% %REQ(USER-AGENT)% %RESPONSE_CODE%\n"}
- name: envoy.access_loggers.file
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
    path: /var/log/ringway/access.json
    log_format:
      json_format: {code: "%RESPONSE_CODE%", ua: "%REQ(USER-AGENT)%", nope: "%REQ(X-NOPE)%"}
      omit_empty_values: true
- name: envoy.access_loggers.stdout
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
- name: envoy.access_loggers.stderr
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog
    log_format: {text_format: "%PROTOCOL%\n"}
- name: envoy.access_loggers.file
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
    path: /tmp/x.log
    format: "deprecated %DURATION%\n""#,
        );
        let snap = check_str(&yaml, 1).unwrap();
        let l = logs(&snap);
        assert_eq!(l.len(), 5);
        assert_eq!(l[0].path, "/dev/stdout");
        assert_eq!(l[0].field, format!("{HCM}.access_log[0].typed_config.path"));
        assert_eq!(render(&l[0]), "GET curl 200\n");
        assert_eq!(l[1].path, "/var/log/ringway/access.json");
        assert_eq!(render(&l[1]), "{\"code\":200,\"ua\":\"curl\"}\n");
        assert_eq!(l[2].path, "/dev/stdout");
        assert!(
            render(&l[2]).starts_with("[1970-01-01T00:00:00.000Z] \"GET /x HTTP/1.1\" 200 - 0 2 1 - \"-\" \"curl\"")
        );
        assert_eq!(l[3].path, "/dev/stderr");
        assert_eq!(render(&l[3]), "HTTP/1.1\n");
        assert_eq!(render(&l[4]), "deprecated 1\n");
        // Validation opens nothing.
        assert!(!super::super::is_open("/var/log/ringway/access.json"));
        // The config dump keeps the entries as written.
        assert!(snap.effective.to_string().contains("access.json"));
    }

    #[test]
    fn v2_spellings_are_accepted() {
        let yaml = with(
            V2_BASE,
            r#"access_log:
- name: envoy.file_access_log
  config: {path: /dev/stdout, format: "%START_TIME(%s)% %REQ(:PATH)%\n"}
- name: envoy.file_access_log
  config:
    path: /dev/stderr
    json_format: {path: "%REQ(:PATH)%", n: 1}
- name: envoy.file_access_log
  config: {path: /dev/stdout}
- name: envoy.file_access_log
  typed_config:
    "@type": type.googleapis.com/envoy.config.accesslog.v2.FileAccessLog
    path: /dev/stdout"#,
        );
        let snap = check_str(&yaml, 1).unwrap();
        let l = logs(&snap);
        assert_eq!(l.len(), 4);
        assert_eq!(render(&l[0]), "0 /x\n");
        assert_eq!(l[0].field, format!("{}.access_log[0].config.path", HCM.replace("typed_config", "config")));
        assert_eq!(render(&l[1]), "{\"n\":1,\"path\":\"/x\"}\n");
        assert_eq!(*l[2].format, default_format());
        assert_eq!(l[3].path, "/dev/stdout");
    }

    #[test]
    fn errors_name_the_field_path() {
        let file = "- name: envoy.access_loggers.file\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n";
        let cases = [
            (
                format!("access_log:\n{file}    path: /dev/stdout\n  filter: {{status_code_filter: {{}}}}"),
                format!("{HCM}.access_log[0].filter: access log filters are not supported yet"),
            ),
            (
                "access_log:\n- name: envoy.access_loggers.file\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.http_grpc.v3.HttpGrpcAccessLogConfig\n".into(),
                format!("{HCM}.access_log[0].typed_config.@type: `type.googleapis.com/envoy.extensions.access_loggers.http_grpc.v3.HttpGrpcAccessLogConfig` is not a supported access logger"),
            ),
            (
                "access_log:\n- name: envoy.access_loggers.file\n  typed_config: {path: /dev/stdout}".into(),
                format!("{HCM}.access_log[0].typed_config.@type: missing; expected type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"),
            ),
            (
                "access_log:\n- name: envoy.access_loggers.http_grpc\n  config: {}".into(),
                format!("{HCM}.access_log[0].name: access logger `envoy.access_loggers.http_grpc` is not supported"),
            ),
            (
                format!("access_log:\n{file}    path: /dev/stdout\n    log_format: {{text_format: \"%REQ(:METHOD)% %NOT_AN_OP%\"}}"),
                format!("{HCM}.access_log[0].typed_config.log_format.text_format: unknown operator `%NOT_AN_OP%`"),
            ),
            (
                format!("access_log:\n{file}    path: /dev/stdout\n    log_format: {{text_format_source: {{inline_string: \"%BAD%\"}}}}"),
                format!("{HCM}.access_log[0].typed_config.log_format.text_format_source.inline_string: unknown operator `%BAD%`"),
            ),
            (
                format!("access_log:\n{file}    path: /dev/stdout\n    log_format: {{json_format: {{a: {{b: \"%BAD%\"}}}}}}"),
                format!("{HCM}.access_log[0].typed_config.log_format.json_format.a.b: unknown operator `%BAD%`"),
            ),
            (
                format!("access_log:\n{file}    path: /dev/stdout\n    log_format: {{text_format: x, json_format: {{}}}}"),
                format!("{HCM}.access_log[0].typed_config.log_format: give only one of"),
            ),
            (
                format!("access_log:\n{file}    path: /dev/stdout\n    format: x\n    log_format: {{text_format: x}}"),
                format!("{HCM}.access_log[0].typed_config.log_format: give only one of format, log_format"),
            ),
            (format!("access_log:\n{file}    path: \"\""), format!("{HCM}.access_log[0].typed_config.path: must not be empty")),
            (
                format!("access_log:\n{file}    path: /dev/stdout\n    bogus: 1"),
                format!("{HCM}.access_log[0].typed_config.bogus: unknown field"),
            ),
            (
                "access_log:\n- name: envoy.access_loggers.stdout\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog\n    path: /x".into(),
                format!("{HCM}.access_log[0].typed_config.path: unknown field"),
            ),
            (
                "access_log:\n- name: envoy.file_access_log\n  config: {path: /dev/stdout, format: \"%REQ(:METHOD)%\"}\n- name: envoy.file_access_log\n  config: {path: /dev/stdout, format: \"100%\"}".into(),
                format!("{HCM}.access_log[1].config.format: a lone `%`"),
            ),
        ];
        for (access_log, want) in cases {
            let yaml = with(BASE, &access_log);
            match check_str(&yaml, 1) {
                Ok(_) => panic!("should be refused:\n{access_log}"),
                Err(e) => assert!(e.to_string().contains(&want), "want `{want}` in `{e}`"),
            }
        }
    }

    #[test]
    fn an_unopenable_path_is_refused_at_serve_time_only() {
        let yaml = with(
            BASE,
            "access_log:\n- name: envoy.file_access_log\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n    path: /nonexistent-ringway-dir/access.log",
        );
        let snap = check_str(&yaml, 1).unwrap();
        let e = open_writers(&snap).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{HCM}.access_log[0].typed_config.path: cannot open `/nonexistent-ringway-dir/access.log`"
            )),
            "{e}"
        );
        assert!(!super::super::is_open("/nonexistent-ringway-dir/access.log"));
    }
}
