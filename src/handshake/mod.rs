//! The handshake rewriter: pure functions over `http` types, no I/O, no clock.
//!
//! [`Rewriter::rewrite`] validates a client's upgrade request ([rules](crate::rules) §1) and builds the
//! request to send to the backend (§2). The [`Outgoing`] it returns remembers what it needs to
//! judge the backend's answer: [`Outgoing::check`] accepts only a real `101` with the right
//! `Sec-WebSocket-Accept`, a subprotocol and extensions the client offered (§3), and turns the
//! answer into the response to send the client (§4).
//!
//! ```
//! use wsrelay::handshake::{Answer, ClientInfo, RewriteConfig, Rewriter};
//!
//! // nginx: location /ws/ { proxy_pass http://backend/; proxy_set_header Host $host; ... }
//! let config = RewriteConfig::new()
//!     .strip_prefix("/ws/")
//!     .allow_origin("https://app.example.com");
//! let rewriter = Rewriter::new(config);
//!
//! let request = http::Request::get("/ws/chat?room=7")
//!     .header("host", "app.example.com")
//!     .header("origin", "https://app.example.com")
//!     .header("connection", "keep-alive, Upgrade")
//!     .header("upgrade", "websocket")
//!     .header("sec-websocket-version", "13")
//!     .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
//!     .header("sec-websocket-protocol", "chat, superchat")
//!     .body(())
//!     .unwrap();
//! let client = ClientInfo::new("198.51.100.4:61000".parse().unwrap()).tls(true);
//! let outgoing = rewriter.rewrite(&request, &client).unwrap();
//!
//! let to_backend = outgoing.request();
//! assert_eq!(to_backend.uri(), "/chat?room=7");
//! assert_eq!(to_backend.headers()["connection"], "Upgrade");
//! assert_eq!(to_backend.headers()["x-forwarded-proto"], "https");
//! assert_eq!(to_backend.headers()["sec-websocket-protocol"], "chat, superchat");
//!
//! let answer = http::Response::builder()
//!     .status(101)
//!     .header("upgrade", "websocket")
//!     .header("connection", "Upgrade")
//!     .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
//!     .header("sec-websocket-protocol", "chat")
//!     .body(())
//!     .unwrap();
//! let Answer::Switch(to_client) = outgoing.check(answer).unwrap() else {
//!     panic!("a valid 101 opens the tunnel");
//! };
//! assert_eq!(to_client.headers()["sec-websocket-protocol"], "chat");
//! ```

mod accept;
pub(crate) mod headers;
mod negotiation;
mod request;
mod response;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use http::{Request, Response};

pub use accept::{derive_accept_key, is_valid_key, WEBSOCKET_GUID};

use crate::error::HandshakeError;

/// The upgrade protocol every configuration accepts.
const WEBSOCKET: &str = "websocket";

/// What `Host` header the backend receives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostPolicy {
    /// Forward the client's `Host` (nginx `proxy_set_header Host $host`). For an
    /// absolute-form request-target, the target's authority (RFC 9112 §3.2.2).
    #[default]
    Keep,
    /// Send this authority instead, usually the backend's `host:port` (nginx's default
    /// `$proxy_host`).
    Set(HeaderValue),
}

/// Which forwarding headers the proxy adds to the backend request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Forwarding {
    x_forwarded_for: bool,
    x_real_ip: bool,
    x_forwarded_proto: bool,
    x_forwarded_host: bool,
    forwarded: bool,
}

/// How the rewriter validates and rewrites handshakes. `Default` gives the behaviour of the
/// nginx configuration most WebSocket deployments use:
///
/// ```nginx
/// proxy_http_version 1.1;
/// proxy_set_header Upgrade $http_upgrade;
/// proxy_set_header Connection $connection_upgrade;
/// proxy_set_header Host $host;
/// proxy_set_header X-Real-IP $remote_addr;
/// proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
/// proxy_set_header X-Forwarded-Proto $scheme;
/// ```
///
/// with these differences, on the side of safety: client-sent forwarding headers are dropped
/// (the peer is not trusted until [`trust_forwarded`](Self::trust_forwarded) says so), and
/// `X-Forwarded-Host` and `Via: 1.1 wsrelay` are added (RFC 9110 §7.6.3). Only the
/// `websocket` upgrade is accepted.
#[derive(Debug, Clone)]
pub struct RewriteConfig {
    forwarding: Forwarding,
    trust_forwarded: bool,
    via: Option<HeaderValue>,
    host: HostPolicy,
    path: Option<(String, String)>,
    origins: Vec<String>,
    protocols: Vec<String>,
}

