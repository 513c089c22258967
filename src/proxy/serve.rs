//! [`Proxy::serve`]: the accept loop, and its drain on shutdown.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::connection::Connection;
use super::drain::CUT_WAIT;
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
        let group = self.new_group();
        let mut tasks = JoinSet::new();
        let mut summary = ServeSummary::default();
        let mut backoff = Duration::ZERO;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        backoff = Duration::ZERO;
                        summary.accepted += 1;
                        let connection = Connection::accept(self, Stream::Tcp(stream), peer, &group);
                        tasks.spawn(connection);
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
        group.start();

        let grace = tokio::time::sleep(self.inner.grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                () = &mut grace => break,
                joined = tasks.join_next() => match joined {
                    Some(_) => summary.drained += 1,
                    None => return summary,
                },
            }
        }
        group.cut();
        let wind_down = tokio::time::sleep(CUT_WAIT);
        tokio::pin!(wind_down);
        loop {
            tokio::select! {
                () = &mut wind_down => {
                    // Whatever is still running (a handshake stuck in a write): abort it.
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {
                        summary.cut += 1;
                    }
                    break;
                }
                joined = tasks.join_next() => match joined {
                    Some(_) => summary.cut += 1,
                    None => break,
                },
            }
        }
        summary
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
