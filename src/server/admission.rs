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
    calls: Padded,
    max_calls: usize,
}

/// A counter on a cache line of its own: every worker touches it on every request, and nothing
/// else should move with it.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicUsize);

impl Admission {
    pub(super) fn new(limits: &ServerLimits) -> Self {
        Admission {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            calls: Padded::default(),
            max_calls: limits.max_calls_in_flight,
        }
    }

    /// A slot for a new connection, held as long as it is open; None at `max_connections`.
    pub(super) fn connection(&self) -> Option<OwnedSemaphorePermit> {
        self.connections.clone().try_acquire_owned().ok()
    }

    /// Counts a request in, on its connection too; None (and nothing counted globally) at
    /// `max_calls_in_flight`.
    pub(super) fn call(&'static self, activity: &Arc<Activity>) -> Option<CallGuard> {
        activity.events.fetch_add(1, Ordering::Relaxed);
        if self.calls.0.fetch_add(1, Ordering::Relaxed) >= self.max_calls {
            self.calls.0.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(CallGuard { admission: self, activity: activity.clone() })
    }
}

/// One connection's requests: how many started or ended (its activity), how many are in flight.
#[derive(Debug, Default)]
pub(super) struct Activity {
    events: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    /// Requests whose response has not ended.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Resolves once the connection should close for want of requests: none started within
    /// `first` of the connection being served, or none in flight and none started or ended for a
    /// whole `idle` period since (between one and two periods after its last response ended).
    pub(super) async fn idle(&self, first: Duration, idle: Duration) {
        let opened = tokio::time::Instant::now();
        loop {
            let seen = self.events.load(Ordering::Relaxed);
            tokio::time::sleep(if seen == 0 { first.min(idle) } else { idle }).await;
            let quiet = self.in_flight.load(Ordering::Relaxed) == 0 && self.events.load(Ordering::Relaxed) == seen;
            if quiet && (seen > 0 || opened.elapsed() >= first) {
                return;
            }
        }
    }
}

/// A request counted in; counted out when dropped.
pub(super) struct CallGuard {
    admission: &'static Admission,
    activity: Arc<Activity>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.admission.calls.0.fetch_sub(1, Ordering::Relaxed);
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.activity.events.fetch_add(1, Ordering::Relaxed);
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
