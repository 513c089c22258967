//! TLS on both sides of the proxy, with rustls (feature `rustls`; [rules](crate::rules) §7).
//!
//! - **Termination**: a [`TlsAcceptor`] holds certificates read from PEM files, chosen by the
//!   name the client asks for (SNI), and reloadable while tunnels run
//!   ([`TlsAcceptor::reload`]). Give it to [`ProxyBuilder::tls`](crate::ProxyBuilder::tls)
//!   and [`Proxy::serve`](crate::Proxy::serve) and [`Proxy::handle`](crate::Proxy::handle)
//!   speak `wss://`; or call [`TlsAcceptor::accept`] yourself in front of hyper or axum.
//! - **TLS backends**: `wss://host:port` and `https://host:port` in
//!   [`ProxyBuilder::backend`](crate::ProxyBuilder::backend). The backend's certificate is
//!   verified against the platform's roots plus the CAs given with
//!   [`ProxyBuilder::backend_ca`](crate::ProxyBuilder::backend_ca), for the host name of the
//!   address (which is also the SNI sent); ALPN offers `http/1.1` only. There is no option to
//!   accept any certificate, and a failed handshake is a 502, never a plaintext retry.
//!
//! The crypto provider is rustls's `ring` one, passed explicitly to every configuration
//! (rustls's default, aws-lc-rs, is not compiled in): it builds on any tokio target with only
//! a C compiler, with no CMake, Go or NASM, and needs no process-wide default provider.
//!
//! A tunnel with a TLS side runs on the buffered path in both directions
//! ([`TunnelPath::Buffered`](crate::TunnelPath::Buffered)): bytes must pass through user
//! space to be encrypted or decrypted, and the plain side is read and written with ordinary
//! `read`/`write` calls through the same buffer. Without kernel TLS (kTLS, not used) `splice`
//! cannot help either side.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::{BuildError, HandshakeError, HeadError, ProxyError, TlsError};
use crate::splice::Stream;
use crate::trace;

/// The ALPN protocol offered by default, on both sides: the only HTTP version with Upgrade.
const HTTP_11: &[u8] = b"http/1.1";

/// The first byte of a TLS record that carries a handshake message (content type 22), as a
/// ClientHello does (RFC 8446 §5.1).
const HANDSHAKE_RECORD: u8 = 0x16;

/// The one crypto provider: ring.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Terminates TLS for clients: certificates from PEM files, chosen by SNI, reloadable.
///
/// Cheap to clone (one `Arc`) and `Send + Sync`: build one and share it, between the threads
/// of a server and with the code that reloads it. A reload ([`reload`](Self::reload)) changes
/// the certificates new handshakes get; established connections are not touched.
///
/// Certificates are chosen by the name the client sends (SNI): the first one whose
/// certificate is valid for that name (wildcards included), else the first one given (also
/// for a client that sends no name, such as one connecting to an IP address), as nginx's
/// default server does. ALPN offers `http/1.1`, or the list given to
/// [`TlsAcceptorBuilder::alpn`]; a client that offers only protocols not on it is refused
/// (RFC 7301 §3.2).
///
/// # Examples
///
/// `wss://` on a bare listener, the certificate reloaded on demand:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("wsrelay-doc-acceptor-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # std::env::set_current_dir(&dir)?;
/// # let key = rcgen::KeyPair::generate()?;
/// # let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?.self_signed(&key)?;
/// # std::fs::write("cert.pem", cert.pem())?;
/// # std::fs::write("key.pem", key.serialize_pem())?;
/// use wsrelay::tls::TlsAcceptor;
/// use wsrelay::Proxy;
///
/// let acceptor = TlsAcceptor::new("cert.pem", "key.pem")?;
/// let proxy = Proxy::builder()
///     .backend("127.0.0.1:9000")
///     .tls(acceptor.clone())
///     .build()?;
/// // Later, after the files were renewed (on SIGHUP, say): new clients get the new
/// // certificate; on an error the old one stays.
/// if let Err(error) = acceptor.reload() {
///     eprintln!("kept the old certificate: {error}");
/// }
/// # drop(proxy);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: Arc<AcceptorInner>,
}

