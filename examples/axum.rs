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

#[path = "support/echo.rs"]
mod echo;

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::Html;
use axum::routing::{any, get};
use axum::Router;
use bytes::Bytes;
use http_body_util::Full;
use wsrelay::Proxy;

const PAGE: &str = include_str!("page.html");

async fn ws(
    State(proxy): State<Proxy>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> http::Response<Full<Bytes>> {
    proxy.upgrade(request, peer).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 3000).into();
    let mut backend = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--listen", Some(v)) => match v.parse() {
                Ok(addr) => listen = addr,
                Err(e) => {
                    eprintln!("bad --listen {v:?}: {e}");
                    return ExitCode::from(2);
                }
            },
            ("--backend", Some(v)) => backend = Some(v),
            _ => {
                eprintln!("usage: axum [--listen ADDR] [--backend ADDR]");
                return ExitCode::from(2);
            }
        }
    }
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .init();
    let backend = match backend {
        Some(backend) => backend,
        None => echo::spawn().await.to_string(),
    };
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/ws", any(ws))
        .with_state(Proxy::new(backend));

    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", listener.local_addr().unwrap_or(listen));
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    match axum::serve(listener, service).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("server error: {error}");
            ExitCode::FAILURE
        }
    }
}
