//! A standalone WebSocket reverse proxy built on `wsrelay::Proxy` over a bare `TcpListener`.
//!
//! Run it in front of a backend (repeat `--backend` for a round-robin pool with failover):
//!
//! ```text
//! cargo run --release --example echo -- --listen 127.0.0.1:9000
//! cargo run --release --example proxy -- --listen 127.0.0.1:8080 --backend 127.0.0.1:9000
//! ```
//!
//! or alone, with the bundled echo backend started in-process:
//!
//! ```text
//! cargo run --release --example proxy -- --listen 127.0.0.1:8080
//! ```
//!
//! Over TLS (`wss://`), with a certificate and key in PEM files (README's quick start makes
//! a self-signed pair with `openssl`), in front of a TLS backend whose certificate is signed
//! by a CA of your own:
//!
//! ```text
//! cargo run --release --example proxy -- --listen 127.0.0.1:8443 \
//!     --tls-cert cert.pem --tls-key key.pem \
//!     --backend wss://backend.internal:9443 --backend-ca internal-ca.pem
//! ```
//!
//! Try it with any WebSocket client, e.g. `websocat ws://127.0.0.1:8080/`, or
//! `curl -i -N -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13'
//! -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' http://127.0.0.1:8080/` to see the `101`.
//!
//! Several sites and paths, each with its own pool (nginx `server_name` + `location`), spread
//! by least connections, with a fallback pool for everything else:
//!
//! ```text
//! cargo run --release --example proxy -- --listen 127.0.0.1:8080 --balance least-connections \
//!     --route chat.example/ws/=10.0.0.5:9000,10.0.0.6:9000 \
//!     --route '*.example/live/=10.0.0.7:9000' --backend 10.0.0.9:9000
//! ```
//!
//! Options: `--backend ADDR` (repeatable: `host:port` or `ws://host:port`, `wss://host:port`
//! for TLS, `unix:/path` for a Unix socket; kinds may be mixed; the pool for any host and
//! path), `--route HOST/PREFIX=BACKEND[,BACKEND...]` (repeatable: requests for HOST, a name,
//! `*.name` or `*` for any, whose path starts with PREFIX go to these backends; the longest
//! prefix of the most exact host wins; with routes and no `--backend`, a request no route
//! takes gets 404), `--balance round-robin|least-connections` (how each pool spreads
//! connections, default round-robin; a backend whose connect fails is skipped, retried in the
//! background, and logged once when it goes down and once when it is back), `--backend-ca PATH`
//! (repeatable: trust the CA certificates in this PEM file for `wss://` backends, besides the
//! system's), `--tls-cert PATH --tls-key PATH` (terminate TLS: clients connect with `wss://`;
//! on SIGHUP both files are read again, and the new certificate is used for new connections,
//! or the old one kept if the new files are unusable; either way one line on stderr says
//! which), `--idle-timeout SECS` (close tunnels silent that long), `--strip-prefix PATH`
//! (nginx `location /ws/` + `proxy_pass http://backend/`), `--allow-origin ORIGIN`
//! (repeatable; other browser origins get 403), `--grace SECS` (how long tunnels may finish
//! after a stop signal, default 5), `--threads N` (default: one per CPU), `--verbose` (log refused handshakes and closed
//! tunnels, with the backend each used), `--proxy-protocol` (behind a trusted L4 balancer
//! such as HAProxy with `send-proxy-v2`: every connection starts with a PROXY protocol v1 or
//! v2 header whose source is the client's address; a connection without one is closed),
//! `--send-proxy-protocol` (start each backend connection with a PROXY v2 header: the
//! client's address and the one it connected to). `--help` prints them. It prints
//! `listening on ADDR` on stdout when ready (logs go to stderr), and tells systemd
//! (`READY=1` on `NOTIFY_SOCKET`, for `Type=notify`); on SIGINT or SIGTERM it closes its
//! listening sockets at once (new connects are refused, not queued), lets tunnels finish for
//! the grace period, then closes them and exits 0. A port already in use (by anything,
//! another `proxy` included) is an error: exit 1.
//!
//! Operations: `--metrics ADDR` serves the proxy's metrics as Prometheus text at
//! `http://ADDR/metrics` (bound before `listening on` is printed; an address in use is an
//! error, exit 1). `--max-connections N` caps the connections handled at once (beyond it:
//! `503` with `Retry-After`), `--max-per-ip N` those from one client IP (nginx `limit_conn`;
//! beyond it: `429` with `Retry-After`), `--rate-per-ip N/s` or `N/m` (with `--rate-burst N`)
//! limits the handshakes of one client IP (a token bucket, nginx `limit_req`; `429` with
//! `Retry-After`). Try `curl -s http://127.0.0.1:9100/metrics | grep wsrelay_`.
//!
//! Started by systemd socket activation (or by a parent process passing a listening socket
//! as descriptor 3 with `LISTEN_FDS=1` and `LISTEN_PID`), it serves that socket and ignores
//! `--listen`; a passed descriptor that is not a listening TCP socket is an error (exit 1).
//! README shows a systemd unit and a Kubernetes deployment.
//!
//! Like nginx's `worker_processes auto` with `listen ... reuseport`, it runs one
//! single-threaded tokio runtime per thread, each accepting on its own `SO_REUSEPORT`
//! listener (the kernel spreads connections over them), so a connection's handshake and
//! tunnel never move between threads: no cross-thread wake-ups, no work stealing. In
//! `cargo bench --bench compare` this costs about a quarter less CPU per upgrade than one
//! multi-threaded runtime. (`SO_REUSEPORT` would also let a second process of the same user
//! bind the port and silently take a share of the connections; the proxy first checks the
//! port with an ordinary bind, so a second one fails instead.)

