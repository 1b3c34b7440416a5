//! The cluster tests on the TiKV backend: cells keep their ledgers in testkv (the
//! PD + TiKV test server, in this process), two stores and a region split between
//! cells, so the real `tikv-client` routes, retries and resolves for real. The
//! flash sale, the books, leased stock and a takeover across processes run as on
//! the embedded store; a commit whose replies are lost is the TiKV-only case. (The
//! chaos runs on testkv are in `tests/chaos.rs`, which has the host to itself.)

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use testkv::{Config, TestKv};

use crate::support::Cluster;
use crate::{failover, flash_sale, global_zone, ledger};

/// Two stores, the regions split at the second cell's prefix, so one cell's
/// ledger and another's live on different stores.
async fn testkv() -> TestKv {
    TestKv::start(Config {
        stores: 2,
        split_keys: vec![b"ldc/test/c2/".to_vec(), b"ldc/test/c3/".to_vec()],
        ..Config::default()
    })
    .await
    .expect("testkv starts")
}

/// Every RPC the client sent was one testkv serves.
fn served_everything(kv: &TestKv) {
    assert!(
        kv.unimplemented().is_empty(),
        "the client called RPCs testkv does not serve: {:?}",
        kv.unimplemented()
    );
}

#[tokio::test]
async fn orders_sell_exactly_the_stock_on_tikv() {
    let kv = testkv().await;
    flash_sale::thousands_of_concurrent_orders_sell_exactly_the_stock_on(
        Cluster::builder().tikv(&kv),
    )
    .await;
    served_everything(&kv);
}

#[tokio::test]
async fn a_cell_killed_under_orders_loses_nothing_on_tikv() {
    let kv = testkv().await;
    flash_sale::a_cell_killed_under_orders_loses_nothing_acknowledged_and_applies_nothing_twice_on(
        Cluster::builder().tikv(&kv),
    )
    .await;
    served_everything(&kv);
}

#[tokio::test]
async fn the_books_balance_on_tikv() {
    let kv = testkv().await;
    ledger::deposits_transfers_and_orders_keep_the_books_on(Cluster::builder().tikv(&kv)).await;
    served_everything(&kv);
}

#[tokio::test]
async fn leased_stock_sells_exactly_once_on_tikv() {
    let kv = testkv().await;
    global_zone::leased_stock_sells_exactly_once_across_kills_of_a_cell_and_the_global_zone_host_on(
        Cluster::builder().tikv(&kv),
    )
    .await;
    served_everything(&kv);
}

/// The standby is another process with no access to the killed cell's data
/// directory: it takes the shard over through the holds in TiKV. (The hold's
/// lease runs out before the standby may claim, so c2 comes back later than on
/// the embedded store.)
#[tokio::test]
async fn a_killed_cells_standby_takes_over_through_tikv() {
    let kv = testkv().await;
    failover::a_killed_cells_users_move_to_its_standby_and_back_losing_nothing_on(
        Cluster::builder().tikv(&kv).restart_backoff_ms(5_000),
        Duration::from_secs(4),
    )
    .await;
    served_everything(&kv);
}

async fn post(cluster: &Cluster, path: &str, body: Value) -> (StatusCode, Value) {
    let url = format!("{}{path}", cluster.router_url());
    let reply = cluster
        .client
        .send(Method::POST, &url, &[], Bytes::from(body.to_string()))
        .await
        .expect("router answers");
    (reply.status, reply.json())
}

/// TiKV applied the commit and every reply to it was lost, past the client's
/// resends (one lost reply the client absorbs by resending the idempotent commit):
/// the cell reads the request's outcome record back instead of failing the order
/// or applying it again.
#[tokio::test]
async fn an_order_whose_commit_reply_was_lost_is_confirmed_exactly_once() {
    let kv = testkv().await;
    let items = "[[items]]\nid = \"hot\"\nname = \"Hot phone\"\nprice = 100\nstock = 30\n";
    let cluster = Cluster::builder()
        .cells(1)
        .tikv(&kv)
        .extra(items)
        .spawn()
        .await;
    let user = &cluster.users_of("c1", 1)[0];
    let (status, body) = post(
        &cluster,
        &format!("/v1/users/{user}/deposits"),
        json!({"amount": 1_000, "request_id": "d1"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The order's batch is the only ledger transaction that writes the user's keys
    // (its primary is the ownership record, which every batch writes).
    kv.faults()
        .drop_commit_replies(1_000, Some(user.clone().into_bytes()));
    let order = json!({"item_id": "hot", "quantity": 1, "request_id": "o1"});
    let path = format!("/v1/users/{user}/orders");
    let (status, first) = post(&cluster, &path, order.clone()).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the applied order is confirmed: {first}"
    );
    kv.faults().clear();
    let dropped = kv
        .counters()
        .get("fault.drop_commit_reply")
        .copied()
        .unwrap_or(0);
    // Every reply was lost, so the 201 came from the outcome record.
    assert!(
        dropped >= 1,
        "the order's commit lost its reply (as did any resend): {dropped}"
    );
    let (status, replay) = post(&cluster, &path, order).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(replay, first, "a retry answers the first outcome");
    let audit = cluster.audit("c1").await;
    assert_eq!(audit["ledger"]["items"]["hot"]["sold"], 1, "sold once");
    assert_eq!(audit["ledger"]["net"], 0, "money is conserved");
    let balance = cluster
        .client
        .get(&format!("{}/v1/users/{user}/balance", cluster.router_url()))
        .await
        .expect("router answers");
    assert_eq!(balance.status, StatusCode::OK);
    assert_eq!(balance.json()["balance"], 900, "paid once");
    served_everything(&kv);
}
