//! [`Proxy`]: the whole flow for one client connection, for every front end.
//!
//! ```text
//! front end (serve/handle: TCP; upgrade: hyper, axum)
//!   │ admit (503 past the cap or while draining)
//!   │ TLS handshake (serve/handle with an acceptor; 400 to plain HTTP)
//!   ▼
//! head ──▶ route by host and path prefix ──(404)──▶ client, close
//!   ▼
//! the route's Rewriter::rewrite ──(4xx)──▶ client, close
//!   ▼
//! the route's pool: connect, TLS for wss (timeout, balance, failover, health, per-backend
//!   │ cap) ──(502/503/504)──▶ client, close
//!   ▼
//! backend ◀── request head;  backend ──head──▶ Outgoing::check ──(502)──▶ client, close
//!                                         ├─ Refuse ──▶ relay status + body, close both
//!                                         └─ Switch ──▶ 101 to client ──▶ tunnel ──▶ Report
//! ```
//!
//! Files, in the order a connection meets them: `serve.rs` (the accept loop and its drain),
//! `flow.rs` (the phases of one upgrade, used by every front end, and the front end for a
//! byte stream), `route.rs` (which route a request takes), `pool.rs` (backends) with
//! `health.rs` (which of them are up), `connection.rs` (the future that runs a handshake
//! and then the tunnel), `drain.rs` (tracking connections for a graceful shutdown), and
//! `hyper.rs` (the front end for hyper and axum handlers, HTTP/1.1 and HTTP/2, feature
//! `hyper`) with `key.rs` (the `Sec-WebSocket-Key` for an HTTP/2 client's backend).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
#[cfg(feature = "rustls")]
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::error::{BuildError, ProxyError};
use crate::handshake::RewriteConfig;
use crate::splice::{Report, SpliceConfig};
use crate::wire::HeadLimits;

mod connection;
mod drain;
mod flow;
mod health;
#[cfg(feature = "hyper")]
mod hyper;
#[cfg(feature = "hyper")]
mod key;
mod limits;
mod listener;
mod pool;
#[cfg(target_os = "linux")]
mod room;
mod route;
mod serve;
mod stats;

pub use health::HealthConfig;
#[cfg(feature = "limits")]
pub use limits::RateLimit;
pub use listener::WaitingListener;
pub use pool::{BackendState, BackendStatus, Balance};
pub use route::Route;
pub use serve::ServeSummary;
pub use stats::Stats;

use connection::Connection;
use drain::Drain;
use pool::{Backends, BackendsBuilder, Settings};
use route::Routes;

type ReportHook = Arc<dyn Fn(&Report) + Send + Sync>;

