//! Call metrics, and their exposition in the Prometheus text format (or OpenMetrics).
//!
//! Each method of the catalog owns its counters ([`MethodMetrics`]), handed to its `MethodRoute`
//! when a catalog is built: recording a call is a few relaxed atomic additions on memory the call
//! already points at — no lock, no lookup, no allocation. The [`Metrics`] registry is locked
//! only when a catalog is built (to find or add a method's counters, so counts survive reloads)
//! and when `/metrics` is read.
//!
//! Families, with bounded labels (only methods of the current catalog — a method a reload removed
//! is dropped at the next scrape —, and only series that have counted):
//! - `rpc_server_call_duration_seconds` (histogram): OpenTelemetry's `rpc.server.call.duration`,
//!   labels `rpc_system_name` (`grpc`), `rpc_method` (`package.Service/Method`),
//!   `rpc_response_status_code` (the code's name), `error_type` (the code's name, on errors only),
//!   and `protocol`, the client's (`grpc`, `rest`, `websocket`, `soap`);
//! - `grpc_server_started_total`, `grpc_server_handled_total` and `grpc_server_handling_seconds`:
//!   the go-grpc-prometheus names existing dashboards query (`grpc_type`, `grpc_service`,
//!   `grpc_method`, `grpc_code`), over every protocol.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Code;

use crate::call::Protocol;
use crate::error::Refusal;
use crate::transcode::status::code_name;

/// Upper bounds (seconds) of the duration histograms: OpenTelemetry's advisory buckets for RPC
/// durations (a superset of Prometheus's default ones).
pub const BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// The same, as `le` labels in OpenMetrics' canonical form (`1.0`, not `1`).
const LE: [&str; 14] =
    ["0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1.0", "2.5", "5.0", "7.5", "10.0"];

const PROTOCOLS: [Protocol; 4] = [Protocol::Grpc, Protocol::Rest, Protocol::WebSocket, Protocol::Soap];
const CODES: usize = 17;

/// The `rpc_method` of calls that named no method of the catalog (unknown paths and methods,
/// requests refused before they were read): OpenTelemetry's value for out-of-set methods, which
/// keeps the label's values bounded whatever paths clients send.
const OTHER: &str = "_OTHER";

/// The counters of the calls of no method: one set per process (every gateway in it), since the
/// calls they count never reached a gateway's catalog.
pub fn unrouted() -> &'static MethodMetrics {
    static UNROUTED: std::sync::LazyLock<MethodMetrics> = std::sync::LazyLock::new(|| MethodMetrics::new("", "", ""));
    &UNROUTED
}

/// Client connections open now, by what they speak: a figure of the process (every `serve` in it),
/// not of one gateway. Indexed by [`Open`].
static OPEN: [std::sync::atomic::AtomicI64; 5] = [const { std::sync::atomic::AtomicI64::new(0) }; 5];

/// What an open client connection speaks.
#[derive(Debug, Clone, Copy)]
pub enum Open {
    Http1,
    Http2,
    Http1Tls,
    Http2Tls,
    /// An upgraded WebSocket (counted apart from the HTTP/1.1 connection it came on).
    WebSocket,
}

impl Open {
    const LABELS: [&str; 5] = [
        "protocol=\"http1\",tls=\"false\"",
        "protocol=\"http2\",tls=\"false\"",
        "protocol=\"http1\",tls=\"true\"",
        "protocol=\"http2\",tls=\"true\"",
        "protocol=\"websocket\",tls=\"any\"",
    ];

    /// Counts one open until the guard is dropped.
    pub fn count(self) -> OpenGuard {
        OPEN[self as usize].fetch_add(1, Ordering::Relaxed);
        OpenGuard(self)
    }
}

/// One open connection or socket, counted until dropped.
pub struct OpenGuard(Open);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        OPEN[self.0 as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

/// `dragoman_open_connections`, by protocol.
pub fn render_open(out: &mut String) {
    family(out, false, "gauge", "dragoman_open_connections", "Client connections open now, by protocol.");
    for (labels, open) in Open::LABELS.iter().zip(&OPEN) {
        let _ = writeln!(out, "dragoman_open_connections{{{labels}}} {}", open.load(Ordering::Relaxed));
    }
}

/// The registry of a gateway: every method's counters, by gRPC path, for as long as it runs.
#[derive(Default)]
pub struct Metrics {
    methods: Mutex<BTreeMap<String, Arc<MethodMetrics>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// One method's counters: per client protocol and status code, a count, a sum and the buckets.
pub struct MethodMetrics {
    service: String,
    method: String,
    kind: &'static str,
    started: [AtomicU64; PROTOCOLS.len()],
    cells: [[Histogram; CODES]; PROTOCOLS.len()],
    refused: [AtomicU64; Refusal::ALL.len()],
}

impl std::fmt::Debug for MethodMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MethodMetrics(/{}/{})", self.service, self.method)
    }
}

