//! TLS helpers (feature `rustls`): a throwaway CA made in the test ([`TestCa`]) that issues
//! certificates written as PEM files into a [`TempDir`], a TLS client ([`tls_connect`]) that
//! trusts one CA, a TLS front for any TCP backend ([`TlsFront`], e.g. the echo backend as a
//! `wss://` backend), and a Unix-socket front for one ([`UnixFront`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

use super::within;

/// A directory under the system's temporary directory, removed (with what it holds) when
/// dropped.
#[derive(Debug)]
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("wsrelay-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir { path }
    }

    /// `name` inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the directory; its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, contents).expect("write a test file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A throwaway certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

/// A certificate issued by a [`TestCa`]: its PEM chain and key, written to files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The leaf certificate, DER, to compare with what a client was served.
    pub der: Vec<u8>,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("generate a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes the CA certificate to `name` in `dir`; its path.
    pub fn write(&self, dir: &TempDir, name: &str) -> PathBuf {
        dir.write(name, &self.pem)
    }

    /// A certificate for `names` (DNS names or IP addresses), written to `<file>.pem` and
    /// `<file>.key` in `dir`.
    pub fn issue(&self, dir: &TempDir, file: &str, names: &[&str]) -> Issued {
        let key = KeyPair::generate().expect("generate a key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("certificate params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("wsrelay test {file}"));
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Issued {
            cert: dir.write(&format!("{file}.pem"), cert.pem()),
            key: dir.write(&format!("{file}.key"), key.serialize_pem()),
            der: cert.der().as_ref().to_vec(),
        }
    }

    /// A client configuration that trusts this CA only, offering ALPN `alpn`.
    pub fn client_config(&self, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        let der = CertificateDer::from_pem_slice(self.pem.as_bytes()).expect("a PEM certificate");
        roots.add(der).expect("a valid CA certificate");
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

/// A TLS connection to `addr` for `name` (SNI; an IP address sends none), within
/// [`STEP`](super::STEP).
///
/// # Panics
///
/// If the handshake fails; see [`try_tls_connect`].
pub async fn tls_connect(
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> TlsStream<TcpStream> {
    try_tls_connect(addr, name, config)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with {addr} as {name}: {e}"))
}

/// A TLS connection to `addr` for `name`, or the handshake's error.
pub async fn try_tls_connect(
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = within("connect", TcpStream::connect(addr)).await?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(name.to_owned()).expect("a server name");
    let connector = tokio_rustls::TlsConnector::from(config);
    within("TLS handshake", connector.connect(name, tcp)).await
}

/// The leaf certificate a TLS client was served, DER.
pub fn served_certificate(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server sent a certificate")
        .as_ref()
        .to_vec()
}

/// What a [`TlsFront`] saw of each handshake.
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    /// The SNI name the client sent.
    pub server_name: Option<String>,
    /// The ALPN protocol agreed on.
    pub alpn: Option<Vec<u8>>,
}

/// A TLS server on `127.0.0.1:0` in front of a TCP backend: each connection's TLS is
/// terminated and its plaintext relayed to `inner` (a `wss://` backend made of the echo
/// backend, say). Records every completed handshake; failed ones never reach `inner`.
#[derive(Clone)]
pub struct TlsFront {
    pub addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    failed: Arc<AtomicUsize>,
}

impl TlsFront {
    /// Serves `issued`'s certificate, offering ALPN `h2` and `http/1.1` (so that the ALPN a
    /// client offers decides).
    pub async fn start(issued: &Issued, inner: SocketAddr) -> TlsFront {
        let acceptor = wsrelay::tls::TlsAcceptor::builder()
            .certificate(&issued.cert, &issued.key)
            .alpn(["h2", "http/1.1"])
            .build()
            .expect("the front's certificate");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let front = TlsFront {
            addr: listener.local_addr().expect("local address"),
            handshakes: Arc::default(),
            failed: Arc::default(),
        };
        let state = front.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(Ok(mut tls)) = tokio::time::timeout(
                        std::time::Duration::from_secs(20),
                        acceptor.accept(stream),
                    )
                    .await
                    else {
                        state.failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    state.handshakes.lock().unwrap().push(Handshake {
                        server_name: tls.server_name().map(str::to_owned),
                        alpn: tls.alpn_protocol().map(<[u8]>::to_vec),
                    });
                    let Ok(mut backend) = TcpStream::connect(inner).await else {
                        return;
                    };
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(60),
                        tokio::io::copy_bidirectional(&mut tls, &mut backend),
                    )
                    .await;
                });
            }
        });
        front
    }

    /// The handshakes completed so far.
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }

    /// How many handshakes failed (or timed out).
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }
}

/// A Unix-socket server (at `path`) relaying every connection to a TCP backend.
#[cfg(unix)]
pub struct UnixFront {
    pub path: PathBuf,
}

#[cfg(unix)]
impl UnixFront {
    pub async fn start(path: &Path, inner: SocketAddr) -> UnixFront {
        let listener = tokio::net::UnixListener::bind(path).expect("bind a Unix socket");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut backend) = TcpStream::connect(inner).await else {
                        return;
                    };
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(60),
                        tokio::io::copy_bidirectional(&mut stream, &mut backend),
                    )
                    .await;
                });
            }
        });
        UnixFront {
            path: path.to_owned(),
        }
    }
}
