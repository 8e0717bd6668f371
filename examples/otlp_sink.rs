//! A tiny OTLP/gRPC trace receiver for `bench/observe.sh`: it implements the collector's
//! `TraceService/Export`, counts the spans it is sent and answers OK, keeping nothing else.
//! Spans are counted per resource `service.name` and span attribute `dragoman.protocol`, so one
//! sink serves several gateways (one `service_name` each) and tells gRPC calls from REST ones.
//!
//! ```text
//! otlp_sink <host:port> <counts file>
//! ```
//! The counts file is rewritten (write, then rename) at most every 200 ms while spans arrive, one
//! line per series: `<service.name> <dragoman.protocol> <spans>`, then `exports <requests>`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

#[derive(Default)]
struct Counts {
    spans: Mutex<BTreeMap<(String, String), u64>>,
    exports: AtomicU64,
}

struct Sink(Arc<Counts>);

fn text<'a>(attributes: &'a [KeyValue], key: &str) -> &'a str {
    attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or("-")
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut batch: BTreeMap<(String, String), u64> = BTreeMap::new();
        for resource_spans in &request.get_ref().resource_spans {
            let service = resource_spans.resource.as_ref().map_or("-", |r| text(&r.attributes, "service.name"));
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    let protocol = text(&span.attributes, "dragoman.protocol");
                    *batch.entry((service.to_owned(), protocol.to_owned())).or_default() += 1;
                }
            }
        }
        {
            let mut spans = self.0.spans.lock().unwrap_or_else(|e| e.into_inner());
            for (key, n) in batch {
                *spans.entry(key).or_default() += n;
            }
        }
        self.0.exports.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Rewrites the counts file whenever an export has come in since the last write.
async fn write_counts(counts: Arc<Counts>, path: PathBuf) {
    let mut written = u64::MAX;
    let temp = path.with_extension("tmp");
    loop {
        let exports = counts.exports.load(Ordering::Relaxed);
        if exports != written {
            let mut text = String::new();
            for ((service, protocol), n) in counts.spans.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                text.push_str(&format!("{service} {protocol} {n}\n"));
            }
            text.push_str(&format!("exports {exports}\n"));
            if std::fs::write(&temp, text).and_then(|()| std::fs::rename(&temp, &path)).is_ok() {
                written = exports;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(address), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: otlp_sink <host:port> <counts file>");
        std::process::exit(2);
    };
    let address: std::net::SocketAddr = address.parse()?;
    // One thread: the sink should take as little of the benchmark's cores as it can.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let counts = Arc::new(Counts::default());
        tokio::spawn(write_counts(counts.clone(), PathBuf::from(path)));
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Sink(counts)).max_decoding_message_size(64 << 20))
            .serve(address)
            .await
    })?;
    Ok(())
}
