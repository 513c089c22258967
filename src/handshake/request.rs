//! Validating the client's request ([rules](crate::rules) §1) and building the backend's (§2).

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, Method, Request, Uri, Version};

use super::headers::{
    append_to_list, forwarded_element, ip_value, kind, list_items, trim_ows, ConnectionTokens, Kind,
};
use super::{accept, negotiation, ClientInfo, HostPolicy, Outgoing, RewriteConfig, WEBSOCKET};
use crate::error::HandshakeError;

const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

pub(crate) fn rewrite<B>(
    config: &RewriteConfig,
    request: &Request<B>,
    client: &ClientInfo,
) -> Result<Outgoing, HandshakeError> {
    // Rule 1: GET over HTTP/1.1, `Upgrade` naming an accepted protocol, `Connection: upgrade`.
    if request.method() != Method::GET {
        return Err(HandshakeError::Method);
    }
    if request.version() != Version::HTTP_11 {
        return Err(HandshakeError::HttpVersion);
    }
    let headers = request.headers();
    let protocol = upgrade_protocol(config, headers)?;
    let tokens = ConnectionTokens::of(headers);
    if !tokens.has_upgrade() {
        return Err(HandshakeError::ConnectionNotUpgrade);
    }

    let (path, target_authority) = target(request.uri())?;
    // Rule 2: exactly one valid Host.
    let host = host(headers, &tokens)?;
    // Rule 5: no body on an upgrade.
    no_body(headers)?;

    let websocket = protocol == WEBSOCKET;
    if websocket {
        // Rule 4, then rule 3.
        let version = single(headers, &tokens, &header::SEC_WEBSOCKET_VERSION)
            .map_err(|_| HandshakeError::VersionHeader("repeated"))?
            .ok_or(HandshakeError::VersionHeader("missing"))?;
        if trim_ows(version.as_bytes()) != b"13" {
            return Err(HandshakeError::UnsupportedVersion);
        }
        let key = single(headers, &tokens, &header::SEC_WEBSOCKET_KEY)
            .map_err(|_| HandshakeError::Key("repeated"))?
            .ok_or(HandshakeError::Key("missing"))?;
        if !accept::is_valid_key(trim_ows(key.as_bytes())) {
            return Err(HandshakeError::Key("not 16 base64-encoded bytes"));
        }
        // Rule 6b: the offers are well-formed, so the backend can trust them. One named in
        // `Connection` is not forwarded (rule 13), so it is not judged either.
        if !tokens.names(header::SEC_WEBSOCKET_PROTOCOL.as_str()) {
            negotiation::check_subprotocols(headers).map_err(HandshakeError::Subprotocol)?;
        }
        if !tokens.names(header::SEC_WEBSOCKET_EXTENSIONS.as_str()) {
            negotiation::check_extensions(headers).map_err(HandshakeError::Extensions)?;
        }
    }
    // Rule 8: the Origin allow-list, checked on what the client sent, whatever Connection says.
    check_origin(config, headers)?;
    // Rule 15: the path.
    let uri = route(config, request.uri(), path)?;

    let effective_host = match target_authority {
        // The target's authority replaces Host, so it gets the same validation.
        Some(authority) if is_authority(authority.as_str().as_bytes()) => {
            HeaderValue::from_str(authority.as_str())
                .map_err(|_| HandshakeError::Target("invalid authority"))?
        }
        Some(_) => return Err(HandshakeError::Target("invalid authority")),
        None => host.clone(),
    };
    let proto = if client.is_tls() { "https" } else { "http" };
    let backend = Backend {
        uri,
        protocol,
        effective_host,
        proto,
        via: config.via.clone(),
        key: None,
    };
    Ok(build(config, headers, &tokens, client, backend, false))
}

