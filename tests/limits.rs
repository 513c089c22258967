//! Limits under abuse, through `Proxy::serve` (rule 7, see `wsrelay::rules`, and the tunnel
//! cap):
//! a slowloris client, a megabyte of headers, and more clients than the tunnel cap allows.
//!
//! Memory under a flood and file descriptors after mass abandonment have their own test
//! files (`limits_memory.rs`, `limits_fds.rs`), since they measure the whole process.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use wsrelay::wire::HeadLimits;

use support::{
    builder_for, connect, eventually, read_exact_within, read_head, read_to_close, send,
    ws_request, Backend, Running, Script, Then, STEP,
};

/// Rule 7: a client that sends its head one byte every 200 ms is answered 408 (or closed)
/// at the 1 s head deadline, long before its head could be complete, and the backend is
/// never contacted.
#[tokio::test]
async fn rule_07_slowloris_is_408_at_the_deadline_and_never_reaches_the_backend() {
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    let builder =
        builder_for(&backend).client_head(HeadLimits::new().timeout(Some(Duration::from_secs(1))));
    let proxy = Running::start(builder).await;

    let client = connect(proxy.addr).await;
    let (mut reader, mut writer) = client.into_split();
    let request = ws_request(&[]);
    let total = request.len();
    let written = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let trickle = {
        let written = written.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            // Bounded by the request's length (about 30 s at 5 bytes a second), and stopped
            // as soon as the answer is in.
            for byte in request {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                match tokio::time::timeout(STEP, writer.write_all(&[byte])).await {
                    Ok(Ok(())) => written.fetch_add(1, Ordering::SeqCst),
                    _ => return,
                };
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let mut bytes = Vec::new();
    let mut closed = false;
    let mut answered_after = None;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::io::AsyncReadExt::read(&mut reader, &mut buf).await {
                Ok(0) | Err(_) => {
                    closed = true;
                    answered_after.get_or_insert(started.elapsed());
                    return;
                }
                Ok(n) => {
                    answered_after.get_or_insert(started.elapsed());
                    bytes.extend_from_slice(&buf[..n]);
                }
            }
        }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let _ = tokio::time::timeout(STEP, trickle).await;

    let answered_after = answered_after.expect("the proxy answered or closed within 5 s");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n") || (bytes.is_empty() && closed),
        "a slowloris gets 408 or a close, got {text:?}"
    );
    assert!(closed, "the connection is closed after the 408");
    assert!(
        answered_after >= Duration::from_millis(900) && answered_after < Duration::from_secs(2),
        "answered after {answered_after:?}, not at the 1 s deadline"
    );
    let sent = written.load(Ordering::SeqCst);
    assert!(
        sent < total,
        "the head was still incomplete ({sent} of {total} bytes)"
    );
    assert_eq!(backend.accepted(), 0, "the backend is never contacted");
    // The proxy lingers briefly after its answer (reading and discarding, so that closing
    // does not reset the answer away); the writer is gone, so that ends at once.
    assert!(
        eventually(STEP, || proxy.proxy.active_tunnels() == 0).await,
        "the connection is no longer counted"
    );
}

