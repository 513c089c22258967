//! An RFC 6455 echo server written at the frame level, used as the bundled backend by the
//! examples and as the backend of the integration tests.
//!
//! Include it with `#[path = "support/echo.rs"] mod echo;` (examples) or
//! `#[path = "../examples/support/echo.rs"] mod echo;` (tests).
//!
//! Frames are echoed as frames: every data frame comes back with the same opcode, FIN bit and
//! payload (unmasked), so fragmentation is preserved; a ping is answered with a pong carrying
//! the same payload; a close frame is echoed (status code and reason) and the connection is
//! then closed. A client frame that breaks RFC 6455 §5 (unmasked, RSV bits set, reserved
//! opcode, fragmented or oversized control frame, continuation out of place) gets a close
//! frame with status 1002 and the connection is closed.
//!
//! Data frame payloads are streamed through one read buffer and one write buffer per
//! connection, so a frame of any size (64-bit lengths) costs no more memory than a small one.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use http::{header, Method, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wsrelay::handshake::{derive_accept_key, is_valid_key};
use wsrelay::wire::{read_request_head, HeadLimits};

/// How much to read at once, and how much output to gather before writing it.
const CHUNK: usize = 64 * 1024;
/// Payload chunks at least this large are written straight from the read buffer.
const DIRECT_WRITE: usize = 16 * 1024;
/// How long to wait for the client's FIN after our close frame before dropping the socket.
const LINGER: Duration = Duration::from_secs(2);

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Close status 1002: protocol error (RFC 6455 §7.4.1).
const PROTOCOL_ERROR: u16 = 1002;

/// Binds `127.0.0.1:0`, serves the echo protocol on it in a background task and returns the
/// bound address.
pub async fn spawn() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the echo backend");
    let addr = listener.local_addr().expect("echo backend address");
    tokio::spawn(serve(listener));
    addr
}

/// Accepts connections forever, one task per connection.
pub async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                tokio::spawn(async move {
                    // A connection's errors (resets, malformed heads) end only that connection.
                    let _ = handle(stream).await;
                });
            }
            // Out of fds or a connection reset before accept: back off briefly, keep serving.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Serves one connection: the handshake, then frames until a close or an error.
async fn handle(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (request, leftover) = match read_request_head(&mut stream, &HeadLimits::default()).await {
        Ok(head) => head,
        Err(error) => {
            if error.is_too_large() {
                refuse(&mut stream, "431 Request Header Fields Too Large", "").await?;
            } else if matches!(error, wsrelay::HeadError::Malformed(_)) {
                refuse(&mut stream, "400 Bad Request", "").await?;
            }
            return Ok(());
        }
    };
    let accept = match check_handshake(&request) {
        Ok(accept) => accept,
        Err(Refusal::BadRequest) => return refuse(&mut stream, "400 Bad Request", "").await,
        Err(Refusal::Version) => {
            let extra = "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n";
            return refuse(&mut stream, "426 Upgrade Required", extra).await;
        }
    };

    let mut out = BytesMut::with_capacity(256);
    out.put_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.put_slice(accept.as_bytes());
    if let Some(protocol) = first_protocol(&request) {
        out.put_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.put_slice(protocol.as_bytes());
    }
    out.put_slice(b"\r\n\r\n");
    stream.write_all(&out).await?;
    out.clear();

    // The bytes that arrived with the head are the first frame bytes.
    let mut input = BytesMut::with_capacity(CHUNK.max(leftover.len()));
    input.put_slice(&leftover);
    drop(leftover);
    Echo {
        stream,
        input,
        output: out,
    }
    .run()
    .await
}

enum Refusal {
    BadRequest,
    Version,
}

/// The minimal checks of RFC 6455 §4.2.1; returns the `Sec-WebSocket-Accept` value.
fn check_handshake(request: &Request<()>) -> Result<String, Refusal> {
    let headers = request.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|value| {
                value
                    .split(',')
                    .any(|item| item.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if request.method() != Method::GET
        || !has_token(header::UPGRADE, "websocket")
        || !has_token(header::CONNECTION, "upgrade")
    {
        return Err(Refusal::BadRequest);
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) if is_valid_key(key.as_bytes()) => key,
        _ => return Err(Refusal::BadRequest),
    };
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(version), None) if version == "13" => {}
        _ => return Err(Refusal::Version),
    }
    Ok(derive_accept_key(key.as_bytes()))
}

/// The first subprotocol the client offered, if any.
fn first_protocol(request: &Request<()>) -> Option<&str> {
    request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .find(|token| !token.is_empty())
}

/// Answers a refused handshake and closes the connection.
async fn refuse(stream: &mut TcpStream, status: &str, extra_headers: &str) -> io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\n{extra_headers}Connection: close\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    linger(stream).await
}

/// Closes our side and waits (bounded) for the peer's FIN, so that unread input does not turn
/// our last bytes into a reset.
async fn linger(stream: &mut TcpStream) -> io::Result<()> {
    stream.shutdown().await?;
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    Ok(())
}

/// A decoded client frame header.
struct FrameHeader {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    len: u64,
}

/// What the next bytes of input hold.
enum Next {
    /// A header of this many bytes.
    Header(FrameHeader, usize),
    /// Not enough bytes yet.
    Incomplete,
    /// A frame that breaks RFC 6455 §5.
    Invalid,
}

struct Echo {
    stream: TcpStream,
    input: BytesMut,
    output: BytesMut,
}

