//! A cell: one process that owns a set of slots and serves their users: accounts,
//! transfers and flash-sale orders, over its own stock cache and ledger.
//!
//! A cell trusts no router: every request names a user, and a user whose slot this
//! cell does not own at the current epoch is refused with 421 and the owner's name,
//! so a stale router can never make two cells write for one slot.

mod api;
pub mod committer;
mod error;
mod keeper;
pub mod ledger;
mod shard;
mod stock;
pub mod store;
mod takeover;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ldc_serve::{
    AdminRoutes, Body, Phase, ServeSettings, json, phase_channel, serve_reloading, serve_with_admin,
};
use ldc_topology::{LedgerBackend, Topology};
use prometheus::Registry;
use serde_json::json as value;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use api::{Cell, ROUTES};
pub use error::CellError;
pub use shard::{Shard, ShardMetrics};
use store::{Store, TikvStore};
use takeover::shared;

/// Runs cell `id` of `topology` on the given listeners until `shutdown` resolves,
/// then drains. Opens and recovers the ledger before it reports ready; with the
/// embedded ledger, it first waits for its standby to hand its shard back, and
/// stands by for the cells that name it their standby.
pub async fn run(
    topology: Arc<Topology>,
    id: &str,
    listener: TcpListener,
    admin: TcpListener,
    registry: Registry,
    reloads: watch::Receiver<Arc<Topology>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CellError> {
    let index = topology
        .cell_index(id)
        .ok_or_else(|| CellError::UnknownCell(id.to_owned()))?;
    let metrics = ShardMetrics::register(&registry)?;
    let mut shutdown = std::pin::pin!(shutdown);
    let deploy = topology.deploy();
    match deploy.ledger.backend {
        LedgerBackend::Embedded => {
            let dir = &topology.cells()[index].data_dir;
            let _presence = takeover::announce(dir).await?;
            let store = tokio::select! {
                store = takeover::open_own(dir) => store?,
                () = &mut shutdown => return Ok(()),
            };
            let own = Shard::open(&topology, index, id, store, None, &metrics).await?;
            let cell = Arc::new(Cell::new(topology.clone(), index, own, &registry)?);
            let poll = Duration::from_millis(deploy.takeover.poll_ms);
            let files = takeover::Files(topology.clone());
            let standby = takeover::stand_by(cell.clone(), files, metrics, poll);
            let stopping = async {
                shutdown.await;
                give_back(&cell).await;
            };
            tokio::select! {
                served = serve(cell.clone(), listener, admin, registry, reloads, stopping) => served,
                () = standby => Ok(()),
            }
        }
        LedgerBackend::Tikv => {
            let prefix = |cell: &str| store::tikv::key_prefix(&deploy.name, cell);
            let timeout = Duration::from_millis(deploy.ledger.op_timeout_ms);
            let (endpoints, commit) = (&deploy.ledger.pd_endpoints, deploy.ledger.commit);
            let client = TikvStore::connect(endpoints, prefix(id), timeout, commit).await?;
            let stores: Vec<TikvStore> = topology
                .cells()
                .iter()
                .map(|cell| client.with_prefix(prefix(&cell.id)))
                .collect();
            let (hold_ms, poll) = (deploy.takeover.lease_ms, deploy.takeover.poll_ms);
            let poll = Duration::from_millis(poll);
            // Said from the start, so a standby holding the shard hands it back.
            let presence = shared::announce(client, hold_ms);
            let mut presence = std::pin::pin!(presence);
            let own = tokio::select! {
                own = shared::open_own(&topology, index, stores[index].clone(), hold_ms, poll, &metrics) => own?,
                () = &mut shutdown => return Ok(()),
                () = &mut presence => return Ok(()),
            };
            let cell = Arc::new(Cell::new(topology.clone(), index, own, &registry)?);
            let records = shared::Records::new(stores, id, hold_ms);
            let standby = takeover::stand_by(cell.clone(), records, metrics, poll);
            let stopping = async {
                shutdown.await;
                give_back(&cell).await;
            };
            let result = tokio::select! {
                served = serve(cell.clone(), listener, admin, registry, reloads, stopping) => served,
                () = standby => Ok(()),
                lost = shared::renew(cell.clone(), hold_ms) => Err(lost),
                () = presence => Ok(()),
            };
            if result.is_ok() {
                shared::leave(&cell).await;
            }
            result
        }
    }
}

/// On a graceful stop, before it drains, every shard this cell serves gives its
/// leased units back to the global zone, within twice its request timeout; what is
/// not given back stays recorded here and is sold after the next start. The
/// listener is still open meanwhile, so the global zone's own host (and others
/// stopping with it) can still be reached.
async fn give_back<S: Store + 'static>(cell: &Cell<S>) {
    let topology = cell.topology();
    let Some(gz) = &topology.deploy().global_zone else {
        return;
    };
    let bound = Duration::from_millis(gz.request_timeout_ms.saturating_mul(2));
    let shards: Vec<_> = std::iter::once(cell.own().clone())
        .chain(cell.taken().iter().cloned())
        .collect();
    let all = async {
        for shard in shards {
            shard.give_back(cell.topologies()).await;
        }
    };
    if tokio::time::timeout(bound, all).await.is_err() {
        tracing::warn!("leased stock not all given back in {bound:?}; it stays at this cell");
    }
}

