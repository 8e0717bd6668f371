//! The backends of one config rule, and how calls spread over them: by default the power of two
//! choices — two endpoints picked at random, the call going to the one with fewer calls in flight
//! (across every worker), so a slow or overloaded backend is given less — else round-robin
//! (`services[].balance`) over the endpoints that can take a call now, without waiting on those
//! that cannot.
//!
//! An endpoint the active health checks mark unhealthy (`services[].health_check`) is never given
//! a call — the operator asked for it, so no share of the pool is kept serving regardless, as it
//! is for ejection — and when every endpoint is, the call fails at once: no dial, no queue.
//!
//! A call looks for a live connection with a free stream, starting from the next endpoint in
//! turn; endpoints in back-off are skipped, idle ones start dialing in the background. Only when
//! none can take it now does the call wait — for the first dial under way to succeed, or for a
//! stream to free up on any connection at its limit — and then it looks at every endpoint again:
//! a connection may have closed, a backend raised its limit, another endpoint come back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::connection::{Endpoint, Status, Stream, dialed};
use crate::config::{Balance, ServiceRule};
use crate::observe::backends::Backends;

pub(super) struct Pool {
    rule: Arc<ServiceRule>,
    endpoints: Box<[Arc<Endpoint>]>,
    next: AtomicUsize,
    /// Told when a stream frees up on any of the pool's connections (one waiter), and when a
    /// connection closes, goes away or raises its limit (every waiter).
    freed: Arc<Notify>,
}

