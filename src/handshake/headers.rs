//! Header-level rules: `Connection` tokens, hop-by-hop removal and forwarding headers
//! ([rules](crate::rules) §2, RFC 9110 §7.6.1, RFC 7239).

use std::fmt::Write as _;
use std::net::IpAddr;

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::HeaderMap;

use super::negotiation::is_token;
pub(crate) use crate::wire::list::{has_token, list_items, trim_ows};

/// How a proxy treats a header field, by its (lower-case) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Never forwarded, whatever `Connection` says (RFC 9110 §7.6.1, plus
    /// `Proxy-Connection`, `Keep-Alive`, the proxy authentication pair and
    /// `HTTP2-Settings`, which only means something with the `h2c` upgrade that is never
    /// forwarded).
    HopByHop,
    /// Tells the backend where the request came from (`X-Forwarded-*`, `X-Real-IP`,
    /// `Forwarded`): forged unless the peer is a trusted proxy (rule 11).
    Forwarding,
    /// End-to-end.
    Other,
}

pub(crate) fn kind(name: &str) -> Kind {
    match name {
        "connection"
        | "upgrade"
        | "te"
        | "trailer"
        | "transfer-encoding"
        | "proxy-authorization"
        | "proxy-authenticate"
        | "proxy-connection"
        | "keep-alive"
        | "http2-settings" => Kind::HopByHop,
        "forwarded" | "x-real-ip" => Kind::Forwarding,
        _ if name.starts_with("x-forwarded-") => Kind::Forwarding,
        _ => Kind::Other,
    }
}

/// The header names listed in every `Connection` line of a message: connection options that
/// must be removed along with `Connection` itself (RFC 9110 §7.6.1). An empty or blank first
/// line does not hide the later ones (Go CVE-2021-33197).
///
/// Up to eight tokens are kept inline; more spill to the heap, so a typical
/// `Connection: Upgrade` costs no allocation.
#[derive(Debug)]
pub(crate) struct ConnectionTokens<'a> {
    inline: [&'a [u8]; 8],
    len: usize,
    spill: Vec<&'a [u8]>,
}

impl<'a> ConnectionTokens<'a> {
    pub(crate) fn of(headers: &'a HeaderMap) -> Self {
        let mut tokens = ConnectionTokens {
            inline: [&[]; 8],
            len: 0,
            spill: Vec::new(),
        };
        for item in list_items(headers, &header::CONNECTION) {
            if tokens.len < tokens.inline.len() {
                tokens.inline[tokens.len] = item;
                tokens.len += 1;
            } else {
                tokens.spill.push(item);
            }
        }
        tokens
    }

    fn iter(&self) -> impl Iterator<Item = &&'a [u8]> {
        self.inline[..self.len].iter().chain(self.spill.iter())
    }

    fn contains(&self, token: &[u8]) -> bool {
        let found = |t: &&[u8]| t.eq_ignore_ascii_case(token);
        self.inline[..self.len].iter().any(found) || self.spill.iter().any(found)
    }

    /// Whether the (lower-case) header `name` is listed; tokens may be in any case.
    pub(crate) fn names(&self, name: &str) -> bool {
        self.contains(name.as_bytes())
    }

    /// Whether the `upgrade` connection option is present.
    pub(crate) fn has_upgrade(&self) -> bool {
        self.contains(b"upgrade")
    }

    /// The listed tokens that are valid header names, for removal from a map in place.
    pub(crate) fn header_names(&self) -> impl Iterator<Item = HeaderName> + '_ {
        self.iter().filter_map(|t| HeaderName::from_bytes(t).ok())
    }
}

/// The value of every line of `name` joined with `", "` and followed by `last`: how a proxy
/// appends itself to a list header (`X-Forwarded-For`, `Forwarded`, `Via`).
pub(crate) fn append_to_list(headers: &HeaderMap, name: &HeaderName, last: &[u8]) -> HeaderValue {
    let mut out = BytesMut::with_capacity(64);
    for item in list_items(headers, name) {
        out.put_slice(item);
        out.put_slice(b", ");
    }
    out.put_slice(last);
    // Every byte comes from valid header values or from `last`, itself a valid value.
    HeaderValue::from_maybe_shared(out.freeze()).expect("joined header values stay valid")
}

/// The client's address as `X-Forwarded-For` and `X-Real-IP` carry it: the bare IP, with an
/// IPv4-mapped IPv6 address shown as the IPv4 address it is.
pub(crate) fn ip_value(ip: IpAddr) -> HeaderValue {
    let mut out = BytesMut::with_capacity(48);
    match ip.to_canonical() {
        // The common case, written without the formatting machinery.
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.put_u8(b'.');
                }
                if octet >= 100 {
                    out.put_u8(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.put_u8(b'0' + octet / 10 % 10);
                }
                out.put_u8(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(StrBuf(&mut out), "{v6}");
        }
    }
    HeaderValue::from_maybe_shared(out.freeze()).expect("an IP address is a valid header value")
}

