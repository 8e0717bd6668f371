//! One backend endpoint: a few HTTP/2 connections (h2c or TLS), opened on first use and again
//! after they close. Calls spread over the connections so one connection task is not the
//! bottleneck on a multi-core gateway.
//!
//! The request path takes no lock: a live connection is read through an `ArcSwapOption`; only
//! (re)connecting takes an async mutex, so one caller dials while the others wait for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::call::Body;
use crate::config::{Backend, ServiceRule};

/// Connections kept per endpoint.
const CONNECTIONS_PER_ENDPOINT: usize = 2;

/// A backend address and its connections.
pub(super) struct Endpoint {
    pub backend: Backend,
    rule: Arc<ServiceRule>,
    slots: Box<[Slot]>,
    next: AtomicUsize,
}

#[derive(Default)]
struct Slot {
    live: ArcSwapOption<SendRequest<Body>>,
    dialing: tokio::sync::Mutex<()>,
}

impl Endpoint {
    pub(super) fn new(backend: Backend, rule: Arc<ServiceRule>) -> Self {
        let slots = (0..CONNECTIONS_PER_ENDPOINT).map(|_| Slot::default()).collect();
        Endpoint { backend, rule, slots, next: AtomicUsize::new(0) }
    }

    /// A handle to send a request on, dialing when no connection is open.
    pub(super) async fn sender(&self) -> Result<SendRequest<Body>, String> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        if let Some(sender) = usable(&slot.live) {
            return Ok(sender);
        }
        let _dialing = slot.dialing.lock().await;
        if let Some(sender) = usable(&slot.live) {
            return Ok(sender);
        }
        let sender = self.dial().await?;
        slot.live.store(Some(Arc::new(sender.clone())));
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
