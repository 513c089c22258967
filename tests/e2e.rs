//! End to end: an independent client (tokio-tungstenite) talks through the proxy to the echo
//! backend, with the proxy behind each of its front ends: `Proxy::serve` on a bare listener,
//! an axum app, and a bare hyper 1 server. Then the failure paths through `Proxy::serve`.
//!
//! Everything listens on `127.0.0.1:0`, and every await is bounded by a timeout.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wsrelay::wire::HeadLimits;
use wsrelay::{Proxy, TunnelPath};

use support::{within, within_for, Backend, Running, Script, Then, STEP};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The message sizes every front end must carry, around each frame-length encoding boundary
/// (RFC 6455 §5.2: 7-bit up to 125, 16-bit up to 65535, 64-bit beyond).
const SIZES: &[usize] = &[0, 1, 125, 126, 65535, 65536, 1 << 20];

/// How the proxy is put in front of the clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Front {
    /// `Proxy::serve` on a bare `TcpListener`.
    Serve,
    /// An axum app whose `/ws` handler calls `Proxy::upgrade`.
    #[cfg(feature = "hyper")]
    Axum,
    /// A bare hyper 1 http1 server whose service calls `Proxy::upgrade`.
    #[cfg(feature = "hyper")]
    Hyper,
}

/// What the `on_report` hook saw of one tunnel.
#[derive(Debug)]
struct Seen {
    path: TunnelPath,
    client_to_backend: u64,
    backend_to_client: u64,
}

/// A proxy in front of the echo backend.
struct Setup {
    addr: SocketAddr,
    proxy: Proxy,
    reports: mpsc::UnboundedReceiver<Seen>,
    /// The `Proxy::serve` front end, kept alive for the test (`None` for the others).
    _serving: Option<Running>,
}

impl Setup {
    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    async fn connect(&self) -> Client {
        let (client, response) = within("websocket handshake", connect_async(self.url()))
            .await
            .expect("handshake through the proxy");
        assert_eq!(response.status(), 101);
        client
    }

    async fn next_report(&mut self) -> Seen {
        within("a tunnel report", self.reports.recv())
            .await
            .expect("the report hook is alive")
    }
}