/// Serves a recovered cell until `shutdown` resolves, then drains, applying the
/// topologies sent on `reloads` meanwhile.
async fn serve<S: Store>(
    cell: Arc<Cell<S>>,
    listener: TcpListener,
    admin: TcpListener,
    registry: Registry,
    reloads: watch::Receiver<Arc<Topology>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CellError> {
    let topology = cell.topology();
    let settings = ServeSettings::from_deploy(topology.deploy());
    let (phase, _) = phase_channel();
    phase.send_replace(Phase::Ready);
    tracing::info!(
        cell = %topology.cells()[cell.index()].id,
        slots = topology.slots_per_cell()[cell.index()],
        items = cell.own().stock.ids().len(),
        epoch = cell.own().epoch,
        "ready"
    );
    let routes = CellAdmin(cell.clone());
    let serving = serve_with_admin(
        (listener, cell.clone()),
        (admin, registry, routes),
        phase,
        settings,
        shutdown,
    );
    serve_reloading(serving, reloads, |next| cell.reload(next)).await;
    Ok(())
}

/// `/admin/topology` and `/admin/audit`, and the shards this cell serves in `/ready`.
struct CellAdmin<S>(Arc<Cell<S>>);

impl<S: Store> AdminRoutes for CellAdmin<S> {
    async fn get(&self, path: &str) -> Option<http::Response<Body>> {
        match path {
            "/admin/topology" => {
                let mut summary = value!(self.0.topology().summary());
                summary["shards"] = self.shards();
                Some(json(http::StatusCode::OK, &summary))
            }
            "/admin/audit" => Some(self.audit().await),
            _ => None,
        }
    }

    async fn write(
        &self,
        method: &http::Method,
        path: &str,
        body: &[u8],
    ) -> Option<http::Response<Body>> {
        self.0.admin_item(method, path, body).await
    }

    fn ready(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::from_iter([("shards".to_owned(), self.shards())])
    }
}

impl<S: Store> CellAdmin<S> {
    /// Every shard this cell serves now, with the epoch it holds it at: what
    /// routers route by.
    fn shards(&self) -> serde_json::Value {
        let cell = &self.0;
        let topology = cell.topology();
        let cells = topology.cells();
        let taken = cell.taken();
        let shards: Vec<serde_json::Value> = std::iter::once(cell.own())
            .chain(taken.iter())
            .map(|shard| value!({"cell": cells[shard.cell].id, "epoch": shard.epoch}))
            .collect();
        serde_json::Value::from(shards)
    }

    /// The ledger's books recomputed from every record, next to the stock cache: the
    /// own shard's at the top, taken-over shards' under `taken_over`.
    async fn audit(&self) -> http::Response<Body> {
        let cell = &self.0;
        let topology = cell.topology();
        let cells = topology.cells();
        let mut report = match audit_shard(cell.own()).await {
            Ok(report) => report,
            Err(err) => return unavailable(&err),
        };
        let mut taken_over = serde_json::Map::new();
        for shard in cell.taken().iter() {
            match audit_shard(shard).await {
                Ok(audit) => taken_over.insert(cells[shard.cell].id.clone(), audit),
                Err(err) => return unavailable(&err),
            };
        }
        report["taken_over"] = serde_json::Value::Object(taken_over);
        if let Ok(shard) = cell.gz_shard() {
            let books = async {
                let mut snapshot = shard.store.snapshot().await?;
                ledger::gz_audit(&mut snapshot).await
            };
            match books.await {
                Ok(books) => report["global_zone"] = books,
                Err(err) => return unavailable(&err),
            }
        }
        json(http::StatusCode::OK, &report)
    }
}

async fn audit_shard<S: Store>(shard: &Shard<S>) -> Result<serde_json::Value, store::StoreError> {
    let ids = shard.stock.ids();
    let mut snapshot = shard.store.snapshot().await?;
    let audit = ledger::audit(&mut snapshot, &ids).await?;
    let cache: serde_json::Map<String, serde_json::Value> = ids
        .iter()
        .filter_map(|id| shard.stock.item(id))
        .map(|item| (item.id.clone(), value!(item.remaining())))
        .collect();
    Ok(value!({"epoch": shard.epoch, "ledger": audit, "cache_remaining": cache}))
}

fn unavailable(err: &store::StoreError) -> http::Response<Body> {
    ldc_serve::json_error(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "ledger_unavailable",
        err.to_string(),
        [],
    )
}
