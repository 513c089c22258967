//! The tunnel: moves bytes both ways between an upgraded client and its backend
//! (PROTOCOL.md §5).
//!
//! [`tunnel`] is the one entry point. It writes the [`Leftovers`] first, then copies
//! bytes in both directions until both have ended (half-close aware: an EOF on one side
//! shuts down writing towards the other while the other direction keeps flowing), a timer
//! fires, a side fails, or the caller's shutdown future completes. It always returns a
//! [`Report`] saying how many bytes went each way and why the tunnel ended.
//!
//! Two implementations sit behind it, chosen by [`tunnel`] itself:
//!
//! - **zero-copy** ([`TunnelPath::ZeroCopy`], Linux only): when both streams are plain
//!   [`tokio::net::TcpStream`]s, bulk data moves socket → pipe → socket with `splice(2)` and
//!   never enters user space; small messages are copied through an array on the stack,
//!   which needs fewer system calls and no pipe (see [`SpliceConfig::small_reads`]);
//! - **buffered** ([`TunnelPath::Buffered`]): any `AsyncRead + AsyncWrite` pair, with one
//!   lazily allocated, adaptively sized buffer per direction.
//!
//! Memory per tunnel is bounded whatever the peers do: when the destination of a direction
//! stops reading, its buffer (or pipe) fills up and the tunnel stops reading from the source,
//! so the source is back-pressured through TCP flow control.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

mod buffered;
#[cfg(target_os = "linux")]
mod linux;

#[cfg(target_os = "linux")]
use tokio::net::TcpStream;

/// Tunnel configuration: timers and buffer sizes.
///
/// Built with consuming setters from [`SpliceConfig::new`] (the same as
/// [`Default::default`]); every setting has a matching `get_*` getter.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use wsrelay::SpliceConfig;
///
/// let config = SpliceConfig::new()
///     .idle_timeout(Some(Duration::from_secs(60)))
///     .max_lifetime(Some(Duration::from_secs(3600)));
/// assert_eq!(config.get_fin_timeout(), Some(Duration::from_secs(30)));
/// ```
#[derive(Debug, Clone)]
pub struct SpliceConfig {
    idle_timeout: Option<Duration>,
    fin_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
    pipe_size: usize,
    buffer_size: usize,
    max_buffer_size: usize,
    zero_copy: bool,
    small_reads: bool,
}

impl Default for SpliceConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Some(Duration::from_secs(600)),
            fin_timeout: Some(Duration::from_secs(30)),
            max_lifetime: None,
            pipe_size: 1024 * 1024,
            buffer_size: 8 * 1024,
            max_buffer_size: 64 * 1024,
            zero_copy: true,
            small_reads: true,
        }
    }
}

impl SpliceConfig {
    /// The default configuration (see each setter for its default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes both sides when no byte has moved in either direction for this long
    /// (HAProxy `timeout tunnel`; nginx re-arms `proxy_read_timeout` on traffic either way).
    ///
    /// Default `Some(600 s)`; `None` disables it. To keep a busy tunnel cheap, the timer is
    /// not reset on every chunk: when it fires after traffic it is re-armed for another full
    /// period, so a tunnel is closed after between one and two periods of silence.
    pub fn idle_timeout(mut self, t: Option<Duration>) -> Self {
        self.idle_timeout = t;
        self
    }

    /// Closes a half-closed tunnel (one side has sent its EOF) this long after the first EOF,
    /// if the other direction has not ended by then (HAProxy `timeout client-fin` /
    /// `timeout server-fin`).
    ///
    /// Default `Some(30 s)`; `None` disables it.
    pub fn fin_timeout(mut self, t: Option<Duration>) -> Self {
        self.fin_timeout = t;
        self
    }

    /// Closes the tunnel this long after it started, whatever the traffic (Caddy
    /// `stream_timeout`).
    ///
    /// Default `None` (no limit).
    pub fn max_lifetime(mut self, t: Option<Duration>) -> Self {
        self.max_lifetime = t;
        self
    }

