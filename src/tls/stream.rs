//! `TlsStream`: rustls over a monoio TCP socket, splittable into a reading
//! and a writing half (an upgraded HTTP connection or a TLS relay moves both
//! directions at once). `Conn`: a connection that may speak TLS, read and
//! written the same way either way, so the HTTP path is written once.
//!
//! ```text
//!   socket ──recv──► rustls (decrypts in its buffer) ──► reader
//!      └─(empty: io_uring recv, one record)─► staged ─┘
//!   writer ──► rustls (encrypts into records) ──sendmsg──► socket
//!                        └─(≤ 16 KiB: io_uring send)─┘
//! ```
//!
//! While bytes stream in, rustls reads from the socket itself in
//! non-blocking recvs (no copy of ours), and a read gathers what the socket
//! has, up to the caller's buffer, so a relay sends several records at once
//! (one send per record cost 15% more CPU per byte through the double
//! proxy). Once the socket is empty, the reader waits in an io_uring receive
//! instead of learning it with a failed recv. Small writes (an HTTP
//! response) go out through an io_uring send, batched with the loop's other
//! work; bulk goes out in non-blocking sendmsg calls of rustls's records,
//! without a copy into a buffer of ours. Against monoio-rustls (HTTP) and
//! tokio-rustls (the relay) this measured even: 1.012 and 0.994 per
//! CPU-second (perf/ab.sh).
//!
//! The session is shared by the halves in a `RefCell` that is only ever
//! borrowed between awaits. A read can make rustls queue bytes too (an
//! alert, a key update answer): the reader sends them itself when the writer
//! is idle, or leaves them to the writer, which sends all that is queued
//! before it lets go of the socket.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io::{self, BufRead, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;

use super::ServerContext;

/// A TLS connection over TCP, either side.
pub struct TlsStream {
    reader: TlsReader,
    writer: TlsWriter,
}

/// The reading half.
pub struct TlsReader {
    shared: Rc<Shared>,
    /// The last receive emptied the socket (it found nothing, or less than
    /// it had room for): the next waits in an io_uring receive rather than
    /// spend a system call to learn the socket is still empty.
    drained: bool,
    /// What that io_uring receive got, and how much of it rustls has taken.
    staged: Vec<u8>,
    staged_at: usize,
    /// The socket again (a duplicate descriptor) for the reads: monoio
    /// reads need a stream of their own, and the descriptor stays valid for
    /// as long as this half lives, whatever becomes of the other.
    io: TcpStream,
    /// An io_uring receive is in flight; still set at the next read if that
    /// read's future was dropped, whose bytes are then lost.
    receiving: bool,
}

/// The writing half.
pub struct TlsWriter {
    shared: Rc<Shared>,
}

struct Shared {
    /// The socket, for sending: taken by the half that is sending, so that
    /// while it is gone the other half leaves its bytes to it, or waits.
    tcp: Cell<Option<TcpStream>>,
    /// Its descriptor.
    fd: RawFd,
    /// A send through io_uring was abandoned midway (its future dropped)
    /// or failed: records may be cut, so nothing more is written.
    broken: Cell<bool>,
    session: RefCell<rustls::Connection>,
    /// The writer, waiting while the reader sends.
    waiting: Cell<Option<Waker>>,
}

/// Writes of up to this much plaintext are sent through io_uring.
const SMALL_WRITE: usize = 16 * 1024;

/// The most one io_uring receive stages (a full TLS record and its header).
const STAGE: usize = 16 * 1024 + 5;

/// What one receive gave rustls.
enum Fed {
    Bytes,
    /// The socket had nothing yet.
    Nothing,
    /// The peer closed its side.
    End,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The socket as rustls reads it: one non-blocking recv per call, noting
/// whether it emptied the socket (read less than there was room for).
struct Recv<'a>(RawFd, &'a mut bool);

impl Read for Recv<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: a recv into a slice we were lent, of its length.
        let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        *self.1 = (n as usize) < buf.len();
        Ok(n as usize)
    }
}

