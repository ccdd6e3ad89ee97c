//! `basic`: `Authorization: Basic` credentials checked against a consumer's argon2 or
//! bcrypt hash.
//!
//! A hash computation takes milliseconds of CPU on purpose, so it never runs on a
//! runtime thread: it goes to the blocking pool, at most [`MAX_VERIFYING`] at once per
//! configuration; a request that cannot get a slot within [`SLOT_WAIT`] is answered
//! `503` (fail closed), so a flood of wrong passwords costs a bounded share of the CPU
//! and never starves the workers. Credentials verified recently are believed from a
//! bounded cache keyed by a salted SHA-256 of user and password (never the plaintext)
//! for the cache's `ttl`. An unknown user is verified against a dummy hash, so that
//! answering does not tell which users exist.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::HeaderValue;
use tokio::sync::Semaphore;

use super::credentials::MAX_CREDENTIAL_BYTES;
use super::{AuthRequest, Failure, Identity};
use crate::config::auth::{sha256, BasicConfig, ConsumerConfig, PasswordHash};
use crate::metrics::CacheCounters;

/// Hash verifications in flight at once, per configuration.
pub const MAX_VERIFYING: usize = 4;
/// How long a request waits for a verification slot before `503`.
pub const SLOT_WAIT: Duration = Duration::from_secs(1);
/// Verified against when the user is unknown (bcrypt of a random string, cost 10).
const DUMMY_HASH: &str = "$2b$10$7EqJtq98hPqEX7fNZaFWoOhi5BWX4Z7/jpvEHTNtIGjxnhYqNiHzC";

/// A `basic` method, compiled for one configuration.
#[derive(Debug)]
pub struct Basic {
    /// `(user, hash, consumer index)`.
    users: Box<[(Box<str>, PasswordHash, usize)]>,
    names: Arc<[Arc<str>]>,
    admitted: Option<Box<[bool]>>,
    challenge: HeaderValue,
    verifying: Arc<Semaphore>,
    cache: Cache,
}

#[derive(Debug)]
struct Cache {
    max_entries: usize,
    ttl: Duration,
    /// Salts the cache's keys, so they say nothing outside this process.
    salt: [u8; 16],
    entries: Mutex<HashMap<[u8; 32], (usize, Instant)>>,
    counters: CacheCounters,
}

impl Basic {
    pub fn new(
        config: &BasicConfig,
        consumers: &[ConsumerConfig],
        names: Arc<[Arc<str>]>,
        verifying: Arc<Semaphore>,
        counters: CacheCounters,
    ) -> Self {
        let users = consumers
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let basic = c.basic.as_ref()?;
                Some((basic.user.as_str().into(), basic.password_hash.clone(), i))
            })
            .collect();
        let admitted = config.consumers.as_ref().map(|list| {
            (0..consumers.len())
                .map(|i| list.contains(&i))
                .collect::<Box<[bool]>>()
        });
        let mut salt = [0; 16];
        salt.iter_mut().for_each(|b| *b = fastrand::u8(..));
        Basic {
            users,
            names,
            admitted,
            challenge: config.challenge.clone(),
            verifying,
            cache: Cache {
                max_entries: config.cache.max_entries,
                ttl: config.cache.ttl,
                salt,
                entries: Mutex::new(HashMap::new()),
                counters,
            },
        }
    }

    pub async fn authenticate(&self, request: &AuthRequest<'_>) -> Result<Identity, Failure> {
        let unauthorized = |missing| Failure::unauthorized(self.challenge.clone(), missing);
        let Some(field) = request.headers.get(AUTHORIZATION) else {
            return Err(unauthorized(true));
        };
        let Some((user, password)) = decode(field.as_bytes()) else {
            // Another scheme (a bearer token, say) is no basic credential.
            return Err(unauthorized(!starts_with_basic(field.as_bytes())));
        };
        let key = self.cache.key(&user, &password);
        let consumer = match self.cache.get(&key) {
            Some(consumer) => consumer,
            None => {
                let found = self.users.iter().find(|(u, _, _)| **u == *user);
                let (hash, consumer) = match found {
                    Some((_, hash, consumer)) => (hash.clone(), Some(*consumer)),
                    None => (PasswordHash::Bcrypt(DUMMY_HASH.to_owned()), None),
                };
                let permit =
                    tokio::time::timeout(SLOT_WAIT, self.verifying.clone().acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .ok_or_else(|| Failure::Unavailable {
                            reason: "every password verification slot is busy".into(),
                        })?;
                let verified = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    verify(&hash, &password)
                })
                .await
                .unwrap_or(false);
                match consumer {
                    Some(consumer) if verified => {
                        self.cache.put(key, consumer);
                        consumer
                    }
                    _ => return Err(unauthorized(false)),
                }
            }
        };
        if let Some(admitted) = &self.admitted {
            if !admitted.get(consumer).copied().unwrap_or(false) {
                return Err(Failure::Forbidden);
            }
        }
        Ok(Identity::consumer(self.names.get(consumer).cloned()))
    }
}

fn starts_with_basic(field: &[u8]) -> bool {
    field.len() >= 6 && field[..6].eq_ignore_ascii_case(b"basic ")
}

/// `Basic base64(user:password)` → user and password (UTF-8, bounded).
fn decode(field: &[u8]) -> Option<(String, String)> {
    if !starts_with_basic(field) || field.len() > MAX_CREDENTIAL_BYTES {
        return None;
    }
    let encoded = field[6..].trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn verify(hash: &PasswordHash, password: &str) -> bool {
    match hash {
        PasswordHash::Argon2(text) => {
            use argon2::PasswordVerifier as _;
            argon2::PasswordHash::new(text).is_ok_and(|parsed| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        }
        PasswordHash::Bcrypt(text) => bcrypt::verify(password, text).unwrap_or(false),
    }
}

impl Cache {
    fn key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut bytes = Vec::with_capacity(16 + user.len() + 1 + password.len());
        bytes.extend_from_slice(&self.salt);
        bytes.extend_from_slice(user.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(password.as_bytes());
        sha256(&bytes)
    }

    fn get(&self, key: &[u8; 32]) -> Option<usize> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let hit = entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(consumer, _)| *consumer);
        drop(entries);
        match hit {
            Some(_) => self.counters.hit.inc(),
            None => self.counters.miss.inc(),
        }
        hit
    }

    fn put(&self, key: [u8; 32], consumer: usize) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.max_entries {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= self.max_entries {
                if let Some(evicted) = entries.keys().next().copied() {
                    entries.remove(&evicted);
                }
            }
        }
        entries.insert(key, (consumer, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_fields_decode_strictly() {
        assert_eq!(
            decode(b"Basic dXNlcjpwYTpzcw=="),
            Some(("user".into(), "pa:ss".into()))
        );
        assert_eq!(
            decode(b"basic dXNlcjpwYTpzcw==").map(|c| c.0),
            Some("user".into())
        );
        assert_eq!(decode(b"Bearer abc"), None);
        assert_eq!(decode(b"Basic !!!"), None);
        assert_eq!(decode(b"Basic dXNlcg=="), None, "no colon");
    }

    #[test]
    fn the_dummy_hash_is_a_valid_bcrypt_hash() {
        assert!(!verify(&PasswordHash::Bcrypt(DUMMY_HASH.into()), "x"));
    }
}
