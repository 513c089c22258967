//! An HTTP/2 client for the RFC 8441 tests, on the `h2` crate (an implementation independent
//! of the proxy's, though hyper's server uses it too; `tests/interop.rs` adds Python's):
//! h2c with prior knowledge, extended CONNECT, and END_STREAM, RST_STREAM and flow control
//! under the test's control. WebSocket frames are built and parsed by hand, as the raw
//! client does for HTTP/1.1. Every wait is bounded.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::{Request, Response};
use tokio::net::TcpStream;

use super::{eventually, within, within_for, STEP};

/// An HTTP/2 connection to `addr` (h2c, prior knowledge) with the `h2` crate's defaults
/// (64 KiB windows), once the server's SETTINGS allow extended CONNECT; panics otherwise.
pub async fn h2_connect(addr: SocketAddr) -> SendRequest<Bytes> {
    h2_connect_with(addr, h2::client::Builder::new()).await
}

/// [`h2_connect`] with `builder`'s settings.
pub async fn h2_connect_with(addr: SocketAddr, builder: h2::client::Builder) -> SendRequest<Bytes> {
    let send = h2_connect_raw(addr, builder).await;
    let advertised = eventually(STEP, || send.is_extended_connect_protocol_enabled()).await;
    assert!(
        advertised,
        "the server at {addr} did not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL"
    );
    send
}

/// An HTTP/2 connection to `addr`, ready for requests, whatever the server's SETTINGS say.
pub async fn h2_connect_raw(addr: SocketAddr, builder: h2::client::Builder) -> SendRequest<Bytes> {
    let tcp = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let _ = tcp.set_nodelay(true);
    let (send, connection) = within("the HTTP/2 handshake", builder.handshake(tcp))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    within("the HTTP/2 connection to be ready", send.ready())
        .await
        .expect("HTTP/2 connection ready")
}

/// An extended CONNECT for a WebSocket at `path` on `addr` (`:scheme http`), with
/// `sec-websocket-version: 13` and `extra` header fields.
pub fn ws_connect(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Request<()> {
    connect_for(addr, path, "websocket", extra)
}

/// An extended CONNECT with `:protocol` `protocol`, `sec-websocket-version: 13` and `extra`.
pub fn connect_for(
    addr: SocketAddr,
    path: &str,
    protocol: &str,
    extra: &[(&str, &str)],
) -> Request<()> {
    let mut builder = Request::connect(format!("http://{addr}{path}"))
        .extension(h2::ext::Protocol::from(protocol))
        .header("sec-websocket-version", "13");
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("a valid request")
}

/// One stream's two halves and its response head.
pub struct H2Stream {
    /// The response head (its body is the stream's data, read from `recv`).
    pub response: Response<()>,
    /// The stream's data from the server.
    pub recv: RecvStream,
    /// The stream's data toward the server.
    pub send: SendStream<Bytes>,
    /// Data read past what [`read_exact`](Self::read_exact) returned.
    pending: Vec<u8>,
}

impl H2Stream {
    /// The response status.
    pub fn status(&self) -> u16 {
        self.response.status().as_u16()
    }

    /// Sends `data` under flow control (waiting for window), ending the stream after it when
    /// `end`; whether it all went out within [`STEP`].
    pub async fn send_all(&mut self, data: &[u8], end: bool) -> bool {
        send_all(&mut self.send, data, end).await
    }

    /// Reads exactly `n` bytes (within [`STEP`]), giving the window back as it goes.
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let (recv, pending) = (&mut self.recv, &mut self.pending);
        within(&format!("{n} bytes from an HTTP/2 stream"), async {
            while pending.len() < n {
                match recv.data().await {
                    Some(Ok(chunk)) => {
                        let _ = recv.flow_control().release_capacity(chunk.len());
                        pending.extend_from_slice(&chunk);
                    }
                    Some(Err(e)) => {
                        panic!("stream reset after {} of {n} bytes: {e}", pending.len())
                    }
                    None => panic!("stream ended after {} of {n} bytes", pending.len()),
                }
            }
        })
        .await;
        let rest = self.pending.split_off(n);
        std::mem::replace(&mut self.pending, rest)
    }

    /// Reads until the server ends the stream (END_STREAM) or resets it, within `limit`: the
    /// data, and how it ended (`Ok` for END_STREAM, the error for a reset).
    pub async fn read_to_end(&mut self, limit: Duration) -> (Vec<u8>, Result<(), h2::Error>) {
        let (mut data, end) = read_to_end_h2(&mut self.recv, limit).await;
        if !self.pending.is_empty() {
            data.splice(0..0, std::mem::take(&mut self.pending));
        }
        (data, end)
    }
}

/// Sends `request` (an extended CONNECT) on `send` and waits (up to [`STEP`]) for the answer.
pub async fn h2_open(send: &mut SendRequest<Bytes>, request: Request<()>) -> H2Stream {
    let ready = within("HTTP/2 stream capacity", send.clone().ready())
        .await
        .expect("the connection takes a new stream");
    *send = ready;
    let (response, stream) = send
        .send_request(request, false)
        .expect("send the extended CONNECT");
    let response = within("the response head", response)
        .await
        .expect("a response head");
    let (parts, recv) = response.into_parts();
    H2Stream {
        response: Response::from_parts(parts, ()),
        recv,
        send: stream,
        pending: Vec::new(),
    }
}

/// Sends `data` on `stream` as flow control allows; whether it all went out within [`STEP`].
pub async fn send_all(stream: &mut SendStream<Bytes>, data: &[u8], end: bool) -> bool {
    let sending = async {
        let mut at = 0;
        while at < data.len() {
            stream.reserve_capacity(data.len() - at);
            let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(n)) => n,
                _ => return false,
            };
            if granted == 0 {
                continue;
            }
            let n = granted.min(data.len() - at);
            let chunk = Bytes::copy_from_slice(&data[at..at + n]);
            if stream.send_data(chunk, false).is_err() {
                return false;
            }
            at += n;
        }
        !end || stream.send_data(Bytes::new(), true).is_ok()
    };
    tokio::time::timeout(STEP, sending).await.unwrap_or(false)
}

/// Reads `recv` to its end within `limit` (panics past it); see [`H2Stream::read_to_end`].
pub async fn read_to_end_h2(
    recv: &mut RecvStream,
    limit: Duration,
) -> (Vec<u8>, Result<(), h2::Error>) {
    let mut out = Vec::new();
    let end = within_for(limit, "an HTTP/2 stream to end", async {
        loop {
            match recv.data().await {
                Some(Ok(chunk)) => {
                    let _ = recv.flow_control().release_capacity(chunk.len());
                    out.extend_from_slice(&chunk);
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    })
    .await;
    (out, end)
}

/// A client WebSocket frame (FIN set, masked with a fixed key, RFC 6455 §5.2) with opcode
/// `opcode` and `payload`.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

/// The unmasked server frame with FIN set, opcode `opcode` and `payload`, as the echo backend
/// sends it.
pub fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= 0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}
