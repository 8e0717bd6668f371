//! One backend endpoint as one server worker sees it: an HTTP/2 connection (h2c or TLS), dialed
//! on first use and again after it closes, a back-off after a failed dial, and a count of the
//! streams open on it against the backend's own limit. Each worker has its own (see `server.rs`),
//! so HTTP/2 multiplexes that worker's calls over it without crossing threads.
//!
//! - The request path takes no lock: the live connection is read through an `ArcSwapOption`.
//! - One dial at a time, shared: calls that arrive while a dial is under way wait for that dial,
//!   instead of each waiting its turn to dial again (a black-holed backend cost queued calls one
//!   `connect_timeout` each, in turn).
//! - A failed dial puts the endpoint in back-off (500 ms, doubling to 30 s): calls skip it at once
//!   until the back-off ends; the dial after it runs in the background when other endpoints can
//!   serve.
//! - A connection at the backend's `SETTINGS_MAX_CONCURRENT_STREAMS` lends no stream: a call
//!   waits for one at most the rule's `queue_timeout`, instead of queueing inside hyper without
//!   bound.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::settings::{Sniffed, UNLIMITED};
use crate::call::Body;
use crate::config::{Backend, ServiceRule};

/// The first back-off after a failed dial, and the longest.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The outcome of a dial, as those waiting for it see it.
type Dialed = Option<Result<Arc<Connection>, String>>;

/// A backend address and its connection.
pub(super) struct Endpoint {
    pub backend: Backend,
    rule: Arc<ServiceRule>,
    live: ArcSwapOption<Connection>,
    /// How the endpoint stands when no connection is live. Never held across an await.
    dial: Mutex<Dial>,
}

enum Dial {
    /// Nothing under way; `failures` dials in a row have failed.
    Idle {
        failures: u32,
    },
    Dialing(watch::Receiver<Dialed>),
    BackingOff {
        until: Instant,
        failures: u32,
        error: String,
    },
}

/// Where an endpoint stands for a call.
pub(super) enum Status {
    Ready(Arc<Connection>),
    /// A dial is under way (perhaps just started for this call).
    Dialing(watch::Receiver<Dialed>),
    /// Its last dial failed, with this error; it is skipped until its back-off ends.
    BackingOff(String),
}

impl Endpoint {
    pub(super) fn new(backend: Backend, rule: Arc<ServiceRule>) -> Self {
        Endpoint { backend, rule, live: ArcSwapOption::empty(), dial: Mutex::new(Dial::Idle { failures: 0 }) }
    }

    /// The endpoint's state, starting a dial when it has no connection and is not backing off.
    pub(super) fn status(self: &Arc<Self>) -> Status {
        if let Some(connection) = self.live.load().as_ref().filter(|c| !c.sender.is_closed()) {
            return Status::Ready(connection.clone());
        }
        let mut dial = self.dial.lock().unwrap_or_else(PoisonError::into_inner);
        let failures = match &*dial {
            Dial::Dialing(receiver) => return Status::Dialing(receiver.clone()),
            Dial::BackingOff { until, error, .. } if Instant::now() < *until => {
                return Status::BackingOff(error.clone());
            }
            Dial::BackingOff { failures, .. } | Dial::Idle { failures } => *failures,
        };
        let (done, receiver) = watch::channel(None);
        *dial = Dial::Dialing(receiver.clone());
        drop(dial);
        let endpoint = self.clone();
        // Spawned, so that the dial completes and is remembered even if every caller waiting for
        // it has gone.
        tokio::spawn(async move {
            let result = endpoint.connect().await.map(Arc::new);
            endpoint.dialed(&result, failures);
            let _ = done.send(Some(result));
        });
        Status::Dialing(receiver)
    }

    /// Records a dial's outcome.
    fn dialed(&self, result: &Result<Arc<Connection>, String>, failures: u32) {
        let mut dial = self.dial.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(connection) => {
                self.live.store(Some(connection.clone()));
                *dial = Dial::Idle { failures: 0 };
            }
            Err(error) => {
                let failures = failures.saturating_add(1);
                let backoff = BACKOFF_FIRST.saturating_mul(1 << (failures - 1).min(10)).min(BACKOFF_MAX);
                tracing::warn!(backend = %self.backend, error = %error, ?backoff, "backend unreachable");
                *dial = Dial::BackingOff { until: Instant::now() + backoff, failures, error: error.clone() };
            }
        }
    }

    async fn connect(&self) -> Result<Connection, String> {
        let timeout = self.rule.connect_timeout;
        let limit = Arc::new(AtomicU32::new(UNLIMITED));
        let connect = async {
            let tcp = TcpStream::connect(&self.backend.authority).await.map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            match &self.rule.tls {
                None => handshake(Sniffed::new(tcp, limit.clone())).await,
                Some(config) => {
                    let name = self.rule.tls_server_name.clone().unwrap_or_else(|| self.backend.host.clone());
                    let name = rustls::pki_types::ServerName::try_from(name).map_err(|e| e.to_string())?;
                    let tls = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS handshake failed: {e}"))?;
                    handshake(Sniffed::new(tls, limit.clone())).await
                }
            }
        };
        let sender = match tokio::time::timeout(timeout, connect).await {
            Ok(result) => result?,
            Err(_) => return Err(format!("no connection within {timeout:?}")),
        };
        Ok(Connection { sender, limit, in_flight: AtomicU32::new(0), freed: Notify::new() })
    }
}