struct AcceptorInner {
    config: Arc<ServerConfig>,
    certificates: Arc<Certificates>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let alpn: Vec<_> = self
            .inner
            .config
            .alpn_protocols
            .iter()
            .map(|p| String::from_utf8_lossy(p))
            .collect();
        f.debug_struct("TlsAcceptor")
            .field("certificates", &self.inner.certificates.files)
            .field("alpn", &alpn)
            .finish()
    }
}

/// Builds a [`TlsAcceptor`]; from [`TlsAcceptor::builder`].
///
/// # Examples
///
/// Two sites on one port, each with its certificate, and ALPN for a server that also speaks
/// HTTP/2:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("wsrelay-doc-builder-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # std::env::set_current_dir(&dir)?;
/// # for name in ["chat.example.com", "api.example.com"] {
/// #     let key = rcgen::KeyPair::generate()?;
/// #     let cert = rcgen::CertificateParams::new(vec![name.to_owned()])?.self_signed(&key)?;
/// #     std::fs::write(format!("{name}.pem"), cert.pem())?;
/// #     std::fs::write(format!("{name}.key"), key.serialize_pem())?;
/// # }
/// use wsrelay::tls::TlsAcceptor;
///
/// let acceptor = TlsAcceptor::builder()
///     // The first is also the default, for clients that ask for no name or another one.
///     .certificate("chat.example.com.pem", "chat.example.com.key")
///     .certificate("api.example.com.pem", "api.example.com.key")
///     .alpn(["h2", "http/1.1"])
///     .build()?;
/// # drop(acceptor);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TlsAcceptorBuilder {
    files: Vec<CertFiles>,
    alpn: Vec<Vec<u8>>,
}

/// One certificate chain and its key, as files.
#[derive(Debug, Clone)]
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl Default for TlsAcceptorBuilder {
    fn default() -> Self {
        TlsAcceptorBuilder {
            files: Vec::new(),
            alpn: vec![HTTP_11.to_vec()],
        }
    }
}

impl TlsAcceptorBuilder {
    /// Adds a certificate: `cert` is a PEM file with the certificate chain (the server's
    /// certificate first, then its intermediates, as nginx's `ssl_certificate`), `key` a PEM
    /// file with its private key in PKCS#8 (`BEGIN PRIVATE KEY`), RSA (`BEGIN RSA PRIVATE
    /// KEY`) or EC (`BEGIN EC PRIVATE KEY`) form, unencrypted. Repeatable: the certificate
    /// for a connection is chosen by SNI, and the first one is the default.
    ///
    /// The files are read by [`build`](Self::build), and again by each
    /// [`TlsAcceptor::reload`].
    pub fn certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.files.push(CertFiles {
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    /// The ALPN protocols offered, in order of preference. Default: `["http/1.1"]`.
    ///
    /// [`Proxy::serve`](crate::Proxy::serve) and [`Proxy::handle`](crate::Proxy::handle)
    /// speak HTTP/1.1: offer `h2` only for a server in front that speaks HTTP/2 too. An empty
    /// list turns ALPN off.
    pub fn alpn<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.alpn = protocols.into_iter().map(|p| p.as_ref().to_vec()).collect();
        self
    }

    /// Reads the files and builds the acceptor.
    ///
    /// # Errors
    ///
    /// [`BuildError::TlsFile`] naming the file that is missing, unreadable or unusable (no
    /// certificate or key in it, a key that does not match its certificate, a key type the
    /// provider cannot sign with); [`BuildError::Tls`] when no certificate was given or an
    /// ALPN protocol name is empty or longer than 255 bytes.
    pub fn build(self) -> Result<TlsAcceptor, BuildError> {
        if self.files.is_empty() {
            return Err(BuildError::Tls {
                reason: "no certificate given",
            });
        }
        if self.alpn.iter().any(|p| p.is_empty() || p.len() > 255) {
            return Err(BuildError::Tls {
                reason: "an ALPN protocol name is 1 to 255 bytes",
            });
        }
        let provider = provider();
        let set = CertSet::load(&self.files, &provider)?;
        let certificates = Arc::new(Certificates {
            files: self.files,
            current: RwLock::new(Arc::new(set)),
        });
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|_| BuildError::Tls {
                reason: "the crypto provider supports no safe protocol version",
            })?
            .with_no_client_auth()
            .with_cert_resolver(certificates.clone());
        config.alpn_protocols = self.alpn;
        Ok(TlsAcceptor {
            inner: Arc::new(AcceptorInner {
                config: Arc::new(config),
                certificates,
                provider,
            }),
        })
    }
}

