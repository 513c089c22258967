//! The backends: their addresses, checked once at build time; their health (`health.rs`);
//! and connecting to one of a pool's backends with round-robin or least-connections and
//! failover (nginx's `upstream` with `proxy_next_upstream error timeout`, `least_conn` and
//! `max_conns`). A backend is plain TCP, TLS over TCP (`wss://`, feature `rustls`) or a Unix
//! socket (`unix:/path`); a pool may mix them.
//!
//! A proxy's backends are one set ([`Backends`]): a backend named in several routes is one
//! backend, with one health, one connection count and one cap. Each route has a [`Pool`],
//! the list of its backends with its own round-robin cursor.
//!
//! Every connection holds a [`Via`] from the moment its backend is chosen until it closes: it
//! counts the connection in its backend (for least-connections, the cap and
//! [`Proxy::backends`](crate::Proxy::backends)), and it knows whether
//! [`Proxy::close_backend`](crate::Proxy::close_backend) was called since. The counts are
//! atomics in the backend, shared by every thread and runtime that uses the proxy.

use std::fmt;
use std::io;
#[cfg(unix)]
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::health::{self, Health, HealthConfig, Went};
use crate::error::{BuildError, TlsError};
use crate::splice::Stream;
use crate::trace;

/// How a pool chooses the backend for a new connection. Set with
/// [`ProxyBuilder::balance`](crate::ProxyBuilder::balance).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Balance {
    /// Each backend in turn (nginx's default).
    #[default]
    RoundRobin,
    /// The backend with the fewest open connections (handshakes and tunnels), counted across
    /// every thread and runtime that shares the proxy; ties go round-robin (nginx
    /// `least_conn`). For long-lived WebSockets this spreads load where round-robin piles
    /// new tunnels onto a backend that already holds the old ones.
    LeastConnections,
}

/// A backend's state, in a [`BackendStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendState {
    /// Taking connections.
    Up,
    /// Its last connect failed: skipped while another backend can take the connection, and
    /// retried in the background (see [`HealthConfig`]).
    Down,
    /// Taken out of rotation by [`Proxy::disable_backend`](crate::Proxy::disable_backend):
    /// gets no new connection until enabled again.
    Disabled,
}

/// One backend as [`Proxy::backends`](crate::Proxy::backends) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendStatus {
    /// The address as configured.
    pub name: String,
    /// Up, down or disabled.
    pub state: BackendState,
    /// Connections to it now: handshakes in progress and open tunnels.
    pub active: usize,
    /// Why it went down, while it is down.
    pub error: Option<String>,
}

/// Every backend of a proxy, each once, and how to reach them.
pub(crate) struct Backends {
    all: Vec<Arc<Backend>>,
    balance: Balance,
    /// Per backend (nginx `max_conns`).
    max_conns: Option<usize>,
    health: HealthConfig,
    connect_timeout: Duration,
    /// Whether the active check was started.
    checking: AtomicBool,
    /// For the TLS backends; `None` when there are none.
    #[cfg(feature = "rustls")]
    tls: Option<crate::tls::Connector>,
}

impl fmt::Debug for Backends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backends")
            .field(
                "backends",
                &self.all.iter().map(|b| b.name()).collect::<Vec<_>>(),
            )
            .field("balance", &self.balance)
            .field("max_conns", &self.max_conns)
            .field("health", &self.health)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The backends of one route, in the order given, with their round-robin cursor.
pub(crate) struct Pool {
    members: Vec<Arc<Backend>>,
    next: AtomicUsize,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.members.iter().map(|b| b.name()))
            .finish()
    }
}

/// One backend.
pub(crate) struct Backend {
    /// As configured, for logs and reports.
    name: Box<str>,
    target: Target,
    /// Connections holding a [`Via`] to it.
    active: AtomicUsize,
    pub(super) health: Health,
    disabled: AtomicBool,
    /// How many times [`Proxy::close_backend`](crate::Proxy::close_backend) was called for it.
    closes: AtomicU64,
    #[cfg(feature = "metrics")]
    series: crate::metrics::BackendSeries,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .field("target", &self.target)
            .field("active", &self.active.load(Ordering::Relaxed))
            .field("down", &self.health.is_down())
            .finish_non_exhaustive()
    }
}

