//! What the listener lets in: a cap on open connections and on requests in flight (process-wide,
//! shared by every worker), each connection's activity (for the idle timeout), and the response
//! body wrapper that keeps a request counted until its response has ended.
//!
//! The request path pays a handful of atomic additions: no lock, no allocation.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ServerLimits;

/// The process-wide caps.
pub(super) struct Admission {
    connections: Arc<Semaphore>,
    calls: AtomicUsize,
    max_calls: usize,
}

impl Admission {
    pub(super) fn new(limits: &ServerLimits) -> Self {
        Admission {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            calls: AtomicUsize::new(0),
            max_calls: limits.max_calls_in_flight,
        }
    }

    /// A slot for a new connection, held as long as it is open; None at `max_connections`.
    pub(super) fn connection(&self) -> Option<OwnedSemaphorePermit> {
        self.connections.clone().try_acquire_owned().ok()
    }

    /// Counts a request in, on its connection too; None (and nothing counted globally) at
    /// `max_calls_in_flight`.
    pub(super) fn call(self: &Arc<Self>, activity: &Arc<Activity>) -> Option<CallGuard> {
        activity.started.fetch_add(1, Ordering::Relaxed);
        if self.calls.fetch_add(1, Ordering::Relaxed) >= self.max_calls {
            self.calls.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(CallGuard { admission: self.clone(), activity: activity.clone() })
    }
}

/// One connection's requests: how many started, how many have not finished.
#[derive(Debug, Default)]
pub(super) struct Activity {
    started: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    /// Resolves once the connection has had no request in flight and none started for a whole
    /// `idle` period: between one and two periods after its last response ended.
    pub(super) async fn idle(&self, idle: Duration) {
        loop {
            let seen = self.started.load(Ordering::Relaxed);
            tokio::time::sleep(idle).await;
            if self.in_flight.load(Ordering::Relaxed) == 0 && self.started.load(Ordering::Relaxed) == seen {
                return;
            }
        }
    }
}

/// A request counted in; counted out when dropped.
pub(super) struct CallGuard {
    admission: Arc<Admission>,
    activity: Arc<Activity>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.admission.calls.fetch_sub(1, Ordering::Relaxed);
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted until it has been sent or dropped.
pub(super) struct Tracked<B> {
    inner: B,
    _guard: Option<CallGuard>,
}

impl<B> Tracked<B> {
    pub(super) fn new(inner: B, guard: Option<CallGuard>) -> Self {
        Tracked { inner, _guard: guard }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
