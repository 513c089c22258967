//! Helpers for the hostile suites (`tests/hostile.rs`, `tests/limits*.rs`, `tests/drain.rs`):
//! a scripted raw backend that records every connection (the exact bytes it received, and how
//! many of them had arrived when it wrote its answer), a raw client, and a `Proxy::serve`
//! harness. Every socket operation is bounded by a timeout, every loop by a count or a
//! deadline, so no helper can hang a test.
#![allow(dead_code)]

#[path = "../common/raw_read.rs"]
mod raw_read;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raw_read::read_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wsrelay::{Proxy, ProxyBuilder, ServeSummary};

/// The bound on one step of a test (a connect, a write, reading one response).
pub const STEP: Duration = Duration::from_secs(10);

/// How long a scripted backend connection lives at most, whatever the peer does.
const BACKEND_LIFETIME: Duration = Duration::from_secs(20);

/// A valid `Sec-WebSocket-Key` (RFC 6455 §1.3's example).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Awaits `future`, panicking with `what` if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Polls `condition` every few milliseconds until it holds or `limit` passes; whether it held.
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

pub use raw_read::head_end;

/// The values of every header line named `name` (case-insensitive) in the head `text`, in
/// order, trimmed.
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

/// The `Sec-WebSocket-Accept` for the request head `head` (from its key), or an empty string
/// when it has none.
pub fn accept_for(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    let key = header_values(&text, "sec-websocket-key")
        .into_iter()
        .next()
        .unwrap_or_default();
    wsrelay::handshake::derive_accept_key(key.as_bytes())
}

/// Builds a backend's answer from the request head it received.
pub type Responder = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// A correct `101` for `head`, with `extra` header lines (no CRLF) added.
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

/// What a backend does after writing its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Shut down writing; keep recording what arrives until the peer closes.
    Close,
    /// Keep recording what arrives until the peer closes.
    Hold,
    /// Echo every byte that arrives (recording it too) until the peer closes.
    Echo,
    /// Write this many bytes as fast as the peer takes them, then shut down writing; keep
    /// reading (and counting, not recording) meanwhile.
    Flood(u64),
}

/// How a scripted backend behaves on every connection.
#[derive(Clone)]
pub struct Script {
    /// The answer to a complete request head; `None` never answers.
    pub answer: Option<Responder>,
    /// How long to wait after the head is complete before answering (reading meanwhile).
    pub delay: Duration,
    /// What to do after answering.
    pub then: Then,
}

impl Script {
    /// Answers every head with `bytes`, then does `then`.
    pub fn canned(bytes: impl Into<Vec<u8>>, then: Then) -> Self {
        let bytes = bytes.into();
        Script {
            answer: Some(Arc::new(move |_: &[u8]| bytes.clone())),
            delay: Duration::ZERO,
            then,
        }
    }

    /// Answers every head with `respond(head)`, then does `then`.
    pub fn with(respond: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static, then: Then) -> Self {
        Script {
            answer: Some(Arc::new(respond)),
            delay: Duration::ZERO,
            then,
        }
    }

    /// Accepts every upgrade with a correct `101`, then does `then`.
    pub fn switching(then: Then) -> Self {
        Self::with(|head| switch_with(head, &[]), then)
    }

    /// Reads and records, never answers.
    pub fn silent() -> Self {
        Script {
            answer: None,
            delay: Duration::ZERO,
            then: Then::Hold,
        }
    }

    /// Waits `delay` after the head before answering.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One connection a scripted backend accepted.
#[derive(Clone, Debug, Default)]
pub struct Conn {
    /// Every byte received (except during a flood, where only the count is kept).
    pub bytes: Vec<u8>,
    /// The length of the request head, once complete.
    pub head_len: Option<usize>,
    /// How many bytes had been received when the answer was written.
    pub answered_at: Option<usize>,
    /// Whether the peer closed (EOF or error).
    pub closed: bool,
    /// Bytes received after the answer (all of them, also during a flood).
    pub received_after: u64,
    /// Bytes written after the answer (echoed or flooded).
    pub sent_after: u64,
}

impl Conn {
    /// The request head as text (everything received if incomplete).
    pub fn head_text(&self) -> String {
        let end = self.head_len.unwrap_or(self.bytes.len());
        String::from_utf8_lossy(&self.bytes[..end]).into_owned()
    }

    /// The values of every header line `name` of the request head.
    pub fn header(&self, name: &str) -> Vec<String> {
        header_values(&self.head_text(), name)
    }

