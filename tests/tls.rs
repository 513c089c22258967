//! TLS end to end (feature `rustls`): termination in `Proxy::serve` and `Proxy::handle`,
//! `wss://` and Unix-socket backends, certificate reload and SNI, and the errors of each
//! (rules 35–37, see `wsrelay::rules`). Certificates come from a throwaway CA made by each
//! test; deadlines are checked over `tokio::io::duplex` with paused time.
#![cfg(feature = "rustls")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use wsrelay::tls::TlsAcceptor;
use wsrelay::wire::HeadLimits;
use wsrelay::{
    BuildError, CloseReason, HandshakeError, HeadError, Proxy, ProxyBuilder, ProxyError, Report,
    TlsError, TunnelPath,
};

use support::*;

/// What a test keeps of a tunnel's report.
#[derive(Debug)]
struct Seen {
    path: TunnelPath,
    reason: CloseReason,
    error: Option<String>,
    backend: Option<String>,
}

/// `builder` with a hook that sends every report to the returned receiver.
fn reporting(builder: ProxyBuilder) -> (ProxyBuilder, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let builder = builder.on_report(move |report: &Report| {
        let _ = tx.send(Seen {
            path: report.path,
            reason: report.reason,
            error: report.error.as_ref().map(|e| e.to_string()),
            backend: report.backend.clone(),
        });
    });
    (builder, rx)
}

async fn next_report(reports: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    within("a tunnel report", reports.recv())
        .await
        .expect("the report hook is alive")
}

/// A WebSocket client handshake over `io` (TLS or not) for `url`.
async fn ws_over<S>(io: S, url: &str) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = url.into_client_request().expect("a request");
    let (client, response) = within(
        "websocket handshake",
        tokio_tungstenite::client_async(request, io),
    )
    .await
    .unwrap_or_else(|e| panic!("handshake with {url}: {e}"));
    assert_eq!(response.status(), 101);
    client
}

/// Sends a text message and expects it back.
async fn echo<S>(client: &mut WebSocketStream<S>, text: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within("send", client.send(Message::text(text)))
        .await
        .expect("send");
    let back = within("echo", client.next())
        .await
        .expect("open")
        .expect("a message");
    assert_eq!(back, Message::text(text));
}

/// Closes `client` (a close frame, echoed by the backend), then drops it: the tunnel ends.
async fn close<S>(mut client: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within("close", client.close(None)).await.expect("close");
    // Until the echoed close frame and the end of the stream.
    let _ = within("the end of the stream", async {
        while let Some(Ok(_)) = client.next().await {}
    })
    .await;
}

/// A proxy certificate for `localhost` and `127.0.0.1`, from a new CA.
struct Site {
    dir: TempDir,
    ca: TestCa,
    issued: Issued,
}

impl Site {
    fn new() -> Site {
        let dir = TempDir::new("tls");
        let ca = TestCa::new("wsrelay test client-side CA");
        let issued = ca.issue(&dir, "proxy", &["localhost", "127.0.0.1"]);
        Site { dir, ca, issued }
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::new(&self.issued.cert, &self.issued.key).expect("a usable certificate")
    }

    fn client(&self) -> Arc<rustls::ClientConfig> {
        self.ca.client_config(&["http/1.1"])
    }
}

/// The echo backend as a `wss://` backend: a TLS front with a certificate for `localhost`
/// from its own CA (written to `backend-ca.pem` in the site's directory).
async fn wss_echo(site: &Site) -> (TlsFront, std::path::PathBuf) {
    let ca = TestCa::new("wsrelay test backend CA");
    let issued = ca.issue(&site.dir, "backend", &["localhost"]);
    let front = TlsFront::start(&issued, spawn_echo().await).await;
    (front, ca.write(&site.dir, "backend-ca.pem"))
}

// ---------------------------------------------------------------------------------------
// Termination (rule 35).