    /// Largest size of each pipe of the zero-copy path; it bounds the bytes in flight per
    /// direction on that path.
    ///
    /// A pipe is created with the kernel's default size (64 KiB, or this size if smaller)
    /// when its direction first carries bulk data, and is grown with `F_SETPIPE_SZ` to this
    /// size the first time one `splice` fills at least half of it: a busy direction then
    /// needs fewer, larger `splice` calls (about 16 times fewer at 1 MiB), while a
    /// direction that only sees the odd large message keeps the small pipe.
    ///
    /// Default 1 MiB (the default `/proc/sys/fs/pipe-max-size`); `0` keeps the kernel
    /// default. If the kernel refuses a size, the pipe keeps the size it has: an
    /// unprivileged process may not exceed `pipe-max-size`, and once a user's pipes hold
    /// more than `/proc/sys/fs/pipe-user-pages-soft` pages (16384 pages, 64 MiB, by default;
    /// that is 32 tunnels with both directions at 1 MiB), the kernel refuses growth and
    /// creates new pipes with two pages only. Lower this size (or raise that limit) for
    /// many concurrent bulk tunnels run by an unprivileged user.
    pub fn pipe_size(mut self, bytes: usize) -> Self {
        self.pipe_size = bytes;
        self
    }

    /// Initial size of the per-direction buffer of the buffered path, allocated when the
    /// first bytes arrive in that direction.
    ///
    /// Default 8 KiB. Values below 1 are treated as 1; values above
    /// [`max_buffer_size`](Self::max_buffer_size) as that cap.
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = bytes;
        self
    }

    /// Cap on the per-direction buffer of the buffered path. The buffer doubles (up to this
    /// cap) when a read fills it completely, so bulk transfers need fewer system calls.
    ///
    /// Default 64 KiB. Values below 1 are treated as 1.
    pub fn max_buffer_size(mut self, bytes: usize) -> Self {
        self.max_buffer_size = bytes;
        self
    }

    /// Whether to use `splice(2)` when both streams are `TcpStream`s on Linux.
    ///
    /// Default `true`; `false` forces the buffered path.
    pub fn zero_copy(mut self, on: bool) -> Self {
        self.zero_copy = on;
        self
    }

    /// Whether a direction of the zero-copy path starts with ordinary reads and writes
    /// through a 4 KiB array on the stack, switching to `splice(2)` (and creating its pipe)
    /// only when a read fills that array, as HAProxy does.
    ///
    /// Small messages then cost one `recv` and one `send` instead of two `splice` calls, and
    /// a tunnel that only carries small messages holds no pipe (no extra fds). Nothing is
    /// kept on the heap unless the destination does not take a read at once.
    ///
    /// Default `true`; `false` splices from the first byte.
    pub fn small_reads(mut self, on: bool) -> Self {
        self.small_reads = on;
        self
    }

    /// Whether small reads are on (see [`small_reads`](Self::small_reads)).
    pub fn get_small_reads(&self) -> bool {
        self.small_reads
    }

    /// The idle timeout (see [`idle_timeout`](Self::idle_timeout)).
    pub fn get_idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// The fin timeout (see [`fin_timeout`](Self::fin_timeout)).
    pub fn get_fin_timeout(&self) -> Option<Duration> {
        self.fin_timeout
    }

    /// The maximum lifetime (see [`max_lifetime`](Self::max_lifetime)).
    pub fn get_max_lifetime(&self) -> Option<Duration> {
        self.max_lifetime
    }

    /// The size pipes grow to (see [`pipe_size`](Self::pipe_size)).
    pub fn get_pipe_size(&self) -> usize {
        self.pipe_size
    }

    /// The initial buffer size (see [`buffer_size`](Self::buffer_size)).
    pub fn get_buffer_size(&self) -> usize {
        self.buffer_size
    }

    /// The buffer size cap (see [`max_buffer_size`](Self::max_buffer_size)).
    pub fn get_max_buffer_size(&self) -> usize {
        self.max_buffer_size
    }

    /// Whether the zero-copy path may be used (see [`zero_copy`](Self::zero_copy)).
    pub fn get_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The effective (initial, maximum) buffer sizes of the buffered path.
    pub(crate) fn buffer_sizes(&self) -> (usize, usize) {
        let max = self.max_buffer_size.max(1);
        (self.buffer_size.clamp(1, max), max)
    }
}

