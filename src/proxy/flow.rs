//! The phases of one upgrade, written once for every front end.
//!
//! [`Proxy::prepare`] and [`Proxy::negotiate`] are the part every front end shares: choose
//! the route, rewrite the client's head with its config, connect to a backend of its pool
//! with failover, exchange heads, check the answer, and say what the client gets: a
//! [`Verdict`]. A front end reads the client's head its own way before it
//! (the byte-stream front end below with [`wire::read_request_head`]; hyper's with its own
//! parser, see `hyper.rs`) and answers its own way after it.
//!
//! [`handshake`] is the front end for any byte stream that speaks HTTP/1.1 (a TCP socket, a
//! TLS stream, a Unix socket): read a PROXY protocol header first when the proxy expects one
//! (feature `proxy-protocol`, `src/proxy_protocol.rs`), terminate TLS when the proxy has an
//! acceptor (feature `rustls`, `src/tls.rs`; the header, the handshake and the head share one
//! deadline), read the head
//! within its limits, negotiate while watching the client, then write the `101` (and hand
//! both streams to the tunnel), relay the backend's refusal, or answer with the proxy's own
//! error, and close gracefully.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::connection::Ready;
use super::pool::{ConnectError, Connected};
use super::{Proxy, Refusal};
use crate::error::{HandshakeError, HeadError, ProxyError};
use crate::handshake::{Answer, ClientInfo, Outgoing, Rewriter};
use crate::splice::{Leftovers, Stream};
use crate::trace;
use crate::wire::{self, encode_plain, plain_response, Framing};

/// How long an error response may take to write, and how long a closing connection is
/// drained so that the response is not destroyed by a reset (nginx's `lingering_close`).
const LINGER: Duration = Duration::from_secs(2);
/// At most this much is read and discarded while lingering.
const LINGER_BYTES: usize = 1024 * 1024;
/// The bound on relaying a refusal's body when the backend head has no deadline.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(60);
/// At most this much of what the client sends while the backend answers (its first frames)
/// is read and kept for the tunnel; past it the client is simply not read (back-pressure).
const MAX_EARLY: usize = 4 * 1024;

impl Proxy {
    /// Whether a byte-stream client starts with its request head, and not with a PROXY
    /// protocol header or a TLS handshake (which its first read must not take).
    pub(crate) fn head_comes_first(&self) -> bool {
        #[cfg(feature = "proxy-protocol")]
        if self.inner.proxy_protocol {
            return false;
        }
        #[cfg(feature = "rustls")]
        if self.inner.acceptor.is_some() {
            return false;
        }
        true
    }
}

/// What the client gets, decided by [`Proxy::negotiate`].
pub(crate) enum Verdict {
    /// The backend switched: send `response` (the `101` for the client), then tunnel.
    Switch {
        response: Response<()>,
        backend: Connected,
        /// Bytes the backend sent after its head: the first frames for the client.
        rest: Bytes,
    },
    /// The backend refused: relay `response` and its body (which starts with `rest` and is
    /// framed as `framing`), then close both connections (rule 18).
    Refuse {
        response: Response<()>,
        framing: Framing,
        backend: Connected,
        rest: Bytes,
    },
    /// The proxy answers by itself and closes.
    Fail(Failure),
}

/// A request ready for a backend: the rewritten head, and the route whose pool serves it.
pub(crate) struct Prepared {
    pub(crate) outgoing: Outgoing,
    route: usize,
}

/// The proxy's own answer: a complete response and the error it stands for.
pub(crate) struct Failure {
    pub(crate) response: Response<String>,
    /// With nothing recorded as sent yet; see [`sent`](Self::sent).
    error: ProxyError,
}

impl Failure {
    pub(crate) fn new(response: Response<String>, error: ProxyError) -> Self {
        Failure { response, error }
    }

    /// The client's request was refused (a 4xx).
    pub(crate) fn client(error: HandshakeError) -> Self {
        Failure::new(error.response(), ProxyError::Client { error, sent: None })
    }