/// The socket as rustls writes it: one non-blocking sendmsg per call, of as
/// many records as rustls has ready.
struct Send(RawFd);

impl Write for Send {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: an all-zero msghdr is valid; it then points at the
        // caller's slices (IoSlice is ABI-compatible with iovec) for the
        // duration of the call only.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = bufs.as_ptr().cast_mut().cast();
            msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
            libc::sendmsg(self.0, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsStream {
    fn new(tcp: TcpStream, session: rustls::Connection) -> io::Result<Self> {
        let fd = tcp.as_raw_fd();
        // SAFETY: dup of the descriptor the stream owns; the copy is owned by
        // the new stream, which closes it.
        let dup = unsafe { libc::dup(fd) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dup` is a fresh descriptor owned by nothing else.
        let io = TcpStream::from_std(unsafe { <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(dup) })?;
        let shared = Rc::new(Shared {
            tcp: Cell::new(Some(tcp)),
            fd,
            broken: Cell::new(false),
            session: RefCell::new(session),
            waiting: Cell::new(None),
        });
        let reader = TlsReader {
            shared: shared.clone(),
            drained: false,
            staged: Vec::new(),
            staged_at: 0,
            io,
            receiving: false,
        };
        Ok(TlsStream { reader, writer: TlsWriter { shared } })
    }

    /// The server side of a handshake on `tcp` for a filter chain. When the
    /// chain names ALPN protocols the ClientHello is peeked at first: a
    /// client offering none of them is served without ALPN, as Envoy does,
    /// rather than refused. The caller bounds the time it takes.
    pub async fn accept(tcp: TcpStream, ctx: &ServerContext) -> io::Result<Self> {
        let mut config = &ctx.config;
        if let Some(without_alpn) = &ctx.config_without_alpn
            && let Some(hello) = super::inspect::inspect(&tcp, ctx.handshake_timeout).await
            && !hello.alpn.is_empty()
            && !hello.alpn.iter().any(|p| ctx.config.alpn_protocols.iter().any(|q| q == p.as_bytes()))
        {
            config = without_alpn;
        }
        let session = rustls::ServerConnection::new(config.clone()).map_err(tls_error)?;
        let mut stream = TlsStream::new(tcp, session.into())?;
        stream.handshake().await?;
        Ok(stream)
    }

    /// The client side of a handshake on `tcp`, naming `name`.
    pub async fn connect(
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<Self> {
        let session = rustls::ClientConnection::new(config, name).map_err(tls_error)?;
        let mut stream = TlsStream::new(tcp, session.into())?;
        stream.handshake().await?;
        Ok(stream)
    }

    async fn handshake(&mut self) -> io::Result<()> {
        let shared = self.reader.shared.clone();
        loop {
            let (wants_write, handshaking) = {
                let s = shared.session.borrow();
                (s.wants_write(), s.is_handshaking())
            };
            if wants_write {
                shared.flush(true, false).await?;
            }
            if !handshaking {
                return Ok(());
            }
            match self.reader.feed() {
                Ok(Fed::Bytes) => {}
                Ok(Fed::Nothing) => self.reader.wait().await?,
                Ok(Fed::End) => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed during the TLS handshake"));
                }
                Err(e) => {
                    // rustls queued an alert saying why; send it if we can.
                    let _ = shared.flush(true, false).await;
                    return Err(e);
                }
            }
        }
    }

    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.reader.shared.session.borrow().alpn_protocol().map(<[u8]>::to_vec)
    }

    pub fn into_split(self) -> (TlsReader, TlsWriter) {
        (self.reader, self.writer)
    }
}

impl TlsReader {
    /// Receives once into rustls (what was staged first, else from the
    /// socket) and decrypts what that completes.
    fn feed(&mut self) -> io::Result<Fed> {
        let mut s = self.shared.session.borrow_mut();
        let got = if self.staged_at < self.staged.len() {
            let got = s.read_tls(&mut &self.staged[self.staged_at..]);
            match got {
                // rustls takes no more (a close_notify came): drop the rest.
                Ok(0) => self.staged_at = self.staged.len(),
                Ok(n) => self.staged_at += n,
                Err(_) => {}
            }
            got.map(|_| 1)
        } else {
            s.read_tls(&mut Recv(self.io.as_raw_fd(), &mut self.drained))
        };
        let fed = match got {
            Ok(0) => Fed::End,
            Ok(_) => Fed::Bytes,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.drained = true;
                return Ok(Fed::Nothing);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Fed::Bytes),
            Err(e) => return Err(e),
        };
        s.process_new_packets().map_err(tls_error)?;
        Ok(fed)
    }

    /// Waits for bytes in an io_uring receive, staged for `feed`. At the end
    /// of the stream rustls is told so.
    async fn wait(&mut self) -> io::Result<()> {
        if self.receiving {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "a TLS read was abandoned midway"));
        }
        let mut buf = std::mem::take(&mut self.staged);
        buf.clear();
        buf.reserve(STAGE);
        let room = buf.capacity();
        self.receiving = true;
        let (r, buf) = self.io.read(buf).await;
        self.receiving = false;
        self.staged = buf;
        self.staged_at = 0;
        let n = r?;
        // Less than there was room for: the socket is empty again.
        self.drained = n < room;
        if n == 0 {
            let _ = self.shared.session.borrow_mut().read_tls(&mut &[][..]);
        }
        Ok(())
    }

    /// Plaintext into `dst` (`cap` bytes): whatever has arrived, waiting
    /// only while nothing has. 0 at the end of the stream, whether the peer
    /// sent close_notify or just closed.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `cap` bytes.
    async unsafe fn read_into(&mut self, dst: *mut u8, cap: usize) -> io::Result<usize> {
        if cap == 0 {
            return Ok(0);
        }
        loop {
            // SAFETY: passed on from the caller.
            let got = unsafe { self.decrypt(dst, cap) };
            // Kept only if this read returns data, for the next to know
            // the socket was left empty; a wait below sets it anew.
            let drained = std::mem::take(&mut self.drained);
            if self.shared.session.borrow().wants_write() {
                // An alert or a key update answer; best effort, and left to
                // the writer if it is sending.
                let _ = self.shared.flush(false, false).await;
            }
            match got? {
                Some(n) => {
                    self.drained = drained;
                    return Ok(n);
                }
                None => self.wait().await?,
            }
        }
    }

    /// The synchronous part of a read: `Some(n)` bytes decrypted (0 at the
    /// end), or `None` when the socket has nothing yet.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `cap` bytes.
    unsafe fn decrypt(&mut self, dst: *mut u8, cap: usize) -> io::Result<Option<usize>> {
        let mut n = 0;
        loop {
            let step = {
                let mut s = self.shared.session.borrow_mut();
                let mut reader = s.reader();
                match reader.fill_buf() {
                    Ok([]) => Ok(true),
                    Ok(data) => {
                        let k = data.len().min(cap - n);
                        // SAFETY: `k` bytes fit at `dst + n` (caller's promise).
                        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst.add(n), k) };
                        reader.consume(k);
                        n += k;
                        Ok(n == cap)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(None),
                    // The peer closed without close_notify: for a relay or
                    // HTTP's own framing, an end like any other.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(true),
                    Err(e) => Err(Some(e)),
                }
            };
            match step {
                Ok(true) => return Ok(Some(n)),
                Ok(false) => {}
                Err(Some(e)) => return Err(e),
                // Decrypted all there was: receive more while the socket
                // has it and there is room, so that a relay writes a few
                // records at a time (one send per record cost 15% more CPU
                // per byte through the double proxy).
                Err(None) if self.drained && self.staged_at == self.staged.len() => return Ok((n > 0).then_some(n)),
                Err(None) => match self.feed()? {
                    Fed::Nothing => return Ok((n > 0).then_some(n)),
                    // The next pass says what the bytes (or the end) made.
                    Fed::Bytes | Fed::End => {}
                },
            }
        }
    }
}

impl Shared {
    /// Sends all the session has queued. The writer (`wait`) waits while
    /// the reader is sending; the reader leaves its bytes to the writer then.
    ///
    /// `small`: the bytes are few (a record or so), and go out through an
    /// io_uring send, batched with the loop's other operations, after one
    /// copy into a buffer of ours. Else rustls hands them to the socket
    /// itself in a non-blocking sendmsg, waiting for room when there is none:
    /// for bulk that saves the copy, for small responses the ring saves a
    /// system call.
    async fn flush(&self, wait: bool, small: bool) -> io::Result<()> {
        let taken = poll_fn(|cx| match self.tcp.take() {
            Some(tcp) => Poll::Ready(Some(tcp)),
            None if !wait => Poll::Ready(None),
            None => {
                self.waiting.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
        let Some(tcp) = taken else { return Ok(()) };
        // Gives the socket back however this ends, cancelled included.
        let mut sending = Sending { shared: self, tcp: Some(tcp), sent: false };
        let Some(tcp) = sending.tcp.as_mut() else { return Ok(()) };
        if self.broken.get() {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "TLS stream broken by an earlier failed write"));
        }
        if small {
            let mut out = Vec::new();
            {
                let mut s = self.session.borrow_mut();
                while s.wants_write() {
                    s.write_tls(&mut out)?;
                }
            }
            if !out.is_empty() {
                let (r, _) = tcp.write_all(out).await;
                r?;
            }
            sending.sent = true;
            return Ok(());
        }
        // What rustls has not handed to the kernel stays queued in order,
        // so a cancelled wait here breaks nothing.
        sending.sent = true;
        loop {
            let sent = {
                let mut s = self.session.borrow_mut();
                if !s.wants_write() {
                    return Ok(());
                }
                s.write_tls(&mut Send(self.fd))
            };
            match sent {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => tcp.writable(false).await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The sending role while a flush has it; an io_uring send that did not
/// finish (failed, or its future dropped) leaves the stream broken.
struct Sending<'a> {
    shared: &'a Shared,
    tcp: Option<TcpStream>,
    sent: bool,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if !self.sent {
            self.shared.broken.set(true);
        }
        self.shared.tcp.set(self.tcp.take());
        if let Some(w) = self.shared.waiting.take() {
            w.wake();
        }
    }
}

impl TlsWriter {
    /// Encrypts `parts` (as much as rustls queues at once) and sends it.
    async fn write_plain(&mut self, parts: &[&[u8]]) -> io::Result<usize> {
        let mut n = 0;
        {
            let mut s = self.shared.session.borrow_mut();
            let mut w = s.writer();
            for part in parts {
                let k = w.write(part)?;
                n += k;
                if k < part.len() {
                    break;
                }
            }
        }
        // A record or less goes through the ring (see `Shared::flush`).
        self.shared.flush(true, n <= SMALL_WRITE).await?;
        Ok(n)
    }
}

impl AsyncReadRent for TlsReader {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let cap = buf.bytes_total();
        // SAFETY: the buffer owns `bytes_total` writable bytes at `write_ptr`.
        match unsafe { self.read_into(buf.write_ptr(), cap).await } {
            Ok(n) => {
                // SAFETY: `n` bytes were just written.
                unsafe { buf.set_init(n) };
                (Ok(n), buf)
            }
            Err(e) => (Err(e), buf),
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // Into the first iovec; readers of TLS stream ask for one buffer.
        let (ptr, cap) = if buf.write_iovec_len() == 0 {
            (std::ptr::null_mut(), 0)
        } else {
            // SAFETY: the pointer is to `write_iovec_len` valid iovecs.
            let first = unsafe { *buf.write_iovec_ptr() };
            (first.iov_base.cast::<u8>(), first.iov_len)
        };
        // SAFETY: the iovec describes writable memory the buffer owns.
        match unsafe { self.read_into(ptr, cap).await } {
            Ok(n) => {
                // SAFETY: `n` bytes were just written at the start.
                unsafe { buf.set_init(n) };
                (Ok(n), buf)
            }
            Err(e) => (Err(e), buf),
        }
    }
}

impl AsyncWriteRent for TlsWriter {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: `bytes_init` bytes at `read_ptr` are initialised.
        let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let r = self.write_plain(&[data]).await;
        (r, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let iovecs: Vec<&[u8]> = (0..buf.read_iovec_len())
            .map(|i| {
                // SAFETY: `read_iovec_len` valid iovecs, each describing
                // initialised bytes the buffer owns.
                unsafe {
                    let v = *buf.read_iovec_ptr().add(i);
                    std::slice::from_raw_parts(v.iov_base.cast::<u8>().cast_const(), v.iov_len)
                }
            })
            .collect();
        let r = self.write_plain(&iovecs).await;
        drop(iovecs);
        (r, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.shared.flush(true, false).await
    }

    /// close_notify, then the socket's write side closes.
    async fn shutdown(&mut self) -> io::Result<()> {
        self.shared.session.borrow_mut().send_close_notify();
        self.shared.flush(true, false).await?;
        // SAFETY: shutdown on the descriptor the stream owns.
        if unsafe { libc::shutdown(self.shared.fd, libc::SHUT_WR) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsyncReadRent for TlsStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        self.reader.read(buf).await
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        self.reader.readv(buf).await
    }
}

impl AsyncWriteRent for TlsStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        self.writer.write(buf).await
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        self.writer.writev(buf).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.writer.flush().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.writer.shutdown().await
    }
}

/// A plain socket read and written as the TLS stream is: non-blocking
/// system calls, waiting for readiness only when they would block. The TLS
/// relay uses it for its plain side (measured cheaper there than io_uring
/// receives and sends, whose every operation is a trip round the event loop).
pub struct PollReader(Rc<TcpStream>);

/// The writing half of a `PollReader`'s socket.
pub struct PollWriter(Rc<TcpStream>);

/// Makes a non-blocking socket call until it goes through, waiting for
/// readiness (to write, or to read) whenever it would block.
async fn nonblocking(tcp: &TcpStream, write: bool, mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock if write => tcp.writable(false).await?,
            io::ErrorKind::WouldBlock => tcp.readable(false).await?,
            io::ErrorKind::Interrupted => {}
            _ => return Err(e),
        }
    }
}

impl AsyncReadRent for PollReader {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let (fd, ptr, len) = (self.0.as_raw_fd(), buf.write_ptr(), buf.bytes_total());
        // SAFETY: a recv into the buffer's own writable bytes, which stay put
        // while we hold the buffer.
        let r = nonblocking(&self.0, false, || unsafe { libc::recv(fd, ptr.cast(), len, libc::MSG_DONTWAIT) }).await;
        if let Ok(n) = r {
            // SAFETY: the kernel wrote `n` bytes.
            unsafe { buf.set_init(n) };
        }
        (r, buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        (Err(io::ErrorKind::Unsupported.into()), buf)
    }
}

impl AsyncWriteRent for PollWriter {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let (fd, ptr, len) = (self.0.as_raw_fd(), buf.read_ptr(), buf.bytes_init());
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        // SAFETY: a send of the buffer's own initialised bytes, which stay
        // put while we hold the buffer.
        let r = nonblocking(&self.0, true, || unsafe { libc::send(fd, ptr.cast(), len, flags) }).await;
        (r, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        (Err(io::ErrorKind::Unsupported.into()), buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        // SAFETY: shutdown on the descriptor the stream owns.
        if unsafe { libc::shutdown(self.0.as_raw_fd(), libc::SHUT_WR) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream),
    /// The socket's descriptor is kept for what is done on the socket itself
    /// (a liveness peek on pooled connections).
    Tls(Box<TlsStream>, RawFd),
}

/// A connection's reading half.
pub enum ConnReader {
    Plain(OwnedReadHalf<TcpStream>),
    Poll(PollReader),
    Tls(TlsReader),
}

/// A connection's writing half.
pub enum ConnWriter {
    Plain(OwnedWriteHalf<TcpStream>),
    Poll(PollWriter),
    Tls(TlsWriter),
}

impl Conn {
    pub fn tls(tls: TlsStream, fd: RawFd) -> Self {
        Conn::Tls(Box::new(tls), fd)
    }

    /// The plain socket, when there is no TLS on it (splice needs one).
    pub fn plain(&self) -> Option<&TcpStream> {
        match self {
            Conn::Plain(s) => Some(s),
            Conn::Tls(..) => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(..))
    }

    /// The negotiated ALPN protocol, if any.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        match self {
            Conn::Plain(_) => None,
            Conn::Tls(s, _) => s.alpn(),
        }
    }

    /// Halves that read and write at the same time, a plain socket's in
    /// the TLS stream's way (see `PollReader`).
    pub fn into_poll_split(self) -> (ConnReader, ConnWriter) {
        match self {
            Conn::Plain(s) => {
                let s = Rc::new(s);
                (ConnReader::Poll(PollReader(s.clone())), ConnWriter::Poll(PollWriter(s)))
            }
            tls => tls.into_split(),
        }
    }

    /// Halves that read and write at the same time.
    pub fn into_split(self) -> (ConnReader, ConnWriter) {
        match self {
            Conn::Plain(s) => {
                let (r, w) = s.into_split();
                (ConnReader::Plain(r), ConnWriter::Plain(w))
            }
            Conn::Tls(s, _) => {
                let (r, w) = s.into_split();
                (ConnReader::Tls(r), ConnWriter::Tls(w))
            }
        }
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Conn::Plain(s) => s.as_raw_fd(),
            Conn::Tls(_, fd) => *fd,
        }
    }
}

/// Forwards the rent traits to whichever variant an enum holds.
macro_rules! forward_io {
    ($ty:ident, read $(, $extra:ident)?) => {
        impl AsyncReadRent for $ty {
            async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
                match self {
                    $ty::Plain(s) => s.read(buf).await,
                    $ty::Tls(s, ..) => s.read(buf).await,
                    $($ty::$extra(s) => s.read(buf).await,)?
                }
            }

            async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
                match self {
                    $ty::Plain(s) => s.readv(buf).await,
                    $ty::Tls(s, ..) => s.readv(buf).await,
                    $($ty::$extra(s) => s.readv(buf).await,)?
                }
            }
        }
    };
    ($ty:ident, write $(, $extra:ident)?) => {
        impl AsyncWriteRent for $ty {
            async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
                match self {
                    $ty::Plain(s) => s.write(buf).await,
                    $ty::Tls(s, ..) => s.write(buf).await,
                    $($ty::$extra(s) => s.write(buf).await,)?
                }
            }

            async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
                match self {
                    $ty::Plain(s) => s.writev(buf).await,
                    $ty::Tls(s, ..) => s.writev(buf).await,
                    $($ty::$extra(s) => s.writev(buf).await,)?
                }
            }

            async fn flush(&mut self) -> io::Result<()> {
                match self {
                    $ty::Plain(s) => s.flush().await,
                    $ty::Tls(s, ..) => s.flush().await,
                    $($ty::$extra(s) => s.flush().await,)?
                }
            }

            async fn shutdown(&mut self) -> io::Result<()> {
                match self {
                    $ty::Plain(s) => s.shutdown().await,
                    $ty::Tls(s, ..) => s.shutdown().await,
                    $($ty::$extra(s) => s.shutdown().await,)?
                }
            }
        }
    };
}

forward_io!(Conn, read);
forward_io!(Conn, write);
forward_io!(ConnReader, read, Poll);
forward_io!(ConnWriter, write, Poll);
