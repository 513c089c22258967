//! [`Proxy::serve`]: the accept loop, and its drain on shutdown.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
#[cfg(target_os = "linux")]
use std::{
    future::poll_fn,
    net::SocketAddr,
    task::{ready, Context, Poll},
};

#[cfg(target_os = "linux")]
use crate::splice::register;
#[cfg(target_os = "linux")]
use tokio::io::{unix::AsyncFd, Interest};
use tokio::net::TcpListener;

use super::connection::Connection;
#[cfg(target_os = "linux")]
use super::connection::{head_deadline, Start};
use super::drain::Drain;
#[cfg(target_os = "linux")]
use super::room::{has_spoken, into_tokio, Room, Waiter};
#[cfg(target_os = "linux")]
use super::Admission;
use super::Proxy;
use crate::splice::Stream;
use crate::trace;
#[cfg(target_os = "linux")]
use crate::wire;

/// What a drain did: returned by [`Proxy::serve`] once it has stopped, and by
/// [`Proxy::drain`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeSummary {
    /// Connections accepted ([`Proxy::serve`]), or admitted through `handle` and `upgrade`
    /// over the proxy's life ([`Proxy::drain`]).
    pub accepted: u64,
    /// Connections that ended by themselves during the grace period after the shutdown signal.
    pub drained: u64,
    /// Connections still open when the grace period ended, closed by the proxy.
    pub cut: u64,
}

impl Proxy {
    /// Accepts connections from `listener` and proxies each on its own task until
    /// `shutdown` completes; then stops accepting (the listening socket is closed at once,
    /// so new connects are refused), lets open connections finish for the grace period
    /// ([`ProxyBuilder::grace_period`](crate::ProxyBuilder::grace_period)), closes the rest,
    /// and returns a summary.
    ///
    /// With `ProxyBuilder::tls` (feature `rustls`), every
    /// connection is TLS, terminated on its own task (a slow handshake never delays the
    /// accept loop).
    ///
    /// Accept errors never end the loop: when the process is out of file descriptors
    /// (`EMFILE`/`ENFILE`) or memory it backs off (up to a second, without delaying a
    /// shutdown) and retries.
    pub async fn serve<F>(&self, listener: TcpListener, shutdown: F) -> ServeSummary
    where
        F: Future<Output = ()>,
    {
        // Each connection runs detached on its own task and counts itself in `group` (a
        // join set would cost a lock and an allocation per connection, and a wake-up of
        // this loop per closed one).
        let group = self.new_group();
        let accepted = self.accept_until(listener, shutdown, &group).await;
        // Refuse, wait out the grace period, cut the rest and give them CUT_WAIT to close:
        // every phase of a connection ends at the cut (a handshake is abandoned, a tunnel
        // closed), so none outlives the drain by more than its own close.
        let summary = group.run(self.inner.grace).await;
        self.inner.stats.drain(&summary);
        ServeSummary {
            accepted,
            ..summary
        }
    }
}

