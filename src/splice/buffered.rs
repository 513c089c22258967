//! The portable path's medium: a user-space buffer per direction, for any
//! `AsyncRead + AsyncWrite` pair (TLS streams, hyper's `Upgraded`, `DuplexStream`, ...).
//!
//! Memory: a direction holds no heap buffer until its first bytes arrive. Until then it
//! reads into a small probe array on the stack of the poll call; the first bytes read are
//! moved into a heap buffer of [`SpliceConfig::buffer_size`](super::SpliceConfig::buffer_size)
//! bytes, which is kept from then on (no allocation per chunk). When a read fills the buffer
//! completely, the buffer doubles (at the next point where it is empty, so nothing is
//! copied) up to [`SpliceConfig::max_buffer_size`](super::SpliceConfig::max_buffer_size).
//! Nothing is read while the buffer holds undelivered bytes (see [`super::pump`]), so a slow
//! reader back-pressures the other side. The buffer is freed when its direction ends.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::pump::{write_zero, Failed, Filled, Medium};

/// Size of the on-stack array a direction reads into before it owns a buffer.
const PROBE: usize = 1024;

/// One direction's buffer.
#[derive(Debug)]
pub(crate) struct Buffer {
    /// `None` until the first bytes arrive (and again once the direction is done).
    buf: Option<Box<[u8]>>,
    /// `buf[pos..cap]` is read but not yet written.
    pos: usize,
    cap: usize,
    /// The last read filled the buffer: double it before the next read.
    grow: bool,
    initial: usize,
    max: usize,
}

impl Buffer {
    /// `(initial, max)` are [`SpliceConfig::buffer_sizes`](super::SpliceConfig::buffer_sizes).
    pub(crate) fn new((initial, max): (usize, usize)) -> Self {
        Self {
            buf: None,
            pos: 0,
            cap: 0,
            grow: false,
            initial,
            max,
        }
    }
}

impl<R, W> Medium<R, W> for Buffer
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    fn held(&self) -> usize {
        self.cap - self.pos
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>, dst: &mut W) -> Poll<Result<usize, Failed>> {
        let buf = self.buf.as_deref().unwrap_or_default();
        let n = ready!(Pin::new(dst).poll_write(cx, &buf[self.pos..self.cap]))
            .map_err(Failed::Write)?;
        if n == 0 {
            return Poll::Ready(Err(Failed::Write(write_zero())));
        }
        self.pos += n;
        Poll::Ready(Ok(n))
    }

    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        _dst: &mut W,
    ) -> Poll<Result<Filled, Failed>> {
        let n = match &mut self.buf {
            None => {
                let mut probe = [0u8; PROBE];
                let mut rb = ReadBuf::new(&mut probe);
                ready!(Pin::new(src).poll_read(cx, &mut rb)).map_err(Failed::Read)?;
                let n = rb.filled().len();
                if n > 0 {
                    let mut buf = vec![0u8; self.initial.max(n)].into_boxed_slice();
                    buf[..n].copy_from_slice(rb.filled());
                    self.buf = Some(buf);
                }
                n
            }
            Some(buf) => {
                if self.grow && buf.len() < self.max {
                    *buf = vec![0u8; buf.len().saturating_mul(2).min(self.max)].into_boxed_slice();
                }
                self.grow = false;
                let len = buf.len();
                let mut rb = ReadBuf::new(buf);
                ready!(Pin::new(src).poll_read(cx, &mut rb)).map_err(Failed::Read)?;
                let n = rb.filled().len();
                self.grow = n == len;
                n
            }
        };
        self.pos = 0;
        self.cap = n;
        Poll::Ready(Ok(if n == 0 {
            Filled::Eof
        } else {
            Filled::Read {
                read: n,
                written: 0,
                rest: Bytes::new(),
            }
        }))
    }

    fn release(&mut self) {
        self.buf = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::splice::pump::Half;

    /// A reader that always has data: each read fills the buffer, so the buffer doubles up
    /// to the cap and no further; everything read is written, in order.
    #[tokio::test]
    async fn buffer_grows_to_the_cap_and_no_further() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut reader = &data[..];
        let mut writer = Vec::new();
        let mut dir = Half::new(Bytes::new(), Buffer::new((100, 4096)), 0);
        assert!(dir.medium.buf.is_none(), "no buffer before data");
        let mut sizes = Vec::new();
        let ended = std::future::poll_fn(|cx| loop {
            match dir.poll_copy(cx, &mut reader, &mut writer, false) {
                Poll::Ready(r) => return Poll::Ready(r.is_ok()),
                // The budget ran out: note the buffer size and carry on.
                Poll::Pending => sizes.push(dir.medium.buf.as_ref().map_or(0, |b| b.len())),
            }
        })
        .await;
        assert!(ended, "copy failed");
        assert_eq!(writer, data);
        assert_eq!(dir.written, data.len() as u64);
        assert_eq!(sizes.first(), Some(&4096), "grown within one budget");
        assert!(sizes.iter().all(|&s| s == 4096), "{sizes:?}");
        assert!(
            dir.medium.buf.is_none(),
            "buffer freed when the direction ends"
        );
    }

    /// A small first read allocates exactly the initial size.
    #[tokio::test]
    async fn first_data_allocates_the_initial_size() {
        let mut reader = tokio_test::io::Builder::new()
            .read(b"hi")
            .wait(std::time::Duration::from_secs(1))
            .build();
        let mut writer = Vec::new();
        let mut dir = Half::new(Bytes::new(), Buffer::new((8192, 65536)), 0);
        let polled = std::future::poll_fn(|cx| {
            Poll::Ready(
                dir.poll_copy(cx, &mut reader, &mut writer, false)
                    .is_pending(),
            )
        })
        .await;
        assert!(polled);
        assert_eq!(dir.medium.buf.as_ref().map(|b| b.len()), Some(8192));
        assert_eq!(writer, b"hi");
        drop(reader);
    }
}
