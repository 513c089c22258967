//! Every front end follows the same rules: `Proxy::serve` (the byte-stream front end), an
//! axum app and a bare hyper server calling `Proxy::upgrade`. Each case runs against all
//! three, with a scripted backend that records whether it was ever contacted.
//!
//! The two `upgrade` front ends also serve HTTP/2 (axum with its `http2` feature, hyper with
//! hyper-util's auto builder, as the examples do): the rules of §1 that apply to an RFC 8441
//! extended CONNECT are checked there too, on its stream (more in `tests/http2.rs`).
//!
//! Also here: tunnels started by `upgrade` drain with `Proxy::drain`; what a refusal with bad
//! framing and an oversized refusal body give the client; backend address forms; the
//! addresses in a `Report`.
#![cfg(feature = "hyper")]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::io::AsyncWriteExt;
use wsrelay::wire::HeadLimits;
use wsrelay::{BuildError, Proxy, ProxyBuilder, ProxyError, Report};

#[derive(Debug, Clone, Copy)]
enum Front {
    Serve,
    Axum,
    Hyper,
}

const FRONTS: [Front; 3] = [Front::Serve, Front::Axum, Front::Hyper];

/// Starts `proxy` behind `front`; the address to connect to. A `Running` is returned to keep
/// `serve` alive.
async fn start(front: Front, proxy: Proxy) -> (SocketAddr, Option<Running>) {
    match front {
        Front::Serve => {
            let running = Running::serve(proxy).await;
            (running.addr, Some(running))
        }
        Front::Axum => (axum_front(proxy).await, None),
        Front::Hyper => (hyper_front(proxy).await, None),
    }
}

/// A backend that switches (and echoes), and a builder for a proxy in front of it.
async fn switching_backend() -> (Backend, ProxyBuilder) {
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    let builder = builder_for(&backend);
    (backend, builder)
}

/// Sends `request` through `front` and returns the answer's status; checks the backend was
/// never contacted.
async fn refused(front: Front, builder: ProxyBuilder, request: &[u8]) -> Option<u16> {
    let backend_hit = Backend::start(Script::switching(Then::Echo)).await;
    let builder = builder.backend(backend_hit.addr.to_string());
    let (addr, _running) = start(front, builder.build().unwrap()).await;
    let got = raw_exchange(addr, request, STEP).await;
    assert_eq!(
        backend_hit.accepted(),
        0,
        "{front:?}: a refused handshake reached the backend"
    );
    got.status()
}

// Rule 7: a head over the size limit is 431, on every front end (hyper reads up to ~400 KiB
// by itself; the proxy's limit is 8 KiB by default).
#[tokio::test]
async fn rule_7_a_head_over_the_size_limit_is_431_on_every_front_end() {
    let cookie = format!("Cookie: {}", "a".repeat(70 * 1024));
    let request = ws_request(&[&cookie]);
    for front in FRONTS {
        let status = refused(front, Proxy::builder(), &request).await;
        assert_eq!(status, Some(431), "{front:?}");
    }
}

