//! The YAML configuration file: parsed into serde structs (the reference users read, one `///` per
//! field) and converted once into typed [`Config`] settings.
//!
//! Relative paths in the file are taken relative to the file's own folder, so a config can be
//! started from anywhere. This module reads files (TLS roots) but opens no sockets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod dns;
mod health_check;
mod rest;
mod server;
mod soap;
mod tls;
mod traces;
mod websocket;

pub use dns::{Dns, DnsFile};
pub use health_check::{HealthCheck, HealthCheckFile};
pub use rest::{CorsFile, PathBodyConflict, RestFile, RestOptions, StreamFormat};
pub use server::ServerLimits;
pub use soap::{SoapFile, SoapOptions};
pub use tls::{ClientCert, TlsListener, TlsListenerFile, client_config};
pub use traces::{OtlpProtocol, TracesFile, TracesOptions};
pub use websocket::{AllowedOrigins, WebSocketFile, WebSocketOptions};

/// The configuration file as written.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `host:port` the plain-text listener binds: gRPC (h2c), REST, WebSocket and SOAP, all on one
    /// port; `off` for none (with a `tls:` listener).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Server threads, each owning its connections end to end; 0 means one per core.
    #[serde(default)]
    pub workers: usize,
    /// Descriptor files or folders: `*.binpb *.pb *.protoset *.desc` (FileDescriptorSet) and
    /// `*.proto` sources. Folders are searched recursively and watched for changes.
    #[serde(default = "default_descriptors")]
    pub descriptors: Vec<PathBuf>,
    /// Import paths used when `.proto` sources are given.
    #[serde(default)]
    pub proto_include: Vec<PathBuf>,
    /// Watch the descriptor paths and reload the catalog when a file changes.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Limits on the listener and on calls: connections, timeouts, header and message sizes.
    #[serde(default)]
    pub server: ServerLimits,
    /// The REST/JSON frontend.
    #[serde(default)]
    pub rest: RestFile,
    /// The WebSocket frontend.
    #[serde(default)]
    pub websocket: WebSocketFile,
    /// The SOAP frontend.
    #[serde(default)]
    pub soap: SoapFile,
    /// The TLS listener (certificate, key, client certificates); off unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsListenerFile>,
    /// The admin listener (health and readiness probes, the catalog); off unless given.
    #[serde(default)]
    pub admin: AdminFile,
    /// OpenTelemetry traces: one span per call, sent over OTLP; off unless `otlp_endpoint` is
    /// given.
    #[serde(default)]
    pub traces: TracesFile,
    /// Who may call what: API keys, JWT bearer tokens, client certificates, and the rules.
    /// Off unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::policy::auth::AuthFile>,
    /// Deadlines per method: the default for calls whose client sets none, and the most a client
    /// may ask for. The most specific `match` decides; a service's `timeout` applies otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeouts: Vec<crate::policy::deadline::TimeoutFile>,
    /// Calls the backends turned away (UNAVAILABLE, unreachable) sent again, within a budget. Off
    /// unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<crate::policy::retry::RetriesFile>,
    /// Rate limits, in process or shared by every replica through Redis. Off unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<crate::policy::limit::LimitsFile>,
    /// The nameservers asked for backends named by DNS; default: the system's (`/etc/resolv.conf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsFile>,
    /// Which backends serve which services. The most specific `match` wins: an exact service name
    /// before a pattern, a longer pattern before a shorter one.
    #[serde(default)]
    pub services: Vec<ServiceFile>,
}

/// The `admin:` section.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// `host:port` of the admin listener: `/metrics`, `/healthz`, `/readyz`, `/admin/config`,
    /// `/admin/catalog`. Keep it off
    /// the public network. Default: no admin listener.
    pub listen: Option<String>,
}

