//! The grammar of the two negotiation headers, `Sec-WebSocket-Protocol` and
//! `Sec-WebSocket-Extensions` (RFC 6455 §4.1 item 10, §9.1, §11.3.2, §11.3.4), as the client's
//! offer must follow it ([rule 6b](crate::rules)). The backend's answer (rule 17) is judged by its
//! extension names only, in `response`.
//!
//! Both are lists in the sense of RFC 9110 §5.6.1, split across any number of lines: elements
//! are separated by commas with optional whitespace around them, and empty elements (`a,,b`,
//! a trailing comma, a blank line next to a non-blank one) are ignored, as a recipient must.
//! Browsers never send empty elements; the WHATWG `WebSocket` constructor refuses empty
//! protocol names. Both headers are `1#` lists, though: a header that is present but holds no
//! element at all (`Sec-WebSocket-Protocol:` with an empty value, or only commas) is
//! malformed. A valid header is forwarded exactly as the client sent it.
//!
//! Parsing is byte-level and allocates nothing unless a client offers more than eight
//! subprotocols.

use http::header::{self, HeaderName};
use http::HeaderMap;

use super::headers::list_items;

/// Whether `b` is a `tchar` (RFC 9110 §5.6.2): a visible ASCII character other than a
/// delimiter.
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// Whether `bytes` is a `token`: one or more `tchar` (RFC 9110 §5.6.2).
pub(crate) fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| is_tchar(b))
}

static TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 128 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let symbols = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < symbols.len() {
        table[symbols[i] as usize] = true;
        i += 1;
    }
    table
};

/// How many subprotocols are compared pairwise before the check for duplicates sorts them.
const INLINE: usize = 8;

/// Checks a client's `Sec-WebSocket-Protocol` lines: `1#token` with every token unique
/// (RFC 6455 §4.1 item 10, §11.3.4), compared exactly as the backend's choice is (rule 17).
/// `Ok` when the header is absent.
pub(crate) fn check_subprotocols(headers: &HeaderMap) -> Result<(), &'static str> {
    check_list(headers, &header::SEC_WEBSOCKET_PROTOCOL)?;
    let mut seen: [&[u8]; INLINE] = [&[]; INLINE];
    for (i, protocol) in list_items(headers, &header::SEC_WEBSOCKET_PROTOCOL).enumerate() {
        if !is_token(protocol) {
            return Err("not a list of tokens");
        }
        if i == INLINE {
            return check_many(headers);
        }
        if seen[..i].contains(&protocol) {
            return Err("repeated subprotocol");
        }
        seen[i] = protocol;
    }
    Ok(())
}

/// The duplicate check for a long list: sorting keeps it `O(n log n)` whatever the head size.
#[cold]
fn check_many(headers: &HeaderMap) -> Result<(), &'static str> {
    let mut all: Vec<&[u8]> = list_items(headers, &header::SEC_WEBSOCKET_PROTOCOL).collect();
    if !all.iter().all(|p| is_token(p)) {
        return Err("not a list of tokens");
    }
    all.sort_unstable();
    if all.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err("repeated subprotocol");
    }
    Ok(())
}

/// Checks a client's `Sec-WebSocket-Extensions` lines against RFC 6455 §9.1. `Ok` when the
/// header is absent.
pub(crate) fn check_extensions(headers: &HeaderMap) -> Result<(), &'static str> {
    check_list(headers, &header::SEC_WEBSOCKET_EXTENSIONS)?;
    list_items(headers, &header::SEC_WEBSOCKET_EXTENSIONS)
        .try_for_each(|element| extension(element).map(drop))
}

/// A present `1#` list must hold at least one element (RFC 9110 §5.6.1.2).
fn check_list(headers: &HeaderMap, name: &HeaderName) -> Result<(), &'static str> {
    if headers.contains_key(name) && list_items(headers, name).next().is_none() {
        return Err("empty list");
    }
    Ok(())
}

