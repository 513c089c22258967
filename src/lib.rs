//! # wsrelay
//!
//! Proxy WebSocket connections (and, by configuration, other HTTP/1.1 `Upgrade`
//! connections) from any tokio server to a backend: the WebSocket part of nginx's
//! `proxy_pass`, as a library.
//!
//! Most users need one type, [`Proxy`]: build it once, then hand it connections from a bare
//! `TcpListener` ([`Proxy::serve`]), one stream you accepted yourself ([`Proxy::handle`]),
//! or a hyper or axum handler (`Proxy::upgrade`, feature `hyper`). Every front end runs the
//! same flow and follows the same [`rules`].
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let proxy = wsrelay::Proxy::builder().backend("127.0.0.1:9000").build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! proxy.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(())
//! # }
//! ```
//!
//! ## The path of one connection
//!
//! 1. [`wire`] reads the client's request head (with size, header-count and time limits)
//!    and hands back the bytes read past it.
//! 2. [`handshake::Rewriter`] validates it (RFC 6455 §4) and produces the request for the
//!    backend: hop-by-hop headers removed (RFC 9110 §7.6.1), `Upgrade`/`Connection` set as
//!    nginx's `proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection
//!    $connection_upgrade;` does, forwarding headers added as configured.
//! 3. [`handshake::Outgoing::check`] verifies the backend's answer: only a real `101` with the
//!    right `Sec-WebSocket-Accept` opens a tunnel; anything else is relayed as an ordinary
//!    HTTP response.
//! 4. [`tunnel`] moves the bytes both ways, zero-copy with `splice(2)` when both ends are
//!    plain TCP sockets on Linux, with half-close, timers, and a [`Report`] at the end.
//!
//! Each piece is usable on its own: the rewriter is pure (no I/O, no clock), so it works
//! equally behind hyper, axum or the crate's own head reader; the tunnel knows no HTTP.
//!
//! ## Features
//!
//! - `tracing` (default): `tracing` events for refused handshakes, unreachable backends and
//!   closed tunnels, inside a `connection` span carrying the client's and the backend's
//!   addresses; none on the data path.
//! - `hyper`: `Proxy::upgrade` for hyper 1.x services and axum 0.8 handlers.
//! - `rustls`: TLS with rustls and its ring provider: `wsrelay::tls::TlsAcceptor` terminates
//!   `wss://` for `Proxy::serve` and `Proxy::handle` (`ProxyBuilder::tls`), and backends may be
//!   `wss://host:port` or `https://host:port` (verified against the platform's roots plus
//!   `ProxyBuilder::backend_ca`).
//! - `metrics`: counters, gauges and histograms through the `metrics` facade (module
//!   `metrics`; the application installs the exporter). Without it, [`Proxy::stats`] still
//!   counts handshakes, tunnels, bytes and drains.
//! - `limits`: a handshake rate per client IP address (`ProxyBuilder::rate_per_ip`, a token
//!   bucket on `governor`). The per-IP connection limit ([`ProxyBuilder::max_per_ip`]) needs
//!   no feature.
//! - `proxy-protocol`: HAProxy's PROXY protocol with the `ppp` crate: behind a trusted L4 load
//!   balancer, `Proxy::serve` and `Proxy::handle` read a v1 or v2 header first and take the
//!   client's address from it (`ProxyBuilder::proxy_protocol`), and backends can be sent a v2
//!   header (`ProxyBuilder::send_proxy_protocol`); see `wsrelay::proxy_protocol`.
//! - `systemd` (Unix): listening sockets inherited from systemd socket activation or a
//!   parent process (`LISTEN_FDS`) for `Proxy::serve`, and readiness notification
//!   (`NOTIFY_SOCKET`), with the `listenfd` crate; see `wsrelay::systemd`.
//!
//! ## Using the rewriter alone
//!
//! ```
//! use wsrelay::handshake::{Answer, ClientInfo, RewriteConfig, Rewriter};
//!
//! let rewriter = Rewriter::new(RewriteConfig::default());
//! let request = http::Request::get("/chat")
//!     .header("host", "example.com")
//!     .header("connection", "Upgrade")
//!     .header("upgrade", "websocket")
//!     .header("sec-websocket-version", "13")
//!     .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
//!     .body(())
//!     .unwrap();
//! let client = ClientInfo::new("192.0.2.7:50000".parse().unwrap());
//! let outgoing = rewriter.rewrite(&request, &client).expect("a valid handshake");
//! assert_eq!(outgoing.request().headers()["x-forwarded-for"], "192.0.2.7");
//!
//! // What the backend answered:
//! let response = http::Response::builder()
//!     .status(101)
//!     .header("upgrade", "websocket")
//!     .header("connection", "upgrade")
//!     .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
//!     .body(())
//!     .unwrap();
//! match outgoing.check(response).expect("a valid answer") {
//!     Answer::Switch(for_client) => assert_eq!(for_client.status(), 101),
//!     Answer::Refuse(_) => unreachable!("the backend accepted"),
//! }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(
    missing_docs,
    missing_debug_implementations,
    unsafe_op_in_unsafe_fn,
    unsafe_code,
    clippy::undocumented_unsafe_blocks
)]
#![warn(rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod error;
pub mod handshake;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
mod proxy;
#[cfg(feature = "proxy-protocol")]
#[cfg_attr(docsrs, doc(cfg(feature = "proxy-protocol")))]
pub mod proxy_protocol;
pub mod rules;
pub mod splice;
#[cfg(all(feature = "systemd", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "systemd", unix))))]
pub mod systemd;
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
pub mod tls;
mod trace;
pub mod wire;

pub use error::{BuildError, HandshakeError, HeadError, ProxyError, ProxyHeaderError, TlsError};
#[cfg(feature = "limits")]
#[cfg_attr(docsrs, doc(cfg(feature = "limits")))]
pub use proxy::RateLimit;
pub use proxy::{
    BackendState, BackendStatus, Balance, HealthConfig, Proxy, ProxyBuilder, Route, ServeSummary,
    Stats, WaitingListener,
};
pub use splice::{tunnel, CloseReason, Leftovers, Report, SpliceConfig, TunnelPath};

/// The README's examples, compiled and run as doc tests (they use the `hyper`, `rustls`,
/// `limits`, `proxy-protocol` and `systemd` features).
#[cfg(all(
    doctest,
    feature = "hyper",
    feature = "rustls",
    feature = "limits",
    feature = "proxy-protocol",
    feature = "systemd",
    unix
))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
