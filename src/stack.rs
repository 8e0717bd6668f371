//! The one place that orders the policy stack, top to bottom. Every frontend calls the same
//! stack, so a rule written once holds for every protocol.

use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::builtin::{InProcessLayer, TonicService};
use crate::call::{Call, Reply};
use crate::config::Config;
use crate::error::GatewayError;
use crate::observe::access_log::AccessLogLayer;
use crate::observe::trace::Tracer;
use crate::policy::auth::AuthLayer;
use crate::policy::concurrency::ConcurrencyLimitLayer;
use crate::policy::deadline::DeadlineLayer;
use crate::policy::limit::RateLimitLayer;
use crate::policy::retry::RetryLayer;
use crate::upstream::Upstream;

/// The policy stack every call goes through.
pub type Stack = BoxCloneSyncService<Call, Reply, GatewayError>;

pub fn build(config: &Config, upstream: Upstream, health: TonicService, tracer: Tracer) -> Stack {
    let stack = ServiceBuilder::new()
        // Outermost: sees every call and its final status, refusals by the layers below included;
        // starts the call's span before any layer below can refuse it, and points the backend's
        // `traceparent` at that span.
        .layer(AccessLogLayer::new(tracer))
        // Fixes the deadline (client's or the service's default) before anything waits on it,
        // and bounds everything below it, streaming included.
        .layer(DeadlineLayer::new(config.timeouts.clone()))
        // Who is calling, and may they: before anything counts or serves the call. Under the
        // deadline, which bounds a JWKS fetch too.
        .option_layer(config.auth.clone().map(AuthLayer::new))
        // After auth, so limits can be per caller; a refused call is not counted.
        .option_layer(config.limits.clone().map(RateLimitLayer::new))
        // Last before the backends: a call the policies above refuse takes no backend's place.
        .layer(ConcurrencyLimitLayer)
        // Below the limits (a retry takes no second place, counts under no limit again) and above
        // the upstream, which picks the endpoint afresh for each attempt.
        .option_layer(config.retries.clone().map(RetryLayer::new))
        // Innermost: the gateway's own services (health, reflection) are answered here, after
        // every policy has had its say; every other call goes to a backend.
        .layer(InProcessLayer::new(health))
        .service(upstream);
    BoxCloneSyncService::new(stack)
}
