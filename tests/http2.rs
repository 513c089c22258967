//! WebSocket over HTTP/2 (RFC 8441, rules 30–34 in `wsrelay::rules`): an HTTP/2 client (the
//! `h2` crate) through `Proxy::upgrade` behind axum (`axum::serve`) and behind hyper-util's
//! auto builder (as `examples/hyper.rs` serves it), to the echo backend or a scripted one.
//! HTTP/1.1 upgrades on the same port keep working, zero-copy.
#![cfg(feature = "hyper")]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wsrelay::{CloseReason, Proxy, ProxyBuilder, Report, TunnelPath};

#[derive(Debug, Clone, Copy)]
enum Front {
    Axum,
    Hyper,
}

const FRONTS: [Front; 2] = [Front::Axum, Front::Hyper];

/// What a test checks in a tunnel's report.
#[derive(Debug, Clone)]
struct Seen {
    client_to_backend: u64,
    backend_to_client: u64,
    path: TunnelPath,
    reason: CloseReason,
}

/// The reports of a proxy's tunnels, as they end.
type Reports = Arc<Mutex<Vec<Seen>>>;

/// Starts `builder` (plus a report hook) behind `front`: its address and the reports.
async fn start(front: Front, builder: ProxyBuilder) -> (SocketAddr, Proxy, Reports) {
    let reports: Reports = Arc::default();
    let seen = reports.clone();
    let proxy = builder
        .on_report(move |report: &Report| {
            seen.lock().unwrap().push(Seen {
                client_to_backend: report.client_to_backend,
                backend_to_client: report.backend_to_client,
                path: report.path,
                reason: report.reason,
            });
        })
        .build()
        .expect("a valid proxy");
    let addr = match front {
        Front::Axum => axum_front(proxy.clone()).await,
        Front::Hyper => hyper_auto_front(proxy.clone()).await,
    };
    (addr, proxy, reports)
}

/// Waits (up to `limit`) for the `n`th report (from 1).
async fn report(reports: &Reports, n: usize, limit: Duration) -> Seen {
    let arrived = eventually(limit, || reports.lock().unwrap().len() >= n).await;
    assert!(arrived, "no report {n} within {limit:?}");
    reports.lock().unwrap()[n - 1].clone()
}

// Rules 30–33, one stream end to end: the 200 without the HTTP/1.1 handshake fields, the
// frames echoed, the close handshake, END_STREAM each way, the report.
#[tokio::test]
async fn rules_30_to_33_one_websocket_over_http2_to_the_echo_backend() {
    for front in FRONTS {
        let echo = spawn_echo().await;
        let (addr, _proxy, reports) =
            start(front, Proxy::builder().backend(echo.to_string())).await;
        // Rule 30: the SETTINGS advertise extended CONNECT (h2_connect checks).
        let mut conn = h2_connect(addr).await;
        let request = ws_connect(addr, "/ws", &[("sec-websocket-protocol", "chat")]);
        let mut stream = h2_open(&mut conn, request).await;
        assert_eq!(stream.status(), 200, "{front:?}");
        let headers = stream.response.headers();
        for gone in ["sec-websocket-accept", "upgrade", "connection"] {
            assert!(
                headers.get(gone).is_none(),
                "{front:?}: {gone} in {headers:?}"
            );
        }
        // The echo backend picks the first offered subprotocol (rule 33).
        assert_eq!(headers["sec-websocket-protocol"], "chat", "{front:?}");

        let text = client_frame(0x1, b"hello over h2");
        assert!(stream.send_all(&text, false).await);
        let echoed = stream.read_exact(2 + 13).await;
        assert_eq!(echoed, server_frame(0x1, b"hello over h2"), "{front:?}");
        // Close handshake, then END_STREAM: the backend closes, and so does the stream.
        let close = client_frame(0x8, &1000u16.to_be_bytes());
        assert!(stream.send_all(&close, true).await);
        let (rest, end) = stream.read_to_end(STEP).await;
        assert_eq!(rest, server_frame(0x8, &1000u16.to_be_bytes()), "{front:?}");
        assert!(end.is_ok(), "{front:?}: the stream was reset: {end:?}");

        let report = report(&reports, 1, STEP).await;
        assert_eq!(report.path, TunnelPath::Buffered, "{front:?}");
        assert_eq!(report.client_to_backend, (text.len() + close.len()) as u64);
        assert_eq!(report.backend_to_client, (echoed.len() + rest.len()) as u64);
        assert_eq!(report.reason, CloseReason::Done, "{front:?}");
    }
}

