//! Takeover on one host, for the embedded ledger: two file locks in a cell's data
//! directory, which the kernel drops the moment a process dies, however it dies.
//!
//! - `PRIMARY` is held by the cell's own process for its whole life: free means the
//!   cell is not running.
//! - `LOCK` is held by whichever process has the ledger open, the cell or its
//!   standby. It is the fence: two processes never hold it at once, so a shard never
//!   has two writers.

use std::fs::{File, TryLockError};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ldc_topology::Topology;

use super::{Backing, Witness};
use crate::cell::Cell;
use crate::error::CellError;
use crate::metrics::ShardMetrics;
use crate::shard::Shard;
use crate::store::{EmbeddedStore, StoreError};

/// How long a starting cell retries `PRIMARY` before it concludes another process of
/// the same cell is running (a standby checking it holds it only for an instant).
const PRESENCE_ATTEMPTS: u32 = 100;
const PRESENCE_RETRY: Duration = Duration::from_millis(10);
/// How often a starting cell tries its ledger while the standby still has it.
const LEDGER_RETRY: Duration = Duration::from_millis(5);

/// The cell's claim to be running, held until the process ends.
#[derive(Debug)]
struct Presence {
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
async fn announce(dir: &Path) -> Result<Presence, CellError> {
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
async fn open_own(dir: &Path) -> Result<EmbeddedStore, CellError> {
    let started = Instant::now();
    let mut waited = false;
    loop {
        match open_blocking(dir).await {
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

/// Opens the embedded store of `dir` on a blocking thread. Recovering its journal
/// took 350-500 ms for a 20 s chaos run's ledger on a busy host; on the cell's
/// own threads that would stall everything it serves, its users and the
/// router's health probes included, while it takes a shard over.
async fn open_blocking(dir: &Path) -> Result<EmbeddedStore, StoreError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir))
        .await
        .unwrap_or_else(|err| Err(StoreError::Internal(format!("opening the ledger: {err}"))))
}

/// On one host: `PRIMARY` and `LOCK` in each cell's data directory.
#[derive(Debug)]
pub struct Files(Arc<Topology>);

impl Witness<EmbeddedStore> for Files {
    async fn running(&self, primary: usize) -> bool {
        running(&self.0.cells()[primary].data_dir)
    }

    async fn ran(&self, primary: usize) -> bool {
        self.0.cells()[primary].data_dir.join("ledger").exists()
    }

    async fn store(&self, primary: usize) -> Result<Option<EmbeddedStore>, StoreError> {
        match open_blocking(&self.0.cells()[primary].data_dir).await {
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

/// A cell on one host: its `PRIMARY` lock, held from [`OneHost::announce`] until
/// the value is dropped.
#[derive(Debug)]
pub struct OneHost {
    topology: Arc<Topology>,
    dir: PathBuf,
    _presence: Presence,
}

impl OneHost {
    /// Takes cell `index`'s `PRIMARY` lock, which tells its standby to hand the
    /// shard back.
    pub async fn announce(topology: Arc<Topology>, index: usize) -> Result<Self, CellError> {
        let dir = topology.cells()[index].data_dir.clone();
        let presence = announce(&dir).await?;
        Ok(Self {
            topology,
            dir,
            _presence: presence,
        })
    }
}

impl Backing for OneHost {
    type Store = EmbeddedStore;
    type Witness = Files;

    fn presence(&self) -> impl Future<Output = ()> {
        // Said by the lock this value holds; nothing to renew.
        std::future::pending()
    }

    async fn open_own(
        &self,
        topology: &Topology,
        index: usize,
        metrics: &ShardMetrics,
    ) -> Result<Shard<EmbeddedStore>, CellError> {
        let store = open_own(&self.dir).await?;
        let id = &topology.cells()[index].id;
        Shard::open(topology, index, id, store, None, metrics).await
    }

    fn witness(&self) -> Files {
        Files(self.topology.clone())
    }

    fn keep(&self, _cell: Arc<Cell<EmbeddedStore>>) -> impl Future<Output = CellError> {
        // `LOCK` stays held while the store is open: nothing to renew.
        std::future::pending()
    }

    async fn leave(&self, _cell: &Cell<EmbeddedStore>) {}
}
