//! The lease keeper: one task per shard that keeps the shard's stock cache supplied
//! from the global zone. It leases a chunk when an item falls to its low-water mark,
//! finishes leases a crash left pending, learns new items, sold-out-everywhere and
//! closed sales by polling, and gives unused units back when a sale closes.
//!
//! Polling rather than push: the global zone needs no list of live cells, a cell
//! that was down catches up with its first poll, and the news it carries (a new
//! item, units back in the global account) is never needed faster than a poll
//! interval; selling from the local quota never waits for it.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ldc_serve::Connector;
use ldc_topology::{GlobalZoneConf, Topology};
use serde::Deserialize;

use super::client::Client;
use super::wire::{Lease, recall_window};
use crate::ledger::{ItemMeta, Stock, StockWrite, Write};
use crate::metrics::KeeperMetrics;
use crate::shard::Shard;
use crate::stock::{ItemStock, StockCache};
use crate::store::Store;

/// A chunk lasting `horizon` at `rate` units per second, within `min..=max`.
pub fn chunk_size(rate: f64, horizon: Duration, min: u64, max: u64) -> u64 {
    let wanted = (rate * horizon.as_secs_f64()).ceil();
    (wanted.clamp(0.0, max as f64) as u64).clamp(min, max)
}

/// Shortest window a rate of sale is measured over.
const RATE_WINDOW: Duration = Duration::from_millis(100);

/// An item's rate of sale at this shard, smoothed.
#[derive(Debug)]
struct Demand {
    since: Instant,
    taken: u64,
    rate: f64,
    /// The last chunk asked for.
    last_chunk: u64,
    /// Units taken at the last poll: unchanged means no sale in between.
    taken_at_poll: u64,
    /// Unmet orders at the last poll: more now means demand the global zone
    /// should hear of.
    unmet_at_poll: u64,
    /// After units were recalled: (taken, unmet) then. No lease until either
    /// grows, so recalled units are not leased straight back.
    held_back: Option<(u64, u64)>,
    /// When this shard last told the global zone it wanted more of the item: a
    /// recall then is for its sake, not from it.
    wanted_at: Option<Instant>,
}

/// Starts `shard`'s lease keeper, if the deployment has a global zone. It ends by
/// itself once the shard is dropped.
pub fn start<S: Store + 'static>(
    shard: &Arc<Shard<S>>,
    topology: &Arc<ArcSwap<Topology>>,
    connector: &Connector,
) {
    let metrics = shard.metrics().keeper.clone();
    if let Some(keeper) = Keeper::new(topology, shard.cell, metrics, connector) {
        tokio::spawn(keeper.run(Arc::downgrade(shard), shard.stock.clone()));
    }
}

/// Gives every unit of `shard`'s leased stock back to the global zone (graceful
/// shutdown); what cannot be given back stays recorded at the shard.
pub async fn give_back<S: Store>(
    shard: &Shard<S>,
    topology: &Arc<ArcSwap<Topology>>,
    connector: &Connector,
) {
    let metrics = shard.metrics().keeper.clone();
    if let Some(mut keeper) = Keeper::new(topology, shard.cell, metrics, connector) {
        keeper.give_back(shard).await;
    }
}

/// A lease the ledger recorded: its number and units.
#[derive(Debug, Deserialize)]
struct Recorded {
    seq: u64,
    units: i64,
}

struct Keeper {
    client: Client,
    settings: GlobalZoneConf,
    /// The shard's cell: leases are numbered per (item, shard), whoever serves it.
    shard_id: String,
    demand: HashMap<String, Demand>,
    /// No call to the global zone before this, after one failed.
    quiet_until: Option<Instant>,
    metrics: KeeperMetrics,
}

