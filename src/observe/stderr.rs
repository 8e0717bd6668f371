//! The log's stderr writer. On a worker thread, the INFO and DEBUG lines a turn of its event loop
//! logs are held and written together by a task queued behind the work the turn has woken, so a
//! busy worker makes one `write` per turn instead of one per call, and a call's access log line
//! usually goes after its reply has been handed to the client's connection, not before. A WARN or
//! ERROR line is written at once, with the lines held before it; so is every line off a worker
//! (start-up, the gateway's shared runtime, blocking threads). Held lines past `HOLD_LIMIT` are
//! written at once too, and those still held when a worker thread ends are written as it ends.
//! A process that ends without ending its workers loses what they held.

use std::cell::RefCell;
use std::io::Write;

use tokio::runtime::Handle;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Held lines past this size are written at once.
const HOLD_LIMIT: usize = 64 << 10;

thread_local! {
    static HELD: Held = const { Held(RefCell::new(Vec::new())) };
    /// This worker's own runtime: a task spawned on it runs on this thread.
    static WORKER: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// Marks this thread as a worker; called inside its single-threaded runtime.
pub(crate) fn hold_lines_on_this_worker() {
    WORKER.with(|worker| *worker.borrow_mut() = Handle::try_current().ok());
}

fn on_a_worker() -> bool {
    WORKER.with(|worker| worker.borrow().is_some())
}

/// This thread's lines not yet written.
struct Held(RefCell<Vec<u8>>);

impl Held {
    fn write_out(&self) {
        let lines = std::mem::take(&mut *self.0.borrow_mut());
        let _ = std::io::stderr().write_all(&lines);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.write_out();
    }
}

/// `tracing_subscriber::fmt().with_writer(TurnStderr)`.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct TurnStderr;

impl<'a> MakeWriter<'a> for TurnStderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { at_once: true }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line { at_once: *meta.level() <= Level::WARN || !on_a_worker() }
    }
}

/// One log line (the formatter writes it whole).
#[derive(Debug)]
pub(super) struct Line {
    at_once: bool,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let held = HELD.try_with(|held| {
            let mut lines = held.0.borrow_mut();
            let first = lines.is_empty();
            lines.extend_from_slice(buf);
            (first, lines.len())
        });
        match held {
            Ok((_, len)) if self.at_once || len >= HOLD_LIMIT => {
                let _ = HELD.try_with(Held::write_out);
            }
            Ok((true, _)) => match WORKER.with(|worker| worker.borrow().clone()) {
                Some(runtime) => drop(runtime.spawn(async {
                    let _ = HELD.try_with(Held::write_out);
                })),
                None => {
                    let _ = HELD.try_with(Held::write_out);
                }
            },
            Ok((false, _)) => {}
            // The thread is ending.
            Err(_) => return std::io::stderr().write(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> usize {
        HELD.with(|held| held.0.borrow().len())
    }

    fn log(event: impl FnOnce()) {
        let subscriber = tracing_subscriber::fmt().with_writer(TurnStderr).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, event);
    }

    #[tokio::test]
    async fn a_workers_info_lines_wait_for_the_end_of_its_turn_a_warning_does_not() {
        hold_lines_on_this_worker();
        log(|| tracing::info!("(observe::stderr test) one"));
        log(|| tracing::info!("(observe::stderr test) two"));
        let two = held();
        assert!(two > 60, "both held, not yet written: {two} bytes");
        tokio::task::yield_now().await;
        assert_eq!(held(), 0, "written once the turn's other tasks have run");
        log(|| tracing::info!("(observe::stderr test) three"));
        assert!(held() > 0);
        log(|| tracing::warn!("(observe::stderr test) four"));
        assert_eq!(held(), 0, "a warning is written at once, with the line held before it");
    }

    #[tokio::test]
    async fn off_a_worker_an_info_line_is_written_at_once() {
        log(|| tracing::info!("(observe::stderr test) at once"));
        assert_eq!(held(), 0);
    }
}
