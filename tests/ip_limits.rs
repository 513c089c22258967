//! Limits per client IP and for the whole proxy (issue 13, "Limits"), on every front end:
//! `ProxyBuilder::max_per_ip` (nginx `limit_conn`: `429` with `Retry-After`),
//! `ProxyBuilder::rate_per_ip` (nginx `limit_req`, a token bucket: `429` with `Retry-After`
//! when the next handshake would pass), `ProxyBuilder::max_tunnels` (`503` with
//! `Retry-After`), over `Proxy::serve` (TCP and TLS), `Proxy::handle` with the address the
//! caller gives, the hyper front end (HTTP/1.1 and HTTP/2), and the `proxy` example's
//! `--max-per-ip`, `--max-connections` and `--rate-per-ip`.
//!
//! The per-IP count uses the client address the front end was given (a single value passed
//! into the flow), which is what a PROXY protocol front end will replace.
#![cfg(unix)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use wsrelay::{Proxy, RateLimit};

use support::{
    axum_front, connect, eventually, h2_connect, h2_open, raw_exchange, read_head, read_to_close,
    send, spawn_echo, start_example, ws_connect, ws_request, Backend, Got, Running, Script, Then,
    STEP,
};

/// Opens a tunnel through `addr` (a `101`), kept open until the stream is dropped.
async fn open_tunnel(addr: SocketAddr) -> TcpStream {
    let mut client = connect(addr).await;
    assert!(send(&mut client, &ws_request(&[])).await);
    let got = read_head(&mut client, STEP).await;
    assert_eq!(got.status(), Some(101), "{}", got.head());
    client
}

/// A handshake through `addr` refused with `status` and a `Retry-After` of whole seconds;
/// those seconds.
async fn refused(addr: SocketAddr, status: u16) -> u64 {
    let got = raw_exchange(addr, &ws_request(&[]), STEP).await;
    retry_after(&got, status)
}

/// The `Retry-After` seconds of `got`, which must be a `status` answer that closed.
fn retry_after(got: &Got, status: u16) -> u64 {
    assert_eq!(got.status(), Some(status), "{}", got.head());
    assert!(got.closed, "the connection is closed after the refusal");
    let values = got.header("retry-after");
    assert_eq!(values.len(), 1, "one Retry-After: {}", got.head());
    values[0]
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After in seconds: {}", got.head()))
}

#[tokio::test]
async fn serve_caps_connections_per_ip_with_429_and_retry_after() {
    let echo = spawn_echo().await;
    let proxy = Running::start(
        Proxy::builder()
            .backend(echo.to_string())
            .max_per_ip(Some(2)),
    )
    .await;
    let first = open_tunnel(proxy.addr).await;
    let _second = open_tunnel(proxy.addr).await;
    assert_eq!(refused(proxy.addr, 429).await, 5);
    // Counted once the refused connection has ended (after its answer's linger).
    let counted = eventually(STEP, || proxy.proxy.stats().handshakes_client_error == 1).await;
    let stats = proxy.proxy.stats();
    assert!(counted, "{stats:?}");
    assert_eq!(stats.tunnels_active, 2, "{stats:?}");

    // A closed tunnel gives its slot back.
    drop(first);
    let free = eventually(STEP, || proxy.proxy.stats().tunnels_active == 1).await;
    assert!(free, "the first tunnel closed");
    let _third = open_tunnel(proxy.addr).await;
    assert_eq!(refused(proxy.addr, 429).await, 5);
}

#[tokio::test]
async fn a_handshake_in_progress_counts_against_its_address() {
    let echo = spawn_echo().await;
    let proxy = Running::start(
        Proxy::builder()
            .backend(echo.to_string())
            .max_per_ip(Some(1)),
    )
    .await;
    // Half a head sent: its handshake has started and holds the address's one slot.
    let head = ws_request(&[]);
    let (start, rest) = head.split_at(10);
    let mut waiting = connect(proxy.addr).await;
    assert!(send(&mut waiting, start).await);
    // Nothing outside shows that the proxy has read them: give it a moment.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(refused(proxy.addr, 429).await, 5);
    // Its handshake still goes through.
    assert!(send(&mut waiting, rest).await);
    assert_eq!(read_head(&mut waiting, STEP).await.status(), Some(101));
}

#[tokio::test]
async fn handle_counts_the_address_it_is_given() {
    let echo = spawn_echo().await;
    let proxy = Proxy::builder()
        .backend(echo.to_string())
        .max_per_ip(Some(1))
        .build()
        .expect("a proxy");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    // The front end says which client each connection is for (as a PROXY protocol header
    // would): the first two connections come from two clients, the third from the first.
    let clients: [SocketAddr; 3] = [
        "192.0.2.1:40000".parse().unwrap(),
        "192.0.2.2:40000".parse().unwrap(),
        "[::ffff:192.0.2.1]:40001".parse().unwrap(),
    ];
    let server = proxy.clone();
    tokio::spawn(async move {
        for client in clients {
            let (stream, _socket_peer) = listener.accept().await.expect("accept");
            tokio::spawn(server.handle(stream, client));
        }
    });
    let _one = open_tunnel(addr).await;
    let _two = open_tunnel(addr).await;
    // The IPv4-mapped form of 192.0.2.1 is the same client: over its limit.
    assert_eq!(refused(addr, 429).await, 5);
}

