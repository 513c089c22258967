//! Interop with independent WebSocket implementations.
//!
//! Python's `h2` (`tests/interop/h2_websocket.py`) opens WebSockets over HTTP/2 (RFC 8441
//! extended CONNECT, h2c) through the `axum` example, run as users run it, to its bundled echo
//! backend.
//!
//! Python's `websockets` (as client and as server, `tests/interop/ws_client.py` and
//! `ws_server.py`) and Node's `ws` (as client, `tests/interop/ws_client.mjs`) talk through
//! `Proxy::serve` and through an axum app calling `Proxy::upgrade`, to the Python server or to
//! the crate's own echo backend (`examples/support/echo.rs`), and a tokio-tungstenite client
//! talks to the Python server through the proxy. The scripts exchange text, binary (up to
//! 1 MiB), fragmented messages, pings, many messages in flight, a subprotocol and a close
//! code, and end with `interop: N passed, M failed`; a test passes only on `0 failed` and
//! the full count. With the `rustls` feature, the Python client also speaks `wss://` to a
//! proxy that terminates TLS, and the Python server serves `wss://` as the proxy's TLS
//! backend (certificates from a throwaway CA made by the test).
//!
//! The interpreters and packages are required, never skipped: `.ci/test-deps.sh` (which
//! `.ci/run` runs) installs `websockets` and `h2` with pip and `ws` with npm into
//! `target/interop-node`. A missing one fails
//! the test with the command that installs it.
//!
//! Every child process is killed when its handle is dropped (`kill_on_drop`), and every wait
//! is bounded.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use wsrelay::Proxy;

use support::{listening_on, spawn_echo, within, within_for, Running, STEP};

/// The bound on one client script's whole run (its own limit is 90 s).
const CLIENT_RUN: Duration = Duration::from_secs(120);

/// The cases `ws_client.py` runs: a failure or a skipped case changes the count.
const PYTHON_CASES: usize = 16;

/// The cases `ws_client.mjs` runs.
const NODE_CASES: usize = 14;

/// Where `.ci/run` installs Node's `ws`: `npm install --prefix target/interop-node ws`.
const NODE_MODULES: &str = "target/interop-node/node_modules";

const PIP_INSTALL: &str = "python3 -m pip install websockets==17.4";
#[cfg(all(unix, feature = "hyper"))]
const PIP_INSTALL_H2: &str = "python3 -m pip install h2==4.4.1";

/// The cases `h2_websocket.py` runs.
#[cfg(all(unix, feature = "hyper"))]
const PYTHON_H2_CASES: usize = 11;
const NPM_INSTALL: &str = "npm install --prefix target/interop-node --no-save ws@8.18.3";

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// Fails the test, saying how `.ci/run` installs it, unless `python3` can import `websockets`.
async fn require_python() {
    let output = within(
        "python3 -c 'import websockets'",
        Command::new("python3")
            .args(["-c", "import websockets; print(websockets.__version__)"])
            .kill_on_drop(true)
            .output(),
    )
    .await;
    match output {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "python3 cannot import websockets ({}); .ci/run installs it: {PIP_INSTALL}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ),
        Err(e) => panic!("python3 is not available ({e}); the interop tests need it"),
    }
}

/// Fails the test, saying how `.ci/run` installs it, unless `node` finds `ws` in
/// [`NODE_MODULES`].
async fn require_node() -> PathBuf {
    let modules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(NODE_MODULES);
    let output = within(
        "node -e require('ws')",
        Command::new("node")
            .args(["-e", "require('ws')"])
            .env("NODE_PATH", &modules)
            .kill_on_drop(true)
            .output(),
    )
    .await;
    match output {
        Ok(out) if out.status.success() => modules,
        Ok(_) => panic!(
            "node cannot load ws from {}; .ci/run installs it: {NPM_INSTALL}",
            modules.display()
        ),
        Err(e) => panic!("node is not available ({e}); the interop tests need it"),
    }
}

/// `ws_server.py` on a free port; killed when dropped.
struct PythonServer {
    addr: SocketAddr,
    _child: Child,
}

