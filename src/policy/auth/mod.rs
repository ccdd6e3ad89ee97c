//! Authentication (placeholder until the auth framework lands).

pub mod jwt;