impl Keeper {
    /// The keeper of `shard`, if the deployment has a global zone.
    fn new(
        topologies: &Arc<ArcSwap<Topology>>,
        shard_cell: usize,
        metrics: KeeperMetrics,
        connector: &Connector,
    ) -> Option<Self> {
        let topology = topologies.load();
        let gz = topology.global_zone()?;
        let settings = topology.deploy().global_zone.clone()?;
        let timeout = Duration::from_millis(settings.request_timeout_ms);
        Some(Self {
            client: Client::new(topologies.clone(), gz, timeout, connector.clone()),
            settings,
            shard_id: topology.cells()[shard_cell].id.clone(),
            demand: HashMap::new(),
            quiet_until: None,
            metrics,
        })
    }

    /// Keeps `shard` supplied until it is dropped (released to its owner, or the
    /// process ends). Holds it only while it works, never while it waits.
    async fn run<S: Store>(mut self, shard: Weak<Shard<S>>, stock: Arc<StockCache>) {
        let poll = Duration::from_millis(self.settings.poll_ms);
        let mut next_poll = Instant::now();
        loop {
            let Some(shard) = shard.upgrade() else {
                return;
            };
            if self.client.addresses().is_empty() {
                drop(shard);
                tokio::time::sleep(poll).await;
                continue;
            }
            let keeping = stock.keeping.lock().await;
            if stock.keeping_stopped() {
                return;
            }
            if Instant::now() >= next_poll {
                for idle in self.poll(&stock).await {
                    self.give_back_item(&shard, &idle).await;
                }
                next_poll = Instant::now() + poll;
            }
            for item in stock.items() {
                self.keep(&shard, &item).await;
            }
            drop((keeping, shard));
            tokio::select! {
                () = stock.wake.notified() => {}
                () = tokio::time::sleep_until(next_poll.into()) => {}
            }
        }
    }

    /// Gives back every unit the shard holds, as on a closed sale (graceful
    /// shutdown): units stay at this cell, durable, when the global zone is out of
    /// reach.
    async fn give_back<S: Store>(&mut self, shard: &Shard<S>) {
        let _keeping = shard.stock.keeping.lock().await;
        // The running keeper stops at its next turn instead of leasing again.
        shard.stock.stop_keeping();
        for item in shard.stock.items() {
            if let Some((seq, units)) = item.pending() {
                self.finish(shard, &item, seq, units).await;
            }
            self.give_back_item(shard, &item).await;
        }
    }

    fn quiet(&self) -> bool {
        self.quiet_until.is_some_and(|until| Instant::now() < until)
    }

    fn failed(&mut self, what: &str, cause: &str) {
        self.metrics
            .leases
            .with_label_values(&[&self.shard_id, "failed"])
            .inc();
        if !self.quiet() {
            tracing::warn!(shard = %self.shard_id, %cause, "{what} failed; retrying");
        }
        self.quiet_until = Some(Instant::now() + Duration::from_millis(self.settings.poll_ms));
    }

    /// Reads the global zone's items into the stock cache; returns the items
    /// recalled that this shard holds and sold none of since the last poll.
    async fn poll(&mut self, stock: &StockCache) -> Vec<Arc<ItemStock>> {
        let mut wanting = Vec::new();
        for item in stock.items() {
            if let Some(demand) = self.demand.get_mut(&item.id) {
                let unmet = item.unmet();
                if unmet > demand.unmet_at_poll {
                    wanting.push(item.id.clone());
                    demand.wanted_at = Some(Instant::now());
                }
                demand.unmet_at_poll = unmet;
            }
        }
        let items = match self.client.items(&wanting).await {
            Ok(items) => items,
            Err(cause) => {
                self.failed("polling the global zone", &cause);
                return Vec::new();
            }
        };
        let window = recall_window(self.settings.poll_ms);
        let mut idle = Vec::new();
        for state in items {
            stock.add((
                state.item_id.clone(),
                state.name,
                state.price,
                Stock::default(),
            ));
            let Some(item) = stock.item(&state.item_id) else {
                continue;
            };
            item.set_global(state.available, state.closed);
            let taken = item.received().saturating_sub(item.remaining());
            if let Some(demand) = self.demand.get_mut(&item.id) {
                let unsold = demand.taken_at_poll == taken;
                demand.taken_at_poll = taken;
                let wanting_here = demand.wanted_at.is_some_and(|at| at.elapsed() < window);
                if state.recall == Some(true)
                    && unsold
                    && !wanting_here
                    && item.remaining() > 0
                    && item.pending().is_none()
                {
                    demand.held_back = Some((taken, item.unmet()));
                    idle.push(item);
                }
            }
        }
        idle
    }

