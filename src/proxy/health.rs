//! Backend health (nginx's `max_fails`/`fail_timeout`, and an active check): what the pool
//! knows about each backend, and the tasks that find out.
//!
//! **Passive**: a connect that fails (refused, timed out, TLS handshake failed) marks its
//! backend down at once (nginx's `max_fails=1`), and the request goes on to the next backend.
//! A down backend is skipped while another can take the connection; when none can, the down
//! ones are tried after all, as a last resort, so that a client gets a 502 only when no
//! backend at all can be reached (and a single-backend pool is never shut by its own
//! ejection). A task on the runtime that saw the failure then retries the backend in the
//! background after a back-off that doubles after each failed retry (1 s, 2 s, 4 s, ... up to
//! 30 s by default) and marks it up at the first connect that succeeds, or a request's last
//! resort does.
//!
//! Retrying in the background rather than with the next request after the back-off means no
//! client ever waits for a dead backend's connect timeout (a blackholed host holds a connect
//! for the whole timeout; a background retry pays it alone) and a recovered backend gets
//! traffic back even when the pool is idle.
//!
//! **Active** (optional, [`HealthConfig::check_interval`]): every interval, a task connects to
//! every backend (TCP, and TLS for a `wss://` one) and closes the connection at once; a
//! failure marks the backend down, a success marks it up.
//!
//! Each change of state is one log line (`backend down` with the error, `backend up`), never
//! one per connection.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::pool::Backends;
use crate::trace;

/// The smallest back-off: a retry loop must not spin.
const MIN_BACKOFF: Duration = Duration::from_millis(10);

/// How a [`Proxy`](crate::Proxy) learns that a backend is down and when it is back: passive
/// ejection (on by default) and an optional active check. Set with
/// [`ProxyBuilder::health`](crate::ProxyBuilder::health).
///
/// nginx's equivalent is `server ... max_fails=1 fail_timeout=...;` in an `upstream`, except
/// that a failed backend is retried in the background with a growing back-off rather than by
/// the next request once `fail_timeout` has passed; the active check is NGINX Plus's
/// `health_check` (or HAProxy's `check inter`) reduced to a TCP connect.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use wsrelay::{HealthConfig, Proxy};
///
/// let proxy = Proxy::builder()
///     .backend("10.0.0.5:9000")
///     .backend("10.0.0.6:9000")
///     .health(
///         HealthConfig::new()
///             .backoff(Duration::from_secs(2))
///             .max_backoff(Duration::from_secs(60))
///             .check_interval(Some(Duration::from_secs(5))),
///     )
///     .build()?;
/// # drop(proxy);
/// # Ok::<(), wsrelay::BuildError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    passive: bool,
    backoff: Duration,
    max_backoff: Duration,
    check_interval: Option<Duration>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            passive: true,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            check_interval: None,
        }
    }
}

impl HealthConfig {
    /// The defaults: passive ejection with a back-off from 1 s to 30 s, no active check.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a backend whose connect fails is marked down and skipped (nginx `max_fails=1`;
    /// `false` is `max_fails=0`: every connection tries the backends in turn, dead or not).
    /// Default: `true`.
    pub fn passive(mut self, on: bool) -> Self {
        self.passive = on;
        self
    }

    /// How long a backend that went down is skipped before the first retry; each failed
    /// retry doubles it, up to [`max_backoff`](Self::max_backoff). At least 10 ms.
    /// Default: 1 s.
    pub fn backoff(mut self, first: Duration) -> Self {
        self.backoff = first.max(MIN_BACKOFF);
        self
    }

    /// The longest back-off between two retries of a down backend. Default: 30 s.
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max.max(MIN_BACKOFF);
        self
    }

    /// Connect to every backend (and close at once) every `interval`, marking it down or up
    /// by the result; `None` checks only passively. Default: `None`.
    ///
    /// The check runs on a task of the tokio runtime on which the proxy was built (or, when
    /// it was built outside one, of the first runtime that connects to a backend), and stops
    /// when the proxy is dropped.
    pub fn check_interval(mut self, interval: Option<Duration>) -> Self {
        self.check_interval = interval.map(|i| i.max(MIN_BACKOFF));
        self
    }

    /// Whether passive ejection is on.
    pub fn get_passive(&self) -> bool {
        self.passive
    }

    /// The first back-off.
    pub fn get_backoff(&self) -> Duration {
        self.backoff
    }

    /// The longest back-off.
    pub fn get_max_backoff(&self) -> Duration {
        self.max_backoff.max(self.backoff)
    }

    /// The active check's interval.
    pub fn get_check_interval(&self) -> Option<Duration> {
        self.check_interval
    }
}

