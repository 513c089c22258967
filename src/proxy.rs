//! [`Proxy`]: the whole flow for one client connection, and an accept loop.
//!
//! ```text
//! client ──head──▶ read_request_head ──▶ Rewriter::rewrite ──(4xx)──▶ client, close
//! backend ◀── request head ── connect (timeout, round-robin, failover) ──(502/504)──▶ client
//! backend ──head──▶ read_response_head ──▶ Outgoing::check ──(502)──▶ client, close
//!                                              ├─ Refuse ──▶ relay status + body, close both
//!                                              └─ Switch ──▶ 101 to client ──▶ tunnel ──▶ Report
//! ```

use std::fmt;
use std::future::{pending, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::body;
use crate::error::{encode_plain, plain_response, BuildError, HandshakeError, ProxyError};
use crate::handshake::{Answer, ClientInfo, Outgoing, RewriteConfig, Rewriter};
use crate::splice::{Leftovers, Report, SpliceConfig, Tunnel};
use crate::trace;
use crate::wire::{self, HeadLimits};

/// How long an error response may take to write, and how long a closing connection is
/// drained so that the response is not destroyed by a reset (nginx's `lingering_close`).
const LINGER: Duration = Duration::from_secs(2);
/// At most this much is read and discarded while lingering.
const LINGER_BYTES: usize = 1024 * 1024;
/// After a shutdown's grace period, how long cut tunnels get to wind down before their tasks
/// are aborted.
const CUT_WAIT: Duration = Duration::from_secs(1);
/// The bound on relaying a refusal's body when the backend head has no deadline.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(60);

type ReportHook = Arc<dyn Fn(&Report) + Send + Sync>;

/// A WebSocket reverse proxy: validates and rewrites each client's handshake, connects to a
/// backend, checks its answer and tunnels the connection.
///
/// Cheap to clone (one `Arc`), `Send + Sync`: build one and share it between tasks.
///
/// # Examples
///
/// A standalone proxy on a bare `TcpListener`, stopped by Ctrl-C:
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use wsrelay::{handshake::RewriteConfig, Proxy, SpliceConfig};
///
/// let proxy = Proxy::builder()
///     .backend("127.0.0.1:9000")
///     .backend("127.0.0.1:9001")
///     .rewrite(RewriteConfig::new().strip_prefix("/ws/"))
///     .splice(SpliceConfig::new().idle_timeout(Some(Duration::from_secs(300))))
///     .build()?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let summary = proxy
///     .serve(listener, async {
///         let _ = tokio::signal::ctrl_c().await;
///     })
///     .await;
/// println!("{summary:?}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Proxy {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) backends: Vec<String>,
    pub(crate) next: AtomicUsize,
    pub(crate) rewriter: Rewriter,
    pub(crate) splice: SpliceConfig,
    pub(crate) connect_timeout: Duration,
    pub(crate) client_head: HeadLimits,
    pub(crate) backend_head: HeadLimits,
    pub(crate) max_tunnels: Option<usize>,
    pub(crate) grace: Duration,
    pub(crate) tls: bool,
    pub(crate) on_report: Option<ReportHook>,
    pub(crate) active: AtomicUsize,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Proxy")
            .field("backends", &inner.backends)
            .field("rewrite", inner.rewriter.config())
            .field("splice", &inner.splice)
            .field("connect_timeout", &inner.connect_timeout)
            .field("client_head", &inner.client_head)
            .field("backend_head", &inner.backend_head)
            .field("max_tunnels", &inner.max_tunnels)
            .field("active", &inner.active.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Builds a [`Proxy`]; from [`Proxy::builder`].
#[derive(Clone)]
pub struct ProxyBuilder {
    backends: Vec<String>,
    rewrite: RewriteConfig,
    splice: SpliceConfig,
    connect_timeout: Duration,
    client_head: HeadLimits,
    backend_head: HeadLimits,
    max_tunnels: Option<usize>,
    grace: Duration,
    tls: bool,
    on_report: Option<ReportHook>,
}

impl fmt::Debug for ProxyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyBuilder")
            .field("backends", &self.backends)
            .field("rewrite", &self.rewrite)
            .field("splice", &self.splice)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_tunnels", &self.max_tunnels)
            .finish_non_exhaustive()
    }
}