/// A 64-bit mix of a counter (splitmix64's finaliser): the pool's cheap, lock-free random pick.
fn mix(n: usize) -> u64 {
    let mut z = (n as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Why no stream could be had: for the log, not for the client.
pub(super) enum NoStream {
    /// Every endpoint failed to connect (their errors).
    Unreachable(String),
    /// Connections are up, but at the backend's stream limit for longer than the call could wait.
    Full { limit: u32 },
    /// The health checks mark every endpoint unhealthy.
    Unhealthy,
}

impl Pool {
    pub(super) fn new(rule: &Arc<ServiceRule>, backends: &Backends) -> Self {
        let freed = Arc::new(Notify::new());
        let endpoints = rule
            .backends
            .iter()
            .map(|b| {
                let stats = backends.endpoint(&b.to_string());
                Arc::new(Endpoint::new(b.clone(), rule.clone(), freed.clone(), stats))
            })
            .collect();
        // Each worker's pool starts its turns somewhere else, so workers do not draw in step.
        let seed = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), rule.index) as usize;
        Pool { rule: rule.clone(), endpoints, next: AtomicUsize::new(seed), freed }
    }

    /// The rule it serves.
    pub(super) fn rule(&self) -> &Arc<ServiceRule> {
        &self.rule
    }

    /// Whether ejected endpoints may be passed over: while at most half the healthy endpoints
    /// are ejected (so ejections cannot pile the whole load onto the last endpoints standing).
    fn may_pass_over_ejected(&self) -> bool {
        let (mut healthy, mut ejected) = (0, 0);
        for endpoint in self.endpoints.iter().filter(|e| !e.unhealthy()) {
            healthy += 1;
            ejected += usize::from(endpoint.ejected());
        }
        ejected > 0 && ejected * 2 <= healthy
    }

    /// The power of two choices: of two endpoints picked at random, the one with fewer calls in
    /// flight, if it (or else the other) can take the call now. None: look at them all in turn.
    fn two_choices(&self, draw: usize, avoid: &[String]) -> Option<(Stream, &Endpoint)> {
        let n = self.endpoints.len();
        if n < 2 || self.rule.balance != Balance::PowerOfTwoChoices {
            return None;
        }
        let random = mix(draw);
        let a = (random % n as u64) as usize;
        let mut b = ((random >> 32) % (n as u64 - 1)) as usize;
        if b >= a {
            b += 1;
        }
        let (a, b) = (&self.endpoints[a], &self.endpoints[b]);
        let (first, second) = if a.load() <= b.load() { (a, b) } else { (b, a) };
        let skip_ejected = self.may_pass_over_ejected();
        let passed_over = move |e: &&Arc<Endpoint>| {
            e.unhealthy() || avoid.contains(&e.backend.authority) || (skip_ejected && e.ejected())
        };
        let usable = move |e: &&Arc<Endpoint>| !passed_over(e);
        [first, second].into_iter().filter(usable).find_map(|endpoint| match endpoint.status() {
            Status::Ready(connection) => connection.try_stream().map(|stream| (stream, &**endpoint)),
            _ => None,
        })
    }

    /// A stream to send a call on, and its endpoint; waits at most `patience` for a full
    /// connection to free a stream.
    /// The backends in `avoid` (`host:port`, a retried call's earlier attempts) are passed over
    /// like ejected ones: while another endpoint can take the call.
    pub(super) async fn stream(&self, patience: Duration, avoid: &[String]) -> Result<(Stream, &Endpoint), NoStream> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(found) = self.two_choices(start, avoid) {
            return Ok(found);
        }
        let give_up = Instant::now() + patience;
        let n = self.endpoints.len();
        let mut skip_ejected = self.may_pass_over_ejected();
        let mut skip_avoided = !avoid.is_empty();
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before looking, so a stream freed in between is not missed.
            freed.as_mut().enable();
            let mut dialing = Vec::new();
            let mut failures = Vec::new();
            let mut full = None;
            let mut passed_over = false;
            let mut unhealthy = 0;
            for i in 0..n {
                let endpoint = &self.endpoints[(start + i) % n];
                // Never a call for it, whatever else is down: the health checks keep it out.
                if endpoint.unhealthy() {
                    unhealthy += 1;
                    continue;
                }
                if (skip_ejected && endpoint.ejected()) || (skip_avoided && avoid.contains(&endpoint.backend.authority))
                {
                    passed_over = true;
                    continue;
                }
                match endpoint.status() {
                    Status::Ready(connection) => match connection.try_stream() {
                        Some(stream) => return Ok((stream, endpoint)),
                        None => full = full.max(Some(connection.limit())),
                    },
                    Status::Dialing(receiver) => {
                        dialing.push(dialed(receiver).map(move |r| r.map(|c| (c, endpoint))).boxed());
                    }
                    Status::BackingOff(error) => failures.push(format!("{}: {error}", endpoint.backend)),
                }
            }
            if unhealthy == n {
                return Err(NoStream::Unhealthy);
            }
            // Nothing can take the call now: the first dial to succeed...
            if !dialing.is_empty() {
                match futures_util::future::select_ok(dialing).await {
                    Ok(((connection, endpoint), _)) => match connection.try_stream() {
                        Some(stream) => return Ok((stream, endpoint)),
                        None => continue,
                    },
                    // Now in back-off: the next look reports them.
                    Err(_) => continue,
                }
            }
            let Some(limit) = full else {
                // The endpoints not ejected cannot be reached: the ejected ones may still serve.
                if passed_over {
                    skip_ejected = false;
                    skip_avoided = false;
                    continue;
                }
                return Err(NoStream::Unreachable(failures.join("; ")));
            };
            // ...or a change on a connection at its limit, then look again.
            if tokio::time::timeout_at(give_up, freed).await.is_err() {
                return Err(NoStream::Full { limit });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of `n` backends nothing listens on, the first `unhealthy` of them marked unhealthy.
    fn pool(n: usize, unhealthy: usize) -> (Pool, Backends) {
        let dead = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        let addresses: Vec<String> = (0..n).map(|_| format!("http://127.0.0.1:{}", dead().unwrap_or(1))).collect();
        let yaml =
            format!("services:\n  - match: x.Y\n    backends: [{}]\n    connect_timeout: 10s\n", addresses.join(", "));
        let config = crate::config::Config::parse(&yaml, std::path::Path::new(".")).expect("config");
        let backends = Backends::default();
        let pool = Pool::new(&config.services[0], &backends);
        for address in &addresses[..unhealthy] {
            backends.endpoint(address).set_health(crate::observe::backends::Health::NotServing);
        }
        (pool, backends)
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_endpoint_unhealthy_a_call_fails_at_once_without_a_dial() {
        let (pool, backends) = pool(3, 3);
        let started = Instant::now();
        assert!(matches!(pool.stream(Duration::from_secs(10), &[]).await, Err(NoStream::Unhealthy)));
        assert_eq!(started.elapsed(), Duration::ZERO, "no wait at all");
        let dials: u64 = backends.current().iter().map(|e| e.to_json()["connect_failures"].as_u64().unwrap_or(0)).sum();
        assert_eq!(dials, 0, "nothing was dialed");
    }

    #[tokio::test]
    async fn an_unhealthy_endpoint_is_never_tried_even_when_the_others_are_down() {
        let (pool, _backends) = pool(2, 1);
        let unhealthy = pool.endpoints[0].backend.to_string();
        let Err(NoStream::Unreachable(why)) = pool.stream(Duration::from_secs(10), &[]).await else {
            panic!("the healthy endpoint is down")
        };
        assert!(!why.contains(&unhealthy) && why.contains(&pool.endpoints[1].backend.to_string()), "{why}");
    }
}
