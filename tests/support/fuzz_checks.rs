//! Invariants checked on fuzz input, one public function per fuzz target.
//!
//! This file is the harness's `support::fuzz_checks`, through which `tests/fuzz_corpus.rs`
//! runs every file of `tests/corpus/<target>/` on stable Rust, and the fuzz crate's `checks`
//! module (`fuzz/src/lib.rs` includes it by path). Each function panics when an invariant
//! breaks, so a broken invariant is a crash for libFuzzer and a failed test for `cargo test`.
//!
//! Inputs are heads as they arrive on the wire; they are parsed with `wsrelay::wire`'s own
//! readers (over a `&[u8]`, with no deadline), so the fuzzers also exercise the readers.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use tokio::io::{AsyncRead, ReadBuf};
use wsrelay::handshake::{
    derive_accept_key, is_valid_key, Answer, ClientInfo, HostPolicy, Outgoing, RewriteConfig,
    Rewriter,
};
use wsrelay::wire::{
    encode_request_head, encode_response_head, read_request_head, read_response_head, HeadLimits,
};
use wsrelay::HeadError;

/// The head readers' limits under fuzzing: the defaults, without a deadline (no timer exists
/// on the runtime).
fn limits() -> HeadLimits {
    HeadLimits::new().timeout(None)
}

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Runs `future` on a per-thread current-thread runtime without timers or I/O drivers.
fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|cell| {
        let mut slot = cell.borrow_mut();
        let runtime = slot.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a current-thread runtime")
        });
        runtime.block_on(future)
    })
}

/// A reader that hands out `data` in small, varying chunks, to check that a head split
/// across reads parses as it does in one read.
struct Chunked<'a> {
    data: &'a [u8],
    step: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        const SIZES: [usize; 7] = [1, 7, 2, 64, 3, 500, 1];
        let size = SIZES[self.step % SIZES.len()];
        self.step += 1;
        let n = size.min(self.data.len()).min(buf.remaining());
        let (now, later) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = later;
        Poll::Ready(Ok(()))
    }
}

/// Which variant a head error is, for comparing two reads of the same bytes.
fn error_kind(error: &HeadError) -> &'static str {
    match error {
        HeadError::TooLarge { .. } => "too large",
        HeadError::TooManyHeaders { .. } => "too many headers",
        HeadError::Malformed(_) => "malformed",
        HeadError::Timeout(_) => "timeout",
        HeadError::Eof { .. } => "eof",
        HeadError::Io(_) => "io",
        _ => "other",
    }
}

fn request_parts(request: &Request<()>) -> (Method, String, Version, HeaderMap) {
    (
        request.method().clone(),
        request.uri().to_string(),
        request.version(),
        request.headers().clone(),
    )
}

/// `read_request_head`: bytes read past the head are exactly the input's next bytes; no more
/// than the size limit is consumed; a head read in small chunks is the head read at once;
/// an accepted head re-encodes to a head that reads back the same.
pub fn read_request_head_target(data: &[u8]) {
    let limits = limits();
    let mut io = data;
    let whole = block_on(read_request_head(&mut io, &limits));
    let consumed = data.len() - io.len();
    assert!(
        consumed <= limits.get_max_head_size(),
        "consumed {consumed} bytes, over the head size limit"
    );
    let mut chunked = Chunked { data, step: 0 };
    let split = block_on(read_request_head(&mut chunked, &limits));
    match (&whole, &split) {
        (Ok((request, rest)), Ok((again, rest_again))) => {
            assert!(
                data[..consumed].ends_with(rest),
                "leftover is not what followed the head"
            );
            let head_len = consumed - rest.len();
            assert!(data[head_len..].starts_with(rest_again));
            assert_eq!(
                request_parts(request),
                request_parts(again),
                "a head split across reads parsed differently"
            );
            let mut out = BytesMut::new();
            encode_request_head(request, &mut out);
            let mut reread: &[u8] = &out;
            let (back, rest) = block_on(read_request_head(
                &mut reread,
                &limits.max_head_size(wsrelay::wire::MAX_HEAD_SIZE),
            ))
            .unwrap_or_else(|e| panic!("an accepted head re-encodes unreadably: {e}: {out:?}"));
            assert!(rest.is_empty());
            assert_eq!(back.method(), request.method());
            // Encoded in origin form: a path-less target (`?q` of `http://h?q`) gains its `/`.
            let expected = match request.uri().path_and_query().map(|p| p.as_str()) {
                None => "/".to_owned(),
                Some(t) if t.starts_with('/') => t.to_owned(),
                Some(t) => format!("/{t}"),
            };
            assert_eq!(
                back.uri().path_and_query().map(|p| p.as_str()),
                Some(expected.as_str()),
                "request-target changed by a round trip"
            );
            assert_eq!(
                back.headers(),
                request.headers(),
                "headers changed by a round trip"
            );
        }
        // Both refused. The kind may differ: bytes that arrive together let httparse see a
        // bad start line at once (`Malformed`), while the same bytes in small reads may not
        // complete a head before the end of input (`Eof`).
        (Err(a), Err(b)) => assert!(
            error_kind(a) == error_kind(b) || [a, b].iter().any(|e| error_kind(e) == "eof"),
            "whole read: {a:?}, chunked read: {b:?}"
        ),
        (a, b) => panic!(
            "whole and chunked reads disagree: {:?} vs {:?}",
            a.as_ref().map(|_| ()),
            b.as_ref().map(|_| ())
        ),
    }
}