// Rule 7: more header fields than the limit is 431, on every front end.
#[tokio::test]
async fn rule_7_too_many_header_fields_is_431_on_every_front_end() {
    let lines: Vec<String> = (0..60).map(|i| format!("X-Field-{i}: {i}")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let request = ws_request(&lines);
    for front in FRONTS {
        let builder = Proxy::builder().client_head(HeadLimits::new().max_headers(50));
        let status = refused(front, builder, &request).await;
        assert_eq!(status, Some(431), "{front:?}");
    }
}

// Rule 6b: malformed subprotocol and extension offers are 400 and never forwarded.
#[tokio::test]
async fn rule_6b_malformed_offers_are_400_on_every_front_end() {
    for extra in [
        "Sec-WebSocket-Protocol: chat, chat",
        "Sec-WebSocket-Protocol: chat/1",
        "Sec-WebSocket-Extensions: permessage-deflate; =1",
        "Sec-WebSocket-Extensions: x; a=\"b c\"",
    ] {
        for front in FRONTS {
            let status = refused(front, Proxy::builder(), &ws_request(&[extra])).await;
            assert_eq!(status, Some(400), "{front:?}: {extra}");
        }
    }
}

// Rule 6c: an absolute-form target reaches the backend in origin form, with `Host` set to
// its authority.
#[tokio::test]
async fn rule_6c_an_absolute_form_target_becomes_origin_form_on_every_front_end() {
    for front in FRONTS {
        let (backend, builder) = switching_backend().await;
        let (addr, _running) = start(front, builder.build().unwrap()).await;
        let request = raw_request(&[
            "GET http://app.test/ws?room=1 HTTP/1.1",
            "Host: app.test",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            &key_line(),
        ]);
        let mut client = connect(addr).await;
        assert!(send(&mut client, &request).await);
        let got = read_head(&mut client, STEP).await;
        assert_eq!(got.status(), Some(101), "{front:?}: {}", got.head());
        let conn = backend.conn(0);
        assert_eq!(conn.request_line(), "GET /ws?room=1 HTTP/1.1", "{front:?}");
        assert_eq!(conn.header("host"), ["app.test"], "{front:?}");
    }
}

// Rule 6c: `CONNECT` and the asterisk form never upgrade (405: only GET upgrades). The axum
// app routes `/ws` only, so it answers these itself; the other two pass them to the proxy.
#[tokio::test]
async fn rule_6c_connect_and_asterisk_form_never_upgrade() {
    for first in ["CONNECT app.test:443 HTTP/1.1", "OPTIONS * HTTP/1.1"] {
        for front in [Front::Serve, Front::Hyper] {
            let request = raw_request(&[
                first,
                "Host: app.test:443",
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Version: 13",
                &key_line(),
            ]);
            let status = refused(front, Proxy::builder(), &request).await;
            assert_eq!(status, Some(405), "{front:?}: {first}");
        }
    }
}

// Rule 27: tunnels started by `Proxy::upgrade` are tracked; `Proxy::drain` refuses new
// upgrades (503), lets open tunnels end during the grace period, and cuts the rest.
#[tokio::test]
async fn upgrade_tunnels_drain() {
    for front in [Front::Axum, Front::Hyper] {
        let echo = spawn_echo().await;
        let proxy = Proxy::builder()
            .backend(echo.to_string())
            .grace_period(Duration::from_millis(1500))
            .build()
            .unwrap();
        let (addr, _running) = start(front, proxy.clone()).await;
        let mut clients = Vec::new();
        for _ in 0..2 {
            let mut client = connect(addr).await;
            assert!(send(&mut client, &ws_request(&[])).await);
            assert_eq!(read_head(&mut client, STEP).await.status(), Some(101));
            clients.push(client);
        }
        assert!(eventually(STEP, || proxy.active_tunnels() == 2).await);
        let drain = tokio::spawn({
            let proxy = proxy.clone();
            async move { proxy.drain().await }
        });
        // Once the drain task has run, new upgrades are refused.
        tokio::task::yield_now().await;
        let late = raw_exchange(addr, &ws_request(&[]), STEP).await;
        assert_eq!(late.status(), Some(503), "{front:?}: {}", late.head());
        // One tunnel ends by itself during the grace period (the client closes, the echo
        // backend follows); the other is cut when it is over.
        let mut quick = clients.remove(0);
        quick.shutdown().await.unwrap();
        let _ = read_to_close(&mut quick, STEP).await;
        let mut slow = clients.remove(0);
        let closed = read_to_close(&mut slow, STEP).await;
        assert!(
            closed.closed,
            "{front:?}: the cut tunnel's client saw no close"
        );
        let summary = within("the drain", drain).await.unwrap();
        assert_eq!((summary.drained, summary.cut), (1, 1), "{front:?}");
        assert_eq!(proxy.active_tunnels(), 0, "{front:?}");
    }
}

// Rule 18 with a refusal whose framing cannot be relayed: the client gets a 502, and the
// error says a 502 was sent (not the backend's status).
#[tokio::test]
async fn a_refusal_with_bad_framing_is_a_502_and_the_error_says_so() {
    let backend = Backend::start(Script::canned(
        "HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: gzip\r\n\r\nxyz",
        Then::Close,
    ))
    .await;
    let proxy = builder_for(&backend).build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = connect(addr).await;
    let (stream, peer) = listener.accept().await.unwrap();
    let handled = tokio::spawn(proxy.handle(stream, peer));
    assert!(send(&mut client, &ws_request(&[])).await);
    let got = read_to_close(&mut client, STEP).await;
    assert_eq!(got.status(), Some(502), "{}", got.head());
    let error = within("handle", handled).await.unwrap().unwrap_err();
    assert!(matches!(error, ProxyError::Backend { .. }), "{error:?}");
    assert_eq!(error.status_sent(), Some(http::StatusCode::BAD_GATEWAY));
    // The same through `upgrade`.
    for front in [Front::Axum, Front::Hyper] {
        let (addr, _running) = start(front, builder_for(&backend).build().unwrap()).await;
        let got = raw_exchange(addr, &ws_request(&[]), STEP).await;
        assert_eq!(got.status(), Some(502), "{front:?}: {}", got.head());
    }
}

/// A backend that refuses with a body of `len` bytes delimited by its close, sent a moment
/// after its head (so that the proxy has read the head alone, and the body only follows).
async fn refusing_with_body(len: usize) -> SocketAddr {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while head_end(&head).is_none() {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n\r\n";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = stream.write_all(&vec![b'x'; len]).await;
            });
        }
    });
    addr
}

