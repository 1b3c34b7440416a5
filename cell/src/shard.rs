//! A shard: the slots one cell owns by placement, with their ledger store, group
//! committer and stock cache. A cell serves its own shard and, after a takeover, the
//! shard of a dead cell it stands by for; a shard moves between processes whole.

use std::sync::Arc;
use std::time::Duration;

use ldc_topology::Topology;

use crate::committer::{CommitMetrics, Committer, Fence, OnCommit, Settings, Stopped};
use crate::error::CellError;
use crate::ledger::{self, Command, Write};
use crate::metrics::ShardMetrics;
use crate::stock::StockCache;
use crate::store::{Store, Transaction};

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
    /// sold, and starts the group committer behind the new epoch. With `hold_ms` (a
    /// shared store), also takes the shard's hold for that long: refused with
    /// [`StoreError::Held`](crate::store::StoreError::Held) while another cell's runs.
    pub async fn open(
        topology: &Topology,
        cell: usize,
        owner: &str,
        store: S,
        hold_ms: Option<u64>,
        metrics: &ShardMetrics,
    ) -> Result<Self, CellError> {
        let deploy = topology.deploy();
        let shard_id = topology.cells()[cell].id.as_str();
        let leased = topology.global_zone().is_some();
        let now_ms = match hold_ms {
            Some(_) => store.clock_ms().await?,
            None => 0,
        };
        let mut txn = store.begin().await?;
        let epoch = ledger::claim(&mut txn, owner, topology.placement().epoch()).await?;
        if let Some(hold_ms) = hold_ms {
            let until_ms = now_ms.saturating_add(hold_ms);
            if let Err(err) = ledger::hold::take(&mut txn, owner, epoch, now_ms, until_ms).await {
                txn.rollback().await?;
                return Err(err.into());
            }
        }
        let mut items = Vec::with_capacity(deploy.items.len());
        for item in &deploy.items {
            let price = item.price as i64;
            if leased {
                if topology.global_zone() == Some(cell) {
                    seed_global_item(&mut txn, item).await?;
                }
                continue;
            }
            let share = topology.stock_shares(item.stock)[cell];
            let stock = ledger::receive_stock(&mut txn, &item.id, share).await?;
            items.push((item.id.clone(), item.name.clone(), price, stock));
        }
        txn.commit().await?;
        let mut snapshot = store.snapshot().await?;
        if leased {
            // Items from the deploy file and items leased since (created at runtime).
            let mut known: Vec<(String, ledger::ItemMeta)> = deploy
                .items
                .iter()
                .map(|item| {
                    let meta = ledger::ItemMeta {
                        name: item.name.clone(),
                        price: item.price as i64,
                    };
                    (item.id.clone(), meta)
                })
                .collect();
            for (id, meta) in ledger::item_metas(&mut snapshot).await? {
                if !known.iter().any(|(known, _)| *known == id) {
                    known.push((id, meta));
                }
            }
            for (id, meta) in known {
                let stock = ledger::stock(&mut snapshot, &id).await?;
                items.push((id, meta.name, meta.price, stock));
            }
        }
        let confirmed = ledger::confirmed_orders(&mut snapshot).await?;
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
    /// The metrics this shard records to.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.metrics
    }

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

/// Creates a deploy file's item in the global zone the first time; the global
/// zone's record wins over a later edit of the file.
async fn seed_global_item<T: Transaction>(
    txn: &mut T,
    item: &ldc_topology::ItemConf,
) -> Result<(), CellError> {
    let create = Write::Stock(ledger::StockWrite::Create {
        item_id: item.id.clone(),
        name: item.name.clone(),
        price: item.price as i64,
        stock: item.stock,
    });
    let reply = ledger::apply(txn, &create, 0).await?;
    if reply.status == http::StatusCode::CONFLICT {
        tracing::warn!(
            item = %item.id,
            recorded = %String::from_utf8_lossy(&reply.body),
            "the global zone keeps the item as first recorded; the deploy file's settings differ"
        );
    }
    Ok(())
}

/// Settles stock reservations once their batch is durable (or failed): a confirmed
/// order is remembered for sold-out replays; any other outcome gives its units back.
fn settle_orders(stock: Arc<StockCache>) -> OnCommit {
    Arc::new(move |write, reply| {
        let Write::User(request) = write else {
            return;
        };
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
