//! The backends of one config rule, and how calls spread over them: round-robin over the
//! endpoints that can take a call now, without waiting on those that cannot.
//!
//! A call first looks for a live connection with a free stream, starting from the next endpoint
//! in turn; endpoints in back-off are skipped, idle ones start dialing in the background. Only
//! when none can take it now does the call wait — for the first dial under way to succeed, or
//! for a stream to free up on a connection at its limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;

use super::connection::{Connection, Endpoint, Status, Stream, dialed};
use crate::config::ServiceRule;

pub(super) struct Pool {
    endpoints: Box<[Arc<Endpoint>]>,
    next: AtomicUsize,
}

/// Why no stream could be had: for the log, not for the client.
pub(super) enum NoStream {
    /// Every endpoint failed to connect (their errors).
    Unreachable(String),
    /// Connections are up, but at the backend's stream limit for longer than the call could wait.
    Full { limit: u32 },
}

impl Pool {
    pub(super) fn new(rule: &Arc<ServiceRule>) -> Self {
        let endpoints = rule.backends.iter().map(|b| Arc::new(Endpoint::new(b.clone(), rule.clone()))).collect();
        Pool { endpoints, next: AtomicUsize::new(0) }
    }

    /// A stream to send a call on, and its endpoint; waits at most `patience` for a full
    /// connection to free a stream.
    pub(super) async fn stream(&self, patience: Duration) -> Result<(Stream, &Endpoint), NoStream> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.endpoints.len();
        let mut dialing = Vec::new();
        let mut failures = Vec::new();
        let mut full: Option<(Arc<Connection>, &Endpoint)> = None;
        for i in 0..n {
            let endpoint = &self.endpoints[(start + i) % n];
            match endpoint.status() {
                Status::Ready(connection) => match connection.try_stream() {
                    Some(stream) => return Ok((stream, endpoint)),
                    None => {
                        full.get_or_insert((connection, endpoint));
                    }
                },
                Status::Dialing(receiver) => {
                    dialing.push(dialed(receiver).map(move |r| r.map(|c| (c, endpoint))).boxed())
                }
                Status::BackingOff(error) => failures.push(format!("{}: {error}", endpoint.backend)),
            }
        }
        // Nothing can take the call now: the first dial to succeed...
        if !dialing.is_empty() {
            match futures_util::future::select_ok(dialing).await {
                Ok(((connection, endpoint), _)) => {
                    if let Some(stream) = connection.stream(patience).await {
                        return Ok((stream, endpoint));
                    }
                    full.get_or_insert((connection, endpoint));
                }
                Err(error) => failures.push(error),
            }
        }
        // ...or a stream freed on a connection at its limit.
        if let Some((connection, endpoint)) = full {
            return match connection.stream(patience).await {
                Some(stream) => Ok((stream, endpoint)),
                None => Err(NoStream::Full { limit: connection.limit() }),
            };
        }
        Err(NoStream::Unreachable(failures.join("; ")))
    }
}
