//! Path selection: the zero-copy path is only taken for two `TcpStream`s, and a kernel that
//! refuses `splice` before any byte moved makes the tunnel carry on buffered.
#![cfg(target_os = "linux")]

mod support;

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsrelay::{tunnel, CloseReason, Leftovers, SpliceConfig, TunnelPath};

/// A TcpStream and a duplex stream: buffered, and data flows both ways.
#[tokio::test]
async fn mixed_stream_types_take_the_buffered_path() {
    let (mut client_peer, client) = support::tcp_pair().await;
    let (mut backend_peer, backend) = tokio::io::duplex(1024);
    let config = SpliceConfig::new();
    let task = tokio::spawn(async move {
        tunnel(
            client,
            backend,
            Leftovers::default(),
            &config,
            std::future::pending(),
        )
        .await
    });
    client_peer.write_all(b"to backend").await.unwrap();
    client_peer.shutdown().await.unwrap();
    backend_peer.write_all(b"to client").await.unwrap();
    backend_peer.shutdown().await.unwrap();
    assert_eq!(support::read_all(&mut backend_peer).await, b"to backend");
    assert_eq!(support::read_all(&mut client_peer).await, b"to client");
    let report = support::within_for(Duration::from_secs(5), "report", task)
        .await
        .unwrap();
    assert_eq!(report.path, TunnelPath::Buffered);
    assert_eq!(report.reason, CloseReason::Done);
}

/// An eventfd dressed up as a `TcpStream`: epoll reports it readable, but `splice` from it
/// fails with `EINVAL`, so the tunnel falls back to the buffered path, keeping the
/// leftovers it already wrote. (The buffered path then fails to `recv` from it, which ends
/// the tunnel with a client error.) Small reads are off so that the first read is a splice
/// (with them on, the `recv` of small mode would fail on the eventfd before any splice).
#[tokio::test]
async fn splice_refused_falls_back_to_buffered() {
    // SAFETY: plain libc call with valid flags; the result is checked below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just created and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Make it readable.
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live 8-byte array to an open eventfd.
    let n = unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
    assert_eq!(n, 8);
    let fake = TcpStream::from_std(std::net::TcpStream::from(owned)).unwrap();

    let (mut backend_peer, backend) = support::tcp_pair().await;
    let leftovers = Leftovers {
        to_backend: "early".into(),
        ..Leftovers::default()
    };
    let config = SpliceConfig::new()
        .idle_timeout(Some(Duration::from_secs(5)))
        .small_reads(false);
    let report = support::within_for(
        Duration::from_secs(5),
        "tunnel",
        tunnel(fake, backend, leftovers, &config, std::future::pending()),
    )
    .await;
    assert_eq!(report.path, TunnelPath::Buffered, "{report:?}");
    assert!(
        matches!(report.reason, CloseReason::ClientError(_)),
        "{report:?}"
    );
    assert_eq!(report.client_to_backend, 5);
    assert_eq!(report.undelivered_to_backend, 0);
    let mut got = Vec::new();
    backend_peer.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"early");
}
