//! [`Stream`]: one type for whatever a front end hands the tunnel, so that the proxy's
//! connection future has one concrete type while the tunnel still sees, at run time,
//! whether both ends are TCP sockets (zero-copy) or not (buffered).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What a stream must be to be tunnelled by the proxy.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A client or backend stream: a plain TCP socket, or anything else (TLS, Unix socket,
/// hyper's upgraded connection, an HTTP/2 stream), boxed.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Other(Box<dyn Io>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stream::Tcp(tcp) => f.debug_tuple("Tcp").field(tcp).finish(),
            Stream::Other(_) => f.write_str("Other(..)"),
        }
    }
}

impl Stream {
    /// Wraps `io`, unboxed if it is a `TcpStream`.
    pub(crate) fn new<T: Io>(io: T) -> Stream {
        let mut slot = Some(io);
        if let Some(tcp) = (&mut slot as &mut dyn std::any::Any)
            .downcast_mut::<Option<TcpStream>>()
            .and_then(Option::take)
        {
            return Stream::Tcp(tcp);
        }
        match slot {
            Some(io) => Stream::Other(Box::new(io)),
            None => unreachable!("only a TcpStream is taken out"),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Other(s) => Pin::new(s).poll_read(cx, buf),
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
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Other(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Other(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Other(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Other(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Other(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
