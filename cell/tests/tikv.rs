//! The TiKV backend against testkv, the PD + TiKV test server (two stores, regions
//! split inside the suite's keys, so transactions span regions and stores): the
//! conformance suite in every commit mode, proof that the suite fails against a
//! store without locking, crashed writers' locks, lost commit replies, and the
//! client's gaps that make async commit unsafe. A real cluster runs the same suite
//! with `PD_ADDRS` (e.g. after `tiup playground`):
//! `PD_ADDRS=127.0.0.1:2379 cargo test -p ldc-cell --all-features --test tikv -- --ignored`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ldc_cell::store::{
    Snapshot, Store, StoreError, TikvStore, Transaction, conformance, tikv::key_prefix,
};
use ldc_topology::TikvCommit;
use testkv::{Config, TestKv};

const MODES: [TikvCommit; 3] = [TikvCommit::TwoPhase, TikvCommit::Async, TikvCommit::OnePc];

/// The suite's keys: `ldc/conformance/<mode>/\x7fconformance...`.
const SUITE_PREFIX: &[u8] = b"\x7fconformance";

/// testkv with two stores and regions split inside each mode's suite keys.
async fn testkv(locking: bool) -> TestKv {
    let mut split_keys = Vec::new();
    for mode in MODES {
        let mut inside = key_prefix("conformance", &format!("{mode:?}"));
        inside.extend_from_slice(SUITE_PREFIX);
        inside.push(3);
        split_keys.push(inside);
    }
    TestKv::start(Config {
        stores: 2,
        split_keys,
        locking,
        ..Config::default()
    })
    .await
    .expect("testkv starts")
}

async fn connect(kv: &TestKv, cell: &str, commit: TikvCommit) -> TikvStore {
    TikvStore::connect(
        &kv.pd_endpoints(),
        key_prefix("conformance", cell),
        Duration::from_secs(10),
        commit,
    )
    .await
    .expect("connect to testkv")
}

fn served_everything(kv: &TestKv) {
    assert!(
        kv.unimplemented().is_empty(),
        "the client called RPCs testkv does not serve: {:?}",
        kv.unimplemented()
    );
}

async fn conformance_in(commit: TikvCommit) {
    let kv = testkv(true).await;
    let store = connect(&kv, &format!("{commit:?}"), commit).await;
    conformance::run(&store, SUITE_PREFIX).await;
    let counters = kv.counters();
    assert!(
        counters.get("KvPrewrite").copied().unwrap_or(0) > 0,
        "the suite wrote through testkv: {counters:?}"
    );
    served_everything(&kv);
}

#[tokio::test]
async fn two_phase_commit_passes_the_conformance_suite() {
    conformance_in(TikvCommit::TwoPhase).await;
}

#[tokio::test]
async fn async_commit_passes_the_conformance_suite() {
    conformance_in(TikvCommit::Async).await;
}

#[tokio::test]
async fn one_pc_passes_the_conformance_suite() {
    conformance_in(TikvCommit::OnePc).await;
}

/// The suite is not satisfied by a store that merely stores: against testkv with
/// locking switched off (no locks, no conflicts) it fails, in a concurrency check
/// or by showing a reader part of a committed transaction.
#[test]
fn the_conformance_suite_fails_against_a_store_without_locking() {
    let failed = std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let kv = testkv(false).await;
            let store = connect(&kv, "TwoPhase", TikvCommit::TwoPhase).await;
            conformance::run(&store, SUITE_PREFIX).await;
        });
    })
    .join();
    let panic = failed.expect_err("the suite must fail against a store without locking");
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    // A concurrency check (a conflict missed, an update lost), or a reader seeing
    // part of a committed transaction (its secondaries are committed in the
    // background, and a store that ignores locks does not make readers wait for
    // them): an assertion of the suite, not an error it did not expect.
    assert!(
        message.contains("conflict")
            || message.contains("lost")
            || message.starts_with("assertion"),
        "it fails on isolation, not on something else: {message}"
    );
}

