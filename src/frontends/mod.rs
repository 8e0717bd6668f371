//! Frontends: one per client protocol. Each finds the target method, turns the client's request
//! into a [`crate::call::Call`], hands it to the policy stack, and turns the
//! [`crate::call::Reply`] back into its protocol. Frontends never talk to backends.

pub mod grpc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

/// Error type of response bodies handed to the HTTP server.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the gateway sends.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;
