//! Limits shared by every gateway replica through Redis (to be written).
