//! HAProxy's PROXY protocol, v1 (text) and v2 (binary), for a proxy behind a trusted L4 load
//! balancer (feature `proxy-protocol`; rules 38 and 39, see [`rules`](crate::rules)).
//!
//! - **In**, with [`ProxyBuilder::proxy_protocol`](crate::ProxyBuilder::proxy_protocol):
//!   [`Proxy::serve`](crate::Proxy::serve) and [`Proxy::handle`](crate::Proxy::handle) read a
//!   header at the start of every connection, before TLS, within the client-head deadline
//!   (one deadline covers the header, the TLS handshake and the request head). Its source
//!   address is the client's from then on: `X-Real-IP`, `X-Forwarded-For` (appended to a
//!   trusted client's own), `Forwarded`, the logs, and [`Report::client_addr`]. A `LOCAL` (v2)
//!   or `UNKNOWN` (v1) header, which balancers' health checks send, means the socket's own
//!   addresses are used. A connection without a complete, valid header in time is closed
//!   with nothing sent ([`ProxyError::ProxyProtocol`]), never proxied.
//! - **Out**, with [`ProxyBuilder::send_proxy_protocol`](crate::ProxyBuilder::send_proxy_protocol):
//!   each backend connection starts with a v2 header whose source is the client's address
//!   and port and whose destination is the address the client connected to (the received
//!   header's, when there was one), written right after the TCP connect: before the TLS
//!   handshake of a `wss://` backend, as HAProxy's `send-proxy-v2` does.
//! - [`read_header`] reads one header from any stream, for your own accept loop (in front of
//!   hyper, say).
//!
//! Reading never takes a byte past the header: a v2 header is read by its length field, and
//! a v1 header never more than the fewest bytes a valid header could still need. What
//! follows (a TLS ClientHello, the HTTP head) stays on the socket, so that TLS can still look
//! at its first byte and the tunnel can still be zero-copy.
//!
//! Headers are parsed and built with the [`ppp`](https://docs.rs/ppp) crate, the most used one
//! for the protocol: strict on both versions (v1 addresses and ports, v2 version, command,
//! family and lengths), no dependency but `thiserror`. This module adds what the protocol
//! leaves to the receiver: reading exactly one header, the limits, and what each command
//! means for the client's address.
//!
//! [`Report::client_addr`]: crate::Report::client_addr
//! [`ProxyError::ProxyProtocol`]: crate::ProxyError::ProxyProtocol

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ppp::v2::{Addresses, Command, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::error::ProxyError;
pub use crate::error::ProxyHeaderError;
use crate::splice::Stream;
use crate::trace;

/// The binary signature that starts a v2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a v2 header: signature, version and command, family and protocol,
/// length.
const V2_FIXED: usize = 16;
/// The most address and TLV bytes accepted after the fixed part of a v2 header: more than
/// balancers send (HAProxy's largest TLVs, a client certificate's details, take a few
/// hundred bytes), and a bound on what a connection may make the proxy hold.
pub(crate) const V2_MAX_PAYLOAD: usize = 4096;
/// What starts a v1 header.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, `\r\n` included (the specification's own bound).
pub(crate) const V1_MAX: usize = 107;
/// The first read: `PROXY UNKNOWN\r\n`, the shortest header of either version (a v2 header
/// has at least 16 bytes).
const FIRST_READ: usize = 15;

/// What a PROXY protocol header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    version: u8,
    addresses: Option<(SocketAddr, SocketAddr)>,
}

impl ProxyHeader {
    /// 1 (text) or 2 (binary).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The client's address as the balancer saw it; `None` when the header carries none: a v2
    /// `LOCAL` header (the balancer's own connection, such as a health check), a v1 `UNKNOWN`
    /// one, or a v2 `PROXY` header for an address family other than IPv4 and IPv6 (where
    /// the socket's own address stands, as the specification allows).
    pub fn source(&self) -> Option<SocketAddr> {
        self.addresses.map(|(source, _)| source)
    }

    /// The address the client connected to, as the balancer saw it; `None` when
    /// [`source`](Self::source) is.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.addresses.map(|(_, destination)| destination)
    }
}