/// wss → plain backend: the tunnel works both ways, the backend sees
/// `X-Forwarded-Proto: https` and nothing of TLS, and the tunnel runs buffered.
#[tokio::test]
async fn rule_35_a_wss_client_reaches_a_plain_backend_with_x_forwarded_proto_https() {
    let site = Site::new();
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    let (builder, mut reports) = reporting(builder_for(&backend).tls(site.acceptor()));
    let proxy = Running::start(builder).await;

    let mut client = tls_connect(proxy.addr, "localhost", site.client()).await;
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert!(send(&mut client, &ws_request(&[])).await);
    let answer = read_head(&mut client, STEP).await;
    assert_eq!(answer.status(), Some(101), "{:?}", answer.head());
    let payload = b"tunnelled through TLS";
    assert!(send(&mut client, payload).await);
    let back = read_exact_within(&mut client, payload.len(), STEP).await;
    assert_eq!(back, payload);

    let conn = backend.conn(0);
    assert_eq!(conn.header("x-forwarded-proto"), ["https"]);
    assert_eq!(conn.request_line(), "GET /ws HTTP/1.1");
    client.shutdown().await.expect("close_notify and FIN");
    drop(client);
    let seen = next_report(&mut reports).await;
    assert_eq!(seen.path, TunnelPath::Buffered);
}

/// The same through `tokio-tungstenite` and the echo backend, to a real WebSocket peer.
#[tokio::test]
async fn rule_35_a_wss_client_talks_to_the_echo_backend() {
    let site = Site::new();
    let builder = Proxy::builder()
        .backend(spawn_echo().await.to_string())
        .tls(site.acceptor());
    let proxy = Running::start(builder).await;
    let tls = tls_connect(proxy.addr, "localhost", site.client()).await;
    let mut client = ws_over(tls, &format!("wss://localhost:{}/ws", proxy.addr.port())).await;
    for text in ["one", "two", &"x".repeat(100_000)] {
        echo(&mut client, text).await;
    }
    close(client).await;
}

/// Rule 35: plain HTTP on the TLS port is answered 400 at once (as nginx's 497), never
/// left waiting for a handshake, and `Proxy::handle` says so.
#[tokio::test]
async fn rule_35_plain_http_on_the_tls_port_is_answered_400_at_once() {
    let site = Site::new();
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    // A long head deadline: the answer must not wait for it.
    let proxy = builder_for(&backend)
        .tls(site.acceptor())
        .client_head(HeadLimits::new().timeout(Some(Duration::from_secs(30))))
        .build()
        .expect("a proxy");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handled = tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        proxy.handle(stream, peer).await
    });
    let mut client = connect(addr).await;
    assert!(send(&mut client, &ws_request(&[])).await);
    let got = read_to_close(&mut client, Duration::from_secs(5)).await;
    assert_eq!(got.status(), Some(400), "{:?}", got.head());
    assert!(got.closed, "closed after the answer");
    assert!(
        String::from_utf8_lossy(got.body()).contains("plain HTTP"),
        "{:?}",
        got.body()
    );
    drop(client);
    let result = within("handle", handled).await.unwrap();
    match result {
        Err(ProxyError::ClientTls {
            error: TlsError::NotTls,
            sent,
        }) => assert_eq!(sent.map(|s| s.as_u16()), Some(400)),
        other => panic!("{other:?}"),
    }
    assert_eq!(backend.accepted(), 0, "the backend is never contacted");
}

/// Rule 35 with rule 7: a client that opens TCP and sends nothing is closed at the head
/// deadline (here a short one, on a real socket, through `serve`).
#[tokio::test]
async fn rule_35_a_silent_client_on_the_tls_port_is_closed_at_the_deadline() {
    let site = Site::new();
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    let limit = Duration::from_millis(300);
    let builder = builder_for(&backend)
        .tls(site.acceptor())
        .client_head(HeadLimits::new().timeout(Some(limit)));
    let proxy = Running::start(builder).await;
    let started = std::time::Instant::now();
    let mut client = connect(proxy.addr).await;
    let got = read_to_close(&mut client, STEP).await;
    let elapsed = started.elapsed();
    assert!(got.closed && got.bytes.is_empty(), "{got:?}");
    assert!(
        elapsed >= limit && elapsed < limit + Duration::from_secs(5),
        "closed after {elapsed:?}"
    );
    assert_eq!(proxy.proxy.active_tunnels(), 0);
}

