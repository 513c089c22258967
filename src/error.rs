//! Error types. Every handshake error knows the HTTP status the client should see.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, UPGRADE};
use http::{Response, StatusCode};

use crate::wire;

/// Why a request or response head could not be read.
///
/// Returned by [`wire::read_request_head`] and [`wire::read_response_head`]. Which HTTP status
/// it turns into depends on who sent the head; see [`HandshakeError::ClientHead`] and
/// [`HandshakeError::BackendHead`].
///
/// The `Display` text is meant for logs and is not a stable contract; match on the variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// The head did not end within the configured maximum size.
    #[error("head larger than {limit} bytes")]
    TooLarge {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// The head has more header fields than the configured maximum.
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The configured limit, in fields.
        limit: usize,
    },
    /// The head is not valid HTTP/1.x (RFC 9112 §2–§5).
    #[error("malformed head: {0}")]
    Malformed(&'static str),
    /// The head was not complete within the configured deadline.
    #[error("head not complete within {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection before the head was complete.
    #[error("connection closed after {received} bytes, before the head was complete")]
    Eof {
        /// How many bytes of the head had been received.
        received: usize,
    },
    /// Reading from the peer failed.
    #[error("reading the head failed: {0}")]
    Io(#[from] io::Error),
}

impl HeadError {
    /// Whether the head was not complete within its deadline.
    pub fn is_timeout(&self) -> bool {
        matches!(self, HeadError::Timeout(_))
    }

    /// Whether the head broke the size or header-count limit.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            HeadError::TooLarge { .. } | HeadError::TooManyHeaders { .. }
        )
    }
}

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
    /// `Sec-WebSocket-Version` is not 13 (426 with `Sec-WebSocket-Version: 13`; RFC 6455 §4.2.2).
    #[error("unsupported websocket version (only 13 is supported)")]
    UnsupportedVersion,
    /// The upgrade request announces a body (400; RFC 9112 §6.1).
    #[error("an upgrade request must not have a body")]
    Body,
    /// The `Origin` is not on the allow-list (403; RFC 6455 §10.2).
    #[error("origin not allowed")]
    Origin,
    /// The path is not under the configured prefix (404).
    #[error("path not routed to a backend")]
    NotRouted,
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
            HttpVersion | Target(_) | ConnectionNotUpgrade | Host(_) | Key(_)
            | VersionHeader(_) | Body => StatusCode::BAD_REQUEST,
            BackendHead(HeadError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            BackendHead(_) | BadSwitch(_) | UnofferedSubprotocol | UnofferedExtension => {
                StatusCode::BAD_GATEWAY
            }
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
    /// (RFC 6455 §4.2.2) and `Allow: GET` on a 405.
    pub fn response(&self) -> Response<String> {
        let status = self.status();
        let body = format!("{}\n", self);
        let length = HeaderValue::from(body.len());
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if status == StatusCode::UPGRADE_REQUIRED {
            // A 426 must name the protocol to upgrade to, and Upgrade is only meaningful
            // with the upgrade connection option (RFC 9110 §7.8, §15.5.22).
            headers.insert(CONNECTION, HeaderValue::from_static("Upgrade, close"));
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(
                http::header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        } else {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(ALLOW, HeaderValue::from_static("GET"));
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(CONTENT_LENGTH, length);
        response
    }

    /// [`response`](Self::response) encoded as HTTP/1.1 bytes, head and body, ready to write
    /// to the client's socket.
    pub fn response_bytes(&self) -> Bytes {
        let response = self.response();
        let mut out = BytesMut::with_capacity(160 + response.body().len());
        wire::encode_response_head(&response, &mut out);
        out.extend_from_slice(response.body().as_bytes());
        out.freeze()
    }
}
