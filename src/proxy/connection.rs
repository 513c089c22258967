//! [`Connection`]: the future of one client connection, for every front end: a wait for the
//! client's first bytes (byte-stream front ends), its handshake, then its tunnel, then the
//! report.
//!
//! Written by hand rather than as an `async fn` so that each phase holds its own state and
//! little else (an `async fn` keeps its moved-from arguments next to the tunnel): memory per
//! idle connection is what a proxy holding thousands of them pays. A connection that has sent
//! nothing holds its socket, its deadline and this struct (a few hundred bytes, rule 29); the
//! handshake's state (kilobytes: parser, rewriter, connect) is boxed once the client has
//! something to say, and freed before the tunnel starts; the tunnel is boxed so that a
//! waiting connection does not carry its size.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use super::drain::{Cut, Drain};
use super::flow;
use super::limits::Hold;
use super::pool::Via;
use super::{stats, Admission, Place, Proxy};
use crate::error::ProxyError;
use crate::splice::{CloseReason, Core, Leftovers, Report, Stream};
use crate::{trace, wire};
use tokio::io::ReadBuf;
use tokio::time::{Instant, Sleep};

/// What a finished handshake hands to the tunnel.
#[derive(Debug)]
pub(crate) struct Ready {
    pub(crate) client: Stream,
    pub(crate) backend: Stream,
    pub(crate) leftovers: Leftovers,
    pub(crate) via: Via,
    /// The connection's count against its address's limit (`max_per_ip`), if any.
    pub(crate) hold: Option<Hold>,
    /// The client's address when the handshake learnt it (from a PROXY protocol header);
    /// `None` keeps the one the connection started with.
    pub(crate) client_addr: Option<SocketAddr>,
}

/// A connection's handshake: everything up to the `101`.
pub(crate) type Handshake = Pin<Box<dyn Future<Output = Result<Ready, ProxyError>> + Send>>;

pin_project_lite::pin_project! {
    /// One client connection. `shutdown` is the signal that cuts it (its drain group's):
    /// during the handshake it abandons the handshake, during the tunnel it ends the tunnel
    /// with [`CloseReason::Shutdown`], or [`CloseReason::BackendClosed`] when the tunnel's
    /// backend was closed ([`Proxy::close_backend`](crate::Proxy::close_backend)).
    pub(crate) struct Connection {
        #[pin]
        phase: Phase,
        #[pin]
        shutdown: Cut,
        proxy: Proxy,
        client_addr: SocketAddr,
        via: Option<Via>,
        span: trace::Span,
        // Released once the sockets are closed.
        place: Option<Place>,
    }
}

pin_project_lite::pin_project! {
    #[project = PhaseProj]
    enum Phase {
        // A byte-stream client that has sent nothing yet: no handshake state is allocated
        // until it does, or until its head deadline passes (then the handshake answers it).
        Waiting {
            client: Option<Stream>,
            #[pin]
            deadline: Option<Sleep>,
        },
        Handshake { handshake: Handshake },
        Tunnel { tunnel: Pin<Box<Core<Stream, Stream>>> },
        Done,
    }
}

/// How an admitted byte-stream connection starts (see [`Connection::admitted`]).
pub(crate) enum Start {
    /// Nothing is known of the client yet: wait for its first bytes.
    Wait,
    /// The client has something to say: the outcome of its first read (`Some`), or, before a
    /// PROXY header or a TLS handshake, only that bytes (or its EOF) are there (`None`).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Spoken(Option<Result<bytes::BytesMut, wire::HeadError>>),
}

impl Connection {
    /// A connection accepted on a byte stream, admitted into `group`: the stream front end's
    /// handshake, then the tunnel.
    pub(crate) fn accept(
        proxy: &Proxy,
        client: Stream,
        peer: SocketAddr,
        group: &Arc<Drain>,
    ) -> Self {
        let admission = proxy.admit(group);
        let deadline = head_deadline(proxy);
        Self::admitted(proxy, client, peer, admission, deadline, Start::Wait)
    }

    /// A byte-stream connection already through [`Proxy::admit`], whose head is due by
    /// `deadline` (see [`head_deadline`]).
    pub(crate) fn admitted(
        proxy: &Proxy,
        client: Stream,
        peer: SocketAddr,
        admission: Admission,
        deadline: Option<Instant>,
        start: Start,
    ) -> Self {
        let phase = match (admission.refused, start) {
            // Answered at once (503), without waiting for the client.
            (Some(refused), _) => Phase::Handshake {
                handshake: counted(
                    proxy,
                    flow::handshake(proxy.clone(), client, peer, Some(refused), None, None),
                ),
            },
            (None, Start::Wait) => Phase::Waiting {
                client: Some(client),
                deadline: deadline.map(tokio::time::sleep_until),
            },
            (None, Start::Spoken(first)) => Phase::Handshake {
                handshake: counted(
                    proxy,
                    flow::handshake(proxy.clone(), client, peer, None, deadline, first),
                ),
            },
        };
        Connection {
            phase,
            shutdown: admission.cut,
            proxy: proxy.clone(),
            client_addr: peer,
            via: None,
            span: trace::connection_span(peer),
            place: admission.place,
        }
    }
}