/// The deadline, exactly, with paused time over `duplex` (through `Proxy::handle`): a
/// silent client, a client stuck in the middle of its ClientHello, and a client that
/// completes the handshake but then trickles its head all end at the same deadline, counted
/// from the connection's start (the handshake and the head share it).
#[tokio::test(start_paused = true)]
async fn rule_35_the_handshake_and_the_head_share_the_client_head_deadline() {
    let site = Site::new();
    let limit = Duration::from_secs(10);
    let proxy = Proxy::builder()
        .backend("127.0.0.1:9")
        .tls(site.acceptor())
        .client_head(HeadLimits::new().timeout(Some(limit)))
        .build()
        .expect("a proxy");
    let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    // Every wait bounded (in paused time, a bound is virtual and costs nothing).
    let bound = limit * 3;

    // Silent.
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let started = tokio::time::Instant::now();
    let result = within_for(bound, "handle", proxy.handle(server, peer)).await;
    assert_eq!(started.elapsed(), limit);
    assert!(
        matches!(&result, Err(ProxyError::Client { error, sent: None }) if error.is_timeout()),
        "{result:?}"
    );
    let mut rest = Vec::new();
    let read = within_for(bound, "EOF", client.read_to_end(&mut rest)).await;
    assert_eq!(read.unwrap(), 0);

    // Half a TLS record header.
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    client.write_all(&[0x16, 0x03]).await.unwrap();
    let started = tokio::time::Instant::now();
    let result = within_for(bound, "handle", proxy.handle(server, peer)).await;
    assert_eq!(started.elapsed(), limit);
    assert!(
        matches!(&result, Err(ProxyError::Client { error, .. }) if error.is_timeout()),
        "{result:?}"
    );

    // The handshake done at once, then a head that trickles past the deadline: 408, at the
    // deadline counted from the start.
    let (client, server) = tokio::io::duplex(64 * 1024);
    let started = tokio::time::Instant::now();
    let handled = tokio::spawn(proxy.handle(server, peer));
    let connector = tokio_rustls::TlsConnector::from(site.client());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = within_for(bound, "handshake", connector.connect(name, client))
        .await
        .expect("handshake");
    tokio::time::sleep(Duration::from_secs(6)).await;
    tls.write_all(b"GET /ws HTTP/1.1\r\n").await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    let _ = within_for(bound, "the answer", tls.read_to_end(&mut answer)).await;
    assert_eq!(
        started.elapsed(),
        limit,
        "not {limit:?} after the handshake"
    );
    assert!(answer.starts_with(b"HTTP/1.1 408 "), "{answer:?}");
    drop(tls);
    let result = within_for(bound, "handle", handled).await.unwrap();
    match result {
        Err(ProxyError::Client {
            error: HandshakeError::ClientHead(HeadError::Timeout(_)),
            sent,
        }) => assert_eq!(sent.map(|s| s.as_u16()), Some(408)),
        other => panic!("{other:?}"),
    }
}

/// Rule 35: ALPN offers `http/1.1`; a client that offers only `h2` is refused in the
/// handshake (RFC 7301 §3.2), one that offers both gets `http/1.1`.
#[tokio::test]
async fn rule_35_alpn_offers_http_1_1_only_by_default() {
    let site = Site::new();
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    let proxy = Running::start(builder_for(&backend).tls(site.acceptor())).await;
    let both = site.ca.client_config(&["h2", "http/1.1"]);
    let client = tls_connect(proxy.addr, "localhost", both).await;
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let h2_only = site.ca.client_config(&["h2"]);
    let refused = try_tls_connect(proxy.addr, "localhost", h2_only).await;
    assert!(refused.is_err(), "an h2-only client was accepted");
}

