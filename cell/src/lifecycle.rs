//! A cell process from start to drain, the same for both ledger backends: say it
//! runs, open its own shard (waiting while its standby has it), stand by for
//! others, serve, give leased stock back, drain.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ldc_serve::tls::{Role, Tls};
use ldc_serve::{Accepting, AdminPlane, ServeSettings, serve_ready};
use ldc_topology::{LedgerBackend, Topology};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::CellAdmin;
use crate::cell::Cell;
use crate::error::CellError;
use crate::gz::keeper;
use crate::metrics::ShardMetrics;
use crate::peer::Peer;
use crate::store::Store;
use crate::takeover::{self, Backing, file_locks::OneHost};

/// What a cell serves on, and what it is told while it runs.
#[derive(Debug)]
pub struct Listeners {
    /// Users' requests, from routers.
    pub user: TcpListener,
    /// Other cells' requests: the global zone's items and leases.
    pub peer: TcpListener,
    pub admin: AdminPlane,
    /// Each topology sent here replaces the running one if it moves no slot.
    pub reloads: watch::Receiver<Arc<Topology>>,
    /// This cell's certificate: its user listener then lets in only routers, its
    /// peer listener only cells. `None` in an insecure deployment.
    pub tls: Option<Arc<Tls>>,
}

/// Runs cell `index` of `topology` until `shutdown` resolves, then drains.
pub(crate) async fn run(
    topology: Arc<Topology>,
    index: usize,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CellError> {
    match topology.deploy().ledger.backend {
        LedgerBackend::Embedded => {
            let backing = OneHost::announce(topology.clone(), index).await?;
            run_on(backing, topology, index, listeners, shutdown).await
        }
        #[cfg(feature = "tikv")]
        LedgerBackend::Tikv => tikv(topology, index, listeners, shutdown).await,
        #[cfg(not(feature = "tikv"))]
        LedgerBackend::Tikv => Err(CellError::BackendNotBuilt("tikv")),
    }
}

#[cfg(feature = "tikv")]
async fn tikv(
    topology: Arc<Topology>,
    index: usize,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CellError> {
    use crate::store::tikv::{TikvStore, key_prefix};
    use crate::takeover::store_holds::SharedStore;

    let deploy = topology.deploy();
    let id = &topology.cells()[index].id;
    let prefix = |cell: &str| key_prefix(&deploy.name, cell);
    let timeout = Duration::from_millis(deploy.ledger.op_timeout_ms);
    let (endpoints, commit) = (&deploy.ledger.pd_endpoints, deploy.ledger.commit);
    let client = TikvStore::connect(endpoints, prefix(id), timeout, commit).await?;
    let stores: Vec<TikvStore> = topology
        .cells()
        .iter()
        .map(|cell| client.with_prefix(prefix(&cell.id)))
        .collect();
    let poll = Duration::from_millis(deploy.takeover.poll_ms);
    let backing = SharedStore::new(stores, index, id, deploy.takeover.lease_ms, poll);
    run_on(backing, topology.clone(), index, listeners, shutdown).await
}

/// The lifecycle over `backing`.
async fn run_on<B: Backing>(
    backing: B,
    topology: Arc<Topology>,
    index: usize,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CellError> {
    let metrics = ShardMetrics::register(&listeners.admin.registry)?;
    let mut shutdown = std::pin::pin!(shutdown);
    // Said from the start, so a standby holding the shard hands it back.
    let mut presence = std::pin::pin!(backing.presence());
    let own = tokio::select! {
        own = backing.open_own(&topology, index, &metrics) => own?,
        () = &mut shutdown => return Ok(()),
        () = &mut presence => return Ok(()),
    };
    let cell = Arc::new(Cell::new(
        topology.clone(),
        index,
        own,
        &listeners.admin.registry,
        listeners.tls.clone(),
    )?);
    let poll = Duration::from_millis(topology.deploy().takeover.poll_ms);
    let standby = takeover::stand_by(cell.clone(), backing.witness(), metrics, poll);
    let stopping = async {
        shutdown.await;
        give_back(&cell).await;
    };
    let result = tokio::select! {
        served = serve(cell.clone(), listeners, stopping) => served,
        () = standby => Ok(()),
        lost = backing.keep(cell.clone()) => Err(lost),
        () = presence => Ok(()),
    };
    if result.is_ok() {
        backing.leave(&cell).await;
    }
    result
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
            keeper::give_back(&shard, cell.topologies(), &cell.connector).await;
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
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CellError> {
    let Listeners {
        user,
        peer,
        admin,
        reloads,
        tls,
    } = listeners;
    let topology = cell.topology();
    let deploy = topology.deploy();
    let mut settings = ServeSettings::from_deploy(deploy);
    settings.tls = tls.map(|tls| Accepting {
        tls,
        role: Role::Router,
        handshake_timeout: Duration::from_millis(deploy.timeouts.tls_handshake_timeout_ms),
    });
    tracing::info!(
        cell = %topology.cells()[cell.index()].id,
        slots = topology.slots_per_cell()[cell.index()],
        items = cell.own().stock.ids().len(),
        epoch = cell.own().epoch,
        "ready"
    );
    let routes = CellAdmin(cell.clone());
    serve_ready(
        (user, cell.clone()),
        Some((peer, Arc::new(Peer(cell.clone())))),
        (admin, routes),
        settings,
        reloads,
        |next| cell.reload(next),
        shutdown,
    )
    .await;
    Ok(())
}
