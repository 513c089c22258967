//! An axum app that proxies WebSocket connections at `/ws` with `wsrelay`, and serves a small
//! test page at `/`.
//!
//! Run it (the bundled echo backend is started in-process unless `--backend` is given):
//!
//! ```text
//! cargo run --example axum
//! cargo run --example axum -- --listen 127.0.0.1:3000 --backend 127.0.0.1:9000
//! ```
//!
//! Then open <http://127.0.0.1:3000/> in a browser, type a message and press Send: it goes
//! through the proxy to the echo backend and comes back in the log. Beside the log, the page
//! shows the proxy's live numbers (tunnels open, handshakes by outcome, bytes each way),
//! which it reads every second from `/stats` (`Proxy::stats` as JSON).
//!
//! Over https, with a certificate and key in PEM files (README's quick start makes a
//! self-signed pair with `openssl`): `cargo run --example axum -- --tls-cert cert.pem
//! --tls-key key.pem`, then open <https://localhost:3000/>; the page then connects with
//! `wss://`.
//!
//! The proxy is a `Proxy` in the router's state; the handler hands it the request and the
//! peer address, and returns what it answers: a `101` (the tunnel then runs on its own task,
//! zero-copy on Linux), the backend's own refusal, or an error status.
//!
//! HTTP/1.1 and HTTP/2 are served on the same port: a client that starts with the HTTP/2
//! preface (h2c with prior knowledge) gets HTTP/2, with RFC 8441 extended CONNECT enabled,
//! so a WebSocket can be one stream of an HTTP/2 connection (`Proxy::upgrade` translates it
//! into an HTTP/1.1 upgrade for the backend). Try it with an HTTP/2 client, e.g. Python's
//! `h2` package (`tests/interop/h2_websocket.py`). Browsers speak HTTP/2 only over TLS, with
//! ALPN `h2`.
//!
//! The app is served with hyper-util's connection builder (what `axum::serve` uses inside)
//! so that two things `axum::serve` leaves out can be set:
//!
//! - a deadline for the request head, `header_read_timeout` (with a timer), so that a client
//!   that sends its head a byte at a time, or nothing at all, is closed at the proxy's
//!   client-head deadline instead of holding a connection forever;
//! - a graceful shutdown on Ctrl-C or SIGTERM: stop accepting, let HTTP requests finish, then
//!   `Proxy::drain` the WebSocket tunnels (which are no longer HTTP connections hyper
//!   tracks).
//!
//! Connections are accepted through `wsrelay::WaitingListener`: a client gets its task (and
//! hyper's state) only once it has sent something; until then it waits in one epoll set
//! shared by all, and is closed if it stays silent past the head deadline.
//!
//! With `--tls-cert`/`--tls-key`, each connection first goes through a TLS acceptor step
//! (`wsrelay::tls::TlsAcceptor::accept`) that shares the head deadline: the handshake and
//! the first bytes of the request must arrive within it, and hyper's head timer gets what is
//! left.
//!
//! Options: `--listen ADDR`, `--backend ADDR`, `--grace SECS` (drain period, default 5),
//! `--head-timeout SECS` (the deadline for a request head, default 10), `--tls-cert PATH
//! --tls-key PATH` (serve https, offering HTTP/2 and HTTP/1.1 by ALPN), `--client-tls` (TLS is
//! terminated in front of this server: `X-Forwarded-Proto: https`, and HTTP/2 requests say
//! `:scheme https`), `--verbose`.

#[path = "support/echo.rs"]
mod echo;
#[path = "support/server.rs"]
mod server;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{Html, IntoResponse};
use axum::routing::{any, get};
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tower::Layer;
use wsrelay::tls::{TlsAcceptor, TlsStream};
use wsrelay::wire::HeadLimits;
use wsrelay::{Proxy, WaitingListener};

const PAGE: &str = include_str!("page.html");

