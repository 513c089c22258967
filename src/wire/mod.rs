//! Reading and writing HTTP/1.1 heads.
//!
//! [`read_request_head`] and [`read_response_head`] read one head from any [`AsyncRead`](tokio::io::AsyncRead) with
//! [httparse], within the limits of a [`HeadLimits`] (size, header count, deadline), and return
//! it as an [`http`] type together with the bytes that were read past it. Those bytes are data
//! of the next protocol (the first WebSocket frames) and must not be lost.
//!
//! Parsing is strict: whitespace before a colon, obsolete line folding, a bare CR and control
//! characters in a field value are all errors (RFC 9112 §5.1–§5.2, RFC 9110 §5.5).
//!
//! Header values and the request-target are not copied: they are slices of the one buffer
//! the head was read into.
//!
//! The module also owns the body framing used to relay a refused upgrade's answer
//! (RFC 9112 §6.3) and [`HeadError`], the error of every head reader.

mod body;
mod encode;
pub(crate) mod list;
mod read;

use std::io;
use std::time::Duration;

pub(crate) use body::{copy_body, framing, Framing};
pub(crate) use encode::{encode_plain, plain_response};
pub use encode::{encode_request_head, encode_response_head};
#[cfg(target_os = "linux")]
pub(crate) use read::try_first_read;
pub(crate) use read::{poll_first_read, read_request_head_by};
pub use read::{read_request_head, read_response_head};

/// The largest head size [`HeadLimits::max_head_size`] accepts: 64 KiB.
pub const MAX_HEAD_SIZE: usize = 64 * 1024;

/// The largest header count [`HeadLimits::max_headers`] accepts.
pub const MAX_HEADERS: usize = 256;

/// Why a request or response head could not be read.
///
/// Returned by [`read_request_head`] and [`read_response_head`]. Which HTTP status it turns
/// into depends on who sent the head; see
/// [`HandshakeError::ClientHead`](crate::HandshakeError::ClientHead) and
/// [`HandshakeError::BackendHead`](crate::HandshakeError::BackendHead).
///
/// The `Display` text is meant for logs and is not a stable contract; match on the variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// The head did not end within the configured maximum size.
    #[error("head larger than {limit} bytes")]
    TooLarge {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// The head has more header fields than the configured maximum.
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The configured limit, in fields.
        limit: usize,
    },
    /// The head is not valid HTTP/1.x (RFC 9112 §2–§5).
    #[error("malformed head: {0}")]
    Malformed(&'static str),
    /// The head was not complete within the configured deadline.
    #[error("head not complete within {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection before the head was complete.
    #[error("connection closed after {received} bytes, before the head was complete")]
    Eof {
        /// How many bytes of the head had been received.
        received: usize,
    },
    /// Reading from the peer failed.
    #[error("reading the head failed: {0}")]
    Io(#[from] io::Error),
}

impl HeadError {
    /// Whether the head was not complete within its deadline.
    pub fn is_timeout(&self) -> bool {
        matches!(self, HeadError::Timeout(_))
    }

    /// Whether the head broke the size or header-count limit.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            HeadError::TooLarge { .. } | HeadError::TooManyHeaders { .. }
        )
    }
}

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

    /// Checks a request head that someone else parsed (hyper, axum) against the size and
    /// header-count limits, as [`read_request_head`] would have: its size is what it takes
    /// on the wire as HTTP/1.1 (the request line, one `name: value` line per field, the empty
    /// line). The deadline cannot be checked after the fact: it is the server's to enforce.
    ///
    /// # Errors
    ///
    /// [`HeadError::TooLarge`] or [`HeadError::TooManyHeaders`] (431 for a client).
    ///
    /// # Examples
    ///
    /// ```
    /// use wsrelay::wire::HeadLimits;
    ///
    /// let request = http::Request::get("/chat")
    ///     .header("host", "example.com")
    ///     .header("cookie", "a".repeat(10_000))
    ///     .body(())
    ///     .unwrap();
    /// assert!(HeadLimits::default().check(&request).unwrap_err().is_too_large());
    /// assert!(HeadLimits::new().max_head_size(16 * 1024).check(&request).is_ok());
    /// ```
    pub fn check<B>(&self, request: &http::Request<B>) -> Result<(), HeadError> {
        let headers = request.headers();
        if headers.len() > self.max_headers {
            return Err(HeadError::TooManyHeaders {
                limit: self.max_headers,
            });
        }
        let target = request
            .uri()
            .path_and_query()
            .map_or(1, |pq| pq.as_str().len());
        // `GET /target HTTP/1.1\r\n`, then `name: value\r\n` per field, then `\r\n`.
        let mut size = request.method().as_str().len() + 1 + target + 11 + 2;
        for (name, value) in headers {
            size += name.as_str().len() + 2 + value.len() + 2;
        }
        if size > self.max_head_size {
            return Err(HeadError::TooLarge {
                limit: self.max_head_size,
            });
        }
        Ok(())
    }
}