/// `read_response_head`: as [`read_request_head_target`], and the head returned is never an
/// interim (`1xx` other than `101`) response.
pub fn read_response_head_target(data: &[u8]) {
    let limits = limits();
    let mut io = data;
    let whole = block_on(read_response_head(&mut io, &limits));
    let consumed = data.len() - io.len();
    let mut chunked = Chunked { data, step: 0 };
    let split = block_on(read_response_head(&mut chunked, &limits));
    match (&whole, &split) {
        (Ok((response, rest)), Ok((again, _))) => {
            let status = response.status();
            assert!(
                !status.is_informational() || status == StatusCode::SWITCHING_PROTOCOLS,
                "interim response {status} returned as final"
            );
            assert!(
                data[..consumed].ends_with(rest),
                "leftover is not what followed the head"
            );
            assert_eq!(again.status(), status);
            assert_eq!(again.version(), response.version());
            assert_eq!(again.headers(), response.headers());
            let mut out = BytesMut::new();
            encode_response_head(response, &mut out);
            let mut reread: &[u8] = &out;
            let (back, rest) = block_on(read_response_head(
                &mut reread,
                &limits.max_head_size(wsrelay::wire::MAX_HEAD_SIZE),
            ))
            .unwrap_or_else(|e| panic!("an accepted head re-encodes unreadably: {e}: {out:?}"));
            assert!(rest.is_empty());
            assert_eq!(back.status(), status);
            assert_eq!(
                back.headers(),
                response.headers(),
                "headers changed by a round trip"
            );
        }
        // Both refused. The kind may differ: bytes that arrive together let httparse see a
        // bad start line at once (`Malformed`), while the same bytes in small reads may not
        // complete a head before the end of input (`Eof`).
        (Err(a), Err(b)) => assert!(
            error_kind(a) == error_kind(b) || [a, b].iter().any(|e| error_kind(e) == "eof"),
            "whole read: {a:?}, chunked read: {b:?}"
        ),
        (a, b) => panic!(
            "whole and chunked reads disagree: {:?} vs {:?}",
            a.as_ref().map(|_| ()),
            b.as_ref().map(|_| ())
        ),
    }
}

/// The comma-separated elements of every line of `name`, trimmed, empty ones skipped.
fn items<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(trim)
        .filter(|i| !i.is_empty())
        .collect()
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a [u8]> {
    headers.get_all(name).iter().map(|v| v.as_bytes()).collect()
}

/// Hop-by-hop names never forwarded (RFC 9110 §7.6.1, rules 10 and 14 in `wsrelay::rules`). Other
/// `Proxy-*` names are not hop-by-hop by any RFC and are forwarded like any header.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "upgrade"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "http2-settings"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
    )
}

/// Forwarding headers, the proxy's to set (rule 11, see `wsrelay::rules`).
fn is_forwarding(name: &str) -> bool {
    name == "forwarded" || name == "x-real-ip" || name.starts_with("x-forwarded-")
}

/// Whether a path holds a `.` or `..` segment, literally or percent-encoded.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