/// A WebSocket reverse proxy: validates and rewrites each client's handshake, connects to a
/// backend, checks its answer and tunnels the connection.
///
/// Cheap to clone (one `Arc`), `Send + Sync`: build one and share it between tasks. The same
/// flow serves every front end: a bare `TcpListener` ([`serve`](Self::serve)), one accepted
/// stream ([`handle`](Self::handle)), or a hyper or axum handler (`upgrade`, feature
/// `hyper`).
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
    /// Which route a request takes; each has its rewriter and its pool.
    pub(crate) routes: Routes,
    /// Every backend of every route, each once: health, counts, connecting.
    pub(crate) backends: Arc<Backends>,
    pub(crate) splice: SpliceConfig,
    pub(crate) client_head: HeadLimits,
    pub(crate) backend_head: HeadLimits,
    pub(crate) max_tunnels: Option<usize>,
    pub(crate) grace: Duration,
    /// Whether clients reach the proxy over TLS: set by hand, or by terminating it.
    pub(crate) tls: bool,
    /// Terminates TLS for the byte-stream front end (`serve`, `handle`).
    #[cfg(feature = "rustls")]
    pub(crate) acceptor: Option<crate::tls::TlsAcceptor>,
    /// Read a PROXY protocol header first on every byte-stream connection.
    #[cfg(feature = "proxy-protocol")]
    pub(crate) proxy_protocol: bool,
    /// Send a PROXY protocol v2 header to backends.
    #[cfg(feature = "proxy-protocol")]
    pub(crate) send_proxy_protocol: bool,
    pub(crate) on_report: Option<ReportHook>,
    /// Connections being handled, by every front end.
    pub(crate) active: AtomicUsize,
    /// The connections started by [`Proxy::handle`] and `Proxy::upgrade`, drained by
    /// [`Proxy::drain`].
    pub(crate) drain: Arc<Drain>,
    /// What [`Proxy::stats`] reads.
    pub(crate) stats: stats::Counters,
    /// Per client IP: concurrent connections, handshake rate.
    pub(crate) limits: limits::Limits,
    /// Every drain group (this one and one per `serve` call), for
    /// [`Proxy::close_backend`] to wake their connections.
    groups: Mutex<Vec<Weak<Drain>>>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Proxy")
            .field("routes", &inner.routes)
            .field("backends", &inner.backends)
            .field("splice", &inner.splice)
            .field("client_head", &inner.client_head)
            .field("backend_head", &inner.backend_head)
            .field("max_tunnels", &inner.max_tunnels)
            .field("limits", &inner.limits)
            .field("client_tls", &inner.tls)
            .field("active", &inner.active.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Builds a [`Proxy`]; from [`Proxy::builder`].
///
/// Every setting has a default; only a backend is required.
///
/// # Examples
///
/// The nginx configuration most WebSocket deployments start from, and its equivalent:
///
/// ```nginx
/// upstream chat { server 10.0.0.5:9000; server 10.0.0.6:9000; }
/// location /ws/ {
///     proxy_pass http://chat/;
///     proxy_http_version 1.1;
///     proxy_set_header Upgrade $http_upgrade;
///     proxy_set_header Connection $connection_upgrade;
///     proxy_connect_timeout 3s;
///     proxy_read_timeout 3600s;
/// }
/// ```
///
/// ```
/// use std::time::Duration;
/// use wsrelay::handshake::RewriteConfig;
/// use wsrelay::wire::HeadLimits;
/// use wsrelay::{Proxy, SpliceConfig};
///
/// let proxy = Proxy::builder()
///     .backend("10.0.0.5:9000")
///     .backend("10.0.0.6:9000")
///     .rewrite(RewriteConfig::new().strip_prefix("/ws/"))
///     .connect_timeout(Duration::from_secs(3))
///     .splice(SpliceConfig::new().idle_timeout(Some(Duration::from_secs(3600))))
///     .client_head(HeadLimits::new().timeout(Some(Duration::from_secs(5))))
///     .max_tunnels(Some(50_000))
///     .build()?;
/// assert_eq!(proxy.active_tunnels(), 0);
/// # Ok::<(), wsrelay::BuildError>(())
/// ```
#[derive(Clone)]
pub struct ProxyBuilder {
    backends: Vec<String>,
    routes: Vec<Route>,
    balance: Balance,
    health: HealthConfig,
    backend_max_connections: Option<usize>,
    rewrite: RewriteConfig,
    splice: SpliceConfig,
    connect_timeout: Duration,
    client_head: HeadLimits,
    backend_head: HeadLimits,
    max_tunnels: Option<usize>,
    max_per_ip: Option<usize>,
    #[cfg(feature = "limits")]
    rate_per_ip: Option<RateLimit>,
    grace: Duration,
    tls: bool,
    #[cfg(feature = "rustls")]
    acceptor: Option<crate::tls::TlsAcceptor>,
    #[cfg(feature = "rustls")]
    backend_cas: Vec<PathBuf>,
    #[cfg(feature = "proxy-protocol")]
    proxy_protocol: bool,
    #[cfg(feature = "proxy-protocol")]
    send_proxy_protocol: bool,
    on_report: Option<ReportHook>,
}

impl fmt::Debug for ProxyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyBuilder")
            .field("backends", &self.backends)
            .field("routes", &self.routes)
            .field("balance", &self.balance)
            .field("health", &self.health)
            .field("backend_max_connections", &self.backend_max_connections)
            .field("rewrite", &self.rewrite)
            .field("splice", &self.splice)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_tunnels", &self.max_tunnels)
            .field("max_per_ip", &self.max_per_ip)
            .finish_non_exhaustive()
    }
}

