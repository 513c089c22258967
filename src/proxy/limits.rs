//! Limits per client IP address: concurrent connections ([`ProxyBuilder::max_per_ip`], nginx's
//! `limit_conn`) and a handshake rate ([`ProxyBuilder::rate_per_ip`], feature `limits`,
//! nginx's `limit_req`), checked by [`Proxy::limit_client`].
//!
//! The check is one step of its own, taken once the client's address is final: the
//! byte-stream front end (`flow::handshake`) takes it before the TLS handshake and the head
//! (so a client over its limits costs neither), `Proxy::upgrade` right after admitting the
//! connection. A client over a limit gets `429 Too Many Requests` with `Retry-After` (a TLS
//! client of `serve`/`handle` is closed instead, as for the connection cap: a plaintext
//! answer means nothing to it).
//!
//! Memory stays bounded: an address is in the connection table only while it has a
//! connection open (the entry goes with its last one), and the rate limiter forgets an
//! address once its bucket is full again, swept every `SWEEP_EVERY` checks.
//!
//! [`ProxyBuilder::max_per_ip`]: super::ProxyBuilder::max_per_ip
//! [`ProxyBuilder::rate_per_ip`]: super::ProxyBuilder#method.rate_per_ip

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::header::{HeaderValue, RETRY_AFTER};
use http::StatusCode;

use super::flow::Failure;
use super::Proxy;
use crate::error::ProxyError;
use crate::trace;
use crate::wire::plain_response;

/// The `Retry-After` sent with a refusal for too many concurrent connections: when one of the
/// client's connections will close cannot be known; this is a floor for its retries.
pub(crate) const PER_IP_RETRY_AFTER: Duration = Duration::from_secs(5);

/// How many rate checks pass between two sweeps of the rate limiter's idle addresses.
#[cfg(feature = "limits")]
const SWEEP_EVERY: usize = 1024;

/// The per-IP limits of one proxy.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    per_ip: Option<Arc<PerIp>>,
    #[cfg(feature = "limits")]
    rate: Option<rate::Limiter>,
}

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limited {
    /// Too many connections open from its address.
    Connections,
    /// Too many handshakes from its address lately: retry after this long.
    #[cfg_attr(not(feature = "limits"), allow(dead_code))]
    Rate(Duration),
}

impl Limits {
    #[cfg_attr(not(feature = "limits"), allow(unused_mut))]
    pub(crate) fn new(
        max_per_ip: Option<usize>,
        #[cfg(feature = "limits")] rate: Option<RateLimit>,
    ) -> Result<Limits, crate::BuildError> {
        let mut limits = Limits {
            per_ip: max_per_ip.map(|max| {
                Arc::new(PerIp {
                    max,
                    counts: Mutex::default(),
                })
            }),
            #[cfg(feature = "limits")]
            rate: None,
        };
        #[cfg(feature = "limits")]
        if let Some(rate) = rate {
            limits.rate = Some(rate::Limiter::new(rate)?);
        }
        Ok(limits)
    }

    /// Checks `ip` against every limit; on success, the hold that counts the connection
    /// until it is dropped (`None` without a per-IP connection limit).
    pub(crate) fn check(&self, ip: IpAddr) -> Result<Option<Hold>, Limited> {
        // IPv4 clients of a dual-stack socket arrive as `::ffff:a.b.c.d`: one client, one key.
        let ip = ip.to_canonical();
        let hold = match &self.per_ip {
            Some(per_ip) => Some(PerIp::take(per_ip, ip).ok_or(Limited::Connections)?),
            None => None,
        };
        #[cfg(feature = "limits")]
        if let Some(rate) = &self.rate {
            // A refused handshake releases the connection slot taken above (`hold` drops).
            rate.check(ip).map_err(Limited::Rate)?;
        }
        Ok(hold)
    }

    /// Addresses with a connection open now (tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.per_ip.as_ref().map_or(0, |p| p.lock().len())
    }
}

