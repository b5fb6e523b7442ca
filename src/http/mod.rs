//! HTTP: the pieces of the L7 path. So far the HTTP/1.1 codec (`h1`): strict
//! request-head parsing and body framing, the ground the connection manager
//! and router (issue: HTTP/1.1 reverse proxy) stand on.
//!
//! listener → filter chain → **connection manager (h1 codec)** → router → cluster

pub mod h1;
