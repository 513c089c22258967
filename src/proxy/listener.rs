//! [`WaitingListener`]: the waiting room of [`Proxy::serve`](crate::Proxy::serve) for an
//! accept loop of your own (hyper, axum).

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A TCP listener that hands out a connection only once its client has sent something (or
/// closed it): until then the client waits in a room shared by all, with no task, no buffer
/// and no registration with tokio's reactor, as in [`Proxy::serve`](crate::Proxy::serve)
/// (rule 29). A server that spawns a task per accepted connection (an `axum` or `hyper`
/// accept loop) pays a task and a reactor registration, some 1.2 KiB, for every client that
/// opens a connection and says nothing; here it pays about 0.3 KiB until the client speaks.
///
/// A client still silent `first_bytes_timeout` after its accept is closed without an
/// answer. The bytes that arrived are left in the socket, for the server to read.
///
/// On Linux only; elsewhere [`accept`](Self::accept) hands out each connection as it is
/// accepted.
///
/// # Examples
///
/// An axum (or hyper) accept loop whose tasks start when their client speaks:
///
/// ```no_run
/// use std::time::Duration;
/// use wsrelay::WaitingListener;
///
/// #[tokio::main]
/// async fn main() -> std::io::Result<()> {
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
///     let mut listener = WaitingListener::new(listener, Some(Duration::from_secs(10)))?;
///     loop {
///         let (stream, peer, accepted) = listener.accept().await?;
///         tokio::spawn(async move {
///             // The head is due 10 s after `accepted`: serve `stream` (from `peer`) with
///             // hyper here, e.g. `builder.serve_connection_with_upgrades(TokioIo::new(stream), svc)`.
///             drop((stream, peer, accepted));
///         });
///     }
/// }
/// ```
pub struct WaitingListener {
    #[cfg(target_os = "linux")]
    listener: tokio::io::unix::AsyncFd<mio::net::TcpListener>,
    #[cfg(target_os = "linux")]
    room: super::room::Room<Instant>,
    #[cfg(not(target_os = "linux"))]
    listener: TcpListener,
    timeout: Option<Duration>,
}

impl WaitingListener {
    /// Takes over `listener`; clients silent for `first_bytes_timeout` after their accept are
    /// closed (`None`: never).
    ///
    /// # Errors
    ///
    /// When the listener or the room's epoll set cannot be registered with the runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as [`TcpListener::from_std`]).
    pub fn new(listener: TcpListener, first_bytes_timeout: Option<Duration>) -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        {
            let listener = crate::splice::register(
                mio::net::TcpListener::from_std(listener.into_std()?),
                tokio::io::Interest::READABLE,
            )?;
            Ok(WaitingListener {
                listener,
                room: super::room::Room::new()?,
                timeout: first_bytes_timeout,
            })
        }
        #[cfg(not(target_os = "linux"))]
        Ok(WaitingListener {
            listener,
            timeout: first_bytes_timeout,
        })
    }

    /// The next connection whose client has sent something, closed or failed: its socket, its
    /// address, and when it was accepted (what a head deadline counts from).
    ///
    /// # Errors
    ///
    /// As [`TcpListener::accept`]: when accepting fails (out of file descriptors, ...); the
    /// listener can be used again after.
    pub async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr, Instant)> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// The address it listens on.
    ///
    /// # Errors
    ///
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        #[cfg(target_os = "linux")]
        return self.listener.get_ref().local_addr();
        #[cfg(not(target_os = "linux"))]
        self.listener.local_addr()
    }

    /// How many clients wait for their first bytes.
    pub fn waiting(&self) -> usize {
        #[cfg(target_os = "linux")]
        return self.room.len();
        #[cfg(not(target_os = "linux"))]
        0
    }

    #[cfg(target_os = "linux")]
    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(TcpStream, SocketAddr, Instant)>> {
        use super::room::{has_spoken, into_tokio, Waiter};
        loop {
            // Clients leaving the room first: they have waited longest.
            while let Poll::Ready(waiter) = self.room.poll_next(cx) {
                if waiter.deadline.is_some_and(|due| due <= Instant::now()) {
                    // Silent to the end: closed.
                    continue;
                }
                return Poll::Ready(Ok((into_tokio(waiter.socket)?, waiter.peer, waiter.data)));
            }
            let (socket, peer) = std::task::ready!(super::serve::poll_accept(&self.listener, cx))?;
            let now = Instant::now();
            if has_spoken(&socket) {
                // Bytes, an EOF or an error: the server finds out which.
                return Poll::Ready(Ok((into_tokio(socket)?, peer, now)));
            }
            let waiter = Waiter {
                socket,
                peer,
                data: now,
                deadline: self.timeout.map(|limit| now + limit),
            };
            if let Some(waiter) = self.room.insert(waiter) {
                // The room could not take it: handed out at once.
                return Poll::Ready(Ok((into_tokio(waiter.socket)?, peer, now)));
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(TcpStream, SocketAddr, Instant)>> {
        let _ = self.timeout;
        self.listener
            .poll_accept(cx)
            .map_ok(|(stream, peer)| (stream, peer, Instant::now()))
    }
}

impl std::fmt::Debug for WaitingListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitingListener")
            .field("local_addr", &self.local_addr().ok())
            .field("waiting", &self.waiting())
            .field("first_bytes_timeout", &self.timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn listening(timeout: Option<Duration>) -> (WaitingListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (WaitingListener::new(listener, timeout).unwrap(), addr)
    }

    #[tokio::test]
    async fn a_client_is_handed_out_when_it_speaks_with_its_bytes_unread() {
        let (mut listener, addr) = listening(None).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut speaking = TcpStream::connect(addr).await.unwrap();
        speaking.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (mut stream, peer, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(peer, speaking.local_addr().unwrap());
        let mut got = [0u8; 16];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1\r\n");
        assert_eq!(listener.waiting(), 1, "the silent client waits");
        assert!(
            tokio::time::timeout(Duration::from_millis(150), listener.accept())
                .await
                .is_err(),
            "a silent client was handed out"
        );
        silent.write_all(b"G").await.unwrap();
        let (_, peer, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(peer, silent.local_addr().unwrap());
        assert_eq!(listener.waiting(), 0);
    }

    #[tokio::test]
    async fn a_client_silent_past_the_timeout_is_closed_and_never_handed_out() {
        let (mut listener, addr) = listening(Some(Duration::from_millis(200))).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        // Accepting runs the room: the silent client is closed at its deadline.
        let accepting = tokio::time::timeout(Duration::from_millis(600), listener.accept()).await;
        assert!(accepting.is_err(), "a silent client was handed out");
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
            .await
            .expect("the silent client was not closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(listener.waiting(), 0);
    }
}