/// Runs `work` on a runtime of its own, on a thread of its own, and then drops
/// that runtime: every task the client spawned dies with it, as with a process
/// killed mid-commit (dropping a commit future alone is not a crash: the client
/// runs its requests in spawned tasks, which finish the commit anyway).
async fn in_a_process_that_dies<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let result = runtime.block_on(work);
        runtime.shutdown_background();
        result
    })
    .await
    .expect("the writer's thread")
}

/// A writer that dies after its prewrite, before its commit reached TiKV
/// (`KvCommit` is held back until the writer is gone): returns what its commit
/// said before it died, if anything.
async fn writer_dies_mid_commit(
    kv: &TestKv,
    cell: String,
    commit: TikvCommit,
    keys: [Vec<u8>; 2],
) -> Option<Result<(), StoreError>> {
    kv.faults().latency("KvCommit", Duration::from_secs(60));
    let pd = kv.pd_endpoints();
    let said = in_a_process_that_dies(async move {
        let store = TikvStore::connect(
            &pd,
            key_prefix("conformance", &cell),
            Duration::from_secs(10),
            commit,
        )
        .await
        .expect("connect");
        let mut txn = store.begin().await.expect("begin");
        for key in keys {
            txn.put(key, b"crashed".to_vec()).await.expect("put");
        }
        tokio::time::timeout(Duration::from_millis(500), txn.commit())
            .await
            .ok()
    })
    .await;
    kv.faults().clear();
    said
}

async fn commit_both(store: &TikvStore, keys: &[Vec<u8>; 2], value: &[u8]) {
    let mut txn = store.begin().await.expect("begin");
    for key in keys {
        txn.put(key.clone(), value.to_vec()).await.expect("put");
    }
    txn.commit().await.expect("commit");
}

/// Two keys of the suite's space on either side of its split, so a transaction
/// writing both spans two regions on two stores (and 1PC falls back to 2PC).
fn keys_across_regions() -> [Vec<u8>; 2] {
    [[SUITE_PREFIX, &[1]].concat(), [SUITE_PREFIX, &[5]].concat()]
}

/// A writer that dies between prewrite and commit leaves its locks behind; the
/// next reader waits out their TTL, finds the transaction uncommitted through its
/// primary, rolls it back and reads what was committed before.
async fn a_crashed_writers_expired_lock_is_resolved_by_the_next_reader(commit: TikvCommit) {
    let kv = testkv(true).await;
    let cell = format!("{commit:?}");
    let store = connect(&kv, &cell, commit).await;
    let keys = keys_across_regions();
    commit_both(&store, &keys, b"before").await;

    let said = writer_dies_mid_commit(&kv, cell, commit, keys.clone()).await;
    assert!(
        said.is_none(),
        "the writer died before its commit answered: {said:?}"
    );
    assert_eq!(kv.locks().len(), 2, "the crashed writer left its locks");

    let started = Instant::now();
    let read = loop {
        let mut snapshot = store.snapshot().await.expect("snapshot");
        match snapshot.get(&keys[1]).await {
            Ok(value) => break value,
            Err(err) => assert!(
                started.elapsed() < Duration::from_secs(30),
                "the lock was never resolved: {err}"
            ),
        }
    };
    assert_eq!(
        read.as_deref(),
        Some(&b"before"[..]),
        "the crashed write is gone"
    );
    let counters = kv.counters();
    for rpc in ["KvCheckTxnStatus", "KvResolveLock"] {
        assert!(
            counters.get(rpc).copied().unwrap_or(0) > 0,
            "the reader's recovery ran {rpc}: {counters:?}"
        );
    }
    let mut snapshot = store.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.get(&keys[0]).await.expect("get").as_deref(),
        Some(&b"before"[..]),
        "the primary was rolled back too"
    );
    eprintln!(
        "figures: {commit:?}: a crashed writer's lock resolved after {:?}",
        started.elapsed()
    );
    served_everything(&kv);
}

