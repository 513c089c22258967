//! The tunnel helpers (`wsrelay::tunnel` without the proxy): socket pairs, a [`Harness`] that
//! starts a tunnel in any [`Mode`] with its ends optionally swapped, and a pseudo-random byte
//! stream with a verifier.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use wsrelay::{tunnel, CloseReason, Leftovers, Report, SpliceConfig, TunnelPath};

/// How the tunnel under test is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// TcpStreams with `zero_copy(true)`: splice on Linux.
    ZeroCopy,
    /// TcpStreams with `zero_copy(false)`.
    BufferedTcp,
    /// `tokio::io::duplex` pairs (always buffered).
    Duplex,
}

impl Mode {
    pub fn expected_path(self) -> TunnelPath {
        match self {
            Mode::ZeroCopy if cfg!(target_os = "linux") => TunnelPath::ZeroCopy,
            _ => TunnelPath::Buffered,
        }
    }

    pub fn is_tcp(self) -> bool {
        self != Mode::Duplex
    }
}

/// A connected loopback pair: (connecting side, accepted side).
pub async fn tcp_pair() -> (TcpStream, TcpStream) {
    tcp_pair_sized(None).await
}

/// A connected loopback pair whose four socket buffers are fixed to `size` bytes (which
/// turns off autotuning), or left to the kernel with `None`.
pub async fn tcp_pair_sized(size: Option<u32>) -> (TcpStream, TcpStream) {
    let listener = TcpSocket::new_v4().unwrap();
    if let Some(size) = size {
        listener.set_recv_buffer_size(size).unwrap();
        listener.set_send_buffer_size(size).unwrap();
    }
    listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener: TcpListener = listener.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = size {
        socket.set_recv_buffer_size(size).unwrap();
        socket.set_send_buffer_size(size).unwrap();
    }
    let (connected, accepted) = tokio::join!(socket.connect(addr), listener.accept());
    (connected.unwrap(), accepted.unwrap().0)
}

/// A test peer: the far end of a socket pair or of a duplex pair.
#[derive(Debug)]
pub enum Peer {
    Tcp(TcpStream),
    Duplex(DuplexStream),
}

impl Peer {
    pub fn tcp(self) -> TcpStream {
        match self {
            Peer::Tcp(s) => s,
            Peer::Duplex(_) => panic!("not a TCP peer"),
        }
    }
}