async fn connect_async<R>(
    request: R,
) -> Result<
    (
        Client,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    String,
>
where
    R: IntoClientRequest + Unpin,
{
    tokio_tungstenite::connect_async(request)
        .await
        .map_err(|error| error.to_string())
}

/// Starts the echo backend and a proxy to it behind `front`.
async fn set_up(front: Front) -> Setup {
    let backend = support::spawn_echo().await;
    let (tx, reports) = mpsc::unbounded_channel();
    let proxy = Proxy::builder()
        .backend(backend.to_string())
        .on_report(move |report| {
            let _ = tx.send(Seen {
                path: report.path,
                client_to_backend: report.client_to_backend,
                backend_to_client: report.backend_to_client,
            });
        })
        .build()
        .expect("a valid proxy configuration");
    let (addr, serving) = match front {
        Front::Serve => {
            let running = Running::serve(proxy.clone()).await;
            (running.addr, Some(running))
        }
        #[cfg(feature = "hyper")]
        Front::Axum => (support::axum_front(proxy.clone()).await, None),
        #[cfg(feature = "hyper")]
        Front::Hyper => (support::hyper_front(proxy.clone()).await, None),
    };
    Setup {
        addr,
        proxy,
        reports,
        _serving: serving,
    }
}

/// Sends `message` and expects the same message back.
async fn round_trip(client: &mut Client, message: Message) {
    within("send", client.send(message.clone()))
        .await
        .expect("send");
    let echoed = within("echo", client.next())
        .await
        .expect("the connection stays open")
        .expect("a message");
    assert_eq!(echoed, message);
}

fn text(len: usize) -> Message {
    let text: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    Message::text(text)
}

fn binary(len: usize) -> Message {
    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    Message::binary(bytes)
}

/// Closes with `code` and `reason` and expects the echoed close, then the end of the stream.
async fn close(client: &mut Client, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    within("send close", client.close(Some(frame)))
        .await
        .expect("send close");
    match within("the echoed close", client.next()).await {
        Some(Ok(Message::Close(Some(echoed)))) => {
            assert_eq!(u16::from(echoed.code), code);
            assert_eq!(echoed.reason.as_str(), reason);
        }
        other => panic!("expected the echoed close frame, got {other:?}"),
    }
    // After the close handshake the stream ends.
    let end = within("the end of the stream", client.next()).await;
    assert!(
        matches!(end, None | Some(Err(_))),
        "no message after close, got {end:?}"
    );
}

// ---- the happy paths, for every front end ----

async fn messages_of_every_size(front: Front) {
    let setup = set_up(front).await;
    let mut client = setup.connect().await;
    for &len in SIZES {
        round_trip(&mut client, text(len)).await;
        round_trip(&mut client, binary(len)).await;
    }
    close(&mut client, 1000, "").await;
}

async fn ping_pong(front: Front) {
    let setup = set_up(front).await;
    let mut client = setup.connect().await;
    within(
        "send ping",
        client.send(Message::Ping(b"are you there".as_ref().into())),
    )
    .await
    .expect("send ping");
    match within("pong", client.next()).await {
        Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    // The tunnel still carries data afterwards.
    round_trip(&mut client, text(10)).await;
    close(&mut client, 1000, "").await;
}

async fn subprotocol_negotiation(front: Front) {
    let setup = set_up(front).await;
    let mut request = setup.url().into_client_request().expect("a client request");
    request.headers_mut().insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static("chat, superchat"),
    );
    let (mut client, response) = within("handshake", connect_async(request))
        .await
        .expect("handshake with subprotocols");
    assert_eq!(response.status(), 101);
    assert_eq!(
        response.headers()[http::header::SEC_WEBSOCKET_PROTOCOL],
        "chat"
    );
    round_trip(&mut client, text(5)).await;
    close(&mut client, 1000, "").await;
}

async fn client_initiated_close(front: Front) {
    let mut setup = set_up(front).await;
    let mut client = setup.connect().await;
    round_trip(&mut client, binary(1000)).await;
    close(&mut client, 4000, "bye now").await;
    drop(client);
    let seen = setup.next_report().await;
    assert!(
        seen.client_to_backend > 1000 && seen.backend_to_client > 1000,
        "counts cover the traffic: {seen:?}"
    );
    // Both ends are plain TCP sockets: on Linux the tunnel must take the splice(2) path.
    #[cfg(target_os = "linux")]
    assert_eq!(seen.path, TunnelPath::ZeroCopy, "{front:?}");
    assert!(
        support::eventually(STEP, || setup.proxy.active_tunnels() == 0).await,
        "the tunnel is no longer counted"
    );
}

async fn frames_sent_with_the_handshake(front: Front) {
    // A masked text frame "hi" written in the same packet as the request head: the proxy must
    // deliver it after the backend's 101 (rule 22, see `wsrelay::rules`).
    let setup = set_up(front).await;
    let mut request = support::ws_request(&[]);
    request.extend_from_slice(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
    let mut stream = support::connect(setup.addr).await;
    assert!(
        support::send(&mut stream, &request).await,
        "the request was written"
    );
    let mut response = support::read_head(&mut stream, STEP).await;
    assert_eq!(response.status(), Some(101), "{}", response.head());
    let deadline = Instant::now() + STEP;
    while response.body().len() < 4 && Instant::now() < deadline {
        let more = support::read_head(&mut stream, Duration::from_millis(50)).await;
        response.bytes.extend_from_slice(&more.bytes);
        if more.closed {
            break;
        }
    }
    assert_eq!(response.body(), &[0x81, 0x02, b'h', b'i']);
}

async fn many_concurrent_clients(front: Front) {
    const CLIENTS: usize = 200;
    let setup = set_up(front).await;
    let url = setup.url();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let url = url.clone();
        tasks.spawn(async move {
            let (mut client, _) = within("handshake", connect_async(url))
                .await
                .expect("handshake");
            for j in 0..3 {
                round_trip(
                    &mut client,
                    Message::text(format!("client {i} message {j}")),
                )
                .await;
            }
            round_trip(&mut client, binary(4096 + i)).await;
            close(&mut client, 1000, "done").await;
        });
    }
    within_for(Duration::from_secs(60), "all clients", async {
        while let Some(result) = tasks.join_next().await {
            result.expect("a client task");
        }
    })
    .await;
    assert!(
        support::eventually(STEP, || setup.proxy.active_tunnels() == 0).await,
        "every tunnel ended, {} still counted",
        setup.proxy.active_tunnels()
    );
}

/// One test per (front end, scenario).
macro_rules! for_each_front {
    ($($scenario:ident),* $(,)?) => {
        mod via_serve {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Front::Serve).await
                }
            )*
        }
        #[cfg(feature = "hyper")]
        mod via_axum {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Front::Axum).await
                }
            )*
        }
        #[cfg(feature = "hyper")]
        mod via_hyper {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Front::Hyper).await
                }
            )*
        }
    };
}

