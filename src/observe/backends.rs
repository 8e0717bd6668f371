//! What each backend endpoint is doing, over every worker: calls in flight, calls, failures,
//! latency, connections, dials and their failures, the last error — for `/metrics`,
//! `/admin/backends` and the readiness probe.
//!
//! The upstream records as it works: per call, on a shard of the endpoint's counters that only
//! its worker writes (cache-line aligned, so two workers never contend for a line); per dial and
//! per connection, on shared counters. The registry ([`Backends`]) keeps one [`EndpointStats`]
//! per backend address for as long as a config names it (or a backend's DNS name resolves to it:
//! then it knows that backend as its `name`), so counts go on across reloads and the workers'
//! rebuilt pools; an address nothing holds any more leaves at the next scrape or when a new one
//! arrives.
//!
//! Passive outlier detection ([`EndpointStats::answered`]) and the verdict of the active health
//! checks ([`Health`]) live here too, per address, so that every worker's balancer reads them with
//! one relaxed load; the checks themselves run in `upstream::health`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::metrics::{Counts, Histogram, family, histogram};

/// Shards per endpoint: a worker writes shard `worker % SHARDS`.
const SHARDS: usize = 8;

std::thread_local! {
    /// This thread's shard: the server sets it on each worker thread.
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Makes this thread write the counters of shard `worker % SHARDS` (a server worker calls it once).
pub fn set_worker(worker: usize) {
    SHARD.with(|s| s.set(worker % SHARDS));
}

/// Every backend endpoint's figures, by address (`http://host:port`).
#[derive(Default)]
pub struct Backends {
    endpoints: Mutex<BTreeMap<String, Arc<EndpointStats>>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").finish_non_exhaustive()
    }
}

/// One endpoint's figures.
pub struct EndpointStats {
    pub address: String,
    shards: [Shard; SHARDS],
    /// HTTP/2 connections open to it (shaking hands included), over every worker.
    connections: AtomicI64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    /// Rare events, read by the admin listener: a lock is fine.
    events: Mutex<Events>,
    /// Calls turned away in a row (transport failures, UNAVAILABLE); reset by a call answered.
    turned_away: AtomicU32,
    /// Until when (ms since [`epoch`]) the balancer passes the endpoint over; 0: not ejected.
    ejected_until: AtomicU64,
    /// Ejections since the back-off last started over: the next lasts twice as long, up to
    /// [`EJECTION_MAX`].
    ejections: AtomicU64,
    /// Ejections since start.
    ejections_total: AtomicU64,
    /// The readiness probe's latest dial: when, and whether it connected. Held across the dial,
    /// so probes arriving meanwhile wait for its answer instead of dialing too.
    probed: tokio::sync::Mutex<Option<(tokio::time::Instant, bool)>>,
    /// The active health checks' verdict, a [`Health`]: read by every worker's balancer with one
    /// relaxed load per endpoint it considers. It is per address, like everything here: two rules
    /// naming the same address share it, and when both check it, both checkers write it (the
    /// latest transition wins).
    health: AtomicU8,
    /// Health checkers running for the address; the last one to stop leaves it unchecked.
    checkers: AtomicU32,
    checks_passed: AtomicU64,
    checks_failed: AtomicU64,
}

/// What the active health checks say of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// No rule checks it: the balancer goes by connections and ejection alone.
    Unchecked = 0,
    /// Checked, but no check has completed yet: served as if healthy, so a fresh gateway (or a
    /// new backend) serves at once.
    Unknown = 1,
    /// The checks say SERVING.
    Serving = 2,
    /// The checks failed: the balancer gives it no call.
    NotServing = 3,
}

impl Health {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Health::Unknown,
            2 => Health::Serving,
            3 => Health::NotServing,
            _ => Health::Unchecked,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unchecked => "unchecked",
            Health::Unknown => "unknown",
            Health::Serving => "serving",
            Health::NotServing => "not_serving",
        }
    }
}

