//! Raw-socket read helpers shared by the test support modules (`tests/support` and
//! `tests/hostile_support`), included by both with `#[path]`.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The length of the HTTP head at the start of `bytes` (through the blank line), if complete.
pub fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// Reads until `done` says the bytes so far are enough, the peer closes (`true`), or `limit`
/// passes; what was read, and whether the peer closed.
pub async fn read_until(
    stream: &mut TcpStream,
    limit: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> (Vec<u8>, bool) {
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
    (bytes, closed)
}