impl TlsAcceptor {
    /// An acceptor with one certificate (`cert`: the chain, `key`: its private key, both
    /// PEM; see [`TlsAcceptorBuilder::certificate`]) and ALPN `http/1.1`.
    ///
    /// # Errors
    ///
    /// As [`TlsAcceptorBuilder::build`]: [`BuildError::TlsFile`] naming the file that cannot
    /// be used.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, BuildError> {
        Self::builder().certificate(cert, key).build()
    }

    /// A builder: several certificates chosen by SNI, other ALPN protocols.
    pub fn builder() -> TlsAcceptorBuilder {
        TlsAcceptorBuilder::default()
    }

    /// Reads the certificate and key files again and, if every one of them is usable,
    /// serves the new certificates to the handshakes that start from now on. Established
    /// connections and their tunnels are not touched (rule 37).
    ///
    /// # Errors
    ///
    /// [`BuildError::TlsFile`] naming the first file that cannot be used; the acceptor then
    /// keeps serving the certificates it had.
    pub fn reload(&self) -> Result<(), BuildError> {
        let certificates = &self.inner.certificates;
        let set = CertSet::load(&certificates.files, &self.inner.provider)?;
        *certificates
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
        Ok(())
    }

    /// Runs the server side of a TLS handshake on `io`, for a server of your own (hyper,
    /// axum): the stream it returns speaks plaintext.
    ///
    /// This sets no deadline: bound it with `tokio::time::timeout` (a client that connects
    /// and sends nothing otherwise holds the connection forever). [`Proxy::serve`] and
    /// [`Proxy::handle`] do that themselves, and answer plain HTTP with a 400.
    ///
    /// [`Proxy::serve`]: crate::Proxy::serve
    /// [`Proxy::handle`]: crate::Proxy::handle
    ///
    /// # Errors
    ///
    /// Why the handshake failed: the client's alert, a protocol error (as when it sends plain
    /// HTTP), or the connection lost.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(acceptor: wsrelay::tls::TlsAcceptor) -> std::io::Result<()> {
    /// use std::time::Duration;
    ///
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
    /// let (stream, _peer) = listener.accept().await?;
    /// match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
    ///     Ok(Ok(tls)) => {
    ///         let http2 = tls.alpn_protocol() == Some(b"h2");
    ///         // ... serve HTTP on `tls` (hyper-util's `TokioIo::new(tls)`) ...
    ///         # let _ = http2;
    ///     }
    ///     Ok(Err(error)) => eprintln!("TLS handshake failed: {error}"),
    ///     Err(_) => eprintln!("TLS handshake timed out"),
    /// }
    /// # Ok(())
    /// # }
    /// # fn main() { let _ = run; }
    /// ```
    pub async fn accept<IO>(&self, io: IO) -> Result<TlsStream<IO>, TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.inner.config.clone());
        match acceptor.accept(io).await {
            Ok(stream) => Ok(TlsStream { inner: stream }),
            Err(error) => Err(tls_error(error)),
        }
    }

    /// The proxy's own termination ([`Proxy::serve`](crate::Proxy::serve),
    /// [`Proxy::handle`](crate::Proxy::handle)): the TLS handshake within `deadline` (the
    /// client-head deadline, which the head then shares), after a look at the first byte
    /// (a `TcpStream` only) so that plain HTTP is answered at once.
    pub(crate) async fn terminate(
        &self,
        client: Stream,
        deadline: Option<Instant>,
        limit: Option<std::time::Duration>,
    ) -> Result<Stream, Refused> {
        let timed_out = || {
            let error = HandshakeError::ClientHead(HeadError::Timeout(limit.unwrap_or_default()));
            Refused::Error(ProxyError::Client { error, sent: None })
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(self.inner.config.clone());
        let handshake = async {
            match client {
                Stream::Tcp(tcp) => {
                    let mut first = [0u8; 1];
                    match tcp.peek(&mut first).await {
                        Ok(0) => {
                            let error = HandshakeError::ClientHead(HeadError::Eof { received: 0 });
                            return Err(Refused::Error(ProxyError::Client { error, sent: None }));
                        }
                        Ok(_) if first[0] != HANDSHAKE_RECORD => {
                            return Err(Refused::NotTls(Stream::Tcp(tcp)));
                        }
                        Ok(_) => {}
                        Err(error) => return Err(client_tls_error(TlsError::Io(error))),
                    }
                    match acceptor.accept(tcp).await {
                        Ok(tls) => Ok(Stream::Other(Box::new(tls))),
                        Err(error) => Err(client_tls_error(tls_error(error))),
                    }
                }
                // No look ahead on other streams: rustls refuses plaintext at its first
                // bytes, and the connection is closed at once.
                other => match acceptor.accept(other).await {
                    Ok(tls) => Ok(Stream::Other(Box::new(tls))),
                    Err(error) => Err(client_tls_error(tls_error(error))),
                },
            }
        };
        match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, handshake).await {
                Ok(result) => result,
                Err(_) => Err(timed_out()),
            },
            None => handshake.await,
        }
    }
}

