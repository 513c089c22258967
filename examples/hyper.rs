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
//! Each connection is served by hyper's `http1` connection with upgrades enabled; the
//! service passes `/ws` requests to `Proxy::upgrade`, which recovers the raw `TcpStream`
//! after the upgrade so the tunnel runs zero-copy.

#[path = "support/echo.rs"]
mod echo;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
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
    let mut listen: SocketAddr = ([127, 0, 0, 1], 3001).into();
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
                eprintln!("usage: hyper [--listen ADDR] [--backend ADDR]");
                return ExitCode::from(2);
            }
        }
    }
    let backend = match backend {
        Some(backend) => backend,
        None => echo::spawn().await.to_string(),
    };
    let proxy = Proxy::new(backend);
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", listener.local_addr().unwrap_or(listen));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| route(proxy.clone(), peer, request));
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(error) = connection.await {
                eprintln!("connection from {peer}: {error}");
            }
        });
    }
}
