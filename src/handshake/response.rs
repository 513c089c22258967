//! Checking the backend's answer ([rules](crate::rules) §3) and rewriting it for the client (§4).

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode, Version};

use super::headers::{has_token, kind, list_items, trim_ows, ConnectionTokens, Kind};
use super::{accept, Answer, Outgoing, WEBSOCKET};
use crate::error::HandshakeError;

pub(crate) fn check(
    outgoing: &Outgoing,
    mut response: Response<()>,
) -> Result<Answer, HandshakeError> {
    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        verify_switch(outgoing, &response)?;
        strip(response.headers_mut(), false);
        let headers = response.headers_mut();
        if outgoing.extended_connect {
            // Rule 33: `200`, with what the backend chose and nothing connection-specific.
            headers.remove(header::UPGRADE);
            headers.remove(header::CONNECTION);
            headers.remove(header::SEC_WEBSOCKET_ACCEPT);
            *response.status_mut() = StatusCode::OK;
            *response.version_mut() = Version::HTTP_2;
        } else {
            headers.insert(header::UPGRADE, outgoing.protocol.clone());
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        }
        return Ok(Answer::Switch(response));
    }
    if status.is_informational() {
        // The head reader skips these; a caller that did not gets a 502, never a tunnel.
        return Err(HandshakeError::BadSwitch("unexpected interim response"));
    }
    if outgoing.extended_connect && status.is_success() {
        // Any 2xx answers an extended CONNECT with success (RFC 8441 §5): relayed, the client
        // would believe the WebSocket open.
        return Err(HandshakeError::SuccessWithoutSwitch(status));
    }
    // Rule 18: relayed as an ordinary response, and the connection closes after it (over
    // HTTP/2, the stream ends with it: `Connection` is not allowed there).
    strip(response.headers_mut(), true);
    let headers = response.headers_mut();
    if outgoing.extended_connect {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    } else {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(Answer::Refuse(response))
}

/// Rules 16 and 17.
fn verify_switch(outgoing: &Outgoing, response: &Response<()>) -> Result<(), HandshakeError> {
    if response.version() != Version::HTTP_11 {
        return Err(HandshakeError::BadSwitch("101 must be HTTP/1.1"));
    }
    let headers = response.headers();
    let mut upgrade = list_items(headers, &header::UPGRADE);
    match (upgrade.next(), upgrade.next()) {
        (None, _) => return Err(HandshakeError::BadSwitch("upgrade header missing")),
        (Some(token), None) => {
            let name = token.split(|&b| b == b'/').next().unwrap_or(token);
            if !trim_ows(name).eq_ignore_ascii_case(outgoing.protocol.as_bytes()) {
                return Err(HandshakeError::BadSwitch("upgrade names another protocol"));
            }
        }
        _ => return Err(HandshakeError::BadSwitch("upgrade names several protocols")),
    }
    if !has_token(headers, &header::CONNECTION, "upgrade") {
        return Err(HandshakeError::BadSwitch(
            "connection lacks the upgrade token",
        ));
    }
    if outgoing.protocol != WEBSOCKET {
        return Ok(());
    }

    let sent = outgoing.request.headers();
    let key = sent
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(HandshakeError::BadSwitch("the request carried no key"))?;
    let mut accepts = headers.get_all(header::SEC_WEBSOCKET_ACCEPT).iter();
    let accept = match (accepts.next(), accepts.next()) {
        (Some(accept), None) => accept,
        (None, _) => return Err(HandshakeError::BadSwitch("sec-websocket-accept missing")),
        _ => return Err(HandshakeError::BadSwitch("sec-websocket-accept repeated")),
    };
    if trim_ows(accept.as_bytes()) != accept::accept_bytes(trim_ows(key.as_bytes())) {
        return Err(HandshakeError::BadSwitch(
            "sec-websocket-accept does not match the key",
        ));
    }

    let mut selected = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter();
    match (selected.next(), selected.next()) {
        (None, _) => {}
        (Some(value), None) => {
            let chosen = trim_ows(value.as_bytes());
            if chosen.is_empty() || chosen.contains(&b',') {
                return Err(HandshakeError::BadSwitch(
                    "more than one subprotocol selected",
                ));
            }
            // Subprotocol names are compared exactly (RFC 6455 §4.1 item 6, §11.3.4).
            if !list_items(sent, &header::SEC_WEBSOCKET_PROTOCOL).any(|offer| offer == chosen) {
                return Err(HandshakeError::UnofferedSubprotocol);
            }
        }
        _ => {
            return Err(HandshakeError::BadSwitch(
                "more than one subprotocol selected",
            ))
        }
    }

    for accepted in list_items(headers, &header::SEC_WEBSOCKET_EXTENSIONS) {
        let name = extension_name(accepted);
        if name.is_empty() {
            return Err(HandshakeError::BadSwitch(
                "malformed sec-websocket-extensions",
            ));
        }
        let offered = list_items(sent, &header::SEC_WEBSOCKET_EXTENSIONS)
            .any(|offer| extension_name(offer).eq_ignore_ascii_case(name));
        if !offered {
            return Err(HandshakeError::UnofferedExtension);
        }
    }
    Ok(())
}

/// The extension token of one `Sec-WebSocket-Extensions` element (RFC 6455 §9.1).
fn extension_name(element: &[u8]) -> &[u8] {
    trim_ows(element.split(|&b| b == b';').next().unwrap_or(element))
}

/// Rule 21: remove hop-by-hop headers and those the backend named in `Connection`.
/// `Content-Length` and `Transfer-Encoding` are kept when a body follows (`keep_framing`) and
/// removed on a `101`, after which no body can follow.
fn strip(headers: &mut HeaderMap, keep_framing: bool) {
    let named: Vec<HeaderName> = ConnectionTokens::of(headers)
        .header_names()
        .filter(|name| kind(name.as_str()) != Kind::HopByHop)
        .collect();
    for name in named {
        if !(keep_framing && is_framing(&name)) {
            headers.remove(&name);
        }
    }
    // One pass over the names finds the hop-by-hop ones actually present; hashed removals
    // happen only for those. `Connection` (and on a 101, `Upgrade`) is overwritten by the
    // caller instead.
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            kind(name.as_str()) == Kind::HopByHop
                && *name != header::CONNECTION
                // On a 101 the caller overwrites Upgrade; a refusal keeps its framing.
                && (keep_framing || *name != header::UPGRADE)
                && !(keep_framing && *name == header::TRANSFER_ENCODING)
        })
        .cloned()
        .collect();
    for name in present {
        headers.remove(name);
    }
    // With a body, Transfer-Encoding wins over Content-Length, which a proxy must then
    // remove so that no later hop can frame the message differently (RFC 9112 §6.3 item 3).
    if !keep_framing || headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
}

fn is_framing(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING
}