/// One element of an extension list, already split at commas and trimmed, and its
/// extension token (RFC 6455 §9.1):
///
/// ```text
/// extension       = extension-token *( ";" extension-param )
/// extension-param = token [ "=" (token | quoted-string) ]
/// ```
///
/// with optional whitespace around `;` and `=` (RFC 6455 uses the implied `*LWS` of RFC 2616).
/// A quoted-string value must be a token once unescaped (RFC 6455 §9.1), so it can hold no
/// comma: splitting the list at every comma first leaves an element that holds one part of
/// such a value with an unterminated quote, which is refused here, as the whole value is.
fn extension(element: &[u8]) -> Result<&[u8], &'static str> {
    let mut parser = Parser { rest: element };
    let name = parser.token().ok_or("extension name is not a token")?;
    loop {
        parser.skip_ows();
        match parser.next() {
            None => return Ok(name),
            Some(b';') => {}
            Some(_) => return Err("extension list is malformed"),
        }
        parser.skip_ows();
        parser
            .token()
            .ok_or("extension parameter name is not a token")?;
        parser.skip_ows();
        if parser.peek() == Some(b'=') {
            parser.next();
            parser.skip_ows();
            let value_ok = if parser.peek() == Some(b'"') {
                parser.quoted_token()
            } else {
                parser.token().is_some()
            };
            if !value_ok {
                return Err("extension parameter value is not a token");
            }
        }
    }
}

/// A cursor over the bytes of one list element.
struct Parser<'a> {
    rest: &'a [u8],
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    fn skip_ows(&mut self) {
        let start = self
            .rest
            .iter()
            .position(|&b| b != b' ' && b != b'\t')
            .unwrap_or(self.rest.len());
        self.rest = &self.rest[start..];
    }

    /// A `token`, or `None` when the next byte is not a `tchar`.
    fn token(&mut self) -> Option<&'a [u8]> {
        let end = self
            .rest
            .iter()
            .position(|&b| !is_tchar(b))
            .unwrap_or(self.rest.len());
        let (token, rest) = self.rest.split_at(end);
        self.rest = rest;
        (!token.is_empty()).then_some(token)
    }

    /// A `quoted-string` (RFC 9110 §5.6.4) that unescapes to a `token`: a quote, one or more
    /// `tchar` each possibly escaped with a backslash, a quote. A space, a comma or an
    /// escaped quote or backslash cannot be part of a token, so none is accepted.
    fn quoted_token(&mut self) -> bool {
        if self.next() != Some(b'"') {
            return false;
        }
        let mut empty = true;
        loop {
            match self.next() {
                Some(b'"') => return !empty,
                Some(b'\\') => match self.next() {
                    Some(b) if is_tchar(b) => {}
                    _ => return false,
                },
                Some(b) if is_tchar(b) => {}
                // Unterminated, or a character no token holds.
                _ => return false,
            }
            empty = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tchar_table_matches_rfc_9110() {
        let delimiters = b"\"(),/:;<=>?@[\\]{}";
        for b in 0..=255u8 {
            let expected = b.is_ascii_graphic() && !delimiters.contains(&b);
            assert_eq!(is_tchar(b), expected, "{b:#04x}");
        }
    }

    #[test]
    fn extension_elements() {
        for (element, name) in [
            ("permessage-deflate", Some("permessage-deflate")),
            (
                "permessage-deflate; client_max_window_bits",
                Some("permessage-deflate"),
            ),
            ("x;a=1;b=\"2\"", Some("x")),
            ("x ; a = \"b\\c\" ; d", Some("x")),
            ("x; a=\"\\\"\"", None),
            ("x; a=\"\"", None),
            ("x; a=\"b", None),
            ("x; a=", None),
            ("x;", None),
            ("x;;a", None),
            (";a", None),
            ("x a", None),
            ("x; a b", None),
            ("x; a=b c", None),
            ("x; a=\"b\"c", None),
        ] {
            let got = extension(element.as_bytes()).ok();
            assert_eq!(got, name.map(str::as_bytes), "{element:?}");
        }
    }
}
