//! PROXY protocol end to end (feature `proxy-protocol`; rules 38 and 39, see
//! `wsrelay::rules`): `Proxy::serve` behind a balancer that sends a v1 or v2 header, what the
//! backend then sees, the connections closed for a missing, bad or late header, a header on a
//! listener not configured for it, and the v2 header sent to backends. Header parsing itself
//! is a rule table in `src/proxy_protocol.rs`.
#![cfg(feature = "proxy-protocol")]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use wsrelay::handshake::{derive_accept_key, RewriteConfig};
use wsrelay::proxy_protocol::{read_header, ProxyHeader};
use wsrelay::wire::HeadLimits;
use wsrelay::Report;

use support::*;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header: PROXY (`command` 0x21) or LOCAL (0x20), TCP over IPv4, with these addresses.
fn v2(command: u8, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(source), SocketAddr::V4(destination)) = (source, destination) else {
        panic!("IPv4 addresses");
    };
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[command, 0x11, 0, 12]);
    header.extend_from_slice(&source.ip().octets());
    header.extend_from_slice(&destination.ip().octets());
    header.extend_from_slice(&source.port().to_be_bytes());
    header.extend_from_slice(&destination.port().to_be_bytes());
    header
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A proxy with `proxy_protocol` on in front of an echoing backend, reports collected.
async fn behind_a_balancer(
    rewrite: RewriteConfig,
) -> (Running, Backend, Arc<Mutex<Vec<Option<SocketAddr>>>>) {
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    let reports = Arc::new(Mutex::new(Vec::new()));
    let seen = reports.clone();
    let builder = builder_for(&backend)
        .rewrite(rewrite)
        .proxy_protocol(true)
        .on_report(move |report: &Report| seen.lock().unwrap().push(report.client_addr));
    (Running::start(builder).await, backend, reports)
}

/// Sends `preamble` then an upgrade request (with `extra` headers); what came back.
async fn upgrade_with(proxy: SocketAddr, preamble: &[u8], extra: &[&str]) -> (TcpStream, Got) {
    let mut stream = connect(proxy).await;
    let bytes = [preamble, &ws_request(extra)].concat();
    assert!(send(&mut stream, &bytes).await);
    let got = read_head(&mut stream, STEP).await;
    (stream, got)
}

// Rule 38: the header's source is the client's address for X-Real-IP, X-Forwarded-For
// (appended to a trusted client's), Forwarded, and the report.
#[tokio::test]
async fn the_header_source_is_the_client_address_everywhere() {
    let rewrite = RewriteConfig::new().trust_forwarded(true).forwarded(true);
    let (proxy, backend, reports) = behind_a_balancer(rewrite).await;
    let cases: [(Vec<u8>, &str); 3] = [
        (
            b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n".to_vec(),
            "203.0.113.7",
        ),
        (
            b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n".to_vec(),
            "2001:db8::7",
        ),
        (
            v2(0x21, addr("198.51.100.9:40000"), addr("192.0.2.1:443")),
            "198.51.100.9",
        ),
    ];
    for (i, (header, ip)) in cases.iter().enumerate() {
        let (mut stream, got) =
            upgrade_with(proxy.addr, header, &["X-Forwarded-For: 10.0.0.1"]).await;
        assert_eq!(got.status(), Some(101), "{ip}: {}", got.head());
        let conn = backend.conn(i);
        assert_eq!(conn.header("x-real-ip"), [*ip]);
        assert_eq!(conn.header("x-forwarded-for"), [format!("10.0.0.1, {ip}")]);
        let forwarded = conn.header("forwarded").join(",");
        assert!(forwarded.contains(&ip.to_string()), "{forwarded}");
        // The header never reaches the backend: its bytes start with the request line.
        assert!(conn.bytes.starts_with(b"GET /ws HTTP/1.1\r\n"));
        let _ = stream.shutdown().await;
    }
    let _ = proxy.stop(STEP).await;
    let reports = reports.lock().unwrap().clone();
    let mut ips: Vec<String> = reports
        .iter()
        .map(|a| a.unwrap().ip().to_string())
        .collect();
    ips.sort();
    assert_eq!(ips, ["198.51.100.9", "2001:db8::7", "203.0.113.7"]);
}

