//! The `proxy` example's `--metrics ADDR`: wsrelay's metrics (feature `metrics`, through the
//! `metrics` facade) rendered by `metrics-exporter-prometheus` and served as Prometheus text
//! at `http://ADDR/metrics` by a small hyper HTTP/1.1 server.
//!
//! Include it with `#[path = "support/metrics.rs"] mod metrics;`.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use wsrelay::metrics::{
    BACKEND_CONNECT_DURATION_SECONDS, CONNECT_DURATION_BUCKETS, TUNNEL_DURATION_BUCKETS,
    TUNNEL_DURATION_SECONDS,
};

/// The Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `addr`, installs the Prometheus recorder (once per process) and serves `/metrics`
/// on a task of the current runtime; the address bound. Must run before the proxy handles
/// connections, so that every series sees them.
///
/// # Errors
///
/// The address cannot be bound (in use, not local), or a recorder is already installed.
pub fn serve(addr: SocketAddr) -> io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let bound = listener.local_addr()?;
    let handle = install().map_err(io::Error::other)?;
    tokio::spawn(accept_loop(listener, handle));
    Ok(bound)
}

/// The recorder, with buckets for the two histograms (else they render as summaries).
fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let tunnels = Matcher::Full(TUNNEL_DURATION_SECONDS.into());
    let connects = Matcher::Full(BACKEND_CONNECT_DURATION_SECONDS.into());
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(tunnels, TUNNEL_DURATION_BUCKETS)?
        .set_buckets_for_metric(connects, CONNECT_DURATION_BUCKETS)?
        .install_recorder()?;
    wsrelay::metrics::describe();
    Ok(handle)
}

async fn accept_loop(listener: TcpListener, handle: PrometheusHandle) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors, say: the proxy's connections come first.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let handle = handle.clone();
                async move { Ok::<_, Infallible>(answer(&request, &handle)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `GET /metrics` (or `HEAD`): the text; anything else: 404 or 405.
fn answer(request: &Request<Incoming>, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found: try /metrics\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
    }
    // Histograms and summaries are kept in buckets that upkeep drains; a scrape is as good a
    // moment as any.
    handle.run_upkeep();
    let mut response = Response::new(Full::new(Bytes::from(handle.render())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    response
}
