//! The proxy under test, on `127.0.0.1:0`: [`Running`] for `Proxy::serve` on a bare
//! listener, and (feature `hyper`) the two front ends that call `Proxy::upgrade`, an axum app
//! and a bare hyper 1 server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wsrelay::{Proxy, ProxyBuilder, ServeSummary};

use super::{within, within_for, Backend};

/// A proxy running [`Proxy::serve`] on `127.0.0.1:0` until [`Running::stop`], or until it is
/// dropped (which signals the shutdown too).
pub struct Running {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The proxy (for `active_tunnels`).
    pub proxy: Proxy,
    stop: Option<oneshot::Sender<()>>,
    seen: Option<oneshot::Receiver<()>>,
    task: Option<JoinHandle<(ServeSummary, Instant)>>,
}

impl Running {
    /// Builds `builder` and serves it.
    pub async fn start(builder: ProxyBuilder) -> Running {
        Self::serve(builder.build().expect("a valid proxy configuration")).await
    }

    /// Serves `proxy`.
    pub async fn serve(proxy: Proxy) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (stop, stopped) = oneshot::channel::<()>();
        let (seen_tx, seen) = oneshot::channel::<()>();
        let server = proxy.clone();
        let task = tokio::spawn(async move {
            let summary = server
                .serve(listener, async move {
                    let _ = stopped.await;
                    let _ = seen_tx.send(());
                })
                .await;
            (summary, Instant::now())
        });
        Running {
            addr,
            proxy,
            stop: Some(stop),
            seen: Some(seen),
            task: Some(task),
        }
    }

    /// Signals shutdown and waits (up to [`STEP`](super::STEP)) until `serve` has seen it, so
    /// that from then on every tunnel that ends is counted by the drain.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(seen) = self.seen.take() {
            within("serve to see the shutdown", seen)
                .await
                .expect("serve polls its shutdown future");
        }
    }

    /// Signals shutdown (if not done yet) and waits (up to `limit`) for `serve` to return;
    /// its summary and the moment it returned.
    pub async fn stop(mut self, limit: Duration) -> (ServeSummary, Instant) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("serve task");
        within_for(limit, "serve to return after shutdown", task)
            .await
            .expect("serve does not panic")
    }
}

/// A proxy builder with `backend` as its only backend and the default configuration.
pub fn builder_for(backend: &Backend) -> ProxyBuilder {
    Proxy::builder().backend(backend.addr.to_string())
}

/// An axum app on `127.0.0.1:0` whose `/ws` handler calls `Proxy::upgrade` with `proxy`, as
/// `examples/axum.rs` does, served by `axum::serve` (HTTP/1.1, and HTTP/2 with extended
/// CONNECT through axum's `http2` feature); its address.
#[cfg(feature = "hyper")]
pub async fn axum_front(proxy: Proxy) -> SocketAddr {
    use axum::extract::{ConnectInfo, Request, State};
    use axum::routing::any;

    async fn ws(
        State(proxy): State<Proxy>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        request: Request,
    ) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        proxy.upgrade(request, peer).await
    }

    let app = axum::Router::new().route("/ws", any(ws)).with_state(proxy);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    addr
}

/// A bare hyper 1 http1 server on `127.0.0.1:0` whose service calls `Proxy::upgrade` with
/// `proxy` for every request; its address.
#[cfg(feature = "hyper")]
pub async fn hyper_front(proxy: Proxy) -> SocketAddr {
    use std::convert::Infallible;

    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.upgrade(request, peer).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A bare hyper 1 server on `127.0.0.1:0` served as `examples/hyper.rs` serves it: hyper-util's
/// auto builder, HTTP/1.1 with upgrades and HTTP/2 (prior knowledge) with extended CONNECT,
/// every request going to `Proxy::upgrade` with `proxy`; its address.
#[cfg(feature = "hyper")]
pub async fn hyper_auto_front(proxy: Proxy) -> SocketAddr {
    use std::convert::Infallible;

    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().enable_connect_protocol();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let proxy = proxy.clone();
            let builder = builder.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.upgrade(request, peer).await) }
                });
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}