/// Bytes already read past the handshake heads, to be delivered before anything else.
///
/// With hyper, these are `Upgraded::downcast`'s `read_buf` (client side) or the bytes read
/// past the backend's `101` head.
#[derive(Debug, Default, Clone)]
pub struct Leftovers {
    /// Bytes the client sent after its request head; written to the backend first.
    pub to_backend: Bytes,
    /// Bytes the backend sent after its `101` head; written to the client first.
    pub to_client: Bytes,
}

/// Which implementation carried a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TunnelPath {
    /// `splice(2)` through a pipe per direction for bulk data (bytes never enter user
    /// space), small messages through an array on the stack
    /// (see [`SpliceConfig::small_reads`]).
    ZeroCopy,
    /// Copies through a user-space buffer per direction.
    Buffered,
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// Both directions reached EOF and every byte was delivered.
    Done,
    /// No byte moved in either direction for the idle timeout.
    IdleTimeout,
    /// The tunnel stayed half-closed for the fin timeout.
    FinTimeout,
    /// The tunnel reached its maximum lifetime.
    Lifetime,
    /// The caller's shutdown future completed.
    Shutdown,
    /// Reading from or writing to the client failed with this kind of error.
    ClientError(io::ErrorKind),
    /// Reading from or writing to the backend failed with this kind of error.
    BackendError(io::ErrorKind),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Done => f.write_str("both sides closed"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::FinTimeout => f.write_str("fin timeout"),
            CloseReason::Lifetime => f.write_str("maximum lifetime reached"),
            CloseReason::Shutdown => f.write_str("shut down"),
            CloseReason::ClientError(kind) => write!(f, "client error: {kind}"),
            CloseReason::BackendError(kind) => write!(f, "backend error: {kind}"),
        }
    }
}

/// What a tunnel did: bytes each way, how long, which path, and why it ended.
///
/// The counts are exact even when the tunnel ends in an error or a timeout.
#[derive(Debug)]
#[non_exhaustive]
pub struct Report {
    /// Bytes written to the backend, leftovers included.
    pub client_to_backend: u64,
    /// Bytes written to the client, leftovers included.
    pub backend_to_client: u64,
    /// Bytes read from the client (or given as leftovers) but never written to the backend:
    /// still in a buffer or pipe when the tunnel ended.
    pub undelivered_to_backend: u64,
    /// Bytes read from the backend (or given as leftovers) but never written to the client.
    pub undelivered_to_client: u64,
    /// How long the tunnel ran.
    pub duration: Duration,
    /// Which implementation carried the tunnel.
    pub path: TunnelPath,
    /// Why the tunnel ended.
    pub reason: CloseReason,
    /// The error behind [`CloseReason::ClientError`] or [`CloseReason::BackendError`].
    pub error: Option<io::Error>,
}

/// Runs the tunnel until both directions end, a timer fires, a side fails, or `shutdown`
/// completes.
///
/// [`Leftovers::to_backend`] is written to `backend` before anything read from `client`, and
/// [`Leftovers::to_client`] to `client` before anything read from `backend`. An EOF from one
/// side shuts down writing towards the other once everything read before it is delivered;
/// the other direction keeps flowing until it ends too.
///
/// If both `C` and `B` are [`tokio::net::TcpStream`], the target is Linux and
/// [`SpliceConfig::zero_copy`] is on, bytes move with `splice(2)` ([`TunnelPath::ZeroCopy`]);
/// otherwise through a buffer per direction ([`TunnelPath::Buffered`]). If the kernel refuses
/// `splice` before any byte went through a pipe, the tunnel falls back to the buffered path
/// (keeping the counts of the bytes already moved by ordinary reads and writes).
///
/// Takes ownership of both streams and drops (closes) them before returning. The future is
/// `Send` when `C`, `B` and `S` are. It never fails: errors end the tunnel and are described
/// by the [`Report`].
///
/// # Examples
///
/// ```
/// use wsrelay::{tunnel, CloseReason, Leftovers, SpliceConfig};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (mut client, client_end) = tokio::io::duplex(1024);
/// let (mut backend, backend_end) = tokio::io::duplex(1024);
/// let leftovers = Leftovers { to_backend: "early ".into(), ..Leftovers::default() };
/// let config = SpliceConfig::new();
/// let task = tokio::spawn(async move {
///     tunnel(client_end, backend_end, leftovers, &config, std::future::pending()).await
/// });
///
/// client.write_all(b"hello").await.unwrap();
/// client.shutdown().await.unwrap();
/// let mut got = String::new();
/// backend.read_to_string(&mut got).await.unwrap();
/// assert_eq!(got, "early hello");
/// drop(backend);
///
/// let report = task.await.unwrap();
/// assert_eq!(report.reason, CloseReason::Done);
/// assert_eq!(report.client_to_backend, 11);
/// # }
/// ```
pub fn tunnel<C, B, S>(
    client: C,
    backend: B,
    leftovers: Leftovers,
    config: &SpliceConfig,
    shutdown: S,
) -> impl Future<Output = Report>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
    B: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Future<Output = ()>,
{
    Tunnel::new(client, backend, leftovers, config, shutdown)
}