/// One `services:` entry.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    /// A full service name (`shop.products.v1.ProductService`) or a package pattern ending in `*`
    /// (`shop.*`, or `*` for every service).
    #[serde(rename = "match")]
    pub pattern: String,
    /// Backend addresses: `http://host:port` for cleartext HTTP/2 (h2c), `https://host:port` for
    /// TLS; or `{address: ..., weight: N}` to give one N times the share of another (1 to 100,
    /// default 1). A host that is a DNS name (not an IP, nor `localhost`) stands for every address
    /// it resolves to, each an endpoint with the backend's weight, re-resolved every
    /// `resolve_interval`.
    pub backends: Vec<BackendFile>,
    /// How often the backends named by DNS are resolved again, e.g. `5s`; from 100ms to 1h.
    /// Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_interval: Option<String>,
    /// How long to wait for a TCP (and TLS) connection to a backend, e.g. `500ms`, `2s`.
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// Deadline applied to calls whose client sets none, e.g. `30s`. None by default.
    #[serde(default)]
    pub timeout: Option<String>,
    /// How long a call waits for a free HTTP/2 stream when every connection to these backends is
    /// at the backend's `SETTINGS_MAX_CONCURRENT_STREAMS`; then it fails with UNAVAILABLE.
    /// Default 1s (never past the call's deadline).
    #[serde(default)]
    pub queue_timeout: Option<String>,
    /// How calls spread over the backends: `p2c` (default: the power of two choices, by latency
    /// and calls in flight), `round_robin`, or `hash` (by `hash_on`).
    #[serde(default)]
    pub balance: Balance,
    /// With `balance: hash`: the header (gRPC metadata) whose value picks the backend, so calls
    /// carrying the same value go to the same backend while it serves (rendezvous hashing, by
    /// weight). Calls without it are balanced as `p2c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<String>,
    /// Calls these backends may have in flight at once, from every worker; past it a call is
    /// refused at once with UNAVAILABLE (503) rather than queued. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_calls_in_flight: Option<usize>,
    /// Active health checks: each backend is asked `grpc.health.v1.Health/Check` every
    /// `interval`, and one that fails `unhealthy_threshold` checks in a row is given no call until
    /// it passes `healthy_threshold` in a row. Off unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckFile>,
    /// TLS settings for `https://` backends.
    #[serde(default)]
    pub tls: Option<TlsFile>,
}

/// The longest any configured duration may be (a service's timeouts, `timeouts[]`, a rate
/// limit's period): added to the clock per call, it must not overflow it.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// A `services[].backends` entry: an address, or an address and its weight.
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum BackendFile {
    Address(String),
    Weighted(WeightedBackendFile),
}

/// `{address, weight}`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedBackendFile {
    pub address: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// `services[].balance`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum Balance {
    /// Two endpoints at random, the call to the one with the lower peak-EWMA load.
    #[default]
    #[serde(rename = "p2c")]
    PowerOfTwoChoices,
    #[serde(rename = "round_robin")]
    RoundRobin,
    /// By a header's value (`hash_on`).
    #[serde(rename = "hash")]
    Hash,
}

/// TLS settings for backends.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PEM file of CA certificates to trust instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name to verify the backend's certificate against, when it differs from the address' host.
    #[serde(default)]
    pub server_name: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

fn default_descriptors() -> Vec<PathBuf> {
    vec![PathBuf::from("descriptors/")]
}

fn default_true() -> bool {
    true
}