    /// The connection was not admitted (503).
    pub(crate) fn refused(refusal: Refusal) -> Self {
        let (body, error) = match refusal {
            Refusal::Overloaded => {
                trace::warning!("connection refused: tunnel limit reached");
                (
                    "too many connections\n",
                    ProxyError::Overloaded { sent: None },
                )
            }
            Refusal::Draining => ("shutting down\n", ProxyError::ShuttingDown { sent: None }),
        };
        let mut response = plain_response(StatusCode::SERVICE_UNAVAILABLE, body.to_owned());
        if refusal == Refusal::Overloaded {
            // Another connection is likely to close soon (RFC 9110 §10.2.3).
            let retry = http::header::HeaderValue::from_static("1");
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, retry);
        }
        Failure::new(response, error)
    }

    /// Talking to the backend failed: 502, or 504 for a timeout.
    fn backend(error: HandshakeError) -> Self {
        trace::warning!(status = %error.status(), %error, "backend handshake failed");
        Failure::new(error.response(), ProxyError::Backend { error, sent: None })
    }

    /// No backend could be used: 502, or 504 for a timeout. The pool has logged why.
    fn connect(error: ConnectError) -> Self {
        match error {
            ConnectError::Io(error) => {
                let (status, body) = if error.kind() == io::ErrorKind::TimedOut {
                    (StatusCode::GATEWAY_TIMEOUT, "backend timed out\n")
                } else {
                    (StatusCode::BAD_GATEWAY, "backend unreachable\n")
                };
                let response = plain_response(status, body.to_owned());
                Failure::new(response, ProxyError::Connect { error, sent: None })
            }
            // Rule 36: a 502, never a retry without TLS.
            ConnectError::Tls(error) => {
                let body = "backend TLS handshake failed\n".to_owned();
                let response = plain_response(StatusCode::BAD_GATEWAY, body);
                Failure::new(response, ProxyError::BackendTls { error, sent: None })
            }
            ConnectError::Full => {
                let body = "every backend is at its connection limit\n".to_owned();
                let response = plain_response(StatusCode::SERVICE_UNAVAILABLE, body);
                Failure::new(response, ProxyError::Overloaded { sent: None })
            }
        }
    }

    /// Plain HTTP on a TLS port (rule 35): 400, as nginx's 497.
    #[cfg(feature = "rustls")]
    fn plain_http() -> Self {
        let body = "plain HTTP request sent to a TLS port\n".to_owned();
        let response = plain_response(StatusCode::BAD_REQUEST, body);
        let error = crate::error::TlsError::NotTls;
        Failure::new(response, ProxyError::ClientTls { error, sent: None })
    }

    /// The error, recording whether the response reached the client.
    pub(crate) fn into_error(self, sent: bool) -> ProxyError {
        let mut error = self.error;
        if sent {
            error.set_sent(self.response.status());
        }
        error
    }
}