/// Reads one PROXY protocol header, v1 or v2, from the start of `io`, and not a byte more.
///
/// Wrap it in a timeout: it waits as long as `io` does. A header split over several reads
/// is fine.
///
/// # Errors
///
/// [`ProxyHeaderError::Missing`] when the stream does not start with either version's
/// signature, [`ProxyHeaderError::Malformed`] or [`ProxyHeaderError::TooLong`] for a bad
/// header, [`ProxyHeaderError::Eof`] when the stream ends first, [`ProxyHeaderError::Io`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), wsrelay::ProxyHeaderError> {
/// use wsrelay::proxy_protocol::read_header;
///
/// let mut stream: &[u8] = b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\nGET / HTTP/1.1\r\n";
/// let header = read_header(&mut stream).await?;
/// assert_eq!(header.source(), Some("203.0.113.7:51000".parse().unwrap()));
/// assert_eq!(header.destination(), Some("192.0.2.1:443".parse().unwrap()));
/// assert_eq!(stream, b"GET / HTTP/1.1\r\n"); // what follows is left unread
/// # Ok(())
/// # }
/// ```
pub async fn read_header<R>(io: &mut R) -> Result<ProxyHeader, ProxyHeaderError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    // The first bytes go to the stack: a connection that has sent nothing holds no buffer
    // (rule 29).
    let mut first = [0; FIRST_READ];
    let mut filled = 0;
    while filled < FIRST_READ {
        match io.read(&mut first[filled..]).await {
            Ok(0) => return Err(ProxyHeaderError::Eof { received: filled }),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProxyHeaderError::Io(e)),
        }
        // Something else (a client that bypassed the balancer) is refused at once.
        let start = &first[..filled];
        let could_be = |signature: &[u8]| {
            let n = start.len().min(signature.len());
            start[..n] == signature[..n]
        };
        if !could_be(V2_SIGNATURE) && !could_be(V1_PREFIX) {
            return Err(ProxyHeaderError::Missing);
        }
    }
    let mut buf = Vec::with_capacity(V1_MAX);
    buf.extend_from_slice(&first);
    if buf.starts_with(V2_SIGNATURE) {
        read_v2(io, buf).await
    } else if buf.starts_with(V1_PREFIX) {
        read_v1(io, buf).await
    } else {
        Err(ProxyHeaderError::Missing)
    }
}

/// The rest of a v2 header, whose first [`FIRST_READ`] bytes are in `buf`.
async fn read_v2<R>(io: &mut R, mut buf: Vec<u8>) -> Result<ProxyHeader, ProxyHeaderError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let more = V2_FIXED - buf.len();
    fill(io, &mut buf, more).await?;
    let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if length > V2_MAX_PAYLOAD {
        return Err(ProxyHeaderError::TooLong {
            max: V2_FIXED + V2_MAX_PAYLOAD,
        });
    }
    fill(io, &mut buf, length).await?;
    parse_v2(&buf)
}

/// A complete v2 header: exactly its bytes.
fn parse_v2(bytes: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    let header = ppp::v2::Header::try_from(bytes).map_err(malformed)?;
    // Receivers ignore TLVs they do not know, but the list must hold together.
    for tlv in header.tlvs() {
        tlv.map_err(malformed)?;
    }
    let addresses = match header.command {
        // The balancer's own connection (a health check): addresses, if any, are ignored.
        Command::Local => None,
        Command::Proxy => match (header.protocol, header.addresses) {
            (Protocol::Datagram, _) => {
                return Err(ProxyHeaderError::Malformed(
                    "a datagram (UDP) connection announced on a stream listener".to_owned(),
                ))
            }
            (Protocol::Stream, Addresses::IPv4(a)) => Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
            (Protocol::Stream, Addresses::IPv6(a)) => Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
            // An unspecified protocol or family, or a Unix socket: the specification lets
            // the receiver use the connection's own addresses.
            _ => None,
        },
    };
    Ok(ProxyHeader {
        version: 2,
        addresses,
    })
}

