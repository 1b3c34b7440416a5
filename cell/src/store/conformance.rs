//! The conformance suite every [`Store`] backend must pass, written once: the
//! embedded backend and the TiKV backend (against testkv, the PD + TiKV test
//! server, in each commit mode) run it in `cargo test`. Each check panics with a
//! message saying what broke. The concurrency checks at the end are what a store
//! without isolation fails: `cell/tests/tikv.rs` shows that testkv with locking
//! switched off does.

use super::{ScanOrder, Snapshot, Store, StoreError, Transaction, prefix_range};

fn key(prefix: &[u8], n: u8) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.push(n);
    key
}

/// Runs every check against `store`, using only keys under `prefix` (which should be
/// empty at the start).
pub async fn run<S: Store>(store: &S, prefix: &[u8]) {
    commit_makes_writes_visible(store, prefix).await;
    rollback_discards_writes(store, prefix).await;
    scans_are_ordered_bounded_and_see_own_writes(store, prefix).await;
    snapshots_do_not_see_later_commits(store, prefix).await;
    deletes_remove_keys(store, prefix).await;
    reads_after_a_read_ahead_see_the_store_and_own_writes(store, prefix).await;
    concurrent_writers_of_a_key_conflict(store, prefix).await;
    a_protected_read_conflicts_with_a_later_write(store, prefix).await;
    transactions_read_at_their_start_and_never_dirty(store, prefix).await;
    concurrent_increments_lose_no_update(store, prefix).await;
}

async fn commit_makes_writes_visible<S: Store>(store: &S, prefix: &[u8]) {
    let k = key(prefix, 1);
    let mut txn = store.begin().await.expect("begin");
    assert_eq!(txn.get(&k).await.expect("get"), None, "fresh key is absent");
    txn.put(k.clone(), b"one".to_vec()).await.expect("put");
    assert_eq!(
        txn.get(&k).await.expect("get").as_deref(),
        Some(&b"one"[..]),
        "a transaction reads its own write"
    );
    txn.commit().await.expect("commit");
    let mut snapshot = store.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.get(&k).await.expect("get").as_deref(),
        Some(&b"one"[..]),
        "a committed write is visible to later snapshots"
    );
    let mut txn = store.begin().await.expect("begin");
    assert_eq!(
        txn.get_for_update(&k)
            .await
            .expect("get_for_update")
            .as_deref(),
        Some(&b"one"[..]),
        "get_for_update reads the committed value"
    );
    txn.rollback().await.expect("rollback");
}

async fn rollback_discards_writes<S: Store>(store: &S, prefix: &[u8]) {
    let k = key(prefix, 2);
    let mut txn = store.begin().await.expect("begin");
    txn.put(k.clone(), b"never".to_vec()).await.expect("put");
    txn.rollback().await.expect("rollback");
    {
        let mut txn = store.begin().await.expect("begin");
        txn.put(k.clone(), b"dropped".to_vec()).await.expect("put");
        // Dropped without commit: must roll back too.
    }
    let mut snapshot = store.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.get(&k).await.expect("get"),
        None,
        "rolled-back and dropped transactions leave nothing"
    );
}