/// Typed, validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The plain-text listener's address, unless it is `off`.
    pub listen: Option<SocketAddr>,
    pub tls: Option<TlsListener>,
    pub workers: usize,
    pub server: Arc<ServerLimits>,
    pub rest: Arc<RestOptions>,
    pub websocket: Arc<WebSocketOptions>,
    pub soap: Arc<SoapOptions>,
    /// Where the admin listener binds, if anywhere.
    pub admin: Option<SocketAddr>,
    pub traces: TracesOptions,
    pub descriptors: Vec<PathBuf>,
    pub proto_include: Vec<PathBuf>,
    pub watch: bool,
    pub services: Vec<Arc<ServiceRule>>,
    /// Authentication and authorization, shared by every worker (key sets, JWKS).
    pub auth: Option<Arc<crate::policy::auth::Auth>>,
    /// Rate limits, shared by every worker (their counts).
    pub limits: Option<Arc<crate::policy::limit::Limits>>,
    /// Retries and their budget, shared by every worker.
    pub retries: Option<Arc<crate::policy::retry::Retries>>,
    /// Deadlines per method (`timeouts:`).
    pub timeouts: Arc<[crate::policy::deadline::TimeoutFile]>,
    /// The nameservers for backends named by DNS (`dns:`).
    pub dns: Dns,
    /// The file as read, every default filled in: what a reload compares with, and keeps the
    /// restart-only settings of. `/admin/config` shows it redacted ([`Config::effective`]).
    pub written: Arc<serde_json::Value>,
}

/// Which backends serve the services a pattern matches.
#[derive(Debug)]
pub struct ServiceRule {
    /// Position in the config's `services:` list; the upstream keeps one pool per rule.
    pub index: usize,
    pub pattern: ServicePattern,
    pub backends: Vec<Backend>,
    /// How often the backends named by DNS are resolved again.
    pub resolve_interval: Duration,
    /// What the backends named by DNS resolve to now, shared by every worker's pool of the rule
    /// (written by `upstream::dns`); None when every backend is an IP address.
    pub resolved: Option<Arc<crate::upstream::Resolved>>,
    pub connect_timeout: Duration,
    pub default_timeout: Option<Duration>,
    pub queue_timeout: Duration,
    /// How calls spread over the backends.
    pub balance: Balance,
    /// With `Balance::Hash`: the header whose value picks the backend.
    pub hash_on: Option<http::HeaderName>,
    /// `max_calls_in_flight`: its permits, shared by every worker.
    pub calls_in_flight: Option<Arc<tokio::sync::Semaphore>>,
    /// `health_check`: how each backend is checked, if it is.
    pub health_check: Option<HealthCheck>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub tls_server_name: Option<String>,
}

/// A `match:` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServicePattern {
    /// A full service name.
    Exact(String),
    /// Every service whose full name starts with this (the pattern without its `*`).
    Prefix(String),
}

impl ServicePattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let valid = |part: &str| {
            part.split('.').all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        };
        match s.strip_suffix('*') {
            Some("") => Ok(Self::Prefix(String::new())),
            Some(prefix) if prefix.ends_with('.') && valid(&prefix[..prefix.len() - 1]) => {
                Ok(Self::Prefix(prefix.to_owned()))
            }
            None if valid(s) => Ok(Self::Exact(s.to_owned())),
            _ => Err(format!("expected a full service name (pkg.Service) or a package pattern (pkg.*), got {s:?}")),
        }
    }

    /// How specific a match is, or None when `service` does not match: exact names win over
    /// patterns, longer patterns over shorter ones.
    pub fn specificity(&self, service: &str) -> Option<usize> {
        match self {
            Self::Exact(name) => (name == service).then_some(usize::MAX),
            Self::Prefix(prefix) => service.starts_with(prefix.as_str()).then_some(prefix.len()),
        }
    }
}

impl std::fmt::Display for ServicePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// One backend address.
#[derive(Debug, Clone)]
pub struct Backend {
    pub tls: bool,
    /// Parsed once: every request to this backend carries it (the configured `host:port`, also
    /// for each address a name resolves to).
    pub uri_authority: http::uri::Authority,
    /// `host:port`, what the TCP connection dials.
    pub authority: String,
    /// The configured host: what a TLS backend's certificate is verified against.
    pub host: String,
    /// Its share relative to the rule's other backends (1 to 100).
    pub weight: u32,
    /// The host is a DNS name the gateway resolves on a schedule, each address an endpoint: not
    /// an IP address, nor `localhost` (always this machine, RFC 6761, 6.3; dialed as it is).
    pub resolves: bool,
}

