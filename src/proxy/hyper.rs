//! The front end for hyper and axum handlers (feature `hyper`): [`Proxy::upgrade`].
//!
//! hyper has read the client's head; the shared phases ([`Proxy::negotiate`]) connect to
//! the backend and check its answer *before* the client is answered, so a backend's refusal
//! is relayed as it is and never becomes a `101`. After hyper completes the client's
//! upgrade, the raw `TcpStream` is recovered (with the bytes hyper had already read past the
//! request) so that the tunnel runs zero-copy; when it cannot be, the tunnel runs on the
//! buffered path over hyper's `Upgraded`.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Request, Response};
use http_body_util::Full;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::connection::{Connection, Ready};
use super::flow::{Failure, Verdict};
use super::pool::Connected;
use super::Proxy;
use crate::error::{HandshakeError, HeadError, ProxyError};
use crate::handshake::ClientInfo;
use crate::splice::{Leftovers, Stream};
use crate::trace;
use crate::wire::{self, Framing};

/// The largest refusal body relayed to a hyper client; a larger one becomes a 502.
const MAX_REFUSAL_BODY: usize = 1024 * 1024;

impl Proxy {
    /// Proxies a WebSocket upgrade from inside a hyper or axum handler and returns the
    /// response to send the client. The tunnel runs on a spawned task once hyper has
    /// completed the upgrade; its [`Report`](crate::Report) goes to
    /// [`ProxyBuilder::on_report`](crate::ProxyBuilder::on_report).
    ///
    /// The response is a `101` only when the backend accepted; a backend refusal (`403`,
    /// `426`, ...) is returned as the backend sent it (its body up to 1 MiB), with
    /// `Connection: close`; an invalid client handshake gets its 4xx and the backend is
    /// never contacted; an unreachable or misbehaving backend gives 502 or 504.
    ///
    /// The same rules hold as for [`serve`](Self::serve): the head limits of
    /// [`ProxyBuilder::client_head`](crate::ProxyBuilder::client_head) are applied to the
    /// head hyper parsed (431 past the size or header count), and the tunnel is tracked:
    /// [`drain`](Self::drain) ends it. The head's *deadline* is the server's to enforce, as
    /// it reads the head: hyper's `http1::Builder::header_read_timeout` (with a timer), which
    /// `axum::serve` does not set; the `axum` and `hyper` examples show how.
    ///
    /// Behind `axum::serve` or hyper-util's auto connection builder, and behind a plain hyper
    /// `http1` connection over a `TcpStream`, the tunnel takes the zero-copy path.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::net::SocketAddr;
    /// use axum::extract::{ConnectInfo, Request, State};
    /// use axum::response::IntoResponse;
    /// use axum::{routing::any, Router};
    /// use wsrelay::Proxy;
    ///
    /// async fn ws(
    ///     State(proxy): State<Proxy>,
    ///     ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ///     request: Request,
    /// ) -> impl IntoResponse {
    ///     proxy.upgrade(request, peer).await
    /// }
    ///
    /// # #[tokio::main]
    /// # async fn main() -> std::io::Result<()> {
    /// let proxy = Proxy::new("127.0.0.1:9000");
    /// let app = Router::new().route("/ws", any(ws)).with_state(proxy.clone());
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
    ///     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
    ///     .await?;
    /// proxy.drain().await; // the WebSockets, which axum no longer tracks
    /// # Ok(())
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
    pub async fn upgrade<B>(
        &self,
        mut request: Request<B>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let group = self.inner.drain.clone();
        let admission = self.admit(&group);
        if let Some(refusal) = admission.refused {
            return full(Failure::refused(refusal).response);
        }
        if let Err(e) = self.inner.client_head.check(&request) {
            let error = HandshakeError::ClientHead(e);
            trace::debug!(%peer, status = %error.status(), %error, "handshake refused");
            return full(Failure::client(error).response);
        }
        let info = ClientInfo::new(peer).tls(self.inner.tls);
        let outgoing = match self.prepare(&request, &info) {
            Ok(outgoing) => outgoing,
            Err(error) => return full(error.response()),
        };
        let on_upgrade = hyper::upgrade::on(&mut request);
        drop(request);
        let verdict = self.negotiate(outgoing, peer).await;
        match verdict {
            Verdict::Switch {
                response,
                backend,
                rest,
            } => {
                let handshake = Box::pin(complete(on_upgrade, backend, rest));
                let connection =
                    Connection::new(self, handshake, peer, admission.place, admission.cut);
                tokio::spawn(connection);
                response.map(|()| Full::new(Bytes::new()))
            }
            Verdict::Refuse {
                response,
                framing,
                mut backend,
                rest,
            } => {
                let deadline = self.refusal_deadline();
                match read_body(&mut backend.stream, rest, framing, deadline).await {
                    Ok(body) => {
                        let (mut parts, ()) = response.into_parts();
                        parts.headers.remove(TRANSFER_ENCODING);
                        parts
                            .headers
                            .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
                        Response::from_parts(parts, Full::new(body))
                    }
                    Err(error) => {
                        trace::warning!(%peer, %error, "relaying the backend's refusal failed");
                        full(error.response())
                    }
                }
            }
            Verdict::Fail(failure) => full(failure.response),
        }
    }
}