impl Echo {
    async fn run(mut self) -> io::Result<()> {
        // Whether a fragmented data message is in progress (RFC 6455 §5.4).
        let mut in_message = false;
        loop {
            let (frame, header_len) = match parse_header(&self.input) {
                Next::Header(frame, len) => (frame, len),
                Next::Invalid => return self.fail().await,
                Next::Incomplete => {
                    if !self.fill().await? {
                        return self.flush().await;
                    }
                    continue;
                }
            };
            match frame.opcode {
                OP_CONTINUATION | OP_TEXT | OP_BINARY => {
                    if (frame.opcode == OP_CONTINUATION) != in_message {
                        return self.fail().await;
                    }
                    in_message = !frame.fin;
                    self.input.advance(header_len);
                    self.echo_data(&frame).await?;
                }
                _ => {
                    // Control frames are at most 125 bytes: handle them whole.
                    let total = header_len + frame.len as usize;
                    if self.input.len() < total {
                        if !self.fill().await? {
                            return self.flush().await;
                        }
                        continue;
                    }
                    let payload = &mut self.input[header_len..total];
                    unmask(payload, frame.mask, 0);
                    match frame.opcode {
                        OP_PING => {
                            put_header(&mut self.output, true, OP_PONG, frame.len);
                            self.output.put_slice(payload);
                            self.input.advance(total);
                        }
                        OP_PONG => self.input.advance(total),
                        _ => {
                            // A close body is empty or a 2-byte code plus a reason.
                            if frame.len == 1 {
                                return self.fail().await;
                            }
                            put_header(&mut self.output, true, OP_CLOSE, frame.len);
                            self.output.put_slice(payload);
                            self.flush().await?;
                            return linger(&mut self.stream).await;
                        }
                    }
                }
            }
            if self.output.len() >= CHUNK {
                self.flush().await?;
            }
        }
    }

    /// Streams one data frame's payload back, unmasked, behind a header with the same FIN bit
    /// and opcode.
    async fn echo_data(&mut self, frame: &FrameHeader) -> io::Result<()> {
        put_header(&mut self.output, frame.fin, frame.opcode, frame.len);
        let mut remaining = frame.len;
        let mut offset = 0usize;
        while remaining > 0 {
            if self.input.is_empty() && !self.fill().await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let n = self
                .input
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            unmask(&mut self.input[..n], frame.mask, offset);
            if n >= DIRECT_WRITE {
                self.flush().await?;
                self.stream.write_all(&self.input[..n]).await?;
            } else {
                self.output.put_slice(&self.input[..n]);
                if self.output.len() >= CHUNK {
                    self.flush().await?;
                }
            }
            self.input.advance(n);
            offset = (offset + n) % 4;
            remaining -= n as u64;
        }
        Ok(())
    }

    /// Writes what is pending before waiting for more input (so that a peer waiting for its
    /// echo is never left waiting on us), then reads. Returns `false` on EOF.
    async fn fill(&mut self) -> io::Result<bool> {
        self.flush().await?;
        self.input.reserve(CHUNK);
        Ok(self.stream.read_buf(&mut self.input).await? > 0)
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
        }
        Ok(())
    }

    /// Sends close 1002 and closes the connection.
    async fn fail(mut self) -> io::Result<()> {
        put_header(&mut self.output, true, OP_CLOSE, 2);
        self.output.put_u16(PROTOCOL_ERROR);
        self.flush().await?;
        linger(&mut self.stream).await
    }
}

/// Decodes the client frame header at the start of `buf` (RFC 6455 §5.2).
fn parse_header(buf: &[u8]) -> Next {
    if buf.len() < 2 {
        return Next::Incomplete;
    }
    let (b0, b1) = (buf[0], buf[1]);
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    let masked = b1 & 0x80 != 0;
    let short_len = b1 & 0x7F;
    let is_control = opcode & 0x08 != 0;
    let known = matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    );
    // RSV bits need a negotiated extension (we negotiate none); clients must mask; control
    // frames are never fragmented and carry at most 125 bytes.
    if b0 & 0x70 != 0 || !known || !masked || (is_control && (!fin || short_len > 125)) {
        return Next::Invalid;
    }
    let (len, at) = match short_len {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Next::Incomplete,
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                // The most significant bit must be 0.
                if len >> 63 != 0 {
                    return Next::Invalid;
                }
                (len, 10)
            }
            None => return Next::Incomplete,
        },
        n => (u64::from(n), 2),
    };
    match buf.get(at..at + 4) {
        Some(m) => Next::Header(
            FrameHeader {
                fin,
                opcode,
                mask: [m[0], m[1], m[2], m[3]],
                len,
            },
            at + 4,
        ),
        None => Next::Incomplete,
    }
}

/// Appends an unmasked server frame header.
fn put_header(out: &mut BytesMut, fin: bool, opcode: u8, len: u64) {
    out.put_u8(if fin { 0x80 } else { 0 } | opcode);
    if len < 126 {
        out.put_u8(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.put_u8(126);
        out.put_u16(len);
    } else {
        out.put_u8(127);
        out.put_u64(len);
    }
}

/// XORs `data` with `mask`, `offset` being the position of `data[0]` within the payload.
fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = [0u8; 4];
    for (i, k) in key.iter_mut().enumerate() {
        *k = mask[(offset + i) % 4];
    }
    let mut chunks = data.chunks_exact_mut(8);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}