impl Backend {
    /// The endpoint at `address`, one of those its name resolves to: dialed there, everything
    /// else (`:authority`, the TLS name, the weight) as configured.
    pub fn at(&self, address: std::net::SocketAddr) -> Backend {
        Backend { authority: address.to_string(), resolves: false, ..self.clone() }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", if self.tls { "https" } else { "http" }, self.authority)
    }
}

/// Hides what `/admin/config` must not show: credentials in a URL's user info (the OTLP
/// collector's, `http://user:secret@host`).
fn redact(shown: &mut serde_json::Value) {
    if let Some(endpoint) = shown.pointer_mut("/traces/otlp_endpoint") {
        if let Some((scheme, rest)) = endpoint.as_str().and_then(|url| url.split_once("://")) {
            if let Some((_, host)) = rest.split_once('@').filter(|(userinfo, _)| !userinfo.contains('/')) {
                *endpoint = serde_json::Value::String(format!("{scheme}://[redacted]@{host}"));
            }
        }
    }
}

/// A configuration error: the file, the key path and what was expected.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    file: String,
    message: String,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError { file: path.display().to_string(), message: format!("cannot read: {e}") })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|message| ConfigError { file: path.display().to_string(), message })
    }

    /// Reads `path` again for a gateway running with `current`: what only a restart can change
    /// ([`Config::RESTART_ONLY`]) is kept as `current` has it, so that the config returned (and
    /// shown by `/admin/config`) is the one in effect. Returns it and the keys the file changes
    /// but that were kept. An empty file is refused: it is what a write in progress looks like.
    pub fn reload(path: &Path, current: &Config) -> Result<(Self, Vec<&'static str>), ConfigError> {
        let error = |message: String| ConfigError { file: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        if text.trim().is_empty() {
            return Err(error("the file is empty (a write in progress?)".to_owned()));
        }
        let file = Self::parse_file(&text).map_err(error)?;
        let mut written = serde_json::to_value(&file).map_err(|e| error(format!("the config cannot be shown: {e}")))?;
        let mut kept = Vec::new();
        if let Some(written) = written.as_object_mut() {
            for key in Self::RESTART_ONLY {
                let running = current.written.get(key);
                if written.get(key) != running {
                    kept.push(key);
                    match running {
                        Some(value) => written.insert(key.to_owned(), value.clone()),
                        None => written.remove(key),
                    };
                }
            }
        }
        let file: FileConfig = serde_json::from_value(written).map_err(|e| error(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Ok((Self::from_file(file, base, Some(current)).map_err(error)?, kept))
    }

    /// The config in effect as `/admin/config` shows it: the file with every default filled in,
    /// secrets redacted (credentials in URLs).
    pub fn effective(&self) -> serde_json::Value {
        let mut shown = (*self.written).clone();
        redact(&mut shown);
        shown
    }

    /// The top-level keys a running gateway cannot change: its listeners, threads, edge limits,
    /// admin listener and trace exporter are set up once.
    pub const RESTART_ONLY: [&'static str; 6] = ["listen", "workers", "server", "tls", "admin", "traces"];

    fn parse_file(text: &str) -> Result<FileConfig, String> {
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            if at == "." { inner.to_string() } else { format!("at `{at}`: {inner}") }
        })
    }

    /// Parses YAML text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        Self::from_file(Self::parse_file(text)?, base, None)
    }

    /// The typed config; `previous`, when reloading, lends its rate limits' counts.
    fn from_file(mut file: FileConfig, base: &Path, previous: Option<&Config>) -> Result<Self, String> {
        let written = Arc::new(serde_json::to_value(&file).map_err(|e| format!("the config cannot be shown: {e}"))?);
        let listen = match file.listen.as_str() {
            "off" => None,
            address => {
                Some(address.parse().map_err(|_| format!("at `listen`: expected host:port or off, got {address:?}"))?)
            }
        };
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let tls = file.tls.map(|tls| TlsListener::from_file(tls, resolve)).transpose()?;
        if listen.is_none() && tls.is_none() {
            return Err("at `listen`: off, and there is no `tls:` listener either: nothing would listen".to_owned());
        }
        let services = file
            .services
            .into_iter()
            .enumerate()
            .map(|(index, s)| ServiceRule::from_file(index, s, base).map(Arc::new))
            .collect::<Result<_, _>>()?;
        file.server.validate()?;
        crate::policy::deadline::check(&file.timeouts)?;
        let previous_auth = previous.and_then(|p| p.auth.as_deref());
        let auth = file
            .auth
            .as_ref()
            .map(|a| crate::policy::auth::Auth::new(a, base, previous_auth).map(Arc::new))
            .transpose()?;
        let previous_limits = previous.and_then(|p| p.limits.as_deref());
        let limits = file
            .rate_limits
            .as_ref()
            .map(|l| crate::policy::limit::Limits::new(l, previous_limits).map(Arc::new))
            .transpose()?;
        if let (Some(auth), Some(limits)) = (&auth, &limits) {
            if let Some((name, header)) = limits.key_headers().find(|(_, h)| auth.credential_headers().contains(h)) {
                return Err(format!(
                    "at `rate_limits`: limit {name:?} is keyed by {header}, a credential auth removes; use key: identity"
                ));
            }
        }
        // The frontends carry into each call the headers the policies read, and pass on as they
        // are the rate-limit fields, whatever `rest:` lists.
        let wanted = auth.iter().flat_map(|a| a.credential_headers().iter());
        for name in wanted {
            if !file.rest.forward_headers.iter().any(|h| h.eq_ignore_ascii_case(name.as_str())) {
                file.rest.forward_headers.push(name.as_str().to_owned());
            }
        }
        if limits.is_some() {
            for name in crate::policy::limit::Limits::header_names() {
                if !file.rest.response_headers_unprefixed.iter().any(|h| h.eq_ignore_ascii_case(name.as_str())) {
                    file.rest.response_headers_unprefixed.push(name.as_str().to_owned());
                }
            }
        }
        let mut rest = RestOptions::from_file(file.rest, &file.server)?;
        rest.key_query_parameter = auth.as_ref().and_then(|a| a.key_query_parameter());
        let rest = Arc::new(rest);
        let websocket = Arc::new(WebSocketOptions::from_file(file.websocket, &file.server)?);
        let soap = Arc::new(SoapOptions::from_file(file.soap)?);
        let traces = TracesOptions::from_file(file.traces)?;
        let admin = match &file.admin.listen {
            None => None,
            Some(address) => {
                Some(address.parse().map_err(|_| format!("at `admin.listen`: expected host:port, got {address:?}"))?)
            }
        };
        let retries = file
            .retries
            .as_ref()
            .map(|r| crate::policy::retry::Retries::new(r, file.server.max_message_size).map(Arc::new))
            .transpose()?;
        Ok(Config {
            listen,
            tls,
            workers: file.workers,
            server: Arc::new(file.server),
            rest,
            websocket,
            soap,
            admin,
            traces,
            descriptors: file.descriptors.into_iter().map(resolve).collect(),
            proto_include: file.proto_include.into_iter().map(resolve).collect(),
            watch: file.watch,
            services,
            auth,
            limits,
            retries,
            timeouts: file.timeouts.into(),
            dns: file.dns.as_ref().map(Dns::from_file).transpose()?.unwrap_or_default(),
            written,
        })
    }

    /// The rule that routes `service`, if any.
    pub fn rule_for(&self, service: &str) -> Option<&Arc<ServiceRule>> {
        self.services
            .iter()
            .filter_map(|rule| Some((rule.pattern.specificity(service)?, rule)))
            .max_by_key(|(specificity, rule)| (*specificity, std::cmp::Reverse(rule.index)))
            .map(|(_, rule)| rule)
    }
}

