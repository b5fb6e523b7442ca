//! The buffered relay: read into a user-space buffer, write it out. Used where
//! splice cannot be (TLS, later) and kept selectable (`RINGWAY_RELAY=copy`) so
//! perf/ can measure it against splice on the same build.

use std::cell::Cell;
use std::io;
use std::time::Instant;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use super::splice::PumpEnd;

/// Moves bytes from `src` to `dst` through one buffer of `buf_size` bytes until
/// `src` ends, then half-closes `dst`.
pub async fn pump<R: AsyncReadRent, W: AsyncWriteRent>(
    src: &mut R,
    dst: &mut W,
    buf_size: usize,
    last_activity: &Cell<Instant>,
    on_bytes: &impl Fn(u64),
) -> io::Result<PumpEnd> {
    let mut buf: Vec<u8> = Vec::with_capacity(buf_size.max(4096));
    loop {
        buf.clear();
        let (res, b) = src.read(buf).await;
        buf = b;
        if res? == 0 {
            dst.shutdown().await?;
            return Ok(PumpEnd { flushed_after_close: false });
        }
        let (res, b) = dst.write_all(buf).await;
        buf = b;
        let n = res?;
        on_bytes(n as u64);
        last_activity.set(Instant::now());
    }
}
