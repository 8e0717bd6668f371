//! Big transcodes run off the worker thread.
//!
//! A worker thread serves all its connections on one runtime (`server.rs`): a 10 MiB JSON body
//! decoded there would stall every other call of that worker for as long (measured with
//! bench/big-json.sh: small GETs' p99 went from 0.55 ms to 302 ms beside big POSTs). Work on
//! more than [`THRESHOLD`] bytes goes to the blocking pool instead, at most one per core at a
//! time across the process, so big requests queue among themselves and cannot take every core.

use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;
use tonic::Code;

use crate::error::{GatewayError, Origin};

/// Below this, a transcode costs less than handing it to another thread (tens of microseconds).
const THRESHOLD: usize = 64 << 10;

fn permits() -> Arc<Semaphore> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    PERMITS
        .get_or_init(|| Arc::new(Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))))
        .clone()
}

/// True for work big enough to go off the worker.
pub(crate) fn is_big(size: usize) -> bool {
    size >= THRESHOLD
}

/// Runs `work` on the blocking pool. Fails only if `work` panicked there. Callers run small work
/// in place, without the copies moving it to another thread needs.
pub(crate) async fn run<T, F>(work: F) -> Result<T, GatewayError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    // Never closed: acquiring only waits. The permit goes with the work, so that a caller who
    // gives up (the client went away) does not free it while the work still runs.
    let permit = permits().acquire_owned().await;
    let work = move || {
        let _permit = permit;
        work()
    };
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "a transcode failed");
        GatewayError::new(Code::Internal, Origin::Gateway, "the gateway failed to transcode this message")
    })
}
