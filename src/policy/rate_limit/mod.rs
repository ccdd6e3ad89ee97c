//! Rate limits: a policy's `rate_limit` entries, each a key (built from the request) and
//! a rate, decided by GCRA ([`gcra`]) in a store: the process's own, or a shared one.

pub mod gcra;
pub mod redis;

pub use self::redis::{RedisStore, StoreError};