for_each_front!(
    messages_of_every_size,
    ping_pong,
    subprotocol_negotiation,
    client_initiated_close,
    frames_sent_with_the_handshake,
    many_concurrent_clients,
);

// ---- failures, through Proxy::serve ----

// Rule 20 (see `wsrelay::rules`): backend unreachable → 502.
#[tokio::test]
async fn backend_down_is_502() {
    let nobody = support::closed_port().await;
    let serving = Running::start(Proxy::builder().backend(nobody.to_string())).await;
    let (proxy, addr) = (&serving.proxy, serving.addr);
    let response = support::raw_exchange(addr, &support::ws_request(&[]), STEP).await;
    assert_eq!(response.status(), Some(502), "{}", response.head());
    assert!(response.closed, "the proxy closes the connection");
    assert!(support::eventually(STEP, || proxy.active_tunnels() == 0).await);
}

// Rule 20 (see `wsrelay::rules`): backend response head not within its deadline → 504.
#[tokio::test]
async fn silent_backend_is_504_at_the_deadline() {
    let deadline = Duration::from_millis(300);
    let backend = Backend::start(Script::silent()).await;
    let serving = Running::start(
        Proxy::builder()
            .backend(backend.addr.to_string())
            .backend_head(HeadLimits::new().timeout(Some(deadline))),
    )
    .await;
    let (proxy, addr) = (&serving.proxy, serving.addr);
    let mut stream = support::connect(addr).await;
    let started = Instant::now();
    assert!(
        support::send(&mut stream, &support::ws_request(&[])).await,
        "the request was written"
    );
    let response = support::read_head(&mut stream, STEP).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), Some(504), "{}", response.head());
    assert!(
        elapsed >= deadline - Duration::from_millis(20)
            && elapsed < deadline + Duration::from_secs(1),
        "504 after {elapsed:?}, deadline {deadline:?}"
    );
    assert_eq!(backend.accepted(), 1);
    assert!(
        support::eventually(STEP, || backend.conns()[0].closed).await,
        "the backend connection is closed"
    );
    let rest = support::read_to_close(&mut stream, STEP).await;
    assert!(rest.closed, "the client connection is closed");
    assert!(support::eventually(STEP, || proxy.active_tunnels() == 0).await);
}