impl AsyncRead for Peer {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Peer::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Peer::Duplex(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Peer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Peer::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Peer::Duplex(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Peer::Tcp(s) => Pin::new(s).poll_flush(cx),
            Peer::Duplex(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Peer::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Peer::Duplex(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

enum Ends {
    Tcp(TcpStream, TcpStream),
    Duplex(DuplexStream, DuplexStream),
}

/// A tunnel between two peers `a` and `b`. Unswapped, `a` is the client's peer and `b`
/// the backend's; swapped, the other way round.
pub struct Harness {
    pub mode: Mode,
    pub swapped: bool,
    pub a: Option<Peer>,
    pub b: Option<Peer>,
    ends: Option<Ends>,
}

/// Capacity of each duplex pipe in `Mode::Duplex`.
pub const DUPLEX_CAPACITY: usize = 64 * 1024;

impl Harness {
    pub async fn new(mode: Mode, swapped: bool) -> Self {
        Self::with_socket_buffers(mode, swapped, None).await
    }

    /// Like `new`, with fixed socket buffer sizes for the TCP modes.
    pub async fn with_socket_buffers(mode: Mode, swapped: bool, size: Option<u32>) -> Self {
        let (client_peer, backend_peer, ends) = match mode {
            Mode::ZeroCopy | Mode::BufferedTcp => {
                let (cp, ce) = tcp_pair_sized(size).await;
                let (bp, be) = tcp_pair_sized(size).await;
                (Peer::Tcp(cp), Peer::Tcp(bp), Ends::Tcp(ce, be))
            }
            Mode::Duplex => {
                let (cp, ce) = tokio::io::duplex(DUPLEX_CAPACITY);
                let (bp, be) = tokio::io::duplex(DUPLEX_CAPACITY);
                (Peer::Duplex(cp), Peer::Duplex(bp), Ends::Duplex(ce, be))
            }
        };
        let (a, b) = if swapped {
            (backend_peer, client_peer)
        } else {
            (client_peer, backend_peer)
        };
        Self {
            mode,
            swapped,
            a: Some(a),
            b: Some(b),
            ends: Some(ends),
        }
    }

    pub fn take_a(&mut self) -> Peer {
        self.a.take().unwrap()
    }

    pub fn take_b(&mut self) -> Peer {
        self.b.take().unwrap()
    }

    /// The leftovers that reach `b` first (`toward_b`) and `a` first (`toward_a`).
    pub fn leftovers(&self, toward_b: &'static [u8], toward_a: &'static [u8]) -> Leftovers {
        let (to_backend, to_client) = if self.swapped {
            (toward_a, toward_b)
        } else {
            (toward_b, toward_a)
        };
        Leftovers {
            to_backend: Bytes::from_static(to_backend),
            to_client: Bytes::from_static(to_client),
        }
    }

    /// Starts the tunnel with `config` (its `zero_copy` set by the mode).
    pub fn start<S>(
        &mut self,
        config: SpliceConfig,
        leftovers: Leftovers,
        shutdown: S,
    ) -> JoinHandle<Report>
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let config = config.zero_copy(self.mode == Mode::ZeroCopy);
        match self.ends.take().expect("started twice") {
            Ends::Tcp(c, b) => {
                tokio::spawn(async move { tunnel(c, b, leftovers, &config, shutdown).await })
            }
            Ends::Duplex(c, b) => {
                tokio::spawn(async move { tunnel(c, b, leftovers, &config, shutdown).await })
            }
        }
    }

    /// The error reason for a failure on `a`'s side.
    pub fn a_error(&self, kind: io::ErrorKind) -> CloseReason {
        if self.swapped {
            CloseReason::BackendError(kind)
        } else {
            CloseReason::ClientError(kind)
        }
    }

    /// (bytes delivered to b, bytes delivered to a) from a report.
    pub fn delivered(&self, r: &Report) -> (u64, u64) {
        if self.swapped {
            (r.backend_to_client, r.client_to_backend)
        } else {
            (r.client_to_backend, r.backend_to_client)
        }
    }

    /// (undelivered toward b, undelivered toward a) from a report.
    pub fn undelivered(&self, r: &Report) -> (u64, u64) {
        if self.swapped {
            (r.undelivered_to_client, r.undelivered_to_backend)
        } else {
            (r.undelivered_to_backend, r.undelivered_to_client)
        }
    }
}

/// Block size of the pseudo-random stream.
pub const BLOCK: usize = 64 * 1024;

/// xorshift64*: deterministic pseudo-random bytes, produced a block at a time.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Writes `total` bytes of the stream `seed` (in blocks), then shuts down writing.
pub async fn send_stream<W: AsyncWrite + Unpin>(
    w: &mut W,
    seed: u64,
    total: u64,
) -> io::Result<()> {
    let mut rng = Prng::new(seed);
    let mut block = vec![0u8; BLOCK];
    let mut left = total;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        rng.fill(&mut block);
        w.write_all(&block[..n]).await?;
        left -= n as u64;
    }
    w.shutdown().await
}

/// Reads to EOF, checking every byte against the stream `seed`; returns the byte count.
pub async fn recv_stream<R: AsyncRead + Unpin>(r: &mut R, seed: u64) -> io::Result<u64> {
    let mut rng = Prng::new(seed);
    let mut expect = vec![0u8; BLOCK];
    let mut pos = BLOCK;
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        let mut got = &buf[..n];
        while !got.is_empty() {
            if pos == BLOCK {
                rng.fill(&mut expect);
                pos = 0;
            }
            let k = got.len().min(BLOCK - pos);
            assert!(
                got[..k] == expect[pos..pos + k],
                "stream {seed}: wrong bytes near offset {total}"
            );
            got = &got[k..];
            pos += k;
            total += k as u64;
        }
    }
}

/// Reads to EOF and returns everything read.
pub async fn read_all<R: AsyncRead + Unpin>(r: &mut R) -> Vec<u8> {
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    out
}

/// Closes `s` with a reset (`SO_LINGER` 0, then drop).
pub fn reset(s: TcpStream) {
    // Deprecated in recent tokio because a non-zero linger blocks on drop; zero does not.
    #[allow(deprecated)]
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}
