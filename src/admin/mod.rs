//! The admin server: Envoy's admin endpoints on their own thread, off the
//! worker cores. It reads the published snapshot and merges the workers' stat
//! shards; it never blocks a worker.

mod http;

use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::json;

use crate::runtime::Shared;
use crate::stats::{self, Gauge, StatKey};
use http::{Request, Response};

/// At most this many admin requests are served at once; more wait in the
/// kernel's backlog.
const MAX_CONCURRENT: usize = 16;

pub struct AdminHandle {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminHandle {
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Admin {
    shared: Arc<Shared>,
    driver: &'static str,
    uptime: Gauge,
    live: Gauge,
}

pub fn start(listener: TcpListener, shared: Arc<Shared>, driver: &'static str) -> io::Result<AdminHandle> {
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = shared.stats.server();
    let admin = Arc::new(Admin {
        uptime: server.gauge(StatKey::plain("server.uptime")),
        live: server.gauge(StatKey::plain("server.live")),
        shared,
        driver,
    });
    admin.refresh_server_stats();
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new().name("ringway-admin".into()).spawn(move || {
        let busy = Arc::new(AtomicUsize::new(0));
        for conn in listener.incoming() {
            if stop2.load(Ordering::Acquire) {
                break;
            }
            let Ok(conn) = conn else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            if busy.load(Ordering::Acquire) >= MAX_CONCURRENT {
                let _ = http::write_response(&conn, &Response::text(503, "admin busy\n"), false);
                continue;
            }
            busy.fetch_add(1, Ordering::AcqRel);
            let admin = admin.clone();
            let busy2 = busy.clone();
            let spawned = std::thread::Builder::new().name("ringway-admin-conn".into()).spawn(move || {
                admin.serve(conn);
                busy2.fetch_sub(1, Ordering::AcqRel);
            });
            if spawned.is_err() {
                busy.fetch_sub(1, Ordering::AcqRel);
            }
        }
    })?;
    tracing::info!("admin listening on {addr}");
    Ok(AdminHandle { addr, stop, thread: Some(thread) })
}

impl Admin {
    fn serve(&self, conn: TcpStream) {
        let (response, head) = match http::read_request(&conn) {
            Ok(req) => (self.handle(&req), req.method == "HEAD"),
            Err(e) => (Response::text(e.status(), &format!("{e}\n")), false),
        };
        let _ = http::write_response(&conn, &response, head);
    }

    fn draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    fn refresh_server_stats(&self) {
        self.uptime.set(self.shared.started.elapsed().as_secs() as i64);
        self.live.set(i64::from(!self.draining()));
    }

    fn handle(&self, req: &Request) -> Response {
        self.route(req)
    }

    fn route(&self, req: &Request) -> Response {
        const READ_ONLY: &[&str] = &[
            "/",
            "/help",
            "/ready",
            "/stats",
            "/stats/prometheus",
            "/clusters",
            "/config_dump",
            "/server_info",
            "/certs",
        ];
        const MUTATING: &[&str] = &["/quitquitquit"];
        let path = req.path.as_str();
        if MUTATING.contains(&path) && req.method != "POST" {
            return Response::text(405, "This endpoint requires POST\n");
        }
        if READ_ONLY.contains(&path) && req.method != "GET" && req.method != "HEAD" {
            return Response::text(405, "This endpoint requires GET\n");
        }
        match path {
            "/ready" => {
                if self.draining() {
                    Response::text(503, "DRAINING\n")
                } else {
                    Response::text(200, "LIVE\n")
                }
            }
            "/stats" => self.stats(req, req.query("format")),
            "/stats/prometheus" => self.stats(req, Some("prometheus")),
            "/clusters" => self.clusters(req.query("format") == Some("json")),
            "/config_dump" => self.config_dump(),
            "/server_info" => self.server_info(),
            "/certs" => self.certs(),
            "/quitquitquit" => {
                self.shared.request_shutdown();
                Response::text(200, "OK\n")
            }
            "/" | "/help" => Response::text(200, HELP),
            _ => Response::text(404, &format!("no admin endpoint {}; see /help\n", req.path)),
        }
    }

    fn stats(&self, req: &Request, format: Option<&str>) -> Response {
        self.refresh_server_stats();
        let merged = self.shared.stats.merged();
        let filter = match req.query("filter") {
            Some(f) if !f.is_empty() => match regex::RegexBuilder::new(f).size_limit(1 << 20).build() {
                Ok(r) => Some(r),
                Err(e) => return Response::text(400, &format!("Invalid regex: {e}\n")),
            },
            _ => None,
        };
        let selected: Vec<&stats::MergedStat> =
            merged.iter().filter(|s| filter.as_ref().is_none_or(|r| r.is_match(&s.key.name))).collect();
        match format {
            None | Some("text") => Response::text(200, &stats::text(selected)),
            Some("json") => Response::json(200, stats::text_json(selected)),
            Some("prometheus") => {
                Response::new(200, "text/plain; version=0.0.4; charset=UTF-8", stats::prometheus(selected))
            }
            Some(other) => {
                Response::text(400, &format!("unknown format `{other}`; expected text, json or prometheus\n"))
            }
        }
    }