// Rule 18 (see `wsrelay::rules`): a refusal is relayed with its body, no tunnel is ever
// opened, client bytes after the head are discarded, both connections close.
#[tokio::test]
async fn backend_refusal_is_relayed_and_never_tunnelled() {
    let backend = Backend::start(Script::canned(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nforbidden\n",
        Then::Hold,
    ))
    .await;
    let serving = Running::start(Proxy::builder().backend(backend.addr.to_string())).await;
    let (proxy, addr) = (&serving.proxy, serving.addr);
    let mut stream = support::connect(addr).await;
    // A frame pipelined right behind the head ...
    let mut request = support::ws_request(&[]);
    request.extend_from_slice(b"\x81\x85\x00\x00\x00\x00early");
    assert!(
        support::send(&mut stream, &request).await,
        "the request was written"
    );
    let response = support::read_to_close(&mut stream, STEP).await;
    assert_eq!(response.status(), Some(403), "{}", response.head());
    assert_eq!(response.body(), b"forbidden\n");
    assert!(response.closed, "the client connection is closed");
    // ... and bytes written after the refusal: neither may reach the backend.
    let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, b"\x81\x84\x00\x00\x00\x00late").await;
    drop(stream);
    assert!(
        support::eventually(STEP, || backend.conns().first().is_some_and(|c| c.closed)).await,
        "the backend connection is closed"
    );
    let received = backend.conns();
    assert_eq!(received.len(), 1);
    assert!(received[0].head_text().starts_with("GET /ws HTTP/1.1\r\n"));
    assert_eq!(
        received[0].after_head(),
        b"",
        "nothing but the head reached the backend"
    );
    assert!(support::eventually(STEP, || proxy.active_tunnels() == 0).await);
}

// Rules 1–9 (see `wsrelay::rules`): a bad client handshake gets its status and never
// reaches the backend.
#[tokio::test]
async fn bad_client_handshakes_never_reach_the_backend() {
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    let serving = Running::start(Proxy::builder().backend(backend.addr.to_string())).await;
    let (proxy, addr) = (&serving.proxy, serving.addr);
    let key = format!("Sec-WebSocket-Key: {}", support::KEY);
    let key = key.as_str();
    let big = format!("X-Padding: {}", "a".repeat(9 * 1024));
    let cases: &[(&str, Vec<u8>, u16)] = &[
        // Rule 3: Sec-WebSocket-Key present exactly once, 16 bytes of base64.
        (
            "missing key",
            support::upgrade_request("h", "/ws", &["Sec-WebSocket-Version: 13"]),
            400,
        ),
        (
            "short key",
            support::upgrade_request(
                "h",
                "/ws",
                &["Sec-WebSocket-Key: c2hvcnQ=", "Sec-WebSocket-Version: 13"],
            ),
            400,
        ),
        (
            "two keys",
            support::upgrade_request("h", "/ws", &[key, key, "Sec-WebSocket-Version: 13"]),
            400,
        ),
        // Rule 4: a version other than 13 → 426 (checked for its header below).
        (
            "version 8",
            support::upgrade_request("h", "/ws", &[key, "Sec-WebSocket-Version: 8"]),
            426,
        ),
        // Rule 2: Host exactly once.
        (
            "two hosts",
            support::upgrade_request(
                "h",
                "/ws",
                &["Host: other", key, "Sec-WebSocket-Version: 13"],
            ),
            400,
        ),
        // Rule 5: no body on an upgrade.
        (
            "content-length",
            support::upgrade_request(
                "h",
                "/ws",
                &[key, "Sec-WebSocket-Version: 13", "Content-Length: 5"],
            ),
            400,
        ),
        (
            "transfer-encoding",
            support::upgrade_request(
                "h",
                "/ws",
                &[
                    key,
                    "Sec-WebSocket-Version: 13",
                    "Transfer-Encoding: chunked",
                ],
            ),
            400,
        ),
        // Rule 6: whitespace before the colon.
        (
            "space before colon",
            support::upgrade_request("h", "/ws", &[key, "Sec-WebSocket-Version : 13"]),
            400,
        ),
        // Rule 7: a head over the 8 KiB default.
        (
            "head too large",
            support::upgrade_request("h", "/ws", &[key, "Sec-WebSocket-Version: 13", &big]),
            431,
        ),
    ];
    for (what, request, status) in cases {
        let response = support::raw_exchange(addr, request, STEP).await;
        assert_eq!(
            response.status(),
            Some(*status),
            "{what}: {}",
            response.head()
        );
        assert!(response.closed, "{what}: the connection is closed");
        if *status == 426 {
            assert_eq!(
                response
                    .header("sec-websocket-version")
                    .first()
                    .map(String::as_str),
                Some("13"),
                "{what}: {}",
                response.head()
            );
        }
    }
    // Rule 9: none of them reached the backend (each was answered before any connect).
    assert_eq!(backend.accepted(), 0, "the backend was never contacted");
    assert!(support::eventually(STEP, || proxy.active_tunnels() == 0).await);
}