    async fn keep<S: Store>(&mut self, shard: &Shard<S>, item: &ItemStock) {
        if let Some((seq, units)) = item.pending() {
            if !self.quiet() {
                self.finish(shard, item, seq, units).await;
            }
            return;
        }
        if item.closed() {
            self.give_back_item(shard, item).await;
            return;
        }
        let chunk = self.chunk(item);
        item.set_low_water(chunk / 2);
        if item.exhausted() || !item.low() || self.quiet() || self.held_back(item) {
            return;
        }
        if let Some(demand) = self.demand.get_mut(&item.id) {
            demand.last_chunk = chunk;
        }
        if let Some((seq, units)) = self.begin(shard, item, chunk as i64).await {
            self.finish(shard, item, seq, units).await;
        }
    }

    /// Whether `item`'s units were recalled and nobody has wanted it here since.
    fn held_back(&mut self, item: &ItemStock) -> bool {
        let Some(demand) = self.demand.get_mut(&item.id) else {
            return false;
        };
        let now = (
            item.received().saturating_sub(item.remaining()),
            item.unmet(),
        );
        match demand.held_back {
            Some(then) if then == now => true,
            _ => {
                demand.held_back = None;
                false
            }
        }
    }

    /// The next chunk for `item`: its rate of sale over the lease horizon, doubled
    /// from the last one when the cell ran dry (buyers waiting hide the demand).
    fn chunk(&mut self, item: &ItemStock) -> u64 {
        let taken = item.received().saturating_sub(item.remaining());
        let now = Instant::now();
        let demand = self.demand.entry(item.id.clone()).or_insert(Demand {
            since: now,
            taken,
            rate: 0.0,
            last_chunk: 0,
            taken_at_poll: taken,
            unmet_at_poll: item.unmet(),
            held_back: None,
            wanted_at: None,
        });
        let elapsed = now.duration_since(demand.since);
        if elapsed >= RATE_WINDOW {
            let rate = taken.saturating_sub(demand.taken) as f64 / elapsed.as_secs_f64();
            demand.rate = if demand.rate == 0.0 {
                rate
            } else {
                (demand.rate + rate) / 2.0
            };
            demand.since = now;
            demand.taken = taken;
        }
        let settings = &self.settings;
        let horizon = Duration::from_millis(settings.lease_horizon_ms);
        let by_rate = chunk_size(demand.rate, horizon, settings.lease_min, settings.lease_max);
        if item.sold_out() {
            by_rate.max(demand.last_chunk.saturating_mul(2).min(settings.lease_max))
        } else {
            by_rate
        }
    }

    async fn give_back_item<S: Store>(&mut self, shard: &Shard<S>, item: &ItemStock) {
        if item.pending().is_some() {
            // That lease first; its answer may be units this cell must hold.
            return;
        }
        let units = item.take_all();
        if units == 0 {
            return;
        }
        match self.begin(shard, item, -(units as i64)).await {
            Some((seq, units)) => self.finish(shard, item, seq, units).await,
            None => item.release_units(units),
        }
    }

