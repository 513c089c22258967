//! The zero-copy path's small reads: a tunnel that only carries small messages holds no
//! pipe; bulk data makes its direction create one (and splice); closing the tunnel closes
//! everything. Its own test binary, with one test, so nothing else opens fds meanwhile.
#![cfg(target_os = "linux")]

mod support;

use std::time::Duration;

use support::{Harness, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wsrelay::{CloseReason, SpliceConfig, TunnelPath};

/// Sends `msg` from `from` and reads it back at `to`, checking it.
async fn exchange(from: &mut support::Peer, to: &mut support::Peer, msg: &[u8]) {
    from.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    support::within_for(
        Duration::from_secs(5),
        "small message",
        to.read_exact(&mut got),
    )
    .await
    .unwrap();
    assert_eq!(got, msg);
}

#[tokio::test]
async fn small_messages_hold_no_pipe_bulk_does() {
    // Warm up the runtime's own fds (timer, I/O driver) before taking the baseline.
    drop(support::tcp_pair().await);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let baseline = support::open_fds();

    let mut h = Harness::new(Mode::ZeroCopy, false).await;
    let mut a = h.take_a();
    let mut b = h.take_b();
    // The two peers and the tunnel's two sockets.
    assert_eq!(support::open_fds(), baseline + 4);
    let config = SpliceConfig::new().idle_timeout(None).fin_timeout(None);
    let task = h.start(config, h.leftovers(b"", b""), std::future::pending());

    // Ten small messages each way, ping-pong: no pipe.
    for i in 0..10u8 {
        exchange(&mut a, &mut b, &[i; 16]).await;
        exchange(&mut b, &mut a, &[i + 100; 16]).await;
    }
    assert_eq!(
        support::open_fds(),
        baseline + 4,
        "small messages created pipes"
    );

    // 8 MiB a → b: that direction switches to splice and creates its pipe (two fds),
    // which it keeps; b → a still has none.
    const BULK: u64 = 8 * 1024 * 1024;
    let (sent, got) = support::within_for(Duration::from_secs(30), "8 MiB", async {
        let mut limited = (&mut b).take(BULK);
        tokio::join!(
            async {
                let mut rng = support::Prng::new(7);
                let mut block = vec![0u8; support::BLOCK];
                for _ in 0..BULK / support::BLOCK as u64 {
                    rng.fill(&mut block);
                    a.write_all(&block).await.unwrap();
                }
                BULK
            },
            support::recv_stream(&mut limited, 7),
        )
    })
    .await;
    assert_eq!(got.unwrap(), sent);
    assert_eq!(
        support::open_fds(),
        baseline + 6,
        "bulk data did not create a pipe"
    );

    // Small messages still flow, in order, both ways.
    for i in 0..10u8 {
        exchange(&mut a, &mut b, &[i; 16]).await;
        exchange(&mut b, &mut a, &[i + 100; 16]).await;
    }

    // Closing ends the tunnel and returns to the baseline.
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let (x, y) = tokio::join!(support::read_all(&mut a), support::read_all(&mut b));
    assert!(x.is_empty() && y.is_empty());
    let report = support::within_for(Duration::from_secs(5), "report", task)
        .await
        .unwrap();
    assert_eq!(report.reason, CloseReason::Done, "{report:?}");
    assert_eq!(report.path, TunnelPath::ZeroCopy);
    assert_eq!(report.client_to_backend, 20 * 16 + BULK);
    assert_eq!(report.backend_to_client, 20 * 16);
    drop((h, a, b));
    assert_eq!(support::open_fds(), baseline, "fds leaked");
}
