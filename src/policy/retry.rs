//! `Retry<S>`: a call the backends turned away is sent again — when no backend could be reached
//! (nothing was sent), and on `UNAVAILABLE` for the methods the proto marks idempotent (or every
//! method, with `unavailable: always`) — at most `retries.attempts` times in all, and only while the retry
//! budget allows, so retries cannot multiply an outage.
//!
//! Only calls with one request message are retried: their request is buffered (at most one
//! framed message of `server.max_message_size`; more is refused) so it can be sent again. A reply is
//! retried only when it is nothing but a status (gRPC's Trailers-Only): once a backend has sent a
//! message, the call is the client's. The deadline layer above bounds every attempt together.
//!
//! Methods the proto marks idempotent are also sent again on the codes `retries.idempotent_codes`
//! names. Attempts are spaced by a jittered, doubling back-off, and a retry goes to another
//! backend than the earlier attempts while one can take it (`call::TriedBackends`).
//!
//! Not yet: hedging.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use tower::retry::budget::{Budget, TpsBudget};

use crate::call::{Call, Reply};
use crate::error::GatewayError;

/// The `retries:` section.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesFile {
    /// Tries in all, the first included. Default 2 (one retry).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Retries may add at most this share of the calls (over the last 10 s)... Below 1 it is
    /// taken as one in a whole number of calls, rounding the share up (tower's budget): 0.3 allows
    /// one retry per 3 calls, and anything above 0.5 one per call.
    #[serde(default = "default_ratio")]
    pub budget_ratio: f32,
    /// ...plus this many per second, so a quiet gateway can still retry.
    #[serde(default = "default_min_per_second")]
    pub budget_min_per_second: u32,
    /// Which calls a backend's UNAVAILABLE sends again: `idempotent` (default: the methods the
    /// proto marks `idempotency_level = NO_SIDE_EFFECTS` or `IDEMPOTENT`; a backend may have done
    /// part of the work before answering so) or `always`. A call no backend could be reached for
    /// is sent again either way: nothing was sent.
    #[serde(default)]
    pub unavailable: Unavailable,
    /// Further codes that send a call again, for the methods the proto marks idempotent only
    /// (`resource_exhausted`, `aborted`, `internal`...; UNAVAILABLE is `unavailable`'s). Default
    /// none.
    #[serde(default)]
    pub idempotent_codes: Vec<String>,
    /// The wait before the first retry; each further one waits twice as long, up to
    /// `max_backoff`. Each wait is drawn at random up to that (full jitter), so retries of many
    /// calls do not arrive together. Default 25ms.
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    /// Default 250ms.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

/// `retries.unavailable`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unavailable {
    #[default]
    Idempotent,
    Always,
}

fn default_attempts() -> u32 {
    2
}

fn default_ratio() -> f32 {
    0.2
}

fn default_min_per_second() -> u32 {
    10
}

fn default_backoff() -> Duration {
    Duration::from_millis(25)
}

fn default_max_backoff() -> Duration {
    Duration::from_millis(250)
}

/// Calls sent again, and retries the budget did not allow, since start (every config's).
static RETRIED: AtomicU64 = AtomicU64::new(0);
static OVER_BUDGET: AtomicU64 = AtomicU64::new(0);

/// `dragoman_retries_total` for the metrics exposition.
pub fn render(out: &mut String, openmetrics: bool) {
    let values = [
        ("result=\"sent\"", RETRIED.load(Ordering::Relaxed)),
        ("result=\"over_budget\"", OVER_BUDGET.load(Ordering::Relaxed)),
    ];
    let help = "Calls the backends turned away that the gateway sent again, or did not as the retry budget was spent.";
    crate::observe::metrics::counter(out, openmetrics, "dragoman_retries_total", help, &values);
}