// Rule 38: LOCAL (v2) and UNKNOWN (v1), as health checks send, keep the socket's address.
#[tokio::test]
async fn local_and_unknown_keep_the_socket_address() {
    let (proxy, backend, _) = behind_a_balancer(RewriteConfig::new()).await;
    let headers = [
        v2(0x20, addr("198.51.100.9:40000"), addr("192.0.2.1:443")),
        b"PROXY UNKNOWN\r\n".to_vec(),
        b"PROXY UNKNOWN 203.0.113.7 192.0.2.1 51000 443\r\n".to_vec(),
    ];
    for (i, header) in headers.iter().enumerate() {
        let (_stream, got) = upgrade_with(proxy.addr, header, &[]).await;
        assert_eq!(got.status(), Some(101), "{header:?}: {}", got.head());
        assert_eq!(backend.conn(i).header("x-real-ip"), ["127.0.0.1"]);
    }
}

// Rule 38: the header's source is also the address per-IP limits count: two clients behind
// one balancer are two addresses, the same client twice is one.
#[tokio::test]
async fn per_ip_limits_count_the_header_source_not_the_balancer() {
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    let builder = builder_for(&backend)
        .proxy_protocol(true)
        .max_per_ip(Some(1));
    let proxy = Running::start(builder).await;
    let first = b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n";
    let (_held, got) = upgrade_with(proxy.addr, first, &[]).await;
    assert_eq!(got.status(), Some(101), "{}", got.head());
    let other = b"PROXY TCP4 203.0.113.8 192.0.2.1 51001 443\r\n";
    let (_other, got) = upgrade_with(proxy.addr, other, &[]).await;
    assert_eq!(got.status(), Some(101), "another client: {}", got.head());
    let again = b"PROXY TCP4 203.0.113.7 192.0.2.1 51002 443\r\n";
    let (_again, got) = upgrade_with(proxy.addr, again, &[]).await;
    assert_eq!(
        got.status(),
        Some(429),
        "the same client twice: {}",
        got.head()
    );
}

// Rule 38: no complete, valid header → closed with nothing sent, the backend never contacted.
#[tokio::test]
async fn a_missing_bad_or_cut_header_closes_the_connection() {
    let (proxy, backend, _) = behind_a_balancer(RewriteConfig::new()).await;
    let whole = v2(0x21, addr("198.51.100.9:40000"), addr("192.0.2.1:443"));
    let cases: [(&str, Vec<u8>, bool); 6] = [
        ("no header", ws_request(&[]), false),
        (
            "malformed v1",
            [
                b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n".as_slice(),
                &ws_request(&[]),
            ]
            .concat(),
            false,
        ),
        (
            "malformed v2 (UDP)",
            [&whole[..13], &[0x12], &whole[14..], &ws_request(&[])].concat(),
            false,
        ),
        ("truncated v1", b"PROXY TCP4 1.2.3.4 5.6".to_vec(), true),
        ("truncated v2", whole[..20].to_vec(), true),
        (
            "a TLS ClientHello",
            vec![0x16, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3],
            false,
        ),
    ];
    for (what, bytes, then_close) in cases {
        let mut stream = connect(proxy.addr).await;
        assert!(send(&mut stream, &bytes).await, "{what}");
        if then_close {
            let _ = stream.shutdown().await;
        }
        let got = read_to_close(&mut stream, STEP).await;
        assert!(got.closed, "{what}: not closed");
        assert!(got.bytes.is_empty(), "{what}: answered {:?}", got.head());
    }
    assert_eq!(backend.accepted(), 0, "the backend was contacted");
}

// Rule 38: a header that does not complete within the client-head deadline → closed.
#[tokio::test]
async fn a_header_not_complete_in_time_closes_the_connection() {
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    let limits = HeadLimits::new().timeout(Some(Duration::from_millis(100)));
    let builder = builder_for(&backend)
        .proxy_protocol(true)
        .client_head(limits);
    let proxy = Running::start(builder).await;
    for partial in [&b"PROXY TCP4 1.2.3.4"[..], &b""[..], &V2_SIGNATURE[..]] {
        let mut stream = connect(proxy.addr).await;
        assert!(send(&mut stream, partial).await);
        let got = read_to_close(&mut stream, STEP).await;
        assert!(got.closed && got.bytes.is_empty(), "{partial:?}: {got:?}");
    }
    assert_eq!(backend.accepted(), 0);
}

// Rule 38: without `proxy_protocol` a header is not trusted: it is a bad request (400), and
// the address it claims is used nowhere.
#[tokio::test]
async fn a_header_on_a_listener_not_configured_for_it_is_a_bad_request() {
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    let proxy = Running::start(builder_for(&backend)).await;
    let headers = [
        b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n".to_vec(),
        v2(0x21, addr("203.0.113.7:51000"), addr("192.0.2.1:443")),
    ];
    for header in headers {
        let (_stream, got) = upgrade_with(proxy.addr, &header, &[]).await;
        assert_eq!(got.status(), Some(400), "{header:?}: {}", got.head());
    }
    assert_eq!(backend.accepted(), 0);
}