/// A duration histogram of relaxed atomics: recording is a few additions, no lock.
#[derive(Default)]
pub(crate) struct Histogram {
    count: AtomicU64,
    /// Microseconds: a u64 of them is 584,000 years of calls (nanoseconds would wrap within weeks
    /// for a method holding thousands of long streams).
    sum: AtomicU64,
    /// Per bucket, not cumulative: the exposition sums them.
    buckets: [AtomicU64; BUCKETS.len()],
}

fn protocol_index(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Grpc => 0,
        Protocol::Rest => 1,
        Protocol::WebSocket => 2,
        Protocol::Soap => 3,
    }
}

impl MethodMetrics {
    fn new(service: &str, method: &str, kind: &'static str) -> Self {
        MethodMetrics {
            service: service.to_owned(),
            method: method.to_owned(),
            kind,
            started: Default::default(),
            cells: Default::default(),
            refused: Default::default(),
        }
    }

    /// The gateway refused a call of this method, for `reason`.
    pub fn refuse(&self, reason: Refusal) {
        let index = Refusal::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.refused[index].fetch_add(1, Ordering::Relaxed);
    }

    /// What `rpc_method` says: `package.Service/Method`, or `_OTHER` for the calls of no method.
    fn rpc_method(&self) -> String {
        if self.service.is_empty() { OTHER.to_owned() } else { format!("{}/{}", self.service, self.method) }
    }

    /// A call began.
    pub fn start(&self, protocol: Protocol) {
        self.started[protocol_index(protocol)].fetch_add(1, Ordering::Relaxed);
    }

    /// A call ended with `code` after `elapsed`.
    pub fn finish(&self, protocol: Protocol, code: Code, elapsed: Duration) {
        self.cells[protocol_index(protocol)][(code as usize).min(CODES - 1)].record(elapsed);
    }
}

impl Histogram {
    pub(crate) fn record(&self, elapsed: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Its values, read at once.
    pub(crate) fn counts(&self) -> Counts {
        Counts {
            count: self.count.load(Ordering::Relaxed),
            sum: self.sum.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }
}

/// The `grpc_type` of go-grpc-prometheus.
fn kind(client_streaming: bool, server_streaming: bool) -> &'static str {
    match (client_streaming, server_streaming) {
        (false, false) => "unary",
        (true, false) => "client_stream",
        (false, true) => "server_stream",
        (true, true) => "bidi_stream",
    }
}

impl Metrics {
    /// The counters of `/service/method`: the same ones for as long as the gateway runs, so a
    /// reload keeps the counts of the methods it keeps.
    pub fn method(&self, descriptor: &prost_reflect::MethodDescriptor) -> Arc<MethodMetrics> {
        let service = descriptor.parent_service();
        let path = format!("/{}/{}", service.full_name(), descriptor.name());
        let mut methods = self.methods.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        methods
            .entry(path)
            .or_insert_with(|| {
                let kind = kind(descriptor.is_client_streaming(), descriptor.is_server_streaming());
                Arc::new(MethodMetrics::new(service.full_name(), descriptor.name(), kind))
            })
            .clone()
    }

