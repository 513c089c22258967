//! The backends: their addresses, checked once at build time, and connecting to one of them
//! with round-robin and failover (nginx's `upstream` with `proxy_next_upstream error
//! timeout`). A backend is plain TCP, TLS over TCP (`wss://`, feature `rustls`) or a Unix
//! socket (`unix:/path`); a pool may mix them.

use std::fmt;
use std::io;
#[cfg(unix)]
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::error::{BuildError, TlsError};
use crate::splice::Stream;
use crate::trace;

/// The configured backends.
pub(crate) struct Pool {
    backends: Vec<Backend>,
    next: AtomicUsize,
    /// For the TLS backends; `None` when there are none.
    #[cfg(feature = "rustls")]
    tls: Option<crate::tls::Connector>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.backends.iter().map(|b| &*b.name))
            .finish()
    }
}

/// One backend.
#[derive(Debug)]
struct Backend {
    /// As configured, for logs and reports.
    name: Arc<str>,
    target: Target,
}

/// Where a backend is and how to talk to it.
#[derive(Debug)]
enum Target {
    /// `host:port`, as `TcpStream::connect` takes it (resolved at each connect).
    Tcp { authority: String },
    /// TLS over TCP to `authority`, for `name` (SNI and certificate verification).
    #[cfg(feature = "rustls")]
    Tls {
        authority: String,
        name: rustls_pki_types::ServerName<'static>,
    },
    /// A Unix domain socket.
    #[cfg(unix)]
    Unix { path: PathBuf },
}

/// A connection to a backend, with where it goes.
#[derive(Debug)]
pub(crate) struct Connected {
    pub(crate) stream: Stream,
    pub(crate) via: Via,
}

/// Which backend a connection went to, as configured, for logs and the
/// [`Report`](crate::Report). A shared name: kept by every open tunnel, so it is small.
pub(crate) type Via = Arc<str>;

/// Why no backend could be used.
#[derive(Debug)]
#[cfg_attr(not(feature = "rustls"), allow(dead_code))]
pub(crate) enum ConnectError {
    /// Connecting failed or timed out (`TimedOut`, for a TLS handshake too).
    Io(io::Error),
    /// The TLS handshake failed.
    Tls(TlsError),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Io(error) => error.fmt(f),
            ConnectError::Tls(error) => error.fmt(f),
        }
    }
}

impl Pool {
    /// Checks every address, and reads the CA files when there are TLS backends.
    #[cfg(feature = "rustls")]
    pub(crate) fn new(addrs: &[String], cas: &[std::path::PathBuf]) -> Result<Pool, BuildError> {
        let mut pool = Self::parse(addrs)?;
        let any_tls = pool
            .backends
            .iter()
            .any(|b| matches!(b.target, Target::Tls { .. }));
        if any_tls || !cas.is_empty() {
            pool.tls = Some(crate::tls::Connector::new(cas)?);
        }
        Ok(pool)
    }

    /// Checks every address.
    #[cfg(not(feature = "rustls"))]
    pub(crate) fn new(addrs: &[String]) -> Result<Pool, BuildError> {
        Self::parse(addrs)
    }

    fn parse(addrs: &[String]) -> Result<Pool, BuildError> {
        if addrs.is_empty() {
            return Err(BuildError::NoBackend);
        }
        let backends = addrs
            .iter()
            .map(|addr| Backend::parse(addr))
            .collect::<Result<_, _>>()?;
        Ok(Pool {
            backends,
            next: AtomicUsize::new(0),
            #[cfg(feature = "rustls")]
            tls: None,
        })
    }

    /// Round-robin over the backends, trying each once, each attempt (connect, `preamble`,
    /// TLS handshake) bounded by `timeout`. `preamble` (a PROXY protocol header, rule 39) is
    /// written first on each connection, before TLS.
    ///
    /// # Errors
    ///
    /// The last attempt's error when none accepted (`TimedOut` for a timeout).
    pub(crate) async fn connect(
        &self,
        timeout: Duration,
        preamble: Option<&[u8]>,
    ) -> Result<Connected, ConnectError> {
        let backends = &self.backends;
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for i in 0..backends.len() {
            let backend = &backends[(start + i) % backends.len()];
            let attempt = tokio::time::timeout(timeout, self.connect_to(backend, preamble)).await;
            let error = match attempt {
                Ok(Ok(connected)) => return Ok(connected),
                Ok(Err(error)) => error,
                Err(_) => {
                    ConnectError::Io(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
                }
            };
            match &error {
                ConnectError::Tls(_error) => {
                    trace::warning!(backend = %backend.name, error = %_error, "backend TLS handshake failed");
                }
                ConnectError::Io(_error) => {
                    trace::warning!(backend = %backend.name, error = %_error, "backend unreachable");
                }
            }
            last = Some(error);
        }
        Err(last.unwrap_or_else(|| ConnectError::Io(io::Error::other("no backend"))))
    }

    async fn connect_to(
        &self,
        backend: &Backend,
        preamble: Option<&[u8]>,
    ) -> Result<Connected, ConnectError> {
        let stream = match &backend.target {
            Target::Tcp { authority } => Stream::Tcp(tcp(authority, preamble).await?),
            #[cfg(feature = "rustls")]
            Target::Tls { authority, name } => {
                let tcp = tcp(authority, preamble).await?;
                let Some(connector) = &self.tls else {
                    return Err(ConnectError::Io(io::Error::other("no TLS configuration")));
                };
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(ConnectError::Tls)?
            }
            #[cfg(unix)]
            Target::Unix { path } => {
                let mut unix = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(ConnectError::Io)?;
                write_preamble(&mut unix, preamble).await?;
                Stream::Other(Box::new(unix))
            }
        };
        Ok(Connected {
            stream,
            via: backend.name.clone(),
        })
    }
}

/// A TCP connection to `authority`, with `TCP_NODELAY` (rule 28), `preamble` written.
async fn tcp(authority: &str, preamble: Option<&[u8]>) -> Result<TcpStream, ConnectError> {
    let mut stream = TcpStream::connect(authority)
        .await
        .map_err(ConnectError::Io)?;
    let _ = stream.set_nodelay(true);
    write_preamble(&mut stream, preamble).await?;
    Ok(stream)
}

/// Writes what goes first on a backend connection, if anything.
async fn write_preamble<S>(stream: &mut S, preamble: Option<&[u8]>) -> Result<(), ConnectError>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    match preamble {
        Some(bytes) => tokio::io::AsyncWriteExt::write_all(stream, bytes)
            .await
            .map_err(ConnectError::Io),
        None => Ok(()),
    }
}

