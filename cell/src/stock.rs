//! The stock cache: each item's remaining units at this cell, in memory.
//!
//! The remaining-units counter is the sold-out flag: an order first reads it (one
//! atomic load, no lock, no ledger), and only a positive count lets it try to
//! deduct, atomically, before the ledger commits. Units deducted for an order that
//! then fails are given back. The ledger's stock record checks every deduction again,
//! so the cache can make a buyer wait or fail fast but never oversell.
//!
//! With a global zone, the counter is refilled by leases: an order that takes it
//! below the low-water mark wakes the shard's lease keeper, and a buyer who finds no
//! unit left waits for the refill unless the global zone said none is left anywhere.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use arc_swap::ArcSwap;
use bytes::Bytes;
use prometheus::{IntGauge, IntGaugeVec};
use tokio::sync::Notify;

use crate::ledger::Stock;

/// One item at this cell.
#[derive(Debug)]
pub struct ItemStock {
    pub id: String,
    pub name: String,
    /// Price per unit, in minor units.
    pub price: i64,
    /// Units this cell received: its static share, or leased net of returns.
    received: AtomicU64,
    remaining: AtomicI64,
    /// At or below this many units left, an order wakes the lease keeper.
    low_water: AtomicI64,
    /// The global zone's last word: no unit left to lease.
    exhausted: AtomicBool,
    /// The sale is closed: nothing more is sold here.
    closed: AtomicBool,
    /// The lease recorded in the ledger and not finished yet: (seq, units).
    pending: Mutex<Option<(u64, i64)>>,
    /// Woken when a lease lands or the item's state changes.
    pub refilled: Notify,
    /// The shard's lease keeper, woken when the low-water mark is crossed.
    keeper: Arc<Notify>,
    /// The 409 `sold_out` body for none left, built at the first sell-out.
    pub sold_out_body: OnceLock<Bytes>,
    /// Orders that found too few units here: demand the keeper and, through it,
    /// the global zone hear of.
    unmet: AtomicU64,
    gauge: IntGauge,
}

impl ItemStock {
    fn new((id, name, price, stock): ItemRecord, keeper: Arc<Notify>, gauge: IntGauge) -> Self {
        let remaining = stock.left() as i64;
        gauge.set(remaining);
        Self {
            id,
            name,
            price,
            received: AtomicU64::new(stock.received),
            remaining: AtomicI64::new(remaining),
            low_water: AtomicI64::new(0),
            exhausted: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            pending: Mutex::new(stock.pending.map(|p| (p.seq, p.units))),
            refilled: Notify::new(),
            keeper,
            sold_out_body: OnceLock::new(),
            unmet: AtomicU64::new(0),
            gauge,
        }
    }

    /// The sold-out flag: no unit left at this cell.
    #[inline]
    pub fn sold_out(&self) -> bool {
        self.remaining.load(Ordering::Acquire) <= 0
    }

