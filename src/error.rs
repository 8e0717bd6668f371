//! The one error type of the request path. Every error knows where it came from (the client, the
//! gateway, a backend) and whether retrying the call could help; it becomes a gRPC status in one
//! place ([`GatewayError::to_status`]) and each frontend maps that status to its own protocol.

use tonic::Code;

/// Where an error was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The request itself was wrong (unknown method, malformed input, deadline too short).
    Client,
    /// The gateway refused or failed (no backend configured, limits).
    Gateway,
    /// A backend could not be reached or failed mid-call.
    Upstream,
}

/// An error on the request path, with the gRPC code it maps to.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct GatewayError {
    pub code: Code,
    pub message: String,
    pub origin: Origin,
    /// True when the call never reached a backend, so sending it again is safe.
    pub retryable: bool,
}

impl GatewayError {
    pub fn new(code: Code, origin: Origin, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), origin, retryable: false }
    }

    /// A backend could not be reached: nothing was sent, so a retry elsewhere is safe.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self { retryable: true, ..Self::new(Code::Unavailable, Origin::Upstream, message) }
    }

    pub fn deadline_exceeded() -> Self {
        Self::new(Code::DeadlineExceeded, Origin::Gateway, "deadline exceeded: the call did not finish in time")
    }

    /// The status a client sees.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.code, self.message.clone())
    }
}
