//! `store: local`: one limit's buckets in this process, exact across per-core workers.
//!
//! The keys (64-bit hashes, see [`super::key`]) are spread over shards by hash, each a
//! `std::sync::Mutex<HashMap<key, TAT>>`. A decision locks one shard, reads the key's
//! TAT, runs [`gcra::decide`] and writes the new TAT back: no `.await` while the lock
//! is held (a std mutex is right for that), and every worker of the process sees the
//! same buckets, so a limit admits exactly `burst` at once however the connections
//! spread.
//!
//! # Memory and eviction
//! The store holds at most `max_keys` keys (split over the shards). When a new key
//! arrives at a full shard:
//! 1. keys whose TAT has passed are dropped: they are full buckets, the same as a key
//!    never seen, so forgetting them changes no decision;
//! 2. if the shard is still full (every key in it is live), the new key would take the
//!    slot of the key closest to full (the smallest TAT), and starts from that TAT,
//!    not from a full bucket: with the table full of live keys, a new key gets no more
//!    than the least-used live key has left. Only when that admits the request is the
//!    old key evicted, and the shard's *floor* raised to its TAT;
//! 3. a key the shard does not hold never starts better than the floor, so an evicted
//!    key does not come back with a full bucket for free. (Since the evicted key is
//!    always the smallest TAT, every live TAT stays at or above the floor, so a slot
//!    frees only once the floor has passed; the floor is the rule written down, kept
//!    so that it holds whatever the eviction order.)
//!
//! A new key that is refused is not inserted, so refused requests never evict
//! anything. Evictions of live keys are counted in
//! `portcullis_rate_limit_evictions_total`, the keys held in `portcullis_rate_limit_keys`.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hasher};
use std::sync::{Mutex, PoisonError};

use prometheus::{IntCounter, IntGauge};
use tokio::time::Instant;

use super::gcra::{self, Decision, Rate};

/// The default of `max_keys`.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Keys per shard, at most (before `max_keys` is reached): a full shard is scanned when
/// a new key must evict, so shards stay small.
const KEYS_PER_SHARD: usize = 1024;

/// Shards at most.
const MAX_SHARDS: usize = 256;

/// One limit's buckets: a TAT per key, in nanoseconds since the store's origin.
#[derive(Debug)]
pub struct LocalStore {
    shards: Box<[Mutex<Shard>]>,
    max_keys: usize,
    /// Time zero of the store's clock. The store is carried over a reload with it.
    origin: Instant,
    /// The keys of the hash its keys are made with ([`LocalStore::key_hasher`]), drawn
    /// at random: a client cannot tell which keys collide or share a shard.
    seed: RandomState,
    keys: IntGauge,
    evictions: IntCounter,
}

#[derive(Debug, Default)]
struct Shard {
    /// Keys are hashes with a random seed already: they are their own hash here.
    tats: HashMap<u64, u64, BuildHasherDefault<KeyIsHash>>,
    /// Keys this shard may hold.
    capacity: usize,
    /// A key the shard does not hold starts here: the largest TAT evicted while live.
    floor: u64,
}

impl LocalStore {
    /// A store for at most `max_keys` keys (at least 1), counting what it holds in
    /// `keys` and its evictions of live keys in `evictions`.
    pub fn new(max_keys: usize, keys: IntGauge, evictions: IntCounter) -> LocalStore {
        let max_keys = max_keys.max(1);
        let count = max_keys.div_ceil(KEYS_PER_SHARD).clamp(1, MAX_SHARDS);
        // The capacities add up to `max_keys` exactly.
        let shards = (0..count)
            .map(|i| {
                Mutex::new(Shard {
                    capacity: max_keys / count + usize::from(i < max_keys % count),
                    ..Shard::default()
                })
            })
            .collect();
        keys.set(0);
        LocalStore {
            shards,
            max_keys,
            origin: Instant::now(),
            seed: RandomState::new(),
            keys,
            evictions,
        }
    }

    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// A fresh hasher for this store's keys (SipHash-1-3 with the store's random keys).
    pub fn key_hasher(&self) -> DefaultHasher {
        self.seed.build_hasher()
    }

