//! Reading one HTTP/1.x head from an `AsyncRead`, within a [`HeadLimits`].

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{ready, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::{HeadError, HeadLimits, MAX_HEADERS};

/// How many interim (`1xx` other than `101`) responses are skipped before giving up.
const MAX_INTERIM_RESPONSES: usize = 8;

/// The first allocation for a head; grown (up to the size limit) only for larger heads.
const INITIAL_BUFFER: usize = 2048;

/// Reads one HTTP/1.x request head from `io`.
///
/// Returns the head as an `http::Request<()>` and the bytes that arrived after it (possibly
/// empty). Reads as little as it can: never more than the head size limit in total.
///
/// # Errors
///
/// [`HeadError::TooLarge`] or [`HeadError::TooManyHeaders`] past the limits,
/// [`HeadError::Malformed`] for anything that is not a valid HTTP/1.x request head,
/// [`HeadError::Timeout`] when the deadline passes, [`HeadError::Eof`] when the peer closes
/// first and [`HeadError::Io`] when reading fails.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), wsrelay::HeadError> {
/// use wsrelay::wire::{read_request_head, HeadLimits};
///
/// let mut input: &[u8] = b"GET /chat HTTP/1.1\r\nHost: example.com\r\n\r\n\x81\x00";
/// let (request, rest) = read_request_head(&mut input, &HeadLimits::default()).await?;
/// assert_eq!(request.uri(), "/chat");
/// assert_eq!(request.headers()["host"], "example.com");
/// assert_eq!(&rest[..], b"\x81\x00");
/// # Ok(())
/// # }
/// ```
pub async fn read_request_head<R>(
    io: &mut R,
    limits: &HeadLimits,
) -> Result<(Request<()>, Bytes), HeadError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    with_deadline(limits, read_head(io, limits, parse_request)).await
}

/// Reads one HTTP/1.x response head from `io`, skipping interim `1xx` responses other than
/// `101 Switching Protocols` (RFC 9110 §15.2).
///
/// Returns the final head as an `http::Response<()>` (the reason phrase is not kept) and the
/// bytes that arrived after it.
///
/// # Errors
///
/// As [`read_request_head`]; more than eight interim responses in a row are
/// [`HeadError::Malformed`].
pub async fn read_response_head<R>(
    io: &mut R,
    limits: &HeadLimits,
) -> Result<(Response<()>, Bytes), HeadError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    with_deadline(limits, read_head(io, limits, parse_response)).await
}

/// [`read_request_head`] with the deadline given as an instant rather than counted from now:
/// for a front end whose deadline started earlier (a TLS handshake and the head share the
/// client-head deadline). `None` waits forever; a miss is [`HeadError::Timeout`] with the
/// configured limit.
///
/// `first` is the outcome of a first read made before (see [`poll_first_read`]), if any.
pub(crate) async fn read_request_head_by<R>(
    io: &mut R,
    limits: &HeadLimits,
    deadline: Option<tokio::time::Instant>,
    first: Option<Result<BytesMut, HeadError>>,
) -> Result<(Request<()>, Bytes), HeadError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let read = read_head_after(io, limits, parse_request, first);
    match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline, read).await {
            Ok(result) => result,
            Err(_) => Err(HeadError::Timeout(limits.timeout.unwrap_or_default())),
        },
        None => read.await,
    }
}

async fn with_deadline<T>(
    limits: &HeadLimits,
    read: impl std::future::Future<Output = Result<T, HeadError>>,
) -> Result<T, HeadError> {
    match limits.timeout {
        Some(limit) => match tokio::time::timeout(limit, read).await {
            Ok(result) => result,
            Err(_) => Err(HeadError::Timeout(limit)),
        },
        None => read.await,
    }
}

/// What a parser makes of the buffer once it holds the end of a head.
enum Parsed<T> {
    /// A head of the given length.
    Head(T, usize),
    /// An interim response of the given length to drop; keep parsing after it.
    Skip(usize),
    /// Not complete yet.
    Partial,
}

type Parser<T> = fn(&Bytes, &HeadLimits) -> Result<Parsed<T>, HeadError>;