/// A TLS error on one client ends that tunnel alone, with the reason in its report; the
/// other tunnel keeps working.
#[tokio::test]
async fn rule_35_a_broken_tls_stream_ends_its_tunnel_alone() {
    let site = Site::new();
    let (builder, mut reports) = reporting(
        Proxy::builder()
            .backend(spawn_echo().await.to_string())
            .tls(site.acceptor()),
    );
    let proxy = Running::start(builder).await;
    let url = format!("wss://localhost:{}/ws", proxy.addr.port());
    let mut good = ws_over(
        tls_connect(proxy.addr, "localhost", site.client()).await,
        &url,
    )
    .await;
    let mut bad = ws_over(
        tls_connect(proxy.addr, "localhost", site.client()).await,
        &url,
    )
    .await;
    echo(&mut good, "before").await;
    echo(&mut bad, "before").await;
    // An application-data record that cannot be decrypted, written under the TLS layer.
    let tcp = bad.get_mut().get_mut().0;
    let forged = b"forged record, not encrypted at all";
    let mut record = vec![0x17, 0x03, 0x03, 0x00, forged.len() as u8];
    record.extend_from_slice(forged);
    tcp.write_all(&record).await.unwrap();
    let seen = next_report(&mut reports).await;
    assert_eq!(
        seen.reason,
        CloseReason::ClientError(std::io::ErrorKind::InvalidData)
    );
    assert!(seen.error.is_some(), "{seen:?}");
    echo(&mut good, "after").await;
    assert_eq!(proxy.proxy.active_tunnels(), 1);
}

// ---------------------------------------------------------------------------------------
// TLS backends (rule 36).

/// ws → wss backend: SNI is the backend's host name, ALPN `http/1.1` only although the
/// backend also offers `h2`, the certificate verified against `backend_ca`.
#[tokio::test]
async fn rule_36_a_ws_client_reaches_a_wss_backend() {
    let site = Site::new();
    let (front, ca) = wss_echo(&site).await;
    let backend = format!("wss://localhost:{}", front.addr.port());
    let (builder, mut reports) = reporting(Proxy::builder().backend(&backend).backend_ca(ca));
    let proxy = Running::start(builder).await;
    let tcp = connect(proxy.addr).await;
    let mut client = ws_over(tcp, &format!("ws://{}/ws", proxy.addr)).await;
    echo(&mut client, "through wss").await;
    let handshakes = front.handshakes();
    assert_eq!(handshakes.len(), 1, "{handshakes:?}");
    assert_eq!(handshakes[0].server_name.as_deref(), Some("localhost"));
    assert_eq!(handshakes[0].alpn.as_deref(), Some(&b"http/1.1"[..]));
    close(client).await;
    let seen = next_report(&mut reports).await;
    assert_eq!(seen.path, TunnelPath::Buffered);
    assert_eq!(seen.backend.as_deref(), Some(backend.as_str()));
}

/// The same behind axum (`Proxy::upgrade`): the hyper front end reaches a wss backend too.
#[cfg(feature = "hyper")]
#[tokio::test]
async fn rule_36_an_axum_front_reaches_a_wss_backend() {
    let site = Site::new();
    let (front, ca) = wss_echo(&site).await;
    let proxy = Proxy::builder()
        .backend(format!("wss://localhost:{}", front.addr.port()))
        .backend_ca(ca)
        .build()
        .expect("a proxy");
    let app = axum_front(proxy).await;
    let mut client = ws_over(connect(app).await, &format!("ws://{app}/ws")).await;
    echo(&mut client, "axum to wss").await;
    assert_eq!(front.handshakes().len(), 1);
    close(client).await;
}

/// wss → wss: TLS on both sides.
#[tokio::test]
async fn rule_36_a_wss_client_reaches_a_wss_backend() {
    let site = Site::new();
    let (front, ca) = wss_echo(&site).await;
    let builder = Proxy::builder()
        .backend(format!("https://localhost:{}/", front.addr.port()))
        .backend_ca(ca)
        .tls(site.acceptor());
    let proxy = Running::start(builder).await;
    let tls = tls_connect(proxy.addr, "localhost", site.client()).await;
    let mut client = ws_over(tls, &format!("wss://localhost:{}/ws", proxy.addr.port())).await;
    echo(&mut client, "TLS both ways").await;
    echo(&mut client, &"y".repeat(300_000)).await;
    assert_eq!(front.handshakes().len(), 1);
}