impl ServiceRule {
    /// What its `backend`-th backend's DNS name resolved to last; None when that backend is an
    /// IP address or its name has not resolved yet (it is then dialed as written).
    pub fn addresses(&self, backend: usize) -> Option<Arc<Vec<crate::upstream::Address>>> {
        self.resolved.as_ref()?.addresses(backend)
    }

    fn from_file(index: usize, file: ServiceFile, base: &Path) -> Result<Self, String> {
        let at = |key: &str| format!("at `services[{index}].{key}`");
        let pattern = ServicePattern::parse(&file.pattern).map_err(|e| format!("{}: {e}", at("match")))?;
        if file.backends.is_empty() {
            return Err(format!("{}: expected at least one backend address", at("backends")));
        }
        let backends = file
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| Backend::parse(b).map_err(|e| format!("{}: {e}", at(&format!("backends[{i}]")))))
            .collect::<Result<Vec<_>, _>>()?;
        let hash_on = match (file.balance, &file.hash_on) {
            (Balance::Hash, Some(name)) => Some(
                http::HeaderName::from_bytes(name.as_bytes())
                    .ok()
                    .filter(|header| header.as_str() == name && !name.ends_with("-bin"))
                    .ok_or_else(|| {
                        format!("{}: expected a lower-case header name (not `-bin`), got {name:?}", at("hash_on"))
                    })?,
            ),
            (Balance::Hash, None) => {
                return Err(format!("{}: `balance: hash` needs `hash_on: <header>`", at("hash_on")));
            }
            (_, Some(_)) => return Err(format!("{}: only with `balance: hash`", at("hash_on"))),
            (_, None) => None,
        };
        let duration = |key: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|v| {
                    humantime::parse_duration(v)
                        .map_err(|e| format!("{}: expected a duration like 500ms or 2s, got {v:?} ({e})", at(key)))
                        .and_then(|d| {
                            // Added to the clock per call: a bound keeps that from overflowing.
                            (d <= MAX_DURATION).then_some(d).ok_or_else(|| format!("{}: at most 366 days", at(key)))
                        })
                })
                .transpose()
        };
        let connect_timeout = duration("connect_timeout", &file.connect_timeout)?.unwrap_or(Duration::from_secs(2));
        let default_timeout = duration("timeout", &file.timeout)?;
        let queue_timeout = duration("queue_timeout", &file.queue_timeout)?.unwrap_or(Duration::from_secs(1));
        let resolve_interval = duration("resolve_interval", &file.resolve_interval)?.unwrap_or(Duration::from_secs(30));
        if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&resolve_interval) {
            return Err(format!("{}: must be between 100ms and 1h", at("resolve_interval")));
        }
        let resolved =
            backends.iter().any(|b| b.resolves).then(|| Arc::new(crate::upstream::Resolved::new(backends.len())));
        let health_check = file
            .health_check
            .map(|h| HealthCheck::from_file(h, |key| at(&format!("health_check.{key}"))))
            .transpose()?;
        let tls_file = file.tls.unwrap_or_default();
        let tls = if backends.iter().any(|b| b.tls) {
            let ca = tls_file.ca_file.map(|p| if p.is_absolute() { p } else { base.join(p) });
            Some(Arc::new(tls::client_config(ca.as_deref(), b"h2").map_err(|e| format!("{}: {e}", at("tls.ca_file")))?))
        } else {
            None
        };
        Ok(ServiceRule {
            index,
            pattern,
            backends,
            resolve_interval,
            resolved,
            connect_timeout,
            default_timeout,
            queue_timeout,
            balance: file.balance,
            hash_on,
            calls_in_flight: match file.max_calls_in_flight {
                Some(n) if n == 0 || n > 1_000_000 => {
                    return Err(format!("{}: between 1 and 1000000", at("max_calls_in_flight")));
                }
                Some(n) => Some(Arc::new(tokio::sync::Semaphore::new(n))),
                None => None,
            },
            health_check,
            tls,
            tls_server_name: tls_file.server_name,
        })
    }
}

