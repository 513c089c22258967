//! The portable path's medium: a user-space buffer per direction, for any
//! `AsyncRead + AsyncWrite` pair (TLS streams, hyper's `Upgraded`, `DuplexStream`, ...).
//!
//! Memory: a direction holds no heap buffer while its traffic is small or idle. A read goes
//! into a [`PROBE`]-byte array on the stack of the poll call and is written straight to the
//! destination; only what the destination does not take is moved to the heap (the
//! direction's leftover, written before anything is read again). A read that fills the whole
//! array (bulk data) moves the direction to a heap buffer of
//! [`SpliceConfig::buffer_size`](super::SpliceConfig::buffer_size) bytes, kept while data keeps
//! coming (no allocation per chunk). When a read fills the buffer completely, the buffer
//! doubles (at the next point where it is empty, so nothing is copied) up to
//! [`SpliceConfig::max_buffer_size`](super::SpliceConfig::max_buffer_size). The buffer is
//! freed as soon as the source has nothing more to read (its read is pending) and the
//! buffer is empty, and when the direction ends: an idle tunnel holds no buffer, after its
//! first messages as before them. The size it had reached is remembered, so the next burst
//! allocates once, at that size. Nothing is read while bytes are undelivered (see
//! [`super::pump`]), so a slow reader back-pressures the other side.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::pump::{write_zero, Failed, Filled, Medium};

/// Size of the on-stack array a direction reads into while it owns no buffer. A read that
/// fills it is bulk data.
const PROBE: usize = 4096;

/// One direction's buffer.
#[derive(Debug)]
pub(crate) struct Buffer {
    /// `None` while the traffic is small or idle (see the module's docs).
    buf: Option<Box<[u8]>>,
    /// `buf[pos..cap]` is read but not yet written.
    pos: usize,
    cap: usize,
    /// The last read filled the buffer: double it before the next read.
    grow: bool,
    /// The size the next heap buffer gets: the initial size, doubled with the buffer up to
    /// `max`, and kept when the buffer is freed at a pause, so that a transfer made of bursts
    /// (messages of some size, one at a time) allocates once per burst, at the right size.
    size: usize,
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
            size: initial,
            max,
        }
    }
}

impl Buffer {
    /// A read into the stack, written straight to `dst`; a read that fills the array moves
    /// the direction to a heap buffer.
    fn poll_fill_small<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
    ) -> Poll<Result<Filled, Failed>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut probe = [0u8; PROBE];
        let mut rb = ReadBuf::new(&mut probe);
        ready!(Pin::new(src).poll_read(cx, &mut rb)).map_err(Failed::Read)?;
        let got = rb.filled();
        let n = got.len();
        self.pos = 0;
        self.cap = 0;
        if n == 0 {
            return Poll::Ready(Ok(Filled::Eof));
        }
        if n == PROBE {
            // Bulk data: a heap buffer from here, while the data keeps coming.
            let mut buf = vec![0u8; self.size.max(n)].into_boxed_slice();
            buf[..n].copy_from_slice(got);
            self.buf = Some(buf);
            self.cap = n;
            return Poll::Ready(Ok(Filled::Read {
                read: n,
                written: 0,
                rest: Bytes::new(),
            }));
        }
        let written = match Pin::new(dst).poll_write(cx, got) {
            Poll::Ready(Ok(written)) if written > 0 => written,
            Poll::Ready(result) => {
                // Kept as held, so that the report counts them as undelivered.
                self.buf = Some(got.into());
                self.cap = n;
                let error = result.err().unwrap_or_else(write_zero);
                return Poll::Ready(Err(Failed::Write(error)));
            }
            // Its wake-up is registered: the rest waits as the leftover.
            Poll::Pending => 0,
        };
        let rest = match written == n {
            true => Bytes::new(),
            false => Bytes::copy_from_slice(&got[written..]),
        };
        Poll::Ready(Ok(Filled::Read {
            read: n,
            written,
            rest,
        }))
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
        dst: &mut W,
    ) -> Poll<Result<Filled, Failed>> {
        let Some(buf) = &mut self.buf else {
            return self.poll_fill_small(cx, src, dst);
        };
        if self.grow && buf.len() < self.max {
            self.size = buf.len().saturating_mul(2).min(self.max);
            *buf = vec![0u8; self.size].into_boxed_slice();
        }
        self.grow = false;
        let len = buf.len();
        let mut rb = ReadBuf::new(buf);
        let polled = Pin::new(src).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        match polled {
            Poll::Pending => {
                // The source has paused and the buffer is empty: an idle direction keeps no
                // buffer (the next bytes go through the stack again).
                self.buf = None;
                return Poll::Pending;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(Failed::Read(e))),
            Poll::Ready(Ok(())) => {}
        }
        self.grow = n == len;
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

    /// Small traffic goes through the stack: no buffer is allocated.
    #[tokio::test]
    async fn small_data_goes_straight_through_without_a_buffer() {
        let mut reader = tokio_test::io::Builder::new()
            .read(b"hi")
            .read(b" there")
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
        assert!(dir.medium.buf.is_none(), "a buffer for small reads");
        assert_eq!(writer, b"hi there");
        drop(reader);
    }

    /// Bulk data gets a heap buffer of the initial size, freed once the source pauses.
    #[tokio::test]
    async fn a_paused_direction_frees_its_buffer() {
        let bulk = vec![7u8; 3 * PROBE];
        let mut reader = tokio_test::io::Builder::new()
            .read(&bulk[..PROBE])
            .read(&bulk[PROBE..])
            .wait(std::time::Duration::from_secs(1))
            .read(b"later")
            .build();
        let mut writer = Vec::new();
        let mut dir = Half::new(Bytes::new(), Buffer::new((8192, 65536)), 0);
        // The first read fills the stack array: a heap buffer from then on, until the pause.
        let polled = std::future::poll_fn(|cx| {
            let pending = dir
                .poll_copy(cx, &mut reader, &mut writer, false)
                .is_pending();
            Poll::Ready(pending)
        })
        .await;
        assert!(polled);
        assert_eq!(writer, bulk, "everything before the pause delivered");
        assert!(dir.medium.buf.is_none(), "the buffer outlived the pause");
        // After the pause, small traffic again without a buffer.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        std::future::poll_fn(|cx| {
            let _ = dir.poll_copy(cx, &mut reader, &mut writer, false);
            Poll::Ready(())
        })
        .await;
        assert!(writer.ends_with(b"later"));
        assert!(dir.medium.buf.is_none());
        drop(reader);
    }
}
