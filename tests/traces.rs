//! OpenTelemetry traces end to end: a real OTLP/gRPC collector (a tonic `TraceService` that
//! keeps what it is sent), the gateway exporting to it, and a backend that records the
//! `traceparent` it receives. The gateway's span must join the client's trace and be the
//! backend's parent, on every protocol; sampling follows the client's flag, then the ratio.

mod support;

use std::net::SocketAddr;

use dragoman::demo::pb::shop::users::v1::GetUserRequest;
use futures_util::SinkExt;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use support::{TestGateway, wait_for};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const GET_USER: &str = "/shop.users.v1.UserService/GetUser";
const USERS: &str = "shop.users.v1.UserService";

/// One span as the collector got it, with its resource's `service.name`.
#[derive(Debug, Clone)]
struct Exported {
    service: Option<String>,
    span: Span,
}

struct Collector(watch::Sender<Vec<Exported>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans.resource.as_ref().and_then(|r| {
                r.attributes
                    .iter()
                    .find(|a| a.key == "service.name")
                    .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
            });
            for scope_spans in resource_spans.scope_spans {
                got.extend(scope_spans.spans.into_iter().map(|span| Exported { service: service.clone(), span }));
            }
        }
        self.0.send_modify(|spans| spans.extend(got));
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// A collector on a loopback port, and what it has received so far.
async fn start_collector() -> (SocketAddr, watch::Receiver<Vec<Exported>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (spans, received) = watch::channel(Vec::new());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(spans)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (address, received)
}

/// The `traceparent` and `tracestate` of one call at the backend (None when absent).
type Seen = (Option<String>, Option<String>);

/// A UserService backend over h2c that records each call's trace context and answers an empty
/// `User`, or NOT_FOUND when the request mentions "missing".
async fn start_recorder() -> (SocketAddr, watch::Receiver<Vec<Seen>>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (seen, received) = watch::channel(Vec::new());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let header =
                            |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                        let context = (header("traceparent"), header("tracestate"));
                        let body = request.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        let mut trailers = http::HeaderMap::new();
                        if body.windows(7).any(|w| w == b"missing") {
                            trailers.insert("grpc-status", http::HeaderValue::from_static("5"));
                            trailers.insert("grpc-message", http::HeaderValue::from_static("no such user"));
                        } else {
                            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        }
                        // Recorded before the answer, so a client that has its answer finds it.
                        seen.send_modify(|s| s.push(context));
                        let frame = bytes::Bytes::from_static(&[0, 0, 0, 0, 0]);
                        let body =
                            http_body_util::Full::new(frame).with_trailers(std::future::ready(Some(Ok(trailers))));
                        let mut response = http::Response::new(body);
                        response
                            .headers_mut()
                            .insert("content-type", http::HeaderValue::from_static("application/grpc"));
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (address, received)
}

/// The gateway, its collector and the recording UserService backend.
struct Traced {
    gw: TestGateway,
    spans: watch::Receiver<Vec<Exported>>,
    backend: watch::Receiver<Vec<Seen>>,
}

async fn start(traces: &str) -> Traced {
    support::logs();
    let (collector, spans) = start_collector().await;
    let (recorder, backend) = start_recorder().await;
    let yaml = traces.replace("{collector}", &collector.to_string());
    let gw = TestGateway::builder().backend(USERS, &recorder.to_string()).traces(&yaml).start().await;
    Traced { gw, spans, backend }
}

fn exporting() -> &'static str {
    "  otlp_endpoint: http://{collector}\n  export_interval: 50ms\n"
}

impl Traced {
    /// The span of trace `trace_id` (hex), once exported.
    async fn span_of(&self, trace_id: &str) -> Exported {
        let spans = wait_for(self.spans.clone(), &format!("a span of trace {trace_id}"), |spans| {
            spans.iter().any(|e| hex(&e.span.trace_id) == trace_id)
        })
        .await;
        let mut found: Vec<Exported> = spans.into_iter().filter(|e| hex(&e.span.trace_id) == trace_id).collect();
        assert_eq!(found.len(), 1, "one span per call: {found:?}");
        found.remove(0)
    }

