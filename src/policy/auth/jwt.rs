//! JWT bearer tokens (to be written).
