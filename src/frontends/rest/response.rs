//! Turning a [`Reply`] into an HTTP response: one JSON document for unary calls (or the raw
//! bytes of a `google.api.HttpBody`), and for server streaming a body written message by
//! message as the backend sends them, framed as the client asked (see [`StreamFormat`]).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage};
use tonic::{Code, Status};

use super::error::{Format, XML, error_response, status_json};
use super::routes::Route;
use super::stream::Progress;
use crate::call::{Body, Next, Reply, next};
use crate::config::{RestOptions, StreamFormat};
use crate::error::{GatewayError, Origin};
use crate::frontends::offload;
use crate::frontends::{BoxError, ResponseBody};
use crate::transcode::framing::Deframer;
use crate::transcode::{json, xml};

/// A unary reply: the one message as JSON (or HttpBody bytes), or the status as a JSON error.
pub(super) async fn unary(
    reply: Reply,
    route: &Arc<Route>,
    options: &Arc<RestOptions>,
    trailers_wanted: bool,
    format: Format,
) -> Response<ResponseBody> {
    let pool = route.method.descriptor.parent_pool().clone();
    let mut body = reply.body;
    let mut deframer = Deframer::new(options.max_message_size);
    let message = match next(&mut body, &mut deframer).await {
        Next::Message(message) => message,
        Next::End(status, trailers) => return failed(&status, &pool, &reply.metadata, &trailers, options, format),
    };
    let (status, trailers) = match next(&mut body, &mut deframer).await {
        Next::End(status, trailers) => (status, trailers),
        Next::Message(_) => (Status::internal("the backend sent more than one response message"), HeaderMap::new()),
    };
    if status.code() != Code::Ok {
        return failed(&status, &pool, &reply.metadata, &trailers, options, format);
    }
    let mut response = if offload::is_big(message.len()) {
        let (route, options) = (route.clone(), options.clone());
        match offload::run(move || decode_and_render(message, &route, &options, format)).await {
            Ok(response) => response,
            Err(error) => return format.error(&error.to_status(), None),
        }
    } else {
        decode_and_render(message, route, options, format)
    };
    add_metadata(response.headers_mut(), &reply.metadata, &options.response_header_prefix, options);
    if trailers_wanted {
        let mut http_trailers = HeaderMap::new();
        add_metadata(&mut http_trailers, &trailers, &options.response_trailer_prefix, options);
        let (parts, body) = response.into_parts();
        let body = body.with_trailers(std::future::ready(Some(Ok(http_trailers)))).boxed_unsync();
        return Response::from_parts(parts, body);
    }
    add_metadata(response.headers_mut(), &trailers, &options.response_trailer_prefix, options);
    response
}

/// A call that failed: the JSON error, with the call's metadata and trailers as headers, as a
/// successful call has them.
fn failed(
    status: &Status,
    pool: &prost_reflect::DescriptorPool,
    metadata: &HeaderMap,
    trailers: &HeaderMap,
    options: &RestOptions,
    format: Format,
) -> Response<ResponseBody> {
    let mut response = format.error(status, Some(pool));
    add_metadata(response.headers_mut(), metadata, &options.response_header_prefix, options);
    add_metadata(response.headers_mut(), trailers, &options.response_trailer_prefix, options);
    response
}

fn decode_and_render(message: Bytes, route: &Route, options: &RestOptions, format: Format) -> Response<ResponseBody> {
    match DynamicMessage::decode(route.method.descriptor.output(), message) {
        Ok(decoded) if format == Format::Xml => render_xml(&decoded, route),
        Ok(decoded) => render(&decoded, route, options),
        Err(e) => format.error(&Status::internal(format!("the backend's response does not decode: {e}")), None),
    }
}

/// The response message as XML: the message, or its `response_body` field; HttpBody as bytes.
fn render_xml(message: &DynamicMessage, route: &Route) -> Response<ResponseBody> {
    let field = route.binding.response_body.as_deref().and_then(|name| message.descriptor().get_field_by_name(name));
    let xml = match &field {
        None if is_http_body(&message.descriptor()) => return http_body_response(message),
        None => xml::encode(message),
        Some(f) => match message.get_field(f).as_message() {
            Some(inner) if !f.is_list() && is_http_body(&inner.descriptor()) => return http_body_response(inner),
            _ => xml::encode_body(message, f),
        },
    };
    let xml = match xml {
        Ok(xml) => xml,
        Err(e) => {
            let message = format!("the backend's response cannot be written as XML: {}", e.message);
            return Format::Xml.error(&Status::internal(message), None);
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(xml)).map_err(|never| match never {}).boxed_unsync());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(XML));
    response
}