/// Rule 36: a backend certificate from a CA the proxy does not trust is a 502, with a typed
/// error that says so; no tunnel, no plaintext retry, nothing reaches the backend's app.
#[tokio::test]
async fn rule_36_an_untrusted_backend_certificate_is_502_and_never_a_tunnel() {
    let site = Site::new();
    let (front, _right_ca) = wss_echo(&site).await;
    // Trust another CA (the platform's roots do not know the test CA either).
    let other = TestCa::new("some other CA").write(&site.dir, "other-ca.pem");
    let proxy = Proxy::builder()
        .backend(format!("wss://localhost:{}", front.addr.port()))
        .backend_ca(other)
        .build()
        .expect("a proxy");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handled = tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        proxy.handle(stream, peer).await
    });
    let mut client = connect(addr).await;
    assert!(send(&mut client, &ws_request(&[])).await);
    let got = read_head(&mut client, STEP).await;
    assert_eq!(got.status(), Some(502), "{:?}", got.head());
    drop(client);
    let result = within("handle", handled).await.unwrap();
    match &result {
        Err(ProxyError::BackendTls { error, sent }) => {
            assert!(error.is_certificate_error(), "{error:?}");
            assert_eq!(sent.map(|s| s.as_u16()), Some(502));
        }
        other => panic!("{other:?}"),
    }
    assert!(front.handshakes().is_empty(), "a handshake completed");
    assert!(
        eventually(STEP, || front.failed() == 1).await,
        "the backend saw the handshake fail"
    );
}

/// A certificate for another name is refused too (SNI and verification use the host).
#[tokio::test]
async fn rule_36_a_backend_certificate_for_another_name_is_502() {
    let site = Site::new();
    let ca = TestCa::new("backend CA");
    let issued = ca.issue(&site.dir, "elsewhere", &["elsewhere.test"]);
    let front = TlsFront::start(&issued, spawn_echo().await).await;
    let builder = Proxy::builder()
        .backend(format!("wss://localhost:{}", front.addr.port()))
        .backend_ca(ca.write(&site.dir, "ca.pem"));
    let proxy = Running::start(builder).await;
    let got = raw_exchange(proxy.addr, &ws_request(&[]), STEP).await;
    assert_eq!(got.status(), Some(502), "{:?}", got.head());
    assert!(front.handshakes().is_empty());
}

/// A Unix-socket backend, and a pool that mixes plain, TLS and Unix backends (round-robin:
/// three connections, one to each).
#[cfg(unix)]
#[tokio::test]
async fn a_unix_socket_backend_and_a_mixed_pool() {
    let site = Site::new();
    let socket = site.dir.join("echo.sock");
    let _unix = UnixFront::start(&socket, spawn_echo().await).await;
    let unix = format!("unix:{}", socket.display());

    // Alone.
    let (builder, mut reports) = reporting(Proxy::builder().backend(&unix));
    let proxy = Running::start(builder).await;
    let mut client = ws_over(connect(proxy.addr).await, &format!("ws://{}/", proxy.addr)).await;
    echo(&mut client, "over a unix socket").await;
    close(client).await;
    let seen = next_report(&mut reports).await;
    assert_eq!(seen.backend.as_deref(), Some(unix.as_str()));
    assert_eq!(seen.path, TunnelPath::Buffered);

    // Mixed.
    let (front, ca) = wss_echo(&site).await;
    let wss = format!("wss://localhost:{}", front.addr.port());
    let plain = spawn_echo().await.to_string();
    let (builder, mut reports) = reporting(
        Proxy::builder()
            .backend(&plain)
            .backend(&wss)
            .backend(&unix)
            .backend_ca(ca),
    );
    let proxy = Running::start(builder).await;
    let mut used = Vec::new();
    for i in 0..3 {
        let mut client = ws_over(connect(proxy.addr).await, &format!("ws://{}/", proxy.addr)).await;
        echo(&mut client, &format!("message {i}")).await;
        close(client).await;
        used.push(next_report(&mut reports).await.backend.expect("a backend"));
    }
    used.sort();
    let mut expected = vec![plain, wss, unix];
    expected.sort();
    assert_eq!(used, expected);
}

// ---------------------------------------------------------------------------------------
// Certificates: SNI, reload (rule 37), bad files.