async fn scans_are_ordered_bounded_and_see_own_writes<S: Store>(store: &S, prefix: &[u8]) {
    let mut scan_prefix = prefix.to_vec();
    scan_prefix.push(3);
    let mut txn = store.begin().await.expect("begin");
    for n in [5u8, 1, 4, 2, 3] {
        txn.put(key(&scan_prefix, n), vec![n]).await.expect("put");
    }
    // Just outside the range on both sides.
    txn.put(key(prefix, 2), b"below".to_vec())
        .await
        .expect("put");
    txn.put(key(prefix, 4), b"above".to_vec())
        .await
        .expect("put");
    let range = prefix_range(&scan_prefix);
    let all = txn
        .scan(range.clone(), 100, ScanOrder::Ascending)
        .await
        .expect("scan");
    let values: Vec<u8> = all.iter().map(|(_, v)| v[0]).collect();
    assert_eq!(
        values,
        [1, 2, 3, 4, 5],
        "a transaction scans its own writes in key order"
    );
    txn.commit().await.expect("commit");

    let mut snapshot = store.snapshot().await.expect("snapshot");
    let first = snapshot
        .scan(range.clone(), 2, ScanOrder::Ascending)
        .await
        .expect("scan");
    assert_eq!(
        first.iter().map(|(_, v)| v[0]).collect::<Vec<_>>(),
        [1, 2],
        "limit bounds an ascending scan"
    );
    let last = snapshot
        .scan(range.clone(), 3, ScanOrder::Descending)
        .await
        .expect("scan");
    assert_eq!(
        last.iter().map(|(_, v)| v[0]).collect::<Vec<_>>(),
        [5, 4, 3],
        "a descending scan starts at the end of the range"
    );
    let from_three = snapshot
        .scan(
            key(&scan_prefix, 3)..range.end.clone(),
            10,
            ScanOrder::Ascending,
        )
        .await
        .expect("scan");
    assert_eq!(
        from_three.iter().map(|(_, v)| v[0]).collect::<Vec<_>>(),
        [3, 4, 5],
        "the range start is inclusive"
    );
    let below_three = snapshot
        .scan(
            range.start.clone()..key(&scan_prefix, 3),
            10,
            ScanOrder::Descending,
        )
        .await
        .expect("scan");
    assert_eq!(
        below_three.iter().map(|(_, v)| v[0]).collect::<Vec<_>>(),
        [2, 1],
        "the range end is exclusive"
    );
}

async fn snapshots_do_not_see_later_commits<S: Store>(store: &S, prefix: &[u8]) {
    let k = key(prefix, 5);
    let mut before = store.snapshot().await.expect("snapshot");
    let mut txn = store.begin().await.expect("begin");
    txn.put(k.clone(), b"later".to_vec()).await.expect("put");
    txn.commit().await.expect("commit");
    assert_eq!(
        before.get(&k).await.expect("get"),
        None,
        "a snapshot keeps its point in time"
    );
}

async fn deletes_remove_keys<S: Store>(store: &S, prefix: &[u8]) {
    let k = key(prefix, 6);
    let mut txn = store.begin().await.expect("begin");
    txn.put(k.clone(), b"x".to_vec()).await.expect("put");
    txn.commit().await.expect("commit");
    let mut txn = store.begin().await.expect("begin");
    txn.delete(k.clone()).await.expect("delete");
    assert_eq!(
        txn.get(&k).await.expect("get"),
        None,
        "a transaction sees its delete"
    );
    txn.commit().await.expect("commit");
    let mut snapshot = store.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.get(&k).await.expect("get"),
        None,
        "a committed delete is durable"
    );
}

async fn reads_after_a_read_ahead_see_the_store_and_own_writes<S: Store>(store: &S, prefix: &[u8]) {
    let (there, missing, written) = (key(prefix, 20), key(prefix, 21), key(prefix, 22));
    let mut txn = store.begin().await.expect("begin");
    txn.put(there.clone(), b"there".to_vec())
        .await
        .expect("put");
    txn.commit().await.expect("commit");
    let mut txn = store.begin().await.expect("begin");
    let ahead = vec![there.clone(), missing.clone(), written.clone()];
    txn.read_ahead(ahead).await.expect("read_ahead");
    assert_eq!(
        txn.get(&there).await.expect("get").as_deref(),
        Some(&b"there"[..]),
        "a key read ahead keeps its value"
    );
    assert_eq!(
        txn.get_for_update(&missing).await.expect("get_for_update"),
        None,
        "a missing key read ahead stays missing"
    );
    txn.put(written.clone(), b"new".to_vec())
        .await
        .expect("put");
    assert_eq!(
        txn.get(&written).await.expect("get").as_deref(),
        Some(&b"new"[..]),
        "a key read ahead as missing, then written, reads the write"
    );
    txn.delete(there.clone()).await.expect("delete");
    assert_eq!(
        txn.get(&there).await.expect("get"),
        None,
        "a deleted key is gone"
    );
    txn.rollback().await.expect("rollback");
}

/// Commits `value` at `k` in a transaction of its own.
async fn committed<S: Store>(store: &S, k: &[u8], value: &[u8]) {
    let mut txn = store.begin().await.expect("begin");
    txn.put(k.to_vec(), value.to_vec()).await.expect("put");
    txn.commit().await.expect("commit");
}