/// Where a backend is and how to talk to it.
#[derive(Debug)]
enum Target {
    /// `host:port`, as `TcpStream::connect` takes it (resolved at each connect).
    Tcp { authority: String },
    /// TLS over TCP to `authority`, for `name` (SNI and certificate verification).
    #[cfg(feature = "rustls")]
    Tls {
        authority: String,
        name: rustls_pki_types::ServerName<'static>,
    },
    /// A Unix domain socket.
    #[cfg(unix)]
    Unix { path: PathBuf },
}

/// A connection to a backend, with where it goes.
#[derive(Debug)]
pub(crate) struct Connected {
    pub(crate) stream: Stream,
    pub(crate) via: Via,
}

/// Which backend a connection goes to, held from the moment the backend is chosen until the
/// connection closes: counted in the backend's connections while it lives. Kept by every
/// open tunnel, so it is small (a pointer and a number).
pub(crate) struct Via {
    backend: Arc<Backend>,
    /// The backend's close count when the connection was made: a change means
    /// [`Proxy::close_backend`](crate::Proxy::close_backend) was called since.
    closes: u64,
}

impl fmt::Debug for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Via {
    /// The backend, as configured.
    pub(crate) fn name(&self) -> &str {
        self.backend.name()
    }

    /// Whether the backend was closed (every connection to it asked to end) since this
    /// connection was made.
    pub(crate) fn is_closed(&self) -> bool {
        self.backend.closes.load(Ordering::Acquire) != self.closes
    }
}

impl Drop for Via {
    fn drop(&mut self) {
        self.backend.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why no backend could be used.
#[derive(Debug)]
#[cfg_attr(not(feature = "rustls"), allow(dead_code))]
pub(crate) enum ConnectError {
    /// Connecting failed or timed out (`TimedOut`, for a TLS handshake too).
    Io(io::Error),
    /// The TLS handshake failed.
    Tls(TlsError),
    /// Every backend that could have taken the connection is at its connection cap.
    Full,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Io(error) => error.fmt(f),
            ConnectError::Tls(error) => error.fmt(f),
            ConnectError::Full => f.write_str("every backend is at its connection limit"),
        }
    }
}

/// How a [`Backends`] set is configured, besides its addresses.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) balance: Balance,
    pub(crate) max_conns: Option<usize>,
    pub(crate) health: HealthConfig,
    pub(crate) connect_timeout: Duration,
}

/// Collects the distinct backends of a proxy while its routes are built.
pub(crate) struct BackendsBuilder {
    all: Vec<Arc<Backend>>,
}

impl BackendsBuilder {
    pub(crate) fn new() -> Self {
        BackendsBuilder { all: Vec::new() }
    }

    /// A pool of `addrs`, each checked; an address seen before (in this pool or another)
    /// is the same backend.
    ///
    /// # Errors
    ///
    /// [`BuildError::Backend`] for an address that cannot be used.
    pub(crate) fn pool(&mut self, addrs: &[String]) -> Result<Pool, BuildError> {
        let mut members: Vec<Arc<Backend>> = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let backend = match self.all.iter().find(|b| *b.name == *addr.trim()) {
                Some(known) => known.clone(),
                None => {
                    let backend = Arc::new(Backend::parse(addr)?);
                    self.all.push(backend.clone());
                    backend
                }
            };
            // A backend listed twice in one pool is one backend.
            if !members.iter().any(|m| Arc::ptr_eq(m, &backend)) {
                members.push(backend);
            }
        }
        Ok(Pool {
            members,
            next: AtomicUsize::new(0),
        })
    }

    /// The set, and reads the CA files when there are TLS backends.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoBackend`] when no pool had a backend; the errors of
    /// [`Connector::new`](crate::tls::Connector::new).
    pub(crate) fn build(
        self,
        settings: Settings,
        #[cfg(feature = "rustls")] cas: &[std::path::PathBuf],
    ) -> Result<Backends, BuildError> {
        if self.all.is_empty() {
            return Err(BuildError::NoBackend);
        }
        #[cfg(feature = "rustls")]
        let tls = {
            let any_tls = self
                .all
                .iter()
                .any(|b| matches!(b.target, Target::Tls { .. }));
            if any_tls || !cas.is_empty() {
                Some(crate::tls::Connector::new(cas)?)
            } else {
                None
            }
        };
        Ok(Backends {
            all: self.all,
            balance: settings.balance,
            max_conns: settings.max_conns,
            health: settings.health,
            connect_timeout: settings.connect_timeout,
            checking: AtomicBool::new(false),
            #[cfg(feature = "rustls")]
            tls,
        })
    }
}