/// A pseudo-random payload of `len` bytes, different for every `seed`.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// Rule 34 and flow control per stream: 100 WebSockets on one HTTP/2 connection at once, each
// carrying its own bytes both ways, exactly.
#[tokio::test]
async fn a_hundred_concurrent_streams_on_one_connection_carry_exact_bytes() {
    const STREAMS: u64 = 100;
    const LEN: usize = 48 * 1024;
    for front in FRONTS {
        let backend = Backend::start(Script::switching(Then::Echo)).await;
        let (addr, proxy, reports) = start(front, builder_for(&backend)).await;
        let conn = h2_connect(addr).await;
        let mut tasks = Vec::new();
        for seed in 0..STREAMS {
            let mut conn = conn.clone();
            tasks.push(tokio::spawn(async move {
                let mut stream = h2_open(&mut conn, ws_connect(addr, "/ws", &[])).await;
                assert_eq!(stream.status(), 200);
                let data = payload(seed, LEN);
                // Both ways at once: the echo starts before the last byte is sent.
                let (sent, (got, end)) = tokio::join!(
                    send_all(&mut stream.send, &data, true),
                    read_to_end_h2(&mut stream.recv, STEP)
                );
                assert!(sent, "stream {seed}: not all sent");
                assert!(got == data, "stream {seed}: other bytes came back");
                assert!(end.is_ok(), "stream {seed}: {end:?}");
            }));
        }
        for task in tasks {
            within("a stream's task", task).await.expect("stream task");
        }
        assert_eq!(backend.accepted(), STREAMS as usize, "{front:?}");
        assert!(eventually(STEP, || reports.lock().unwrap().len() == STREAMS as usize).await);
        for report in reports.lock().unwrap().iter() {
            assert_eq!(report.client_to_backend, LEN as u64, "{front:?}");
            assert_eq!(report.backend_to_client, LEN as u64, "{front:?}");
        }
        assert_eq!(proxy.active_tunnels(), 0, "{front:?}");
    }
}

// Rule 34 (flow control bounds each stream's memory) and rule 26: a 4 MiB message to a
// client that does not read. The proxy stops reading the backend once the stream's window,
// the h2 send queue and the tunnel buffer are full, so the backend (whose socket buffers are
// fixed at 64 KiB) is held back well before it has written the message; once the client
// reads, every byte arrives.
#[tokio::test]
async fn a_4_mib_message_to_a_slow_reader_back_pressures_the_backend() {
    const MESSAGE: u64 = 4 * 1024 * 1024;
    for front in FRONTS {
        let backend =
            Backend::start_sized(Script::switching(Then::Flood(MESSAGE)), Some(64 * 1024)).await;
        let (addr, _proxy, reports) = start(front, builder_for(&backend)).await;
        let mut conn = h2_connect(addr).await;
        let mut stream = h2_open(&mut conn, ws_connect(addr, "/ws", &[])).await;
        assert_eq!(stream.status(), 200);
        // The client reads nothing: its 64 KiB stream window fills and stays full.
        let mut last = 0;
        let settled = eventually(STEP, || {
            let now = backend.conns().first().map_or(0, |c| c.sent_after);
            let still = now == last && now > 0;
            last = now;
            still
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held_back = backend.conn(0).sent_after;
        assert!(settled, "{front:?}: the backend never stopped writing");
        assert!(
            held_back < 3 * 1024 * 1024,
            "{front:?}: the backend wrote {held_back} bytes to a client that read none"
        );
        // The slow reader now reads, 64 KiB at a time.
        let mut got = 0u64;
        while got < MESSAGE {
            let chunk = stream
                .read_exact((MESSAGE - got).min(64 * 1024) as usize)
                .await;
            assert!(chunk.iter().all(|&b| b == 0x5a), "{front:?}: corrupted");
            got += chunk.len() as u64;
        }
        let (extra, end) = stream.read_to_end(STEP).await;
        assert!(
            extra.is_empty(),
            "{front:?}: {} bytes too many",
            extra.len()
        );
        assert!(end.is_ok(), "{front:?}: {end:?}");
        stream.send_all(&[], true).await;
        let report = report(&reports, 1, STEP).await;
        assert_eq!(report.backend_to_client, MESSAGE, "{front:?}");
    }
}

/// A backend that switches, reads until the proxy's EOF, then answers with how many bytes it
/// got after the head and closes: the half-close of rule 23, seen from the backend.
async fn replying_after_eof() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut bytes = Vec::new();
                let mut buf = [0u8; 4096];
                let head = loop {
                    if let Some(end) = head_end(&bytes) {
                        break end;
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => bytes.extend_from_slice(&buf[..n]),
                    }
                };
                if stream
                    .write_all(&switch_with(&bytes[..head], &[]))
                    .await
                    .is_err()
                {
                    return;
                }
                let mut after = bytes.len() - head;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => after += n,
                        Err(_) => return,
                    }
                }
                let reply = format!("got {after} bytes, then your EOF");
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