#[path = "support/echo.rs"]
mod echo;
#[path = "support/metrics.rs"]
mod metrics;
#[path = "support/server.rs"]
mod server;

use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use wsrelay::handshake::RewriteConfig;
use wsrelay::systemd::State;
use wsrelay::tls::TlsAcceptor;
use wsrelay::{Balance, Proxy, RateLimit, Route, ServeSummary, SpliceConfig};

const USAGE: &str = "usage: proxy [--listen ADDR] [--backend ADDR]... \
                     [--route HOST/PREFIX=BACKEND[,BACKEND...]]... \
                     [--balance round-robin|least-connections] [--backend-ca PATH]... \
                     [--tls-cert PATH --tls-key PATH] [--idle-timeout SECS] \
                     [--strip-prefix PATH] [--allow-origin ORIGIN]... [--grace SECS] \
                     [--threads N] [--proxy-protocol] [--send-proxy-protocol] [--verbose] \
                     [--metrics ADDR] [--max-connections N] \
                     [--max-per-ip N] [--rate-per-ip N/s|N/m [--rate-burst N]]

  --proxy-protocol      every connection starts with a PROXY v1/v2 header (trusted L4 balancer)
  --send-proxy-protocol start each backend connection with a PROXY v2 header
  --metrics ADDR        Prometheus text at http://ADDR/metrics
  --max-connections N   connections handled at once (beyond: 503 + Retry-After)
  --max-per-ip N        connections at once from one client IP (beyond: 429 + Retry-After)
  --rate-per-ip RATE    handshakes per client IP, N/s or N/m (beyond: 429 + Retry-After)
  --rate-burst N        handshakes one client IP may make at once (default: N of the rate)";

struct Options {
    listen: SocketAddr,
    backends: Vec<String>,
    routes: Vec<Route>,
    balance: Balance,
    backend_cas: Vec<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    idle_timeout: Option<Duration>,
    strip_prefix: Option<String>,
    origins: Vec<String>,
    grace: Duration,
    threads: usize,
    proxy_protocol: bool,
    send_proxy_protocol: bool,
    verbose: bool,
    metrics: Option<SocketAddr>,
    max_connections: Option<usize>,
    max_per_ip: Option<usize>,
    rate_per_ip: Option<RateLimit>,
}

/// Seconds as a duration: finite, and at least `min`.
fn seconds(flag: &str, v: &str, min: f64) -> Result<Duration, String> {
    v.parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= min)
        .map(Duration::from_secs_f64)
        .ok_or(format!("bad {flag} {v:?}: want seconds >= {min}"))
}

/// A count of at least `min`.
fn count(flag: &str, v: &str, min: u32) -> Result<u32, String> {
    v.parse()
        .ok()
        .filter(|n| *n >= min)
        .ok_or(format!("bad {flag} {v:?}: want a whole number >= {min}"))
}

