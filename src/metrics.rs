//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`).
//!
//! wsrelay records; your application chooses where the numbers go by installing a recorder
//! (an exporter) once at start-up: `metrics-exporter-prometheus` for a Prometheus scrape
//! endpoint (what the `proxy` example does for `--metrics ADDR`), or any other exporter of
//! the `metrics` ecosystem (StatsD, OpenTelemetry, ...). Without a recorder every call is a
//! no-op. Install it before the proxy handles connections, or the `wsrelay_tunnels_active`
//! gauge misses the tunnels opened before.
//!
//! Every series is updated off the data path: when a handshake ends, when a tunnel opens or
//! closes, around each backend connect, when a drain ends. The same counters, without
//! labels, are always available from [`Proxy::stats`](crate::Proxy::stats).
//!
//! | name | type | labels | what |
//! | --- | --- | --- | --- |
//! | `wsrelay_handshakes_total` | counter | `status` | handshakes by the HTTP status sent to the client: `101` for every tunnel (an HTTP/2 client's `200` too), the proxy's own `4xx`/`5xx`, a backend's refusal as relayed; `none` when nothing was sent (the client left, its TLS handshake failed, a drain cut it) |
//! | `wsrelay_tunnels_active` | gauge | | tunnels open now |
//! | `wsrelay_tunnel_bytes_total` | counter | `direction`: `client_to_backend`, `backend_to_client` | tunnel bytes after the `101` (WebSocket framing included, HTTP heads excluded), counted when the tunnel closes |
//! | `wsrelay_tunnel_duration_seconds` | histogram | | how long each tunnel ran, observed once as it closes |
//! | `wsrelay_tunnels_closed_total` | counter | `reason`: `done`, `idle_timeout`, `fin_timeout`, `lifetime`, `shutdown`, `client_error`, `backend_error`, `backend_closed` | why tunnels closed ([`CloseReason`]) |
//! | `wsrelay_backend_connect_duration_seconds` | histogram | `backend` | time to connect to a backend (and its TLS handshake), successful attempts |
//! | `wsrelay_backend_connect_failures_total` | counter | `backend` | failed connect attempts: refused, unreachable, timed out, TLS handshake failed |
//! | `wsrelay_connections_drained_total` | counter | | connections that ended by themselves during a drain's grace period |
//! | `wsrelay_connections_cut_total` | counter | | connections a drain closed at the end of its grace period |
//!
//! `backend` is the backend's address as configured (`10.0.0.5:9000`, `wss://chat:9443`).
//!
//! Histograms are recorded as raw observations; how they are exported is the exporter's
//! choice. With `metrics-exporter-prometheus`, give them buckets (it renders summaries
//! otherwise), e.g. [`TUNNEL_DURATION_BUCKETS`] and [`CONNECT_DURATION_BUCKETS`]:
//!
//! ```
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//! use wsrelay::metrics::{
//!     BACKEND_CONNECT_DURATION_SECONDS, CONNECT_DURATION_BUCKETS, TUNNEL_DURATION_BUCKETS,
//!     TUNNEL_DURATION_SECONDS,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tunnels = Matcher::Full(TUNNEL_DURATION_SECONDS.into());
//! let connects = Matcher::Full(BACKEND_CONNECT_DURATION_SECONDS.into());
//! let handle = PrometheusBuilder::new()
//!     .set_buckets_for_metric(tunnels, TUNNEL_DURATION_BUCKETS)?
//!     .set_buckets_for_metric(connects, CONNECT_DURATION_BUCKETS)?
//!     .install_recorder()?;
//! wsrelay::metrics::describe();
//! // Serve this text at /metrics (a series appears once it has a value), and call
//! // `handle.run_upkeep()` now and then.
//! let text: String = handle.render();
//! # drop(text);
//! # Ok(())
//! # }
//! ```
//!
//! Why the `metrics` facade: it is what the tokio ecosystem records through (as `log` and
//! `tracing` are for events), so a library does not choose the exporter; the application
//! does, and wsrelay's series sit beside its own and its other libraries'.

use std::time::Instant;

use http::StatusCode;
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Key, Label,
    Level, Metadata,
};

use crate::splice::{CloseReason, Report};