    /// Now on the store's clock (the runtime's, so paused time in tests moves it).
    pub fn now(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.origin);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }

    /// The decision for one request of `key` at `now` (see [`LocalStore::now`]).
    pub fn decide(&self, key: u64, rate: &Rate, now: u64) -> Decision {
        let shard = &self.shards[shard_of(key, self.shards.len())];
        // A panic while holding the lock cannot leave a TAT half written: take the map.
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tat) = shard.tats.get_mut(&key) {
            let (decision, new_tat) = gcra::decide(Some(*tat), now, rate);
            *tat = new_tat;
            return decision;
        }
        // A new key: it needs a slot, and starts no better than the floor, nor than the
        // live key whose slot it would take.
        let evict = self.make_room(&mut shard, now);
        let start = evict.map_or(shard.floor, |(_, tat)| tat.max(shard.floor));
        let (decision, new_tat) = gcra::decide((start > now).then_some(start), now, rate);
        if decision.allowed {
            if let Some((evicted, evicted_tat)) = evict {
                shard.tats.remove(&evicted);
                shard.floor = shard.floor.max(evicted_tat);
                self.keys.dec();
                self.evictions.inc();
            }
            shard.tats.insert(key, new_tat);
            self.keys.inc();
        }
        decision
    }

    /// Keys held now (passed ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).tats.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When `shard` is full: drops the keys whose TAT has passed, and if it is still
    /// full, names the key a new one would evict (the closest to full) with its TAT.
    fn make_room(&self, shard: &mut Shard, now: u64) -> Option<(u64, u64)> {
        if shard.tats.len() < shard.capacity {
            return None;
        }
        let before = shard.tats.len();
        shard.tats.retain(|_, tat| *tat > now);
        self.keys.sub((before - shard.tats.len()) as i64);
        if shard.tats.len() < shard.capacity {
            return None;
        }
        shard
            .tats
            .iter()
            .min_by_key(|(_, tat)| **tat)
            .map(|(key, tat)| (*key, *tat))
    }
}

/// The hasher of a shard's map: a key is a (randomly seeded) hash already.
#[derive(Debug, Default)]
struct KeyIsHash(u64);

