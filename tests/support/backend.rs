//! The scripted backend: a raw TCP server on `127.0.0.1:0` that answers every request head
//! as its [`Script`] says and records every connection ([`Conn`]): the exact bytes it
//! received, how many of them had arrived when it answered, whether the peer closed, and what
//! it sent after answering. For a real WebSocket peer, use the echo backend
//! ([`spawn_echo`](super::spawn_echo)).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{eventually, head_end, header_values, switch_with};

/// How long a scripted backend connection lives at most, whatever the peer does, unless its
/// script says otherwise ([`Script::lifetime`]).
const BACKEND_LIFETIME: Duration = Duration::from_secs(20);

/// Builds a backend's answer from the request head it received.
pub type Responder = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// What a backend does after writing its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Shut down writing; keep recording what arrives until the peer closes.
    Close,
    /// Keep recording what arrives until the peer closes.
    Hold,
    /// Echo every byte that arrives (recording it too) until the peer closes, starting with
    /// the bytes that came after the head, before the answer.
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
    /// How long a connection lives at most.
    pub lifetime: Duration,
}

impl Script {
    /// Answers every head with `bytes`, then does `then`.
    pub fn canned(bytes: impl Into<Vec<u8>>, then: Then) -> Self {
        let bytes = bytes.into();
        Self::with(move |_: &[u8]| bytes.clone(), then)
    }

    /// Answers every head with `respond(head)`, then does `then`.
    pub fn with(respond: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static, then: Then) -> Self {
        Script {
            answer: Some(Arc::new(respond)),
            delay: Duration::ZERO,
            then,
            lifetime: BACKEND_LIFETIME,
        }
    }

    /// Accepts every upgrade with a correct `101`, then does `then`.
    pub fn switching(then: Then) -> Self {
        Self::with(|head| switch_with(head, &[]), then)
    }

    /// Accepts every upgrade with a correct `101` that says which backend answered
    /// (`X-Backend: name`, an end-to-end header the proxy relays), then echoes: for tests
    /// of which backend a pool or route chose.
    pub fn tagged(name: &str) -> Self {
        let tag = format!("X-Backend: {name}");
        Self::with(move |head| switch_with(head, &[&tag]), Then::Echo)
    }

    /// Reads and records, never answers.
    pub fn silent() -> Self {
        Script {
            answer: None,
            delay: Duration::ZERO,
            then: Then::Hold,
            lifetime: BACKEND_LIFETIME,
        }
    }

    /// Waits `delay` after the head before answering.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Lets every connection live up to `lifetime` (instead of 20 s).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
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
    /// Whether the connection ended: the peer closed (EOF or error) or a write failed.
    pub closed: bool,
    /// Bytes received after the answer (all of them, also during a flood).
    pub received_after: u64,
    /// Bytes written after the answer (echoed or flooded), counted as the socket takes them.
    pub sent_after: u64,
}

impl Conn {
    /// The request head as text (everything received if incomplete).
    pub fn head_text(&self) -> String {
        let end = self.head_len.unwrap_or(self.bytes.len());
        String::from_utf8_lossy(&self.bytes[..end]).into_owned()
    }

    /// Every value of header `name` in the request head, in order (see [`header_values`]).
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
    /// The accept loop, which owns the listening socket ([`Backend::kill`]).
    accepting: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Backend {
    /// Starts a backend running `script`.
    pub async fn start(script: Script) -> Backend {
        Self::start_sized(script, None).await
    }

    /// Starts a backend running `script` whose connections' socket buffers are fixed to
    /// `size` bytes (no autotuning: what it writes beyond them waits for its peer), or left to
    /// the kernel with `None`.
    pub async fn start_sized(script: Script, size: Option<u32>) -> Backend {
        Self::start_on("127.0.0.1:0".parse().expect("an address"), script, size)
    }

    /// Starts a backend running `script` on `addr`, a port another backend listened on (one
    /// that was [`kill`](Self::kill)ed): the same backend, back up.
    pub async fn start_at(addr: SocketAddr, script: Script) -> Backend {
        Self::start_on(addr, script, None)
    }

    fn start_on(addr: SocketAddr, script: Script, size: Option<u32>) -> Backend {
        let socket = tokio::net::TcpSocket::new_v4().expect("backend socket");
        if let Some(size) = size {
            socket.set_send_buffer_size(size).expect("SO_SNDBUF");
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        // A port used before may have connections in TIME_WAIT.
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(addr).expect("bind backend");
        let listener: TcpListener = socket.listen(1024).expect("listen");
        let backend = Backend {
            addr: listener.local_addr().expect("backend address"),
            accepted: Arc::default(),
            conns: Arc::default(),
            accepting: Arc::default(),
        };
        let state = backend.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let record = Arc::new(Mutex::new(Conn::default()));
                state.conns.lock().unwrap().push(record.clone());
                state.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(run(stream, record, script.clone()));
            }
        });
        *backend.accepting.lock().unwrap() = Some(task);
        backend
    }

    /// Stops accepting and closes the listening socket: from its return, connects to
    /// [`addr`](Self::addr) are refused. The connections it accepted are not touched.
    pub async fn kill(&self) {
        let task = self.accepting.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            // Done when the task is dropped, and the listener with it.
            let _ = super::within("the backend to stop", task).await;
        }
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

    /// A snapshot of every connection, in the order accepted.
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

/// An address on `127.0.0.1` where nothing listens (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local address")
}

async fn run(stream: TcpStream, record: Arc<Mutex<Conn>>, script: Script) {
    let lifetime = script.lifetime;
    let _ = tokio::time::timeout(lifetime, serve_conn(stream, &record, script)).await;
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
            if echo_out(&mut stream, record, &early).await {
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            {
                                let mut conn = record.lock().unwrap();
                                conn.bytes.extend_from_slice(&buf[..n]);
                                conn.received_after += n as u64;
                            }
                            if !echo_out(&mut stream, record, &buf[..n]).await {
                                break;
                            }
                        }
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

/// Writes `bytes`, adding every byte the socket takes to `sent_after` as it goes (so a write
/// cut short still counts what went out); whether all of it went out.
async fn echo_out(stream: &mut TcpStream, record: &Mutex<Conn>, bytes: &[u8]) -> bool {
    let mut at = 0;
    while at < bytes.len() {
        match stream.write(&bytes[at..]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                at += n;
                record.lock().unwrap().sent_after += n as u64;
            }
        }
    }
    true
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
