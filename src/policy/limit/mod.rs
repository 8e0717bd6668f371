//! `RateLimit<S>`: GCRA rate limits, keyed by client address, caller, method, a header or
//! nothing (one limit for all), counted in process (`governor`) or across gateway replicas
//! (Redis, [`redis`]).
//!
//! Every limit whose `match` covers a call counts it; the call is refused (RESOURCE_EXHAUSTED,
//! HTTP 429) when any of them is spent, with `Retry-After` and `google.rpc.RetryInfo` saying when
//! to come back. Answers carry the IETF `RateLimit-Policy` and `RateLimit` fields
//! (draft-ietf-httpapi-ratelimit-headers: `"name";q=…;w=…` and `"name";r=…;t=…`) for every limit
//! that counted the call; REST passes them on as they are.
//!
//! State is shared by every worker and call (one [`Limits`] per config), kept across config
//! reloads for a limit whose name, key and quota are unchanged, and bounded: keys idle for a
//! period and one interval are forgotten (swept at most every 10 s, off the worker threads). A shared limit
//! whose Redis cannot answer in time lets the call through or refuses it, as `on_error` says,
//! logged and counted in `dragoman_rate_limit_store_errors_total`.

mod local;
pub mod redis;

use std::fmt::Write as _;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::call::{Call, Reply};
use crate::error::{Advice, GatewayError, Origin, Refusal, whole_seconds};
use crate::policy::auth::Identity;
use crate::policy::selector::Selector;

/// `limit` calls per `period`, as GCRA counts them: one call every `period / limit`, and up to
/// `limit` at once after a quiet `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub period: Duration,
}

/// What a limiter says about one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Calls that could still be made at once after this one.
    pub remaining: u32,
    /// When refused: how long until one call would be allowed. Zero when allowed.
    pub retry_after: Duration,
    /// How long until the quota is whole again (every call of the burst available).
    pub reset_after: Duration,
}

/// The `rate_limits:` section.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Where `shared` limits are counted, so that every replica behind a load balancer holds the
    /// same limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisFile>,
    /// The limits; a call counts against every one that covers it.
    #[serde(default)]
    pub limits: Vec<LimitFile>,
}

/// `rate_limits.redis`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    /// `redis://host:port/db` (`redis://:password@host:port` with a password).
    pub url: String,
    /// How long a call may wait for Redis's answer. Default 50ms.
    #[serde(default = "default_redis_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// When Redis cannot answer in time: `open` lets the call through, `closed` refuses it
    /// (UNAVAILABLE). Default `open`.
    #[serde(default)]
    pub on_error: OnError,
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(50)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    #[default]
    Open,
    Closed,
}

/// One `rate_limits.limits` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitFile {
    /// Names the limit in answers (`RateLimit-Policy`), logs and Redis keys.
    pub name: String,
    /// The calls it counts: `pkg.Service/Method`, `pkg.Service`, `pkg.*` or `*` (default).
    #[serde(rename = "match", default = "every_call")]
    pub selector: Selector,
    /// Who shares one quota: `client_ip`, `identity` (the caller auth found; callers without
    /// one are counted by client address), `method` (each method its own quota), `global` (one
    /// for all, the default) or `header:<name>` (calls without the header share one quota).
    #[serde(default = "default_key")]
    pub key: String,
    /// Calls allowed per `per`, all at once after a quiet period (GCRA).
    pub limit: u32,
    /// The period, e.g. `1s`, `1m`.
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    /// Count in Redis (`rate_limits.redis`), across every replica, instead of in this process.
    #[serde(default)]
    pub shared: bool,
}

fn every_call() -> Selector {
    Selector::Services(crate::config::ServicePattern::Prefix(String::new()))
}

fn default_key() -> String {
    "global".to_owned()
}

/// Who shares a quota.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    ClientIp,
    Identity,
    Method,
    Global,
    Header(HeaderName),
}

impl Key {
    fn parse(s: &str) -> Result<Key, String> {
        Ok(match s {
            "client_ip" => Key::ClientIp,
            "identity" => Key::Identity,
            "method" => Key::Method,
            "global" => Key::Global,
            _ => match s.strip_prefix("header:") {
                Some(name) => Key::Header(
                    HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| format!("expected header:<a header name>, got {s:?}"))?,
                ),
                None => {
                    return Err(format!("expected client_ip, identity, method, global or header:<name>, got {s:?}"));
                }
            },
        })
    }

    /// The call's key under this limit.
    fn of(&self, call: &Call) -> String {
        let ip = || call.peer.map(|p| p.ip().to_string()).unwrap_or_default();
        match self {
            Key::ClientIp => ip(),
            Key::Identity => match call.extensions.get::<Arc<Identity>>() {
                Some(identity) => identity.limit_key(),
                None => format!("ip:{}", ip()),
            },
            Key::Method => call.method.path().to_owned(),
            Key::Global => String::new(),
            Key::Header(name) => {
                call.metadata.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default()
            }
        }
    }
}