    /// Records lease `units` in the shard's ledger and returns its number, or
    /// `None` when it was not recorded (another lease is pending: the cache learns
    /// of it, and it is finished first).
    async fn begin<S: Store>(
        &mut self,
        shard: &Shard<S>,
        item: &ItemStock,
        units: i64,
    ) -> Option<(u64, i64)> {
        let meta = ItemMeta {
            name: item.name.clone(),
            price: item.price,
        };
        let write = Write::Stock(StockWrite::Begin {
            item_id: item.id.clone(),
            meta,
            units,
        });
        let reply = match shard.committer.submit(write).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(err)) => {
                self.failed("recording a lease", &err.to_string());
                // The commit may have landed all the same: the ledger says.
                return self.recorded(shard, item, units).await;
            }
            Err(err) => {
                self.failed("recording a lease", &format!("{err:?}"));
                return None;
            }
        };
        if !reply.status.is_success() {
            tracing::warn!(item = %item.id, body = %String::from_utf8_lossy(&reply.body), "lease not recorded");
            return None;
        }
        let recorded: Recorded = serde_json::from_slice(&reply.body).ok()?;
        item.set_pending(Some((recorded.seq, recorded.units)));
        reply.applied.then_some((recorded.seq, recorded.units))
    }

    /// After a `Begin` whose outcome is unknown: the lease the ledger has pending,
    /// if it is one of `units`; any other pending lease goes to the cache.
    async fn recorded<S: Store>(
        &mut self,
        shard: &Shard<S>,
        item: &ItemStock,
        units: i64,
    ) -> Option<(u64, i64)> {
        let mut snapshot = shard.store.snapshot().await.ok()?;
        let pending = crate::ledger::stock(&mut snapshot, &item.id)
            .await
            .ok()?
            .pending?;
        item.set_pending(Some((pending.seq, pending.units)));
        (pending.units == units).then_some((pending.seq, pending.units))
    }

    /// Asks the global zone for lease `seq` (again, after a crash: it answers the
    /// same) and records its answer.
    async fn finish<S: Store>(&mut self, shard: &Shard<S>, item: &ItemStock, seq: u64, units: i64) {
        let started = Instant::now();
        let answer = self
            .client
            .lease(&Lease {
                item_id: item.id.clone(),
                cell: self.shard_id.clone(),
                seq,
                units,
            })
            .await;
        self.metrics
            .lease_seconds
            .with_label_values(&[&self.shard_id])
            .observe(started.elapsed().as_secs_f64());
        let answer = match answer {
            Ok(answer) => answer,
            Err(cause) => return self.failed("a lease", &cause),
        };
        let write = Write::Stock(StockWrite::Finish {
            item_id: item.id.clone(),
            seq,
            units: answer.units.unwrap_or(0),
        });
        match shard.committer.submit(write).await {
            // Recorded now, or by an earlier `Finish` whose commit was reported
            // failed but landed: the cache still has it pending either way (one
            // keeper works a shard at a time, and a restart rebuilds the cache from
            // the ledger), so its units go to the cache now.
            Ok(Ok(reply)) if reply.status.is_success() => {}
            Ok(Ok(reply)) => {
                tracing::error!(item = %item.id, seq, body = %String::from_utf8_lossy(&reply.body), "the ledger refused a lease answer");
                return self.failed("recording a lease answer", "refused");
            }
            Ok(Err(err)) => return self.failed("recording a lease answer", &err.to_string()),
            Err(err) => return self.failed("recording a lease answer", &format!("{err:?}")),
        }
        item.set_pending(None);
        self.quiet_until = None;
        let outcome = match answer.units.unwrap_or(0) {
            0 => "empty",
            n if n > 0 => {
                item.add_leased(n as u64);
                "granted"
            }
            n => {
                item.returned(n.unsigned_abs());
                "returned"
            }
        };
        self.metrics
            .leases
            .with_label_values(&[&self.shard_id, outcome])
            .inc();
        item.set_global(answer.available, answer.closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_the_rate_of_sale_within_bounds() {
        let second = Duration::from_secs(1);
        assert_eq!(
            chunk_size(0.0, second, 10, 1_000),
            10,
            "no demand: the least"
        );
        assert_eq!(chunk_size(250.0, second, 10, 1_000), 250);
        assert_eq!(chunk_size(250.0, second / 2, 10, 1_000), 125);
        assert_eq!(
            chunk_size(1e9, second, 10, 1_000),
            1_000,
            "never above the most"
        );
    }
}