/// Calls turned away in a row that eject an endpoint.
const EJECT_AFTER: u32 = 5;
/// How long a first ejection lasts.
const EJECTION_BASE: Duration = Duration::from_secs(5);
/// The longest an ejection lasts.
const EJECTION_MAX: Duration = Duration::from_secs(60);

/// How fast the latency estimate forgets: a sample's weight falls by e every this long.
const RTT_DECAY_NANOS: f64 = 5e9;

/// The clock the latency estimates are kept on: ns since [`epoch`]. Read once per balancing
/// decision, for both endpoints compared.
pub fn now_nanos() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// The process's clock origin for ejection times.
fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

/// The per-call counters one worker writes.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    in_flight: AtomicI64,
    calls: AtomicU64,
    failures: AtomicU64,
    latency: Histogram,
    /// This worker's peak-EWMA of the time the backend takes to answer a unary call, in ns, as
    /// `f64` bits; and when it was last fed (ns since [`epoch`]). Per worker, so feeding it
    /// never bounces a cache line between cores; each worker's calls see the same backend.
    rtt: AtomicU64,
    rtt_at: AtomicU64,
}

#[derive(Default)]
struct Events {
    last_connected: Option<SystemTime>,
    last_error: Option<(SystemTime, String)>,
    /// Why the latest failed health check failed.
    last_check_error: Option<(SystemTime, String)>,
    /// The backend (`http://name:port`) whose DNS name resolved to this address, if one did.
    name: Option<String>,
}

/// How an endpoint stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A connection is open.
    Up,
    /// No connection; the last dial failed.
    Down,
    /// No connection, and none failed since the last one: not called yet, or idle.
    Idle,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Idle => "idle",
        }
    }
}

/// Drops the figures of the addresses no pool (nor a name's address list) holds any more.
fn forget_unheld(endpoints: &mut BTreeMap<String, Arc<EndpointStats>>) {
    endpoints.retain(|_, e| Arc::strong_count(e) > 1);
}

impl Backends {
    /// The figures of the endpoint at `address`: the same ones for as long as a config names it.
    pub fn endpoint(&self, address: &str) -> Arc<EndpointStats> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(PoisonError::into_inner);
        if !endpoints.contains_key(address) {
            // A name's departed instances leave as new ones come, not only when scraped.
            forget_unheld(&mut endpoints);
        }
        endpoints.entry(address.to_owned()).or_insert_with(|| Arc::new(EndpointStats::new(address))).clone()
    }

    /// Every endpoint some worker's pool still holds; the others are forgotten.
    pub fn current(&self) -> Vec<Arc<EndpointStats>> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(PoisonError::into_inner);
        forget_unheld(&mut endpoints);
        endpoints.values().cloned().collect()
    }

    /// The backend families of the exposition.
    pub fn render(&self, out: &mut String, openmetrics: bool) {
        let endpoints = self.current();
        let gauge = |out: &mut String, name: &str, help: &str, value: &dyn Fn(&EndpointStats) -> i64| {
            family(out, openmetrics, "gauge", name, help);
            for e in &endpoints {
                let _ = writeln!(out, "{name}{{backend=\"{}\"}} {}", e.address, value(e));
            }
        };
        let counter = |out: &mut String, name: &str, help: &str, value: &dyn Fn(&EndpointStats) -> u64| {
            family(out, openmetrics, "counter", name, help);
            for e in &endpoints {
                let _ = writeln!(out, "{name}{{backend=\"{}\"}} {}", e.address, value(e));
            }
        };
        gauge(out, "dragoman_backend_calls_in_flight", "Calls open on the backend now.", &|e| e.in_flight());
        counter(out, "dragoman_backend_calls_total", "Calls sent to the backend.", &|e| e.sum(|s| &s.calls));
        let help = "Calls the backend failed as a transport: refused stream, broken connection, HTTP error.";
        counter(out, "dragoman_backend_failures_total", help, &|e| e.sum(|s| &s.failures));
        gauge(out, "dragoman_backend_connections", "HTTP/2 connections open to the backend.", &|e| {
            e.connections.load(Ordering::Relaxed)
        });
        let help = "Connections the gateway dialed to the backend and that answered.";
        counter(out, "dragoman_backend_connects_total", help, &|e| e.connects.load(Ordering::Relaxed));
        let help = "Dials to the backend that failed: refused, timed out, TLS or HTTP/2 handshake.";
        counter(out, "dragoman_backend_connect_failures_total", help, &|e| e.connect_failures.load(Ordering::Relaxed));
        let help = "1 while passive outlier detection has the backend ejected (it turned calls away).";
        gauge(out, "dragoman_backend_ejected", help, &|e| i64::from(e.ejected()));
        let help = "Times passive outlier detection ejected the backend.";
        counter(out, "dragoman_backend_ejections_total", help, &|e| e.ejections_total.load(Ordering::Relaxed));
        let name = "dragoman_backend_healthy";
        let help = "1 while the backend's health checks pass (or none has completed yet), 0 once they fail.";
        let checked: Vec<(&str, u8)> = endpoints
            .iter()
            .filter_map(|e| match e.health() {
                Health::Unchecked => None,
                Health::Unknown | Health::Serving => Some((e.address.as_str(), 1)),
                Health::NotServing => Some((e.address.as_str(), 0)),
            })
            .collect();
        // Left out while no rule checks any backend.
        if !checked.is_empty() {
            family(out, openmetrics, "gauge", name, help);
            for (address, healthy) in checked {
                let _ = writeln!(out, "{name}{{backend=\"{address}\"}} {healthy}");
            }
        }
        let name = "dragoman_backend_call_duration_seconds";
        let help = "Time from sending a call to the backend until its reply ended.";
        family(out, openmetrics, "histogram", name, help);
        for e in &endpoints {
            histogram(out, name, &format!("backend=\"{}\"", e.address), e.latency());
        }
    }
}

