//! Backends named by DNS (`services[].backends` whose host is a name: a headless Kubernetes
//! service, a Consul service): the name stands for every address it resolves to, each an
//! endpoint of its own in every worker's pool — its own connections, load, ejection and health —
//! and the addresses are looked up again on a schedule, so instances come and go without a
//! config reload.
//!
//! - One resolver task per rule and named backend, on the gateway's runtime and shared by every
//!   worker ([`Resolvers`]): started when a config becomes current, aborted when it is replaced
//!   (a descriptor reload leaves them running), as the health checkers are.
//! - Every `resolve_interval` it asks the nameservers again (the answer's TTL does not stretch
//!   the interval: nothing is cached in between) and publishes a list that changed in the rule's
//!   [`Resolved`]. Each worker's pool sees that with one atomic load per call and rebuilds its
//!   endpoints, keeping those (and their connections) whose address stays; calls in flight on an
//!   address that went finish on their connection.
//! - A failed resolution, or an empty answer, keeps the last list (logged once, until the name
//!   resolves again): a DNS outage never empties a pool.
//! - Until a name's first answer its pools dial the name as it is (the system's resolver at each
//!   dial, as for `localhost`), so a config serves at once, never later than it would without
//!   this; a reloaded config starts from the previous config's answer for the same backend.
//! - With `health_check`, each address has a checker of its own, started and stopped with the
//!   list.
//!
//! Not here: which nameservers (`config::Dns`), and what a pool makes of the list (`pool`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;

use crate::config::{Backend, Config, Dns, ServiceRule};
use crate::observe::backends::{Backends, EndpointStats};

/// The most addresses one name stands for in a pool (each worker rebuilds its endpoints, weighted
/// turns included, when they change; a huge answer must not stall it).
const MAX_ADDRESSES: usize = 256;

/// The longest one resolution may take (the nameservers' own timeouts and retries included).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// One address a name resolved to, and its figures: held while the name resolves to it, so
/// `/admin/backends` shows it before any call went there.
#[derive(Clone)]
pub struct Address {
    pub socket: SocketAddr,
    pub stats: Arc<EndpointStats>,
}

/// What the names of one rule's backends resolve to now: written by their resolvers, read by
/// every worker's pool of the rule.
pub struct Resolved {
    /// Bumped after any list changed: a pool compares it with the one it built its endpoints of.
    generation: AtomicU64,
    /// Per backend of the rule, in its order: the latest addresses of its name; None before the
    /// first answer, and for backends that are IP addresses.
    lists: Box<[ArcSwapOption<Vec<Address>>]>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved").field("generation", &self.generation()).finish_non_exhaustive()
    }
}

impl Resolved {
    /// Nothing resolved yet, for a rule of `backends` backends.
    pub fn new(backends: usize) -> Self {
        Resolved { generation: AtomicU64::new(0), lists: (0..backends).map(|_| ArcSwapOption::empty()).collect() }
    }

    /// Changes with every list published. Read before the lists, so a pool that built from the
    /// lists after reading it never misses a change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The addresses the name of the rule's `backend`-th backend resolved to last, if it has.
    pub fn addresses(&self, backend: usize) -> Option<Arc<Vec<Address>>> {
        self.lists.get(backend).and_then(ArcSwapOption::load_full)
    }

    pub(super) fn publish(&self, backend: usize, list: Arc<Vec<Address>>) {
        if let Some(slot) = self.lists.get(backend) {
            slot.store(Some(list));
            self.generation.fetch_add(1, Ordering::Release);
        }
    }
}

/// Seeds `config`'s lists with `previous`'s answers for the same backends (`http://name:port`),
/// so that a reloaded config's pools start where the old ones were instead of dialing names as
/// they are until the first answer.
pub fn carry_over(config: &Config, previous: &Config) {
    let answers: BTreeMap<String, Arc<Vec<Address>>> = previous
        .services
        .iter()
        .filter_map(|rule| Some((rule, rule.resolved.as_ref()?)))
        .flat_map(|(rule, resolved)| {
            rule.backends.iter().enumerate().filter_map(|(i, b)| Some((b.to_string(), resolved.addresses(i)?)))
        })
        .collect();
    for rule in &config.services {
        let Some(resolved) = &rule.resolved else { continue };
        for (i, backend) in rule.backends.iter().enumerate().filter(|(_, b)| b.resolves) {
            if let Some(list) = answers.get(&backend.to_string()) {
                resolved.publish(i, list.clone());
            }
        }
    }
}