/// A rewriter configuration and client, decoded from the first bytes of a fuzz input.
struct Setup {
    config: RewriteConfig,
    client: ClientInfo,
    /// The replacement for the stripped prefix, when a prefix is configured.
    replacement: Option<String>,
    x_forwarded_for: bool,
    x_real_ip: bool,
    forwarded: bool,
    via: Option<&'static str>,
}

const VIA: &str = "1.1 wsrelay";
const SET_HOST: &str = "backend.internal:9000";
const EXTRA_PROTOCOL: &str = "x-tunnel";

/// The characters of `line` that may stand in a path (RFC 3986 `pchar` and `/`): the
/// configuration is the operator's, not the client's, and a `?` or `#` in a prefix makes no
/// sense (`replace_prefix` does not validate it; see the repository's `fuzz/README.md`).
fn path_config(line: &[u8]) -> String {
    line.iter()
        .filter(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%/".contains(b))
        .map(|&b| char::from(b))
        .collect()
}

/// Takes bytes up to the next `\n` (or the end).
fn line<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    let end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (line, rest) = data.split_at(end);
    *data = rest.get(1..).unwrap_or_default();
    line
}

/// The input format of the `rewrite` target: two flag bytes, then an optional prefix line
/// (and replacement line), an optional line of space-separated origins, then the request head.
///
/// Flags 0: 1 trust forwarded, 2 TLS, 4 `Forwarded` on, 8 `Host` set to the backend's,
/// 16 prefix line present, 32 origins line present, 64 no `Via`, 128 replacement line present.
/// Flags 1: 1 IPv6 peer, 2 also accept the `x-tunnel` upgrade, 4 `X-Forwarded-For` off,
/// 8 `X-Real-IP` off.
fn setup(data: &mut &[u8]) -> Option<Setup> {
    let (&f0, &f1) = (data.first()?, data.get(1)?);
    *data = &data[2..];
    let x_forwarded_for = f1 & 4 == 0;
    let x_real_ip = f1 & 8 == 0;
    let forwarded = f0 & 4 != 0;
    let via = if f0 & 64 != 0 { None } else { Some(VIA) };
    let mut config = RewriteConfig::new()
        .trust_forwarded(f0 & 1 != 0)
        .forwarded(forwarded)
        .x_forwarded_for(x_forwarded_for)
        .x_real_ip(x_real_ip)
        .via(via.map(HeaderValue::from_static));
    if f0 & 8 != 0 {
        config = config.host(HostPolicy::Set(HeaderValue::from_static(SET_HOST)));
    }
    let mut replacement = None;
    if f0 & 16 != 0 {
        let prefix = path_config(line(data));
        let with = if f0 & 128 != 0 {
            path_config(line(data))
        } else {
            "/".to_owned()
        };
        config = config.replace_prefix(&prefix, &with);
        replacement = Some(if with.starts_with('/') {
            with
        } else {
            format!("/{with}")
        });
    }
    if f0 & 32 != 0 {
        for origin in line(data).split(|&b| b == b' ') {
            config = config.allow_origin(&String::from_utf8_lossy(origin));
        }
    }
    if f1 & 2 != 0 {
        config = config.allow_protocol(EXTRA_PROTOCOL);
    }
    let peer: SocketAddr = if f1 & 1 != 0 {
        "[2001:db8::7]:50000".parse().unwrap()
    } else {
        "192.0.2.7:50000".parse().unwrap()
    };
    let client = ClientInfo::new(peer).tls(f0 & 2 != 0);
    Some(Setup {
        config,
        client,
        replacement,
        x_forwarded_for,
        x_real_ip,
        forwarded,
        via,
    })
}

