//! The zero-copy path: `splice(2)` socket → pipe → socket, one pipe per direction.
//!
//! The only module of the crate with `unsafe`: four libc calls (`pipe2`, `fcntl`, `splice`)
//! and taking ownership of the fds `pipe2` returns.
//!
//! Readiness comes from tokio: a direction waits with `poll_read_ready` /
//! `poll_write_ready` and runs `splice` inside `TcpStream::try_io`, which clears the
//! readiness only when `splice` answered `EAGAIN`. To keep that answer unambiguous, bytes
//! are spliced into a pipe only while it is empty (so `EAGAIN` can only mean "the socket has
//! no data", never "the pipe is full"), and out of it only while it holds bytes (so `EAGAIN`
//! can only mean "the socket's send buffer is full"). Small mode (below) uses tokio's own
//! `poll_read` / `poll_write`, which follow the same contract.
//!
//! Hybrid, as HAProxy does: a direction starts in *small* mode, reading with an ordinary
//! `recv` into a `SMALL`-byte array on the stack of the poll call and writing it out at
//! once with `send`; only the bytes the destination did not take are moved into a heap
//! [`Bytes`] (the direction's `leftover`), which is written before anything is read again.
//! Small messages (the usual WebSocket traffic) so cost two system calls and no pipe. When a
//! read fills the whole array (a sign of bulk data), the direction switches to *splice*
//! mode for the rest of its life: its pipe is created then, and bytes move with `splice`
//! once the heap remainder is written.
//!
//! A pipe is thus created only when its direction carries bulk data (an idle or chatty
//! tunnel holds no pipe), sized with `F_SETPIPE_SZ`, owned by [`OwnedFd`]s and closed when
//! its direction ends or the tunnel is dropped, on every path.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::ptr;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::pump::{write_zero, Failed, Filled, Medium, TwoWay};
use super::{Leftovers, SpliceConfig};

/// Size of the on-stack array a direction in small mode reads into. A read that fills it
/// switches the direction to splice mode.
const SMALL: usize = 4096;

/// Pipe capacity assumed if the kernel will not tell (its default since Linux 2.6.11).
const DEFAULT_PIPE_SIZE: usize = 64 * 1024;

/// Size a pipe is created with when the configured size is larger: the kernel's default.
/// It grows to the configured size the first time a splice fills at least half of it.
const INITIAL_PIPE_SIZE: usize = 64 * 1024;

/// Evaluates a libc call and turns its `-1` into `io::Error::last_os_error()`, as mio's
/// `syscall!` does. The call itself (with its `unsafe` block and `SAFETY` comment) is
/// written at the call site.
macro_rules! syscall {
    ($call:expr) => {{
        let res = $call;
        if res == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// Both ends of a pipe.
#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Capacity in bytes, as reported by the kernel.
    size: usize,
}

impl Pipe {
    /// `pipe2(O_CLOEXEC | O_NONBLOCK)`, then `F_SETPIPE_SZ` to `requested` bytes (0 keeps the
    /// default; a refusal is ignored and the default kept).
    fn new(requested: usize) -> io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [-1, -1];
        // SAFETY: `fds` is a writable array of two `c_int`s, which is what pipe2 fills in.
        syscall!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
        // SAFETY: pipe2 succeeded, so both fds are open, and nothing else owns them: each is
        // wrapped exactly once, so each is closed exactly once.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut pipe = Pipe {
            read,
            write,
            size: 0,
        };
        if requested == 0 || !pipe.resize(requested) {
            // SAFETY: F_GETPIPE_SZ takes no argument; `write` is an open pipe fd borrowed for
            // the duration of the call.
            let get = syscall!(unsafe { libc::fcntl(pipe.write.as_fd_raw(), libc::F_GETPIPE_SZ) });
            pipe.size = get.map_or(DEFAULT_PIPE_SIZE, |n| {
                usize::try_from(n).unwrap_or(DEFAULT_PIPE_SIZE)
            });
        }
        pipe.size = pipe.size.max(1);
        Ok(pipe)
    }

    /// `F_SETPIPE_SZ` to `bytes`; returns whether the kernel accepted (a refusal, e.g. EPERM
    /// above `pipe-max-size` or past the user's `pipe-user-pages-soft` for an unprivileged
    /// process, keeps the current size).
    fn resize(&mut self, bytes: usize) -> bool {
        let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        let fd = self.write.as_fd_raw();
        // SAFETY: F_SETPIPE_SZ takes an int argument; `fd` is an open pipe fd (owned by
        // `self.write`, alive for the duration of the call).
        let set = syscall!(unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, bytes) });
        match set.ok().and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n > 0 => {
                self.size = n;
                true
            }
            _ => false,
        }
    }
}

