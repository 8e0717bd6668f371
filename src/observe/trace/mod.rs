//! OpenTelemetry traces: one SERVER span per call, exported over OTLP (gRPC or HTTP/protobuf,
//! the latter through our own hyper client: `otlp_http`), and the W3C trace
//! context (`traceparent`) carried from the client through the gateway to the backend.
//!
//! The span starts and ends where the access log's entry does (`observe::access_log`): when the
//! call enters the stack and when its reply ends, is refused, or is dropped by the client
//! (CANCELLED). It carries the stable OpenTelemetry RPC attributes (`rpc.system.name`,
//! `rpc.method`, `rpc.response.status_code`, `error.type`, `network.peer.*`) and
//! `dragoman.protocol`. Its parent is the client's `traceparent` (W3C Trace Context level 1),
//! and the `traceparent` sent to the backend names the gateway's span, so the backend's spans
//! join the trace; `tracestate` passes untouched.
//!
//! Sampling is parent-based: a client's sampled flag is followed; a call without a valid
//! `traceparent` is sampled with `traces.sampling_ratio`. The decision is taken here, before the
//! SDK is asked for anything, so that the calls that are not recorded cost a header lookup and
//! at most one random number, and allocate nothing: their `traceparent` goes to the backend as
//! the client sent it, and a call without one and not sampled gets no trace id at all.
//! With traces off ([`Tracer::off`]) a call costs a branch.
//!
//! Spans are batched and exported by the OpenTelemetry SDK's `BatchSpanProcessor` on its own
//! thread, through a bounded queue: a call never waits for the collector; when the queue is full
//! spans are dropped, and the SDK logs that (once, then the total at shutdown). [`Tracer::shutdown`]
//! sends what is queued.
//!
//! What it does not do: spans for the hops inside the gateway (upstream connection, queueing),
//! span events per message, `tracestate` in the exported span, TLS to the collector, OTLP/JSON,
//! or trace context in other formats (B3, Jaeger).

mod otlp_http;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator};
use tonic::Code;

use crate::call::Call;
use crate::config::{OtlpProtocol, TracesOptions};
use crate::transcode::status::code_name;

/// W3C Trace Context's headers, which every frontend passes on as call metadata.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("traces: cannot set up the OTLP exporter for {endpoint}: {reason}")]
pub struct TraceSetupError {
    endpoint: String,
    reason: String,
}

/// Starts call spans, or does nothing when traces are off. Cheap to clone: one per stack.
#[derive(Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<Exporting>>,
}

struct Exporting {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
    tracer: opentelemetry_sdk::trace::SdkTracer,
    /// Calls without a parent are sampled when a random u64 falls below this; `u64::MAX` for
    /// a ratio of 1, where no number is drawn.
    threshold: u64,
    /// Whether a client's sampled flag decides (`traces.follow_client_sampling`).
    follow_client: bool,
    ids: RandomIdGenerator,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.inner.is_some() { "Tracer(exporting)" } else { "Tracer(off)" })
    }
}

impl Tracer {
    /// Traces off: no span, no work; `traceparent` passes untouched.
    pub fn off() -> Self {
        Tracer { inner: None }
    }

