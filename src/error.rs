//! Error types. Every handshake error knows the HTTP status the client should see.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONNECTION, UPGRADE};
use http::{Response, StatusCode};

pub use crate::wire::HeadError;
use crate::wire::{encode_plain, plain_response};

/// Why a WebSocket handshake was refused, on either side of the proxy.
///
/// Every variant maps to the HTTP status the client should receive ([`status`](Self::status))
/// and can produce that complete response ([`response`](Self::response),
/// [`response_bytes`](Self::response_bytes)). Errors about the client's request are 4xx and
/// mean the backend was never contacted; errors about the backend's answer are 502 or 504.
///
/// The `Display` text is meant for logs and the short plain-text body of the error response;
/// it is not a stable contract.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The client's request head could not be read (431, 400 or 408).
    #[error("client request: {0}")]
    ClientHead(#[source] HeadError),
    /// The method is not `GET` (405; RFC 6455 §4.1).
    #[error("method must be GET")]
    Method,
    /// The request is not HTTP/1.1; HTTP/1.0 cannot upgrade (400; RFC 9110 §7.8).
    #[error("upgrade requires HTTP/1.1")]
    HttpVersion,
    /// The request-target is not usable for an upgrade (400; RFC 9112 §3.2).
    #[error("invalid request target: {0}")]
    Target(&'static str),
    /// No `Upgrade` token this proxy accepts: not a WebSocket handshake (426; RFC 9110 §15.5.22).
    #[error("not a websocket upgrade request")]
    NotUpgrade,
    /// `Upgrade` was sent without the `upgrade` token in `Connection` (400; RFC 9110 §7.8).
    #[error("connection header lacks the upgrade token")]
    ConnectionNotUpgrade,
    /// `Host` is missing, repeated or invalid (400; RFC 9112 §3.2).
    #[error("host header: {0}")]
    Host(&'static str),
    /// `Sec-WebSocket-Key` is missing, repeated or not 16 base64-encoded bytes
    /// (400; RFC 6455 §4.2.1).
    #[error("sec-websocket-key: {0}")]
    Key(&'static str),
    /// `Sec-WebSocket-Version` is missing or repeated (400; RFC 6455 §4.2.1).
    #[error("sec-websocket-version: {0}")]
    VersionHeader(&'static str),
    /// `Sec-WebSocket-Protocol` is not a comma-separated list of unique tokens
    /// (400; RFC 6455 §4.1 item 10, §11.3.4).
    #[error("sec-websocket-protocol: {0}")]
    Subprotocol(&'static str),
    /// `Sec-WebSocket-Extensions` breaks the grammar of RFC 6455 §9.1 (400).
    #[error("sec-websocket-extensions: {0}")]
    Extensions(&'static str),
    /// `Sec-WebSocket-Version` is not 13 (426 with `Sec-WebSocket-Version: 13`; RFC 6455 §4.2.2).
    #[error("unsupported websocket version (only 13 is supported)")]
    UnsupportedVersion,
    /// The upgrade request announces a body (400; RFC 9112 §6.1).
    #[error("an upgrade request must not have a body")]
    Body,
    /// The `Origin` is not on the allow-list (403; RFC 6455 §10.2).
    #[error("origin not allowed")]
    Origin,
    /// No route takes the request ([`ProxyBuilder::route`](crate::ProxyBuilder::route)), or
    /// the path is not under the configured prefix (404).
    #[error("path not routed to a backend")]
    NotRouted,
    /// An HTTP/2 extended CONNECT (RFC 8441) is malformed: a connection-specific header field
    /// (RFC 9113 §8.2.2), a missing or invalid `:authority`, `:scheme` or `:path`, a `host`
    /// that contradicts `:authority`, a `sec-websocket-key` (400; RFC 8441 §4–5).
    #[error("malformed extended connect: {0}")]
    Malformed(&'static str),
    /// An HTTP/2 extended CONNECT names a `:protocol` this proxy does not accept
    /// (501; RFC 8441 §4).
    #[error("the :protocol of the extended connect is not supported")]
    UnsupportedProtocol,
    /// The backend's response head could not be read (502, or 504 on a timeout).
    #[error("backend response: {0}")]
    BackendHead(#[source] HeadError),
    /// The backend answered `101` but broke the handshake rules (502; RFC 6455 §4.1).
    #[error("invalid 101 from backend: {0}")]
    BadSwitch(&'static str),
    /// The backend selected a subprotocol the client did not offer (502; RFC 6455 §4.1).
    #[error("backend selected a subprotocol the client did not offer")]
    UnofferedSubprotocol,
    /// The backend accepted an extension the client did not offer (502; RFC 6455 §9.1).
    #[error("backend accepted an extension the client did not offer")]
    UnofferedExtension,
    /// The backend answered an HTTP/2 client's extended CONNECT with a `2xx` other than
    /// `101`: relayed, it would tell the client the WebSocket was open (RFC 8441 §5), so it is
    /// a 502 instead (the smuggling of rule 18).
    #[error("backend answered {0} instead of switching protocols")]
    SuccessWithoutSwitch(StatusCode),
}

impl HandshakeError {
    /// The HTTP status the client should receive for this error.
    pub fn status(&self) -> StatusCode {
        use HandshakeError::*;
        match self {
            ClientHead(e) => match e {
                HeadError::TooLarge { .. } | HeadError::TooManyHeaders { .. } => {
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
                }
                HeadError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
                _ => StatusCode::BAD_REQUEST,
            },
            Method => StatusCode::METHOD_NOT_ALLOWED,
            NotUpgrade | UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            Origin => StatusCode::FORBIDDEN,
            NotRouted => StatusCode::NOT_FOUND,
            UnsupportedProtocol => StatusCode::NOT_IMPLEMENTED,
            HttpVersion | Target(_) | ConnectionNotUpgrade | Host(_) | Key(_)
            | VersionHeader(_) | Subprotocol(_) | Extensions(_) | Body | Malformed(_) => {
                StatusCode::BAD_REQUEST
            }
            BackendHead(HeadError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            BackendHead(_)
            | BadSwitch(_)
            | UnofferedSubprotocol
            | UnofferedExtension
            | SuccessWithoutSwitch(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// Whether the error is about the backend's answer rather than the client's request.
    pub fn is_backend_error(&self) -> bool {
        matches!(
            self,
            HandshakeError::BackendHead(_)
                | HandshakeError::BadSwitch(_)
                | HandshakeError::UnofferedSubprotocol
                | HandshakeError::UnofferedExtension
                | HandshakeError::SuccessWithoutSwitch(_)
        )
    }

    /// Whether the error is a missed deadline (408 for a client, 504 for a backend).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            HandshakeError::ClientHead(HeadError::Timeout(_))
                | HandshakeError::BackendHead(HeadError::Timeout(_))
        )
    }

    /// The complete response to send the client: the status, `Connection: close`, a short
    /// `text/plain` body, plus `Upgrade: websocket` and `Sec-WebSocket-Version: 13` on a 426
    /// (RFC 6455 §4.2.2) and `Allow: GET` on a 405. For an HTTP/2 client, remove the
    /// connection-specific `Connection` and `Upgrade` first (RFC 9113 §8.2.2);
    /// `Proxy::upgrade` does.
    pub fn response(&self) -> Response<String> {
        let mut response = plain_response(self.status(), format!("{self}\n"));
        let headers = response.headers_mut();
        if self.status() == StatusCode::UPGRADE_REQUIRED {
            // A 426 must name the protocol to upgrade to, and Upgrade is only meaningful
            // with the upgrade connection option (RFC 9110 §7.8, §15.5.22).
            headers.insert(CONNECTION, HeaderValue::from_static("Upgrade, close"));
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(
                http::header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        if self.status() == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(ALLOW, HeaderValue::from_static("GET"));
        }
        response
    }

    /// [`response`](Self::response) encoded as HTTP/1.1 bytes, head and body, ready to write
    /// to the client's socket.
    pub fn response_bytes(&self) -> Bytes {
        encode_plain(&self.response())
    }
}

/// Why a [`Proxy`](crate::Proxy) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No backend address was given, to the builder or to a route.
    #[error("no backend configured")]
    NoBackend,
    /// A backend address cannot be used.
    #[error("backend {addr:?}: {reason}")]
    Backend {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A route cannot be used: an invalid host pattern or prefix, no backend, the same host
    /// and prefix as another route, or (parsing the `HOST/PREFIX=BACKEND[,BACKEND...]`
    /// syntax) a malformed one.
    #[error("route {route:?}: {reason}")]
    Route {
        /// The route, as given.
        route: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A certificate, private key or CA file cannot be used (feature `rustls`): missing,
    /// unreadable, not PEM, holding no certificate or key, a key that does not match its
    /// certificate, a CA that is not a valid trust anchor. Also returned by
    /// `TlsAcceptor::reload`, which then keeps the certificates it had.
    #[error("{}: {reason}", path.display())]
    TlsFile {
        /// The file, as given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A limit cannot be used: a handshake rate of zero, or a burst of zero
    /// (`ProxyBuilder::rate_per_ip`, feature `limits`).
    #[error("limit: {reason}")]
    Limit {
        /// What is wrong.
        reason: &'static str,
    },
    /// The TLS configuration cannot be used as a whole (feature `rustls`): no certificate
    /// given, an invalid ALPN protocol name, no trusted root for TLS backends.
    #[error("tls: {reason}")]
    Tls {
        /// What is wrong.
        reason: &'static str,
    },
}

/// Why a TLS handshake failed, with a client (the proxy terminating TLS) or with a `wss://`
/// or `https://` backend (feature `rustls`).
///
/// The `Display` text is meant for logs and is not a stable contract; match on the variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The client sent something other than a TLS handshake to a TLS port (its first byte
    /// does not start a TLS record): plain HTTP is answered 400, as nginx's 497.
    #[error("not a TLS handshake (plain HTTP sent to a TLS port?)")]
    NotTls,
    /// The peer's certificate was refused: unknown issuer, expired, not valid for the name,
    /// malformed. For a backend this is a 502, and the proxy never retries without TLS.
    #[error("certificate refused: {0}")]
    Certificate(String),
    /// The peer ended the handshake with an alert (it refused our certificate, or found no
    /// protocol version, cipher suite or ALPN protocol in common).
    #[error("{0}")]
    Alert(String),
    /// The handshake broke the TLS protocol, or the two sides had nothing in common.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The connection failed or closed during the handshake.
    #[error("connection lost during the TLS handshake: {0}")]
    Io(#[source] io::Error),
}

impl TlsError {
    /// Whether the peer's certificate was refused ([`TlsError::Certificate`]): for a backend,
    /// an unknown CA (see `ProxyBuilder::backend_ca`), an expired certificate or one issued
    /// for another name.
    pub fn is_certificate_error(&self) -> bool {
        matches!(self, TlsError::Certificate(_))
    }
}

/// Why a PROXY protocol header was not accepted (feature `proxy-protocol`; rule 38, see
/// [`rules`](crate::rules)). The connection is closed without an answer: its peer is a load
/// balancer, not an HTTP client.
///
/// The `Display` text is meant for logs and is not a stable contract; match on the variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyHeaderError {
    /// No complete header arrived within the client-head deadline.
    #[error("no complete PROXY protocol header within {0:?}")]
    Timeout(Duration),
    /// The connection closed before the header was complete.
    #[error("connection closed after {received} bytes of a PROXY protocol header")]
    Eof {
        /// How many bytes of it had arrived.
        received: usize,
    },
    /// The connection does not start with a PROXY protocol signature (`PROXY ` for v1, the
    /// 12-byte binary signature for v2): a client that bypassed the balancer, say.
    #[error("not a PROXY protocol header")]
    Missing,
    /// The header is longer than this proxy accepts (107 bytes for v1, as the specification
    /// says; 16 + 4096 for v2).
    #[error("PROXY protocol header longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// The header breaks the specification: a bad version or command, addresses that do not
    /// parse, a length too short for its address family, malformed TLVs, a datagram (UDP)
    /// connection described on a stream listener.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    /// Reading the header failed.
    #[error("i/o error reading a PROXY protocol header: {0}")]
    Io(#[source] io::Error),
}

impl ProxyHeaderError {
    /// Whether the header did not arrive in time ([`ProxyHeaderError::Timeout`]).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ProxyHeaderError::Timeout(_))
    }
}

/// Why a connection handled by [`Proxy`](crate::Proxy) did not become a tunnel.
///
/// Each variant says what the client was sent, if anything ([`status_sent`](Self::status_sent));
/// `None` means the client was gone or the response could not be written. The `Display` text
/// is meant for logs and is not a stable contract.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The client's handshake was refused (4xx) or its head could not be read.
    #[error("client handshake refused: {error}")]
    Client {
        /// What was wrong.
        #[source]
        error: HandshakeError,
        /// The status written to the client.
        sent: Option<StatusCode>,
    },
    /// The configured cap on concurrent connections was reached (503): the proxy's
    /// ([`ProxyBuilder::max_tunnels`](crate::ProxyBuilder::max_tunnels)), or that of every
    /// backend that could take the connection
    /// ([`ProxyBuilder::backend_max_connections`](crate::ProxyBuilder::backend_max_connections)).
    #[error("too many concurrent tunnels")]
    Overloaded {
        /// The status written to the client.
        sent: Option<StatusCode>,
    },
    /// Too many connections from the client's IP address are open
    /// (`ProxyBuilder::max_per_ip`): answered 429 with `Retry-After`.
    #[error("too many connections from the client's address")]
    PerIpLimit {
        /// The status written to the client.
        sent: Option<StatusCode>,
    },
    /// The client's IP address made too many handshakes lately
    /// (`ProxyBuilder::rate_per_ip`, feature `limits`): answered 429 with `Retry-After`.
    #[error("too many handshakes from the client's address")]
    RateLimited {
        /// The status written to the client.
        sent: Option<StatusCode>,
    },
    /// The proxy is shutting down: a new connection was answered 503, or a handshake still
    /// in progress when the grace period ended was closed (nothing sent).
    #[error("the proxy is shutting down")]
    ShuttingDown {
        /// The status written to the client.
        sent: Option<StatusCode>,
    },
    /// No backend accepted a connection in time (502, or 504 when the last attempt timed out).
    #[error("backend unreachable: {error}")]
    Connect {
        /// The error of the last attempt.
        #[source]
        error: io::Error,
        /// The status written to the client.
        sent: Option<StatusCode>,
    },
    /// The backend's answer could not be read or broke the handshake rules (502 or 504).
    #[error("backend handshake failed: {error}")]
    Backend {
        /// What was wrong.
        #[source]
        error: HandshakeError,
        /// The status written to the client.
        sent: Option<StatusCode>,
    },
    /// The backend answered with a status other than `101`; it was relayed to the client.
    #[error("backend refused the upgrade with {status}")]
    Refused {
        /// The backend's status, as relayed.
        status: StatusCode,
    },
    /// Talking to the client or the backend failed during the handshake.
    #[error("i/o error during the handshake: {0}")]
    Io(#[source] io::Error),
    /// The client's TLS handshake failed (nothing sent), or the client sent plain HTTP to a
    /// TLS port ([`TlsError::NotTls`], answered 400). A silent client cut at the head
    /// deadline is [`ProxyError::Client`] with a timeout, as without TLS.
    #[error("client TLS handshake failed: {error}")]
    ClientTls {
        /// What went wrong.
        #[source]
        error: TlsError,
        /// The status written to the client.
        sent: Option<StatusCode>,
    },
    /// The TLS handshake with a `wss://` or `https://` backend failed (502), on every
    /// backend tried: [`TlsError::is_certificate_error`] tells a refused certificate. The
    /// proxy never falls back to plaintext. A handshake not done within the connect timeout
    /// is [`ProxyError::Connect`] with a timeout (504).
    #[error("backend TLS handshake failed: {error}")]
    BackendTls {
        /// What went wrong, with the last backend tried.
        #[source]
        error: TlsError,
        /// The status written to the client.
        sent: Option<StatusCode>,
    },
    /// The connection did not start with a valid PROXY protocol header on a listener that
    /// requires one (`ProxyBuilder::proxy_protocol`, feature `proxy-protocol`): it was closed
    /// with nothing sent, and never proxied.
    #[error("PROXY protocol: {0}")]
    ProxyProtocol(#[source] ProxyHeaderError),
}

impl ProxyError {
    pub(crate) fn set_sent(&mut self, status: StatusCode) {
        match self {
            ProxyError::Client { sent, .. }
            | ProxyError::Overloaded { sent }
            | ProxyError::PerIpLimit { sent }
            | ProxyError::RateLimited { sent }
            | ProxyError::ShuttingDown { sent }
            | ProxyError::Connect { sent, .. }
            | ProxyError::Backend { sent, .. }
            | ProxyError::ClientTls { sent, .. }
            | ProxyError::BackendTls { sent, .. } => *sent = Some(status),
            ProxyError::Refused { .. } | ProxyError::Io(_) | ProxyError::ProxyProtocol(_) => {}
        }
    }

    /// The status the client was sent, if any.
    pub fn status_sent(&self) -> Option<StatusCode> {
        match self {
            ProxyError::Client { sent, .. }
            | ProxyError::Overloaded { sent }
            | ProxyError::PerIpLimit { sent }
            | ProxyError::RateLimited { sent }
            | ProxyError::ShuttingDown { sent }
            | ProxyError::Connect { sent, .. }
            | ProxyError::Backend { sent, .. }
            | ProxyError::ClientTls { sent, .. }
            | ProxyError::BackendTls { sent, .. } => *sent,
            ProxyError::Refused { status } => Some(*status),
            ProxyError::Io(_) | ProxyError::ProxyProtocol(_) => None,
        }
    }
}
