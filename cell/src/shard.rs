//! A shard: the slots one cell owns by placement, with their ledger store, group
//! committer and stock cache. A cell serves its own shard and, after a takeover, the
//! shard of a dead cell it stands by for; a shard moves between processes whole.

use std::sync::Arc;
use std::time::Duration;

use ldc_topology::Topology;
use prometheus::{HistogramOpts, HistogramVec, IntGaugeVec, Opts, Registry};

use crate::committer::{CommitMetrics, Committer, Fence, OnCommit, Settings, Stopped};
use crate::error::CellError;
use crate::ledger::{self, Command};
use crate::stock::StockCache;
use crate::store::{Store, Transaction};

/// Metric families labelled by shard, registered once per process. A shard takes
/// its children when opened and [`ShardMetrics::forget`]s them when released.
#[derive(Debug, Clone)]
pub struct ShardMetrics {
    commit_seconds: HistogramVec,
    batch_size: HistogramVec,
    stock_remaining: IntGaugeVec,
    epoch: IntGaugeVec,
}

impl ShardMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let commit_seconds = HistogramVec::new(
            HistogramOpts::new(
                "ldc_ledger_commit_seconds",
                "Time to apply and durably commit one batch",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
            &["shard"],
        )?;
        let batch_size = HistogramVec::new(
            HistogramOpts::new("ldc_ledger_batch_size", "Requests per committed batch")
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 12)?),
            &["shard"],
        )?;
        let stock_remaining = IntGaugeVec::new(
            Opts::new(
                "ldc_cell_stock_remaining",
                "Units of an item a shard can still sell",
            ),
            &["shard", "item"],
        )?;
        let epoch = IntGaugeVec::new(
            Opts::new(
                "ldc_cell_shard_epoch",
                "Ownership epoch of each shard this process serves",
            ),
            &["shard"],
        )?;
        registry.register(Box::new(commit_seconds.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(stock_remaining.clone()))?;
        registry.register(Box::new(epoch.clone()))?;
        Ok(Self {
            commit_seconds,
            batch_size,
            stock_remaining,
            epoch,
        })
    }

    /// Drops the series of a shard this process no longer serves.
    fn forget(&self, shard: &str, items: &[&str]) {
        // A series that was never created is not an error worth a word.
        let _ = self.commit_seconds.remove_label_values(&[shard]);
        let _ = self.batch_size.remove_label_values(&[shard]);
        let _ = self.epoch.remove_label_values(&[shard]);
        for item in items {
            let _ = self.stock_remaining.remove_label_values(&[shard, item]);
        }
    }
}

pub struct Shard<S> {
    /// The cell whose slots these are, by placement (its index in the topology).
    pub cell: usize,
    /// The epoch this process claimed the shard at; the committer writes only at it.
    pub epoch: u64,
    pub store: S,
    pub committer: Committer,
    pub stock: Arc<StockCache>,
    stopped: Stopped,
    metrics: ShardMetrics,
}

impl<S> std::fmt::Debug for Shard<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("cell", &self.cell)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl<S: Store + Clone> Shard<S> {
    /// Opens cell `cell`'s shard from its store for `owner` (the cell itself, or its
    /// standby): claims it at a new epoch, records each item's stock share the first
    /// time, rebuilds the stock cache from what the ledger says was received and
    /// sold, and starts the group committer behind the new epoch.
    pub async fn open(
        topology: &Topology,
        cell: usize,
        owner: &str,
        store: S,
        metrics: &ShardMetrics,
    ) -> Result<Self, CellError> {
        let deploy = topology.deploy();
        let shard_id = topology.cells()[cell].id.as_str();
        let mut txn = store.begin().await?;
        let epoch = ledger::claim(&mut txn, owner, topology.placement().epoch()).await?;
        let mut items = Vec::with_capacity(deploy.items.len());
        for item in &deploy.items {
            let share = topology.stock_shares(item.stock)[cell];
            let (received, sold) = ledger::receive_stock(&mut txn, &item.id, share).await?;
            items.push((
                item.id.clone(),
                item.name.clone(),
                item.price as i64,
                received,
                sold,
            ));
        }
        txn.commit().await?;
        let mut snapshot = store.snapshot().await?;
        let confirmed = ledger::confirmed_orders(&mut snapshot)
            .await?
            .into_iter()
            .collect();
        let stock = Arc::new(StockCache::new(
            items,
            confirmed,
            &metrics.stock_remaining,
            shard_id,
        ));
        let settings = Settings {
            conflict_retries: deploy.ledger.conflict_retries,
            batch_max: deploy.ledger.batch_max as usize,
            batch_wait: Duration::from_micros(deploy.ledger.batch_wait_us),
            queue_capacity: deploy.ledger.queue_capacity as usize,
        };
        let commit_metrics = CommitMetrics {
            commit_seconds: metrics.commit_seconds.with_label_values(&[shard_id]),
            batch_size: metrics.batch_size.with_label_values(&[shard_id]),
        };
        let fence = Fence {
            owner: owner.to_owned(),
            epoch,
        };
        let on_commit = settle_orders(stock.clone());
        let (committer, stopped) =
            Committer::start(store.clone(), settings, commit_metrics, fence, on_commit)?;
        metrics
            .epoch
            .with_label_values(&[shard_id])
            .set(epoch as i64);
        Ok(Self {
            cell,
            epoch,
            store,
            committer,
            stock,
            stopped,
            metrics: metrics.clone(),
        })
    }
}

impl<S> Shard<S> {
    /// Stops the committer after its last batch and waits until its store is
    /// closed. Whoever calls this holds the last reference, so no request can
    /// reach the shard any more.
    pub async fn close(self, topology: &Topology) {
        let Self {
            cell,
            stopped,
            stock,
            metrics,
            committer,
            store,
            ..
        } = self;
        metrics.forget(&topology.cells()[cell].id, &stock.ids());
        drop((committer, store));
        stopped.wait().await;
    }
}

/// Settles stock reservations once their batch is durable (or failed): a confirmed
/// order is remembered for sold-out replays; any other outcome gives its units back.
fn settle_orders(stock: Arc<StockCache>) -> OnCommit {
    Arc::new(move |request, reply| {
        let Command::Order {
            item_id, quantity, ..
        } = &request.command
        else {
            return;
        };
        match reply {
            Some(reply) if reply.applied => stock.remember_confirmed(
                &request.user,
                &request.request_id,
                request.fingerprint(),
                &reply.body,
            ),
            // Refused, replayed or failed: the units reserved for it go back.
            _ => {
                if let Some(item) = stock.item(item_id) {
                    item.release(*quantity);
                }
            }
        }
    })
}
