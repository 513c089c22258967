//! The load generator: the client side of each scenario, on the bench's tokio runtime.
//!
//! Every socket operation has [`OP_TIMEOUT`]; every loop is bounded by a count; the caller
//! bounds each whole scenario run with its own timeout.
//!
//! An [`Endpoint`] with a TLS client makes every connection a wss one: TCP connect, a full
//! TLS handshake, then the same upgrade and the same raw bytes inside TLS.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::procs::Meter;
use crate::servers::HALF_CLOSE_REPLY;
use crate::tls::TlsClient;

/// Every client socket operation must complete within this time.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Size of the client's bulk reads and writes.
const CHUNK: usize = 256 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

pub async fn op<T>(what: &str, fut: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(io::Error::new(e.kind(), format!("{what}: {e}"))),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what}: no progress in {} s", OP_TIMEOUT.as_secs()),
        )),
    }
}

/// Writes all of `data` and flushes it: over TLS, `write_all` may leave ciphertext in the
/// TLS layer until a flush, and a read that then waits for the answer would wait forever.
pub async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    what: &str,
    data: &[u8],
) -> io::Result<()> {
    op(what, async {
        stream.write_all(data).await?;
        stream.flush().await
    })
    .await
}

pub fn eof(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("{what}: unexpected EOF"),
    )
}

/// A client connection: plain TCP, or TLS over TCP.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An upgraded connection and the bytes that arrived after the `101` head.
pub struct Upgraded {
    pub stream: Stream,
    pub extra: Vec<u8>,
}

/// Where a proxy takes upgrades: its address, the path it upgrades at (axum's example
/// routes `/ws` only; the others take any path and get `/`), and whether it terminates TLS.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub path: &'static str,
    /// `Some` for a wss endpoint: each connection starts with a full TLS handshake.
    pub tls: Option<&'static TlsClient>,
}

/// Connects to `to`: TCP, then TLS if the endpoint has it.
pub async fn connect(to: Endpoint) -> io::Result<Stream> {
    let tcp = op("connect", TcpStream::connect(to.addr)).await?;
    tcp.set_nodelay(true)?;
    match to.tls {
        None => Ok(Stream::Plain(tcp)),
        Some(tls) => {
            let handshake = tls.connector.connect(tls.name.clone(), tcp);
            let stream = op("TLS handshake", handshake).await?;
            Ok(Stream::Tls(Box::new(stream)))
        }
    }
}

/// Connects to `to` and upgrades its path with `query` (what the backend is to do:
/// `op=echo`, `op=sink&bytes=N`, ...); fails unless the answer is a `101`.
pub async fn upgrade(to: Endpoint, query: &str) -> io::Result<Upgraded> {
    let Endpoint { addr, path, .. } = to;
    let mut stream = connect(to).await?;
    let request = format!(
        "GET {path}?{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    send(&mut stream, "write request head", request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(512);
    // Bounded: at most 64 reads or 16 KiB of head.
    for _ in 0..64 {
        let n = op("read response head", stream.read_buf(&mut buf)).await?;
        if n == 0 {
            return Err(eof("read response head"));
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 101") {
                let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
                return Err(io::Error::other(format!(
                    "not upgraded: {}",
                    String::from_utf8_lossy(line)
                )));
            }
            let extra = buf.split_off(end + 4);
            return Ok(Upgraded { stream, extra });
        }
        if buf.len() > 16 * 1024 {
            break;
        }
    }
    Err(io::Error::other("response head too large"))
}

/// Which way bulk bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// client → backend (`op=sink`).
    Up,
    /// backend → client (`op=source`).
    Down,
}

/// One bulk run's figures.
#[derive(Debug, Clone, Copy)]
pub struct Bulk {
    pub mib_per_s: f64,
    /// Proxy CPU seconds per GiB moved; `None` without a proxy process.
    pub cpu_s_per_gib: Option<f64>,
}

