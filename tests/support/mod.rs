//! Shared helpers for the integration tests: the echo backend, a scripted raw backend, a raw
//! client and an fd counter. Every socket operation is bounded by a timeout, so no helper can
//! hang a test.
#![allow(dead_code)]

#[path = "../../examples/support/echo.rs"]
pub mod echo;

#[path = "../common/raw_read.rs"]
mod raw_read;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raw_read::read_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The bound on any single step of a test (a connect, a read, a message round trip).
pub const STEP: Duration = Duration::from_secs(10);

/// How long a scripted backend keeps reading after answering before giving up on the peer.
const BACKEND_HOLD: Duration = Duration::from_secs(10);

/// A valid `Sec-WebSocket-Key` (the RFC 6455 §1.3 example).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Starts the echo backend on `127.0.0.1:0` and returns its address.
pub async fn spawn_echo() -> SocketAddr {
    echo::spawn().await
}

/// Awaits `future`, panicking with `what` if it takes longer than [`STEP`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    within_for(STEP, what, future).await
}

/// Awaits `future`, panicking with `what` if it takes longer than `limit`.
pub async fn within_for<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Polls `condition` every few milliseconds until it holds or `limit` passes; returns whether
/// it held.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An address on `127.0.0.1` where nothing listens (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local address")
}

/// The number of file descriptors this process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// A WebSocket handshake request for `host` and `path`, with the extra header lines given
/// (each without its CRLF) appended after the standard ones.
pub fn ws_request(host: &str, path: &str, extra: &[&str]) -> Vec<u8> {
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    );
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// A complete, valid WebSocket handshake request for `host` at `/ws`.
pub fn valid_ws_request(host: &str) -> Vec<u8> {
    ws_request(
        host,
        "/ws",
        &[
            &format!("Sec-WebSocket-Key: {KEY}"),
            "Sec-WebSocket-Version: 13",
        ],
    )
}

/// What a backend should do after sending its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Shut down writing, keep recording what arrives until the peer closes.
    Close,
    /// Keep the connection open, recording what arrives, until the peer closes.
    Hold,
    /// Echo every byte that arrives afterwards (recording it too), until the peer closes.
    Echo,
}

/// How a scripted backend answers a request head.
type Responder = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// One connection a scripted backend accepted.
#[derive(Clone, Debug, Default)]
pub struct Received {
    /// Every byte received, the request head first.
    pub bytes: Vec<u8>,
    /// Whether the peer closed its side (EOF or reset) before the backend gave up.
    pub closed: bool,
}

impl Received {
    /// The request head, up to and including its empty line (everything if incomplete).
    pub fn head(&self) -> &[u8] {
        match find_head_end(&self.bytes) {
            Some(end) => &self.bytes[..end],
            None => &self.bytes,
        }
    }

    /// What arrived after the request head.
    pub fn after_head(&self) -> &[u8] {
        &self.bytes[self.head().len()..]
    }

    /// The request head as text.
    pub fn head_text(&self) -> String {
        String::from_utf8_lossy(self.head()).into_owned()
    }
}

/// A raw TCP backend that records what it receives and answers with scripted bytes.
#[derive(Clone)]
pub struct ScriptedBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    connections: Arc<Mutex<Vec<Arc<Mutex<Received>>>>>,
}

impl ScriptedBackend {
    /// A backend that answers every complete request head with `response`, then does `then`.
    pub async fn canned(response: impl Into<Vec<u8>>, then: Then) -> Self {
        let response = response.into();
        Self::spawn(Some(Arc::new(move |_: &[u8]| response.clone())), then).await
    }

    /// A backend that accepts the upgrade with a correct `101` (computing the accept key from
    /// the request), then does `then`.
    pub async fn switching(then: Then) -> Self {
        Self::spawn(Some(Arc::new(switching_protocols)), then).await
    }

    /// A backend that accepts connections and records what arrives, but never answers.
    pub async fn silent() -> Self {
        Self::spawn(None, Then::Hold).await
    }