impl Default for ProxyBuilder {
    fn default() -> Self {
        ProxyBuilder {
            backends: Vec::new(),
            rewrite: RewriteConfig::default(),
            splice: SpliceConfig::default(),
            connect_timeout: Duration::from_secs(5),
            client_head: HeadLimits::default(),
            backend_head: HeadLimits::default(),
            max_tunnels: None,
            grace: Duration::from_secs(10),
            tls: false,
            on_report: None,
        }
    }
}

impl ProxyBuilder {
    /// Adds a backend, as `host:port` (resolved at each connect) or `ip:port`. With several,
    /// connections are spread round-robin, and a backend that refuses or does not accept
    /// within the connect timeout is skipped for the next one.
    pub fn backend(mut self, addr: impl Into<String>) -> Self {
        self.backends.push(addr.into());
        self
    }

    /// How handshakes are validated and rewritten. Default: [`RewriteConfig::default`].
    pub fn rewrite(mut self, config: RewriteConfig) -> Self {
        self.rewrite = config;
        self
    }

    /// How tunnels run (timeouts, buffers, zero-copy). Default: [`SpliceConfig::default`].
    pub fn splice(mut self, config: SpliceConfig) -> Self {
        self.splice = config;
        self
    }

    /// How long a backend may take to accept a connection, per attempt (nginx
    /// `proxy_connect_timeout`). Default: 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Limits for the client's request head, including the time it may take to arrive
    /// (408 past it; nginx `client_header_timeout`). Default: [`HeadLimits::default`]
    /// (8 KiB, 100 fields, 10 s).
    pub fn client_head(mut self, limits: HeadLimits) -> Self {
        self.client_head = limits;
        self
    }

    /// Limits for the backend's response head, including the time from sending the request
    /// to the end of the answer (504 past it). Default: [`HeadLimits::default`].
    pub fn backend_head(mut self, limits: HeadLimits) -> Self {
        self.backend_head = limits;
        self
    }

    /// The most connections handled at once (handshakes and tunnels); beyond it a client
    /// gets 503 at once. Default: no limit.
    pub fn max_tunnels(mut self, max: Option<usize>) -> Self {
        self.max_tunnels = max;
        self
    }

    /// How long [`Proxy::serve`] lets tunnels finish after its shutdown signal before it
    /// closes them. Default: 10 s.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Whether clients reach this proxy over TLS (terminated in the same process), which
    /// sets `X-Forwarded-Proto: https`. Default: `false`.
    pub fn client_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Called with the [`Report`] of every tunnel when it ends, for metrics or logs. Runs on
    /// the tunnel's task: keep it short.
    pub fn on_report(mut self, hook: impl Fn(&Report) + Send + Sync + 'static) -> Self {
        self.on_report = Some(Arc::new(hook));
        self
    }

    /// Builds the proxy.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoBackend`] when no backend was given.
    pub fn build(self) -> Result<Proxy, BuildError> {
        if self.backends.is_empty() {
            return Err(BuildError::NoBackend);
        }
        Ok(Proxy {
            inner: Arc::new(Inner {
                backends: self.backends,
                next: AtomicUsize::new(0),
                rewriter: Rewriter::new(self.rewrite),
                splice: self.splice,
                connect_timeout: self.connect_timeout,
                client_head: self.client_head,
                backend_head: self.backend_head,
                max_tunnels: self.max_tunnels,
                grace: self.grace,
                tls: self.tls,
                on_report: self.on_report,
                active: AtomicUsize::new(0),
            }),
        })
    }
}

/// What [`Proxy::serve`] did, returned once it has stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeSummary {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections that ended by themselves during the grace period after the shutdown signal.
    pub drained: u64,
    /// Connections still open when the grace period ended, closed by the proxy.
    pub cut: u64,
}

