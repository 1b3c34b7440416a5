//! The TiKV backend, through `tikv-client`'s transactional API: the production store,
//! replicated with Raft across hosts and regions.
//!
//! Every key is prefixed with `ldc/<deployment>/<cell>/`, so deployments and cells
//! share one TiKV cluster without meeting, and a slot stays one contiguous range
//! inside its cell's prefix. Transactions are optimistic: the group committer is a
//! cell's only writer, so conflicts come only from a second writer that should not
//! exist (what fencing is for) and surface at commit as [`StoreError::Conflict`].
//! Every call is bounded by a timeout, so an outage fails writes with 503 instead of
//! hanging them; the client reconnects by itself when TiKV returns.

use std::collections::HashSet;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use ldc_topology::TikvCommit;
use tikv_client::{CheckLevel, KvPair, TransactionClient, TransactionOptions};

use super::{Pairs, ScanOrder, Snapshot, Store, StoreError, Transaction};

/// A cell's ledger in a shared TiKV cluster.
#[derive(Clone)]
pub struct TikvStore {
    client: Arc<TransactionClient>,
    prefix: Arc<[u8]>,
    timeout: Duration,
    commit: TikvCommit,
}

impl std::fmt::Debug for TikvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TikvStore")
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .finish_non_exhaustive()
    }
}

/// The key prefix of a cell's ledger: `ldc/<deployment>/<cell>/`. Deployment and
/// cell ids are `[A-Za-z0-9_-]`, so no prefix is a prefix of another.
pub fn key_prefix(deployment: &str, cell: &str) -> Vec<u8> {
    format!("ldc/{deployment}/{cell}/").into_bytes()
}

/// Classifies a client error: conflicts are worth retrying, an unknown commit
/// outcome is reported as such, a cluster that cannot be reached is unavailable.
pub fn classify(err: tikv_client::Error) -> StoreError {
    use tikv_client::Error as E;
    let conflict = |err: &E| match err {
        E::KeyError(key_error) => key_error.conflict.is_some() || !key_error.retryable.is_empty(),
        _ => false,
    };
    match &err {
        E::UndeterminedError(_) => StoreError::Undetermined(err.to_string()),
        E::MultipleKeyErrors(errors) | E::ExtractedErrors(errors)
            if errors.iter().any(conflict) =>
        {
            StoreError::Conflict(err.to_string())
        }
        e if conflict(e) => StoreError::Conflict(err.to_string()),
        E::Grpc(_)
        | E::GrpcAPI(_)
        | E::Io(_)
        | E::Channel(_)
        | E::Canceled(_)
        | E::RegionError(_)
        | E::RegionForKeyNotFound { .. }
        | E::RegionForRangeNotFound { .. }
        | E::LeaderNotFound { .. } => StoreError::Unavailable(err.to_string()),
        _ => StoreError::Internal(err.to_string()),
    }
}

/// tikv-client puts the source location of an error in its message
/// (`[.../pd/cluster.rs:209]: PD cluster failed to respond`); users need the rest.
fn without_source_path(message: &str) -> String {
    match message.strip_prefix('[').and_then(|m| m.split_once("]: ")) {
        Some((_, rest)) => rest.to_owned(),
        None => message.to_owned(),
    }
}

impl TikvStore {
    /// Connects to the PD endpoints. Fails within `timeout` with an error naming them.
    pub async fn connect(
        pd_endpoints: &[String],
        prefix: Vec<u8>,
        timeout: Duration,
        commit: TikvCommit,
    ) -> Result<Self, StoreError> {
        let named = |cause: String| {
            StoreError::Unavailable(format!(
                "cannot reach TiKV through PD at {}: {cause}",
                pd_endpoints.join(", ")
            ))
        };
        let client = tokio::time::timeout(timeout, TransactionClient::new(pd_endpoints.to_vec()))
            .await
            .map_err(|_| named(format!("no answer within {} ms", timeout.as_millis())))?
            .map_err(|err| named(without_source_path(&err.to_string())))?;
        Ok(Self {
            client: Arc::new(client),
            prefix: prefix.into(),
            timeout,
            commit,
        })
    }

    /// The same cluster and client, under another cell's prefix: how a standby reads
    /// and takes over the shard of a cell it stands by for.
    pub fn with_prefix(&self, prefix: Vec<u8>) -> Self {
        Self {
            client: self.client.clone(),
            prefix: prefix.into(),
            timeout: self.timeout,
            commit: self.commit,
        }
    }

    fn options(&self) -> TransactionOptions {
        // A dropped transaction (a cancelled request) must not panic the cell; ours are
        // always committed or rolled back explicitly anyway.
        let options = TransactionOptions::new_optimistic().drop_check(CheckLevel::Warn);
        match self.commit {
            TikvCommit::TwoPhase => options,
            TikvCommit::Async => options.use_async_commit(),
            TikvCommit::OnePc => options.try_one_pc(),
        }
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, tikv_client::Error>>,
    ) -> Result<T, StoreError> {
        bounded(self.timeout, call).await
    }
}