    async fn spawn(respond: Option<Responder>, then: Then) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let backend = ScriptedBackend {
            addr: listener.local_addr().expect("local address"),
            accepted: Arc::default(),
            connections: Arc::default(),
        };
        let state = backend.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                state.accepted.fetch_add(1, Ordering::SeqCst);
                let record = Arc::new(Mutex::new(Received::default()));
                state.connections.lock().unwrap().push(record.clone());
                tokio::spawn(scripted_connection(stream, record, respond.clone(), then));
            }
        });
        backend
    }

    /// How many connections it accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// A snapshot of every connection it accepted, in order.
    pub fn received(&self) -> Vec<Received> {
        let connections = self.connections.lock().unwrap();
        connections
            .iter()
            .map(|c| c.lock().unwrap().clone())
            .collect()
    }
}

async fn scripted_connection(
    mut stream: TcpStream,
    record: Arc<Mutex<Received>>,
    respond: Option<Responder>,
    then: Then,
) {
    let _ = tokio::time::timeout(BACKEND_HOLD, async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut answered = false;
        loop {
            let n = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    record.lock().unwrap().closed = true;
                    return;
                }
                Ok(n) => n,
            };
            let answer = {
                let mut received = record.lock().unwrap();
                received.bytes.extend_from_slice(&buf[..n]);
                match (&respond, answered) {
                    (Some(respond), false) => {
                        find_head_end(&received.bytes).map(|end| respond(&received.bytes[..end]))
                    }
                    _ => None,
                }
            };
            if let Some(answer) = answer {
                answered = true;
                if stream.write_all(&answer).await.is_err() {
                    return;
                }
                if then == Then::Close {
                    let _ = stream.shutdown().await;
                }
                // Bytes that came with the head are data for after the answer.
                if then == Then::Echo {
                    let extra = record.lock().unwrap().after_head().to_vec();
                    if stream.write_all(&extra).await.is_err() {
                        return;
                    }
                }
            } else if answered && then == Then::Echo && stream.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    })
    .await;
}

/// A correct `101` for the request head `head`.
pub fn switching_protocols(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let key = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-key"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        wsrelay::handshake::derive_accept_key(key.as_bytes())
    )
    .into_bytes()
}

pub use raw_read::head_end as find_head_end;

/// What a raw client read.
#[derive(Clone, Debug)]
pub struct RawResponse {
    /// Every byte read.
    pub bytes: Vec<u8>,
    /// Whether the server closed the connection (EOF or reset) before the deadline.
    pub closed: bool,
}

impl RawResponse {
    /// The status code of the response line, if one arrived.
    pub fn status(&self) -> Option<u16> {
        let line = self.bytes.split(|&b| b == b'\n').next()?;
        let line = std::str::from_utf8(line).ok()?;
        let mut parts = line.split_whitespace();
        if !parts.next()?.starts_with("HTTP/1.") {
            return None;
        }
        parts.next()?.parse().ok()
    }

    /// The head as text (everything if it is incomplete).
    pub fn head(&self) -> String {
        let end = find_head_end(&self.bytes).unwrap_or(self.bytes.len());
        String::from_utf8_lossy(&self.bytes[..end]).into_owned()
    }

    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head()
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim().to_owned())
    }

    /// What followed the head.
    pub fn body(&self) -> &[u8] {
        let end = find_head_end(&self.bytes).unwrap_or(self.bytes.len());
        &self.bytes[end..]
    }
}

/// Connects to `addr` within [`STEP`].
pub async fn connect(addr: SocketAddr) -> TcpStream {
    within("connect", TcpStream::connect(addr))
        .await
        .expect("connect")
}

/// Reads from `stream` until the peer closes or `limit` passes, whichever is first.
pub async fn read_until_close(stream: &mut TcpStream, limit: Duration) -> RawResponse {
    let (bytes, closed) = read_until(stream, limit, |_| false).await;
    RawResponse { bytes, closed }
}

/// Reads from `stream` until a complete head has arrived (and returns everything read), or
/// the peer closes, or `limit` passes.
pub async fn read_head(stream: &mut TcpStream, limit: Duration) -> RawResponse {
    let (bytes, closed) = read_until(stream, limit, |b| find_head_end(b).is_some()).await;
    RawResponse { bytes, closed }
}

/// Connects to `addr`, writes `request` and reads until the server closes or `limit` passes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> RawResponse {
    let mut stream = connect(addr).await;
    write_all(&mut stream, request)
        .await
        .expect("write request");
    read_until_close(&mut stream, limit).await
}

/// Writes `bytes` within [`STEP`].
pub async fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    within("write", stream.write_all(bytes)).await
}
