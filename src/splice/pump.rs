//! The one two-direction pump both paths use.
//!
//! A tunnel is two [`Half`]s, client → backend and backend → client, driven from one poll
//! ([`TwoWay::poll_pump`]). Each half runs the same small state machine, in the shape of
//! tokio's `copy_bidirectional`:
//!
//! ```text
//! Running ──(source EOF read, everything delivered, writer flushed)──▶ ShuttingDown
//! ShuttingDown ──(shutdown(SHUT_WR) of the destination done)──▶ Done
//! ```
//!
//! While running, a half first writes its leftover bytes (the bytes read past a handshake
//! head, or what a destination did not take at once), then what its [`Medium`] holds, and
//! only then reads again: a destination that stops reading stops the source being read, so
//! memory per tunnel stays bounded whatever the peers do.
//!
//! The medium is what differs between the paths: a user-space buffer
//! ([`Buffer`](super::buffered::Buffer)) or a pipe filled and drained with `splice(2)`
//! (`Splice`, Linux only).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Leftovers;

/// Reads per direction per poll before the pump yields to the scheduler, so a busy tunnel
/// cannot starve the timers or other tasks.
const BUDGET: usize = 32;

/// Which side of the tunnel an I/O error happened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Backend,
}

/// Why a pump stopped before both directions ended.
#[derive(Debug)]
pub(crate) enum Stop {
    /// An I/O error on one side.
    Error(Side, io::Error),
    /// The zero-copy path cannot be used for these sockets (nothing was spliced yet; bytes
    /// moved by small reads are counted and their unwritten rest handed over).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Fallback,
}

/// Byte counts of one direction.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    /// Bytes written to the destination.
    pub(crate) written: u64,
    /// Bytes taken in (read from the source, or leftovers) but not written yet.
    pub(crate) pending: u64,
}

/// What the tunnel's driver needs of a pump, whatever its medium.
pub(crate) trait Pump {
    /// Moves bytes both ways; `Ready(Ok(()))` once both directions have ended.
    fn poll_pump(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Stop>>;
    /// A number that changes whenever bytes move in either direction.
    fn activity(&self) -> u64;
    /// Whether one side has sent its EOF.
    fn half_closed(&self) -> bool;
    /// (client → backend, backend → client) counts.
    fn counts(&self) -> (Counts, Counts);
}

/// A failed direction: which half of it failed.
#[derive(Debug)]
pub(crate) enum Failed {
    Read(io::Error),
    Write(io::Error),
    /// The medium cannot work with these streams (splice refused); a fallback to the
    /// buffered path is possible if the medium says so.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Unsupported(io::Error),
}

/// What one read into a medium did.
#[derive(Debug)]
pub(crate) enum Filled {
    /// The source reached EOF.
    Eof,
    /// `read` bytes came in; `written` of them already went out to the destination, and
    /// `rest` (if not empty) is what the destination did not take, to be written before
    /// anything else.
    Read {
        read: usize,
        written: usize,
        rest: Bytes,
    },
}

/// Where one direction keeps the bytes it has read but not written yet.
pub(crate) trait Medium<R, W> {
    /// Bytes held, read but not written.
    fn held(&self) -> usize;
    /// Writes some of what is held (only called when [`held`](Self::held) is not zero);
    /// the number of bytes written, never zero.
    fn poll_drain(&mut self, cx: &mut Context<'_>, dst: &mut W) -> Poll<Result<usize, Failed>>;
    /// Reads from `src` (only called when nothing is held). A medium may write what it read
    /// straight to `dst` and report the rest.
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
    ) -> Poll<Result<Filled, Failed>>;
    /// The direction has ended: free buffers and pipes.
    fn release(&mut self);
    /// Whether a [`Failed::Unsupported`] may still turn into a fallback to another path
    /// (no byte has gone through the medium yet).
    fn can_fall_back(&self) -> bool {
        false
    }
    /// Whether closing the destination says what shutting down its writing would, once both
    /// directions have read their EOF: true for a plain socket (its `close` sends the same
    /// FIN, and nothing unread can be left to turn it into a reset); false for a stream
    /// whose shutdown says more (TLS's `close_notify`).
    fn close_is_shutdown(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Copying; ends when the source's EOF has been read and everything delivered.
    Running,
    /// Shutting down writing towards the destination after the source's EOF.
    ShuttingDown,
    /// Finished.
    Done,
}

/// One direction of the tunnel.
#[derive(Debug)]
pub(crate) struct Half<M> {
    /// Bytes to write before anything read: the leftovers, then what a direct write of the
    /// medium left over.
    pub(crate) leftover: Leftover,
    pub(crate) medium: M,
    state: State,
    read_done: bool,
    need_flush: bool,
    /// Bytes read from the source (leftovers excluded).
    read: u64,
    /// Bytes written to the destination (leftovers included).
    pub(crate) written: u64,
}

impl<M> Half<M> {
    pub(crate) fn new(leftover: Bytes, medium: M, written: u64) -> Self {
        Self {
            leftover: Leftover::new(leftover),
            medium,
            state: State::Running,
            read_done: false,
            need_flush: false,
            read: 0,
            written,
        }
    }