/// Keys are kept as 64-bit hashes (SipHash, seeded per limit): an entry's size does not depend on
/// what a client sends.
type Local = governor::RateLimiter<u64, local::BoundedStore, DefaultClock, StateInformationMiddleware>;

/// Keys one local limit keeps at most ([`local::BoundedStore`]).
const MAX_KEYS: usize = 100_000;

/// Where a limit counts.
enum Counter {
    Local(Local, std::hash::RandomState),
    Shared { redis: Arc<redis::RedisLimiter>, on_error: OnError },
}

/// One limit, built.
pub struct Limit {
    file: LimitFile,
    key: Key,
    quota: Quota,
    counter: Counter,
    /// `"name";q=…;w=…`, written once.
    policy: String,
}

/// Everything `rate_limits:` configures, shared by every worker.
pub struct Limits {
    limits: Vec<Arc<Limit>>,
    /// Milliseconds since `epoch` of the last sweep of idle keys.
    swept: AtomicU64,
    epoch: std::time::Instant,
}

/// Calls let through or refused because a shared limit's Redis could not answer.
static STORE_ERRORS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// `dragoman_rate_limit_store_errors_total`, by what the call got.
pub fn render_store_errors(out: &mut String, openmetrics: bool) {
    let values = [
        ("on_error=\"open\"", STORE_ERRORS[0].load(Ordering::Relaxed)),
        ("on_error=\"closed\"", STORE_ERRORS[1].load(Ordering::Relaxed)),
    ];
    let help = "Calls a shared rate limit could not count (Redis unreachable or slow), by what they got.";
    crate::observe::metrics::counter(out, openmetrics, "dragoman_rate_limit_store_errors_total", help, &values);
}

const SWEEP: Duration = Duration::from_secs(10);