impl Backend {
    fn parse(file: &BackendFile) -> Result<Self, String> {
        let (s, weight) = match file {
            BackendFile::Address(address) => (address, 1),
            BackendFile::Weighted(WeightedBackendFile { address, weight }) => (address, *weight),
        };
        if !(1..=100).contains(&weight) {
            return Err(format!("a weight is between 1 and 100, got {weight}"));
        }
        Ok(Backend { weight, ..Self::parse_address(s)? })
    }

    fn parse_address(s: &str) -> Result<Self, String> {
        let uri: http::Uri =
            s.parse().map_err(|e| format!("expected http://host:port or https://host:port, got {s:?} ({e})"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!("expected an http:// (h2c) or https:// (TLS) address, got {s:?}"));
            }
        };
        if !matches!(uri.path(), "" | "/") {
            return Err(format!("a backend address has no path, got {s:?}"));
        }
        let host = uri.host().ok_or_else(|| format!("no host in {s:?}"))?.to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let authority = format!("{host}:{port}");
        let uri_authority = authority.parse().map_err(|e| format!("bad address {s:?}: {e}"))?;
        let resolves = bare_host.parse::<std::net::IpAddr>().is_err() && !bare_host.eq_ignore_ascii_case("localhost");
        Ok(Backend { authority, uri_authority, host: bare_host, tls, weight: 1, resolves })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_and_hash_keys_are_checked_at_load() {
        let parse = |rule: &str| Config::parse(&format!("services:\n  - match: x.Y\n{rule}"), Path::new("."));
        let config = parse("    backends: [{address: 'http://a:1', weight: 3}, http://b:1]\n").expect("valid");
        assert_eq!(config.services[0].backends.iter().map(|b| b.weight).collect::<Vec<_>>(), [3, 1]);
        let error = |rule: &str| parse(rule).expect_err("refused").to_string();
        assert!(error("    backends: [{address: 'http://a:1', weight: 0}]\n").contains("between 1 and 100"));
        assert!(error("    backends: [http://a:1]\n    balance: hash\n").contains("needs `hash_on"));
        assert!(error("    backends: [http://a:1]\n    hash_on: x-k\n").contains("only with `balance: hash`"));
        let upper = error("    backends: [http://a:1]\n    balance: hash\n    hash_on: X-Key\n");
        assert!(upper.contains("services[0].hash_on") && upper.contains("lower-case"), "{upper}");
        assert!(error("    backends: [http://a:1]\n    balance: hash\n    hash_on: x-k-bin\n").contains("-bin"));
    }

