//! The portable path: copies through a user-space buffer per direction, for any
//! `AsyncRead + AsyncWrite` pair (TLS streams, hyper's `Upgraded`, `DuplexStream`, ...).
//!
//! The shape follows tokio's `copy_bidirectional`: a private state per direction with a
//! `Running → ShuttingDown → Done` machine, both directions driven from one poll.
//!
//! Memory: a direction holds no heap buffer until its first bytes arrive. Until then it
//! reads into a small probe array on the stack of the poll call; the first bytes read are
//! moved into a heap buffer of [`SpliceConfig::buffer_size`](super::SpliceConfig::buffer_size)
//! bytes, which is kept from then on (no allocation per chunk). When a read fills the buffer
//! completely, the buffer doubles (at the next point where it is empty, so nothing is
//! copied) up to [`SpliceConfig::max_buffer_size`](super::SpliceConfig::max_buffer_size).
//! Nothing is read while the buffer holds undelivered bytes, so a slow reader back-pressures
//! the other side. The buffer is freed when its direction ends.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Counts, Leftovers, Pump, Side, Stop};

/// Size of the on-stack array a direction reads into before it owns a buffer.
const PROBE: usize = 1024;

/// Reads per direction per poll before yielding to the scheduler.
const BUDGET: usize = 32;

/// The buffered tunnel: both streams and one [`Direction`] each way.
#[derive(Debug)]
pub(crate) struct BufferedPump<C, B> {
    client: C,
    backend: B,
    to_backend: Direction,
    to_client: Direction,
    initial: usize,
    max: usize,
}

impl<C, B> BufferedPump<C, B>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    /// `(initial, max)` are `SpliceConfig::buffer_sizes`; `already` holds the bytes already written (client → backend, backend → client) by a
    /// zero-copy attempt that fell back to this path.
    pub(crate) fn new(
        client: C,
        backend: B,
        leftovers: Leftovers,
        (initial, max): (usize, usize),
        already: [u64; 2],
    ) -> Self {
        Self {
            client,
            backend,
            to_backend: Direction::new(leftovers.to_backend, already[0]),
            to_client: Direction::new(leftovers.to_client, already[1]),
            initial,
            max,
        }
    }
}

