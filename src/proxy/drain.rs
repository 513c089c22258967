//! Tracking connections for a graceful shutdown (rule 27): a [`Drain`] group counts its
//! connections, refuses new ones once draining, waits for the rest to end within a grace
//! period, then signals them to close.
//!
//! [`Proxy::serve`](crate::Proxy::serve) has a group per call (its own connections); the
//! [`Proxy`](crate::Proxy) has one for the connections started by `handle` and `upgrade`,
//! drained by [`Proxy::drain`](crate::Proxy::drain).
//!
//! A connection's [`Cut`] is also how [`Proxy::close_backend`](crate::Proxy::close_backend)
//! reaches it, without a second signal per connection and without a notification shared by
//! the threads that serve one backend: a close wakes every connection of every group
//! ([`Drain::wake`], a rare operator's action), and each checks what happened to it (its
//! group's flag, its backend's close count), going back to waiting if it was not meant.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

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
    /// Notified when the count drops to zero.
    empty: Notify,
}

impl Drain {
    pub(crate) fn new() -> Self {
        Self {
            count: AtomicUsize::new(0),
            admitted: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            cut: Arc::new(Notify::new()),
            is_cut: AtomicBool::new(false),
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
    pub(crate) fn cut_signal(self: &Arc<Self>) -> Cut {
        Cut {
            notified: self.cut.clone().notified_owned(),
            group: self.clone(),
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

    /// Signals every connection of the group to close.
    pub(crate) fn cut(&self) {
        self.is_cut.store(true, Ordering::Release);
        self.cut.notify_waiters();
    }

    /// Wakes every connection of the group to check whether its backend was closed
    /// ([`Cut::poll_or`]); those whose backend was not wait again.
    pub(crate) fn wake(&self) {
        self.cut.notify_waiters();
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

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.empty.notify_waiters();
        }
    }
}

pin_project_lite::pin_project! {
    /// Completes when the connection's group is cut; for a tunnel, [`poll_or`](Self::poll_or)
    /// also completes when its backend is closed.
    #[derive(Debug)]
    pub(crate) struct Cut {
        #[pin]
        notified: OwnedNotified,
        group: Arc<Drain>,
    }
}

impl Future for Cut {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_or(cx, || false)
    }
}

impl Cut {
    /// Whether the group was cut.
    pub(crate) fn is_cut(&self) -> bool {
        self.group.is_cut()
    }

    /// Completes when the group is cut or `closed` says so when the group wakes its
    /// connections ([`Drain::wake`]).
    pub(crate) fn poll_or(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        closed: impl Fn() -> bool,
    ) -> Poll<()> {
        let mut this = self.project();
        loop {
            ready!(this.notified.as_mut().poll(cx));
            // Waiting again first, then checking: a notification after the check is seen by
            // the new wait (a notification counts for every wait that exists when it is sent,
            // polled or not).
            this.notified.set(this.group.cut.clone().notified_owned());
            if this.group.is_cut() || closed() {
                return Poll::Ready(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_drain_waits_for_its_connections_then_cuts_the_rest() {
        let group = Arc::new(Drain::new());
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
        let group = Arc::new(Drain::new());
        let cut = group.cut_signal();
        group.cut();
        tokio::time::timeout(Duration::from_millis(1), cut)
            .await
            .expect("the cut was missed");
    }

    /// Whether `cut` completes now, its backend closed or not.
    async fn completes(cut: &mut Pin<Box<Cut>>, closed: bool) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(cut.as_mut().poll_or(cx, || closed).is_ready())).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_completes_only_the_waits_it_was_meant_for() {
        let group = Arc::new(Drain::new());
        let mut spared = Box::pin(group.cut_signal());
        let mut closed = Box::pin(group.cut_signal());
        assert!(!completes(&mut spared, false).await);
        assert!(!completes(&mut closed, false).await);
        // `closed`'s backend is closed; every connection of the group is woken.
        group.wake();
        assert!(
            !completes(&mut spared, false).await,
            "woken, not closed: waits again"
        );
        assert!(completes(&mut closed, true).await);
        // Still waiting for a cut, which it sees.
        assert!(!completes(&mut spared, false).await);
        group.cut();
        assert!(completes(&mut spared, false).await);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_group_drains_at_once() {
        let group = Arc::new(Drain::new());
        let started = tokio::time::Instant::now();
        let summary = group.run(Duration::from_secs(10)).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!((summary.drained, summary.cut), (0, 0));
    }
}