impl Default for RewriteConfig {
    fn default() -> Self {
        RewriteConfig {
            forwarding: Forwarding {
                x_forwarded_for: true,
                x_real_ip: true,
                x_forwarded_proto: true,
                x_forwarded_host: true,
                forwarded: false,
            },
            trust_forwarded: false,
            via: Some(HeaderValue::from_static("1.1 wsrelay")),
            host: HostPolicy::Keep,
            path: None,
            origins: Vec::new(),
            protocols: vec![WEBSOCKET.to_owned()],
        }
    }
}

impl RewriteConfig {
    /// The default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `X-Forwarded-For` to the client's IP, appended to the client's own value when the
    /// peer is trusted (nginx `$proxy_add_x_forwarded_for`). Default: on.
    pub fn x_forwarded_for(mut self, on: bool) -> Self {
        self.forwarding.x_forwarded_for = on;
        self
    }

    /// Set `X-Real-IP` to the client's IP (nginx `$remote_addr`); a trusted peer's own value
    /// is kept. Default: on.
    pub fn x_real_ip(mut self, on: bool) -> Self {
        self.forwarding.x_real_ip = on;
        self
    }

    /// Set `X-Forwarded-Proto` to `http` or `https` (see [`ClientInfo::tls`]); a trusted
    /// peer's own value is kept. Default: on.
    pub fn x_forwarded_proto(mut self, on: bool) -> Self {
        self.forwarding.x_forwarded_proto = on;
        self
    }

    /// Set `X-Forwarded-Host` to the `Host` the client asked for; a trusted peer's own value
    /// is kept. Default: on.
    pub fn x_forwarded_host(mut self, on: bool) -> Self {
        self.forwarding.x_forwarded_host = on;
        self
    }

    /// Add an RFC 7239 `Forwarded` element (`for`, `host`, `proto`), appended to the client's
    /// when the peer is trusted. Default: off.
    pub fn forwarded(mut self, on: bool) -> Self {
        self.forwarding.forwarded = on;
        self
    }

    /// The `Via` entry to append (RFC 9110 §7.6.3), e.g. `"1.1 edge-7"`; `None` adds none.
    /// For a request received over HTTP/2 ([`Rewriter::rewrite_extended_connect`]) a leading
    /// `1.1 ` becomes `2 `, the protocol the proxy received. Default: `1.1 wsrelay`.
    pub fn via(mut self, via: Option<HeaderValue>) -> Self {
        self.via = via;
        self
    }

    /// Whether the peer is a trusted proxy whose forwarding headers (`X-Forwarded-*`,
    /// `X-Real-IP`, `Forwarded`) are believed and appended to. When `false` (the default)
    /// they are removed before the proxy adds its own, so a client cannot forge its address.
    pub fn trust_forwarded(mut self, trusted: bool) -> Self {
        self.trust_forwarded = trusted;
        self
    }

    /// What `Host` the backend receives. Default: [`HostPolicy::Keep`].
    pub fn host(mut self, policy: HostPolicy) -> Self {
        self.host = policy;
        self
    }

    /// Remove `prefix` from the start of the path (nginx `location /ws/` with
    /// `proxy_pass http://backend/;`): `/ws/chat?x=1` reaches the backend as `/chat?x=1`.
    /// A request whose path does not start with `prefix` is refused with 404. The query is
    /// always kept. A prefix without a leading `/` gets one.
    pub fn strip_prefix(self, prefix: &str) -> Self {
        self.replace_prefix(prefix, "/")
    }

    /// Replace `prefix` at the start of the path with `replacement` (nginx `location /ws/`
    /// with `proxy_pass http://backend/socket/;`). A request whose path does not start with
    /// `prefix` is refused with 404, and one whose rewritten path would hold a `.` or `..`
    /// segment with 400. Both are paths: a `?` or `#` and what follows is dropped.
    pub fn replace_prefix(mut self, prefix: &str, replacement: &str) -> Self {
        // Paths only: anything from a `?` or `#` on is not part of one and is dropped.
        let rooted = |s: &str| {
            let s = s.split(['?', '#']).next().unwrap_or_default();
            if s.starts_with('/') {
                s.to_owned()
            } else {
                format!("/{s}")
            }
        };
        self.path = Some((rooted(prefix), rooted(replacement)));
        self
    }

    /// Add `origin` (e.g. `https://app.example.com`) to the allow-list checked against the
    /// client's `Origin` (RFC 6455 §10.2, cross-site WebSocket hijacking). With a non-empty
    /// list, a request whose `Origin` is not on it gets 403 and never reaches the backend.
    /// Comparison ignores ASCII case. A request without `Origin` (not from a browser) is
    /// allowed; one with several `Origin` lines is refused.
    pub fn allow_origin(mut self, origin: &str) -> Self {
        self.origins
            .push(origin.trim_end_matches('/').to_ascii_lowercase());
        self
    }