/// Why [`TlsAcceptor::terminate`] did not produce a TLS stream.
pub(crate) enum Refused {
    /// The first byte is not a TLS handshake's: the client, to be answered in plaintext.
    NotTls(Stream),
    /// Nothing to answer: the error, with nothing sent.
    Error(ProxyError),
}

fn client_tls_error(error: TlsError) -> Refused {
    trace::debug!(%error, "client TLS handshake failed");
    Refused::Error(ProxyError::ClientTls { error, sent: None })
}

/// The certificates of an acceptor: the files, and what was last read from them.
struct Certificates {
    files: Vec<CertFiles>,
    /// Swapped whole by a reload. A read lock per handshake costs an uncontended atomic
    /// operation or two, nothing next to the handshake's signature; a reload holds the
    /// write lock only for the swap, never while reading files.
    current: RwLock<Arc<CertSet>>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        set.choose(hello.server_name())
    }
}

/// The certificates read from the files, in the order given.
struct CertSet {
    keys: Vec<Arc<CertifiedKey>>,
}

impl CertSet {
    fn load(files: &[CertFiles], provider: &CryptoProvider) -> Result<CertSet, BuildError> {
        let keys = files
            .iter()
            .map(|files| load_certified_key(files, provider).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(CertSet { keys })
    }

    /// The first certificate valid for `sni`, else the first one.
    fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let (Some(name), true) = (sni, self.keys.len() > 1) {
            if let Ok(name) = ServerName::try_from(name) {
                let found = self.keys.iter().find(|key| {
                    key.end_entity_cert()
                        .ok()
                        .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                        .is_some_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
                });
                if let Some(key) = found {
                    return Some(key.clone());
                }
            }
        }
        self.keys.first().cloned()
    }
}

/// Reads `path` whole, naming it in the error.
fn read_file(path: &Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|error| file_error(path, format!("cannot read: {error}")))
}

fn file_error(path: &Path, reason: impl Into<String>) -> BuildError {
    BuildError::TlsFile {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Every certificate in a PEM file, in order; at least one.
fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, BuildError> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, format!("not a PEM certificate file: {error}")))?;
    if certs.is_empty() {
        return Err(file_error(
            path,
            "no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----`)",
        ));
    }
    Ok(certs)
}

fn load_certified_key(
    files: &CertFiles,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, BuildError> {
    let chain = load_certificates(&files.cert)?;
    if let Err(error) = webpki::EndEntityCert::try_from(&chain[0]) {
        return Err(file_error(
            &files.cert,
            format!("the first certificate cannot be parsed: {error}"),
        ));
    }
    let pem = read_file(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|error| {
        let reason = match error {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no private key in it (expected PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or \
                 `EC PRIVATE KEY`, unencrypted)"
                    .to_owned()
            }
            other => format!("not a PEM key file: {other}"),
        };
        file_error(&files.key, reason)
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| file_error(&files.key, format!("unusable private key: {error}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(_) => Err(file_error(
            &files.key,
            format!(
                "this key does not match the certificate in {}",
                files.cert.display()
            ),
        )),
    }
}

/// Maps what tokio-rustls returns (a rustls error inside an `io::Error`) to a [`TlsError`].
pub(crate) fn tls_error(error: io::Error) -> TlsError {
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return TlsError::Io(error);
    };
    match tls {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            TlsError::Certificate(tls.to_string())
        }
        rustls::Error::AlertReceived(_) => TlsError::Alert(tls.to_string()),
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            TlsError::NotTls
        }
        _ => TlsError::Handshake(tls.to_string()),
    }
}