/// `N/s` or `N/m` (nginx's `10r/s` and `30r/m` are taken too).
fn rate(flag: &str, v: &str) -> Result<(u32, Duration), String> {
    let bad = || format!("bad {flag} {v:?}: want N/s or N/m with N >= 1, e.g. 10/s");
    let (n, per) = v.split_once('/').ok_or_else(bad)?;
    let n = n.strip_suffix('r').unwrap_or(n);
    let n: u32 = n.parse().ok().filter(|n| *n >= 1).ok_or_else(bad)?;
    let per = match per {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        _ => return Err(bad()),
    };
    Ok((n, per))
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        listen: ([127, 0, 0, 1], 8080).into(),
        backends: Vec::new(),
        routes: Vec::new(),
        balance: Balance::RoundRobin,
        backend_cas: Vec::new(),
        tls_cert: None,
        tls_key: None,
        idle_timeout: None,
        strip_prefix: None,
        origins: Vec::new(),
        grace: Duration::from_secs(5),
        threads: std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        proxy_protocol: false,
        send_proxy_protocol: false,
        verbose: false,
        metrics: None,
        max_connections: None,
        max_per_ip: None,
        rate_per_ip: None,
    };
    let mut rate_per_ip = None;
    let mut rate_burst = None;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                options.listen = v.parse().map_err(|e| format!("bad --listen {v:?}: {e}"))?;
            }
            "--backend" => options.backends.push(value()?),
            "--route" => {
                let v = value()?;
                let route = v.parse().map_err(|e| format!("bad --route: {e}"))?;
                options.routes.push(route);
            }
            "--balance" => {
                options.balance = match value()?.as_str() {
                    "round-robin" => Balance::RoundRobin,
                    "least-connections" => Balance::LeastConnections,
                    other => {
                        return Err(format!(
                            "bad --balance {other:?}: want round-robin or least-connections"
                        ))
                    }
                }
            }
            "--backend-ca" => options.backend_cas.push(value()?),
            "--tls-cert" => options.tls_cert = Some(value()?),
            "--tls-key" => options.tls_key = Some(value()?),
            "--idle-timeout" => {
                let idle = seconds(&flag, &value()?, 0.001)?;
                options.idle_timeout = Some(idle);
            }
            "--grace" => options.grace = seconds(&flag, &value()?, 0.0)?,
            "--strip-prefix" => options.strip_prefix = Some(value()?),
            "--allow-origin" => options.origins.push(value()?),
            "--threads" => {
                let v = value()?;
                options.threads = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or(format!("bad --threads {v:?}: want 1 to 1024"))?;
            }
            "--proxy-protocol" => options.proxy_protocol = true,
            "--send-proxy-protocol" => options.send_proxy_protocol = true,
            "--verbose" => options.verbose = true,
            "--metrics" => {
                let v = value()?;
                let addr = v.parse().map_err(|e| format!("bad --metrics {v:?}: {e}"))?;
                options.metrics = Some(addr);
            }
            "--max-connections" => {
                options.max_connections = Some(count(&flag, &value()?, 1)? as usize);
            }
            "--max-per-ip" => options.max_per_ip = Some(count(&flag, &value()?, 1)? as usize),
            "--rate-per-ip" => rate_per_ip = Some(rate(&flag, &value()?)?),
            "--rate-burst" => rate_burst = Some(count(&flag, &value()?, 1)?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.tls_cert.is_some() != options.tls_key.is_some() {
        return Err("--tls-cert and --tls-key go together".to_owned());
    }
    options.rate_per_ip = match (rate_per_ip, rate_burst) {
        (Some((n, per)), burst) => {
            let rate = RateLimit::new(n, per);
            Some(burst.map_or(rate, |burst| rate.burst(burst)))
        }
        (None, Some(_)) => return Err("--rate-burst needs --rate-per-ip".to_owned()),
        (None, None) => None,
    };
    Ok(options)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let options = match parse_args(args.into_iter()) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Before any thread starts: taking the descriptors clears LISTEN_FDS and LISTEN_PID.
    let inherited = match inherited_listener() {
        Ok(inherited) => inherited,
        Err(error) => {
            eprintln!("cannot use the inherited listening socket: {error}");
            return ExitCode::FAILURE;
        }
    };
    server::init_logging(options.verbose);
    // This thread runs the first runtime: signals, the in-process echo backend, and a
    // share of the connections.
    // `run` is a spawned task, not `block_on`'s own future: waking that future costs a
    // write to the runtime's eventfd each time, waking a task does not.
    match runtime() {
        Ok(runtime) => runtime.block_on(async {
            tokio::spawn(run(options, inherited))
                .await
                .unwrap_or(ExitCode::FAILURE)
        }),
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The listening socket passed by systemd socket activation or a parent process, if any
/// (`wsrelay::systemd`): at most one.
fn inherited_listener() -> io::Result<Option<std::net::TcpListener>> {
    let mut listeners = wsrelay::systemd::inherited_listeners()?;
    match listeners.len() {
        0 | 1 => Ok(listeners.pop()),
        n => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{n} sockets passed (LISTEN_FDS), this proxy serves one"),
        )),
    }
}

