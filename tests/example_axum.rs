//! The `axum` example as users run it: the same rules as the standalone proxy, from behind
//! hyper. A client that trickles its head, or sends nothing, is closed at the head deadline
//! (rule 7; hyper's `header_read_timeout`, set by the example); an oversized head is 431; on
//! SIGTERM the WebSocket tunnels are drained and the process exits 0; `--help` exits 0.
#![cfg(all(unix, feature = "hyper"))]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::AsyncWriteExt;

/// Starts the example with a 1 s head deadline and a short grace period.
async fn start_axum() -> (tokio::process::Child, SocketAddr) {
    let (child, addr) = start_example(
        "axum",
        &[
            "--listen",
            "127.0.0.1:0",
            "--head-timeout",
            "1",
            "--grace",
            "0.5",
        ],
    )
    .await;
    (child, addr.parse().expect("a socket address"))
}

/// Writes `bytes` one at a time, `gap` apart, until done or the peer closes; when the peer
/// closed, how long after the start.
async fn trickle(
    stream: &mut tokio::net::TcpStream,
    bytes: &[u8],
    gap: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    for b in bytes {
        if stream.write_all(&[*b]).await.is_err() {
            return Some(started.elapsed());
        }
        let mut probe = [0u8; 256];
        match tokio::time::timeout(gap, stream.peek(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            // An answer (a 408) is as good as a close.
            Ok(Ok(_)) => return Some(started.elapsed()),
            Err(_) => {}
        }
    }
    None
}

#[tokio::test]
async fn rule_7_a_trickling_or_silent_client_is_cut_at_the_head_deadline() {
    let (_child, addr) = start_axum().await;

    // A byte every 100 ms of a head that never ends: cut at the 1 s deadline, not before.
    let mut trickling = connect(addr).await;
    let endless = [
        b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Slow: ".as_slice(),
        &[b'a'; 200],
    ]
    .concat();
    let cut = trickle(&mut trickling, &endless, Duration::from_millis(100)).await;
    let cut = cut.expect("a trickling client was never cut");
    assert!(
        cut >= Duration::from_millis(800) && cut <= Duration::from_secs(4),
        "cut after {cut:?}"
    );

    // Nothing at all: closed at the deadline too.
    let mut silent = connect(addr).await;
    let started = Instant::now();
    let got = read_to_close(&mut silent, Duration::from_secs(5)).await;
    assert!(got.closed, "a silent client was never closed");
    let closed = started.elapsed();
    assert!(
        closed >= Duration::from_millis(800) && closed <= Duration::from_secs(4),
        "closed after {closed:?}"
    );
}

#[tokio::test]
async fn rule_7_an_oversized_head_is_431() {
    let (_child, addr) = start_axum().await;
    let cookie = format!("Cookie: {}", "a".repeat(70 * 1024));
    let got = raw_exchange(addr, &ws_request(&[&cookie]), STEP).await;
    assert_eq!(got.status(), Some(431), "{}", got.head());
}

#[tokio::test]
async fn sigterm_drains_the_tunnels_and_exits_0() {
    let (child, addr) = start_axum().await;
    let mut tunnel = connect(addr).await;
    assert!(send(&mut tunnel, &ws_request(&[])).await);
    assert_eq!(read_head(&mut tunnel, STEP).await.status(), Some(101));
    terminate(&child).await;
    // The tunnel outlives the HTTP server's shutdown, then is cut after the grace period.
    let got = read_to_close(&mut tunnel, STEP).await;
    assert!(got.closed, "the tunnel was never closed");
    let (code, stderr) = finish(child).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("0 tunnels drained, 1 cut"), "{stderr}");
}

#[tokio::test]
async fn help_prints_the_usage_and_exits_0() {
    let binary = example_binary("axum").await;
    let output = within_for(
        PROCESS_STEP,
        "axum --help",
        tokio::process::Command::new(binary).arg("--help").output(),
    )
    .await
    .expect("run the example");
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("usage: axum"), "{stdout}");
    assert!(stdout.contains("--head-timeout"), "{stdout}");
}

/// `--tls-cert`/`--tls-key`: the page over https, the WebSocket over wss through the proxy
/// (with `X-Forwarded-Proto: https` for the backend), and a client that completes the TLS
/// handshake but sends nothing is closed at the head deadline too.
#[cfg(feature = "rustls")]
#[tokio::test]
async fn tls_serves_https_and_wss_and_cuts_a_silent_tls_client_at_the_deadline() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let dir = TempDir::new("example-axum-tls");
    let ca = TestCa::new("axum example CA");
    let issued = ca.issue(&dir, "axum", &["localhost"]);
    let backend = Backend::start(Script::switching(Then::Hold)).await;
    let echo = spawn_echo().await.to_string();
    let start = |backend: String| {
        let (cert, key) = (issued.cert.clone(), issued.key.clone());
        async move {
            let args = [
                "--listen",
                "127.0.0.1:0",
                "--head-timeout",
                "1",
                "--grace",
                "0.5",
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
                "--backend",
                &backend,
            ];
            let (child, addr) = start_example("axum", &args).await;
            (child, addr.parse::<SocketAddr>().expect("an address"))
        }
    };
    let config = ca.client_config(&["http/1.1"]);

    // The page, and the echo through wss.
    let (_child, addr) = start(echo).await;
    let mut tls = tls_connect(addr, "localhost", config.clone()).await;
    let get = format!(
        "GET / HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    assert!(send(&mut tls, get.as_bytes()).await);
    let page = read_to_close(&mut tls, STEP).await;
    assert_eq!(page.status(), Some(200), "{}", page.head());
    let tls = tls_connect(addr, "localhost", config.clone()).await;
    let url = format!("wss://localhost:{}/ws", addr.port());
    let (mut ws, _) = within(
        "handshake",
        tokio_tungstenite::client_async(url.as_str(), tls),
    )
    .await
    .expect("a wss handshake");
    within("send", ws.send(Message::text("over wss")))
        .await
        .unwrap();
    let back = within("echo", ws.next()).await;
    assert_eq!(back.unwrap().unwrap(), Message::text("over wss"));

    // Silent after the handshake: closed at the 1 s deadline.
    let mut silent = tls_connect(addr, "localhost", config.clone()).await;
    let started = Instant::now();
    let got = read_to_close(&mut silent, Duration::from_secs(5)).await;
    assert!(got.closed, "a silent TLS client was never closed");
    let closed = started.elapsed();
    assert!(closed <= Duration::from_secs(4), "closed after {closed:?}");

    // What the backend is told.
    let (_child, addr) = start(backend.addr.to_string()).await;
    let mut tls = tls_connect(addr, "localhost", config).await;
    assert!(send(&mut tls, &ws_request(&[])).await);
    assert_eq!(read_head(&mut tls, STEP).await.status(), Some(101));
    assert_eq!(backend.conn(0).header("x-forwarded-proto"), ["https"]);
}
