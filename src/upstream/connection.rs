//! One backend endpoint as one server worker sees it: an HTTP/2 connection (h2c or TLS), dialed
//! on first use and again after it closes, a back-off after a failed dial, and a count of the
//! streams open on it against the backend's own limit. Each worker has its own (see `server.rs`),
//! so HTTP/2 multiplexes that worker's calls over it without crossing threads.
//!
//! - The request path takes no lock: the live connection is read through an `ArcSwapOption`.
//! - A dial succeeds when the backend has answered with its SETTINGS, not when TCP connects: a
//!   backend that accepts and then says nothing (hung, or a proxy before a dead one), or closes
//!   at once, is a failed dial like a refused one.
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
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;

use super::corked::Corked;
use super::settings::{Heard, Sniffed};
use crate::call::Body;
use crate::config::{Backend, ServiceRule};
use crate::observe::backends::EndpointStats;

/// The first back-off after a failed dial, and the longest.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The least latency estimate the balancer compares, in ns: 1 ms.
const RTT_FLOOR: f64 = 1e6;

/// The latency an answer that failed the call counts for, at least, in the estimate: a backend
/// failing fast must not look fast.
const FAILURE_PENALTY: Duration = Duration::from_millis(25);

/// The outcome of a dial, as those waiting for it see it.
type Dialed = Option<Result<Arc<Connection>, String>>;

/// A backend address and its connection.
pub(super) struct Endpoint {
    pub backend: Backend,
    rule: Arc<ServiceRule>,
    live: ArcSwapOption<Connection>,
    /// How the endpoint stands when no connection is live. Never held across an await.
    dial: Mutex<Dial>,
    /// Shared by the pool's endpoints: told whenever a stream frees up on any of them.
    freed: Arc<Notify>,
    /// Its figures, shared with the other workers' endpoints of the same address.
    stats: Arc<EndpointStats>,
}

enum Dial {
    /// Nothing under way; `failures` dials in a row failed (or gave connections that closed at
    /// once) before the last one.
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
    pub(super) fn new(backend: Backend, rule: Arc<ServiceRule>, freed: Arc<Notify>, stats: Arc<EndpointStats>) -> Self {
        let dial = Mutex::new(Dial::Idle { failures: 0 });
        Endpoint { backend, rule, live: ArcSwapOption::empty(), dial, freed, stats }
    }

    /// The load the balancer compares, as tower's peak-EWMA: the backend's latency estimate
    /// (at least [`RTT_FLOOR`]) times its calls in flight (from every worker) plus one, per unit
    /// of weight. Below the floor — a fast backend, a new one, one not called for a while — calls
    /// in flight decide.
    /// `now` is [`crate::observe::backends::now_nanos`], read once for both endpoints compared.
    pub(super) fn load_at(&self, now: u64) -> f64 {
        let pending = self.stats.in_flight().max(0) as f64 + 1.0;
        pending * self.stats.rtt_estimate_at(now).max(RTT_FLOOR) / f64::from(self.backend.weight)
    }

    #[cfg(test)]
    pub(super) fn load(&self) -> f64 {
        self.load_at(crate::observe::backends::now_nanos())
    }

    #[cfg(test)]
    pub(super) fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    /// Whether the active health checks mark it unhealthy ([`EndpointStats::unhealthy`]).
    pub(super) fn unhealthy(&self) -> bool {
        self.stats.unhealthy()
    }

    /// Whether outlier detection has ejected it for now ([`EndpointStats::answered`]).
    pub(super) fn ejected(&self) -> bool {
        self.stats.ejected()
    }

    /// The endpoint's state, starting a dial when it has no connection and is not backing off.
    pub(super) fn status(self: &Arc<Self>) -> Status {
        let live = self.live.load();
        if let Some(connection) = live.as_ref().filter(|c| c.is_usable()) {
            return Status::Ready(connection.clone());
        }
        let mut dial = self.dial.lock().unwrap_or_else(PoisonError::into_inner);
        // A connection that went (closed, or GOAWAY) within the first back-off of opening was no
        // success: a backend at its connection limit answers SETTINGS then goes away.
        if let (Dial::Idle { .. }, Some(gone)) = (&*dial, live.as_ref()) {
            if gone.opened.elapsed() < BACKOFF_FIRST {
                let failures = gone.failures_before.saturating_add(1);
                let error = "the backend closed the connection at once".to_owned();
                *dial = back_off(&self.backend, failures, error.clone());
                self.live.store(None);
                return Status::BackingOff(error);
            }
        }
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
        // Spawned, so that the dial completes and is remembered even if every caller waiting for
        // it has gone; the guard puts the endpoint back to idle should the task itself be lost.
        let guard = DialGuard { endpoint: self.clone(), done: Some(done) };
        tokio::spawn(async move {
            let result = guard.endpoint.connect(failures).await.map(Arc::new);
            guard.finish(result, failures);
        });
        Status::Dialing(receiver)
    }

