//! The raw client: a plain `TcpStream` that writes exactly the bytes a test gives it (heads no
//! WebSocket client would send, frames in the same packet as the head) and returns exactly
//! what it read. Every operation is bounded. The reads and writes take any stream (a TLS
//! client's too).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{head_end, header_values, within, STEP};

/// What a raw client read.
#[derive(Clone, Debug)]
pub struct Got {
    /// Every byte read.
    pub bytes: Vec<u8>,
    /// Whether the peer closed the connection (EOF or reset) before the deadline.
    pub closed: bool,
}

impl Got {
    /// The status code of the response line, if one arrived.
    pub fn status(&self) -> Option<u16> {
        let line = self.status_line();
        let mut parts = line.split_whitespace();
        if !parts.next()?.starts_with("HTTP/1.") {
            return None;
        }
        parts.next()?.parse().ok()
    }

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

    /// Every value of header `name` in the head, in order (see [`header_values`]).
    pub fn header(&self, name: &str) -> Vec<String> {
        header_values(&self.head(), name)
    }

    /// What followed the head.
    pub fn body(&self) -> &[u8] {
        &self.bytes[head_end(&self.bytes).unwrap_or(self.bytes.len())..]
    }
}

/// Connects to `addr` within [`STEP`], with `TCP_NODELAY` set.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let _ = stream.set_nodelay(true);
    stream
}

/// Writes `bytes` within [`STEP`]; whether it all went out.
pub async fn send<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> bool {
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    matches!(tokio::time::timeout(STEP, write).await, Ok(Ok(())))
}

/// Reads until the peer closes or `limit` passes.
pub async fn read_to_close<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> Got {
    read_until(stream, limit, |_| false).await
}

/// Reads until a complete head has arrived (and returns everything read, which may go past
/// it), the peer closes, or `limit` passes.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> Got {
    read_until(stream, limit, |b| head_end(b).is_some()).await
}

/// Reads exactly `n` more bytes within `limit`; what arrived (shorter if it did not).
pub async fn read_exact_within<S: AsyncRead + Unpin>(
    stream: &mut S,
    n: usize,
    limit: Duration,
) -> Vec<u8> {
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

/// Connects to `addr`, writes `request` and reads until the peer closes or `limit` passes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> Got {
    let mut stream = connect(addr).await;
    assert!(send(&mut stream, request).await, "the request was written");
    read_to_close(&mut stream, limit).await
}

/// Reads until `done` says the bytes so far are enough, the peer closes, or `limit` passes.
async fn read_until<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> Got {
    let mut bytes = Vec::new();
    let mut closed = false;
    let _ = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 8192];
        while !done(&bytes) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    closed = true;
                    return;
                }
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    Got { bytes, closed }
}
