//! Tracking connections for a graceful shutdown (rule 27): a [`Drain`] group counts its
//! connections, refuses new ones once draining, waits for the rest to end within a grace
//! period, then signals them to close.
//!
//! [`Proxy::serve`](crate::Proxy::serve) has a group per call (its own connections); the
//! [`Proxy`](crate::Proxy) has one for the connections started by `handle` and `upgrade`,
//! drained by [`Proxy::drain`](crate::Proxy::drain).
//!
//! A connection's [`Cut`] is also how [`Proxy::close_backend`](crate::Proxy::close_backend)
//! reaches it, without a second signal per connection: during the handshake it waits on its
//! group's notification; once its tunnel starts it waits on its backend's instead
//! ([`Cut::watch`]), which both a close of that backend and a cut of any group notify. Woken,
//! it checks which of the two happened to it (its group's flag, its backend's close count)
//! and goes back to waiting if neither did.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use super::pool::Via;
use super::ServeSummary;

/// After the grace period, how long cut connections get to wind down before a drain returns.
pub(crate) const CUT_WAIT: Duration = Duration::from_secs(1);

/// A group of connections that drain together.
#[derive(Debug)]
pub(crate) struct Drain {
    /// Connections in the group.
    count: AtomicUsize,
    /// Connections ever admitted to the group.
    admitted: AtomicUsize,
    /// Set once a drain has started: new connections are refused.
    draining: AtomicBool,
    /// Notified (every waiter) when the grace period is over.
    cut: Arc<Notify>,
    /// Set when the grace period is over, before anything is notified.
    is_cut: AtomicBool,
    /// The signals of the proxy's backends, on which open tunnels wait: notified at a cut
    /// too.
    backends: Vec<Arc<Notify>>,
    /// Notified when the count drops to zero.
    empty: Notify,
}

impl Drain {
    /// A group of connections to the backends whose signals are `backends`.
    pub(crate) fn new(backends: Vec<Arc<Notify>>) -> Self {
        Self {
            count: AtomicUsize::new(0),
            admitted: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            cut: Arc::new(Notify::new()),
            is_cut: AtomicBool::new(false),
            backends,
            empty: Notify::new(),
        }
    }

    /// Whether the group was cut.
    pub(crate) fn is_cut(&self) -> bool {
        self.is_cut.load(Ordering::Acquire)
    }

    /// Counts a connection in until the returned guard is dropped.
    pub(crate) fn track(self: &Arc<Self>) -> Tracked {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.admitted.fetch_add(1, Ordering::Relaxed);
        Tracked(self.clone())
    }

    /// The signal that completes when the group is cut. Take it before reading
    /// [`is_draining`](Self::is_draining): a signal taken before a cut always sees it.
    pub(crate) fn cut_signal(&self) -> Cut {
        Cut {
            notified: self.cut.clone().notified_owned(),
        }
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// How many connections the group holds now.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Refuses new connections from now on.
    pub(crate) fn start(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Signals every connection of the group to close: those in their handshake through the
    /// group's notification, the tunnels through their backend's (which wakes the tunnels of
    /// other groups too: they find their group not cut and wait again).
    pub(crate) fn cut(&self) {
        self.is_cut.store(true, Ordering::Release);
        self.cut.notify_waiters();
        for backend in &self.backends {
            backend.notify_waiters();
        }
    }

    /// Waits until the group is empty or `limit` has passed; whether it is empty.
    pub(crate) async fn emptied_within(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let empty = self.empty.notified();
            tokio::pin!(empty);
            empty.as_mut().enable();
            if self.len() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, empty).await.is_err() {
                return self.len() == 0;
            }
        }
    }

    /// The whole drain: refuse new connections, wait `grace` for the group to empty, cut
    /// the rest and give them [`CUT_WAIT`] to close.
    pub(crate) async fn run(&self, grace: Duration) -> ServeSummary {
        self.start();
        let open = self.len();
        self.emptied_within(grace).await;
        let left = self.len();
        if left > 0 {
            self.cut();
            self.emptied_within(CUT_WAIT).await;
        }
        ServeSummary {
            accepted: self.admitted.load(Ordering::Relaxed) as u64,
            drained: open.saturating_sub(left) as u64,
            cut: left as u64,
        }
    }
}

