//! `ConcurrencyLimit<S>`: a service's backends take at most `services[].max_calls_in_flight`
//! calls at once, counted across every worker; one more is refused at once (UNAVAILABLE, 503,
//! with a second's `Retry-After`) rather than queued, so an overloaded backend sheds load fast and
//! the calls it admitted keep their latency. A call holds its place until its reply ends.
//!
//! The count belongs to the config's rule: a config reload starts a new count, while calls under
//! the old one finish on theirs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::OwnedSemaphorePermit;
use tonic::Code;

use crate::call::{Body, Call, Reply};
use crate::error::{Advice, GatewayError, Origin, Refusal};

#[derive(Debug, Clone, Default)]
pub struct ConcurrencyLimitLayer;

impl<S> tower::Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
}

impl<S> tower::Service<Call> for ConcurrencyLimit<S>
where
    S: tower::Service<Call, Response = Reply, Error = GatewayError>,
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
        use futures_util::future::{Either, ready};
        let Some(rule) = call.method.rule.as_ref() else { return Either::Left(self.inner.call(call)) };
        let Some(permits) = rule.calls_in_flight.clone() else { return Either::Left(self.inner.call(call)) };
        let Ok(permit) = permits.try_acquire_owned() else {
            let message = format!(
                "{} is at its limit of calls in flight (services[{}].max_calls_in_flight); retry",
                call.method.descriptor.parent_service().full_name(),
                rule.index
            );
            let error = GatewayError::new(Code::Unavailable, Origin::Gateway, message)
                .refused(Refusal::ServiceCallsInFlight)
                .advised(Advice::default().retry_after(Duration::from_secs(1)).reason("SERVICE_BUSY"));
            return Either::Right(Box::pin(ready(Err(error))));
        };
        let reply = self.inner.call(call);
        Either::Right(Box::pin(async move {
            let Reply { metadata, body, early_status } = reply.await?;
            let body = PermitBody { inner: body, _permit: permit }.boxed_unsync();
            Ok(Reply { metadata, body, early_status })
        }))
    }
}

/// A reply body holding its call's place until it ends or is dropped.
struct PermitBody {
    inner: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for PermitBody {
    type Data = Bytes;
    type Error = GatewayError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, GatewayError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
