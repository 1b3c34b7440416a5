//! A cell: one process that owns a set of slots and serves their users: accounts,
//! transfers and flash-sale orders, over its own stock cache and ledger.
//!
//! A cell trusts no router: every request names a user, and a user whose slot this
//! cell does not own at the current epoch is refused with 421 and the owner's name,
//! so a stale router can never make two cells write for one slot.

mod api;
pub mod committer;
mod error;
pub mod ledger;
mod stock;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ldc_serve::{AdminRoutes, Body, Phase, ServeSettings, json, phase_channel, serve_with_admin};
use ldc_topology::{LedgerBackend, Topology};
use prometheus::Registry;
use serde_json::json as value;
use tokio::net::TcpListener;

pub use api::{Cell, ROUTES};
use committer::{Committer, OnCommit, Settings};
pub use error::CellError;
use ledger::Command;
use stock::StockCache;
use store::{EmbeddedStore, Store, TikvStore, Transaction};

/// Runs cell `id` of `topology` on the given listeners until `shutdown` resolves,
/// then drains. Opens and recovers the ledger before it reports ready.
pub async fn run(
    topology: Arc<Topology>,
    id: &str,
    listener: TcpListener,
    admin: TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CellError> {
    let index = topology
        .cell_index(id)
        .ok_or_else(|| CellError::UnknownCell(id.to_owned()))?;
    let ledger = &topology.deploy().ledger;
    match ledger.backend {
        LedgerBackend::Embedded => {
            let store = EmbeddedStore::open(&topology.cells()[index].data_dir)?;
            let cell = open(topology, index, store, &registry).await?;
            serve(cell, listener, admin, registry, shutdown).await
        }
        LedgerBackend::Tikv => {
            let prefix = store::tikv::key_prefix(&topology.deploy().name, id);
            let timeout = Duration::from_millis(ledger.op_timeout_ms);
            let store = TikvStore::connect(&ledger.pd_endpoints, prefix, timeout).await?;
            let cell = open(topology, index, store, &registry).await?;
            serve(cell, listener, admin, registry, shutdown).await
        }
    }
}

/// Serves a recovered cell until `shutdown` resolves, then drains.
async fn serve<S: Store>(
    cell: Cell<S>,
    listener: TcpListener,
    admin: TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CellError> {
    let cell = Arc::new(cell);
    let topology = cell.topology().clone();
    let settings = ServeSettings::from_deploy(topology.deploy());
    let (phase, _) = phase_channel();
    phase.send_replace(Phase::Ready);
    tracing::info!(
        cell = %topology.cells()[cell.index()].id,
        slots = topology.slots_per_cell()[cell.index()],
        items = cell.stock().ids().len(),
        "ready"
    );
    let routes = CellAdmin(cell.clone());
    serve_with_admin(
        (listener, cell),
        (admin, registry, routes),
        phase,
        settings,
        shutdown,
    )
    .await;
    Ok(())
}

/// Recovers a cell's state from its store: records each item's stock share the
/// first time, rebuilds the stock cache from what the ledger says was received and
/// sold, and starts the group committer.
pub async fn open<S: Store + Clone>(
    topology: Arc<Topology>,
    index: usize,
    store: S,
    registry: &Registry,
) -> Result<Cell<S>, CellError> {
    let deploy = topology.deploy();
    let mut txn = store.begin().await?;
    let mut items = Vec::with_capacity(deploy.items.len());
    for item in &deploy.items {
        let share = topology.stock_shares(item.stock)[index];
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
    let stock = Arc::new(StockCache::new(items, confirmed, registry)?);
    let on_commit: OnCommit = {
        let stock = stock.clone();
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
    };
    let settings = Settings {
        conflict_retries: deploy.ledger.conflict_retries,
        batch_max: deploy.ledger.batch_max as usize,
        batch_wait: Duration::from_micros(deploy.ledger.batch_wait_us),
        queue_capacity: deploy.ledger.queue_capacity as usize,
    };
    let committer = Committer::start(store.clone(), settings, registry, on_commit)?;
    Cell::new(topology, index, store, committer, stock, registry)
}

/// `/admin/topology` and `/admin/audit`.
struct CellAdmin<S>(Arc<Cell<S>>);

impl<S: Store> AdminRoutes for CellAdmin<S> {
    async fn get(&self, path: &str) -> Option<http::Response<Body>> {
        match path {
            "/admin/topology" => Some(json(http::StatusCode::OK, &self.0.topology().summary())),
            "/admin/audit" => Some(self.audit().await),
            _ => None,
        }
    }
}

impl<S: Store> CellAdmin<S> {
    /// The ledger's books recomputed from every record, next to the stock cache.
    async fn audit(&self) -> http::Response<Body> {
        let cell = &self.0;
        let ids = cell.stock().ids();
        let audited = async {
            let mut snapshot = cell.store().snapshot().await?;
            ledger::audit(&mut snapshot, &ids).await
        };
        match audited.await {
            Ok(audit) => {
                let cache: serde_json::Map<String, serde_json::Value> = ids
                    .iter()
                    .filter_map(|id| cell.stock().item(id))
                    .map(|item| (item.id.clone(), value!(item.remaining())))
                    .collect();
                json(
                    http::StatusCode::OK,
                    &value!({"ledger": audit, "cache_remaining": cache}),
                )
            }
            Err(err) => ldc_serve::json_error(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "ledger_unavailable",
                err.to_string(),
                [],
            ),
        }
    }
}