    /// The request line.
    pub fn request_line(&self) -> String {
        self.head_text()
            .split("\r\n")
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// Bytes that arrived after the head but before the answer was written.
    pub fn early(&self) -> &[u8] {
        let start = self.head_len.unwrap_or(self.bytes.len());
        let end = self.answered_at.unwrap_or(self.bytes.len()).max(start);
        &self.bytes[start..end]
    }

    /// Everything received after the head.
    pub fn after_head(&self) -> &[u8] {
        &self.bytes[self.head_len.unwrap_or(self.bytes.len())..]
    }
}

/// A raw TCP backend on `127.0.0.1:0` that runs a [`Script`] on every connection and records
/// what it receives.
#[derive(Clone)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    conns: Arc<Mutex<Vec<Arc<Mutex<Conn>>>>>,
}

impl Backend {
    /// Starts a backend running `script`.
    pub async fn start(script: Script) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let backend = Backend {
            addr: listener.local_addr().expect("backend address"),
            accepted: Arc::default(),
            conns: Arc::default(),
        };
        let state = backend.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let record = Arc::new(Mutex::new(Conn::default()));
                state.conns.lock().unwrap().push(record.clone());
                state.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(run(stream, record, script.clone()));
            }
        });
        backend
    }

    /// How many connections it accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// A snapshot of connection `i`.
    pub fn conn(&self, i: usize) -> Conn {
        let conns = self.conns.lock().unwrap();
        let conn = conns.get(i).expect("no such backend connection");
        let snapshot = conn.lock().unwrap().clone();
        snapshot
    }

    /// A snapshot of every connection.
    pub fn conns(&self) -> Vec<Conn> {
        let conns = self.conns.lock().unwrap();
        conns.iter().map(|c| c.lock().unwrap().clone()).collect()
    }

    /// Waits (up to `limit`) until connection `i` has been closed by the proxy; its snapshot.
    pub async fn closed(&self, i: usize, limit: Duration) -> Conn {
        let closed = eventually(limit, || {
            let conns = self.conns.lock().unwrap();
            conns.get(i).is_some_and(|c| c.lock().unwrap().closed)
        })
        .await;
        assert!(closed, "the proxy did not close backend connection {i}");
        self.conn(i)
    }
}

async fn run(stream: TcpStream, record: Arc<Mutex<Conn>>, script: Script) {
    let _ = tokio::time::timeout(BACKEND_LIFETIME, serve_conn(stream, &record, script)).await;
}

async fn serve_conn(mut stream: TcpStream, record: &Mutex<Conn>, script: Script) {
    let mut buf = vec![0u8; 64 * 1024];
    // The request head.
    let head_len = loop {
        if let Some(end) = head_end(&record.lock().unwrap().bytes) {
            break end;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => {
                record.lock().unwrap().closed = true;
                return;
            }
            Ok(n) => record.lock().unwrap().bytes.extend_from_slice(&buf[..n]),
        }
    };
    record.lock().unwrap().head_len = Some(head_len);
    let Some(respond) = script.answer else {
        return record_until_close(&mut stream, record, &mut buf).await;
    };
    // The delay before answering, still recording what arrives.
    let answer_at = tokio::time::Instant::now() + script.delay;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(answer_at) => break,
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    record.lock().unwrap().closed = true;
                    return;
                }
                Ok(n) => record.lock().unwrap().bytes.extend_from_slice(&buf[..n]),
            },
        }
    }
    let (answer, early) = {
        let mut conn = record.lock().unwrap();
        conn.answered_at = Some(conn.bytes.len());
        (
            respond(&conn.bytes[..head_len]),
            conn.bytes[head_len..].to_vec(),
        )
    };
    if stream.write_all(&answer).await.is_err() {
        record.lock().unwrap().closed = true;
        return;
    }
    match script.then {
        Then::Close => {
            let _ = stream.shutdown().await;
            record_until_close(&mut stream, record, &mut buf).await;
        }
        Then::Hold => record_until_close(&mut stream, record, &mut buf).await,
        Then::Echo => {
            if stream.write_all(&early).await.is_err() {
                record.lock().unwrap().closed = true;
                return;
            }
            record.lock().unwrap().sent_after += early.len() as u64;
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        {
                            let mut conn = record.lock().unwrap();
                            conn.bytes.extend_from_slice(&buf[..n]);
                            conn.received_after += n as u64;
                        }
                        if stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        record.lock().unwrap().sent_after += n as u64;
                    }
                }
            }
            record.lock().unwrap().closed = true;
        }
        Then::Flood(total) => {
            let (mut reader, mut writer) = stream.into_split();
            let chunk = vec![0x5au8; 256 * 1024];
            let flood = async {
                let mut left = total;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    match writer.write(&chunk[..n]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            left -= n as u64;
                            record.lock().unwrap().sent_after += n as u64;
                        }
                    }
                }
                let _ = writer.shutdown().await;
            };
            let drain = async {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => record.lock().unwrap().received_after += n as u64,
                    }
                }
            };
            tokio::join!(flood, drain);
            record.lock().unwrap().closed = true;
        }
    }
}

