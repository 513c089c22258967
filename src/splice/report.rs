//! What a tunnel reports: [`Report`], [`CloseReason`], [`TunnelPath`], and the
//! [`Leftovers`] it starts with.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

/// Bytes already read past the handshake heads, to be delivered before anything else.
///
/// With hyper, these are `Upgraded::downcast`'s `read_buf` (client side) or the bytes read
/// past the backend's `101` head.
#[derive(Debug, Default, Clone)]
pub struct Leftovers {
    /// Bytes the client sent after its request head; written to the backend first.
    pub to_backend: Bytes,
    /// Bytes the backend sent after its `101` head; written to the client first.
    pub to_client: Bytes,
}

/// Which implementation carried a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TunnelPath {
    /// `splice(2)` through a pipe per direction for bulk data (bytes never enter user
    /// space), small messages through an array on the stack
    /// (see [`SpliceConfig::small_reads`](super::SpliceConfig::small_reads)).
    ZeroCopy,
    /// Copies through a user-space buffer per direction.
    Buffered,
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// Both directions reached EOF and every byte was delivered.
    Done,
    /// No byte moved in either direction for the idle timeout.
    IdleTimeout,
    /// The tunnel stayed half-closed for the fin timeout.
    FinTimeout,
    /// The tunnel reached its maximum lifetime.
    Lifetime,
    /// The caller's shutdown future completed.
    Shutdown,
    /// Closed by [`Proxy::close_backend`](crate::Proxy::close_backend), with every other
    /// tunnel to its backend.
    BackendClosed,
    /// Reading from or writing to the client failed with this kind of error.
    ClientError(io::ErrorKind),
    /// Reading from or writing to the backend failed with this kind of error.
    BackendError(io::ErrorKind),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Done => f.write_str("both sides closed"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::FinTimeout => f.write_str("fin timeout"),
            CloseReason::Lifetime => f.write_str("maximum lifetime reached"),
            CloseReason::Shutdown => f.write_str("shut down"),
            CloseReason::BackendClosed => f.write_str("backend closed by the proxy"),
            CloseReason::ClientError(kind) => write!(f, "client error: {kind}"),
            CloseReason::BackendError(kind) => write!(f, "backend error: {kind}"),
        }
    }
}

/// What a tunnel did: bytes each way, how long, which path, and why it ended.
///
/// The counts are exact even when the tunnel ends in an error or a timeout. A
/// [`Proxy`](crate::Proxy) hands every report to
/// [`ProxyBuilder::on_report`](crate::ProxyBuilder::on_report); [`tunnel`](crate::tunnel)
/// returns it.
///
/// # Examples
///
/// Logging each tunnel as it closes, and counting the bytes it moved:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use wsrelay::{CloseReason, Proxy, Report};
///
/// let moved = Arc::new(AtomicU64::new(0));
/// let total = moved.clone();
/// let proxy = Proxy::builder()
///     .backend("127.0.0.1:9000")
///     .on_report(move |report: &Report| {
///         total.fetch_add(
///             report.client_to_backend + report.backend_to_client,
///             Ordering::Relaxed,
///         );
///         if report.reason != CloseReason::Done {
///             eprintln!(
///                 "{:?} -> {:?}: {} after {:?}",
///                 report.client_addr, report.backend, report.reason, report.duration
///             );
///         }
///     })
///     .build()
///     .expect("a backend is configured");
/// # drop(proxy);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Report {
    /// Bytes written to the backend, leftovers included.
    pub client_to_backend: u64,
    /// Bytes written to the client, leftovers included.
    pub backend_to_client: u64,
    /// Bytes read from the client (or given as leftovers) but never written to the backend:
    /// still in a buffer or pipe when the tunnel ended.
    pub undelivered_to_backend: u64,
    /// Bytes read from the backend (or given as leftovers) but never written to the client.
    pub undelivered_to_client: u64,
    /// How long the tunnel ran.
    pub duration: Duration,
    /// Which implementation carried the tunnel.
    pub path: TunnelPath,
    /// Why the tunnel ended.
    pub reason: CloseReason,
    /// The error behind [`CloseReason::ClientError`] or [`CloseReason::BackendError`].
    pub error: Option<io::Error>,
    /// The client's address, when a [`Proxy`](crate::Proxy) ran the tunnel (`None` from
    /// [`tunnel`](crate::tunnel)).
    pub client_addr: Option<SocketAddr>,
    /// The backend the tunnel went to, as configured (`10.0.0.5:9000`), when a
    /// [`Proxy`](crate::Proxy) ran the tunnel.
    pub backend: Option<String>,
}
