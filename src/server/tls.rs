//! The TLS listener's handshakes (`tls:` in the config): rustls over the accepted socket, ALPN
//! `h2` and `http/1.1` (hyper then serves either, as on the plain port), and the client's
//! certificate, when mutual TLS verified one, read into a [`ClientIdentity`].
//!
//! Certificates change without a restart: the files' folders are watched (a Kubernetes secret
//! swaps a symlink beside the files, not the files), and when what they hold changes a new rustls
//! config is built off to the side and swapped in. New connections get it; connections in flight
//! keep the one they shook hands with. A broken file leaves the old config serving and says why.
//!
//! Not here: choosing a certificate by SNI (one certificate per listener), OCSP stapling,
//! certificate revocation lists.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::call::ClientIdentity;
use crate::config::TlsListener;

/// A TLS listener's current settings, reloaded when its files change.
pub struct Tls {
    settings: TlsListener,
    current: ArcSwap<rustls::ServerConfig>,
    /// The files' bytes the current config was built from: a change in the watched folders that
    /// leaves them as they were reloads nothing.
    loaded: Mutex<Vec<Vec<u8>>>,
    /// Watching for as long as the listener lives.
    watcher: OnceLock<crate::watch::Watcher>,
}

impl Tls {
    /// Reads the certificate files and starts watching them. Must be called inside a tokio runtime.
    pub fn start(settings: &TlsListener) -> Result<Arc<Self>, String> {
        let loaded = read_all(&settings.files())?;
        let config = settings.server_config()?;
        let tls = Arc::new(Tls {
            settings: settings.clone(),
            current: ArcSwap::from_pointee(config),
            loaded: Mutex::new(loaded),
            watcher: OnceLock::new(),
        });
        let files = settings.files();
        let weak: Weak<Tls> = Arc::downgrade(&tls);
        let relevant = {
            let files = files.clone();
            move |changed: &Path| crate::watch::touches_files(changed, &files)
        };
        let watcher = crate::watch::watch(&files, relevant, move || {
            if let Some(tls) = weak.upgrade() {
                tls.reload();
            }
        })?;
        let _ = tls.watcher.set(watcher);
        Ok(tls)
    }

    /// Reads the files again and swaps in a new config if they changed; on an error the current
    /// one keeps serving. Also what SIGHUP does.
    pub fn reload(&self) {
        let files = self.settings.files();
        let result = read_all(&files).and_then(|bytes| {
            let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            if *loaded == bytes {
                return Ok(false);
            }
            let config = self.settings.server_config()?;
            self.current.store(Arc::new(config));
            *loaded = bytes;
            Ok(true)
        });
        match result {
            Ok(true) => tracing::info!(cert = %self.settings.cert_file.display(), "TLS certificate reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "TLS reload failed; the previous certificate keeps serving"),
        }
    }

    /// Shakes hands within `timeout`; None (logged) when the client fails to, or is refused.
    pub(super) async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> Option<(TlsStream<TcpStream>, Option<Arc<ClientIdentity>>)> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current.load_full());
        let peer = stream.peer_addr().ok();
        let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(peer = ?peer, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(peer = ?peer, "closed: no TLS handshake within header_read_timeout");
                return None;
            }
        };
        let identity = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(identity_of);
        Some((stream, identity.map(Arc::new)))
    }
}

fn read_all(files: &[PathBuf]) -> Result<Vec<Vec<u8>>, String> {
    files.iter().map(|f| std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))).collect()
}

/// Who a verified certificate names. rustls has checked its chain; a part x509-parser cannot read
/// is left empty rather than refusing a certificate rustls accepted.
fn identity_of(cert: &rustls::pki_types::CertificateDer<'_>) -> ClientIdentity {
    use x509_parser::extensions::GeneralName;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let hash = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let mut identity = ClientIdentity { subject: String::new(), dns_names: Vec::new(), uris: Vec::new(), hash };
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else { return identity };
    identity.subject = parsed.subject().to_string();
    if let Ok(Some(names)) = parsed.subject_alternative_name() {
        for name in &names.value.general_names {
            match name {
                GeneralName::DNSName(dns) => identity.dns_names.push((*dns).to_owned()),
                GeneralName::URI(uri) => identity.uris.push((*uri).to_owned()),
                _ => {}
            }
        }
    }
    identity
}