/// The resolvers of one config's named backends. Dropping it aborts them (and the health
/// checkers of their addresses).
#[derive(Default)]
pub struct Resolvers {
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Resolvers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolvers").field("names", &self.tasks.len()).finish()
    }
}

impl Resolvers {
    /// Starts, on `runtime`, a resolver for each backend of `config` named by DNS, its figures
    /// in `backends`. The addresses already known (carried over from the previous config) are
    /// health-checked from now on.
    pub fn start(config: &Config, backends: &Arc<Backends>, runtime: &tokio::runtime::Handle) -> Self {
        let mut tasks = JoinSet::new();
        // A config reload may come from the file watcher's thread: the resolver is made, and
        // spawns its sockets' tasks, in the gateway's runtime.
        let _runtime = runtime.enter();
        let named = config.services.iter().filter_map(|rule| Some((rule, rule.resolved.as_ref()?)));
        let mut lookup = None;
        for (rule, resolved) in named {
            for (index, backend) in rule.backends.iter().enumerate().filter(|(_, b)| b.resolves) {
                // One resolver (and its sockets) for the whole config, made only when needed.
                let lookup = lookup.get_or_insert_with(|| Lookup::new(&config.dns)).clone();
                let mut follower = Follower {
                    rule: rule.clone(),
                    index,
                    name: backend.to_string(),
                    backend: backend.clone(),
                    lookup,
                    resolved: resolved.clone(),
                    backends: backends.clone(),
                    runtime: runtime.clone(),
                    checkers: BTreeMap::new(),
                    failing: false,
                };
                if let Some(list) = resolved.addresses(index) {
                    follower.check(&list);
                }
                tasks.spawn_on(follower.run(), runtime);
            }
        }
        Resolvers { tasks }
    }
}

/// Follows one backend's name.
struct Follower {
    rule: Arc<ServiceRule>,
    /// The backend's place in the rule.
    index: usize,
    /// `http://name:port`, for the log and `/admin/backends`.
    name: String,
    backend: Backend,
    lookup: Lookup,
    resolved: Arc<Resolved>,
    backends: Arc<Backends>,
    runtime: tokio::runtime::Handle,
    /// The health checkers of its addresses (with `health_check`); dropping one aborts it.
    checkers: BTreeMap<SocketAddr, AbortOnDropHandle<()>>,
    /// The last resolution failed: the next failure is not logged again.
    failing: bool,
}

impl Follower {
    async fn run(mut self) {
        let tls = self.backend.tls;
        let port = self.backend.uri_authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        // The first tick is at once: until the first answer the name is dialed as it is.
        let mut ticks = tokio::time::interval(self.rule.resolve_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.lookup.addresses(&self.backend.host, port).await {
                Ok(sockets) => self.found(sockets),
                Err(missing) => self.kept(&missing),
            }
        }
    }

    /// An answer: published if it changed.
    fn found(&mut self, mut sockets: Vec<SocketAddr>) {
        sockets.sort_unstable();
        sockets.dedup();
        if sockets.len() > MAX_ADDRESSES {
            tracing::warn!(
                backend = %self.name,
                addresses = sockets.len(),
                kept = MAX_ADDRESSES,
                "backend name resolves to more addresses than a pool takes: the lowest are kept"
            );
            sockets.truncate(MAX_ADDRESSES);
        }
        if std::mem::take(&mut self.failing) {
            tracing::info!(backend = %self.name, "backend name resolves again");
        }
        let current = self.resolved.addresses(self.index);
        let unchanged = current.as_ref().is_some_and(|list| list.iter().map(|a| a.socket).eq(sockets.iter().copied()));
        if unchanged {
            return;
        }
        let known = |socket: &SocketAddr| current.as_ref().and_then(|list| list.iter().find(|a| a.socket == *socket));
        let list: Vec<Address> = sockets
            .iter()
            .map(|socket| {
                known(socket).cloned().unwrap_or_else(|| {
                    let stats = self.backends.endpoint(&self.backend.at(*socket).to_string());
                    stats.resolved_from(&self.name);
                    Address { socket: *socket, stats }
                })
            })
            .collect();
        let added = sockets.iter().filter(|s| known(s).is_none()).count();
        let removed = current.as_ref().map_or(0, |list| list.iter().filter(|a| !sockets.contains(&a.socket)).count());
        let addresses: Vec<String> = sockets.iter().map(ToString::to_string).collect();
        tracing::info!(backend = %self.name, addresses = %addresses.join(","), added, removed, "backend name resolved");
        let list = Arc::new(list);
        self.check(&list);
        self.resolved.publish(self.index, list);
    }