    #[test]
    fn most_specific_rule_wins() {
        let config = Config::parse(
            "services:\n  - match: '*'\n    backends: [http://a:1]\n  - match: shop.*\n    backends: [http://b:1]\n  - match: shop.users.v1.UserService\n    backends: [http://c:1]\n",
            Path::new("."),
        )
        .expect("valid config");
        let host = |s: &str| config.rule_for(s).map(|r| r.backends[0].host.clone());
        assert_eq!(host("shop.users.v1.UserService").as_deref(), Some("c"));
        assert_eq!(host("shop.orders.v1.OrderService").as_deref(), Some("b"));
        assert_eq!(host("other.Thing").as_deref(), Some("a"));
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::parse("services:\n  - match: shop.*\n    backends: [ftp://x:1]\n", Path::new("."))
            .expect_err("ftp is no backend scheme");
        assert!(err.contains("services[0].backends[0]"), "{err}");
        let err = Config::parse("services:\n  - match: shop.*\n    backend: [http://x:1]\n", Path::new("."))
            .expect_err("unknown field");
        assert!(err.contains("backend"), "{err}");
        let err = Config::parse("listen: nowhere\n", Path::new(".")).expect_err("bad listen");
        assert!(err.contains("listen"), "{err}");
        let err = Config::parse("services:\n  - match: 'shop*'\n    backends: [http://x:1]\n", Path::new("."))
            .expect_err("bad pattern");
        assert!(err.contains("services[0].match"), "{err}");
    }

