//! Limits shared by every gateway replica through Redis.
//!
//! Replicas behind a load balancer each see only their share of a client's calls; counted in
//! process, a quota of 100 calls a minute becomes 100 per replica. [`RedisLimiter`] keeps one GCRA
//! state per key in Redis instead, updated atomically by a Lua script (`gcra.lua`) that reads
//! Redis's own clock, so every replica counts against the same quota and clock skew between
//! replicas does not matter. Each key expires when its quota is whole again: idle clients cost no
//! memory.
//!
//! The connection is opened lazily, on the first check, and every check is bounded by the
//! configured timeout, connect included. After a failure the limiter answers
//! [`RedisUnavailable`] at once for a back-off, then lets one call at a time reconnect; a Redis
//! that comes back is used again without a restart.
//!
//! It does not decide what a call does when Redis cannot answer: failing open (admit) or closed
//! (refuse) is the caller's choice, made on [`RedisUnavailable`]. Nor does it cache or
//! approximate counts locally: every check is one round trip.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script};
use tokio::sync::Notify;
use tokio::time::{Instant, timeout_at};

use super::{Decision, Quota};

/// The shortest back-off after a failure, whatever the timeout.
const MIN_BACKOFF: Duration = Duration::from_secs(1);

/// A Redis server holding the shared limits' state. Send + Sync; one per config, shared behind an
/// `Arc` by every worker and call.
pub struct RedisLimiter {
    client: Client,
    /// The URL without its password, for errors and logs.
    url: String,
    timeout: Duration,
    backoff: Duration,
    script: Script,
    /// Read lock-free on every check; replaced on connect and failure only.
    link: ArcSwap<Link>,
    /// Wakes the calls waiting for the first connection.
    connected: Notify,
    generations: AtomicU64,
}

/// Redis could not answer in time (down, refused, timed out, script error): the caller decides
/// to fail open or closed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("redis at {url}: {reason}")]
pub struct RedisUnavailable {
    pub url: String,
    pub reason: String,
}

/// The state of the one connection every check shares.
enum Link {
    /// Never connected, or a connect was abandoned: the next call connects.
    Idle,
    /// One call is connecting. After a failure the others answer at once with `failure`; on the
    /// first connection (`failure` is `None`) they wait for it, within their timeout.
    Connecting { failure: Option<String> },
    /// Connected; `generation` tells this connection from the ones before it, so a late failure
    /// on an old connection does not bring down a new one.
    Up { connection: MultiplexedConnection, generation: u64 },
    /// Failed: answer at once until `until`, then one call reconnects.
    Down { until: Instant, reason: String },
}

/// What a check does next, decided from one look at the link.
enum Step {
    Use(MultiplexedConnection, u64),
    Fail(String),
    Wait,
    Connect(Option<String>),
}

impl RedisLimiter {
    /// Parses the URL (`redis://host:port/db`, optional password); opens no socket here (config
    /// loading is synchronous and must not block on Redis). `timeout` bounds every check (connect
    /// included).
    pub fn new(url: &str, timeout: std::time::Duration) -> Result<RedisLimiter, String> {
        let client = Client::open(url).map_err(|e| format!("invalid redis URL: {e}"))?;
        let info = client.get_connection_info();
        let url = format!("redis://{}/{}", info.addr(), info.redis_settings().db());
        Ok(RedisLimiter {
            client,
            url,
            timeout,
            backoff: timeout.max(MIN_BACKOFF),
            script: Script::new(include_str!("gcra.lua")),
            link: ArcSwap::from_pointee(Link::Idle),
            connected: Notify::new(),
            generations: AtomicU64::new(0),
        })
    }

    /// Counts one call against `quota` under `key` (the caller namespaces keys, e.g.
    /// "dragoman:{limit-name}:{client-key}"), atomically in one Lua script. Returns within the
    /// timeout, with microsecond precision.
    ///
    /// A quota of zero calls admits none: refused without asking Redis, retrying after a period.
    pub async fn check(&self, key: &str, quota: Quota) -> Result<Decision, RedisUnavailable> {
        if quota.limit == 0 {
            return Ok(Decision { allowed: false, remaining: 0, retry_after: quota.period, reset_after: quota.period });
        }
        let deadline = Instant::now() + self.timeout;
        let (mut connection, generation) = self.connection(deadline).await?;
        let interval = micros(quota.period / quota.limit).max(1);
        let mut invocation = self.script.key(key);
        invocation.arg(interval).arg(quota.limit);
        let reply = timeout_at(deadline, invocation.invoke_async::<(i64, i64, i64, i64)>(&mut connection)).await;
        match reply {
            Ok(Ok((allowed, remaining, retry_after, reset_after))) => Ok(Decision {
                allowed: allowed == 1,
                remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
                retry_after: from_micros(retry_after),
                reset_after: from_micros(reset_after),
            }),
            Ok(Err(e)) if breaks_connection(&e) => Err(self.fail(generation, e.to_string())),
            // A server error (the script failed, Redis is loading...): the connection is fine.
            Ok(Err(e)) => Err(self.unavailable(e.to_string())),
            Err(_) => Err(self.fail(generation, format!("no answer within {:?}", self.timeout))),
        }
    }