/// Raw fd of a borrowed fd, for the libc calls.
trait AsFdRaw {
    fn as_fd_raw(&self) -> libc::c_int;
}

impl<T: AsFd> AsFdRaw for T {
    fn as_fd_raw(&self) -> libc::c_int {
        use std::os::fd::AsRawFd;
        self.as_fd().as_raw_fd()
    }
}

/// Moves up to `len` bytes from `from` to `to` with
/// `splice(SPLICE_F_NONBLOCK | SPLICE_F_MOVE)`; one of the two must be a pipe.
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both fds are open for the duration of the call (they are borrowed); null
    // offsets are what splice expects for pipes and sockets; no memory of ours is touched.
    let n = syscall!(unsafe {
        libc::splice(
            from.as_fd_raw(),
            ptr::null_mut(),
            to.as_fd_raw(),
            ptr::null_mut(),
            len,
            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
        )
    })?;
    // `n` is not negative here, and at most `len`.
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Errors that mean "splice does not work for these fds", not "this peer failed".
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    )
}

/// The zero-copy pump: both sockets, a [`Splice`] medium each way.
pub(crate) type SplicePump = TwoWay<TcpStream, TcpStream, Splice>;

/// The zero-copy pump for `config`.
pub(crate) fn pump(
    client: TcpStream,
    backend: TcpStream,
    leftovers: Leftovers,
    config: &SpliceConfig,
) -> SplicePump {
    let medium = || Splice::new(config);
    TwoWay::new(client, backend, leftovers, [medium(), medium()], [0, 0])
}

/// One direction's medium: a stack array for small reads, then a pipe.
#[derive(Debug)]
pub(crate) struct Splice {
    /// Splice mode: set when a small-mode read filled the whole array (or from the start
    /// when small reads are off).
    bulk: bool,
    /// Created when the direction enters splice mode; dropped (closed) when it ends.
    pipe: Option<Pipe>,
    /// Bytes in the pipe.
    in_pipe: usize,
    /// The pipe is still of its initial size and may grow to `pipe_size`.
    grow: bool,
    /// The configured pipe size.
    pipe_size: usize,
    /// A splice from the source succeeded at least once (data or EOF).
    spliced: bool,
}

impl Splice {
    fn new(config: &SpliceConfig) -> Self {
        Self {
            bulk: !config.get_small_reads(),
            pipe: None,
            in_pipe: 0,
            grow: false,
            pipe_size: config.get_pipe_size(),
            spliced: false,
        }
    }

    /// Small mode: `recv` into an array on the stack, `send` at once, hand back only the
    /// rest. tokio's `poll_read` waits for readiness and clears it on `EAGAIN` or on a short
    /// read (which saves the `recv` that would only answer `EAGAIN` after each small
    /// message); `poll_write` likewise on a short write.
    fn poll_small(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut TcpStream,
        dst: &mut TcpStream,
    ) -> Poll<Result<Filled, Failed>> {
        let mut array = [MaybeUninit::<u8>::uninit(); SMALL];
        let mut buf = ReadBuf::uninit(&mut array);
        ready!(Pin::new(&mut *src).poll_read(cx, &mut buf)).map_err(Failed::Read)?;
        let buf = buf.filled();
        let n = buf.len();
        if n == 0 {
            return Poll::Ready(Ok(Filled::Eof));
        }
        self.bulk = n == SMALL;
        // Whatever the destination does not take now (not ready, or an error, which the
        // write of the rest reports) is written before anything else is read.
        let sent = match Pin::new(&mut *dst).poll_write(cx, buf) {
            Poll::Ready(Ok(m)) => m,
            Poll::Ready(Err(_)) | Poll::Pending => 0,
        };
        let rest = if sent < n {
            Bytes::copy_from_slice(&buf[sent..])
        } else {
            Bytes::new()
        };
        Poll::Ready(Ok(Filled::Read {
            read: n,
            written: sent,
            rest,
        }))
    }
}

