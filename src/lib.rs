//! ringway: an L4/L7 proxy that runs Envoy's bootstrap YAML on a
//! thread-per-core io_uring data plane.
//!
//! ```text
//!   config thread: file/SIGHUP ─► parse ─► validate ─► Snapshot ─► publish (RCU)
//!                                                                     │
//!   worker i (pinned, monoio io_uring loop, one per CPU)  ◄───────────┘
//!     SO_REUSEPORT listener ─► accept ─► filter chain ─► tcp_proxy
//!        ─► cluster ─► lb pick ─► connect ─► splice ⇄ splice
//!     per core: cluster tables, lb state, stats shard (no locks)
//!
//!   admin thread: /stats /clusters /config_dump ... merges the shards
//! ```
//!
//! Modules follow the data path: [`listener`] → [`tcp_proxy`] → [`upstream`];
//! [`config`] builds the [`config::Snapshot`] they run on, [`runtime`] starts
//! and feeds the workers, [`stats`] and [`admin`] report.

pub mod access_log;
pub mod admin;
pub mod config;
pub mod http;
pub mod listener;
pub mod runtime;
pub mod stats;
pub mod tcp_proxy;
pub mod tls;
pub mod upstream;
