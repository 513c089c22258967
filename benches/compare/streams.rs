//! The `h2` scenario group: many WebSocket tunnels held at once through one proxy, either
//! as HTTP/2 streams (RFC 8441 extended CONNECT over h2c with prior knowledge, the `h2`
//! crate as client) or as upgraded HTTP/1.1 connections, each to the backend's echo.
//!
//! One run, on a freshly started proxy: warm up, open every tunnel, then the proxy's RSS per
//! tunnel; round trips of a 64-byte message on each tunnel in turn; then every tunnel at
//! once echoes a number of 16 KiB messages, one at a time: the proxy's CPU per MiB echoed and
//! the echo rate, and the RSS per tunnel once more.
//!
//! Every socket operation has the client's `OP_TIMEOUT`; every loop is bounded by a count.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::ext::Protocol;
use h2::{RecvStream, SendStream};
use http::{Method, Request, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::task::{JoinHandle, JoinSet};

use crate::client::{self, eof, op, send, Endpoint, Stream};
use crate::procs::Meter;

/// Which way the tunnels reach the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// HTTP/2 streams, several per connection (RFC 8441).
    H2,
    /// One upgraded HTTP/1.1 connection per tunnel.
    H1,
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Tunnels in all.
    pub tunnels: usize,
    /// HTTP/2 connections they are spread over (HTTP/1.1: one connection each).
    pub h2_conns: usize,
    /// Rounds of round trips (each: one 64-byte message on every tunnel in turn).
    pub rtt_rounds: usize,
    /// 16 KiB messages each tunnel echoes in the echo phase.
    pub echo_messages: usize,
}

/// Size of a message of the echo phase.
pub const ECHO_MESSAGE: usize = 16 * 1024;
/// The client's HTTP/2 flow-control windows: ample, so that the proxy's own windows and
/// buffering are what is measured.
const H2_STREAM_WINDOW: u32 = 256 * 1024;
const H2_CONN_WINDOW: u32 = 16 * 1024 * 1024;
/// How long a server may take to send the SETTINGS that enable extended CONNECT.
const SETTINGS_WAIT: Duration = Duration::from_secs(2);

/// The figures of one run.
#[derive(Debug, Clone, Copy)]
pub struct Streams {
    /// Proxy RSS growth per tunnel once all are open, KiB.
    pub rss_kib: f64,
    /// Proxy RSS growth per tunnel after the echo phase (from before the first was opened),
    /// KiB.
    pub echo_rss_kib: f64,
    /// Proxy CPU milliseconds per MiB the client sent in the echo phase (each byte crosses
    /// the proxy twice).
    pub cpu_ms_per_mib: f64,
    /// MiB/s echoed (client's bytes sent) in the echo phase.
    pub mib_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// One tunnel to the echo backend.
enum Tunnel {
    H1(Stream),
    H2 {
        send: SendStream<Bytes>,
        recv: RecvStream,
        /// Received and not yet consumed.
        pending: Bytes,
    },
}

impl Tunnel {
    async fn write(&mut self, data: Bytes) -> io::Result<()> {
        match self {
            Tunnel::H1(stream) => send(stream, "write", &data).await,
            Tunnel::H2 { send, .. } => op("HTTP/2 send", h2_send(send, data)).await,
        }
    }

    /// Reads exactly `len` bytes.
    async fn read(&mut self, len: usize, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Tunnel::H1(stream) => op("read", stream.read_exact(&mut buf[..len]))
                .await
                .map(drop),
            Tunnel::H2 { recv, pending, .. } => {
                let mut got = 0;
                // Bounded: every pass consumes at least one byte, or fails.
                while got < len {
                    if pending.is_empty() {
                        let data = op("HTTP/2 receive", async {
                            match recv.data().await {
                                Some(Ok(data)) => Ok(data),
                                Some(Err(e)) => Err(io::Error::other(e)),
                                None => Err(eof("HTTP/2 receive")),
                            }
                        })
                        .await?;
                        recv.flow_control()
                            .release_capacity(data.len())
                            .map_err(io::Error::other)?;
                        *pending = data;
                        continue;
                    }
                    let n = pending.len().min(len - got);
                    let _ = pending.split_to(n);
                    got += n;
                }
                Ok(())
            }
        }
    }

    async fn echo(&mut self, message: &Bytes, buf: &mut [u8]) -> io::Result<()> {
        self.write(message.clone()).await?;
        self.read(message.len(), buf).await
    }
}

