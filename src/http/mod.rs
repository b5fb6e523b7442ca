//! HTTP: the L7 path. `h1` is the strict HTTP/1.1 codec, `router` matches
//! virtual hosts and routes, `conn_manager` serves a downstream connection.
//!
//! listener → filter chain → **connection manager (h1 codec)** → router → cluster

pub mod conn_manager;
pub mod h1;
pub mod router;