    /// Also accept the upgrade protocol `token` (e.g. a custom TCP-over-HTTP protocol) and
    /// tunnel it like a WebSocket, checking only `Upgrade` and `Connection` on both sides.
    /// `h2c` and `h2` are never accepted (h2c smuggling); asking for them does nothing.
    pub fn allow_protocol(mut self, token: &str) -> Self {
        let token = token.trim().to_ascii_lowercase();
        if !token.is_empty() && token != "h2c" && token != "h2" && !self.protocols.contains(&token)
        {
            self.protocols.push(token);
        }
        self
    }

    /// The allowed origins, lower-cased; empty means any origin.
    pub fn get_allowed_origins(&self) -> &[String] {
        &self.origins
    }

    /// The accepted upgrade protocols, lower-cased; `websocket` is always first.
    pub fn get_protocols(&self) -> &[String] {
        &self.protocols
    }

    /// Whether client-sent forwarding headers are trusted.
    pub fn get_trust_forwarded(&self) -> bool {
        self.trust_forwarded
    }

    /// The `Host` policy.
    pub fn get_host(&self) -> &HostPolicy {
        &self.host
    }
}

/// Who the client is, as seen by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    peer: SocketAddr,
    tls: bool,
}

impl ClientInfo {
    /// A client connected from `peer` over plain TCP.
    pub fn new(peer: SocketAddr) -> Self {
        ClientInfo { peer, tls: false }
    }

    /// Whether the client reached the proxy over TLS (`wss://`); sets `X-Forwarded-Proto`.
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the client used TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

/// Validates client handshakes and rewrites them for the backend. Cheap to share: build one
/// per configuration and call [`rewrite`](Self::rewrite) for every request.
#[derive(Debug, Clone)]
pub struct Rewriter {
    config: RewriteConfig,
}

impl Rewriter {
    /// A rewriter for `config`.
    pub fn new(config: RewriteConfig) -> Self {
        Rewriter { config }
    }

    /// The configuration in use.
    pub fn config(&self) -> &RewriteConfig {
        &self.config
    }

    /// Validates `request` and builds the request to send to the backend. The body type is
    /// ignored (an upgrade request has no body), so a hyper or axum request can be passed as
    /// it is.
    ///
    /// # Errors
    ///
    /// A [`HandshakeError`] whose [`status`](HandshakeError::status) is the 4xx the client
    /// should get ([rules](crate::rules) §1). The backend must not be contacted.
    pub fn rewrite<B>(
        &self,
        request: &Request<B>,
        client: &ClientInfo,
    ) -> Result<Outgoing, HandshakeError> {
        request::rewrite(&self.config, request, client)
    }

    /// Validates an HTTP/2 extended CONNECT (RFC 8441; RFC 9220 is the same over HTTP/3)
    /// and translates it into the HTTP/1.1 upgrade request for the backend
    /// ([rules](crate::rules) §6).
    ///
    /// `protocol` is the request's `:protocol` pseudo-header (hyper hands it over as the
    /// `hyper::ext::Protocol` extension); `key` is 16 fresh random bytes, which become the
    /// backend request's `Sec-WebSocket-Key` (the client sends none over HTTP/2): the caller
    /// generates them, so that this stays a pure function.
    ///
    /// The request must be a `CONNECT` with `:authority`, `:scheme` (the request's URI is
    /// then in absolute form, as hyper and the `h2` crate build it) and `:path`, no
    /// connection-specific header field and, for `websocket`, `sec-websocket-version: 13` and
    /// no `sec-websocket-key`. The backend receives `GET <path> HTTP/1.1` with `Host` from
    /// `:authority` (or the configured [`HostPolicy`]), `X-Forwarded-Proto` from `:scheme`,
    /// `Upgrade`/`Connection` and the forwarding headers as for HTTP/1.1 ([`rewrite`](Self::rewrite)),
    /// and the generated key. [`Outgoing::check`] then judges the backend's `101` against that
    /// key and answers the client `200`.
    ///
    /// # Errors
    ///
    /// A [`HandshakeError`] with the status for that stream: 400 for a malformed request,
    /// 501 for a `:protocol` that is not accepted, the statuses of §1 otherwise. The backend
    /// must not be contacted.
    ///
    /// # Examples
    ///
    /// ```
    /// use wsrelay::handshake::{Answer, ClientInfo, RewriteConfig, Rewriter};
    ///
    /// let rewriter = Rewriter::new(RewriteConfig::new());
    /// // What hyper or the h2 crate make of `:method CONNECT`, `:protocol websocket`,
    /// // `:scheme https`, `:authority app.example.com`, `:path /chat`.
    /// let request = http::Request::connect("https://app.example.com/chat")
    ///     .version(http::Version::HTTP_2)
    ///     .header("sec-websocket-version", "13")
    ///     .body(())
    ///     .unwrap();
    /// let client = ClientInfo::new("198.51.100.4:61000".parse().unwrap()).tls(true);
    /// let key = *b"the sample nonce"; // 16 random bytes in real use
    /// let outgoing = rewriter
    ///     .rewrite_extended_connect(&request, "websocket", &client, key)
    ///     .unwrap();
    /// let head = outgoing.to_bytes();
    /// assert!(head.starts_with(b"GET /chat HTTP/1.1\r\nHost: app.example.com\r\n"));
    /// assert_eq!(outgoing.request().headers()["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
    ///
    /// let answer = http::Response::builder()
    ///     .status(101)
    ///     .header("upgrade", "websocket")
    ///     .header("connection", "Upgrade")
    ///     .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    ///     .body(())
    ///     .unwrap();
    /// let Answer::Switch(to_client) = outgoing.check(answer).unwrap() else {
    ///     panic!("a valid 101 opens the tunnel");
    /// };
    /// assert_eq!(to_client.status(), 200);
    /// assert!(to_client.headers().get("sec-websocket-accept").is_none());
    /// ```
    pub fn rewrite_extended_connect<B>(
        &self,
        request: &Request<B>,
        protocol: &str,
        client: &ClientInfo,
        key: [u8; 16],
    ) -> Result<Outgoing, HandshakeError> {
        request::rewrite_extended_connect(&self.config, request, protocol, client, key)
    }
}

/// The request for the backend, with what is needed to check the backend's answer.
#[derive(Debug, Clone)]
pub struct Outgoing {
    request: Request<()>,
    /// The upgrade token being requested, as sent in `Upgrade`.
    protocol: HeaderValue,
    /// Translated from an HTTP/2 extended CONNECT: the client gets `200`, not `101`.
    extended_connect: bool,
}

impl Outgoing {
    /// The request to send to the backend.
    pub fn request(&self) -> &Request<()> {
        &self.request
    }