/// A TLS stream from [`TlsAcceptor::accept`]: reads and writes plaintext.
pub struct TlsStream<IO> {
    inner: tokio_rustls::server::TlsStream<IO>,
}

impl<IO> fmt::Debug for TlsStream<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("server_name", &self.server_name())
            .field(
                "alpn_protocol",
                &self.alpn_protocol().map(String::from_utf8_lossy),
            )
            .finish_non_exhaustive()
    }
}

impl<IO> TlsStream<IO> {
    /// The ALPN protocol agreed on (`b"http/1.1"`, `b"h2"`), if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.inner.get_ref().1.alpn_protocol()
    }

    /// The name the client asked for (SNI), if it sent one.
    pub fn server_name(&self) -> Option<&str> {
        self.inner.get_ref().1.server_name()
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &IO {
        self.inner.get_ref().0
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The client side, for `wss://` and `https://` backends: one configuration per proxy.
pub(crate) struct Connector {
    connector: tokio_rustls::TlsConnector,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

impl Connector {
    /// Trusts the platform's roots and every certificate in the `cas` files; offers ALPN
    /// `http/1.1` only.
    ///
    /// # Errors
    ///
    /// [`BuildError::TlsFile`] for a CA file that cannot be used, [`BuildError::Tls`] when no
    /// root at all could be found.
    pub(crate) fn new(cas: &[PathBuf]) -> Result<Connector, BuildError> {
        let mut roots = RootCertStore::empty();
        for path in cas {
            for cert in load_certificates(path)? {
                roots.add(cert).map_err(|error| {
                    file_error(path, format!("not a usable CA certificate: {error}"))
                })?;
            }
        }
        let native = rustls_native_certs::load_native_certs();
        let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
        if !native.errors.is_empty() {
            trace::debug!(errors = ?native.errors, "some platform root certificates could not be loaded");
        }
        if roots.is_empty() {
            return Err(BuildError::Tls {
                reason: "no trusted root for TLS backends: the platform's store is empty or \
                         unreadable (install ca-certificates) and no backend_ca was given",
            });
        }
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|_| BuildError::Tls {
                reason: "the crypto provider supports no safe protocol version",
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![HTTP_11.to_vec()];
        Ok(Connector {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// The TLS handshake with a backend on `tcp`, for `name` (SNI, and the name the
    /// certificate must be valid for).
    pub(crate) fn connect(
        &self,
        name: ServerName<'static>,
        tcp: TcpStream,
    ) -> impl Future<Output = Result<Stream, TlsError>> + Send + 'static {
        let connect = self.connector.connect(name, tcp);
        async move {
            match connect.await {
                Ok(tls) => Ok(Stream::Other(Box::new(tls))),
                Err(error) => Err(tls_error(error)),
            }
        }
    }
}

/// The name a backend's certificate must be valid for: its host, without the brackets of an
/// IPv6 address.
pub(crate) fn server_name(host: &str) -> Option<ServerName<'static>> {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_server_names() {
        for (host, ok) in [
            ("example.com", true),
            ("localhost", true),
            ("127.0.0.1", true),
            ("[::1]", true),
            ("[2001:db8::1]", true),
            ("bad_name!", false),
            ("", false),
        ] {
            assert_eq!(server_name(host).is_some(), ok, "{host}");
        }
    }

    #[test]
    fn a_rustls_error_inside_an_io_error_is_classified() {
        let wrap = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let certificate = tls_error(wrap(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        )));
        assert!(certificate.is_certificate_error(), "{certificate:?}");
        let alert = tls_error(wrap(rustls::Error::AlertReceived(
            rustls::AlertDescription::UnknownCA,
        )));
        assert!(matches!(alert, TlsError::Alert(_)), "{alert:?}");
        let plain = tls_error(wrap(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        )));
        assert!(matches!(plain, TlsError::NotTls), "{plain:?}");
        let eof = tls_error(io::ErrorKind::UnexpectedEof.into());
        assert!(matches!(eof, TlsError::Io(_)), "{eof:?}");
    }
}