/// Counter: handshakes by `status`.
pub const HANDSHAKES_TOTAL: &str = "wsrelay_handshakes_total";
/// Gauge: tunnels open now.
pub const TUNNELS_ACTIVE: &str = "wsrelay_tunnels_active";
/// Counter: tunnel bytes by `direction`, counted when each tunnel closes.
pub const TUNNEL_BYTES_TOTAL: &str = "wsrelay_tunnel_bytes_total";
/// Histogram: tunnel durations in seconds.
pub const TUNNEL_DURATION_SECONDS: &str = "wsrelay_tunnel_duration_seconds";
/// Counter: closed tunnels by `reason`.
pub const TUNNELS_CLOSED_TOTAL: &str = "wsrelay_tunnels_closed_total";
/// Histogram: backend connect latency in seconds, by `backend`.
pub const BACKEND_CONNECT_DURATION_SECONDS: &str = "wsrelay_backend_connect_duration_seconds";
/// Counter: failed backend connect attempts, by `backend`.
pub const BACKEND_CONNECT_FAILURES_TOTAL: &str = "wsrelay_backend_connect_failures_total";
/// Counter: connections that ended by themselves during a drain.
pub const CONNECTIONS_DRAINED_TOTAL: &str = "wsrelay_connections_drained_total";
/// Counter: connections closed by a drain at the end of its grace period.
pub const CONNECTIONS_CUT_TOTAL: &str = "wsrelay_connections_cut_total";

/// Suggested buckets for [`TUNNEL_DURATION_SECONDS`]: from a second to a day (WebSocket
/// tunnels live long).
pub const TUNNEL_DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0,
];

/// Suggested buckets for [`BACKEND_CONNECT_DURATION_SECONDS`]: from 100 µs (loopback) to
/// the default connect timeout.
pub const CONNECT_DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Registers a description (and unit) of every series with the installed recorder, for the
/// exporters that show them (Prometheus's `# HELP` lines), and starts the series without
/// labels or with fixed ones at zero (so that a scrape before the first tunnel shows
/// `wsrelay_tunnels_active 0` rather than nothing). Call it once, after installing the
/// recorder; recording works without it.
pub fn describe() {
    use metrics::Unit;
    gauge!(TUNNELS_ACTIVE).increment(0.0);
    for direction in ["client_to_backend", "backend_to_client"] {
        counter!(TUNNEL_BYTES_TOTAL, "direction" => direction).increment(0);
    }
    counter!(CONNECTIONS_DRAINED_TOTAL).increment(0);
    counter!(CONNECTIONS_CUT_TOTAL).increment(0);
    describe_counter!(
        HANDSHAKES_TOTAL,
        "WebSocket handshakes by the HTTP status sent to the client (101 for tunnels, none when nothing was sent)"
    );
    describe_gauge!(TUNNELS_ACTIVE, "Tunnels open now");
    describe_counter!(
        TUNNEL_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes through closed tunnels after the 101, WebSocket framing included, by direction"
    );
    describe_histogram!(
        TUNNEL_DURATION_SECONDS,
        Unit::Seconds,
        "How long tunnels ran, observed as each closes"
    );
    describe_counter!(TUNNELS_CLOSED_TOTAL, "Closed tunnels by reason");
    describe_histogram!(
        BACKEND_CONNECT_DURATION_SECONDS,
        Unit::Seconds,
        "Time to connect to a backend (TLS handshake included), successful attempts"
    );
    describe_counter!(
        BACKEND_CONNECT_FAILURES_TOTAL,
        "Failed backend connect attempts (refused, unreachable, timed out, TLS)"
    );
    describe_counter!(
        CONNECTIONS_DRAINED_TOTAL,
        "Connections that ended by themselves during a drain's grace period"
    );
    describe_counter!(
        CONNECTIONS_CUT_TOTAL,
        "Connections closed by a drain at the end of its grace period"
    );
}

// Recording below names every series and label with literals, not the constants above:
// the `metrics` macros then build each key, its hash included, at compile time, so that a
// handshake or a tunnel costs no allocation and no hashing for its series (the constants
// and these literals are checked against each other in the tests).

