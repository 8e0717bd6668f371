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

/// Why the gateway itself turned a call away (not a backend's answer): the `reason` of
/// `dragoman_refusals_total`. A layer that refuses calls names its reason here — one variant,
/// one name — and tags its error with [`GatewayError::refused`]: the access log counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The call's deadline passed before its reply.
    Deadline,
    /// No backend is configured, or none could be reached.
    NoBackend,
    /// Every connection to the backends was at their stream limit for longer than the call could wait.
    BackendsBusy,
    /// The gateway was at `server.max_calls_in_flight`.
    CallsInFlight,
    /// The gateway was at `server.max_connections` (counted per connection, not per call).
    Connections,
}

impl Refusal {
    pub const ALL: [Refusal; 5] =
        [Refusal::Deadline, Refusal::NoBackend, Refusal::BackendsBusy, Refusal::CallsInFlight, Refusal::Connections];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Deadline => "deadline",
            Refusal::NoBackend => "no_backend",
            Refusal::BackendsBusy => "backends_busy",
            Refusal::CallsInFlight => "calls_in_flight",
            Refusal::Connections => "connections",
        }
    }
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
    /// Why the gateway refused the call, when it did.
    pub refusal: Option<Refusal>,
}

impl GatewayError {
    pub fn new(code: Code, origin: Origin, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), origin, retryable: false, refusal: None }
    }

    /// The same error, counted as a refusal for `reason`.
    pub fn refused(self, reason: Refusal) -> Self {
        Self { refusal: Some(reason), ..self }
    }

    /// A backend could not be reached: nothing was sent, so a retry elsewhere is safe.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self { retryable: true, ..Self::new(Code::Unavailable, Origin::Upstream, message) }
    }

    pub fn deadline_exceeded() -> Self {
        Self::new(Code::DeadlineExceeded, Origin::Gateway, "deadline exceeded: the call did not finish in time")
            .refused(Refusal::Deadline)
    }

    /// The status a client sees.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.code, self.message.clone())
    }
}
