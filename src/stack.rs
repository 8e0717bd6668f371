//! The one place that orders the policy stack, top to bottom. Every frontend calls the same
//! stack, so a rule written once holds for every protocol.

use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::builtin::{InProcessLayer, TonicService};
use crate::call::{Call, Reply};
use crate::error::GatewayError;
use crate::observe::access_log::AccessLogLayer;
use crate::observe::trace::Tracer;
use crate::policy::deadline::DeadlineLayer;
use crate::upstream::Upstream;

/// The policy stack every call goes through.
pub type Stack = BoxCloneSyncService<Call, Reply, GatewayError>;

pub fn build(upstream: Upstream, health: TonicService, tracer: Tracer) -> Stack {
    let stack = ServiceBuilder::new()
        // Outermost: sees every call and its final status, refusals by the layers below included;
        // starts the call's span before any layer below can refuse it, and points the backend's
        // `traceparent` at that span.
        .layer(AccessLogLayer::new(tracer))
        // Fixes the deadline (client's or the service's default) before anything waits on it,
        // and bounds everything below it, streaming included.
        .layer(DeadlineLayer)
        // Innermost: the gateway's own services (health, reflection) are answered here, after
        // every policy has had its say; every other call goes to a backend.
        .layer(InProcessLayer::new(health))
        .service(upstream);
    BoxCloneSyncService::new(stack)
}