impl Proxy {
    /// The first shared phase: choose the route, validate the client's head and rewrite it
    /// with the route's config (no I/O). `rewrite` is the rewriter's method for the kind of
    /// request (HTTP/1.1 upgrade or HTTP/2 extended CONNECT).
    ///
    /// # Errors
    ///
    /// The 4xx for the client (the backend is never contacted): 404 when no route takes the
    /// request.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn prepare_with<B>(
        &self,
        request: &Request<B>,
        info: &ClientInfo,
        rewrite: impl FnOnce(&Rewriter) -> Result<Outgoing, HandshakeError>,
    ) -> Result<Prepared, HandshakeError> {
        let routes = &self.inner.routes;
        let result = match routes.select(request) {
            Some(route) => {
                rewrite(&routes.get(route).rewriter).map(|outgoing| Prepared { outgoing, route })
            }
            None => Err(HandshakeError::NotRouted),
        };
        if let Err(_error) = &result {
            trace::debug!(peer = %info.peer(), status = %_error.status(), error = %_error, "handshake refused");
        }
        result
    }

    /// [`prepare_with`](Self::prepare_with) for an HTTP/1.1 upgrade.
    pub(crate) fn prepare<B>(
        &self,
        request: &Request<B>,
        info: &ClientInfo,
    ) -> Result<Prepared, HandshakeError> {
        self.prepare_with(request, info, |rewriter| rewriter.rewrite(request, info))
    }

    /// The other shared phases: connect to a backend of the route, exchange heads and check
    /// the answer. Nothing is written to the client. `peer` is the client's address, `local`
    /// the one it connected to, if known (for the PROXY protocol header to backends).
    #[cfg_attr(
        not(all(feature = "tracing", feature = "proxy-protocol")),
        allow(unused_variables)
    )]
    pub(crate) async fn negotiate(
        &self,
        prepared: Prepared,
        peer: SocketAddr,
        local: Option<SocketAddr>,
    ) -> Verdict {
        let inner = &self.inner;
        let Prepared { outgoing, route } = prepared;
        let pool = &inner.routes.get(route).pool;
        // Rule 39: the header goes first on the backend connection, before TLS.
        #[cfg(feature = "proxy-protocol")]
        let preamble = match inner.send_proxy_protocol {
            true => match crate::proxy_protocol::encode_v2(peer, local) {
                Ok(header) => Some(header),
                Err(e) => return Verdict::Fail(Failure::connect(ConnectError::Io(e))),
            },
            false => None,
        };
        #[cfg(not(feature = "proxy-protocol"))]
        let preamble: Option<Vec<u8>> = None;
        let connect = inner.backends.connect(pool, preamble.as_deref());
        let mut backend = match connect.await {
            Ok(connected) => connected,
            Err(error) => {
                trace::debug!(%peer, route = inner.routes.label(route), %error, "no backend of the route accepted");
                return Verdict::Fail(Failure::connect(error));
            }
        };
        trace::record_backend(backend.via.name());
        let limits = &inner.backend_head;
        let head = outgoing.to_bytes();
        let sent = match limits.get_timeout() {
            Some(limit) => tokio::time::timeout(limit, backend.stream.write_all(&head))
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
            None => backend.stream.write_all(&head).await,
        };
        if let Err(e) = sent {
            return Verdict::Fail(Failure::backend(HandshakeError::BackendHead(e.into())));
        }
        let (response, rest) = match wire::read_response_head(&mut backend.stream, limits).await {
            Ok(head) => head,
            Err(e) => return Verdict::Fail(Failure::backend(HandshakeError::BackendHead(e))),
        };
        match outgoing.check(response) {
            Ok(Answer::Switch(response)) => Verdict::Switch {
                response,
                backend,
                rest,
            },
            Ok(Answer::Refuse(response)) => {
                trace::debug!(%peer, status = %response.status(), "backend refused the upgrade");
                match wire::framing(&response) {
                    Ok(framing) => Verdict::Refuse {
                        response,
                        framing,
                        backend,
                        rest,
                    },
                    Err(e) => Verdict::Fail(Failure::backend(HandshakeError::BackendHead(e))),
                }
            }
            Err(error) => Verdict::Fail(Failure::backend(error)),
        }
    }

    /// How long relaying a refused upgrade's body may take: the backend head deadline, or a
    /// minute when that is unlimited.
    pub(crate) fn refusal_deadline(&self) -> Duration {
        self.inner
            .backend_head
            .get_timeout()
            .unwrap_or(REFUSAL_DEADLINE)
    }
}

