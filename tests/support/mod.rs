//! The one test harness of wsrelay's integration tests: every test file that needs a helper
//! declares `mod support;` and takes it from here, and nothing else is shared between test
//! files. No two helpers share a name.
//!
//! # Where each kind of test goes
//!
//! - **Pure functions** (head parsing, the rewriter, the answer check, accept keys): unit
//!   tests in their module under `src/`, as rule tables: one case per line, the rule it
//!   checks in a comment, by number as `wsrelay::rules` documents them ("rule 18 (see
//!   `wsrelay::rules`)") or by RFC section.
//! - **Integration tests over real loopback sockets**: `tests/<area>.rs` (`e2e`, `hostile`,
//!   `limits`, `ip_limits`, `drain`, `splice`, `http2`, ...), through this harness: everything on `127.0.0.1:0`, the
//!   raw client, the scripted [`Backend`] or the echo backend, [`Running`] for
//!   `Proxy::serve`, the tunnel [`Harness`] for `wsrelay::tunnel` alone. A test that measures
//!   the whole process (file descriptors, RSS) gets a file to itself.
//! - **TLS** (feature `rustls`): `tests/tls.rs`, over real loopback sockets with certificates
//!   from a throwaway CA made in the test ([`TestCa`]), or over `tokio::io::duplex` with
//!   paused time for the deadlines; never a committed key.
//! - **Interop with independent peers**: `tests/interop.rs`. The peers (Python `websockets`,
//!   Node `ws`) are installed by `.ci/test-deps.sh`; a missing one fails the test, never
//!   skips it.
//! - **The examples run as processes**: `tests/example_<name>.rs`, through [`process`];
//!   `tests/metrics.rs` scrapes the `proxy` example's `--metrics` the same way.
//! - **The fuzz corpus**: `tests/fuzz_corpus.rs` runs `tests/corpus/<target>/` through
//!   [`fuzz_checks`]; fuzzing itself is the repository's `fuzz/` crate (see its
//!   `fuzz/README.md`; a separate package, not published).
//!
//! Timeouts are tested with paused time (`#[tokio::test(start_paused = true)]`), never with
//! real sleeps longer than a few milliseconds. Every socket operation is bounded ([`within`]
//! and [`STEP`], or an explicit limit), every loop by a count or a deadline, so no test can
//! hang.
//!
//! # Modules
//!
//! - [`client`]: the raw client ([`connect`], [`send`], [`read_head`], [`read_to_close`],
//!   [`read_exact_within`], [`raw_exchange`]) and what it read ([`Got`]);
//! - [`heads`]: raw request and answer heads ([`ws_request`], [`upgrade_request`],
//!   [`raw_request`], [`switch_with`]) and header look-ups ([`header_values`],
//!   [`header_names`], [`head_end`]);
//! - [`backend`]: the scripted [`Backend`], recording the exact bytes each connection
//!   received, and [`closed_port`]; the echo backend is [`spawn_echo`];
//! - [`serve`]: [`Running`], the `Proxy::serve` harness, and the axum and hyper front ends
//!   (HTTP/2 too: [`axum_front`], [`hyper_auto_front`]);
//! - [`tunnel`]: `wsrelay::tunnel` on its own: socket pairs, the tunnel [`Harness`] (every
//!   [`Mode`], ends swapped or not) and a verifiable pseudo-random stream;
//! - [`http2`]: an HTTP/2 client (the `h2` crate) for RFC 8441: [`h2_connect`],
//!   [`ws_connect`], [`h2_open`] and the stream's [`H2Stream`], WebSocket frames
//!   ([`client_frame`], [`server_frame`]);
//! - [`process`]: child processes, the example binaries and the interop peers;
//! - [`tls`] (feature `rustls`): [`TempDir`], the throwaway [`TestCa`] and the files it
//!   issues, a TLS client ([`tls_connect`]), a TLS front for a TCP backend ([`TlsFront`]) and
//!   a Unix-socket one ([`UnixFront`]);
//! - [`os`]: file descriptors and memory of the process;
//! - [`fuzz_checks`]: the fuzz targets' invariants, one function per target, shared with the
//!   `fuzz/` crate (which includes this file by path); not re-exported.
#![allow(dead_code)]

#[path = "../../examples/support/echo.rs"]
pub mod echo;

pub mod backend;
pub mod client;
pub mod fuzz_checks;
pub mod heads;
pub mod http2;
pub mod os;
pub mod process;
pub mod serve;
#[cfg(feature = "rustls")]
pub mod tls;
pub mod tunnel;

// Flat re-exports: a test names `support::connect`, not `support::client::connect`. A test
// file uses only some of them.
#[cfg(feature = "rustls")]
#[allow(unused_imports)]
pub use tls::*;
#[allow(unused_imports)]
pub use {backend::*, client::*, heads::*, http2::*, os::*, process::*, serve::*, tunnel::*};

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The bound on one step of a test: a connect, a write, reading one response, a message
/// round trip.
pub const STEP: Duration = Duration::from_secs(10);

/// A valid `Sec-WebSocket-Key` (RFC 6455 §1.3's example).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Awaits `future`, panicking with `what` if it takes longer than [`STEP`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    within_for(STEP, what, future).await
}

/// Awaits `future`, panicking with `what` if it takes longer than `limit`.
pub async fn within_for<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Polls `condition` every few milliseconds until it holds or `limit` passes; whether it held.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts the echo backend (`examples/support/echo.rs`, a frame-level RFC 6455 echo server)
/// on `127.0.0.1:0`; its address.
pub async fn spawn_echo() -> SocketAddr {
    echo::spawn().await
}