/// The handshake of a hyper connection after its response: hyper completes the upgrade,
/// and the client's stream is recovered for the tunnel.
async fn complete(
    on_upgrade: OnUpgrade,
    backend: Connected,
    rest: Bytes,
) -> Result<Ready, ProxyError> {
    let upgraded = on_upgrade.await.map_err(|error| {
        trace::debug!(%error, "client upgrade failed");
        ProxyError::Io(std::io::Error::other(error))
    })?;
    let (client, read_buf) = recover(upgraded);
    Ok(Ready {
        client,
        backend: backend.stream,
        leftovers: Leftovers {
            to_backend: read_buf,
            to_client: rest,
        },
        via: backend.via,
    })
}

/// Recovers the `TcpStream` under hyper's `Upgraded`, from hyper-util's auto builder (what
/// `axum::serve` uses) or a plain hyper connection, with the bytes hyper read past the head,
/// and sets `TCP_NODELAY` on it as on every tunnel socket (rule 28; servers do not set it by
/// default).
fn recover(upgraded: Upgraded) -> (Stream, Bytes) {
    let tcp = |stream: TcpStream, read_buf: Bytes| {
        let _ = stream.set_nodelay(true);
        // An empty `read_buf` may still hold hyper's whole read buffer: let it go.
        let read_buf = if read_buf.is_empty() {
            Bytes::new()
        } else {
            read_buf
        };
        (Stream::Tcp(stream), read_buf)
    };
    let upgraded =
        match hyper_util::server::conn::auto::upgrade::downcast::<TokioIo<TcpStream>>(upgraded) {
            Ok(parts) => return tcp(parts.io.into_inner(), parts.read_buf),
            Err(upgraded) => upgraded,
        };
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => tcp(parts.io.into_inner(), parts.read_buf),
        Err(upgraded) => (Stream::new(TokioIo::new(upgraded)), Bytes::new()),
    }
}

/// Reads a refusal's whole body (at most [`MAX_REFUSAL_BODY`] bytes) within `deadline`.
async fn read_body(
    backend: &mut Stream,
    rest: Bytes,
    framing: Framing,
    deadline: std::time::Duration,
) -> Result<Bytes, HandshakeError> {
    let bad = HandshakeError::BackendHead;
    let mut out = Vec::new();
    // One byte more than the cap: a body that reaches it is too large, not complete.
    let mut src = backend.take(MAX_REFUSAL_BODY as u64 + 1);
    let copy = wire::copy_body(&mut src, rest, framing, &mut out);
    match tokio::time::timeout(deadline, copy).await {
        Ok(Ok(_)) if out.len() <= MAX_REFUSAL_BODY => Ok(Bytes::from(out)),
        Ok(Ok(_)) => Err(bad(HeadError::TooLarge {
            limit: MAX_REFUSAL_BODY,
        })),
        Ok(Err(e)) if out.len() > MAX_REFUSAL_BODY => {
            let _ = e;
            Err(bad(HeadError::TooLarge {
                limit: MAX_REFUSAL_BODY,
            }))
        }
        Ok(Err(e)) => Err(bad(HeadError::Io(e))),
        Err(_) => Err(bad(HeadError::Timeout(deadline))),
    }
}

fn full(response: Response<String>) -> Response<Full<Bytes>> {
    response.map(|body| Full::new(Bytes::from(body)))
}
