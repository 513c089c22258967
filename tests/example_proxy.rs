//! The `proxy` example's command-line contract (its header comment in `examples/proxy.rs`):
//! `--listen`, the in-process echo backend when no `--backend` is given, `listening on ADDR`
//! on stdout when ready, a drain and a zero exit on SIGTERM, exit code 2 and the usage on a
//! bad argument, a failure when the address is taken, and a listening socket inherited
//! through `LISTEN_FDS` (closed at once on SIGTERM; anything else passed is an error).
//!
//! The example binary is the one `cargo test` builds next to the test binaries
//! (`target/<profile>/examples/proxy`); if it is missing (a run limited to this test with
//! `--test`), it is built first with the same cargo (`support::example_binary`). Every child
//! is killed when dropped, and every wait is bounded.
#![cfg(unix)]

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};

use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

use support::{
    example_binary, finish, run_example_to_exit, start_example, terminate, within_for, PROCESS_STEP,
};

#[tokio::test]
async fn echoes_through_the_bundled_backend_and_drains_on_sigterm() {
    let (child, addr) =
        start_example("proxy", &["--listen", "127.0.0.1:0", "--threads", "2"]).await;
    let url = format!("ws://{addr}/chat");

    // Enough connections that both threads' listeners take some.
    let mut clients = Vec::new();
    for i in 0..16 {
        let (mut ws, response) = within_for(
            PROCESS_STEP,
            "handshake",
            tokio_tungstenite::connect_async(&url),
        )
        .await
        .expect("handshake");
        assert_eq!(response.status(), 101);
        let text = format!("hello {i}");
        within_for(PROCESS_STEP, "send", ws.send(Message::text(text.clone())))
            .await
            .unwrap();
        let echoed = within_for(PROCESS_STEP, "echo", ws.next())
            .await
            .expect("stream open")
            .expect("a message");
        assert_eq!(echoed, Message::text(text));
        clients.push(ws);
    }

    // One closes cleanly before the signal; the rest are open when it comes.
    let mut first = clients.remove(0);
    within_for(PROCESS_STEP, "close", first.close(None))
        .await
        .unwrap();
    while let Some(Ok(_)) = within_for(PROCESS_STEP, "the end of the stream", first.next()).await {}
    // Its TCP connection too (a client that keeps it open is cut after the grace period).
    drop(first);

    terminate(&child).await;
    // During the grace period open tunnels still work.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ws = &mut clients[0];
    within_for(
        PROCESS_STEP,
        "send in the grace period",
        ws.send(Message::binary(vec![7u8; 1000])),
    )
    .await
    .unwrap();
    let echoed = within_for(PROCESS_STEP, "echo in the grace period", ws.next()).await;
    assert_eq!(echoed.unwrap().unwrap(), Message::binary(vec![7u8; 1000]));

    // Closing the others lets the proxy finish its drain before the grace period ends.
    for mut ws in clients {
        within_for(PROCESS_STEP, "close", ws.close(None))
            .await
            .unwrap();
        while let Some(Ok(_)) = within_for(PROCESS_STEP, "the end of the stream", ws.next()).await {
        }
    }
    let (code, stderr) = finish(child).await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains("stopped: 16 connections accepted"),
        "stderr: {stderr}"
    );
    assert!(stderr.contains(" 0 cut"), "stderr: {stderr}");
}

/// Runs the example with `args` to its exit (bounded), with its output.
async fn run_to_exit(args: &[&str]) -> std::process::Output {
    run_example_to_exit("proxy", args).await
}