impl PythonServer {
    async fn start() -> PythonServer {
        Self::start_with(&[]).await
    }

    /// With extra arguments (`--certfile`, `--keyfile`).
    async fn start_with(extra: &[&str]) -> PythonServer {
        require_python().await;
        let mut child = Command::new("python3")
            .arg(script("ws_server.py"))
            .args(["--port", "0", "--lifetime", "300"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn python3 ws_server.py");
        // The server prints two lines before it listens.
        let addr = listening_on(&mut child, 10, STEP, "ws_server.py")
            .await
            .parse()
            .expect("a socket address");
        PythonServer {
            addr,
            _child: child,
        }
    }
}

/// `Proxy::serve` on a free port in front of `backend`; serves until dropped.
async fn serve_proxy(backend: SocketAddr) -> Running {
    Running::serve(Proxy::new(backend.to_string())).await
}

/// An axum app whose `/ws` handler calls `Proxy::upgrade` towards `backend`, as
/// `examples/axum.rs` does; returns the app's address.
#[cfg(feature = "hyper")]
async fn serve_axum(backend: SocketAddr) -> SocketAddr {
    support::axum_front(Proxy::new(backend.to_string())).await
}

/// Runs a client script to the end and checks its summary: `cases` passed, none failed.
async fn run_client(mut command: Command, what: &str, cases: usize) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = within_for(CLIENT_RUN, what, command.output())
        .await
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!("interop: {cases} passed, 0 failed");
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        output.status.success() && summary == expected,
        "{what}: {} (expected `{expected}`)\n--- stdout\n{stdout}--- stderr\n{stderr}",
        output.status
    );
    println!("{what}:\n{stdout}");
}

/// `ws_client.py` against `url`, offering `nope` then `chat` and expecting `chat`, closing
/// with `close_code`.
async fn python_client(url: String, close_code: u16, what: &str) {
    python_client_with(url, close_code, what, &[]).await;
}

/// [`python_client`] with extra arguments (`--cafile`).
async fn python_client_with(url: String, close_code: u16, what: &str, extra: &[&str]) {
    require_python().await;
    let mut command = Command::new("python3");
    command
        .arg(script("ws_client.py"))
        .arg(&url)
        .args(extra)
        .args([
            "--subprotocol",
            "nope",
            "--subprotocol",
            "chat",
            "--expect-subprotocol",
            "chat",
            "--close-code",
            &close_code.to_string(),
            "--close-reason",
            "interop: bye ✓",
        ]);
    run_client(command, &format!("{what} ({url})"), PYTHON_CASES).await;
}

/// `ws_client.mjs` against `url`, offering `nope` then `superchat` and expecting
/// `superchat` (the Python server) or `nope` (the echo backend picks the first offered).
async fn node_client(url: String, expect: &str, what: &str) {
    let modules = require_node().await;
    let mut command = Command::new("node");
    command
        .env("NODE_PATH", modules)
        .arg(script("ws_client.mjs"))
        .arg(&url)
        .args([
            "--subprotocol",
            "nope",
            "--subprotocol",
            "superchat",
            "--expect-subprotocol",
            expect,
            "--close-code",
            "4003",
            "--close-reason",
            "node done",
        ]);
    run_client(command, &format!("{what} ({url})"), NODE_CASES).await;
}

/// The scripts agree with each other without the proxy, so a failure through the proxy is
/// the proxy's.
#[tokio::test]
async fn python_client_to_python_server_directly() {
    let server = PythonServer::start().await;
    python_client(format!("ws://{}/", server.addr), 4000, "direct").await;
}

#[tokio::test]
async fn python_client_through_serve_to_python_server() {
    let server = PythonServer::start().await;
    let proxy = serve_proxy(server.addr).await;
    python_client(format!("ws://{}/ws", proxy.addr), 4001, "Proxy::serve").await;
}