/// `Rewriter::rewrite` on a request head read from the input, under a configuration taken
/// from the input. When the request is accepted, the request for the backend:
/// - is `GET <origin-form> HTTP/1.1`, with exactly `Connection: Upgrade` and `Upgrade: <the
///   accepted token>`, and no other hop-by-hop header (`Keep-Alive`, `TE`, `Trailer`,
///   `Transfer-Encoding`, `Proxy-*`, `HTTP2-Settings`);
/// - carries no header the client named in `Connection`, except the proxy's own headers
///   with the proxy's own values;
/// - carries forwarding headers only with the proxy's values unless the peer is trusted;
/// - forwards every other client header unchanged, in order, and invents none;
/// - came from a request that passes rules 1–9 of `wsrelay::rules` (method, version, tokens,
///   one valid key, version 13, no body, the origin allow-list, the prefix);
/// - has no dot segment in its path unless the configured replacement has one;
/// - encodes (`Outgoing::to_bytes`) to bytes that read back as the same request, which the
///   rewriter accepts again.
pub fn rewrite_target(data: &[u8]) {
    let mut input = data;
    let Some(setup) = setup(&mut input) else {
        return;
    };
    let mut io = input;
    let Ok((request, _)) = block_on(read_request_head(&mut io, &limits())) else {
        return;
    };
    let rewriter = Rewriter::new(setup.config.clone());
    let Ok(outgoing) = rewriter.rewrite(&request, &setup.client) else {
        return;
    };
    check_rewritten(&setup, &request, &outgoing);
}