impl Limited {
    /// The answer: `429 Too Many Requests` with `Retry-After` (RFC 6585 §4).
    pub(crate) fn failure(self) -> Failure {
        let (body, retry_after, error) = match self {
            Limited::Connections => (
                "too many connections from this address\n",
                PER_IP_RETRY_AFTER,
                ProxyError::PerIpLimit { sent: None },
            ),
            Limited::Rate(wait) => (
                "too many handshakes from this address\n",
                wait,
                ProxyError::RateLimited { sent: None },
            ),
        };
        let mut response = plain_response(StatusCode::TOO_MANY_REQUESTS, body.to_owned());
        response
            .headers_mut()
            .insert(RETRY_AFTER, retry_after_value(retry_after));
        Failure::new(response, error)
    }
}

/// Whole seconds, rounded up, at least 1 (`Retry-After: 0` would invite an immediate retry).
fn retry_after_value(wait: Duration) -> HeaderValue {
    let mut secs = wait.as_secs();
    if wait.subsec_nanos() > 0 || secs == 0 {
        secs += 1;
    }
    HeaderValue::from(secs)
}

impl Proxy {
    /// The per-IP limits for a client at `ip`, the step every front end takes once the
    /// client's address is final. `Ok(None)` when no per-IP connection limit is set.
    /// [`Limited::failure`] is the answer to a refused client.
    pub(crate) fn limit_client(&self, ip: IpAddr) -> Result<Option<Hold>, Limited> {
        let checked = self.inner.limits.check(ip);
        if let Err(_limited) = &checked {
            trace::debug!(client = %ip, limited = ?_limited, "connection refused: per-IP limit");
        }
        checked
    }
}

/// Concurrent connections per address.
#[derive(Debug)]
struct PerIp {
    max: usize,
    /// Only addresses with a connection open: an entry goes with its last connection.
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // A panic elsewhere while holding the lock leaves a consistent map (each update is one
        // statement): keep using it.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(this: &Arc<PerIp>, ip: IpAddr) -> Option<Hold> {
        let mut counts = this.lock();
        let count = counts.entry(ip).or_insert(0);
        if *count >= this.max {
            if *count == 0 {
                // `max` is 0: nobody gets in, and nothing is kept.
                counts.remove(&ip);
            }
            return None;
        }
        *count += 1;
        Some(Hold {
            per_ip: this.clone(),
            ip,
        })
    }
}

/// One connection counted against its address's limit until dropped.
#[derive(Debug)]
pub(crate) struct Hold {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut counts = self.per_ip.lock();
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// A handshake rate per client address for [`ProxyBuilder::rate_per_ip`], a token bucket
/// (feature `limits`): `count` handshakes per period on average, up to
/// [`burst`](Self::burst) at once. nginx's `limit_req zone=... rate=10r/s burst=5 nodelay`
/// is `RateLimit::per_second(10).burst(6)`: nginx's `burst` counts the handshakes allowed
/// beyond the first.
///
/// # Examples
///
/// ```
/// use wsrelay::{Proxy, RateLimit};
///
/// // 30 handshakes a minute per address, at most 5 at once.
/// let proxy = Proxy::builder()
///     .backend("127.0.0.1:9000")
///     .rate_per_ip(Some(RateLimit::per_minute(30).burst(5)))
///     .build()?;
/// # drop(proxy);
/// # Ok::<(), wsrelay::BuildError>(())
/// ```
///
/// [`ProxyBuilder::rate_per_ip`]: super::ProxyBuilder#method.rate_per_ip
#[cfg(feature = "limits")]
#[cfg_attr(docsrs, doc(cfg(feature = "limits")))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    count: u32,
    per: Duration,
    burst: Option<u32>,
}