    /// The tracer the config asks for. Must be called inside a tokio runtime (the gRPC channel
    /// to the collector runs on it); connects lazily, so a collector that is down is no error.
    pub fn new(options: &TracesOptions) -> Result<Self, TraceSetupError> {
        let Some(endpoint) = &options.otlp_endpoint else { return Ok(Tracer::off()) };
        let endpoint = match options.protocol {
            OtlpProtocol::Grpc => endpoint.to_string().trim_end_matches('/').to_owned(),
            OtlpProtocol::HttpProtobuf => endpoint.to_string(),
        };
        let exporter = exporter(options, &endpoint)
            .map_err(|e| TraceSetupError { endpoint: endpoint.clone(), reason: e.to_string() })?;
        let batches = BatchConfigBuilder::default()
            .with_max_queue_size(options.max_queue_size)
            .with_max_export_batch_size(options.max_queue_size.min(512))
            .with_scheduled_delay(options.export_interval)
            .build();
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batches).build();
        let resource =
            opentelemetry_sdk::Resource::builder_empty().with_service_name(options.service_name.clone()).build();
        // The gateway decides which calls to sample (see `start`): whatever reaches the SDK is
        // recorded.
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("dragoman");
        // The product saturates: 1.0 becomes u64::MAX, which every draw but one is below, and
        // that one is never drawn (see `sampled`).
        let threshold = (options.sampling_ratio * u64::MAX as f64) as u64;
        let protocol = match options.protocol {
            OtlpProtocol::Grpc => "gRPC",
            OtlpProtocol::HttpProtobuf => "HTTP/protobuf",
        };
        tracing::info!(endpoint, ratio = options.sampling_ratio, "traces: exporting spans over OTLP/{protocol}");
        Ok(Tracer {
            inner: Some(Arc::new(Exporting {
                provider,
                tracer,
                threshold,
                follow_client: options.follow_client_sampling,
                ids: RandomIdGenerator::default(),
            })),
        })
    }

    /// Sends the spans still queued and stops exporting; later spans are dropped. Blocks until
    /// the export is done (or `traces.export_timeout`): call it off the async workers.
    pub fn shutdown(&self) {
        let Some(inner) = &self.inner else { return };
        match inner.provider.shutdown() {
            Ok(()) => tracing::info!("traces: the queued spans are sent; exporting stopped"),
            Err(e) => tracing::warn!(error = %e, "traces: the last spans may not have been sent"),
        }
    }

    /// Starts the span of `call`, if it is sampled, and points the `traceparent` the backend will
    /// get at it. With traces off, does nothing.
    pub fn start(&self, call: &mut Call) -> CallTrace {
        let Some(inner) = &self.inner else { return CallTrace::default() };
        let parent = single(&call.metadata, &TRACEPARENT).and_then(|v| parse_traceparent(v.as_bytes()));
        let sampled = match &parent {
            // Parent-based: the client's decision holds, unless the config distrusts it.
            Some(parent) if inner.follow_client => parent.sampled,
            _ => inner.sampled(),
        };
        if !sampled {
            // Not recorded: the client's `traceparent`, if any, goes on as it came.
            return CallTrace { trace_id: parent.map(|p| TraceId::from_bytes(p.trace_id)), span: None };
        }
        let context = match &parent {
            Some(parent) => Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(parent.trace_id),
                SpanId::from_bytes(parent.span_id),
                TraceFlags::SAMPLED,
                true,
                TraceState::NONE,
            )),
            None => {
                // A new trace: a client's `tracestate` belonged to the trace its invalid
                // `traceparent` named, if any (W3C Trace Context 3.3: discard it).
                call.metadata.remove(&TRACESTATE);
                Context::new()
            }
        };
        let name = call.method.path().trim_start_matches('/').to_owned();
        let mut attributes = vec![
            KeyValue::new("rpc.system.name", "grpc"),
            KeyValue::new("rpc.method", name.clone()),
            KeyValue::new("dragoman.protocol", call.protocol.as_str()),
        ];
        if let Some(peer) = call.peer {
            attributes.extend(peer_attributes(peer));
        }
        let builder =
            inner.tracer.span_builder(Cow::Owned(name)).with_kind(SpanKind::Server).with_attributes(attributes);
        let span = inner.tracer.build_with_context(builder, &context);
        let context = span.span_context();
        if let Ok(value) = HeaderValue::from_bytes(&format_traceparent(context.trace_id(), context.span_id())) {
            call.metadata.insert(TRACEPARENT.clone(), value);
        }
        CallTrace { trace_id: Some(context.trace_id()), span: Some(Box::new(span)) }
    }
}

