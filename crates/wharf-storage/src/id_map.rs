//! Hash maps keyed by log id with a multiplicative hash instead of SipHash. Log ids are
//! assigned by the broker, never by a client, so nothing can choose keys that collide; the
//! writer thread looks them up once or more per append.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by [`crate::LogId`] (or any `u64` the broker assigns).
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of one `u64`; other input is folded in byte by byte.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // The high bits pick hashbrown's control byte, the low bits its bucket: fold the
        // product's high half down so sequential ids spread over both.
        let h = (self.0 ^ n).wrapping_mul(K);
        self.0 = h ^ (h >> 32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_and_reserved_ids_land_in_distinct_buckets() {
        let mut map: IdMap<u64> = IdMap::default();
        for id in (0..10_000u64).chain((1u64 << 40)..(1u64 << 40) + 100) {
            map.insert(id, id * 2);
        }
        assert_eq!(map.len(), 10_100);
        assert_eq!(map.get(&9_999), Some(&19_998));
        assert_eq!(map.get(&((1 << 40) + 5)), Some(&(((1 << 40) + 5) * 2)));
        assert_eq!(map.get(&10_000), None);
        // Distinct low bits for consecutive ids: no clustering into one bucket.
        let low: std::collections::HashSet<u64> = (0..1024u64)
            .map(|id| {
                let mut h = IdHasher::default();
                h.write_u64(id);
                h.finish() & 1023
            })
            .collect();
        assert!(
            low.len() > 600,
            "only {} of 1024 low-bit patterns",
            low.len()
        );
    }
}
