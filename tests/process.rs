//! The `ringway` binary as an operator runs it: `--mode validate`, SIGHUP
//! reloads, SIGTERM drains, and running out of file descriptors.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test should fail loudly")]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_ringway");

fn temp_config(name: &str, yaml: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringway-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Fixed-port YAML: the binary is started with a real file, so listener and
/// admin ports are picked here and passed in.
fn yaml_with_ports(listen: u16, admin: u16, upstream: SocketAddr, extra_proxy: &str) -> String {
    let mut cfg = TcpConfig::to(&[upstream]);
    cfg.extra_proxy = extra_proxy.to_string();
    cfg.yaml().replacen("port_value: 0}}\n", &format!("port_value: {admin}}}}}\n"), 1).replacen(
        "port_value: 0}}\n",
        &format!("port_value: {listen}}}}}\n"),
        1,
    )
}

fn free_port() -> u16 {
    closed_port().port()
}

struct Ringway {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl Ringway {
    fn spawn(config: &std::path::Path, listen: u16, admin: u16, setup: impl FnOnce(&mut Command)) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(["-c", config.to_str().unwrap(), "--concurrency", "1", "--drain-time-s", "3"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        setup(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        // Forward the log to the test output without blocking the child.
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[ringway] {line}");
            }
        });
        let rw = Ringway {
            child,
            listen: SocketAddr::from(([127, 0, 0, 1], listen)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
        };
        wait_until("admin ready", || {
            std::net::TcpStream::connect(rw.admin).is_ok() && admin_get(rw.admin, "/ready").0 == 200
        });
        rw
    }

    fn stat(&self, name: &str) -> i64 {
        let (_, body) = admin_get(self.admin, &format!("/stats?filter=%5E{}%24", name.replace('.', "%5C.")));
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no stat {name} in {body:?}"))
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "ringway did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Ringway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn validate_mode_reports_and_exits() {
    let good = temp_config("validate-good", &TcpConfig::to(&[closed_port()]).yaml());
    let out = Command::new(BIN).args(["--mode", "validate", "-c", good.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    let bad_yaml = TcpConfig::to(&[closed_port()]).yaml().replace("type: STATIC", "type: STATIC\n    lb_polcy: RANDOM");
    let bad = temp_config("validate-bad", &bad_yaml);
    let out = Command::new(BIN).args(["--mode", "validate", "-c", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("static_resources.clusters[0].lb_polcy: unknown field"), "{err}");

    let out = Command::new(BIN).args(["--mode", "validate", "-c", "/nonexistent/ringway.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn sighup_reloads_the_file_and_spares_open_connections() {
    let a = Upstream::tagged(b"A");
    let b = Upstream::tagged(b"B");
    let (listen, admin) = (free_port(), free_port());
    let path = temp_config("sighup", &yaml_with_ports(listen, admin, a.addr, ""));
    let rw = Ringway::spawn(&path, listen, admin, |_| {});
    let mut tag = [0u8; 1];
    let mut old = connect(rw.listen);
    old.read_exact(&mut tag).unwrap();
    assert_eq!(&tag, b"A");

    std::fs::write(&path, yaml_with_ports(listen, admin, b.addr, "")).unwrap();
    rw.signal(libc::SIGHUP);
    wait_until("reload", || rw.stat("server.config_reload_success") == 1);
    let mut new = connect(rw.listen);
    new.read_exact(&mut tag).unwrap();
    assert_eq!(&tag, b"B");
    assert_eq!(round_trip(&mut old, b"still A"), b"still A");

    // A broken file is rejected and counted; the running config stays.
    std::fs::write(&path, "static_resources: {listeners: [{name: x}]}\n").unwrap();
    rw.signal(libc::SIGHUP);
    wait_until("rejected reload", || rw.stat("server.config_reload_failure") == 1);
    assert_eq!(rw.stat("server.config_version"), 2);
    let mut again = connect(rw.listen);
    again.read_exact(&mut tag).unwrap();
    assert_eq!(&tag, b"B");
}

#[test]
fn sigterm_drains_open_connections_then_exits_zero() {
    let upstream = Upstream::echo();
    let (listen, admin) = (free_port(), free_port());
    let path = temp_config("sigterm", &yaml_with_ports(listen, admin, upstream.addr, ""));
    let mut rw = Ringway::spawn(&path, listen, admin, |_| {});
    let mut open = connect(rw.listen);
    assert_eq!(round_trip(&mut open, b"before"), b"before");
    rw.signal(libc::SIGTERM);
    // Draining: /ready says so and new connections are refused...
    wait_until("draining", || admin_get(rw.admin, "/ready").0 == 503);
    wait_until("listener closed", || std::net::TcpStream::connect(rw.listen).is_err());
    // ...while the open one still works.
    assert_eq!(round_trip(&mut open, b"during drain"), b"during drain");
    drop(open);
    let status = rw.wait_exit(Duration::from_secs(3));
    assert!(status.success(), "{status:?}");
}

/// Descriptors run out while clients wait: accepts fail with EMFILE. The
/// worker must back off (not spin), count it, and resume once descriptors are
/// available again.
#[test]
fn running_out_of_descriptors_backs_off_and_recovers() {
    let upstream = Upstream::echo();
    let (listen, admin) = (free_port(), free_port());
    let path = temp_config("emfile", &yaml_with_ports(listen, admin, upstream.addr, ""));
    let rw = Ringway::spawn(&path, listen, admin, |_| {});
    let pid = rw.child.id() as i32;
    // No new descriptor can be allocated at all; open ones keep working.
    let original = set_nofile(pid, 0);

    // Clients connect (the kernel completes the handshake) but the worker
    // cannot accept them.
    let waiting: Vec<_> = (0..4).map(|_| connect(rw.listen)).collect();
    let cpu_before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(1500));
    let cpu_used = cpu_ticks(pid) - cpu_before;
    // 1.5 s of wall time; a spinning loop would burn ~150 ticks.
    assert!(cpu_used < 30, "accept loop burned {cpu_used} ticks while out of descriptors");

    // Descriptors come back: the waiting clients are served, and errors were
    // counted. The one accept already in flight when the limit dropped may
    // have completed and then failed to open its upstream socket: that client
    // is closed (and counted as a connect failure), never left hanging.
    set_nofile(pid, original);
    let mut served = 0;
    for mut s in waiting {
        let _ = std::io::Write::write_all(&mut s, b"served at last");
        let mut back = [0u8; 14];
        match s.read_exact(&mut back) {
            Ok(()) => {
                assert_eq!(&back, b"served at last");
                served += 1;
            }
            // Closed is a clear answer; hanging until the read timeout is not.
            Err(e) => assert!(
                !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
                "a waiting client was left hanging"
            ),
        }
    }
    assert!(served >= 1, "no waiting client was served after descriptors came back");
    assert!(
        rw.stat(
            "listener.127.0.0.1_{listen}.downstream_cx_accept_error".replace("{listen}", &listen.to_string()).as_str()
        ) > 0
    );
    let mut s = connect(rw.listen);
    assert_eq!(round_trip(&mut s, b"ping"), b"ping");
}

/// Sets the soft RLIMIT_NOFILE of `pid`; returns the previous soft limit.
fn set_nofile(pid: i32, soft: u64) -> u64 {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    let mut new = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit reads/writes the two structs we pass.
    unsafe {
        assert_eq!(libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old), 0);
        new.rlim_cur = soft;
        new.rlim_max = old.rlim_max;
        assert_eq!(libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()), 0);
    }
    old.rlim_cur
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split(' ').collect();
    fields[11].parse::<i64>().unwrap() + fields[12].parse::<i64>().unwrap()
}