/// The OTLP exporter the batch thread sends with.
fn exporter(
    options: &TracesOptions,
    endpoint: &str,
) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    match options.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(options.export_timeout)
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_http_client(otlp_http::Client::new(options.export_timeout))
            .with_endpoint(endpoint)
            .with_timeout(options.export_timeout)
            .build(),
    }
}

impl Exporting {
    /// Whether a call that starts a trace is recorded.
    fn sampled(&self) -> bool {
        match self.threshold {
            0 => false,
            u64::MAX => true,
            threshold => u64::from_be_bytes(self.ids.new_span_id().to_bytes()) < threshold,
        }
    }
}

fn peer_attributes(peer: SocketAddr) -> [KeyValue; 2] {
    [
        KeyValue::new("network.peer.address", peer.ip().to_string()),
        KeyValue::new("network.peer.port", i64::from(peer.port())),
    ]
}

/// One call's part of a trace: its trace id, for the access log, and its span when recorded
/// (boxed: a few hundred bytes that calls not recorded should not carry).
#[derive(Default)]
pub struct CallTrace {
    trace_id: Option<TraceId>,
    span: Option<Box<opentelemetry_sdk::trace::Span>>,
}

impl CallTrace {
    /// The trace the call belongs to, if any: the client's, or the one its span started.
    pub fn trace_id(&self) -> Option<TraceId> {
        self.trace_id
    }

    /// Ends the span with the call's status: its code's name, and for anything but OK an error
    /// status with the message the client got.
    pub fn finish(&mut self, code: Code, message: &str) {
        let Some(mut span) = self.span.take() else { return };
        let name = code_name(code);
        span.set_attribute(KeyValue::new("rpc.response.status_code", name));
        if code != Code::Ok {
            span.set_attribute(KeyValue::new("error.type", name));
            span.set_status(Status::error(message.to_owned()));
        }
        span.end();
    }
}

/// The one value of a header, or None when it is absent or repeated (W3C Trace Context: more
/// than one `traceparent` makes it invalid).
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// A valid `traceparent`: the caller's trace, span and sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

/// Parses a `traceparent` (W3C Trace Context level 1, section 3.2): `version-traceid-parentid-
/// flags`, lowercase hex. Version `ff` is invalid; version 00 is exactly 55 bytes; a later
/// version may append `-`-separated fields, which are ignored. All-zero ids are invalid. Anything
/// invalid is None, as if the client had sent no `traceparent`.
pub fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = hex::<1>(&value[0..2])?[0];
    match version {
        0xff => return None,
        0 if value.len() != 55 => return None,
        _ if value.len() > 55 && value[55] != b'-' => return None,
        _ => {}
    }
    let trace_id = hex::<16>(&value[3..35])?;
    let span_id = hex::<8>(&value[36..52])?;
    let flags = hex::<1>(&value[53..55])?[0];
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent { trace_id, span_id, sampled: flags & 1 == 1 })
}