impl<C, B> Pump for BufferedPump<C, B>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_pump(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Stop>> {
        let (initial, max) = (self.initial, self.max);
        let to_backend =
            match self
                .to_backend
                .poll_copy(cx, &mut self.client, &mut self.backend, initial, max)
            {
                Poll::Ready(Err(f)) => {
                    return Poll::Ready(Err(f.stop(Side::Client, Side::Backend)))
                }
                other => other.is_ready(),
            };
        let to_client =
            match self
                .to_client
                .poll_copy(cx, &mut self.backend, &mut self.client, initial, max)
            {
                Poll::Ready(Err(f)) => {
                    return Poll::Ready(Err(f.stop(Side::Backend, Side::Client)))
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
        (self.to_backend.counts(), self.to_client.counts())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Copying; ends when the reader's EOF has been delivered and flushed.
    Running,
    /// Shutting down the writer after the reader's EOF.
    ShuttingDown,
    /// Finished.
    Done,
}

/// A failed direction: which half of it failed.
#[derive(Debug)]
enum Failed {
    Read(io::Error),
    Write(io::Error),
}

impl Failed {
    fn stop(self, reader: Side, writer: Side) -> Stop {
        match self {
            Failed::Read(e) => Stop::Error(reader, e),
            Failed::Write(e) => Stop::Error(writer, e),
        }
    }
}

/// One direction of the copy.
#[derive(Debug)]
struct Direction {
    /// Leftover bytes still to be written before anything read.
    leftover: Bytes,
    /// `None` until the first bytes arrive (and again once the direction is done).
    buf: Option<Box<[u8]>>,
    /// `buf[pos..cap]` is read but not yet written.
    pos: usize,
    cap: usize,
    /// The last read filled the buffer: double it before the next read.
    grow: bool,
    read_done: bool,
    need_flush: bool,
    state: State,
    /// Bytes read from the source (leftovers excluded).
    read: u64,
    /// Bytes written to the destination (leftovers included).
    written: u64,
}

impl Direction {
    fn new(leftover: Bytes, written: u64) -> Self {
        Self {
            leftover,
            buf: None,
            pos: 0,
            cap: 0,
            grow: false,
            read_done: false,
            need_flush: false,
            state: State::Running,
            read: 0,
            written,
        }
    }

    fn activity(&self) -> u64 {
        self.read + self.written
    }

    fn counts(&self) -> Counts {
        Counts {
            written: self.written,
            pending: (self.leftover.len() + (self.cap - self.pos)) as u64,
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        initial: usize,
        max: usize,
    ) -> Poll<Result<(), Failed>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut budget = BUDGET;
        loop {
            match self.state {
                State::Done => return Poll::Ready(Ok(())),
                State::ShuttingDown => {
                    ready!(Pin::new(&mut *writer).poll_shutdown(cx)).map_err(Failed::Write)?;
                    self.state = State::Done;
                    self.buf = None;
                }
                State::Running => {
                    while !self.leftover.is_empty() {
                        let n = ready!(Pin::new(&mut *writer).poll_write(cx, &self.leftover))
                            .map_err(Failed::Write)?;
                        if n == 0 {
                            return Poll::Ready(Err(Failed::Write(write_zero())));
                        }
                        self.leftover.advance(n);
                        self.written += n as u64;
                        self.need_flush = true;
                    }

                    if self.pos == self.cap && !self.read_done {
                        if budget == 0 {
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        budget -= 1;
                        match self.poll_fill(cx, reader, initial, max) {
                            Poll::Ready(Ok(0)) => self.read_done = true,
                            Poll::Ready(Ok(_)) => {}
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(Failed::Read(e))),
                            Poll::Pending => {
                                if self.need_flush {
                                    ready!(Pin::new(&mut *writer).poll_flush(cx))
                                        .map_err(Failed::Write)?;
                                    self.need_flush = false;
                                }
                                return Poll::Pending;
                            }
                        }
                    }

                    while self.pos < self.cap {
                        let buf = self.buf.as_deref().unwrap_or_default();
                        let n =
                            ready!(Pin::new(&mut *writer).poll_write(cx, &buf[self.pos..self.cap]))
                                .map_err(Failed::Write)?;
                        if n == 0 {
                            return Poll::Ready(Err(Failed::Write(write_zero())));
                        }
                        self.pos += n;
                        self.written += n as u64;
                        self.need_flush = true;
                    }

                    if self.read_done {
                        if self.need_flush {
                            ready!(Pin::new(&mut *writer).poll_flush(cx)).map_err(Failed::Write)?;
                            self.need_flush = false;
                        }
                        self.state = State::ShuttingDown;
                    }
                }
            }
        }
    }

    /// Reads into the (empty) buffer; returns the number of bytes read, 0 at EOF.
    fn poll_fill<R>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        initial: usize,
        max: usize,
    ) -> Poll<io::Result<usize>>
    where
        R: AsyncRead + Unpin,
    {
        let n = match &mut self.buf {
            None => {
                let mut probe = [0u8; PROBE];
                let mut rb = ReadBuf::new(&mut probe);
                ready!(Pin::new(reader).poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                if n > 0 {
                    let mut buf = vec![0u8; initial.max(n)].into_boxed_slice();
                    buf[..n].copy_from_slice(rb.filled());
                    self.buf = Some(buf);
                }
                n
            }
            Some(buf) => {
                if self.grow && buf.len() < max {
                    *buf = vec![0u8; buf.len().saturating_mul(2).min(max)].into_boxed_slice();
                }
                self.grow = false;
                let len = buf.len();
                let mut rb = ReadBuf::new(buf);
                ready!(Pin::new(reader).poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                self.grow = n == len;
                n
            }
        };
        self.pos = 0;
        self.cap = n;
        self.read += n as u64;
        Poll::Ready(Ok(n))
    }
}

fn write_zero() -> io::Error {
    io::Error::new(io::ErrorKind::WriteZero, "write zero byte into writer")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that always has data: each read fills the buffer, so the buffer doubles up
    /// to the cap and no further; everything read is written, in order.
    #[tokio::test]
    async fn buffer_grows_to_the_cap_and_no_further() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut reader = &data[..];
        let mut writer = Vec::new();
        let mut dir = Direction::new(Bytes::new(), 0);
        assert!(dir.buf.is_none(), "no buffer before data");
        let mut sizes = Vec::new();
        let ended = std::future::poll_fn(|cx| loop {
            match dir.poll_copy(cx, &mut reader, &mut writer, 100, 4096) {
                Poll::Ready(r) => return Poll::Ready(r.is_ok()),
                // The budget ran out: note the buffer size and carry on.
                Poll::Pending => sizes.push(dir.buf.as_ref().map_or(0, |b| b.len())),
            }
        })
        .await;
        assert!(ended, "copy failed");
        assert_eq!(writer, data);
        assert_eq!(dir.written, data.len() as u64);
        assert_eq!(sizes.first(), Some(&4096), "grown within one budget");
        assert!(sizes.iter().all(|&s| s == 4096), "{sizes:?}");
        assert!(dir.buf.is_none(), "buffer freed when the direction ends");
    }

    /// A small first read allocates exactly the initial size.
    #[tokio::test]
    async fn first_data_allocates_the_initial_size() {
        let mut reader = tokio_test::io::Builder::new()
            .read(b"hi")
            .wait(std::time::Duration::from_secs(1))
            .build();
        let mut writer = Vec::new();
        let mut dir = Direction::new(Bytes::new(), 0);
        let polled = std::future::poll_fn(|cx| {
            Poll::Ready(
                dir.poll_copy(cx, &mut reader, &mut writer, 8192, 65536)
                    .is_pending(),
            )
        })
        .await;
        assert!(polled);
        assert_eq!(dir.buf.as_ref().map(|b| b.len()), Some(8192));
        assert_eq!(writer, b"hi");
        drop(reader);
    }
}
