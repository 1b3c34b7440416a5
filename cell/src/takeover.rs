//! Takeover and failback on one host, for the embedded ledger. Two file locks in a
//! cell's data directory carry the protocol, and the kernel drops both the moment a
//! process dies, however it dies:
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

use std::fs::{File, TryLockError};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::Cell;
use crate::error::CellError;
use crate::shard::{Shard, ShardMetrics};
use crate::store::{EmbeddedStore, StoreError};

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

/// Watches the cells `cell` stands by for, for the life of the process: takes
/// over the shard of one that is not running, hands it back when it returns. Reads
/// the cell's topology at every poll, so a reload that names a new standby applies.
pub async fn stand_by(cell: Arc<Cell<EmbeddedStore>>, metrics: ShardMetrics, poll: Duration) {
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
        let taken: Vec<usize> = cell.taken().iter().map(|shard| shard.cell).collect();
        for (primary, watched) in topology.cells().iter().enumerate() {
            let held = taken.contains(&primary);
            if !held && watched.standby != Some(me) {
                continue;
            }
            let up = running(&watched.data_dir);
            seen[primary] |= up;
            let due =
                seen[primary] || watching.elapsed() >= Duration::from_millis(conf.startup_grace_ms);
            if held && up {
                let timeout = Duration::from_millis(conf.release_timeout_ms);
                release(&cell, primary, timeout).await;
            } else if !held && !up && due && watched.data_dir.join("ledger").exists() {
                // A cell that never ran has no shard to take over.
                let outcome = take_over(&cell, primary, &metrics).await;
                let error = outcome.err().map(|err| err.to_string());
                if error.is_some() && error != last_error[primary] {
                    tracing::warn!(shard = %watched.id, cause = error.as_deref().unwrap_or_default(), "takeover failed; retrying");
                }
                last_error[primary] = error;
            }
        }
    }
}

/// Opens `primary`'s ledger if it is free and starts serving its shard.
async fn take_over(
    cell: &Cell<EmbeddedStore>,
    primary: usize,
    metrics: &ShardMetrics,
) -> Result<(), CellError> {
    let topology = cell.topology();
    let started = Instant::now();
    let store = match EmbeddedStore::open(&topology.cells()[primary].data_dir) {
        Ok(store) => store,
        // The cell (or a process on its way up) has it: nothing to take over.
        Err(StoreError::Locked(_)) => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    let me = &topology.cells()[cell.index()].id;
    let shard = Shard::open(&topology, primary, me, store, metrics).await?;
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
async fn release(cell: &Cell<EmbeddedStore>, primary: usize, timeout: Duration) {
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