async fn record_until_close(stream: &mut TcpStream, record: &Mutex<Conn>, buf: &mut [u8]) {
    loop {
        match stream.read(buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut conn = record.lock().unwrap();
                conn.bytes.extend_from_slice(&buf[..n]);
                if conn.answered_at.is_some() {
                    conn.received_after += n as u64;
                }
            }
        }
    }
    record.lock().unwrap().closed = true;
}

/// A proxy running [`Proxy::serve`] on `127.0.0.1:0`.
pub struct Running {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The proxy (for `active_tunnels`).
    pub proxy: Proxy,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<ServeSummary>>,
}

impl Running {
    /// Builds `builder` and serves it.
    pub async fn start(builder: ProxyBuilder) -> Running {
        let proxy = builder.build().expect("a valid proxy configuration");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = proxy.clone();
        let task = tokio::spawn(async move {
            server
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
        });
        Running {
            addr,
            proxy,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Signals shutdown and waits (up to `limit`) for `serve` to return its summary.
    pub async fn stop(mut self, limit: Duration) -> ServeSummary {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("serve task");
        within(limit, "serve to return after shutdown", task)
            .await
            .expect("serve does not panic")
    }
}

/// A proxy builder with `backend` as its only backend and the default configuration.
pub fn builder_for(backend: &Backend) -> ProxyBuilder {
    Proxy::builder().backend(backend.addr.to_string())
}

/// What a raw client read.
#[derive(Clone, Debug)]
pub struct Got {
    /// Every byte read.
    pub bytes: Vec<u8>,
    /// Whether the proxy closed the connection (EOF or reset) before the deadline.
    pub closed: bool,
}

impl Got {
    /// The first line, without its CRLF.
    pub fn status_line(&self) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        text.split("\r\n").next().unwrap_or_default().to_owned()
    }

    /// The head as text (everything if incomplete).
    pub fn head(&self) -> String {
        let end = head_end(&self.bytes).unwrap_or(self.bytes.len());
        String::from_utf8_lossy(&self.bytes[..end]).into_owned()
    }

    /// Every value of header `name` in the head.
    pub fn header(&self, name: &str) -> Vec<String> {
        header_values(&self.head(), name)
    }

    /// What followed the head.
    pub fn body(&self) -> &[u8] {
        &self.bytes[head_end(&self.bytes).unwrap_or(self.bytes.len())..]
    }
}

/// Connects to `addr` within [`STEP`].
pub async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = within(STEP, "connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let _ = stream.set_nodelay(true);
    stream
}

/// Writes `bytes` within [`STEP`]; whether it all went out.
pub async fn send(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(STEP, stream.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

/// Reads until the peer closes or `limit` passes.
pub async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Got {
    let (bytes, closed) = read_until(stream, limit, |_| false).await;
    Got { bytes, closed }
}

/// Reads until a complete head has arrived, the peer closes, or `limit` passes.
pub async fn read_head(stream: &mut TcpStream, limit: Duration) -> Got {
    let (bytes, closed) = read_until(stream, limit, |b| head_end(b).is_some()).await;
    Got { bytes, closed }
}

/// Reads exactly `n` more bytes within `limit`; what arrived (shorter if it did not).
pub async fn read_exact_within(stream: &mut TcpStream, n: usize, limit: Duration) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    let _ = tokio::time::timeout(limit, async {
        while got < n {
            match stream.read(&mut out[got..]).await {
                Ok(0) | Err(_) => return,
                Ok(k) => got += k,
            }
        }
    })
    .await;
    out.truncate(got);
    out
}

/// A WebSocket handshake for `Host: proxy.test` at `/ws` with the standard headers, then the
/// `extra` lines (no CRLF).
pub fn ws_request(extra: &[&str]) -> Vec<u8> {
    let mut head = format!(
        "GET /ws HTTP/1.1\r\nHost: proxy.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
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

/// This process's resident set size, in KiB (`VmRSS` of `/proc/self/status`).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// The number of file descriptors this process has open (the directory handle used to count
/// them included, at every call alike).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// The soft `Max open files` limit of this process, from `/proc/self/limits`.
pub fn fd_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}
