//! [`Proxy::serve`]: the accept loop, and its drain on shutdown.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::net::TcpListener;

use super::connection::Connection;
use super::Proxy;
use crate::splice::Stream;
use crate::trace;

/// What a drain did: returned by [`Proxy::serve`] once it has stopped, and by
/// [`Proxy::drain`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeSummary {
    /// Connections accepted ([`Proxy::serve`]), or admitted through `handle` and `upgrade`
    /// over the proxy's life ([`Proxy::drain`]).
    pub accepted: u64,
    /// Connections that ended by themselves during the grace period after the shutdown signal.
    pub drained: u64,
    /// Connections still open when the grace period ended, closed by the proxy.
    pub cut: u64,
}

impl Proxy {
    /// Accepts connections from `listener` and proxies each on its own task until
    /// `shutdown` completes; then stops accepting (the listening socket is closed at once,
    /// so new connects are refused), lets open connections finish for the grace period
    /// ([`ProxyBuilder::grace_period`](crate::ProxyBuilder::grace_period)), closes the rest,
    /// and returns a summary.
    ///
    /// With `ProxyBuilder::tls` (feature `rustls`), every
    /// connection is TLS, terminated on its own task (a slow handshake never delays the
    /// accept loop).
    ///
    /// Accept errors never end the loop: when the process is out of file descriptors
    /// (`EMFILE`/`ENFILE`) or memory it backs off (up to a second, without delaying a
    /// shutdown) and retries.
    pub async fn serve<F>(&self, listener: TcpListener, shutdown: F) -> ServeSummary
    where
        F: Future<Output = ()>,
    {
        // Each connection runs detached on its own task and counts itself in `group` (a
        // join set would cost a lock and an allocation per connection, and a wake-up of
        // this loop per closed one).
        let group = self.new_group();
        let mut accepted = 0;
        let mut backoff = Duration::ZERO;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                result = listener.accept() => match result {
                    Ok((stream, peer)) => {
                        backoff = Duration::ZERO;
                        accepted += 1;
                        tokio::spawn(Connection::accept(self, Stream::Tcp(stream), peer, &group));
                    }
                    Err(error) => {
                        if is_resource_error(&error) {
                            backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                            trace::warning!(%error, ?backoff, "accept failed; backing off");
                            tokio::select! {
                                biased;
                                () = &mut shutdown => break,
                                () = tokio::time::sleep(backoff) => {}
                            }
                        }
                    }
                },
            }
        }
        drop(listener);
        // Refuse, wait out the grace period, cut the rest and give them CUT_WAIT to close:
        // every phase of a connection ends at the cut (a handshake is abandoned, a tunnel
        // closed), so none outlives the drain by more than its own close.
        let summary = group.run(self.inner.grace).await;
        ServeSummary {
            accepted,
            ..summary
        }
    }
}

/// Whether `accept` failed for want of resources (file descriptors, memory) rather than
/// because of one connection.
fn is_resource_error(error: &io::Error) -> bool {
    #[cfg(unix)]
    {
        if let Some(code) = error.raw_os_error() {
            return matches!(
                code,
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
            );
        }
    }
    error.kind() == io::ErrorKind::OutOfMemory
}
