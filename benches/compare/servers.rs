//! The two servers this binary runs when re-executed with a private argument:
//!
//! - `--raw-backend LISTEN`: the backend. It reads the upgrade head, answers a valid `101`,
//!   then speaks raw bytes (no WebSocket framing) by the query's `op` (whatever the path, which
//!   is the proxy's: `/` or axum's `/ws`): `op=echo` echoes, `op=sink&bytes=N` reads N bytes
//!   and answers their count (8 bytes, little endian), `op=source&bytes=N` waits for one byte
//!   from the client then writes N bytes and shuts down writing, `op=halfclose` reads until
//!   EOF and then writes [`HALF_CLOSE_REPLY`] and closes. Without `op`, the path names it
//!   (`/echo`, `/sink?bytes=N`, ...), for trying the backend by hand.
//! - `--baseline-proxy LISTEN BACKEND [CERT KEY]`: a raw TCP relay with
//!   `tokio::io::copy_bidirectional`, the hand-written proxy wsrelay is compared with; with
//!   a certificate and key (PEM files), a tokio-rustls acceptor (ring, the comparison's one
//!   TLS setup) in front of it, for the `tls` group.
//!
//! Both print `listening on ADDR` on stdout when ready and run until killed.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use http::header;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use wsrelay::handshake::derive_accept_key;
use wsrelay::wire::{read_request_head, HeadLimits};

/// A plain or a TLS client connection of the relay.
enum Either<A, B> {
    Left(A),
    Right(B),
}

/// What `/halfclose` sends after the client's EOF.
pub const HALF_CLOSE_REPLY: &[u8] = b"reply after your EOF\n";
/// Every backend socket operation must make progress within this time. Long, because held
/// (idle) connections legitimately wait.
const BACKEND_OP_TIMEOUT: Duration = Duration::from_secs(300);
/// Size of the reads and writes of the backend.
const CHUNK: usize = 256 * 1024;

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

fn announce(addr: SocketAddr) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

async fn op<T>(what: &str, fut: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    match tokio::time::timeout(BACKEND_OP_TIMEOUT, fut).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("backend: {what} timed out"),
        )),
    }
}