/// When the head of a connection accepted now is due: the client-head timeout from now.
pub(crate) fn head_deadline(proxy: &Proxy) -> Option<Instant> {
    proxy
        .inner
        .client_head
        .get_timeout()
        .map(|limit| Instant::now() + limit)
}

impl Connection {
    /// A connection whose handshake is `handshake`, in `span` (see `trace.rs`): the hyper
    /// front end's, which reads the head itself.
    #[cfg(feature = "hyper")]
    pub(crate) fn new(
        proxy: &Proxy,
        handshake: Handshake,
        client_addr: SocketAddr,
        place: Option<Place>,
        shutdown: Cut,
        span: trace::Span,
    ) -> Self {
        Connection {
            phase: Phase::Handshake { handshake },
            shutdown,
            proxy: proxy.clone(),
            client_addr,
            via: None,
            span,
            place,
        }
    }
}

impl Future for Connection {
    type Output = Result<Report, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // Whether the tunnel starts in this poll: a close or cut from before its watch began
        // is checked once.
        let mut starting = false;
        loop {
            match this.phase.as_mut().project() {
                PhaseProj::Waiting {
                    client,
                    mut deadline,
                } => {
                    if this.shutdown.as_mut().poll(cx).is_ready() {
                        this.phase.set(Phase::Done);
                        *this.place = None;
                        // Cut before it said anything: a handshake left unanswered.
                        this.proxy.inner.stats.handshake(None, false);
                        return Poll::Ready(Err(ProxyError::ShuttingDown { sent: None }));
                    }
                    // The first read (or, before a PROXY header or a TLS handshake, a peek)
                    // goes to the stack:
                    // a client that has sent nothing gets nothing allocated.
                    let first = match client {
                        Some(Stream::Tcp(tcp)) if !this.proxy.head_comes_first() => {
                            let mut byte = [0u8; 1];
                            tcp.poll_peek(cx, &mut ReadBuf::new(&mut byte))
                                .map(|_| None)
                        }
                        Some(Stream::Tcp(tcp)) => {
                            let limits = &this.proxy.inner.client_head;
                            wire::poll_first_read(Pin::new(tcp), cx, limits).map(Some)
                        }
                        _ => Poll::Ready(None),
                    };
                    let first = match first {
                        Poll::Ready(first) => first,
                        Poll::Pending => {
                            let expired = deadline
                                .as_mut()
                                .as_pin_mut()
                                .is_some_and(|sleep| sleep.poll(cx).is_ready());
                            if !expired {
                                return Poll::Pending;
                            }
                            // Past the deadline: the handshake answers it (408).
                            None
                        }
                    };
                    let at = deadline.as_ref().as_pin_ref().map(|sleep| sleep.deadline());
                    let Some(client) = client.take() else {
                        unreachable!("a waiting connection holds its client");
                    };
                    let handshake = flow::handshake(
                        this.proxy.clone(),
                        client,
                        *this.client_addr,
                        None,
                        at,
                        first,
                    );
                    let handshake = counted(this.proxy, handshake);
                    this.phase.set(Phase::Handshake { handshake });
                }
                PhaseProj::Handshake { handshake } => {
                    let _entered = trace::enter(this.span);
                    if this.shutdown.as_mut().poll(cx).is_ready() {
                        // Cut during its handshake: both sockets close with the future.
                        this.phase.set(Phase::Done);
                        *this.place = None;
                        return Poll::Ready(Err(ProxyError::ShuttingDown { sent: None }));
                    }
                    let result = ready!(handshake.as_mut().poll(cx));
                    match result {
                        Ok(mut ready) => {
                            if let Some(place) = this.place.as_mut() {
                                place.open_tunnel(&mut ready);
                            }
                            let tunnel = Box::pin(Core::between(
                                ready.client,
                                ready.backend,
                                ready.leftovers,
                                &this.proxy.inner.splice,
                            ));
                            *this.via = Some(ready.via);
                            if let Some(addr) = ready.client_addr {
                                *this.client_addr = addr;
                            }
                            starting = true;
                            this.phase.set(Phase::Tunnel { tunnel });
                        }
                        Err(error) => {
                            this.phase.set(Phase::Done);
                            *this.place = None;
                            return Poll::Ready(Err(error));
                        }
                    }
                }
                PhaseProj::Tunnel { tunnel } => {
                    let via = this.via.as_ref();
                    let closed = || via.is_some_and(Via::is_closed);
                    // A cut or close that came before the tunnel started woke the handshake
                    // phase's wait, which went back to waiting: checked once here.
                    let mut report = if starting && (this.shutdown.is_cut() || closed()) {
                        ready!(tunnel
                            .as_mut()
                            .poll_run(cx, Pin::new(&mut std::future::ready(()))))
                    } else {
                        let mut watch = Watch {
                            cut: this.shutdown.as_mut(),
                            closed: &closed,
                        };
                        ready!(tunnel.as_mut().poll_run(cx, Pin::new(&mut watch)))
                    };
                    if report.reason == CloseReason::Shutdown && !this.shutdown.is_cut() && closed()
                    {
                        report.reason = CloseReason::BackendClosed;
                    }
                    // Closes both sockets, then releases the connection's place and its
                    // backend's count.
                    this.phase.set(Phase::Done);
                    *this.place = None;
                    report.client_addr = Some(*this.client_addr);
                    report.backend = this.via.take().map(|via| via.name().to_owned());
                    let _entered = trace::enter(this.span);
                    finish(this.proxy, &report);
                    return Poll::Ready(Ok(report));
                }
                PhaseProj::Done => panic!("a connection future polled after completion"),
            }
        }
    }
}