impl Default for ProxyBuilder {
    fn default() -> Self {
        ProxyBuilder {
            backends: Vec::new(),
            routes: Vec::new(),
            balance: Balance::default(),
            health: HealthConfig::default(),
            backend_max_connections: None,
            rewrite: RewriteConfig::default(),
            splice: SpliceConfig::default(),
            connect_timeout: Duration::from_secs(5),
            client_head: HeadLimits::default(),
            backend_head: HeadLimits::default(),
            max_tunnels: None,
            max_per_ip: None,
            #[cfg(feature = "limits")]
            rate_per_ip: None,
            grace: Duration::from_secs(10),
            tls: false,
            #[cfg(feature = "rustls")]
            acceptor: None,
            #[cfg(feature = "rustls")]
            backend_cas: Vec::new(),
            #[cfg(feature = "proxy-protocol")]
            proxy_protocol: false,
            #[cfg(feature = "proxy-protocol")]
            send_proxy_protocol: false,
            on_report: None,
        }
    }
}

impl ProxyBuilder {
    /// Adds a backend to the default route (any host, every path; see
    /// [`route`](Self::route)). With several, connections are spread as
    /// [`balance`](Self::balance) says, and a backend that refuses or does not accept within
    /// the connect timeout (or whose TLS handshake fails) is skipped for the next one, and
    /// then while it stays down ([`health`](Self::health)). Backends of different kinds may
    /// be mixed:
    ///
    /// - `host:port` or `ip:port` (a host name is resolved at each connect), also written
    ///   `ws://host:port` or `http://host:port`: plain TCP;
    /// - `wss://host:port` or `https://host:port` (feature `rustls`): TLS, with `host` as
    ///   the SNI name and the name the certificate must be valid for, verified against the
    ///   platform's roots plus `backend_ca` (nginx's `proxy_ssl_verify
    ///   on`, `proxy_ssl_server_name on`), ALPN `http/1.1`; the handshake counts against the
    ///   connect timeout;
    /// - `unix:/path/to/socket` (Unix only): a Unix domain socket.
    ///
    /// The `Host` header the backend sees is set by [`RewriteConfig::host`]; by default the
    /// client's. The address is checked by [`build`](Self::build).
    pub fn backend(mut self, addr: impl Into<String>) -> Self {
        self.backends.push(addr.into());
        self
    }

    /// How handshakes are validated and rewritten: on the default route, and on every
    /// [`Route`] without a rewrite of its own. Default: [`RewriteConfig::default`].
    pub fn rewrite(mut self, config: RewriteConfig) -> Self {
        self.rewrite = config;
        self
    }

    /// Adds a route: the requests for its host and path prefix go to its backends, rewritten
    /// by its config (nginx `server_name` + `location`). The backends given to the builder
    /// itself ([`backend`](Self::backend)) are the route for any host and `/`; without them,
    /// a request no route takes gets 404 and reaches no backend.
    ///
    /// A request's host chooses first, then its path: the routes of its exact host name,
    /// else those of the longest wildcard it matches (`*.example`), else those for any host;
    /// among those, the longest prefix that starts its path. As with nginx's `server`
    /// blocks, a host that has routes but none for the path gets 404 rather than the routes
    /// for any host. The host is that of `Host` (or of the HTTP/2 `:authority`) without its
    /// port, and the path is matched as sent (no percent-decoding). See [`Route`].
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// How a pool chooses among its backends: [`Balance::RoundRobin`] (the default) or
    /// [`Balance::LeastConnections`] (nginx `least_conn`).
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// How backends that fail are taken out of rotation and brought back: passive ejection
    /// with a growing back-off, and an optional active check (nginx `max_fails`,
    /// `fail_timeout`). Default: [`HealthConfig::default`].
    ///
    /// A backend whose connect fails is marked down and skipped while another backend of
    /// the pool can take the connection; the connection is retried on the next backend at
    /// once, so a client gets 502 (or 504) only when no backend of its route can be
    /// reached, down ones included. A down backend is retried in the background and comes
    /// back at the first connect that succeeds.
    pub fn health(mut self, config: HealthConfig) -> Self {
        self.health = config;
        self
    }

