//! TLS for the `tls` scenario group: a throwaway CA and server certificate made at bench
//! start, the PEM files every TLS-terminating proxy is given, and the one TLS setup that all
//! of them are held to.
//!
//! Key and suite: an ECDSA P-256 certificate (signed by an ECDSA P-256 CA, the leaf alone in
//! the chain file), TLS 1.3 only, `TLS_AES_128_GCM_SHA256`, X25519 key exchange, ALPN
//! `http/1.1`. Every peer is configured to it, and the client offers nothing else, so a peer
//! that ignored its config would fail the handshake rather than pick something cheaper.
//!
//! The client is rustls on the ring crypto provider (the one the library's TLS uses), passed
//! explicitly; resumption is disabled, so every connection is a full handshake.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The server name the certificate is for, sent as SNI.
pub const SERVER_NAME: &str = "localhost";
/// What the table notes say about the setup.
pub const SETUP: &str = "TLS 1.3 only, TLS_AES_128_GCM_SHA256, X25519, an ECDSA P-256 \
                         certificate (SHA-256 signature) from a throwaway CA, ALPN http/1.1";

/// The certificate files, in a temp dir that lives as long as this.
#[derive(Debug)]
pub struct TlsFiles {
    /// The certificate chain (the leaf alone), PEM.
    pub cert: PathBuf,
    /// Its private key, PKCS#8 PEM.
    pub key: PathBuf,
    /// Certificate and key in one file (what HAProxy's `crt` takes).
    pub combined: PathBuf,
    /// The CA the client trusts.
    ca: CertificateDer<'static>,
    _dir: crate::procs::TempDir,
}

/// Makes a CA and a server certificate for `localhost` and 127.0.0.1, both ECDSA P-256,
/// and writes them to a temp dir.
pub fn make_files() -> Result<TlsFiles, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        PKCS_ECDSA_P256_SHA256,
    };
    let err = |e: rcgen::Error| format!("making the test certificates: {e}");
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wsrelay compare bench CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut leaf_params =
        CertificateParams::new(vec![SERVER_NAME.to_string(), "127.0.0.1".to_string()])
            .map_err(err)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, SERVER_NAME);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(err)?;

    let dir = crate::procs::TempDir::new("tls").map_err(|e| e.to_string())?;
    let write = |name: &str, text: &str| -> Result<PathBuf, String> {
        let path = dir.path().join(name);
        fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path)
    };
    let key_pem = leaf_key.serialize_pem();
    let cert = write("cert.pem", &leaf.pem())?;
    let key = write("key.pem", &key_pem)?;
    let combined = write("combined.pem", &format!("{}{key_pem}", leaf.pem()))?;
    write("ca.pem", &ca_cert.pem())?;
    Ok(TlsFiles {
        cert,
        key,
        combined,
        ca: ca_cert.der().clone(),
        _dir: dir,
    })
}

/// ring, restricted to the one suite and key-exchange group of the comparison.
fn provider() -> Arc<CryptoProvider> {
    let mut provider = ring::default_provider();
    provider.cipher_suites = vec![ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    provider.kx_groups = vec![ring::kx_group::X25519];
    Arc::new(provider)
}

/// The bench's TLS client: what to connect with and the name to ask for.
pub struct TlsClient {
    pub connector: TlsConnector,
    pub name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("name", &self.name)
            .finish()
    }
}

/// A client that trusts only the bench's CA, offers only the comparison's suite and group,
/// ALPN `http/1.1`, and never resumes a session. Leaked: it lives as long as the bench, and
/// a `&'static` keeps the endpoints `Copy`.
pub fn client(files: &TlsFiles) -> Result<&'static TlsClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(files.ca.clone())
        .map_err(|e| format!("the bench CA: {e}"))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS client config: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
    Ok(Box::leak(Box::new(TlsClient {
        connector: TlsConnector::from(Arc::new(config)),
        name,
    })))
}

/// The TLS side of the copy_bidirectional relay: the same suite, group, ALPN and files as
/// every other proxy, with rustls's default session handling.
pub fn acceptor(cert: &Path, key: &Path) -> io::Result<TlsAcceptor> {
    let bad = |what: &Path, e: rustls::pki_types::pem::Error| {
        io::Error::other(format!("{}: {e}", what.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(io::Error::other)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