    fn activity(&self) -> u64 {
        self.read + self.written
    }

    fn counts<R, W>(&self) -> Counts
    where
        M: Medium<R, W>,
    {
        Counts {
            written: self.written,
            pending: (self.leftover.len() + self.medium.held()) as u64,
        }
    }

    /// Moves bytes from `src` to `dst` until the source's EOF has been delivered and the
    /// destination shut down (`Ready(Ok(()))`), or a side fails. `closing`: the tunnel ends
    /// (and closes `dst`) as soon as this direction does, and the close says what the
    /// shutdown would, so it is not made (one system call less per tunnel).
    pub(crate) fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
        closing: bool,
    ) -> Poll<Result<(), Failed>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
        M: Medium<R, W>,
    {
        let mut budget = BUDGET;
        loop {
            match self.state {
                State::Done => return Poll::Ready(Ok(())),
                State::ShuttingDown => {
                    if !closing {
                        ready!(Pin::new(&mut *dst).poll_shutdown(cx)).map_err(Failed::Write)?;
                    }
                    self.state = State::Done;
                    self.medium.release();
                }
                State::Running => {
                    while let Some(bytes) = self.leftover.bytes() {
                        let n = ready!(Pin::new(&mut *dst).poll_write(cx, bytes))
                            .map_err(Failed::Write)?;
                        if n == 0 {
                            return Poll::Ready(Err(Failed::Write(write_zero())));
                        }
                        self.written += n as u64;
                        self.need_flush = true;
                        self.leftover.advance(n);
                    }
                    if self.medium.held() > 0 {
                        let n = ready!(self.medium.poll_drain(cx, dst))?;
                        self.written += n as u64;
                        self.need_flush = true;
                        continue;
                    }
                    if self.read_done {
                        if self.need_flush {
                            ready!(Pin::new(&mut *dst).poll_flush(cx)).map_err(Failed::Write)?;
                            self.need_flush = false;
                        }
                        self.state = State::ShuttingDown;
                        continue;
                    }
                    if budget == 0 {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    budget -= 1;
                    match self.medium.poll_fill(cx, src, dst) {
                        Poll::Ready(Ok(Filled::Eof)) => self.read_done = true,
                        Poll::Ready(Ok(Filled::Read {
                            read,
                            written,
                            rest,
                        })) => {
                            self.read += read as u64;
                            self.written += written as u64;
                            self.need_flush |= written > 0;
                            self.leftover = Leftover::new(rest);
                        }
                        Poll::Ready(Err(failed)) => return Poll::Ready(Err(failed)),
                        Poll::Pending => {
                            // Nothing to read: whatever a writer buffers must go out now.
                            if self.need_flush {
                                ready!(Pin::new(&mut *dst).poll_flush(cx))
                                    .map_err(Failed::Write)?;
                                self.need_flush = false;
                            }
                            return Poll::Pending;
                        }
                    }
                }
            }
        }
    }
}

/// Bytes a direction must write before anything else. Usually there are none, and then this
/// is one null pointer: every open tunnel holds two, and most only ever need them for the
/// first frames.
#[derive(Debug, Default)]
pub(crate) struct Leftover(Option<Box<Bytes>>);

impl Leftover {
    pub(crate) fn new(bytes: Bytes) -> Self {
        Leftover((!bytes.is_empty()).then(|| Box::new(bytes)))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |bytes| bytes.len())
    }

