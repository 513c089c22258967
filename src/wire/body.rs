//! Relaying the body of a refused upgrade (rule 18 in [`crate::rules`]): the backend's non-`101`
//! answer goes to the client whole, framed as the backend framed it, and then both connections
//! close. The body is streamed, never buffered whole, and its end is found from its framing
//! (RFC 9112 §6.3) so that a keep-alive backend does not hold the client until a timeout.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::list::{list_items, trim_ows};
use super::HeadError;

/// How the end of a response body is found (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (`204`, `304`, or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Until the backend closes the connection.
    UntilClose,
}

/// The framing of `response`'s body.
///
/// # Errors
///
/// A `Transfer-Encoding` whose last coding is not `chunked`, or a `Content-Length` that is
/// not one valid number, is [`HeadError::Malformed`]: such a response cannot be relayed safely
/// (request smuggling, RFC 9112 §6.3 items 3–5).
pub(crate) fn framing(response: &Response<()>) -> Result<Framing, HeadError> {
    let status = response.status();
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Empty);
    }
    let headers = response.headers();
    if headers.contains_key(TRANSFER_ENCODING) {
        let last = list_items(headers, &TRANSFER_ENCODING).last();
        return match last {
            Some(coding) if coding.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            _ => Err(HeadError::Malformed(
                "transfer-encoding not ending in chunked",
            )),
        };
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        // A list of identical values is allowed (RFC 9110 §8.6); anything else is not.
        for item in value.as_bytes().split(|&b| b == b',') {
            let n = parse_length(trim_ows(item))
                .ok_or(HeadError::Malformed("invalid content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::Malformed("conflicting content-length"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Copies the body that starts with `rest` and continues on `src` to `dst`, stopping at its
/// end as `framing` says. Returns the number of body bytes written.
///
/// # Errors
///
/// I/O errors on either side; [`std::io::ErrorKind::UnexpectedEof`] when the backend closes
/// before a framed body is complete; [`std::io::ErrorKind::InvalidData`] for a malformed chunk.
pub(crate) async fn copy_body<R, W>(
    src: &mut R,
    rest: Bytes,
    framing: Framing,
    dst: &mut W,
) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut end = match framing {
        Framing::Empty => return Ok(0),
        Framing::Length(n) => End::Length(n),
        Framing::Chunked => End::Chunked(Chunked::default()),
        Framing::UntilClose => End::Close,
    };
    let (take, mut done) = end.feed(&rest)?;
    dst.write_all(&rest[..take]).await?;
    let mut written = take as u64;
    let mut buf = vec![0u8; 16 * 1024];
    while !done {
        let n = src.read(&mut buf).await?;
        if n == 0 {
            if matches!(end, End::Close) {
                break;
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let (take, end_reached) = end.feed(&buf[..n])?;
        dst.write_all(&buf[..take]).await?;
        written += take as u64;
        done = end_reached;
    }
    dst.flush().await?;
    Ok(written)
}

enum End {
    Length(u64),
    Chunked(Chunked),
    Close,
}

impl End {
    /// How much of `data` belongs to the body, and whether the body ends there.
    fn feed(&mut self, data: &[u8]) -> std::io::Result<(usize, bool)> {
        match self {
            End::Length(left) => {
                let take = (*left).min(data.len() as u64);
                *left -= take;
                Ok((take as usize, *left == 0))
            }
            End::Chunked(chunked) => chunked.feed(data),
            End::Close => Ok((data.len(), false)),
        }
    }
}

/// Where a chunked body scanner is (RFC 9112 §7.1).
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u8,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hexadecimal chunk size.
    #[default]
    Size,
    /// After the size: an extension, up to the line's end.
    Extension,
    /// Expecting the LF of the size line.
    SizeLf,
    /// Inside chunk data, `size` bytes to go.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// Expecting the LF of a trailer line.
    TrailerLf,
    /// Expecting the LF of the final empty line.
    EndLf,
}

impl Chunked {
    fn feed(&mut self, data: &[u8]) -> std::io::Result<(usize, bool)> {
        use ChunkState::*;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed chunked body");
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            match self.state {
                Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err(bad());
                        }
                        let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.size = self.size * 16 + digit;
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = Extension,
                    b'\r' if self.digits > 0 => self.state = SizeLf,
                    _ => return Err(bad()),
                },
                Extension => match b {
                    b'\r' => self.state = SizeLf,
                    b'\n' => return Err(bad()),
                    _ => {}
                },
                SizeLf => {
                    if b != b'\n' {
                        return Err(bad());
                    }
                    self.digits = 0;
                    self.state = if self.size == 0 { TrailerStart } else { Data };
                }
                Data => {
                    let take = self.size.min((data.len() - i) as u64);
                    self.size -= take;
                    i += take as usize;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                DataCr => {
                    if b != b'\r' {
                        return Err(bad());
                    }
                    self.state = DataLf;
                }
                DataLf => {
                    if b != b'\n' {
                        return Err(bad());
                    }
                    self.state = Size;
                }
                TrailerStart => match b {
                    b'\r' => self.state = EndLf,
                    b'\n' => return Err(bad()),
                    _ => self.state = Trailer,
                },
                Trailer => match b {
                    b'\r' => self.state = TrailerLf,
                    b'\n' => return Err(bad()),
                    _ => {}
                },
                TrailerLf => {
                    if b != b'\n' {
                        return Err(bad());
                    }
                    self.state = TrailerStart;
                }
                EndLf => {
                    if b != b'\n' {
                        return Err(bad());
                    }
                    return Ok((i + 1, true));
                }
            }
            i += 1;
        }
        Ok((data.len(), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(lines: &[(&str, &str)], status: u16) -> Response<()> {
        let mut b = Response::builder().status(status);
        for (n, v) in lines {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn framing_rules() {
        assert_eq!(framing(&response(&[], 204)).unwrap(), Framing::Empty);
        assert_eq!(
            framing(&response(&[("content-length", "12")], 403)).unwrap(),
            Framing::Length(12)
        );
        assert_eq!(
            framing(&response(&[("content-length", "5, 5")], 403)).unwrap(),
            Framing::Length(5)
        );
        assert_eq!(
            framing(&response(&[("transfer-encoding", "gzip, chunked")], 403)).unwrap(),
            Framing::Chunked
        );
        assert_eq!(framing(&response(&[], 403)).unwrap(), Framing::UntilClose);
        for bad in [
            &[("content-length", "5, 6")][..],
            &[("content-length", "5"), ("content-length", "6")],
            &[("content-length", "-1")],
            &[("content-length", "0x10")],
            &[("transfer-encoding", "chunked, gzip")],
        ] {
            assert!(framing(&response(bad, 403)).is_err(), "{bad:?}");
        }
    }

    async fn copy(framing: Framing, first: &[u8], more: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut src = more;
        let mut out = Vec::new();
        copy_body(&mut src, Bytes::copy_from_slice(first), framing, &mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn copies_a_length_framed_body_and_stops() {
        let out = copy(Framing::Length(5), b"he", b"llo, next response")
            .await
            .unwrap();
        assert_eq!(out, b"hello");
    }

    #[tokio::test]
    async fn copies_a_chunked_body_and_stops_at_its_end() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: v\r\n\r\n";
        for split in 0..body.len() {
            let mut more = body[split..].to_vec();
            more.extend_from_slice(b"GARBAGE");
            let out = copy(Framing::Chunked, &body[..split], &more).await.unwrap();
            assert_eq!(out, body, "split at {split}");
        }
    }

    #[tokio::test]
    async fn copies_until_close() {
        let out = copy(Framing::UntilClose, b"ab", b"cd").await.unwrap();
        assert_eq!(out, b"abcd");
    }

    #[tokio::test]
    async fn early_eof_and_bad_chunks_are_errors() {
        let err = copy(Framing::Length(10), b"abc", b"").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        for bad in [&b"zz\r\n"[..], b"4\r\nWikiXX", b"4\nWiki", b"\r\n"] {
            let err = copy(Framing::Chunked, bad, b"").await.unwrap_err();
            assert!(
                matches!(
                    err.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ),
                "{bad:?}: {err}"
            );
        }
    }
}
