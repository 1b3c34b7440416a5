//! The embedded backend: one fjall database per cell (an LSM tree with a write-ahead
//! journal), every commit fsynced (`PersistMode::SyncAll`; fjall's default would only
//! hand the journal to the OS). Chosen over redb by measurement: on the ledger's
//! write pattern with durable group commits, fjall did about 3x the transfers per
//! second, because it appends ~270 bytes per transfer to its journal where redb
//! rewrites ~12 KB of B-tree pages (docs/benchmarks.md, "Ledger store").
//!
//! Transactions are fjall's optimistic ones: the group committer is the only writer,
//! so they never conflict, and the model is the one TiKV offers.

use std::fs::{File, TryLockError};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::{
    Iter, KeyspaceCreateOptions, OptimisticTxDatabase, OptimisticTxKeyspace, OptimisticWriteTx,
    PersistMode, Readable,
};

use super::{Pairs, ScanOrder, Snapshot, Store, StoreError, Transaction};

/// A cell's embedded ledger store in its own data directory, held exclusively: a
/// second process opening the same directory gets [`StoreError::Locked`] at once.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: OptimisticTxDatabase,
    ledger: OptimisticTxKeyspace,
    /// The directory lock; released when the last clone is dropped (or the process dies).
    _lock: Arc<File>,
    dir: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn internal(err: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(err.to_string())
}

impl EmbeddedStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let in_dir = |err: std::io::Error| internal(format!("{}: {err}", dir.display()));
        std::fs::create_dir_all(dir).map_err(in_dir)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(in_dir)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(dir.display().to_string()));
            }
            Err(TryLockError::Error(err)) => return Err(in_dir(err)),
        }
        // A database closed by another process a moment ago may still hold fjall's
        // own lock while its last background work ends; fjall would sleep 100 ms
        // per retry, so ask first and let the caller poll at its own pace.
        if let Ok(fjall_lock) = File::open(dir.join("ledger").join("lock"))
            && let Err(TryLockError::WouldBlock) = fjall_lock.try_lock()
        {
            return Err(StoreError::Locked(dir.display().to_string()));
        }
        let db = OptimisticTxDatabase::builder(dir.join("ledger"))
            .open()
            .map_err(|err| match err {
                fjall::Error::Locked => StoreError::Locked(dir.display().to_string()),
                other => internal(format!("{}: {other}", dir.display())),
            })?;
        let ledger = db
            .keyspace("ledger", KeyspaceCreateOptions::default)
            .map_err(internal)?;
        Ok(Self {
            db,
            ledger,
            _lock: Arc::new(lock),
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Store for EmbeddedStore {
    type Txn = EmbeddedTxn;
    type Snapshot = EmbeddedSnapshot;

    async fn begin(&self) -> Result<EmbeddedTxn, StoreError> {
        let tx = self.db.write_tx().map_err(internal)?;
        Ok(EmbeddedTxn {
            tx: tx.durability(Some(PersistMode::SyncAll)),
            ledger: self.ledger.clone(),
        })
    }

    async fn snapshot(&self) -> Result<EmbeddedSnapshot, StoreError> {
        Ok(EmbeddedSnapshot {
            snapshot: self.db.read_tx(),
            ledger: self.ledger.clone(),
        })
    }

    async fn clock_ms(&self) -> Result<u64, StoreError> {
        // One process at a time opens an embedded store: its host's clock is the one.
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|err| StoreError::Internal(format!("the system clock: {err}")))?;
        Ok(since.as_millis() as u64)
    }
}

pub struct EmbeddedTxn {
    tx: OptimisticWriteTx,
    ledger: OptimisticTxKeyspace,
}

impl std::fmt::Debug for EmbeddedTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedTxn").finish_non_exhaustive()
    }
}

/// One key's value.
fn read(
    from: &impl Readable,
    ledger: &OptimisticTxKeyspace,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    let value = from.get(ledger, key).map_err(internal)?;
    Ok(value.map(|v| v.to_vec()))
}

/// Up to `limit` pairs of `range`, in `order`.
fn collect(
    from: &impl Readable,
    ledger: &OptimisticTxKeyspace,
    range: Range<Vec<u8>>,
    limit: usize,
    order: ScanOrder,
) -> Result<Pairs, StoreError> {
    let entries: Iter = from.range(ledger, range);
    let pair = |guard: fjall::Guard| {
        let (key, value) = guard.into_inner().map_err(internal)?;
        Ok((key.to_vec(), value.to_vec()))
    };
    match order {
        ScanOrder::Ascending => entries.take(limit).map(pair).collect(),
        ScanOrder::Descending => entries.rev().take(limit).map(pair).collect(),
    }
}

impl Transaction for EmbeddedTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        read(&self.tx, &self.ledger, key)
    }

    async fn get_for_update(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        // Optimistic: the read is recorded and a conflicting commit fails ours. The
        // group committer is the only writer, so none ever does.
        self.get(key).await
    }

    async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError> {
        self.tx.insert(&self.ledger, key, value);
        Ok(())
    }

    async fn delete(&mut self, key: Vec<u8>) -> Result<(), StoreError> {
        self.tx.remove(&self.ledger, key);
        Ok(())
    }

    async fn scan(
        &mut self,
        range: Range<Vec<u8>>,
        limit: usize,
        order: ScanOrder,
    ) -> Result<Pairs, StoreError> {
        collect(&self.tx, &self.ledger, range, limit, order)
    }

    async fn commit(self) -> Result<(), StoreError> {
        match self.tx.commit() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(conflict)) => Err(StoreError::Conflict(conflict.to_string())),
            Err(err) => Err(internal(err)),
        }
    }

    async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback();
        Ok(())
    }
}

pub struct EmbeddedSnapshot {
    snapshot: fjall::Snapshot,
    ledger: OptimisticTxKeyspace,
}

impl std::fmt::Debug for EmbeddedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedSnapshot").finish_non_exhaustive()
    }
}

impl Snapshot for EmbeddedSnapshot {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        read(&self.snapshot, &self.ledger, key)
    }

    async fn scan(
        &mut self,
        range: Range<Vec<u8>>,
        limit: usize,
        order: ScanOrder,
    ) -> Result<Pairs, StoreError> {
        collect(&self.snapshot, &self.ledger, range, limit, order)
    }
}
