//! Reading and writing HTTP/1.1 heads.
//!
//! [`read_request_head`] and [`read_response_head`] read one head from any [`AsyncRead`] with
//! [httparse], within the limits of a [`HeadLimits`] (size, header count, deadline), and return
//! it as an [`http`] type together with the bytes that were read past it. Those bytes are data
//! of the next protocol (the first WebSocket frames) and must not be lost.
//!
//! Parsing is strict: whitespace before a colon, obsolete line folding, a bare CR and control
//! characters in a field value are all errors (RFC 9112 §5.1–§5.2, RFC 9110 §5.5).
//!
//! Header values and the request-target are not copied: they are slices of the one buffer
//! the head was read into.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::HeadError;

/// The largest head size [`HeadLimits::max_head_size`] accepts: 64 KiB.
pub const MAX_HEAD_SIZE: usize = 64 * 1024;

/// The largest header count [`HeadLimits::max_headers`] accepts.
pub const MAX_HEADERS: usize = 256;

/// How many interim (`1xx` other than `101`) responses are skipped before giving up.
const MAX_INTERIM_RESPONSES: usize = 8;

/// The first allocation for a head; grown (up to the size limit) only for larger heads.
const INITIAL_BUFFER: usize = 2048;

/// Limits for reading one head.
///
/// The defaults follow common proxies: an 8 KiB head (nginx's default header buffer), 100
/// header fields (HAProxy's `tune.http.maxhdr` is 101) and 10 seconds to receive the whole
/// head (nginx's `client_header_timeout` is 60 s; HAProxy's examples use 10 s for
/// `timeout http-request`).
///
/// ```
/// use std::time::Duration;
/// use wsrelay::wire::HeadLimits;
///
/// let limits = HeadLimits::new()
///     .max_head_size(16 * 1024)
///     .max_headers(64)
///     .timeout(Some(Duration::from_secs(5)));
/// assert_eq!(limits.get_max_head_size(), 16 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    max_head_size: usize,
    max_headers: usize,
    timeout: Option<Duration>,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_head_size: 8 * 1024,
            max_headers: 100,
            timeout: Some(Duration::from_secs(10)),
        }
    }
}

impl HeadLimits {
    /// The default limits: 8 KiB, 100 header fields, 10 seconds.
    pub fn new() -> Self {
        Self::default()
    }

    /// The largest head accepted, in bytes, counting the request or status line and the empty
    /// line that ends the head. A larger head is [`HeadError::TooLarge`] (431 for a client,
    /// RFC 6585 §5). Values are clamped to `1..=`[`MAX_HEAD_SIZE`].
    pub fn max_head_size(mut self, bytes: usize) -> Self {
        self.max_head_size = bytes.clamp(1, MAX_HEAD_SIZE);
        self
    }

    /// The most header fields accepted. More is [`HeadError::TooManyHeaders`] (431 for a
    /// client). Values are clamped to `1..=`[`MAX_HEADERS`].
    pub fn max_headers(mut self, count: usize) -> Self {
        self.max_headers = count.clamp(1, MAX_HEADERS);
        self
    }

    /// How long the whole head may take to arrive, from the first read; `None` waits forever.
    /// A miss is [`HeadError::Timeout`] (408 for a client, 504 for a backend).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// The configured maximum head size, in bytes.
    pub fn get_max_head_size(&self) -> usize {
        self.max_head_size
    }

    /// The configured maximum number of header fields.
    pub fn get_max_headers(&self) -> usize {
        self.max_headers
    }

