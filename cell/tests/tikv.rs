//! The ledger conformance suite against a real TiKV cluster, when `PD_ADDRS` names
//! its PD endpoints (comma-separated), e.g. after `tiup playground`:
//! `PD_ADDRS=127.0.0.1:2379 cargo test -p ldc-cell --all-features --test tikv -- --ignored`.
//! Without a cluster, only the check that an unreachable one fails fast with an
//! error naming the endpoints runs.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ldc_cell::store::{StoreError, TikvStore, conformance, tikv::key_prefix};
use ldc_topology::TikvCommit;

#[tokio::test]
#[ignore = "needs a real PD + TiKV cluster named by PD_ADDRS"]
async fn tikv_store_passes_the_conformance_suite() {
    let addrs = std::env::var("PD_ADDRS").expect("PD_ADDRS names the PD endpoints");
    let endpoints: Vec<String> = addrs.split(',').map(str::to_owned).collect();
    // A fresh cell prefix per run, so earlier runs' keys never interfere.
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for commit in [TikvCommit::TwoPhase, TikvCommit::Async, TikvCommit::OnePc] {
        let prefix = key_prefix("conformance", &format!("run{run}-{commit:?}"));
        let store = TikvStore::connect(&endpoints, prefix, Duration::from_secs(10), commit)
            .await
            .expect("connect to TiKV");
        conformance::run(&store, b"\x7fconformance").await;
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
