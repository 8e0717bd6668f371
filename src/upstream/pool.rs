//! The backends of one config rule, and how calls spread over them: round-robin, moving on to
//! the next endpoint when one cannot be reached (nothing has been sent yet, so that is safe).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::client::conn::http2::SendRequest;

use super::connection::Endpoint;
use crate::call::Body;
use crate::config::ServiceRule;

pub(super) struct Pool {
    endpoints: Box<[Endpoint]>,
    next: AtomicUsize,
}

impl Pool {
    pub(super) fn new(rule: &Arc<ServiceRule>) -> Self {
        let endpoints = rule.backends.iter().map(|b| Endpoint::new(b.clone(), rule.clone())).collect();
        Pool { endpoints, next: AtomicUsize::new(0) }
    }

    /// A connection to the next reachable endpoint, or every endpoint's failure.
    pub(super) async fn sender(&self) -> Result<(SendRequest<Body>, &Endpoint), String> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in 0..self.endpoints.len() {
            let endpoint = &self.endpoints[(start + i) % self.endpoints.len()];
            match endpoint.sender().await {
                Ok(sender) => return Ok((sender, endpoint)),
                Err(e) => {
                    tracing::warn!(backend = %endpoint.backend, error = %e, "backend unreachable");
                    failures.push(format!("{}: {e}", endpoint.backend));
                }
            }
        }
        Err(failures.join("; "))
    }
}