// Rule 34: the client's END_STREAM is a half-close toward the backend, which can still
// answer; its EOF then ends the stream with END_STREAM (not a reset).
#[tokio::test]
async fn rule_34_end_stream_half_closes_toward_the_backend() {
    for front in FRONTS {
        let backend = replying_after_eof().await;
        let (addr, _proxy, reports) =
            start(front, Proxy::builder().backend(backend.to_string())).await;
        let mut conn = h2_connect(addr).await;
        let mut stream = h2_open(&mut conn, ws_connect(addr, "/ws", &[])).await;
        assert_eq!(stream.status(), 200);
        assert!(stream.send_all(&[7u8; 5000], true).await);
        let (data, end) = stream.read_to_end(STEP).await;
        assert_eq!(
            String::from_utf8_lossy(&data),
            "got 5000 bytes, then your EOF",
            "{front:?}"
        );
        assert!(
            end.is_ok(),
            "{front:?}: reset instead of END_STREAM: {end:?}"
        );
        let report = report(&reports, 1, STEP).await;
        assert_eq!(report.reason, CloseReason::Done, "{front:?}");
        assert_eq!(report.client_to_backend, 5000, "{front:?}");
    }
}

/// How long "promptly" may take: far below the 30 s fin timeout that would otherwise reap a
/// half-closed tunnel.
const PROMPTLY: Duration = Duration::from_secs(3);

// Rule 34: RST_STREAM from the client closes the backend promptly, whatever its error code:
// CANCEL (what a client sends when it drops a stream) reaches hyper's reader as an EOF, so
// the backend gets its EOF and the tunnel ends at its close; another code is a read error,
// and the backend is closed at once.
#[tokio::test]
async fn rule_34_rst_stream_from_the_client_closes_the_backend_promptly() {
    for reason in [h2::Reason::CANCEL, h2::Reason::INTERNAL_ERROR] {
        for front in FRONTS {
            let backend = Backend::start(Script::switching(Then::Hold)).await;
            let (addr, _proxy, reports) = start(front, builder_for(&backend)).await;
            let mut conn = h2_connect(addr).await;
            let mut stream = h2_open(&mut conn, ws_connect(addr, "/ws", &[])).await;
            assert_eq!(stream.status(), 200);
            assert!(stream.send_all(b"before the reset", false).await);
            assert!(eventually(STEP, || backend.conn(0).received_after == 16).await);
            let reset_at = Instant::now();
            stream.send.send_reset(reason);
            let conn0 = backend.closed(0, PROMPTLY).await;
            assert_eq!(
                conn0.after_head(),
                b"before the reset",
                "{front:?} {reason:?}"
            );
            let report = report(&reports, 1, PROMPTLY).await;
            assert!(
                reset_at.elapsed() < PROMPTLY,
                "{front:?} {reason:?}: {:?}",
                reset_at.elapsed()
            );
            assert_eq!(report.client_to_backend, 16, "{front:?} {reason:?}");
        }
    }
}