/// The rest of a v1 header, whose first [`FIRST_READ`] bytes are in `buf`.
async fn read_v1<R>(io: &mut R, mut buf: Vec<u8>) -> Result<ProxyHeader, ProxyHeaderError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    loop {
        let need = match line_end(&buf) {
            LineEnd::Complete => break,
            LineEnd::Cr => 1,
            LineEnd::Bad => return Err(malformed("a stray CR or LF in the line")),
            LineEnd::None => v1_needs(&buf[V1_PREFIX.len()..]).ok_or_else(|| {
                malformed("not a v1 line (PROXY TCP4|TCP6 and four fields, or PROXY UNKNOWN)")
            })?,
        };
        if buf.len() + need > V1_MAX {
            return Err(ProxyHeaderError::TooLong { max: V1_MAX });
        }
        fill(io, &mut buf, need).await?;
    }
    parse_v1(&buf)
}

/// A complete v1 header: exactly its bytes, `\r\n` included.
fn parse_v1(bytes: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    let header = ppp::v1::Header::try_from(bytes).map_err(malformed)?;
    let addresses = match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        ppp::v1::Addresses::Tcp6(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        ppp::v1::Addresses::Unknown => None,
    };
    Ok(ProxyHeader {
        version: 1,
        addresses,
    })
}

/// Where a v1 line stands.
#[derive(Debug, PartialEq, Eq)]
enum LineEnd {
    /// No CR or LF yet.
    None,
    /// It ends with a CR: the LF must follow.
    Cr,
    /// It ends with its first CR LF.
    Complete,
    /// A CR or LF elsewhere: no valid header.
    Bad,
}

fn line_end(line: &[u8]) -> LineEnd {
    match line.iter().position(|&b| b == b'\r' || b == b'\n') {
        None => LineEnd::None,
        Some(i) if line[i] == b'\n' => LineEnd::Bad,
        Some(i) if i + 1 == line.len() => LineEnd::Cr,
        Some(i) if i + 2 == line.len() && line[i + 1] == b'\n' => LineEnd::Complete,
        Some(_) => LineEnd::Bad,
    }
}

/// The fewest bytes that a valid v1 header starting with `PROXY ` and then `rest` (which
/// holds no CR or LF) still needs, so that reading them never reads past the header; `None`
/// when no valid header starts so.
///
/// `rest` holds at least 9 bytes (the first read), so the protocol is known: `UNKNOWN` (then
/// anything up to `\r\n`), or `TCP4 `/`TCP6 ` and four fields separated by single spaces
/// (two addresses, of at least 7 characters for IPv4 and 2 for IPv6, and two ports of at
/// least 1).
fn v1_needs(rest: &[u8]) -> Option<usize> {
    let (address, fields) = if let Some(fields) = rest.strip_prefix(b"TCP4 ") {
        (7, fields)
    } else if let Some(fields) = rest.strip_prefix(b"TCP6 ") {
        (2, fields)
    } else if rest.starts_with(b"UNKNOWN") {
        return Some(2);
    } else {
        return None;
    };
    let minimums = [address, address, 1, 1];
    let spaces = fields.iter().filter(|&&b| b == b' ').count();
    let current = minimums.get(spaces)?;
    let typed = fields.len() - fields.iter().rposition(|&b| b == b' ').map_or(0, |i| i + 1);
    let later: usize = minimums[spaces + 1..].iter().map(|min| 1 + min).sum();
    Some(current.saturating_sub(typed) + later + 2)
}

fn malformed(error: impl std::fmt::Display) -> ProxyHeaderError {
    ProxyHeaderError::Malformed(error.to_string())
}

/// Reads exactly `more` bytes onto the end of `buf`.
async fn fill<R>(io: &mut R, buf: &mut Vec<u8>, more: usize) -> Result<(), ProxyHeaderError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut filled = buf.len();
    buf.resize(filled + more, 0);
    while filled < buf.len() {
        match io.read(&mut buf[filled..]).await {
            Ok(0) => return Err(ProxyHeaderError::Eof { received: filled }),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProxyHeaderError::Io(e)),
        }
    }
    Ok(())
}