#[tokio::test]
async fn two_phase_a_crashed_writers_expired_lock_is_resolved_by_the_next_reader() {
    a_crashed_writers_expired_lock_is_resolved_by_the_next_reader(TikvCommit::TwoPhase).await;
}

#[tokio::test]
async fn one_pc_a_crashed_writers_expired_lock_is_resolved_by_the_next_reader() {
    a_crashed_writers_expired_lock_is_resolved_by_the_next_reader(TikvCommit::OnePc).await;
}

/// Why async commit is refused. An async-commit transaction counts as committed
/// once its prewrites succeed, so its commit returns before any `KvCommit`; if
/// the writer then dies, only its locks say what happened. TiKV never rolls back an
/// async-commit lock on `CheckTxnStatus` (the secondaries decide), and
/// tikv-client's read path never sends `KvCheckSecondaryLocks` (only its GC path
/// does): readers treat the lock as live and fail, past its TTL, until a GC runs.
/// An acknowledged write that no reader can read is what a cell's standby would
/// find after the kill.
#[tokio::test]
async fn async_commit_leaves_a_dead_writers_acknowledged_keys_unreadable() {
    let kv = testkv(true).await;
    let store = connect(&kv, "Async", TikvCommit::Async).await;
    let keys = keys_across_regions();
    let said =
        writer_dies_mid_commit(&kv, "Async".to_owned(), TikvCommit::Async, keys.clone()).await;
    assert!(
        matches!(said, Some(Ok(()))),
        "async commit acknowledged the write before committing a key: {said:?}"
    );
    let ttl = kv
        .locks()
        .first()
        .map(|lock| lock.ttl)
        .expect("the dead writer's locks");

    let started = Instant::now();
    let mut failures = 0;
    while started.elapsed() < Duration::from_millis(ttl + 3_000) {
        let mut snapshot = store.snapshot().await.expect("snapshot");
        match snapshot.get(&keys[1]).await {
            Ok(value) => {
                panic!("the read succeeded ({value:?}): the gap is closed, allow async commit")
            }
            Err(_) => failures += 1,
        }
    }
    let counters = kv.counters();
    assert!(
        failures > 0 && !kv.locks().is_empty(),
        "the locks stay: {counters:?}"
    );
    assert_eq!(
        counters.get("KvCheckSecondaryLocks"),
        None,
        "the read path never asked the secondaries: {counters:?}"
    );
    assert!(counters.get("KvCheckTxnStatus").copied().unwrap_or(0) > 0);
    served_everything(&kv);
}

/// TiKV commits and the reply is lost once: the client resends the commit, which
/// is idempotent, and reports success.
#[tokio::test]
async fn a_commit_reply_lost_once_is_resent_and_succeeds() {
    let kv = testkv(true).await;
    let store = connect(&kv, "lost-once", TikvCommit::TwoPhase).await;
    kv.faults().drop_commit_replies(1, None);
    let mut txn = store.begin().await.expect("begin");
    txn.put(b"k".to_vec(), b"v".to_vec()).await.expect("put");
    txn.commit().await.expect("the resent commit succeeds");
    let counters = kv.counters();
    assert_eq!(counters.get("fault.drop_commit_reply"), Some(&1));
    assert_eq!(
        counters.get("KvCommit"),
        Some(&2),
        "one resend: {counters:?}"
    );
    let mut snapshot = store.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.get(b"k").await.expect("get").as_deref(),
        Some(&b"v"[..])
    );
    served_everything(&kv);
}