const USAGE: &str = "usage: axum [--listen ADDR] [--backend ADDR] [--grace SECS] \
                     [--head-timeout SECS] [--tls-cert PATH --tls-key PATH] [--client-tls] \
                     [--verbose]";

/// `Proxy::stats` as JSON, for the page's live numbers.
async fn stats(State(proxy): State<Proxy>) -> impl IntoResponse {
    let s = proxy.stats();
    let json = format!(
        concat!(
            "{{\"tunnels_active\":{},\"connections_active\":{},\"tunnels_closed\":{},",
            "\"handshakes\":{{\"switched\":{},\"client_error\":{},\"server_error\":{},",
            "\"other\":{},\"unanswered\":{}}},",
            "\"bytes\":{{\"client_to_backend\":{},\"backend_to_client\":{}}}}}"
        ),
        s.tunnels_active,
        s.connections_active,
        s.tunnels_closed,
        s.handshakes_switched,
        s.handshakes_client_error,
        s.handshakes_server_error,
        s.handshakes_other,
        s.handshakes_unanswered,
        s.bytes_client_to_backend,
        s.bytes_backend_to_client,
    );
    (
        [
            (http::header::CONTENT_TYPE, "application/json"),
            (http::header::CACHE_CONTROL, "no-store"),
        ],
        json,
    )
}

async fn ws(
    State(proxy): State<Proxy>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> impl IntoResponse {
    proxy.upgrade(request, peer).await
}

struct Options {
    listen: SocketAddr,
    backend: Option<String>,
    grace: Duration,
    head_timeout: Duration,
    client_tls: bool,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    verbose: bool,
}

/// Seconds as a duration: finite, and at least `min`.
fn seconds(flag: &str, v: &str, min: f64) -> Result<Duration, String> {
    v.parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= min)
        .map(Duration::from_secs_f64)
        .ok_or(format!("bad {flag} {v:?}: want seconds >= {min}"))
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        listen: ([127, 0, 0, 1], 3000).into(),
        backend: None,
        grace: Duration::from_secs(5),
        head_timeout: Duration::from_secs(10),
        client_tls: false,
        tls_cert: None,
        tls_key: None,
        verbose: false,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                options.listen = v.parse().map_err(|e| format!("bad --listen {v:?}: {e}"))?;
            }
            "--backend" => options.backend = Some(value()?),
            "--grace" => options.grace = seconds(&flag, &value()?, 0.0)?,
            "--head-timeout" => options.head_timeout = seconds(&flag, &value()?, 0.001)?,
            "--client-tls" => options.client_tls = true,
            "--tls-cert" => options.tls_cert = Some(value()?),
            "--tls-key" => options.tls_key = Some(value()?),
            "--verbose" => options.verbose = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.tls_cert.is_some() != options.tls_key.is_some() {
        return Err("--tls-cert and --tls-key go together".to_owned());
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> ExitCode {
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
    server::init_logging(options.verbose);
    let backend = match options.backend {
        Some(backend) => backend,
        None => echo::spawn().await.to_string(),
    };
    let tls = match (&options.tls_cert, &options.tls_key) {
        // HTTP/2 first, HTTP/1.1 for the clients without it; the auto builder serves either.
        (Some(cert), Some(key)) => match TlsAcceptor::builder()
            .certificate(cert, key)
            .alpn([&b"h2"[..], b"http/1.1"])
            .build()
        {
            Ok(acceptor) => Some(acceptor),
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    // The proxy's client-head deadline is the server's to enforce, as hyper reads the head;
    // the proxy applies the size and count limits to what hyper parsed.
    let head_deadline = options.head_timeout;
    let proxy = match Proxy::builder()
        .backend(backend)
        .grace_period(options.grace)
        .client_head(HeadLimits::new().timeout(Some(head_deadline)))
        // `X-Forwarded-Proto: https` (and `:scheme https` over HTTP/2) when TLS is terminated
        // here or in front.
        .client_tls(options.client_tls || tls.is_some())
        .build()
    {
        Ok(proxy) => proxy,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/ws", any(ws))
        .route("/stats", get(stats))
        .with_state(proxy.clone());

    let listener = match server::bind(options.listen) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on {}: {error}", options.listen);
            return ExitCode::FAILURE;
        }
    };
    println!(
        "listening on {}",
        listener.local_addr().unwrap_or(options.listen)
    );
    // A client that has sent nothing holds no task until it does, and is closed at the head
    // deadline if it never does.
    let mut listener = match WaitingListener::new(listener, Some(head_deadline)) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on {}: {error}", options.listen);
            return ExitCode::FAILURE;
        }
    };

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head_deadline);
    // HTTP/2 on the same port (h2c with prior knowledge), with extended CONNECT for
    // WebSockets (RFC 8441): advertised only because `/ws` handles it (rule 30).
    builder.http2().enable_connect_protocol();
    let shared = Arc::new(Shared { builder, app, tls });
    let graceful = GracefulShutdown::new();
    let stop = server::stop_signal();
    tokio::pin!(stop);
    loop {
        let (stream, peer, accepted) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    eprintln!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let watcher = graceful.watcher();
        // The client has spoken: its head (and TLS handshake) are due by the deadline
        // counted from its accept.
        let deadline = accepted + head_deadline;
        tokio::spawn(async move {
            connection(&shared, stream, peer, deadline, watcher).await;
        });
    }
    drop(listener);
    // HTTP requests in progress finish; upgraded connections are the proxy's to drain.
    let _ = tokio::time::timeout(options.grace, graceful.shutdown()).await;
    let summary = proxy.drain().await;
    eprintln!(
        "stopped: {} tunnels drained, {} cut",
        summary.drained, summary.cut
    );
    ExitCode::SUCCESS
}

