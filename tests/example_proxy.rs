//! The `proxy` example's command-line contract (DESIGN.md): `--listen`, the in-process echo
//! backend when no `--backend` is given, `listening on ADDR` on stdout when ready, a drain
//! and a zero exit on SIGTERM, exit code 2 and the usage on a bad argument, and a failure
//! when the address is taken.
//!
//! The example binary is the one `cargo test` builds next to the test binaries
//! (`target/<profile>/examples/proxy`); if it is missing (a run limited to this test with
//! `--test`), it is built first with the same cargo. Every child is killed when dropped, and
//! every wait is bounded.
#![cfg(unix)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

/// The bound on one step: a start, a handshake, a message, an exit.
const STEP: Duration = Duration::from_secs(20);

/// `target/<profile>/examples/proxy`, built if missing.
async fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/example_proxy-HASH → target/<profile>/examples/proxy
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let proxy = profile_dir.join("examples").join("proxy");
    if !proxy.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "proxy", "--all-features"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status();
        let status = tokio::time::timeout(Duration::from_secs(600), status)
            .await
            .expect("building the proxy example timed out")
            .expect("cargo runs");
        assert!(status.success(), "cargo build --example proxy failed");
    }
    assert!(proxy.exists(), "no proxy example at {}", proxy.display());
    proxy
}

/// Starts the example with `args`; returns the child and the address it announced.
async fn start(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(example().await)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the proxy example");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(STEP, lines.next_line())
        .await
        .expect("no `listening on` line in time")
        .expect("read stdout")
        .expect("stdout closed before `listening on`");
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, addr)
}

/// Sends SIGTERM with the `kill` command (no `unsafe` outside the splice module).
async fn terminate(child: &Child) {
    let pid = child.id().expect("the proxy is running").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid} failed");
}

/// Waits for the exit; returns the exit code and everything written to stderr.
async fn finish(mut child: Child) -> (Option<i32>, String) {
    let mut stderr = child.stderr.take().expect("piped stderr");
    let mut text = String::new();
    let (read, status) = tokio::time::timeout(STEP, async {
        tokio::join!(stderr.read_to_string(&mut text), child.wait())
    })
    .await
    .expect("the proxy did not exit in time");
    read.expect("read stderr");
    (status.expect("wait for the proxy").code(), text)
}

#[tokio::test]
async fn echoes_through_the_bundled_backend_and_drains_on_sigterm() {
    let (child, addr) = start(&["--listen", "127.0.0.1:0", "--threads", "2"]).await;
    let url = format!("ws://{addr}/chat");

    // Enough connections that both threads' listeners take some.
    let mut clients = Vec::new();
    for i in 0..16 {
        let (mut ws, response) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(&url))
            .await
            .expect("handshake in time")
            .expect("handshake");
        assert_eq!(response.status(), 101);
        let text = format!("hello {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let echoed = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("echo in time")
            .expect("stream open")
            .expect("a message");
        assert_eq!(echoed, Message::text(text));
        clients.push(ws);
    }

    // One closes cleanly before the signal; the rest are open when it comes.
    let mut first = clients.remove(0);
    first.close(None).await.unwrap();
    while let Some(Ok(_)) = tokio::time::timeout(STEP, first.next()).await.unwrap() {}
    // Its TCP connection too (a client that keeps it open is cut after the grace period).
    drop(first);

    terminate(&child).await;
    // During the grace period open tunnels still work.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ws = &mut clients[0];
    ws.send(Message::binary(vec![7u8; 1000])).await.unwrap();
    let echoed = tokio::time::timeout(STEP, ws.next()).await.unwrap();
    assert_eq!(echoed.unwrap().unwrap(), Message::binary(vec![7u8; 1000]));

    // Closing the others lets the proxy finish its drain before the grace period ends.
    for mut ws in clients {
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = tokio::time::timeout(STEP, ws.next()).await.unwrap() {}
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
    let output = Command::new(example().await)
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(STEP, output)
        .await
        .expect("exit in time")
        .expect("run the proxy example")
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
