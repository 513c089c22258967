//! The proxy's own counters, always on: [`Proxy::stats`] reads them, and with the `metrics`
//! feature every update also goes to the `metrics` facade (`src/metrics.rs`).
//!
//! Nothing here runs on the data path: a counter moves when a handshake ends (the
//! byte-stream front end through [`counted`], `Proxy::upgrade` when it returns its answer),
//! when a tunnel opens and closes (from its [`Report`]), when a drain ends, and (metrics
//! only) around each backend connect. A few relaxed atomic adds per connection, none per
//! chunk.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::StatusCode;

use super::connection::Ready;
use super::{Inner, Place, Proxy, ServeSummary};
use crate::error::ProxyError;
use crate::splice::Report;

/// What a [`Proxy`] has done so far, from [`Proxy::stats`]: a plain snapshot of counters
/// (nginx's `stub_status`, per proxy).
///
/// Counters only grow, except the two `*_active` gauges. Each is read on its own, so two
/// fields may be a moment apart. Bytes are counted when a tunnel closes (from its
/// [`Report`]), not while it runs: the proxy does no per-chunk bookkeeping.
///
/// Every handshake is counted once, when its answer is sent: in
/// [`handshakes_switched`](Self::handshakes_switched) when it became a tunnel, otherwise by
/// the class of the status the client got, or as unanswered.
///
/// # Examples
///
/// ```
/// let proxy = wsrelay::Proxy::new("127.0.0.1:9000");
/// let stats = proxy.stats();
/// assert_eq!(stats.handshakes(), 0);
/// assert_eq!(stats.tunnels_active, 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections being handled now, by every front end: handshakes in progress and open
    /// tunnels ([`Proxy::active_tunnels`]).
    pub connections_active: u64,
    /// Tunnels open now (after the `101`).
    pub tunnels_active: u64,
    /// Handshakes answered `101` (`200` to an HTTP/2 client, RFC 8441): tunnels opened.
    pub handshakes_switched: u64,
    /// Handshakes answered with a 4xx: the proxy's refusals of a bad handshake, the per-IP
    /// limits' `429`, and a backend's 4xx relayed.
    pub handshakes_client_error: u64,
    /// Handshakes answered with a 5xx: the proxy's `502`, `503` (the connection cap, a
    /// drain) and `504`, and a backend's 5xx relayed.
    pub handshakes_server_error: u64,
    /// Handshakes answered with any other status: a backend's refusal in 1xx–3xx relayed
    /// (a redirect, say).
    pub handshakes_other: u64,
    /// Connections that ended with nothing sent: the client left or sent nothing, its TLS
    /// handshake failed, the response could not be written, or a drain cut it during its
    /// handshake.
    pub handshakes_unanswered: u64,
    /// Tunnels that have closed.
    pub tunnels_closed: u64,
    /// Bytes the closed tunnels wrote to backends after the `101` (WebSocket framing
    /// included, HTTP heads excluded): [`Report::client_to_backend`], summed.
    pub bytes_client_to_backend: u64,
    /// Bytes the closed tunnels wrote to clients after the `101`:
    /// [`Report::backend_to_client`], summed.
    pub bytes_backend_to_client: u64,
    /// Connections that ended by themselves during a drain's grace period
    /// ([`ServeSummary::drained`], over every drain).
    pub drained: u64,
    /// Connections a drain closed at the end of its grace period ([`ServeSummary::cut`],
    /// over every drain).
    pub cut: u64,
}

impl Stats {
    /// Every handshake counted: switched, answered with an error or another status, or
    /// unanswered.
    pub fn handshakes(&self) -> u64 {
        self.handshakes_switched
            + self.handshakes_client_error
            + self.handshakes_server_error
            + self.handshakes_other
            + self.handshakes_unanswered
    }
}

/// The live counters behind [`Stats`], one set per [`Proxy`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    tunnels: AtomicUsize,
    switched: AtomicU64,
    client_error: AtomicU64,
    server_error: AtomicU64,
    other: AtomicU64,
    unanswered: AtomicU64,
    closed: AtomicU64,
    to_backend: AtomicU64,
    to_client: AtomicU64,
    drained: AtomicU64,
    cut: AtomicU64,
}