/// An HTTP/2 extended CONNECT (RFC 8441), validated by rule 31 and translated by rule 32.
pub(crate) fn rewrite_extended_connect<B>(
    config: &RewriteConfig,
    request: &Request<B>,
    protocol: &str,
    client: &ClientInfo,
    key: [u8; 16],
) -> Result<Outgoing, HandshakeError> {
    // Rule 31: `CONNECT` over HTTP/2 (or HTTP/3, RFC 9220) naming an accepted `:protocol`.
    if request.method() != Method::CONNECT {
        return Err(HandshakeError::Malformed("method must be CONNECT"));
    }
    if request.version() != Version::HTTP_2 && request.version() != Version::HTTP_3 {
        return Err(HandshakeError::Malformed(
            "extended connect requires HTTP/2",
        ));
    }
    if !super::negotiation::is_token(protocol.as_bytes()) {
        return Err(HandshakeError::Malformed(":protocol is not a token"));
    }
    let protocol = config
        .protocols
        .iter()
        .find(|accepted| accepted.eq_ignore_ascii_case(protocol))
        .map(String::as_str)
        .ok_or(HandshakeError::UnsupportedProtocol)?;
    let headers = request.headers();
    // RFC 9113 §8.2.2: connection-specific fields make the request malformed. (The `h2`
    // crate resets such streams itself; another HTTP/2 stack may not.)
    for (name, value) in headers {
        let specific = match name.as_str() {
            "connection" | "upgrade" | "keep-alive" | "proxy-connection" | "transfer-encoding" => {
                true
            }
            "te" => value.as_bytes() != b"trailers",
            _ => false,
        };
        if specific {
            return Err(HandshakeError::Malformed(
                "connection-specific header field",
            ));
        }
    }

    // `:authority`, `:scheme` and `:path` make an absolute-form URI.
    let uri = request.uri();
    let authority = uri
        .authority()
        .ok_or(HandshakeError::Malformed(":authority missing"))?;
    if authority.as_str().contains('@') || !is_authority(authority.as_str().as_bytes()) {
        return Err(HandshakeError::Malformed(":authority is invalid"));
    }
    let authority = HeaderValue::from_str(authority.as_str())
        .map_err(|_| HandshakeError::Malformed(":authority is invalid"))?;
    // RFC 9113 §8.3.1: a `host` naming another authority makes the request malformed.
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) => {}
        (Some(host), None) if host.as_bytes().eq_ignore_ascii_case(authority.as_bytes()) => {}
        _ => return Err(HandshakeError::Malformed("host differs from :authority")),
    }
    // `:scheme` is what the client says it used; it becomes `X-Forwarded-Proto`, so it must
    // be what the proxy knows it used.
    let proto = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => "https",
        Some(s) if s.eq_ignore_ascii_case("http") => "http",
        Some(_) => return Err(HandshakeError::Malformed(":scheme must be http or https")),
        None => return Err(HandshakeError::Malformed(":scheme missing")),
    };
    if (proto == "https") != client.is_tls() {
        return Err(HandshakeError::Malformed(
            ":scheme does not match the connection",
        ));
    }
    let path = match uri.path_and_query() {
        Some(pq) if pq.path().starts_with('/') => pq,
        _ => return Err(HandshakeError::Malformed(":path must start with /")),
    };
    if has_dot_segment(path.path()) {
        return Err(HandshakeError::Target("dot segment in path"));
    }
    // Rule 5: no body.
    no_body(headers)?;
    if protocol == WEBSOCKET {
        // Rule 4; the key is the proxy's own (RFC 8441 §5).
        let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
        let version = match (versions.next(), versions.next()) {
            (Some(version), None) => version,
            (None, _) => return Err(HandshakeError::VersionHeader("missing")),
            _ => return Err(HandshakeError::VersionHeader("repeated")),
        };
        if trim_ows(version.as_bytes()) != b"13" {
            return Err(HandshakeError::UnsupportedVersion);
        }
        if headers.contains_key(header::SEC_WEBSOCKET_KEY) {
            return Err(HandshakeError::Malformed(
                "sec-websocket-key is not used over HTTP/2",
            ));
        }
        // Rule 6b.
        negotiation::check_subprotocols(headers).map_err(HandshakeError::Subprotocol)?;
        negotiation::check_extensions(headers).map_err(HandshakeError::Extensions)?;
    }
    // Rule 8.
    check_origin(config, headers)?;
    // Rule 15.
    let uri = route(config, uri, path)?;

    // Rule 32: the HTTP/1.1 request, with the proxy's own key.
    let via = config.via.as_ref().map(|via| match via.as_bytes() {
        [b'1', b'.', b'1', b' ', rest @ ..] => {
            let mut value = Vec::with_capacity(2 + rest.len());
            value.extend_from_slice(b"2 ");
            value.extend_from_slice(rest);
            HeaderValue::from_bytes(&value).unwrap_or_else(|_| via.clone())
        }
        _ => via.clone(),
    });
    let key = (protocol == WEBSOCKET).then(|| accept::encode_key(&key));
    let backend = Backend {
        uri,
        protocol,
        effective_host: authority,
        proto,
        via,
        key,
    };
    let tokens = ConnectionTokens::of(headers);
    Ok(build(config, headers, &tokens, client, backend, true))
}

