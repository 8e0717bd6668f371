//! Authentication and authorization (to be written).

pub mod jwt;
