//! Takeover and failback. A standby's loop ([`stand_by`]) is the same for both
//! backends; a [`Witness`] tells it whether a cell runs and opens its store. Over a
//! store every cell shares (TiKV), records in the store carry that (see [`shared`]).
//! On one host, for the embedded ledger, two file locks in a cell's data directory
//! do, and the kernel drops both the moment a process dies, however it dies:
//!
//! - `PRIMARY` is held by the cell's own process for its whole life: free means the
//!   cell is not running.
//! - `LOCK` is held by whichever process has the ledger open, the cell or its
//!   standby. It is the fence: two processes never hold it at once, so a shard never
//!   has two writers.
//!
//! A standby polls the cells it stands by for. When one is not running and its
//! ledger is free, the standby opens the ledger, claims it at a higher epoch and
//! serves its slots. When the cell's process is back (`PRIMARY` held again), the
//! standby stops routing to the shard, lets the requests inside finish, commits
//! their last batch and closes the ledger; the returning cell, waiting for `LOCK`
//! all along, then opens it at a higher epoch still.

pub mod shared;

use std::fs::{File, TryLockError};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ldc_topology::Topology;

use crate::api::Cell;
use crate::error::CellError;
use crate::shard::{Shard, ShardMetrics};
use crate::store::{EmbeddedStore, Store, StoreError};

/// How long a starting cell retries `PRIMARY` before it concludes another process of
/// the same cell is running (a standby checking it holds it only for an instant).
const PRESENCE_ATTEMPTS: u32 = 100;
const PRESENCE_RETRY: Duration = Duration::from_millis(10);
/// How often a starting cell tries its ledger while the standby still has it.
const LEDGER_RETRY: Duration = Duration::from_millis(5);

/// The cell's claim to be running, held until the process ends.
#[derive(Debug)]
pub struct Presence {
    _lock: File,
}

fn presence_file(dir: &Path) -> std::io::Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("PRIMARY"))
}

/// Takes the cell's `PRIMARY` lock, which tells its standby to hand the shard back.
pub async fn announce(dir: &Path) -> Result<Presence, CellError> {
    let io = |err: std::io::Error| {
        CellError::Ledger(StoreError::Internal(format!("{}: {err}", dir.display())))
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = presence_file(dir).map_err(io)?;
    for _ in 0..PRESENCE_ATTEMPTS {
        match file.try_lock() {
            Ok(()) => return Ok(Presence { _lock: file }),
            Err(TryLockError::WouldBlock) => tokio::time::sleep(PRESENCE_RETRY).await,
            Err(TryLockError::Error(err)) => return Err(io(err)),
        }
    }
    Err(CellError::Ledger(StoreError::Locked(format!(
        "{}: another process of this cell is running",
        dir.display()
    ))))
}

/// Whether the cell of `dir` is running: its `PRIMARY` lock is held.
fn running(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join("PRIMARY")) else {
        return false;
    };
    match file.try_lock() {
        // Ours for an instant; dropping the file releases it.
        Ok(()) => false,
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => false,
    }
}

/// Opens the cell's own ledger, waiting while its standby still holds it.
pub async fn open_own(dir: &Path) -> Result<EmbeddedStore, CellError> {
    let started = Instant::now();
    let mut waited = false;
    loop {
        match EmbeddedStore::open(dir) {
            Ok(store) => {
                if waited {
                    tracing::info!(
                        waited_ms = started.elapsed().as_millis() as u64,
                        "the standby released the ledger"
                    );
                }
                return Ok(store);
            }
            Err(StoreError::Locked(_)) => {
                if !waited {
                    tracing::info!(dir = %dir.display(), "the ledger is held by the standby; waiting for it to hand the shard back");
                    waited = true;
                }
                tokio::time::sleep(LEDGER_RETRY).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// How a standby learns whether a cell it stands by for runs, and reaches its
/// store: file locks on one host ([`Files`]), records in a shared store
/// ([`shared::Records`]).
pub trait Witness<S: Store> {
    /// Whether `primary`'s own process runs.
    fn running(&self, primary: usize) -> impl Future<Output = bool>;

    /// Whether `primary` ever ran: a cell that never did has no shard to take over.
    fn ran(&self, primary: usize) -> impl Future<Output = bool>;

    /// `primary`'s store, or `None` while another process holds it.
    fn store(&self, primary: usize) -> Result<Option<S>, StoreError>;

    /// How long a claim holds the shard (shared stores only).
    fn hold_ms(&self) -> Option<u64>;

    /// After this cell handed `primary`'s shard (claimed at `epoch`) back.
    fn released(&self, primary: usize, epoch: u64) -> impl Future<Output = ()>;
}

/// On one host: `PRIMARY` and `LOCK` in each cell's data directory.
pub struct Files(pub Arc<Topology>);

impl Witness<EmbeddedStore> for Files {
    async fn running(&self, primary: usize) -> bool {
        running(&self.0.cells()[primary].data_dir)
    }

    async fn ran(&self, primary: usize) -> bool {
        self.0.cells()[primary].data_dir.join("ledger").exists()
    }

    fn store(&self, primary: usize) -> Result<Option<EmbeddedStore>, StoreError> {
        match EmbeddedStore::open(&self.0.cells()[primary].data_dir) {
            Ok(store) => Ok(Some(store)),
            // The cell (or a process on its way up) has it: nothing to take over.
            Err(StoreError::Locked(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn hold_ms(&self) -> Option<u64> {
        None
    }

    async fn released(&self, _primary: usize, _epoch: u64) {}
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
    let Some(store) = witness.store(primary)? else {
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