/// The PROXY step of the byte-stream front end (rule 38): with
/// `ProxyBuilder::proxy_protocol`, reads the header from `client` by `deadline` and returns
/// the client's address (the header's source, or `peer` for `LOCAL`/`UNKNOWN`) and the
/// address it connected to (the header's destination, or the socket's own). Without it,
/// `peer` and, if a header is to be sent to backends, the socket's own address.
///
/// # Errors
///
/// [`ProxyError::ProxyProtocol`]: the connection is to be closed with nothing sent.
pub(crate) async fn receive(
    inner: &crate::proxy::Inner,
    client: &mut Stream,
    peer: SocketAddr,
    deadline: Option<Instant>,
    limit: Option<Duration>,
) -> Result<(SocketAddr, Option<SocketAddr>), ProxyError> {
    fn local(client: &Stream) -> Option<SocketAddr> {
        match client {
            Stream::Tcp(tcp) => tcp.local_addr().ok(),
            Stream::Other(_) => None,
        }
    }
    if !inner.proxy_protocol {
        let local = if inner.send_proxy_protocol {
            local(client)
        } else {
            None
        };
        return Ok((peer, local));
    }
    let read = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, read_header(client))
            .await
            .unwrap_or_else(|_| Err(ProxyHeaderError::Timeout(limit.unwrap_or_default()))),
        None => read_header(client).await,
    };
    match read {
        Ok(header) => match header.addresses {
            Some((source, destination)) => Ok((source, Some(destination))),
            None => Ok((peer, local(client))),
        },
        Err(error) => {
            trace::debug!(%peer, %error, "connection closed: no valid PROXY protocol header");
            Err(ProxyError::ProxyProtocol(error))
        }
    }
}