/// `wsrelay_handshakes_total` for each status given, with a static key; others allocate.
macro_rules! handshake_counter {
    ($status:expr; $($code:literal => $text:literal),* $(,)?) => {
        match $status {
            None => counter!("wsrelay_handshakes_total", "status" => "none"),
            $(Some($code) => counter!("wsrelay_handshakes_total", "status" => $text),)*
            Some(other) => counter!(HANDSHAKES_TOTAL, "status" => other.to_string()),
        }
    };
}

/// A handshake ended with `status` sent (`None`: nothing).
pub(crate) fn handshake(status: Option<StatusCode>) {
    // The statuses the proxy sends itself, and the usual refusals of a backend.
    let counter = handshake_counter!(status.map(|s| s.as_u16());
        101 => "101", 200 => "200", 400 => "400", 401 => "401", 403 => "403", 404 => "404",
        405 => "405", 408 => "408", 426 => "426", 429 => "429", 431 => "431", 500 => "500",
        501 => "501", 502 => "502", 503 => "503", 504 => "504",
    );
    counter.increment(1);
}

pub(crate) fn tunnel_opened() {
    gauge!("wsrelay_tunnels_active").increment(1.0);
}

pub(crate) fn tunnel_released() {
    gauge!("wsrelay_tunnels_active").decrement(1.0);
}

pub(crate) fn tunnel_closed(report: &Report) {
    counter!("wsrelay_tunnel_bytes_total", "direction" => "client_to_backend")
        .increment(report.client_to_backend);
    counter!("wsrelay_tunnel_bytes_total", "direction" => "backend_to_client")
        .increment(report.backend_to_client);
    histogram!("wsrelay_tunnel_duration_seconds").record(report.duration.as_secs_f64());
    let closed = match report.reason {
        CloseReason::Done => counter!("wsrelay_tunnels_closed_total", "reason" => "done"),
        CloseReason::IdleTimeout => {
            counter!("wsrelay_tunnels_closed_total", "reason" => "idle_timeout")
        }
        CloseReason::FinTimeout => {
            counter!("wsrelay_tunnels_closed_total", "reason" => "fin_timeout")
        }
        CloseReason::Lifetime => counter!("wsrelay_tunnels_closed_total", "reason" => "lifetime"),
        CloseReason::Shutdown => counter!("wsrelay_tunnels_closed_total", "reason" => "shutdown"),
        CloseReason::ClientError(_) => {
            counter!("wsrelay_tunnels_closed_total", "reason" => "client_error")
        }
        CloseReason::BackendError(_) => {
            counter!("wsrelay_tunnels_closed_total", "reason" => "backend_error")
        }
        CloseReason::BackendClosed => {
            counter!("wsrelay_tunnels_closed_total", "reason" => "backend_closed")
        }
    };
    closed.increment(1);
}

pub(crate) fn drain(drained: u64, cut: u64) {
    counter!(CONNECTIONS_DRAINED_TOTAL).increment(drained);
    counter!(CONNECTIONS_CUT_TOTAL).increment(cut);
}

/// The series of one backend, keyed once when its pool is built: a connect attempt then
/// records without building a label.
#[derive(Debug)]
pub(crate) struct BackendSeries {
    duration: Key,
    failures: Key,
}

impl BackendSeries {
    /// For the backend named `backend` (as configured).
    pub(crate) fn new(backend: &str) -> Self {
        let label = |name: &'static str| {
            Key::from_parts(name, vec![Label::new("backend", backend.to_owned())])
        };
        BackendSeries {
            duration: label(BACKEND_CONNECT_DURATION_SECONDS),
            failures: label(BACKEND_CONNECT_FAILURES_TOTAL),
        }
    }
}

/// What the `metrics` macros would give a series recorded from this module.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Times one connect attempt to a backend; a failure when dropped unfinished (a timeout).
pub(crate) struct ConnectTiming<'a> {
    series: &'a BackendSeries,
    started: Instant,
    done: bool,
}

impl<'a> ConnectTiming<'a> {
    pub(crate) fn start(series: &'a BackendSeries) -> Self {
        ConnectTiming {
            series,
            started: Instant::now(),
            done: false,
        }
    }