    /// The most connections (handshakes and tunnels) each backend takes at once (nginx's
    /// `max_conns`); a backend at its cap is skipped like a down one, and when every backend
    /// of the route that is not down is at its cap the client gets 503. Counted across
    /// every thread and runtime that shares the proxy. Default: no limit.
    pub fn backend_max_connections(mut self, max: Option<usize>) -> Self {
        self.backend_max_connections = max;
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

    /// Limits for the client's request head: its size and header count (431 past them;
    /// nginx `large_client_header_buffers`), and for the front ends that read the head
    /// themselves ([`Proxy::serve`], [`Proxy::handle`]) the time it may take to arrive (408
    /// past it; nginx `client_header_timeout`). Default: [`HeadLimits::default`] (8 KiB,
    /// 100 fields, 10 s).
    ///
    /// Behind hyper or axum, the server reads the head: `Proxy::upgrade` applies the size
    /// and count limits to what it parsed, and the deadline is the server's own setting
    /// (hyper's `header_read_timeout`; see `Proxy::upgrade`).
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
    /// gets 503 with `Retry-After: 1` at once (nginx has no direct equivalent: `limit_conn`
    /// on a zone keyed by `$server_name` comes closest; `worker_connections` closes instead).
    /// Default: no limit.
    pub fn max_tunnels(mut self, max: Option<usize>) -> Self {
        self.max_tunnels = max;
        self
    }

    /// The most connections open at once from one client IP address, handshakes and tunnels
    /// (nginx's `limit_conn` on a zone keyed by `$binary_remote_addr`); beyond it the client
    /// gets `429 Too Many Requests` with `Retry-After: 5`. A connection counts from its
    /// handshake's start until it closes: with [`Proxy::serve`] and [`Proxy::handle`], from
    /// its first bytes (a connection that has sent nothing holds almost nothing, and the
    /// client head deadline closes it); with `Proxy::upgrade`, from the request. Default: no
    /// limit.
    ///
    /// The address is the peer the front end was given: the socket's for
    /// [`Proxy::serve`], `peer` for [`Proxy::handle`] and `Proxy::upgrade`, or, with
    /// `proxy_protocol` (feature `proxy-protocol`), the source of the connection's PROXY
    /// header (read before the limit is checked). The IPv4-mapped
    /// form of an address (`::ffff:192.0.2.7`) is the same client as `192.0.2.7`. The table
    /// holds only addresses with a connection open. A TLS client of `serve` or `handle` over
    /// the limit is closed without an answer (checked before the TLS handshake, which it
    /// would otherwise cost). See also `rate_per_ip` (feature `limits`).
    ///
    /// [`Proxy::upgrade`]: Proxy#method.upgrade
    pub fn max_per_ip(mut self, max: Option<usize>) -> Self {
        self.max_per_ip = max;
        self
    }

    /// A handshake rate per client IP address, a token bucket (nginx's `limit_req` on a zone
    /// keyed by `$binary_remote_addr`, with `nodelay`): a handshake beyond it gets `429 Too
    /// Many Requests` with `Retry-After` set to when the next one would pass, and never
    /// reaches a backend. Checked with [`max_per_ip`](Self::max_per_ip), on the same address;
    /// a connection refused by either does not use up the other. Default: none.
    ///
    /// The limiter forgets an address once its bucket is full again (it is swept every
    /// 1,024 handshakes), so its memory follows the addresses active within one refill of
    /// the bucket. Rejected by [`build`](Self::build) if the rate or burst is zero.
    ///
    /// On `governor`'s keyed GCRA (the well-kept rate limiter of the ecosystem: lock-free per
    /// address, no timer task, the bucket's state in one atomic word), timed by tokio's
    /// clock.
    #[cfg(feature = "limits")]
    #[cfg_attr(docsrs, doc(cfg(feature = "limits")))]
    pub fn rate_per_ip(mut self, rate: Option<RateLimit>) -> Self {
        self.rate_per_ip = rate;
        self
    }

    /// How long a shutdown lets tunnels finish before it closes them: [`Proxy::serve`]
    /// after its shutdown signal, [`Proxy::drain`] after it is called. Default: 10 s.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Whether clients reach this proxy over TLS terminated by someone else (your hyper or
    /// axum server, a load balancer in the same trust domain), which sets
    /// `X-Forwarded-Proto: https`. Default: `false`; implied by `tls` (feature `rustls`).
    pub fn client_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Terminates TLS with `acceptor` in [`Proxy::serve`] and [`Proxy::handle`] (nginx's
    /// `listen 443 ssl` with `ssl_certificate`/`ssl_certificate_key`): clients speak
    /// `wss://`, and the backend sees `X-Forwarded-Proto: https`. Keep a clone of the
    /// acceptor to [`reload`](crate::tls::TlsAcceptor::reload) its certificates.
    ///
    /// The TLS handshake and the request head share the client-head deadline
    /// ([`client_head`](Self::client_head)): a client that connects and sends nothing is
    /// closed at it. A client whose first byte cannot start a TLS handshake (plain HTTP) is
    /// answered `400` at once and closed, as nginx's 497. A connection refused by the cap or
    /// a drain is closed without an answer (a plaintext 503 means nothing to a TLS client).
    /// The tunnel of a TLS client runs on the buffered path.
    ///
    /// [`Proxy::upgrade`] does not use the acceptor (the server in front terminates TLS; see
    /// [`TlsAcceptor::accept`](crate::tls::TlsAcceptor::accept)), but it implies
    /// [`client_tls`](Self::client_tls) there too.
    ///
    /// [`Proxy::upgrade`]: Proxy#method.upgrade
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn tls(mut self, acceptor: crate::tls::TlsAcceptor) -> Self {
        self.acceptor = Some(acceptor);
        self
    }

    /// Trusts the CA certificates in the PEM file `path` for `wss://` and `https://`
    /// backends, besides the platform's roots (nginx's `proxy_ssl_trusted_certificate`, which
    /// replaces them instead). Repeatable. Read by [`build`](Self::build).
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn backend_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.backend_cas.push(path.into());
        self
    }

    /// Reads a PROXY protocol header (HAProxy's, v1 or v2) at the start of every connection
    /// of [`Proxy::serve`] and [`Proxy::handle`], for a proxy behind a trusted L4 load
    /// balancer (HAProxy's `send-proxy`/`send-proxy-v2`, an AWS NLB, Envoy, a Kubernetes
    /// ingress): the header's source address is then the client's for every rule
    /// (`X-Real-IP`, `X-Forwarded-For`, `Forwarded`, the logs, [`Report::client_addr`]).
    /// Default: off. Rule 38 (see [`rules`](crate::rules)).
    ///
    /// Every connection must then start with a complete, valid header within the
    /// client-head deadline ([`client_head`](Self::client_head)), which also covers the TLS
    /// handshake and the request head that follow; a connection without one is closed with
    /// nothing sent ([`ProxyError::ProxyProtocol`]). A `LOCAL` (v2) or `UNKNOWN` (v1) header,
    /// as balancers' health checks send, keeps the socket's own address. Turn it on only
    /// where every peer is the balancer: whoever can connect can claim any address. Without
    /// it, a header is just a bad request (400).
    ///
    /// `Proxy::upgrade` reads no header: behind hyper or axum the server owns the socket
    /// (read the header there with [`read_header`](crate::proxy_protocol::read_header)).
    #[cfg(feature = "proxy-protocol")]
    #[cfg_attr(docsrs, doc(cfg(feature = "proxy-protocol")))]
    pub fn proxy_protocol(mut self, on: bool) -> Self {
        self.proxy_protocol = on;
        self
    }

    /// Starts every backend connection with a PROXY protocol v2 header (HAProxy's
    /// `send-proxy-v2`): source, the client's address and port; destination, the address the
    /// client connected to (the received header's, with
    /// [`proxy_protocol`](Self::proxy_protocol)). It is written right after the TCP
    /// connect, before a `wss://` backend's TLS handshake, within the connect timeout.
    /// Default: off. Rule 39 (see [`rules`](crate::rules)).
    ///
    /// Every backend must expect the header (nginx's `listen ... proxy_protocol`). Behind
    /// hyper or axum (`Proxy::upgrade`) the destination is not known and is sent as the
    /// unspecified address, port 0.
    #[cfg(feature = "proxy-protocol")]
    #[cfg_attr(docsrs, doc(cfg(feature = "proxy-protocol")))]
    pub fn send_proxy_protocol(mut self, on: bool) -> Self {
        self.send_proxy_protocol = on;
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
    /// [`BuildError::NoBackend`] when no backend was given (to the builder or a route),
    /// [`BuildError::Backend`] when one cannot be used (no port, a path, an unknown scheme,
    /// `wss://` without the `rustls` feature, `unix:` on a platform without Unix sockets),
    /// [`BuildError::Route`] for a route that cannot be used; [`BuildError::TlsFile`] naming
    /// a `backend_ca` file that cannot be used, [`BuildError::Tls`] when
    /// TLS backends have no trusted root at all; [`BuildError::Limit`] for a handshake rate
    /// of zero (feature `limits`).
    pub fn build(self) -> Result<Proxy, BuildError> {
        let limits = limits::Limits::new(
            self.max_per_ip,
            #[cfg(feature = "limits")]
            self.rate_per_ip,
        )?;
        let mut set = BackendsBuilder::new();
        let routes = Routes::build(&self.backends, &self.rewrite, &self.routes, &mut set)?;
        let settings = Settings {
            balance: self.balance,
            max_conns: self.backend_max_connections,
            health: self.health,
            connect_timeout: self.connect_timeout,
        };
        let backends = Arc::new(set.build(
            settings,
            #[cfg(feature = "rustls")]
            &self.backend_cas,
        )?);
        // The active check, if any, runs on this runtime (or the first that connects).
        backends.start_checks();
        let drain = Arc::new(Drain::new());
        let groups = Mutex::new(vec![Arc::downgrade(&drain)]);
        #[cfg(feature = "rustls")]
        let tls = self.tls || self.acceptor.is_some();
        #[cfg(not(feature = "rustls"))]
        let tls = self.tls;
        Ok(Proxy {
            inner: Arc::new(Inner {
                routes,
                backends,
                splice: self.splice,
                client_head: self.client_head,
                backend_head: self.backend_head,
                max_tunnels: self.max_tunnels,
                grace: self.grace,
                tls,
                #[cfg(feature = "rustls")]
                acceptor: self.acceptor,
                #[cfg(feature = "proxy-protocol")]
                proxy_protocol: self.proxy_protocol,
                #[cfg(feature = "proxy-protocol")]
                send_proxy_protocol: self.send_proxy_protocol,
                on_report: self.on_report,
                active: AtomicUsize::new(0),
                drain,
                groups,
                stats: stats::Counters::default(),
                limits,
            }),
        })
    }
}

impl Proxy {
    /// A builder with the defaults and no backend.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder::default()
    }

    /// A proxy to one backend (`host:port`) with the default configuration.
    ///
    /// # Panics
    ///
    /// If `backend` is not a usable address (see [`ProxyBuilder::build`]); use the builder
    /// to handle that as an error.
    pub fn new(backend: impl Into<String>) -> Proxy {
        match Proxy::builder().backend(backend).build() {
            Ok(proxy) => proxy,
            Err(error) => panic!("Proxy::new: {error}"),
        }
    }

    /// Connections being handled right now, by every front end: handshakes in progress and
    /// open tunnels.
    pub fn active_tunnels(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }

    /// Every backend (of every route, each once, in the order configured) with its state
    /// and the connections open to it now, counted across every thread and runtime that
    /// shares the proxy.
    ///
    /// # Examples
    ///
    /// ```
    /// use wsrelay::{BackendState, Proxy};
    ///
    /// let proxy = Proxy::builder()
    ///     .backend("127.0.0.1:9000")
    ///     .backend("127.0.0.1:9001")
    ///     .build()?;
    /// for backend in proxy.backends() {
    ///     assert_eq!(backend.state, BackendState::Up);
    ///     println!("{}: {} connections", backend.name, backend.active);
    /// }
    /// # Ok::<(), wsrelay::BuildError>(())
    /// ```
    pub fn backends(&self) -> Vec<BackendStatus> {
        self.inner.backends.status()
    }

    /// Closes every connection to backend `name` (as configured) now, to move its users off
    /// it: each of its tunnels ends at once with
    /// [`CloseReason::BackendClosed`](crate::CloseReason::BackendClosed) in its
    /// [`Report`], whatever the front end that started it, and a handshake in progress with
    /// it is closed as its tunnel starts. Connections to other backends are not touched. The
    /// backend itself stays in rotation: clients that reconnect may get it again unless it
    /// is down or [`disable_backend`](Self::disable_backend) was called first.
    ///
    /// Returns how many connections it had, or `None` if no backend has that name.
    pub fn close_backend(&self, name: &str) -> Option<usize> {
        let active = self.inner.backends.close(name)?;
        for group in self.groups().iter().filter_map(Weak::upgrade) {
            group.wake();
        }
        Some(active)
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Drain>>> {
        // Nothing panics while holding it; a poisoned list is still a list.
        self.inner
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes backend `name` out of rotation: it gets no new connection (nginx's `down`
    /// parameter) until [`enable_backend`](Self::enable_backend); open tunnels are not
    /// touched (see [`close_backend`](Self::close_backend)). Whether a backend has that name.
    pub fn disable_backend(&self, name: &str) -> bool {
        self.inner.backends.set_enabled(name, false)
    }

    /// Puts backend `name` back into rotation after
    /// [`disable_backend`](Self::disable_backend). Whether a backend has that name.
    pub fn enable_backend(&self, name: &str) -> bool {
        self.inner.backends.set_enabled(name, true)
    }

    /// A new drain group for this proxy's connections.
    pub(crate) fn new_group(&self) -> Arc<Drain> {
        let group = Arc::new(Drain::new());
        let mut groups = self.groups();
        groups.retain(|g| g.strong_count() > 0);
        groups.push(Arc::downgrade(&group));
        group
    }

    /// Proxies one client connection: reads its handshake, rewrites it, connects to a
    /// backend, checks the answer, and then either sends the `101` and runs the tunnel until
    /// it ends, or answers the client with an error or the backend's refusal and closes.
    ///
    /// `client` is any byte stream that speaks HTTP/1.1: a `TcpStream` (the tunnel is then
    /// zero-copy on Linux), a TLS stream, a Unix socket. On a `TcpStream`, `TCP_NODELAY` is
    /// set. With `ProxyBuilder::tls` (feature `rustls`), `client` speaks TLS and the proxy
    /// runs the handshake itself, within the client-head deadline. Never panics on bad input: every failure is a [`ProxyError`] that says what the
    /// client was sent. A client that closes its connection while the backend is still
    /// answering ends the attempt (as nginx does, its 499): the backend connection is
    /// dropped and nothing is sent.
    ///
    /// The returned future is `Send + 'static`: spawn it. The connection is tracked, and
    /// [`drain`](Self::drain) ends it.
    ///
    /// # Errors
    ///
    /// Everything that kept the connection from becoming a tunnel; see [`ProxyError`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() -> std::io::Result<()> {
    /// let proxy = wsrelay::Proxy::new("127.0.0.1:9000");
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    /// loop {
    ///     let (stream, peer) = listener.accept().await?;
    ///     tokio::spawn(proxy.handle(stream, peer));
    /// }
    /// # }
    /// ```
    pub fn handle<S>(
        &self,
        client: S,
        peer: SocketAddr,
    ) -> impl Future<Output = Result<Report, ProxyError>> + Send + 'static
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let group = self.inner.drain.clone();
        Connection::accept(self, crate::splice::Stream::new(client), peer, &group)
    }

    /// Stops this proxy taking new connections from [`handle`](Self::handle) and `upgrade`
    /// (they get 503), lets the tunnels they started finish for the grace period
    /// ([`ProxyBuilder::grace_period`]), then closes the rest, and returns how many ended by
    /// themselves and how many were cut.
    ///
    /// Call it when the server in front stops: axum's `with_graceful_shutdown` and hyper's
    /// graceful shutdown return as soon as their HTTP connections are done, and an upgraded
    /// connection is no longer theirs. Connections accepted by [`serve`](Self::serve) are
    /// drained by `serve` itself, on its own signal.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() {
    /// let proxy = wsrelay::Proxy::new("127.0.0.1:9000");
    /// // ... serve an app that calls `proxy.upgrade`, until Ctrl-C ...
    /// let summary = proxy.drain().await;
    /// eprintln!("{} tunnels ended by themselves, {} cut", summary.drained, summary.cut);
    /// # }
    /// ```
    pub async fn drain(&self) -> ServeSummary {
        let summary = self.inner.drain.run(self.inner.grace).await;
        self.inner.stats.drain(&summary);
        summary
    }

    /// Counts the connection in, unless the cap is reached or `group` is draining; the
    /// signal that cuts it when `group` is drained.
    pub(crate) fn admit(&self, group: &Arc<Drain>) -> Admission {
        // Created before the draining flag is read: a drain that starts later is seen by it.
        let cut = group.cut_signal();
        let tracked = group.track();
        let before = self.inner.active.fetch_add(1, Ordering::AcqRel);
        let place = Place {
            inner: self.inner.clone(),
            _tracked: tracked,
            hold: None,
            tunnel: false,
        };
        let refused = if group.is_draining() {
            Some(Refusal::Draining)
        } else {
            match self.inner.max_tunnels {
                Some(max) if before >= max => Some(Refusal::Overloaded),
                _ => None,
            }
        };
        // A refused connection does not hold a place while it is answered.
        let place = refused.is_none().then_some(place);
        Admission {
            place,
            cut,
            refused,
        }
    }
}

/// A connection's place among those the proxy handles: counted in
/// [`Proxy::active_tunnels`] and in its drain group for as long as it lives.
pub(crate) struct Place {
    inner: Arc<Inner>,
    _tracked: drain::Tracked,
    /// Its count against its client address's limit, once a tunnel (see `stats.rs`).
    hold: Option<limits::Hold>,
    /// Whether it is an open tunnel (counted in [`Proxy::stats`]).
    tunnel: bool,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.close_tunnel();
        self.inner.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Past [`ProxyBuilder::max_tunnels`].
    Overloaded,
    /// Its drain group is shutting down.
    Draining,
}

/// The outcome of [`Proxy::admit`].
pub(crate) struct Admission {
    /// `None` when refused.
    pub(crate) place: Option<Place>,
    pub(crate) cut: drain::Cut,
    pub(crate) refused: Option<Refusal>,
}