/// A backend that switches, then ignores the proxy's EOF and, after it, writes every 50 ms
/// until a write fails; it records how long after the EOF the proxy was gone.
async fn writing_after_eof(gone: Arc<Mutex<Option<Duration>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        let head = loop {
            if let Some(end) = head_end(&bytes) {
                break end;
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        };
        if stream
            .write_all(&switch_with(&bytes[..head], &[]))
            .await
            .is_err()
        {
            return;
        }
        while !matches!(stream.read(&mut buf).await, Ok(0) | Err(_)) {}
        let eof = Instant::now();
        for _ in 0..200 {
            if stream.write_all(b"still here").await.is_err() {
                *gone.lock().unwrap() = Some(eof.elapsed());
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    addr
}

// Rule 34 with a backend that does not close on EOF: after the client's RST_STREAM(CANCEL),
// the backend's next bytes cannot reach the stream, and the proxy closes the backend at once
// (as for an HTTP/1.1 client that closed its socket), not at the fin timeout.
#[tokio::test]
async fn rule_34_after_a_cancel_the_backends_next_write_closes_it() {
    for front in FRONTS {
        let gone = Arc::new(Mutex::new(None));
        let backend = writing_after_eof(gone.clone()).await;
        let (addr, _proxy, reports) =
            start(front, Proxy::builder().backend(backend.to_string())).await;
        let mut conn = h2_connect(addr).await;
        let mut stream = h2_open(&mut conn, ws_connect(addr, "/ws", &[])).await;
        assert_eq!(stream.status(), 200);
        stream.send.send_reset(h2::Reason::CANCEL);
        let report = report(&reports, 1, PROMPTLY).await;
        assert!(
            eventually(PROMPTLY, || gone.lock().unwrap().is_some()).await,
            "{front:?}: the backend was never closed"
        );
        assert!(
            matches!(report.reason, CloseReason::ClientError(_)),
            "{front:?}: {:?}",
            report.reason
        );
    }
}

// Rule 34: a backend reset ends the client's stream promptly.
#[tokio::test]
async fn rule_34_a_backend_reset_ends_the_stream_promptly() {
    for front in FRONTS {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut bytes = Vec::new();
            let mut buf = [0u8; 4096];
            while head_end(&bytes).is_none() {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => bytes.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(&switch_with(&bytes, &[])).await;
            let _ = stream.write_all(b"last words").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            reset(stream);
        });
        let (addr, _proxy, reports) =
            start(front, Proxy::builder().backend(backend.to_string())).await;
        let mut conn = h2_connect(addr).await;
        let mut stream = h2_open(&mut conn, ws_connect(addr, "/ws", &[])).await;
        assert_eq!(stream.status(), 200);
        let (data, _end) = stream.read_to_end(PROMPTLY).await;
        assert_eq!(data, b"last words", "{front:?}");
        let report = report(&reports, 1, PROMPTLY).await;
        assert!(
            matches!(report.reason, CloseReason::BackendError(_)),
            "{front:?}: {:?}",
            report.reason
        );
        // The connection is still good for other streams.
        let again = h2_open(&mut conn, ws_connect(addr, "/ws", &[])).await;
        assert_eq!(again.status(), 502, "{front:?}: the backend is gone now");
    }
}

// Rule 31: a bad extended CONNECT is refused on its own stream, while the connection's other
// streams go on.
#[tokio::test]
async fn rule_31_a_bad_connect_is_refused_on_its_stream_while_the_others_go_on() {
    for front in FRONTS {
        let backend = Backend::start(Script::switching(Then::Echo)).await;
        let (addr, _proxy, _reports) = start(front, builder_for(&backend)).await;
        let mut conn = h2_connect(addr).await;
        let mut good = h2_open(&mut conn, ws_connect(addr, "/ws", &[])).await;
        assert_eq!(good.status(), 200);
        assert!(good.send_all(b"one", false).await);
        assert_eq!(good.read_exact(3).await, b"one");

        let mut no_version = ws_connect(addr, "/ws", &[]);
        no_version.headers_mut().remove("sec-websocket-version");
        let cases = [
            (no_version, 400),
            (connect_for(addr, "/ws", "connect-udp", &[]), 501),
            (
                ws_connect(addr, "/ws", &[("sec-websocket-version", "8")]),
                400,
            ),
            (ws_connect(addr, "/ws", &[("sec-websocket-key", KEY)]), 400),
            (
                ws_connect(addr, "/ws", &[("sec-websocket-protocol", "a, a")]),
                400,
            ),
        ];
        for (request, status) in cases {
            let what = format!("{:?}", request.headers());
            let mut refused = h2_open(&mut conn, request).await;
            assert_eq!(refused.status(), status, "{front:?}: {what}");
            for gone in ["connection", "upgrade"] {
                assert!(refused.response.headers().get(gone).is_none(), "{gone}");
            }
            let (body, end) = refused.read_to_end(STEP).await;
            assert!(
                !body.is_empty() && end.is_ok(),
                "{front:?}: {what}: {end:?}"
            );
            // The good stream is untouched.
            assert!(good.send_all(b"two", false).await);
            assert_eq!(good.read_exact(3).await, b"two", "{front:?}: after {what}");
        }
        // None of them reached the backend.
        assert_eq!(backend.accepted(), 1, "{front:?}");
    }
}

// The 426 for an old version keeps its status without the connection-specific `Upgrade`.
#[tokio::test]
async fn rule_4_a_wrong_version_over_http2_is_426_naming_13_without_upgrade() {
    let echo = spawn_echo().await;
    let (addr, _proxy, _reports) =
        start(Front::Axum, Proxy::builder().backend(echo.to_string())).await;
    let mut conn = h2_connect(addr).await;
    let old = h2_open(
        &mut conn,
        ws_connect(addr, "/ws", &[("sec-websocket-version", "8")]),
    )
    .await;
    // Built with version 13 first, then 8: repeated is a 400; alone, 8 is a 426.
    assert_eq!(old.status(), 400);
    let mut request = ws_connect(addr, "/ws", &[]);
    request
        .headers_mut()
        .insert("sec-websocket-version", http::HeaderValue::from_static("8"));
    let old = h2_open(&mut conn, request).await;
    assert_eq!(old.status(), 426);
    assert_eq!(old.response.headers()["sec-websocket-version"], "13");
    assert!(old.response.headers().get("upgrade").is_none());
}

// Rule 33: a backend's refusal is that stream's response, body included; a 2xx that is not a
// switch is a 502, never a 200 the client would take for an open WebSocket.
#[tokio::test]
async fn rule_33_a_refusal_is_relayed_on_its_stream_and_a_200_is_a_502() {
    for front in FRONTS {
        let refusing = Backend::start(Script::canned(
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\nConnection: keep-alive\r\n\r\nno way",
            Then::Close,
        ))
        .await;
        let (addr, _proxy, _reports) = start(front, builder_for(&refusing)).await;
        let mut conn = h2_connect(addr).await;
        let mut refused = h2_open(&mut conn, ws_connect(addr, "/ws", &[])).await;
        assert_eq!(refused.status(), 403, "{front:?}");
        assert!(refused.response.headers().get("connection").is_none());
        let (body, end) = refused.read_to_end(STEP).await;
        assert_eq!(body, b"no way", "{front:?}");
        assert!(end.is_ok());

        let ok = Backend::start(Script::canned(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
            Then::Close,
        ))
        .await;
        let (addr, _proxy, _reports) = start(front, builder_for(&ok)).await;
        let mut conn = h2_connect(addr).await;
        let smuggled = h2_open(&mut conn, ws_connect(addr, "/ws", &[])).await;
        assert_eq!(smuggled.status(), 502, "{front:?}");
    }
}

// HTTP/1.1 upgrades on the port that serves HTTP/2 still work, and still run zero-copy.
#[tokio::test]
async fn http11_upgrades_on_the_same_port_still_work_zero_copy() {
    for front in FRONTS {
        let echo = spawn_echo().await;
        let (addr, _proxy, reports) =
            start(front, Proxy::builder().backend(echo.to_string())).await;
        // An HTTP/2 WebSocket first, to show both share the port.
        let mut conn = h2_connect(addr).await;
        let mut stream = h2_open(&mut conn, ws_connect(addr, "/ws", &[])).await;
        assert_eq!(stream.status(), 200);

        let mut client = connect(addr).await;
        assert!(send(&mut client, &ws_request(&[])).await);
        let got = read_head(&mut client, STEP).await;
        assert_eq!(got.status(), Some(101), "{front:?}: {}", got.head());
        let ping = client_frame(0x1, b"h1");
        assert!(send(&mut client, &ping).await);
        let echoed = read_exact_within(&mut client, 4, STEP).await;
        assert_eq!(echoed, server_frame(0x1, b"h1"));
        client.shutdown().await.unwrap();
        let _ = read_to_close(&mut client, STEP).await;
        let h1 = report(&reports, 1, STEP).await;
        let expected = if cfg!(target_os = "linux") {
            TunnelPath::ZeroCopy
        } else {
            TunnelPath::Buffered
        };
        assert_eq!(h1.path, expected, "{front:?}");

        assert!(stream.send_all(&[], true).await);
        let _ = stream.read_to_end(STEP).await;
        let h2 = report(&reports, 2, STEP).await;
        assert_eq!(h2.path, TunnelPath::Buffered, "{front:?}");
    }
}

// Rule 27: tunnels of HTTP/2 streams are tracked and drained like the others.
#[tokio::test]
async fn http2_tunnels_drain() {
    for front in FRONTS {
        let echo = spawn_echo().await;
        let builder = Proxy::builder()
            .backend(echo.to_string())
            .grace_period(Duration::from_millis(300));
        let (addr, proxy, _reports) = start(front, builder).await;
        let mut conn = h2_connect(addr).await;
        let mut stream = h2_open(&mut conn, ws_connect(addr, "/ws", &[])).await;
        assert_eq!(stream.status(), 200);
        assert!(eventually(STEP, || proxy.active_tunnels() == 1).await);
        let summary = within("the drain", proxy.drain()).await;
        assert_eq!((summary.drained, summary.cut), (0, 1), "{front:?}");
        let (_data, _end) = stream.read_to_end(STEP).await;
        // Refused once draining: a 503 on its stream.
        let late = h2_open(&mut conn, ws_connect(addr, "/ws", &[])).await;
        assert_eq!(late.status(), 503, "{front:?}");
    }
}
