//! Writing heads back as HTTP/1.1 bytes.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Request, Response, StatusCode};

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

/// A short `text/plain` response that closes the connection.
pub(crate) fn plain_response(status: StatusCode, body: String) -> Response<String> {
    let length = HeaderValue::from(body.len());
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CONTENT_LENGTH, length);
    response
}

/// A response with a text body, head and body, as HTTP/1.1 bytes.
pub(crate) fn encode_plain(response: &Response<String>) -> Bytes {
    let mut out = BytesMut::with_capacity(160 + response.body().len());
    encode_response_head(response, &mut out);
    out.extend_from_slice(response.body().as_bytes());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