/// The byte-stream front end: everything before the tunnel for a client that speaks
/// HTTP/1.1 on `client`. On success the `101` has been written; otherwise the client has
/// been answered (when it was still there) and both connections are closed.
pub(crate) async fn handshake(
    proxy: Proxy,
    mut client: Stream,
    peer: SocketAddr,
    refused: Option<Refusal>,
    deadline: Option<tokio::time::Instant>,
    first: Option<Result<BytesMut, HeadError>>,
) -> Result<Ready, ProxyError> {
    let inner = &proxy.inner;
    if let Some(refusal) = refused {
        #[cfg(feature = "rustls")]
        if inner.acceptor.is_some() {
            // A plaintext 503 means nothing to a TLS client, and a handshake costs what an
            // overloaded proxy lacks: close.
            return Err(Failure::refused(refusal).into_error(false));
        }
        return Err(answer(client, Failure::refused(refusal)).await);
    }
    if let Stream::Tcp(tcp) = &client {
        let _ = tcp.set_nodelay(true);
    }
    // One deadline for the PROXY header, the TLS handshake and the head together (rules 7,
    // 35 and 38), counted from the accept (`deadline`, set by the caller) or from now.
    let limit = inner.client_head.get_timeout();
    let deadline = deadline.or_else(|| limit.map(|limit| tokio::time::Instant::now() + limit));
    // The PROXY protocol header comes first, before TLS (rule 38). From here `peer` is the
    // client's final address, for every rule.
    #[cfg(feature = "proxy-protocol")]
    let (peer, local) =
        crate::proxy_protocol::receive(inner, &mut client, peer, deadline, limit).await?;
    #[cfg(not(feature = "proxy-protocol"))]
    let local = None;
    // `peer` is now the client's address as the proxy believes it (the PROXY header's source
    // when there is one), the one value every later step uses: its per-IP limits come first,
    // before any TLS or head work.
    let hold = match proxy.limit_client(peer.ip()) {
        Ok(hold) => hold,
        Err(limited) => return Err(refuse(&proxy, client, limited.failure()).await),
    };
    #[cfg(feature = "rustls")]
    if let Some(acceptor) = &inner.acceptor {
        client = match acceptor.terminate(client, deadline, limit).await {
            Ok(tls) => tls,
            Err(crate::tls::Refused::NotTls(plain)) => {
                trace::debug!(%peer, "plain HTTP on the TLS port");
                return Err(answer(plain, Failure::plain_http()).await);
            }
            Err(crate::tls::Refused::Error(error)) => return Err(error),
        };
    }
    let read = wire::read_request_head_by(&mut client, &inner.client_head, deadline, first).await;
    let (request, head_rest) = match read {
        Ok(head) => head,
        Err(e) => {
            let gone = matches!(e, HeadError::Eof { .. } | HeadError::Io(_));
            let failure = Failure::client(HandshakeError::ClientHead(e));
            if gone {
                // Nobody to answer.
                return Err(failure.into_error(false));
            }
            return Err(answer(client, failure).await);
        }
    };
    let info = ClientInfo::new(peer).tls(inner.tls);
    let outgoing = match proxy.prepare(&request, &info) {
        Ok(outgoing) => outgoing,
        Err(error) => return Err(answer(client, Failure::client(error)).await),
    };
    drop(request);
    // While the backend answers, notice a client that hangs up, and stop there.
    let mut early = BytesMut::new();
    let verdict = tokio::select! {
        verdict = proxy.negotiate(outgoing, peer, local) => verdict,
        () = client_left(&mut client, &mut early) => {
            trace::debug!(%peer, "client left during the handshake");
            return Err(ProxyError::Io(io::ErrorKind::ConnectionAborted.into()));
        }
    };
    match verdict {
        Verdict::Switch {
            response,
            backend,
            rest,
        } => {
            let mut head = BytesMut::with_capacity(256);
            wire::encode_response_head(&response, &mut head);
            client.write_all(&head).await.map_err(ProxyError::Io)?;
            // A TLS stream may hold part of it (a no-op on a socket).
            client.flush().await.map_err(ProxyError::Io)?;
            // The backend's first frames go out right after the 101, and the client's go to
            // the backend first (rule 22); the tunnel writes and counts both.
            let to_backend = if early.is_empty() {
                head_rest
            } else {
                let mut joined = BytesMut::with_capacity(head_rest.len() + early.len());
                joined.extend_from_slice(&head_rest);
                joined.extend_from_slice(&early);
                joined.freeze()
            };
            Ok(Ready {
                client,
                backend: backend.stream,
                leftovers: Leftovers {
                    to_backend,
                    to_client: rest,
                },
                via: backend.via,
                hold,
                client_addr: Some(peer),
            })
        }
        Verdict::Refuse {
            response,
            framing,
            mut backend,
            rest,
        } => {
            // Rule 18: relay the answer and its body, discard what the client sent past its
            // head, close both.
            let status = response.status();
            let deadline = proxy.refusal_deadline();
            let result = relay_refusal(
                &mut client,
                &mut backend.stream,
                &response,
                rest,
                framing,
                deadline,
            )
            .await;
            drop(backend);
            linger_close(client).await;
            match result {
                Ok(()) => Err(ProxyError::Refused { status }),
                Err(e) => Err(ProxyError::Io(e)),
            }
        }
        Verdict::Fail(failure) => Err(answer(client, failure).await),
    }
}

