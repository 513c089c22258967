//! The front end for hyper and axum handlers (feature `hyper`): [`Proxy::upgrade`].
//!
//! hyper has read the client's head; the shared phases ([`Proxy::negotiate`]) connect to
//! the backend and check its answer *before* the client is answered, so a backend's refusal
//! is relayed as it is and never becomes a `101`. After hyper completes the client's
//! upgrade, the raw `TcpStream` is recovered (with the bytes hyper had already read past the
//! request) so that the tunnel runs zero-copy; when it cannot be, the tunnel runs on the
//! buffered path over hyper's `Upgraded`.
//!
//! # HTTP/2 (RFC 8441)
//!
//! An extended CONNECT (`:protocol websocket`, hyper's `ext::Protocol`) is translated by
//! [`Rewriter::rewrite_extended_connect`](crate::handshake::Rewriter::rewrite_extended_connect)
//! with a key from `key.rs`, negotiated like any upgrade, and answered `200`; the stream's
//! DATA then flows through the buffered tunnel over hyper's upgraded stream. What hyper 1.x
//! makes of the stream's events (read in `hyper/src/proto/h2/upgrade.rs`, tested in
//! `tests/http2.rs`):
//!
//! - the client's END_STREAM is an EOF on read: the tunnel half-closes toward the backend
//!   (rule 34); the backend's EOF is a `shutdown` of the stream: END_STREAM once the data
//!   before it is sent;
//! - a RST_STREAM with `NO_ERROR` or `CANCEL` is an EOF on read too (hyper cannot tell it
//!   apart from END_STREAM), and makes every later write fail: the backend gets its EOF at
//!   once and the tunnel closes both sides at the backend's next byte or its own close, as
//!   for a TCP client that closed its socket (and by the fin timeout otherwise); any other
//!   error code is a read error: both sides close at once;
//! - when the tunnel ends on an error (a backend reset), dropping the stream ends it with
//!   END_STREAM and then RST_STREAM(NO_ERROR) or CANCEL: hyper has no way to send another
//!   error code on an upgraded stream, so the client sees its stream end, without a WebSocket
//!   close frame;
//! - flow control: hyper reads DATA into the stream's receive window (its server default is
//!   1 MiB per stream and 1 MiB per connection, `http2::Builder::initial_stream_window_size`
//!   and `initial_connection_window_size`) and gives the window back only as the tunnel reads,
//!   which it does only as the backend accepts bytes; toward the client, each write is copied
//!   into a channel of two, then into h2's send queue, which takes one more only once the
//!   client's window lets the previous one go. A stream therefore holds at most its receive
//!   window plus about four tunnel buffers (64 KiB each by default), whatever the peers do.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::connection::{Connection, Ready};
use super::flow::{Failure, Prepared, Verdict};
use super::limits::Hold;
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
    /// Over HTTP/2, an RFC 8441 extended CONNECT with `:protocol websocket` is accepted
    /// ([rules](crate::rules) §6): it is translated into an HTTP/1.1 upgrade with the proxy's
    /// own `Sec-WebSocket-Key`, the backend's `101` is checked against it, and the client gets
    /// `200`; the stream's data takes the buffered tunnel, under HTTP/2 flow control. A bad
    /// request or a refusal is that stream's response, and the connection's other streams go
    /// on. The server must advertise extended CONNECT: `axum::serve` does with axum's `http2`
    /// feature; with hyper or hyper-util's builder, call `http2().enable_connect_protocol()`
    /// (the `axum` and `hyper` examples do).
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
    pub async fn upgrade<B>(&self, request: Request<B>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let h2 = request.version() >= Version::HTTP_2;
        let span = trace::connection_span(peer);
        let response = trace::in_span(&span, self.answer_upgrade(request, peer, &span)).await;
        // Counted as it is answered: a 101 (an HTTP/2 tunnel's 200, which a refusal never
        // is there) opens a tunnel.
        let status = response.status();
        let switched =
            status == StatusCode::SWITCHING_PROTOCOLS || (h2 && status == StatusCode::OK);
        self.inner.stats.handshake(Some(status), switched);
        response
    }

    /// [`upgrade`](Self::upgrade), in the connection's `span`.
    async fn answer_upgrade<B>(
        &self,
        mut request: Request<B>,
        peer: SocketAddr,
        span: &trace::Span,
    ) -> Response<Full<Bytes>> {
        // Over HTTP/2, a response carries no connection-specific field (RFC 9113 §8.2.2).
        let h2 = request.version() >= Version::HTTP_2;
        let respond = |response| full(response, h2);
        let group = self.inner.drain.clone();
        let admission = self.admit(&group);
        if let Some(refusal) = admission.refused {
            return respond(Failure::refused(refusal).response);
        }
        // The per-IP limits, on the address the handler was given.
        let hold = match self.limit_client(peer.ip()) {
            Ok(hold) => hold,
            Err(limited) => return respond(limited.failure().response),
        };
        if let Err(e) = self.inner.client_head.check(&request) {
            let error = HandshakeError::ClientHead(e);
            trace::debug!(%peer, status = %error.status(), %error, "handshake refused");
            return respond(Failure::client(error).response);
        }
        let info = ClientInfo::new(peer).tls(self.inner.tls);
        let prepared = match extended_connect(&request) {
            Some(protocol) => self.prepare_extended_connect(&request, protocol, &info),
            None => self.prepare(&request, &info),
        };
        let outgoing = match prepared {
            Ok(outgoing) => outgoing,
            Err(error) => return respond(error.response()),
        };
        let on_upgrade = hyper::upgrade::on(&mut request);
        drop(request);
        let verdict = self.negotiate(outgoing, peer, None).await;
        match verdict {
            Verdict::Switch {
                response,
                backend,
                rest,
            } => {
                let handshake = Box::pin(complete(on_upgrade, backend, rest, hold));
                let (place, cut, span) = (admission.place, admission.cut, span.clone());
                let connection = Connection::new(self, handshake, peer, place, cut, span);
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
                        respond(error.response())
                    }
                }
            }
            Verdict::Fail(failure) => respond(failure.response),
        }
    }
}