    /// The shared connection, connecting if there is none and no recent failure.
    async fn connection(&self, deadline: Instant) -> Result<(MultiplexedConnection, u64), RedisUnavailable> {
        loop {
            let link = self.link.load_full();
            let step = match &*link {
                Link::Up { connection, generation } => Step::Use(connection.clone(), *generation),
                Link::Down { until, reason } if Instant::now() < *until => Step::Fail(reason.clone()),
                Link::Connecting { failure: Some(reason) } => Step::Fail(reason.clone()),
                Link::Connecting { failure: None } => Step::Wait,
                Link::Down { reason, .. } => Step::Connect(Some(reason.clone())),
                Link::Idle => Step::Connect(None),
            };
            match step {
                Step::Use(connection, generation) => return Ok((connection, generation)),
                Step::Fail(reason) => return Err(self.unavailable(reason)),
                Step::Wait => {
                    let connected = self.connected.notified();
                    tokio::pin!(connected);
                    connected.as_mut().enable();
                    // Connected or failed between the look and the registration: look again.
                    if !Arc::ptr_eq(&link, &self.link.load_full()) {
                        continue;
                    }
                    if timeout_at(deadline, connected).await.is_err() {
                        return Err(self.unavailable(format!("not connected within {:?}", self.timeout)));
                    }
                }
                Step::Connect(failure) => {
                    // Single flight: only the call that swaps the link to Connecting connects.
                    let connecting = Arc::new(Link::Connecting { failure: failure.clone() });
                    let previous = self.link.compare_and_swap(&link, connecting);
                    if Arc::ptr_eq(&previous, &link) {
                        return self.connect(deadline, failure.is_some()).await;
                    }
                }
            }
        }
    }

    /// Connects, as the one call allowed to, and publishes the outcome.
    async fn connect(
        &self,
        deadline: Instant,
        after_failure: bool,
    ) -> Result<(MultiplexedConnection, u64), RedisUnavailable> {
        // If the caller drops this call mid-connect, the next call connects again.
        let mut attempt = Attempt { limiter: self, settled: false, after_failure };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let connected = timeout_at(deadline, self.client.get_multiplexed_async_connection_with_config(&config)).await;
        attempt.settled = true;
        let reason = match connected {
            Ok(Ok(connection)) => {
                let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
                let up = Link::Up { connection: connection.clone(), generation };
                self.link.store(Arc::new(up));
                self.connected.notify_waiters();
                if after_failure {
                    tracing::info!(url = %self.url, "redis for shared limits reachable again");
                }
                return Ok((connection, generation));
            }
            Ok(Err(e)) => format!("cannot connect: {e}"),
            Err(_) => format!("cannot connect within {:?}", self.timeout),
        };
        self.go_down(&reason);
        Err(self.unavailable(reason))
    }

    /// Takes the connection of `generation` down after it failed, unless a newer one replaced it.
    fn fail(&self, generation: u64, reason: String) -> RedisUnavailable {
        let link = self.link.load_full();
        if matches!(&*link, Link::Up { generation: g, .. } if *g == generation) {
            let down = Arc::new(Link::Down { until: Instant::now() + self.backoff, reason: reason.clone() });
            let previous = self.link.compare_and_swap(&link, down);
            if Arc::ptr_eq(&previous, &link) {
                tracing::warn!(url = %self.url, %reason, backoff = ?self.backoff, "redis for shared limits unavailable");
            }
        }
        self.unavailable(reason)
    }

    /// Publishes a failed connect: every call fails at once for the back-off.
    fn go_down(&self, reason: &str) {
        let down = Link::Down { until: Instant::now() + self.backoff, reason: reason.to_owned() };
        self.link.store(Arc::new(down));
        self.connected.notify_waiters();
        tracing::warn!(url = %self.url, %reason, backoff = ?self.backoff, "redis for shared limits unavailable");
    }

    fn unavailable(&self, reason: String) -> RedisUnavailable {
        RedisUnavailable { url: self.url.clone(), reason }
    }
}

/// The connect in progress: if its call is dropped before it settles, the link goes back to a
/// state where the next call connects, and the waiters look again.
struct Attempt<'a> {
    limiter: &'a RedisLimiter,
    settled: bool,
    after_failure: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let link = if self.after_failure {
            // Still failing as far as anyone knows, but the back-off is over.
            Link::Down { until: Instant::now(), reason: "reconnect abandoned".to_owned() }
        } else {
            Link::Idle
        };
        self.limiter.link.store(Arc::new(link));
        self.limiter.connected.notify_waiters();
    }
}

/// Errors after which the connection cannot be trusted (I/O, dropped, timed out), as opposed to
/// a server's answer on a working connection.
fn breaks_connection(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn from_micros(micros: i64) -> Duration {
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

#[cfg(test)]
mod tests;