impl Limits {
    /// Builds the limits; a local limit `previous` has with the same name, match, key and quota
    /// keeps its counts (a config reload does not hand every client a fresh quota).
    pub fn new(file: &LimitsFile, previous: Option<&Limits>) -> Result<Self, String> {
        let redis = match &file.redis {
            Some(r) => Some((
                Arc::new(
                    redis::RedisLimiter::new(&r.url, r.timeout)
                        .map_err(|e| format!("at `rate_limits.redis.url`: {e}"))?,
                ),
                r.on_error,
            )),
            None => None,
        };
        let mut limits = Vec::with_capacity(file.limits.len());
        for (i, limit) in file.limits.iter().enumerate() {
            let at = |key: &str| format!("at `rate_limits.limits[{i}].{key}`");
            if file.limits[..i].iter().any(|l| l.name == limit.name) {
                return Err(format!("{}: the name {:?} is used twice", at("name"), limit.name));
            }
            let key = Key::parse(&limit.key).map_err(|e| format!("{}: {e}", at("key")))?;
            if limit.name.is_empty() || !limit.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                return Err(format!("{}: letters, digits, '-', '_' and '.' only, got {:?}", at("name"), limit.name));
            }
            if limit.limit == 0 {
                return Err(format!("{}: at least 1", at("limit")));
            }
            if limit.per < Duration::from_millis(1) || limit.per > crate::config::MAX_DURATION {
                return Err(format!("{}: between 1ms and 366 days", at("per")));
            }
            if limit.per / limit.limit < Duration::from_micros(1) {
                return Err(format!("{}: more than one call per microsecond cannot be counted", at("limit")));
            }
            let quota = Quota { limit: limit.limit, period: limit.per };
            let kept = previous.and_then(|p| p.limits.iter().find(|l| same(&l.file, limit)));
            if let Some(kept) = kept {
                limits.push(kept.clone());
                continue;
            }
            let counter = if limit.shared {
                let Some((redis, on_error)) = &redis else {
                    return Err(format!("{}: a shared limit needs `rate_limits.redis`", at("shared")));
                };
                Counter::Shared { redis: redis.clone(), on_error: *on_error }
            } else {
                let quota = governor_quota(quota).ok_or_else(|| {
                    format!("{}: expected at least one call, and a period of at least 1ns per call", at("limit"))
                })?;
                let store = local::BoundedStore::new(MAX_KEYS);
                let local: Local = governor::RateLimiter::new(quota, store, DefaultClock::default());
                Counter::Local(local, std::hash::RandomState::new())
            };
            // The fields count in whole seconds: a period that is not is told as its rate over
            // the whole seconds that cover it.
            let window = whole_seconds(limit.per);
            let calls = u128::from(limit.limit) * u128::from(window) * 1_000_000_000 / limit.per.as_nanos().max(1);
            let policy = format!("\"{}\";q={calls};w={window}", limit.name);
            limits.push(Arc::new(Limit { file: limit.clone(), key, quota, counter, policy }));
        }
        for limit in &limits {
            if limit.policy.contains(['\r', '\n']) || HeaderValue::from_str(&limit.policy).is_err() {
                return Err(format!("at `rate_limits.limits`: {:?} cannot be a header value", limit.file.name));
            }
        }
        Ok(Limits { limits, swept: AtomicU64::new(0), epoch: std::time::Instant::now() })
    }

    /// The limits covering the call, each with the call's key under it.
    pub fn keys(&self, call: &Call) -> Vec<(Arc<Limit>, String)> {
        let service = call.method.descriptor.parent_service().full_name();
        let method = call.method.descriptor.name();
        let covering = self.limits.iter().filter(|l| l.file.selector.covers(service, method));
        covering.map(|limit| (limit.clone(), limit.key.of(call))).collect()
    }

    /// Counts a call against the limits covering it ([`Limits::keys`]): the fields to answer
    /// with, or the refusal.
    pub async fn count(&self, keys: Vec<(Arc<Limit>, String)>) -> Result<Option<HeaderMap>, GatewayError> {
        let mut policies = Vec::new();
        let mut states = Vec::new();
        for (limit, key) in &keys {
            let Some(decision) = limit.decide(key).await? else { continue };
            if !decision.allowed {
                return Err(limit.refuse(key, decision));
            }
            policies.push(limit.policy.as_str());
            states.push(limit.state(&decision));
        }
        let _sweeping = self.sweep();
        if policies.is_empty() {
            return Ok(None);
        }
        let mut fields = HeaderMap::with_capacity(2);
        let (policy, state) = (policies.join(", "), states.join(", "));
        if let (Ok(policy), Ok(state)) = (HeaderValue::from_str(&policy), HeaderValue::from_str(&state)) {
            fields.insert(RATELIMIT_POLICY.clone(), policy);
            fields.insert(RATELIMIT.clone(), state);
        }
        Ok(Some(fields))
    }

    /// Forgets the idle keys, at most every [`SWEEP`], on a blocking thread.
    fn sweep(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.sweep_at(self.epoch.elapsed().as_millis() as u64)
    }

    /// [`Limits::sweep`] at `now`, in milliseconds since `epoch`; the sweep's task, if it started one.
    fn sweep_at(&self, now: u64) -> Option<tokio::task::JoinHandle<()>> {
        let swept = self.swept.load(Ordering::Relaxed);
        if now.saturating_sub(swept) < SWEEP.as_millis() as u64
            || self.swept.compare_exchange(swept, now, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return None;
        }
        let locals: Vec<Arc<Limit>> =
            self.limits.iter().filter(|l| matches!(l.counter, Counter::Local(..))).cloned().collect();
        if locals.is_empty() {
            return None;
        }
        Some(tokio::task::spawn_blocking(move || {
            for limit in locals {
                if let Counter::Local(local, _) = &limit.counter {
                    local.retain_recent();
                    local.shrink_to_fit();
                }
            }
        }))
    }

    /// The headers limits are keyed by.
    pub fn key_headers(&self) -> impl Iterator<Item = (&str, &HeaderName)> {
        self.limits.iter().filter_map(|l| match &l.key {
            Key::Header(name) => Some((l.file.name.as_str(), name)),
            _ => None,
        })
    }

    /// The header names answers carry, for the REST frontend to pass on unprefixed.
    pub fn header_names() -> [HeaderName; 2] {
        [RATELIMIT_POLICY.clone(), RATELIMIT.clone()]
    }
}

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whether a reloaded local limit is the one running, so that it keeps its counts (a shared
/// limit's counts are in Redis: it is always built anew).
fn same(running: &LimitFile, new: &LimitFile) -> bool {
    !running.shared
        && !new.shared
        && running.name == new.name
        && running.key == new.key
        && running.limit == new.limit
        && running.per == new.per
        && running.selector == new.selector
}

/// governor's form of a quota: one call per `period / limit`, `limit` at once.
fn governor_quota(quota: Quota) -> Option<governor::Quota> {
    let limit = NonZeroU32::new(quota.limit)?;
    let interval = quota.period.checked_div(quota.limit)?;
    Some(governor::Quota::with_period(interval)?.allow_burst(limit))
}

impl Limit {
    /// The decision for one call under `key`; None when a shared limit's Redis failed and the
    /// limit fails open.
    async fn decide(&self, key: &str) -> Result<Option<Decision>, GatewayError> {
        match &self.counter {
            Counter::Local(local, hasher) => {
                use std::hash::BuildHasher;
                let hashed = hasher.hash_one(key);
                let interval = self.quota.period / self.quota.limit;
                Ok(Some(match local.check_key(&hashed) {
                    Ok(state) => {
                        let remaining = state.remaining_burst_capacity();
                        // Rounded up to a whole interval: governor does not show the arrival time.
                        let reset_after = interval * (self.quota.limit - remaining);
                        Decision { allowed: true, remaining, retry_after: Duration::ZERO, reset_after }
                    }
                    Err(not_until) => {
                        let retry_after = not_until.wait_time_from(DefaultClock::default().now());
                        // GCRA refuses while the arrival time is past the burst tolerance.
                        let reset_after = retry_after + interval * (self.quota.limit - 1);
                        Decision { allowed: false, remaining: 0, retry_after, reset_after }
                    }
                }))
            }
            Counter::Shared { redis, on_error } => {
                // A fixed-size key, the same on every replica.
                let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
                let mut scoped = format!("dragoman:{}:", self.file.name);
                for byte in &digest.as_ref()[..16] {
                    let _ = write!(scoped, "{byte:02x}");
                }
                match redis.check(&scoped, self.quota).await {
                    Ok(decision) => Ok(Some(decision)),
                    Err(e) => {
                        let refuse = *on_error == OnError::Closed;
                        STORE_ERRORS[usize::from(refuse)].fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(limit = %self.file.name, error = %e, on_error = if refuse { "closed" } else { "open" },
                            "a shared rate limit could not be counted");
                        if refuse {
                            return Err(GatewayError::new(
                                Code::Unavailable,
                                Origin::Gateway,
                                format!("rate limit {:?} cannot be checked right now; retry", self.file.name),
                            )
                            .refused(Refusal::LimitUnavailable)
                            .advised(
                                Advice::default().reason("RATE_LIMIT_UNAVAILABLE").metadata("limit", &self.file.name),
                            ));
                        }
                        Ok(None)
                    }
                }
            }
        }
    }

    /// `"name";r=…;t=…`: calls left, seconds until the quota is whole (rounded up).
    fn state(&self, decision: &Decision) -> String {
        format!("\"{}\";r={};t={}", self.file.name, decision.remaining, whole_seconds(decision.reset_after))
    }

    fn refuse(&self, key: &str, decision: Decision) -> GatewayError {
        tracing::debug!(limit = %self.file.name, key, "call refused: rate limited");
        let advice = Advice::default()
            .retry_after(decision.retry_after)
            .reason("RATE_LIMITED")
            .metadata("limit", &self.file.name)
            .header(RATELIMIT_POLICY.clone(), &self.policy)
            .header(RATELIMIT.clone(), &self.state(&Decision { remaining: 0, ..decision }));
        GatewayError::new(
            Code::ResourceExhausted,
            Origin::Client,
            format!(
                "rate limit {:?} reached ({} calls per {}); retry in {} s",
                self.file.name,
                self.quota.limit,
                humantime::format_duration(self.quota.period),
                whole_seconds(decision.retry_after)
            ),
        )
        .refused(Refusal::RateLimited)
        .advised(advice)
    }
}

#[derive(Clone)]
pub struct RateLimitLayer {
    limits: Arc<Limits>,
}

impl RateLimitLayer {
    pub fn new(limits: Arc<Limits>) -> Self {
        RateLimitLayer { limits }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit { inner, limits: self.limits.clone() }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limits: Arc<Limits>,
}

impl<S> tower::Service<Call> for RateLimit<S>
where
    S: tower::Service<Call, Response = Reply, Error = GatewayError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = GatewayError;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, GatewayError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.limits.clone();
        let keys = limits.keys(&call);
        Box::pin(async move {
            let fields = limits.count(keys).await?;
            let mut reply = inner.call(call).await?;
            if let Some(fields) = fields {
                reply.metadata.extend(fields);
            }
            Ok(reply)
        })
    }
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.limits.iter().map(|l| &l.file)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_limit_allows_its_burst_then_says_when_to_come_back() {
        let file: LimitsFile = serde_yaml_ng::from_str("limits: [{name: burst, limit: 5, per: 10s, key: client_ip}]")
            .expect("test set-up");
        let limits = Limits::new(&file, None).expect("test set-up");
        let limit = &limits.limits[0];
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("test set-up");
        let decisions: Vec<Decision> = (0..6)
            .map(|_| runtime.block_on(limit.decide("10.0.0.1")).expect("test set-up").expect("test set-up"))
            .collect();
        let remaining: Vec<u32> = decisions.iter().map(|d| d.remaining).collect();
        assert_eq!(remaining, [4, 3, 2, 1, 0, 0]);
        assert!(decisions[..5].iter().all(|d| d.allowed));
        assert!(!decisions[5].allowed);
        assert!(
            decisions[5].retry_after > Duration::from_millis(1900)
                && decisions[5].retry_after <= Duration::from_secs(2)
        );
        assert_eq!(limit.state(&decisions[4]), "\"burst\";r=0;t=10");
        assert_eq!(decisions[5].reset_after, decisions[5].retry_after + Duration::from_secs(8));
        assert_eq!(limit.policy, "\"burst\";q=5;w=10");
        let odd: LimitsFile = serde_yaml_ng::from_str("limits: [{name: odd, limit: 3, per: 1500ms}]").expect("yaml");
        assert_eq!(Limits::new(&odd, None).expect("limits").limits[0].policy, "\"odd\";q=4;w=2");
        // Another key has its own quota.
        assert!(runtime.block_on(limit.decide("10.0.0.2")).expect("test set-up").expect("test set-up").allowed);
    }

    #[test]
    fn idle_keys_are_forgotten_by_the_sweep() {
        let file: LimitsFile =
            serde_yaml_ng::from_str("limits: [{name: a, limit: 1, per: 50ms, key: client_ip}]").expect("yaml");
        let limits = Limits::new(&file, None).expect("limits");
        let keys = |limits: &Limits| match &limits.limits[0].counter {
            Counter::Local(local, _) => local.len(),
            Counter::Shared { .. } => unreachable!(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        runtime.block_on(async {
            for ip in ["10.0.0.1", "10.0.0.2"] {
                limits.limits[0].decide(ip).await.expect("decided");
            }
            assert_eq!(keys(&limits), 2);
            assert!(limits.sweep_at(1_000).is_none(), "not before SWEEP has passed");
            // governor forgets a key once its state is one interval past fresh: period + interval.
            tokio::time::sleep(Duration::from_millis(120)).await;
            limits.sweep_at(20_000).expect("a sweep").await.expect("swept");
            assert_eq!(keys(&limits), 0, "both keys were idle for a period and an interval");
        });
    }

    #[test]
    fn a_reload_keeps_the_counts_of_an_unchanged_limit_only() {
        let yaml = "limits: [{name: a, limit: 1, per: 1m}, {name: b, limit: 1, per: 1m}]";
        let first = Limits::new(&serde_yaml_ng::from_str(yaml).expect("test set-up"), None).expect("test set-up");
        let changed = "limits: [{name: a, limit: 1, per: 1m}, {name: b, limit: 2, per: 1m}]";
        let second =
            Limits::new(&serde_yaml_ng::from_str(changed).expect("test set-up"), Some(&first)).expect("test set-up");
        assert!(Arc::ptr_eq(&first.limits[0], &second.limits[0]));
        assert!(!Arc::ptr_eq(&first.limits[1], &second.limits[1]));
    }

    #[test]
    fn bad_limits_are_named() {
        for (yaml, expected) in [
            ("limits: [{name: a, limit: 0, per: 1s}]", "limits[0].limit"),
            ("limits: [{name: a, limit: 1, per: 1s, key: cookie}]", "limits[0].key"),
            ("limits: [{name: a, limit: 1, per: 1s, shared: true}]", "rate_limits.redis"),
            ("limits: [{name: a, limit: 1, per: 1s}, {name: a, limit: 2, per: 1s}]", "used twice"),
            ("limits: [{name: 'a\"b', limit: 1, per: 1s}]", "limits[0].name"),
            ("limits: [{name: a, limit: 1, per: 1000y}]", "limits[0].per"),
            ("limits: [{name: a, limit: 10000000, per: 1s}]", "per microsecond"),
            (
                "{redis: {url: 'redis://127.0.0.1:1'}, limits: [{name: a, limit: 0, per: 1s, shared: true}]}",
                "limits[0].limit",
            ),
        ] {
            let error = Limits::new(&serde_yaml_ng::from_str(yaml).expect("test set-up"), None).expect_err("an error");
            assert!(error.contains(expected), "{yaml}: {error}");
        }
    }
}