/// Moves `total` bytes over `conns` connections in `dir`, timing from the first byte to the
/// last (handshakes excluded).
pub async fn bulk(
    to: Endpoint,
    dir: Direction,
    conns: usize,
    total: u64,
    meter: Option<Meter>,
) -> Result<Bulk, String> {
    let per_conn = total / conns as u64;
    let query = match dir {
        Direction::Up => format!("op=sink&bytes={per_conn}"),
        Direction::Down => format!("op=source&bytes={per_conn}"),
    };
    let mut streams = Vec::with_capacity(conns);
    for _ in 0..conns {
        streams.push(upgrade(to, &query).await.map_err(|e| e.to_string())?);
    }
    let cpu0 = meter.map(|m| m.cpu()).transpose()?;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for stream in streams {
        tasks.spawn(async move {
            match dir {
                Direction::Up => upload(stream, per_conn).await,
                Direction::Down => download(stream, per_conn).await,
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu1 = meter.map(|m| m.cpu()).transpose()?;
    let moved = (per_conn * conns as u64) as f64;
    Ok(Bulk {
        mib_per_s: moved / elapsed / (1024.0 * 1024.0),
        cpu_s_per_gib: match (cpu0, cpu1) {
            (Some(a), Some(b)) => {
                Some(b.saturating_sub(a).as_secs_f64() / (moved / (1024.0 * 1024.0 * 1024.0)))
            }
            _ => None,
        },
    })
}

async fn upload(mut conn: Upgraded, bytes: u64) -> io::Result<()> {
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        send(&mut conn.stream, "upload write", &ZEROS[..n]).await?;
        left -= n as u64;
    }
    let mut ack = [0u8; 8];
    let have = conn.extra.len().min(8);
    ack[..have].copy_from_slice(&conn.extra[..have]);
    op("read sink count", conn.stream.read_exact(&mut ack[have..])).await?;
    let counted = u64::from_le_bytes(ack);
    if counted != bytes {
        return Err(io::Error::other(format!(
            "backend counted {counted} bytes, sent {bytes}"
        )));
    }
    Ok(())
}

async fn download(mut conn: Upgraded, bytes: u64) -> io::Result<()> {
    send(&mut conn.stream, "write go", b"g").await?;
    let mut got = conn.extra.len() as u64;
    let mut buf = vec![0u8; CHUNK];
    while got < bytes {
        let n = op("download read", conn.stream.read(&mut buf)).await?;
        if n == 0 {
            return Err(eof("download read"));
        }
        got += n as u64;
    }
    if got != bytes {
        return Err(io::Error::other(format!(
            "got {got} bytes, expected {bytes}"
        )));
    }
    Ok(())
}

/// Round-trip percentiles, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct RoundTrip {
    pub p50_us: f64,
    pub p99_us: f64,
}

/// `count` round trips of a 64-byte message on one connection, after `warmup` unmeasured ones.
pub async fn round_trip(to: Endpoint, warmup: usize, count: usize) -> Result<RoundTrip, String> {
    let conn = upgrade(to, "op=echo").await.map_err(|e| e.to_string())?;
    if !conn.extra.is_empty() {
        return Err("unexpected bytes after the 101".into());
    }
    let mut stream = conn.stream;
    let message = [0x5au8; 64];
    let mut back = [0u8; 64];
    let mut samples = Vec::with_capacity(count);
    for i in 0..warmup + count {
        let start = Instant::now();
        send(&mut stream, "round trip write", &message)
            .await
            .map_err(|e| e.to_string())?;
        op("round trip read", stream.read_exact(&mut back))
            .await
            .map_err(|e| e.to_string())?;
        if i >= warmup {
            samples.push(start.elapsed());
        }
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1e6
    };
    Ok(RoundTrip {
        p50_us: at(0.50),
        p99_us: at(0.99),
    })
}

/// Connect, upgrade, one 16-byte echo, close (shut down writing, read to EOF).
pub async fn one_handshake(to: Endpoint) -> io::Result<()> {
    let conn = upgrade(to, "op=echo").await?;
    let mut stream = conn.stream;
    let message = [0x33u8; 16];
    send(&mut stream, "echo write", &message).await?;
    let mut back = [0u8; 16];
    let have = conn.extra.len().min(16);
    op("echo read", stream.read_exact(&mut back[have..])).await?;
    op("shutdown", stream.shutdown()).await?;
    let mut rest = [0u8; 64];
    // Bounded: the echo sends nothing more, so EOF comes at once.
    for _ in 0..16 {
        match op("read EOF", stream.read(&mut rest)).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            // A TLS peer that closes the TCP connection without a close_notify: after our
            // own close_notify that is an EOF like any other.
            Err(e) if stream.is_tls() && e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no EOF after close"))
}

/// Handshake figures of one run.
#[derive(Debug, Clone, Copy)]
pub struct Handshakes {
    pub per_s: f64,
    /// Proxy CPU microseconds per upgrade.
    pub cpu_us: Option<f64>,
}

/// `total` handshakes ([`one_handshake`]) by `workers` concurrent workers.
pub async fn handshakes(
    to: Endpoint,
    workers: usize,
    total: usize,
    meter: Option<Meter>,
) -> Result<Handshakes, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let cpu0 = meter.map(|m| m.cpu()).transpose()?;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let (next, failed, first_error) = (next.clone(), failed.clone(), first_error.clone());
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                if let Err(e) = one_handshake(to).await {
                    failed.fetch_add(1, Ordering::Relaxed);
                    first_error
                        .lock()
                        .expect("not poisoned")
                        .get_or_insert(e.to_string());
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| e.to_string())?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu1 = meter.map(|m| m.cpu()).transpose()?;
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = first_error.lock().expect("not poisoned").take();
        return Err(format!(
            "{failed} of {total} handshakes failed (first: {})",
            first.unwrap_or_default()
        ));
    }
    Ok(Handshakes {
        per_s: total as f64 / elapsed,
        cpu_us: match (cpu0, cpu1) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() * 1e6 / total as f64),
            _ => None,
        },
    })
}

