//! The deadlines of one tunnel (idle, fin, lifetime), all served by one `Sleep`, and the
//! step that polls a pump against them and the shutdown future.
//!
//! The idle deadline is refreshed lazily: the pump counts activity, and only when the timer
//! fires is the count compared with the one seen when it was armed; if bytes moved, the
//! deadline is moved a full period on. A busy tunnel so never touches the timer wheel per
//! chunk.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::pump::{Pump, Side, Stop};
use super::{CloseReason, Report, SpliceConfig, TunnelPath};

/// How the tunnel ended, before it is turned into a [`Report`].
#[derive(Debug)]
pub(crate) enum End {
    Reason(CloseReason),
    Error(Side, io::Error),
}

/// The deadlines of one tunnel, all served by one `Sleep`.
#[derive(Debug)]
pub(crate) struct Timers {
    /// Set at the first poll.
    start: Option<Instant>,
    idle: Option<Duration>,
    fin: Option<Duration>,
    lifetime: Option<Duration>,
    idle_at: Option<Instant>,
    fin_at: Option<Instant>,
    lifetime_at: Option<Instant>,
    /// `Pump::activity` when the idle deadline was last armed.
    seen: u64,
    /// The deadline the sleep is set to, if any.
    armed: Option<Instant>,
}

impl Timers {
    pub(crate) fn new(config: &SpliceConfig) -> Self {
        Self {
            start: None,
            idle: config.get_idle_timeout(),
            fin: config.get_fin_timeout(),
            lifetime: config.get_max_lifetime(),
            idle_at: None,
            fin_at: None,
            lifetime_at: None,
            seen: 0,
            armed: None,
        }
    }

    /// Starts the clock (the idle and lifetime deadlines) unless it runs already.
    pub(crate) fn start_once(&mut self) {
        if self.start.is_none() {
            let start = Instant::now();
            self.start = Some(start);
            self.idle_at = self.idle.map(|t| start + t);
            self.lifetime_at = self.lifetime.map(|t| start + t);
        }
    }

    fn nearest(&self) -> Option<Instant> {
        [self.idle_at, self.fin_at, self.lifetime_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Checks the deadlines after the sleep fired at `now`; re-arms the idle deadline if
    /// bytes moved since it was armed.
    fn fired(&mut self, now: Instant, activity: u64) -> Option<CloseReason> {
        if self.lifetime_at.is_some_and(|t| now >= t) {
            return Some(CloseReason::Lifetime);
        }
        if self.fin_at.is_some_and(|t| now >= t) {
            return Some(CloseReason::FinTimeout);
        }
        if let (Some(at), Some(idle)) = (self.idle_at, self.idle) {
            if now >= at {
                if activity == self.seen {
                    return Some(CloseReason::IdleTimeout);
                }
                self.seen = activity;
                self.idle_at = Some(now + idle);
            }
        }
        None
    }

    pub(crate) fn report(&self, pump: &dyn Pump, path: TunnelPath, end: End) -> Report {
        let (to_backend, to_client) = pump.counts();
        let (reason, error) = match end {
            End::Reason(reason) => (reason, None),
            End::Error(Side::Client, e) => (CloseReason::ClientError(e.kind()), Some(e)),
            End::Error(Side::Backend, e) => (CloseReason::BackendError(e.kind()), Some(e)),
        };
        Report {
            client_to_backend: to_backend.written,
            backend_to_client: to_client.written,
            undelivered_to_backend: to_backend.pending,
            undelivered_to_client: to_client.pending,
            duration: self.start.map_or(Duration::ZERO, |start| start.elapsed()),
            path,
            reason,
            error,
            client_addr: None,
            backend: None,
        }
    }
}

/// One poll of `pump` against the timers and the shutdown future. `Ready(None)` means the
/// pump asked to fall back to the buffered path.
pub(crate) fn poll_step<S: Future<Output = ()>>(
    pump: &mut dyn Pump,
    timers: &mut Timers,
    mut sleep: Pin<&mut Option<Sleep>>,
    shutdown: Pin<&mut S>,
    cx: &mut Context<'_>,
) -> Poll<Option<End>> {
    if shutdown.poll(cx).is_ready() {
        return Poll::Ready(Some(End::Reason(CloseReason::Shutdown)));
    }
    match pump.poll_pump(cx) {
        Poll::Ready(Ok(())) => return Poll::Ready(Some(End::Reason(CloseReason::Done))),
        Poll::Ready(Err(Stop::Error(side, e))) => return Poll::Ready(Some(End::Error(side, e))),
        Poll::Ready(Err(Stop::Fallback)) => return Poll::Ready(None),
        Poll::Pending => {}
    }
    if timers.fin_at.is_none() && pump.half_closed() {
        if let Some(fin) = timers.fin {
            timers.fin_at = Some(Instant::now() + fin);
        }
    }
    // Each turn either returns or moves a deadline later; the bound is only a safeguard.
    for _ in 0..4 {
        let Some(deadline) = timers.nearest() else {
            return Poll::Pending;
        };
        if timers.armed != Some(deadline) {
            match sleep.as_mut().as_pin_mut() {
                Some(sleep) => sleep.reset(deadline),
                None => sleep.set(Some(tokio::time::sleep_until(deadline))),
            }
            timers.armed = Some(deadline);
        }
        let Some(armed) = sleep.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        if armed.poll(cx).is_pending() {
            return Poll::Pending;
        }
        if let Some(reason) = timers.fired(Instant::now(), pump.activity()) {
            return Poll::Ready(Some(End::Reason(reason)));
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_deadline_rearms_only_after_activity() {
        let config = SpliceConfig::new()
            .idle_timeout(Some(Duration::from_secs(10)))
            .fin_timeout(None);
        let mut t = Timers::new(&config);
        assert_eq!(t.nearest(), None, "deadlines before the first poll");
        t.start_once();
        let start = t.start.unwrap();
        assert_eq!(t.nearest(), Some(start + Duration::from_secs(10)));
        // Starting again does not move the deadlines.
        t.start_once();
        assert_eq!(t.start, Some(start));
        // Fired after traffic: re-armed a full period from now.
        let now = start + Duration::from_secs(10);
        assert_eq!(t.fired(now, 5), None);
        assert_eq!(t.nearest(), Some(now + Duration::from_secs(10)));
        // Fired with no traffic since: idle.
        let later = now + Duration::from_secs(10);
        assert_eq!(t.fired(later, 5), Some(CloseReason::IdleTimeout));
    }

    #[test]
    fn lifetime_and_fin_take_precedence_over_idle() {
        let config = SpliceConfig::new()
            .idle_timeout(Some(Duration::from_secs(10)))
            .max_lifetime(Some(Duration::from_secs(10)));
        let mut t = Timers::new(&config);
        t.start_once();
        let at = t.start.unwrap() + Duration::from_secs(10);
        assert_eq!(t.fired(at, 0), Some(CloseReason::Lifetime));
        let mut t = Timers::new(&SpliceConfig::new());
        t.start_once();
        let start = t.start.unwrap();
        t.fin_at = Some(start + Duration::from_secs(1));
        assert_eq!(t.nearest(), t.fin_at);
        assert_eq!(
            t.fired(start + Duration::from_secs(1), 0),
            Some(CloseReason::FinTimeout)
        );
    }
}