    /// The `traceparent` the backend's `n`th call (from 1) carried.
    async fn backend_saw(&self, n: usize) -> Option<String> {
        self.backend_context(n).await.0
    }

    /// The `traceparent` and `tracestate` of the backend's `n`th call (from 1).
    async fn backend_context(&self, n: usize) -> Seen {
        let seen = wait_for(self.backend.clone(), &format!("backend call {n}"), |seen| seen.len() >= n).await;
        seen[n - 1].clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
}

/// What every call's span says: a SERVER span named for the method, the RPC attributes.
fn assert_call_span(span: &Span, protocol: &str, status: &str) {
    assert_eq!(span.name, "shop.users.v1.UserService/GetUser");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(attribute(span, "rpc.system.name").as_deref(), Some("grpc"), "{span:?}");
    assert_eq!(attribute(span, "rpc.method").as_deref(), Some("shop.users.v1.UserService/GetUser"));
    assert_eq!(attribute(span, "dragoman.protocol").as_deref(), Some(protocol));
    assert_eq!(attribute(span, "rpc.response.status_code").as_deref(), Some(status));
    assert_eq!(attribute(span, "network.peer.address").as_deref(), Some("127.0.0.1"));
    assert!(attribute(span, "network.peer.port").is_some_and(|p| p != "0"), "{span:?}");
    assert!(span.start_time_unix_nano > 0 && span.end_time_unix_nano >= span.start_time_unix_nano);
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn traceparent(trace: &str, flags: &str) -> String {
    format!("00-{trace}-{PARENT}-{flags}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_joins_the_clients_trace_and_parents_the_backend() {
    let t = start(exporting()).await;
    let reply = support::raw_unary(
        t.gw.address,
        GET_USER,
        &GetUserRequest { id: "u-1".into() },
        &[("traceparent", &traceparent(TRACE, "01")), ("tracestate", "vendor=x")],
    )
    .await;
    assert_eq!(reply.status(), Some(0));
    let exported = t.span_of(TRACE).await;
    let span = &exported.span;
    assert_eq!(exported.service.as_deref(), Some("dragoman"));
    assert_eq!(hex(&span.parent_span_id), PARENT, "the client's span is the parent");
    assert_call_span(span, "grpc", "OK");
    assert!(attribute(span, "error.type").is_none());
    assert_ne!(span.status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32));
    let sent = t.backend_saw(1).await;
    assert_eq!(
        sent,
        Some(format!("00-{TRACE}-{}-01", hex(&span.span_id))),
        "the backend's parent is the gateway's span"
    );

    // The access log names the trace.
    let log = support::logs().text();
    assert!(
        log.lines().any(|l| l.contains("dragoman::access") && l.contains(&format!("trace_id={TRACE}"))),
        "no access line with trace_id={TRACE}:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_call_reads_the_traceparent_header() {
    let t = start(exporting()).await;
    let trace = "11111111111111111111111111111111";
    let reply =
        support::http(t.gw.address, "GET", "/v1/users/u-1", &[("traceparent", &traceparent(trace, "01"))], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let span = t.span_of(trace).await.span;
    assert_eq!(hex(&span.parent_span_id), PARENT);
    assert_call_span(&span, "rest", "OK");
    assert_eq!(t.backend_saw(1).await, Some(format!("00-{trace}-{}-01", hex(&span.span_id))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_call_reads_the_upgrade_requests_traceparent() {
    let t = start(exporting()).await;
    let trace = "22222222222222222222222222222222";
    let mut request = format!("ws://{}{GET_USER}", t.gw.address).into_client_request().expect("request");
    request.headers_mut().insert("traceparent", traceparent(trace, "01").parse().expect("value"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("the socket opens");
    ws.send(tokio_tungstenite::tungstenite::Message::text(r#"{"id":"u-1"}"#)).await.expect("send");
    let span = t.span_of(trace).await.span;
    assert_eq!(hex(&span.parent_span_id), PARENT);
    assert_call_span(&span, "websocket", "OK");
    assert_eq!(t.backend_saw(1).await, Some(format!("00-{trace}-{}-01", hex(&span.span_id))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soap_call_reads_the_traceparent_header() {
    let t = start(exporting()).await;
    let trace = "77777777777777777777777777777777";
    let envelope = r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><GetUser xmlns="urn:dragoman:shop.users.v1"><id xmlns="">u-1</id></GetUser></e:Body></e:Envelope>"#;
    let headers = [
        (
            "content-type",
            "application/soap+xml; charset=utf-8; action=\"urn:dragoman:shop.users.v1.UserService/GetUser\"",
        ),
        ("traceparent", &traceparent(trace, "01")),
    ];
    let reply =
        support::http(t.gw.address, "POST", "/soap/shop.users.v1.UserService", &headers, envelope.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let span = t.span_of(trace).await.span;
    assert_eq!(hex(&span.parent_span_id), PARENT);
    assert_call_span(&span, "soap", "OK");
    assert_eq!(t.backend_saw(1).await, Some(format!("00-{trace}-{}-01", hex(&span.span_id))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_is_an_error_span_with_the_codes_name() {
    let t = start(exporting()).await;
    let trace = "33333333333333333333333333333333";
    let reply = support::raw_unary(
        t.gw.address,
        GET_USER,
        &GetUserRequest { id: "missing".into() },
        &[("traceparent", &traceparent(trace, "01"))],
    )
    .await;
    assert_eq!(reply.status(), Some(5));
    let span = t.span_of(trace).await.span;
    assert_call_span(&span, "grpc", "NOT_FOUND");
    assert_eq!(attribute(&span, "error.type").as_deref(), Some("NOT_FOUND"));
    let status = span.status.expect("a status");
    assert_eq!(status.code, StatusCode::Error as i32);
    assert_eq!(status.message, "no such user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_client_abandons_ends_its_span_as_cancelled() {
    use http_body_util::BodyExt;
    use prost::Message as _;
    support::logs();
    let (collector, spans) = start_collector().await;
    let (held, _frames) = support::start_held().await;
    let gw = TestGateway::builder()
        .backend(USERS, &held.to_string())
        .traces(&exporting().replace("{collector}", &collector.to_string()))
        .start()
        .await;
    let trace = "88888888888888888888888888888888";
    let payload = GetUserRequest { id: "u-1".into() }.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&payload);
    let body = http_body_util::Full::new(bytes::Bytes::from(frame)).boxed();
    let headers =
        [("content-type", "application/grpc"), ("te", "trailers"), ("traceparent", &traceparent(trace, "01"))];
    // The backend's headers are back: the call is in flight, and the client walks away.
    let response = support::http_stream(gw.address, "POST", GET_USER, &headers, body, true).await;
    drop(response);
    let t = Traced { gw, spans, backend: watch::channel(Vec::new()).1 };
    let span = t.span_of(trace).await.span;
    assert_call_span(&span, "grpc", "CANCELLED");
    assert_eq!(span.status.map(|s| s.code), Some(StatusCode::Error as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_traceparent_starts_a_trace() {
    let t = start(exporting()).await;
    // An all-zero trace id makes the traceparent invalid: as if absent, and its tracestate with it.
    let invalid = [("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"), ("tracestate", "a=b")];
    let reply = support::raw_unary(t.gw.address, GET_USER, &GetUserRequest { id: "u-1".into() }, &invalid).await;
    assert_eq!(reply.status(), Some(0));
    let (sent, state) = t.backend_context(1).await;
    assert_eq!(state, None, "a new trace starts with no tracestate");
    let sent = sent.expect("the backend gets a traceparent");
    let parsed = dragoman::observe::trace::parse_traceparent(sent.as_bytes()).expect("a valid traceparent");
    assert!(parsed.sampled, "{sent}");
    let span = t.span_of(&hex(&parsed.trace_id)).await.span;
    assert!(span.parent_span_id.is_empty(), "a root span: {span:?}");
    assert_eq!(span.span_id, parsed.span_id);
    assert_call_span(&span, "grpc", "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratio_zero_records_only_what_the_client_sampled() {
    let t = start(&format!("{}  sampling_ratio: 0.0\n", exporting())).await;
    let call = |headers: Vec<(&'static str, String)>| {
        let address = t.gw.address;
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            support::raw_unary(address, GET_USER, &GetUserRequest { id: "u-1".into() }, &headers).await.status()
        }
    };
    // No parent: not sampled, nothing to forward.
    assert_eq!(call(vec![]).await, Some(0));
    assert_eq!(t.backend_saw(1).await, None);
    // The client did not sample: its traceparent goes on untouched.
    let unsampled = traceparent("44444444444444444444444444444444", "00");
    assert_eq!(call(vec![("traceparent", unsampled.clone())]).await, Some(0));
    assert_eq!(t.backend_saw(2).await, Some(unsampled));
    // The client sampled: parent-based sampling records it whatever the ratio.
    let sampled = "55555555555555555555555555555555";
    assert_eq!(call(vec![("traceparent", traceparent(sampled, "01"))]).await, Some(0));
    let span = t.span_of(sampled).await.span;
    // Spans leave in the order they end: the earlier calls would have been sent first.
    assert_eq!(t.spans.borrow().len(), 1, "only the sampled call is exported: {:?}", t.spans.borrow());
    assert_eq!(t.backend_saw(3).await, Some(format!("00-{sampled}-{}-01", hex(&span.span_id))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_clients_sampling_is_not_followed_the_ratio_decides() {
    let t = start(&format!("{}  follow_client_sampling: false\n", exporting())).await;
    // The client did not sample; at ratio 1 the gateway records the call all the same, in the
    // client's trace.
    let unsampled = "66666666666666666666666666666666";
    let headers = [("traceparent", traceparent(unsampled, "00"))];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let reply = support::raw_unary(t.gw.address, GET_USER, &GetUserRequest { id: "u-1".into() }, &headers).await;
    assert_eq!(reply.status(), Some(0));
    let span = t.span_of(unsampled).await.span;
    assert_eq!(t.backend_saw(1).await, Some(format!("00-{unsampled}-{}-01", hex(&span.span_id))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_traces_off_traceparent_passes_untouched() {
    let t = start("  service_name: unused\n").await;
    let sent = traceparent("66666666666666666666666666666666", "01");
    let reply = support::http(t.gw.address, "GET", "/v1/users/u-1", &[("traceparent", &sent)], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(t.backend_saw(1).await, Some(sent));
    let reply = support::raw_unary(t.gw.address, GET_USER, &GetUserRequest { id: "u-1".into() }, &[]).await;
    assert_eq!(reply.status(), Some(0));
    assert_eq!(t.backend_saw(2).await, None, "no trace is started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sends_the_queued_spans_when_it_stops() {
    let (collector, spans) = start_collector().await;
    let (recorder, _) = start_recorder().await;
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("shop.binpb"), dragoman::demo::DESCRIPTOR_SET).expect("write set");
    // An hour between exports: only stopping can send the span in time.
    let yaml = format!(
        "listen: 127.0.0.1:0\ndescriptors: [{}]\nwatch: false\nservices:\n  - match: {USERS}\n    backends: [http://{recorder}]\n\
         traces:\n  otlp_endpoint: http://{collector}\n  export_interval: 1h\n",
        dir.path().display()
    );
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dragoman"));
    command.args(["serve", "--config"]).arg(&config);
    let mut gateway = tokio::task::spawn_blocking(move || support::Running::start(command)).await.expect("join");
    let trace = "99999999999999999999999999999999";
    let reply = support::raw_unary(
        gateway.address,
        GET_USER,
        &GetUserRequest { id: "u-1".into() },
        &[("traceparent", &traceparent(trace, "01"))],
    )
    .await;
    assert_eq!(reply.status(), Some(0));
    let (status, log) = tokio::task::spawn_blocking(move || {
        let status = gateway.terminate();
        (status, gateway.log())
    })
    .await
    .expect("join");
    assert!(status.success(), "exit on SIGTERM: {status:?}\n{log}");
    assert!(log.contains(&format!("trace_id={trace}")), "the access line names the trace:\n{log}");
    assert!(log.contains("traces: the queued spans are sent"), "serve flushed the exporter itself:\n{log}");
    // The collector answered the export before the process exited.
    let exported: Vec<Exported> = spans.borrow().iter().filter(|e| hex(&e.span.trace_id) == trace).cloned().collect();
    assert_eq!(exported.len(), 1, "the queued span was sent on the way out:\n{log}");
}

/// An OTLP/HTTP collector: keeps the spans POSTed to it as protobuf, and each request's path and
/// content type.
async fn start_http_collector() -> (SocketAddr, watch::Receiver<Vec<Exported>>, watch::Receiver<Vec<String>>) {
    use http_body_util::BodyExt;
    use prost::Message as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (spans, received) = watch::channel(Vec::new());
    let (requests, requested) = watch::channel(Vec::new());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (spans, requests) = (spans.clone(), requests.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (spans, requests) = (spans.clone(), requests.clone());
                    async move {
                        let content_type = request.headers().get("content-type").and_then(|v| v.to_str().ok());
                        let seen =
                            format!("{} {} {}", request.method(), request.uri().path(), content_type.unwrap_or("-"));
                        requests.send_modify(|r| r.push(seen));
                        let body = request.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        let export = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                        let collector = Collector(spans);
                        let _ = collector.export(tonic::Request::new(export)).await;
                        let answer = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
                        let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(answer)));
                        response
                            .headers_mut()
                            .insert("content-type", http::HeaderValue::from_static("application/x-protobuf"));
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (address, received, requested)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_otlp_http_too() {
    support::logs();
    let (collector, spans, requests) = start_http_collector().await;
    let (recorder, backend) = start_recorder().await;
    let gw = TestGateway::builder()
        .backend(USERS, &recorder.to_string())
        .traces(&format!("  otlp_endpoint: http://{collector}\n  protocol: http/protobuf\n  export_interval: 50ms\n"))
        .start()
        .await;
    let t = Traced { gw, spans, backend };
    let trace = "abababababababababababababababab";
    let reply = support::raw_unary(
        t.gw.address,
        GET_USER,
        &GetUserRequest { id: "u-1".into() },
        &[("traceparent", &traceparent(trace, "01"))],
    )
    .await;
    assert_eq!(reply.status(), Some(0));
    let exported = t.span_of(trace).await;
    assert_eq!(exported.service.as_deref(), Some("dragoman"));
    assert_eq!(hex(&exported.span.parent_span_id), PARENT);
    assert_call_span(&exported.span, "grpc", "OK");
    let requests = requests.borrow().clone();
    assert!(
        !requests.is_empty() && requests.iter().all(|r| r == "POST /v1/traces application/x-protobuf"),
        "{requests:?}"
    );
    assert_eq!(t.backend_saw(1).await, Some(format!("00-{trace}-{}-01", hex(&exported.span.span_id))));
}

/// A collector that never answers.
struct Stuck;

#[tonic::async_trait]
impl TraceService for Stuck {
    async fn export(
        &self,
        _: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_collector_holds_no_call_and_spans_are_dropped_and_logged() {
    let logs = support::logs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let collector = listener.local_addr().expect("address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Stuck))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let (recorder, _) = start_recorder().await;
    let gw = TestGateway::builder()
        .backend(USERS, &recorder.to_string())
        .traces(&format!(
            "  otlp_endpoint: http://{collector}\n  export_interval: 10ms\n  max_queue_size: 2\n  export_timeout: 5s\n"
        ))
        .start()
        .await;
    let started = std::time::Instant::now();
    for _ in 0..30 {
        let reply = support::raw_unary(gw.address, GET_USER, &GetUserRequest { id: "u-1".into() }, &[]).await;
        assert_eq!(reply.status(), Some(0));
    }
    // Each export is stuck for 5 s: a call that waited for one would take that long.
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "{:?}", started.elapsed());
    let log = logs.text();
    assert!(log.contains("dropped a Span due to queue full"), "the drop is logged:\n{log}");
}