    pub fn remaining(&self) -> u64 {
        self.remaining.load(Ordering::Acquire).max(0) as u64
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Acquire)
    }

    /// No unit is left here nor to lease: a buyer is answered at once.
    pub fn exhausted(&self) -> bool {
        self.exhausted.load(Ordering::Acquire)
    }

    pub fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Records what the global zone says about the item; wakes waiting buyers when
    /// that ends their wait.
    pub fn set_global(&self, available: u64, closed: bool) {
        let exhausted = available == 0 || closed;
        let was = self.exhausted.swap(exhausted, Ordering::AcqRel);
        let was_closed = self.closed.swap(closed, Ordering::AcqRel);
        if exhausted != was || closed != was_closed {
            self.refilled.notify_waiters();
        }
    }

    /// Counts an order that found too few units, and wakes the keeper if a lease
    /// could help (a flood of buyers after a sell-out everywhere wakes nobody).
    pub fn unmet_order(&self) {
        self.unmet.fetch_add(1, Ordering::Relaxed);
        if !self.exhausted() {
            self.keeper.notify_one();
        }
    }

    pub fn unmet(&self) -> u64 {
        self.unmet.load(Ordering::Relaxed)
    }

    pub fn set_low_water(&self, units: u64) {
        self.low_water.store(units as i64, Ordering::Release);
    }

    /// Whether the units left are at or below the low-water mark.
    pub fn low(&self) -> bool {
        self.remaining.load(Ordering::Acquire) <= self.low_water.load(Ordering::Acquire)
    }

    pub fn pending(&self) -> Option<(u64, i64)> {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_pending(&self, pending: Option<(u64, i64)>) {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = pending;
    }

    /// Adds the units of a finished lease and wakes the buyers waiting for them.
    pub fn add_leased(&self, units: u64) {
        self.received.fetch_add(units, Ordering::AcqRel);
        self.release_units(units);
    }

    /// Takes every unit left off sale, to give them back; returns how many.
    pub fn take_all(&self) -> u64 {
        let before = self.remaining.swap(0, Ordering::AcqRel).max(0);
        self.gauge.set(0);
        before as u64
    }

    /// After a return: the units left the cell for good.
    pub fn returned(&self, units: u64) {
        self.received.fetch_sub(units, Ordering::AcqRel);
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
                if before - quantity <= self.low_water.load(Ordering::Relaxed) {
                    self.keeper.notify_one();
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Gives back units of an order that did not go through.
    pub fn release(&self, quantity: u32) {
        self.release_units(u64::from(quantity));
    }

    /// Puts `units` back on sale, waking buyers waiting for some.
    pub fn release_units(&self, units: u64) {
        let units = units as i64;
        let now = self.remaining.fetch_add(units, Ordering::AcqRel) + units;
        self.gauge.set(now);
        if now > 0 && now - units <= 0 {
            self.refilled.notify_waiters();
        }
    }
}

/// Confirmed orders by user, then request id: fingerprint and reply. Lets a retry of
/// a confirmed order get its first outcome even once the item is sold out, without
/// touching the ledger (or allocating a key). Bounded by the units this cell sells.
type Confirmed = HashMap<String, HashMap<String, (u64, Vec<u8>)>>;

/// An item as the stock cache is given it: id, name, price, and its ledger record.
pub type ItemRecord = (String, String, i64, Stock);

#[derive(Debug)]
pub struct StockCache {
    /// Grows when the global zone announces a new item; never shrinks.
    items: ArcSwap<HashMap<String, Arc<ItemStock>>>,
    confirmed: RwLock<Confirmed>,
    gauges: IntGaugeVec,
    shard: String,
    /// Wakes the shard's lease keeper (an order went below the low-water mark).
    pub wake: Arc<Notify>,
    /// Held by whoever works the shard's leases (its keeper, or the give-back at
    /// shutdown), so two never record answers to one lease.
    pub keeping: tokio::sync::Mutex<()>,
    /// Set on a graceful stop, once the shard's units were given back.
    keeping_stopped: AtomicBool,
}

impl StockCache {
    /// `items` as the ledger recorded them. `gauges` is `ldc_cell_stock_remaining`,
    /// labelled by shard and item.
    pub fn new(
        items: Vec<ItemRecord>,
        confirmed: impl IntoIterator<Item = ((String, String), (u64, Vec<u8>))>,
        gauges: &IntGaugeVec,
        shard: &str,
    ) -> Self {
        let cache = Self {
            items: ArcSwap::default(),
            confirmed: RwLock::default(),
            gauges: gauges.clone(),
            shard: shard.to_owned(),
            wake: Arc::default(),
            keeping: tokio::sync::Mutex::new(()),
            keeping_stopped: AtomicBool::new(false),
        };
        for item in items {
            cache.add(item);
        }
        for ((user, request_id), (fingerprint, body)) in confirmed {
            cache.remember_confirmed(&user, &request_id, fingerprint, &body);
        }
        cache
    }

    /// No more leases for this shard: it is giving its units back and stopping.
    /// Buyers waiting for a lease are woken to hear so.
    pub fn stop_keeping(&self) {
        self.keeping_stopped.store(true, Ordering::Release);
        for item in self.items() {
            item.refilled.notify_waiters();
        }
    }

    pub fn keeping_stopped(&self) -> bool {
        self.keeping_stopped.load(Ordering::Acquire)
    }

    /// Adds an item unless one with its id is there already.
    pub fn add(&self, record: ItemRecord) {
        let id = record.0.clone();
        if self.items.load().contains_key(&id) {
            return;
        }
        let gauge = self.gauges.with_label_values(&[&self.shard, &id]);
        let item = Arc::new(ItemStock::new(record, self.wake.clone(), gauge));
        self.items.rcu(|items| {
            let mut items = HashMap::clone(items);
            items.entry(id.clone()).or_insert_with(|| item.clone());
            items
        });
    }

    pub fn item(&self, id: &str) -> Option<Arc<ItemStock>> {
        self.items.load().get(id).cloned()
    }

    /// Every item, ordered by id.
    pub fn items(&self) -> Vec<Arc<ItemStock>> {
        let mut items: Vec<_> = self.items.load().values().cloned().collect();
        items.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        items
    }

    pub fn ids(&self) -> Vec<String> {
        self.items().iter().map(|item| item.id.clone()).collect()
    }

    /// The recorded reply of a confirmed order with this fingerprint, if any.
    /// `fingerprint` is computed only when the request id was confirmed.
    pub fn confirmed_reply(
        &self,
        user: &str,
        request_id: &str,
        fingerprint: impl FnOnce() -> u64,
    ) -> Option<Vec<u8>> {
        let confirmed = self.confirmed.read().unwrap_or_else(|e| e.into_inner());
        confirmed
            .get(user)
            .and_then(|requests| requests.get(request_id))
            .filter(|(fp, _)| *fp == fingerprint())
            .map(|(_, body)| body.clone())
    }

    pub fn remember_confirmed(&self, user: &str, request_id: &str, fingerprint: u64, body: &[u8]) {
        let mut confirmed = self.confirmed.write().unwrap_or_else(|e| e.into_inner());
        confirmed
            .entry(user.to_owned())
            .or_default()
            .insert(request_id.to_owned(), (fingerprint, body.to_vec()));
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
            vec![(
                "hot".into(),
                "Hot".into(),
                100,
                Stock {
                    received: stock,
                    ..Stock::default()
                },
            )],
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
    fn leased_units_refill_and_a_return_takes_them_off_sale() {
        let cache = cache(0);
        let item = cache.item("hot").expect("item");
        item.set_low_water(5);
        assert!(item.sold_out() && item.low());
        item.add_leased(8);
        assert_eq!((item.remaining(), item.received()), (8, 8));
        assert!(item.reserve(2) && !item.low());
        assert!(
            item.reserve(1) && item.low(),
            "5 left: at the low-water mark"
        );
        assert_eq!(item.take_all(), 5);
        assert!(item.sold_out());
        item.returned(5);
        assert_eq!(item.received(), 3);
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