    /// No answer: the last list stays.
    fn kept(&mut self, missing: &Missing) {
        let kept = self.resolved.addresses(self.index).map_or(0, |list| list.len());
        if std::mem::replace(&mut self.failing, true) {
            tracing::debug!(backend = %self.name, error = %missing, kept, "backend name still does not resolve");
        } else if kept == 0 {
            tracing::warn!(backend = %self.name, error = %missing, "backend name does not resolve; dialing it as it is until it does");
        } else {
            tracing::warn!(backend = %self.name, error = %missing, kept, "backend name does not resolve; keeping its last addresses");
        }
    }

    /// Health checkers for the addresses of `list` (with `health_check`), none for the others.
    fn check(&mut self, list: &[Address]) {
        let Some(settings) = &self.rule.health_check else { return };
        self.checkers.retain(|socket, _| list.iter().any(|a| a.socket == *socket));
        for address in list {
            if !self.checkers.contains_key(&address.socket) {
                let checks = super::health::checker(
                    &self.rule,
                    settings,
                    self.backend.at(address.socket),
                    address.stats.clone(),
                );
                self.checkers.insert(address.socket, AbortOnDropHandle::new(self.runtime.spawn(checks)));
            }
        }
    }
}

/// Why a resolution gave no address.
#[derive(Debug)]
enum Missing {
    /// The nameservers answered, with no address.
    Empty,
    Failed(String),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Empty => f.write_str("the answer has no address"),
            Missing::Failed(error) => f.write_str(error),
        }
    }
}

/// How names are resolved.
#[derive(Clone)]
enum Lookup {
    Dns(Arc<TokioResolver>),
    /// The system's resolver (getaddrinfo): when its configuration cannot be read for hickory.
    System,
}

impl Lookup {
    /// A resolver asking `dns`'s nameservers, or the system's (`/etc/resolv.conf`); `/etc/hosts`
    /// first either way.
    fn new(dns: &Dns) -> Self {
        let mut builder = if dns.nameservers.is_empty() {
            match TokioResolver::builder_tokio() {
                Ok(builder) => builder,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the system's DNS configuration; names are resolved by getaddrinfo");
                    return Lookup::System;
                }
            }
        } else {
            let servers: Vec<NameServerConfig> = dns
                .nameservers
                .iter()
                .flat_map(|a| [NameServerConfig::new(*a, Protocol::Udp), NameServerConfig::new(*a, Protocol::Tcp)])
                .collect();
            let config = ResolverConfig::from_parts(None, Vec::new(), servers);
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        };
        // Asked afresh at every resolution: how often is `resolve_interval`'s to say, not the
        // answer's TTL.
        let options = builder.options_mut();
        options.positive_max_ttl = Some(Duration::ZERO);
        options.negative_max_ttl = Some(Duration::ZERO);
        Lookup::Dns(Arc::new(builder.build()))
    }

    /// The addresses of `host`, each with `port`.
    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Missing> {
        let found = match self {
            Lookup::Dns(resolver) => match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(host)).await {
                Ok(Ok(found)) => found.iter().map(|ip| SocketAddr::new(ip, port)).collect(),
                // NOERROR with no address; NXDOMAIN is an error of its own.
                Ok(Err(e)) if e.is_no_records_found() && !e.is_nx_domain() => Vec::new(),
                Ok(Err(e)) => return Err(Missing::Failed(e.to_string())),
                Err(_) => return Err(Missing::Failed(format!("no answer within {LOOKUP_TIMEOUT:?}"))),
            },
            Lookup::System => match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, port))).await {
                Ok(Ok(found)) => found.collect(),
                Ok(Err(e)) => return Err(Missing::Failed(e.to_string())),
                Err(_) => return Err(Missing::Failed(format!("no answer within {LOOKUP_TIMEOUT:?}"))),
            },
        };
        if found.is_empty() { Err(Missing::Empty) } else { Ok(found) }
    }
}
