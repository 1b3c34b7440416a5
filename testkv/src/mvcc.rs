//! Percolator MVCC as TiKV implements it, over one ordered key space (regions are
//! the server's business, not this module's). Three kinds of record, as in TiKV's
//! column families: locks (one per key at most), writes (commit records by
//! `(key, commit_ts)`, carrying the value) and rollbacks (by `(key, start_ts)`).
//!
//! Timestamps are PD TSOs: `physical_ms << 18 | logical`. A lock's TTL expires when
//! the caller's current TSO's physical part passes the lock's start_ts physical part
//! plus its TTL (milliseconds), as TiKV decides it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write as _};
use std::ops::Bound;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub type Key = Vec<u8>;
pub type Value = Vec<u8>;

/// Keys a read found, each with its value or the lock in its way.
pub type Found = Vec<(Key, Result<Value, KeyError>)>;

/// The physical milliseconds of a TSO.
pub fn physical_ms(ts: u64) -> u64 {
    ts >> 18
}

/// What a prewrite does to a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put(Value),
    Delete,
    /// A lock-only key (a read the transaction wants protected from concurrent
    /// writers): its commit leaves a `Lock` write record that reads skip.
    Lock,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    pub key: Key,
    pub op: Op,
}

/// The kind of a lock, for `LockInfo.lock_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    Put,
    Delete,
    Lock,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub key: Key,
    pub primary: Key,
    pub start_ts: u64,
    pub ttl: u64,
    pub txn_size: u64,
    pub kind: LockKind,
    pub use_async_commit: bool,
    pub min_commit_ts: u64,
    /// Async commit only, and only on the primary's lock.
    pub secondaries: Vec<Key>,
}

/// A per-key error, as TiKV's `KeyError` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The key is locked by another transaction (reads: a lock at or below the read
    /// ts; prewrite: any other transaction's lock).
    Locked(LockInfo),
    /// Prewrite found a write committed after the transaction's start.
    WriteConflict {
        key: Key,
        primary: Key,
        start_ts: u64,
        conflict_start_ts: u64,
        conflict_commit_ts: u64,
    },
    /// Commit found neither the transaction's lock nor its commit record (TiKV:
    /// `TxnLockNotFound`, sent as `retryable`).
    LockNotFound { key: Key, start_ts: u64 },
    /// The transaction was rolled back (a rollback record, or a commit after it).
    /// TiKV sends this as `abort`.
    Aborted(String),
    /// Commit with a commit_ts below the lock's min_commit_ts.
    CommitTsExpired {
        key: Key,
        start_ts: u64,
        attempted_commit_ts: u64,
        min_commit_ts: u64,
    },
    /// CheckTxnStatus without `rollback_if_not_exist` found nothing, or a
    /// heartbeat found no lock.
    TxnNotFound { primary: Key, start_ts: u64 },
}

/// A prewrite request's transaction-level fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prewrite {
    pub mutations: Vec<Mutation>,
    pub primary: Key,
    pub start_ts: u64,
    pub ttl: u64,
    pub txn_size: u64,
    /// The client's lower bound for the commit ts (async commit / 1PC).
    pub min_commit_ts: u64,
    /// The client's upper bound (0: none); past it async commit and 1PC fall back
    /// to plain two-phase locks.
    pub max_commit_ts: u64,
    pub use_async_commit: bool,
    /// Async commit: the secondaries, recorded on the primary's lock.
    pub secondaries: Vec<Key>,
    pub try_one_pc: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrewriteOutcome {
    /// Every key locked. `min_commit_ts` is nonzero for async commit (the smallest
    /// safe commit ts: above every read so far and above start_ts), zero otherwise.
    Locked { min_commit_ts: u64 },
    /// 1PC: committed directly at `commit_ts` (nonzero).
    OnePc { commit_ts: u64 },
    /// Nothing was applied.
    Failed(Vec<KeyError>),
}

/// What CheckTxnStatus found (and did) about a transaction's primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnStatus {
    /// The primary's lock is alive (or is an expired async-commit lock, whose fate
    /// only its secondaries decide): its TTL, and the lock itself.
    Locked { ttl: u64, lock: LockInfo },
    /// Committed at this ts.
    Committed { commit_ts: u64 },
    /// Rolled back, now or earlier.
    RolledBack { action: RollbackAction },
}