/// Counts one connection in its [`Drain`] group while it lives.
#[derive(Debug)]
pub(crate) struct Tracked(Arc<Drain>);

impl Tracked {
    pub(crate) fn group(&self) -> &Drain {
        &self.0
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.empty.notify_waiters();
        }
    }
}

pin_project_lite::pin_project! {
    /// Completes when the connection's group is cut; once [`watch`](Self::watch)ing a
    /// backend, use [`poll_watching`](Self::poll_watching), which also completes when that
    /// backend is closed.
    #[derive(Debug)]
    pub(crate) struct Cut {
        #[pin]
        notified: OwnedNotified,
    }
}

impl Future for Cut {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().notified.poll(cx)
    }
}

impl Cut {
    /// From now on, waits on the signal of `via`'s backend instead of the group's: for a
    /// tunnel. A close or cut from before this call is not seen by the signal; check
    /// [`Watching::happened`] once after it.
    pub(crate) fn watch(self: Pin<&mut Self>, via: &Via) {
        self.project()
            .notified
            .set(via.signal().clone().notified_owned());
    }

    /// Completes when `group` is cut or `via`'s backend is closed; must follow
    /// [`watch`](Self::watch) with the same `via`.
    pub(crate) fn poll_watching(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        watching: &Watching<'_>,
    ) -> Poll<()> {
        let mut notified = self.project().notified;
        loop {
            ready!(notified.as_mut().poll(cx));
            // Waiting again first, then checking: a notification after the check is seen by
            // the new wait (a notification counts for every wait that exists when it is sent,
            // polled or not).
            notified.set(watching.via.signal().clone().notified_owned());
            if watching.happened() {
                return Poll::Ready(());
            }
        }
    }
}

/// What a tunnel's [`Cut`] watches: its group and its backend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watching<'a> {
    /// `None` for a connection without a place (never a tunnel).
    pub(crate) group: Option<&'a Drain>,
    pub(crate) via: &'a Via,
}

impl Watching<'_> {
    /// Whether the group was cut or the backend closed.
    pub(crate) fn happened(&self) -> bool {
        self.group.is_some_and(Drain::is_cut) || self.via.is_closed()
    }

    /// Whether the backend was closed and the group was not cut: the tunnel ended because of
    /// [`Proxy::close_backend`](crate::Proxy::close_backend).
    pub(crate) fn backend_closed(&self) -> bool {
        !self.group.is_some_and(Drain::is_cut) && self.via.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_drain_waits_for_its_connections_then_cuts_the_rest() {
        let group = Arc::new(Drain::new(Vec::new()));
        let quick = (group.cut_signal(), group.track());
        let slow = (group.cut_signal(), group.track());
        assert_eq!(group.len(), 2);
        let drain = {
            let group = group.clone();
            tokio::spawn(async move { group.run(Duration::from_secs(10)).await })
        };
        // One ends by itself within the grace period ...
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(quick);
        // ... the other only when cut, which it is at the end of the grace period.
        let (cut, tracked) = slow;
        let started = tokio::time::Instant::now();
        cut.await;
        assert_eq!(started.elapsed(), Duration::from_secs(7));
        drop(tracked);
        let summary = drain.await.unwrap();
        assert_eq!((summary.accepted, summary.drained, summary.cut), (2, 1, 1));
        assert!(group.is_draining());
    }

    #[tokio::test(start_paused = true)]
    async fn a_signal_taken_before_the_cut_sees_it_even_if_polled_after() {
        let group = Arc::new(Drain::new(Vec::new()));
        let cut = group.cut_signal();
        group.cut();
        tokio::time::timeout(Duration::from_millis(1), cut)
            .await
            .expect("the cut was missed");
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_group_drains_at_once() {
        let group = Arc::new(Drain::new(Vec::new()));
        let started = tokio::time::Instant::now();
        let summary = group.run(Duration::from_secs(10)).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!((summary.drained, summary.cut), (0, 0));
    }
}
