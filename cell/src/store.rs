//! The ledger's storage contract: a small transactional key-value interface over
//! ordered byte keys, with one implementation per backend.
//!
//! It is shaped after what both backends do natively: fjall's optimistic
//! transactions with snapshot reads and TiKV's optimistic/pessimistic transactions
//! through `tikv-client` (get, get-for-update, put, delete, scan, commit, rollback), plus
//! read-only snapshots for queries. The ledger logic is written once, over this.

#[cfg(feature = "test-support")]
pub mod conformance;
mod embedded;
mod overlay;
#[cfg(feature = "tikv")]
pub mod tikv;

use std::future::Future;
use std::ops::Range;

pub use embedded::EmbeddedStore;
pub use overlay::Overlay;
#[cfg(feature = "tikv")]
pub use tikv::TikvStore;

/// Why a store operation failed, and whether it is worth retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or is shutting down; nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Another transaction wrote a key this one read; retrying may succeed.
    #[error("write conflict: {0}")]
    Conflict(String),
    /// The commit may or may not have been applied (e.g. TiKV's primary commit
    /// failed); idempotency records make a retry safe.
    #[error("commit outcome unknown: {0}")]
    Undetermined(String),
    /// Another cell took these slots over at a higher epoch; this one must not write.
    #[error("fenced off: {0}")]
    Fenced(String),
    /// Another process holds the store's data directory.
    #[error("data directory is in use by another process: {0}")]
    Locked(String),
    /// Another cell's hold on this shared store has not run out.
    #[error("held by another cell: {0}")]
    Held(String),
    /// Corruption, a full disk, a bug: not retryable.
    #[error("store failure: {0}")]
    Internal(String),
}

/// Direction of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanOrder {
    Ascending,
    Descending,
}

/// Key-value pairs, in scan order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A transactional store.
pub trait Store: Send + Sync + 'static {
    type Txn: Transaction;
    type Snapshot: Snapshot;

    /// Starts a read-write transaction. The group committer is the only writer of a
    /// cell's store, so these futures need not be `Send`.
    fn begin(&self) -> impl Future<Output = Result<Self::Txn, StoreError>>;

    /// A consistent read-only view as of now.
    fn snapshot(&self) -> impl Future<Output = Result<Self::Snapshot, StoreError>> + Send;

    /// Milliseconds since the Unix epoch by the store's clock: the one clock every
    /// cell sharing the store agrees on (TiKV: PD's timestamp oracle), for holds.
    fn clock_ms(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// A read-write transaction. Writes are buffered until `commit`, which makes them
/// durable and visible at once, or not at all. Dropping one uncommitted rolls it back.
pub trait Transaction {
    fn get(&mut self, key: &[u8]) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>>;

    /// Reads a key and locks it against other writers until this transaction ends
    /// (a no-op where the store admits one writer at a time).
    fn get_for_update(
        &mut self,
        key: &[u8],
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>>;

    /// Reads `keys` in one round trip where the store is remote, so that this
    /// transaction's later gets of them are answered from memory. Where reads are
    /// local it does nothing, and never walks `keys`: a lazy iterator costs nothing.
    /// A batch reads ahead what its writes will look at.
    fn read_ahead(
        &mut self,
        keys: impl IntoIterator<Item = Vec<u8>>,
    ) -> impl Future<Output = Result<(), StoreError>> {
        drop(keys);
        async { Ok(()) }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>)
    -> impl Future<Output = Result<(), StoreError>>;

    fn delete(&mut self, key: Vec<u8>) -> impl Future<Output = Result<(), StoreError>>;

    /// Up to `limit` pairs with keys in `range`, in `order`; sees this transaction's
    /// own writes.
    fn scan(
        &mut self,
        range: Range<Vec<u8>>,
        limit: usize,
        order: ScanOrder,
    ) -> impl Future<Output = Result<Pairs, StoreError>>;

    /// Makes every write durable. Returns only after the data is on stable storage.
    fn commit(self) -> impl Future<Output = Result<(), StoreError>>;

    fn rollback(self) -> impl Future<Output = Result<(), StoreError>>;
}

/// A consistent read-only view.
pub trait Snapshot: Send {
    fn get(
        &mut self,
        key: &[u8],
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    fn scan(
        &mut self,
        range: Range<Vec<u8>>,
        limit: usize,
        order: ScanOrder,
    ) -> impl Future<Output = Result<Pairs, StoreError>> + Send;
}

/// Every key that starts with `prefix`.
pub fn prefix_range(prefix: &[u8]) -> Range<Vec<u8>> {
    let start = prefix.to_vec();
    let mut end = prefix.to_vec();
    // Increment the last byte that is not 0xff; drop the 0xff bytes after it.
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return start..end;
        }
    }
    // An all-0xff (or empty) prefix: everything from it to the end of the keyspace.
    start..vec![0xff; prefix.len() + 1]
}
