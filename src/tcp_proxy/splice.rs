//! The zero-copy relay: bytes move socket → pipe → socket with `splice(2)`,
//! never through user space. Driven by readiness: each splice is tried
//! non-blocking first and only on EAGAIN does the task wait for the socket
//! (one io_uring POLL_ADD, or epoll on the legacy driver). io_uring's own
//! SPLICE op is not used: the kernel punts it to io-wq workers, which
//! measured half as fast (see perf/README.md).

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use monoio::net::TcpStream;

/// A pipe owned by one relay direction. We own the fds (not monoio's `Pipe`)
/// so the pipe can be enlarged with `F_SETPIPE_SZ`.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// A non-blocking pipe of about `size` bytes. The kernel rounds to pages
    /// and may give less: the default 64 KiB above `fs.pipe-max-size`, and a
    /// page or two once the user's pipe quota is spent; `capacity` says what
    /// was granted.
    pub fn new(size: usize) -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: fds is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let size = size.clamp(4096, i32::MAX as usize) as libc::c_int;
        // SAFETY: fcntl on an fd we own.
        let got = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
        let capacity = if got > 0 {
            got as usize
        } else {
            // SAFETY: as above.
            let cur = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
            if cur > 0 { cur as usize } else { 65536 }
        };
        Ok(Pipe { read, write, capacity })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Puts a socket in non-blocking mode so that `splice` from or to it returns
/// EAGAIN instead of blocking the worker.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a valid fd; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK == 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain syscall on fds the caller keeps open; null offsets mean
    // "current position", which is the only valid choice for sockets and pipes.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// How one direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PumpEnd {
    /// The source closed while bytes were still on their way to the
    /// destination (Envoy counts this as a flush).
    pub flushed_after_close: bool,
}

/// Moves bytes from `src` to `dst` until `src` ends, then half-closes `dst`.
/// `last_activity` is set on every move so an idle timer can tell activity;
/// `on_bytes` is told how many bytes reached `dst`.
pub async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    pipe: &Pipe,
    last_activity: &Cell<Instant>,
    on_bytes: &impl Fn(u64),
) -> io::Result<PumpEnd> {
    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    let (pipe_r, pipe_w) = (pipe.read.as_raw_fd(), pipe.write.as_raw_fd());
    let mut in_pipe = 0usize;
    let mut eof = false;
    let mut flushed_after_close = false;
    loop {
        // Fill: take everything the source has ready (up to the pipe's size)
        // before writing, so the destination gets large writes and its reader
        // fewer wakeups.
        while !eof && in_pipe < pipe.capacity {
            match splice(src_fd, pipe_w, pipe.capacity - in_pipe) {
                Ok(0) => {
                    eof = true;
                    flushed_after_close = in_pipe > 0;
                }
                Ok(n) => in_pipe += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if in_pipe == 0 && !eof {
            src.readable(false).await?;
            continue;
        }
        if in_pipe > 0 {
            match splice(pipe_r, dst_fd, in_pipe) {
                Ok(n) => {
                    in_pipe -= n;
                    on_bytes(n as u64);
                    last_activity.set(Instant::now());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable(false).await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        } else if eof {
            // SAFETY: shutdown on a socket fd we hold open.
            if unsafe { libc::shutdown(dst_fd, libc::SHUT_WR) } < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::NotConnected {
                    return Err(e);
                }
            }
            return Ok(PumpEnd { flushed_after_close });
        }
    }
}

/// Which side stopped a bounded splice early.
#[derive(Debug)]
pub enum SpliceCut {
    /// Reading from the source failed, timed out or hit its end early.
    Source(io::Error),
    /// Writing to the destination failed or timed out.
    Destination(io::Error),
}

/// Moves exactly `len` bytes from `src` to `dst` through `pipe` (an HTTP
/// body of known length), waiting at most `wait()` for either socket each
/// time it is not ready. Both sockets must be non-blocking
/// (`NonBlocking::set`). On success the pipe is empty again.
pub async fn pump_exact(
    src: &TcpStream,
    dst: &TcpStream,
    pipe: &Pipe,
    len: u64,
    wait: impl Fn() -> std::time::Duration,
    on_bytes: &mut impl FnMut(u64),
) -> Result<(), SpliceCut> {
    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    let (pipe_r, pipe_w) = (pipe.read.as_raw_fd(), pipe.write.as_raw_fd());
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "idle timeout");
    let mut to_read = len;
    let mut in_pipe = 0usize;
    while to_read > 0 || in_pipe > 0 {
        while to_read > 0 && in_pipe < pipe.capacity {
            let want = ((pipe.capacity - in_pipe) as u64).min(to_read) as usize;
            match splice(src_fd, pipe_w, want) {
                Ok(0) => return Err(SpliceCut::Source(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => {
                    in_pipe += n;
                    to_read -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SpliceCut::Source(e)),
            }
        }
        if in_pipe == 0 {
            match monoio::time::timeout(wait(), src.readable(false)).await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => return Err(SpliceCut::Source(e)),
                Err(_) => return Err(SpliceCut::Source(timed_out())),
            }
        }
        match splice(pipe_r, dst_fd, in_pipe) {
            Ok(n) => {
                in_pipe -= n;
                on_bytes(n as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match monoio::time::timeout(wait(), dst.writable(false)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(SpliceCut::Destination(e)),
                    Err(_) => return Err(SpliceCut::Destination(timed_out())),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SpliceCut::Destination(e)),
        }
    }
    Ok(())
}

/// Makes a socket non-blocking for as long as this lives, then puts its
/// flags back as they were (the io_uring driver keeps sockets blocking, the
/// epoll driver non-blocking).
pub struct NonBlocking {
    fd: RawFd,
    flags: libc::c_int,
}

impl NonBlocking {
    pub fn set(stream: &TcpStream) -> io::Result<NonBlocking> {
        let fd = stream.as_raw_fd();
        // SAFETY: fcntl on a socket the caller keeps open; no memory passed.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if flags & libc::O_NONBLOCK == 0 && unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NonBlocking { fd, flags })
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        if self.flags & libc::O_NONBLOCK == 0 {
            // SAFETY: restores the flags read in `set` on the same socket,
            // which outlives this guard.
            unsafe { libc::fcntl(self.fd, libc::F_SETFL, self.flags) };
        }
    }
}

thread_local! {
    /// Emptied pipes kept for reuse on this core: a pipe costs four
    /// syscalls to make and close.
    static SPARE_PIPES: std::cell::RefCell<Vec<Pipe>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Spare pipes kept per core.
const MAX_SPARE_PIPES: usize = 16;

/// A pipe of at least 64 KiB from this core's spares, or a new one.
pub fn take_pipe(size: usize) -> io::Result<Pipe> {
    if let Some(p) = SPARE_PIPES.with(|s| s.borrow_mut().pop()) {
        return Ok(p);
    }
    let pipe = Pipe::new(size)?;
    if pipe.capacity() < 64 * 1024 {
        return Err(io::Error::other("pipe quota spent"));
    }
    Ok(pipe)
}

/// Gives back a pipe that holds no data.
pub fn return_pipe(pipe: Pipe) {
    SPARE_PIPES.with(|s| {
        let mut spares = s.borrow_mut();
        if spares.len() < MAX_SPARE_PIPES {
            spares.push(pipe);
        }
    });
}