// Rule 18 behind hyper, where the refusal is buffered (up to 1 MiB): a body delimited by the
// backend's close is relayed whole, and one over the cap is a 502, never cut silently.
#[tokio::test]
async fn a_refusal_body_delimited_by_close_is_relayed_whole_or_refused() {
    const MIB: usize = 1024 * 1024;
    for front in [Front::Axum, Front::Hyper] {
        for (len, status) in [(1000, 403), (MIB, 403), (MIB + 1, 502)] {
            let backend = refusing_with_body(len).await;
            let proxy = Proxy::builder()
                .backend(backend.to_string())
                .build()
                .unwrap();
            let (addr, _running) = start(front, proxy).await;
            let got = raw_exchange(addr, &ws_request(&[]), STEP).await;
            assert_eq!(
                got.status(),
                Some(status),
                "{front:?} {len}: {}",
                got.head()
            );
            if status == 403 {
                assert_eq!(got.body().len(), len, "{front:?}");
            }
        }
    }
}

/// `ws://` and `http://` are plain backends; `wss://` and `https://` need the `rustls`
/// feature (`tests/tls.rs` runs them): without it they are a build error that says so.
#[tokio::test]
async fn ws_and_http_backends_are_plain_and_tls_ones_need_the_rustls_feature() {
    let echo = spawn_echo().await;
    for scheme in ["ws", "http"] {
        let proxy = Proxy::builder()
            .backend(format!("{scheme}://{echo}"))
            .build()
            .unwrap();
        let running = Running::serve(proxy).await;
        let got = raw_exchange(running.addr, &ws_request(&[]), STEP).await;
        assert_eq!(got.status(), Some(101), "{scheme}://: {}", got.head());
    }
    for tls in ["wss://127.0.0.1:443", "https://127.0.0.1:443"] {
        let built = Proxy::builder().backend(tls).build();
        #[cfg(feature = "rustls")]
        assert!(built.is_ok(), "{tls}: {built:?}");
        #[cfg(not(feature = "rustls"))]
        match built {
            Err(BuildError::Backend { addr, reason }) => {
                assert_eq!(addr, tls);
                assert!(reason.contains("`rustls` feature"), "{reason}");
            }
            other => panic!("{tls}: {other:?}"),
        }
    }
    match Proxy::builder().backend("127.0.0.1").build() {
        Err(BuildError::Backend { addr, reason }) => {
            assert_eq!(addr, "127.0.0.1");
            assert!(!reason.is_empty());
        }
        other => panic!("127.0.0.1: {other:?}"),
    }
}

// The report of every front end names the client and the backend it used.
#[tokio::test]
async fn reports_carry_the_client_and_backend_addresses_on_every_front_end() {
    for front in FRONTS {
        let echo = spawn_echo().await;
        type Seen = (Option<SocketAddr>, Option<String>);
        let reports: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let seen = reports.clone();
        let configured = format!("ws://{echo}");
        let proxy = Proxy::builder()
            .backend(configured.clone())
            .on_report(move |report: &Report| {
                let addresses = (report.client_addr, report.backend.clone());
                seen.lock().unwrap().push(addresses);
            })
            .build()
            .unwrap();
        let (addr, _running) = start(front, proxy).await;
        let mut client = connect(addr).await;
        let local = client.local_addr().unwrap();
        assert!(send(&mut client, &ws_request(&[])).await);
        assert_eq!(read_head(&mut client, STEP).await.status(), Some(101));
        client.shutdown().await.unwrap();
        let _ = read_to_close(&mut client, STEP).await;
        assert!(eventually(STEP, || !reports.lock().unwrap().is_empty()).await);
        let (client_addr, backend) = reports.lock().unwrap().remove(0);
        assert_eq!(client_addr, Some(local), "{front:?}");
        assert_eq!(backend, Some(configured), "{front:?}");
    }
}

// ---- HTTP/2: the same rules on an extended CONNECT's stream ----

#[derive(Debug, Clone, Copy)]
enum H2Front {
    Axum,
    Hyper,
}

const H2_FRONTS: [H2Front; 2] = [H2Front::Axum, H2Front::Hyper];

async fn start_h2(front: H2Front, proxy: Proxy) -> SocketAddr {
    match front {
        H2Front::Axum => axum_front(proxy).await,
        H2Front::Hyper => hyper_auto_front(proxy).await,
    }
}

