//! Rate limits: GCRA quotas keyed by client, credential, method or header, counted in process
//! (`governor`) or across gateway replicas (Redis).

pub mod redis;

use std::time::Duration;

/// `limit` calls per `period`, as GCRA counts them: one call every `period / limit`, and up to
/// `limit` at once after a quiet `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub period: Duration,
}

/// What a limiter says about one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Calls that could still be made at once after this one.
    pub remaining: u32,
    /// When refused: how long until one call would be allowed. Zero when allowed.
    pub retry_after: Duration,
    /// How long until the quota is whole again (every call of the burst available).
    pub reset_after: Duration,
}