/// Idle-connection figures of one run.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    /// Proxy RSS growth per upgraded connection (no data yet), KiB.
    pub rss_kib: f64,
    /// Proxy fds per upgraded connection (no data yet).
    pub fds: f64,
    /// Further RSS growth per connection after one 16-byte echo on it, KiB.
    pub echo_rss_kib: f64,
    /// Proxy fds per held connection after one 16-byte echo on it.
    pub echo_fds: f64,
}

/// How many of the held connections then carry one echo each.
const ECHOED: usize = 1_000;

/// Opens `count` upgraded connections and holds them: the proxy's RSS and fd growth per
/// connection. Then one 16-byte echo on up to [`ECHOED`] of them (which makes a proxy
/// allocate what it allocates lazily on first data), and the growth per echoed connection.
pub async fn idle(to: Endpoint, count: usize, meter: Meter) -> Result<Idle, String> {
    warm_up(to).await?;
    let (rss0, fds0) = (meter.rss_kib()?, meter.fds()?);
    let openers = 32;
    let mut tasks = JoinSet::new();
    for worker in 0..openers {
        let mine = count / openers + usize::from(worker < count % openers);
        tasks.spawn(async move {
            let mut held = Vec::with_capacity(mine);
            for _ in 0..mine {
                let conn = upgrade(to, "op=echo").await?;
                if !conn.extra.is_empty() {
                    return Err(io::Error::other("unexpected bytes after the 101"));
                }
                held.push(conn.stream);
            }
            io::Result::Ok(held)
        });
    }
    let mut held = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        let streams = joined
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("after {} connections: {e}", held.len()))?;
        held.extend(streams);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss1, fds1) = (meter.rss_kib()?, meter.fds()?);
    let echoed = count.min(ECHOED);
    for (i, stream) in held.iter_mut().take(echoed).enumerate() {
        let echo = async {
            send(stream, "echo write", &[0x11u8; 16]).await?;
            let mut back = [0u8; 16];
            op("echo read", stream.read_exact(&mut back)).await
        };
        echo.await
            .map_err(|e| format!("echo on held connection {i}: {e}"))?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss2, fds2) = (meter.rss_kib()?, meter.fds()?);
    drop(held);
    let per = |after: u64, before: u64, n: usize| after.saturating_sub(before) as f64 / n as f64;
    let fds = per(fds1, fds0, count);
    Ok(Idle {
        rss_kib: per(rss1, rss0, count),
        fds,
        echo_rss_kib: per(rss2, rss1, echoed),
        echo_fds: fds + per(fds2, fds1, echoed),
    })
}

