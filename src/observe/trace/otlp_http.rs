//! The HTTP client OTLP/HTTP exports with: one HTTP/1.1 POST per batch over hyper, which the
//! gateway already has, instead of the reqwest stack the exporter would otherwise bring in.
//!
//! The SDK's batch thread is no tokio thread, so each request runs as a task on the gateway's
//! runtime and the thread waits for its answer. A connection per batch (every few seconds at
//! most) needs no pool. It does not do TLS, redirects or proxies.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry_http::{HttpClient, HttpError};

/// The largest answer read from a collector (it is an `ExportTraceServiceResponse`: tiny).
const MAX_RESPONSE: usize = 64 * 1024;

#[derive(Debug)]
pub(super) struct Client {
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl Client {
    /// Must be made inside the runtime its requests are to run on.
    pub(super) fn new(timeout: Duration) -> Self {
        Client { runtime: tokio::runtime::Handle::current(), timeout }
    }
}

#[tonic::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let timeout = self.timeout;
        let sent = self.runtime.spawn(async move { tokio::time::timeout(timeout, post(request)).await });
        match sent.await? {
            Ok(answer) => answer,
            Err(_) => Err(format!("the collector did not answer within {timeout:?}").into()),
        }
    }
}

async fn post(request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
    let (mut parts, body) = request.into_parts();
    let authority = parts.uri.authority().ok_or("the collector's URL has no host")?.clone();
    let address = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
    let tcp = tokio::net::TcpStream::connect(&address).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    // HTTP/1.1 requests name their target in origin form, and the host in `Host`.
    parts.headers.insert(http::header::HOST, http::HeaderValue::from_str(authority.as_str())?);
    parts.uri = parts.uri.path_and_query().map_or("/", |p| p.as_str()).parse()?;
    let response = sender.send_request(Request::from_parts(parts, Full::new(body))).await?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
    Ok(Response::from_parts(parts, body))
}
