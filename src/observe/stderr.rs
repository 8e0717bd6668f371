//! The log's stderr writer. On a worker, the lines a turn of its event loop logs are held and
//! written together by a task queued behind the turn's work, so the access log line of a call is
//! written after its reply has gone out, not before, and a busy worker makes one `write` per turn
//! instead of one per call. Anywhere else (start-up, the gateway's shared runtime) a line is
//! written at once.
//!
//! Lines still held when a worker thread ends are written as it ends.

use std::cell::RefCell;
use std::io::Write;

use tokio::runtime::{Handle, RuntimeFlavor};
use tracing_subscriber::fmt::MakeWriter;

thread_local! {
    static HELD: Held = const { Held(RefCell::new(Vec::new())) };
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
        Line
    }
}

/// One log line (the formatter writes it whole).
#[derive(Debug)]
pub(super) struct Line;

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // A worker is a single-threaded runtime: a task it is told to spawn runs on this thread.
        let on_a_worker = Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread);
        if !on_a_worker {
            return std::io::stderr().write(buf);
        }
        let first = HELD.try_with(|held| {
            let mut lines = held.0.borrow_mut();
            lines.extend_from_slice(buf);
            lines.len() == buf.len()
        });
        match first {
            Ok(true) => drop(tokio::spawn(async {
                let _ = HELD.try_with(Held::write_out);
            })),
            Ok(false) => {}
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

    #[tokio::test]
    async fn a_workers_lines_wait_for_the_end_of_its_turn_then_go_together() {
        Line.write_all(b"(observe::stderr test) one\n").expect("held");
        Line.write_all(b"(observe::stderr test) two\n").expect("held");
        assert_eq!(held(), 54, "held, not yet written");
        tokio::task::yield_now().await;
        assert_eq!(held(), 0, "written once the turn's other tasks have run");
    }

    #[test]
    fn off_a_worker_a_line_is_written_at_once() {
        Line.write_all(b"(observe::stderr test) at once\n").expect("written");
        assert_eq!(held(), 0);
    }
}