// A client that goes away in the middle of its head is forgotten.
#[tokio::test]
async fn client_gone_mid_head_is_not_counted() {
    let backend = support::spawn_echo().await;
    let serving = Running::start(Proxy::builder().backend(backend.to_string())).await;
    let (proxy, addr) = (&serving.proxy, serving.addr);
    let mut stream = support::connect(addr).await;
    assert!(
        support::send(
            &mut stream,
            b"GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgr"
        )
        .await,
        "the request was written"
    );
    assert!(
        support::eventually(STEP, || proxy.active_tunnels() == 1).await,
        "the handshake in progress is counted"
    );
    drop(stream);
    assert!(
        support::eventually(STEP, || proxy.active_tunnels() == 0).await,
        "{} still counted after the client left",
        proxy.active_tunnels()
    );
}

// A client that goes away while the proxy waits for the backend's answer is forgotten
// promptly, and the backend connection is closed, well before the backend deadline.
#[tokio::test]
async fn client_gone_while_backend_thinks_is_not_counted() {
    let backend = Backend::start(Script::silent()).await;
    let serving = Running::start(
        Proxy::builder()
            .backend(backend.addr.to_string())
            .backend_head(HeadLimits::new().timeout(Some(Duration::from_secs(30)))),
    )
    .await;
    let (proxy, addr) = (&serving.proxy, serving.addr);
    let mut stream = support::connect(addr).await;
    assert!(
        support::send(&mut stream, &support::ws_request(&[])).await,
        "the request was written"
    );
    assert!(
        support::eventually(STEP, || backend.accepted() == 1).await,
        "the backend was contacted"
    );
    assert!(support::eventually(STEP, || proxy.active_tunnels() == 1).await);
    drop(stream);
    assert!(
        support::eventually(Duration::from_secs(5), || proxy.active_tunnels() == 0).await,
        "{} still counted after the client left",
        proxy.active_tunnels()
    );
    assert!(
        support::eventually(STEP, || backend.conns()[0].closed).await,
        "the backend connection is closed"
    );
}

// ---- the echo backend itself (RFC 6455 §5), which every test above relies on ----