fn check_rewritten(setup: &Setup, client: &Request<()>, outgoing: &Outgoing) {
    let sent = client.headers();
    let out = outgoing.request();
    let headers = out.headers();
    let protocol = outgoing.protocol();

    // The client's request was a valid handshake (rules 1–9, see `wsrelay::rules`).
    assert_eq!(client.method(), Method::GET);
    assert_eq!(client.version(), Version::HTTP_11);
    let connection: Vec<String> = items(sent, "connection")
        .into_iter()
        .map(|t| String::from_utf8_lossy(t).to_ascii_lowercase())
        .collect();
    assert!(
        connection.iter().any(|t| t == "upgrade"),
        "no upgrade token"
    );
    let named = |name: &str| connection.iter().any(|t| t == name);
    assert!(
        items(sent, "upgrade").iter().any(|t| {
            let name = t.split(|&b| b == b'/').next().unwrap_or_default();
            trim(name).eq_ignore_ascii_case(protocol.as_bytes())
        }),
        "the client did not offer {protocol}"
    );
    assert!(
        protocol == "websocket" || protocol == EXTRA_PROTOCOL,
        "unexpected protocol {protocol}"
    );
    assert_eq!(values(sent, "host").len(), 1, "not exactly one Host");
    assert!(!named("host"));
    assert!(
        !sent.contains_key("transfer-encoding"),
        "a body was accepted"
    );
    assert!(
        values(sent, "content-length")
            .iter()
            .all(|v| trim(v) == b"0"),
        "a body was accepted"
    );
    if protocol == "websocket" {
        for name in ["sec-websocket-key", "sec-websocket-version"] {
            assert!(!named(name), "{name} named in Connection yet accepted");
            assert_eq!(values(sent, name).len(), 1, "not exactly one {name}");
            assert_eq!(values(headers, name), values(sent, name), "{name} changed");
        }
        assert!(is_valid_key(trim(sent["sec-websocket-key"].as_bytes())));
        assert_eq!(trim(sent["sec-websocket-version"].as_bytes()), b"13");
    }
    let origins = setup.config.get_allowed_origins();
    if !origins.is_empty() {
        let lines = values(sent, "origin");
        assert!(lines.len() <= 1, "several Origin lines accepted");
        if let Some(origin) = lines.first() {
            assert!(
                origins
                    .iter()
                    .any(|o| o.as_bytes().eq_ignore_ascii_case(trim(origin))),
                "origin {:?} accepted, not in {origins:?}",
                String::from_utf8_lossy(origin)
            );
        }
    }

    // The request line (rule 12) and the path (rule 15).
    assert_eq!(out.method(), Method::GET);
    assert_eq!(out.version(), Version::HTTP_11);
    assert!(out.uri().scheme().is_none() && out.uri().authority().is_none());
    let path = out.uri().path();
    assert!(path.starts_with('/'), "path {path:?}");
    let client_path = match client.uri().path() {
        "" => "/",
        p => p,
    };
    assert_eq!(out.uri().query(), client.uri().query(), "query changed");
    match &setup.replacement {
        None => assert_eq!(path, client_path, "path changed without a prefix rule"),
        Some(replacement) => {
            assert!(
                path.starts_with(replacement.trim_end_matches('/')),
                "{path:?} does not start with {replacement:?}"
            );
            if !has_dot_segment(replacement) {
                assert!(
                    !has_dot_segment(path),
                    "rewriting {client_path:?} produced the dot segment path {path:?}"
                );
            }
        }
    }
    assert!(!has_dot_segment(client_path), "dot segment accepted");

    // Hop-by-hop headers (rules 10, 12, 14).
    for name in headers.keys() {
        let name = name.as_str();
        match name {
            "connection" => assert_eq!(values(headers, name), [b"Upgrade"]),
            "upgrade" => assert_eq!(values(headers, name), [protocol.as_bytes()]),
            _ => assert!(!is_hop_by_hop(name), "hop-by-hop {name} forwarded"),
        }
    }
    assert!(headers.contains_key("connection") && headers.contains_key("upgrade"));

    // The proxy's own headers (rule 11): set after stripping, from the proxy's values, unless
    // the peer is trusted and did not name them in Connection.
    let trusted = setup.config.get_trust_forwarded();
    let ip = match setup.client.peer().ip().to_canonical() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => v6.to_string(),
    };
    let proto = if setup.client.is_tls() {
        "https"
    } else {
        "http"
    };
    let effective_host: Vec<u8> = match client.uri().authority() {
        Some(authority) if client.uri().scheme().is_some() => authority.as_str().into(),
        _ => sent["host"].as_bytes().into(),
    };
    let host = match setup.config.get_host() {
        HostPolicy::Set(value) => value.as_bytes().to_vec(),
        _ => effective_host.clone(),
    };
    assert_eq!(values(headers, "host"), [&host[..]], "Host");
    let strict = |name: &str| !trusted || named(name);
    let theirs_or = |name: &str, ours: &[u8]| -> Vec<Vec<u8>> {
        if sent.contains_key(name) {
            values(sent, name).iter().map(|v| v.to_vec()).collect()
        } else {
            vec![ours.to_vec()]
        }
    };
    let got =
        |name: &str| -> Vec<Vec<u8>> { values(headers, name).iter().map(|v| v.to_vec()).collect() };
    let owned = |name: &str, on: bool, ours: &[u8]| {
        let expected = match (on, strict(name)) {
            (true, true) => vec![ours.to_vec()],
            (true, false) => theirs_or(name, ours),
            (false, true) => vec![],
            (false, false) => got_client(sent, name),
        };
        assert_eq!(
            got(name),
            expected,
            "{name} (trusted {trusted}, named {})",
            named(name)
        );
    };
    match (setup.x_forwarded_for, strict("x-forwarded-for")) {
        (true, false) => {
            let value = got("x-forwarded-for");
            assert_eq!(value.len(), 1, "X-Forwarded-For lines");
            let value = &value[0];
            assert!(
                value == ip.as_bytes() || value.ends_with(format!(", {ip}").as_bytes()),
                "X-Forwarded-For {:?} does not end with the peer",
                String::from_utf8_lossy(value)
            );
        }
        (on, _) => owned("x-forwarded-for", on, ip.as_bytes()),
    }
    owned("x-real-ip", setup.x_real_ip, ip.as_bytes());
    owned("x-forwarded-proto", true, proto.as_bytes());
    owned("x-forwarded-host", true, &effective_host);
    if setup.forwarded {
        let value = got("forwarded");
        assert_eq!(value.len(), 1, "Forwarded lines");
        let value = String::from_utf8_lossy(&value[0]).into_owned();
        assert!(
            value.ends_with(&format!(";proto={proto}")),
            "Forwarded {value:?}"
        );
        // The proxy's element comes last, after a trusted peer's: when the client's must not
        // count, the value starts with the proxy's own `for=`.
        let node = if ip.contains(':') {
            format!("for=\"[{ip}]\";")
        } else {
            format!("for={ip};")
        };
        if strict("forwarded") {
            assert!(
                value.starts_with(&node),
                "Forwarded {value:?} is not only the proxy's"
            );
        } else {
            assert!(value.contains(&node), "Forwarded {value:?} lacks the peer");
        }
    } else {
        owned("forwarded", false, b"");
    }
    for name in headers.keys().chain(sent.keys()) {
        let name = name.as_str();
        let proxy_set = matches!(
            name,
            "x-forwarded-for"
                | "x-real-ip"
                | "x-forwarded-proto"
                | "x-forwarded-host"
                | "forwarded"
        );
        if is_forwarding(name) && !proxy_set {
            let expected = if strict(name) {
                vec![]
            } else {
                got_client(sent, name)
            };
            assert_eq!(got(name), expected, "{name}");
        }
    }
    let mut via = if named("via") {
        vec![]
    } else {
        got_client(sent, "via")
    };
    via.extend(setup.via.map(|v| v.as_bytes().to_vec()));
    assert_eq!(got("via"), via, "Via");

    // Everything else end to end, unchanged and in order (rule 13); nothing invented.
    for name in sent.keys() {
        let name = name.as_str();
        if is_hop_by_hop(name) || is_forwarding(name) || name == "host" || name == "via" {
            continue;
        }
        if named(name) {
            assert!(
                !headers.contains_key(name),
                "{name} named in Connection, forwarded"
            );
        } else {
            assert_eq!(
                got(name),
                got_client(sent, name),
                "{name} not forwarded as sent"
            );
        }
    }
    for name in headers.keys() {
        let name = name.as_str();
        assert!(
            sent.contains_key(name)
                || is_forwarding(name)
                || matches!(name, "host" | "via" | "connection" | "upgrade"),
            "{name} invented"
        );
    }

    // The bytes for the backend read back as the same request, which is itself acceptable.
    let bytes: Bytes = outgoing.to_bytes();
    let mut io: &[u8] = &bytes;
    let (back, rest) = block_on(read_request_head(
        &mut io,
        &limits()
            .max_head_size(wsrelay::wire::MAX_HEAD_SIZE)
            .max_headers(wsrelay::wire::MAX_HEADERS),
    ))
    .unwrap_or_else(|e| panic!("Outgoing::to_bytes does not read back: {e}: {bytes:?}"));
    assert!(rest.is_empty());
    assert_eq!(back.method(), out.method());
    assert_eq!(back.uri(), out.uri());
    assert_eq!(back.version(), Version::HTTP_11);
    assert_eq!(back.headers(), out.headers(), "headers changed by to_bytes");
    let again = Rewriter::new(
        RewriteConfig::new()
            .trust_forwarded(true)
            .allow_protocol(EXTRA_PROTOCOL),
    )
    .rewrite(&back, &setup.client);
    if let Err(e) = again {
        panic!("the rewritten request is not a valid handshake: {e:?}: {bytes:?}");
    }
}

