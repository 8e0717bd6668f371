//! One backend endpoint: an HTTP/2 connection (h2c or TLS), opened on first use and again after
//! it closes. Each server worker has its own (see `server.rs`), so HTTP/2 multiplexes that
//! worker's calls over it without crossing threads.
//!
//! The request path takes no lock: the live connection is read through an `ArcSwapOption`; only
//! (re)connecting takes an async mutex, so one caller dials while the others wait for it.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::call::Body;
use crate::config::{Backend, ServiceRule};

/// A backend address and its connection.
pub(super) struct Endpoint {
    pub backend: Backend,
    rule: Arc<ServiceRule>,
    live: ArcSwapOption<SendRequest<Body>>,
    dialing: tokio::sync::Mutex<()>,
}

impl Endpoint {
    pub(super) fn new(backend: Backend, rule: Arc<ServiceRule>) -> Self {
        Endpoint { backend, rule, live: ArcSwapOption::empty(), dialing: tokio::sync::Mutex::new(()) }
    }

    /// A handle to send a request on, dialing when no connection is open.
    pub(super) async fn sender(&self) -> Result<SendRequest<Body>, String> {
        if let Some(sender) = usable(&self.live) {
            return Ok(sender);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(sender) = usable(&self.live) {
            return Ok(sender);
        }
        let sender = self.dial().await?;
        self.live.store(Some(Arc::new(sender.clone())));
        Ok(sender)
    }

    async fn dial(&self) -> Result<SendRequest<Body>, String> {
        let timeout = self.rule.connect_timeout;
        let connect = async {
            let tcp = TcpStream::connect(&self.backend.authority).await.map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            match &self.rule.tls {
                None => handshake(tcp).await,
                Some(config) => {
                    let name = self.rule.tls_server_name.clone().unwrap_or_else(|| self.backend.host.clone());
                    let name = rustls::pki_types::ServerName::try_from(name).map_err(|e| e.to_string())?;
                    let tls = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS handshake failed: {e}"))?;
                    handshake(tls).await
                }
            }
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(format!("no connection within {timeout:?}")),
        }
    }
}

fn usable(live: &ArcSwapOption<SendRequest<Body>>) -> Option<SendRequest<Body>> {
    live.load().as_ref().filter(|s| !s.is_closed()).map(|s| SendRequest::clone(s))
}

async fn handshake<I>(io: I) -> Result<SendRequest<Body>, String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .max_frame_size(64 << 10)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "backend connection closed");
        }
    });
    Ok(sender)
}
