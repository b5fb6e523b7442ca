//! The `ringway` command: Envoy's flags (`-c`, `--mode validate`,
//! `--concurrency`, `--drain-time-s`) → load the config → run the server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ringway::config;
use ringway::runtime::{Options, Server};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Serve,
    Validate,
}

/// An Envoy-config-compatible proxy on a thread-per-core io_uring data plane.
#[derive(Debug, Parser)]
#[command(name = "ringway", version)]
struct Cli {
    /// Envoy bootstrap config (YAML or JSON).
    #[arg(short = 'c', long = "config-path")]
    config_path: PathBuf,
    /// `serve` runs the proxy; `validate` checks the config and exits 0 or 1.
    #[arg(long, value_enum, default_value = "serve")]
    mode: Mode,
    /// Worker threads (default: one per CPU this process may run on).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Seconds open connections get to finish after SIGTERM/SIGINT.
    #[arg(long = "drain-time-s", default_value_t = 5)]
    drain_time_s: u64,
    /// Log level: trace, debug, info, warning, error, critical, off.
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(level) = log_level(&cli.log_level) else {
        eprintln!(
            "error: unknown log level `{}`; expected trace, debug, info, warning, error, critical or off",
            cli.log_level
        );
        return ExitCode::FAILURE;
    };
    // rustls warns for every client that sends an IP address as SNI (wrk,
    // curl to an IP): any client could flood the log with it, so only its
    // errors are shown.
    let directives = if level == "off" { level.to_string() } else { format!("{level},rustls=error") };
    let filter = tracing_subscriber::EnvFilter::new(directives);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let loaded = config::read_file(&cli.config_path).and_then(|text| match cli.mode {
        // Validation resolves no names, as Envoy's validate mode.
        Mode::Validate => config::check_str(&text, 1),
        Mode::Serve => config::load_str(&text, 1),
    });
    let snapshot = match loaded {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}: {e}", cli.config_path.display());
            return ExitCode::FAILURE;
        }
    };
    if cli.mode == Mode::Validate {
        println!(
            "configuration '{}' OK: {} listener(s), {} cluster(s)",
            cli.config_path.display(),
            snapshot.listeners.len(),
            snapshot.clusters.len()
        );
        return ExitCode::SUCCESS;
    }
    if cli.concurrency == Some(0) {
        eprintln!("error: --concurrency must be at least 1");
        return ExitCode::FAILURE;
    }

    let opts = Options {
        concurrency: cli.concurrency,
        drain_time: Duration::from_secs(cli.drain_time_s),
        config_path: Some(cli.config_path.clone()),
        ..Options::default()
    };
    // Signal handling is set up first: once the server runs, the admin
    // port says it is ready, and everything it needs must be in place.
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let signals = match signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(snapshot, opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = forward_signals(signals, &server) {
        eprintln!("error: cannot start the signal thread: {e}");
        server.shutdown();
        server.wait();
        return ExitCode::FAILURE;
    }
    server.wait();
    tracing::info!("exiting");
    ExitCode::SUCCESS
}

/// Envoy's `--log-level` names mapped to tracing's.
fn log_level(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "err" | "critical" => "error",
        "off" => "off",
        _ => return None,
    })
}

/// SIGHUP reloads the config file; SIGTERM and SIGINT drain and exit.
fn forward_signals(mut signals: signal_hook::iterator::Signals, server: &Server) -> std::io::Result<()> {
    use signal_hook::consts::SIGHUP;
    let shared = server.shared().clone();
    std::thread::Builder::new().name("ringway-signals".into()).spawn(move || {
        for sig in signals.forever() {
            match sig {
                SIGHUP => {
                    let shared = shared.clone();
                    // Reload off this thread so a second signal is not delayed.
                    let _ = std::thread::Builder::new().name("ringway-reload".into()).spawn(move || {
                        if let Err(e) = shared.request_reload() {
                            tracing::error!("reload on SIGHUP failed: {e}");
                        }
                    });
                }
                _ => {
                    tracing::info!("signal {sig}: draining");
                    shared.request_shutdown();
                }
            }
        }
    })?;
    Ok(())
}