async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, tikv_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(classify),
        Err(_) => Err(StoreError::Unavailable(format!(
            "TiKV did not answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// Prepends the cell's prefix.
fn encode(prefix: &[u8], key: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(prefix.len() + key.len());
    full.extend_from_slice(prefix);
    full.extend_from_slice(key);
    full
}

fn encode_range(prefix: &[u8], range: &Range<Vec<u8>>) -> Range<Vec<u8>> {
    encode(prefix, &range.start)..encode(prefix, &range.end)
}

/// Strips the prefix from scanned pairs.
fn decode(prefix: &[u8], pairs: impl Iterator<Item = KvPair>) -> Pairs {
    pairs
        .filter_map(|KvPair(key, value)| {
            let key: Vec<u8> = key.into();
            key.strip_prefix(prefix).map(|k| (k.to_vec(), value))
        })
        .collect()
}

/// A bounded scan's pairs, prefix stripped. (Forward and reverse scans return
/// different iterator types, hence a generic helper rather than one call.)
async fn scanned<I: Iterator<Item = KvPair>>(
    prefix: &[u8],
    timeout: Duration,
    call: impl Future<Output = Result<I, tikv_client::Error>>,
) -> Result<Pairs, StoreError> {
    Ok(decode(prefix, bounded(timeout, call).await?))
}

fn limit(limit: usize) -> u32 {
    u32::try_from(limit).unwrap_or(u32::MAX)
}

impl Store for TikvStore {
    type Txn = TikvTxn;
    type Snapshot = TikvSnapshot;

    async fn begin(&self) -> Result<TikvTxn, StoreError> {
        let txn = self
            .bounded(self.client.begin_with_options(self.options()))
            .await?;
        Ok(TikvTxn {
            txn,
            prefix: self.prefix.clone(),
            timeout: self.timeout,
            absent: HashSet::new(),
        })
    }

    async fn snapshot(&self) -> Result<TikvSnapshot, StoreError> {
        let timestamp = self.bounded(self.client.current_timestamp()).await?;
        let snapshot = self.client.snapshot(timestamp, self.options().read_only());
        Ok(TikvSnapshot {
            snapshot,
            prefix: self.prefix.clone(),
            timeout: self.timeout,
        })
    }

    async fn clock_ms(&self) -> Result<u64, StoreError> {
        // PD's timestamp oracle: physical milliseconds, the same for every cell.
        let timestamp = self.bounded(self.client.current_timestamp()).await?;
        u64::try_from(timestamp.physical)
            .map_err(|_| StoreError::Internal(format!("PD's clock reads {timestamp:?}")))
    }
}

pub struct TikvTxn {
    txn: tikv_client::Transaction,
    prefix: Arc<[u8]>,
    timeout: Duration,
    /// Keys (encoded) a read-ahead found missing and this transaction has not
    /// written since: the client's buffer remembers found keys only.
    absent: HashSet<Vec<u8>>,
}

impl std::fmt::Debug for TikvTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TikvTxn").finish_non_exhaustive()
    }
}

impl Transaction for TikvTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = encode(&self.prefix, key);
        if self.absent.contains(&key) {
            return Ok(None);
        }
        bounded(self.timeout, self.txn.get(key)).await
    }

    async fn get_for_update(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        // Optimistic: records the key so a concurrent writer's commit conflicts
        // (bookkeeping in the buffer, no request).
        let key = encode(&self.prefix, key);
        if self.absent.contains(&key) {
            bounded(self.timeout, self.txn.lock_keys([key])).await?;
            return Ok(None);
        }
        bounded(self.timeout, self.txn.get_for_update(key)).await
    }

    async fn read_ahead(
        &mut self,
        keys: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<(), StoreError> {
        // The client's buffer keeps what the batch get found, so the gets that
        // follow make no request; `absent` answers for the rest.
        let mut absent: HashSet<Vec<u8>> = keys
            .into_iter()
            .map(|key| encode(&self.prefix, &key))
            .collect();
        let wanted: Vec<Vec<u8>> = absent.iter().cloned().collect();
        let found = bounded(self.timeout, self.txn.batch_get(wanted)).await?;
        for pair in found {
            absent.remove(Vec::<u8>::from(pair.0).as_slice());
        }
        self.absent.extend(absent);
        Ok(())
    }

    async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError> {
        let key = encode(&self.prefix, &key);
        self.absent.remove(&key);
        bounded(self.timeout, self.txn.put(key, value)).await
    }

    async fn delete(&mut self, key: Vec<u8>) -> Result<(), StoreError> {
        let key = encode(&self.prefix, &key);
        bounded(self.timeout, self.txn.delete(key)).await
    }

    async fn scan(
        &mut self,
        range: Range<Vec<u8>>,
        count: usize,
        order: ScanOrder,
    ) -> Result<Pairs, StoreError> {
        let range = encode_range(&self.prefix, &range);
        let (prefix, timeout) = (&self.prefix, self.timeout);
        match order {
            ScanOrder::Ascending => {
                scanned(prefix, timeout, self.txn.scan(range, limit(count))).await
            }
            ScanOrder::Descending => {
                scanned(prefix, timeout, self.txn.scan_reverse(range, limit(count))).await
            }
        }
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        match bounded(self.timeout, self.txn.commit()).await {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict(cause)) => {
                // A conflict means the primary was not committed, so nothing was:
                // release the locks now rather than when their TTL runs out.
                let _ = bounded(self.timeout, self.txn.rollback()).await;
                Err(StoreError::Conflict(cause))
            }
            // Any other failure may have come after the primary's commit was applied
            // (a lost reply: the client cannot tell). Rolling back now would remove
            // the secondaries of a committed transaction, so the locks are left for
            // readers to settle through the primary, and the caller settles the
            // outcome by reading it back.
            Err(other) => Err(StoreError::Undetermined(other.to_string())),
        }
    }

    async fn rollback(mut self) -> Result<(), StoreError> {
        bounded(self.timeout, self.txn.rollback()).await
    }
}

