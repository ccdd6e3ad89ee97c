//! The verified-token cache: a token seen again before it expires is admitted without a
//! second signature check. Bounded (`token_cache.max_entries`, over 16 shards so that
//! workers rarely wait on one another), keyed by the token's SHA-256 (the token itself
//! is never kept), each entry until the token's `exp` (plus the leeway, as verification
//! allows) and only while its issuer's key set is the one that verified it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::Verified;

const SHARDS: usize = 16;

/// The token's digest, the cache's key.
pub type TokenHash = [u8; 32];

pub fn hash(token: &[u8]) -> TokenHash {
    Sha256::digest(token).into()
}

struct Entry {
    verified: Arc<Verified>,
    /// Unix seconds after which the token is no longer valid.
    expires: u64,
    /// The key set generation (of `verified.issuer`) that verified it.
    generation: u64,
}

pub struct TokenCache {
    shards: Vec<Mutex<HashMap<TokenHash, Entry>>>,
    per_shard: usize,
}

impl TokenCache {
    pub fn new(max_entries: usize) -> Self {
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_entries.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &TokenHash) -> std::sync::MutexGuard<'_, HashMap<TokenHash, Entry>> {
        self.shards[usize::from(key[0]) % SHARDS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The verified token under `key`, if it is still valid at `now` (Unix seconds)
    /// and `generation` says which key set its issuer has now.
    pub fn get(
        &self,
        key: &TokenHash,
        now: u64,
        generation: impl Fn(usize) -> u64,
    ) -> Option<Arc<Verified>> {
        let mut shard = self.shard(key);
        let entry = shard.get(key)?;
        if now <= entry.expires && entry.generation == generation(entry.verified.issuer) {
            return Some(entry.verified.clone());
        }
        shard.remove(key);
        None
    }

    /// Keeps `verified` until `expires`; a full shard drops its expired entries, then
    /// any one entry.
    pub fn insert(
        &self,
        key: TokenHash,
        verified: Arc<Verified>,
        expires: u64,
        generation: u64,
        now: u64,
    ) {
        let mut shard = self.shard(&key);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, entry| entry.expires >= now);
            if shard.len() >= self.per_shard {
                if let Some(victim) = shard.keys().next().copied() {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(
            key,
            Entry {
                verified,
                expires,
                generation,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.len()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(issuer: usize) -> Arc<Verified> {
        Arc::new(Verified {
            issuer,
            subject: Some("alice".into()),
            claims: serde_json::Map::new(),
        })
    }

    #[test]
    fn entries_live_until_exp_and_while_their_key_set_does() {
        let cache = TokenCache::new(100);
        let key = hash(b"a.b.c");
        cache.insert(key, verified(0), 1_000, 7, 900);
        assert!(cache.get(&key, 1_000, |_| 7).is_some());
        assert!(cache.get(&key, 1_000, |_| 8).is_none(), "another key set");
        assert!(
            cache.get(&key, 1_000, |_| 7).is_none(),
            "and it was dropped"
        );
        cache.insert(key, verified(0), 1_000, 7, 900);
        assert!(cache.get(&key, 1_001, |_| 7).is_none(), "expired");
        assert_ne!(hash(b"a.b.c"), hash(b"a.b.d"));
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = TokenCache::new(32);
        for i in 0..10_000u32 {
            cache.insert(hash(&i.to_be_bytes()), verified(0), 2_000, 0, 1_000);
        }
        assert!(cache.len() <= 32, "{}", cache.len());
    }
}