#[tokio::test]
async fn a_bad_argument_exits_2_with_the_usage() {
    let output = run_to_exit(&["--threads", "0"]).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad --threads"), "{stderr}");
    assert!(stderr.contains("usage: proxy"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn a_taken_address_is_an_error_not_a_shared_port() {
    // A plain listener (no SO_REUSEPORT) holds the port: the proxy must not start.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = run_to_exit(&["--listen", &addr, "--backend", "127.0.0.1:9"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(output.stdout.is_empty(), "it announced a listener");
}

#[tokio::test]
async fn a_second_proxy_on_the_same_port_fails_instead_of_sharing_it() {
    // The first proxy listens with SO_REUSEPORT on every thread; a second one (which sets it
    // too) must not silently take a share of the connections.
    let (first, addr) =
        start_example("proxy", &["--listen", "127.0.0.1:0", "--threads", "2"]).await;
    let output = run_to_exit(&["--listen", &addr, "--backend", "127.0.0.1:9"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(output.stdout.is_empty(), "it announced a listener");
    drop(first);
}

#[tokio::test]
async fn help_prints_the_usage_and_exits_0() {
    for flag in ["--help", "-h"] {
        let output = run_to_exit(&[flag]).await;
        assert_eq!(output.status.code(), Some(0), "{flag}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.starts_with("usage: proxy"), "{stdout}");
        for option in [
            "--backend",
            "--route",
            "--balance",
            "--grace",
            "--idle-timeout",
            "--threads",
            "--proxy-protocol",
            "--send-proxy-protocol",
        ] {
            assert!(stdout.contains(option), "{option} missing from {stdout}");
        }
    }
}

#[tokio::test]
async fn a_shutdown_is_not_delayed_by_the_accept_back_off() {
    use tokio::io::AsyncBufReadExt;

    // Few file descriptors: past them `accept` fails with EMFILE and `serve` backs off, up
    // to a second per try. SIGTERM must still end it at once (here with no grace period).
    let binary = example_binary("proxy").await;
    let script = format!(
        "ulimit -n 40 && exec {} --listen 127.0.0.1:0 --threads 1 --grace 0 --backend 127.0.0.1:9",
        binary.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the proxy example");
    let addr = support::listening_on(&mut child, 1, PROCESS_STEP, "the proxy example").await;
    // Connections that send nothing hold their descriptors until the head deadline (10 s).
    let mut clients = Vec::new();
    for _ in 0..60 {
        clients.push(support::connect(addr.parse().unwrap()).await);
    }
    // Wait until the back-off has reached its one-second steps, then stop it: the proxy is
    // then (almost) a whole second away from its next accept.
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    within_for(PROCESS_STEP, "a one-second back-off", async {
        while let Some(line) = stderr.next_line().await.expect("read stderr") {
            if line.contains("backing off") && line.contains("backoff=1s") {
                return;
            }
        }
        panic!("the proxy's stderr ended before a one-second back-off");
    })
    .await;
    let asked = std::time::Instant::now();
    terminate(&child).await;
    let status = within_for(PROCESS_STEP, "the proxy to exit", child.wait())
        .await
        .expect("wait for the proxy");
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_millis(500), "exit took {took:?}");
}

/// `--tls-cert`/`--tls-key` terminate TLS (one acceptor for both threads), `--backend
/// wss://` with `--backend-ca` and `--backend unix:` reach TLS and Unix-socket backends, and
/// SIGHUP reloads the certificate files: new clients get the new certificate, an open tunnel
/// keeps working, and a reload from a broken file keeps the certificate and says why.
#[cfg(feature = "rustls")]
#[tokio::test]
async fn tls_termination_tls_and_unix_backends_and_sighup_reload() {
    use std::sync::{Arc, Mutex};
    use support::{eventually, served_certificate, tls_connect, TempDir, TestCa, TlsFront};
    use tokio::io::AsyncBufReadExt;

    let dir = TempDir::new("example-tls");
    let ca = TestCa::new("example client CA");
    let issued = ca.issue(&dir, "proxy", &["localhost"]);
    let backend_ca = TestCa::new("example backend CA");
    let front = TlsFront::start(
        &backend_ca.issue(&dir, "backend", &["localhost"]),
        support::spawn_echo().await,
    )
    .await;
    let socket = dir.join("echo.sock");
    let _unix = support::UnixFront::start(&socket, support::spawn_echo().await).await;

    let wss = format!("wss://localhost:{}", front.addr.port());
    let unix = format!("unix:{}", socket.display());
    let ca_file = backend_ca.write(&dir, "backend-ca.pem");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "2",
        "--tls-cert",
        issued.cert.to_str().unwrap(),
        "--tls-key",
        issued.key.to_str().unwrap(),
        "--backend",
        &wss,
        "--backend",
        &unix,
        "--backend-ca",
        ca_file.to_str().unwrap(),
    ];
    let (mut child, addr) = start_example("proxy", &args).await;
    let addr: std::net::SocketAddr = addr.parse().expect("an address");
    let stderr = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let seen = stderr.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.lock().unwrap().push(line);
        }
    });
    let said = |what: &'static str| {
        let stderr = stderr.clone();
        move || stderr.lock().unwrap().iter().any(|l| l.contains(what))
    };

    let url = format!("wss://localhost:{}/chat", addr.port());
    let open = |config| {
        let url = url.clone();
        async move {
            let tls = tls_connect(addr, "localhost", config).await;
            let cert = served_certificate(&tls);
            let (ws, _) = within_for(
                PROCESS_STEP,
                "handshake",
                tokio_tungstenite::client_async(url.as_str(), tls),
            )
            .await
            .expect("handshake");
            (ws, cert)
        }
    };
    async fn echo<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, text: &str)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        within_for(PROCESS_STEP, "send", ws.send(Message::text(text)))
            .await
            .unwrap();
        let back = within_for(PROCESS_STEP, "echo", ws.next()).await;
        assert_eq!(back.unwrap().unwrap(), Message::text(text));
    }

    // Round-robin over the two backends: one goes over TLS, one over the Unix socket.
    let (mut live, cert) = open(ca.client_config(&["http/1.1"])).await;
    assert!(cert == issued.der);
    echo(&mut live, "first").await;
    let (mut second, _) = open(ca.client_config(&["http/1.1"])).await;
    echo(&mut second, "second").await;
    assert_eq!(
        front.handshakes().len(),
        1,
        "one of two went to the wss backend"
    );

    // Renewed files, then SIGHUP.
    let renewed_ca = TestCa::new("renewed CA");
    let renewed = renewed_ca.issue(&dir, "renewed", &["localhost"]);
    std::fs::copy(&renewed.cert, &issued.cert).unwrap();
    std::fs::copy(&renewed.key, &issued.key).unwrap();
    hangup(&child).await;
    assert!(
        eventually(PROCESS_STEP, said("certificates reloaded")).await,
        "no reload line: {:?}",
        stderr.lock().unwrap()
    );
    let (mut third, cert) = open(renewed_ca.client_config(&[])).await;
    assert!(cert == renewed.der, "a new client got the old certificate");
    echo(&mut third, "third").await;
    echo(&mut live, "the first tunnel lives on").await;

    // A broken key: the reload fails, says why, and the renewed certificate stays.
    std::fs::write(&issued.key, "garbage").unwrap();
    hangup(&child).await;
    assert!(
        eventually(PROCESS_STEP, said("kept the old certificates")).await,
        "no failed-reload line: {:?}",
        stderr.lock().unwrap()
    );
    let key = issued.key.to_string_lossy().into_owned();
    assert!(
        stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("kept the old certificates") && l.contains(&key)),
        "the failed reload does not name {key}"
    );
    let (mut fourth, cert) = open(renewed_ca.client_config(&[])).await;
    assert!(cert == renewed.der);
    echo(&mut fourth, "fourth").await;
    echo(&mut live, "still").await;

    drop((live, second, third, fourth));
    terminate(&child).await;
    let status = within_for(PROCESS_STEP, "the proxy to exit", child.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    let _ = within_for(PROCESS_STEP, "stderr to close", reader).await;
}

