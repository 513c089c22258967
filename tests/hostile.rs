//! Hostile raw bytes against `Proxy::serve`: rules 1–22 as `wsrelay::rules` numbers them
//! (accepting the client's request, rewriting it for the backend, checking the
//! backend's answer, rewriting the answer for the client, and the leftovers).
//!
//! Every test runs a real proxy on `127.0.0.1:0` in front of a scripted backend
//! (`support::Backend`) that records every connection and the exact bytes it
//! received, and asserts three things: the exact status line the client receives, whether the
//! backend was contacted at all, and (when it was) what it saw. Each test is named after the
//! rule it checks.

mod support;

use std::time::{Duration, Instant};

use http::HeaderValue;
use wsrelay::handshake::{HostPolicy, RewriteConfig};
use wsrelay::wire::HeadLimits;
use wsrelay::{Proxy, ProxyBuilder};

use support::{
    accept_for, builder_for, connect, head_end, key_line, raw_request, read_exact_within,
    read_head, read_to_close, send, switch_with, ws_request, Backend, Conn, Got, Running, Script,
    Then, KEY, STEP,
};

/// How long a refused client's connection may take to be answered and closed.
const ANSWER: Duration = Duration::from_secs(5);
/// How long to leave a wrongly made backend connection to show up before checking there is
/// none.
const SETTLE: Duration = Duration::from_millis(100);
/// The status line of a refused `101`.
const BAD_GATEWAY: &str = "HTTP/1.1 502 Bad Gateway";
/// The status line of an accepted upgrade.
const SWITCHING: &str = "HTTP/1.1 101 Switching Protocols";
/// A second request a smuggler writes after a refused upgrade, hoping to reach the backend's
/// internal endpoints over the connection it thinks is a tunnel.
const SMUGGLED: &[u8] = b"GET /internal/admin HTTP/1.1\r\nHost: localhost\r\n\r\n";
/// A masked WebSocket text frame ("Hello", RFC 6455 §5.7).
const FRAME: &[u8] = &[
    0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
];

// ---------------------------------------------------------------------------------------------
// Harness

/// Sends `request` to a proxy (configured by `configure`) in front of a backend that would
/// accept any upgrade, and checks that the client gets `status_line`, that its connection is
/// closed, and that the backend was never contacted (rule 9).
async fn refused_with(
    configure: impl FnOnce(ProxyBuilder) -> ProxyBuilder,
    request: &[u8],
    status_line: &str,
) -> Got {
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    let proxy = Running::start(configure(builder_for(&backend))).await;
    let mut client = connect(proxy.addr).await;
    assert!(send(&mut client, request).await, "the request was written");
    let got = read_to_close(&mut client, ANSWER).await;
    assert_eq!(
        got.status_line(),
        status_line,
        "for request {:?}, got {:?}",
        String::from_utf8_lossy(request),
        String::from_utf8_lossy(&got.bytes)
    );
    assert!(
        got.closed,
        "the proxy closes the connection after {status_line}"
    );
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        backend.accepted(),
        0,
        "a refused handshake never reaches the backend (rule 9)"
    );
    got
}

/// [`refused_with`] and the default configuration.
async fn refused(request: &[u8], status_line: &str) -> Got {
    refused_with(|b| b, request, status_line).await
}

/// Sends `request` (and whatever bytes follow it in the same write) through a proxy with
/// `rewrite` to a backend that accepts with a correct `101`; checks the client gets the `101`;
/// returns what the client read and the backend's record of the connection.
async fn upgraded_with(rewrite: RewriteConfig, request: &[u8]) -> (Got, Conn) {
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    let proxy = Running::start(builder_for(&backend).rewrite(rewrite)).await;
    let mut client = connect(proxy.addr).await;
    assert!(send(&mut client, request).await, "the request was written");
    let got = read_head(&mut client, ANSWER).await;
    assert_eq!(
        got.status_line(),
        SWITCHING,
        "for request {:?}, got {:?}",
        String::from_utf8_lossy(request),
        String::from_utf8_lossy(&got.bytes)
    );
    assert_eq!(backend.accepted(), 1, "one backend connection per upgrade");
    let conn = backend.conn(0);
    assert!(conn.head_len.is_some(), "the backend saw a complete head");
    (got, conn)
}

async fn upgraded(request: &[u8]) -> (Got, Conn) {
    upgraded_with(RewriteConfig::default(), request).await
}

/// The backend answers `answer` (computed from the request head it got) and holds the
/// connection; the client, which sent a valid handshake with a frame in the same packet,
/// must get exactly `status_line` and then a closed connection, and nothing it writes after
/// the answer (nor the frame sent with its head) may ever reach the backend: no tunnel.
async fn no_tunnel(
    request: &[u8],
    answer: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static,
    then: Then,
    status_line: &str,
) -> Got {
    let backend = Backend::start(Script::with(answer, then)).await;
    let proxy = Running::start(builder_for(&backend)).await;
    let mut client = connect(proxy.addr).await;
    let mut first = request.to_vec();
    first.extend_from_slice(FRAME);
    assert!(send(&mut client, &first).await, "the request was written");
    let got = read_to_close(&mut client, ANSWER).await;
    assert_eq!(
        got.status_line(),
        status_line,
        "got {:?}",
        String::from_utf8_lossy(&got.bytes)
    );
    assert!(
        got.closed,
        "the client connection is closed after {status_line}"
    );
    // The client keeps talking as if a tunnel were open: a frame, then a smuggled request.
    let _ = send(&mut client, FRAME).await;
    let _ = send(&mut client, SMUGGLED).await;
    tokio::time::sleep(SETTLE).await;
    let conn = backend.closed(0, ANSWER).await;
    assert_eq!(
        conn.head_len,
        Some(conn.bytes.len()),
        "the backend received only the request head, nothing the client sent after it: {:?}",
        String::from_utf8_lossy(&conn.bytes)
    );
    assert_eq!(backend.accepted(), 1, "no second backend connection either");
    got
}

/// A handshake request made of `lines`.
fn request_of(lines: &[&str]) -> Vec<u8> {
    raw_request(lines)
}

// ---------------------------------------------------------------------------------------------
// Rules 1–9: accepting the client's request

