//! Bounded memory under a flood (rule 26, see `wsrelay::rules`): a client that stops reading
//! while the backend floods must not make the proxy buffer what the backend sends.
//!
//! The proxy, the backend and the client all run in this process, and the measure is the
//! process's resident set size (`VmRSS`), so this file holds this one test alone: no other
//! test shares the process and disturbs the measure.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use wsrelay::{CloseReason, SpliceConfig, TunnelPath};

use support::{
    builder_for, connect, read_head, rss_kib, send, ws_request, Backend, Running, Script, Then,
    STEP,
};

/// What the backend offers after its `101`.
const FLOOD: u64 = 200 * 1024 * 1024;
/// The most the process's RSS may grow while the flood is offered.
const MAX_GROWTH_KIB: u64 = 16 * 1024;
/// How long the client does not read while the backend floods.
const STALL: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_26_stalled_client_under_a_200_mib_flood_keeps_rss_bounded() {
    // Both implementations of the tunnel, one after the other, each measured from its own
    // baseline.
    for zero_copy in [true, false] {
        flood_through_a_stalled_client(zero_copy).await;
    }
}

/// Runs `future`, and the largest RSS (KiB) seen, sampled every 10 ms while it ran.
async fn peak_rss_while<F: std::future::Future>(future: F) -> (F::Output, u64) {
    let peak = Arc::new(AtomicU64::new(rss_kib()));
    let sampling = {
        let peak = peak.clone();
        tokio::spawn(async move {
            // Bounded: the sampler is aborted when `future` ends, and lives at most 2 minutes.
            for _ in 0..12_000 {
                peak.fetch_max(rss_kib(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let output = future.await;
    sampling.abort();
    let _ = sampling.await;
    peak.fetch_max(rss_kib(), Ordering::SeqCst);
    (output, peak.load(Ordering::SeqCst))
}

async fn flood_through_a_stalled_client(zero_copy: bool) {
    let reports = Arc::new(Mutex::new(Vec::new()));
    let backend = Backend::start(Script::switching(Then::Flood(FLOOD))).await;
    let builder = {
        let reports = reports.clone();
        builder_for(&backend)
            .splice(SpliceConfig::new().zero_copy(zero_copy))
            .on_report(move |report| {
                reports.lock().unwrap().push((
                    report.path,
                    report.reason,
                    report.backend_to_client,
                    report.undelivered_to_client,
                ));
            })
    };
    let proxy = Running::start(builder).await;
    // Warm up: one handshake refused, so that the runtime, the allocator and the proxy's
    // code paths have their steady state before the baseline.
    {
        let mut warm = connect(proxy.addr).await;
        let _ = send(&mut warm, b"GET / HTTP/1.1\r\n\r\n").await;
        let _ = support::read_to_close(&mut warm, STEP).await;
    }
    let baseline = rss_kib();

    let (received, peak) = peak_rss_while(async {
        let mut client = connect(proxy.addr).await;
        assert!(send(&mut client, &ws_request(&[])).await);
        let got = read_head(&mut client, STEP).await;
        assert_eq!(got.status_line(), "HTTP/1.1 101 Switching Protocols");
        let mut received = got.body().len() as u64;

        // Read the first MiB: the flood is flowing.
        received += read_up_to(&mut client, 1024 * 1024).await;
        assert!(received >= 1024 * 1024);

        // Stop reading. The backend keeps offering; the proxy must push back, not buffer.
        tokio::time::sleep(STALL / 2).await;
        let offered_mid = backend.conn(0).sent_after;
        tokio::time::sleep(STALL / 2).await;
        let offered_end = backend.conn(0).sent_after;
        assert!(
            offered_end < FLOOD / 4,
            "with the client stalled, {offered_end} bytes were taken from the backend: \
             nothing pushes back"
        );
        assert!(
            offered_end - offered_mid < 4 * 1024 * 1024,
            "the backend kept writing ({offered_mid} -> {offered_end}) while the client \
             did not read"
        );

        // Read the rest: all of it arrives, and then the EOF.
        let started = Instant::now();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the flood takes too long"
            );
            match tokio::time::timeout(STEP, client.read(&mut buf)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => {
                    assert!(buf[0] == 0x5a && buf[n - 1] == 0x5a, "the flood's bytes");
                    received += n as u64;
                }
                Ok(Err(e)) => panic!("read failed after {received} bytes: {e}"),
                Err(_) => panic!("stalled after {received} bytes"),
            }
        }
        received
    })
    .await;

    let growth = peak.saturating_sub(baseline);
    println!(
        "zero_copy={zero_copy}: baseline {baseline} KiB, peak {peak} KiB, growth {growth} KiB"
    );
    assert_eq!(received, FLOOD, "every byte offered reached the client");
    assert!(
        growth < MAX_GROWTH_KIB,
        "RSS grew by {growth} KiB (zero_copy={zero_copy}) while {FLOOD} bytes were offered \
         to a stalled client"
    );
    let done = support::eventually(STEP, || !reports.lock().unwrap().is_empty()).await;
    assert!(done, "the tunnel reported its end");
    let (path, reason, to_client, undelivered) = reports.lock().unwrap()[0];
    let expected_path = if zero_copy {
        TunnelPath::ZeroCopy
    } else {
        TunnelPath::Buffered
    };
    assert_eq!(path, expected_path);
    assert_eq!(reason, CloseReason::Done);
    // The bytes that came with the backend's 101 (at most one head buffer) are written by
    // the proxy with the 101 and, as of writing, not counted in the report (see
    // `hostile.rs`, rule 22's report test); everything else is.
    assert!(
        to_client <= FLOOD && to_client + 64 * 1024 >= FLOOD,
        "reported {to_client} of {FLOOD} bytes to the client"
    );
    assert_eq!(undelivered, 0);
    let _ = proxy.stop(STEP).await;
}

/// Reads until at least `n` bytes have arrived (or the peer closes); how many did.
async fn read_up_to(client: &mut TcpStream, n: u64) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(STEP, client.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(k)) => got += k as u64,
            Err(_) => panic!("the flood stalled after {got} bytes"),
        }
    }
    got
}