fn got_client(sent: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
    values(sent, name).iter().map(|v| v.to_vec()).collect()
}

/// The key of the fixed request whose answers the `check` target judges (RFC 6455 §1.3).
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The subprotocols the fixed request offers.
const OFFERED: [&[u8]; 2] = [b"chat", b"superchat"];

fn fixed_outgoing() -> Outgoing {
    let request = Request::get("/chat")
        .header("host", "example.com")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", KEY)
        .header("sec-websocket-protocol", "chat, superchat")
        .header(
            "sec-websocket-extensions",
            "permessage-deflate; client_max_window_bits",
        )
        .body(())
        .expect("a valid request");
    let client = ClientInfo::new("192.0.2.7:50000".parse().expect("an address"));
    Rewriter::new(RewriteConfig::new())
        .rewrite(&request, &client)
        .expect("the fixed request is a valid handshake")
}

/// Whether `response` is a valid answer to the fixed request, by rules 16–17 of `wsrelay::rules`,
/// decided independently of the crate.
fn is_valid_switch(response: &Response<()>) -> bool {
    let headers = response.headers();
    let upgrade = items(headers, "upgrade");
    let upgrade_ok = upgrade.len() == 1 && {
        let name = upgrade[0].split(|&b| b == b'/').next().unwrap_or_default();
        trim(name).eq_ignore_ascii_case(b"websocket")
    };
    let connection_ok = items(headers, "connection")
        .iter()
        .any(|t| t.eq_ignore_ascii_case(b"upgrade"));
    let accepts = values(headers, "sec-websocket-accept");
    let accept_ok =
        accepts.len() == 1 && trim(accepts[0]) == derive_accept_key(KEY.as_bytes()).as_bytes();
    let protocols = values(headers, "sec-websocket-protocol");
    let protocol_ok = match protocols[..] {
        [] => true,
        [one] => OFFERED.contains(&trim(one)),
        _ => false,
    };
    let extensions_ok = items(headers, "sec-websocket-extensions").iter().all(|e| {
        let name = trim(e.split(|&b| b == b';').next().unwrap_or_default());
        name.eq_ignore_ascii_case(b"permessage-deflate")
    });
    response.status() == StatusCode::SWITCHING_PROTOCOLS
        && response.version() == Version::HTTP_11
        && upgrade_ok
        && connection_ok
        && accept_ok
        && protocol_ok
        && extensions_ok
}

