//! Protocol translation that needs no I/O, shared by the transcoding frontends: gRPC framing,
//! `google.api.http` path templates, the JSON and XML mappings of messages, query parameters, and NDJSON
//! line splitting.
//! Plain functions and state machines: no tokio, no tower, no sockets.

pub mod framing;
#[cfg(test)]
pub(crate) mod generate;
pub mod http_rule;
pub mod json;
pub mod ndjson;
pub mod query;
pub mod status;
pub mod template;
pub mod xml;