/// Counts a connection as active for as long as it lives.
pub(crate) struct Active(Arc<Inner>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a checked backend answer leaves the connection.
pub(crate) struct Checked {
    pub(crate) backend: TcpStream,
    pub(crate) answer: Answer,
    /// Bytes the backend sent after its head.
    pub(crate) rest: Bytes,
}

/// The handshake phase of a connection, boxed: its state is freed before the tunnel starts.
type HandshakeFuture =
    Pin<Box<dyn Future<Output = Result<(TcpStream, TcpStream, Leftovers), ProxyError>> + Send>>;

/// What a connection keeps for its tunnel while the handshake runs.
pub(crate) struct AfterHandshake<S> {
    proxy: Proxy,
    peer: SocketAddr,
    /// Counts the connection as active (`None` when it is being refused as one too many).
    active: Option<Active>,
    shutdown: S,
}

pin_project_lite::pin_project! {
    /// One client connection: the boxed handshake, then the tunnel.
    ///
    /// Written by hand rather than as an `async fn` so that an open tunnel's task holds the
    /// tunnel's own state and little else (an `async fn` keeps its moved-from arguments,
    /// the shutdown future among them, next to the tunnel): memory per idle connection is
    /// what a proxy holding thousands of them pays.
    #[project = ConnectionProj]
    pub(crate) enum Connection<S> {
        Handshake {
            handshake: HandshakeFuture,
            then: Option<AfterHandshake<S>>,
        },
        Tunnel {
            #[pin]
            tunnel: Tunnel<TcpStream, TcpStream, S>,
            proxy: Proxy,
            peer: SocketAddr,
            active: Option<Active>,
        },
        Done,
    }
}

impl<S: Future<Output = ()>> Future for Connection<S> {
    type Output = Result<Report, ProxyError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                ConnectionProj::Handshake { handshake, then } => {
                    let result = ready!(handshake.as_mut().poll(cx));
                    let Some(after) = then.take() else {
                        unreachable!("the handshake completes once");
                    };
                    match result {
                        Ok((client, backend, leftovers)) => {
                            let tunnel = Tunnel::new(
                                client,
                                backend,
                                leftovers,
                                &after.proxy.inner.splice,
                                after.shutdown,
                            );
                            self.set(Connection::Tunnel {
                                tunnel,
                                proxy: after.proxy,
                                peer: after.peer,
                                active: after.active,
                            });
                        }
                        Err(error) => {
                            self.set(Connection::Done);
                            return Poll::Ready(Err(error));
                        }
                    }
                }
                ConnectionProj::Tunnel {
                    tunnel,
                    proxy,
                    peer,
                    ..
                } => {
                    let report = ready!(tunnel.poll(cx));
                    proxy.finish(&report, *peer);
                    // Releases the connection's place (`active`) once its sockets are closed.
                    self.set(Connection::Done);
                    return Poll::Ready(Ok(report));
                }
                ConnectionProj::Done => panic!("a connection future polled after completion"),
            }
        }
    }
}