/// The response message as the HTTP body: JSON, the `response_body` field, or HttpBody bytes.
fn render(message: &DynamicMessage, route: &Route, options: &RestOptions) -> Response<ResponseBody> {
    if route.reply_holds_any {
        if let Err(e) = json::check_nesting(message) {
            return error_response(&no_json_form(e), None);
        }
    }
    let field = route.binding.response_body.as_deref().and_then(|name| message.descriptor().get_field_by_name(name));
    let json = match &field {
        None if is_http_body(&message.descriptor()) => return http_body_response(message),
        None => json::encode(message, &options.print),
        Some(f) => {
            let value = message.get_field(f);
            match value.as_message() {
                Some(inner) if !f.is_list() && is_http_body(&inner.descriptor()) => return http_body_response(inner),
                _ => json::encode_field(message, f, &options.print),
            }
        }
    };
    let json = match json {
        Ok(json) => json,
        Err(e) => return error_response(&no_json_form(e), None),
    };
    let mut response = Response::new(Full::new(Bytes::from(json)).map_err(|never| match never {}).boxed_unsync());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A backend's message that JSON cannot express: the backend's doing, so INTERNAL (500).
fn no_json_form(error: json::JsonError) -> Status {
    Status::internal(format!("the backend's response cannot be written as JSON: {}", error.message))
}

fn is_http_body(descriptor: &MessageDescriptor) -> bool {
    descriptor.full_name() == super::request::HTTP_BODY
}

fn http_body_response(message: &DynamicMessage) -> Response<ResponseBody> {
    let content_type =
        message.get_field_by_name("content_type").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let data = message.get_field_by_name("data").and_then(|v| v.as_bytes().cloned()).unwrap_or_default();
    let mut response = Response::new(Full::new(data).map_err(|never| match never {}).boxed_unsync());
    let content_type =
        HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    response
}

/// gRPC metadata as HTTP headers: prefixed, or as they are when allow-listed. Headers that
/// describe the gRPC transport stay behind.
fn add_metadata(headers: &mut HeaderMap, metadata: &HeaderMap, prefix: &str, options: &RestOptions) {
    for (name, value) in metadata {
        let n = name.as_str();
        if n == "content-type" || n.starts_with("grpc-") || n.ends_with("-bin") || n == "date" || n == "content-length"
        {
            continue;
        }
        if options.response_headers_unprefixed.contains(name) {
            headers.append(name.clone(), value.clone());
        } else if let Ok(prefixed) = HeaderName::from_bytes(format!("{prefix}{n}").as_bytes()) {
            headers.append(prefixed, value.clone());
        }
    }
}

/// Picks the framing of a server stream from `Accept`, else the configured default.
pub(super) fn stream_format(accept: Option<&str>, default: StreamFormat) -> StreamFormat {
    let accept = accept.unwrap_or_default();
    if accept.contains("text/event-stream") {
        StreamFormat::Sse
    } else if accept.contains("application/x-ndjson") {
        StreamFormat::Lines
    } else if accept.split(',').any(|a| a.trim().split(';').next() == Some("application/json")) {
        StreamFormat::Array
    } else {
        default
    }
}

/// A server-streaming reply, its headers sent as soon as the backend's arrive (a client watching
/// a quiet stream knows at once that it is open) — and, for a bidirectional call, once the
/// request's first line was read. A call refused outright — a bad first line, or the backend's
/// status with its headers (Trailers-Only) — gets the error's own HTTP status instead of a 200
/// with an error inside; an error after that ends the stream (see [`StreamFormat`]).
pub(super) async fn streaming(
    reply: Reply,
    route: &Route,
    options: &RestOptions,
    format: StreamFormat,
    progress: Option<Arc<Progress>>,
) -> Response<ResponseBody> {
    let pool = route.method.descriptor.parent_pool().clone();
    let mut body = reply.body;
    let mut deframer = Deframer::new(options.max_message_size);
    // What was read of the reply before answering: its first message, or its end.
    let mut pending = None;
    if let Some(progress) = &progress {
        // The client's first line, or the backend speaking first (or failing, or the deadline),
        // whichever comes first: a backend that speaks first must not wait for the client.
        tokio::select! {
            () = progress.begun() => {}
            first = next(&mut body, &mut deframer) => pending = Some(first),
        }
        if let Some(error) = progress.error() {
            return error_response(&error.to_status(), Some(&pool));
        }
    }
    if pending.is_none() && reply.early_status.as_ref().is_some_and(|s| s.code() != Code::Ok) {
        // The body holds nothing but the trailers: this does not wait.
        pending = Some(next(&mut body, &mut deframer).await);
    }
    if let Some(Next::End(status, trailers)) = &pending {
        if status.code() != Code::Ok {
            return failed(status, &pool, &reply.metadata, trailers, options, Format::Json);
        }
    }
    let stream = MessageStream {
        body,
        deframer,
        pending,
        output: route.method.descriptor.output(),
        holds_any: route.reply_holds_any,
        print: options.print,
        format,
        state: StreamState::Start,
        pool,
        progress,
    };
    let mut response = Response::new(stream.into_body());
    let content_type = match format {
        StreamFormat::Sse => "text/event-stream",
        StreamFormat::Array => "application/json",
        StreamFormat::ResultLines | StreamFormat::Lines => "application/x-ndjson",
    };
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    add_metadata(response.headers_mut(), &reply.metadata, &options.response_header_prefix, options);
    response
}

/// Where a streamed response body stands.
enum StreamState {
    /// Nothing written yet (an array still needs its `[`).
    Start,
    /// At least one message written.
    Streaming,
    /// The closing delimiter is written.
    Done,
}

/// Writes each message as soon as it is whole, and ends with the stream's closing delimiter.
struct MessageStream {
    body: Body,
    deframer: Deframer,
    /// What was read ahead before the headers went out.
    pending: Option<Next>,
    output: MessageDescriptor,
    /// See [`Route::reply_holds_any`].
    holds_any: bool,
    print: json::PrintOptions,
    format: StreamFormat,
    state: StreamState,
    pool: prost_reflect::DescriptorPool,
    /// The request stream's: a bad line is reported instead of the reset it caused.
    progress: Option<Arc<Progress>>,
}

impl MessageStream {
    /// One streamed message as compact JSON; off the worker when it is big. (Returns a future
    /// that does not borrow the stream, whose body is not `Sync`.)
    fn message_json(&self, message: Bytes) -> impl Future<Output = Result<Vec<u8>, Status>> + Send + use<> {
        let (output, holds_any) = (self.output.clone(), self.holds_any);
        let print = json::PrintOptions { add_whitespace: false, ..self.print };
        async move {
            if !offload::is_big(message.len()) {
                return stream_json(output, holds_any, &print, message);
            }
            let encoded = offload::run(move || stream_json(output, holds_any, &print, message));
            encoded.await.map_err(|e| e.to_status()).and_then(|json| json)
        }
    }

    fn message_chunk(&mut self, json: Result<Vec<u8>, Status>) -> Bytes {
        let json = match json {
            Ok(json) => json,
            Err(status) => return self.end_chunk(&status),
        };
        let first = matches!(self.state, StreamState::Start);
        self.state = StreamState::Streaming;
        let mut out = Vec::with_capacity(json.len() + 16);
        match self.format {
            StreamFormat::ResultLines => {
                out.extend_from_slice(b"{\"result\":");
                out.extend_from_slice(&json);
                out.extend_from_slice(b"}\n");
            }
            StreamFormat::Lines => {
                out.extend_from_slice(&json);
                out.push(b'\n');
            }
            StreamFormat::Array => {
                out.extend_from_slice(if first { b"[" } else { b"," });
                out.extend_from_slice(&json);
            }
            StreamFormat::Sse => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&json);
                out.extend_from_slice(b"\n\n");
            }
        }
        Bytes::from(out)
    }

    /// The end of the stream: an error line if it failed, and the closing delimiter.
    fn end_chunk(&mut self, status: &Status) -> Bytes {
        let request_error = self.progress.as_deref().and_then(Progress::error).map(GatewayError::to_status);
        let status = request_error.as_ref().unwrap_or(status);
        let first = matches!(self.state, StreamState::Start);
        self.state = StreamState::Done;
        let failed = status.code() != Code::Ok;
        let error = || status_json(status, Some(&self.pool));
        let mut out = Vec::new();
        match self.format {
            StreamFormat::ResultLines if failed => {
                out.extend_from_slice(b"{\"error\":");
                out.extend_from_slice(&error());
                out.extend_from_slice(b"}\n");
            }
            StreamFormat::Lines if failed => {
                out.extend_from_slice(&error());
                out.push(b'\n');
            }
            StreamFormat::Array => {
                out.extend_from_slice(if first { b"[" } else { b"" });
                if failed {
                    out.extend_from_slice(if first { b"" } else { b"," });
                    out.extend_from_slice(b"{\"error\":");
                    out.extend_from_slice(&error());
                    out.push(b'}');
                }
                out.extend_from_slice(b"]\n");
            }
            StreamFormat::Sse if failed => {
                out.extend_from_slice(b"event: error\ndata: ");
                out.extend_from_slice(&error());
                out.extend_from_slice(b"\n\n");
            }
            _ => {}
        }
        Bytes::from(out)
    }
}

