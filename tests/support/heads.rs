//! Building and reading HTTP/1.1 heads as raw bytes: the requests the raw client sends, the
//! answers a scripted backend gives, and header look-ups on what either side received.

use super::KEY;

/// The length of the HTTP head at the start of `bytes` (through the blank line), if complete.
pub fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// The values of every header line named `name` (case-insensitive, no whitespace allowed
/// around the name) in the head `text`, in order, trimmed.
pub fn header_values(text: &str, name: &str) -> Vec<String> {
    text.split("\r\n")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

/// The header names of the head `text`, lower-cased, in order.
pub fn header_names(text: &str) -> Vec<String> {
    text.split("\r\n")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect()
}

/// The `Sec-WebSocket-Accept` for the request head `head` (from its first key), or the accept
/// of an empty key when it has none.
pub fn accept_for(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    let key = header_values(&text, "sec-websocket-key")
        .into_iter()
        .next()
        .unwrap_or_default();
    wsrelay::handshake::derive_accept_key(key.as_bytes())
}

/// A correct `101` for the request head `head`, with `extra` header lines (no CRLF) added.
pub fn switch_with(head: &[u8], extra: &[&str]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accept_for(head)
    );
    for line in extra {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A request head made of exactly `lines` (no CRLF), ended by an empty line.
pub fn raw_request(lines: &[&str]) -> Vec<u8> {
    let mut head = String::new();
    for line in lines {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// `GET path HTTP/1.1` with `Host: host`, `Upgrade: websocket` and `Connection: Upgrade`, then
/// the `extra` lines (no CRLF): an upgrade request without a key or a version unless `extra`
/// adds them.
pub fn upgrade_request(host: &str, path: &str, extra: &[&str]) -> Vec<u8> {
    let start = [
        format!("GET {path} HTTP/1.1"),
        format!("Host: {host}"),
        "Upgrade: websocket".to_owned(),
        "Connection: Upgrade".to_owned(),
    ];
    let lines: Vec<&str> = start
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
        .collect();
    raw_request(&lines)
}

/// A complete, valid WebSocket handshake for `Host: proxy.test` at `/ws` ([`KEY`], version
/// 13), then the `extra` lines (no CRLF).
pub fn ws_request(extra: &[&str]) -> Vec<u8> {
    let key = key_line();
    let mut lines = vec![key.as_str(), "Sec-WebSocket-Version: 13"];
    lines.extend_from_slice(extra);
    upgrade_request("proxy.test", "/ws", &lines)
}

/// The header line `Sec-WebSocket-Key: KEY`.
pub fn key_line() -> String {
    format!("Sec-WebSocket-Key: {KEY}")
}