impl Proxy {
    /// A builder with the defaults and no backend.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder::default()
    }

    /// A proxy to one backend (`host:port`) with the default configuration.
    pub fn new(backend: impl Into<String>) -> Proxy {
        Proxy::builder()
            .backend(backend)
            .build()
            .expect("one backend is configured")
    }

    /// Connections being handled right now: handshakes in progress and open tunnels.
    pub fn active_tunnels(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }

    /// Proxies one client connection: reads its handshake, rewrites it, connects to a
    /// backend, checks the answer, and then either sends the `101` and runs the tunnel until
    /// it ends, or answers the client with an error or the backend's refusal and closes.
    ///
    /// Sets `TCP_NODELAY` on both sockets. Never panics on bad input: every failure is a
    /// [`ProxyError`] that says what the client was sent. A client that closes its connection
    /// while the backend is still answering ends the attempt (as nginx does, its 499): the
    /// backend connection is dropped and nothing is sent.
    ///
    /// # Errors
    ///
    /// Everything that kept the connection from becoming a tunnel; see [`ProxyError`].
    pub fn handle(
        &self,
        client: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = Result<Report, ProxyError>> + Send + 'static {
        self.connection(client, peer, pending())
    }

    /// [`handle`](Self::handle), with a signal that ends the tunnel (if it got that far).
    pub(crate) fn connection<S>(
        &self,
        client: TcpStream,
        peer: SocketAddr,
        shutdown: S,
    ) -> Connection<S>
    where
        S: Future<Output = ()>,
    {
        let proxy = self.clone();
        let (handshake, active): (HandshakeFuture, _) = match self.enter() {
            Some(active) => (
                Box::pin(async move { proxy.handshake(client, peer).await }),
                Some(active),
            ),
            None => (
                Box::pin(async move { Err(proxy.overloaded(client).await) }),
                None,
            ),
        };
        Connection::Handshake {
            handshake,
            then: Some(AfterHandshake {
                proxy: self.clone(),
                peer,
                active,
                shutdown,
            }),
        }
    }

    /// Everything before the tunnel: on success the `101` has been written to the client.
    async fn handshake(
        &self,
        mut client: TcpStream,
        peer: SocketAddr,
    ) -> Result<(TcpStream, TcpStream, Leftovers), ProxyError> {
        let _ = client.set_nodelay(true);
        let (request, client_rest) =
            match wire::read_request_head(&mut client, &self.inner.client_head).await {
                Ok(head) => head,
                Err(e) => {
                    let error = HandshakeError::ClientHead(e);
                    let sent = refuse(&mut client, &error).await;
                    return Err(ProxyError::Client { error, sent });
                }
            };
        let info = ClientInfo::new(peer).tls(self.inner.tls);
        let outgoing = match self.inner.rewriter.rewrite(&request, &info) {
            Ok(outgoing) => outgoing,
            Err(error) => {
                trace::debug!(%peer, status = %error.status(), %error, "handshake refused");
                let sent = refuse(&mut client, &error).await;
                return Err(ProxyError::Client { error, sent });
            }
        };
        drop(request);

        // While the backend answers, notice a client that hangs up, and stop there.
        let exchange = tokio::select! {
            exchange = self.exchange(&outgoing) => exchange,
            () = hung_up(&client) => {
                trace::debug!(%peer, "client left during the handshake");
                return Err(ProxyError::Io(io::ErrorKind::ConnectionAborted.into()));
            }
        };
        let Checked {
            mut backend,
            answer,
            rest,
        } = match exchange {
            Ok(checked) => checked,
            Err(e) => return Err(self.report_backend_error(&mut client, e).await),
        };
        match answer {
            Answer::Switch(response) => {
                let mut head = BytesMut::with_capacity(256);
                wire::encode_response_head(&response, &mut head);
                client.write_all(&head).await.map_err(ProxyError::Io)?;
                // The backend's first frames go out right after the 101, and the client's
                // go to the backend first (rule 22); the tunnel writes and counts both.
                let leftovers = Leftovers {
                    to_backend: client_rest,
                    to_client: rest,
                };
                Ok((client, backend, leftovers))
            }
            Answer::Refuse(response) => {
                let status = response.status();
                trace::debug!(%peer, %status, "backend refused the upgrade");
                // Rule 18: relay the answer and its body, discard what the client sent past
                // its head, close both.
                let result = self
                    .relay_refusal(&mut client, &mut backend, response, rest)
                    .await;
                drop(backend);
                linger_close(client).await;
                match result {
                    Ok(()) => Err(ProxyError::Refused { status }),
                    Err(e) => Err(ProxyError::Io(e)),
                }
            }
        }
    }

    /// Counts the connection in, unless the cap is reached.
    pub(crate) fn enter(&self) -> Option<Active> {
        let before = self.inner.active.fetch_add(1, Ordering::AcqRel);
        let active = Active(self.inner.clone());
        match self.inner.max_tunnels {
            Some(max) if before >= max => None,
            _ => Some(active),
        }
    }

    async fn overloaded(&self, mut client: TcpStream) -> ProxyError {
        trace::warning!("connection refused: tunnel limit reached");
        let response = plain_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections\n".to_owned(),
        );
        let sent = send(&mut client, &encode_plain(&response))
            .await
            .then_some(StatusCode::SERVICE_UNAVAILABLE);
        linger_close(client).await;
        ProxyError::Overloaded { sent }
    }

    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn finish(&self, report: &Report, peer: SocketAddr) {
        trace::debug!(
            %peer,
            client_to_backend = report.client_to_backend,
            backend_to_client = report.backend_to_client,
            duration_ms = report.duration.as_millis() as u64,
            path = ?report.path,
            reason = ?report.reason,
            "tunnel closed"
        );
        if let Some(hook) = &self.inner.on_report {
            hook(report);
        }
    }

    /// Connects to a backend, sends the request and reads and checks the answer.
    pub(crate) async fn exchange(&self, outgoing: &Outgoing) -> Result<Checked, ExchangeError> {
        let mut backend = self.connect().await?;
        let limits = &self.inner.backend_head;
        let head = outgoing.to_bytes();
        let sent = match limits.get_timeout() {
            Some(limit) => tokio::time::timeout(limit, backend.write_all(&head))
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
            None => backend.write_all(&head).await,
        };
        if let Err(e) = sent {
            return Err(ExchangeError::Handshake(HandshakeError::BackendHead(
                e.into(),
            )));
        }
        let (response, rest) = wire::read_response_head(&mut backend, limits)
            .await
            .map_err(|e| ExchangeError::Handshake(HandshakeError::BackendHead(e)))?;
        let answer = outgoing.check(response).map_err(ExchangeError::Handshake)?;
        Ok(Checked {
            backend,
            answer,
            rest,
        })
    }

    /// Round-robin over the backends, trying each once.
    async fn connect(&self) -> Result<TcpStream, ExchangeError> {
        let backends = &self.inner.backends;
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for i in 0..backends.len() {
            let addr = &backends[(start + i) % backends.len()];
            let attempt = tokio::time::timeout(
                self.inner.connect_timeout,
                TcpStream::connect(addr.as_str()),
            )
            .await;
            let error = match attempt {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => e,
                Err(_) => io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            };
            trace::warning!(backend = %addr, %error, "backend unreachable");
            last = Some(error);
        }
        Err(ExchangeError::Connect(
            last.unwrap_or_else(|| io::Error::other("no backend")),
        ))
    }

    async fn report_backend_error(&self, client: &mut TcpStream, e: ExchangeError) -> ProxyError {
        let (response, mut error) = backend_failure(e);
        let sent = send(client, &encode_plain(&response)).await;
        let _ = client.shutdown().await;
        drain(client).await;
        if sent {
            error.set_sent(response.status());
        }
        error
    }

    async fn relay_refusal(
        &self,
        client: &mut TcpStream,
        backend: &mut TcpStream,
        response: Response<()>,
        rest: Bytes,
    ) -> io::Result<()> {
        let framing = match body::framing(&response) {
            Ok(framing) => framing,
            Err(e) => {
                let error = HandshakeError::BackendHead(e);
                send(client, &error.response_bytes()).await;
                return Ok(());
            }
        };
        let mut head = BytesMut::with_capacity(256);
        wire::encode_response_head(&response, &mut head);
        let relay = async {
            client.write_all(&head).await?;
            body::copy_body(backend, rest, framing, client).await
        };
        let limit = self.refusal_deadline();
        match tokio::time::timeout(limit, relay).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// How long relaying a refused upgrade's body may take: the backend head deadline, or a
    /// minute when that is unlimited.
    pub(crate) fn refusal_deadline(&self) -> Duration {
        self.inner
            .backend_head
            .get_timeout()
            .unwrap_or(REFUSAL_DEADLINE)
    }

    /// Accepts connections from `listener` and proxies each on its own task until
    /// `shutdown` completes; then stops accepting, lets open connections finish for the
    /// grace period ([`ProxyBuilder::grace_period`]), closes the rest, and returns a summary.
    ///
    /// Accept errors never end the loop: when the process is out of file descriptors
    /// (`EMFILE`/`ENFILE`) or memory it backs off (up to a second) and retries.
    pub async fn serve<F>(&self, listener: TcpListener, shutdown: F) -> ServeSummary
    where
        F: Future<Output = ()>,
    {
        let cut = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        let mut summary = ServeSummary::default();
        let mut backoff = Duration::ZERO;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        backoff = Duration::ZERO;
                        summary.accepted += 1;
                        // Created now, so that it sees a cut signalled before its
                        // first poll.
                        let signal = cut.clone().notified_owned();
                        tasks.spawn(self.connection(stream, peer, signal));
                    }
                    Err(error) => {
                        if is_resource_error(&error) {
                            backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                            trace::warning!(%error, ?backoff, "accept failed; backing off");
                            tokio::time::sleep(backoff).await;
                        }
                    }
                },
            }
        }
        drop(listener);

        let grace = tokio::time::sleep(self.inner.grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                () = &mut grace => break,
                joined = tasks.join_next() => match joined {
                    Some(_) => summary.drained += 1,
                    None => return summary,
                },
            }
        }
        cut.notify_waiters();
        let wind_down = tokio::time::sleep(CUT_WAIT);
        tokio::pin!(wind_down);
        loop {
            tokio::select! {
                () = &mut wind_down => {
                    // Handshakes still waiting on a peer: abort them.
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {
                        summary.cut += 1;
                    }
                    break;
                }
                joined = tasks.join_next() => match joined {
                    Some(_) => summary.cut += 1,
                    None => break,
                },
            }
        }
        summary
    }
}

