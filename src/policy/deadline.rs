//! `Deadline<S>`: every call ends by its deadline, whatever the backend does.
//!
//! The deadline is the client's (`grpc-timeout`, set by the frontend), cut to the method's
//! `timeouts[].max`, or, when the client set none, the method's `timeouts[].default`, else the
//! service's `timeout`. Waiting for the reply's headers and streaming its
//! body both stop at the deadline with `DEADLINE_EXCEEDED`; dropping the backend's stream then
//! resets it there. Backends also get the remainder as `grpc-timeout` from the upstream (rounded
//! up, so theirs never ends before ours), and a failure that arrives once the deadline has passed
//! is reported as `DEADLINE_EXCEEDED`, whatever code the backend gave it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};

use serde::{Deserialize, Serialize};

use crate::call::{Body, Call, Reply, status_trailers};
use crate::error::GatewayError;
use crate::policy::selector::Selector;

/// One `timeouts:` entry: the deadlines of the calls it covers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutFile {
    /// The calls it covers: `pkg.Service/Method`, `pkg.Service`, `pkg.*` or `*`; the most
    /// specific entry decides.
    #[serde(rename = "match")]
    pub selector: Selector,
    /// The deadline of a call whose client sets none (instead of the service's `timeout`).
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub default: Option<Duration>,
    /// The longest deadline a client may ask for: a longer one (or none) is cut to it.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
}

/// Checks the `timeouts:` entries: distinct matches, a default within the max.
pub fn check(timeouts: &[TimeoutFile]) -> Result<(), String> {
    for (i, timeout) in timeouts.iter().enumerate() {
        if timeouts[..i].iter().any(|t| t.selector == timeout.selector) {
            return Err(format!("at `timeouts[{i}].match`: {} is matched by an earlier entry too", timeout.selector));
        }
        if let (Some(default), Some(max)) = (timeout.default, timeout.max) {
            if default > max {
                return Err(format!("at `timeouts[{i}]`: default is longer than max"));
            }
        }
        if timeout.default.is_some_and(|d| d.is_zero()) || timeout.max.is_some_and(|m| m.is_zero()) {
            return Err(format!("at `timeouts[{i}]`: a timeout of 0s would refuse every call"));
        }
        let longest = crate::config::MAX_DURATION;
        if timeout.default.is_some_and(|d| d > longest) || timeout.max.is_some_and(|m| m > longest) {
            return Err(format!("at `timeouts[{i}]`: at most 366 days"));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Default)]
pub struct DeadlineLayer {
    timeouts: Arc<[TimeoutFile]>,
}

impl DeadlineLayer {
    pub fn new(timeouts: Arc<[TimeoutFile]>) -> Self {
        DeadlineLayer { timeouts }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner, timeouts: self.timeouts.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    timeouts: Arc<[TimeoutFile]>,
}

impl<S> Deadline<S> {
    /// The call's deadline: the client's within the method's max, else the method's default,
    /// else the service's.
    fn deadline(&self, call: &Call) -> Option<Instant> {
        let service_default = || call.method.rule.as_ref().and_then(|r| r.default_timeout);
        if self.timeouts.is_empty() {
            return call.deadline.or_else(|| service_default().map(|t| Instant::now() + t));
        }
        let service = call.method.descriptor.parent_service().full_name();
        let method = call.method.descriptor.name();
        let entry = self
            .timeouts
            .iter()
            .filter_map(|t| Some((t.selector.specificity(service, method)?, t)))
            .max_by_key(|(specificity, _)| *specificity)
            .map(|(_, t)| t);
        let now = Instant::now();
        let max = entry.and_then(|t| t.max).map(|max| now + max);
        let default = entry.and_then(|t| t.default).or_else(service_default).map(|t| now + t);
        match (call.deadline, max) {
            (Some(client), Some(max)) => Some(client.min(max)),
            (Some(client), None) => Some(client),
            (None, max) => default.map(|d| max.map_or(d, |m| d.min(m))).or(max),
        }
    }
}

impl<S> tower::Service<Call> for Deadline<S>
where
    S: tower::Service<Call, Response = Reply, Error = GatewayError>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = GatewayError;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, GatewayError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Call) -> Self::Future {
        call.deadline = self.deadline(&call);
        let Some(deadline) = call.deadline else {
            return Box::pin(self.inner.call(call));
        };
        let reply = self.inner.call(call);
        Box::pin(async move {
            let reply =
                tokio::time::timeout_at(deadline, reply).await.map_err(|_| GatewayError::deadline_exceeded())?;
            // Past the deadline, any failure is the deadline's, whoever noticed it first.
            let passed = || Instant::now() >= deadline;
            let Reply { metadata, body, early_status } = match reply {
                Err(_) if passed() => return Err(GatewayError::deadline_exceeded()),
                reply => reply?,
            };
            if early_status.as_ref().is_some_and(|s| s.code() != tonic::Code::Ok) && passed() {
                return Err(GatewayError::deadline_exceeded());
            }
            let body =
                DeadlineBody { inner: body, sleep: Box::pin(tokio::time::sleep_until(deadline)), expired: false };
            Ok(Reply { metadata, body: body.boxed_unsync(), early_status })
        })
    }
}

/// A reply body that fails with `DEADLINE_EXCEEDED` once the deadline passes.
struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    expired: bool,
}

impl DeadlineBody {
    /// A backend that gives up at the deadline may call it anything: CANCELLED (tonic servers),
    /// UNKNOWN "context deadline exceeded" (a Go handler returning its context's error). Past the
    /// deadline, a failed call's outcome is DEADLINE_EXCEEDED whoever noticed first, as a gRPC
    /// client library would report it (504 on REST, not 500).
    fn past_deadline(&self, frame: Result<Frame<Bytes>, GatewayError>) -> Result<Frame<Bytes>, GatewayError> {
        let passed = || Instant::now() >= self.sleep.deadline();
        match frame {
            Err(_) if passed() => Err(GatewayError::deadline_exceeded()),
            Ok(frame) => {
                let status = frame.trailers_ref().and_then(|t| t.get(&crate::call::GRPC_STATUS));
                if status.is_some_and(|s| s.as_bytes() != b"0") && passed() {
                    return Ok(Frame::trailers(status_trailers(&GatewayError::deadline_exceeded().to_status())));
                }
                Ok(frame)
            }
            error => error,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = GatewayError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, GatewayError>>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| self.past_deadline(frame)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.expired = true;
                Poll::Ready(Some(Err(GatewayError::deadline_exceeded())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
