//! The stock cache: each item's remaining units at this cell, in memory.
//!
//! The remaining-units counter is the sold-out flag: an order first reads it (one
//! atomic load, no lock, no ledger), and only a positive count lets it try to
//! deduct, atomically, before the ledger commits. Units deducted for an order that
//! then fails are given back. The ledger's stock record checks every deduction again,
//! so the cache can make a buyer wait or fail fast but never oversell.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};

use prometheus::{IntGauge, IntGaugeVec};

/// One item at this cell.
#[derive(Debug)]
pub struct ItemStock {
    pub id: String,
    pub name: String,
    /// Price per unit, in minor units.
    pub price: i64,
    /// Units this cell received (its share of the item's stock).
    pub received: u64,
    remaining: AtomicI64,
    gauge: IntGauge,
}

impl ItemStock {
    /// The sold-out flag: no unit left at this cell.
    #[inline]
    pub fn sold_out(&self) -> bool {
        self.remaining.load(Ordering::Acquire) <= 0
    }

    pub fn remaining(&self) -> u64 {
        self.remaining.load(Ordering::Acquire).max(0) as u64
    }

    /// Takes `quantity` units if that many are left. Never drives the count below
    /// zero, not even for a moment, so a small order never sees a false sold-out.
    pub fn reserve(&self, quantity: u32) -> bool {
        let quantity = i64::from(quantity);
        let taken = self
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                (left >= quantity).then_some(left - quantity)
            });
        match taken {
            Ok(before) => {
                self.gauge.set(before - quantity);
                true
            }
            Err(_) => false,
        }
    }

    /// Gives back units of an order that did not go through.
    pub fn release(&self, quantity: u32) {
        let now = self
            .remaining
            .fetch_add(i64::from(quantity), Ordering::AcqRel)
            + i64::from(quantity);
        self.gauge.set(now);
    }
}

/// Confirmed orders by (user, request id): fingerprint and reply. Lets a retry of a
/// confirmed order get its first outcome even once the item is sold out, without
/// touching the ledger. Bounded by the units this cell sells.
type Confirmed = HashMap<(String, String), (u64, Vec<u8>)>;

#[derive(Debug)]
pub struct StockCache {
    items: HashMap<String, ItemStock>,
    confirmed: RwLock<Confirmed>,
}

impl StockCache {
    /// `items` holds, per item: id, name, price, units received and units sold, as
    /// the ledger recorded them. `gauges` is `ldc_cell_stock_remaining`, labelled
    /// by shard and item.
    pub fn new(
        items: Vec<(String, String, i64, u64, u64)>,
        confirmed: Confirmed,
        gauges: &IntGaugeVec,
        shard: &str,
    ) -> Self {
        let items = items
            .into_iter()
            .map(|(id, name, price, received, sold)| {
                let remaining = received.saturating_sub(sold) as i64;
                let gauge = gauges.with_label_values(&[shard, &id]);
                gauge.set(remaining);
                let item = ItemStock {
                    id: id.clone(),
                    name,
                    price,
                    received,
                    remaining: AtomicI64::new(remaining),
                    gauge,
                };
                (id, item)
            })
            .collect();
        Self {
            items,
            confirmed: RwLock::new(confirmed),
        }
    }

    pub fn item(&self, id: &str) -> Option<&ItemStock> {
        self.items.get(id)
    }

    pub fn ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.items.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// The recorded reply of a confirmed order with this fingerprint, if any.
    pub fn confirmed_reply(
        &self,
        user: &str,
        request_id: &str,
        fingerprint: u64,
    ) -> Option<Vec<u8>> {
        let confirmed = self.confirmed.read().unwrap_or_else(|e| e.into_inner());
        confirmed
            .get(&(user.to_owned(), request_id.to_owned()))
            .filter(|(fp, _)| *fp == fingerprint)
            .map(|(_, body)| body.clone())
    }

    pub fn remember_confirmed(&self, user: &str, request_id: &str, fingerprint: u64, body: &[u8]) {
        let mut confirmed = self.confirmed.write().unwrap_or_else(|e| e.into_inner());
        confirmed.insert(
            (user.to_owned(), request_id.to_owned()),
            (fingerprint, body.to_vec()),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn cache(stock: u64) -> StockCache {
        let gauges = IntGaugeVec::new(
            prometheus::Opts::new("remaining", "units"),
            &["shard", "item"],
        )
        .expect("gauges");
        StockCache::new(
            vec![("hot".into(), "Hot".into(), 100, stock, 0)],
            HashMap::new(),
            &gauges,
            "c1",
        )
    }

    #[test]
    fn concurrent_reservations_never_take_more_than_the_stock() {
        let cache = Arc::new(cache(1_000));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    let item = cache.item("hot").expect("item");
                    (0..1_000)
                        .filter(|i| item.reserve(1 + (i % 3)))
                        .map(|i| 1 + (i % 3))
                        .sum::<u32>()
                })
            })
            .collect();
        let taken: u32 = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        let item = cache.item("hot").expect("item");
        assert!(taken <= 1_000, "took {taken}");
        assert_eq!(u64::from(taken) + item.remaining(), 1_000);
        assert!(
            item.remaining() < 3,
            "only a remainder too small for some orders is left"
        );
    }

    #[test]
    fn released_units_can_be_sold_again() {
        let cache = cache(2);
        let item = cache.item("hot").expect("item");
        assert!(item.reserve(2));
        assert!(item.sold_out());
        assert!(!item.reserve(1));
        item.release(1);
        assert!(!item.sold_out());
        assert!(item.reserve(1));
        assert!(!item.reserve(1));
    }
}