impl EndpointStats {
    fn new(address: &str) -> Self {
        EndpointStats {
            address: address.to_owned(),
            shards: Default::default(),
            connections: AtomicI64::new(0),
            connects: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            events: Mutex::new(Events::default()),
            turned_away: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            ejections_total: AtomicU64::new(0),
            probed: tokio::sync::Mutex::new(None),
            health: AtomicU8::new(Health::Unchecked as u8),
            checkers: AtomicU32::new(0),
            checks_passed: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
        }
    }

    fn shard(&self) -> &Shard {
        &self.shards[SHARD.with(std::cell::Cell::get)]
    }

    fn sum(&self, counter: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|s| counter(s).load(Ordering::Relaxed)).fold(0, u64::saturating_add)
    }

    /// A call went out on a stream to the endpoint.
    pub fn call_started(&self) {
        let shard = self.shard();
        shard.in_flight.fetch_add(1, Ordering::Relaxed);
        shard.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Its stream ended (reply done, failed or dropped) after `elapsed`.
    pub fn call_ended(&self, elapsed: Duration) {
        let shard = self.shard();
        shard.in_flight.fetch_sub(1, Ordering::Relaxed);
        shard.latency.record(elapsed);
    }

    /// A call failed at the transport.
    pub fn call_failed(&self) {
        self.shard().failures.fetch_add(1, Ordering::Relaxed);
        self.answered(false);
    }

    /// Passive outlier detection: a call was answered (`true`), or turned away (`false`: a
    /// transport failure, UNAVAILABLE). [`EJECT_AFTER`] in a row eject the endpoint — the balancer
    /// passes it over while at most half the pool is ejected and another endpoint can take the
    /// call — for [`EJECTION_BASE`], doubling with each ejection up to [`EJECTION_MAX`]; a call
    /// answered resets the streak, and a whole [`EJECTION_MAX`] healthy the doubling.
    pub fn answered(&self, ok: bool) {
        let now = epoch().elapsed().as_millis() as u64;
        let until = self.ejected_until.load(Ordering::Relaxed);
        if ok {
            if self.turned_away.load(Ordering::Relaxed) != 0 {
                self.turned_away.store(0, Ordering::Relaxed);
            }
            // Healthy for a whole EJECTION_MAX since its last ejection: the back-off starts over.
            if until != 0 && now > until + EJECTION_MAX.as_millis() as u64 {
                self.ejections.store(0, Ordering::Relaxed);
            }
            return;
        }
        // Calls turned away while ejected (in flight when it was) count for nothing more.
        if now < until {
            return;
        }
        // The call that makes the streak exactly EJECT_AFTER ejects; racing ones do not again.
        if self.turned_away.fetch_add(1, Ordering::Relaxed) + 1 != EJECT_AFTER {
            return;
        }
        self.turned_away.store(0, Ordering::Relaxed);
        self.ejections_total.fetch_add(1, Ordering::Relaxed);
        let ejections = self.ejections.fetch_add(1, Ordering::Relaxed).min(10) as u32;
        let lasts = EJECTION_BASE.saturating_mul(1 << ejections).min(EJECTION_MAX);
        self.ejected_until.store(now + lasts.as_millis() as u64, Ordering::Relaxed);
        tracing::warn!(backend = %self.address, seconds = lasts.as_secs(), "backend ejected: it turned calls away");
    }

    /// Feeds this worker's latency estimate with a call that took `rtt` to answer (or to fail, or
    /// to be given up on). A slower answer than the estimate replaces it at once (the peak);
    /// faster ones pull it down with weight by the time since the last — so a backend turning
    /// slow is avoided from its first slow answer, and trusted again gradually (tower's
    /// `PeakEwma`).
    pub fn answered_after(&self, rtt: Duration) {
        let shard = self.shard();
        let now = now_nanos();
        let sample = rtt.as_nanos() as f64;
        let estimate = f64::from_bits(shard.rtt.load(Ordering::Relaxed));
        let keep = Self::keep(shard, now);
        let decayed = estimate * keep;
        let next = if sample > decayed { sample } else { decayed + sample * (1.0 - keep) };
        shard.rtt.store(next.to_bits(), Ordering::Relaxed);
        shard.rtt_at.store(now, Ordering::Relaxed);
    }

    /// This worker's latency estimate (ns) at `now` ([`now_nanos`]), decayed towards zero since
    /// it was last fed: an endpoint the balancer avoided for its slowness is tried again in time,
    /// which is how the estimate learns it got better.
    pub fn rtt_estimate_at(&self, now: u64) -> f64 {
        Self::rtt_decayed(self.shard(), now)
    }

    /// [`Self::rtt_estimate_at`] now.
    pub fn rtt_estimate(&self) -> f64 {
        self.rtt_estimate_at(now_nanos())
    }

    fn rtt_decayed(shard: &Shard, now: u64) -> f64 {
        f64::from_bits(shard.rtt.load(Ordering::Relaxed)) * Self::keep(shard, now)
    }

    /// How much of the estimate is kept at `now`: e^(-elapsed / decay).
    fn keep(shard: &Shard, now: u64) -> f64 {
        let elapsed = now.saturating_sub(shard.rtt_at.load(Ordering::Relaxed)) as f64;
        (-elapsed / RTT_DECAY_NANOS).exp()
    }

    /// Whether the balancer should pass the endpoint over now.
    pub fn ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && (epoch().elapsed().as_millis() as u64) < until
    }

    /// What the health checks say of it now.
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Whether the health checks have marked it unhealthy: the balancer then gives it no call.
    /// One relaxed load: it is asked for every endpoint a call considers.
    pub fn unhealthy(&self) -> bool {
        self.health.load(Ordering::Relaxed) == Health::NotServing as u8
    }

    /// A health checker starts for the endpoint; it counts until the guard is dropped. The
    /// first one makes the endpoint [`Health::Unknown`]; one that starts while another runs (a
    /// config reload starts the new checkers before it stops the old ones) keeps the verdict.
    pub fn checker(self: &Arc<Self>) -> Checking {
        if self.checkers.fetch_add(1, Ordering::Relaxed) == 0 {
            self.health.store(Health::Unknown as u8, Ordering::Relaxed);
        }
        Checking(self.clone())
    }

    /// A health check's outcome: the error of a failed one is kept for `/admin/backends`.
    pub fn checked(&self, outcome: &Result<(), String>) {
        match outcome {
            Ok(()) => self.checks_passed.fetch_add(1, Ordering::Relaxed),
            Err(error) => {
                self.events.lock().unwrap_or_else(PoisonError::into_inner).last_check_error =
                    Some((SystemTime::now(), error.clone()));
                self.checks_failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    /// The checks' new verdict (a checker's, see [`Checking`]).
    pub fn set_health(&self, health: Health) {
        self.health.store(health as u8, Ordering::Relaxed);
    }

    /// The address is one that `name` (a backend as configured, `http://name:port`) resolved to.
    pub fn resolved_from(&self, name: &str) {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if events.name.as_deref() != Some(name) {
            events.name = Some(name.to_owned());
        }
    }

    /// The backend whose DNS name resolved to this address, if one did.
    pub fn name(&self) -> Option<String> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).name.clone()
    }

    /// A dial answered.
    pub fn connected(&self) {
        self.connects.fetch_add(1, Ordering::Relaxed);
        self.events.lock().unwrap_or_else(PoisonError::into_inner).last_connected = Some(SystemTime::now());
    }

    /// A dial failed with `error`.
    pub fn connect_failed(&self, error: &str) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
        self.events.lock().unwrap_or_else(PoisonError::into_inner).last_error =
            Some((SystemTime::now(), error.to_owned()));
    }

    /// A connection opened; it counts until the guard is dropped (the connection closed).
    pub fn connection(self: &Arc<Self>) -> OpenConnection {
        self.connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }

    pub fn in_flight(&self) -> i64 {
        self.shards.iter().map(|s| s.in_flight.load(Ordering::Relaxed)).sum()
    }

    pub(crate) fn latency(&self) -> Counts {
        let mut total = Counts::default();
        for shard in &self.shards {
            total.add(&shard.latency.counts());
        }
        total
    }

    pub fn state(&self) -> State {
        if self.connections.load(Ordering::Relaxed) > 0 {
            return State::Up;
        }
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        match (&events.last_error, events.last_connected) {
            (Some((failed, _)), Some(connected)) if connected > *failed => State::Idle,
            (Some(_), _) => State::Down,
            (None, _) => State::Idle,
        }
    }

    /// The endpoint as `/admin/backends` shows it.
    pub fn to_json(&self) -> serde_json::Value {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        let time = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let (error_at, error) = match &events.last_error {
            Some((at, error)) => (Some(time(*at)), Some(error.clone())),
            None => (None, None),
        };
        let last_connected = events.last_connected.map(time);
        let (check_error_at, check_error) = match &events.last_check_error {
            Some((at, error)) => (Some(time(*at)), Some(error.clone())),
            None => (None, None),
        };
        let name = events.name.clone();
        drop(events);
        // The highest of the workers' estimates.
        let now = now_nanos();
        let highest = self.shards.iter().map(|s| Self::rtt_decayed(s, now)).fold(0.0, f64::max);
        let latency_estimate_ms = (highest / 1e4).round() / 100.0;
        serde_json::json!({
            "address": self.address,
            "name": name,
            "state": self.state().as_str(),
            "connections": self.connections.load(Ordering::Relaxed),
            "calls_in_flight": self.in_flight(),
            "calls": self.sum(|s| &s.calls),
            "failures": self.sum(|s| &s.failures),
            "connects": self.connects.load(Ordering::Relaxed),
            "connect_failures": self.connect_failures.load(Ordering::Relaxed),
            "ejected": self.ejected(),
            "ejections": self.ejections_total.load(Ordering::Relaxed),
            "latency_estimate_ms": latency_estimate_ms,
            "last_connected": last_connected,
            "last_error": error,
            "last_error_at": error_at,
            "health": self.health().as_str(),
            "checks_passed": self.checks_passed.load(Ordering::Relaxed),
            "checks_failed": self.checks_failed.load(Ordering::Relaxed),
            "last_check_error": check_error,
            "last_check_error_at": check_error_at,
        })
    }

    /// Whether the endpoint can be reached now: a connection is open, or a TCP dial to
    /// `authority` connects within `timeout`. One dial at a time, its answer kept for a second,
    /// so that probes in a burst do not each dial every backend.
    pub async fn reachable(&self, authority: &str, timeout: Duration) -> bool {
        if self.connections.load(Ordering::Relaxed) > 0 {
            return true;
        }
        let mut probed = self.probed.lock().await;
        if let Some((_, reached)) = probed.filter(|(at, _)| at.elapsed() < Duration::from_secs(1)) {
            return reached;
        }
        let dial = tokio::net::TcpStream::connect(authority);
        let reached = matches!(tokio::time::timeout(timeout, dial).await, Ok(Ok(_)));
        *probed = Some((tokio::time::Instant::now(), reached));
        reached
    }
}