    pub(crate) fn finish(&mut self, ok: bool) {
        self.done = true;
        if ok {
            let seconds = self.started.elapsed().as_secs_f64();
            metrics::with_recorder(|recorder| {
                recorder.register_histogram(&self.series.duration, &METADATA)
            })
            .record(seconds);
        } else {
            metrics::with_recorder(|recorder| {
                recorder.register_counter(&self.series.failures, &METADATA)
            })
            .increment(1);
        }
    }
}

impl Drop for ConnectTiming<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.finish(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use metrics::{Counter, Gauge, Histogram, KeyName, Recorder, SharedString, Unit};

    use super::*;
    use crate::splice::TunnelPath;

    /// Remembers every series registered through it, as `name{label=value,...}`.
    #[derive(Default, Clone)]
    struct Names(Arc<Mutex<Vec<String>>>);

    impl Names {
        fn note(&self, key: &Key) {
            let labels: Vec<String> = key
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            let series = format!("{}{{{}}}", key.name(), labels.join(","));
            self.0.lock().unwrap().push(series);
        }

        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    impl Recorder for Names {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            self.note(key);
            Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            self.note(key);
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            self.note(key);
            Histogram::noop()
        }
    }

    fn report(reason: CloseReason) -> Report {
        Report {
            client_to_backend: 1,
            backend_to_client: 2,
            undelivered_to_backend: 0,
            undelivered_to_client: 0,
            duration: Duration::from_millis(5),
            path: TunnelPath::Buffered,
            reason,
            error: None,
            client_addr: None,
            backend: None,
        }
    }

    #[test]
    fn the_recorded_series_carry_the_documented_names() {
        let names = Names::default();
        metrics::with_local_recorder(&names, || {
            handshake(Some(StatusCode::SWITCHING_PROTOCOLS));
            handshake(Some(StatusCode::BAD_GATEWAY));
            handshake(Some(StatusCode::IM_A_TEAPOT));
            handshake(None);
            assert_eq!(
                names.take(),
                [
                    format!("{HANDSHAKES_TOTAL}{{status=101}}"),
                    format!("{HANDSHAKES_TOTAL}{{status=502}}"),
                    format!("{HANDSHAKES_TOTAL}{{status=418}}"),
                    format!("{HANDSHAKES_TOTAL}{{status=none}}"),
                ]
            );

            tunnel_opened();
            tunnel_released();
            assert_eq!(
                names.take(),
                [
                    format!("{TUNNELS_ACTIVE}{{}}"),
                    format!("{TUNNELS_ACTIVE}{{}}")
                ]
            );

            let reasons = [
                (CloseReason::Done, "done"),
                (CloseReason::IdleTimeout, "idle_timeout"),
                (CloseReason::FinTimeout, "fin_timeout"),
                (CloseReason::Lifetime, "lifetime"),
                (CloseReason::Shutdown, "shutdown"),
                (CloseReason::BackendClosed, "backend_closed"),
                (
                    CloseReason::ClientError(std::io::ErrorKind::ConnectionReset),
                    "client_error",
                ),
                (
                    CloseReason::BackendError(std::io::ErrorKind::BrokenPipe),
                    "backend_error",
                ),
            ];
            for (reason, label) in reasons {
                tunnel_closed(&report(reason));
                assert_eq!(
                    names.take(),
                    [
                        format!("{TUNNEL_BYTES_TOTAL}{{direction=client_to_backend}}"),
                        format!("{TUNNEL_BYTES_TOTAL}{{direction=backend_to_client}}"),
                        format!("{TUNNEL_DURATION_SECONDS}{{}}"),
                        format!("{TUNNELS_CLOSED_TOTAL}{{reason={label}}}"),
                    ]
                );
            }

            let series = BackendSeries::new("wss://chat:9443");
            ConnectTiming::start(&series).finish(true);
            drop(ConnectTiming::start(&series)); // unfinished: a timeout
            assert_eq!(
                names.take(),
                [
                    format!("{BACKEND_CONNECT_DURATION_SECONDS}{{backend=wss://chat:9443}}"),
                    format!("{BACKEND_CONNECT_FAILURES_TOTAL}{{backend=wss://chat:9443}}"),
                ]
            );
        });
    }
}
