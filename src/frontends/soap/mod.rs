//! The SOAP frontend: every loaded service is a SOAP 1.1 and 1.2 service at
//! `<prefix>/<package.Service>`, with a WSDL written from its descriptors at `?wsdl` and a
//! listing of them all at `<prefix>/`.
//!
//! A request's version is its content type (`text/xml`: 1.1, action in `SOAPAction`;
//! `application/soap+xml`: 1.2, action in its `action` parameter). The operation is the one the
//! action names, else the one the Body's first element names. Messages are read and written by
//! the XML mapping ([`crate::transcode::xml`]); errors of every kind are SOAP Faults ([`fault`]).
//!
//! # Streams
//! SOAP is one request and one response, so a streaming side is collected whole: a client
//! stream's request holds its messages as `<message>` elements, sent in order and then
//! half-closed; a server stream's response collects its messages as `<message>` elements, at most
//! `soap.max_stream_messages` of them (past that: RESOURCE_EXHAUSTED, and the call is cancelled).
//! A bidirectional method is half-duplex: every request message is sent, then the replies are
//! collected. A streaming call without a client deadline gets `soap.stream_timeout`, so a stream
//! that never ends (a watch) is a DEADLINE_EXCEEDED fault, never a hang.

mod envelope;
mod fault;
pub mod wsdl;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use prost_reflect::DynamicMessage;
use tokio::time::Instant;
use tonic::{Code, Status};
use tower::ServiceExt;

use super::{Peer, ResponseBody, body, offload};
use crate::call::{Call, Next, Protocol, next};
use crate::catalog::{Catalog, Lookup, MethodRoute};
use crate::config::{RestOptions, SoapOptions};
use crate::observe::access_log;
use crate::stack::Stack;
use crate::transcode::framing::{self, Deframer};
use crate::transcode::xml::{self, DecodeOptions};
pub use envelope::Version;
use fault::Fault;

/// One service as SOAP sees it.
pub struct Service {
    /// `package.Service`.
    pub name: String,
    /// The namespace of its operations' elements (its package's).
    pub namespace: String,
    /// By method name.
    operations: HashMap<String, Arc<MethodRoute>>,
    /// By the SOAPAction its WSDL gives.
    actions: HashMap<String, Arc<MethodRoute>>,
    /// The catalog's types, for the details of faults.
    pool: prost_reflect::DescriptorPool,
    wsdl: wsdl::Wsdl,
}

impl Service {
    /// The method an action names: the WSDL's action, the gRPC path, or the bare method name.
    fn by_action(&self, action: &str) -> Option<Arc<MethodRoute>> {
        self.actions
            .get(action)
            .or_else(|| self.operations.get(action))
            .or_else(|| {
                let (service, method) = action.strip_prefix('/')?.split_once('/')?;
                (service == self.name).then(|| self.operations.get(method)).flatten()
            })
            .cloned()
    }
}

/// What the SOAP frontend derives from one catalog snapshot: every service's operations and
/// WSDL, and the listing.
pub struct Tables {
    services: HashMap<String, Arc<Service>>,
    /// `<prefix>/`: an HTML page naming each service, its WSDL and its operations.
    listing: Bytes,
}

impl Tables {
    pub fn new(catalog: &Catalog, options: &SoapOptions) -> Self {
        let mut services = HashMap::new();
        let mut listing = BTreeMap::new();
        for entry in catalog.services() {
            let descriptor = &entry.descriptor;
            let name = descriptor.full_name().to_owned();
            let mut operations = HashMap::new();
            let mut actions = HashMap::new();
            for method in descriptor.methods() {
                let path = format!("/{name}/{}", method.name());
                let Lookup::Method(route) = catalog.lookup(&path) else { continue };
                operations.insert(method.name().to_owned(), route.clone());
                actions.insert(wsdl::action(&method), route.clone());
            }
            listing.insert(name.clone(), descriptor.clone());
            let wsdl = wsdl::build(descriptor);
            let namespace = xml::namespace(descriptor.package_name());
            let pool = descriptor.parent_pool().clone();
            services.insert(name.clone(), Arc::new(Service { name, namespace, operations, actions, pool, wsdl }));
        }
        Tables { services, listing: Bytes::from(listing_page(&listing, &options.path_prefix)) }
    }
}

