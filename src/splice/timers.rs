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
///
/// Periods and deadlines are kept in microseconds (deadlines counted from the start, `0`
/// meaning none): every open tunnel holds one of these, so it is kept small.
#[derive(Debug)]
pub(crate) struct Timers {
    /// Set at the first poll.
    start: Option<Instant>,
    idle: u64,
    fin: u64,
    lifetime: u64,
    idle_at: u64,
    fin_at: u64,
    lifetime_at: u64,
    /// A first wake-up one fin period after the start, which closes nothing: a half-close
    /// before it arms a fin deadline that is later than the sleep already set, so the sleep
    /// is not moved earlier (which makes tokio wake its driver: a system call per tunnel).
    check_at: u64,
    /// `Pump::activity` when the idle deadline was last armed.
    seen: u64,
}

/// A configured period in microseconds, `0` for none (a zero period is one microsecond).
fn micros(period: Option<Duration>) -> u64 {
    period.map_or(0, |p| {
        u64::try_from(p.as_micros()).unwrap_or(u64::MAX).max(1)
    })
}

impl Timers {
    pub(crate) fn new(config: &SpliceConfig) -> Self {
        Self {
            start: None,
            idle: micros(config.get_idle_timeout()),
            fin: micros(config.get_fin_timeout()),
            lifetime: micros(config.get_max_lifetime()),
            idle_at: 0,
            fin_at: 0,
            lifetime_at: 0,
            check_at: 0,
            seen: 0,
        }
    }

    /// Starts the clock (the idle and lifetime deadlines) unless it runs already.
    pub(crate) fn start_once(&mut self) {
        if self.start.is_none() {
            self.start = Some(Instant::now());
            self.idle_at = self.idle;
            self.lifetime_at = self.lifetime;
            self.check_at = self.fin;
        }
    }

    /// Microseconds since the start.
    fn since_start(&self, now: Instant) -> u64 {
        self.start.map_or(0, |start| {
            u64::try_from(now.saturating_duration_since(start).as_micros()).unwrap_or(u64::MAX)
        })
    }

    /// Arms the fin deadline (once): one side has sent its EOF.
    fn half_closed(&mut self, now: Instant) {
        if self.fin_at == 0 && self.fin > 0 {
            self.fin_at = self.since_start(now).saturating_add(self.fin).max(1);
        }
    }

    fn nearest(&self) -> Option<Instant> {
        let at = [self.idle_at, self.fin_at, self.lifetime_at, self.check_at]
            .into_iter()
            .filter(|&at| at > 0)
            .min()?;
        Some(self.start? + Duration::from_micros(at))
    }

    /// Checks the deadlines after the sleep fired at `now`; re-arms the idle deadline if
    /// bytes moved since it was armed.
    fn fired(&mut self, now: Instant, activity: u64) -> Option<CloseReason> {
        let elapsed = self.since_start(now);
        let passed = |at: u64| at > 0 && elapsed >= at;
        if passed(self.lifetime_at) {
            return Some(CloseReason::Lifetime);
        }
        if passed(self.fin_at) {
            return Some(CloseReason::FinTimeout);
        }
        if passed(self.check_at) {
            self.check_at = 0;
        }
        if passed(self.idle_at) {
            if activity == self.seen {
                return Some(CloseReason::IdleTimeout);
            }
            self.seen = activity;
            self.idle_at = elapsed.saturating_add(self.idle);
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
    if timers.fin_at == 0 && pump.half_closed() {
        timers.half_closed(Instant::now());
    }
    // Each turn either returns or moves a deadline later; the bound is only a safeguard.
    for _ in 0..4 {
        let Some(deadline) = timers.nearest() else {
            return Poll::Pending;
        };
        match sleep.as_mut().as_pin_mut() {
            Some(armed) if armed.deadline() == deadline => {}
            Some(armed) => armed.reset(deadline),
            None => sleep.set(Some(tokio::time::sleep_until(deadline))),
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
    fn periods_are_kept_in_microseconds_and_zero_means_one() {
        assert_eq!(micros(None), 0);
        assert_eq!(micros(Some(Duration::ZERO)), 1);
        assert_eq!(micros(Some(Duration::from_millis(1500))), 1_500_000);
        assert_eq!(micros(Some(Duration::MAX)), u64::MAX);
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
        // Half-closed 1 s in: the fin deadline (30 s by default) comes before the idle one,
        // after the first check (one fin period after the start), which closes nothing.
        t.half_closed(start + Duration::from_secs(1));
        assert_eq!(t.nearest(), Some(start + Duration::from_secs(30)));
        assert_eq!(t.fired(start + Duration::from_secs(30), 0), None);
        assert_eq!(t.nearest(), Some(start + Duration::from_secs(31)));
        // Arming it again does not move it.
        t.half_closed(start + Duration::from_secs(5));
        assert_eq!(t.nearest(), Some(start + Duration::from_secs(31)));
        assert_eq!(
            t.fired(start + Duration::from_secs(31), 0),
            Some(CloseReason::FinTimeout)
        );
    }

    #[test]
    fn a_half_close_never_moves_the_sleep_earlier_before_the_first_check() {
        // Moving a tokio sleep earlier wakes the timer driver (a system call): the first
        // deadline already set is the first check, one fin period after the start, and a
        // half-close before it arms a later fin deadline.
        let mut t = Timers::new(&SpliceConfig::new());
        t.start_once();
        let start = t.start.unwrap();
        let first = t.nearest().unwrap();
        assert_eq!(first, start + Duration::from_secs(30));
        for at in [0, 1, 10, 29] {
            let mut t = Timers::new(&SpliceConfig::new());
            t.start_once();
            t.half_closed(t.start.unwrap() + Duration::from_secs(at));
            assert!(t.nearest().unwrap() >= t.start.unwrap() + Duration::from_secs(30));
        }
    }
}
