//! Integration tests of `wsrelay::tunnel` over real loopback sockets and duplex pipes.
//!
//! Every behaviour is run for each path (zero-copy over TCP, buffered over TCP, buffered
//! over `tokio::io::duplex`) and with the two ends swapped, so that "client" and "backend"
//! each play both roles.

mod support;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{Harness, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use wsrelay::{tunnel, CloseReason, Leftovers, SpliceConfig, TunnelPath};

/// Generates one test per mode and direction, calling `$body(mode, swapped)`.
macro_rules! each_mode {
    ($(#[$attr:meta])* $name:ident => $body:ident) => {
        mod $name {
            use super::*;
            $(#[$attr])* async fn zero_copy() { $body(Mode::ZeroCopy, false).await }
            $(#[$attr])* async fn zero_copy_swapped() { $body(Mode::ZeroCopy, true).await }
            $(#[$attr])* async fn buffered_tcp() { $body(Mode::BufferedTcp, false).await }
            $(#[$attr])* async fn buffered_tcp_swapped() { $body(Mode::BufferedTcp, true).await }
            $(#[$attr])* async fn duplex() { $body(Mode::Duplex, false).await }
            $(#[$attr])* async fn duplex_swapped() { $body(Mode::Duplex, true).await }
        }
    };
}

/// Like `each_mode!`, for the two TCP modes only.
macro_rules! each_tcp_mode {
    ($(#[$attr:meta])* $name:ident => $body:ident) => {
        mod $name {
            use super::*;
            $(#[$attr])* async fn zero_copy() { $body(Mode::ZeroCopy, false).await }
            $(#[$attr])* async fn zero_copy_swapped() { $body(Mode::ZeroCopy, true).await }
            $(#[$attr])* async fn buffered_tcp() { $body(Mode::BufferedTcp, false).await }
            $(#[$attr])* async fn buffered_tcp_swapped() { $body(Mode::BufferedTcp, true).await }
        }
    };
}

fn no_timers() -> SpliceConfig {
    SpliceConfig::new().idle_timeout(None).fin_timeout(None)
}

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Bulk: 64 MiB each way at once, verified byte for byte.

async fn bulk_64mib(mode: Mode, swapped: bool) {
    const N: u64 = 64 * MIB;
    let mut h = Harness::new(mode, swapped).await;
    let task = h.start(no_timers(), Leftovers::default(), std::future::pending());
    let (mut ar, mut aw) = tokio::io::split(h.take_a());
    let (mut br, mut bw) = tokio::io::split(h.take_b());
    let (sa, rb, sb, ra) =
        support::within_for(Duration::from_secs(120), "64 MiB each way", async {
            tokio::join!(
                support::send_stream(&mut aw, 1, N),
                support::recv_stream(&mut br, 1),
                support::send_stream(&mut bw, 2, N),
                support::recv_stream(&mut ar, 2),
            )
        })
        .await;
    sa.unwrap();
    sb.unwrap();
    assert_eq!(rb.unwrap(), N, "a → b");
    assert_eq!(ra.unwrap(), N, "b → a");
    let report = support::within_for(Duration::from_secs(5), "report", task)
        .await
        .unwrap();
    assert_eq!(report.reason, CloseReason::Done, "{report:?}");
    assert_eq!(report.path, mode.expected_path());
    assert_eq!(report.client_to_backend, N);
    assert_eq!(report.backend_to_client, N);
    assert_eq!(report.undelivered_to_backend, 0);
    assert_eq!(report.undelivered_to_client, 0);
    assert!(report.error.is_none());
}
each_mode!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] bulk => bulk_64mib);

// ---------------------------------------------------------------------------------------
// Leftovers reach their side before anything read from the sockets, in order.

async fn leftovers_first(mode: Mode, swapped: bool) {
    let mut h = Harness::new(mode, swapped).await;
    let mut a = h.take_a();
    let mut b = h.take_b();
    // Socket data is already waiting when the tunnel starts.
    a.write_all(b" then a's socket bytes").await.unwrap();
    a.shutdown().await.unwrap();
    b.write_all(b" then b's socket bytes").await.unwrap();
    b.shutdown().await.unwrap();
    let leftovers = h.leftovers(b"a's leftover", b"b's leftover");
    let task = h.start(no_timers(), leftovers, std::future::pending());
    let (got_b, got_a) = support::within_for(Duration::from_secs(5), "leftovers", async {
        tokio::join!(support::read_all(&mut b), support::read_all(&mut a))
    })
    .await;
    assert_eq!(got_b, b"a's leftover then a's socket bytes");
    assert_eq!(got_a, b"b's leftover then b's socket bytes");
    let report = support::within_for(Duration::from_secs(5), "report", task)
        .await
        .unwrap();
    assert_eq!(report.reason, CloseReason::Done, "{report:?}");
    assert_eq!(h.delivered(&report), (34, 34));
}
each_mode!(#[tokio::test] leftovers => leftovers_first);

// ---------------------------------------------------------------------------------------
// Half-close: a's EOF reaches b while b → a keeps flowing to the last byte.

async fn half_close(mode: Mode, swapped: bool) {
    const FROM_A: u64 = MIB;
    const FROM_B: u64 = 8 * MIB;
    let mut h = Harness::new(mode, swapped).await;
    let mut a = h.take_a();
    let mut b = h.take_b();
    let task = h.start(no_timers(), Leftovers::default(), std::future::pending());

    let (sent, got) = support::within_for(Duration::from_secs(10), "a → b", async {
        tokio::join!(
            support::send_stream(&mut a, 3, FROM_A),
            support::recv_stream(&mut b, 3)
        )
    })
    .await;
    sent.unwrap();
    // b has seen a's EOF (recv_stream reads to EOF) and can still talk to a.
    assert_eq!(got.unwrap(), FROM_A);
    let (sent, got) = support::within_for(Duration::from_secs(30), "b → a after a's EOF", async {
        tokio::join!(
            support::send_stream(&mut b, 4, FROM_B),
            support::recv_stream(&mut a, 4)
        )
    })
    .await;
    sent.unwrap();
    assert_eq!(got.unwrap(), FROM_B);

    let report = support::within_for(Duration::from_secs(5), "report", task)
        .await
        .unwrap();
    assert_eq!(report.reason, CloseReason::Done, "{report:?}");
    assert_eq!(h.delivered(&report), (FROM_A, FROM_B));
    assert_eq!(h.undelivered(&report), (0, 0));
}
each_mode!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] half_close_keeps_other_direction => half_close);

// ---------------------------------------------------------------------------------------
// Idle timeout.

/// Buffered over duplex, paused time: exact deadlines.
#[tokio::test(start_paused = true)]
async fn idle_timeout_fires_paused() {
    for swapped in [false, true] {
        let mut h = Harness::new(Mode::Duplex, swapped).await;
        let _a = h.take_a();
        let _b = h.take_b();
        let start = Instant::now();
        let config = SpliceConfig::new().idle_timeout(Some(Duration::from_secs(10)));
        let task = h.start(config, Leftovers::default(), std::future::pending());
        let report = support::within_for(Duration::from_secs(60), "idle timeout", task)
            .await
            .unwrap();
        assert_eq!(report.reason, CloseReason::IdleTimeout);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(report.path, TunnelPath::Buffered);
    }
}

/// Traffic in either direction postpones the idle timeout; silence then closes the tunnel
/// within one to two periods.
#[tokio::test(start_paused = true)]
async fn idle_timeout_postponed_by_activity_paused() {
    for swapped in [false, true] {
        let mut h = Harness::new(Mode::Duplex, swapped).await;
        let mut a = h.take_a();
        let mut b = h.take_b();
        let start = Instant::now();
        let config = SpliceConfig::new().idle_timeout(Some(Duration::from_secs(10)));
        let task = h.start(config, Leftovers::default(), std::future::pending());
        let mut byte = [0u8; 1];
        for round in 0..6 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            if round % 2 == 0 {
                a.write_all(b"x").await.unwrap();
                b.read_exact(&mut byte).await.unwrap();
            } else {
                b.write_all(b"y").await.unwrap();
                a.read_exact(&mut byte).await.unwrap();
            }
        }
        // 24 s of traffic every 4 s: more than twice the idle timeout.
        assert!(!task.is_finished(), "closed despite traffic");
        let report = support::within_for(Duration::from_secs(60), "idle timeout", task)
            .await
            .unwrap();
        assert_eq!(report.reason, CloseReason::IdleTimeout);
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_secs(34) && elapsed <= Duration::from_secs(44),
            "{elapsed:?}"
        );
        assert_eq!(h.delivered(&report), (3, 3));
    }
}

/// TCP modes, real time: a 200 ms idle timeout fires, and traffic postpones it.
async fn idle_timeout_real(mode: Mode, swapped: bool) {
    let idle = Duration::from_millis(200);
    let config = SpliceConfig::new().idle_timeout(Some(idle));

    // Silence: closes after one to two periods.
    let mut h = Harness::new(mode, swapped).await;
    let (mut a, mut b) = (h.take_a(), h.take_b());
    let start = std::time::Instant::now();
    let report = support::within_for(
        Duration::from_secs(5),
        "idle",
        h.start(config.clone(), Leftovers::default(), std::future::pending()),
    )
    .await
    .unwrap();
    assert_eq!(report.reason, CloseReason::IdleTimeout);
    assert_eq!(report.path, mode.expected_path());
    let elapsed = start.elapsed();
    assert!(
        elapsed >= idle && elapsed < Duration::from_secs(1),
        "{elapsed:?}"
    );
    // Both peers see the close.
    assert_eq!(
        support::within_for(Duration::from_secs(1), "a sees EOF", a.read(&mut [0; 8]))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        support::within_for(Duration::from_secs(1), "b sees EOF", b.read(&mut [0; 8]))
            .await
            .unwrap(),
        0
    );

    // Traffic every 80 ms for 800 ms, alternating directions.
    let mut h = Harness::new(mode, swapped).await;
    let (mut a, mut b) = (h.take_a(), h.take_b());
    let start = std::time::Instant::now();
    let task = h.start(config, Leftovers::default(), std::future::pending());
    let mut byte = [0u8; 1];
    for round in 0..10 {
        tokio::time::sleep(Duration::from_millis(80)).await;
        if round % 2 == 0 {
            a.write_all(b"x").await.unwrap();
            b.read_exact(&mut byte).await.unwrap();
        } else {
            b.write_all(b"y").await.unwrap();
            a.read_exact(&mut byte).await.unwrap();
        }
    }
    assert!(!task.is_finished(), "closed despite traffic");
    let report = support::within_for(Duration::from_secs(5), "idle after traffic", task)
        .await
        .unwrap();
    assert_eq!(report.reason, CloseReason::IdleTimeout);
    assert!(start.elapsed() >= Duration::from_millis(800) + idle);
    assert_eq!(h.delivered(&report), (5, 5));
}
each_tcp_mode!(#[tokio::test] idle_timeout => idle_timeout_real);

// ---------------------------------------------------------------------------------------
// Fin timeout.

#[tokio::test(start_paused = true)]
async fn fin_timeout_fires_paused() {
    for swapped in [false, true] {
        let mut h = Harness::new(Mode::Duplex, swapped).await;
        let mut a = h.take_a();
        let mut b = h.take_b();
        let config = SpliceConfig::new()
            .idle_timeout(Some(Duration::from_secs(100)))
            .fin_timeout(Some(Duration::from_secs(5)));
        let task = h.start(config, Leftovers::default(), std::future::pending());
        tokio::time::sleep(Duration::from_secs(1)).await;
        a.write_all(b"bye").await.unwrap();
        a.shutdown().await.unwrap();
        assert_eq!(support::read_all(&mut b).await, b"bye");
        let half_closed_at = Instant::now();
        // b → a still works while half-closed.
        b.write_all(b"still here").await.unwrap();
        let mut buf = [0u8; 10];
        a.read_exact(&mut buf).await.unwrap();
        let report = support::within_for(Duration::from_secs(60), "fin timeout", task)
            .await
            .unwrap();
        assert_eq!(report.reason, CloseReason::FinTimeout);
        assert_eq!(half_closed_at.elapsed(), Duration::from_secs(5));
        assert_eq!(h.delivered(&report), (3, 10));
    }
}

async fn fin_timeout_real(mode: Mode, swapped: bool) {
    let mut h = Harness::new(mode, swapped).await;
    let mut a = h.take_a();
    let mut b = h.take_b();
    let fin = Duration::from_millis(200);
    let config = SpliceConfig::new().fin_timeout(Some(fin));
    let task = h.start(config, Leftovers::default(), std::future::pending());
    a.write_all(b"bye").await.unwrap();
    a.shutdown().await.unwrap();
    assert_eq!(
        support::within_for(Duration::from_secs(5), "b reads", support::read_all(&mut b)).await,
        b"bye"
    );
    let start = std::time::Instant::now();
    let report = support::within_for(Duration::from_secs(5), "fin timeout", task)
        .await
        .unwrap();
    assert_eq!(report.reason, CloseReason::FinTimeout);
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(h.delivered(&report), (3, 0));
    // a sees the close of the direction that was still open.
    assert_eq!(
        support::within_for(Duration::from_secs(1), "a sees EOF", a.read(&mut [0; 8]))
            .await
            .unwrap(),
        0
    );
}
each_tcp_mode!(#[tokio::test] fin_timeout => fin_timeout_real);

// ---------------------------------------------------------------------------------------
// Maximum lifetime.

#[tokio::test(start_paused = true)]
async fn max_lifetime_ends_busy_tunnel() {
    let mut h = Harness::new(Mode::Duplex, false).await;
    let mut a = h.take_a();
    let mut b = h.take_b();
    let config = SpliceConfig::new()
        .idle_timeout(Some(Duration::from_secs(3)))
        .max_lifetime(Some(Duration::from_secs(20)));
    let start = Instant::now();
    let task = h.start(config, Leftovers::default(), std::future::pending());
    let mut byte = [0u8; 1];
    let pinger = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if a.write_all(b"p").await.is_err() || b.read_exact(&mut byte).await.is_err() {
                break;
            }
        }
    };
    let report = tokio::select! {
        r = support::within_for(Duration::from_secs(60), "lifetime", task) => r.unwrap(),
        _ = pinger => panic!("pinger ended first"),
    };
    assert_eq!(report.reason, CloseReason::Lifetime);
    assert_eq!(start.elapsed(), Duration::from_secs(20));
}

// ---------------------------------------------------------------------------------------
// Peer reset: the other side is closed promptly and the reason names the reset side.

async fn peer_reset(mode: Mode, swapped: bool) {
    for traffic in [false, true] {
        let mut h = Harness::new(mode, swapped).await;
        let a = h.take_a().tcp();
        let mut b = h.take_b();
        let task = h.start(
            SpliceConfig::new(),
            Leftovers::default(),
            std::future::pending(),
        );
        if traffic {
            // Some bytes flowed both ways before the reset.
            let (mut ar, mut aw) = a.into_split();
            aw.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            b.read_exact(&mut buf).await.unwrap();
            b.write_all(b"pong").await.unwrap();
            ar.read_exact(&mut buf).await.unwrap();
            support::reset(ar.reunite(aw).unwrap());
        } else {
            support::reset(a);
        }
        let report = support::within_for(Duration::from_secs(1), "tunnel ends after reset", task)
            .await
            .unwrap();
        assert_eq!(
            report.reason,
            h.a_error(io::ErrorKind::ConnectionReset),
            "{report:?}"
        );
        assert_eq!(
            report.error.as_ref().map(io::Error::kind),
            Some(io::ErrorKind::ConnectionReset)
        );
        let n = if traffic { 4 } else { 0 };
        assert_eq!(h.delivered(&report), (n, n));
        // b sees the close within a second.
        let closed = support::within_for(
            Duration::from_secs(1),
            "b sees the close",
            b.read(&mut [0; 8]),
        )
        .await;
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    }
}
each_tcp_mode!(#[tokio::test] reset => peer_reset);

// ---------------------------------------------------------------------------------------
// Back-pressure: b never reads, so a's writes stop completing after a bounded number of
// bytes; then b drains everything and the counts match.

async fn slow_reader(mode: Mode, swapped: bool) {
    // Fixed socket buffers (autotuning off) make the TCP bound tight.
    let mut h = Harness::with_socket_buffers(mode, swapped, Some(64 * 1024)).await;
    let mut a = h.take_a();
    let mut b = h.take_b();
    let config = no_timers()
        .buffer_size(8 * 1024)
        .max_buffer_size(64 * 1024)
        .pipe_size(64 * 1024);
    let task = h.start(config, Leftovers::default(), std::future::pending());

    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, stop) = (written.clone(), stop.clone());
        tokio::spawn(async move {
            let chunk = vec![7u8; 16 * 1024];
            // Bounded: 1 GiB at most, far beyond any buffering.
            for _ in 0..(64 * 1024) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                a.write_all(&chunk).await.unwrap();
                written.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            a.shutdown().await.unwrap();
            a
        })
    };

    // Wait until the writer stalls: no progress over 300 ms (10 s at most).
    let mut last = u64::MAX;
    let mut still = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = written.load(Ordering::SeqCst);
        if now == last {
            still += 1;
            if still == 3 {
                break;
            }
        } else {
            still = 0;
            last = now;
        }
    }
    let stalled_at = written.load(Ordering::SeqCst);
    assert_eq!(
        still, 3,
        "the writer never stalled ({stalled_at} bytes written)"
    );
    // Socket buffers (4 × ~128 KiB), the duplex pipes and one tunnel buffer or pipe.
    let bound = if mode.is_tcp() { 4 * MIB } else { MIB / 2 };
    assert!(
        stalled_at < bound,
        "{stalled_at} bytes accepted with nobody reading"
    );

    // Now b drains: everything written arrives.
    stop.store(true, Ordering::SeqCst);
    let mut sink = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    support::within_for(Duration::from_secs(10), "b drains", async {
        loop {
            let n = b.read(&mut sink).await.unwrap();
            if n == 0 {
                break;
            }
            got += n as u64;
        }
    })
    .await;
    let _a = writer.await.unwrap();
    let total = written.load(Ordering::SeqCst);
    assert_eq!(got, total);
    drop(b);
    let report = support::within_for(Duration::from_secs(5), "report", task)
        .await
        .unwrap();
    assert_eq!(h.delivered(&report).0, total);
}
each_mode!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] back_pressure => slow_reader);

// ---------------------------------------------------------------------------------------
// Shutdown: the tunnel ends with reason Shutdown and exact counts, including bytes stuck in
// the tunnel.

async fn shutdown_signal(mode: Mode, swapped: bool) {
    let mut h = Harness::with_socket_buffers(mode, swapped, Some(64 * 1024)).await;
    let mut a = h.take_a();
    let mut b = h.take_b();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = rx.await;
    };
    let task = h.start(no_timers(), Leftovers::default(), shutdown);
    a.write_all(b"abc").await.unwrap();
    let mut buf = [0u8; 3];
    b.read_exact(&mut buf).await.unwrap();

    // Flood a → b with b not reading, until the writes stall.
    let writer = tokio::spawn(async move {
        let chunk = vec![1u8; 16 * 1024];
        for _ in 0..256 {
            if tokio::time::timeout(Duration::from_millis(300), a.write_all(&chunk))
                .await
                .is_err()
            {
                break;
            }
        }
        a
    });
    let _a = support::within_for(Duration::from_secs(30), "writer stalls", writer)
        .await
        .unwrap();
    tx.send(()).unwrap();
    let report = support::within_for(Duration::from_secs(1), "shutdown", task)
        .await
        .unwrap();
    assert_eq!(report.reason, CloseReason::Shutdown);
    let (to_b, _) = h.delivered(&report);
    let (stuck, _) = h.undelivered(&report);
    assert!(stuck > 0, "nothing stuck in the tunnel: {report:?}");
    // b gets exactly the bytes the report says were delivered, then EOF.
    let mut got = 3u64;
    let mut sink = vec![0u8; 64 * 1024];
    support::within_for(Duration::from_secs(5), "b drains", async {
        loop {
            match b.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
    })
    .await;
    assert_eq!(got, to_b);
}
each_mode!(#[tokio::test] shutdown => shutdown_signal);

// ---------------------------------------------------------------------------------------
// The future is Send, for both paths.

#[tokio::test]
async fn tunnel_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let config = SpliceConfig::new();
    let (_c, client) = support::tcp_pair().await;
    let (_b, backend) = support::tcp_pair().await;
    let fut = tunnel(
        client,
        backend,
        Leftovers::default(),
        &config,
        std::future::pending(),
    );
    assert_send(&fut);
    let (_c, client) = tokio::io::duplex(16);
    let (_b, backend) = tokio::io::duplex(16);
    let fut = tunnel(client, backend, Leftovers::default(), &config, async {});
    assert_send(&fut);
    // A ready shutdown future ends the tunnel at once.
    assert_eq!(fut.await.reason, CloseReason::Shutdown);
}

// ---------------------------------------------------------------------------------------
// Small messages, then bulk, then small messages again, both ways at once: every byte
// arrives in order (on the zero-copy path a direction switches from small reads to splice
// in the middle of its stream).

/// Message sizes around the zero-copy path's 4 KiB small-read array.
const SMALL_SIZES: [usize; 10] = [16, 1, 200, 4095, 4096, 4097, 16, 1000, 3, 16];

async fn send_mixed<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, seed: u64) -> u64 {
    const BULK: usize = 8 * MIB as usize;
    let small: usize = SMALL_SIZES.iter().sum();
    let mut all = vec![0u8; 2 * small + BULK];
    support::Prng::new(seed).fill(&mut all);
    let mut rest = &all[..];
    let mut segments = SMALL_SIZES.to_vec();
    segments.push(BULK);
    segments.extend_from_slice(&SMALL_SIZES);
    for n in segments {
        let (now, later) = rest.split_at(n);
        w.write_all(now).await.unwrap();
        rest = later;
        if n != BULK {
            // Let each small message arrive on its own.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    w.shutdown().await.unwrap();
    all.len() as u64
}

async fn small_bulk_small(mode: Mode, swapped: bool) {
    let mut h = Harness::new(mode, swapped).await;
    let task = h.start(no_timers(), Leftovers::default(), std::future::pending());
    let (mut ar, mut aw) = tokio::io::split(h.take_a());
    let (mut br, mut bw) = tokio::io::split(h.take_b());
    let (sa, rb, sb, ra) =
        support::within_for(Duration::from_secs(60), "small, bulk, small", async {
            tokio::join!(
                send_mixed(&mut aw, 3),
                support::recv_stream(&mut br, 3),
                send_mixed(&mut bw, 4),
                support::recv_stream(&mut ar, 4),
            )
        })
        .await;
    assert_eq!(rb.unwrap(), sa, "a → b");
    assert_eq!(ra.unwrap(), sb, "b → a");
    let report = support::within_for(Duration::from_secs(5), "report", task)
        .await
        .unwrap();
    assert_eq!(report.reason, CloseReason::Done, "{report:?}");
    assert_eq!(report.path, mode.expected_path());
    assert_eq!(h.delivered(&report), (sa, sb));
    assert_eq!(h.undelivered(&report), (0, 0));
}
each_mode!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] interleaved => small_bulk_small);