type Headers = Arc<Mutex<Vec<(ProxyHeader, Vec<String>)>>>;

/// A backend that reads a PROXY header, then (over TLS with `tls`) the upgrade request, and
/// switches; the headers it read and each request's `X-Real-IP`.
async fn header_reading_backend(tls: Option<wsrelay::tls::TlsAcceptor>) -> (SocketAddr, Headers) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Headers::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (record, tls) = (record.clone(), tls.clone());
            tokio::spawn(async move {
                let header = within("a PROXY header", read_header(&mut stream))
                    .await
                    .expect("a valid PROXY header");
                match tls {
                    Some(tls) => {
                        let stream = within("TLS", tls.accept(stream)).await.expect("TLS");
                        switch(stream, header, &record).await;
                    }
                    None => switch(stream, header, &record).await,
                }
            });
        }
    });
    (addr, seen)
}

async fn switch<S>(mut stream: S, header: ProxyHeader, record: &Headers)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let got = read_head(&mut stream, STEP).await;
    let key = got.header("sec-websocket-key").pop().expect("a key");
    record
        .lock()
        .unwrap()
        .push((header, got.header("x-real-ip")));
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.flush().await;
    let _ = read_to_close(&mut stream, STEP).await;
}

// Rule 39: a v2 header to backends: source = the client's address and port, destination =
// the address it connected to (the received header's, behind a balancer).
#[tokio::test]
async fn a_v2_header_is_sent_to_backends() {
    let (backend, seen) = header_reading_backend(None).await;
    let direct = wsrelay::Proxy::builder()
        .backend(backend.to_string())
        .send_proxy_protocol(true);
    let direct = Running::start(direct).await;
    let (stream, got) = upgrade_with(direct.addr, b"", &[]).await;
    assert_eq!(got.status(), Some(101), "{}", got.head());
    let client = stream.local_addr().unwrap();
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].0.version(), 2);
        assert_eq!(seen[0].0.source(), Some(client));
        assert_eq!(seen[0].0.destination(), Some(direct.addr));
        assert_eq!(seen[0].1, ["127.0.0.1"]);
    }

    let behind = wsrelay::Proxy::builder()
        .backend(backend.to_string())
        .proxy_protocol(true)
        .send_proxy_protocol(true);
    let behind = Running::start(behind).await;
    let header = b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n";
    let (_stream, got) = upgrade_with(behind.addr, header, &[]).await;
    assert_eq!(got.status(), Some(101), "{}", got.head());
    let seen = seen.lock().unwrap();
    assert_eq!(seen[1].0.source(), Some(addr("203.0.113.7:51000")));
    assert_eq!(seen[1].0.destination(), Some(addr("192.0.2.1:443")));
    assert_eq!(seen[1].1, ["203.0.113.7"]);
}

// Rule 39 for a `wss://` backend: the header goes first, before the TLS handshake.
#[cfg(feature = "rustls")]
#[tokio::test]
async fn a_v2_header_goes_before_tls_to_a_wss_backend() {
    let dir = TempDir::new("proxy-protocol-wss");
    let ca = TestCa::new("wsrelay test backend CA");
    let issued = ca.issue(&dir, "backend", &["localhost"]);
    let acceptor = wsrelay::tls::TlsAcceptor::builder()
        .certificate(&issued.cert, &issued.key)
        .alpn(["http/1.1"])
        .build()
        .expect("the backend's certificate");
    let (backend, seen) = header_reading_backend(Some(acceptor)).await;
    let builder = wsrelay::Proxy::builder()
        .backend(format!("wss://localhost:{}", backend.port()))
        .backend_ca(ca.write(&dir, "ca.pem"))
        .proxy_protocol(true)
        .send_proxy_protocol(true);
    let proxy = Running::start(builder).await;
    let header = v2(0x21, addr("198.51.100.9:40000"), addr("192.0.2.1:443"));
    let (_stream, got) = upgrade_with(proxy.addr, &header, &[]).await;
    assert_eq!(got.status(), Some(101), "{}", got.head());
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0.source(), Some(addr("198.51.100.9:40000")));
    assert_eq!(seen[0].0.destination(), Some(addr("192.0.2.1:443")));
    assert_eq!(seen[0].1, ["198.51.100.9"]);
}