/// Where the threads' listeners come from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Bind this address, each thread its own `SO_REUSEPORT` socket.
    Bind(SocketAddr),
    /// Share this inherited socket: each thread polls its own descriptor of it.
    Inherited(&'a std::net::TcpListener),
}

impl Source<'_> {
    /// A listener for this thread (in a runtime).
    fn open(self, shared: bool) -> io::Result<TcpListener> {
        match self {
            Source::Bind(addr) => listen(addr, shared),
            Source::Inherited(listener) => TcpListener::from_std(listener.try_clone()?),
        }
    }
}

/// One single-threaded runtime (each thread of the proxy has its own).
fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Fails if something listens on `addr` already. The threads' listeners share their port
/// with `SO_REUSEPORT`, which another process of the same user could join unnoticed; an
/// ordinary bind first makes a port in use an error, as it is for any server.
fn check_port(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)
}

/// A listener on `addr`, sharing the port with the other threads' listeners if `shared`.
fn listen(addr: SocketAddr, shared: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(shared)?;
    #[cfg(not(unix))]
    let _ = shared;
    socket.bind(addr)?;
    socket.listen(server::BACKLOG)
}

async fn run(options: Options, inherited: Option<std::net::TcpListener>) -> ExitCode {
    let mut backends = options.backends;
    if backends.is_empty() && options.routes.is_empty() {
        let echo = echo::spawn().await;
        eprintln!("no --backend given: echo backend started on {echo}");
        backends.push(echo.to_string());
    }
    let mut rewrite = RewriteConfig::new();
    if let Some(prefix) = &options.strip_prefix {
        rewrite = rewrite.strip_prefix(prefix);
    }
    for origin in &options.origins {
        rewrite = rewrite.allow_origin(origin);
    }
    let mut splice = SpliceConfig::new();
    if let Some(idle) = options.idle_timeout {
        splice = splice.idle_timeout(Some(idle));
    }
    let mut builder = Proxy::builder()
        .rewrite(rewrite)
        .splice(splice)
        .grace_period(options.grace)
        .max_tunnels(options.max_connections)
        .max_per_ip(options.max_per_ip)
        .rate_per_ip(options.rate_per_ip)
        .balance(options.balance)
        .proxy_protocol(options.proxy_protocol)
        .send_proxy_protocol(options.send_proxy_protocol);
    for route in options.routes {
        builder = builder.route(route);
    }
    for backend in backends {
        builder = builder.backend(backend);
    }
    for ca in &options.backend_cas {
        builder = builder.backend_ca(ca);
    }
    // One acceptor for every thread (a clone is an `Arc`): a reload serves them all.
    let acceptor = match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => match TlsAcceptor::new(cert, key) {
            Ok(acceptor) => Some(acceptor),
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    if let Some(acceptor) = &acceptor {
        builder = builder.tls(acceptor.clone());
    }
    let proxy = match builder.build() {
        Ok(proxy) => proxy,
        Err(error) => {
            eprintln!("{error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    // Non-Unix targets have no SO_REUSEPORT: one thread there.
    let threads = if cfg!(unix) { options.threads } else { 1 };
    let source = match &inherited {
        Some(listener) => Source::Inherited(listener),
        None => {
            if let Err(error) = check_port(options.listen) {
                eprintln!("cannot listen on {}: {error}", options.listen);
                return ExitCode::FAILURE;
            }
            Source::Bind(options.listen)
        }
    };
    let listener = match source.open(threads > 1) {
        Ok(listener) => listener,
        Err(error) => {
            match source {
                Source::Bind(addr) => eprintln!("cannot listen on {addr}: {error}"),
                Source::Inherited(_) => eprintln!("cannot use the inherited socket: {error}"),
            }
            return ExitCode::FAILURE;
        }
    };
    // The port actually bound (the others join it, also when `--listen` asked for port 0).
    let addr = listener.local_addr().unwrap_or(options.listen);
    // The metrics endpoint answers before the proxy says it is ready.
    if let Some(metrics_addr) = options.metrics {
        match metrics::serve(metrics_addr) {
            Ok(bound) => eprintln!("metrics on http://{bound}/metrics"),
            Err(error) => {
                eprintln!("cannot serve metrics on {metrics_addr}: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    let source = match source {
        Source::Bind(_) => Source::Bind(addr),
        inherited => inherited,
    };

    let (stop, stopped) = watch::channel(false);
    let mut workers = Vec::new();
    for i in 1..threads {
        match start_worker(i, proxy.clone(), source, stopped.clone()) {
            Ok(worker) => workers.push(worker),
            Err(error) => {
                eprintln!("cannot start thread {i} listening on {addr}: {error}");
                let _ = stop.send(true);
                for worker in workers {
                    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
                }
                return ExitCode::FAILURE;
            }
        }
    }
    // Listening for SIGHUP before saying we are ready: one that came earlier would kill us.
    #[cfg(unix)]
    if let Some(acceptor) = acceptor {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(hangups) => {
                tokio::spawn(reload_on_sighup(acceptor, hangups));
            }
            Err(error) => {
                eprintln!("cannot listen for SIGHUP, certificates will not reload: {error}")
            }
        }
    }
    // Caught from here on: a SIGTERM right after the announcement drains.
    let stop_signal = server::stop_signal();
    println!("listening on {addr}");
    if let Err(error) = wsrelay::systemd::notify(State::Ready) {
        eprintln!("cannot notify the service manager (NOTIFY_SOCKET): {error}");
    }
    // The inherited socket is open in every thread's listener now; this copy would keep it
    // accepting into the queue after they close.
    drop(inherited);

    let shutdown = async move {
        stop_signal.await;
        let _ = wsrelay::systemd::notify(State::Stopping);
        let _ = stop.send(true);
    };
    let mut summary = proxy.serve(listener, shutdown).await;
    for worker in workers {
        // Joined off this thread: it also runs the echo backend that the others may still
        // be draining towards.
        if let Ok(Ok(s)) = tokio::task::spawn_blocking(move || worker.join()).await {
            summary.accepted += s.accepted;
            summary.drained += s.drained;
            summary.cut += s.cut;
        }
    }
    eprintln!(
        "stopped: {} connections accepted, {} drained, {} cut",
        summary.accepted, summary.drained, summary.cut
    );
    ExitCode::SUCCESS
}

/// On each SIGHUP, reads the certificate and key files again (off the runtime's thread): the
/// new certificate serves new connections; open tunnels are not touched. A file that cannot
/// be used keeps the old certificate.
#[cfg(unix)]
async fn reload_on_sighup(acceptor: TlsAcceptor, mut hangups: tokio::signal::unix::Signal) {
    while hangups.recv().await.is_some() {
        let acceptor = acceptor.clone();
        match tokio::task::spawn_blocking(move || acceptor.reload()).await {
            Ok(Ok(())) => eprintln!("SIGHUP: certificates reloaded"),
            Ok(Err(error)) => eprintln!("SIGHUP: kept the old certificates: {error}"),
            Err(error) => eprintln!("SIGHUP: kept the old certificates: {error}"),
        }
    }
}

/// Starts thread `i`: its own runtime and listener, serving until `stopped` turns true.
/// Returns once the listener is bound (or failed to bind).
fn start_worker(
    i: usize,
    proxy: Proxy,
    source: Source<'_>,
    mut stopped: watch::Receiver<bool>,
) -> io::Result<std::thread::JoinHandle<ServeSummary>> {
    let (ready, bound) = std::sync::mpsc::channel();
    // The thread's own descriptor of an inherited socket, or the address to bind.
    let source = match source {
        Source::Bind(addr) => Ok(addr),
        Source::Inherited(listener) => Err(listener.try_clone()?),
    };
    let worker = std::thread::Builder::new()
        .name(format!("proxy-{i}"))
        .spawn(move || {
            let started = runtime().and_then(|runtime| {
                // Owned by the listener: closed with it when the thread stops accepting.
                let listener = runtime.block_on(async {
                    match source {
                        Ok(addr) => listen(addr, true),
                        Err(inherited) => TcpListener::from_std(inherited),
                    }
                })?;
                Ok((runtime, listener))
            });
            let (runtime, listener) = match started {
                Ok(started) => {
                    let _ = ready.send(Ok(()));
                    started
                }
                Err(error) => {
                    let _ = ready.send(Err(error));
                    return ServeSummary::default();
                }
            };
            let shutdown = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            let serve = async move { proxy.serve(listener, shutdown).await };
            runtime
                .block_on(async { tokio::spawn(serve).await })
                .unwrap_or_default()
        })?;
    match bound.recv() {
        Ok(Ok(())) => Ok(worker),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(io::Error::other("the thread ended before binding")),
    }
}