impl Backends {
    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }

    pub(crate) fn get(&self, index: usize) -> &Backend {
        &self.all[index]
    }

    pub(crate) fn health_config(&self) -> &HealthConfig {
        &self.health
    }

    fn find(&self, name: &str) -> Option<&Arc<Backend>> {
        let name = name.trim();
        self.all.iter().find(|b| *b.name == *name)
    }

    /// Every backend with its state, in the order first configured.
    pub(crate) fn status(&self) -> Vec<BackendStatus> {
        self.all
            .iter()
            .map(|b| BackendStatus {
                name: b.name.to_string(),
                state: if b.disabled.load(Ordering::Acquire) {
                    BackendState::Disabled
                } else if b.health.is_down() {
                    BackendState::Down
                } else {
                    BackendState::Up
                },
                active: b.active.load(Ordering::Acquire),
                error: b.health.error(),
            })
            .collect()
    }

    /// Marks every connection to backend `name` as to be closed (the caller then wakes them:
    /// [`Drain::wake`](super::drain::Drain::wake)): tunnels close with
    /// [`CloseReason::BackendClosed`](crate::CloseReason::BackendClosed), a handshake in
    /// progress with it when its tunnel starts. How many connections it had; `None` for an
    /// unknown name.
    pub(crate) fn close(&self, name: &str) -> Option<usize> {
        let backend = self.find(name)?;
        let active = backend.active.load(Ordering::Acquire);
        backend.closes.fetch_add(1, Ordering::AcqRel);
        trace::warning!(
            backend = name,
            connections = active,
            "closing every connection to the backend"
        );
        Some(active)
    }

    /// Takes backend `name` out of rotation (`false`) or puts it back; whether it exists.
    pub(crate) fn set_enabled(&self, name: &str, enabled: bool) -> bool {
        let Some(backend) = self.find(name) else {
            return false;
        };
        let was = !backend.disabled.swap(!enabled, Ordering::AcqRel);
        if was != enabled {
            trace::warning!(
                backend = name,
                enabled,
                "backend {}",
                if enabled { "enabled" } else { "disabled" }
            );
        }
        true
    }

    /// Starts the active check, once, if one is configured and a runtime is at hand.
    pub(crate) fn start_checks(self: &Arc<Self>) {
        let Some(interval) = self.health.get_check_interval() else {
            return;
        };
        if !health::first(&self.checking) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(health::check(Arc::downgrade(self), interval));
            }
            Err(_) => self.checking.store(false, Ordering::Release),
        }
    }

    /// Marks backend `index` down after `error`, and starts its background retry.
    pub(crate) fn mark_down(self: &Arc<Self>, index: usize, error: &ConnectError) {
        let backend = &self.all[index];
        let went = backend
            .health
            .mark_down(backend.name(), error, &self.health);
        if went
            == (Went::Down {
                start_retrying: true,
            })
        {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(health::retry(Arc::downgrade(self), index));
                }
                Err(_) => backend.health.not_retrying(),
            }
        }
    }

    /// Connects to one of `pool`'s backends: the one [`Balance`] picks among those up and
    /// below their cap, then, if it fails, the next, then the down ones as a last resort;
    /// each attempt (connect, `preamble`, TLS handshake) bounded by the connect timeout. A
    /// failed connect marks its backend down (see `health.rs`). `preamble` (a PROXY protocol
    /// header, rule 39) is written first on each connection, before TLS.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Full`] when a backend was skipped for its cap and no other accepted;
    /// otherwise the last attempt's error (`TimedOut` for a timeout).
    pub(crate) async fn connect(
        self: &Arc<Self>,
        pool: &Pool,
        preamble: Option<&[u8]>,
    ) -> Result<Connected, ConnectError> {
        self.start_checks();
        let start = pool.next.fetch_add(1, Ordering::Relaxed);
        // Backends tried (or found full) by this connection; allocated at the first failure.
        let mut tried: Vec<usize> = Vec::new();
        let mut full = false;
        let mut last = None;
        for last_resort in [false, true] {
            while let Some((at, via)) = self.pick(pool, start, last_resort, &mut tried, &mut full) {
                let backend = &*pool.members[at];
                match self.attempt(backend, preamble).await {
                    Ok(stream) => {
                        backend.health.mark_up(backend.name());
                        return Ok(Connected { stream, via });
                    }
                    Err(error) => {
                        drop(via);
                        tried.push(at);
                        if last_resort && backend.health.is_down() {
                            trace::debug!(backend = backend.name(), %error, "backend still down");
                        } else if self.health.get_passive() {
                            let index = self.index_of(backend);
                            self.mark_down(index, &error);
                        } else {
                            trace::warning!(backend = backend.name(), %error, "backend unreachable");
                        }
                        last = Some(error);
                    }
                }
            }
        }
        if full {
            trace::debug!(backends = ?pool, "every backend is at its connection limit");
            return Err(ConnectError::Full);
        }
        Err(last.unwrap_or_else(|| ConnectError::Io(io::Error::other("every backend is disabled"))))
    }

    /// The next backend to try and a [`Via`] counting the connection in it; `None` when no
    /// backend is left for this pass. The first pass takes backends that are up, the last
    /// resort any not tried yet. Disabled backends are never taken; a backend at its cap is
    /// skipped (and `full` set).
    fn pick(
        &self,
        pool: &Pool,
        start: usize,
        last_resort: bool,
        tried: &mut Vec<usize>,
        full: &mut bool,
    ) -> Option<(usize, Via)> {
        let members = &pool.members;
        let n = members.len();
        let eligible = |at: usize, tried: &[usize]| {
            let backend = &members[at];
            !tried.contains(&at)
                && !backend.disabled.load(Ordering::Acquire)
                && (last_resort || !backend.health.is_down())
        };
        loop {
            let mut choice = None;
            match self.balance {
                Balance::RoundRobin => {
                    for i in 0..n {
                        let at = (start + i) % n;
                        if !eligible(at, tried) {
                            continue;
                        }
                        match members[at].lease(self.max_conns) {
                            Some(via) => return Some((at, via)),
                            None => *full = true,
                        }
                    }
                }
                Balance::LeastConnections => {
                    let mut least = usize::MAX;
                    for i in 0..n {
                        let at = (start + i) % n;
                        if !eligible(at, tried) {
                            continue;
                        }
                        let active = members[at].active.load(Ordering::Acquire);
                        if self.max_conns.is_some_and(|max| active >= max) {
                            *full = true;
                        } else if active < least {
                            least = active;
                            choice = Some(at);
                        }
                    }
                }
            }
            let at = choice?;
            match members[at].lease(self.max_conns) {
                Some(via) => return Some((at, via)),
                // Filled up since it was counted: skip it, choose again.
                None => {
                    *full = true;
                    tried.push(at);
                }
            }
        }
    }

    fn index_of(&self, backend: &Backend) -> usize {
        self.all
            .iter()
            .position(|b| std::ptr::eq(&**b, backend))
            .unwrap_or_default()
    }

    /// One connect to `backend` (and TLS handshake), within the connect timeout.
    async fn attempt(
        &self,
        backend: &Backend,
        preamble: Option<&[u8]>,
    ) -> Result<Stream, ConnectError> {
        // Timed (and a failure counted) per backend with the `metrics` feature.
        let connect = super::stats::connect(backend, self.connect_to(backend, preamble));
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "connect timed out",
            ))),
        }
    }

    /// A health probe: connect to `backend` and close at once.
    pub(crate) async fn probe(&self, backend: &Backend) -> Result<(), ConnectError> {
        self.attempt(backend, None).await.map(drop)
    }

    async fn connect_to(
        &self,
        backend: &Backend,
        preamble: Option<&[u8]>,
    ) -> Result<Stream, ConnectError> {
        let stream = match &backend.target {
            Target::Tcp { authority } => Stream::Tcp(tcp(authority, preamble).await?),
            // Boxed: a TLS handshake's state is kilobytes, which every plain connect would
            // otherwise carry (and copy) too.
            #[cfg(feature = "rustls")]
            Target::Tls { authority, name } => {
                Box::pin(async {
                    let tcp = tcp(authority, preamble).await?;
                    let Some(connector) = &self.tls else {
                        return Err(ConnectError::Io(io::Error::other("no TLS configuration")));
                    };
                    connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(ConnectError::Tls)
                })
                .await?
            }
            #[cfg(unix)]
            Target::Unix { path } => {
                let mut unix = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(ConnectError::Io)?;
                write_preamble(&mut unix, preamble).await?;
                Stream::Other(Box::new(unix))
            }
        };
        Ok(stream)
    }
}

