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
//! through the proxy to the echo backend and comes back in the log.
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
//! Options: `--listen ADDR`, `--backend ADDR`, `--grace SECS` (drain period, default 5),
//! `--head-timeout SECS` (the deadline for a request head, default 10), `--client-tls` (TLS is
//! terminated in front of this server: `X-Forwarded-Proto: https`, and HTTP/2 requests say
//! `:scheme https`), `--verbose`.

#[path = "support/echo.rs"]
mod echo;
#[path = "support/server.rs"]
mod server;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{Html, IntoResponse};
use axum::routing::{any, get};
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::Layer;
use wsrelay::wire::HeadLimits;
use wsrelay::Proxy;

const PAGE: &str = include_str!("page.html");

const USAGE: &str = "usage: axum [--listen ADDR] [--backend ADDR] [--grace SECS] \
                     [--head-timeout SECS] [--client-tls] [--verbose]";

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
            "--verbose" => options.verbose = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
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
    // The proxy's client-head deadline is the server's to enforce, as hyper reads the head;
    // the proxy applies the size and count limits to what hyper parsed.
    let head_deadline = options.head_timeout;
    let proxy = match Proxy::builder()
        .backend(backend)
        .grace_period(options.grace)
        .client_tls(options.client_tls)
        .client_head(HeadLimits::new().timeout(Some(head_deadline)))
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

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head_deadline);
    // HTTP/2 on the same port (h2c with prior knowledge), with extended CONNECT for
    // WebSockets (RFC 8441): advertised only because `/ws` handles it (rule 30).
    builder.http2().enable_connect_protocol();
    let graceful = GracefulShutdown::new();
    let stop = server::stop_signal();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
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
        // The handler's `ConnectInfo`, as `into_make_service_with_connect_info` adds it.
        let service = TowerToHyperService::new(Extension(ConnectInfo(peer)).layer(app.clone()));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // hyper's head timer starts with the first byte: bound the wait for it too.
            let mut first = [0u8; 1];
            match tokio::time::timeout(head_deadline, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            // One HTTP/2 connection carries many WebSockets: no Nagle delay on it (an HTTP/1.1
            // tunnel's socket gets TCP_NODELAY from the proxy).
            let _ = stream.set_nodelay(true);
            // Under TLS, the acceptor goes here, offering ALPN `h2` and `http/1.1`; the auto
            // builder then serves whichever was chosen.
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(_error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %_error, "connection ended with an error");
            }
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