/// Sends `data` on an HTTP/2 stream within the peer's flow-control window.
async fn h2_send(send: &mut SendStream<Bytes>, mut data: Bytes) -> io::Result<()> {
    // Bounded: each pass sends at least one byte or waits for capacity; a peer that keeps
    // granting none is cut by the caller's timeout (the waits are real waits).
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let capacity = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(io::Error::other(e)),
            None => return Err(io::Error::other("stream closed for sending")),
        };
        if capacity == 0 {
            tokio::task::yield_now().await;
            continue;
        }
        let chunk = data.split_to(capacity.min(data.len()));
        send.send_data(chunk, false).map_err(io::Error::other)?;
    }
    Ok(())
}

/// An HTTP/2 connection: the handle to open streams on, and the task driving it (aborted
/// when dropped).
struct H2Conn {
    send: SendRequest<Bytes>,
    driver: JoinHandle<()>,
}

impl Drop for H2Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// What the errors of a proxy without HTTP/2 (h2c) or without RFC 8441 start with.
const NO_H2: &str = "no HTTP/2 with prior knowledge (h2c)";
const NO_RFC8441: &str = "no RFC 8441";

/// Whether an error says that the proxy does not speak the protocol, rather than that
/// something went wrong.
pub fn is_verdict(error: &str) -> bool {
    error.contains(NO_H2) || error.contains(NO_RFC8441)
}

/// Opens an h2c connection with prior knowledge and waits for the server's SETTINGS to
/// enable extended CONNECT.
async fn h2_connect(addr: SocketAddr) -> io::Result<H2Conn> {
    let tcp = op("connect", tokio::net::TcpStream::connect(addr)).await?;
    tcp.set_nodelay(true)?;
    let handshake = async {
        h2::client::Builder::new()
            .initial_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONN_WINDOW)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(|e| io::Error::other(format!("{NO_H2}: {e}")))
    };
    let (send, connection) = op("HTTP/2 handshake", handshake).await?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let conn = H2Conn { send, driver };
    let deadline = Instant::now() + SETTINGS_WAIT;
    // Bounded by the deadline.
    while !conn.send.is_extended_connect_protocol_enabled() {
        if conn.driver.is_finished() {
            return Err(io::Error::other(format!(
                "{NO_H2}: the connection closed at once"
            )));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "{NO_RFC8441}: the server's SETTINGS do not enable extended CONNECT \
                 (none within {} s)",
                SETTINGS_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(conn)
}

/// Opens one WebSocket stream on `conn`: an extended CONNECT to `path?query` with
/// `:protocol websocket` and `sec-websocket-version: 13`; fails unless the answer is 200.
async fn h2_open(
    conn: &mut H2Conn,
    addr: SocketAddr,
    path: &str,
    query: &str,
) -> io::Result<Tunnel> {
    let ready = async {
        poll_fn(|cx| conn.send.poll_ready(cx))
            .await
            .map_err(io::Error::other)
    };
    op("HTTP/2 stream slot", ready).await?;
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}{path}?{query}"))
        .header("sec-websocket-version", "13")
        .extension(Protocol::from_static("websocket"))
        .body(())
        .map_err(io::Error::other)?;
    let (response, send) = conn
        .send
        .send_request(request, false)
        .map_err(io::Error::other)?;
    let response = op("extended CONNECT response", async {
        response.await.map_err(io::Error::other)
    })
    .await?;
    if response.status() != StatusCode::OK {
        return Err(io::Error::other(format!(
            "extended CONNECT answered {}",
            response.status()
        )));
    }
    Ok(Tunnel::H2 {
        send,
        recv: response.into_body(),
        pending: Bytes::new(),
    })
}