/// What the backend request is made of, besides the client's own header fields.
struct Backend<'c> {
    uri: Uri,
    protocol: &'c str,
    /// The authority the client asked for: `Host` under [`HostPolicy::Keep`].
    effective_host: HeaderValue,
    /// `http` or `https`, for `X-Forwarded-Proto` and `Forwarded`.
    proto: &'static str,
    via: Option<HeaderValue>,
    /// The proxy's own `Sec-WebSocket-Key` (extended CONNECT only).
    key: Option<HeaderValue>,
}

/// Rules 10–14: the request for the backend.
fn build(
    config: &RewriteConfig,
    headers: &HeaderMap,
    tokens: &ConnectionTokens<'_>,
    client: &ClientInfo,
    backend: Backend<'_>,
    extended_connect: bool,
) -> Outgoing {
    let Backend {
        uri,
        protocol,
        effective_host,
        proto,
        via,
        key,
    } = backend;
    let mut out = HeaderMap::with_capacity(headers.len() + 8);
    let host_value = match &config.host {
        HostPolicy::Keep => effective_host.clone(),
        HostPolicy::Set(value) => value.clone(),
    };
    out.insert(header::HOST, host_value);

    let trusted = config.trust_forwarded;
    let fwd = config.forwarding;
    // Rules 10, 11, 13, 14: strip first, then add the proxy's own headers.
    for (name, value) in headers {
        let text = name.as_str();
        let forward = match kind(text) {
            Kind::HopByHop => false,
            // Dropped when untrusted; appended to below when trusted and set by us.
            Kind::Forwarding => {
                trusted
                    && !(fwd.x_forwarded_for && name == X_FORWARDED_FOR)
                    && !(fwd.forwarded && name == header::FORWARDED)
            }
            Kind::Other => name != header::HOST,
        };
        if forward && !tokens.names(text) {
            out.append(name.clone(), value.clone());
        }
    }
    if let Some(key) = key {
        out.insert(header::SEC_WEBSOCKET_KEY, key);
    }

    out.insert(header::UPGRADE, protocol_value(protocol));
    out.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));

    let trusted_has =
        |name: &HeaderName| trusted && headers.contains_key(name) && !tokens.names(name.as_str());
    let ip = ip_value(client.peer().ip());
    if fwd.x_forwarded_for {
        let value = if trusted_has(&X_FORWARDED_FOR) {
            append_to_list(headers, &X_FORWARDED_FOR, ip.as_bytes())
        } else {
            ip.clone()
        };
        out.insert(X_FORWARDED_FOR, value);
    }
    if fwd.x_real_ip && !trusted_has(&X_REAL_IP) {
        out.insert(X_REAL_IP, ip);
    }
    if fwd.x_forwarded_proto && !trusted_has(&X_FORWARDED_PROTO) {
        out.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if fwd.x_forwarded_host && !trusted_has(&X_FORWARDED_HOST) {
        out.insert(X_FORWARDED_HOST, effective_host.clone());
    }
    if fwd.forwarded {
        let element = forwarded_element(client.peer().ip(), Some(effective_host.as_bytes()), proto);
        let value = if trusted_has(&header::FORWARDED) {
            append_to_list(headers, &header::FORWARDED, element.as_bytes())
        } else {
            HeaderValue::from_str(&element).expect("a forwarded element is a valid header value")
        };
        out.insert(header::FORWARDED, value);
    }
    if let Some(via) = via {
        out.append(header::VIA, via);
    }

    // Rule 12: always `GET <path> HTTP/1.1`.
    let mut backend = Request::new(());
    *backend.uri_mut() = uri;
    *backend.headers_mut() = out;
    Outgoing {
        request: backend,
        protocol: protocol_value(protocol),
        extended_connect,
    }
}

fn protocol_value(protocol: &str) -> HeaderValue {
    if protocol == WEBSOCKET {
        HeaderValue::from_static(WEBSOCKET)
    } else {
        HeaderValue::from_str(protocol).expect("configured protocol tokens are valid values")
    }
}