/// Warms up a freshly started proxy (threads, allocator) with a few handshakes, then lets it
/// settle.
async fn warm_up(to: Endpoint) -> Result<(), String> {
    for _ in 0..32 {
        one_handshake(to).await.map_err(|e| e.to_string())?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// Silent-connection figures of one run.
#[derive(Debug, Clone, Copy)]
pub struct Silent {
    /// Proxy RSS growth per connection that sent nothing, KiB.
    pub rss_kib: f64,
    /// Proxy fds per connection that sent nothing.
    pub fds: f64,
    /// How many of the connections were still open (no EOF, reset or answer) when measured.
    pub open: usize,
    /// From the first connect to the measurement.
    pub measured_after: Duration,
}

/// How long the proxy may take to accept the silent connections before they are measured
/// anyway: short, so that the measurement comes before any head timeout (wsrelay's default
/// is 10 s).
const SILENT_SETTLE: Duration = Duration::from_secs(3);
/// Silent connections are opened this many at a time, each batch once the proxy has accepted
/// the one before: fewer than any listen backlog here, the smallest being the 128 of a
/// listener made by tokio's `TcpListener::bind` (axum's example, copy_bidirectional).
const SILENT_BATCH: usize = 100;
/// How long a batch may wait for the proxy to accept it before the next is opened anyway.
const SILENT_ACCEPT_WAIT: Duration = Duration::from_secs(1);

/// Opens `count` TCP connections that send nothing (what a port scan, a slow client or a
/// slowloris attack looks like before its request head) and holds them: the proxy's RSS and
/// fd growth per connection, measured as soon as the proxy has accepted them all (its fd
/// count stops growing), and then how many of them the proxy still keeps open.
pub async fn silent(to: Endpoint, count: usize, meter: Meter) -> Result<Silent, String> {
    warm_up(to).await?;
    let (rss0, fds0) = (meter.rss_kib()?, meter.fds()?);
    let start = Instant::now();
    let mut held = Vec::with_capacity(count);
    while held.len() < count {
        let batch = SILENT_BATCH.min(count - held.len());
        let mut tasks = JoinSet::new();
        for _ in 0..batch {
            tasks.spawn(async move {
                let stream = op("connect", TcpStream::connect(to.addr)).await?;
                // Plain TCP whatever the endpoint: nothing is sent on it. Still non-blocking: `still_open` peeks without waiting.
                stream.into_std()
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let stream = joined
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("after {} connections: {e}", held.len()))?;
            held.push(stream);
        }
        // Let the proxy accept this batch (each accepted connection holds at least one fd)
        // before the next: a connect completes in the kernel, and one that finds the listen
        // queue full has its SYN dropped and retried 1 s, then 3 s later, which would spread
        // the opening over more than a head timeout.
        let accepted_by = Instant::now() + SILENT_ACCEPT_WAIT;
        while meter.fds()? < fds0 + held.len() as u64 && Instant::now() < accepted_by {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Every connection takes at least one fd once accepted: wait for that, and for the count
    // to stop moving (a relay opens its backend connection right away), within a bound.
    let settle_by = Instant::now() + SILENT_SETTLE;
    let mut last = meter.fds()?;
    let mut stable = 0;
    while Instant::now() < settle_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = meter.fds()?;
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
        if stable >= 2 && now >= fds0 + count as u64 {
            break;
        }
    }
    let (rss1, fds1) = (meter.rss_kib()?, meter.fds()?);
    let measured_after = start.elapsed();
    let open = held.iter().filter(|s| still_open(s)).count();
    drop(held);
    let per = |after: u64, before: u64| after.saturating_sub(before) as f64 / count as f64;
    Ok(Silent {
        rss_kib: per(rss1, rss0),
        fds: per(fds1, fds0),
        open,
        measured_after,
    })
}

/// Whether the proxy has neither closed, reset nor answered a connection we sent nothing on:
/// a non-blocking peek then finds nothing to read.
fn still_open(stream: &std::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Whether the backend's reply still arrives after the client shuts down writing.
pub async fn half_close(to: Endpoint) -> Result<bool, String> {
    let conn = upgrade(to, "op=halfclose")
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = conn.stream;
    let mut got = conn.extra;
    send(&mut stream, "write", b"request\n")
        .await
        .map_err(|e| e.to_string())?;
    op("shutdown", stream.shutdown())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 256];
    // Bounded: the reply is short; a reset or a timeout is a failed half-close.
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    Ok(got == HALF_CLOSE_REPLY)
}
