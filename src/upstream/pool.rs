//! The backends of one config rule, and how calls spread over them (`services[].balance`): by
//! default the power of two choices — two endpoints drawn at random, the call going to
//! the one with the lower peak-EWMA load (latency estimate times calls in flight, across every
//! worker, divided by weight), so a slow or overloaded backend is given less; else round-robin (by weight) over the
//! endpoints that can take a call now, without waiting on those that cannot; or by a header's
//! value (rendezvous hashing: the same value, the same backend while it can serve).
//!
//! A backend named by DNS is one endpoint per address its name resolved to (`dns`): when the
//! addresses change, the next call builds the endpoint list anew — keeping the endpoints, and
//! their connections, whose address stays — and the turns and rendezvous order follow it. A call
//! pays for that check a pointer load and one atomic load; nothing is locked or allocated while
//! nothing changed.
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

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::connection::{Endpoint, Status, Stream, dialed};
use crate::config::{Balance, ServiceRule};
use crate::observe::backends::Backends;

pub(super) struct Pool {
    rule: Arc<ServiceRule>,
    /// The endpoints now: fixed, unless a backend is named by DNS; then replaced when the
    /// addresses of its name change.
    endpoints: ArcSwap<Endpoints>,
    next: AtomicUsize,
    /// Told when a stream frees up on any of the pool's connections (one waiter), and when a
    /// connection closes, goes away or raises its limit, or the endpoints change (every waiter).
    freed: Arc<Notify>,
    /// Where the figures of an endpoint are kept.
    backends: Arc<Backends>,
}

/// A pool's endpoints and their turns, replaced as a whole.
pub(super) struct Endpoints {
    /// The [`super::Resolved::generation`] they were built from (0 when no backend is named).
    generation: u64,
    list: Box<[Arc<Endpoint>]>,
    /// For each endpoint, its backend's place in the rule.
    backend_of: Box<[usize]>,
    /// Endpoint indexes in turn, each as often as its weight (smooth weighted round-robin).
    turns: Box<[usize]>,
}

