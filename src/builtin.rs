//! The gRPC services the gateway answers itself: `grpc.health.v1.Health` and server reflection
//! (`grpc.reflection.v1` and `v1alpha`, built per catalog snapshot from the loaded descriptors).
//!
//! They are methods like any other: the catalog routes them, their calls go through the policy
//! stack and the access log, so a rule can cover them (reflection discloses the whole schema;
//! many operators want it behind authentication). Only the end of the stack differs: the call
//! is served in process ([`serve`]) instead of by a backend.
//!
//! The gateway's own services win over a loaded set's copy of the same service (many sets carry
//! grpc/health/v1/health.proto): the gateway answers for them.

use std::convert::Infallible;
use std::sync::OnceLock;

use http::header::{CONTENT_TYPE, HeaderValue, TE};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use prost_reflect::DescriptorPool;
use tonic::Code;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::call::{Body, Call, Reply};
use crate::error::{GatewayError, Origin};

/// A tonic-generated server, boxed, taking a call's body.
pub type TonicService = BoxCloneSyncService<Request<Body>, Response<tonic::body::Body>, Infallible>;

pub const HEALTH: &str = "grpc.health.v1.Health";
pub const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
pub const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// Which built-in service answers a method.
#[derive(Clone)]
pub enum Local {
    /// The gateway's health service, one for the whole process.
    Health,
    /// Reflection over one catalog snapshot.
    Reflection(TonicService),
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Local::Health => "Health",
            Local::Reflection(_) => "Reflection",
        })
    }
}

/// The built-in services' descriptors, decoded once.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut pool = DescriptorPool::new();
        for set in [
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            // tonic's own sets: they decode, or the gateway simply has no built-in services.
            if let Err(e) = pool.decode_file_descriptor_set(set) {
                tracing::error!(error = %e, "cannot load a built-in service's descriptors");
            }
        }
        pool
    })
}

/// True for the services the gateway answers itself.
pub fn is_builtin(service: &str) -> bool {
    matches!(service, HEALTH | REFLECTION_V1 | REFLECTION_V1ALPHA)
}

/// The reflection services (v1, v1alpha) over an encoded descriptor set, listing the gateway's
/// health service too.
pub fn reflection(encoded_set: &[u8]) -> Result<(TonicService, TonicService), String> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(encoded_set)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder().build_v1().map_err(|e| format!("reflection: {e}"))?;
    let v1alpha = builder().build_v1alpha().map_err(|e| format!("reflection: {e}"))?;
    Ok((BoxCloneSyncService::new(v1), BoxCloneSyncService::new(v1alpha)))
}

/// Serves a call with an in-process tonic service: the call's frames and metadata in, its reply
/// with the status in trailers out, as a backend's would be.
pub async fn serve(service: TonicService, call: Call) -> Result<Reply, GatewayError> {
    let mut request = Request::new(call.body);
    *request.method_mut() = Method::POST;
    *request.uri_mut() = http::Uri::from(call.method.path_and_query.clone());
    *request.headers_mut() = call.metadata;
    request.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    request.headers_mut().insert(TE, HeaderValue::from_static("trailers"));
    let response = match service.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    let body: Body = body
        .map_err(|e| GatewayError::new(Code::Internal, Origin::Gateway, format!("a built-in service failed: {e}")))
        .boxed_unsync();
    Ok(Reply::from_grpc(parts.headers, body))
}

/// The end of the stack for built-in methods: serves them in process and passes every other call
/// on to the upstream.
#[derive(Clone)]
pub struct InProcessLayer {
    health: TonicService,
}

impl InProcessLayer {
    pub fn new(health: TonicService) -> Self {
        InProcessLayer { health }
    }
}

impl<S> tower::Layer<S> for InProcessLayer {
    type Service = InProcess<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InProcess { inner, health: self.health.clone() }
    }
}

#[derive(Clone)]
pub struct InProcess<S> {
    inner: S,
    health: TonicService,
}

impl<S> tower::Service<Call> for InProcess<S>
where
    S: tower::Service<Call, Response = Reply, Error = GatewayError>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = GatewayError;
    /// The upstream's own future as it is (no box of ours on the path every call takes); the
    /// built-in services', boxed.
    type Future = futures_util::future::Either<
        S::Future,
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, GatewayError>> + Send>>,
    >;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        use futures_util::future::Either;
        match &call.method.local {
            None => Either::Left(self.inner.call(call)),
            Some(Local::Health) => Either::Right(Box::pin(serve(self.health.clone(), call))),
            Some(Local::Reflection(service)) => Either::Right(Box::pin(serve(service.clone(), call))),
        }
    }
}