/// TiKV commits the primary and every reply is lost, past the client's retries:
/// the client reports a plain gRPC failure (it marks a commit undetermined only on
/// a transport error, not on a status) although the write is durable. The backend
/// must not call that a clean failure (`Unavailable` would let a caller assume
/// nothing was written); the committer settles it from the batch's outcome
/// records.
async fn a_commit_whose_replies_are_all_lost_is_undetermined_and_durable(commit: TikvCommit) {
    let kv = testkv(true).await;
    let store = connect(&kv, &format!("{commit:?}"), commit).await;
    kv.faults().drop_commit_replies(1_000, None);
    let keys = keys_across_regions();
    let mut txn = store.begin().await.expect("begin");
    for key in &keys {
        txn.put(key.clone(), b"v".to_vec()).await.expect("put");
    }
    let outcome = txn.commit().await;
    assert!(
        matches!(outcome, Err(StoreError::Undetermined(_))),
        "a commit whose reply was lost is undetermined: {outcome:?}"
    );
    kv.faults().clear();
    let mut snapshot = store.snapshot().await.expect("snapshot");
    for key in &keys {
        assert_eq!(
            snapshot.get(key).await.expect("get").as_deref(),
            Some(&b"v"[..]),
            "TiKV applied it, and the reader settled the secondary from the primary"
        );
    }
    served_everything(&kv);
}

#[tokio::test]
async fn two_phase_a_commit_whose_replies_are_all_lost_is_undetermined_and_durable() {
    a_commit_whose_replies_are_all_lost_is_undetermined_and_durable(TikvCommit::TwoPhase).await;
}

#[tokio::test]
async fn one_pc_a_commit_whose_replies_are_all_lost_is_undetermined_and_durable() {
    a_commit_whose_replies_are_all_lost_is_undetermined_and_durable(TikvCommit::OnePc).await;
}

/// 1PC is only tried when one request carries every key: a transaction across
/// regions falls back to two-phase commit, and a single-region one commits in one
/// RPC, with no `KvCommit`.
#[tokio::test]
async fn one_pc_commits_a_single_region_transaction_in_one_rpc_and_falls_back_across_regions() {
    let kv = testkv(true).await;
    let store = connect(&kv, "OnePc", TikvCommit::OnePc).await;
    let low = [
        b"\x7fconformance\x01a".to_vec(),
        b"\x7fconformance\x01b".to_vec(),
    ];
    commit_both(&store, &low, b"one").await;
    let counters = kv.counters();
    assert_eq!(
        (counters.get("KvPrewrite"), counters.get("KvCommit")),
        (Some(&1), None),
        "{counters:?}"
    );
    let across = [
        b"\x7fconformance\x01c".to_vec(),
        b"\x7fconformance\x05".to_vec(),
    ];
    commit_both(&store, &across, b"two").await;
    let counters = kv.counters();
    assert!(
        counters.get("KvCommit").copied().unwrap_or(0) > 0,
        "{counters:?}"
    );
    let mut snapshot = store.snapshot().await.expect("snapshot");
    for key in low.iter().chain(&across) {
        assert!(snapshot.get(key).await.expect("get").is_some());
    }
    served_everything(&kv);
}

#[tokio::test]
#[ignore = "needs a real PD + TiKV cluster named by PD_ADDRS"]
async fn tikv_store_passes_the_conformance_suite() {
    let addrs = std::env::var("PD_ADDRS").expect("PD_ADDRS names the PD endpoints");
    let endpoints: Vec<String> = addrs.split(',').map(str::to_owned).collect();
    // A fresh cell prefix per run, so earlier runs' keys never interfere.
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for commit in MODES {
        let prefix = key_prefix("conformance", &format!("run{run}-{commit:?}"));
        let store = TikvStore::connect(&endpoints, prefix, Duration::from_secs(10), commit)
            .await
            .expect("connect to TiKV");
        conformance::run(&store, SUITE_PREFIX).await;
        eprintln!("conformance suite passed with commit = {commit:?}");
    }
}

#[tokio::test]
async fn an_unreachable_cluster_fails_fast_naming_the_endpoints() {
    // Port 1 on loopback: nothing listens there.
    let endpoints = vec!["127.0.0.1:1".to_owned()];
    let started = Instant::now();
    let timeout = Duration::from_secs(5);
    let err = TikvStore::connect(
        &endpoints,
        key_prefix("d", "c"),
        timeout,
        Default::default(),
    )
    .await
    .expect_err("nothing listens on port 1");
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("127.0.0.1:1")),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