/// A raw WebSocket connection straight to a fresh echo backend, after its `101`.
async fn raw_echo_connection() -> TcpStream {
    let backend = support::spawn_echo().await;
    let mut stream = support::connect(backend).await;
    assert!(
        support::send(&mut stream, &support::ws_request(&[])).await,
        "the request was written"
    );
    let head = support::read_head(&mut stream, STEP).await;
    assert_eq!(head.status(), Some(101), "{}", head.head());
    assert_eq!(
        head.header("sec-websocket-accept")
            .first()
            .map(String::as_str),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert!(head.body().is_empty());
    stream
}

/// A masked client frame (mask `1 2 3 4`) with the given first byte.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![first];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test]
async fn echo_backend_keeps_fragments_and_answers_pings() {
    let mut stream = raw_echo_connection().await;
    let mut input = client_frame(0x01, b"Hel"); // text, FIN=0
    input.extend(client_frame(0x89, b"ping!")); // a ping between the fragments
    input.extend(client_frame(0x80, b"lo")); // continuation, FIN=1
    input.extend(client_frame(0x8A, b"unsolicited")); // a pong: ignored
    input.extend(client_frame(0x88, b"\x03\xe8done")); // close 1000 "done"
    assert!(
        support::send(&mut stream, &input).await,
        "the request was written"
    );
    let mut expected = b"\x01\x03Hel\x89\x05ping!\x80\x02lo\x88\x06\x03\xe8done".to_vec();
    // The ping is answered with a pong, not echoed as a ping.
    expected[5] = 0x8A;
    let output = support::read_to_close(&mut stream, STEP).await;
    assert_eq!(output.bytes, expected);
    assert!(output.closed, "the echo closes after the close frame");
}

#[tokio::test]
async fn echo_backend_refuses_protocol_errors_with_1002() {
    let cases: &[(&str, Vec<u8>)] = &[
        ("unmasked", b"\x81\x02hi".to_vec()),
        ("rsv1 set", client_frame(0xC1, b"hi")),
        ("reserved opcode", client_frame(0x83, b"hi")),
        ("fragmented ping", client_frame(0x09, b"hi")),
        ("126-byte ping", client_frame(0x89, &[0; 126])),
        ("continuation first", client_frame(0x80, b"hi")),
        ("text inside a message", {
            let mut v = client_frame(0x01, b"a");
            v.extend(client_frame(0x81, b"b"));
            v
        }),
    ];
    for (what, input) in cases {
        let mut stream = raw_echo_connection().await;
        assert!(
            support::send(&mut stream, input).await,
            "the request was written"
        );
        let output = support::read_to_close(&mut stream, STEP).await;
        assert!(
            output.bytes.ends_with(b"\x88\x02\x03\xea"),
            "{what}: {:02x?}",
            output.bytes
        );
        assert!(output.closed, "{what}: closed");
    }
}

#[tokio::test]
async fn echo_backend_streams_a_16_mib_frame() {
    let mut stream = raw_echo_connection().await;
    let payload: Vec<u8> = (0..16usize << 20).map(|i| (i % 253) as u8).collect();
    let frame = client_frame(0x82, &payload);
    let (mut reader, mut writer) = stream.split();
    let write = async {
        tokio::io::AsyncWriteExt::write_all(&mut writer, &frame)
            .await
            .expect("write")
    };
    let read = async {
        let mut head = [0u8; 10];
        tokio::io::AsyncReadExt::read_exact(&mut reader, &mut head)
            .await
            .expect("read the header");
        assert_eq!(head[..2], [0x82, 127]);
        assert_eq!(u64::from_be_bytes(head[2..].try_into().unwrap()), 16 << 20);
        let mut echoed = vec![0u8; 16 << 20];
        tokio::io::AsyncReadExt::read_exact(&mut reader, &mut echoed)
            .await
            .expect("read the payload");
        assert!(echoed == payload, "the payload comes back unmasked");
    };
    within_for(Duration::from_secs(30), "16 MiB round trip", async {
        tokio::join!(write, read)
    })
    .await;
}

#[tokio::test]
async fn echo_backend_checks_the_handshake() {
    let backend = support::spawn_echo().await;
    let key = format!("Sec-WebSocket-Key: {}", support::KEY);
    let version8 = support::upgrade_request("h", "/", &[&key, "Sec-WebSocket-Version: 8"]);
    let response = support::raw_exchange(backend, &version8, STEP).await;
    assert_eq!(response.status(), Some(426), "{}", response.head());
    assert_eq!(
        response
            .header("sec-websocket-version")
            .first()
            .map(String::as_str),
        Some("13")
    );
    let no_key = support::upgrade_request("h", "/", &["Sec-WebSocket-Version: 13"]);
    let response = support::raw_exchange(backend, &no_key, STEP).await;
    assert_eq!(response.status(), Some(400), "{}", response.head());
    // The first offered subprotocol is selected.
    let offer = support::upgrade_request(
        "h",
        "/",
        &[
            &key,
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Protocol: chat, superchat",
        ],
    );
    let mut stream = support::connect(backend).await;
    assert!(
        support::send(&mut stream, &offer).await,
        "the request was written"
    );
    let response = support::read_head(&mut stream, STEP).await;
    assert_eq!(response.status(), Some(101), "{}", response.head());
    assert_eq!(
        response
            .header("sec-websocket-protocol")
            .first()
            .map(String::as_str),
        Some("chat")
    );
}