/// Refuses a client before its TLS handshake: answers a plaintext client, closes a TLS one
/// (a plaintext answer means nothing to it, and a handshake costs what a limit saves).
async fn refuse(proxy: &Proxy, client: Stream, failure: Failure) -> ProxyError {
    #[cfg(feature = "rustls")]
    if proxy.inner.acceptor.is_some() {
        return failure.into_error(false);
    }
    #[cfg(not(feature = "rustls"))]
    let _ = proxy;
    answer(client, failure).await
}

/// Sends the proxy's own answer (within [`LINGER`]) and closes gracefully.
async fn answer(mut client: Stream, failure: Failure) -> ProxyError {
    let sent = send(&mut client, &encode_plain(&failure.response)).await;
    linger_close(client).await;
    failure.into_error(sent)
}

/// Writes the refusal's head, then its body as the backend frames it, within `deadline`.
async fn relay_refusal(
    client: &mut Stream,
    backend: &mut Stream,
    response: &Response<()>,
    rest: Bytes,
    framing: Framing,
    deadline: Duration,
) -> io::Result<()> {
    let mut head = BytesMut::with_capacity(256);
    wire::encode_response_head(response, &mut head);
    let relay = async {
        client.write_all(&head).await?;
        wire::copy_body(backend, rest, framing, client).await?;
        client.flush().await
    };
    match tokio::time::timeout(deadline, relay).await {
        Ok(result) => result,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Completes when the client closes or resets its connection before sending anything more.
/// What it sends meanwhile (early frames, up to [`MAX_EARLY`] bytes) is kept in `early`, for
/// the tunnel; once it has sent something, an EOF is a half-close, not a departure, and this
/// never completes.
async fn client_left(client: &mut Stream, early: &mut BytesMut) {
    let watch = poll_fn(|cx| loop {
        // On a socket, wait for readiness first: a `recv` now would only answer `EAGAIN`
        // (one system call per handshake for nothing).
        if let Stream::Tcp(tcp) = &*client {
            if ready!(tcp.poll_read_ready(cx)).is_err() {
                return Poll::Ready(true);
            }
        }
        // The array lives on the stack of this poll only: a waiting connection holds no
        // buffer.
        let mut probe = [0u8; 1024];
        let room = MAX_EARLY - early.len();
        let mut buf = ReadBuf::new(&mut probe[..room.min(1024)]);
        match Pin::new(&mut *client).poll_read(cx, &mut buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(true),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(early.is_empty()),
            Poll::Ready(Ok(())) => {
                early.extend_from_slice(buf.filled());
                if early.len() >= MAX_EARLY {
                    return Poll::Ready(false);
                }
            }
        }
    });
    if !watch.await {
        std::future::pending::<()>().await;
    }
}

/// Writes `bytes` to the client within [`LINGER`]; whether it all went out.
async fn send<S: AsyncWrite + Unpin>(client: &mut S, bytes: &[u8]) -> bool {
    let write = async {
        client.write_all(bytes).await?;
        client.flush().await
    };
    matches!(tokio::time::timeout(LINGER, write).await, Ok(Ok(())))
}

/// Shuts down writing, then reads and discards what the client still sends, briefly, so
/// that closing does not reset the connection before the client has read the response.
async fn linger_close<S: AsyncRead + AsyncWrite + Unpin>(mut client: S) {
    let discard = async {
        let _ = client.shutdown().await;
        // On the heap: a buffer here would enlarge every connection's future.
        let mut buf = vec![0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, discard).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_boxed_handshake_stays_small() {
        // Every connection boxes its handshake, and the box is written (copied) whole: it was
        // 15 KiB (a TLS backend connect carried by every plain one, and the counting wrapper
        // holding the handshake twice). The bound leaves room for compiler changes.
        let proxy = Proxy::new("127.0.0.1:9");
        let (client, _peer) = tokio::io::duplex(64);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let handshake = handshake(proxy.clone(), Stream::new(client), peer, None, None, None);
        let counted = super::super::stats::counted(proxy.inner.clone(), handshake);
        let size = std::mem::size_of_val(&counted);
        assert!(size <= 4096, "a handshake future is {size} bytes");
    }
}