impl<C, B, S> Tunnel<C, B, S>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
    B: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Future<Output = ()>,
{
    /// What [`tunnel`] returns, as a named type (for `Proxy`'s own connection future).
    pub(crate) fn new(
        client: C,
        backend: B,
        leftovers: Leftovers,
        config: &SpliceConfig,
        shutdown: S,
    ) -> Self {
        let buffer_sizes = config.buffer_sizes();
        let buffered = |client, backend, leftovers| {
            Path::Buffered(buffered::BufferedPump::new(
                client,
                backend,
                leftovers,
                buffer_sizes,
                [0, 0],
            ))
        };
        #[cfg(target_os = "linux")]
        let path = if config.zero_copy && is_tcp::<C>() && is_tcp::<B>() {
            let client = downcast::<C, TcpStream>(client).expect("type checked");
            let backend = downcast::<B, TcpStream>(backend).expect("type checked");
            Path::ZeroCopy(linux::SplicePump::new(client, backend, leftovers, config))
        } else {
            buffered(client, backend, leftovers)
        };
        #[cfg(not(target_os = "linux"))]
        let path = buffered(client, backend, leftovers);
        Tunnel {
            path,
            timers: Timers::new(config),
            buffer_sizes,
            sleep: None,
            shutdown,
        }
    }
}

/// The implementation a [`Tunnel`] is running.
enum Path<C, B> {
    #[cfg(target_os = "linux")]
    ZeroCopy(linux::SplicePump),
    Buffered(buffered::BufferedPump<C, B>),
    /// Ended (the streams are closed), or in the middle of falling back.
    Ended,
}

pin_project_lite::pin_project! {
    /// The future [`tunnel`] returns.
    ///
    /// Written by hand rather than as an `async fn`, so that it holds exactly the state an
    /// open tunnel needs (the pump, the deadlines, one timer and the shutdown future) and
    /// nothing an `async fn` would keep besides, such as its moved-from arguments: an idle
    /// tunnel costs its task that much less memory.
    pub(crate) struct Tunnel<C, B, S> {
        path: Path<C, B>,
        timers: Timers,
        // For a fall back to the buffered path.
        buffer_sizes: (usize, usize),
        // Created at the first poll that has a deadline to wait for (a `Sleep` cannot be
        // created outside a runtime, and `tunnel` may be called outside one).
        #[pin]
        sleep: Option<Sleep>,
        #[pin]
        shutdown: S,
    }
}