/// Why a backend exchange failed.
pub(crate) enum ExchangeError {
    Connect(io::Error),
    Handshake(HandshakeError),
}

/// The response for the client when talking to the backend failed, and the error to return
/// (with nothing sent yet).
pub(crate) fn backend_failure(e: ExchangeError) -> (Response<String>, ProxyError) {
    match e {
        ExchangeError::Connect(error) => {
            let status = connect_status(&error);
            let body = if status == StatusCode::GATEWAY_TIMEOUT {
                "backend timed out\n"
            } else {
                "backend unreachable\n"
            };
            (
                plain_response(status, body.to_owned()),
                ProxyError::Connect { error, sent: None },
            )
        }
        ExchangeError::Handshake(error) => {
            trace::warning!(status = %error.status(), %error, "backend handshake failed");
            (error.response(), ProxyError::Backend { error, sent: None })
        }
    }
}

fn connect_status(error: &io::Error) -> StatusCode {
    if error.kind() == io::ErrorKind::TimedOut {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    }
}

fn is_resource_error(error: &io::Error) -> bool {
    #[cfg(unix)]
    {
        if let Some(code) = error.raw_os_error() {
            return matches!(
                code,
                libc_codes::EMFILE | libc_codes::ENFILE | libc_codes::ENOBUFS | libc_codes::ENOMEM
            );
        }
    }
    error.kind() == io::ErrorKind::OutOfMemory
}