    #[test]
    fn credentials_in_the_collector_url_are_not_shown() {
        let yaml = "traces:\n  otlp_endpoint: http://user:s3cret@collector:4317\n";
        let config = Config::parse(yaml, Path::new(".")).expect("valid");
        let shown = config.effective().to_string();
        assert!(!shown.contains("s3cret") && shown.contains("http://[redacted]@collector:4317"), "{shown}");
    }

    #[test]
    fn the_tls_listener_is_checked_at_load() {
        let err = Config::parse("listen: off\n", Path::new(".")).expect_err("nothing listens");
        assert!(err.contains("nothing would listen"), "{err}");
        let yaml = "listen: off\ntls:\n  listen: 127.0.0.1:8443\n  cert_file: missing.pem\n  key_file: missing.key\n";
        let err = Config::parse(yaml, Path::new("/nowhere")).expect_err("unreadable certificate");
        assert!(err.contains("at `tls`") && err.contains("/nowhere/missing.pem"), "{err}");
        let yaml = "tls:\n  listen: 127.0.0.1:8443\n  cert_file: a\n  key_file: b\n  client_cert: sometimes\n";
        let err = Config::parse(yaml, Path::new(".")).expect_err("unknown mode");
        assert!(err.contains("tls.client_cert"), "{err}");
    }

    #[test]
    fn traces_are_off_by_default_and_checked() {
        let config = Config::parse("{}", Path::new(".")).expect("empty config");
        assert!(config.traces.otlp_endpoint.is_none());
        assert_eq!((config.traces.sampling_ratio, config.traces.service_name.as_str()), (1.0, "dragoman"));
        assert_eq!(config.effective()["traces"]["sampling_ratio"], 1.0);
        let config = Config::parse("traces:\n  otlp_endpoint: http://127.0.0.1:4317\n", Path::new(".")).expect("on");
        assert_eq!(config.traces.otlp_endpoint.map(|u| u.to_string()).as_deref(), Some("http://127.0.0.1:4317/"));
        let http = "traces:\n  otlp_endpoint: http://127.0.0.1:4318\n  protocol: http/protobuf\n";
        let config = Config::parse(http, Path::new(".")).expect("http");
        let url = config.traces.otlp_endpoint.map(|u| u.to_string());
        assert_eq!(url.as_deref(), Some("http://127.0.0.1:4318/v1/traces"), "the path defaults to OTLP/HTTP's");
        let http = "traces:\n  otlp_endpoint: http://c:80/otlp/spans\n  protocol: http/protobuf\n";
        let url = Config::parse(http, Path::new(".")).expect("http").traces.otlp_endpoint.map(|u| u.to_string());
        assert_eq!(url.as_deref(), Some("http://c:80/otlp/spans"));
        for (yaml, key) in [
            ("traces:\n  sampling_ratio: 1.5\n", "traces.sampling_ratio"),
            ("traces:\n  sampling_ratio: -0.1\n", "traces.sampling_ratio"),
            ("traces:\n  otlp_endpoint: localhost:4317\n", "traces.otlp_endpoint"),
            ("traces:\n  otlp_endpoint: ftp://x:1\n", "traces.otlp_endpoint"),
            ("traces:\n  otlp_endpoint: http://x:1/v1/traces\n", "traces.otlp_endpoint"),
            ("traces:\n  protocol: http\n", "traces.protocol"),
            ("traces:\n  otlp_endpoint: 'http:// x'\n", "traces.otlp_endpoint"),
            ("traces:\n  service_name: ''\n", "traces.service_name"),
            ("traces:\n  export_interval: 0s\n", "traces.export_interval"),
            ("traces:\n  max_queue_size: 0\n", "traces.max_queue_size"),
            ("traces:\n  endpoint: http://x:1\n", "endpoint"),
        ] {
            let err = Config::parse(yaml, Path::new(".")).expect_err(yaml);
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }
}