    /// The request to send, for adding headers (an auth token, say). Removing or changing the
    /// `Sec-WebSocket-*` headers makes [`check`](Self::check) judge against the changed values.
    pub fn request_mut(&mut self) -> &mut Request<()> {
        &mut self.request
    }

    /// Whether this was translated from an HTTP/2 extended CONNECT
    /// ([`Rewriter::rewrite_extended_connect`]): the client's answer is then an HTTP/2 one.
    pub fn is_extended_connect(&self) -> bool {
        self.extended_connect
    }

    /// The upgrade protocol being requested, lower-cased (`websocket` unless configured).
    pub fn protocol(&self) -> &str {
        // Built from a configured token, which is ASCII.
        self.protocol.to_str().unwrap_or_default()
    }

    /// The request head encoded as HTTP/1.1 bytes, ready to write to the backend.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        crate::wire::encode_request_head(&self.request, &mut out);
        out.freeze()
    }

    /// Judges the backend's answer and produces the response for the client.
    ///
    /// A `101` that is a valid switch to the requested protocol ([rules](crate::rules) 16–17)
    /// gives [`Answer::Switch`] with hop-by-hop headers removed and `Upgrade`/`Connection`
    /// set (rule 21): open the tunnel after sending it. Any final non-`101` status gives
    /// [`Answer::Refuse`]: relay it (and its body) to the client, then close both connections
    /// (rule 18); no tunnel is ever opened for it.
    ///
    /// For an HTTP/2 extended CONNECT ([`is_extended_connect`](Self::is_extended_connect)) the
    /// switch is a `200` without `Sec-WebSocket-Accept`, `Upgrade` or `Connection` (rule 33),
    /// a refusal carries no `Connection` (its stream ends, not the connection), and a `2xx`
    /// other than `101` is an error: the client would take it for the switch.
    ///
    /// # Errors
    ///
    /// A `101` that breaks any rule, or an interim `1xx`, is a [`HandshakeError`] with status
    /// 502: send [`HandshakeError::response`] to the client and close the backend.
    pub fn check(&self, response: Response<()>) -> Result<Answer, HandshakeError> {
        response::check(self, response)
    }
}

/// The backend's answer, rewritten for the client: a switch or a refusal, nothing else.
#[derive(Debug)]
pub enum Answer {
    /// A valid `101`: send this to the client (a `101`, or a `200` for an HTTP/2 extended
    /// CONNECT), then tunnel.
    Switch(Response<()>),
    /// Any other final status: send this (and the backend's body) to the client, then close.
    /// It carries `Connection: close` (none for an HTTP/2 extended CONNECT), and keeps
    /// `Content-Length`/`Transfer-Encoding` so the body can be read as the backend framed it.
    Refuse(Response<()>),
}