/// FNV-1a: a stable hash (the same in every process), for keys that must pick the same backend
/// on every gateway.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A 64-bit mix of a counter (splitmix64's finaliser): the pool's cheap, lock-free random pick.
fn mix(n: usize) -> u64 {
    let mut z = (n as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Endpoint indexes, each as often as its weight, spread evenly (nginx's smooth weighted
/// round-robin: weights 5, 1, 1 give a a b a c a a, not a a a a a b c).
fn turns(weights: &[u32]) -> Box<[usize]> {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            for (c, w) in current.iter_mut().zip(weights) {
                *c += i64::from(*w);
            }
            let best = (0..weights.len()).max_by_key(|i| (current[*i], std::cmp::Reverse(*i))).unwrap_or(0);
            current[best] -= total;
            best
        })
        .collect()
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

impl Endpoints {
    /// `rule`'s endpoints: one per backend, or, once a backend's name has resolved, one per
    /// address it resolved to. Those of `previous` at the same address of the same backend are
    /// kept, connections and all; the others are dropped from the pool, and the calls in flight
    /// on them finish (each holds its connection).
    fn build(rule: &Arc<ServiceRule>, backends: &Backends, freed: &Arc<Notify>, previous: Option<&Endpoints>) -> Self {
        // Read before the lists: a list published meanwhile makes the next call build again.
        let generation = rule.resolved.as_ref().map_or(0, |r| r.generation());
        let mut list = Vec::with_capacity(rule.backends.len());
        let mut backend_of = Vec::with_capacity(rule.backends.len());
        for (i, backend) in rule.backends.iter().enumerate() {
            let kept = |authority: &str| previous.and_then(|p| p.find(i, authority));
            let new = |backend, stats| Arc::new(Endpoint::new(backend, rule.clone(), freed.clone(), stats));
            match rule.addresses(i) {
                Some(addresses) => {
                    for address in addresses.iter() {
                        let at = backend.at(address.socket);
                        list.push(kept(&at.authority).unwrap_or_else(|| new(at, address.stats.clone())));
                        backend_of.push(i);
                    }
                }
                // An IP address, or a name not resolved yet: dialed as it is.
                None => {
                    let endpoint = kept(&backend.authority)
                        .unwrap_or_else(|| new(backend.clone(), backends.endpoint(&backend.to_string())));
                    list.push(endpoint);
                    backend_of.push(i);
                }
            }
        }
        let turns = turns(&list.iter().map(|e| e.backend.weight).collect::<Vec<_>>());
        Endpoints { generation, list: list.into(), backend_of: backend_of.into(), turns }
    }

    /// The endpoint of the rule's `backend`-th backend that dials `authority`.
    fn find(&self, backend: usize, authority: &str) -> Option<Arc<Endpoint>> {
        let mut found = self.list.iter().zip(self.backend_of.iter());
        found.find(|(e, b)| **b == backend && e.backend.authority == authority).map(|(e, _)| e.clone())
    }

    /// The endpoints in `key`'s rendezvous order (weighted: score `weight / -ln(u)`, `u` uniform
    /// from the key and the endpoint's address): the same order on every worker and gateway, and
    /// removing one endpoint moves only the keys that were its.
    fn rendezvous(&self, key: u64) -> Vec<usize> {
        let score = |e: &Endpoint| {
            let u = ((mix((key ^ fnv1a(e.backend.authority.as_bytes())) as usize) >> 11) as f64 + 0.5)
                / (1u64 << 53) as f64;
            f64::from(e.backend.weight) / -u.ln()
        };
        let mut scored: Vec<(f64, usize)> = self.list.iter().enumerate().map(|(i, e)| (score(e), i)).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().map(|(_, i)| i).collect()
    }

    /// Where to look first, in turn: the draw's turn (weighted). A keyed call's order is
    /// [`Endpoints::rendezvous`] instead.
    fn start(&self, draw: usize) -> usize {
        self.turns[draw % self.turns.len()]
    }

    /// Whether ejected endpoints may be passed over: while at most half the healthy endpoints
    /// are ejected (so ejections cannot pile the whole load onto the last endpoints standing).
    fn may_pass_over_ejected(&self) -> bool {
        let (mut healthy, mut ejected) = (0, 0);
        for endpoint in self.list.iter().filter(|e| !e.unhealthy()) {
            healthy += 1;
            ejected += usize::from(endpoint.ejected());
        }
        ejected > 0 && ejected * 2 <= healthy
    }

    /// The power of two choices: of two endpoints drawn at random, the one with the lower load
    /// (`Endpoint::load`), if it (or else the other) can take the call now. None: look at them all
    /// in turn.
    fn two_choices(&self, balance: Balance, draw: usize, avoid: &[String]) -> Option<(Stream, Arc<Endpoint>)> {
        let n = self.list.len();
        // Calls without a key in `balance: hash` are balanced as p2c too.
        if n < 2 || balance == Balance::RoundRobin {
            return None;
        }
        // Two distinct endpoints, uniformly: the weight counts in the load compared.
        let random = mix(draw);
        let a = (random % n as u64) as usize;
        let mut b = ((random >> 32) % (n as u64 - 1)) as usize;
        if b >= a {
            b += 1;
        }
        let (a, b) = (&self.list[a], &self.list[b]);
        let now = crate::observe::backends::now_nanos();
        let (first, second) = if a.load_at(now) <= b.load_at(now) { (a, b) } else { (b, a) };
        // Whether ejected endpoints may be passed over is asked (a walk of the pool) only of a
        // drawn endpoint that is ejected.
        let passed_over = move |e: &&Arc<Endpoint>| {
            e.unhealthy() || avoid.contains(&e.backend.authority) || (e.ejected() && self.may_pass_over_ejected())
        };
        let usable = move |e: &&Arc<Endpoint>| !passed_over(e);
        [first, second].into_iter().filter(usable).find_map(|endpoint| match endpoint.status() {
            Status::Ready(connection) => connection.try_stream().map(|stream| (stream, endpoint.clone())),
            _ => None,
        })
    }
}

impl Pool {
    pub(super) fn new(rule: &Arc<ServiceRule>, backends: &Arc<Backends>) -> Self {
        let freed = Arc::new(Notify::new());
        let endpoints = Endpoints::build(rule, backends, &freed, None);
        // Each worker's pool starts its turns somewhere else, so workers do not draw in step.
        let seed = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), rule.index) as usize;
        Pool {
            rule: rule.clone(),
            endpoints: ArcSwap::from_pointee(endpoints),
            next: AtomicUsize::new(seed),
            freed,
            backends: backends.clone(),
        }
    }

    /// The rule it serves.
    pub(super) fn rule(&self) -> &Arc<ServiceRule> {
        &self.rule
    }

    /// The endpoints now. What a call pays when nothing changed: a pointer load and, if a backend
    /// is named by DNS, one atomic load of the names' generation; when it did change, this call
    /// builds the new endpoints (keeping those whose address stays).
    fn endpoints(&self) -> Arc<Endpoints> {
        let current = self.endpoints.load_full();
        match &self.rule.resolved {
            Some(resolved) if resolved.generation() != current.generation => {
                let fresh = Arc::new(Endpoints::build(&self.rule, &self.backends, &self.freed, Some(&current)));
                self.endpoints.store(fresh.clone());
                // Calls waiting for an endpoint that went, look again.
                self.freed.notify_waiters();
                fresh
            }
            _ => current,
        }
    }

    /// A stream to send a call on, and its endpoint; waits at most `patience` for a full
    /// connection to free a stream.
    /// The backends in `avoid` (`host:port`, a retried call's earlier attempts) are passed over
    /// like ejected ones: while another endpoint can take the call.
    /// With `affinity` (a `balance: hash` call's hashed key), the endpoints are looked at in the
    /// key's rendezvous order: the first that has a free stream takes it, and a dial under way
    /// is waited for before any endpoint after it.
    pub(super) async fn stream(
        &self,
        patience: Duration,
        avoid: &[String],
        affinity: Option<u64>,
    ) -> Result<(Stream, Arc<Endpoint>), NoStream> {
        let draw = self.next.fetch_add(1, Ordering::Relaxed);
        let mut endpoints = self.endpoints();
        if affinity.is_none() {
            if let Some(found) = endpoints.two_choices(self.rule.balance, draw, avoid) {
                return Ok(found);
            }
        }
        // The order to look in: a keyed call's rendezvous order, else in turn from `start` (no
        // allocation).
        let mut ranked = affinity.map(|key| endpoints.rendezvous(key));
        let mut start = endpoints.start(draw);
        let give_up = Instant::now() + patience;
        let mut skip_ejected = endpoints.may_pass_over_ejected();
        let mut skip_avoided = !avoid.is_empty();
        let mut first = true;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before looking, so a stream freed in between is not missed.
            freed.as_mut().enable();
            // The endpoints changed while the call waited (a name's addresses did): it looks at
            // the new ones.
            if !std::mem::take(&mut first) {
                let latest = self.endpoints();
                if !Arc::ptr_eq(&latest, &endpoints) {
                    endpoints = latest;
                    ranked = affinity.map(|key| endpoints.rendezvous(key));
                    start = endpoints.start(draw);
                }
            }
            let n = endpoints.list.len();
            let mut dialing = Vec::new();
            let mut failures = Vec::new();
            let mut full = None;
            let mut passed_over = false;
            let mut unhealthy = 0;
            for k in 0..n {
                let endpoint = &endpoints.list[ranked.as_ref().map_or((start + k) % n, |ranked| ranked[k])];
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
                        Some(stream) => return Ok((stream, endpoint.clone())),
                        None => full = full.max(Some(connection.limit())),
                    },
                    Status::Dialing(receiver) => {
                        let endpoint = endpoint.clone();
                        dialing.push(dialed(receiver).map(move |r| r.map(|c| (c, endpoint))).boxed());
                        // A keyed call waits for its endpoint's dial rather than going elsewhere
                        // (the next in its order takes it only while this one is backing off or full).
                        if ranked.is_some() {
                            break;
                        }
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

    fn pool(backends: &str) -> Pool {
        let yaml = format!("services:\n  - match: x.Y\n    backends: {backends}\n");
        let config = crate::config::Config::parse(&yaml, std::path::Path::new(".")).expect("config");
        Pool::new(&config.services[0], &Arc::new(Backends::default()))
    }

    #[test]
    fn weighted_turns_are_spread_not_bunched() {
        assert_eq!(&*turns(&[5, 1, 1]), &[0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(&*turns(&[1, 1, 1]), &[0, 1, 2]);
        let turns = turns(&[3, 1]);
        assert_eq!(turns.iter().filter(|i| **i == 0).count(), 3);
        assert_eq!(turns.len(), 4);
    }

    #[test]
    fn rendezvous_moves_only_the_keys_of_a_backend_removed() {
        let four = pool("[http://a:1, http://b:1, http://c:1, http://d:1]").endpoints();
        let three = pool("[http://a:1, http://b:1, http://c:1]").endpoints();
        let mut moved = 0;
        let mut counts = [0; 4];
        for key in 0..4000u64 {
            let key = fnv1a(&key.to_le_bytes());
            let first = four.rendezvous(key)[0];
            counts[first] += 1;
            // The same order every time it is asked.
            assert_eq!(four.rendezvous(key), four.rendezvous(key));
            if first != 3 {
                assert_eq!(three.rendezvous(key)[0], first, "a key of a, b or c stays");
            } else {
                moved += 1;
            }
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "about a quarter each: {counts:?}");
        assert_eq!(moved, counts[3]);
    }

    #[test]
    fn under_p2c_a_weight_divides_the_load_compared() {
        let weighted = pool("[{address: 'http://a:1', weight: 3}, http://b:1]");
        let list = &weighted.endpoints().list;
        // Nothing in flight, nothing heard: both at the floor, the weight-3 one a third of it.
        assert!((list[1].load() / list[0].load() - 3.0).abs() < 1e-9, "{} {}", list[0].load(), list[1].load());
        // Equal figures otherwise, so the heavier wins a comparison until it carries three times
        // the calls in flight.
        list[0].stats().call_started();
        assert!(list[0].load() < list[1].load(), "one in flight: still the lighter load");
        list[0].stats().call_started();
        list[0].stats().call_started();
        assert!(list[0].load() > list[1].load(), "three in flight: now the heavier");
    }

    #[test]
    fn rendezvous_shares_follow_the_weights() {
        let weighted = pool("[{address: http://a:1, weight: 3}, http://b:1]").endpoints();
        let a = (0..4000u64).filter(|k| weighted.rendezvous(fnv1a(&k.to_le_bytes()))[0] == 0).count();
        assert!((2800..3200).contains(&a), "three quarters to the weight-3 backend: {a} of 4000");
    }

    /// A pool of `n` backends nothing listens on, the first `unhealthy` of them marked unhealthy.
    fn checked_pool(n: usize, unhealthy: usize) -> (Pool, Arc<Backends>) {
        let dead = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        let addresses: Vec<String> = (0..n).map(|_| format!("http://127.0.0.1:{}", dead().unwrap_or(1))).collect();
        let yaml =
            format!("services:\n  - match: x.Y\n    backends: [{}]\n    connect_timeout: 10s\n", addresses.join(", "));
        let config = crate::config::Config::parse(&yaml, std::path::Path::new(".")).expect("config");
        let backends = Arc::new(Backends::default());
        let pool = Pool::new(&config.services[0], &backends);
        for address in &addresses[..unhealthy] {
            backends.endpoint(address).set_health(crate::observe::backends::Health::NotServing);
        }
        (pool, backends)
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_endpoint_unhealthy_a_call_fails_at_once_without_a_dial() {
        let (pool, backends) = checked_pool(3, 3);
        let started = Instant::now();
        assert!(matches!(pool.stream(Duration::from_secs(10), &[], None).await, Err(NoStream::Unhealthy)));
        assert_eq!(started.elapsed(), Duration::ZERO, "no wait at all");
        let dials: u64 = backends.current().iter().map(|e| e.to_json()["connect_failures"].as_u64().unwrap_or(0)).sum();
        assert_eq!(dials, 0, "nothing was dialed");
    }

    #[tokio::test]
    async fn an_unhealthy_endpoint_is_never_tried_even_when_the_others_are_down() {
        let (pool, _backends) = checked_pool(2, 1);
        let endpoints = pool.endpoints();
        let unhealthy = endpoints.list[0].backend.to_string();
        let Err(NoStream::Unreachable(why)) = pool.stream(Duration::from_secs(10), &[], None).await else {
            panic!("the healthy endpoint is down")
        };
        assert!(!why.contains(&unhealthy) && why.contains(&endpoints.list[1].backend.to_string()), "{why}");
    }

    #[test]
    fn the_endpoints_follow_a_name_keeping_those_whose_address_stays() {
        let yaml =
            "services:\n  - match: x.Y\n    backends: [http://10.0.0.9:1, {address: http://svc:80, weight: 2}]\n";
        let config = crate::config::Config::parse(yaml, std::path::Path::new(".")).expect("config");
        let rule = &config.services[0];
        let backends = Arc::new(Backends::default());
        let pool = Pool::new(rule, &backends);
        let shown = |e: &Endpoints| e.list.iter().map(|e| e.backend.to_string()).collect::<Vec<_>>();
        let before = pool.endpoints();
        assert_eq!(
            shown(&before),
            ["http://10.0.0.9:1", "http://svc:80"],
            "the name dialed as it is until it resolves"
        );
        let resolved = rule.resolved.clone().expect("a backend is named");
        let publish = |ips: &[&str]| {
            let list = ips.iter().map(|ip| {
                let socket: std::net::SocketAddr = format!("{ip}:80").parse().expect("address");
                super::super::Address { socket, stats: backends.endpoint(&format!("http://{socket}")) }
            });
            resolved.publish(1, Arc::new(list.collect()));
        };

        publish(&["10.0.0.1", "10.0.0.2"]);
        let two = pool.endpoints();
        assert_eq!(shown(&two), ["http://10.0.0.9:1", "http://10.0.0.1:80", "http://10.0.0.2:80"]);
        assert!(Arc::ptr_eq(&two.list[0], &before.list[0]), "the IP backend's endpoint stays");
        assert_eq!(&*two.turns, &*turns(&[1, 2, 2]), "each address with the backend's weight");
        let at = &two.list[1].backend;
        assert_eq!((at.uri_authority.as_str(), at.host.as_str()), ("svc:80", "svc"), "sent and verified as named");
        assert!(Arc::ptr_eq(&pool.endpoints(), &two), "nothing changed: the same endpoints, nothing built");

        publish(&["10.0.0.2", "10.0.0.3"]);
        let three = pool.endpoints();
        assert_eq!(shown(&three), ["http://10.0.0.9:1", "http://10.0.0.2:80", "http://10.0.0.3:80"]);
        assert!(Arc::ptr_eq(&three.list[1], &two.list[2]), "10.0.0.2 keeps its endpoint (and connections)");
        let key = fnv1a(b"k");
        assert!(three.rendezvous(key).len() == 3 && three.start(7) < 3);
    }
}
