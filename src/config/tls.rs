//! TLS as the config sets it up, with rustls and its ring provider: to backends (ALPN `h2`, the
//! system's roots or a configured CA file) and on the TLS listener (`tls:`: certificate, key,
//! optional client CAs). Files are read at config load, so an unreadable one is a config error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};

/// A client config trusting `ca_file`'s certificates, or the system's roots when none is given,
/// offering `alpn` (backends: `h2`; a JWKS fetch: `http/1.1`).
pub fn client_config(ca_file: Option<&Path>, alpn: &[u8]) -> Result<rustls::ClientConfig, String> {
    let roots = match ca_file {
        Some(path) => roots_from(path)?,
        None => {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            roots
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// The `tls:` section: a second main listener, serving everything the plain one does (gRPC, REST,
/// WebSocket, SOAP) over TLS, ALPN `h2` and `http/1.1` on one port.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerFile {
    /// `host:port` the TLS listener binds. `listen:` (plain text) may run beside it, or be `off`.
    pub listen: String,
    /// PEM file with the certificate chain, the gateway's certificate first. Read again when it
    /// changes: new connections get the new certificate, connections in flight keep theirs.
    pub cert_file: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM file of the CAs client certificates must chain to: mutual TLS. The verified identity
    /// (subject, SANs) reaches the backend in `x-forwarded-client-cert`. Default: no client
    /// certificates asked for.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: `required` (default) refuses a client without a valid certificate;
    /// `optional` lets one without a certificate in (one with an invalid certificate is refused).
    #[serde(default)]
    pub client_cert: ClientCert,
}

/// Whether a client must show a certificate.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientCert {
    #[default]
    Required,
    Optional,
}

/// The TLS listener, typed; its files are read when the listener starts and again when they change.
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    pub client_cert: ClientCert,
}

impl TlsListener {
    /// Checks the section and reads its files once, so that a broken certificate is a config error.
    pub(super) fn from_file(file: TlsListenerFile, resolve: impl Fn(PathBuf) -> PathBuf) -> Result<Self, String> {
        let listen =
            file.listen.parse().map_err(|_| format!("at `tls.listen`: expected host:port, got {:?}", file.listen))?;
        let listener = TlsListener {
            listen,
            cert_file: resolve(file.cert_file),
            key_file: resolve(file.key_file),
            client_ca_file: file.client_ca_file.map(&resolve),
            client_cert: file.client_cert,
        };
        listener.server_config().map_err(|e| format!("at `tls`: {e}"))?;
        Ok(listener)
    }

    /// The files that make up the listener's TLS settings: what to watch.
    pub fn files(&self) -> Vec<PathBuf> {
        [Some(&self.cert_file), Some(&self.key_file), self.client_ca_file.as_ref()]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Reads the files into a rustls server config: TLS 1.2 and 1.3, ALPN h2 then http/1.1, client
    /// certificates verified against the CA file when there is one.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, String> {
        let chain = CertificateDer::pem_file_iter(&self.cert_file)
            .map_err(|e| format!("cannot read {}: {e}", self.cert_file.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: not a PEM certificate file: {e}", self.cert_file.display()))?;
        if chain.is_empty() {
            return Err(format!("{}: no certificates found", self.cert_file.display()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key_file)
            .map_err(|e| format!("{}: no private key read: {e}", self.key_file.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let roots = Arc::new(roots_from(path)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
                let verifier = match self.client_cert {
                    ClientCert::Required => verifier,
                    ClientCert::Optional => verifier.allow_unauthenticated(),
                };
                builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("{}: {e}", path.display()))?)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("{} and {}: {e}", self.cert_file.display(), self.key_file.display()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// The certificates of a PEM file, as trust anchors.
fn roots_from(path: &Path) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificates found", path.display()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}