/// Rule 7: a 1 MiB header block is refused with 431 as soon as the 8 KiB cap is passed: the
/// answer arrives while the client is still writing its head, so the proxy did not buffer
/// the block (it reads at most the cap before answering), and the backend is never
/// contacted.
#[tokio::test]
async fn rule_07_megabyte_header_block_is_431_at_the_8_kib_cap() {
    const BLOCK: usize = 1024 * 1024;
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    let proxy = Running::start(builder_for(&backend)).await;

    let mut head = b"GET /ws HTTP/1.1\r\nHost: proxy.test\r\nUpgrade: websocket\r\n".to_vec();
    let mut i = 0;
    while head.len() < BLOCK {
        head.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "a".repeat(1000)).as_bytes());
        i += 1;
    }
    head.extend_from_slice(b"\r\n");
    let total = head.len();

    let client = connect(proxy.addr).await;
    let (mut reader, mut writer) = client.into_split();
    let written = Arc::new(AtomicUsize::new(0));
    let writing = {
        let written = written.clone();
        tokio::spawn(async move {
            // 4 KiB at a time, letting the proxy run between writes and pausing every 64 KiB:
            // a proxy that reads only up to its cap answers long before the end.
            for (n, chunk) in head.chunks(4096).enumerate() {
                match tokio::time::timeout(STEP, writer.write_all(chunk)).await {
                    Ok(Ok(())) => written.fetch_add(chunk.len(), Ordering::SeqCst),
                    _ => return false,
                };
                tokio::task::yield_now().await;
                if n % 16 == 15 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            true
        })
    };

    let mut bytes = Vec::new();
    let mut written_at_answer = None;
    let _ = tokio::time::timeout(STEP, async {
        let mut buf = [0u8; 4096];
        loop {
            match tokio::io::AsyncReadExt::read(&mut reader, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    written_at_answer.get_or_insert(written.load(Ordering::SeqCst));
                    bytes.extend_from_slice(&buf[..n]);
                }
            }
        }
    })
    .await;
    let wrote_all = tokio::time::timeout(STEP, writing)
        .await
        .expect("the writer ends")
        .expect("the writer does not panic");

    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "got {text:?}"
    );
    let written_at_answer = written_at_answer.expect("an answer arrived");
    println!("431 arrived after {written_at_answer} of {total} bytes were written");
    // The client writes 4 KiB at a time and yields to the proxy between writes, so a proxy
    // that stops reading at its 8 KiB cap answers after a few chunks (12 KiB when this was
    // written); 128 KiB leaves a wide margin, and is an eighth of the block.
    assert!(
        written_at_answer < 128 * 1024,
        "the 431 came only after the client had written {written_at_answer} of {total} \
         bytes: the proxy read far past its cap (wrote all: {wrote_all})"
    );
    assert_eq!(backend.accepted(), 0, "the backend is never contacted");
}

/// The tunnel cap: with `max_tunnels(Some(2))`, a third connection gets 503 at once while two
/// tunnels are open, and connections are accepted again once a tunnel has closed.
#[tokio::test]
async fn tunnel_cap_answers_503_beyond_it_and_accepts_again_after_a_close() {
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    let proxy = Running::start(builder_for(&backend).max_tunnels(Some(2))).await;

    let mut first = connect(proxy.addr).await;
    let mut second = connect(proxy.addr).await;
    for client in [&mut first, &mut second] {
        assert!(send(client, &ws_request(&[])).await);
        let got = read_head(client, STEP).await;
        assert_eq!(got.status_line(), "HTTP/1.1 101 Switching Protocols");
    }
    assert_eq!(proxy.proxy.active_tunnels(), 2);

    let mut third = connect(proxy.addr).await;
    let _ = send(&mut third, &ws_request(&[])).await;
    let got = read_to_close(&mut third, STEP).await;
    assert_eq!(got.status_line(), "HTTP/1.1 503 Service Unavailable");
    assert!(got.closed, "the refused connection is closed");
    assert_eq!(
        backend.accepted(),
        2,
        "the refused client never reaches the backend"
    );
    assert_eq!(
        proxy.proxy.active_tunnels(),
        2,
        "a refusal does not use up a slot"
    );

    // The first tunnel ends; its slot comes back.
    drop(first);
    assert!(
        eventually(STEP, || proxy.proxy.active_tunnels() == 1).await,
        "the closed tunnel is no longer counted (active: {})",
        proxy.proxy.active_tunnels()
    );
    let mut fourth = connect(proxy.addr).await;
    assert!(send(&mut fourth, &ws_request(&[])).await);
    let got = read_head(&mut fourth, STEP).await;
    assert_eq!(got.status_line(), "HTTP/1.1 101 Switching Protocols");
    assert!(send(&mut fourth, b"ping").await);
    assert_eq!(read_exact_within(&mut fourth, 4, STEP).await, b"ping");
    assert_eq!(backend.accepted(), 3);

    // And the cap holds again with two open.
    let mut fifth = connect(proxy.addr).await;
    let _ = send(&mut fifth, &ws_request(&[])).await;
    let got = read_to_close(&mut fifth, STEP).await;
    assert_eq!(got.status_line(), "HTTP/1.1 503 Service Unavailable");
    assert_eq!(backend.accepted(), 3);

    // Both remaining tunnels still work.
    assert!(send(&mut second, b"pong").await);
    assert_eq!(read_exact_within(&mut second, 4, STEP).await, b"pong");
}