impl<C, B, S> Future for Tunnel<C, B, S>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
    B: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Future<Output = ()>,
{
    type Output = Report;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Report> {
        let mut this = self.project();
        this.timers.start_once();
        loop {
            let (pump, path): (&mut dyn Pump, TunnelPath) = match this.path {
                #[cfg(target_os = "linux")]
                Path::ZeroCopy(pump) => (pump, TunnelPath::ZeroCopy),
                Path::Buffered(pump) => (pump, TunnelPath::Buffered),
                Path::Ended => panic!("`tunnel` future polled after completion"),
            };
            let step = poll_step(
                pump,
                this.timers,
                this.sleep.as_mut(),
                this.shutdown.as_mut(),
                cx,
            );
            let report = match step {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(end)) => this.timers.report(pump, path, end),
                Poll::Ready(None) => {
                    // The kernel refused splice before any byte went through a pipe: carry
                    // on buffered (only the zero-copy path asks for this).
                    #[cfg(target_os = "linux")]
                    if let Path::ZeroCopy(pump) = std::mem::replace(this.path, Path::Ended) {
                        let (client, backend, leftovers, already) = pump.into_parts();
                        let client = downcast::<TcpStream, C>(client).expect("type checked");
                        let backend = downcast::<TcpStream, B>(backend).expect("type checked");
                        *this.path = Path::Buffered(buffered::BufferedPump::new(
                            client,
                            backend,
                            leftovers,
                            *this.buffer_sizes,
                            already,
                        ));
                        continue;
                    }
                    unreachable!("only the zero-copy path falls back");
                }
            };
            // Close both streams before returning.
            *this.path = Path::Ended;
            return Poll::Ready(report);
        }
    }
}

#[cfg(target_os = "linux")]
fn is_tcp<T: 'static>() -> bool {
    std::any::TypeId::of::<T>() == std::any::TypeId::of::<TcpStream>()
}

/// Moves `value` out as a `U` if `T` and `U` are the same type.
#[cfg(target_os = "linux")]
fn downcast<T: 'static, U: 'static>(value: T) -> Option<U> {
    let mut slot = Some(value);
    (&mut slot as &mut dyn std::any::Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take)
}

/// Which side of the tunnel an I/O error happened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Backend,
}

/// Why a pump stopped before both directions ended.
#[derive(Debug)]
pub(crate) enum Stop {
    /// An I/O error on one side.
    Error(Side, io::Error),
    /// The zero-copy path cannot be used for these sockets (nothing was spliced yet; bytes
    /// moved by small reads are counted and their unwritten rest handed over).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Fallback,
}

/// Byte counts of one direction.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    /// Bytes written to the destination.
    pub(crate) written: u64,
    /// Bytes taken in (read from the source, or leftovers) but not written yet.
    pub(crate) pending: u64,
}

/// One implementation of the tunnel's data movement, driven by [`drive`].
pub(crate) trait Pump {
    /// Moves bytes both ways; `Ready(Ok(()))` once both directions have ended.
    ///
    /// Does a bounded amount of work per call (yielding with a self-wake when the bound is
    /// hit), so a busy tunnel cannot starve the timers or other tasks.
    fn poll_pump(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Stop>>;
    /// A number that changes whenever bytes move in either direction.
    fn activity(&self) -> u64;
    /// Whether one side has sent its EOF.
    fn half_closed(&self) -> bool;
    /// (client → backend, backend → client) counts.
    fn counts(&self) -> (Counts, Counts);
}

/// How the tunnel ended, before it is turned into a [`Report`].
#[derive(Debug)]
enum End {
    Reason(CloseReason),
    Error(Side, io::Error),
}

/// The deadlines of one tunnel, all served by one `Sleep`.
#[derive(Debug)]
struct Timers {
    /// Set at the first poll.
    start: Option<Instant>,
    idle: Option<Duration>,
    fin: Option<Duration>,
    lifetime: Option<Duration>,
    idle_at: Option<Instant>,
    fin_at: Option<Instant>,
    lifetime_at: Option<Instant>,
    /// `Pump::activity` when the idle deadline was last armed.
    seen: u64,
    /// The deadline the sleep is set to, if any.
    armed: Option<Instant>,
}

impl Timers {
    fn new(config: &SpliceConfig) -> Self {
        Self {
            start: None,
            idle: config.idle_timeout,
            fin: config.fin_timeout,
            lifetime: config.max_lifetime,
            idle_at: None,
            fin_at: None,
            lifetime_at: None,
            seen: 0,
            armed: None,
        }
    }