impl Hasher for KeyIsHash {
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed; this is the fallback the trait asks for.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The shard of `key`: bits the shard's own map does not lean on most (hashbrown takes
/// its control byte from the top 7 bits of its own hash, which is not this one anyway).
fn shard_of(key: u64, shards: usize) -> usize {
    ((key >> 32) as usize) % shards
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn store(max_keys: usize) -> LocalStore {
        LocalStore::new(
            max_keys,
            IntGauge::new("keys", "keys").expect("gauge"),
            IntCounter::new("evictions", "evictions").expect("counter"),
        )
    }

    /// 1 per minute, burst `burst`: nothing refills within a test.
    fn per_minute(burst: u32) -> Rate {
        Rate::new(1, Duration::from_secs(60), burst).expect("a rate")
    }

    fn admitted(store: &LocalStore, key: u64, rate: &Rate, now: u64, times: usize) -> usize {
        (0..times)
            .filter(|_| store.decide(key, rate, now).allowed)
            .count()
    }

    #[test]
    fn capacities_add_up_to_max_keys() {
        for max_keys in [1, 7, 1024, 1025, 100_000, 10_000_000] {
            let store = store(max_keys);
            let total: usize = store
                .shards
                .iter()
                .map(|s| s.lock().expect("lock").capacity)
                .sum();
            assert_eq!(total, max_keys);
            assert!(store.shards.len() <= MAX_SHARDS);
        }
    }

    #[test]
    fn the_store_never_holds_more_than_max_keys() {
        let store = store(100);
        let rate = per_minute(5);
        let mut allowed = 0;
        for key in 0..10_000u64 {
            // Spread over the shards like real hashes.
            let key = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            allowed += usize::from(store.decide(key, &rate, 0).allowed);
        }
        assert_eq!(store.len(), 100);
        assert_eq!(store.keys.get(), 100);
        assert_eq!(store.evictions.get() as usize, allowed - 100);
        // A flood of new keys does not get a full bucket each: every new key starts
        // where the key it pushes out was, so the flood runs dry after the burst has
        // been spent per slot.
        assert_eq!(allowed, 100 * 5);
    }

    #[test]
    fn passed_keys_are_dropped_first_and_cost_no_eviction() {
        let store = store(2);
        let rate = per_minute(3);
        assert!(store.decide(1, &rate, 0).allowed);
        assert!(store.decide(2, &rate, 0).allowed);
        // A minute later both TATs have passed: full buckets, dropped for free.
        let later = 61 * SECOND;
        assert!(store.decide(3, &rate, later).allowed);
        assert_eq!(store.evictions.get(), 0);
        assert_eq!(store.len(), 1);
        // And a dropped key comes back with the full bucket it had anyway.
        assert_eq!(admitted(&store, 1, &rate, later, 5), 3);
    }

    #[test]
    fn an_evicted_key_does_not_come_back_with_a_full_bucket() {
        let store = store(1);
        let rate = per_minute(3);
        // Key 1 spends its whole burst. Key 2 would take its slot, so it starts where
        // key 1 is: empty. Refused, it evicts nothing; key 1 is still held, still empty.
        assert_eq!(admitted(&store, 1, &rate, 0, 3), 3);
        assert!(!store.decide(2, &rate, 0).allowed);
        assert_eq!(store.evictions.get(), 0);
        assert!(!store.decide(1, &rate, 0).allowed);

        // Key 3 spent one of three; key 4 takes its slot with the two it had left.
        let store = self::store(1);
        assert!(store.decide(3, &rate, 0).allowed);
        assert_eq!(admitted(&store, 4, &rate, 0, 5), 2);
        assert_eq!(store.evictions.get(), 1);
        // Key 3, evicted, comes back no better than it left (here: key 4's slot, empty).
        assert_eq!(admitted(&store, 3, &rate, 0, 5), 0);
    }

    #[test]
    fn a_slot_frees_only_once_the_floor_has_passed() {
        let store = store(2);
        let rate = per_minute(3);
        assert_eq!(admitted(&store, 1, &rate, 0, 3), 3); // TAT 180 s: empty
        assert!(store.decide(2, &rate, 0).allowed); // TAT 60 s
        assert!(store.decide(3, &rate, 0).allowed); // evicts 2; floor 60 s
        assert_eq!(store.evictions.get(), 1);
        // A slot frees only when a TAT passes, and every live TAT is at or above the
        // floor: at 121 s key 3's has passed, and key 2 comes back to the full bucket
        // it would have had anyway (its TAT, 60 s, has passed as well).
        assert_eq!(admitted(&store, 2, &rate, 121 * SECOND, 5), 3);
    }

    #[test]
    fn the_key_closest_to_full_is_the_one_evicted() {
        let store = store(2);
        let rate = per_minute(10);
        let (a, b) = (10, 11); // both in shard 0: max_keys 2 is one shard
        assert_eq!(admitted(&store, a, &rate, 0, 1), 1); // 9 left
        assert_eq!(admitted(&store, b, &rate, 0, 6), 6); // 4 left
        assert!(store.decide(12, &rate, 0).allowed);
        assert_eq!(store.evictions.get(), 1);
        // `b` was kept with its 4; `a` (closest to full) was evicted and the floor is
        // its TAT: new keys start with 9 - 1 = 8 left at most.
        assert_eq!(admitted(&store, b, &rate, 0, 10), 4);
    }

    #[test]
    fn the_floor_passes_with_time() {
        let store = store(1);
        let rate = per_minute(2);
        assert!(store.decide(1, &rate, 0).allowed);
        assert!(store.decide(2, &rate, 0).allowed); // evicts 1, floor = 60 s
        assert_eq!(store.evictions.get(), 1);
        // Two minutes on, the floor and every TAT have passed: full buckets again.
        assert_eq!(admitted(&store, 3, &rate, 120 * SECOND, 5), 2);
    }

    #[test]
    fn several_threads_get_exactly_the_burst_between_them() {
        const THREADS: usize = 8;
        const TRIES: usize = 500;
        const BURST: u32 = 1000;
        let store = Arc::new(store(DEFAULT_MAX_KEYS));
        let rate = per_minute(BURST);
        let barrier = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    // Two keys in different shards, so more than one lock is in play.
                    (0..TRIES)
                        .filter(|i| {
                            let key = if i % 2 == 0 { 7 } else { 7 | (5 << 32) };
                            store.decide(key, &rate, 0).allowed
                        })
                        .count()
                })
            })
            .collect();
        let admitted: usize = threads
            .into_iter()
            .map(|t| t.join().expect("a thread"))
            .sum();
        // 8 × 500 = 4000 tries over two keys of burst 1000 each.
        assert_eq!(admitted, 2 * BURST as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_is_the_runtime_s() {
        let store = store(10);
        let start = store.now();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(store.now() - start, 90 * SECOND);
    }
}