/// Why a status is "rolled back", as TiKV's `Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackAction {
    /// Rolled back earlier; nothing done now.
    NoAction,
    /// The lock's TTL had expired: rolled back now.
    TtlExpireRollback,
    /// No lock and no record: a rollback record was written (protection against a
    /// late prewrite).
    LockNotExistRollback,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckTxnStatus {
    pub primary: Key,
    pub lock_ts: u64,
    /// The checker's own start ts (informational here: testkv never pushes a
    /// lock's min_commit_ts, so a reader waits for the TTL).
    pub caller_start_ts: u64,
    /// PD's current ts, for TTL expiry.
    pub current_ts: u64,
    pub rollback_if_not_exist: bool,
}

/// Secondary locks of an async-commit transaction, as CheckSecondaryLocks answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondaryLocks {
    /// The transaction's locks on the keys asked about, when every key is locked.
    pub locks: Vec<LockInfo>,
    /// Nonzero when one of the keys is already committed: the commit ts.
    pub commit_ts: u64,
}

/// Switches for tests of the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// false: a toy store that ignores locks and conflicts (reads never see locks,
    /// prewrites never conflict). Only for proving a suite catches it.
    pub locking: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { locking: true }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("testkv data in {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("testkv data in {path} is corrupt at record {record}: {message}")]
    Corrupt {
        path: String,
        record: u64,
        message: String,
    },
}

/// A commit record's kind and, for a put, its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Written {
    Put(Value),
    Delete,
    Lock,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Write {
    start_ts: u64,
    written: Written,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Lock {
    info: LockInfo,
    value: Option<Value>,
}

impl Lock {
    fn written(&self) -> Written {
        match (&self.info.kind, &self.value) {
            (LockKind::Put, Some(value)) => Written::Put(value.clone()),
            (LockKind::Put, None) | (LockKind::Delete, _) => Written::Delete,
            (LockKind::Lock, _) => Written::Lock,
        }
    }
}

/// One change to the state, as the log records it. A request's changes are one
/// log line, so a torn tail loses a whole request or nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Change {
    Lock(Lock),
    Unlock {
        key: Key,
        start_ts: u64,
    },
    Write {
        key: Key,
        commit_ts: u64,
        write: Write,
    },
    Rollback {
        key: Key,
        start_ts: u64,
    },
}

/// The MVCC state. Not thread-safe by itself: the server holds it in a mutex.
#[derive(Debug)]
pub struct Mvcc {
    options: Options,
    /// By `(key, start_ts)`: at most one per key with locking on; the toy mode
    /// lets transactions lock a key side by side.
    locks: BTreeMap<(Key, u64), Lock>,
    writes: BTreeMap<Key, BTreeMap<u64, Write>>,
    rollbacks: BTreeMap<Key, BTreeSet<u64>>,
    max_ts: u64,
    log: Option<File>,
}

impl Mvcc {
    /// In memory only.
    pub fn in_memory(options: Options) -> Self {
        Self {
            options,
            locks: BTreeMap::new(),
            writes: BTreeMap::new(),
            rollbacks: BTreeMap::new(),
            max_ts: 0,
            log: None,
        }
    }