pub struct TikvSnapshot {
    snapshot: tikv_client::Snapshot,
    prefix: Arc<[u8]>,
    timeout: Duration,
}

impl std::fmt::Debug for TikvSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TikvSnapshot").finish_non_exhaustive()
    }
}

impl Snapshot for TikvSnapshot {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = encode(&self.prefix, key);
        bounded(self.timeout, self.snapshot.get(key)).await
    }

    async fn scan(
        &mut self,
        range: Range<Vec<u8>>,
        count: usize,
        order: ScanOrder,
    ) -> Result<Pairs, StoreError> {
        let range = encode_range(&self.prefix, &range);
        let (prefix, timeout) = (&self.prefix, self.timeout);
        match order {
            ScanOrder::Ascending => {
                scanned(prefix, timeout, self.snapshot.scan(range, limit(count))).await
            }
            ScanOrder::Descending => {
                scanned(
                    prefix,
                    timeout,
                    self.snapshot.scan_reverse(range, limit(count)),
                )
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::keys;

    #[test]
    fn prefixed_keys_keep_their_order_and_slot_ranges() {
        let prefix = key_prefix("prod", "hz1");
        let mut keys = [
            keys::account(2, "bob"),
            keys::journal(1, "amy", 10),
            keys::journal(1, "amy", 2),
            keys::stock("phone"),
            keys::order(65_535, "z", 1),
        ];
        let mut encoded: Vec<Vec<u8>> = keys.iter().map(|k| encode(&prefix, k)).collect();
        keys.sort();
        encoded.sort();
        let stripped: Vec<Vec<u8>> = encoded
            .iter()
            .map(|k| {
                k.strip_prefix(prefix.as_slice())
                    .expect("prefixed")
                    .to_vec()
            })
            .collect();
        assert_eq!(stripped, keys, "prefixing preserves the order");
        let slot = encode_range(&prefix, &crate::store::prefix_range(&keys::slot_prefix(1)));
        let in_slot: Vec<&Vec<u8>> = encoded.iter().filter(|k| slot.contains(*k)).collect();
        assert_eq!(
            in_slot.len(),
            2,
            "slot 1 is one contiguous range under the prefix"
        );
    }

    #[test]
    fn cells_and_deployments_do_not_share_keys() {
        let a = key_prefix("prod", "c1");
        let b = key_prefix("prod", "c10");
        let c = key_prefix("prod2", "c1");
        for (x, y) in [(&a, &b), (&b, &a), (&a, &c), (&c, &a)] {
            assert!(!x.starts_with(y), "{x:?} / {y:?}");
        }
    }

    #[test]
    fn scanned_pairs_lose_the_prefix_and_foreign_keys_are_dropped() {
        let prefix = key_prefix("d", "c");
        let pairs = vec![
            KvPair(encode(&prefix, b"k1").into(), b"v1".to_vec()),
            KvPair(b"other".to_vec().into(), b"x".to_vec()),
        ];
        assert_eq!(
            decode(&prefix, pairs.into_iter()),
            vec![(b"k1".to_vec(), b"v1".to_vec())]
        );
    }

    #[test]
    fn source_paths_are_cut_from_client_messages() {
        assert_eq!(
            without_source_path(
                "[/x/tikv-client-0.4.0/src/pd/cluster.rs:209]: PD cluster failed to respond"
            ),
            "PD cluster failed to respond"
        );
        assert_eq!(without_source_path("plain"), "plain");
    }

    #[test]
    fn errors_are_classified_for_retries() {
        use tikv_client::Error as E;
        let conflict = tikv_client::ProtoKeyError {
            conflict: Some(Default::default()),
            ..Default::default()
        };
        assert!(matches!(
            classify(E::KeyError(Box::new(conflict.clone()))),
            StoreError::Conflict(_)
        ));
        assert!(matches!(
            classify(E::MultipleKeyErrors(vec![E::KeyError(Box::new(conflict))])),
            StoreError::Conflict(_)
        ));
        assert!(matches!(
            classify(E::UndeterminedError(Box::new(E::Unimplemented))),
            StoreError::Undetermined(_)
        ));
        assert!(matches!(
            classify(E::Io(std::io::Error::other("refused"))),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            classify(E::DuplicateKeyInsertion),
            StoreError::Internal(_)
        ));
    }
}