    async fn connect(&self, failures_before: u32) -> Result<Connection, String> {
        let timeout = self.rule.connect_timeout;
        let heard = Arc::new(Heard::new(self.freed.clone()));
        let (spoke, spoken) = oneshot::channel();
        let connect = async {
            let tcp = TcpStream::connect(&self.backend.authority).await.map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            let sender = match &self.rule.tls {
                None => handshake(Sniffed::new(tcp, heard.clone(), spoke), self.freed.clone(), &self.stats).await?,
                Some(config) => {
                    let tls = tls(config, &self.rule, &self.backend, tcp).await?;
                    handshake(Sniffed::new(tls, heard.clone(), spoke), self.freed.clone(), &self.stats).await?
                }
            };
            // hyper's handshake returns once the preface is written: the backend is up when it
            // has sent its SETTINGS back.
            spoken.await.map_err(|_| "the backend closed the connection before speaking HTTP/2".to_owned())?;
            Ok::<_, String>(sender)
        };
        let sender = match tokio::time::timeout(timeout, connect).await {
            Ok(result) => result?,
            Err(_) => return Err(format!("no HTTP/2 answer within {timeout:?}")),
        };
        Ok(Connection {
            sender,
            heard,
            in_flight: AtomicU32::new(0),
            freed: self.freed.clone(),
            opened: Instant::now(),
            failures_before,
            stats: self.stats.clone(),
        })
    }
}

/// A TLS session with `backend` over `tcp`, as `rule` says: its roots (`config`), and the name
/// its certificate must have (`tls.server_name`, else the backend's host).
pub(super) async fn tls(
    config: &Arc<rustls::ClientConfig>,
    rule: &ServiceRule,
    backend: &Backend,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let name = rule.tls_server_name.clone().unwrap_or_else(|| backend.host.clone());
    let name = rustls::pki_types::ServerName::try_from(name).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))
}

/// The back-off after the `failures`-th failure in a row: 500 ms, doubling to 30 s.
fn back_off(backend: &Backend, failures: u32, error: String) -> Dial {
    let backoff = BACKOFF_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(10)).min(BACKOFF_MAX);
    tracing::warn!(%backend, %error, ?backoff, "backend unreachable");
    Dial::BackingOff { until: Instant::now() + backoff, failures, error }
}

/// Records the outcome of a dial, and puts the endpoint back to idle if the dial task is lost
/// (the runtime shutting down) before it could.
struct DialGuard {
    endpoint: Arc<Endpoint>,
    done: Option<watch::Sender<Dialed>>,
}

impl DialGuard {
    fn finish(mut self, result: Result<Arc<Connection>, String>, failures: u32) {
        let endpoint = &self.endpoint;
        let mut dial = endpoint.dial.lock().unwrap_or_else(PoisonError::into_inner);
        match &result {
            Ok(connection) => {
                endpoint.live.store(Some(connection.clone()));
                *dial = Dial::Idle { failures: 0 };
                endpoint.stats.connected();
            }
            Err(error) => {
                *dial = back_off(&endpoint.backend, failures.saturating_add(1), error.clone());
                endpoint.stats.connect_failed(error);
            }
        }
        drop(dial);
        if let Some(done) = self.done.take() {
            let _ = done.send(Some(result));
        }
    }
}

impl Drop for DialGuard {
    fn drop(&mut self) {
        if self.done.is_some() {
            let error = "the dial was abandoned".to_owned();
            *self.endpoint.dial.lock().unwrap_or_else(PoisonError::into_inner) =
                back_off(&self.endpoint.backend, 1, error);
        }
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
    /// The backend's stream limit and GOAWAY, as its frames say.
    heard: Arc<Heard>,
    in_flight: AtomicU32,
    freed: Arc<Notify>,
    opened: Instant,
    /// The endpoint's failures in a row before this connection.
    failures_before: u32,
    stats: Arc<EndpointStats>,
}

impl Connection {
    /// Open, and not going away: new streams may be opened on it.
    fn is_usable(&self) -> bool {
        !self.sender.is_closed() && !self.heard.draining.load(Ordering::Relaxed)
    }

    /// A stream, if one can be opened now (the connection is usable and under its limit).
    pub(super) fn try_stream(self: &Arc<Self>) -> Option<Stream> {
        if !self.is_usable() {
            return None;
        }
        let limit = self.heard.limit.load(Ordering::Relaxed);
        let opened =
            self.in_flight.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < limit).then_some(n + 1));
        opened.is_ok().then(|| {
            self.stats.call_started();
            Stream { connection: self.clone(), started: Instant::now(), timed: false, heard: false }
        })
    }

    /// The backend's limit, for messages.
    pub(super) fn limit(&self) -> u32 {
        self.heard.limit.load(Ordering::Relaxed)
    }
}