/// The first read of a head, for a reader that has allocated nothing yet.
///
/// Rule 29: nothing is allocated for the head until the peer has sent something. The read
/// goes into an array on the stack of this poll (kept by no future), and only once it got
/// bytes are they moved into a new buffer. A peer that closes first is [`HeadError::Eof`].
pub(crate) fn poll_first_read<R>(
    io: Pin<&mut R>,
    cx: &mut std::task::Context<'_>,
    limits: &HeadLimits,
) -> Poll<Result<BytesMut, HeadError>>
where
    R: AsyncRead + ?Sized,
{
    let first = INITIAL_BUFFER.min(limits.max_head_size);
    let mut array = [0u8; INITIAL_BUFFER];
    let mut first_read = ReadBuf::new(&mut array[..first]);
    ready!(io.poll_read(cx, &mut first_read))?;
    Poll::Ready(first_bytes(first_read.filled(), first))
}

/// [`poll_first_read`] for a socket not (yet) registered with a reactor: `read` is one
/// non-blocking read into the given array. `None` when nothing has arrived yet (the read
/// would block or was interrupted).
#[cfg(target_os = "linux")]
pub(crate) fn try_first_read(
    read: impl FnOnce(&mut [u8]) -> std::io::Result<usize>,
    limits: &HeadLimits,
) -> Option<Result<BytesMut, HeadError>> {
    let first = INITIAL_BUFFER.min(limits.max_head_size);
    let mut array = [0u8; INITIAL_BUFFER];
    match read(&mut array[..first]) {
        Ok(n) => Some(first_bytes(&array[..n], first)),
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ) =>
        {
            None
        }
        Err(error) => Some(Err(error.into())),
    }
}

/// The bytes of a first read moved into a new head buffer of `capacity`; none is the peer's
/// EOF.
fn first_bytes(got: &[u8], capacity: usize) -> Result<BytesMut, HeadError> {
    if got.is_empty() {
        return Err(HeadError::Eof { received: 0 });
    }
    let mut buf = BytesMut::with_capacity(capacity);
    buf.extend_from_slice(got);
    Ok(buf)
}

async fn read_head<R, T>(
    io: &mut R,
    limits: &HeadLimits,
    parse: Parser<T>,
) -> Result<(T, Bytes), HeadError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    read_head_after(io, limits, parse, None).await
}

/// [`read_head`] continuing from `first`, the outcome of a [`poll_first_read`] already made.
async fn read_head_after<R, T>(
    io: &mut R,
    limits: &HeadLimits,
    parse: Parser<T>,
    first: Option<Result<BytesMut, HeadError>>,
) -> Result<(T, Bytes), HeadError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let max = limits.max_head_size;
    let mut buf = match first {
        Some(first) => first?,
        None => poll_fn(|cx| poll_first_read(Pin::new(&mut *io), cx, limits)).await?,
    };
    // Bytes of `buf` already searched for the end of a head.
    let mut scanned = 0;
    let mut interim = 0;
    loop {
        if let Some(end) = find_head_end(&buf, scanned) {
            scanned = end;
            // Freezing lets header values borrow the buffer without copies. The rare miss
            // (a bare empty line before the start line) pays one copy back.
            let frozen = buf.split().freeze();
            match parse(&frozen, limits)? {
                Parsed::Head(head, len) => return Ok((head, frozen.slice(len..))),
                Parsed::Skip(len) => {
                    interim += 1;
                    if interim > MAX_INTERIM_RESPONSES {
                        return Err(HeadError::Malformed("too many interim responses"));
                    }
                    buf.extend_from_slice(&frozen[len..]);
                    scanned = 0;
                    continue;
                }
                Parsed::Partial => buf.extend_from_slice(&frozen),
            }
        } else {
            scanned = buf.len();
        }
        if buf.len() >= max {
            return Err(HeadError::TooLarge { limit: max });
        }
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len().min(max - buf.len()));
        }
        let room = max - buf.len();
        let n = io.read_buf(&mut (&mut buf).limit(room)).await?;
        if n == 0 {
            return Err(HeadError::Eof {
                received: buf.len(),
            });
        }
    }
}

/// Finds the end of a head (`\n\r\n` or `\n\n`) starting near `from`; returns the index just
/// past it. Only the bytes not searched before (plus the two before them) are looked at, so a
/// head trickling in one byte at a time costs linear time.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(2);
    let mut i = start;
    while let Some(pos) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + pos;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

