//! Scripted I/O (`tokio_test::io::Builder`) on the buffered path: errors mid-stream are
//! reported on the right side, with their kind and exact byte counts.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_test::io::Builder;
use wsrelay::{tunnel, CloseReason, Leftovers, SpliceConfig, TunnelPath};

fn config() -> SpliceConfig {
    SpliceConfig::new().idle_timeout(None).fin_timeout(None)
}

#[tokio::test]
async fn client_read_error_mid_stream() {
    let client = Builder::new()
        .read(b"hello")
        .read(b" world")
        .read_error(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))
        .build();
    let backend = Builder::new()
        .write(b"early ")
        .write(b"hello world")
        .build();
    let leftovers = Leftovers {
        to_backend: "early ".into(),
        ..Leftovers::default()
    };
    let report = tunnel(
        client,
        backend,
        leftovers,
        &config(),
        std::future::pending(),
    )
    .await;
    assert_eq!(
        report.reason,
        CloseReason::ClientError(io::ErrorKind::ConnectionReset)
    );
    assert_eq!(report.error.unwrap().kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(report.client_to_backend, 17);
    assert_eq!(report.backend_to_client, 0);
    assert_eq!(report.undelivered_to_backend, 0);
    assert_eq!(report.path, TunnelPath::Buffered);
}

#[tokio::test]
async fn backend_read_error_mid_stream() {
    let client = Builder::new().write(b"0123456789").build();
    let backend = Builder::new()
        .read(b"0123456789")
        .read_error(io::Error::other("boom"))
        .build();
    let report = tunnel(
        client,
        backend,
        Leftovers::default(),
        &config(),
        std::future::pending(),
    )
    .await;
    assert_eq!(
        report.reason,
        CloseReason::BackendError(io::ErrorKind::Other)
    );
    assert_eq!(report.backend_to_client, 10);
    assert_eq!(report.client_to_backend, 0);
}

#[tokio::test]
async fn backend_write_error_counts_undelivered() {
    let client = Builder::new().read(b"abc").build();
    let backend = Builder::new()
        .write_error(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
        .build();
    let report = tunnel(
        client,
        backend,
        Leftovers::default(),
        &config(),
        std::future::pending(),
    )
    .await;
    assert_eq!(
        report.reason,
        CloseReason::BackendError(io::ErrorKind::BrokenPipe)
    );
    assert_eq!(report.client_to_backend, 0);
    assert_eq!(report.undelivered_to_backend, 3);
}

#[tokio::test]
async fn client_write_error_after_partial_delivery() {
    // The backend's leftover is delivered; the next write to the client fails.
    let client = Builder::new()
        .write(b"lefto")
        .write_error(io::Error::new(io::ErrorKind::ConnectionAborted, "aborted"))
        .build();
    let backend = Builder::new().build();
    let leftovers = Leftovers {
        to_client: "leftover".into(),
        ..Leftovers::default()
    };
    let report = tunnel(
        client,
        backend,
        leftovers,
        &config(),
        std::future::pending(),
    )
    .await;
    assert_eq!(
        report.reason,
        CloseReason::ClientError(io::ErrorKind::ConnectionAborted)
    );
    assert_eq!(report.backend_to_client, 5);
    assert_eq!(report.undelivered_to_client, 3);
}

#[tokio::test]
async fn both_sides_end_cleanly() {
    let client = Builder::new().read(b"ping").write(b"pong").build();
    let backend = Builder::new().write(b"ping").read(b"pong").build();
    let report = tunnel(
        client,
        backend,
        Leftovers::default(),
        &config(),
        std::future::pending(),
    )
    .await;
    assert_eq!(report.reason, CloseReason::Done);
    assert_eq!((report.client_to_backend, report.backend_to_client), (4, 4));
    assert!(report.error.is_none());
}

/// A writer that accepts nothing (and a reader that never has data).
#[derive(Debug)]
struct Stuck;

impl AsyncRead for Stuck {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for Stuck {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(0))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn writer_accepting_zero_bytes_is_an_error() {
    let client = Builder::new().read(b"x").build();
    let report = tunnel(
        client,
        Stuck,
        Leftovers::default(),
        &config(),
        std::future::pending(),
    )
    .await;
    assert_eq!(
        report.reason,
        CloseReason::BackendError(io::ErrorKind::WriteZero)
    );
    assert_eq!(report.client_to_backend, 0);
    assert_eq!(report.undelivered_to_backend, 1);
}

/// A large scripted transfer grows the buffer without losing or reordering bytes.
#[tokio::test]
async fn scripted_bulk_with_small_buffers() {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut client = Builder::new();
    for chunk in data.chunks(10_000) {
        client.read(chunk);
    }
    let client = client.build();
    let backend = Builder::new().write(&data).build();
    let config = config().buffer_size(100).max_buffer_size(4096);
    let report = tunnel(
        client,
        backend,
        Leftovers::default(),
        &config,
        std::future::pending(),
    )
    .await;
    assert_eq!(report.reason, CloseReason::Done);
    assert_eq!(report.client_to_backend, data.len() as u64);
}