impl Proxy {
    /// The accept loop of [`serve`](Self::serve), until `shutdown`: how many connections it
    /// accepted.
    ///
    /// A client whose first bytes are already there when it is accepted (the usual case) is
    /// read at once, into the stack, and starts its handshake on a task of its own. One that
    /// has sent nothing waits in the [`Room`] instead: no task, no buffer, no registration
    /// with tokio's reactor until it speaks (rule 29).
    #[cfg(target_os = "linux")]
    async fn accept_until<F>(&self, listener: TcpListener, shutdown: F, group: &Arc<Drain>) -> u64
    where
        F: Future<Output = ()>,
    {
        // Accepting through mio leaves the new socket unregistered: it joins tokio's reactor
        // only when it gets a task.
        let listener = listener
            .into_std()
            .map(mio::net::TcpListener::from_std)
            .and_then(|listener| register(listener, Interest::READABLE));
        let listener = match listener {
            Ok(listener) => listener,
            Err(_error) => {
                trace::warning!(%_error, "the listening socket could not be polled; not serving");
                return 0;
            }
        };
        let mut room = match Room::new() {
            Ok(room) => Some(room),
            Err(_error) => {
                trace::warning!(%_error, "no waiting room; each client gets a task when accepted");
                None
            }
        };
        let mut accepted = 0;
        let mut backoff = Backoff::default();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                result = poll_fn(|cx| poll_accept(&listener, cx)) => match result {
                    Ok((socket, peer)) => {
                        backoff.reset();
                        accepted += 1;
                        self.arrive(socket, peer, group, room.as_mut());
                    }
                    Err(error) => {
                        if let Some(wait) = backoff.after(&error) {
                            let sleep = tokio::time::sleep(wait);
                            tokio::pin!(sleep);
                            // Clients in the room still leave it while accepting waits.
                            let stopped = loop {
                                tokio::select! {
                                    biased;
                                    () = &mut shutdown => break true,
                                    () = &mut sleep => break false,
                                    waiter = poll_fn(|cx| poll_room(room.as_mut(), cx)) => self.start(waiter, Start::Wait),
                                }
                            };
                            if stopped {
                                break;
                            }
                        }
                    }
                },
                waiter = poll_fn(|cx| poll_room(room.as_mut(), cx)) => self.start(waiter, Start::Wait),
            }
        }
        // The listening socket closes here: new connects are refused from now on.
        drop(listener);
        // Whoever still waits is drained like every other connection.
        for waiter in room.into_iter().flat_map(Room::into_waiters) {
            self.start(waiter, Start::Wait);
        }
        accepted
    }

    /// A client just accepted: admitted, then started at once when it has spoken (or is
    /// refused), put in the room otherwise.
    #[cfg(target_os = "linux")]
    fn arrive(
        &self,
        socket: mio::net::TcpStream,
        peer: SocketAddr,
        group: &Arc<Drain>,
        room: Option<&mut Room<Admission>>,
    ) {
        let admission = self.admit(group);
        let deadline = head_deadline(self);
        // A refused client is answered without reading it.
        let start = match admission.refused {
            Some(_) => Some(Start::Wait),
            None => self.first_read(&socket),
        };
        let waiter = Waiter {
            socket,
            peer,
            data: admission,
            deadline,
        };
        match (start, room) {
            (Some(start), _) => self.start(waiter, start),
            (None, Some(room)) => {
                if let Some(waiter) = room.insert(waiter) {
                    self.start(waiter, Start::Wait);
                }
            }
            (None, None) => self.start(waiter, Start::Wait),
        }
    }

    /// A client's first read, made before it has a task: `None` when it has sent nothing.
    /// Before a PROXY header or a TLS handshake it is a one-byte peek, the header or the
    /// handshake being read by their own code.
    #[cfg(target_os = "linux")]
    fn first_read(&self, socket: &mio::net::TcpStream) -> Option<Start> {
        use std::io::Read;
        if !self.head_comes_first() {
            // Bytes, an EOF or an error: the handshake finds out which.
            return has_spoken(socket).then_some(Start::Spoken(None));
        }
        let mut socket = socket;
        wire::try_first_read(|buf| socket.read(buf), &self.inner.client_head)
            .map(|first| Start::Spoken(Some(first)))
    }

    /// Runs `waiter` as a [`Connection`] on a task of its own.
    #[cfg(target_os = "linux")]
    fn start(&self, waiter: Waiter<Admission>, start: Start) {
        let Waiter {
            socket,
            peer,
            data: admission,
            deadline,
        } = waiter;
        match into_tokio(socket) {
            Ok(stream) => {
                let connection = Connection::admitted(
                    self,
                    Stream::Tcp(stream),
                    peer,
                    admission,
                    deadline,
                    start,
                );
                tokio::spawn(connection);
            }
            // Closed with its place: the reactor could not take it (out of memory).
            Err(_error) => {
                trace::warning!(%_error, %peer, "an accepted connection could not be registered; closed")
            }
        }
    }

    /// The accept loop elsewhere than Linux: a task per connection from its
    /// accept.
    #[cfg(not(target_os = "linux"))]
    async fn accept_until<F>(&self, listener: TcpListener, shutdown: F, group: &Arc<Drain>) -> u64
    where
        F: Future<Output = ()>,
    {
        let mut accepted = 0;
        let mut backoff = Backoff::default();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                result = listener.accept() => match result {
                    Ok((stream, peer)) => {
                        backoff.reset();
                        accepted += 1;
                        tokio::spawn(Connection::accept(self, Stream::Tcp(stream), peer, group));
                    }
                    Err(error) => {
                        if let Some(wait) = backoff.after(&error) {
                            tokio::select! {
                                biased;
                                () = &mut shutdown => break,
                                () = tokio::time::sleep(wait) => {}
                            }
                        }
                    }
                },
            }
        }
        accepted
    }
}

/// One accepted connection from `listener`, or the error accepting one.
#[cfg(target_os = "linux")]
pub(super) fn poll_accept(
    listener: &AsyncFd<mio::net::TcpListener>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<(mio::net::TcpStream, SocketAddr)>> {
    loop {
        let mut guard = ready!(listener.poll_read_ready(cx))?;
        match guard.try_io(|listener| listener.get_ref().accept()) {
            Ok(result) => return Poll::Ready(result),
            // Nothing more to accept: the readiness is cleared, wait for the next.
            Err(_would_block) => continue,
        }
    }
}

/// The next client out of the room, if there is a room.
#[cfg(target_os = "linux")]
fn poll_room<T>(room: Option<&mut Room<T>>, cx: &mut Context<'_>) -> Poll<Waiter<T>> {
    match room {
        Some(room) => room.poll_next(cx),
        None => Poll::Pending,
    }
}

/// The accept loop's wait after an accept failed for want of resources: doubling from 10 ms
/// up to a second, back to nothing at the next success.
#[derive(Debug, Default)]
struct Backoff(Duration);

impl Backoff {
    /// How long to wait before accepting again after `error` (logged); `None` when it was
    /// one connection's failure, not the process's: accept again at once.
    fn after(&mut self, error: &io::Error) -> Option<Duration> {
        if !is_resource_error(error) {
            return None;
        }
        self.0 = (self.0 * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        trace::warning!(%error, backoff = ?self.0, "accept failed; backing off");
        Some(self.0)
    }

    fn reset(&mut self) {
        self.0 = Duration::ZERO;
    }
}

/// Whether `accept` failed for want of resources (file descriptors, memory) rather than
/// because of one connection.
fn is_resource_error(error: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    {
        if let Some(code) = error.raw_os_error() {
            return matches!(
                code,
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
            );
        }
    }
    error.kind() == io::ErrorKind::OutOfMemory
}