    /// The call families of the exposition: Prometheus text format 0.0.4, or OpenMetrics 1.0
    /// (`openmetrics`; the caller ends the exposition with `# EOF`).
    pub fn render(&self, openmetrics: bool) -> String {
        let methods: Vec<Arc<MethodMetrics>> = {
            let mut methods = self.methods.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // A method no catalog holds any more (a reload removed it, and the calls of the old
            // catalog are done) is forgotten: its series end, and would start again from zero.
            methods.retain(|_, m| Arc::strong_count(m) > 1);
            methods.values().cloned().collect()
        };
        let mut out = String::with_capacity(16 << 10);
        let counter = |out: &mut String, name: &str, help: &str| family(out, openmetrics, "counter", name, help);
        let histogram_family =
            |out: &mut String, name: &str, help: &str| family(out, openmetrics, "histogram", name, help);
        histogram_family(
            &mut out,
            "rpc_server_call_duration_seconds",
            "Duration of the calls the gateway served (OpenTelemetry rpc.server.call.duration).",
        );
        for m in methods.iter().map(|m| &**m).chain([unrouted()]) {
            for (p, protocol) in PROTOCOLS.iter().enumerate() {
                for (c, cell) in m.cells[p].iter().enumerate() {
                    let count = cell.count.load(Ordering::Relaxed);
                    if count == 0 {
                        continue;
                    }
                    let code = code_name(Code::from_i32(c as i32));
                    let error = if c == 0 { String::new() } else { format!(",error_type=\"{code}\"") };
                    let labels = format!(
                        "rpc_system_name=\"grpc\",rpc_method=\"{}\",rpc_response_status_code=\"{code}\"{error},protocol=\"{}\"",
                        m.rpc_method(),
                        protocol.as_str()
                    );
                    histogram(&mut out, "rpc_server_call_duration_seconds", &labels, cell.counts());
                }
            }
        }

        counter(&mut out, "dragoman_refusals_total", "Calls the gateway turned away itself, by reason and method.");
        for m in methods.iter().map(|m| &**m).chain([unrouted()]) {
            for (reason, refused) in Refusal::ALL.iter().zip(&m.refused) {
                let refused = refused.load(Ordering::Relaxed);
                if refused > 0 {
                    let (reason, method) = (reason.as_str(), m.rpc_method());
                    let _ = writeln!(
                        out,
                        "dragoman_refusals_total{{reason=\"{reason}\",rpc_method=\"{method}\"}} {refused}"
                    );
                }
            }
        }

        counter(
            &mut out,
            "grpc_server_started_total",
            "Calls started, over every client protocol (go-grpc-prometheus).",
        );
        for m in &methods {
            let started: u64 = m.started.iter().map(|s| s.load(Ordering::Relaxed)).sum();
            if started > 0 {
                let _ = writeln!(out, "grpc_server_started_total{{{}}} {started}", grpc_labels(m));
            }
        }
        counter(
            &mut out,
            "grpc_server_handled_total",
            "Calls finished, by status code, over every client protocol (go-grpc-prometheus).",
        );
        for m in &methods {
            for c in 0..CODES {
                let handled: u64 = (0..PROTOCOLS.len()).map(|p| m.cells[p][c].count.load(Ordering::Relaxed)).sum();
                if handled > 0 {
                    let code = code_name(Code::from_i32(c as i32));
                    let _ =
                        writeln!(out, "grpc_server_handled_total{{{},grpc_code=\"{code}\"}} {handled}", grpc_labels(m));
                }
            }
        }
        histogram_family(
            &mut out,
            "grpc_server_handling_seconds",
            "Duration of the calls, over every client protocol and code (go-grpc-prometheus).",
        );
        for m in &methods {
            let mut total = Counts::default();
            for cell in m.cells.iter().flatten() {
                total.add(&cell.counts());
            }
            if total.count > 0 {
                histogram(&mut out, "grpc_server_handling_seconds", &grpc_labels(m), total);
            }
        }
        out
    }
}

/// The `# TYPE`, `# UNIT` (histograms: seconds, in OpenMetrics) and `# HELP` lines of a family.
/// Counters are `x_total` samples of a family `x` in OpenMetrics, of `x_total` in Prometheus.
pub(crate) fn family(out: &mut String, openmetrics: bool, kind: &str, name: &str, help: &str) {
    let family = if openmetrics && kind == "counter" { name.trim_end_matches("_total") } else { name };
    let _ = writeln!(out, "# TYPE {family} {kind}");
    if openmetrics && kind == "histogram" {
        let _ = writeln!(out, "# UNIT {family} seconds");
    }
    let _ = writeln!(out, "# HELP {family} {help}");
}

/// One gauge family with one unlabelled sample, in either format.
pub fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = write!(out, "# TYPE {name} gauge\n# HELP {name} {help}\n{name} {value}\n");
}

/// One counter family (`name` ends in `_total`) with labelled samples, in either format.
pub fn counter(out: &mut String, openmetrics: bool, name: &str, help: &str, samples: &[(&str, u64)]) {
    family(out, openmetrics, "counter", name, help);
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

fn grpc_labels(m: &MethodMetrics) -> String {
    format!("grpc_type=\"{}\",grpc_service=\"{}\",grpc_method=\"{}\"", m.kind, m.service, m.method)
}

/// One series' values, read at once.
#[derive(Default)]
pub(crate) struct Counts {
    count: u64,
    sum: u64,
    buckets: [u64; BUCKETS.len()],
}

impl Counts {
    pub(crate) fn add(&mut self, other: &Counts) {
        self.count = self.count.saturating_add(other.count);
        self.sum = self.sum.saturating_add(other.sum);
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine = mine.saturating_add(theirs);
        }
    }
}

/// The `_bucket`, `_sum` and `_count` samples of one histogram series. The count is the sum of
/// the buckets and the `+Inf` one, so the series is consistent even while calls are recorded.
pub(crate) fn histogram(out: &mut String, name: &str, labels: &str, values: Counts) {
    let mut cumulative: u64 = 0;
    for (le, n) in LE.iter().zip(values.buckets) {
        cumulative = cumulative.saturating_add(n);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let count = values.count.max(cumulative);
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", values.sum as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}
