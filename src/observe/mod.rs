//! Observability: the access log (one line per call), the call metrics, OpenTelemetry traces
//! (one span per call, exported over OTLP), and the `tracing` log set-up the binary uses.

pub mod access_log;
pub mod backends;
pub mod metrics;
mod stderr;
pub mod trace;

pub(crate) use stderr::hold_lines_on_this_worker;

/// Logs to stderr ([`stderr::TurnStderr`]), filtered by `RUST_LOG` (default: `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(stderr::TurnStderr).with_ansi(ansi).try_init();
}