/// The accepted protocol the client asks for, by configuration order (`websocket` first).
/// Tokens may carry a version (`name/version`, RFC 9110 §7.8); only the name is compared.
fn upgrade_protocol<'c>(
    config: &'c RewriteConfig,
    headers: &HeaderMap,
) -> Result<&'c str, HandshakeError> {
    let offered = || {
        list_items(headers, &header::UPGRADE)
            .map(|item| trim_ows(item.split(|&b| b == b'/').next().unwrap_or(item)))
    };
    config
        .protocols
        .iter()
        .find(|accepted| offered().any(|name| name.eq_ignore_ascii_case(accepted.as_bytes())))
        .map(String::as_str)
        .ok_or(HandshakeError::NotUpgrade)
}

/// The one line of `name`, treating a header named in `Connection` as absent (rule 13).
/// `Err(())` when there is more than one line.
fn single<'a>(
    headers: &'a HeaderMap,
    tokens: &ConnectionTokens<'_>,
    name: &HeaderName,
) -> Result<Option<&'a HeaderValue>, ()> {
    if tokens.names(name.as_str()) {
        return Ok(None);
    }
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (first, None) => Ok(first),
        _ => Err(()),
    }
}

fn host<'a>(
    headers: &'a HeaderMap,
    tokens: &ConnectionTokens<'_>,
) -> Result<&'a HeaderValue, HandshakeError> {
    let host = single(headers, tokens, &header::HOST)
        .map_err(|_| HandshakeError::Host("repeated"))?
        .ok_or(HandshakeError::Host("missing"))?;
    if is_authority(host.as_bytes()) {
        Ok(host)
    } else if host.is_empty() {
        Err(HandshakeError::Host("empty"))
    } else {
        Err(HandshakeError::Host("invalid"))
    }
}

/// Whether `bytes` is a `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a
/// registered name or IPv4 address, or an IP literal in brackets, and an optional port.
/// No user information.
fn is_authority(bytes: &[u8]) -> bool {
    let (host, port) = if bytes.first() == Some(&b'[') {
        let Some(close) = bytes.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &bytes[1..close];
        let literal_ok = !literal.is_empty()
            && literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !literal_ok {
            return false;
        }
        match &bytes[close + 1..] {
            [] => (&[][..], None),
            [b':', port @ ..] => (&[][..], Some(port)),
            _ => return false,
        }
    } else {
        match bytes.iter().rposition(|&b| b == b':') {
            Some(colon) => (&bytes[..colon], Some(&bytes[colon + 1..])),
            None => (bytes, None),
        }
    };
    let reg_name_ok = host
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b));
    let port_ok = port.map_or(true, |p| p.iter().all(u8::is_ascii_digit));
    let has_host = !host.is_empty() || bytes.first() == Some(&b'[');
    has_host && reg_name_ok && port_ok
}

/// The origin-form path of the request-target, and the authority of an absolute-form one
/// (which replaces `Host`, RFC 9112 §3.2.2).
fn target(uri: &Uri) -> Result<(&PathAndQuery, Option<&Authority>), HandshakeError> {
    let absolute = match uri.scheme_str() {
        None => false,
        Some(s)
            if ["http", "https", "ws", "wss"]
                .iter()
                .any(|k| s.eq_ignore_ascii_case(k)) =>
        {
            true
        }
        Some(_) => return Err(HandshakeError::Target("unsupported scheme")),
    };
    let authority = uri.authority();
    if absolute {
        match authority {
            Some(a) if a.as_str().contains('@') => {
                return Err(HandshakeError::Target("userinfo in target"))
            }
            Some(a) if !a.host().is_empty() => {}
            _ => return Err(HandshakeError::Target("absolute form without a host")),
        }
    } else if authority.is_some() {
        return Err(HandshakeError::Target("authority form"));
    }
    let path = match uri.path_and_query() {
        Some(pq) if pq.path().starts_with('/') => pq,
        Some(pq) if absolute && pq.path().is_empty() => pq,
        _ => return Err(HandshakeError::Target("not origin or absolute form")),
    };
    if has_dot_segment(path.path()) {
        return Err(HandshakeError::Target("dot segment in path"));
    }
    Ok((path, if absolute { authority } else { None }))
}