fn listing_page(services: &BTreeMap<String, prost_reflect::ServiceDescriptor>, prefix: &str) -> String {
    let mut page = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>SOAP services</title></head><body>\n<h1>SOAP services</h1>\n<ul>\n",
    );
    for (name, service) in services {
        let name = xml::escape(name);
        let _ = write!(page, "<li><a href=\"{}/{name}?wsdl\">{name}</a>: ", xml::escape(prefix));
        let operations: Vec<String> = service
            .methods()
            .map(|m| match (m.is_client_streaming(), m.is_server_streaming()) {
                (false, false) => m.name().to_owned(),
                (true, false) => format!("{} (client stream)", m.name()),
                (false, true) => format!("{} (server stream)", m.name()),
                (true, true) => format!("{} (bidirectional, half-duplex)", m.name()),
            })
            .collect();
        page.push_str(&xml::escape(&operations.join(", ")));
        page.push_str("</li>\n");
    }
    page.push_str("</ul>\n</body></html>\n");
    page
}

/// Whether a request is for the SOAP frontend: a path under its prefix.
pub fn is_soap<B>(request: &Request<B>, options: &SoapOptions) -> bool {
    let path = request.uri().path();
    options.enabled
        && path.strip_prefix(options.path_prefix.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `status` as a fault in the SOAP version of `request`'s content type (1.1 when it names none),
/// for refusals made before the frontend (the server's limits).
pub fn fault<B>(request: &Request<B>, status: Status) -> Response<ResponseBody> {
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let version = Version::of(content_type).map_or(Version::V11, |(version, _)| version);
    Fault::status(status).response(version, None)
}

/// The SOAP frontend: the stack calls go through, and its settings.
#[derive(Clone)]
pub struct SoapFrontend {
    pub stack: Stack,
    pub options: Arc<SoapOptions>,
    /// Body size and read timeout, metadata forwarding, message size, unknown fields: as REST.
    pub rest: Arc<RestOptions>,
}

impl SoapFrontend {
    pub async fn serve(&self, request: Request<Incoming>, tables: &Tables, peer: &Peer) -> Response<ResponseBody> {
        let started = Instant::now();
        let path = request.uri().path().to_owned();
        let name = path.get(self.options.path_prefix.len()..).unwrap_or_default().trim_start_matches('/');
        let content_type =
            request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let version = Version::of(content_type).map_or(Version::V11, |(version, _)| version);
        let refuse = |status: StatusCode, fault: Fault| {
            access_log::unrouted(
                Protocol::Soap,
                &path,
                Some(peer.address),
                fault.status.code(),
                fault.status.message(),
                started,
            );
            let mut response = fault.response(version, None);
            *response.status_mut() = status;
            response
        };
        let allow = |methods: &'static str, response: &mut Response<ResponseBody>| {
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(methods));
        };
        if name.is_empty() {
            if matches!(*request.method(), Method::GET | Method::HEAD) {
                return content(tables.listing.clone(), "text/html; charset=utf-8");
            }
            let message = format!("{} {path}: the SOAP listing is read with GET", request.method());
            let mut response = refuse(StatusCode::METHOD_NOT_ALLOWED, Fault::status(Status::unimplemented(message)));
            allow("GET, HEAD", &mut response);
            return response;
        }
        let Some(service) = tables.services.get(name) else {
            let message = format!("no SOAP service {name:?}; the services are listed at {}/", self.options.path_prefix);
            return refuse(StatusCode::NOT_FOUND, Fault::status(Status::not_found(message)));
        };
        match *request.method() {
            Method::GET | Method::HEAD => {
                let address = self.address(&request, name);
                content(Bytes::from(service.wsdl.with_address(&address)), "text/xml; charset=utf-8")
            }
            Method::POST => self.call(request, service.clone(), peer, started).await,
            _ => {
                let message = format!("{} {path}: a SOAP endpoint takes POST, and GET for its WSDL", request.method());
                let mut response =
                    refuse(StatusCode::METHOD_NOT_ALLOWED, Fault::status(Status::unimplemented(message)));
                allow("GET, HEAD, POST", &mut response);
                response
            }
        }
    }

    /// The endpoint's URL as the WSDL gives it: the configured public URL, else the host the
    /// client asked for.
    fn address<B>(&self, request: &Request<B>, service: &str) -> String {
        let prefix = &self.options.path_prefix;
        if let Some(base) = &self.options.public_url {
            return format!("{base}{prefix}/{service}");
        }
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()))
            .filter(|h| h.parse::<http::uri::Authority>().is_ok_and(|a| a.as_str() == *h && !h.contains('@')))
            .unwrap_or("localhost");
        format!("http://{host}{prefix}/{service}")
    }

    async fn call(
        &self,
        request: Request<Incoming>,
        service: Arc<Service>,
        peer: &Peer,
        started: Instant,
    ) -> Response<ResponseBody> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path();
        let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let Some((version, action)) = Version::of(content_type) else {
            let message = format!(
                "content-type {content_type:?} is not SOAP: send text/xml (SOAP 1.1) or application/soap+xml (SOAP 1.2)"
            );
            access_log::unrouted(Protocol::Soap, path, Some(peer.address), Code::InvalidArgument, &message, started);
            let mut response = Fault::sender(message).response(Version::V11, None);
            *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return response;
        };
        let action = match version {
            Version::V11 => parts
                .headers
                .get("soapaction")
                .and_then(|v| v.to_str().ok())
                .map(|a| envelope::unquote(a.trim()).to_owned()),
            Version::V12 => action,
        };
        // Before the envelope names its operation, a refusal is the endpoint's; after, its method's.
        let refuse = |fault: Fault, method: Option<&MethodRoute>| {
            let (code, message, peer) = (fault.status.code(), fault.status.message(), Some(peer.address));
            match method {
                Some(method) => access_log::refused(Protocol::Soap, method, peer, code, message, started),
                None => access_log::unrouted(Protocol::Soap, path, peer, code, message, started),
            }
            fault.response(version, Some(&service.pool))
        };
        let deadline = match super::deadline(&parts.headers, &self.rest) {
            Ok(timeout) => timeout.map(|t| started + t),
            Err(error) => return refuse(error.into(), None),
        };
        let bytes = match body::read(body, &parts.headers, self.rest.max_request_body_size, self.rest.body_read_timeout)
            .await
        {
            Ok(bytes) => bytes,
            Err(error) => {
                let (_, code, message) = error.explain();
                return refuse(Fault::status(Status::new(code, message)), None);
            }
        };
        let options = DecodeOptions { ignore_unknown_fields: self.rest.ignore_unknown_fields };
        let max_messages = self.options.max_stream_messages;
        let read = if offload::is_big(bytes.len()) {
            let service = service.clone();
            let work = move || envelope::read(&bytes, version, &service, action.as_deref(), options, max_messages);
            match offload::run(work).await {
                Ok(read) => read,
                Err(error) => Err(Fault::from(error)),
            }
        } else {
            envelope::read(&bytes, version, &service, action.as_deref(), options, max_messages)
        };
        let request = match read {
            Ok(request) => request,
            Err(fault) => return refuse(fault, None),
        };
        let method = request.method;
        let limit = self.rest.max_message_size;
        let mut frames = BytesMut::new();
        for message in &request.messages {
            match framing::encode(message, limit) {
                Ok(frame) => frames.extend_from_slice(&frame),
                Err(e) => {
                    let fault = Fault::status(Status::resource_exhausted(format!("the request: {e}")));
                    return refuse(fault, Some(&method));
                }
            }
        }
        let metadata = match super::metadata::from_headers(&parts.headers, parts.uri.query(), &self.rest, peer) {
            Ok(metadata) => metadata,
            Err(error) => return refuse(error.into(), Some(&method)),
        };
        let streaming = method.descriptor.is_client_streaming() || method.descriptor.is_server_streaming();
        let deadline = deadline.or_else(|| streaming.then(|| started + self.options.stream_timeout));
        let call = Call {
            method: method.clone(),
            protocol: Protocol::Soap,
            metadata,
            deadline,
            peer: Some(peer.address),
            client: peer.client.clone(),
            extensions: http::Extensions::new(),
            body: Full::new(frames.freeze()).map_err(|never| match never {}).boxed_unsync(),
        };
        let replies = match self.stack.clone().oneshot(call).await {
            Ok(reply) => self.collect(reply, &method).await,
            Err(error) => Err(Fault::from(error)),
        };
        let rendered = match replies {
            // Defaults are written, so the XML can be several times the protobuf's size.
            Ok((replies, size)) if offload::is_big(size.saturating_mul(8)) => {
                let (service, method) = (service.clone(), method.clone());
                let work = move || render(version, &service, &method, replies);
                offload::run(work).await.map_err(Fault::from).and_then(|rendered| rendered)
            }
            Ok((replies, _)) => render(version, &service, &method, replies),
            Err(fault) => Err(fault),
        };
        match rendered {
            Ok(body) => fault::xml_response(StatusCode::OK, version, body),
            Err(fault) => fault.response(version, Some(&service.pool)),
        }
    }

    /// The reply's messages as they came, and their total size; or the fault the reply's status
    /// (or its size) makes. A response carries at most `max_message_size` bytes of messages, as a
    /// unary reply does, and at most `soap.max_stream_messages` of them.
    async fn collect(&self, reply: crate::call::Reply, method: &MethodRoute) -> Result<(Vec<Bytes>, usize), Fault> {
        let stream = method.descriptor.is_server_streaming();
        let limit = self.rest.max_message_size as usize;
        let mut body = reply.body;
        let mut deframer = Deframer::new(self.rest.max_message_size);
        let (mut replies, mut size) = (Vec::new(), 0);
        loop {
            match next(&mut body, &mut deframer).await {
                Next::Message(bytes) => {
                    if !stream && !replies.is_empty() {
                        return Err(Fault::status(Status::internal("the backend sent more than one response message")));
                    }
                    if replies.len() == self.options.max_stream_messages {
                        return Err(Fault::status(Status::resource_exhausted(format!(
                            "the stream has more than {} messages, the most one SOAP response collects (soap.max_stream_messages)",
                            self.options.max_stream_messages
                        ))));
                    }
                    size += bytes.len();
                    if size > limit {
                        return Err(Fault::status(Status::resource_exhausted(format!(
                            "the stream's messages add up to more than {limit} bytes, the most one SOAP response carries (server.max_message_size)"
                        ))));
                    }
                    replies.push(bytes);
                }
                Next::End(status, _) if status.code() != Code::Ok => return Err(Fault::status(status)),
                Next::End(..) if !stream && replies.is_empty() => {
                    return Err(Fault::status(Status::internal("the backend sent no response message")));
                }
                Next::End(..) => return Ok((replies, size)),
            }
        }
    }
}

/// The response envelope of `method`'s reply messages.
fn render(version: Version, service: &Service, method: &MethodRoute, replies: Vec<Bytes>) -> Result<String, Fault> {
    let output = method.descriptor.output();
    let messages = replies
        .into_iter()
        .map(|bytes| DynamicMessage::decode(output.clone(), bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Fault::status(Status::internal(format!("the backend's response does not decode: {e}"))))?;
    envelope::response(version, service, method, &messages).map_err(|e| {
        Fault::status(Status::internal(format!("the backend's response cannot be written as XML: {}", e.message)))
    })
}

fn content(body: Bytes, content_type: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(body).map_err(|never| match never {}).boxed_unsync());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
