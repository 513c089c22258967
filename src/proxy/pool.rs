//! The backends: their addresses, checked once at build time, and connecting to one of them
//! with round-robin and failover (nginx's `upstream` with `proxy_next_upstream error
//! timeout`).

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::error::BuildError;
use crate::splice::Stream;
use crate::trace;

/// The configured backends.
pub(crate) struct Pool {
    backends: Vec<Backend>,
    next: AtomicUsize,
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
    /// `host:port`, as `TcpStream::connect` takes it (resolved at each connect).
    authority: String,
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

impl Pool {
    /// Checks every address.
    pub(crate) fn new(addrs: &[String]) -> Result<Pool, BuildError> {
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
        })
    }

    /// Round-robin over the backends, trying each once, each attempt bounded by `timeout`.
    ///
    /// # Errors
    ///
    /// The last attempt's error when none accepted (`TimedOut` for a timeout).
    pub(crate) async fn connect(&self, timeout: Duration) -> io::Result<Connected> {
        let backends = &self.backends;
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for i in 0..backends.len() {
            let backend = &backends[(start + i) % backends.len()];
            match backend.connect(timeout).await {
                Ok(connected) => return Ok(connected),
                Err(error) => {
                    trace::warning!(backend = %backend.name, %error, "backend unreachable");
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no backend")))
    }
}

impl Backend {
    /// `host:port`, `ws://host:port` or `http://host:port` (a trailing `/` allowed).
    fn parse(addr: &str) -> Result<Backend, BuildError> {
        let bad = |reason: &'static str| BuildError::Backend {
            addr: addr.to_owned(),
            reason,
        };
        let trimmed = addr.trim();
        let rest = match trimmed.split_once("://") {
            None => trimmed,
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "ws" | "http" => rest,
                "wss" | "https" => return Err(bad(
                    "TLS backends (wss://, https://) are not supported yet: use a plain address",
                )),
                _ => return Err(bad("unknown scheme: use host:port or ws://host:port")),
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
        Ok(Backend {
            name: Arc::from(trimmed),
            authority: authority.to_owned(),
        })
    }

    async fn connect(&self, timeout: Duration) -> io::Result<Connected> {
        let attempt = tokio::time::timeout(timeout, TcpStream::connect(self.authority.as_str()));
        let stream = match attempt.await {
            Ok(result) => result?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        };
        let _ = stream.set_nodelay(true);
        Ok(Connected {
            stream: Stream::Tcp(stream),
            via: self.name.clone(),
        })
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
        for (bad, why) in [
            ("127.0.0.1", "no port"),
            ("wss://example.com:443", "TLS"),
            ("https://example.com:443", "TLS"),
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
        assert!(matches!(Pool::new(&[]), Err(BuildError::NoBackend)));
    }
}