/// Opens a stream with `extra` header fields through `front` and returns its status; checks
/// the backend was never contacted.
async fn refused_h2(front: H2Front, builder: ProxyBuilder, extra: &[(&str, &str)]) -> u16 {
    let backend_hit = Backend::start(Script::switching(Then::Echo)).await;
    let builder = builder.backend(backend_hit.addr.to_string());
    let addr = start_h2(front, builder.build().unwrap()).await;
    let mut conn = h2_connect(addr).await;
    let stream = h2_open(&mut conn, ws_connect(addr, "/ws", extra)).await;
    assert_eq!(
        backend_hit.accepted(),
        0,
        "{front:?}: a refused handshake reached the backend"
    );
    stream.status()
}

// Rule 7 over HTTP/2: the head limits apply to the fields of the stream's HEADERS (hyper's
// own HTTP/2 limit is 16 KiB; the proxy's default is 8 KiB).
#[tokio::test]
async fn rule_7_head_limits_apply_to_http2_streams() {
    let cookie = "a".repeat(10 * 1024);
    let fields: Vec<(String, String)> = (0..60)
        .map(|i| (format!("x-field-{i}"), i.to_string()))
        .collect();
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    for front in H2_FRONTS {
        let status = refused_h2(front, Proxy::builder(), &[("cookie", &cookie)]).await;
        assert_eq!(status, 431, "{front:?}: size");
        let builder = Proxy::builder().client_head(HeadLimits::new().max_headers(50));
        let status = refused_h2(front, builder, &fields).await;
        assert_eq!(status, 431, "{front:?}: count");
    }
}

// Rule 6b over HTTP/2: malformed offers are 400 and never forwarded.
#[tokio::test]
async fn rule_6b_malformed_offers_are_400_over_http2() {
    for (name, value) in [
        ("sec-websocket-protocol", "chat, chat"),
        ("sec-websocket-protocol", "chat/1"),
        ("sec-websocket-extensions", "permessage-deflate; =1"),
        ("sec-websocket-extensions", "x; a=\"b c\""),
    ] {
        for front in H2_FRONTS {
            let status = refused_h2(front, Proxy::builder(), &[(name, value)]).await;
            assert_eq!(status, 400, "{front:?}: {name}: {value}");
        }
    }
}

// Rule 8 over HTTP/2: a refused Origin is 403 and never reaches the backend.
#[tokio::test]
async fn rule_8_origin_policy_over_http2() {
    for front in H2_FRONTS {
        let builder = Proxy::builder()
            .rewrite(wsrelay::handshake::RewriteConfig::new().allow_origin("https://app.example"));
        let status = refused_h2(front, builder, &[("origin", "https://evil.example")]).await;
        assert_eq!(status, 403, "{front:?}");
    }
}

// Rules 12 and 32 over HTTP/2: the backend gets an HTTP/1.1 upgrade with the proxy's key, and
// the report names the client and the backend, as for HTTP/1.1.
#[tokio::test]
async fn rule_32_the_backend_request_and_the_report_over_http2() {
    for front in H2_FRONTS {
        let backend = Backend::start(Script::switching(Then::Echo)).await;
        type Seen = (Option<SocketAddr>, Option<String>);
        let reports: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let seen = reports.clone();
        let proxy = builder_for(&backend)
            .on_report(move |report: &Report| {
                let addresses = (report.client_addr, report.backend.clone());
                seen.lock().unwrap().push(addresses);
            })
            .build()
            .unwrap();
        let addr = start_h2(front, proxy).await;
        let mut conn = h2_connect(addr).await;
        let mut stream = h2_open(&mut conn, ws_connect(addr, "/ws?room=1", &[])).await;
        assert_eq!(stream.status(), 200, "{front:?}");
        let conn0 = backend.conn(0);
        assert_eq!(conn0.request_line(), "GET /ws?room=1 HTTP/1.1", "{front:?}");
        assert_eq!(conn0.header("host"), [addr.to_string()], "{front:?}");
        assert_eq!(conn0.header("upgrade"), ["websocket"]);
        assert_eq!(conn0.header("connection"), ["Upgrade"]);
        assert_eq!(conn0.header("x-forwarded-proto"), ["http"]);
        let key = conn0.header("sec-websocket-key");
        assert_eq!(key.len(), 1, "{front:?}");
        assert!(wsrelay::handshake::is_valid_key(key[0].as_bytes()));
        assert!(stream.send_all(b"x", true).await);
        let _ = stream.read_to_end(STEP).await;
        assert!(eventually(STEP, || !reports.lock().unwrap().is_empty()).await);
        let (client_addr, backend_name) = reports.lock().unwrap().remove(0);
        assert_eq!(client_addr.map(|a| a.ip()), Some(addr.ip()), "{front:?}");
        assert_eq!(backend_name, Some(backend.addr.to_string()), "{front:?}");
    }
}