#[tokio::test]
async fn the_handshake_rate_per_ip_answers_429_with_retry_after() {
    let backend = Backend::start(Script::switching(Then::Close)).await;
    // Two handshakes at once, then one every 30 s.
    let proxy = Running::start(
        Proxy::builder()
            .backend(backend.addr.to_string())
            .rate_per_ip(Some(RateLimit::per_minute(2))),
    )
    .await;
    for _ in 0..2 {
        let got = raw_exchange(proxy.addr, &ws_request(&[]), STEP).await;
        assert_eq!(got.status(), Some(101), "{}", got.head());
    }
    let wait = refused(proxy.addr, 429).await;
    assert!((1..=30).contains(&wait), "Retry-After: {wait}");
    // A refused handshake never reaches the backend.
    assert_eq!(backend.accepted(), 2);
    let counted = eventually(STEP, || proxy.proxy.stats().handshakes_client_error == 1).await;
    let stats = proxy.proxy.stats();
    assert!(counted, "{stats:?}");
    assert_eq!(stats.handshakes_switched, 2, "{stats:?}");
}

#[test]
fn an_unusable_rate_is_a_build_error() {
    for rate in [RateLimit::per_second(0), RateLimit::per_second(3).burst(0)] {
        let error = Proxy::builder()
            .backend("127.0.0.1:9000")
            .rate_per_ip(Some(rate))
            .build()
            .expect_err("a rate of zero is refused");
        assert!(
            matches!(error, wsrelay::BuildError::Limit { .. }),
            "{error}"
        );
    }
}

#[tokio::test]
async fn max_tunnels_answers_503_with_retry_after() {
    let echo = spawn_echo().await;
    let proxy = Running::start(
        Proxy::builder()
            .backend(echo.to_string())
            .max_tunnels(Some(1)),
    )
    .await;
    let _open = open_tunnel(proxy.addr).await;
    assert_eq!(refused(proxy.addr, 503).await, 1);
}

#[tokio::test]
async fn a_tls_client_over_its_limit_is_closed_without_a_handshake() {
    let echo = spawn_echo().await;
    let dir = support::TempDir::new("ip-limits");
    let ca = support::TestCa::new("wsrelay ip limits CA");
    let issued = ca.issue(&dir, "proxy", &["localhost"]);
    let acceptor = wsrelay::tls::TlsAcceptor::new(&issued.cert, &issued.key).expect("a cert");
    let proxy = Running::start(
        Proxy::builder()
            .backend(echo.to_string())
            .tls(acceptor)
            .max_per_ip(Some(1)),
    )
    .await;
    let client = ca.client_config(&["http/1.1"]);
    let mut first = support::tls_connect(proxy.addr, "localhost", client.clone()).await;
    assert!(send(&mut first, &ws_request(&[])).await);
    assert_eq!(read_head(&mut first, STEP).await.status(), Some(101));
    // The second client from the same address gets no TLS handshake at all.
    let second = support::try_tls_connect(proxy.addr, "localhost", client).await;
    assert!(
        second.is_err(),
        "the TLS handshake of a client over its limit fails"
    );
    let counted = eventually(STEP, || proxy.proxy.stats().handshakes_unanswered == 1).await;
    assert!(counted, "{:?}", proxy.proxy.stats());
}

#[tokio::test]
async fn the_hyper_front_end_applies_the_same_limits_over_http1_and_http2() {
    let echo = spawn_echo().await;
    let proxy = Proxy::builder()
        .backend(echo.to_string())
        .max_per_ip(Some(1))
        .build()
        .expect("a proxy");
    let front = axum_front(proxy.clone()).await;
    let _open = open_tunnel(front).await;

    // HTTP/1.1: the same 429 as the byte-stream front end.
    let mut client = connect(front).await;
    assert!(send(&mut client, &ws_request(&[])).await);
    let got = read_head(&mut client, STEP).await;
    assert_eq!(got.status(), Some(429), "{}", got.head());
    assert_eq!(got.header("retry-after"), ["5"]);
    drop(client);

    // HTTP/2 extended CONNECT: the stream is answered 429, the connection lives on.
    let mut h2 = h2_connect(front).await;
    let stream = h2_open(&mut h2, ws_connect(front, "/ws", &[])).await;
    assert_eq!(stream.status(), 429);
    assert_eq!(stream.response.headers()["retry-after"], "5");
    let stats = proxy.stats();
    assert_eq!(stats.handshakes_client_error, 2, "{stats:?}");
}

#[tokio::test]
async fn the_proxy_example_applies_its_limit_flags() {
    // --max-per-ip: 429 with Retry-After, across the example's threads.
    let (_per_ip, addr) = proxy_example(&["--threads", "2", "--max-per-ip", "2"]).await;
    let _a = open_tunnel(addr).await;
    let _b = open_tunnel(addr).await;
    for _ in 0..3 {
        assert_eq!(refused(addr, 429).await, 5);
    }

    // --max-connections: 503 with Retry-After.
    let (_cap, addr) = proxy_example(&["--threads", "1", "--max-connections", "1"]).await;
    let _c = open_tunnel(addr).await;
    assert_eq!(refused(addr, 503).await, 1);

    // --rate-per-ip: the third handshake in a minute is refused.
    let (_rate, addr) = proxy_example(&["--rate-per-ip", "1/m", "--rate-burst", "2"]).await;
    for _ in 0..2 {
        let mut client = open_tunnel(addr).await;
        drop(read_to_close(&mut client, Duration::from_millis(1)).await);
    }
    let wait = refused(addr, 429).await;
    assert!((1..=60).contains(&wait), "Retry-After: {wait}");
}

/// The `proxy` example on an ephemeral loopback port with `flags`, and its address.
async fn proxy_example(flags: &[&str]) -> (tokio::process::Child, SocketAddr) {
    let args: Vec<&str> = ["--listen", "127.0.0.1:0"]
        .iter()
        .chain(flags)
        .copied()
        .collect();
    let (child, addr) = start_example("proxy", &args).await;
    (child, addr.parse().expect("an address"))
}