impl Medium<TcpStream, TcpStream> for Splice {
    fn held(&self) -> usize {
        self.in_pipe
    }

    fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut TcpStream,
    ) -> Poll<Result<usize, Failed>> {
        let Some(pipe) = self.pipe.as_ref() else {
            return Poll::Ready(Err(Failed::Write(io::Error::other("no pipe"))));
        };
        // Draining the pipe: EAGAIN here means the send buffer is full.
        loop {
            ready!(dst.poll_write_ready(cx)).map_err(Failed::Write)?;
            let moved = dst.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_fd(), dst.as_fd(), self.in_pipe)
            });
            match moved {
                Ok(0) => return Poll::Ready(Err(Failed::Write(write_zero()))),
                Ok(n) => {
                    self.in_pipe -= n.min(self.in_pipe);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(Failed::Write(e))),
            }
        }
    }

    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut TcpStream,
        dst: &mut TcpStream,
    ) -> Poll<Result<Filled, Failed>> {
        if !self.bulk {
            return self.poll_small(cx, src, dst);
        }
        // Splice mode, the pipe is empty: fill it. EAGAIN here means the socket has no data.
        loop {
            ready!(src.poll_read_ready(cx)).map_err(Failed::Read)?;
            if self.pipe.is_none() {
                let initial = self.pipe_size.min(INITIAL_PIPE_SIZE);
                self.pipe = Some(Pipe::new(initial).map_err(Failed::Unsupported)?);
                self.grow = self.pipe_size > INITIAL_PIPE_SIZE;
            }
            let Some(pipe) = self.pipe.as_mut() else {
                continue;
            };
            let moved = src.try_io(Interest::READABLE, || {
                splice(src.as_fd(), pipe.write.as_fd(), pipe.size)
            });
            match moved {
                Ok(n) => {
                    self.spliced = true;
                    if self.grow && n >= pipe.size / 2 {
                        // Bulk data arrives faster than one pipe of the default size
                        // carries: fewer, larger splices from now on. Tried once; a refusal
                        // keeps the current size.
                        self.grow = false;
                        pipe.resize(self.pipe_size);
                    }
                    self.in_pipe = n;
                    return Poll::Ready(Ok(if n == 0 {
                        Filled::Eof
                    } else {
                        Filled::Read {
                            read: n,
                            written: 0,
                            rest: Bytes::new(),
                        }
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if unsupported(&e) => return Poll::Ready(Err(Failed::Unsupported(e))),
                Err(e) => return Poll::Ready(Err(Failed::Read(e))),
            }
        }
    }

    fn release(&mut self) {
        self.pipe = None;
    }

    fn can_fall_back(&self) -> bool {
        !self.spliced
    }

    /// Both ends are plain sockets.
    fn close_is_shutdown(&self) -> bool {
        true
    }
}

/// A type that owns exactly one file descriptor for its whole life and always gives that one
/// from `as_raw_fd`: what [`register`] needs to be sound.
pub(crate) trait OwnsOneFd: std::os::fd::AsRawFd {}

/// mio's poller owns its epoll descriptor from `Poll::new` until it is dropped.
impl OwnsOneFd for mio::Poll {}

/// mio's listener owns its socket from `from_std` until it is dropped.
impl OwnsOneFd for mio::net::TcpListener {}

/// Registers `inner` with the current tokio reactor for `interest` (the accept loop's
/// listener and the waiting room's epoll set, `proxy/room.rs`).
pub(crate) fn register<T: OwnsOneFd>(
    inner: T,
    interest: Interest,
) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: `OwnsOneFd` types own their descriptor, so it is valid and open, and
    // `as_raw_fd` returns that same descriptor, for as long as the value lives; the `AsyncFd`
    // owns the value, so this holds for the `AsyncFd`'s whole life as `register_with_interest`
    // requires.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(inner, interest) }
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::splice::pump::Pump;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    /// The pipe size the kernel reports, asked anew (not the cached `size`).
    fn kernel_size(pipe: &Pipe) -> usize {
        // SAFETY: F_GETPIPE_SZ takes no argument; `pipe.write` is an open pipe fd borrowed
        // for the duration of the call.
        let n = unsafe { libc::fcntl(pipe.write.as_fd_raw(), libc::F_GETPIPE_SZ) };
        usize::try_from(n).expect("F_GETPIPE_SZ failed")
    }

    #[test]
    fn pipe_resize_reports_what_the_kernel_set() {
        let mut pipe = Pipe::new(16 * 1024).unwrap();
        assert_eq!(pipe.size, 16 * 1024);
        assert_eq!(kernel_size(&pipe), pipe.size);
        // Not a power of two of pages: the kernel rounds up, and `size` follows it.
        assert!(pipe.resize(100 * 1024));
        assert_eq!(pipe.size, 128 * 1024);
        assert_eq!(kernel_size(&pipe), pipe.size);
        // Refused (EBUSY: the pipe holds more than the new size): the size is kept.
        let mut writer = std::fs::File::from(pipe.write.try_clone().unwrap());
        std::io::Write::write_all(&mut writer, &[7u8; 20 * 1024]).unwrap();
        assert!(!pipe.resize(4096));
        assert_eq!(pipe.size, 128 * 1024);
        assert_eq!(kernel_size(&pipe), pipe.size);
    }

    /// Pushes `bytes` from `from` through the pump to `to`, driving the pump meanwhile.
    async fn push(pump: &mut SplicePump, from: &mut TcpStream, to: &mut TcpStream, bytes: usize) {
        let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        let mut got = vec![0u8; bytes];
        let io = async { tokio::join!(from.write_all(&data), to.read_exact(&mut got)) };
        let drive = std::future::poll_fn(|cx| match pump.poll_pump(cx) {
            Poll::Ready(r) => panic!("the pump ended early: {:?}", r.err()),
            Poll::Pending => Poll::<()>::Pending,
        });
        let done = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            tokio::select! {
                (w, r) = io => { w.unwrap(); r.unwrap(); }
                () = drive => {}
            }
        });
        done.await.expect("bulk transfer timed out");
        assert!(got == data, "bytes changed in the pump");
    }

    #[tokio::test]
    async fn bulk_direction_grows_its_pipe_to_the_configured_size() {
        let (mut client, proxy_client) = pair().await;
        let (proxy_backend, mut backend) = pair().await;
        let config = SpliceConfig::new();
        let mut pump = super::pump(proxy_client, proxy_backend, Leftovers::default(), &config);

        // A small message: no pipe at all.
        push(&mut pump, &mut client, &mut backend, 100).await;
        assert!(pump.to_backend.medium.pipe.is_none());

        push(&mut pump, &mut client, &mut backend, 32 * 1024 * 1024).await;
        let pipe = pump
            .to_backend
            .medium
            .pipe
            .as_ref()
            .expect("bulk data made a pipe");
        assert_eq!(pipe.size, config.get_pipe_size(), "the pipe did not grow");
        assert_eq!(kernel_size(pipe), pipe.size);
        assert!(
            pump.to_client.medium.pipe.is_none(),
            "the quiet direction got a pipe"
        );

        // The other way still works, and gets its own pipe.
        push(&mut pump, &mut backend, &mut client, 4 * 1024 * 1024).await;
        assert!(pump.to_client.medium.pipe.is_some());
    }

    #[tokio::test]
    async fn a_pipe_size_below_the_default_is_used_as_is() {
        let (mut client, proxy_client) = pair().await;
        let (proxy_backend, mut backend) = pair().await;
        let config = SpliceConfig::new().pipe_size(8 * 1024);
        let mut pump = super::pump(proxy_client, proxy_backend, Leftovers::default(), &config);
        push(&mut pump, &mut client, &mut backend, 8 * 1024 * 1024).await;
        let pipe = pump
            .to_backend
            .medium
            .pipe
            .as_ref()
            .expect("bulk data made a pipe");
        assert_eq!(pipe.size, 8 * 1024);
        assert_eq!(kernel_size(pipe), 8 * 1024);
    }
}