/// The errno values `accept` uses when the process or system runs out of resources; the
/// same on every Unix tokio supports.
#[cfg(unix)]
mod libc_codes {
    pub(super) const ENOMEM: i32 = 12;
    pub(super) const ENFILE: i32 = 23;
    pub(super) const EMFILE: i32 = 24;
    #[cfg(target_os = "linux")]
    pub(super) const ENOBUFS: i32 = 105;
    #[cfg(not(target_os = "linux"))]
    pub(super) const ENOBUFS: i32 = 55;
}

/// Completes when the client closes or resets its connection before sending anything more.
/// Once it has sent more (early frames), that cannot be told without reading, so it never
/// completes.
async fn hung_up(client: &TcpStream) {
    let mut probe = [0u8; 1];
    match client.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        Ok(_) => pending().await,
    }
}

/// Writes `bytes` to the client within [`LINGER`]; whether it all went out.
async fn send(client: &mut TcpStream, bytes: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(LINGER, client.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

/// Sends a handshake error's response (unless the client is gone) and closes gracefully.
async fn refuse(client: &mut TcpStream, error: &HandshakeError) -> Option<StatusCode> {
    let client_gone = matches!(
        error,
        HandshakeError::ClientHead(crate::HeadError::Eof { .. } | crate::HeadError::Io(_))
    );
    if client_gone {
        return None;
    }
    let sent = send(client, &error.response_bytes())
        .await
        .then_some(error.status());
    let _ = client.shutdown().await;
    drain(client).await;
    sent
}

/// Shuts down writing, then reads and discards what the client still sends, briefly, so
/// that closing does not reset the connection before the client has read the response.
async fn linger_close(mut client: TcpStream) {
    let _ = client.shutdown().await;
    drain(&mut client).await;
}

async fn drain(client: &mut TcpStream) {
    let discard = async {
        // On the heap: a buffer here would enlarge every connection's future.
        let mut buf = vec![0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, discard).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected loopback pair: (what the proxy accepted, the peer address).
    async fn accepted() -> (TcpStream, SocketAddr, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (stream, peer) = accepted.unwrap();
        (stream, peer, client.unwrap())
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
        let cut = Arc::new(Notify::new());
        let connection = proxy.connection(stream, peer, cut.notified_owned());
        let size = std::mem::size_of_val(&connection);
        assert!(size <= 1024, "a connection future is {size} bytes");
    }
}
