//! No file descriptor leaks on the zero-copy path: after 1,000 tunnels (ending cleanly, by
//! reset, by shutdown and by timer with bytes still in their pipes) the process has exactly
//! the fds it had before. Its own test binary, with one test, so nothing else opens fds
//! meanwhile. Half the tunnels splice from the first byte (`small_reads(false)`), half start
//! with small reads and switch to splice on 64 KiB of bulk data: pipes exist in both
//! directions either way.

mod support;

use std::io;
use std::time::Duration;

use support::{Harness, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wsrelay::{CloseReason, Leftovers, SpliceConfig, TunnelPath};

#[tokio::test]
async fn no_fd_leak_after_1000_tunnels() {
    // Warm up the runtime's own fds (timer, I/O driver) before taking the baseline.
    drop(support::tcp_pair().await);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let baseline = support::open_fds();
    let mut reasons = [0usize; 4];

    for i in 0..1000 {
        let mut h = Harness::new(Mode::ZeroCopy, i % 2 == 1).await;
        let mut a = h.take_a();
        let mut b = h.take_b();
        let kind = i % 4;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        let lifetime = (kind == 3).then(|| Duration::from_millis(5));
        let (len, small) = if i % 8 < 4 {
            (1000, false)
        } else {
            (64 * 1024, true)
        };
        let config = SpliceConfig::new()
            .max_lifetime(lifetime)
            .small_reads(small);
        let task = h.start(config, h.leftovers(b"hi", b""), shutdown);
        let mut buf = [0u8; 2];
        b.read_exact(&mut buf).await.unwrap();
        // Pipes exist in both directions from here on.
        a.write_all(&vec![1; len]).await.unwrap();
        b.write_all(&vec![2; len]).await.unwrap();
        let report = match kind {
            0 => {
                // Clean end.
                a.shutdown().await.unwrap();
                b.shutdown().await.unwrap();
                let (x, y) = tokio::join!(support::read_all(&mut a), support::read_all(&mut b));
                assert_eq!((x.len(), y.len()), (len, len));
                task.await.unwrap()
            }
            1 => {
                // Reset by a.
                let mut got = vec![0u8; len];
                a.read_exact(&mut got).await.unwrap();
                support::reset(a.tcp());
                let report = task.await.unwrap();
                assert_eq!(report.reason, h.a_error(io::ErrorKind::ConnectionReset));
                report
            }
            2 => {
                tx.send(()).unwrap();
                task.await.unwrap()
            }
            _ => {
                // Lifetime expires with `len` bytes unread in each direction.
                let report = task.await.unwrap();
                assert_eq!(report.reason, CloseReason::Lifetime);
                report
            }
        };
        assert_eq!(report.path, TunnelPath::ZeroCopy);
        reasons[kind] += 1;
        drop((h, b));
        let _ = Leftovers::default();
    }
    assert_eq!(reasons, [250; 4]);
    assert_eq!(support::open_fds(), baseline, "fds leaked");
}