/// The v2 header sent to a backend (rule 39): `PROXY`, TCP, from `source` to `destination`,
/// no TLV. Both addresses are sent as IPv4 when both are (or are IPv4-mapped IPv6 addresses),
/// else as IPv6 (IPv4 ones mapped). An unknown destination (a stream that is not a TCP
/// socket) is sent as the unspecified address, port 0.
///
/// # Errors
///
/// None in practice: ppp's builder fails only past 64 KiB.
pub(crate) fn encode_v2(
    source: SocketAddr,
    destination: Option<SocketAddr>,
) -> io::Result<Vec<u8>> {
    let canonical = |addr: SocketAddr| SocketAddr::new(addr.ip().to_canonical(), addr.port());
    let source = canonical(source);
    let destination = match destination {
        Some(destination) => canonical(destination),
        None if source.is_ipv4() => SocketAddr::from(([0, 0, 0, 0], 0)),
        None => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let v6 = |addr: SocketAddr| match addr.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), addr.port()),
        IpAddr::V6(_) => addr,
    };
    let addresses = if source.is_ipv4() == destination.is_ipv4() {
        (source, destination)
    } else {
        (v6(source), v6(destination))
    };
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | Command::Proxy,
        Protocol::Stream,
        addresses,
    )
    .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 header: version-command byte, family-protocol byte, then the payload.
    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.push(command);
        header.push(family);
        header.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        header.extend_from_slice(payload);
        header
    }

    const V4_PAYLOAD: [u8; 12] = [198, 51, 100, 7, 192, 0, 2, 1, 0xc3, 0x50, 0x01, 0xbb];

    fn v6_payload() -> Vec<u8> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        payload.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        payload.extend_from_slice(&[0xc3, 0x50, 0x01, 0xbb]);
        payload
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Reads a header from `input` split into pieces; the header and what was left.
    async fn read_split(pieces: &[&[u8]]) -> (Result<ProxyHeader, ProxyHeaderError>, Vec<u8>) {
        let mut builder = tokio_test::io::Builder::new();
        for piece in pieces {
            builder.read(piece);
        }
        let mut io = builder.build();
        let result = read_header(&mut io).await;
        let mut rest = Vec::new();
        if result.is_ok() {
            let _ = io.read_to_end(&mut rest).await;
        }
        (result, rest)
    }

    async fn read_all(input: &[u8]) -> (Result<ProxyHeader, ProxyHeaderError>, Vec<u8>) {
        let mut io = input;
        let result = read_header(&mut io).await;
        (result, io.to_vec())
    }

    fn both(source: &str, destination: &str) -> Option<(SocketAddr, SocketAddr)> {
        Some((addr(source), addr(destination)))
    }

    // Rule 38 (see `wsrelay::rules`): what each valid header means for the client's address.
    #[tokio::test]
    async fn valid_headers() {
        let mut tlvs = V4_PAYLOAD.to_vec();
        tlvs.extend_from_slice(&[0x01, 0, 8]); // ALPN
        tlvs.extend_from_slice(b"http/1.1");
        tlvs.extend_from_slice(&[0x04, 0, 3, 0, 0, 0]); // NOOP
        tlvs.extend_from_slice(&[0xe0, 0, 2, 0xab, 0xcd]); // a custom type, ignored
        type Case = (Vec<u8>, u8, Option<(SocketAddr, SocketAddr)>);
        let cases: Vec<Case> = vec![
            // v1, HAProxy spec §2.1
            (
                b"PROXY TCP4 198.51.100.7 192.0.2.1 50000 443\r\n".to_vec(),
                1,
                both("198.51.100.7:50000", "192.0.2.1:443"),
            ),
            (
                b"PROXY TCP6 2001:db8::7 2001:db8::1 50000 443\r\n".to_vec(),
                1,
                both("[2001:db8::7]:50000", "[2001:db8::1]:443"),
            ),
            (
                b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n".to_vec(),
                1,
                both("0.0.0.0:0", "0.0.0.0:0"),
            ),
            // UNKNOWN: the socket's address (§2.1); what follows it on the line is ignored.
            (b"PROXY UNKNOWN\r\n".to_vec(), 1, None),
            (
                b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n".to_vec(),
                1,
                None,
            ),
            // v2, §2.2: PROXY over TCP/IPv4 and TCP/IPv6.
            (
                v2(0x21, 0x11, &V4_PAYLOAD),
                2,
                both("198.51.100.7:50000", "192.0.2.1:443"),
            ),
            (
                v2(0x21, 0x21, &v6_payload()),
                2,
                both("[2001:db8::7]:50000", "[2001:db8::1]:443"),
            ),
            // TLVs are skipped.
            (
                v2(0x21, 0x11, &tlvs),
                2,
                both("198.51.100.7:50000", "192.0.2.1:443"),
            ),
            // LOCAL (a health check): the socket's address, with or without addresses.
            (v2(0x20, 0x00, &[]), 2, None),
            (v2(0x20, 0x11, &V4_PAYLOAD), 2, None),
            // PROXY with an unspecified family or protocol, or a Unix socket: the socket's.
            (v2(0x21, 0x00, &[]), 2, None),
            (v2(0x21, 0x10, &V4_PAYLOAD), 2, None),
            (v2(0x21, 0x31, &[0; 216]), 2, None),
        ];
        for (header, version, addresses) in cases {
            let mut input = header.clone();
            input.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let (result, rest) = read_all(&input).await;
            let got = result.unwrap_or_else(|e| panic!("{header:?}: {e}"));
            assert_eq!(got.version(), version, "{header:?}");
            assert_eq!(got.addresses, addresses, "{header:?}");
            assert_eq!(got.source(), addresses.map(|a| a.0));
            assert_eq!(got.destination(), addresses.map(|a| a.1));
            assert_eq!(
                rest, b"GET / HTTP/1.1\r\n",
                "{header:?}: read past the header"
            );
        }
    }

    // Rule 38: a connection whose header is bad is closed.
    #[tokio::test]
    async fn invalid_headers() {
        let mut bad_tlv = V4_PAYLOAD.to_vec();
        bad_tlv.extend_from_slice(&[0x01, 0, 9, b'h']); // longer than what is left
        let cases: Vec<(Vec<u8>, &str)> = vec![
            // Not a PROXY header at all: plain HTTP, a TLS ClientHello.
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "not a PROXY"),
            (
                vec![0x16, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3, 0, 0, 0, 0, 0],
                "not a PROXY",
            ),
            (
                b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                "not a PROXY",
            ),
            // v1, §2.1
            (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(), "malformed"),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n".to_vec(),
                "malformed",
            ),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".to_vec(), "malformed"),
            (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n".to_vec(), "malformed"),
            (
                b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n".to_vec(),
                "malformed",
            ),
            (
                b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n".to_vec(),
                "malformed",
            ),
            (
                b"PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n".to_vec(),
                "malformed",
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n".to_vec(),
                "malformed",
            ),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n".to_vec(), "malformed"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(), "malformed"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX".to_vec(), "malformed"),
            (
                b"PROXY TCP4 1.2.3.4\r\n5.6.7.8 1 2\r\n".to_vec(),
                "malformed",
            ),
            (b"PROXY UNKNOWNISH\r\n".to_vec(), "malformed"),
            (
                [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100], b"\r\n"].concat(),
                "longer than 107",
            ),
            // v2, §2.2
            (v2(0x11, 0x11, &V4_PAYLOAD), "malformed"), // version 1 in binary
            (v2(0x22, 0x11, &V4_PAYLOAD), "malformed"), // command 2
            (v2(0x21, 0x41, &V4_PAYLOAD), "malformed"), // family 4
            (v2(0x21, 0x13, &V4_PAYLOAD), "malformed"), // protocol 3
            (v2(0x21, 0x11, &V4_PAYLOAD[..8]), "malformed"), // too short for IPv4
            (v2(0x21, 0x21, &V4_PAYLOAD), "malformed"), // too short for IPv6
            (v2(0x21, 0x12, &V4_PAYLOAD), "datagram"),  // UDP on a stream listener
            (v2(0x21, 0x11, &bad_tlv), "malformed"),
            (
                v2(0x21, 0x11, &[V4_PAYLOAD.as_slice(), &[0x04, 0]].concat()),
                "malformed",
            ),
            (v2(0x21, 0x11, &[0; V2_MAX_PAYLOAD + 1]), "longer than 4112"),
        ];
        for (input, why) in cases {
            // What a client sends next is there too, as on a real connection.
            let input = [input.as_slice(), b"GET / HTTP/1.1\r\n\r\n"].concat();
            let (result, _) = read_all(&input).await;
            match result {
                Err(error) => assert!(error.to_string().contains(why), "{input:?}: {error}"),
                Ok(header) => panic!("{input:?} was accepted: {header:?}"),
            }
        }
    }

    #[tokio::test]
    async fn something_else_is_refused_from_its_first_byte() {
        for input in [
            &b"G"[..],
            b"GET /\r\n",
            b"PROXX",
            b"\r\n\r\nX",
            b"\x16\x03\x01",
        ] {
            let (result, _) = read_all(input).await;
            assert!(
                matches!(result, Err(ProxyHeaderError::Missing)),
                "{input:?}: {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_header_cut_short_is_an_eof_with_what_arrived() {
        let whole = v2(0x21, 0x11, &V4_PAYLOAD);
        for end in [0, 1, 14, 15, 16, 20, whole.len() - 1] {
            let (result, _) = read_all(&whole[..end]).await;
            match result {
                Err(ProxyHeaderError::Eof { received }) => assert_eq!(received, end),
                other => panic!("{end} bytes: {other:?}"),
            }
        }
        let line = b"PROXY TCP4 198.51.100.7 192.0.2.1 50000 443\r\n";
        for end in [3, 15, 30, line.len() - 1] {
            let (result, _) = read_all(&line[..end]).await;
            match result {
                Err(ProxyHeaderError::Eof { received }) => assert_eq!(received, end),
                other => panic!("{end} bytes: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_header_split_anywhere_is_read_whole_and_nothing_past_it() {
        let mut inputs = vec![
            b"PROXY TCP4 198.51.100.7 192.0.2.1 50000 443\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 50000 443\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
            v2(0x21, 0x11, &V4_PAYLOAD),
            v2(0x21, 0x21, &v6_payload()),
            v2(0x20, 0x00, &[]),
        ];
        for header in inputs.drain(..) {
            let follows = b"after";
            let input = [header.as_slice(), follows].concat();
            for cut in 1..input.len() {
                // Two pieces, cut anywhere: whatever the reads took past the header would be
                // missing from what is left.
                let (result, rest) = read_split(&[&input[..cut], &input[cut..]]).await;
                assert!(result.is_ok(), "{header:?} cut at {cut}: {result:?}");
                assert_eq!(rest, follows, "{header:?} cut at {cut}");
            }
            // One byte at a time.
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            let (result, rest) = read_split(&bytes).await;
            assert!(result.is_ok(), "{header:?} byte by byte: {result:?}");
            assert_eq!(rest, follows);
        }
    }

    #[test]
    fn the_v1_lower_bound_never_passes_the_end_of_a_valid_header() {
        let headers: [&[u8]; 5] = [
            b"PROXY TCP4 198.51.100.7 192.0.2.1 50000 443\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 2001:db8::7 2001:db8::1 50000 443\r\n",
            b"PROXY TCP6 :: :: 0 0\r\n",
            b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
        ];
        for header in headers {
            let body = &header[..header.len() - 2];
            for end in FIRST_READ..=body.len() {
                let need = v1_needs(&header[V1_PREFIX.len()..end]).expect("a valid start");
                assert!(end + need <= header.len(), "{header:?} at {end}: {need}");
                assert!(need >= 2, "the CR LF is always still needed");
            }
        }
        // The bound makes a typical header a handful of reads, not one per byte.
        let header = b"PROXY TCP4 198.51.100.7 192.0.2.1 50000 443\r\n";
        let (mut at, mut reads) = (FIRST_READ, 1);
        while line_end(&header[..at]) != LineEnd::Complete {
            at += match line_end(&header[..at]) {
                LineEnd::Cr => 1,
                _ => v1_needs(&header[V1_PREFIX.len()..at]).unwrap(),
            };
            reads += 1;
        }
        assert!(reads <= 8, "{reads} reads");
    }

    // Rule 39: the header sent to backends, byte for byte (HAProxy spec §2.2).
    #[test]
    fn the_v2_header_sent_to_backends() {
        let header = encode_v2(addr("198.51.100.7:50000"), Some(addr("192.0.2.1:443"))).unwrap();
        assert_eq!(header, v2(0x21, 0x11, &V4_PAYLOAD));
        let header =
            encode_v2(addr("[2001:db8::7]:50000"), Some(addr("[2001:db8::1]:443"))).unwrap();
        assert_eq!(header, v2(0x21, 0x21, &v6_payload()));
        // IPv4-mapped addresses (a dual-stack listener) go as IPv4.
        let header = encode_v2(
            addr("[::ffff:198.51.100.7]:50000"),
            Some(addr("[::ffff:192.0.2.1]:443")),
        )
        .unwrap();
        assert_eq!(header, v2(0x21, 0x11, &V4_PAYLOAD));
        // Mixed families go as IPv6, the IPv4 one mapped.
        let header =
            encode_v2(addr("198.51.100.7:50000"), Some(addr("[2001:db8::1]:443"))).unwrap();
        let mut payload = Vec::new();
        payload.extend_from_slice(&"::ffff:198.51.100.7".parse::<Ipv6Addr>().unwrap().octets());
        payload.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        payload.extend_from_slice(&[0xc3, 0x50, 0x01, 0xbb]);
        assert_eq!(header, v2(0x21, 0x21, &payload));
        // No known destination: the unspecified address.
        let header = encode_v2(addr("198.51.100.7:50000"), None).unwrap();
        let mut payload = V4_PAYLOAD;
        payload[4..8].copy_from_slice(&[0, 0, 0, 0]);
        payload[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(header, v2(0x21, 0x11, &payload));
        // And what is sent reads back.
        let header = encode_v2(addr("[2001:db8::7]:1"), Some(addr("[2001:db8::1]:2"))).unwrap();
        let parsed = parse_v2(&header).unwrap();
        assert_eq!(parsed.addresses, both("[2001:db8::7]:1", "[2001:db8::1]:2"));
    }
}
