//! How a service's keys map to its partitions.
//!
//! A service's partitions split the 64-bit hash space into `P` contiguous, nearly equal
//! ranges, as Service Fabric's `UniformInt64Range` does. A key's position is its XXH3-64
//! hash (seed 0): a published, stable function, so every client, node and release agrees
//! on where a key lives.

/// The partition id of the cluster map's own replica group: never a service's, and never
/// reachable through the client `Store` service.
pub const MAP_PARTITION: u64 = 0;

/// A key's position in the hash space.
pub fn hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// The inclusive hash range `(low, high)` of partition `index` of `count`.
/// The ranges of `0..count` are disjoint and cover the whole space.
pub fn range(index: u32, count: u32) -> (u64, u64) {
    let count = u128::from(count.max(1));
    let start = |i: u128| ((i << 64) / count) as u64;
    let i = u128::from(index);
    let high = if i + 1 >= count { u64::MAX } else { start(i + 1) - 1 };
    (start(i), high)
}

/// Which of `count` partitions holds hash `h`.
pub fn index_of(h: u64, count: u32) -> u32 {
    ((u128::from(h) * u128::from(count.max(1))) >> 64) as u32
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn ranges_tile_the_space_and_agree_with_index_of(count in 1u32..2000, h: u64) {
            let i = index_of(h, count);
            prop_assert!(i < count);
            let (lo, hi) = range(i, count);
            prop_assert!(lo <= h && h <= hi, "{h} not in partition {i}'s range {lo}..={hi}");
            if i > 0 {
                prop_assert_eq!(range(i - 1, count).1.wrapping_add(1), lo);
            }
            if i + 1 < count {
                prop_assert_eq!(hi.wrapping_add(1), range(i + 1, count).0);
            }
        }
    }

    #[test]
    fn ends_and_spread() {
        assert_eq!(range(0, 1), (0, u64::MAX));
        assert_eq!(range(0, 8).0, 0);
        assert_eq!(range(7, 8).1, u64::MAX);
        let mut counts = [0u32; 8];
        for k in 0..80_000u32 {
            counts[index_of(hash(&k.to_be_bytes()), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (9_000..11_000).contains(c)), "uneven: {counts:?}");
        // The function is fixed forever: a changed hash would strand stored keys.
        assert_eq!(hash(b""), 0x2d06800538d394c2);
    }
}