/// A streamed message as JSON.
fn stream_json(
    output: MessageDescriptor,
    holds_any: bool,
    print: &json::PrintOptions,
    message: Bytes,
) -> Result<Vec<u8>, Status> {
    let decoded = DynamicMessage::decode(output, message)
        .map_err(|e| Status::internal(format!("a streamed message does not decode: {e}")))?;
    if holds_any {
        json::check_nesting(&decoded).map_err(no_json_form)?;
    }
    json::encode(&decoded, print).map_err(no_json_form)
}

impl MessageStream {
    /// The body: each message as soon as it is whole, then the closing chunk.
    fn into_body(self) -> ResponseBody {
        let chunks = futures_util::stream::unfold(self, |mut stream| async move {
            if matches!(stream.state, StreamState::Done) {
                return None;
            }
            let read = match stream.pending.take() {
                Some(read_ahead) => read_ahead,
                None => next(&mut stream.body, &mut stream.deframer).await,
            };
            let chunk = match read {
                Next::Message(message) => {
                    let json = stream.message_json(message).await;
                    stream.message_chunk(json)
                }
                Next::End(status, _) => stream.end_chunk(&status),
            };
            Some((Ok::<_, BoxError>(Frame::data(chunk)), stream))
        });
        // The closing chunk is empty for formats without a closing delimiter.
        let chunks = futures_util::StreamExt::filter(chunks, |chunk| {
            std::future::ready(chunk.as_ref().ok().and_then(Frame::data_ref).is_none_or(|d| !d.is_empty()))
        });
        http_body_util::StreamBody::new(chunks).boxed_unsync()
    }
}

