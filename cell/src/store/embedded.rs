//! The embedded backend: one redb file per cell, crash-safe, with one writer at a
//! time (serializable) and MVCC snapshots for readers. Chosen over fjall for its
//! durable-by-default commits, its single-writer model (which group commit wants
//! anyway) and its small build; see the README for the measurements.

use std::fs::{File, TryLockError};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, DatabaseError, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    Table, TableDefinition, WriteTransaction,
};

use super::{Order, Pairs, Snapshot, Store, StoreError, Transaction};

/// The one table of the ledger: ordered byte keys to byte values.
const LEDGER: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ledger");

/// A cell's embedded ledger store in its own data directory, held exclusively: a
/// second process opening the same directory gets [`StoreError::Locked`].
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    /// The directory lock; released when the last clone is dropped (or the process dies).
    _lock: Arc<File>,
    dir: PathBuf,
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
        let db = Database::create(dir.join("ledger.redb")).map_err(|err| match err {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(dir.display().to_string()),
            other => internal(format!("{}: {other}", dir.display())),
        })?;
        let txn = db.begin_write().map_err(internal)?;
        txn.open_table(LEDGER).map_err(internal)?;
        txn.commit().map_err(internal)?;
        Ok(Self {
            db: Arc::new(db),
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
        let txn = self.db.begin_write().map_err(internal)?;
        let txn = OpenTxn::try_new(txn, |txn| txn.open_table(LEDGER)).map_err(internal)?;
        Ok(EmbeddedTxn { txn })
    }

    async fn snapshot(&self) -> Result<EmbeddedSnapshot, StoreError> {
        let txn = self.db.begin_read().map_err(internal)?;
        let table = txn.open_table(LEDGER).map_err(internal)?;
        Ok(EmbeddedSnapshot { _txn: txn, table })
    }
}

/// The ledger table of a write transaction, opened once per transaction: opening a
/// redb table per operation cost more than the operation itself.
type LedgerTable<'txn> = Table<'txn, &'static [u8], &'static [u8]>;

self_cell::self_cell!(
    struct OpenTxn {
        owner: WriteTransaction,
        #[covariant]
        dependent: LedgerTable,
    }
);

pub struct EmbeddedTxn {
    txn: OpenTxn,
}

impl std::fmt::Debug for EmbeddedTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedTxn").finish_non_exhaustive()
    }
}

/// One item of a redb range over the ledger table.
type RangeEntry<'a> = Result<
    (
        redb::AccessGuard<'a, &'static [u8]>,
        redb::AccessGuard<'a, &'static [u8]>,
    ),
    redb::StorageError,
>;

/// One key's value from a redb table.
fn read<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    let value = table.get(key).map_err(internal)?;
    Ok(value.map(|v| v.value().to_vec()))
}

/// Collects up to `limit` pairs of a redb range in `order`.
fn collect<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    range: &Range<Vec<u8>>,
    limit: usize,
    order: Order,
) -> Result<Pairs, StoreError> {
    let entries = table
        .range::<&[u8]>(range.start.as_slice()..range.end.as_slice())
        .map_err(internal)?;
    let pair = |entry: RangeEntry<'_>| {
        entry
            .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
            .map_err(internal)
    };
    match order {
        Order::Ascending => entries.take(limit).map(pair).collect(),
        Order::Descending => entries.rev().take(limit).map(pair).collect(),
    }
}

impl Transaction for EmbeddedTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        read(self.txn.borrow_dependent(), key)
    }

    async fn get_for_update(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        // redb admits one write transaction at a time: every read is already locked.
        self.get(key).await
    }

    async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError> {
        self.txn.with_dependent_mut(|_, table| {
            table
                .insert(key.as_slice(), value.as_slice())
                .map(drop)
                .map_err(internal)
        })
    }

    async fn delete(&mut self, key: Vec<u8>) -> Result<(), StoreError> {
        self.txn
            .with_dependent_mut(|_, table| table.remove(key.as_slice()).map(drop).map_err(internal))
    }

    async fn scan(
        &mut self,
        range: Range<Vec<u8>>,
        limit: usize,
        order: Order,
    ) -> Result<Pairs, StoreError> {
        collect(self.txn.borrow_dependent(), &range, limit, order)
    }

    async fn commit(self) -> Result<(), StoreError> {
        // Closing the table first hands its root back to the transaction. Durability
        // is redb's default, Immediate: fsync before returning.
        self.txn.into_owner().commit().map_err(internal)
    }

    async fn rollback(self) -> Result<(), StoreError> {
        self.txn.into_owner().abort().map_err(internal)
    }
}

#[derive(Debug)]
pub struct EmbeddedSnapshot {
    _txn: ReadTransaction,
    table: ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl Snapshot for EmbeddedSnapshot {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        read(&self.table, key)
    }

    async fn scan(
        &mut self,
        range: Range<Vec<u8>>,
        limit: usize,
        order: Order,
    ) -> Result<Pairs, StoreError> {
        collect(&self.table, &range, limit, order)
    }
}
