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
//! Not yet: other codes for idempotent methods, back-off between attempts, steering the retry
//! away from the endpoint that refused, hedging.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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
    /// Retries may add at most this share of the calls (over the last 10 s)...
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

/// `retries:`, built: one budget for every worker.
pub struct Retries {
    attempts: u32,
    unavailable: Unavailable,
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
        let budget = TpsBudget::new(Duration::from_secs(10), file.budget_min_per_second, file.budget_ratio);
        let max_request = 5 + max_message_size as usize;
        Ok(Retries { attempts: file.attempts, unavailable: file.unavailable, budget, max_request })
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
            let unavailable_too = retries.unavailable == Unavailable::Always || idempotent(&call.method.descriptor);
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
                if attempt >= retries.attempts || !turned_away(&outcome, unavailable_too) || !retries.budget.withdraw()
                {
                    return outcome;
                }
                tracing::debug!(method = method.path(), attempt, "the backends turned the call away; trying again");
                attempt += 1;
            }
        }))
    }
}

/// Whether the call may be sent again: no backend could be reached (nothing was sent), or, when
/// `unavailable_too`, one answered `UNAVAILABLE` with nothing but a status.
fn turned_away(outcome: &Result<Reply, GatewayError>, unavailable_too: bool) -> bool {
    match outcome {
        Err(error) => error.retryable,
        Ok(reply) => {
            unavailable_too && reply.early_status.as_ref().is_some_and(|s| s.code() == tonic::Code::Unavailable)
        }
    }
}

/// Whether the proto marks the method `idempotency_level = NO_SIDE_EFFECTS` (1) or `IDEMPOTENT` (2).
fn idempotent(method: &prost_reflect::MethodDescriptor) -> bool {
    let proto = method.method_descriptor_proto();
    proto.options.as_ref().and_then(|o| o.idempotency_level).is_some_and(|level| level == 1 || level == 2)
}