/// One test per refused request: the rule in the name, the request, the exact status line.
macro_rules! refused_cases {
    ($($(#[$doc:meta])* $name:ident: $request:expr => $status:expr;)*) => {$(
        $(#[$doc])*
        #[tokio::test]
        async fn $name() {
            refused(&$request, $status).await;
        }
    )*};
}

refused_cases! {
    /// Rule 1: only `GET` upgrades.
    rule_01_post_is_refused_with_405:
        request_of(&["POST /ws HTTP/1.1", "Host: proxy.test", "Upgrade: websocket",
            "Connection: Upgrade", &key_line(), "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 405 Method Not Allowed";
    /// Rule 1: methods are case-sensitive (RFC 9110 §9.1); `get` is not `GET`.
    rule_01_lowercase_get_is_refused_with_405:
        request_of(&["get /ws HTTP/1.1", "Host: proxy.test", "Upgrade: websocket",
            "Connection: Upgrade", &key_line(), "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 405 Method Not Allowed";
    /// Rule 1: HTTP/1.0 requests never upgrade (RFC 9110 §7.8).
    rule_01_http10_upgrade_is_refused_with_400:
        request_of(&["GET /ws HTTP/1.0", "Host: proxy.test", "Upgrade: websocket",
            "Connection: Upgrade", &key_line(), "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 1: `Connection` must carry the `upgrade` token.
    rule_01_connection_without_upgrade_token_is_refused_with_400:
        request_of(&["GET /ws HTTP/1.1", "Host: proxy.test", "Upgrade: websocket",
            "Connection: keep-alive", &key_line(), "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 1: a token merely containing "upgrade" is not the token.
    rule_01_connection_upgrade_substring_is_not_the_token:
        request_of(&["GET /ws HTTP/1.1", "Host: proxy.test", "Upgrade: websocket",
            "Connection: upgraded, keep-alive", &key_line(), "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 1: `Upgrade` must name `websocket`.
    rule_01_missing_upgrade_header_is_refused_with_426:
        request_of(&["GET /ws HTTP/1.1", "Host: proxy.test",
            "Connection: Upgrade", &key_line(), "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 426 Upgrade Required";
    /// Rules 1 and 14: `Upgrade: h2c` alone is not upgraded (h2c smuggling).
    rule_14_h2c_alone_is_not_upgraded:
        request_of(&["GET /ws HTTP/1.1", "Host: proxy.test", "Upgrade: h2c",
            "Connection: Upgrade, HTTP2-Settings", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
            &key_line(), "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 426 Upgrade Required";
    /// Rule 14: a plain h2c upgrade (no WebSocket headers at all) is not upgraded either.
    rule_14_plain_h2c_upgrade_is_not_upgraded:
        request_of(&["GET / HTTP/1.1", "Host: proxy.test", "Upgrade: h2c",
            "Connection: Upgrade, HTTP2-Settings", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"])
        => "HTTP/1.1 426 Upgrade Required";
    /// Rule 2: `Host` is required (RFC 9112 §3.2).
    rule_02_missing_host_is_refused_with_400:
        request_of(&["GET /ws HTTP/1.1", "Upgrade: websocket",
            "Connection: Upgrade", &key_line(), "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 2: exactly one `Host`.
    rule_02_duplicate_host_is_refused_with_400:
        request_of(&["GET /ws HTTP/1.1", "Host: proxy.test", "Host: internal.test",
            "Upgrade: websocket", "Connection: Upgrade", &key_line(),
            "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 2: two hosts in one `Host` line are not one host.
    rule_02_host_list_is_refused_with_400:
        request_of(&["GET /ws HTTP/1.1", "Host: proxy.test, internal.test",
            "Upgrade: websocket", "Connection: Upgrade", &key_line(),
            "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 2: a `Host` that is not an authority (a path smuggled in it).
    rule_02_host_with_a_path_is_refused_with_400:
        request_of(&["GET /ws HTTP/1.1", "Host: proxy.test/admin", "Upgrade: websocket",
            "Connection: Upgrade", &key_line(), "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 2: an empty `Host`.
    rule_02_empty_host_is_refused_with_400:
        request_of(&["GET /ws HTTP/1.1", "Host:", "Upgrade: websocket",
            "Connection: Upgrade", &key_line(), "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 3: the key must decode to exactly 16 bytes (this one is 12).
    rule_03_short_key_is_refused_with_400:
        ws_request_without_key(&["Sec-WebSocket-Key: AAAAAAAAAAAAAAAA"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 3: the key must be base64.
    rule_03_non_base64_key_is_refused_with_400:
        ws_request_without_key(&["Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!!="])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 3: the key is required.
    rule_03_missing_key_is_refused_with_400:
        ws_request_without_key(&[])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 3: exactly one key.
    rule_03_duplicate_key_is_refused_with_400:
        ws_request_without_key(&[&key_line(), "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA=="])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 4: the version is required.
    rule_04_missing_version_is_refused_with_400:
        request_of(&["GET /ws HTTP/1.1", "Host: proxy.test", "Upgrade: websocket",
            "Connection: Upgrade", &key_line()])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 4: exactly one version.
    rule_04_duplicate_version_is_refused_with_400:
        ws_request(&["Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 5: a body on an upgrade is refused (request smuggling through the tunnel).
    rule_05_content_length_body_is_refused_with_400:
        with_body(ws_request(&["Content-Length: 5"]), b"hello")
        => "HTTP/1.1 400 Bad Request";
    /// Rule 5: any `Transfer-Encoding` is refused.
    rule_05_transfer_encoding_is_refused_with_400:
        with_body(ws_request(&["Transfer-Encoding: chunked"]), b"5\r\nhello\r\n0\r\n\r\n")
        => "HTTP/1.1 400 Bad Request";
    /// Rule 5: `Content-Length` and `Transfer-Encoding` together (the classic CL.TE desync).
    rule_05_content_length_with_transfer_encoding_is_refused_with_400:
        with_body(ws_request(&["Content-Length: 0", "Transfer-Encoding: chunked"]), b"0\r\n\r\n")
        => "HTTP/1.1 400 Bad Request";
    /// Rule 6: obsolete line folding (RFC 9112 §5.2).
    rule_06_obs_fold_is_refused_with_400:
        ws_request(&["X-Folded: first", " second"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 6: whitespace between a field name and its colon (RFC 9112 §5.1).
    rule_06_space_before_colon_is_refused_with_400:
        ws_request(&["X-Spaced : 1"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 6: `Host` smuggled behind whitespace before the colon.
    rule_06_space_before_colon_in_host_is_refused_with_400:
        request_of(&["GET /ws HTTP/1.1", "Host : internal.test", "Host: proxy.test",
            "Upgrade: websocket", "Connection: Upgrade", &key_line(),
            "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 6: a bare CR inside a field value.
    rule_06_bare_cr_in_value_is_refused_with_400:
        ws_request(&["X-Bare: a\rb"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 6: a bare CR as a line ending.
    rule_06_bare_cr_line_ending_is_refused_with_400:
        ws_request(&["X-Bare: a\rX-Injected: b"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 6: NUL in a field value (RFC 9110 §5.5).
    rule_06_nul_in_value_is_refused_with_400:
        ws_request(&["X-Nul: a\0b"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 6: whitespace inside the request line's target.
    rule_06_whitespace_in_target_is_refused_with_400:
        request_of(&["GET /ws /admin HTTP/1.1", "Host: proxy.test", "Upgrade: websocket",
            "Connection: Upgrade", &key_line(), "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 7: more header fields than the cap (100 by default).
    rule_07_too_many_headers_is_refused_with_431:
        ws_request(&many_lines(120).iter().map(String::as_str).collect::<Vec<_>>())
        => "HTTP/1.1 431 Request Header Fields Too Large";
    /// Rule 7: a head larger than the 8 KiB cap.
    rule_07_oversized_head_is_refused_with_431:
        ws_request(&[&format!("X-Large: {}", "a".repeat(9000))])
        => "HTTP/1.1 431 Request Header Fields Too Large";
    /// Rules 10 and 13: naming the key in `Connection` strips it, and the request is then
    /// invalid, so it never reaches the backend.
    rule_13_key_named_in_connection_is_stripped_then_refused:
        request_of(&["GET /ws HTTP/1.1", "Host: proxy.test", "Upgrade: websocket",
            "Connection: Upgrade, Sec-WebSocket-Key", &key_line(), "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
    /// Rules 10 and 2: naming `Host` in `Connection` cannot make a hop-by-hop `Host`.
    rule_10_host_named_in_connection_is_refused:
        request_of(&["GET /ws HTTP/1.1", "Host: proxy.test", "Upgrade: websocket",
            "Connection: Upgrade, Host", &key_line(), "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 15: a dot segment cannot climb out of the stripped prefix (path confusion).
    rule_15_dot_segment_target_is_refused_with_400:
        request_of(&["GET /ws/../admin HTTP/1.1", "Host: proxy.test", "Upgrade: websocket",
            "Connection: Upgrade", &key_line(), "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 15: an absolute-form target with a scheme the proxy does not speak.
    rule_15_unsupported_scheme_target_is_refused_with_400:
        request_of(&["GET ftp://proxy.test/ws HTTP/1.1", "Host: proxy.test",
            "Upgrade: websocket", "Connection: Upgrade", &key_line(),
            "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 15: an authority-form target (CONNECT's form) on a GET.
    rule_15_authority_form_target_is_refused_with_400:
        request_of(&["GET internal.test:22 HTTP/1.1", "Host: proxy.test",
            "Upgrade: websocket", "Connection: Upgrade", &key_line(),
            "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 15: the asterisk-form target.
    rule_15_asterisk_form_target_is_refused_with_400:
        request_of(&["GET * HTTP/1.1", "Host: proxy.test",
            "Upgrade: websocket", "Connection: Upgrade", &key_line(),
            "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
    /// Rule 15: an absolute-form target with userinfo.
    rule_15_userinfo_in_target_is_refused_with_400:
        request_of(&["GET http://user@internal.test/ws HTTP/1.1", "Host: proxy.test",
            "Upgrade: websocket", "Connection: Upgrade", &key_line(),
            "Sec-WebSocket-Version: 13"])
        => "HTTP/1.1 400 Bad Request";
}

/// A handshake without a key, with `extra` lines.
fn ws_request_without_key(extra: &[&str]) -> Vec<u8> {
    let mut lines = vec![
        "GET /ws HTTP/1.1",
        "Host: proxy.test",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
    ];
    lines.extend_from_slice(extra);
    raw_request(&lines)
}

fn with_body(mut head: Vec<u8>, body: &[u8]) -> Vec<u8> {
    head.extend_from_slice(body);
    head
}

fn many_lines(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("X-Field-{i}: {i}")).collect()
}

/// Rule 1: the `upgrade` token counts across all `Connection` lines, in any case; the
/// backend gets the rewritten request.
#[tokio::test]
async fn rule_01_upgrade_token_in_a_later_connection_line_counts() {
    let request = request_of(&[
        "GET /ws HTTP/1.1",
        "Host: proxy.test",
        "Upgrade: WebSocket",
        "Connection: keep-alive",
        "Connection: UPGRADE",
        &key_line(),
        "Sec-WebSocket-Version: 13",
    ]);
    let (_, conn) = upgraded(&request).await;
    assert_eq!(conn.header("upgrade"), ["websocket"]);
    assert_eq!(conn.header("connection"), ["Upgrade"]);
}

/// Rule 4: a version other than 13 gets 426 naming version 13 and the protocol.
#[tokio::test]
async fn rule_04_version_8_is_426_with_version_13() {
    let request = request_of(&[
        "GET /ws HTTP/1.1",
        "Host: proxy.test",
        "Upgrade: websocket",
        "Connection: Upgrade",
        &key_line(),
        "Sec-WebSocket-Version: 8",
    ]);
    let got = refused(&request, "HTTP/1.1 426 Upgrade Required").await;
    assert_eq!(got.header("sec-websocket-version"), ["13"]);
    assert_eq!(got.header("upgrade"), ["websocket"]);
}

/// Rule 5: the body's bytes are not taken for the first frames either: they never reach
/// the backend, even when the backend would otherwise have accepted (checked by
/// `refused`), and a `Content-Length: 0` upgrade is fine.
#[tokio::test]
async fn rule_05_content_length_zero_is_accepted() {
    let (_, conn) = upgraded(&ws_request(&["Content-Length: 0"])).await;
    assert!(conn.header("transfer-encoding").is_empty());
    assert!(conn.early().is_empty());
}

/// Rule 7: a head within the cap is accepted (the 431 cases are not refusing everything).
#[tokio::test]
async fn rule_07_head_under_the_cap_is_accepted() {
    let lines = many_lines(90);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let (_, conn) = upgraded(&ws_request(&lines)).await;
    assert_eq!(conn.header("x-field-89"), ["89"]);
}

/// Rule 7: a client that never finishes its head gets 408 at the deadline, and the
/// backend is never contacted.
#[tokio::test]
async fn rule_07_incomplete_head_is_408_at_the_deadline() {
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    let builder = builder_for(&backend)
        .client_head(HeadLimits::new().timeout(Some(Duration::from_millis(500))));
    let proxy = Running::start(builder).await;
    let mut client = connect(proxy.addr).await;
    let started = Instant::now();
    assert!(send(&mut client, b"GET /ws HTTP/1.1\r\nHost: proxy.test\r\n").await);
    let got = read_to_close(&mut client, ANSWER).await;
    let elapsed = started.elapsed();
    assert_eq!(got.status_line(), "HTTP/1.1 408 Request Timeout");
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}, not at the 500 ms deadline"
    );
    assert_eq!(backend.accepted(), 0);
}

/// Rule 8: an `Origin` not on the allow-list gets 403 and never reaches the backend.
#[tokio::test]
async fn rule_08_origin_not_on_the_allow_list_is_403() {
    let rewrite = RewriteConfig::new().allow_origin("https://app.example.com");
    refused_with(
        |b| b.rewrite(rewrite),
        &ws_request(&["Origin: https://evil.example.com"]),
        "HTTP/1.1 403 Forbidden",
    )
    .await;
}

/// Rule 8: a look-alike origin (the allowed one as a prefix) is not allowed.
#[tokio::test]
async fn rule_08_origin_prefix_lookalike_is_403() {
    let rewrite = RewriteConfig::new().allow_origin("https://app.example.com");
    refused_with(
        |b| b.rewrite(rewrite),
        &ws_request(&["Origin: https://app.example.com.evil.net"]),
        "HTTP/1.1 403 Forbidden",
    )
    .await;
}

/// Rule 8: the opaque origin `null` (sandboxed iframes, `file:` pages) is not allowed.
#[tokio::test]
async fn rule_08_null_origin_is_403() {
    let rewrite = RewriteConfig::new().allow_origin("https://app.example.com");
    refused_with(
        |b| b.rewrite(rewrite),
        &ws_request(&["Origin: null"]),
        "HTTP/1.1 403 Forbidden",
    )
    .await;
}

/// Rule 8: two `Origin` lines, one allowed, are refused.
#[tokio::test]
async fn rule_08_two_origins_are_403() {
    let rewrite = RewriteConfig::new().allow_origin("https://app.example.com");
    refused_with(
        |b| b.rewrite(rewrite),
        &ws_request(&[
            "Origin: https://app.example.com",
            "Origin: https://evil.example.com",
        ]),
        "HTTP/1.1 403 Forbidden",
    )
    .await;
}

/// Rule 8: an allowed origin passes, unchanged (rule 13), whatever its case.
#[tokio::test]
async fn rule_08_allowed_origin_reaches_the_backend() {
    let rewrite = RewriteConfig::new().allow_origin("https://app.example.com");
    let (_, conn) = upgraded_with(rewrite, &ws_request(&["Origin: https://APP.example.com"])).await;
    assert_eq!(conn.header("origin"), ["https://APP.example.com"]);
}

// ---------------------------------------------------------------------------------------------
// Rules 10–15: rewriting the request for the backend

/// Rule 10: every hop-by-hop header is removed, and every header named in any `Connection`
/// line, even behind an empty first `Connection` line (Go CVE-2021-33197).
#[tokio::test]
async fn rule_10_connection_named_headers_are_stripped_behind_an_empty_connection_line() {
    let request = request_of(&[
        "GET /ws HTTP/1.1",
        "Host: proxy.test",
        "Connection:",
        "Connection: Upgrade, X-Secret-Token, Cookie",
        "Upgrade: websocket",
        &key_line(),
        "Sec-WebSocket-Version: 13",
        "X-Secret-Token: hunter2",
        "Cookie: session=1",
        "Keep-Alive: timeout=5",
        "Proxy-Connection: keep-alive",
        "TE: trailers",
        "Trailer: X-Checksum",
        "Proxy-Authorization: Basic cHJveHk6c2VjcmV0",
        "Proxy-Authenticate: Basic",
        "X-Kept: yes",
    ]);
    let (_, conn) = upgraded(&request).await;
    let names = support::header_names(&conn.head_text());
    for stripped in [
        "x-secret-token",
        "cookie",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-authenticate",
    ] {
        assert!(
            !names.iter().any(|n| n == stripped),
            "{stripped} reached the backend:\n{}",
            conn.head_text()
        );
    }
    assert_eq!(conn.header("connection"), ["Upgrade"]);
    assert_eq!(conn.header("x-kept"), ["yes"]);
}

/// Rule 11: client-sent forwarding headers are not trusted by default: the backend sees the
/// real peer, 127.0.0.1, and none of the forged values.
#[tokio::test]
async fn rule_11_client_forwarding_headers_are_not_trusted() {
    let request = ws_request(&[
        "X-Forwarded-For: 6.6.6.6",
        "X-Real-IP: 6.6.6.6",
        "Forwarded: for=6.6.6.6;proto=https",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: admin.internal",
        "X-Forwarded-Port: 443",
    ]);
    let (_, conn) = upgraded(&request).await;
    let head = conn.head_text();
    assert!(
        !head.contains("6.6.6.6"),
        "a forged address got through:\n{head}"
    );
    assert_eq!(conn.header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(conn.header("x-real-ip"), ["127.0.0.1"]);
    assert_eq!(conn.header("x-forwarded-proto"), ["http"]);
    assert_eq!(conn.header("x-forwarded-host"), ["proxy.test"]);
    assert!(conn.header("forwarded").is_empty(), "{head}");
    assert!(conn.header("x-forwarded-port").is_empty(), "{head}");
}

/// Rule 11: strip first, add second: naming the proxy's own headers in `Connection` cannot
/// delete them (Traefik CVE-2024-45410).
#[tokio::test]
async fn rule_11_proxy_headers_survive_being_named_in_connection() {
    let request = request_of(&[
        "GET /ws HTTP/1.1",
        "Host: proxy.test",
        "Upgrade: websocket",
        "Connection: Upgrade, X-Forwarded-For, X-Real-IP, X-Forwarded-Proto, X-Forwarded-Host, Via, Forwarded",
        &key_line(),
        "Sec-WebSocket-Version: 13",
    ]);
    let rewrite = RewriteConfig::new().forwarded(true);
    let (_, conn) = upgraded_with(rewrite, &request).await;
    assert_eq!(conn.header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(conn.header("x-real-ip"), ["127.0.0.1"]);
    assert_eq!(conn.header("x-forwarded-proto"), ["http"]);
    assert_eq!(conn.header("x-forwarded-host"), ["proxy.test"]);
    assert_eq!(conn.header("via"), ["1.1 wsrelay"]);
    assert_eq!(
        conn.header("forwarded"),
        ["for=127.0.0.1;host=proxy.test;proto=http"]
    );
}

/// Rule 11: `Forwarded` quotes a `host:port` value (RFC 7239 §6), and a client's own
/// `Forwarded` is replaced, not appended to.
#[tokio::test]
async fn rule_11_forwarded_quotes_host_with_port_and_drops_the_clients() {
    let request = request_of(&[
        "GET /ws HTTP/1.1",
        "Host: proxy.test:8080",
        "Upgrade: websocket",
        "Connection: Upgrade",
        &key_line(),
        "Sec-WebSocket-Version: 13",
        "Forwarded: for=6.6.6.6",
    ]);
    let rewrite = RewriteConfig::new().forwarded(true);
    let (_, conn) = upgraded_with(rewrite, &request).await;
    assert_eq!(
        conn.header("forwarded"),
        ["for=127.0.0.1;host=\"proxy.test:8080\";proto=http"]
    );
}

/// Rule 11: a trusted peer's `X-Forwarded-For` is appended to, not replaced (nginx
/// `$proxy_add_x_forwarded_for`); its other forwarding headers are believed.
#[tokio::test]
async fn rule_11_trusted_peer_forwarding_headers_are_appended_to() {
    let request = ws_request(&[
        "X-Forwarded-For: 192.0.2.1, 198.51.100.2",
        "X-Forwarded-Proto: https",
    ]);
    let rewrite = RewriteConfig::new().trust_forwarded(true);
    let (_, conn) = upgraded_with(rewrite, &request).await;
    assert_eq!(
        conn.header("x-forwarded-for"),
        ["192.0.2.1, 198.51.100.2, 127.0.0.1"]
    );
    assert_eq!(conn.header("x-forwarded-proto"), ["https"]);
}

/// Rule 12: whatever the client's spelling, the backend gets `GET <path> HTTP/1.1`,
/// exactly one `Upgrade: websocket` and one `Connection: Upgrade`.
#[tokio::test]
async fn rule_12_backend_request_line_and_upgrade_headers_are_canonical() {
    let request = request_of(&[
        "GET /ws?room=7&x=%20 HTTP/1.1",
        "Host: proxy.test",
        "Upgrade: WebSocket",
        "Upgrade: websocket",
        "Connection: keep-alive, Upgrade",
        "Connection: close",
        &key_line(),
        "Sec-WebSocket-Version: 13",
    ]);
    let (_, conn) = upgraded(&request).await;
    assert_eq!(conn.request_line(), "GET /ws?room=7&x=%20 HTTP/1.1");
    assert_eq!(conn.header("upgrade"), ["websocket"]);
    assert_eq!(conn.header("connection"), ["Upgrade"]);
}

/// Rule 13: end-to-end headers reach the backend unchanged, repeated fields in their order.
#[tokio::test]
async fn rule_13_end_to_end_headers_are_forwarded_unchanged() {
    let request = ws_request(&[
        "Sec-WebSocket-Protocol: chat, superchat",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
        "Origin: https://app.example.com",
        "Cookie: a=1",
        "Cookie: b=2",
        "Authorization: Bearer abc.def",
        "X-Order: first",
        "X-Other: middle",
        "X-Order: second",
    ]);
    let (_, conn) = upgraded(&request).await;
    assert_eq!(conn.header("sec-websocket-key"), [KEY]);
    assert_eq!(conn.header("sec-websocket-version"), ["13"]);
    assert_eq!(conn.header("sec-websocket-protocol"), ["chat, superchat"]);
    assert_eq!(
        conn.header("sec-websocket-extensions"),
        ["permessage-deflate; client_max_window_bits"]
    );
    assert_eq!(conn.header("origin"), ["https://app.example.com"]);
    assert_eq!(conn.header("cookie"), ["a=1", "b=2"]);
    assert_eq!(conn.header("authorization"), ["Bearer abc.def"]);
    assert_eq!(conn.header("x-order"), ["first", "second"]);
    assert_eq!(conn.header("x-other"), ["middle"]);
}

/// Rule 14: `Upgrade: h2c, websocket` with `HTTP2-Settings`: the backend sees only
/// `Upgrade: websocket` and no `HTTP2-Settings`, named in `Connection` or not.
#[tokio::test]
async fn rule_14_h2c_token_and_http2_settings_are_never_forwarded() {
    let request = request_of(&[
        "GET /ws HTTP/1.1",
        "Host: proxy.test",
        "Upgrade: h2c, websocket",
        "Connection: Upgrade, HTTP2-Settings",
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
        &key_line(),
        "Sec-WebSocket-Version: 13",
    ]);
    let (_, conn) = upgraded(&request).await;
    assert_eq!(conn.header("upgrade"), ["websocket"]);
    assert!(
        conn.header("http2-settings").is_empty(),
        "{}",
        conn.head_text()
    );
    assert!(!conn.head_text().to_ascii_lowercase().contains("h2c"));
}

/// Rule 14: `HTTP2-Settings` not named in `Connection` is still never forwarded.
#[tokio::test]
async fn rule_14_unnamed_http2_settings_is_never_forwarded() {
    let request = ws_request(&["HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"]);
    let (_, conn) = upgraded(&request).await;
    assert!(
        conn.header("http2-settings").is_empty(),
        "{}",
        conn.head_text()
    );
}

/// Rule 15: `Host` is kept by default, or set to the configured authority; a path outside
/// the stripped prefix is 404 and never reaches the backend.
#[tokio::test]
async fn rule_15_host_policy_and_prefix_strip() {
    let (_, conn) = upgraded(&ws_request(&[])).await;
    assert_eq!(conn.header("host"), ["proxy.test"]);

    let rewrite = RewriteConfig::new()
        .host(HostPolicy::Set(HeaderValue::from_static(
            "backend.internal:9000",
        )))
        .strip_prefix("/ws/");
    let request = request_of(&[
        "GET /ws/chat?room=1 HTTP/1.1",
        "Host: proxy.test",
        "Upgrade: websocket",
        "Connection: Upgrade",
        &key_line(),
        "Sec-WebSocket-Version: 13",
    ]);
    let (_, conn) = upgraded_with(rewrite.clone(), &request).await;
    assert_eq!(conn.request_line(), "GET /chat?room=1 HTTP/1.1");
    assert_eq!(conn.header("host"), ["backend.internal:9000"]);
    assert_eq!(conn.header("x-forwarded-host"), ["proxy.test"]);

    let outside = request_of(&[
        "GET /admin HTTP/1.1",
        "Host: proxy.test",
        "Upgrade: websocket",
        "Connection: Upgrade",
        &key_line(),
        "Sec-WebSocket-Version: 13",
    ]);
    refused_with(|b| b.rewrite(rewrite), &outside, "HTTP/1.1 404 Not Found").await;
}

/// Rule 15 (RFC 9112 §3.2.2): with an absolute-form target, the target's authority wins over
/// a conflicting `Host`, and the backend gets an origin-form request line.
#[tokio::test]
async fn rule_15_absolute_form_target_authority_wins_over_host() {
    let request = request_of(&[
        "GET http://proxy.test/ws?a=1 HTTP/1.1",
        "Host: internal.admin",
        "Upgrade: websocket",
        "Connection: Upgrade",
        &key_line(),
        "Sec-WebSocket-Version: 13",
    ]);
    let (_, conn) = upgraded(&request).await;
    assert_eq!(conn.request_line(), "GET /ws?a=1 HTTP/1.1");
    assert_eq!(conn.header("host"), ["proxy.test"]);
}

// ---------------------------------------------------------------------------------------------
// Rules 16–20: checking the backend's answer

/// A `101` for `head` whose lines are exactly `lines` (status line first).
fn answer_of(lines: &[&str]) -> Vec<u8> {
    raw_request(lines)
}

/// Rule 18: a `426` (with `Upgrade: websocket` and `Connection: upgrade`, and a body) is
/// relayed and never tunnelled (Varnish, old Envoy).
#[tokio::test]
async fn rule_18_backend_426_is_relayed_and_never_tunnelled() {
    let answer = answer_of(&[
        "HTTP/1.1 426 Upgrade Required",
        "Upgrade: websocket",
        "Connection: upgrade",
        "Sec-WebSocket-Version: 13",
        "Content-Length: 9",
    ]);
    let mut answer = answer;
    answer.extend_from_slice(b"upgrade!\n");
    let got = no_tunnel(
        &ws_request(&[]),
        move |_| answer.clone(),
        Then::Hold,
        "HTTP/1.1 426 Upgrade Required",
    )
    .await;
    assert_eq!(got.body(), b"upgrade!\n");
    assert_refusal_closes(&got);
}

/// Rule 18: a `426` without `Upgrade`/`Connection` and without a body.
#[tokio::test]
async fn rule_18_backend_426_without_upgrade_headers_is_relayed_and_never_tunnelled() {
    let answer = answer_of(&["HTTP/1.1 426 Upgrade Required", "Content-Length: 0"]);
    let got = no_tunnel(
        &ws_request(&[]),
        move |_| answer.clone(),
        Then::Hold,
        "HTTP/1.1 426 Upgrade Required",
    )
    .await;
    assert!(got.body().is_empty());
    assert_refusal_closes(&got);
}

/// Rule 18: a `403` with a chunked body.
#[tokio::test]
async fn rule_18_backend_403_is_relayed_and_never_tunnelled() {
    let mut answer = answer_of(&[
        "HTTP/1.1 403 Forbidden",
        "Transfer-Encoding: chunked",
        "Set-Cookie: denied=1",
    ]);
    answer.extend_from_slice(b"7\r\ngo away\r\n0\r\n\r\n");
    let got = no_tunnel(
        &ws_request(&[]),
        move |_| answer.clone(),
        Then::Hold,
        "HTTP/1.1 403 Forbidden",
    )
    .await;
    assert_eq!(got.body(), b"7\r\ngo away\r\n0\r\n\r\n");
    assert_eq!(got.header("set-cookie"), ["denied=1"]);
    assert_refusal_closes(&got);
}

/// Rule 18: a `403` carrying upgrade headers is still a refusal.
#[tokio::test]
async fn rule_18_backend_403_with_upgrade_headers_is_relayed_and_never_tunnelled() {
    let got = no_tunnel(
        &ws_request(&[]),
        |head| {
            let mut answer = answer_of(&[
                "HTTP/1.1 403 Forbidden",
                "Upgrade: websocket",
                "Connection: Upgrade",
                &format!("Sec-WebSocket-Accept: {}", accept_for(head)),
                "Content-Length: 4",
            ]);
            answer.extend_from_slice(b"nope");
            answer
        },
        Then::Hold,
        "HTTP/1.1 403 Forbidden",
    )
    .await;
    assert_eq!(got.body(), b"nope");
    assert_refusal_closes(&got);
}

/// Rule 18: a `200` with `Upgrade: websocket`, `Connection: upgrade` and even a correct
/// `Sec-WebSocket-Accept` is not a switch (Envoy CVE-2024-23326): relayed, body included.
#[tokio::test]
async fn rule_18_backend_200_with_upgrade_headers_is_relayed_and_never_tunnelled() {
    let got = no_tunnel(
        &ws_request(&[]),
        |head| {
            let mut answer = answer_of(&[
                "HTTP/1.1 200 OK",
                "Upgrade: websocket",
                "Connection: upgrade",
                &format!("Sec-WebSocket-Accept: {}", accept_for(head)),
                "Content-Length: 11",
            ]);
            answer.extend_from_slice(b"hello world");
            answer
        },
        Then::Hold,
        "HTTP/1.1 200 OK",
    )
    .await;
    assert_eq!(got.body(), b"hello world");
    assert_refusal_closes(&got);
}

/// Rule 18: a `200` without upgrade headers whose body runs until the backend closes.
#[tokio::test]
async fn rule_18_backend_200_body_until_close_is_relayed_and_never_tunnelled() {
    let mut answer = answer_of(&["HTTP/1.1 200 OK", "Content-Type: text/plain"]);
    answer.extend_from_slice(b"a body with no length\n");
    let got = no_tunnel(
        &ws_request(&[]),
        move |_| answer.clone(),
        Then::Close,
        "HTTP/1.1 200 OK",
    )
    .await;
    assert_eq!(got.body(), b"a body with no length\n");
    assert_refusal_closes(&got);
}

/// Rule 18: a smuggled second request pipelined in the same packet as the handshake never
/// reaches the backend when the backend refuses.
#[tokio::test]
async fn rule_18_pipelined_request_after_refused_upgrade_never_reaches_the_backend() {
    let backend = Backend::start(Script::canned(
        answer_of(&["HTTP/1.1 200 OK", "Content-Length: 2"])
            .into_iter()
            .chain(*b"ok")
            .collect::<Vec<u8>>(),
        Then::Hold,
    ))
    .await;
    let proxy = Running::start(builder_for(&backend)).await;
    let mut client = connect(proxy.addr).await;
    let mut packet = ws_request(&[]);
    packet.extend_from_slice(SMUGGLED);
    assert!(send(&mut client, &packet).await);
    let got = read_to_close(&mut client, ANSWER).await;
    assert_eq!(got.status_line(), "HTTP/1.1 200 OK");
    assert_eq!(got.body(), b"ok");
    assert!(got.closed);
    let conn = backend.closed(0, ANSWER).await;
    assert_eq!(conn.head_len, Some(conn.bytes.len()), "{:?}", conn.bytes);
    assert_eq!(backend.accepted(), 1);
}

/// Rule 18 (RFC 9112 §6.3): a refusal framed with both `Content-Length` and
/// `Transfer-Encoding` (response splitting) is either refused with 502 or relayed with the
/// `Content-Length` removed and the chunked body intact; never with both framings.
#[tokio::test]
async fn rule_18_backend_answer_with_two_framings_is_not_relayed_with_both() {
    let mut answer = answer_of(&[
        "HTTP/1.1 200 OK",
        "Content-Length: 3",
        "Transfer-Encoding: chunked",
    ]);
    answer.extend_from_slice(b"2\r\nok\r\n0\r\n\r\n");
    let backend = Backend::start(Script::canned(answer, Then::Hold)).await;
    let proxy = Running::start(builder_for(&backend)).await;
    let mut client = connect(proxy.addr).await;
    assert!(send(&mut client, &ws_request(&[])).await);
    let got = read_to_close(&mut client, ANSWER).await;
    assert!(got.closed);
    if got.status_line() == BAD_GATEWAY {
        return;
    }
    assert_eq!(got.status_line(), "HTTP/1.1 200 OK");
    assert!(
        got.header("content-length").is_empty(),
        "relayed with both framings:\n{}",
        got.head()
    );
    assert_eq!(got.header("transfer-encoding"), ["chunked"]);
    assert_eq!(got.body(), b"2\r\nok\r\n0\r\n\r\n");
}

/// A relayed refusal closes the connection and does not offer an upgrade (rule 21).
fn assert_refusal_closes(got: &Got) {
    assert_eq!(got.header("connection"), ["close"], "{}", got.head());
    assert!(got.header("upgrade").is_empty(), "{}", got.head());
}

/// One test per broken `101`: each gives the client 502 and never opens a tunnel.
macro_rules! bad_switch_cases {
    ($($(#[$doc:meta])* $name:ident: $request:expr, $answer:expr;)*) => {$(
        $(#[$doc])*
        #[tokio::test]
        async fn $name() {
            let got = no_tunnel(&$request, $answer, Then::Hold, BAD_GATEWAY).await;
            assert!(got.header("sec-websocket-accept").is_empty());
        }
    )*};
}

bad_switch_cases! {
    /// Rule 16: `Upgrade` names another protocol.
    rule_16_101_upgrading_to_another_protocol_is_502:
        ws_request(&[]),
        |head: &[u8]| answer_of(&["HTTP/1.1 101 Switching Protocols", "Upgrade: h2c",
            "Connection: Upgrade", &format!("Sec-WebSocket-Accept: {}", accept_for(head))]);
    /// Rule 16: `Upgrade` names two protocols.
    rule_16_101_upgrading_to_two_protocols_is_502:
        ws_request(&[]),
        |head: &[u8]| answer_of(&["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket, h2c",
            "Connection: Upgrade", &format!("Sec-WebSocket-Accept: {}", accept_for(head))]);
    /// Rule 16: `Upgrade` missing.
    rule_16_101_without_upgrade_is_502:
        ws_request(&[]),
        |head: &[u8]| answer_of(&["HTTP/1.1 101 Switching Protocols",
            "Connection: Upgrade", &format!("Sec-WebSocket-Accept: {}", accept_for(head))]);
    /// Rule 16: `Connection` lacks `upgrade`.
    rule_16_101_without_connection_upgrade_is_502:
        ws_request(&[]),
        |head: &[u8]| answer_of(&["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
            "Connection: keep-alive", &format!("Sec-WebSocket-Accept: {}", accept_for(head))]);
    /// Rule 16: `Connection` missing.
    rule_16_101_without_connection_is_502:
        ws_request(&[]),
        |head: &[u8]| answer_of(&["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
            &format!("Sec-WebSocket-Accept: {}", accept_for(head))]);
    /// Rule 16: `Sec-WebSocket-Accept` missing.
    rule_16_101_without_accept_is_502:
        ws_request(&[]),
        |_: &[u8]| answer_of(&["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
            "Connection: Upgrade"]);
    /// Rule 16: `Sec-WebSocket-Accept` for another key.
    rule_16_101_with_wrong_accept_is_502:
        ws_request(&[]),
        |_: &[u8]| answer_of(&["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
            "Connection: Upgrade",
            &format!("Sec-WebSocket-Accept: {}",
                wsrelay::handshake::derive_accept_key(b"AQIDBAUGBwgJCgsMDQ4PEA=="))]);
    /// Rule 16: the accept of the key itself, not of key + GUID (a backend that echoes).
    rule_16_101_echoing_the_key_as_accept_is_502:
        ws_request(&[]),
        |_: &[u8]| answer_of(&["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
            "Connection: Upgrade", &format!("Sec-WebSocket-Accept: {KEY}")]);
    /// Rule 16: two `Sec-WebSocket-Accept` lines, both correct.
    rule_16_101_with_duplicated_accept_is_502:
        ws_request(&[]),
        |head: &[u8]| answer_of(&["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
            "Connection: Upgrade", &format!("Sec-WebSocket-Accept: {}", accept_for(head)),
            &format!("Sec-WebSocket-Accept: {}", accept_for(head))]);
    /// Rule 16: one `Sec-WebSocket-Accept` line holding the right value twice.
    rule_16_101_with_accept_listed_twice_is_502:
        ws_request(&[]),
        |head: &[u8]| answer_of(&["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
            "Connection: Upgrade",
            &format!("Sec-WebSocket-Accept: {0}, {0}", accept_for(head))]);
    /// Rule 16: a `101` in HTTP/1.0.
    rule_16_http10_101_is_502:
        ws_request(&[]),
        |head: &[u8]| answer_of(&["HTTP/1.0 101 Switching Protocols", "Upgrade: websocket",
            "Connection: Upgrade", &format!("Sec-WebSocket-Accept: {}", accept_for(head))]);
    /// Rule 17: a subprotocol the client did not offer.
    rule_17_101_with_unoffered_subprotocol_is_502:
        ws_request(&["Sec-WebSocket-Protocol: chat"]),
        |head: &[u8]| switch_with(head, &["Sec-WebSocket-Protocol: superchat"]);
    /// Rule 17: a subprotocol when the client offered none.
    rule_17_101_with_subprotocol_when_none_offered_is_502:
        ws_request(&[]),
        |head: &[u8]| switch_with(head, &["Sec-WebSocket-Protocol: chat"]);
    /// Rule 17: subprotocol names compare exactly (RFC 6455 §11.3.4).
    rule_17_101_with_subprotocol_in_another_case_is_502:
        ws_request(&["Sec-WebSocket-Protocol: chat"]),
        |head: &[u8]| switch_with(head, &["Sec-WebSocket-Protocol: CHAT"]);
    /// Rule 17: two subprotocols selected.
    rule_17_101_with_two_subprotocols_is_502:
        ws_request(&["Sec-WebSocket-Protocol: chat, superchat"]),
        |head: &[u8]| switch_with(head, &["Sec-WebSocket-Protocol: chat, superchat"]);
    /// Rule 17: an extension when the client offered none.
    rule_17_101_with_unoffered_extension_is_502:
        ws_request(&[]),
        |head: &[u8]| switch_with(head, &["Sec-WebSocket-Extensions: permessage-deflate"]);
    /// Rule 17: an extension other than the one offered.
    rule_17_101_with_other_extension_is_502:
        ws_request(&["Sec-WebSocket-Extensions: x-webkit-deflate-frame"]),
        |head: &[u8]| switch_with(head, &["Sec-WebSocket-Extensions: permessage-deflate"]);
    /// Rule 19: an endless stream of interim responses is not waited on forever.
    rule_19_endless_interim_responses_are_502:
        ws_request(&[]),
        |_: &[u8]| b"HTTP/1.1 100 Continue\r\n\r\n".repeat(50);
    /// Rule 20: a malformed response head (no colon).
    rule_20_malformed_response_head_is_502:
        ws_request(&[]),
        |head: &[u8]| answer_of(&["HTTP/1.1 101 Switching Protocols", "Upgrade websocket",
            "Connection: Upgrade", &format!("Sec-WebSocket-Accept: {}", accept_for(head))]);
    /// Rule 20: not HTTP at all.
    rule_20_non_http_answer_is_502:
        ws_request(&[]),
        |_: &[u8]| b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec();
    /// Rule 20: a response head larger than the 8 KiB cap.
    rule_20_oversized_response_head_is_502:
        ws_request(&[]),
        |head: &[u8]| switch_with(head, &[&format!("X-Large: {}", "a".repeat(9000))]);
    /// Rule 20: obs-fold in the backend's answer.
    rule_20_obs_fold_in_response_is_502:
        ws_request(&[]),
        |head: &[u8]| answer_of(&["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
            "Connection: Upgrade", &format!("Sec-WebSocket-Accept: {}", accept_for(head)),
            "X-Folded: a", " b"]);
}

/// Rule 17: the subprotocol and extension the client offered are accepted and relayed.
#[tokio::test]
async fn rule_17_offered_subprotocol_and_extension_are_accepted() {
    let backend = Backend::start(Script::with(
        |head| {
            switch_with(
                head,
                &[
                    "Sec-WebSocket-Protocol: superchat",
                    "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover",
                ],
            )
        },
        Then::Echo,
    ))
    .await;
    let proxy = Running::start(builder_for(&backend)).await;
    let mut client = connect(proxy.addr).await;
    let request = ws_request(&[
        "Sec-WebSocket-Protocol: chat, superchat",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
    ]);
    assert!(send(&mut client, &request).await);
    let got = read_head(&mut client, ANSWER).await;
    assert_eq!(got.status_line(), SWITCHING);
    assert_eq!(got.header("sec-websocket-protocol"), ["superchat"]);
    assert_eq!(
        got.header("sec-websocket-extensions"),
        ["permessage-deflate; server_no_context_takeover"]
    );
}

/// Rule 19: a `100 Continue` before the `101` is skipped; the client sees only the `101`,
/// and the tunnel works.
#[tokio::test]
async fn rule_19_interim_100_before_101_is_skipped() {
    let backend = Backend::start(Script::with(
        |head| {
            let mut answer =
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n".to_vec();
            answer.extend_from_slice(&switch_with(head, &[]));
            answer
        },
        Then::Echo,
    ))
    .await;
    let proxy = Running::start(builder_for(&backend)).await;
    let mut client = connect(proxy.addr).await;
    assert!(send(&mut client, &ws_request(&[])).await);
    let got = read_head(&mut client, ANSWER).await;
    assert_eq!(got.status_line(), SWITCHING);
    assert!(!String::from_utf8_lossy(&got.bytes).contains("100 Continue"));
    let mut rest = got.body().to_vec();
    assert!(send(&mut client, FRAME).await);
    let more = read_exact_within(&mut client, FRAME.len() - rest.len(), STEP).await;
    rest.extend_from_slice(&more);
    assert_eq!(rest, FRAME, "the tunnel echoes");
}

/// Rule 20: a backend nobody listens on gives 502.
#[tokio::test]
async fn rule_20_unreachable_backend_is_502() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("address");
    let proxy = Running::start(Proxy::builder().backend(closed.to_string())).await;
    let mut client = connect(proxy.addr).await;
    assert!(send(&mut client, &ws_request(&[])).await);
    let got = read_to_close(&mut client, ANSWER).await;
    assert_eq!(got.status_line(), BAD_GATEWAY);
    assert!(got.closed);
}

/// Rule 20: a backend that never answers gives 504 at the response-head deadline.
#[tokio::test]
async fn rule_20_silent_backend_is_504_at_the_deadline() {
    let backend = Backend::start(Script::silent()).await;
    let builder = builder_for(&backend)
        .backend_head(HeadLimits::new().timeout(Some(Duration::from_millis(300))));
    let proxy = Running::start(builder).await;
    let mut client = connect(proxy.addr).await;
    let started = Instant::now();
    let mut packet = ws_request(&[]);
    packet.extend_from_slice(FRAME);
    assert!(send(&mut client, &packet).await);
    let got = read_to_close(&mut client, ANSWER).await;
    let elapsed = started.elapsed();
    assert_eq!(got.status_line(), "HTTP/1.1 504 Gateway Timeout");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}"
    );
    let conn = backend.closed(0, ANSWER).await;
    assert_eq!(conn.head_len, Some(conn.bytes.len()), "no tunnel bytes");
}

/// Rule 20: a backend that closes without answering gives 502.
#[tokio::test]
async fn rule_20_backend_closing_without_an_answer_is_502() {
    let backend = Backend::start(Script::canned(Vec::new(), Then::Close)).await;
    let proxy = Running::start(builder_for(&backend)).await;
    let mut client = connect(proxy.addr).await;
    assert!(send(&mut client, &ws_request(&[])).await);
    let got = read_to_close(&mut client, ANSWER).await;
    assert_eq!(got.status_line(), BAD_GATEWAY);
    assert!(got.closed);
}

// ---------------------------------------------------------------------------------------------
// Rule 21: rewriting the answer for the client

/// Rule 21: hop-by-hop headers of the `101` (and those it names in `Connection`, and any
/// framing) are removed; `Set-Cookie` and `Sec-WebSocket-*` are kept.
#[tokio::test]
async fn rule_21_101_hop_by_hop_headers_are_stripped_for_the_client() {
    let backend = Backend::start(Script::with(
        |head| {
            answer_of(&[
                "HTTP/1.1 101 Switching Protocols",
                "Upgrade: WebSocket",
                "Connection: Upgrade, X-Backend-Secret",
                "Connection: keep-alive",
                &format!("Sec-WebSocket-Accept: {}", accept_for(head)),
                "Keep-Alive: timeout=5",
                "Proxy-Connection: keep-alive",
                "Proxy-Authenticate: Basic",
                "Trailer: X-Sum",
                "Content-Length: 0",
                "X-Backend-Secret: internal",
                "Set-Cookie: session=abc; HttpOnly",
                "Set-Cookie: theme=dark",
                "X-Kept: yes",
            ])
        },
        Then::Echo,
    ))
    .await;
    let proxy = Running::start(builder_for(&backend)).await;
    let mut client = connect(proxy.addr).await;
    assert!(send(&mut client, &ws_request(&[])).await);
    let got = read_head(&mut client, ANSWER).await;
    assert_eq!(got.status_line(), SWITCHING);
    let names = support::header_names(&got.head());
    for stripped in [
        "x-backend-secret",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "trailer",
        "content-length",
        "transfer-encoding",
    ] {
        assert!(
            !names.iter().any(|n| n == stripped),
            "{stripped} reached the client:\n{}",
            got.head()
        );
    }
    assert_eq!(got.header("upgrade"), ["websocket"]);
    assert_eq!(got.header("connection"), ["Upgrade"]);
    assert_eq!(
        got.header("sec-websocket-accept"),
        [wsrelay::handshake::derive_accept_key(KEY.as_bytes())]
    );
    assert_eq!(
        got.header("set-cookie"),
        ["session=abc; HttpOnly", "theme=dark"]
    );
    assert_eq!(got.header("x-kept"), ["yes"]);
}

/// Rule 21: framing headers on a `101` are removed (no body can follow a `101`); the
/// tunnel works.
#[tokio::test]
async fn rule_21_101_framing_headers_are_stripped() {
    let backend = Backend::start(Script::with(
        |head| switch_with(head, &["Transfer-Encoding: chunked", "Content-Length: 10"]),
        Then::Echo,
    ))
    .await;
    let proxy = Running::start(builder_for(&backend)).await;
    let mut client = connect(proxy.addr).await;
    assert!(send(&mut client, &ws_request(&[])).await);
    let got = read_head(&mut client, ANSWER).await;
    assert_eq!(got.status_line(), SWITCHING, "{}", got.head());
    assert!(got.header("transfer-encoding").is_empty(), "{}", got.head());
    assert!(got.header("content-length").is_empty(), "{}", got.head());
    assert!(send(&mut client, FRAME).await);
    let echoed = read_exact_within(&mut client, FRAME.len(), STEP).await;
    assert_eq!(echoed, FRAME);
}

// ---------------------------------------------------------------------------------------------
// Rule 22: leftovers

/// Rule 22: bytes the client sent in the same packet as its head reach the backend only
/// after the backend wrote its `101` (which it delays by 200 ms, recording what arrives
/// meanwhile), and first, before anything the client sends later.
#[tokio::test]
async fn rule_22_client_leftovers_reach_the_backend_only_after_its_101() {
    let backend =
        Backend::start(Script::switching(Then::Echo).delayed(Duration::from_millis(200))).await;
    let proxy = Running::start(builder_for(&backend)).await;
    let mut client = connect(proxy.addr).await;
    let mut packet = ws_request(&[]);
    packet.extend_from_slice(FRAME);
    assert!(send(&mut client, &packet).await);
    let got = read_head(&mut client, ANSWER).await;
    assert_eq!(got.status_line(), SWITCHING);
    let mut echoed = got.body().to_vec();
    echoed.extend(read_exact_within(&mut client, FRAME.len() - echoed.len(), STEP).await);
    assert_eq!(echoed, FRAME, "the early frame went through the tunnel");
    assert!(send(&mut client, b"later").await);
    let later = read_exact_within(&mut client, 5, STEP).await;
    assert_eq!(later, b"later");

    let conn = backend.conn(0);
    assert!(
        conn.early().is_empty(),
        "the backend got {:?} before it wrote its 101",
        conn.early()
    );
    let mut expected = FRAME.to_vec();
    expected.extend_from_slice(b"later");
    assert_eq!(
        conn.after_head(),
        expected,
        "leftovers first, then the rest"
    );
}

/// Rule 22: bytes the backend sent in the same write as its `101` reach the client right
/// after the `101`.
#[tokio::test]
async fn rule_22_backend_bytes_sent_with_its_101_follow_the_101() {
    let greeting: &[u8] = b"\x81\x05hello\x81\x05world";
    let backend = Backend::start(Script::with(
        move |head| {
            let mut answer = switch_with(head, &[]);
            answer.extend_from_slice(greeting);
            answer
        },
        Then::Hold,
    ))
    .await;
    let proxy = Running::start(builder_for(&backend)).await;
    let mut client = connect(proxy.addr).await;
    assert!(send(&mut client, &ws_request(&[])).await);
    let got = read_head(&mut client, ANSWER).await;
    assert_eq!(got.status_line(), SWITCHING);
    let mut first = got.body().to_vec();
    assert!(first.len() <= greeting.len(), "{first:?}");
    first.extend(read_exact_within(&mut client, greeting.len() - first.len(), STEP).await);
    assert_eq!(first, greeting);
    assert_eq!(head_end(&got.bytes), Some(got.head().len()));
}

/// Rule 22 and the report: the bytes that came with the backend's `101` are bytes the
/// tunnel carried to the client, and the report's `backend_to_client` ("bytes written to the
/// client, leftovers included") counts them, as `client_to_backend` counts the client's
/// leftovers.
#[tokio::test]
async fn rule_22_leftovers_both_ways_are_counted_in_the_report() {
    let greeting: &[u8] = b"\x81\x05hello\x81\x05world";
    let backend = Backend::start(Script::with(
        move |head| {
            let mut answer = switch_with(head, &[]);
            answer.extend_from_slice(greeting);
            answer
        },
        Then::Hold,
    ))
    .await;
    let (tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let builder = builder_for(&backend).on_report(move |report| {
        let _ = tx.send((
            report.client_to_backend,
            report.backend_to_client,
            report.reason,
        ));
    });
    let proxy = Running::start(builder).await;
    let mut client = connect(proxy.addr).await;
    let mut packet = ws_request(&[]);
    packet.extend_from_slice(FRAME);
    assert!(send(&mut client, &packet).await);
    let got = read_head(&mut client, ANSWER).await;
    assert_eq!(got.status_line(), SWITCHING);
    let mut first = got.body().to_vec();
    first.extend(read_exact_within(&mut client, greeting.len() - first.len(), STEP).await);
    assert_eq!(first, greeting);
    // The client closes; the backend (holding) sees the EOF and closes too.
    drop(client);
    let (to_backend, to_client, reason) = support::within("a report", reports.recv())
        .await
        .expect("a report");
    assert_eq!(reason, wsrelay::CloseReason::Done);
    assert_eq!(
        to_backend,
        FRAME.len() as u64,
        "the client's leftovers are counted"
    );
    assert_eq!(
        to_client,
        greeting.len() as u64,
        "the backend's bytes sent with its 101 are counted"
    );
}

/// A handshake padded with an `X-Pad` line to exactly `size` bytes, head and empty line
/// included.
fn request_of_size(size: usize) -> Vec<u8> {
    let bare = ws_request(&["X-Pad: "]).len();
    assert!(size > bare, "{size} is too small for a handshake");
    let request = ws_request(&[&format!("X-Pad: {}", "p".repeat(size - bare))]);
    assert_eq!(request.len(), size);
    request
}

/// Rule 7: the cap counts the whole head, empty line included: a head of exactly 8 KiB is
/// accepted.
#[tokio::test]
async fn rule_07_head_of_exactly_8_kib_is_accepted() {
    let (_, conn) = upgraded(&request_of_size(8 * 1024)).await;
    assert_eq!(conn.header("x-pad").len(), 1);
}

/// Rule 7: one byte over the cap is 431.
#[tokio::test]
async fn rule_07_head_one_byte_over_8_kib_is_431() {
    refused(
        &request_of_size(8 * 1024 + 1),
        "HTTP/1.1 431 Request Header Fields Too Large",
    )
    .await;
}

/// Rules 7 and 22: bytes sent after a head just under the cap, in the same packet, are
/// data, not head: they do not count against the cap, and they all reach the backend, in
/// order, after its `101`.
#[tokio::test]
async fn rule_07_leftovers_after_a_head_near_the_cap_are_data() {
    let backend = Backend::start(Script::switching(Then::Echo)).await;
    let proxy = Running::start(builder_for(&backend)).await;
    let mut client = connect(proxy.addr).await;
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let mut packet = request_of_size(8 * 1024 - 10);
    packet.extend_from_slice(&data);
    assert!(send(&mut client, &packet).await);
    let got = read_head(&mut client, ANSWER).await;
    assert_eq!(got.status_line(), SWITCHING);
    let mut echoed = got.body().to_vec();
    echoed.extend(read_exact_within(&mut client, data.len() - echoed.len(), STEP).await);
    assert_eq!(echoed.len(), data.len());
    assert!(
        echoed == data,
        "the leftovers came back out of order or altered"
    );
    let conn = backend.conn(0);
    assert!(conn.early().is_empty(), "leftovers arrived before the 101");
    assert_eq!(conn.after_head(), &data[..]);
}