/// Sends SIGHUP with the `kill` command.
#[cfg(feature = "rustls")]
async fn hangup(child: &tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    let status = within_for(
        PROCESS_STEP,
        "kill -HUP",
        Command::new("kill").args(["-HUP", &pid]).status(),
    )
    .await
    .expect("run kill");
    assert!(status.success(), "kill -HUP {pid} failed");
}

/// Starts the proxy example as systemd socket activation or a parent process would: with a
/// socket of `kind` (`listening`, `bound`, `udp`, `file`) as descriptor 3, `LISTEN_FDS=1` and
/// `LISTEN_PID` set to its own pid (Python creates the socket, then `exec`s the proxy in the
/// same process).
fn with_inherited_fd(kind: &str, binary: &std::path::Path, args: &[&str]) -> Command {
    const PARENT: &str = r#"
import os, socket, sys
kind, exe, args = sys.argv[1], sys.argv[2], sys.argv[3:]
if kind == "listening":
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(128)
elif kind == "bound":
    s = socket.socket(); s.bind(("127.0.0.1", 0))
elif kind == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
else:
    s = open("/dev/null")
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(exe, [exe] + args)
"#;
    let mut command = Command::new("python3");
    command
        .args(["-c", PARENT, kind])
        .arg(binary)
        .args(args)
        .kill_on_drop(true);
    command
}