/// What is known about one backend's health.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Mirrors `State::down`, for the connect path's lock-free read.
    down: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    down: bool,
    /// When it went down.
    since: Option<Instant>,
    /// Why it went down.
    error: Option<String>,
    /// The wait before the next background retry.
    backoff: Duration,
    /// Whether a background task is retrying it.
    retrying: bool,
}

/// What [`Health::mark_down`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Went {
    /// It was up: it is down now, and the caller starts a retry task if this says so.
    Down { start_retrying: bool },
    /// It was down already.
    Unchanged,
}

impl Health {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves a consistent state: keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the backend is down (skipped while another can take a connection).
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Why it went down, while it is.
    pub(crate) fn error(&self) -> Option<String> {
        let state = self.lock();
        state.down.then(|| state.error.clone()).flatten()
    }

    /// Marks the backend down after `error`, logging the change.
    pub(crate) fn mark_down(
        &self,
        _name: &str,
        error: &dyn fmt::Display,
        config: &HealthConfig,
    ) -> Went {
        let mut state = self.lock();
        if state.down {
            return Went::Unchanged;
        }
        state.down = true;
        state.since = Some(Instant::now());
        state.error = Some(error.to_string());
        state.backoff = config.get_backoff();
        self.down.store(true, Ordering::Release);
        let start_retrying = !state.retrying;
        state.retrying = true;
        trace::warning!(
            backend = _name,
            %error,
            retry_in = ?state.backoff,
            "backend down: skipped while another backend can take connections"
        );
        Went::Down { start_retrying }
    }

    /// Marks the backend up after a connect succeeded, logging the change. Cheap when it is
    /// up already (one atomic load): called after every connect.
    pub(crate) fn mark_up(&self, _name: &str) {
        if !self.is_down() {
            return;
        }
        let mut state = self.lock();
        if !state.down {
            return;
        }
        state.down = false;
        self.down.store(false, Ordering::Release);
        let _down_for = state.since.take().map(|since| since.elapsed());
        state.error = None;
        trace::warning!(backend = _name, down_for = ?_down_for, "backend up");
    }

    /// How long the retry task waits before its next attempt; `None` (and the task ends)
    /// when the backend is up again.
    fn next_retry(&self) -> Option<Duration> {
        let mut state = self.lock();
        if state.down {
            Some(state.backoff)
        } else {
            state.retrying = false;
            None
        }
    }

    /// A retry failed: the next one waits twice as long, up to `max`.
    fn retry_failed(&self, max: Duration) {
        let mut state = self.lock();
        state.backoff = (state.backoff * 2).min(max);
    }

    /// The retry task could not be started (no runtime): the next failure tries again.
    pub(crate) fn not_retrying(&self) {
        self.lock().retrying = false;
    }
}

/// The background retry of backend `index` of `set`, while it is down: wait the back-off,
/// connect (and close), double the back-off on a failure, mark it up on a success. Ends
/// when the backend is up (also when a request found it up first) or the proxy is gone.
pub(crate) async fn retry(set: Weak<Backends>, index: usize) {
    loop {
        let delay = {
            let Some(set) = set.upgrade() else { return };
            match set.get(index).health.next_retry() {
                Some(delay) => delay,
                None => return,
            }
        };
        tokio::time::sleep(delay).await;
        let Some(set) = set.upgrade() else { return };
        let backend = set.get(index);
        if !backend.health.is_down() {
            continue;
        }
        match set.probe(backend).await {
            Ok(()) => backend.health.mark_up(backend.name()),
            Err(_error) => {
                trace::debug!(backend = backend.name(), error = %_error, "backend still down");
                backend
                    .health
                    .retry_failed(set.health_config().get_max_backoff());
            }
        }
    }
}

/// The active check: every `interval`, probe every backend at once and mark each down or up.
/// Ends when the proxy is gone.
pub(crate) async fn check(set: Weak<Backends>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(strong) = set.upgrade() else { return };
        let mut probes = tokio::task::JoinSet::new();
        for index in 0..strong.len() {
            let set = strong.clone();
            probes.spawn(async move {
                let result = set.probe(set.get(index)).await;
                (index, result)
            });
        }
        while let Some(joined) = probes.join_next().await {
            let Ok((index, result)) = joined else {
                continue;
            };
            let backend = strong.get(index);
            match result {
                Ok(()) => backend.health.mark_up(backend.name()),
                Err(error) => strong.mark_down(index, &error),
            }
        }
    }
}

/// Whether `flag` was false, setting it: for starting a task once.
pub(crate) fn first(flag: &AtomicBool) -> bool {
    !flag.load(Ordering::Relaxed) && !flag.swap(true, Ordering::AcqRel)
}