impl Backend {
    fn new(name: Box<str>, target: Target) -> Self {
        Backend {
            #[cfg(feature = "metrics")]
            series: crate::metrics::BackendSeries::new(&name),
            name,
            target,
            active: AtomicUsize::new(0),
            health: Health::default(),
            disabled: AtomicBool::new(false),
            closes: AtomicU64::new(0),
        }
    }

    /// As configured.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Its connect series, keyed once.
    #[cfg(feature = "metrics")]
    pub(crate) fn series(&self) -> &crate::metrics::BackendSeries {
        &self.series
    }

    /// Counts a connection in, unless the backend is at `max`.
    fn lease(self: &Arc<Self>, max: Option<usize>) -> Option<Via> {
        match max {
            None => {
                self.active.fetch_add(1, Ordering::AcqRel);
            }
            Some(max) => {
                self.active
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < max).then_some(n + 1)
                    })
                    .ok()?;
            }
        }
        Some(Via {
            backend: self.clone(),
            closes: self.closes.load(Ordering::Acquire),
        })
    }
}

/// A TCP connection to `authority`, with `TCP_NODELAY` (rule 28), `preamble` written.
async fn tcp(authority: &str, preamble: Option<&[u8]>) -> Result<TcpStream, ConnectError> {
    let mut stream = TcpStream::connect(authority)
        .await
        .map_err(ConnectError::Io)?;
    let _ = stream.set_nodelay(true);
    write_preamble(&mut stream, preamble).await?;
    Ok(stream)
}