#[tokio::test]
async fn python_client_through_serve_to_echo_backend() {
    let backend = spawn_echo().await;
    let proxy = serve_proxy(backend).await;
    // The echo backend selects the first subprotocol offered, whatever it is: offer only
    // `chat` here.
    require_python().await;
    let url = format!("ws://{}/ws", proxy.addr);
    let mut command = Command::new("python3");
    command.arg(script("ws_client.py")).arg(&url).args([
        "--subprotocol",
        "chat",
        "--expect-subprotocol",
        "chat",
        "--close-code",
        "1000",
        "--close-reason",
        "normal",
    ]);
    run_client(command, "Proxy::serve to the echo backend", PYTHON_CASES).await;
}

#[cfg(feature = "hyper")]
#[tokio::test]
async fn python_client_through_axum_to_echo_backend() {
    let backend = spawn_echo().await;
    let app = serve_axum(backend).await;
    require_python().await;
    let url = format!("ws://{app}/ws");
    let mut command = Command::new("python3");
    command.arg(script("ws_client.py")).arg(&url).args([
        "--subprotocol",
        "chat",
        "--expect-subprotocol",
        "chat",
        "--close-code",
        "4002",
        "--close-reason",
        "axum done",
    ]);
    run_client(command, "axum to the echo backend", PYTHON_CASES).await;
}

#[cfg(feature = "hyper")]
#[tokio::test]
async fn python_client_through_axum_to_python_server() {
    let server = PythonServer::start().await;
    let app = serve_axum(server.addr).await;
    python_client(format!("ws://{app}/ws"), 4004, "axum").await;
}

#[tokio::test]
async fn node_client_through_serve_to_python_server() {
    let server = PythonServer::start().await;
    let proxy = serve_proxy(server.addr).await;
    node_client(
        format!("ws://{}/ws", proxy.addr),
        "superchat",
        "node through Proxy::serve",
    )
    .await;
}

#[tokio::test]
async fn node_client_through_serve_to_echo_backend() {
    let backend = spawn_echo().await;
    let proxy = serve_proxy(backend).await;
    node_client(
        format!("ws://{}/ws", proxy.addr),
        "nope",
        "node to the echo backend",
    )
    .await;
}

#[cfg(feature = "hyper")]
#[tokio::test]
async fn node_client_through_axum_to_python_server() {
    let server = PythonServer::start().await;
    let app = serve_axum(server.addr).await;
    node_client(format!("ws://{app}/ws"), "superchat", "node through axum").await;
}

/// Python's client over `wss://` to a proxy that terminates TLS (`ProxyBuilder::tls`), to
/// the plain Python server.
#[cfg(feature = "rustls")]
#[tokio::test]
async fn python_client_over_wss_through_serve_to_python_server() {
    let dir = support::TempDir::new("interop-wss-client");
    let ca = support::TestCa::new("interop CA");
    let issued = ca.issue(&dir, "proxy", &["localhost"]);
    let ca_file = ca.write(&dir, "ca.pem");
    let server = PythonServer::start().await;
    let acceptor =
        wsrelay::tls::TlsAcceptor::new(&issued.cert, &issued.key).expect("a certificate");
    let proxy = Running::start(
        Proxy::builder()
            .backend(server.addr.to_string())
            .tls(acceptor),
    )
    .await;
    python_client_with(
        format!("wss://localhost:{}/ws", proxy.addr.port()),
        4006,
        "Python over wss through Proxy::serve",
        &["--cafile", ca_file.to_str().expect("a UTF-8 path")],
    )
    .await;
}

/// Python's server as a `wss://` backend: the proxy verifies its certificate against
/// `backend_ca` and sends SNI; the Python client speaks plain `ws://` to the proxy.
#[cfg(feature = "rustls")]
#[tokio::test]
async fn python_client_through_serve_to_python_wss_server() {
    let dir = support::TempDir::new("interop-wss-server");
    let ca = support::TestCa::new("interop backend CA");
    let issued = ca.issue(&dir, "backend", &["localhost"]);
    let server = PythonServer::start_with(&[
        "--certfile",
        issued.cert.to_str().expect("a UTF-8 path"),
        "--keyfile",
        issued.key.to_str().expect("a UTF-8 path"),
    ])
    .await;
    let proxy = Running::start(
        Proxy::builder()
            .backend(format!("wss://localhost:{}", server.addr.port()))
            .backend_ca(ca.write(&dir, "ca.pem")),
    )
    .await;
    python_client(
        format!("ws://{}/ws", proxy.addr),
        4007,
        "Python through Proxy::serve to a wss backend",
    )
    .await;
}