/// A running health checker of an endpoint, counted until dropped (its task aborted or ended):
/// the last one leaves the endpoint [`Health::Unchecked`], so that a config that no longer checks
/// it does not keep an old verdict.
pub struct Checking(Arc<EndpointStats>);

impl Drop for Checking {
    fn drop(&mut self) {
        if self.0.checkers.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.health.store(Health::Unchecked as u8, Ordering::Relaxed);
        }
    }
}

/// One open connection, counted until dropped.
pub struct OpenConnection(Arc<EndpointStats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_count_apart_and_add_up() {
        let backends = Backends::default();
        let endpoint = backends.endpoint("http://10.0.0.1:50051");
        for worker in 0..3 {
            std::thread::scope(|s| {
                s.spawn(|| {
                    set_worker(worker);
                    endpoint.call_started();
                    endpoint.call_ended(Duration::from_millis(3));
                    endpoint.call_started();
                    endpoint.call_failed();
                });
            });
        }
        assert_eq!(endpoint.sum(|s| &s.calls), 6);
        assert_eq!(endpoint.sum(|s| &s.failures), 3);
        assert_eq!(endpoint.in_flight(), 3);
        let mut out = String::new();
        backends.render(&mut out, false);
        assert!(out.contains("dragoman_backend_calls_total{backend=\"http://10.0.0.1:50051\"} 6"), "{out}");
        assert!(out.contains("dragoman_backend_call_duration_seconds_count{backend=\"http://10.0.0.1:50051\"} 3"));
        drop(endpoint);
        assert!(backends.current().is_empty(), "an endpoint no pool holds is forgotten");
    }

    #[test]
    fn health_is_unchecked_unless_a_checker_runs_and_shown_for_checked_endpoints() {
        let backends = Backends::default();
        let stats = backends.endpoint("http://b:1");
        assert_eq!((stats.health(), stats.unhealthy()), (Health::Unchecked, false));
        let first = stats.checker();
        assert_eq!(stats.health(), Health::Unknown, "served as healthy until a check completes");
        stats.set_health(Health::NotServing);
        assert!(stats.unhealthy());
        let mut out = String::new();
        backends.render(&mut out, false);
        assert!(out.contains("dragoman_backend_healthy{backend=\"http://b:1\"} 0\n"), "{out}");
        // A reload's checker starts before the old one stops: the verdict stands.
        let second = stats.checker();
        drop(first);
        assert_eq!(stats.health(), Health::NotServing);
        drop(second);
        assert_eq!(stats.to_json()["health"], "unchecked", "the last checker gone, nothing checks it");
        let mut out = String::new();
        backends.render(&mut out, false);
        assert!(!out.contains("dragoman_backend_healthy"), "only for checked endpoints: {out}");
    }

    #[test]
    fn the_state_follows_connections_and_dials() {
        let stats = Arc::new(EndpointStats::new("http://b:1"));
        assert_eq!(stats.state(), State::Idle);
        stats.connect_failed("connection refused");
        assert_eq!(stats.state(), State::Down);
        let open = stats.connection();
        stats.connected();
        assert_eq!(stats.state(), State::Up);
        drop(open);
        assert_eq!(stats.state(), State::Idle, "closed after connecting: idle, not down");
        assert_eq!(stats.to_json()["last_error"], "connection refused");
    }
}
