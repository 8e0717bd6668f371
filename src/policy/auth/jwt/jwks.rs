//! A JWKS kept fresh: read from a file or fetched over HTTP(S), held in an `ArcSwap` so that a call
//! reads the keys without a lock, and refreshed on a schedule or when a token names an unknown
//! `kid`.
//!
//! The refresh rules bound what a client can make the gateway do to the identity provider:
//! every fetch goes through one `tokio::sync::Mutex` and is skipped by whoever waited on it if
//! another fetch ended meanwhile (single flight), a miss re-fetches at most once per
//! `min_refetch_interval`, and no call waits longer than `fetch_timeout`. A failed fetch keeps the
//! previous keys. The HTTP client is a single HTTP/1.1 GET per fetch over hyper (as the OTLP
//! exporter's is): no pool, no redirects, no proxies, no cache headers.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;

use super::key::{Key, keys_from_jwks};

/// The largest JWKS read, from a file or a provider (real ones are a few KiB).
const MAX_DOCUMENT: usize = 1024 * 1024;

/// When to read the keys again.
#[derive(Debug, Clone, Copy)]
pub(super) struct Schedule {
    pub(super) refresh_interval: Duration,
    pub(super) min_refetch_interval: Duration,
    pub(super) fetch_timeout: Duration,
}

pub(super) enum Origin {
    File(PathBuf),
    Url { uri: Uri, tls: Option<TlsConnector> },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Url { uri, .. } => write!(f, "{uri}"),
        }
    }
}

/// The keys as last read, and when.
pub(super) struct Snapshot {
    pub(super) keys: Arc<[Key]>,
    /// Bumped by every fetch attempt, successful or not: a waiter that sees it move knows a fetch
    /// ended while it waited, and does not start another.
    generation: u64,
    /// When the last attempt ended; `None` until the first (a URL is fetched on first use).
    attempted: Option<Instant>,
    failed: bool,
    /// A file's modification time when it was read: an unchanged file is not parsed again.
    modified: Option<SystemTime>,
}

pub(super) struct Jwks {
    origin: Origin,
    schedule: Schedule,
    current: ArcSwap<Snapshot>,
    /// Held for the length of one fetch: the single flight.
    fetching: tokio::sync::Mutex<()>,
    /// Whether a background refresh task is out, so that only one is.
    refreshing: AtomicBool,
}

impl Jwks {
    /// Reads a JWKS file now (config loading is synchronous; an unreadable file is a config error).
    pub(super) fn file(path: PathBuf, schedule: Schedule) -> Result<Jwks, String> {
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let document = read_capped(&path)?;
        let (keys, skipped) = keys_from_jwks(&document)?;
        let origin = Origin::File(path);
        log_skipped(&origin, &keys, &skipped);
        let snapshot =
            Snapshot { keys: keys.into(), generation: 0, attempted: Some(Instant::now()), failed: false, modified };
        Ok(Jwks::with(origin, schedule, snapshot))
    }

    /// A JWKS URL, fetched on first use.
    pub(super) fn url(uri: Uri, tls: Option<TlsConnector>, schedule: Schedule) -> Jwks {
        let snapshot = Snapshot { keys: Arc::new([]), generation: 0, attempted: None, failed: false, modified: None };
        Jwks::with(Origin::Url { uri, tls }, schedule, snapshot)
    }

    fn with(origin: Origin, schedule: Schedule, snapshot: Snapshot) -> Jwks {
        Jwks {
            origin,
            schedule,
            current: ArcSwap::from_pointee(snapshot),
            fetching: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
        }
    }

    /// The keys to check a token with: the first fetch is waited for; stale keys are returned at
    /// once while one background task refreshes them.
    pub(super) async fn current(self: &Arc<Self>) -> Arc<Snapshot> {
        let snapshot = self.current.load_full();
        let Some(attempted) = snapshot.attempted else {
            return self.fetch_once(snapshot.generation).await;
        };
        let due = if snapshot.failed { self.schedule.min_refetch_interval } else { self.schedule.refresh_interval };
        if attempted.elapsed() >= due {
            self.refresh_in_background(snapshot.generation);
        }
        snapshot
    }

    /// After a token named a key `seen` does not have: fetch again, unless the last attempt was
    /// less than `min_refetch_interval` ago (tokens with made-up kids must not drive fetches).
    pub(super) async fn after_miss(&self, seen: Arc<Snapshot>) -> Arc<Snapshot> {
        match seen.attempted {
            Some(at) if at.elapsed() < self.schedule.min_refetch_interval => seen,
            _ => self.fetch_once(seen.generation).await,
        }
    }

