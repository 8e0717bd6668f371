//! The policy layers: each a `Layer` + `Service` pair over [`crate::call::Call`], ordered in one
//! place, [`crate::stack`]. They see calls, never a frontend's protocol.

pub mod auth;
pub mod concurrency;
pub mod deadline;
pub mod limit;
pub mod retry;
pub mod selector;
