//! The tunnel: moves bytes both ways between an upgraded client and its backend
//! ([rules](crate::rules) §5).
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
//!
//! Files: [`SpliceConfig`] (config.rs), [`Report`] and friends (report.rs), the one
//! two-direction pump both paths run (pump.rs) with its medium per path (buffered.rs,
//! linux.rs), the timers (timers.rs), and the stream type the proxy hands over
//! (stream.rs).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

mod buffered;
mod config;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::register;
pub(crate) mod pump;
mod report;
mod stream;
mod timers;

pub use config::SpliceConfig;
pub use report::{CloseReason, Leftovers, Report, TunnelPath};
pub(crate) use stream::Stream;

use buffered::Buffer;
use pump::{Pump, TwoWay};
use timers::{poll_step, Timers};

#[cfg(target_os = "linux")]
use tokio::net::TcpStream;

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

pin_project_lite::pin_project! {
    /// The future [`tunnel`] returns: the tunnel and its caller's shutdown future.
    pub(crate) struct Tunnel<C, B, S> {
        #[pin]
        core: Core<C, B>,
        #[pin]
        shutdown: S,
    }
}

impl<C, B, S> Tunnel<C, B, S>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
    B: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Future<Output = ()>,
{
    /// What [`tunnel`] returns, as a named type.
    fn new(
        client: C,
        backend: B,
        leftovers: Leftovers,
        config: &SpliceConfig,
        shutdown: S,
    ) -> Self {
        Tunnel {
            core: Core::new(client, backend, leftovers, config),
            shutdown,
        }
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
        let this = self.project();
        this.core.poll_run(cx, this.shutdown)
    }
}

pin_project_lite::pin_project! {
    /// A running tunnel, without a shutdown future of its own: the caller passes one to
    /// [`poll_run`](Self::poll_run) (the proxy's connection future owns it, as it also
    /// watches it during the handshake).
    ///
    /// Written by hand rather than as an `async fn`, so that it holds exactly the state an
    /// open tunnel needs (the pump, the deadlines and one timer) and nothing an `async fn`
    /// would keep besides, such as its moved-from arguments: an idle tunnel costs its task
    /// that much less memory.
    pub(crate) struct Core<C, B> {
        path: Path<C, B>,
        timers: Timers,
        // For a fall back to the buffered path.
        buffer_sizes: (usize, usize),
        // Created at the first poll that has a deadline to wait for (a `Sleep` cannot be
        // created outside a runtime, and `tunnel` may be called outside one).
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<C, B> Core<C, B>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
    B: AsyncRead + AsyncWrite + Unpin + 'static,
{
    /// Zero-copy when `C` and `B` are both `TcpStream` (and the config allows it).
    fn new(client: C, backend: B, leftovers: Leftovers, config: &SpliceConfig) -> Self {
        #[cfg(target_os = "linux")]
        if config.get_zero_copy() && is_tcp::<C>() && is_tcp::<B>() {
            let client = downcast::<C, TcpStream>(client).expect("type checked");
            let backend = downcast::<B, TcpStream>(backend).expect("type checked");
            let path = Path::ZeroCopy(linux::pump(client, backend, leftovers, config));
            return Self::with_path(path, config);
        }
        let path = Path::buffered(client, backend, leftovers, config.buffer_sizes(), [0, 0]);
        Self::with_path(path, config)
    }

    fn with_path(path: Path<C, B>, config: &SpliceConfig) -> Self {
        Core {
            path,
            timers: Timers::new(config),
            buffer_sizes: config.buffer_sizes(),
            sleep: None,
        }
    }

    /// Runs the tunnel until it ends (or `shutdown` completes) and reports.
    ///
    /// # Panics
    ///
    /// When polled again after it returned its report.
    pub(crate) fn poll_run<S: Future<Output = ()>>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut shutdown: Pin<&mut S>,
    ) -> Poll<Report> {
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
                shutdown.as_mut(),
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
                        *this.path = Path::buffered(
                            from_tcp(client),
                            from_tcp(backend),
                            leftovers,
                            *this.buffer_sizes,
                            already,
                        );
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

impl Core<Stream, Stream> {
    /// The tunnel between two [`Stream`]s: zero-copy when both turn out to be TCP sockets.
    pub(crate) fn between(
        client: Stream,
        backend: Stream,
        leftovers: Leftovers,
        config: &SpliceConfig,
    ) -> Self {
        let path = match (client, backend) {
            #[cfg(target_os = "linux")]
            (Stream::Tcp(client), Stream::Tcp(backend)) if config.get_zero_copy() => {
                Path::ZeroCopy(linux::pump(client, backend, leftovers, config))
            }
            (client, backend) => {
                Path::buffered(client, backend, leftovers, config.buffer_sizes(), [0, 0])
            }
        };
        Self::with_path(path, config)
    }
}

/// The implementation a [`Core`] is running.
enum Path<C, B> {
    #[cfg(target_os = "linux")]
    ZeroCopy(linux::SplicePump),
    Buffered(TwoWay<C, B, Buffer>),
    /// Ended (the streams are closed), or in the middle of falling back.
    Ended,
}

impl<C, B> Path<C, B> {
    fn buffered(
        client: C,
        backend: B,
        leftovers: Leftovers,
        sizes: (usize, usize),
        written: [u64; 2],
    ) -> Self {
        let media = [Buffer::new(sizes), Buffer::new(sizes)];
        Path::Buffered(TwoWay::new(client, backend, leftovers, media, written))
    }
}

#[cfg(target_os = "linux")]
fn is_tcp<T: 'static>() -> bool {
    std::any::TypeId::of::<T>() == std::any::TypeId::of::<TcpStream>()
}

/// A socket of a zero-copy pump as the tunnel's stream type, for a fallback to the buffered
/// path. The zero-copy path only runs with `TcpStream`s (from [`tunnel`]) or
/// [`Stream::Tcp`]s (from the proxy): those are the two types to turn them back into.
#[cfg(target_os = "linux")]
fn from_tcp<T: 'static>(tcp: TcpStream) -> T {
    if is_tcp::<T>() {
        downcast(tcp).expect("type checked")
    } else {
        downcast(Stream::Tcp(tcp)).expect("the zero-copy path runs on TcpStream or Stream")
    }
}

/// Moves `value` out as a `U` if `T` and `U` are the same type.
#[cfg(target_os = "linux")]
fn downcast<T: 'static, U: 'static>(value: T) -> Option<U> {
    let mut slot = Some(value);
    (&mut slot as &mut dyn std::any::Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_zero_copy_socket_turns_back_into_either_stream_type() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let a = TcpStream::connect(addr).await.unwrap();
        let b = TcpStream::connect(addr).await.unwrap();
        let _tcp: TcpStream = from_tcp(a);
        assert!(matches!(from_tcp::<Stream>(b), Stream::Tcp(_)));
    }
}
