//! `tracing` events when the `tracing` feature is on, nothing otherwise. Only used off the
//! hot path: refused handshakes, unreachable backends, closed tunnels.

#[cfg(feature = "tracing")]
macro_rules! debug {
    ($($arg:tt)*) => { tracing::debug!($($arg)*) };
}

#[cfg(not(feature = "tracing"))]
macro_rules! debug {
    ($($arg:tt)*) => {{}};
}

#[cfg(feature = "tracing")]
macro_rules! warning {
    ($($arg:tt)*) => { tracing::warn!($($arg)*) };
}

#[cfg(not(feature = "tracing"))]
macro_rules! warning {
    ($($arg:tt)*) => {{}};
}

pub(crate) use {debug, warning};

/// The span of one client connection, carrying the client's address and, once one is
/// chosen, the backend's (as configured). Entered while its handshake runs and when its
/// tunnel closes, never while the tunnel moves bytes. A ZST without the `tracing` feature.
#[cfg(feature = "tracing")]
pub(crate) type Span = tracing::Span;

/// The span of one client connection (nothing without the `tracing` feature).
#[cfg(not(feature = "tracing"))]
#[derive(Debug, Clone)]
pub(crate) struct Span;

/// A new connection's span (INFO, named `connection`).
pub(crate) fn connection_span(client: std::net::SocketAddr) -> Span {
    #[cfg(feature = "tracing")]
    {
        tracing::info_span!("connection", %client, backend = tracing::field::Empty)
    }
    #[cfg(not(feature = "tracing"))]
    {
        let _ = client;
        Span
    }
}

/// Records the backend in the current connection's span.
pub(crate) fn record_backend(backend: &str) {
    #[cfg(feature = "tracing")]
    tracing::Span::current().record("backend", backend);
    #[cfg(not(feature = "tracing"))]
    let _ = backend;
}

/// Enters `span` until the guard is dropped.
#[cfg(feature = "tracing")]
pub(crate) fn enter(span: &Span) -> tracing::span::Entered<'_> {
    span.enter()
}

/// Enters `span` until the guard is dropped (nothing without the `tracing` feature).
#[cfg(not(feature = "tracing"))]
pub(crate) fn enter(_span: &Span) -> Entered {
    Entered
}

/// What [`enter`] returns without the `tracing` feature.
#[cfg(not(feature = "tracing"))]
pub(crate) struct Entered;

/// Runs `future` inside `span`.
#[cfg(feature = "hyper")]
pub(crate) async fn in_span<F: std::future::Future>(span: &Span, future: F) -> F::Output {
    #[cfg(feature = "tracing")]
    {
        tracing::Instrument::instrument(future, span.clone()).await
    }
    #[cfg(not(feature = "tracing"))]
    {
        let _ = span;
        future.await
    }
}