/// One stream counted against the connection's limit until dropped (when the reply ends).
pub(super) struct Stream {
    connection: Arc<Connection>,
    started: Instant,
    /// Its answer feeds the latency estimate: a unary call's (a stream's first answer may wait
    /// on the client's messages or the backend's first one).
    timed: bool,
    /// The backend answered, or the call failed: the estimate was fed.
    heard: bool,
}

/// How the backend answered a call, as the balancer and outlier detection see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// A reply (or the service's own error: NOT_FOUND, INVALID_ARGUMENT...).
    Served,
    /// A server-side failure (INTERNAL, UNKNOWN, DATA_LOSS): counted slow, not ejected for.
    Failed,
    /// UNAVAILABLE with nothing but a status: counted slow, and towards ejection.
    TurnedAway,
}

impl Stream {
    pub(super) fn sender(&self) -> SendRequest<Body> {
        self.connection.sender.clone()
    }

    /// Its answer feeds the balancer's latency estimate (see [`Stream::timed`]).
    pub(super) fn timed(&mut self) {
        self.timed = true;
    }

    /// The call on it failed at the transport (counted for the endpoint).
    pub(super) fn failed(&mut self) {
        self.connection.stats.call_failed();
        self.feed(true);
    }

    /// The backend answered the call (its response head came).
    pub(super) fn answered(&mut self, answer: Answer) {
        self.connection.stats.answered(answer != Answer::TurnedAway);
        self.feed(answer != Answer::Served);
    }

    fn feed(&mut self, failed: bool) {
        if self.timed && !self.heard {
            let elapsed = self.started.elapsed();
            self.connection.stats.answered_after(if failed { elapsed.max(FAILURE_PENALTY) } else { elapsed });
        }
        self.heard = true;
    }
}

/// The most a call given up on counts for: enough to be avoided (a backend that hangs), not so
/// much that a long deadline keeps a recovered backend avoided for minutes.
const GIVEN_UP_MAX: Duration = Duration::from_secs(1);

impl Drop for Stream {
    fn drop(&mut self) {
        // Given up on before any answer (deadline, client gone, never sent): it took at least
        // this long, so a backend that hangs is not taken for a fast one — a lower bound, which
        // only ever raises the estimate.
        let elapsed = self.started.elapsed();
        if self.timed && !self.heard {
            let waited = elapsed.min(GIVEN_UP_MAX);
            if waited.as_nanos() as f64 > self.connection.stats.rtt_estimate() {
                self.connection.stats.answered_after(waited);
            }
        }
        self.connection.stats.call_ended(elapsed);
        self.connection.in_flight.fetch_sub(1, Ordering::Relaxed);
        // One stream freed: one waiter (a waiter that gives up passes the wake-up on). Not every
        // waiter: under overload that is a stampede per freed stream. A waiter that passes this
        // endpoint over (ejected, another key's) may sleep on while another could have used it;
        // the stream is not lost — the next call or freed stream takes it.
        self.connection.freed.notify_one();
    }
}

/// What one read from a backend may take: h2 asks for a few KiB at a time (one per 8 KiB of a big
/// message), one syscall each.
const READ_BUFFER: usize = 64 << 10;

async fn handshake<I>(io: I, freed: Arc<Notify>, stats: &Arc<EndpointStats>) -> Result<SendRequest<Body>, String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(1 << 20)
        // h2 closes a connection (GOAWAY ENHANCE_YOUR_CALM) once its unread DATA frames under
        // 256 bytes cost more than half this window (256 - size each: its guard against floods
        // of tiny frames, whose budget hyper 1.12 does not let us set). A backend sends a frame
        // per message, so at 4 MiB one client reading a stream of small messages slowly cut off
        // every call on the connection. At 64 MiB the ninth such stream of 50-byte messages
        // stalled at once on one connection still does; and what a connection may hold unread
        // rises from 4 to 64 MiB (1 MiB per stream).
        .initial_connection_window_size(64 << 20)
        .max_frame_size(64 << 10)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .handshake(TokioIo::new(Corked::new(BufReader::with_capacity(READ_BUFFER, io))))
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
    let open = stats.connection();
    tokio::spawn(async move {
        let _open = open;
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "backend connection closed");
        }
        // Calls waiting for room on it look again: the endpoint dials anew.
        freed.notify_waiters();
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
        let stats = Arc::new(crate::observe::backends::Backends::default()).endpoint("http://test:1");
        Arc::new(Endpoint::new(rule.backends[0].clone(), rule, Arc::new(Notify::new()), stats))
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