    /// The bytes still to write, if any.
    fn bytes(&self) -> Option<&[u8]> {
        self.0.as_deref().map(|bytes| &bytes[..])
    }

    /// `n` bytes were written. Once all are, the bytes are let go (with the buffer they are
    /// a slice of, such as a whole head buffer).
    fn advance(&mut self, n: usize) {
        if let Some(bytes) = &mut self.0 {
            if n >= bytes.len() {
                self.0 = None;
            } else {
                bytes.advance(n);
            }
        }
    }

    pub(crate) fn into_bytes(self) -> Bytes {
        self.0.map_or_else(Bytes::new, |bytes| *bytes)
    }
}

/// Both streams and one [`Half`] each way: the pump of either path.
#[derive(Debug)]
pub(crate) struct TwoWay<C, B, M> {
    pub(crate) client: C,
    pub(crate) backend: B,
    pub(crate) to_backend: Half<M>,
    pub(crate) to_client: Half<M>,
}

impl<C, B, M> TwoWay<C, B, M> {
    /// `written` holds the bytes already written (client → backend, backend → client) by a
    /// path that fell back to this one.
    pub(crate) fn new(
        client: C,
        backend: B,
        leftovers: Leftovers,
        media: [M; 2],
        written: [u64; 2],
    ) -> Self {
        let [to_backend, to_client] = media;
        Self {
            client,
            backend,
            to_backend: Half::new(leftovers.to_backend, to_backend, written[0]),
            to_client: Half::new(leftovers.to_client, to_client, written[1]),
        }
    }

    /// The streams, the leftovers not written yet and the bytes already written each way
    /// (for a fallback to another path).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn into_parts(self) -> (C, B, Leftovers, [u64; 2]) {
        let leftovers = Leftovers {
            to_backend: self.to_backend.leftover.into_bytes(),
            to_client: self.to_client.leftover.into_bytes(),
        };
        let written = [self.to_backend.written, self.to_client.written];
        (self.client, self.backend, leftovers, written)
    }
}

impl<C, B, M> TwoWay<C, B, M>
where
    M: Medium<C, B> + Medium<B, C>,
{
    fn stop(&self, failed: Failed, reader: Side, writer: Side) -> Stop {
        let can_fall_back = Medium::<C, B>::can_fall_back(&self.to_backend.medium)
            && Medium::<B, C>::can_fall_back(&self.to_client.medium);
        match failed {
            Failed::Unsupported(_) if can_fall_back => Stop::Fallback,
            Failed::Unsupported(e) | Failed::Read(e) => Stop::Error(reader, e),
            Failed::Write(e) => Stop::Error(writer, e),
        }
    }
}

impl<C, B, M> Pump for TwoWay<C, B, M>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
    M: Medium<C, B> + Medium<B, C>,
{
    fn poll_pump(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Stop>> {
        // The direction that ends last ends the tunnel, whose sockets are closed right after.
        let closing = self.to_client.state == State::Done
            && Medium::<C, B>::close_is_shutdown(&self.to_backend.medium);
        let to_backend =
            match self
                .to_backend
                .poll_copy(cx, &mut self.client, &mut self.backend, closing)
            {
                Poll::Ready(Err(f)) => {
                    return Poll::Ready(Err(self.stop(f, Side::Client, Side::Backend)))
                }
                other => other.is_ready(),
            };
        let closing = self.to_backend.state == State::Done
            && Medium::<B, C>::close_is_shutdown(&self.to_client.medium);
        let to_client =
            match self
                .to_client
                .poll_copy(cx, &mut self.backend, &mut self.client, closing)
            {
                Poll::Ready(Err(f)) => {
                    return Poll::Ready(Err(self.stop(f, Side::Backend, Side::Client)))
                }
                other => other.is_ready(),
            };
        if to_backend && to_client {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn activity(&self) -> u64 {
        self.to_backend.activity() + self.to_client.activity()
    }

    fn half_closed(&self) -> bool {
        self.to_backend.read_done || self.to_client.read_done
    }

    fn counts(&self) -> (Counts, Counts) {
        (
            self.to_backend.counts::<C, B>(),
            self.to_client.counts::<B, C>(),
        )
    }
}

pub(crate) fn write_zero() -> io::Error {
    io::Error::new(io::ErrorKind::WriteZero, "write zero byte into writer")
}
