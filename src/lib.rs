//! Dragoman: a gRPC-first, protocol-translating API gateway that learns its services from
//! protobuf descriptors at run time.
//!
//! The map (see ARCHITECTURE.md): [`frontends`] turn a client's protocol into a [`call::Call`],
//! the [`stack`] of [`policy`] layers passes it to the [`upstream`], which sends it to a backend;
//! everything reads one [`catalog`] snapshot, held by the [`gateway`].

pub mod admin;
pub mod builtin;
pub mod call;
pub mod catalog;
pub mod config;
pub mod demo;
pub mod error;
pub mod frontends;
pub mod gateway;
pub mod observe;
pub mod policy;
pub mod server;
pub mod stack;
pub mod transcode;
pub mod upstream;
pub mod watch;