/// `--raw-backend LISTEN`.
pub fn raw_backend_main(listen: &str) -> io::Result<()> {
    let listen: SocketAddr = listen.parse().map_err(io::Error::other)?;
    runtime()?.block_on(async {
        let listener = listen_on(listen, false)?;
        announce(listener.local_addr()?);
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(async move {
                        let _ = serve(stream).await;
                    });
                }
                // Out of fds: back off, keep serving.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
}

async fn serve(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let limits = HeadLimits::new().timeout(Some(Duration::from_secs(10)));
    let (request, leftover) = read_request_head(&mut stream, &limits)
        .await
        .map_err(io::Error::other)?;
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
        let refusal = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        return op("write 400", stream.write_all(refusal)).await;
    };
    let accept = derive_accept_key(key.as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    op("write 101", stream.write_all(head.as_bytes())).await?;
    let param = |name: &str| {
        request
            .uri()
            .query()?
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    let task = param("op").unwrap_or_else(|| request.uri().path().trim_start_matches('/'));
    let bytes: u64 = param("bytes").and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut buf = vec![0u8; CHUNK];
    match task {
        "echo" => {
            if !leftover.is_empty() {
                op("echo write", stream.write_all(&leftover)).await?;
            }
            loop {
                let n = op("echo read", stream.read(&mut buf)).await?;
                if n == 0 {
                    break;
                }
                op("echo write", stream.write_all(&buf[..n])).await?;
            }
            op("shutdown", stream.shutdown()).await
        }
        "sink" => {
            let mut got = leftover.len() as u64;
            while got < bytes {
                let n = op("sink read", stream.read(&mut buf)).await?;
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            op("sink ack", stream.write_all(&got.to_le_bytes())).await?;
            drain(&mut stream, &mut buf).await
        }
        "source" => {
            // Wait for the client's go, so that the transfer is timed by the client alone.
            if leftover.is_empty() {
                op("source go", stream.read(&mut buf[..1])).await?;
            }
            buf.fill(0x5a);
            let mut left = bytes;
            while left > 0 {
                let n = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
                op("source write", stream.write_all(&buf[..n])).await?;
                left -= n as u64;
            }
            op("shutdown", stream.shutdown()).await?;
            drain(&mut stream, &mut buf).await
        }
        "halfclose" => {
            // Bounded: at most 1 MiB of request before the EOF.
            let mut got = leftover.len();
            loop {
                let n = op("halfclose read", stream.read(&mut buf)).await?;
                got += n;
                if n == 0 || got > 1024 * 1024 {
                    break;
                }
            }
            op("halfclose reply", stream.write_all(HALF_CLOSE_REPLY)).await?;
            op("shutdown", stream.shutdown()).await
        }
        _ => Ok(()),
    }
}

/// Reads and discards until EOF, so that our close does not reset unread input.
async fn drain(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<()> {
    while op("drain", stream.read(buf)).await? > 0 {}
    Ok(())
}

/// `--baseline-proxy LISTEN BACKEND [CERT KEY]`: accept, (TLS handshake,) connect,
/// `copy_bidirectional`. No HTTP parsing: the upgrade head is relayed like any other bytes, as
/// a hand-written TCP relay does.
pub fn baseline_proxy_main(
    listen: &str,
    backend: &str,
    tls: Option<(&str, &str)>,
) -> io::Result<()> {
    let backend: SocketAddr = backend.parse().map_err(io::Error::other)?;
    let acceptor = match tls {
        Some((cert, key)) => Some(crate::tls::acceptor(
            std::path::Path::new(cert),
            std::path::Path::new(key),
        )?),
        None => None,
    };
    // `COMPARE_BASELINE_PER_CORE=1`: wsrelay's own arrangement (one single-threaded runtime
    // per CPU, each on its own `SO_REUSEPORT` listener) instead of one multi-threaded
    // runtime, so that the relay measures the runtime's floor under the same scheduling.
    if std::env::var_os("COMPARE_BASELINE_PER_CORE").is_some_and(|v| v == "1") {
        let listen: SocketAddr = listen.parse().map_err(io::Error::other)?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Bound on a throwaway runtime (tokio registers sockets as it creates them), then
        // handed to each thread's own runtime.
        let listeners = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?
            .block_on(async {
                let first = listen_on(listen, true)?.into_std()?;
                let addr = first.local_addr()?;
                let mut listeners = vec![first];
                for _ in 1..cpus {
                    listeners.push(listen_on(addr, true)?.into_std()?);
                }
                io::Result::Ok(listeners)
            })?;
        let addr = listeners[0].local_addr()?;
        announce(addr);
        let threads: Vec<_> = listeners
            .into_iter()
            .map(|listener| {
                let acceptor = acceptor.clone();
                std::thread::spawn(move || -> io::Result<()> {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?
                        .block_on(async move {
                            let listener = TcpListener::from_std(listener)?;
                            relay_loop(listener, backend, acceptor).await
                        })
                })
            })
            .collect();
        for thread in threads {
            thread
                .join()
                .map_err(|_| io::Error::other("relay thread panicked"))??;
        }
        return Ok(());
    }
    runtime()?.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        announce(listener.local_addr()?);
        relay_loop(listener, backend, acceptor).await
    })
}

/// A listening socket on `addr` with a backlog of 1024 rather than the 128 of
/// `TcpListener::bind` (a burst of connects through a relay must not have SYNs dropped, and
/// retried a second later, here); with `SO_REUSEPORT` for one of several runtimes on one port.
fn listen_on(addr: SocketAddr, reuseport: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuseport {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The relay's accept loop: each client gets a task that connects to `backend` and copies.
async fn relay_loop(
    listener: TcpListener,
    backend: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) -> io::Result<()> {
    loop {
        let (client, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let mut client = match acceptor {
                None => Either::Left(client),
                Some(acceptor) => {
                    let handshake = acceptor.accept(client);
                    match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                        Ok(Ok(tls)) => Either::Right(tls),
                        _ => return,
                    }
                }
            };
            let connect = TcpStream::connect(backend);
            let Ok(Ok(mut server)) = tokio::time::timeout(Duration::from_secs(5), connect).await
            else {
                return;
            };
            let _ = server.set_nodelay(true);
            let _ = match &mut client {
                Either::Left(plain) => tokio::io::copy_bidirectional(plain, &mut server).await,
                Either::Right(tls) => tokio::io::copy_bidirectional(tls, &mut server).await,
            };
        });
    }
}