/// `2 * N` lowercase hex digits as bytes.
fn hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// `00-<trace id>-<span id>-01`: the `traceparent` of a sampled span.
fn format_traceparent(trace_id: TraceId, span_id: SpanId) -> [u8; 55] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    let mut write = |at: usize, bytes: &[u8]| {
        for (i, byte) in bytes.iter().enumerate() {
            out[at + 2 * i] = DIGITS[usize::from(byte >> 4)];
            out[at + 2 * i + 1] = DIGITS[usize::from(byte & 0xf)];
        }
    };
    write(3, &trace_id.to_bytes());
    write(36, &span_id.to_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read() {
        let parent = parse_traceparent(VALID.as_bytes()).expect("valid");
        assert_eq!(parent.trace_id[0], 0x4b);
        assert_eq!(parent.span_id[7], 0xb7);
        assert!(parent.sampled);
        let unsampled = parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("valid");
        assert!(!unsampled.sampled);
        // Other flag bits are not the sampled bit.
        let other = parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02").expect("valid");
        assert!(!other.sampled);
        // A later version may carry more fields after a dash.
        let future = parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever");
        assert_eq!(future.map(|p| p.trace_id), Some(parent.trace_id));
    }

    #[test]
    fn an_invalid_traceparent_is_absent() {
        let cases: &[&str] = &[
            "",
            "00",
            "garbage",
            // Version ff is forbidden; version 00 has exactly four fields.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Uppercase and other non-hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",
            // Wrong lengths and separators.
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
        ];
        for case in cases {
            assert_eq!(parse_traceparent(case.as_bytes()), None, "{case:?}");
        }
        // Non-ASCII bytes at any position never panic.
        for at in 0..VALID.len() {
            let mut bytes = VALID.as_bytes().to_vec();
            bytes[at] = 0xc3;
            assert_eq!(parse_traceparent(&bytes), None, "byte {at}");
        }
    }

    #[test]
    fn repeated_traceparent_is_absent() {
        let mut headers = HeaderMap::new();
        headers.append(&TRACEPARENT, HeaderValue::from_static(VALID));
        assert!(single(&headers, &TRACEPARENT).is_some());
        headers.append(&TRACEPARENT, HeaderValue::from_static(VALID));
        assert!(single(&headers, &TRACEPARENT).is_none());
    }

    #[test]
    fn the_backend_gets_the_gateway_span_as_parent() {
        let parent = parse_traceparent(VALID.as_bytes()).expect("valid");
        let written = format_traceparent(TraceId::from_bytes(parent.trace_id), SpanId::from_bytes([0xab; 8]));
        assert_eq!(&written[..], b"00-4bf92f3577b34da6a3ce929d0e0e4736-abababababababab-01");
        assert_eq!(parse_traceparent(&written).map(|p| p.span_id), Some([0xab; 8]));
    }

    #[test]
    fn sampling_ratio_bounds_draw_nothing() {
        let exporting = |threshold| Exporting {
            provider: opentelemetry_sdk::trace::SdkTracerProvider::builder().build(),
            tracer: opentelemetry_sdk::trace::SdkTracerProvider::builder().build().tracer("t"),
            threshold,
            follow_client: true,
            ids: RandomIdGenerator::default(),
        };
        assert!(!exporting(0).sampled());
        assert!(exporting(u64::MAX).sampled());
        let half = exporting(u64::MAX / 2);
        let sampled = (0..1000).filter(|_| half.sampled()).count();
        assert!((350..650).contains(&sampled), "{sampled} of 1000 at 0.5");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a client sends, parsing ends without a panic, and what it accepts is a
        /// well-formed header whose ids are not zero.
        #[test]
        fn any_bytes_parse_or_are_absent(bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..80),
            // Near-valid: the right shape with any byte anywhere.
            (0..55usize, any::<u8>()).prop_map(|(at, byte)| {
                let mut value = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec();
                value[at] = byte;
                value
            }),
        ]) {
            if let Some(parent) = parse_traceparent(&bytes) {
                prop_assert!(bytes.len() >= 55);
                prop_assert!(parent.trace_id != [0; 16] && parent.span_id != [0; 8]);
                prop_assert!(bytes[..55].iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b) || *b == b'-'));
            }
        }

        /// Every valid header reads back the ids and the sampled flag it was written with.
        #[test]
        fn valid_headers_read_back(trace in any::<u128>(), span in any::<u64>(), flags in any::<u8>()) {
            prop_assume!(trace != 0 && span != 0);
            let value = format!("00-{trace:032x}-{span:016x}-{flags:02x}");
            let parent = parse_traceparent(value.as_bytes());
            prop_assert_eq!(
                parent,
                Some(Parent { trace_id: trace.to_be_bytes(), span_id: span.to_be_bytes(), sampled: flags & 1 == 1 })
            );
        }
    }
}
