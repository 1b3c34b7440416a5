//! The global zone's memory of which items cells went short of lately, which
//! makes its polls ask other cells to give back units they do not sell.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::wire::ItemState;

/// When a cell last got less of an item than it asked for. A hint, not a record:
/// with the global account empty, it makes polls recall units idle at other cells.
#[derive(Debug, Default)]
pub struct Recalls(Mutex<HashMap<String, Instant>>);

impl Recalls {
    /// Notes that a cell wants more of these items than it could get.
    pub fn starve<'i>(&self, items: impl IntoIterator<Item = &'i str>, window: Duration) {
        let mut starving = self.0.lock().unwrap_or_else(|e| e.into_inner());
        starving.retain(|_, at| at.elapsed() < window);
        let now = Instant::now();
        for item in items {
            starving.insert(item.to_owned(), now);
        }
    }

    /// Sets each item's `recall`: a cell went short of it within `window`, and
    /// nothing is left to lease.
    pub fn mark(&self, items: &mut [ItemState], window: Duration) {
        let starving = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for item in items {
            let recent = starving
                .get(&item.item_id)
                .is_some_and(|at| at.elapsed() < window);
            item.recall = Some(recent && item.available == 0 && !item.closed);
        }
    }
}