/// An error before any response: the gateway's own or the stack's, with its advice's headers.
pub(super) fn refused(
    error: &GatewayError,
    pool: Option<&prost_reflect::DescriptorPool>,
    format: Format,
) -> Response<ResponseBody> {
    let mut response = format.error(&error.to_status(), pool);
    if let Some(headers) = error.headers() {
        response.headers_mut().extend(headers.clone());
    }
    response
}

/// A 405 with `Allow`.
pub(super) fn method_not_allowed(
    method: &http::Method,
    path: &str,
    allow: &[http::Method],
    format: Format,
) -> Response<ResponseBody> {
    let list = allow.iter().map(http::Method::as_str).collect::<Vec<_>>().join(", ");
    let error = GatewayError::new(
        Code::Unimplemented,
        Origin::Client,
        format!("{method} is not allowed on {path}; allowed: {list}"),
    );
    let mut response = refused(&error, None, format);
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    if let Ok(value) = HeaderValue::from_str(&list) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// An error of the gateway's own with an HTTP status the gRPC code alone would not give.
pub(super) fn refused_with(status: StatusCode, code: Code, message: String, format: Format) -> Response<ResponseBody> {
    let mut response = refused(&GatewayError::new(code, Origin::Client, message), None, format);
    *response.status_mut() = status;
    response
}