#[cfg(feature = "limits")]
impl RateLimit {
    /// `count` handshakes per second; the burst is `count` unless set.
    pub fn per_second(count: u32) -> Self {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` handshakes per minute; the burst is `count` unless set.
    pub fn per_minute(count: u32) -> Self {
        Self::new(count, Duration::from_secs(60))
    }

    /// `count` handshakes per `period`; the burst is `count` unless set.
    pub fn new(count: u32, period: Duration) -> Self {
        RateLimit {
            count,
            per: period,
            burst: None,
        }
    }

    /// How many handshakes an address may make at once, after a quiet spell (the size of
    /// its bucket). Default: the count per period.
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }
}

/// The rate limiter, on `governor`'s keyed GCRA (a token bucket without a timer).
#[cfg(feature = "limits")]
mod rate {
    use std::net::IpAddr;
    use std::num::NonZeroU32;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use governor::clock::Clock;
    use governor::middleware::NoOpMiddleware;
    use governor::state::keyed::DashMapStateStore;
    use governor::{Quota, RateLimiter};

    use super::{RateLimit, SWEEP_EVERY};
    use crate::BuildError;

    /// tokio's clock (so paused time drives it in tests), as time since the limiter was
    /// built: `governor` takes a `Duration` as an instant.
    #[derive(Debug, Clone)]
    pub(super) struct TokioClock {
        start: tokio::time::Instant,
    }

    impl Clock for TokioClock {
        type Instant = Duration;

        fn now(&self) -> Duration {
            self.start.elapsed()
        }
    }

    type Keyed =
        RateLimiter<IpAddr, DashMapStateStore<IpAddr>, TokioClock, NoOpMiddleware<Duration>>;

    pub(super) struct Limiter {
        limiter: Keyed,
        clock: TokioClock,
        checks: AtomicUsize,
    }

    impl std::fmt::Debug for Limiter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Limiter")
                .field("addresses", &self.limiter.len())
                .finish_non_exhaustive()
        }
    }

    impl Limiter {
        pub(super) fn new(rate: RateLimit) -> Result<Limiter, BuildError> {
            let bad = |reason| BuildError::Limit { reason };
            let count = NonZeroU32::new(rate.count)
                .ok_or_else(|| bad("a handshake rate must allow at least one handshake"))?;
            let burst = NonZeroU32::new(rate.burst.unwrap_or(rate.count))
                .ok_or_else(|| bad("a handshake rate's burst must be at least 1"))?;
            let quota = Quota::with_period(rate.per / count.get())
                .ok_or_else(|| bad("a handshake rate's period is too short"))?
                .allow_burst(burst);
            let clock = TokioClock {
                start: tokio::time::Instant::now(),
            };
            Ok(Limiter {
                limiter: RateLimiter::dashmap_with_clock(quota, clock.clone()),
                clock,
                checks: AtomicUsize::new(0),
            })
        }

        /// Takes a token for `ip`, or says how long until one is there.
        pub(super) fn check(&self, ip: IpAddr) -> Result<(), Duration> {
            if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
                self.sweep();
            }
            self.limiter
                .check_key(&ip)
                .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
        }

        /// Forgets the addresses whose bucket is full again (as if never seen).
        pub(super) fn sweep(&self) {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }

        #[cfg(test)]
        pub(super) fn len(&self) -> usize {
            self.limiter.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn concurrent_connections_per_address_are_capped_and_released() {
        let limits = Limits::new(
            Some(2),
            #[cfg(feature = "limits")]
            None,
        )
        .unwrap();
        let first = limits.check(ip(1)).unwrap();
        let second = limits.check(ip(1)).unwrap();
        assert_eq!(limits.check(ip(1)).unwrap_err(), Limited::Connections);
        // Another address has its own count.
        let other = limits.check(ip(2)).unwrap();
        // The IPv4-mapped form of an address is the same client.
        let mapped = IpAddr::from(std::net::Ipv4Addr::from([192, 0, 2, 1]).to_ipv6_mapped());
        assert_eq!(limits.check(mapped).unwrap_err(), Limited::Connections);
        drop(first);
        let third = limits.check(mapped).unwrap();
        assert_eq!(limits.tracked(), 2);
        drop((second, third, other));
        // No entry outlives its connections.
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn no_per_address_cap_holds_nothing() {
        let limits = Limits::new(
            None,
            #[cfg(feature = "limits")]
            None,
        )
        .unwrap();
        for _ in 0..10 {
            assert!(limits.check(ip(1)).unwrap().is_none());
        }
    }

    #[test]
    fn a_cap_of_zero_refuses_everyone_and_keeps_nothing() {
        let limits = Limits::new(
            Some(0),
            #[cfg(feature = "limits")]
            None,
        )
        .unwrap();
        assert_eq!(limits.check(ip(1)).unwrap_err(), Limited::Connections);
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn the_answer_is_429_with_retry_after() {
        for (limited, retry) in [
            (Limited::Connections, "5"),
            (Limited::Rate(Duration::from_millis(1)), "1"),
            (Limited::Rate(Duration::from_millis(2500)), "3"),
            (Limited::Rate(Duration::from_secs(4)), "4"),
            (Limited::Rate(Duration::ZERO), "1"),
        ] {
            let failure = limited.failure();
            assert_eq!(failure.response.status(), 429);
            assert_eq!(
                failure.response.headers()[RETRY_AFTER],
                retry,
                "{limited:?}"
            );
        }
    }

    #[cfg(feature = "limits")]
    #[tokio::test(start_paused = true)]
    async fn the_rate_is_a_token_bucket_per_address() {
        // 2 a second, 3 at once.
        let limits = Limits::new(None, Some(RateLimit::per_second(2).burst(3))).unwrap();
        for _ in 0..3 {
            limits.check(ip(1)).unwrap();
        }
        // The bucket is empty: the next token comes in 500 ms.
        match limits.check(ip(1)) {
            Err(Limited::Rate(wait)) => assert_eq!(wait, Duration::from_millis(500)),
            other => panic!("{other:?}"),
        }
        // Other addresses have their own bucket.
        limits.check(ip(2)).unwrap();
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(limits.check(ip(1)).is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        limits.check(ip(1)).unwrap();
        assert!(limits.check(ip(1)).is_err());
        // A quiet spell refills the whole burst, no more.
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..3 {
            limits.check(ip(1)).unwrap();
        }
        assert!(limits.check(ip(1)).is_err());
    }

    #[cfg(feature = "limits")]
    #[tokio::test(start_paused = true)]
    async fn a_refused_handshake_does_not_hold_a_connection_slot() {
        let limits = Limits::new(Some(5), Some(RateLimit::per_minute(1))).unwrap();
        let held = limits.check(ip(1)).unwrap();
        assert!(matches!(limits.check(ip(1)), Err(Limited::Rate(_))));
        assert_eq!(limits.tracked(), 1);
        drop(held);
        assert_eq!(limits.tracked(), 0);
    }

    #[cfg(feature = "limits")]
    #[tokio::test(start_paused = true)]
    async fn idle_addresses_are_forgotten() {
        let limits = Limits::new(None, Some(RateLimit::per_second(10))).unwrap();
        let rate = limits.rate.as_ref().unwrap();
        // Many clients, one handshake each.
        for i in 0..(SWEEP_EVERY as u32 - 1) {
            let ip = IpAddr::from(std::net::Ipv6Addr::from(u128::from(i) + 1));
            rate.check(ip).unwrap();
        }
        assert_eq!(rate.len(), SWEEP_EVERY - 1);
        // A second later every bucket is full again: the next sweep (every SWEEP_EVERY
        // checks) forgets them all.
        tokio::time::advance(Duration::from_secs(1)).await;
        rate.check(ip(1)).unwrap();
        assert!(rate.len() <= 1, "{} addresses kept", rate.len());
    }

    #[cfg(feature = "limits")]
    #[test]
    fn unusable_rates_are_build_errors() {
        for rate in [
            RateLimit::per_second(0),
            RateLimit::per_second(5).burst(0),
            RateLimit::new(10, Duration::ZERO),
        ] {
            let error = Limits::new(None, Some(rate)).unwrap_err();
            assert!(error.to_string().contains("rate"), "{rate:?}: {error}");
        }
    }
}