/// Several certificates: the one valid for the SNI name, else the first; none for a client
/// that sends no name (an IP address).
#[tokio::test]
async fn several_certificates_are_chosen_by_sni() {
    let dir = TempDir::new("sni");
    let ca = TestCa::new("sni CA");
    let a = ca.issue(&dir, "a", &["a.test", "127.0.0.1"]);
    let b = ca.issue(&dir, "b", &["b.test", "*.b.test"]);
    let acceptor = TlsAcceptor::builder()
        .certificate(&a.cert, &a.key)
        .certificate(&b.cert, &b.key)
        .build()
        .expect("two certificates");
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    let proxy = Running::start(builder_for(&backend).tls(acceptor)).await;
    let config = ca.client_config(&["http/1.1"]);
    for (name, expected) in [
        ("a.test", &a),
        ("b.test", &b),
        ("www.b.test", &b),
        ("127.0.0.1", &a),
    ] {
        let client = tls_connect(proxy.addr, name, config.clone()).await;
        assert!(
            served_certificate(&client) == expected.der,
            "{name} got the wrong certificate"
        );
    }
    // An unknown name gets the default (a's), which the client then refuses.
    let other = try_tls_connect(proxy.addr, "c.test", config).await;
    assert!(other.is_err(), "c.test accepted a certificate for a.test");
}

/// Rule 37: a reload while a tunnel lives: the tunnel keeps working, new clients get the new
/// certificate; a reload from a broken file fails, names it, and keeps the current one.
#[tokio::test]
async fn rule_37_a_reload_keeps_live_tunnels_and_serves_the_new_certificate() {
    let site = Site::new();
    let acceptor = site.acceptor();
    let builder = Proxy::builder()
        .backend(spawn_echo().await.to_string())
        .tls(acceptor.clone());
    let proxy = Running::start(builder).await;
    let url = format!("wss://localhost:{}/ws", proxy.addr.port());
    let tls = tls_connect(proxy.addr, "localhost", site.client()).await;
    assert!(served_certificate(&tls) == site.issued.der);
    let mut live = ws_over(tls, &url).await;
    echo(&mut live, "before the reload").await;

    // New files in place (another key, another CA), then the reload.
    let renewed_ca = TestCa::new("renewed CA");
    let renewed = renewed_ca.issue(&site.dir, "renewed", &["localhost"]);
    std::fs::copy(&renewed.cert, &site.issued.cert).unwrap();
    std::fs::copy(&renewed.key, &site.issued.key).unwrap();
    acceptor.reload().expect("the renewed files are usable");

    echo(&mut live, "after the reload").await;
    let new = tls_connect(proxy.addr, "localhost", renewed_ca.client_config(&[])).await;
    assert!(served_certificate(&new) == renewed.der);
    assert!(
        try_tls_connect(proxy.addr, "localhost", site.client())
            .await
            .is_err(),
        "the old certificate is still served"
    );

    // A broken file: an error naming it, and the renewed certificate stays.
    std::fs::write(&site.issued.key, "not a key").unwrap();
    match acceptor.reload() {
        Err(BuildError::TlsFile { path, .. }) => assert_eq!(path, site.issued.key),
        other => panic!("{other:?}"),
    }
    let after = tls_connect(proxy.addr, "localhost", renewed_ca.client_config(&[])).await;
    assert!(served_certificate(&after) == renewed.der);
    echo(&mut live, "still there").await;
    close(live).await;
}

