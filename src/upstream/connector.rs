//! The connector: opens an upstream TCP connection within the cluster's
//! connect timeout and says, when it cannot, which way it failed.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use monoio::net::TcpStream;

/// Why no upstream connection could be had. The side is always upstream; the
/// variant decides the stat, the HTTP status and whether another try is safe.
#[derive(Debug)]
pub enum UpstreamError {
    /// The cluster has no host to pick.
    NoHealthyHost,
    /// The handshake did not finish within `connect_timeout`.
    ConnectTimeout(SocketAddr),
    /// Refused, unreachable, reset during connect.
    ConnectFailed(SocketAddr, io::Error),
}

impl UpstreamError {
    /// Nothing was sent upstream yet, so trying another host is safe.
    pub fn is_retryable(&self) -> bool {
        matches!(self, UpstreamError::ConnectTimeout(_) | UpstreamError::ConnectFailed(..))
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::ConnectTimeout(_))
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::NoHealthyHost => f.write_str("no healthy upstream"),
            UpstreamError::ConnectTimeout(a) => write!(f, "connect to {a} timed out"),
            UpstreamError::ConnectFailed(a, e) => write!(f, "connect to {a} failed: {e}"),
        }
    }
}

/// Connects to `addr`, giving up after `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(UpstreamError::ConnectFailed(addr, e)),
        Err(_) => Err(UpstreamError::ConnectTimeout(addr)),
    }
}