/// `retries:`, built: one budget for every worker.
pub struct Retries {
    attempts: u32,
    unavailable: Unavailable,
    /// `idempotent_codes` as a set: bit `code as u32`.
    idempotent_codes: u32,
    backoff: Duration,
    max_backoff: Duration,
    budget: TpsBudget,
    /// The most request bytes kept to send again: one framed message of `server.max_message_size`.
    max_request: usize,
}

impl Retries {
    pub fn new(file: &RetriesFile, max_message_size: u32) -> Result<Self, String> {
        if !(1..=10).contains(&file.attempts) {
            return Err("at `retries.attempts`: between 1 and 10".to_owned());
        }
        if !(0.0..=1000.0).contains(&file.budget_ratio) {
            return Err("at `retries.budget_ratio`: between 0 and 1000".to_owned());
        }
        if file.budget_min_per_second > 1_000_000 {
            return Err("at `retries.budget_min_per_second`: at most 1000000".to_owned());
        }
        let mut idempotent_codes = 0;
        for name in &file.idempotent_codes {
            let code = (1..=16)
                .map(tonic::Code::from_i32)
                .find(|code| crate::transcode::status::code_name(*code).eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    format!("at `retries.idempotent_codes`: {name:?} is not a gRPC status code other than OK")
                })?;
            idempotent_codes |= 1 << code as u32;
        }
        if file.backoff > file.max_backoff || file.max_backoff > Duration::from_secs(60) {
            return Err("at `retries.backoff`: at most `max_backoff`, which is at most 60s".to_owned());
        }
        let budget = TpsBudget::new(Duration::from_secs(10), file.budget_min_per_second, file.budget_ratio);
        let max_request = 5 + max_message_size as usize;
        Ok(Retries {
            attempts: file.attempts,
            unavailable: file.unavailable,
            idempotent_codes,
            backoff: file.backoff,
            max_backoff: file.max_backoff,
            budget,
            max_request,
        })
    }

    /// The codes that send a call of `method` again, as a set (bit `code as u32`).
    fn codes_for(&self, method: &prost_reflect::MethodDescriptor) -> u32 {
        const UNAVAILABLE: u32 = 1 << tonic::Code::Unavailable as u32;
        match (idempotent(method), self.unavailable) {
            (true, _) => UNAVAILABLE | self.idempotent_codes,
            (false, Unavailable::Always) => UNAVAILABLE,
            (false, Unavailable::Idempotent) => 0,
        }
    }

    /// The wait before retry number `retry` (1 for the first): full jitter over a doubling
    /// back-off.
    fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.backoff.saturating_mul(1 << (retry - 1).min(16)).min(self.max_backoff);
        // A fresh RandomState's keys differ per call: a cheap draw, off the hot path.
        let draw = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), retry);
        ceiling.mul_f64((draw >> 11) as f64 / (1u64 << 53) as f64)
    }
}

impl std::fmt::Debug for Retries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retries").field("attempts", &self.attempts).finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct RetryLayer {
    retries: Arc<Retries>,
}

impl RetryLayer {
    pub fn new(retries: Arc<Retries>) -> Self {
        RetryLayer { retries }
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Retry { inner, retries: self.retries.clone() }
    }
}

#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    retries: Arc<Retries>,
}