/// A byte-stream front end's handshake, boxed, counted in [`Proxy::stats`] when it ends
/// (see `stats.rs`).
fn counted<F>(proxy: &Proxy, handshake: F) -> Handshake
where
    F: Future<Output = Result<Ready, ProxyError>> + Send + 'static,
{
    Box::pin(stats::counted(proxy.inner.clone(), handshake))
}

/// A tunnel's shutdown signal: its [`Cut`], or its backend closed.
struct Watch<'a, F> {
    cut: Pin<&'a mut Cut>,
    closed: &'a F,
}

impl<F: Fn() -> bool> Future for Watch<'_, F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.cut.as_mut().poll_or(cx, this.closed)
    }
}

/// Logs a closed tunnel, counts it, and hands its report to the hook.
fn finish(proxy: &Proxy, report: &Report) {
    proxy.inner.stats.tunnel_closed(report);
    trace::debug!(
        client = ?report.client_addr,
        backend = report.backend.as_deref().unwrap_or("-"),
        client_to_backend = report.client_to_backend,
        backend_to_client = report.backend_to_client,
        duration_ms = report.duration.as_millis() as u64,
        path = ?report.path,
        reason = %report.reason,
        "tunnel closed"
    );
    if let Some(hook) = &proxy.inner.on_report {
        hook(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A connected loopback pair: (what the proxy accepted, the peer address, the client).
    async fn accepted() -> (TcpStream, SocketAddr, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (stream, peer) = accepted.unwrap();
        (stream, peer, client.unwrap())
    }

    /// Polls `future` once: whether it is still pending.
    async fn pending<F: Future>(mut future: Pin<&mut F>) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_pending())).await
    }

    fn is_waiting(connection: &Connection) -> bool {
        matches!(connection.phase, Phase::Waiting { .. })
    }

    #[tokio::test]
    async fn a_silent_client_holds_no_handshake_state_until_it_sends() {
        let proxy = Proxy::new("127.0.0.1:9");
        let group = proxy.new_group();
        let (stream, peer, mut client) = accepted().await;
        let mut connection = Box::pin(Connection::accept(
            &proxy,
            Stream::Tcp(stream),
            peer,
            &group,
        ));
        for _ in 0..3 {
            assert!(pending(connection.as_mut()).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            is_waiting(&connection),
            "nothing sent, yet the handshake started"
        );
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        for _ in 0..250 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(pending(connection.as_mut()).await);
            if !is_waiting(&connection) {
                return;
            }
        }
        panic!("the client sent bytes, yet the handshake did not start");
    }

    fn send_static<T: Send + 'static>(value: T) -> T {
        value
    }

    #[tokio::test]
    async fn handle_returns_a_send_static_future_that_can_be_spawned() {
        // A backend that refuses connections: the client gets a 502 and handle an error.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = closed.local_addr().unwrap();
        drop(closed);
        let proxy = Proxy::new(backend.to_string());
        let (stream, peer, mut client) = accepted().await;
        let task = tokio::spawn(send_static(proxy.handle(stream, peer)));
        drop(proxy);
        let request = "GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
                       Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        client.write_all(request.as_bytes()).await.unwrap();
        // Read the answer's head first: an EOF sent while the backend is being tried would
        // be a client that left (nothing is answered then).
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a whole head: {answer:?}");
            answer.extend_from_slice(&buf[..n]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 502 "), "{answer:?}");
        // The proxy's lingering close ends at this EOF.
        client.shutdown().await.unwrap();
        let result = task.await.unwrap();
        assert!(
            matches!(result, Err(ProxyError::Connect { sent: Some(_), .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_held_connection_future_stays_small() {
        // What `serve` keeps per connection besides the task header: the tunnel's state and
        // little else. An `async fn` here (keeping its arguments beside the tunnel) was
        // 1,552 bytes; the bound leaves room for compiler and dependency changes.
        let proxy = Proxy::new("127.0.0.1:9");
        let (stream, peer, _client) = accepted().await;
        let group = proxy.new_group();
        let connection = Connection::accept(&proxy, Stream::Tcp(stream), peer, &group);
        let size = std::mem::size_of_val(&connection);
        assert!(size <= 1024, "a connection future is {size} bytes");
    }
}