/// Waits for a dial under way.
pub(super) async fn dialed(mut receiver: watch::Receiver<Dialed>) -> Result<Arc<Connection>, String> {
    match receiver.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().unwrap_or_else(|| Err("the dial was abandoned".into())),
        Err(_) => Err("the dial was abandoned".into()),
    }
}

/// An open HTTP/2 connection and its streams.
pub(super) struct Connection {
    sender: SendRequest<Body>,
    /// The backend's `SETTINGS_MAX_CONCURRENT_STREAMS`, once its SETTINGS frame has arrived.
    limit: Arc<AtomicU32>,
    in_flight: AtomicU32,
    freed: Notify,
}

impl Connection {
    /// A stream, if one can be opened now.
    pub(super) fn try_stream(self: &Arc<Self>) -> Option<Stream> {
        self.try_open().then(|| Stream { connection: self.clone() })
    }

    /// A stream to send a call on, waiting at most `patience` for one to free up.
    pub(super) async fn stream(self: &Arc<Self>, patience: Duration) -> Option<Stream> {
        let give_up = Instant::now() + patience;
        loop {
            if self.try_open() {
                return Some(Stream { connection: self.clone() });
            }
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the second look, so a stream freed in between is not missed.
            freed.as_mut().enable();
            if self.try_open() {
                return Some(Stream { connection: self.clone() });
            }
            tokio::time::timeout_at(give_up, freed).await.ok()?;
        }
    }

    fn try_open(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.in_flight.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < limit).then_some(n + 1)).is_ok()
    }

    /// The backend's limit, for messages.
    pub(super) fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }
}

/// One stream counted against the connection's limit until dropped (when the reply ends).
pub(super) struct Stream {
    connection: Arc<Connection>,
}

impl Stream {
    pub(super) fn sender(&self) -> SendRequest<Body> {
        self.connection.sender.clone()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.connection.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.connection.freed.notify_one();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Arc<Endpoint> {
        // A port nothing listens on: every dial is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        let yaml = format!("services:\n  - match: x.Y\n    backends: [http://127.0.0.1:{}]\n", port.unwrap_or(1));
        let config = crate::config::Config::parse(&yaml, std::path::Path::new(".")).expect("config");
        let rule = config.services[0].clone();
        Arc::new(Endpoint::new(rule.backends[0].clone(), rule))
    }

    async fn fails(endpoint: &Arc<Endpoint>) {
        let Status::Dialing(receiver) = endpoint.status() else { panic!("dials") };
        assert!(dialed(receiver).await.is_err());
    }

    fn backing_off(endpoint: &Arc<Endpoint>) -> bool {
        matches!(endpoint.status(), Status::BackingOff(_))
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_dial_backs_off_doubling_then_dials_again() {
        let endpoint = endpoint();
        fails(&endpoint).await;
        assert!(backing_off(&endpoint), "skipped at once after a failure");
        tokio::time::advance(Duration::from_millis(450)).await;
        assert!(backing_off(&endpoint), "for 500 ms");
        tokio::time::advance(Duration::from_millis(100)).await;
        fails(&endpoint).await;
        tokio::time::advance(Duration::from_millis(950)).await;
        assert!(backing_off(&endpoint), "then for 1 s");
        tokio::time::advance(Duration::from_millis(100)).await;
        fails(&endpoint).await;
        assert!(backing_off(&endpoint));
    }

    #[tokio::test(start_paused = true)]
    async fn calls_during_a_dial_share_it() {
        let endpoint = endpoint();
        let (Status::Dialing(a), Status::Dialing(b)) = (endpoint.status(), endpoint.status()) else {
            panic!("both see the one dial")
        };
        assert!(a.same_channel(&b), "one dial, not two");
        assert!(dialed(a).await.is_err() && dialed(b).await.is_err());
    }
}
