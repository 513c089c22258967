//! The proxy flow from a hyper or axum handler (feature `hyper`).
//!
//! The backend is connected and its answer checked *before* the client is answered, so a
//! backend's refusal is relayed as it is and never becomes a `101`. After the client's
//! upgrade completes, the raw `TcpStream` is recovered from hyper (with the bytes hyper had
//! already read past the request) so that the zero-copy path runs; when it cannot be, the
//! tunnel runs on the buffered path over hyper's `Upgraded`.

use std::future::pending;

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::body;
use crate::error::plain_response;
use crate::handshake::{Answer, ClientInfo};
use crate::proxy::{backend_failure, Checked, Proxy};
use crate::splice::{tunnel, Leftovers};
use crate::trace;

/// The largest refusal body relayed to a hyper client; a larger one becomes a 502.
const MAX_REFUSAL_BODY: usize = 1024 * 1024;

impl Proxy {
    /// Proxies a WebSocket upgrade from inside a hyper or axum handler and returns the
    /// response to send the client. The tunnel runs on a spawned task once hyper has
    /// completed the upgrade; its [`Report`](crate::Report) goes to
    /// [`ProxyBuilder::on_report`](crate::ProxyBuilder::on_report).
    ///
    /// The response is a `101` only when the backend accepted; a backend refusal (`403`,
    /// `426`, ...) is returned as the backend sent it, with `Connection: close`; an invalid
    /// client handshake gets its 4xx and the backend is never contacted; an unreachable or
    /// misbehaving backend gives 502 or 504.
    ///
    /// Behind `axum::serve` or hyper-util's auto connection builder, and behind a plain hyper
    /// `http1` connection over a `TcpStream`, the tunnel takes the zero-copy path.
    ///
    /// The tunnel task is not tied to the server's graceful shutdown: it ends with its peers,
    /// its timers ([`SpliceConfig`](crate::SpliceConfig)) or the runtime.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::net::SocketAddr;
    /// use axum::extract::{ConnectInfo, Request, State};
    /// use axum::{routing::any, Router};
    /// use wsrelay::Proxy;
    ///
    /// async fn ws(
    ///     State(proxy): State<Proxy>,
    ///     ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ///     request: Request,
    /// ) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    ///     proxy.upgrade(request, peer).await
    /// }
    ///
    /// # #[tokio::main]
    /// # async fn main() -> std::io::Result<()> {
    /// let app = Router::new()
    ///     .route("/ws", any(ws))
    ///     .with_state(Proxy::new("127.0.0.1:9000"));
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// axum::serve(
    ///     listener,
    ///     app.into_make_service_with_connect_info::<SocketAddr>(),
    /// )
    /// .await
    /// # }
    /// ```
    pub async fn upgrade<B>(
        &self,
        mut request: Request<B>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let Some(active) = self.enter() else {
            trace::warning!("connection refused: tunnel limit reached");
            return full(plain_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections\n".to_owned(),
            ));
        };
        let info = ClientInfo::new(peer).tls(self.inner.tls);
        let outgoing = match self.inner.rewriter.rewrite(&request, &info) {
            Ok(outgoing) => outgoing,
            Err(error) => {
                trace::debug!(%peer, status = %error.status(), %error, "handshake refused");
                return full(error.response());
            }
        };
        let on_upgrade = hyper::upgrade::on(&mut request);
        drop(request);

        let Checked {
            mut backend,
            answer,
            rest,
        } = match self.exchange(&outgoing).await {
            Ok(checked) => checked,
            Err(e) => return full(backend_failure(e).0),
        };
        match answer {
            Answer::Switch(response) => {
                let proxy = self.clone();
                tokio::spawn(async move {
                    let _active = active;
                    let upgraded = match on_upgrade.await {
                        Ok(upgraded) => upgraded,
                        Err(_error) => {
                            trace::debug!(%peer, error = %_error, "client upgrade failed");
                            return;
                        }
                    };
                    let config = &proxy.inner.splice;
                    let report = match recover(upgraded) {
                        (Client::Tcp(client), read_buf) => {
                            let leftovers = Leftovers {
                                to_backend: read_buf,
                                to_client: rest,
                            };
                            tunnel(client, backend, leftovers, config, pending()).await
                        }
                        (Client::Upgraded(client), read_buf) => {
                            let leftovers = Leftovers {
                                to_backend: read_buf,
                                to_client: rest,
                            };
                            tunnel(client, backend, leftovers, config, pending()).await
                        }
                    };
                    proxy.finish(&report, peer);
                });
                let (parts, ()) = response.into_parts();
                Response::from_parts(parts, Full::new(Bytes::new()))
            }
            Answer::Refuse(response) => {
                trace::debug!(%peer, status = %response.status(), "backend refused the upgrade");
                match read_refusal_body(&mut backend, &response, rest, self).await {
                    Ok(body) => {
                        let (mut parts, ()) = response.into_parts();
                        parts.headers.remove(TRANSFER_ENCODING);
                        parts
                            .headers
                            .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
                        Response::from_parts(parts, Full::new(body))
                    }
                    Err(error) => full(error.response()),
                }
            }
        }
    }
}

/// The client side of an upgraded connection.
enum Client {
    Tcp(TcpStream),
    Upgraded(TokioIo<Upgraded>),
}

/// Recovers the `TcpStream` under hyper's `Upgraded`, from hyper-util's auto builder (what
/// `axum::serve` uses) or a plain hyper connection, with the bytes hyper read past the head,
/// and sets `TCP_NODELAY` on it as on every tunnel socket (PROTOCOL.md rule 28; servers do
/// not set it by default).
fn recover(upgraded: Upgraded) -> (Client, Bytes) {
    let tcp = |stream: TcpStream| {
        let _ = stream.set_nodelay(true);
        Client::Tcp(stream)
    };
    let upgraded =
        match hyper_util::server::conn::auto::upgrade::downcast::<TokioIo<TcpStream>>(upgraded) {
            Ok(parts) => return (tcp(parts.io.into_inner()), parts.read_buf),
            Err(upgraded) => upgraded,
        };
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => (tcp(parts.io.into_inner()), parts.read_buf),
        Err(upgraded) => (Client::Upgraded(TokioIo::new(upgraded)), Bytes::new()),
    }
}

async fn read_refusal_body(
    backend: &mut TcpStream,
    response: &Response<()>,
    rest: Bytes,
    proxy: &Proxy,
) -> Result<Bytes, crate::HandshakeError> {
    let bad = |e| crate::HandshakeError::BackendHead(e);
    let framing = body::framing(response).map_err(bad)?;
    let mut out = Vec::new();
    let mut src = backend.take(MAX_REFUSAL_BODY as u64);
    let copy = body::copy_body(&mut src, rest, framing, &mut out);
    let limit = proxy.refusal_deadline();
    match tokio::time::timeout(limit, copy).await {
        Ok(Ok(_)) if out.len() <= MAX_REFUSAL_BODY => Ok(Bytes::from(out)),
        Ok(Ok(_)) => Err(bad(crate::HeadError::TooLarge {
            limit: MAX_REFUSAL_BODY,
        })),
        Ok(Err(e)) => Err(bad(crate::HeadError::Io(e))),
        Err(_) => Err(bad(crate::HeadError::Timeout(limit))),
    }
}

fn full(response: Response<String>) -> Response<Full<Bytes>> {
    response.map(|body| Full::new(Bytes::from(body)))
}
