//! The pinned hashes: user id to slot, and the hasher the placement ring uses.
//!
//! Both are part of the on-disk contract of a deployment: changing either moves users
//! between cells. Test vectors in `tests/placement.rs` guard them.

use std::hash::{BuildHasher, Hasher};

/// Seed of the user-id hash ("LDC" in ASCII). Never change it.
pub const SLOT_HASH_SEED: u64 = 0x004c_4443;

/// The slot of a user id: xxh3-64 of its UTF-8 bytes with a fixed seed, modulo `slots`.
///
/// `slots` must be non-zero; a validated topology guarantees it.
#[inline]
pub fn slot_of(user_id: &str, slots: u32) -> u32 {
    let hash = xxhash_rust::xxh3::xxh3_64_with_seed(user_id.as_bytes(), SLOT_HASH_SEED);
    (hash % u64::from(slots)) as u32
}

/// FNV-1a 64 with every integer fed in little-endian order at a fixed width, so the
/// ring places vnodes identically on every platform (std's default `write_u64` uses
/// native byte order, and `write_usize` native width), finished with murmur3's
/// 64-bit mixer: plain FNV-1a leaves related inputs (a vnode chain, ids that differ
/// in one character) clumped on the ring.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PinnedFnv;

impl BuildHasher for PinnedFnv {
    type Hasher = Fnv1a;

    fn build_hasher(&self) -> Fnv1a {
        Fnv1a(FNV_OFFSET)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[derive(Debug)]
pub(crate) struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.write(&n.to_le_bytes());
    }

    fn write_u32(&mut self, n: u32) {
        self.write(&n.to_le_bytes());
    }

    fn write_u64(&mut self, n: u64) {
        self.write(&n.to_le_bytes());
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}