async fn read_now<S: Store>(store: &S, k: &[u8]) -> Option<Vec<u8>> {
    let mut snapshot = store.snapshot().await.expect("snapshot");
    snapshot.get(k).await.expect("get")
}

async fn concurrent_writers_of_a_key_conflict<S: Store>(store: &S, prefix: &[u8]) {
    let k = key(prefix, 30);
    committed(store, &k, b"0").await;
    let mut first = store.begin().await.expect("begin");
    let mut second = store.begin().await.expect("begin");
    for txn in [&mut first, &mut second] {
        let seen = txn.get_for_update(&k).await.expect("get_for_update");
        assert_eq!(
            seen.as_deref(),
            Some(&b"0"[..]),
            "both read the committed value"
        );
    }
    first.put(k.clone(), b"first".to_vec()).await.expect("put");
    second
        .put(k.clone(), b"second".to_vec())
        .await
        .expect("put");
    first.commit().await.expect("the first writer commits");
    let late = second.commit().await;
    assert!(
        matches!(late, Err(StoreError::Conflict(_))),
        "a second writer of a key read before the first committed must conflict, got {late:?}"
    );
    assert_eq!(
        read_now(store, &k).await.as_deref(),
        Some(&b"first"[..]),
        "the conflicting writer left nothing"
    );
}

async fn a_protected_read_conflicts_with_a_later_write<S: Store>(store: &S, prefix: &[u8]) {
    let (read, written) = (key(prefix, 31), key(prefix, 32));
    committed(store, &read, b"before").await;
    let mut reader = store.begin().await.expect("begin");
    reader.get_for_update(&read).await.expect("get_for_update");
    reader
        .put(written.clone(), b"derived".to_vec())
        .await
        .expect("put");
    committed(store, &read, b"changed").await;
    let outcome = reader.commit().await;
    assert!(
        matches!(outcome, Err(StoreError::Conflict(_))),
        "a write derived from a protected read that changed meanwhile must conflict, got {outcome:?}"
    );
    assert_eq!(
        read_now(store, &written).await,
        None,
        "the conflicting transaction wrote nothing"
    );
}

async fn transactions_read_at_their_start_and_never_dirty<S: Store>(store: &S, prefix: &[u8]) {
    let k = key(prefix, 33);
    let mut writer = store.begin().await.expect("begin");
    writer.put(k.clone(), b"dirty".to_vec()).await.expect("put");
    let mut reader = store.begin().await.expect("begin");
    assert_eq!(
        reader.get(&k).await.expect("get"),
        None,
        "an uncommitted write is invisible to another transaction"
    );
    assert_eq!(read_now(store, &k).await, None, "and to a snapshot");
    writer.commit().await.expect("commit");
    assert_eq!(
        reader.get(&k).await.expect("get"),
        None,
        "a transaction keeps reading as of its start"
    );
    reader.rollback().await.expect("rollback");
    assert_eq!(
        read_now(store, &k).await.as_deref(),
        Some(&b"dirty"[..]),
        "once committed, the write is visible"
    );
}

async fn concurrent_increments_lose_no_update<S: Store>(store: &S, prefix: &[u8]) {
    const WRITERS: u64 = 4;
    let k = key(prefix, 34);
    committed(store, &k, &0u64.to_be_bytes()).await;
    let mut txns = Vec::new();
    for _ in 0..WRITERS {
        let mut txn = store.begin().await.expect("begin");
        let bytes = txn
            .get_for_update(&k)
            .await
            .expect("get_for_update")
            .expect("the counter exists");
        let value = u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
        txn.put(k.clone(), (value + 1).to_be_bytes().to_vec())
            .await
            .expect("put");
        txns.push(txn);
    }
    let mut committed_count = 0u64;
    for txn in txns {
        match txn.commit().await {
            Ok(()) => committed_count += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(other) => panic!("an increment failed with {other:?}, not a conflict"),
        }
    }
    let bytes = read_now(store, &k).await.expect("the counter exists");
    let value = u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
    assert_eq!(
        value, committed_count,
        "every committed increment counts once: no update is lost"
    );
    assert_eq!(
        committed_count, 1,
        "increments that all read the same value: exactly one may commit"
    );
}