/// A missing or malformed certificate, key or CA file is a `BuildError` naming the file.
#[test]
fn bad_certificate_key_and_ca_files_are_build_errors_naming_the_file() {
    let site = Site::new();
    let other = site.ca.issue(&site.dir, "other", &["localhost"]);
    let missing = site.dir.join("missing.pem");
    let garbage = site
        .dir
        .write("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64!\n");
    let empty = site.dir.write("empty.pem", "");
    let cert = &site.issued.cert;
    let key = &site.issued.key;
    for (cert, key, named, says) in [
        (&missing, key, &missing, "cannot read"),
        (cert, &missing, &missing, "cannot read"),
        (&garbage, key, &garbage, "PEM"),
        (&empty, key, &empty, "no certificate"),
        // The two files swapped.
        (key, cert, key, "no certificate"),
        (cert, cert, cert, "no private key"),
        // A key from another certificate.
        (cert, &other.key, &other.key, "does not match"),
    ] {
        match TlsAcceptor::new(cert, key) {
            Err(BuildError::TlsFile { path, reason }) => {
                assert_eq!(&path, named, "{cert:?} {key:?}: {reason}");
                assert!(reason.contains(says), "{cert:?} {key:?}: {reason}");
                let shown = BuildError::TlsFile { path, reason }.to_string();
                assert!(shown.contains(&*named.to_string_lossy()), "{shown}");
            }
            other => panic!("{cert:?} {key:?}: {other:?}"),
        }
    }
    for ca in [&missing, &garbage, &empty] {
        let result = Proxy::builder()
            .backend("wss://localhost:9443")
            .backend_ca(ca)
            .build();
        match result {
            Err(BuildError::TlsFile { path, .. }) => assert_eq!(&path, ca),
            other => panic!("{ca:?}: {other:?}"),
        }
    }
    assert!(matches!(
        TlsAcceptor::builder().build(),
        Err(BuildError::Tls { .. })
    ));
    assert!(matches!(
        TlsAcceptor::builder()
            .certificate(cert, key)
            .alpn([""])
            .build(),
        Err(BuildError::Tls { .. })
    ));
}

/// The self-signed certificate of README's quick start, made by the `openssl` command
/// exactly as README says, and keys in RSA (PKCS#1), EC (SEC1) and PKCS#8 form: each one is
/// accepted, and a client that trusts the certificate completes a handshake with it.
#[tokio::test]
async fn readme_quick_start_certificate_and_rsa_ec_pkcs8_keys_made_by_openssl() {
    let dir = TempDir::new("openssl");
    let path = |name: &str| dir.join(name).to_str().expect("a UTF-8 path").to_owned();

    // README: "A wss quick start".
    let (cert, key) = (path("cert.pem"), path("key.pem"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-noenc",
        "-keyout",
        &key,
        "-out",
        &cert,
        "-days",
        "365",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
    ])
    .await;
    handshake_with("README's", &cert, &key, "BEGIN PRIVATE KEY").await;

    let forms: [(&str, &[&str], &str); 3] = [
        (
            "pkcs8",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
            "BEGIN PRIVATE KEY",
        ),
        (
            "rsa",
            &["genrsa", "-traditional", "2048"],
            "BEGIN RSA PRIVATE KEY",
        ),
        (
            "ec",
            &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
            "BEGIN EC PRIVATE KEY",
        ),
    ];
    for (name, generate, marker) in forms {
        let key = path(&format!("{name}.key"));
        let cert = path(&format!("{name}.pem"));
        // `-out` right after the command: `genrsa` wants its bit count last.
        let mut args = vec![generate[0], "-out", &key];
        args.extend_from_slice(&generate[1..]);
        openssl(&args).await;
        openssl(&[
            "req",
            "-x509",
            "-key",
            &key,
            "-out",
            &cert,
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .await;
        handshake_with(name, &cert, &key, marker).await;
    }
}

/// Checks that `key` is in the PEM form `marker` names, builds an acceptor from `cert` and
/// `key`, and completes a handshake with a client that trusts `cert`.
async fn handshake_with(what: &str, cert: &str, key: &str, marker: &str) {
    let pem = std::fs::read_to_string(key).expect("the key file");
    assert!(pem.contains(marker), "{what}: {pem}");
    let acceptor = TlsAcceptor::new(cert, key).unwrap_or_else(|e| panic!("{what}: {e}"));
    let (client, server) = tokio::io::duplex(64 * 1024);
    let accept = tokio::spawn(async move { acceptor.accept(server).await.map(|_| ()) });
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::CertificateDer::from_pem_file(cert).expect("a certificate");
    roots.add(der).expect("a trust anchor");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    // Kept open until the server's side is done too (it sends tickets after the handshake).
    let _client = within("handshake", connector.connect(name, client))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    within("accept", accept)
        .await
        .expect("the task")
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// Runs `openssl` with `args`; it must succeed.
async fn openssl(args: &[&str]) {
    let output = within(
        "openssl",
        tokio::process::Command::new("openssl")
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|e| panic!("openssl is needed (apt-get install openssl): {e}"));
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