    /// Durable in `dir`: every change is written (not necessarily fsynced) before
    /// the call returns, and a later `open` of the same dir sees it. A torn last
    /// record (a crash mid-write) is cut off; damage anywhere else is an error.
    pub fn open(dir: &Path, options: Options) -> Result<Self, OpenError> {
        let path = dir.join("mvcc.log");
        let io = |source| OpenError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        let mut mvcc = Self::in_memory(options);
        let mut reader = BufReader::new(&file);
        let (mut good, mut record) = (0u64, 0u64);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).map_err(io)?;
            if read == 0 {
                break;
            }
            let complete = line.last() == Some(&b'\n');
            match serde_json::from_slice::<Vec<Change>>(&line) {
                Ok(changes) if complete => {
                    changes.into_iter().for_each(|change| mvcc.apply(change));
                    good += read as u64;
                    record += 1;
                }
                Ok(_) => break,
                Err(_) if !complete => break,
                Err(err) => {
                    let rest = reader.fill_buf().map_err(io)?;
                    if !rest.is_empty() {
                        return Err(OpenError::Corrupt {
                            path: path.display().to_string(),
                            record,
                            message: err.to_string(),
                        });
                    }
                    break;
                }
            }
        }
        drop(reader);
        file.set_len(good).map_err(io)?;
        file.seek(SeekFrom::End(0)).map_err(io)?;
        mvcc.log = Some(file);
        Ok(mvcc)
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Lock(lock) => {
                self.locks
                    .insert((lock.info.key.clone(), lock.info.start_ts), lock);
            }
            Change::Unlock { key, start_ts } => {
                self.locks.remove(&(key, start_ts));
            }
            Change::Write {
                key,
                commit_ts,
                write,
            } => {
                self.writes.entry(key).or_default().insert(commit_ts, write);
            }
            Change::Rollback { key, start_ts } => {
                self.rollbacks.entry(key).or_default().insert(start_ts);
            }
        }
    }

    /// Applies a request's changes, logging them first.
    fn commit_changes(&mut self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        if let Some(log) = self.log.as_mut() {
            let written = serde_json::to_vec(&changes)
                .map_err(std::io::Error::from)
                .and_then(|mut line| {
                    line.push(b'\n');
                    log.write_all(&line)
                });
            if let Err(err) = written {
                tracing::error!(%err, "testkv: writing the MVCC log failed; the state is no longer durable");
            }
        }
        changes.into_iter().for_each(|change| self.apply(change));
    }

    /// The largest ts any read has used: commit ts of async commit / 1PC must be
    /// above it.
    pub fn max_ts(&self) -> u64 {
        self.max_ts
    }

    /// The lock on `key`, whoever holds it (the first by start_ts in toy mode).
    fn lock_on(&self, key: &[u8]) -> Option<&Lock> {
        self.locks
            .range((key.to_vec(), 0)..=(key.to_vec(), u64::MAX))
            .next()
            .map(|(_, lock)| lock)
    }

    fn own_lock(&self, key: &[u8], start_ts: u64) -> Option<&Lock> {
        self.locks.get(&(key.to_vec(), start_ts))
    }

    /// The transaction's commit record on `key`: its commit ts and kind.
    fn own_write(&self, key: &[u8], start_ts: u64) -> Option<(u64, &Write)> {
        self.writes.get(key).and_then(|writes| {
            writes
                .iter()
                .rev()
                .find(|(_, write)| write.start_ts == start_ts)
                .map(|(ts, write)| (*ts, write))
        })
    }

    fn rolled_back(&self, key: &[u8], start_ts: u64) -> bool {
        self.rollbacks
            .get(key)
            .is_some_and(|set| set.contains(&start_ts))
    }

    /// A read at `ts`: the newest Put/Delete committed at or below `ts`. Raises
    /// max_ts. Fails with `Locked` if another transaction's Put/Delete lock has
    /// start_ts <= ts and (async commit) min_commit_ts <= ts.
    pub fn get(&mut self, key: &[u8], ts: u64) -> Result<Option<Value>, KeyError> {
        self.max_ts = self.max_ts.max(ts);
        self.read(key, ts)
    }

    fn read(&self, key: &[u8], ts: u64) -> Result<Option<Value>, KeyError> {
        if self.options.locking
            && let Some(lock) = self.lock_on(key)
        {
            let info = &lock.info;
            let blocks = info.start_ts <= ts
                && info.kind != LockKind::Lock
                && (info.min_commit_ts == 0 || info.min_commit_ts <= ts);
            if blocks {
                return Err(KeyError::Locked(info.clone()));
            }
        }
        let Some(writes) = self.writes.get(key) else {
            return Ok(None);
        };
        let newest = writes
            .range(..=ts)
            .rev()
            .find(|(_, write)| write.written != Written::Lock);
        Ok(match newest {
            Some((
                _,
                Write {
                    written: Written::Put(value),
                    ..
                },
            )) => Some(value.clone()),
            _ => None,
        })
    }

    /// Missing keys are left out; a locked key gives its error in place of a value.
    pub fn batch_get(&mut self, keys: &[Key], ts: u64) -> Found {
        self.max_ts = self.max_ts.max(ts);
        keys.iter()
            .filter_map(|key| match self.read(key, ts) {
                Ok(Some(value)) => Some((key.clone(), Ok(value))),
                Ok(None) => None,
                Err(err) => Some((key.clone(), Err(err))),
            })
            .collect()
    }

    /// Keys in `[start, end)` (an empty `end`: unbounded), at most `limit` of them that
    /// exist at `ts` (or are locked), ascending, or descending from just below `end`
    /// when `reverse`.
    pub fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        ts: u64,
        reverse: bool,
    ) -> Found {
        self.max_ts = self.max_ts.max(ts);
        let (upper, lock_upper) = if end.is_empty() {
            (Bound::Unbounded, Bound::Unbounded)
        } else {
            (
                Bound::Excluded(end.to_vec()),
                Bound::Excluded((end.to_vec(), 0)),
            )
        };
        let written = self
            .writes
            .range::<Key, _>((Bound::Included(start.to_vec()), upper))
            .map(|(key, _)| key);
        let locked = self
            .locks
            .range((Bound::Included((start.to_vec(), 0)), lock_upper))
            .map(|((key, _), _)| key);
        let keys: Box<dyn Iterator<Item = &Key>> = if reverse {
            Box::new(merged(written.rev(), locked.rev(), |a, b| a > b))
        } else {
            Box::new(merged(written, locked, |a, b| a < b))
        };
        let mut found = Vec::new();
        let mut last: Option<&Key> = None;
        for key in keys {
            if last == Some(key) {
                continue;
            }
            last = Some(key);
            if found.len() >= limit {
                break;
            }
            match self.read(key, ts) {
                Ok(Some(value)) => found.push((key.clone(), Ok(value))),
                Ok(None) => {}
                Err(err) => found.push((key.clone(), Err(err))),
            }
        }
        found
    }

    /// All or nothing: either every mutation's key gets its lock (or, 1PC, its
    /// write), or nothing changes. Idempotent: a retried prewrite of the same
    /// transaction on a key it already locked succeeds.
    pub fn prewrite(&mut self, request: &Prewrite) -> PrewriteOutcome {
        let start_ts = request.start_ts;
        let mut errors = Vec::new();
        let mut fresh = Vec::new();
        for mutation in &request.mutations {
            let key = &mutation.key;
            if self.own_lock(key, start_ts).is_some() || self.own_write(key, start_ts).is_some() {
                continue;
            }
            if self.rolled_back(key, start_ts) {
                errors.push(KeyError::Aborted(format!(
                    "transaction {start_ts} was rolled back on this key"
                )));
                continue;
            }
            if self.options.locking {
                if let Some(lock) = self.lock_on(key) {
                    errors.push(KeyError::Locked(lock.info.clone()));
                    continue;
                }
                let newest = self
                    .writes
                    .get(key)
                    .and_then(|writes| writes.iter().next_back());
                if let Some((&commit_ts, write)) = newest
                    && commit_ts > start_ts
                {
                    errors.push(KeyError::WriteConflict {
                        key: key.clone(),
                        primary: request.primary.clone(),
                        start_ts,
                        conflict_start_ts: write.start_ts,
                        conflict_commit_ts: commit_ts,
                    });
                    continue;
                }
            }
            fresh.push(mutation);
        }
        if !errors.is_empty() {
            return PrewriteOutcome::Failed(errors);
        }
        let wants_ts = request.use_async_commit || request.try_one_pc;
        let mut min_commit_ts = if wants_ts {
            request.min_commit_ts.max(self.max_ts + 1).max(start_ts + 1)
        } else {
            0
        };
        if request.max_commit_ts != 0 && min_commit_ts > request.max_commit_ts {
            min_commit_ts = 0;
        }
        let one_pc = request.try_one_pc && min_commit_ts != 0;
        let async_commit = request.use_async_commit && min_commit_ts != 0 && !one_pc;
        let changes = fresh
            .into_iter()
            .map(|mutation| {
                let (kind, value) = match &mutation.op {
                    Op::Put(value) => (LockKind::Put, Some(value.clone())),
                    Op::Delete => (LockKind::Delete, None),
                    Op::Lock => (LockKind::Lock, None),
                };
                let lock = Lock {
                    info: LockInfo {
                        key: mutation.key.clone(),
                        primary: request.primary.clone(),
                        start_ts,
                        ttl: request.ttl,
                        txn_size: request.txn_size,
                        kind,
                        use_async_commit: async_commit,
                        min_commit_ts: if async_commit { min_commit_ts } else { 0 },
                        secondaries: if async_commit && mutation.key == request.primary {
                            request.secondaries.clone()
                        } else {
                            Vec::new()
                        },
                    },
                    value,
                };
                if one_pc {
                    Change::Write {
                        key: mutation.key.clone(),
                        commit_ts: min_commit_ts,
                        write: Write {
                            start_ts,
                            written: lock.written(),
                        },
                    }
                } else {
                    Change::Lock(lock)
                }
            })
            .collect();
        self.commit_changes(changes);
        if one_pc {
            PrewriteOutcome::OnePc {
                commit_ts: min_commit_ts,
            }
        } else {
            PrewriteOutcome::Locked {
                min_commit_ts: if async_commit { min_commit_ts } else { 0 },
            }
        }
    }

    /// The changes that commit the transaction's lock on `key`, or why it cannot.
    fn commit_key(
        &self,
        key: &[u8],
        start_ts: u64,
        commit_ts: u64,
    ) -> Result<Vec<Change>, KeyError> {
        if let Some(lock) = self.own_lock(key, start_ts) {
            if lock.info.min_commit_ts > commit_ts {
                return Err(KeyError::CommitTsExpired {
                    key: key.to_vec(),
                    start_ts,
                    attempted_commit_ts: commit_ts,
                    min_commit_ts: lock.info.min_commit_ts,
                });
            }
            return Ok(vec![
                Change::Unlock {
                    key: key.to_vec(),
                    start_ts,
                },
                Change::Write {
                    key: key.to_vec(),
                    commit_ts,
                    write: Write {
                        start_ts,
                        written: lock.written(),
                    },
                },
            ]);
        }
        if self.own_write(key, start_ts).is_some() {
            return Ok(Vec::new());
        }
        if self.rolled_back(key, start_ts) {
            return Err(KeyError::Aborted(format!(
                "transaction {start_ts} was rolled back"
            )));
        }
        Err(KeyError::LockNotFound {
            key: key.to_vec(),
            start_ts,
        })
    }

    /// The changes that roll the transaction back on `key`, or why it cannot.
    fn rollback_key(&self, key: &[u8], start_ts: u64) -> Result<Vec<Change>, KeyError> {
        if let Some((commit_ts, _)) = self.own_write(key, start_ts) {
            return Err(KeyError::Aborted(format!(
                "transaction {start_ts} is already committed at {commit_ts}"
            )));
        }
        let mut changes = Vec::new();
        if self.own_lock(key, start_ts).is_some() {
            changes.push(Change::Unlock {
                key: key.to_vec(),
                start_ts,
            });
        }
        if !self.rolled_back(key, start_ts) {
            changes.push(Change::Rollback {
                key: key.to_vec(),
                start_ts,
            });
        }
        Ok(changes)
    }

    fn all_or_nothing(
        &mut self,
        keys: &[Key],
        each: impl Fn(&Self, &[u8]) -> Result<Vec<Change>, KeyError>,
    ) -> Result<(), KeyError> {
        let mut changes = Vec::new();
        for key in keys {
            changes.extend(each(self, key)?);
        }
        self.commit_changes(changes);
        Ok(())
    }

    /// Commits the transaction's locks on `keys` at `commit_ts`. Idempotent: a key
    /// already committed by this transaction is fine.
    pub fn commit(&mut self, keys: &[Key], start_ts: u64, commit_ts: u64) -> Result<(), KeyError> {
        self.all_or_nothing(keys, |mvcc, key| mvcc.commit_key(key, start_ts, commit_ts))
    }

    /// Removes the transaction's locks on `keys` and leaves rollback records (so a
    /// late prewrite cannot lock them again). Fails with `Aborted` if a key is
    /// already committed by it.
    pub fn rollback(&mut self, keys: &[Key], start_ts: u64) -> Result<(), KeyError> {
        self.all_or_nothing(keys, |mvcc, key| mvcc.rollback_key(key, start_ts))
    }

    pub fn check_txn_status(&mut self, request: &CheckTxnStatus) -> Result<TxnStatus, KeyError> {
        let (primary, start_ts) = (&request.primary, request.lock_ts);
        if let Some(lock) = self.own_lock(primary, start_ts) {
            let info = lock.info.clone();
            let expired = physical_ms(request.current_ts) >= physical_ms(start_ts) + info.ttl;
            if !expired || info.use_async_commit {
                return Ok(TxnStatus::Locked {
                    ttl: info.ttl.max(1),
                    lock: info,
                });
            }
            let changes = self.rollback_key(primary, start_ts)?;
            self.commit_changes(changes);
            return Ok(TxnStatus::RolledBack {
                action: RollbackAction::TtlExpireRollback,
            });
        }
        if let Some((commit_ts, _)) = self.own_write(primary, start_ts) {
            return Ok(TxnStatus::Committed { commit_ts });
        }
        if self.rolled_back(primary, start_ts) {
            return Ok(TxnStatus::RolledBack {
                action: RollbackAction::NoAction,
            });
        }
        if !request.rollback_if_not_exist {
            return Err(KeyError::TxnNotFound {
                primary: primary.clone(),
                start_ts,
            });
        }
        self.commit_changes(vec![Change::Rollback {
            key: primary.clone(),
            start_ts,
        }]);
        Ok(TxnStatus::RolledBack {
            action: RollbackAction::LockNotExistRollback,
        })
    }

    /// The keys in `[start, end)` (empty `end`: unbounded) the transaction holds
    /// locks on.
    pub fn txn_locks(&self, start: &[u8], end: &[u8], start_ts: u64) -> Vec<Key> {
        self.locks
            .keys()
            .filter(|(key, ts)| {
                *ts == start_ts
                    && key.as_slice() >= start
                    && (end.is_empty() || key.as_slice() < end)
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Commits (commit_ts > 0) or rolls back (commit_ts == 0) the transaction's locks
    /// on `keys`; keys it holds no lock on are left alone.
    pub fn resolve_lock(
        &mut self,
        start_ts: u64,
        commit_ts: u64,
        keys: &[Key],
    ) -> Result<(), KeyError> {
        let locked: Vec<Key> = keys
            .iter()
            .filter(|key| self.own_lock(key, start_ts).is_some())
            .cloned()
            .collect();
        if commit_ts == 0 {
            self.rollback(&locked, start_ts)
        } else {
            self.commit(&locked, start_ts, commit_ts)
        }
    }

    /// Raises the primary lock's TTL to `advise_ttl` (never lowers it); returns the
    /// TTL now in force. `TxnNotFound` when the lock is gone.
    pub fn heartbeat(
        &mut self,
        primary: &[u8],
        start_ts: u64,
        advise_ttl: u64,
    ) -> Result<u64, KeyError> {
        let Some(lock) = self.own_lock(primary, start_ts) else {
            return Err(KeyError::TxnNotFound {
                primary: primary.to_vec(),
                start_ts,
            });
        };
        if advise_ttl <= lock.info.ttl {
            return Ok(lock.info.ttl);
        }
        let mut lock = lock.clone();
        lock.info.ttl = advise_ttl;
        self.commit_changes(vec![Change::Lock(lock)]);
        Ok(advise_ttl)
    }

    /// Async commit's recovery read. A key without the transaction's lock and without
    /// its commit record gets a rollback record (so the transaction can no longer
    /// commit there).
    pub fn check_secondary_locks(
        &mut self,
        keys: &[Key],
        start_ts: u64,
    ) -> Result<SecondaryLocks, KeyError> {
        let mut locks = Vec::new();
        for key in keys {
            if let Some(lock) = self.own_lock(key, start_ts) {
                locks.push(lock.info.clone());
                continue;
            }
            if let Some((commit_ts, _)) = self.own_write(key, start_ts) {
                return Ok(SecondaryLocks {
                    locks: Vec::new(),
                    commit_ts,
                });
            }
            let changes = self.rollback_key(key, start_ts)?;
            self.commit_changes(changes);
            return Ok(SecondaryLocks {
                locks: Vec::new(),
                commit_ts: 0,
            });
        }
        Ok(SecondaryLocks {
            locks,
            commit_ts: 0,
        })
    }

    /// Every lock in `[start, end)` (empty `end`: unbounded) with start_ts <= max_ts.
    pub fn locks(&self, start: &[u8], end: &[u8], max_ts: u64) -> Vec<LockInfo> {
        self.locks
            .iter()
            .filter(|((key, ts), _)| {
                *ts <= max_ts && key.as_slice() >= start && (end.is_empty() || key.as_slice() < end)
            })
            .map(|(_, lock)| lock.info.clone())
            .collect()
    }
}

/// Two key iterators sorted the same way (`before` says which of two keys comes
/// first), merged lazily; a key in both comes twice, side by side.
fn merged<'a>(
    a: impl Iterator<Item = &'a Key>,
    b: impl Iterator<Item = &'a Key>,
    before: impl Fn(&Key, &Key) -> bool,
) -> impl Iterator<Item = &'a Key> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if before(y, x) => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

#[cfg(test)]
mod tests;
