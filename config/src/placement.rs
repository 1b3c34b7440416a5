//! Placement: slot to cell, from a consistent-hash ring plus explicit overrides.
//!
//! Cells own arcs of a 64-bit ring through their vnodes; slot `i` of `n` sits at the
//! middle of the `i`-th of `n` equal arcs, so slots sample the ring evenly instead
//! of clumping where hashes of small integers clump. The ring is consulted once,
//! when a topology is built; lookups afterwards are an index into a slot table, so
//! routing a request costs one hash and one load.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use consistent_hash_ring::RingBuilder;

use crate::hash::{PinnedFnv, slot_of};

/// Which cell owns each slot, and at which epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    epoch: u64,
    /// Index into the topology's cell list, per slot.
    owners: Box<[u16]>,
}

impl Placement {
    /// Places `slots` slots on `cells` (id, weight): each cell gets
    /// `weight * vnodes_per_weight` vnodes on a ring keyed by the slot number, then
    /// each override pins its slot range to its cell (an index into `cells`).
    ///
    /// Callers guarantee what validation checks: at least one cell, no weight 0,
    /// fewer than 65536 cells, overrides within range.
    pub(crate) fn build(
        cells: &[(&str, u32)],
        slots: u32,
        vnodes_per_weight: u32,
        overrides: &[(RangeInclusive<u32>, usize)],
        epoch: u64,
    ) -> Self {
        let ring = RingBuilder::new(PinnedFnv)
            .weighted_nodes_iter(cells.iter().map(|(id, weight)| {
                let vnodes = u64::from(*weight) * u64::from(vnodes_per_weight);
                ((*id).to_owned(), vnodes as usize)
            }))
            .build();
        let index: HashMap<&str, u16> = cells
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (*id, i as u16))
            .collect();
        let mut owners = vec![0u16; slots as usize].into_boxed_slice();
        let mut arcs = ring.resident_ranges().peekable();
        for slot in 0..slots {
            let point = slot_point(slot, slots);
            while arcs.next_if(|arc| *arc.keys().end() < point).is_some() {}
            // The arcs cover the whole ring, so one always holds `point`.
            if let Some(arc) = arcs.peek() {
                owners[slot as usize] = index[arc.node().as_str()];
            }
        }
        for (range, cell) in overrides {
            for slot in range.clone() {
                owners[slot as usize] = *cell as u16;
            }
        }
        Self { epoch, owners }
    }

    pub fn slots(&self) -> u32 {
        self.owners.len() as u32
    }

    /// The slot of a user id under this placement.
    #[inline]
    pub fn slot_of(&self, user_id: &str) -> u32 {
        slot_of(user_id, self.slots())
    }

    /// Index of the cell that owns `slot`. Panics if `slot >= slots()`.
    #[inline]
    pub fn owner(&self, slot: u32) -> usize {
        usize::from(self.owners[slot as usize])
    }

    /// Ownership epoch of the slots placed here (all of them share it until
    /// takeovers move single cells' slots).
    #[inline]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of slots each cell owns, indexed like the cell list of `cells` cells.
    pub(crate) fn slots_per_cell(&self, cells: usize) -> Vec<u32> {
        let mut counts = vec![0; cells];
        for owner in self.owners.iter() {
            counts[usize::from(*owner)] += 1;
        }
        counts
    }
}

/// Where slot `slot` of `slots` sits on the ring: the middle of its equal arc.
fn slot_point(slot: u32, slots: u32) -> u64 {
    let twice = u128::from(2 * u64::from(slot) + 1) << 64;
    (twice / (2 * u128::from(slots))) as u64
}
