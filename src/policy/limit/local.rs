//! Where a local limit keeps its keys: governor's concurrent map, bounded. Past `capacity` live
//! keys, a key the map does not hold yet is counted under one shared overflow key until the
//! sweep (`retain_recent`) frees room; keys already held keep their own quota. A flood of
//! made-up keys (header values, addresses) fills the table, not the memory, and does not take
//! the callers already known down with it.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};

/// The key the calls past capacity share.
pub(super) const OVERFLOW: u64 = u64::MAX;

/// Keys arrive hashed already (SipHash, seeded per limit): the map uses them as they are instead
/// of hashing them again on each of a call's two lookups.
#[derive(Default)]
pub(super) struct Hashed(u64);

impl Hasher for Hashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(super) struct BoundedStore {
    keys: DashMapStateStore<u64, BuildHasherDefault<Hashed>>,
    /// Keys held, counted up as they are added and set from the map after each sweep (two
    /// callers adding one key at once may count it twice until then).
    live: AtomicUsize,
    capacity: usize,
}

impl BoundedStore {
    pub(super) fn new(capacity: usize) -> Self {
        BoundedStore { keys: DashMapStateStore::default(), live: AtomicUsize::new(0), capacity }
    }
}

impl StateStore for BoundedStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if !self.keys.contains_key(key) {
            if self.live.load(Ordering::Relaxed) >= self.capacity {
                return self.keys.measure_and_replace(&OVERFLOW, f);
            }
            self.live.fetch_add(1, Ordering::Relaxed);
        }
        self.keys.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<u64> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&self.keys, drop_below);
        self.live.store(self.keys.len(), Ordering::Relaxed);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&self.keys);
    }

    fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::DefaultClock;
    use std::num::NonZeroU32;

    type Limiter = governor::RateLimiter<u64, BoundedStore, DefaultClock>;

    #[test]
    fn past_capacity_only_new_keys_share_the_overflow_quota() {
        let quota = governor::Quota::per_hour(NonZeroU32::new(1).expect("one"));
        let limiter = Limiter::new(quota, BoundedStore::new(2), DefaultClock::default());
        assert!(limiter.check_key(&1).is_ok());
        assert!(limiter.check_key(&2).is_ok());
        assert!(limiter.check_key(&1).is_err(), "key 1's own quota is spent");
        // The table is full: keys 3 and 4 share the overflow quota, which 3 spends...
        assert!(limiter.check_key(&3).is_ok());
        assert!(limiter.check_key(&4).is_err());
        // ...while a key already held keeps its own.
        let other = Limiter::new(quota, BoundedStore::new(2), DefaultClock::default());
        assert!(other.check_key(&7).is_ok());
        assert!(other.check_key(&8).is_ok());
        assert!(other.check_key(&9).is_ok(), "the first new key past capacity: the overflow's one call");
        assert!(other.check_key(&8).is_err(), "8's own quota, not the overflow's");
        assert_eq!(limiter.len(), 2);
    }
}
