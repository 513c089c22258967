//! A bare hyper 1.x server that proxies WebSocket connections at `/ws` with `wsrelay`, and
//! serves a small test page at `/`.
//!
//! Run it (the bundled echo backend is started in-process unless `--backend` is given):
//!
//! ```text
//! cargo run --example hyper
//! cargo run --example hyper -- --listen 127.0.0.1:3001 --backend 127.0.0.1:9000
//! ```
//!
//! Then open <http://127.0.0.1:3001/> in a browser, type a message and press Send.
//!
//! Each connection is served by hyper-util's auto connection builder: HTTP/1.1 with upgrades
//! (`Proxy::upgrade` recovers the raw `TcpStream` after the upgrade, so the tunnel runs
//! zero-copy), or HTTP/2 for a client that starts with its preface (h2c with prior
//! knowledge), with RFC 8441 extended CONNECT enabled so that a WebSocket can be one stream of
//! an HTTP/2 connection. The service passes `/ws` requests to `Proxy::upgrade`.
//!
//! Two settings a production server needs and hyper leaves off: a deadline for the request
//! head (`header_read_timeout`, which needs a timer), so that a client trickling its head or
//! sending nothing is closed at the proxy's client-head deadline; and a graceful shutdown on
//! Ctrl-C or SIGTERM, which stops accepting, lets HTTP requests finish, then drains the
//! WebSocket tunnels with `Proxy::drain`.
//!
//! Options: `--listen ADDR`, `--backend ADDR`, `--grace SECS` (drain period, default 5).

#[path = "support/echo.rs"]
mod echo;
#[path = "support/server.rs"]
mod server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::watch;
use wsrelay::Proxy;

const PAGE: &str = include_str!("page.html");

async fn route(
    proxy: Proxy,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match request.uri().path() {
        "/ws" => proxy.upgrade(request, peer).await,
        "/" => Response::builder()
            .header("content-type", "text/html; charset=utf-8")
            .body(Full::new(Bytes::from_static(PAGE.as_bytes())))
            .expect("static response"),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"not found\n")))
            .expect("static response"),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    const USAGE: &str = "usage: hyper [--listen ADDR] [--backend ADDR] [--grace SECS]";
    let mut listen: SocketAddr = ([127, 0, 0, 1], 3001).into();
    let mut backend = None;
    let mut grace = Duration::from_secs(5);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        let parsed = match (flag.as_str(), args.next()) {
            ("--listen", Some(v)) => v.parse().map(|addr| listen = addr).is_ok(),
            ("--backend", Some(v)) => {
                backend = Some(v);
                true
            }
            ("--grace", Some(v)) => v
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| grace = Duration::from_secs_f64(s))
                .is_some(),
            _ => false,
        };
        if !parsed {
            eprintln!("bad or incomplete argument {flag:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    server::init_logging(false);
    let backend = match backend {
        Some(backend) => backend,
        None => echo::spawn().await.to_string(),
    };
    let proxy = match Proxy::builder()
        .backend(backend)
        .grace_period(grace)
        .build()
    {
        Ok(proxy) => proxy,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let listener = match server::bind(listen) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", listener.local_addr().unwrap_or(listen));

    // The proxy's client-head deadline (10 s by default), enforced by hyper as it reads heads.
    let head_deadline = wsrelay::wire::HeadLimits::default()
        .get_timeout()
        .unwrap_or(Duration::from_secs(10));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head_deadline);
    // HTTP/2 on the same port, with extended CONNECT, which `/ws` handles (rule 30).
    builder.http2().enable_connect_protocol();
    // Each connection task holds a receiver; a send asks them to finish gracefully, and
    // `closed` completes once every task has.
    let (graceful, _) = watch::channel(());
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
        let proxy = proxy.clone();
        let service = service_fn(move |request| route(proxy.clone(), peer, request));
        // Many WebSockets may share one HTTP/2 connection: no Nagle delay on it.
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let mut stopping = graceful.subscribe();
        tokio::spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(_error) = result {
                tracing::debug!(%peer, error = %_error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // HTTP requests in progress finish; upgraded connections are the proxy's to drain.
    let _ = graceful.send(());
    let _ = tokio::time::timeout(grace, graceful.closed()).await;
    let summary = proxy.drain().await;
    eprintln!(
        "stopped: {} tunnels drained, {} cut",
        summary.drained, summary.cut
    );
    ExitCode::SUCCESS
}
