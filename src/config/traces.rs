//! The `traces:` section: where OpenTelemetry spans go (OTLP over gRPC or HTTP/protobuf), which
//! calls are sampled, and how spans are batched. Off unless `otlp_endpoint` is given.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `traces:` section as written.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesFile {
    /// The OpenTelemetry collector that receives the gateway's spans: for `grpc`,
    /// `http://host:port` (cleartext HTTP/2, e.g. `http://127.0.0.1:4317`); for `http/protobuf`,
    /// a URL whose path defaults to `/v1/traces` (`http://127.0.0.1:4318`). TLS to the collector
    /// is not supported yet. Default: none, and traces are off: a client's `traceparent` then
    /// passes to the backend untouched and a call costs nothing more.
    pub otlp_endpoint: Option<String>,
    /// How spans travel to the collector: `grpc` (OTLP/gRPC, port 4317 by convention) or
    /// `http/protobuf` (OTLP/HTTP, a POST of protobuf, port 4318). Default `grpc`.
    pub protocol: OtlpProtocol,
    /// The share of calls that start a new trace (no `traceparent` from the client) to record,
    /// from 0.0 (none) to 1.0 (all). A call with a client's `traceparent` follows its sampled
    /// flag instead, whatever this says (parent-based sampling). Default 1.0.
    pub sampling_ratio: f64,
    /// Whether a client's `traceparent` decides if its call is recorded (its sampled flag, W3C's
    /// parent-based sampling). `false` at an edge facing untrusted clients: every call is then
    /// sampled at `sampling_ratio` (a recorded one still joins the client's trace), so a client
    /// cannot have all its calls recorded and push other spans out of the export queue.
    /// Default `true`.
    pub follow_client_sampling: bool,
    /// `service.name` of the spans, the name the gateway goes by in a tracing UI.
    /// Default `dragoman`.
    pub service_name: String,
    /// How often the spans waiting in the queue are sent, in batches of at most 512.
    /// Default 5s.
    #[serde(with = "humantime_serde")]
    pub export_interval: Duration,
    /// How many finished spans may wait to be sent. When the collector is slow or down and the
    /// queue is full, new spans are dropped (and the drop is logged): a call never waits for the
    /// collector. Default 2048.
    pub max_queue_size: usize,
    /// How long one export to the collector may take, retries included, before its batch is
    /// given up. Default 10s.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
}

/// OTLP's transports, named as `OTEL_EXPORTER_OTLP_PROTOCOL` names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl Default for TracesFile {
    fn default() -> Self {
        TracesFile {
            otlp_endpoint: None,
            protocol: OtlpProtocol::Grpc,
            sampling_ratio: 1.0,
            follow_client_sampling: true,
            service_name: "dragoman".into(),
            export_interval: Duration::from_secs(5),
            max_queue_size: 2048,
            export_timeout: Duration::from_secs(10),
        }
    }
}

/// The `traces:` settings, checked.
#[derive(Debug, Clone)]
pub struct TracesOptions {
    /// The collector's address (for HTTP, the whole URL of its traces); None when traces are off.
    pub otlp_endpoint: Option<http::Uri>,
    pub protocol: OtlpProtocol,
    pub sampling_ratio: f64,
    pub follow_client_sampling: bool,
    pub service_name: String,
    pub export_interval: Duration,
    pub max_queue_size: usize,
    pub export_timeout: Duration,
}

impl TracesOptions {
    pub(super) fn from_file(file: TracesFile) -> Result<Self, String> {
        let at = |key: &str| format!("at `traces.{key}`");
        let otlp_endpoint = match file.otlp_endpoint.as_deref() {
            None => None,
            Some(text) => Some(endpoint(text, file.protocol).map_err(|e| format!("{}: {e}", at("otlp_endpoint")))?),
        };
        if !(0.0..=1.0).contains(&file.sampling_ratio) {
            return Err(format!("{}: must be between 0.0 and 1.0, got {}", at("sampling_ratio"), file.sampling_ratio));
        }
        if file.service_name.trim().is_empty() {
            return Err(format!("{}: must not be empty", at("service_name")));
        }
        for (key, value) in [("export_interval", file.export_interval), ("export_timeout", file.export_timeout)] {
            if value < Duration::from_millis(10) || value > Duration::from_secs(3600) {
                return Err(format!("{}: must be between 10ms and 1h", at(key)));
            }
        }
        if file.max_queue_size == 0 {
            return Err(format!("{}: must be at least 1", at("max_queue_size")));
        }
        Ok(TracesOptions {
            otlp_endpoint,
            protocol: file.protocol,
            sampling_ratio: file.sampling_ratio,
            follow_client_sampling: file.follow_client_sampling,
            service_name: file.service_name,
            export_interval: file.export_interval,
            max_queue_size: file.max_queue_size,
            export_timeout: file.export_timeout,
        })
    }
}

/// An OTLP endpoint: `http://host:port` for gRPC, nothing after the authority; for HTTP, the
/// traces' URL, `/v1/traces` when no path is given (as OTLP/HTTP's exporters do).
fn endpoint(text: &str, protocol: OtlpProtocol) -> Result<http::Uri, String> {
    let uri: http::Uri = text.parse().map_err(|e| format!("expected http://host:port, got {text:?} ({e})"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(format!("TLS to the collector is not supported yet: use http://, got {text:?}")),
        _ => return Err(format!("expected http://host:port, got {text:?}")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("no host in {text:?}"));
    }
    let bare = matches!(uri.path(), "" | "/") && uri.query().is_none();
    match protocol {
        OtlpProtocol::Grpc if !bare => Err(format!("an OTLP/gRPC endpoint has no path, got {text:?}")),
        OtlpProtocol::Grpc => Ok(uri),
        OtlpProtocol::HttpProtobuf if bare => {
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
            format!("http://{authority}/v1/traces").parse().map_err(|e| format!("bad endpoint {text:?}: {e}"))
        }
        OtlpProtocol::HttpProtobuf => Ok(uri),
    }
}