/// Whether a path holds a `.` or `..` segment, literally or percent-encoded, which a backend
/// might resolve to escape a rewritten prefix (RFC 3986 §5.2.4). Browsers never send them.
///
/// Segments are cut where any common backend cuts them, not only at `/`: also at `\` and at
/// an encoded `%2F` or `%5C` (servers that decode or accept Windows separators before
/// resolving dot segments), and a segment's `;` parameters are ignored (`..;x` is `..` to
/// Tomcat and Jetty, the classic bypass of a reverse proxy's path rules).
fn has_dot_segment(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i <= bytes.len() {
        let separator = match bytes.get(i) {
            None | Some(b'/') | Some(b'\\') => 1,
            Some(b'%')
                if bytes.len() >= i + 3
                    && (bytes[i + 1..i + 3].eq_ignore_ascii_case(b"2f")
                        || bytes[i + 1..i + 3].eq_ignore_ascii_case(b"5c")) =>
            {
                3
            }
            _ => 0,
        };
        if separator == 0 {
            i += 1;
            continue;
        }
        if is_dot_segment(&bytes[start..i]) {
            return true;
        }
        i += separator;
        start = i;
    }
    false
}

/// Whether one segment, up to its first `;`, is `.` or `..`, each dot literal or `%2E`.
fn is_dot_segment(segment: &[u8]) -> bool {
    let end = segment
        .iter()
        .position(|&b| b == b';')
        .unwrap_or(segment.len());
    let mut rest = &segment[..end];
    let mut dots = 0;
    while !rest.is_empty() && dots < 3 {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"%2e") {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    rest.is_empty() && (dots == 1 || dots == 2)
}

fn no_body(headers: &HeaderMap) -> Result<(), HandshakeError> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(HandshakeError::Body);
    }
    let nonzero = headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .any(|v| trim_ows(v.as_bytes()) != b"0");
    if nonzero {
        return Err(HandshakeError::Body);
    }
    Ok(())
}

fn check_origin(config: &RewriteConfig, headers: &HeaderMap) -> Result<(), HandshakeError> {
    if config.origins.is_empty() {
        return Ok(());
    }
    let mut all = headers.get_all(header::ORIGIN).iter();
    match (all.next(), all.next()) {
        (None, _) => Ok(()),
        (Some(origin), None) => {
            let origin = trim_ows(origin.as_bytes());
            if config
                .origins
                .iter()
                .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin))
            {
                Ok(())
            } else {
                Err(HandshakeError::Origin)
            }
        }
        _ => Err(HandshakeError::Origin),
    }
}

fn route(config: &RewriteConfig, uri: &Uri, pq: &PathAndQuery) -> Result<Uri, HandshakeError> {
    // `path()` is `/` for an absolute-form target without a path, but `as_str()` is then the
    // bare query: the target is always rebuilt from the parts (RFC 9112 §3.2.1).
    let path = if pq.path().is_empty() { "/" } else { pq.path() };
    let Some((prefix, replacement)) = &config.path else {
        if uri.scheme().is_none() && pq.as_str().starts_with('/') {
            return Ok(uri.clone());
        }
        return origin_form(path, pq.query());
    };
    let rest = if let Some(rest) = path.strip_prefix(prefix.as_str()) {
        rest
    } else if prefix.len() == path.len() + 1 && prefix.ends_with('/') && prefix.starts_with(path) {
        // `/ws` under a `/ws/` location.
        ""
    } else {
        return Err(HandshakeError::NotRouted);
    };
    let joined = if replacement.ends_with('/') && rest.starts_with('/') {
        &rest[1..]
    } else {
        rest
    };
    let separator = if !replacement.ends_with('/') && !joined.is_empty() && !joined.starts_with('/')
    {
        "/"
    } else {
        ""
    };
    let mut new_path = String::with_capacity(replacement.len() + 1 + joined.len());
    new_path.push_str(replacement);
    new_path.push_str(separator);
    new_path.push_str(joined);
    // A prefix that does not end at a segment boundary can turn `/ws../x` into `/app/../x`:
    // the rewritten path is checked again.
    if has_dot_segment(&new_path) {
        return Err(HandshakeError::Target("dot segment in rewritten path"));
    }
    origin_form(&new_path, pq.query())
}

/// `path` + `?query` as an origin-form target.
fn origin_form(path: &str, query: Option<&str>) -> Result<Uri, HandshakeError> {
    let mut target = String::with_capacity(path.len() + 1 + query.map_or(0, str::len));
    target.push_str(path);
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    Uri::try_from(target).map_err(|_| HandshakeError::Target("rewritten path is invalid"))
}