/// Opens `count` tunnels to the echo: HTTP/2 streams spread evenly over `h2_conns`
/// connections (each connection's opened one after another, the connections at once), or
/// upgraded HTTP/1.1 connections by 32 concurrent openers.
async fn open(
    to: Endpoint,
    h2_addr: SocketAddr,
    via: Via,
    count: usize,
    h2_conns: usize,
) -> Result<(Vec<Tunnel>, Vec<H2Conn>), String> {
    let mut tasks = JoinSet::new();
    let workers = match via {
        Via::H2 => h2_conns.max(1),
        Via::H1 => 32,
    };
    for worker in 0..workers {
        let mine = count / workers + usize::from(worker < count % workers);
        tasks.spawn(async move {
            let mut tunnels = Vec::with_capacity(mine);
            match via {
                Via::H1 => {
                    for _ in 0..mine {
                        let conn = client::upgrade(to, "op=echo").await?;
                        if !conn.extra.is_empty() {
                            return Err(io::Error::other("unexpected bytes after the 101"));
                        }
                        tunnels.push(Tunnel::H1(conn.stream));
                    }
                    Ok((tunnels, None))
                }
                Via::H2 => {
                    let mut conn = h2_connect(h2_addr).await?;
                    for _ in 0..mine {
                        tunnels.push(h2_open(&mut conn, h2_addr, to.path, "op=echo").await?);
                    }
                    Ok((tunnels, Some(conn)))
                }
            }
        });
    }
    let mut tunnels = Vec::with_capacity(count);
    let mut conns = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (mine, conn) = joined.map_err(|e| e.to_string())?.map_err(|e| {
            if tunnels.is_empty() {
                e.to_string()
            } else {
                format!("after {} tunnels: {e}", tunnels.len())
            }
        })?;
        tunnels.extend(mine);
        conns.extend(conn);
    }
    Ok((tunnels, conns))
}

/// A few tunnels opened, used and closed, so that the proxy has its threads, allocator
/// arenas and (for HTTP/2) connection machinery going before it is measured.
async fn warm_up(to: Endpoint, h2_addr: SocketAddr, via: Via) -> Result<(), String> {
    for _ in 0..4 {
        let (mut tunnels, conns) = open(to, h2_addr, via, 8, 1).await?;
        let message = Bytes::from_static(&[0x42; 64]);
        let mut buf = [0u8; 64];
        for tunnel in &mut tunnels {
            tunnel
                .echo(&message, &mut buf)
                .await
                .map_err(|e| format!("warm-up echo: {e}"))?;
        }
        drop(tunnels);
        drop(conns);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// One run: see the module doc.
pub async fn streams(
    to: Endpoint,
    h2_addr: SocketAddr,
    via: Via,
    shape: Shape,
    meter: Meter,
) -> Result<Streams, String> {
    warm_up(to, h2_addr, via).await?;
    let rss0 = meter.rss_kib()?;
    let (mut tunnels, conns) = open(to, h2_addr, via, shape.tunnels, shape.h2_conns).await?;
    let n = tunnels.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = meter.rss_kib()?;

    // Round trips: one tunnel at a time, all of them held.
    let message = Bytes::from_static(&[0x5a; 64]);
    let mut buf = vec![0u8; ECHO_MESSAGE];
    let mut samples = Vec::with_capacity(shape.rtt_rounds * n);
    for _ in 0..shape.rtt_rounds {
        for (i, tunnel) in tunnels.iter_mut().enumerate() {
            let start = Instant::now();
            tunnel
                .echo(&message, &mut buf)
                .await
                .map_err(|e| format!("round trip on tunnel {i}: {e}"))?;
            samples.push(start.elapsed());
        }
    }

    // Echo: every tunnel at once.
    let cpu0 = meter.cpu()?;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, mut tunnel) in tunnels.drain(..).enumerate() {
        let messages = shape.echo_messages;
        tasks.spawn(async move {
            let message = Bytes::from(vec![0x77u8; ECHO_MESSAGE]);
            let mut buf = vec![0u8; ECHO_MESSAGE];
            for _ in 0..messages {
                tunnel
                    .echo(&message, &mut buf)
                    .await
                    .map_err(|e| format!("echo on tunnel {i}: {e}"))?;
            }
            Ok::<Tunnel, String>(tunnel)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        tunnels.push(joined.map_err(|e| e.to_string())??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = meter.cpu()?.saturating_sub(cpu0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss2 = meter.rss_kib()?;
    drop(tunnels);
    drop(conns);

    samples.sort_unstable();
    let at = |q: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1e6
    };
    let mib = (n * shape.echo_messages * ECHO_MESSAGE) as f64 / (1024.0 * 1024.0);
    let per = |after: u64, before: u64| after.saturating_sub(before) as f64 / n.max(1) as f64;
    Ok(Streams {
        rss_kib: per(rss1, rss0),
        echo_rss_kib: per(rss2, rss0),
        cpu_ms_per_mib: cpu.as_secs_f64() * 1e3 / mib.max(f64::MIN_POSITIVE),
        mib_per_s: mib / elapsed,
        p50_us: at(0.50),
        p99_us: at(0.99),
    })
}