    /// The configured deadline for a complete head.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

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

async fn read_head<R, T>(
    io: &mut R,
    limits: &HeadLimits,
    parse: Parser<T>,
) -> Result<(T, Bytes), HeadError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let max = limits.max_head_size;
    let mut buf = BytesMut::with_capacity(INITIAL_BUFFER.min(max));
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

/// Appends `request`'s head to `dst` as HTTP/1.1: `METHOD origin-form HTTP/1.1`, then every
/// header line in the map's order (all values of a name stay together, in their order), then
/// the empty line. The request-target is always written in origin form (path and query).
///
/// Header names are written in the conventional capitalisation (`Sec-WebSocket-Key`,
/// `Content-Type`), which some servers still expect even though names are case-insensitive.
///
/// # Examples
///
/// ```
/// let request = http::Request::get("/chat?room=1")
///     .header("host", "example.com")
///     .header("sec-websocket-version", "13")
///     .body(())
///     .unwrap();
/// let mut out = bytes::BytesMut::new();
/// wsrelay::wire::encode_request_head(&request, &mut out);
/// assert_eq!(
///     &out[..],
///     b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nSec-WebSocket-Version: 13\r\n\r\n"
/// );
/// ```
pub fn encode_request_head<B>(request: &Request<B>, dst: &mut BytesMut) {
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    dst.reserve(estimate(request.headers()) + target.len() + 24);
    dst.put_slice(request.method().as_str().as_bytes());
    dst.put_u8(b' ');
    if !target.starts_with('/') {
        // A path-less target (`?q` of `http://h?q`) is `/?q` in origin form.
        dst.put_u8(b'/');
    }
    dst.put_slice(target.as_bytes());
    dst.put_slice(b" HTTP/1.1\r\n");
    encode_headers(request.headers(), dst);
}

/// Appends `response`'s head to `dst` as HTTP/1.1: the status line with the canonical reason
/// phrase, the header lines as [`encode_request_head`] writes them, and the empty line.
pub fn encode_response_head<B>(response: &Response<B>, dst: &mut BytesMut) {
    let status = response.status();
    dst.reserve(estimate(response.headers()) + 40);
    dst.put_slice(b"HTTP/1.1 ");
    dst.put_slice(status.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    dst.put_slice(b"\r\n");
    encode_headers(response.headers(), dst);
}

/// Room for a typical head, so that encoding rarely grows the buffer (which it may).
fn estimate(headers: &HeaderMap) -> usize {
    headers.len() * 64 + 2
}

fn encode_headers(headers: &HeaderMap, dst: &mut BytesMut) {
    for (name, value) in headers {
        let name = name.as_str();
        match conventional(name) {
            Some(line_start) => dst.put_slice(line_start.as_bytes()),
            None => {
                put_name(name.as_bytes(), dst);
                dst.put_slice(b": ");
            }
        }
        dst.put_slice(value.as_bytes());
        dst.put_slice(b"\r\n");
    }
    dst.put_slice(b"\r\n");
}

/// `Name: ` for the header names a WebSocket handshake usually carries, so that encoding
/// them is one copy.
fn conventional(name: &str) -> Option<&'static str> {
    Some(match name {
        "host" => "Host: ",
        "connection" => "Connection: ",
        "upgrade" => "Upgrade: ",
        "origin" => "Origin: ",
        "user-agent" => "User-Agent: ",
        "cookie" => "Cookie: ",
        "pragma" => "Pragma: ",
        "cache-control" => "Cache-Control: ",
        "accept-encoding" => "Accept-Encoding: ",
        "accept-language" => "Accept-Language: ",
        "authorization" => "Authorization: ",
        "sec-websocket-key" => "Sec-WebSocket-Key: ",
        "sec-websocket-version" => "Sec-WebSocket-Version: ",
        "sec-websocket-protocol" => "Sec-WebSocket-Protocol: ",
        "sec-websocket-extensions" => "Sec-WebSocket-Extensions: ",
        "sec-websocket-accept" => "Sec-WebSocket-Accept: ",
        "x-forwarded-for" => "X-Forwarded-For: ",
        "x-forwarded-proto" => "X-Forwarded-Proto: ",
        "x-forwarded-host" => "X-Forwarded-Host: ",
        "x-real-ip" => "X-Real-IP: ",
        "forwarded" => "Forwarded: ",
        "via" => "Via: ",
        "set-cookie" => "Set-Cookie: ",
        "content-length" => "Content-Length: ",
        "content-type" => "Content-Type: ",
        "date" => "Date: ",
        "server" => "Server: ",
        _ => return None,
    })
}

/// Writes a lower-case header name in its conventional capitalisation.
fn put_name(name: &[u8], dst: &mut BytesMut) {
    const WS: &[u8] = b"sec-websocket-";
    let start = dst.len();
    dst.extend_from_slice(name);
    let written = &mut dst[start..];
    let mut at = 0;
    while at < written.len() {
        written[at].make_ascii_uppercase();
        match written[at..].iter().position(|&b| b == b'-') {
            Some(dash) => at += dash + 1,
            None => break,
        }
    }
    if name.starts_with(WS) {
        // `Sec-Websocket-` as the loop wrote it, `Sec-WebSocket-` as RFC 6455 spells it.
        written[7] = b'S';
    }
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

    // PROTOCOL.md rule 7: a head over the size cap is refused (431) without buffering more.
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

    // PROTOCOL.md rule 7: a head not complete within the deadline is a timeout (408), however
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

    // PROTOCOL.md rule 6: strict head parsing.
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

    // PROTOCOL.md rule 19: interim 1xx responses are skipped.
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
    fn encodes_a_request_head_with_conventional_names() {
        let req = Request::get("/a?b=c")
            .header("host", "h")
            .header("sec-websocket-key", "k")
            .header("x-forwarded-for", "1.2.3.4")
            .header("cookie", "a")
            .header("cookie", "b")
            .body(())
            .unwrap();
        let mut out = BytesMut::new();
        encode_request_head(&req, &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "GET /a?b=c HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: k\r\n\
             X-Forwarded-For: 1.2.3.4\r\nCookie: a\r\nCookie: b\r\n\r\n"
        );
    }

    #[test]
    fn encodes_a_response_head() {
        let res = Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        let mut out = BytesMut::new();
        encode_response_head(&res, &mut out);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn encode_then_read_round_trips() {
        let (req, _) = read_req(CHROME).await.unwrap();
        let mut out = BytesMut::new();
        encode_request_head(&req, &mut out);
        let (again, _) = read_req(&out).await.unwrap();
        assert_eq!(again.uri(), req.uri());
        assert_eq!(again.headers(), req.headers());
    }

    #[test]
    fn conventional_names_match_the_generic_capitalisation() {
        for name in [
            "host",
            "connection",
            "upgrade",
            "origin",
            "user-agent",
            "cookie",
            "pragma",
            "cache-control",
            "accept-encoding",
            "accept-language",
            "authorization",
            "sec-websocket-key",
            "sec-websocket-version",
            "sec-websocket-protocol",
            "sec-websocket-extensions",
            "sec-websocket-accept",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "forwarded",
            "via",
            "set-cookie",
            "content-length",
            "content-type",
            "date",
            "server",
        ] {
            let mut generic = BytesMut::new();
            put_name(name.as_bytes(), &mut generic);
            generic.put_slice(b": ");
            assert_eq!(
                conventional(name).unwrap().as_bytes(),
                &generic[..],
                "{name}"
            );
        }
        // X-Real-IP is spelled as nginx users write it.
        assert_eq!(conventional("x-real-ip"), Some("X-Real-IP: "));
    }

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(find_head_end(b"a\r\n\r\nb", 0), Some(5));
        assert_eq!(find_head_end(b"a\n\nb", 0), Some(3));
        assert_eq!(find_head_end(b"a\r\nb\r\n", 0), None);
        // Resuming a search finds an end that straddles the previous boundary.
        assert_eq!(find_head_end(b"ab\r\n\r\n", 4), Some(6));
    }
}