/// Writes what goes first on a backend connection, if anything.
async fn write_preamble<S>(stream: &mut S, preamble: Option<&[u8]>) -> Result<(), ConnectError>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    match preamble {
        Some(bytes) => tokio::io::AsyncWriteExt::write_all(stream, bytes)
            .await
            .map_err(ConnectError::Io),
        None => Ok(()),
    }
}

impl Backend {
    /// `host:port`, `ws://host:port`, `http://host:port`, `wss://host:port`,
    /// `https://host:port` (a trailing `/` allowed), or `unix:/path`.
    fn parse(addr: &str) -> Result<Backend, BuildError> {
        let bad = |reason: &'static str| BuildError::Backend {
            addr: addr.to_owned(),
            reason,
        };
        let trimmed = addr.trim();
        let name: Box<str> = Box::from(trimmed);
        if let Some(path) = trimmed.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("no path: write unix:/path/to/socket"));
            }
            #[cfg(unix)]
            return Ok(Backend::new(name, Target::Unix { path: path.into() }));
            #[cfg(not(unix))]
            return Err(bad("Unix sockets are not available on this platform"));
        }
        let (tls, rest) = match trimmed.split_once("://") {
            None => (false, trimmed),
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "ws" | "http" => (false, rest),
                "wss" | "https" => (true, rest),
                _ => {
                    return Err(bad(
                        "unknown scheme: use host:port, ws://host:port, wss://host:port or \
                         unix:/path",
                    ))
                }
            },
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') {
            return Err(bad(
                "a backend is an address without a path; rewrite paths with RewriteConfig",
            ));
        }
        if authority.contains('@') {
            return Err(bad("user information is not allowed in a backend address"));
        }
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| bad("no port: write host:port"))?;
        let ipv6 = host.starts_with('[') && host.ends_with(']');
        if host.is_empty() || (host.contains(':') && !ipv6) {
            return Err(bad("invalid host: write host:port, or [v6 address]:port"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(bad("invalid port")),
        }
        let authority = authority.to_owned();
        if !tls {
            return Ok(Backend::new(name, Target::Tcp { authority }));
        }
        #[cfg(feature = "rustls")]
        {
            let name_for_tls = crate::tls::server_name(host)
                .ok_or_else(|| bad("the host is not a valid DNS name or IP address for TLS"))?;
            Ok(Backend::new(
                name,
                Target::Tls {
                    authority,
                    name: name_for_tls,
                },
            ))
        }
        #[cfg(not(feature = "rustls"))]
        Err(bad(
            "TLS backends (wss://, https://) need the `rustls` feature of wsrelay",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_addresses() {
        for ok in [
            "127.0.0.1:9000",
            "localhost:80",
            "ws://10.0.0.5:9000",
            "ws://10.0.0.5:9000/",
            "http://backend.internal:8080",
            "[::1]:9000",
            "ws://[2001:db8::1]:443",
        ] {
            assert!(Backend::parse(ok).is_ok(), "{ok}");
        }
        #[cfg(feature = "rustls")]
        for ok in [
            "wss://example.com:443",
            "https://example.com:8443/",
            "wss://127.0.0.1:9443",
            "wss://[::1]:9443",
        ] {
            assert!(Backend::parse(ok).is_ok(), "{ok}");
        }
        #[cfg(unix)]
        for ok in ["unix:/run/app.sock", "unix:relative.sock"] {
            assert!(
                matches!(
                    Backend::parse(ok),
                    Ok(Backend {
                        target: Target::Unix { .. },
                        ..
                    })
                ),
                "{ok}"
            );
        }
        #[cfg(not(feature = "rustls"))]
        for bad in ["wss://example.com:443", "https://example.com:443"] {
            match Backend::parse(bad) {
                Err(error) => assert!(error.to_string().contains("`rustls` feature"), "{error}"),
                Ok(_) => panic!("{bad} was accepted without the rustls feature"),
            }
        }
        for (bad, why) in [
            ("127.0.0.1", "no port"),
            ("unix:", "no path"),
            ("wss://example.com", "no port"),
            ("ftp://example.com:21", "scheme"),
            ("ws://example.com:80/chat", "path"),
            ("user@example.com:80", "user"),
            ("::1:9000", "host"),
            (":9000", "host"),
            ("example.com:0", "port"),
            ("example.com:http", "port"),
        ] {
            match Backend::parse(bad) {
                Err(error) => assert!(error.to_string().contains(why), "{bad}: {error}"),
                Ok(_) => panic!("{bad} was accepted"),
            }
        }
    }

    #[test]
    fn an_empty_set_is_an_error() {
        let settings = Settings {
            balance: Balance::default(),
            max_conns: None,
            health: HealthConfig::default(),
            connect_timeout: Duration::from_secs(1),
        };
        let built = BackendsBuilder::new().build(
            settings,
            #[cfg(feature = "rustls")]
            &[],
        );
        assert!(matches!(built, Err(BuildError::NoBackend)));
    }
}
