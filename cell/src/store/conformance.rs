//! The conformance suite every [`Store`] backend must pass, written once: the
//! embedded backend runs it in `cargo test`, the TiKV backend whenever `PD_ADDRS`
//! names a cluster. Each check panics with a message saying what broke.

use super::{ScanOrder, Snapshot, Store, Transaction, prefix_range};

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