/// `Outgoing::check` on a response head read from the input, for a fixed valid request
/// (key `dGhlIHNhbXBsZSBub25jZQ==`, subprotocols `chat, superchat`, `permessage-deflate`).
/// - `Answer::Switch` exactly when the head is a valid switch: `101`, HTTP/1.1, `Upgrade:
///   websocket`, `Connection: upgrade`, exactly one correct `Sec-WebSocket-Accept`, at most
///   one offered subprotocol and only offered extensions; the response for the client then
///   has exactly `Connection: Upgrade` and `Upgrade: websocket`, no other hop-by-hop header,
///   no `Content-Length`, nothing the backend named in `Connection`, and every other header
///   as the backend sent it.
/// - Any other `101` is an error with status 502.
/// - Any final non-`101` status is `Answer::Refuse` with the same status, `Connection: close`,
///   the backend's framing headers (less `Content-Length` beside `Transfer-Encoding`), and no
///   other hop-by-hop header.
pub fn check_target(data: &[u8]) {
    let mut io = data;
    let Ok((response, _)) = block_on(read_response_head(&mut io, &limits())) else {
        return;
    };
    let outgoing = fixed_outgoing();
    let valid = is_valid_switch(&response);
    let status = response.status();
    let sent = response.headers().clone();
    let named: Vec<String> = items(&sent, "connection")
        .into_iter()
        .map(|t| String::from_utf8_lossy(t).to_ascii_lowercase())
        .collect();
    let named = |name: &str| named.iter().any(|t| t == name);
    match outgoing.check(response) {
        Ok(Answer::Switch(to_client)) => {
            assert!(valid, "switched on an invalid answer: {data:?}");
            assert_eq!(to_client.status(), StatusCode::SWITCHING_PROTOCOLS);
            let headers = to_client.headers();
            for name in headers.keys() {
                let name = name.as_str();
                match name {
                    "connection" => assert_eq!(values(headers, name), [b"Upgrade"]),
                    "upgrade" => assert_eq!(values(headers, name), [b"websocket"]),
                    "content-length" => panic!("Content-Length on a 101"),
                    _ => {
                        assert!(!is_hop_by_hop(name), "hop-by-hop {name} relayed");
                        assert!(!named(name), "{name} named in Connection, relayed");
                    }
                }
            }
            for name in sent.keys() {
                let name = name.as_str();
                if !is_hop_by_hop(name) && !named(name) && name != "content-length" {
                    assert_eq!(
                        values(headers, name),
                        values(&sent, name),
                        "{name} not relayed as sent"
                    );
                }
            }
        }
        Ok(Answer::Refuse(to_client)) => {
            assert_ne!(status, StatusCode::SWITCHING_PROTOCOLS, "a 101 refused");
            assert!(!status.is_informational());
            assert_eq!(to_client.status(), status);
            let headers = to_client.headers();
            assert_eq!(values(headers, "connection"), [b"close"]);
            for name in headers.keys() {
                let name = name.as_str();
                if !matches!(name, "connection" | "transfer-encoding") {
                    assert!(!is_hop_by_hop(name), "hop-by-hop {name} relayed");
                }
            }
            // The backend's framing is kept, except that Transfer-Encoding overrides
            // Content-Length, which must then go (RFC 9112 §6.3 item 3).
            let length = if sent.contains_key("transfer-encoding") {
                vec![]
            } else {
                values(&sent, "content-length")
            };
            assert_eq!(values(headers, "content-length"), length, "content-length");
            assert_eq!(
                values(headers, "transfer-encoding"),
                values(&sent, "transfer-encoding"),
                "transfer-encoding changed"
            );
        }
        Err(e) => {
            assert!(!valid, "a valid switch was refused: {e:?}: {data:?}");
            assert_eq!(
                status,
                StatusCode::SWITCHING_PROTOCOLS,
                "{e:?} for {status}"
            );
            assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        }
    }
}