    /// Envoy's `/certs`: every loaded certificate with its CA, per TLS
    /// context (listener filter chains, then clusters).
    fn certs(&self) -> Response {
        let snapshot = self.shared.snapshot.load();
        let describe = |c: &crate::tls::CertInfo| {
            let secs = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            serde_json::json!({
                "path": c.source,
                "serial_number": c.serial,
                "subject": c.subject,
                "subject_alt_names": c.sans,
                "days_until_expiration": c.days_left().to_string(),
                "expiration_time": secs(c.not_after),
            })
        };
        let mut out = Vec::new();
        for l in &snapshot.listeners {
            for (i, chain) in l.filter_chains.iter().enumerate() {
                if let Some(t) = &chain.tls {
                    out.push(serde_json::json!({
                        "context": format!("listener {} filter_chains[{i}]", l.name),
                        "ca_cert": t.ca.iter().map(describe).collect::<Vec<_>>(),
                        "cert_chain": t.certificates.iter().map(describe).collect::<Vec<_>>(),
                    }));
                }
            }
        }
        for c in &snapshot.clusters {
            if let Some(t) = &c.tls {
                out.push(serde_json::json!({
                    "context": format!("cluster {}", c.name),
                    "ca_cert": t.ca.iter().map(describe).collect::<Vec<_>>(),
                    "cert_chain": t.certificates.iter().map(describe).collect::<Vec<_>>(),
                }));
            }
        }
        Response::json(200, serde_json::json!({ "certificates": out }).to_string())
    }

    fn clusters(&self, as_json: bool) -> Response {
        let snapshot = self.shared.snapshot.load();
        let hosts = self.shared.stats.merged_hosts();
        const HOST_STATS: &[&str] = &["cx_active", "cx_connect_fail", "cx_total"];
        if as_json {
            let statuses: Vec<serde_json::Value> = snapshot
                .clusters
                .iter()
                .map(|c| {
                    let host_statuses: Vec<serde_json::Value> = c
                        .endpoints
                        .iter()
                        .map(|e| {
                            let values = hosts.get(&(c.name.clone(), e.addr));
                            let stats: Vec<serde_json::Value> = HOST_STATS
                                .iter()
                                .map(|s| {
                                    let v = values.and_then(|m| m.get(s)).copied().unwrap_or(0);
                                    let kind = if *s == "cx_active" { "GAUGE" } else { "COUNTER" };
                                    json!({"name": s, "value": v.to_string(), "type": kind})
                                })
                                .collect();
                            json!({
                                "address": {"socket_address": {"address": e.addr.ip().to_string(), "port_value": e.addr.port()}},
                                "stats": stats,
                                "health_status": {"eds_health_status": "HEALTHY"},
                                "weight": e.weight,
                            })
                        })
                        .collect();
                    json!({"name": c.name, "added_via_api": false, "host_statuses": host_statuses})
                })
                .collect();
            return Response::json(200, json!({ "cluster_statuses": statuses }).to_string());
        }
        let mut out = String::new();
        for c in &snapshot.clusters {
            let n = &c.name;
            let _ = writeln!(out, "{n}::observability_name::{n}");
            let _ = writeln!(out, "{n}::added_via_api::false");
            for e in &c.endpoints {
                let values = hosts.get(&(c.name.clone(), e.addr));
                for s in HOST_STATS {
                    let v = values.and_then(|m| m.get(s)).copied().unwrap_or(0);
                    let _ = writeln!(out, "{n}::{}::{s}::{v}", e.addr);
                }
                let _ = writeln!(out, "{n}::{}::health_flags::healthy", e.addr);
                let _ = writeln!(out, "{n}::{}::weight::{}", e.addr, e.weight);
                let _ = writeln!(out, "{n}::{}::priority::0", e.addr);
            }
        }
        Response::text(200, &out)
    }

    fn config_dump(&self) -> Response {
        let snapshot = self.shared.snapshot.load();
        let body = json!({
            "configs": [{
                "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
                "bootstrap": snapshot.effective,
                "version_info": snapshot.version.to_string(),
            }]
        });
        Response::json(200, serde_json::to_string_pretty(&body).unwrap_or_default())
    }

    fn server_info(&self) -> Response {
        let snapshot = self.shared.snapshot.load();
        let uptime = format!("{}s", self.shared.started.elapsed().as_secs());
        let body = json!({
            "version": concat!("ringway/", env!("CARGO_PKG_VERSION")),
            "state": if self.draining() { "DRAINING" } else { "LIVE" },
            "hot_restart_version": "disabled",
            "uptime_current_epoch": uptime,
            "uptime_all_epochs": uptime,
            "node": {"id": snapshot.node.id, "cluster": snapshot.node.cluster},
            "command_line_options": {
                "concurrency": self.shared.concurrency,
                "io_driver": self.driver,
                "config_version": snapshot.version,
            },
        });
        Response::json(200, serde_json::to_string_pretty(&body).unwrap_or_default())
    }
}

const HELP: &str = "admin commands are:
  /: this list
  /help: this list
  /ready: LIVE when serving, DRAINING when shutting down
  /stats: print server stats (?filter=REGEX, ?format=json|prometheus)
  /stats/prometheus: print server stats in prometheus format
  /clusters: upstream cluster status (?format=json)
  /config_dump: dump the current config as JSON
  /server_info: print server version, state and options
  /certs: loaded TLS certificates (subject, SANs, serial, days until expiry)
  /quitquitquit (POST): drain and exit
";
