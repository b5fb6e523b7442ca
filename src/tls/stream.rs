//! `Conn`: a TCP connection that may speak TLS, readable and writable the
//! same way either way, so the HTTP path is written once. The socket's
//! descriptor is kept beside a TLS stream for the few things done on the
//! socket itself (a liveness peek on pooled connections).

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

pub type ServerTls = monoio_rustls::ServerTlsStream<TcpStream>;
pub type ClientTls = monoio_rustls::ClientTlsStream<TcpStream>;

pub enum Conn {
    Plain(TcpStream),
    /// Accepted with TLS: ringway is the server.
    Server(Box<ServerTls>, RawFd),
    /// Connected with TLS: ringway is the client.
    Client(Box<ClientTls>, RawFd),
}

impl Conn {
    pub fn server(tls: ServerTls, fd: RawFd) -> Self {
        Conn::Server(Box::new(tls), fd)
    }

    pub fn client(tls: ClientTls, fd: RawFd) -> Self {
        Conn::Client(Box::new(tls), fd)
    }

    /// The plain socket, when there is no TLS on it (splice needs one).
    pub fn plain(&self) -> Option<&TcpStream> {
        match self {
            Conn::Plain(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self, Conn::Plain(_))
    }

    /// The negotiated ALPN protocol, if any.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        match self {
            Conn::Plain(_) => None,
            Conn::Server(s, _) => s.alpn_protocol(),
            Conn::Client(s, _) => s.alpn_protocol(),
        }
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Conn::Plain(s) => s.as_raw_fd(),
            Conn::Server(_, fd) | Conn::Client(_, fd) => *fd,
        }
    }
}

impl AsyncReadRent for Conn {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Server(s, _) => s.read(buf).await,
            Conn::Client(s, _) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.readv(buf).await,
            Conn::Server(s, _) => s.readv(buf).await,
            Conn::Client(s, _) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for Conn {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.write(buf).await,
            Conn::Server(s, _) => s.write(buf).await,
            Conn::Client(s, _) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.writev(buf).await,
            Conn::Server(s, _) => s.writev(buf).await,
            Conn::Client(s, _) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush().await,
            Conn::Server(s, _) => s.flush().await,
            Conn::Client(s, _) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.shutdown().await,
            Conn::Server(s, _) => s.shutdown().await,
            Conn::Client(s, _) => s.shutdown().await,
        }
    }
}

// Not `Split`: a monoio-rustls read that meets an alert also writes, which
// races a concurrent write on the other half (it panics). A `Conn` is read
// and written by one task, one operation at a time.