/// What every connection's task uses, shared.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    app: Router,
    tls: Option<TlsAcceptor>,
}

/// Serves one connection whose first bytes have arrived (before `deadline`): TLS when
/// configured, then HTTP/1.1 or HTTP/2.
async fn connection(
    shared: &Shared,
    stream: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    watcher: Watcher,
) {
    // The handler's `ConnectInfo`, as `into_make_service_with_connect_info` adds it.
    let service = TowerToHyperService::new(Extension(ConnectInfo(peer)).layer(shared.app.clone()));
    // One HTTP/2 connection carries many WebSockets: no Nagle delay on it (an HTTP/1.1
    // tunnel's socket gets TCP_NODELAY from the proxy).
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = &shared.tls else {
        let connection = shared
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        if let Err(_error) = watcher.watch(connection.into_owned()).await {
            tracing::debug!(%peer, error = %_error, "connection ended with an error");
        }
        return;
    };
    let Some(tls) = tls_step(acceptor, stream, deadline, peer).await else {
        return;
    };
    // The head gets what is left of the deadline.
    let mut builder = shared.builder.clone();
    builder
        .http1()
        .header_read_timeout(deadline.saturating_duration_since(Instant::now()));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    if let Err(_error) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(%peer, error = %_error, "connection ended with an error");
    }
}

/// The TLS acceptor step: the handshake, then the first bytes of the request, both before
/// `deadline` (hyper-util's builder waits for those bytes with no timer of its own; they are
/// read into a small buffer that hyper then reads first). `None` when the client failed or
/// was too slow: the connection is dropped. Plain HTTP sent here fails the handshake at its
/// first bytes.
async fn tls_step(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    deadline: Instant,
    peer: SocketAddr,
) -> Option<BufReader<TlsStream<TcpStream>>> {
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(_error)) => {
            tracing::debug!(%peer, error = %_error, "TLS handshake failed");
            return None;
        }
        Err(_) => return None,
    };
    let mut tls = BufReader::with_capacity(1024, tls);
    match tokio::time::timeout_at(deadline, tls.fill_buf()).await {
        Ok(Ok(first)) if !first.is_empty() => Some(tls),
        _ => None,
    }
}