impl Proxy {
    /// The first shared phase for an HTTP/2 extended CONNECT: route, validate and translate,
    /// with a fresh key (no I/O).
    fn prepare_extended_connect<B>(
        &self,
        request: &Request<B>,
        protocol: &str,
        info: &ClientInfo,
    ) -> Result<Prepared, HandshakeError> {
        self.prepare_with(request, info, |rewriter| {
            let key = super::key::generate();
            rewriter.rewrite_extended_connect(request, protocol, info, key)
        })
    }
}

/// The `:protocol` of an extended CONNECT (RFC 8441 §4), which hyper hands over as an
/// extension; `None` for any other request.
fn extended_connect<B>(request: &Request<B>) -> Option<&str> {
    if request.method() != Method::CONNECT {
        return None;
    }
    request
        .extensions()
        .get::<hyper::ext::Protocol>()
        .map(hyper::ext::Protocol::as_str)
}

/// The handshake of a hyper connection after its response: hyper completes the upgrade,
/// and the client's stream is recovered for the tunnel.
async fn complete(
    on_upgrade: OnUpgrade,
    backend: Connected,
    rest: Bytes,
    hold: Option<Hold>,
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
        hold,
        client_addr: None,
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

/// The proxy's own answer as a hyper response; for an HTTP/2 client without the fields
/// HTTP/2 forbids (`Connection`, and the `Upgrade` of a 426).
fn full(mut response: Response<String>, h2: bool) -> Response<Full<Bytes>> {
    if h2 {
        let headers = response.headers_mut();
        headers.remove(CONNECTION);
        headers.remove(UPGRADE);
    }
    response.map(|body| Full::new(Bytes::from(body)))
}
