//! Takeover and failback. A standby's loop ([`stand_by`]) is the same for both
//! backends; a [`Witness`] tells it whether a cell runs and opens its store, and a
//! [`Backing`] gives a cell's lifecycle the rest: saying it runs, opening its own
//! shard, keeping it. On one host the kernel's file locks carry that
//! ([`file_locks`]); over a store every cell shares, records in the store do
//! ([`store_holds`]).
//!
//! A standby polls the cells it stands by for. When one is not running and its
//! ledger is free, the standby opens the ledger, claims it at a higher epoch and
//! serves its slots. When the cell's process is back, the standby stops routing
//! to the shard, lets the requests inside finish, commits their last batch and
//! closes the ledger; the returning cell, waiting all along, then opens it at a
//! higher epoch still.

pub mod file_locks;
// Generic over the store, so its tests run over the embedded one.
#[cfg(any(feature = "tikv", test))]
pub mod store_holds;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ldc_topology::Topology;

use crate::cell::Cell;
use crate::error::CellError;
use crate::metrics::ShardMetrics;
use crate::shard::Shard;
use crate::store::{Store, StoreError};

/// How a standby learns whether a cell it stands by for runs, and reaches its
/// store: file locks on one host ([`Files`]), records in a shared store
/// ([`shared::Records`]).
pub trait Witness<S: Store> {
    /// Whether `primary`'s own process runs.
    fn running(&self, primary: usize) -> impl Future<Output = bool>;

    /// Whether `primary` ever ran: a cell that never did has no shard to take over.
    fn ran(&self, primary: usize) -> impl Future<Output = bool>;

    /// `primary`'s store, or `None` while another process holds it.
    fn store(&self, primary: usize) -> impl Future<Output = Result<Option<S>, StoreError>>;

    /// How long a claim holds the shard (shared stores only).
    fn hold_ms(&self) -> Option<u64>;

    /// After this cell handed `primary`'s shard (claimed at `epoch`) back.
    fn released(&self, primary: usize, epoch: u64) -> impl Future<Output = ()>;
}

/// What a cell's lifecycle needs from its backend's way of telling who runs.
pub trait Backing {
    type Store: Store + Clone + 'static;
    type Witness: Witness<Self::Store>;

    /// Says this cell's process runs, for as long as it is polled. Ends only if
    /// it can say so no more.
    fn presence(&self) -> impl Future<Output = ()>;

    /// Opens this cell's own shard, waiting while its standby still holds it.
    fn open_own(
        &self,
        topology: &Topology,
        index: usize,
        metrics: &ShardMetrics,
    ) -> impl Future<Output = Result<Shard<Self::Store>, CellError>>;

    /// How this cell's standby loop learns who runs.
    fn witness(&self) -> Self::Witness;

    /// Keeps the shards this cell serves its own while it serves; ends only when
    /// another cell claimed its own shard, and the cell must stop.
    fn keep(&self, cell: Arc<Cell<Self::Store>>) -> impl Future<Output = CellError>;

    /// After a graceful stop has drained: tells standbys at once.
    fn leave(&self, cell: &Cell<Self::Store>) -> impl Future<Output = ()>;
}

/// Watches the cells `cell` stands by for, for the life of the process: takes
/// over the shard of one that is not running, hands it back when it returns. Reads
/// the cell's topology at every poll, so a reload that names a new standby applies.
pub async fn stand_by<S: Store + Clone>(
    cell: Arc<Cell<S>>,
    witness: impl Witness<S>,
    metrics: ShardMetrics,
    poll: Duration,
) {
    let me = cell.index();
    let count = cell.topology().cells().len();
    let mut last_error: Vec<Option<String>> = vec![None; count];
    // A cell not seen running yet may just be starting after this one (`ldc up`
    // starts cells one by one): it gets a grace period before its shard is taken.
    let mut seen = vec![false; count];
    let watching = Instant::now();
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let topology = cell.topology();
        let conf = &topology.deploy().takeover;
        // Indexes only: a reference to a shard held across a release would keep it
        // open until the release timed out.
        let taken: Vec<(usize, u64)> = cell.taken().iter().map(|s| (s.cell, s.epoch)).collect();
        for (primary, watched) in topology.cells().iter().enumerate() {
            let held = taken
                .iter()
                .find(|(cell, _)| *cell == primary)
                .map(|(_, epoch)| *epoch);
            if held.is_none() && watched.standby != Some(me) {
                continue;
            }
            let up = witness.running(primary).await;
            seen[primary] |= up;
            let due =
                seen[primary] || watching.elapsed() >= Duration::from_millis(conf.startup_grace_ms);
            if let Some(epoch) = held.filter(|_| up) {
                let timeout = Duration::from_millis(conf.release_timeout_ms);
                release(&cell, primary, timeout).await;
                witness.released(primary, epoch).await;
            } else if held.is_none() && !up && due && witness.ran(primary).await {
                let outcome = take_over(&cell, primary, &witness, &metrics).await;
                let error = outcome.err().map(|err| err.to_string());
                if error.is_some() && error != last_error[primary] {
                    tracing::warn!(shard = %watched.id, cause = error.as_deref().unwrap_or_default(), "takeover failed; retrying");
                }
                last_error[primary] = error;
            }
        }
    }
}

/// Opens `primary`'s store if it is free and starts serving its shard.
async fn take_over<S: Store + Clone>(
    cell: &Cell<S>,
    primary: usize,
    witness: &impl Witness<S>,
    metrics: &ShardMetrics,
) -> Result<(), CellError> {
    let topology = cell.topology();
    let started = Instant::now();
    let Some(store) = witness.store(primary).await? else {
        return Ok(());
    };
    let me = &topology.cells()[cell.index()].id;
    let shard = match Shard::open(&topology, primary, me, store, witness.hold_ms(), metrics).await {
        Ok(shard) => shard,
        // Its cell (or another standby) holds it still: nothing to take over.
        Err(CellError::Ledger(StoreError::Held(_))) => return Ok(()),
        Err(err) => return Err(err),
    };
    tracing::info!(
        shard = %topology.cells()[primary].id,
        epoch = shard.epoch,
        open_ms = started.elapsed().as_millis() as u64,
        "took over the shard of a cell that is down"
    );
    cell.install(shard);
    Ok(())
}

/// Hands `primary`'s shard back: no new request reaches it, the ones inside finish
/// (up to `timeout`), the committer commits its last batch, the ledger closes.
async fn release<S: Store>(cell: &Cell<S>, primary: usize, timeout: Duration) {
    let topology = cell.topology();
    let id = &topology.cells()[primary].id;
    let Some(mut shard) = cell.remove(primary) else {
        return;
    };
    let epoch = shard.epoch;
    let started = Instant::now();
    loop {
        match Arc::try_unwrap(shard) {
            Ok(owned) => {
                owned.close(&topology).await;
                tracing::info!(
                    shard = %id,
                    epoch,
                    release_ms = started.elapsed().as_millis() as u64,
                    "handed the shard back to its returning cell"
                );
                return;
            }
            Err(shared) if started.elapsed() < timeout => {
                shard = shared;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(_) => {
                // Routing to the shard stopped; it closes when the last request ends.
                tracing::warn!(shard = %id, timeout_ms = timeout.as_millis() as u64, "requests still inside the shard; it closes when they finish");
                return;
            }
        }
    }
}
