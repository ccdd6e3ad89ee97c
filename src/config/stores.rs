//! `rate_limit_stores`, compiled: the shared stores that rate limits name in `store`,
//! each a Redis server (its address, credentials, timeout and pool) and what a failure
//! to reach it means (`on_error`). The store itself is `policy::rate_limit::redis`.

use std::fmt;
use std::time::Duration;

pub use super::raw::OnStoreError;

/// The name rate limits use for the gateway's own, per-process store; no shared store
/// may take it.
pub const LOCAL_STORE: &str = "local";

/// A named shared store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitStoreConfig {
    pub name: String,
    pub redis: RedisStoreConfig,
    /// Allow (fail open) or deny (fail closed) when the store fails or times out.
    pub on_error: OnStoreError,
}

/// How the gateway reaches the store's Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisStoreConfig {
    pub url: RedisUrl,
    /// Each decision's limit, from the call until the answer (a connection still being
    /// made counts too).
    pub timeout: Duration,
    /// Multiplexed connections of the process to this Redis, spread over the workers
    /// (at least one per worker).
    pub pool: usize,
}

/// A `redis://` URL, parsed. Its `Display` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    /// The database `SELECT`ed on connect (`/N` in the URL; 0 when left out).
    pub db: i64,
    /// Sent with the password (`AUTH user password`, Redis 6 ACLs); `None`: the
    /// `default` user.
    pub username: Option<String>,
    pub password: Option<RedisPassword>,
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("redis://")?;
        match (&self.username, &self.password) {
            (Some(user), Some(_)) => write!(f, "{user}:***@")?,
            (Some(user), None) => write!(f, "{user}@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (None, None) => {}
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}/{}", self.host, self.port, self.db)
        } else {
            write!(f, "{}:{}/{}", self.host, self.port, self.db)
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// A Redis password: compared, passed to the client, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisPassword(String);

impl RedisPassword {
    pub fn new(password: String) -> Self {
        RedisPassword(password)
    }

    /// The password itself, for the connection's `AUTH` only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RedisPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisPassword(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password() {
        let url = RedisUrl {
            host: "cache.internal".into(),
            port: 6380,
            db: 2,
            username: Some("gateway".into()),
            password: Some(RedisPassword::new("s3cret".into())),
        };
        assert_eq!(url.to_string(), "redis://gateway:***@cache.internal:6380/2");
        assert!(!format!("{url:?}").contains("s3cret"));
        let v6 = RedisUrl {
            host: "::1".into(),
            port: 6379,
            db: 0,
            username: None,
            password: Some(RedisPassword::new("s3cret".into())),
        };
        assert_eq!(v6.to_string(), "redis://:***@[::1]:6379/0");
    }
}