    fn refresh_in_background(self: &Arc<Self>, seen: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if self.refreshing.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return;
        }
        let jwks = Arc::clone(self);
        runtime.spawn(async move {
            jwks.fetch_once(seen).await;
            jwks.refreshing.store(false, Ordering::Release);
        });
    }

    /// One fetch for everyone who saw generation `seen`: the first to take the lock fetches, the
    /// others find the generation moved and take its result. Waiting for the lock is bounded by
    /// the fetch timeout, as the holder's fetch is.
    async fn fetch_once(&self, seen: u64) -> Arc<Snapshot> {
        let Ok(_guard) = tokio::time::timeout(self.schedule.fetch_timeout, self.fetching.lock()).await else {
            return self.current.load_full();
        };
        let current = self.current.load_full();
        if current.generation != seen {
            return current;
        }
        let next = Arc::new(self.fetch(&current).await);
        self.current.store(Arc::clone(&next));
        next
    }

    /// The next snapshot: new keys, or on failure the same keys marked failed (and a warning).
    async fn fetch(&self, current: &Snapshot) -> Snapshot {
        let read = tokio::time::timeout(self.schedule.fetch_timeout, self.read(current.modified))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.schedule.fetch_timeout)));
        let generation = current.generation.wrapping_add(1);
        let attempted = Some(Instant::now());
        match read {
            Ok(Some((document, modified))) => match keys_from_jwks(&document) {
                Ok((keys, skipped)) => {
                    log_skipped(&self.origin, &keys, &skipped);
                    tracing::debug!(jwks = %self.origin, keys = keys.len(), "JWKS read");
                    return Snapshot { keys: keys.into(), generation, attempted, failed: false, modified };
                }
                Err(e) => self.warn(&e),
            },
            Ok(None) => {
                let keys = Arc::clone(&current.keys);
                return Snapshot { keys, generation, attempted, failed: false, modified: current.modified };
            }
            Err(e) => self.warn(&e),
        }
        Snapshot { keys: Arc::clone(&current.keys), generation, attempted, failed: true, modified: current.modified }
    }

    fn warn(&self, error: &str) {
        tracing::warn!(jwks = %self.origin, %error, "cannot read the JWKS; the previous keys keep serving");
    }

    /// The document, or `None` for a file whose modification time has not changed.
    async fn read(&self, modified: Option<SystemTime>) -> Result<Option<(Vec<u8>, Option<SystemTime>)>, String> {
        match &self.origin {
            Origin::File(path) => {
                let now = tokio::fs::metadata(path).await.and_then(|m| m.modified()).ok();
                if now.is_some() && now == modified {
                    return Ok(None);
                }
                let path = path.clone();
                let document = tokio::task::spawn_blocking(move || read_capped(&path))
                    .await
                    .map_err(|e| format!("the read failed: {e}"))??;
                Ok(Some((document, now)))
            }
            Origin::Url { uri, tls } => Ok(Some((get(uri, tls.as_ref()).await?.to_vec(), None))),
        }
    }
}

fn read_capped(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let document = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if document.len() > MAX_DOCUMENT {
        return Err(format!("{}: larger than {MAX_DOCUMENT} bytes", path.display()));
    }
    Ok(document)
}

fn log_skipped(origin: &Origin, keys: &[Key], skipped: &[String]) {
    for why in skipped {
        tracing::debug!(jwks = %origin, key = %why, "JWK skipped");
    }
    if keys.is_empty() {
        tracing::warn!(jwks = %origin, skipped = skipped.len(), "the JWKS holds no key usable for signatures");
    }
}

/// One GET, over TLS for `https`: the body of a 200 answer, at most `MAX_DOCUMENT` bytes.
async fn get(uri: &Uri, tls: Option<&TlsConnector>) -> Result<Bytes, String> {
    let host = uri.host().ok_or("the URL has no host")?;
    let port = uri.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
    // An IPv6 literal is bracketed in a URL, not in a socket address or a server name.
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((bare_host, port)).await.map_err(|e| format!("cannot connect: {e}"))?;
    // HTTP/1.1 requests name their target in origin form, and the host in `Host`.
    let request = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, uri.authority().map_or(host, |a| a.as_str()))
        .header(http::header::ACCEPT, "application/jwk-set+json, application/json")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    match tls {
        None => exchange(TokioIo::new(tcp), request).await,
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from(bare_host.to_owned())
                .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
            let stream = connector.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
            exchange(TokioIo::new(stream), request).await
        }
    }
}

async fn exchange<T>(io: T, request: Request<Empty<Bytes>>) -> Result<Bytes, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP handshake: {e}"))?;
    // The connection is driven beside the exchange rather than spawned, so that the caller's
    // timeout drops both: nothing outlives a fetch. It ends once `sender` is dropped.
    let answer = async move {
        let response = sender.send_request(request).await.map_err(|e| format!("no answer: {e}"))?;
        if response.status() != StatusCode::OK {
            return Err(format!("answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_DOCUMENT).collect().await;
        body.map(|b| b.to_bytes()).map_err(|e| format!("reading the answer (at most {MAX_DOCUMENT} bytes): {e}"))
    };
    let (answer, _) = tokio::join!(answer, connection);
    answer
}

/// A TLS connector trusting `ca_file`'s certificates, or the system's roots; ALPN `http/1.1`.
pub(super) fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<TlsConnector, String> {
    let config = crate::config::client_config(ca_file, b"http/1.1")?;
    Ok(TlsConnector::from(Arc::new(config)))
}