struct StrBuf<'a>(&'a mut BytesMut);

impl std::fmt::Write for StrBuf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

/// An RFC 7239 `Forwarded` element: `for=…;host=…;proto=…`, with an IPv6 node in quotes and
/// brackets and any value that is not a token quoted (RFC 7239 §4, §6).
pub(crate) fn forwarded_element(ip: IpAddr, host: Option<&[u8]>, proto: &str) -> String {
    let mut out = String::with_capacity(64);
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let _ = write!(out, "for={v4}");
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "for=\"[{v6}]\"");
        }
    }
    if let Some(host) = host {
        // Validated authorities are ASCII; anything else is dropped rather than mangled.
        if let Ok(host) = std::str::from_utf8(host) {
            out.push_str(";host=");
            push_token_or_quoted(host, &mut out);
        }
    }
    out.push_str(";proto=");
    out.push_str(proto);
    out
}

fn push_token_or_quoted(value: &str, out: &mut String) {
    if is_token(value.as_bytes()) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(lines: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (n, v) in lines {
            headers.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn list_items_split_trim_and_skip_empty() {
        let h = map(&[
            ("connection", " , "),
            ("connection", "Upgrade ,\tX-A,,x-b "),
        ]);
        let items: Vec<_> = list_items(&h, &header::CONNECTION).collect();
        assert_eq!(items, [&b"Upgrade"[..], b"X-A", b"x-b"]);
    }

    // Rule 10: an empty first Connection line must not hide the later ones (CVE-2021-33197).
    #[test]
    fn connection_tokens_across_lines_after_an_empty_one() {
        let h = map(&[("connection", ""), ("connection", "keep-alive, X-Secret")]);
        let tokens = ConnectionTokens::of(&h);
        assert!(tokens.names("x-secret"));
        assert!(!tokens.has_upgrade());
    }

    #[test]
    fn connection_tokens_spill_past_eight() {
        let value = (0..20)
            .map(|i| format!("x-h{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let h = map(&[("connection", &value)]);
        let tokens = ConnectionTokens::of(&h);
        assert!(tokens.names("x-h0"));
        assert!(tokens.names("x-h19"));
        assert_eq!(tokens.header_names().count(), 20);
    }

    #[test]
    fn kinds() {
        for name in [
            "connection",
            "upgrade",
            "te",
            "trailer",
            "transfer-encoding",
            "proxy-authorization",
            "proxy-authenticate",
            "proxy-connection",
            "keep-alive",
            "http2-settings",
        ] {
            assert_eq!(kind(name), Kind::HopByHop, "{name}");
        }
        for name in [
            "forwarded",
            "x-real-ip",
            "x-forwarded-for",
            "x-forwarded-port",
        ] {
            assert_eq!(kind(name), Kind::Forwarding, "{name}");
        }
        for name in ["cookie", "x-forwarded", "host", "via", "sec-websocket-key"] {
            assert_eq!(kind(name), Kind::Other, "{name}");
        }
    }

    #[test]
    fn forwarded_quotes_ipv6_and_host_with_port() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            forwarded_element(v6, Some(b"example.com:8080"), "https"),
            "for=\"[2001:db8::1]\";host=\"example.com:8080\";proto=https"
        );
        let v4: IpAddr = "192.0.2.60".parse().unwrap();
        assert_eq!(
            forwarded_element(v4, Some(b"example.com"), "http"),
            "for=192.0.2.60;host=example.com;proto=http"
        );
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            forwarded_element(mapped, None, "http"),
            "for=192.0.2.1;proto=http"
        );
    }

    #[test]
    fn ip_values() {
        for (ip, text) in [
            ("0.0.0.0", "0.0.0.0"),
            ("192.0.2.7", "192.0.2.7"),
            ("10.100.9.255", "10.100.9.255"),
            ("::ffff:198.51.100.1", "198.51.100.1"),
            ("2001:db8::1", "2001:db8::1"),
            ("::1", "::1"),
        ] {
            assert_eq!(ip_value(ip.parse().unwrap()), text);
        }
    }

    #[test]
    fn append_to_list_joins_lines() {
        let h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2, 3.3.3.3"),
        ]);
        let v = append_to_list(&h, &HeaderName::from_static("x-forwarded-for"), b"9.9.9.9");
        assert_eq!(v, "1.1.1.1, 2.2.2.2, 3.3.3.3, 9.9.9.9");
    }
}