impl<S> tower::Service<Call> for Retry<S>
where
    S: tower::Service<Call, Response = Reply, Error = GatewayError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = GatewayError;
    type Future =
        futures_util::future::Either<S::Future, Pin<Box<dyn Future<Output = Result<Reply, GatewayError>> + Send>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        use futures_util::future::Either;
        // A client stream cannot be sent twice; nor can a call with one try.
        if call.method.descriptor.is_client_streaming() || self.retries.attempts < 2 || call.method.local.is_some() {
            return Either::Left(self.inner.call(call));
        }
        let inner = self.inner.clone();
        let retries = self.retries.clone();
        Either::Right(Box::pin(async move {
            retries.budget.deposit();
            let codes = retries.codes_for(&call.method.descriptor);
            let Call { method, protocol, metadata, deadline, peer, client, mut extensions, body } = call;
            extensions.insert(crate::call::TriedBackends::default());
            // Kept whole to be sent again, so bounded: a unary call carries one message (the
            // frontends bound each message, not how many a gRPC client sends).
            let request = match http_body_util::Limited::new(body, retries.max_request).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    return Err(match error.downcast::<GatewayError>() {
                        Ok(error) => *error,
                        Err(_) => GatewayError::new(
                            tonic::Code::ResourceExhausted,
                            crate::error::Origin::Client,
                            "the request holds more than the one message this method takes",
                        ),
                    });
                }
            };
            let mut attempt = 1;
            loop {
                let call = Call {
                    method: method.clone(),
                    protocol,
                    metadata: metadata.clone(),
                    deadline,
                    peer,
                    client: client.clone(),
                    extensions: extensions.clone(),
                    body: Full::new(request.clone()).map_err(|never| match never {}).boxed_unsync(),
                };
                let outcome = inner.clone().oneshot(call).await;
                if attempt >= retries.attempts || !turned_away(&outcome, codes) {
                    return outcome;
                }
                // A wait that would outlast the deadline leaves the client the answer it has.
                let wait = retries.backoff(attempt);
                if deadline.is_some_and(|d| tokio::time::Instant::now() + wait >= d) {
                    return outcome;
                }
                if !retries.budget.withdraw() {
                    OVER_BUDGET.fetch_add(1, Ordering::Relaxed);
                    return outcome;
                }
                RETRIED.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(method = method.path(), attempt, "the backends turned the call away; trying again");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }))
    }
}

/// Whether the call may be sent again: no backend could be reached (nothing was sent), or the
/// backend failed it with one of `codes` (a set: bit `code as u32`) — answering nothing but that
/// status, or failing as a transport before answering.
fn turned_away(outcome: &Result<Reply, GatewayError>, codes: u32) -> bool {
    let listed = |code: tonic::Code| codes & (1 << code as u32) != 0;
    match outcome {
        Err(error) => {
            error.retryable
                || (error.origin == crate::error::Origin::Upstream && error.refusal.is_none() && listed(error.code))
        }
        Ok(reply) => reply.early_status.as_ref().is_some_and(|s| listed(s.code())),
    }
}

/// Whether the proto marks the method `idempotency_level = NO_SIDE_EFFECTS` (1) or `IDEMPOTENT` (2).
fn idempotent(method: &prost_reflect::MethodDescriptor) -> bool {
    let proto = method.method_descriptor_proto();
    proto.options.as_ref().and_then(|o| o.idempotency_level).is_some_and(|level| level == 1 || level == 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_its_ceiling_and_is_drawn_below_it() {
        let file: RetriesFile = serde_yaml_ng::from_str("{backoff: 10ms, max_backoff: 35ms}").expect("yaml");
        let retries = Retries::new(&file, 1024).expect("valid");
        for (retry, ceiling) in [(1, 10), (2, 20), (3, 35), (30, 35)] {
            let waits: Vec<Duration> = (0..200).map(|_| retries.backoff(retry)).collect();
            assert!(waits.iter().all(|w| *w <= Duration::from_millis(ceiling)), "retry {retry}: {waits:?}");
            // Spread over the range, not one fixed wait.
            assert!(waits.iter().any(|w| *w < Duration::from_millis(ceiling / 3)), "retry {retry}");
            assert!(waits.iter().any(|w| *w > Duration::from_millis(ceiling * 2 / 3)), "retry {retry}");
        }
    }

    #[test]
    fn a_back_off_longer_than_its_ceiling_is_refused() {
        let file: RetriesFile = serde_yaml_ng::from_str("{backoff: 1s, max_backoff: 100ms}").expect("yaml");
        assert!(Retries::new(&file, 1024).is_err());
    }
}
