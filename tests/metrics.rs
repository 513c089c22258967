//! What an operator sees (issue 13, "Metrics"): the `proxy` example's `--metrics ADDR`
//! scraped and checked against the handshakes and the bytes each test made, its errors for
//! bad flags and a metrics address in use, the axum example's live `/stats`, and
//! `Proxy::stats` over a drain.
//!
//! The examples run as processes (`support::process`); the byte counts are exact because
//! the tests speak WebSocket frames with the raw client: the proxy counts tunnel bytes after
//! the `101`, framing included, heads excluded.
#![cfg(unix)]

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use support::{
    client_frame, closed_port, connect, example_binary, listening_on, raw_exchange,
    read_exact_within, read_head, read_to_close, send, server_frame, spawn_echo, terminate,
    upgrade_request, within_for, ws_request, Running, PROCESS_STEP, STEP,
};

const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
/// Close status 1000 (normal closure).
const NORMAL: [u8; 2] = [0x03, 0xe8];

/// The `proxy` example with `--metrics 127.0.0.1:0` and `args`, and where it said it serves.
struct Example {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl Example {
    async fn start(args: &[&str]) -> Example {
        let mut all = vec!["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut child = Command::new(example_binary("proxy").await)
            .args(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the proxy example");
        let addr = listening_on(&mut child, 1, PROCESS_STEP, "the proxy example").await;
        // `metrics on http://ADDR/metrics` went to stderr before `listening on`.
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let metrics = within_for(PROCESS_STEP, "the metrics address", async {
            loop {
                let line = lines
                    .next_line()
                    .await
                    .expect("read stderr")
                    .expect("a metrics line before stderr closes");
                if let Some(rest) = line.strip_prefix("metrics on http://") {
                    let addr = rest.strip_suffix("/metrics").expect("…/metrics");
                    return addr.parse::<SocketAddr>().expect("an address");
                }
            }
        })
        .await;
        // The rest of stderr is drained, so that the child never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Example {
            child,
            addr: addr.parse().expect("a proxy address"),
            metrics,
        }
    }

    /// One scrape of `/metrics`: the status and the text.
    async fn scrape(&self) -> (Option<u16>, String) {
        let request = b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n";
        let got = raw_exchange(self.metrics, request, STEP).await;
        let text = String::from_utf8_lossy(got.body()).into_owned();
        (got.status(), text)
    }

    /// Scrapes until `series` has `value` (within [`STEP`]); the last text.
    async fn scrape_until(&self, series: &str, value: f64) -> String {
        self.scrape_until_all(&[(series, value)]).await
    }

    /// Scrapes until every series has its value (within [`STEP`]): a connection is counted
    /// as it ends, a moment after its client saw the end. The last text.
    async fn scrape_until_all(&self, expected: &[(&str, f64)]) -> String {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let (_, text) = self.scrape().await;
            if expected
                .iter()
                .all(|(series, value)| sample(&text, series) == Some(*value))
            {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never reached {expected:?}; last scrape:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        terminate(&self.child).await;
        let mut child = self.child;
        let status = within_for(PROCESS_STEP, "the proxy to exit", child.wait())
            .await
            .expect("wait");
        assert_eq!(status.code(), Some(0));
    }
}

/// The value of the series `series` (name and labels exactly as rendered) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .and_then(|(_, value)| value.parse().ok())
}

/// One WebSocket session through `proxy` with the echo backend behind it: the handshake,
/// one binary frame of `payload` echoed, a close echoed, then the end of the connection.
/// The bytes the tunnel carried: (client to backend, backend to client).
async fn echo_session(proxy: SocketAddr, path: &str, payload: &[u8]) -> (u64, u64) {
    let mut client = connect(proxy).await;
    let key = support::key_line();
    let head = upgrade_request("proxy.test", path, &[&key, "Sec-WebSocket-Version: 13"]);
    assert!(send(&mut client, &head).await);
    let answer = read_head(&mut client, STEP).await;
    assert_eq!(answer.status(), Some(101), "{}", answer.head());
    assert!(answer.body().is_empty(), "nothing but the head yet");

    let data = client_frame(OP_BINARY, payload);
    let close = client_frame(OP_CLOSE, &NORMAL);
    assert!(send(&mut client, &data).await);
    let echoed = server_frame(OP_BINARY, payload);
    let got = read_exact_within(&mut client, echoed.len(), STEP).await;
    assert!(got == echoed, "the frame came back");
    assert!(send(&mut client, &close).await);
    let rest = read_to_close(&mut client, STEP).await;
    let close_echo = server_frame(OP_CLOSE, &NORMAL);
    assert_eq!(rest.bytes, close_echo, "the close came back, then the end");
    assert!(rest.closed);
    drop(client);
    (
        (data.len() + close.len()) as u64,
        (echoed.len() + close_echo.len()) as u64,
    )
}

#[tokio::test]
async fn a_scrape_counts_the_handshakes_and_bytes_this_test_made() {
    let backend = spawn_echo().await;
    let backend_arg = backend.to_string();
    let proxy = Example::start(&["--backend", &backend_arg, "--threads", "2"]).await;

    // `/metrics` answers as soon as `listening on` is printed: no retry here.
    let (status, text) = proxy.scrape().await;
    assert_eq!(status, Some(200), "{text}");
    assert_eq!(sample(&text, "wsrelay_tunnels_active"), Some(0.0), "{text}");
    let c2b = r#"wsrelay_tunnel_bytes_total{direction="client_to_backend"}"#;
    let b2c = r#"wsrelay_tunnel_bytes_total{direction="backend_to_client"}"#;
    assert_eq!(sample(&text, c2b), Some(0.0), "{text}");

    // Three tunnels with frames of each length encoding (7-bit, 16-bit, 64-bit).
    let (mut to_backend, mut to_client) = (0, 0);
    for size in [10, 300, 70_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let (sent, received) = echo_session(proxy.addr, "/chat", &payload).await;
        to_backend += sent;
        to_client += received;
    }
    // One open tunnel, seen by the gauge.
    let mut open = connect(proxy.addr).await;
    assert!(send(&mut open, &ws_request(&[])).await);
    assert_eq!(read_head(&mut open, STEP).await.status(), Some(101));
    // Two refusals the proxy answers itself, without a backend.
    let no_key = upgrade_request("proxy.test", "/", &["Sec-WebSocket-Version: 13"]);
    assert_eq!(
        raw_exchange(proxy.addr, &no_key, STEP).await.status(),
        Some(400)
    );
    let key = support::key_line();
    let old = upgrade_request("proxy.test", "/", &[&key, "Sec-WebSocket-Version: 8"]);
    assert_eq!(
        raw_exchange(proxy.addr, &old, STEP).await.status(),
        Some(426)
    );

    // Bytes are counted as each tunnel closes: wait for the third close (and the refusals).
    let text = proxy
        .scrape_until_all(&[
            (r#"wsrelay_tunnels_closed_total{reason="done"}"#, 3.0),
            (r#"wsrelay_handshakes_total{status="400"}"#, 1.0),
            (r#"wsrelay_handshakes_total{status="426"}"#, 1.0),
        ])
        .await;
    let get = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series}:\n{text}"));
    assert_eq!(get(c2b), to_backend as f64);
    assert_eq!(get(b2c), to_client as f64);
    assert_eq!(get(r#"wsrelay_handshakes_total{status="101"}"#), 4.0);
    assert_eq!(get(r#"wsrelay_handshakes_total{status="400"}"#), 1.0);
    assert_eq!(get(r#"wsrelay_handshakes_total{status="426"}"#), 1.0);
    assert_eq!(get("wsrelay_tunnels_active"), 1.0);
    assert_eq!(get("wsrelay_tunnel_duration_seconds_count"), 3.0);
    // Four connects to the backend, labelled with it as configured; none failed.
    let connects =
        format!(r#"wsrelay_backend_connect_duration_seconds_count{{backend="{backend}"}}"#);
    assert_eq!(get(&connects), 4.0);
    assert!(
        !text.contains("wsrelay_backend_connect_failures_total{"),
        "{text}"
    );
    // Buckets, as the example configures them (not a summary).
    assert!(
        text.contains(r#"wsrelay_tunnel_duration_seconds_bucket{le="+Inf"} 3"#),
        "{text}"
    );

    // The open tunnel closes: the gauge goes back to zero.
    drop(open);
    proxy.scrape_until("wsrelay_tunnels_active", 0.0).await;
    proxy.stop().await;
}

#[tokio::test]
async fn backend_connect_failures_are_counted_per_backend() {
    let dead = closed_port().await;
    let dead_arg = dead.to_string();
    let proxy = Example::start(&["--backend", &dead_arg, "--threads", "1"]).await;
    for _ in 0..2 {
        let got = raw_exchange(proxy.addr, &ws_request(&[]), STEP).await;
        assert_eq!(got.status(), Some(502), "{}", got.head());
    }
    let failures = format!(r#"wsrelay_backend_connect_failures_total{{backend="{dead}"}}"#);
    let handshakes = r#"wsrelay_handshakes_total{status="502"}"#;
    proxy
        .scrape_until_all(&[(&failures, 2.0), (handshakes, 2.0)])
        .await;
    proxy.stop().await;
}

#[tokio::test]
async fn only_metrics_is_served_on_the_metrics_address() {
    let proxy = Example::start(&["--threads", "1"]).await;
    let request = b"GET / HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n";
    let got = raw_exchange(proxy.metrics, request, STEP).await;
    assert_eq!(got.status(), Some(404), "{}", got.head());
    let (status, text) = proxy.scrape().await;
    assert_eq!(status, Some(200));
    assert!(
        text.contains("# TYPE wsrelay_tunnels_active gauge"),
        "{text}"
    );
    proxy.stop().await;
}

/// Runs the proxy example with `args`, expecting it to exit at once; its code and stderr.
async fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let child = Command::new(example_binary("proxy").await)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = within_for(PROCESS_STEP, "the proxy example to exit", child)
        .await
        .expect("run the proxy example");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_metrics_address_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let (code, stderr) = run_to_exit(&["--listen", "127.0.0.1:0", "--metrics", &addr]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot serve metrics on {addr}")),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("in use"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn bad_operations_flags_are_clear_errors() {
    for (args, says) in [
        (
            &["--metrics", "localhost"][..],
            "bad --metrics \"localhost\"",
        ),
        (&["--metrics"][..], "--metrics needs a value"),
        (
            &["--max-connections", "0"][..],
            "bad --max-connections \"0\"",
        ),
        (
            &["--max-connections", "-3"][..],
            "bad --max-connections \"-3\"",
        ),
        (&["--max-per-ip", "many"][..], "bad --max-per-ip \"many\""),
        (&["--max-per-ip", "0"][..], "bad --max-per-ip \"0\""),
        (&["--rate-per-ip", "10/h"][..], "bad --rate-per-ip \"10/h\""),
        (&["--rate-per-ip", "0/s"][..], "bad --rate-per-ip \"0/s\""),
        (&["--rate-per-ip", "fast"][..], "bad --rate-per-ip \"fast\""),
        (
            &["--rate-burst", "5"][..],
            "--rate-burst needs --rate-per-ip",
        ),
        (
            &["--rate-per-ip", "5/s", "--rate-burst", "0"][..],
            "bad --rate-burst \"0\"",
        ),
        (
            &["--max-per-addr", "3"][..],
            "unknown argument \"--max-per-addr\"",
        ),
    ] {
        let (code, stderr) = run_to_exit(args).await;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(stderr.contains("usage: proxy"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn help_lists_the_operations_flags() {
    let output = Command::new(example_binary("proxy").await)
        .arg("--help")
        .kill_on_drop(true)
        .output();
    let output = within_for(PROCESS_STEP, "--help", output)
        .await
        .expect("run");
    assert_eq!(output.status.code(), Some(0));
    let usage = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--metrics ADDR",
        "--max-connections N",
        "--max-per-ip N",
        "--rate-per-ip",
        "--rate-burst N",
    ] {
        assert!(usage.contains(flag), "{flag} missing from:\n{usage}");
    }
}

/// `GET path` on the axum example: status and body.
async fn get(addr: SocketAddr, path: &str) -> (Option<u16>, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
    let got = raw_exchange(addr, request.as_bytes(), STEP).await;
    (
        got.status(),
        String::from_utf8_lossy(got.body()).into_owned(),
    )
}

/// The number after `"name":` in the flat JSON `json`.
fn json_number(json: &str, name: &str) -> u64 {
    let key = format!("\"{name}\":");
    let at = json
        .find(&key)
        .unwrap_or_else(|| panic!("{name} in {json}"))
        + key.len();
    let digits: String = json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{name} in {json}"))
}

#[tokio::test]
async fn the_axum_page_shows_the_proxys_live_numbers() {
    let (child, addr) = support::start_example("axum", &["--listen", "127.0.0.1:0"]).await;
    let addr: SocketAddr = addr.parse().expect("an address");

    let (status, page) = get(addr, "/").await;
    assert_eq!(status, Some(200));
    assert!(page.contains("fetch(\"/stats\""), "the page reads /stats");
    assert!(page.contains("tunnels open"));

    let (sent, received) = echo_session(addr, "/ws", b"hello through axum").await;
    let refused = upgrade_request("app", "/ws", &["Sec-WebSocket-Version: 13"]);
    assert_eq!(raw_exchange(addr, &refused, STEP).await.status(), Some(400));

    let deadline = tokio::time::Instant::now() + STEP;
    let json = loop {
        let (status, json) = get(addr, "/stats").await;
        assert_eq!(status, Some(200), "{json}");
        if json_number(&json, "tunnels_closed") == 1 {
            break json;
        }
        assert!(tokio::time::Instant::now() < deadline, "{json}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(json_number(&json, "tunnels_active"), 0, "{json}");
    assert_eq!(json_number(&json, "switched"), 1, "{json}");
    assert_eq!(json_number(&json, "client_error"), 1, "{json}");
    assert_eq!(json_number(&json, "client_to_backend"), sent, "{json}");
    assert_eq!(json_number(&json, "backend_to_client"), received, "{json}");
    drop(child);
}

#[tokio::test]
async fn stats_count_the_connections_a_drain_let_finish_and_cut() {
    let echo = spawn_echo().await;
    let mut running = Running::start(
        wsrelay::Proxy::builder()
            .backend(echo.to_string())
            .grace_period(Duration::from_millis(300)),
    )
    .await;
    // One tunnel that ends during the grace period, one that outlives it.
    let mut ends = connect(running.addr).await;
    let mut stays = connect(running.addr).await;
    for client in [&mut ends, &mut stays] {
        assert!(send(client, &ws_request(&[])).await);
        assert_eq!(read_head(client, STEP).await.status(), Some(101));
    }
    let stats = running.proxy.stats();
    assert_eq!((stats.tunnels_active, stats.handshakes_switched), (2, 2));

    running.shutdown().await;
    drop(ends);
    let proxy = running.proxy.clone();
    let (summary, _) = running.stop(STEP).await;
    assert_eq!((summary.drained, summary.cut), (1, 1));
    let stats = proxy.stats();
    assert_eq!((stats.drained, stats.cut), (1, 1), "{stats:?}");
    assert_eq!(stats.tunnels_active, 0, "{stats:?}");
    assert_eq!(stats.tunnels_closed, 2, "{stats:?}");
    drop(stays);
}
