//! A poll-based stream that notes activity and counts the bytes read from
//! it, for the TLS relay's idle timer and byte stats.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct Tracked<'a, S, F: Fn(u64)> {
    inner: S,
    last_activity: &'a Cell<Instant>,
    on_read: &'a F,
}

impl<'a, S, F: Fn(u64)> Tracked<'a, S, F> {
    pub fn new(inner: S, last_activity: &'a Cell<Instant>, on_read: &'a F) -> Self {
        Tracked { inner, last_activity, on_read }
    }
}

impl<S: AsyncRead + Unpin, F: Fn(u64)> AsyncRead for Tracked<'_, S, F> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            (self.on_read)(n as u64);
            self.last_activity.set(Instant::now());
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin, F: Fn(u64)> AsyncWrite for Tracked<'_, S, F> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