// Listener inheritance: the proxy serves the socket it was given (on every thread), and a
// SIGTERM closes it at once (new connects refused) while open tunnels drain.
#[tokio::test]
async fn serves_an_inherited_listener_and_closes_it_on_sigterm() {
    let binary = example_binary("proxy").await;
    let mut child = with_inherited_fd("listening", &binary, &["--threads", "2", "--grace", "5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start python3 and the proxy");
    let addr = support::listening_on(&mut child, 1, PROCESS_STEP, "the proxy").await;
    let mut clients = Vec::new();
    for i in 0..4 {
        let url = format!("ws://{addr}/{i}");
        let connect = tokio_tungstenite::connect_async(&url);
        let (ws, _) = within_for(PROCESS_STEP, "handshake", connect)
            .await
            .expect("handshake through the inherited listener");
        clients.push(ws);
    }
    let signalled = std::time::Instant::now();
    terminate(&child).await;
    // New connects are refused within moments (not queued), while tunnels still work.
    let refused = async {
        loop {
            match tokio::net::TcpStream::connect(&addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    within_for(Duration::from_secs(1), "connects to be refused", refused).await;
    let ws = &mut clients[0];
    within_for(PROCESS_STEP, "send", ws.send(Message::text("still here")))
        .await
        .unwrap();
    let echoed = within_for(PROCESS_STEP, "echo", ws.next()).await;
    assert_eq!(echoed.unwrap().unwrap(), Message::text("still here"));
    drop(clients);
    let (code, stderr) = finish(child).await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "it waited for the grace period"
    );
}

// An inherited descriptor that is not a listening TCP socket is an error, not a server that
// never accepts.
#[tokio::test]
async fn an_inherited_descriptor_that_is_not_a_listening_socket_is_an_error() {
    let binary = example_binary("proxy").await;
    let cases = [
        ("bound", "not a listening one"),
        ("udp", "not a valid tcp socket"),
        ("file", "is not a socket"),
    ];
    for (kind, why) in cases {
        let output = with_inherited_fd(kind, &binary, &[]).output();
        let output = within_for(PROCESS_STEP, "the proxy to exit", output)
            .await
            .expect("run python3 and the proxy");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{kind}: {stderr}");
        assert!(
            stderr.contains("inherited descriptor 3"),
            "{kind}: {stderr}"
        );
        assert!(stderr.contains(why), "{kind}: {stderr}");
        assert!(output.stdout.is_empty(), "{kind}: it announced a listener");
    }
}