impl Backend {
    /// `host:port`, `ws://host:port`, `http://host:port`, `wss://host:port`,
    /// `https://host:port` (a trailing `/` allowed), or `unix:/path`.
    fn parse(addr: &str) -> Result<Backend, BuildError> {
        let bad = |reason: &'static str| BuildError::Backend {
            addr: addr.to_owned(),
            reason,
        };
        let trimmed = addr.trim();
        let name = Arc::from(trimmed);
        if let Some(path) = trimmed.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("no path: write unix:/path/to/socket"));
            }
            #[cfg(unix)]
            return Ok(Backend {
                name,
                target: Target::Unix { path: path.into() },
            });
            #[cfg(not(unix))]
            return Err(bad("Unix sockets are not available on this platform"));
        }
        let (tls, rest) = match trimmed.split_once("://") {
            None => (false, trimmed),
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "ws" | "http" => (false, rest),
                "wss" | "https" => (true, rest),
                _ => {
                    return Err(bad(
                        "unknown scheme: use host:port, ws://host:port, wss://host:port or \
                         unix:/path",
                    ))
                }
            },
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') {
            return Err(bad(
                "a backend is an address without a path; rewrite paths with RewriteConfig",
            ));
        }
        if authority.contains('@') {
            return Err(bad("user information is not allowed in a backend address"));
        }
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| bad("no port: write host:port"))?;
        let ipv6 = host.starts_with('[') && host.ends_with(']');
        if host.is_empty() || (host.contains(':') && !ipv6) {
            return Err(bad("invalid host: write host:port, or [v6 address]:port"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(bad("invalid port")),
        }
        let authority = authority.to_owned();
        if !tls {
            return Ok(Backend {
                name,
                target: Target::Tcp { authority },
            });
        }
        #[cfg(feature = "rustls")]
        {
            let name_for_tls = crate::tls::server_name(host)
                .ok_or_else(|| bad("the host is not a valid DNS name or IP address for TLS"))?;
            Ok(Backend {
                name,
                target: Target::Tls {
                    authority,
                    name: name_for_tls,
                },
            })
        }
        #[cfg(not(feature = "rustls"))]
        Err(bad(
            "TLS backends (wss://, https://) need the `rustls` feature of wsrelay",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_addresses() {
        for ok in [
            "127.0.0.1:9000",
            "localhost:80",
            "ws://10.0.0.5:9000",
            "ws://10.0.0.5:9000/",
            "http://backend.internal:8080",
            "[::1]:9000",
            "ws://[2001:db8::1]:443",
        ] {
            assert!(Backend::parse(ok).is_ok(), "{ok}");
        }
        #[cfg(feature = "rustls")]
        for ok in [
            "wss://example.com:443",
            "https://example.com:8443/",
            "wss://127.0.0.1:9443",
            "wss://[::1]:9443",
        ] {
            assert!(Backend::parse(ok).is_ok(), "{ok}");
        }
        #[cfg(unix)]
        for ok in ["unix:/run/app.sock", "unix:relative.sock"] {
            assert!(
                matches!(
                    Backend::parse(ok),
                    Ok(Backend {
                        target: Target::Unix { .. },
                        ..
                    })
                ),
                "{ok}"
            );
        }
        #[cfg(not(feature = "rustls"))]
        for bad in ["wss://example.com:443", "https://example.com:443"] {
            match Backend::parse(bad) {
                Err(error) => assert!(error.to_string().contains("`rustls` feature"), "{error}"),
                Ok(_) => panic!("{bad} was accepted without the rustls feature"),
            }
        }
        for (bad, why) in [
            ("127.0.0.1", "no port"),
            ("unix:", "no path"),
            ("wss://example.com", "no port"),
            ("ftp://example.com:21", "scheme"),
            ("ws://example.com:80/chat", "path"),
            ("user@example.com:80", "user"),
            ("::1:9000", "host"),
            (":9000", "host"),
            ("example.com:0", "port"),
            ("example.com:http", "port"),
        ] {
            match Backend::parse(bad) {
                Err(error) => assert!(error.to_string().contains(why), "{bad}: {error}"),
                Ok(_) => panic!("{bad} was accepted"),
            }
        }
    }

    #[test]
    fn an_empty_pool_is_an_error() {
        assert!(matches!(Pool::parse(&[]), Err(BuildError::NoBackend)));
    }
}