/// A Rust client (tokio-tungstenite) to the Python server through the proxy: the two
/// independent implementations meet only through wsrelay.
#[tokio::test]
async fn tungstenite_client_through_serve_to_python_server() {
    let server = PythonServer::start().await;
    let proxy = serve_proxy(server.addr).await;
    let mut request = format!("ws://{}/ws", proxy.addr)
        .into_client_request()
        .expect("a request");
    request.headers_mut().insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static("nope, interop.v1"),
    );
    let (mut client, response) = within("handshake", tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake through the proxy");
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["sec-websocket-protocol"], "interop.v1");

    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    for message in [
        Message::text("hello from tungstenite"),
        Message::binary(big),
        Message::binary(Vec::new()),
    ] {
        within("send", client.send(message.clone()))
            .await
            .expect("send");
        let back = within("echo", client.next())
            .await
            .expect("open")
            .expect("a message");
        assert_eq!(back, message);
    }

    // A text message in three frames; the Python server answers with the whole message.
    for (part, opcode, fin) in [
        ("frag", OpCode::Data(Data::Text), false),
        ("ment", OpCode::Data(Data::Continue), false),
        ("ed", OpCode::Data(Data::Continue), true),
    ] {
        let frame = Frame::message(part.as_bytes().to_vec(), opcode, fin);
        within("send a fragment", client.send(Message::Frame(frame)))
            .await
            .expect("send a fragment");
    }
    let back = within("fragmented echo", client.next())
        .await
        .expect("open")
        .expect("a message");
    assert_eq!(back, Message::text("fragmented"));

    within(
        "ping",
        client.send(Message::Ping(b"are you there".to_vec().into())),
    )
    .await
    .expect("ping");
    let pong = within("pong", client.next())
        .await
        .expect("open")
        .expect("a message");
    assert_eq!(pong, Message::Pong(b"are you there".to_vec().into()));

    let close = CloseFrame {
        code: CloseCode::from(4005),
        reason: "tungstenite done".into(),
    };
    within("close", client.close(Some(close.clone())))
        .await
        .expect("close");
    let echoed = within("close echo", async {
        // Bounded: nothing but the close frame is outstanding.
        for _ in 0..4 {
            match client.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("no close frame came back: {other:?}"),
            }
        }
        panic!("no close frame came back");
    })
    .await;
    assert_eq!(echoed, Some(close));
}

/// Fails the test, saying how `.ci/run` installs it, unless `python3` can import `h2`.
#[cfg(all(unix, feature = "hyper"))]
async fn require_python_h2() {
    let output = within(
        "python3 -c 'import h2'",
        Command::new("python3")
            .args(["-c", "import h2; print(h2.__version__)"])
            .kill_on_drop(true)
            .output(),
    )
    .await;
    match output {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "python3 cannot import h2 ({}); .ci/run installs it: {PIP_INSTALL_H2}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ),
        Err(e) => panic!("python3 is not available ({e}); the interop tests need it"),
    }
}

// Rules 30–34 with an independent HTTP/2 implementation: Python's `h2` through the `axum`
// example (h2c with prior knowledge on its HTTP/1.1 port) to the bundled echo backend.
#[cfg(all(unix, feature = "hyper"))]
#[tokio::test]
async fn python_h2_client_through_the_axum_example_to_echo_backend() {
    require_python_h2().await;
    let (_example, addr) = support::start_example("axum", &["--listen", "127.0.0.1:0"]).await;
    let mut command = Command::new("python3");
    command.arg(script("h2_websocket.py")).arg(&addr).arg("/ws");
    run_client(
        command,
        &format!("python h2 through the axum example ({addr})"),
        PYTHON_H2_CASES,
    )
    .await;
}