    /// Starts the clock (the idle and lifetime deadlines) unless it runs already.
    fn start_once(&mut self) {
        if self.start.is_none() {
            let start = Instant::now();
            self.start = Some(start);
            self.idle_at = self.idle.map(|t| start + t);
            self.lifetime_at = self.lifetime.map(|t| start + t);
        }
    }

    fn nearest(&self) -> Option<Instant> {
        [self.idle_at, self.fin_at, self.lifetime_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Checks the deadlines after the sleep fired at `now`; re-arms the idle deadline if
    /// bytes moved since it was armed.
    fn fired(&mut self, now: Instant, activity: u64) -> Option<CloseReason> {
        if self.lifetime_at.is_some_and(|t| now >= t) {
            return Some(CloseReason::Lifetime);
        }
        if self.fin_at.is_some_and(|t| now >= t) {
            return Some(CloseReason::FinTimeout);
        }
        if let (Some(at), Some(idle)) = (self.idle_at, self.idle) {
            if now >= at {
                if activity == self.seen {
                    return Some(CloseReason::IdleTimeout);
                }
                self.seen = activity;
                self.idle_at = Some(now + idle);
            }
        }
        None
    }

    fn report(&self, pump: &dyn Pump, path: TunnelPath, end: End) -> Report {
        let (to_backend, to_client) = pump.counts();
        let (reason, error) = match end {
            End::Reason(reason) => (reason, None),
            End::Error(Side::Client, e) => (CloseReason::ClientError(e.kind()), Some(e)),
            End::Error(Side::Backend, e) => (CloseReason::BackendError(e.kind()), Some(e)),
        };
        Report {
            client_to_backend: to_backend.written,
            backend_to_client: to_client.written,
            undelivered_to_backend: to_backend.pending,
            undelivered_to_client: to_client.pending,
            duration: self.start.map_or(Duration::ZERO, |start| start.elapsed()),
            path,
            reason,
            error,
        }
    }
}

/// One poll of `pump` against the timers and the shutdown future. `Ready(None)` means the
/// pump asked to fall back to the buffered path.
fn poll_step<S: Future<Output = ()>>(
    pump: &mut dyn Pump,
    timers: &mut Timers,
    mut sleep: Pin<&mut Option<Sleep>>,
    shutdown: Pin<&mut S>,
    cx: &mut Context<'_>,
) -> Poll<Option<End>> {
    if shutdown.poll(cx).is_ready() {
        return Poll::Ready(Some(End::Reason(CloseReason::Shutdown)));
    }
    match pump.poll_pump(cx) {
        Poll::Ready(Ok(())) => return Poll::Ready(Some(End::Reason(CloseReason::Done))),
        Poll::Ready(Err(Stop::Error(side, e))) => return Poll::Ready(Some(End::Error(side, e))),
        Poll::Ready(Err(Stop::Fallback)) => return Poll::Ready(None),
        Poll::Pending => {}
    }
    if timers.fin_at.is_none() && pump.half_closed() {
        if let Some(fin) = timers.fin {
            timers.fin_at = Some(Instant::now() + fin);
        }
    }
    // Each turn either returns or moves a deadline later; the bound is only a safeguard.
    for _ in 0..4 {
        let Some(deadline) = timers.nearest() else {
            return Poll::Pending;
        };
        if timers.armed != Some(deadline) {
            match sleep.as_mut().as_pin_mut() {
                Some(sleep) => sleep.reset(deadline),
                None => sleep.set(Some(tokio::time::sleep_until(deadline))),
            }
            timers.armed = Some(deadline);
        }
        let Some(armed) = sleep.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        if armed.poll(cx).is_pending() {
            return Poll::Pending;
        }
        if let Some(reason) = timers.fired(Instant::now(), pump.activity()) {
            return Poll::Ready(Some(End::Reason(reason)));
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_setters() {
        let c = SpliceConfig::new();
        assert_eq!(c.get_idle_timeout(), Some(Duration::from_secs(600)));
        assert_eq!(c.get_fin_timeout(), Some(Duration::from_secs(30)));
        assert_eq!(c.get_max_lifetime(), None);
        assert_eq!(c.get_pipe_size(), 1024 * 1024);
        assert_eq!(c.get_buffer_size(), 8 * 1024);
        assert_eq!(c.get_max_buffer_size(), 64 * 1024);
        assert!(c.get_zero_copy());
        assert!(c.get_small_reads());
        assert!(!c.clone().small_reads(false).get_small_reads());
        let c = c
            .idle_timeout(None)
            .fin_timeout(Some(Duration::from_secs(1)))
            .max_lifetime(Some(Duration::from_secs(2)))
            .pipe_size(0)
            .buffer_size(1 << 20)
            .max_buffer_size(4096)
            .zero_copy(false);
        assert_eq!(c.get_idle_timeout(), None);
        assert_eq!(c.get_fin_timeout(), Some(Duration::from_secs(1)));
        assert_eq!(c.get_max_lifetime(), Some(Duration::from_secs(2)));
        assert_eq!(c.get_pipe_size(), 0);
        assert!(!c.get_zero_copy());
        // The initial size is clamped to the cap, and both to at least one byte.
        assert_eq!(c.buffer_sizes(), (4096, 4096));
        assert_eq!(c.buffer_size(0).max_buffer_size(0).buffer_sizes(), (1, 1));
    }

    #[test]
    fn a_tunnel_can_be_built_outside_a_runtime_and_its_clock_starts_when_polled() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        // No runtime here: building the future must not create its timer yet.
        let (mut client, client_end) = tokio::io::duplex(64);
        let (mut backend, backend_end) = tokio::io::duplex(64);
        let config = SpliceConfig::new().idle_timeout(Some(Duration::from_secs(5)));
        let future = tunnel(
            client_end,
            backend_end,
            Leftovers::default(),
            &config,
            std::future::pending(),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let report = runtime.block_on(async {
            // Time that passes before the first poll does not count towards the idle timeout.
            tokio::time::advance(Duration::from_secs(60)).await;
            let task = tokio::spawn(future);
            client.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            backend.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping");
            // Then silence: the idle timeout ends it (between one and two periods).
            task.await.unwrap()
        });
        assert_eq!(report.reason, CloseReason::IdleTimeout);
        assert_eq!(report.client_to_backend, 4);
        assert!(
            report.duration >= Duration::from_secs(5) && report.duration <= Duration::from_secs(10),
            "{:?}",
            report.duration
        );
    }

    #[test]
    fn idle_deadline_rearms_only_after_activity() {
        let config = SpliceConfig::new()
            .idle_timeout(Some(Duration::from_secs(10)))
            .fin_timeout(None);
        let mut t = Timers::new(&config);
        assert_eq!(t.nearest(), None, "deadlines before the first poll");
        t.start_once();
        let start = t.start.unwrap();
        assert_eq!(t.nearest(), Some(start + Duration::from_secs(10)));
        // Starting again does not move the deadlines.
        t.start_once();
        assert_eq!(t.start, Some(start));
        // Fired after traffic: re-armed a full period from now.
        let now = start + Duration::from_secs(10);
        assert_eq!(t.fired(now, 5), None);
        assert_eq!(t.nearest(), Some(now + Duration::from_secs(10)));
        // Fired with no traffic since: idle.
        let later = now + Duration::from_secs(10);
        assert_eq!(t.fired(later, 5), Some(CloseReason::IdleTimeout));
    }

    #[test]
    fn lifetime_and_fin_take_precedence_over_idle() {
        let config = SpliceConfig::new()
            .idle_timeout(Some(Duration::from_secs(10)))
            .max_lifetime(Some(Duration::from_secs(10)));
        let mut t = Timers::new(&config);
        t.start_once();
        let at = t.start.unwrap() + Duration::from_secs(10);
        assert_eq!(t.fired(at, 0), Some(CloseReason::Lifetime));
        let mut t = Timers::new(&SpliceConfig::new());
        t.start_once();
        let start = t.start.unwrap();
        t.fin_at = Some(start + Duration::from_secs(1));
        assert_eq!(t.nearest(), t.fin_at);
        assert_eq!(
            t.fired(start + Duration::from_secs(1), 0),
            Some(CloseReason::FinTimeout)
        );
    }
}
