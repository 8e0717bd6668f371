//! The gRPC services the gateway answers itself: server reflection (v1 and v1alpha), built per
//! catalog snapshot from the loaded descriptors, and `grpc.health.v1.Health`.

use std::convert::Infallible;

use http::{Request, Response};
use hyper::body::Incoming;
use tower::util::BoxCloneSyncService;

use crate::catalog::Catalog;

/// A tonic-generated server, boxed.
pub type TonicService = BoxCloneSyncService<Request<Incoming>, Response<tonic::body::Body>, Infallible>;

pub const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
pub const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";
pub const HEALTH: &str = "grpc.health.v1.Health";

/// What the gRPC frontend derives from one catalog snapshot.
#[derive(Clone)]
pub struct Tables {
    pub reflection_v1: TonicService,
    pub reflection_v1alpha: TonicService,
}

impl Tables {
    /// Builds reflection over every loaded file plus the gateway's own health service.
    pub fn new(catalog: &Catalog) -> Result<Self, String> {
        let set = catalog.encoded_file_descriptor_set();
        let builder = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(&set)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let v1 = builder().build_v1().map_err(|e| format!("reflection: {e}"))?;
        let v1alpha = builder().build_v1alpha().map_err(|e| format!("reflection: {e}"))?;
        Ok(Tables {
            reflection_v1: BoxCloneSyncService::new(v1),
            reflection_v1alpha: BoxCloneSyncService::new(v1alpha),
        })
    }
}