impl Counters {
    /// A handshake ended: the status the client was sent (`None`: nothing), and whether it
    /// became a tunnel.
    pub(crate) fn handshake(&self, status: Option<StatusCode>, switched: bool) {
        let counter = match status {
            _ if switched => &self.switched,
            None => &self.unanswered,
            Some(status) if status.is_client_error() => &self.client_error,
            Some(status) if status.is_server_error() => &self.server_error,
            Some(_) => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        crate::metrics::handshake(if switched {
            Some(StatusCode::SWITCHING_PROTOCOLS)
        } else {
            status
        });
    }

    /// A tunnel closed with `report` (its place is released separately, see [`Place`]).
    pub(crate) fn tunnel_closed(&self, report: &Report) {
        self.closed.fetch_add(1, Ordering::Relaxed);
        self.to_backend
            .fetch_add(report.client_to_backend, Ordering::Relaxed);
        self.to_client
            .fetch_add(report.backend_to_client, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        crate::metrics::tunnel_closed(report);
    }

    /// A drain ended.
    pub(crate) fn drain(&self, summary: &ServeSummary) {
        self.drained.fetch_add(summary.drained, Ordering::Relaxed);
        self.cut.fetch_add(summary.cut, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        crate::metrics::drain(summary.drained, summary.cut);
    }

    fn snapshot(&self, connections: usize) -> Stats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            connections_active: connections as u64,
            tunnels_active: self.tunnels.load(Ordering::Relaxed) as u64,
            handshakes_switched: get(&self.switched),
            handshakes_client_error: get(&self.client_error),
            handshakes_server_error: get(&self.server_error),
            handshakes_other: get(&self.other),
            handshakes_unanswered: get(&self.unanswered),
            tunnels_closed: get(&self.closed),
            bytes_client_to_backend: get(&self.to_backend),
            bytes_backend_to_client: get(&self.to_client),
            drained: get(&self.drained),
            cut: get(&self.cut),
        }
    }
}

impl Proxy {
    /// What this proxy has done so far, and what it is doing now: handshakes by outcome,
    /// open tunnels, bytes, drains. Cheap (a dozen atomic loads): call it as often as a page
    /// or an exporter wants; the `axum` example serves it as JSON at `/stats`.
    ///
    /// These counters are always kept, whatever the features. With the `metrics` feature the
    /// same events also go to the [`metrics`](https://docs.rs/metrics) facade, with labels
    /// (`wsrelay::metrics`).
    pub fn stats(&self) -> Stats {
        let inner = &self.inner;
        inner.stats.snapshot(inner.active.load(Ordering::Acquire))
    }
}

impl Place {
    /// The connection's handshake became a tunnel: counted open until the place is released
    /// (however the connection ends), with the per-IP hold it had.
    pub(super) fn open_tunnel(&mut self, ready: &mut Ready) {
        self.hold = ready.hold.take();
        self.tunnel = true;
        self.inner.stats.tunnels.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        crate::metrics::tunnel_opened();
    }

    /// Called when the place is released.
    pub(super) fn close_tunnel(&mut self) {
        if std::mem::take(&mut self.tunnel) {
            self.inner.stats.tunnels.fetch_sub(1, Ordering::Relaxed);
            #[cfg(feature = "metrics")]
            crate::metrics::tunnel_released();
        }
    }
}

/// A byte-stream connection's handshake, counted when it ends: by the status it sent (`101`
/// when it became a tunnel), or as unanswered when it is dropped first (a drain's cut, an
/// aborted task).
pub(crate) fn counted<F>(inner: Arc<Inner>, handshake: F) -> Counted<F>
where
    F: Future<Output = Result<Ready, ProxyError>>,
{
    Counted {
        handshake,
        pending: Pending(Some(inner)),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`counted`]. Written by hand: an `async fn` would hold the handshake
    /// twice over (its argument and the future it awaits), doubling the size of the box
    /// every connection allocates and copies.
    pub(crate) struct Counted<F> {
        #[pin]
        handshake: F,
        pending: Pending,
    }
}

impl<F> Future for Counted<F>
where
    F: Future<Output = Result<Ready, ProxyError>>,
{
    type Output = Result<Ready, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.handshake.poll(cx));
        if let Some(inner) = this.pending.0.take() {
            match &result {
                Ok(_) => inner.stats.handshake(None, true),
                Err(error) => inner.stats.handshake(error.status_sent(), false),
            }
        }
        Poll::Ready(result)
    }
}

/// Counts a handshake as unanswered if it is dropped before it ends.
struct Pending(Option<Arc<Inner>>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.stats.handshake(None, false);
        }
    }
}

/// One connect attempt to `backend`: with the `metrics` feature, its latency (on success)
/// or a failure (an error, or a timeout that drops it) per backend; otherwise just the
/// attempt.
pub(crate) async fn connect<T, E>(
    backend: &super::pool::Backend,
    attempt: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    #[cfg(feature = "metrics")]
    {
        let mut timing = crate::metrics::ConnectTiming::start(backend.series());
        let result = attempt.await;
        timing.finish(result.is_ok());
        result
    }
    #[cfg(not(feature = "metrics"))]
    {
        let _ = backend;
        attempt.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_handshake_lands_in_one_class() {
        let counters = Counters::default();
        let cases = [
            (Some(StatusCode::SWITCHING_PROTOCOLS), true),
            (Some(StatusCode::OK), true), // HTTP/2's 200 for a tunnel
            (Some(StatusCode::BAD_REQUEST), false),
            (Some(StatusCode::TOO_MANY_REQUESTS), false),
            (Some(StatusCode::BAD_GATEWAY), false),
            (Some(StatusCode::SERVICE_UNAVAILABLE), false),
            (Some(StatusCode::FOUND), false), // a backend's redirect, relayed
            (None, false),
        ];
        for (status, switched) in cases {
            counters.handshake(status, switched);
        }
        let stats = counters.snapshot(3);
        assert_eq!(stats.handshakes_switched, 2);
        assert_eq!(stats.handshakes_client_error, 2);
        assert_eq!(stats.handshakes_server_error, 2);
        assert_eq!(stats.handshakes_other, 1);
        assert_eq!(stats.handshakes_unanswered, 1);
        assert_eq!(stats.handshakes(), cases.len() as u64);
        assert_eq!(stats.connections_active, 3);
    }

    #[tokio::test]
    async fn a_handshake_dropped_before_it_ends_is_unanswered() {
        let proxy = Proxy::new("127.0.0.1:9");
        let pending = counted(proxy.inner.clone(), std::future::pending());
        let polled = tokio::time::timeout(std::time::Duration::from_millis(1), pending).await;
        assert!(polled.is_err());
        assert_eq!(proxy.stats().handshakes_unanswered, 1);
        assert_eq!(proxy.stats().handshakes(), 1);
    }
}