fn map_parse_error(error: httparse::Error, limits: &HeadLimits) -> HeadError {
    use httparse::Error::*;
    match error {
        TooManyHeaders => HeadError::TooManyHeaders {
            limit: limits.max_headers,
        },
        HeaderName => HeadError::Malformed("invalid header name"),
        HeaderValue => HeadError::Malformed("invalid header value"),
        NewLine => HeadError::Malformed("invalid line ending"),
        Status => HeadError::Malformed("invalid status code"),
        Token => HeadError::Malformed("invalid token"),
        Version => HeadError::Malformed("invalid http version"),
    }
}

fn version(v: Option<u8>) -> Result<Version, HeadError> {
    match v {
        Some(0) => Ok(Version::HTTP_10),
        Some(1) => Ok(Version::HTTP_11),
        _ => Err(HeadError::Malformed("invalid http version")),
    }
}

fn header_map(frozen: &Bytes, parsed: &[httparse::Header<'_>]) -> Result<HeaderMap, HeadError> {
    let mut headers = HeaderMap::with_capacity(parsed.len());
    for header in parsed {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| HeadError::Malformed("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(frozen.slice_ref(header.value))
            .map_err(|_| HeadError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn parse_request(frozen: &Bytes, limits: &HeadLimits) -> Result<Parsed<Request<()>>, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage[..limits.max_headers]);
    let len = match req.parse(frozen) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(map_parse_error(e, limits)),
    };
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Ok(Parsed::Partial);
    };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method"))?;
    let uri = Uri::from_maybe_shared(frozen.slice_ref(path.as_bytes()))
        .map_err(|_| HeadError::Malformed("invalid request target"))?;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version(req.version)?;
    *request.headers_mut() = header_map(frozen, req.headers)?;
    Ok(Parsed::Head(request, len))
}

fn parse_response(frozen: &Bytes, limits: &HeadLimits) -> Result<Parsed<Response<()>>, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut storage[..limits.max_headers]);
    let len = match res.parse(frozen) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(map_parse_error(e, limits)),
    };
    let Some(code) = res.code else {
        return Ok(Parsed::Partial);
    };
    let status =
        StatusCode::from_u16(code).map_err(|_| HeadError::Malformed("invalid status code"))?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Parsed::Skip(len));
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version(res.version)?;
    *response.headers_mut() = header_map(frozen, res.headers)?;
    Ok(Parsed::Head(response, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio_test::io::Builder;

    const CHROME: &[u8] = b"GET /chat?x=1 HTTP/1.1\r\n\
        Host: example.com:8080\r\n\
        Connection: Upgrade\r\n\
        Upgrade: websocket\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Cookie: a=1\r\n\
        Cookie: b=2\r\n\
        \r\n";

    async fn read_req(input: &[u8]) -> Result<(Request<()>, Bytes), HeadError> {
        let mut io = input;
        read_request_head(&mut io, &HeadLimits::default()).await
    }

    #[tokio::test]
    async fn reads_a_request_head_in_one_read() {
        let (req, rest) = read_req(CHROME).await.unwrap();
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/chat?x=1");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "example.com:8080");
        let cookies: Vec<_> = req.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn returns_bytes_read_past_the_head() {
        let mut input = CHROME.to_vec();
        input.extend_from_slice(b"\x81\x85frame");
        let (_, rest) = read_req(&input).await.unwrap();
        assert_eq!(&rest[..], b"\x81\x85frame");
    }

    #[tokio::test]
    async fn reads_a_head_split_across_reads() {
        let (a, b) = CHROME.split_at(37);
        let mut io = Builder::new().read(a).read(b).read(b"tail").build();
        let (req, rest) = read_request_head(&mut io, &HeadLimits::default())
            .await
            .unwrap();
        assert_eq!(req.headers()["sec-websocket-version"], "13");
        // The head ended exactly at a read boundary: nothing more is read.
        assert!(rest.is_empty());
        let mut tail = Vec::new();
        io.read_to_end(&mut tail).await.unwrap();
        assert_eq!(tail, b"tail");
    }

    #[tokio::test]
    async fn reads_a_head_one_byte_at_a_time() {
        let mut builder = Builder::new();
        for b in CHROME.chunks(1) {
            builder.read(b);
        }
        let mut io = builder.build();
        let (req, rest) = read_request_head(&mut io, &HeadLimits::default())
            .await
            .unwrap();
        assert_eq!(req.headers().len(), 7);
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn eof_mid_head_is_an_error() {
        let mut io = Builder::new().read(&CHROME[..40]).build();
        let err = read_request_head(&mut io, &HeadLimits::default())
            .await
            .unwrap_err();
        assert!(matches!(err, HeadError::Eof { received: 40 }), "{err:?}");
    }

    #[tokio::test]
    async fn eof_before_anything_is_an_error() {
        let err = read_req(b"").await.unwrap_err();
        assert!(matches!(err, HeadError::Eof { received: 0 }), "{err:?}");
    }

    #[tokio::test]
    async fn io_error_is_reported() {
        let mut io = Builder::new()
            .read(b"GET / HT")
            .read_error(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset",
            ))
            .build();
        let err = read_request_head(&mut io, &HeadLimits::default())
            .await
            .unwrap_err();
        match err {
            HeadError::Io(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
            other => panic!("{other:?}"),
        }
    }

    // Rule 7: a head over the size cap is refused (431) without buffering more.
    #[tokio::test]
    async fn oversized_head_is_refused_at_the_cap() {
        let mut input = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        input.resize(1024 * 1024, b'a');
        let limits = HeadLimits::default();
        let mut io = &input[..];
        let err = read_request_head(&mut io, &limits).await.unwrap_err();
        assert!(
            matches!(err, HeadError::TooLarge { limit: 8192 }),
            "{err:?}"
        );
        // Only the cap was consumed from the reader.
        assert_eq!(io.len(), input.len() - 8192);
    }

    #[tokio::test]
    async fn head_exactly_at_the_cap_is_accepted() {
        let mut input = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ".to_vec();
        let fill = 100 - input.len() - 4;
        input.extend(std::iter::repeat(b'p').take(fill));
        input.extend_from_slice(b"\r\n\r\n");
        assert_eq!(input.len(), 100);
        let mut io = &input[..];
        let limits = HeadLimits::default().max_head_size(100);
        let (req, _) = read_request_head(&mut io, &limits).await.unwrap();
        assert_eq!(req.headers()["x-pad"].len(), fill);
        let mut io = &input[..];
        let limits = HeadLimits::default().max_head_size(99);
        let err = read_request_head(&mut io, &limits).await.unwrap_err();
        assert!(err.is_too_large());
    }

    #[tokio::test]
    async fn too_many_headers_is_refused() {
        let mut input = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..11 {
            input.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\n");
        let limits = HeadLimits::default().max_headers(10);
        let mut io = &input[..];
        let err = read_request_head(&mut io, &limits).await.unwrap_err();
        assert!(
            matches!(err, HeadError::TooManyHeaders { limit: 10 }),
            "{err:?}"
        );
        let limits = HeadLimits::default().max_headers(11);
        let mut io = &input[..];
        assert!(read_request_head(&mut io, &limits).await.is_ok());
    }

    // Rule 7: a head not complete within the deadline is a timeout (408), however
    // steadily the bytes trickle in (slowloris).
    #[tokio::test(start_paused = true)]
    async fn deadline_applies_to_the_whole_head() {
        use tokio::io::AsyncWriteExt;
        let (mut reader, mut writer) = tokio::io::duplex(64);
        let trickle = tokio::spawn(async move {
            for piece in [
                &b"GET / HTTP/1.1\r\n"[..],
                b"Host: a\r\n",
                b"X: y\r\n",
                b"\r\n",
            ] {
                if writer.write_all(piece).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
        });
        let limits = HeadLimits::default().timeout(Some(Duration::from_secs(10)));
        let start = tokio::time::Instant::now();
        let err = read_request_head(&mut reader, &limits).await.unwrap_err();
        assert!(matches!(err, HeadError::Timeout(_)), "{err:?}");
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        drop(reader);
        trickle.await.unwrap();
    }

    // Rule 7 and rule 35: a deadline that started before the head (a TLS handshake took
    // part of it) leaves the head only the rest.
    #[tokio::test(start_paused = true)]
    async fn a_deadline_given_as_an_instant_counts_from_that_instant() {
        use tokio::io::AsyncWriteExt;
        let limits = HeadLimits::default().timeout(Some(Duration::from_secs(10)));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        tokio::time::advance(Duration::from_secs(7)).await;
        let (mut reader, mut writer) = tokio::io::duplex(64);
        writer.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let start = tokio::time::Instant::now();
        let err = read_request_head_by(&mut reader, &limits, Some(deadline), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, HeadError::Timeout(d) if d == Duration::from_secs(10)),
            "{err:?}"
        );
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn head_within_the_deadline_is_read() {
        let mut io = Builder::new()
            .read(b"GET / HTTP/1.1\r\n")
            .wait(Duration::from_secs(9))
            .read(b"Host: a\r\n\r\n")
            .build();
        let limits = HeadLimits::default().timeout(Some(Duration::from_secs(10)));
        assert!(read_request_head(&mut io, &limits).await.is_ok());
    }

    // Rule 6: strict head parsing.
    #[tokio::test]
    async fn malformed_heads_are_refused() {
        let cases: &[(&str, &[u8])] = &[
            ("space before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
            (
                "obs-fold",
                b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n",
            ),
            ("bare CR in value", b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"),
            ("NUL in value", b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n"),
            ("no colon", b"GET / HTTP/1.1\r\nHost\r\n\r\n"),
            ("bad version", b"GET / HTTP/9.1\r\nHost: a\r\n\r\n"),
            ("space in target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("bad method", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("empty name", b"GET / HTTP/1.1\r\n: a\r\n\r\n"),
        ];
        for (what, input) in cases {
            let err = read_req(input).await.unwrap_err();
            assert!(matches!(err, HeadError::Malformed(_)), "{what}: {err:?}");
        }
    }

    #[tokio::test]
    async fn tolerates_bare_lf_line_endings() {
        let (req, rest) = read_req(b"GET / HTTP/1.1\nHost: a\n\nrest").await.unwrap();
        assert_eq!(req.headers()["host"], "a");
        assert_eq!(&rest[..], b"rest");
    }

    #[tokio::test]
    async fn reads_http_10() {
        let (req, _) = read_req(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        assert_eq!(req.version(), Version::HTTP_10);
    }

    #[tokio::test]
    async fn reads_a_response_and_its_leftover() {
        let mut io: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\n\r\n\x81\x02hi";
        let (res, rest) = read_response_head(&mut io, &HeadLimits::default())
            .await
            .unwrap();
        assert_eq!(res.status(), 101);
        assert_eq!(res.headers()["upgrade"], "websocket");
        assert_eq!(&rest[..], b"\x81\x02hi");
    }

    // Rule 19: interim 1xx responses are skipped.
    #[tokio::test]
    async fn skips_interim_responses() {
        let mut io = Builder::new()
            .read(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
            .read(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nxy")
            .build();
        let (res, rest) = read_response_head(&mut io, &HeadLimits::default())
            .await
            .unwrap();
        assert_eq!(res.status(), 101);
        assert!(res.headers().get("link").is_none());
        assert_eq!(&rest[..], b"xy");
    }

    #[tokio::test]
    async fn endless_interim_responses_are_refused() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(20);
        let mut io = &input[..];
        let err = read_response_head(&mut io, &HeadLimits::default())
            .await
            .unwrap_err();
        assert!(matches!(err, HeadError::Malformed(_)), "{err:?}");
    }

    #[tokio::test]
    async fn malformed_response_is_refused() {
        for input in [
            &b"HTTP/1.1 1x1 Nope\r\n\r\n"[..],
            b"HTTP/1.1 101 OK\r\nUpgrade : websocket\r\n\r\n",
            b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n folded\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            let mut io = input;
            let err = read_response_head(&mut io, &HeadLimits::default())
                .await
                .unwrap_err();
            assert!(matches!(err, HeadError::Malformed(_)), "{err:?}");
        }
    }

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(find_head_end(b"a\r\n\r\nb", 0), Some(5));
        assert_eq!(find_head_end(b"a\n\nb", 0), Some(3));
        assert_eq!(find_head_end(b"a\r\nb\r\n", 0), None);
        // Resuming a search finds an end that straddles the previous boundary.
        assert_eq!(find_head_end(b"ab\r\n\r\n", 4), Some(6));
    }

    #[tokio::test]
    async fn encode_then_read_round_trips() {
        let (req, _) = read_req(CHROME).await.unwrap();
        let mut out = BytesMut::new();
        crate::wire::encode_request_head(&req, &mut out);
        let (again, _) = read_req(&out).await.unwrap();
        assert_eq!(again.uri(), req.uri());
        assert_eq!(again.headers(), req.headers());
    }
}
