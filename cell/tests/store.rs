//! The embedded store against the conformance suite, and the ledger logic over it:
//! double entry, refusals inside a batch, idempotency, the oversell guard.

use http::StatusCode;
use ldc_cell::ledger::{self, Command, Request};
use ldc_cell::store::{EmbeddedStore, Store, StoreError, Transaction, conformance};
use serde_json::Value;

fn store() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(&dir.path().join("cell")).expect("open store");
    (dir, store)
}

#[tokio::test]
async fn embedded_store_passes_the_conformance_suite() {
    let (_dir, store) = store();
    conformance::run(&store, b"\x7fconformance").await;
}

#[tokio::test]
async fn a_data_directory_opens_in_one_place_at_a_time() {
    let (dir, store) = store();
    let second = EmbeddedStore::open(&dir.path().join("cell"));
    assert!(matches!(second, Err(StoreError::Locked(_))), "{second:?}");
    drop(store);
    EmbeddedStore::open(&dir.path().join("cell")).expect("free again once the first is closed");
}

fn request(user: &str, slot: u32, request_id: &str, command: Command) -> Request {
    Request {
        user: user.to_owned(),
        slot,
        request_id: request_id.to_owned(),
        command,
    }
}

fn deposit(user: &str, request_id: &str, amount: i64) -> Request {
    request(user, 1, request_id, Command::Deposit { amount })
}

fn transfer(from: &str, to: &str, to_slot: u32, request_id: &str, amount: i64) -> Request {
    let command = Command::Transfer {
        to_user: to.to_owned(),
        to_slot,
        amount,
    };
    request(from, 1, request_id, command)
}

fn order(user: &str, request_id: &str, quantity: u32) -> Request {
    let command = Command::Order {
        item_id: "hot".to_owned(),
        quantity,
        price: 100,
    };
    request(user, 1, request_id, command)
}

fn body(reply: &ledger::Reply) -> Value {
    serde_json::from_slice(&reply.body).expect("JSON reply")
}

async fn audit(store: &EmbeddedStore) -> ledger::Audit {
    let mut snapshot = store.snapshot().await.expect("snapshot");
    ledger::audit(&mut snapshot, &["hot".to_owned()])
        .await
        .expect("audit")
}

/// Applies `requests` in one transaction and commits it.
async fn batch(store: &EmbeddedStore, stock: u64, requests: &[Request]) -> Vec<ledger::Reply> {
    let mut txn = store.begin().await.expect("begin");
    ledger::receive_stock(&mut txn, "hot", stock)
        .await
        .expect("stock");
    let mut replies = Vec::new();
    for request in requests {
        let write = ledger::Write::User(request.clone());
        replies.push(ledger::apply(&mut txn, &write, 1).await.expect("apply"));
    }
    txn.commit().await.expect("commit");
    replies
}

#[tokio::test]
async fn money_moves_by_double_entry_and_is_conserved() {
    let (_dir, store) = store();
    let replies = batch(
        &store,
        10,
        &[
            deposit("amy", "d1", 1_000),
            order("amy", "o1", 3),
            transfer("amy", "bob", 2, "t1", 200),
        ],
    )
    .await;
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::CREATED, "{}", body(reply));
        assert!(reply.applied);
    }
    assert_eq!(body(&replies[1])["amount"], 300);
    let mut snapshot = store.snapshot().await.expect("snapshot");
    let balance = ledger::balance(&mut snapshot, 1, "amy")
        .await
        .expect("balance");
    assert_eq!(balance, 500);
    let balance = ledger::balance(&mut snapshot, 2, "bob")
        .await
        .expect("balance");
    assert_eq!(balance, 200);
    let (postings, _) = ledger::page(&mut snapshot, 1, "amy", ledger::keys::JOURNAL, None, 10)
        .await
        .expect("journal");
    let amounts: Vec<i64> = postings
        .iter()
        .map(|p| p["amount"].as_i64().expect("amount"))
        .collect();
    assert_eq!(amounts, [-200, -300, 1_000], "newest first");
    let audit = audit(&store).await;
    assert_eq!(audit.deposits, 1_000);
    assert_eq!(audit.sum_of_user_balances, 700);
    assert_eq!(audit.merchant_balance, 300);
    assert_eq!(audit.net, 0, "every transfer's postings sum to zero");
    assert_eq!(audit.items["hot"].sold, 3);
    assert_eq!(audit.items["hot"].sold_by_orders, 3);
}

#[tokio::test]
async fn a_refused_request_leaves_no_trace_while_its_batch_commits() {
    let (_dir, store) = store();
    let replies = batch(
        &store,
        10,
        &[
            deposit("amy", "d1", 1_000),
            order("bob", "o1", 1),
            order("amy", "o2", 2),
        ],
    )
    .await;
    assert_eq!(replies[0].status, StatusCode::CREATED);
    let broke = &replies[1];
    assert_eq!(broke.status, StatusCode::PAYMENT_REQUIRED);
    assert!(!broke.applied);
    assert_eq!(body(broke)["error"]["code"], "insufficient_funds");
    assert_eq!(replies[2].status, StatusCode::CREATED);
    let mut snapshot = store.snapshot().await.expect("snapshot");
    let (bob_journal, _) = ledger::page(&mut snapshot, 1, "bob", ledger::keys::JOURNAL, None, 10)
        .await
        .expect("journal");
    assert!(bob_journal.is_empty(), "a refusal writes no posting");
    let audit = audit(&store).await;
    assert_eq!(audit.items["hot"].sold, 2, "only the paid order took stock");
    assert_eq!(audit.negative_balances, 0);
    assert_eq!(audit.net, 0);

    // The refusal is the request id's outcome from now on, even once bob can pay.
    let later = batch(
        &store,
        10,
        &[deposit("bob", "d2", 1_000), order("bob", "o1", 1)],
    )
    .await;
    assert_eq!(later[1].status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(later[1].body, broke.body, "byte for byte");
}

#[tokio::test]
async fn a_request_id_applies_once_and_cannot_be_reused() {
    let (_dir, store) = store();
    let first = batch(
        &store,
        0,
        &[deposit("amy", "d1", 500), deposit("amy", "d1", 500)],
    )
    .await;
    let later = batch(
        &store,
        0,
        &[deposit("amy", "d1", 500), deposit("amy", "d1", 501)],
    )
    .await;
    assert!(first[0].applied && !first[1].applied && !later[0].applied);
    assert_eq!(first[1].body, first[0].body, "a retry in the same batch");
    assert_eq!(later[0].body, first[0].body, "a retry in a later batch");
    assert_eq!(later[0].status, StatusCode::CREATED);
    assert_eq!(later[1].status, StatusCode::CONFLICT);
    assert_eq!(body(&later[1])["error"]["code"], "request_id_reused");
    let mut snapshot = store.snapshot().await.expect("snapshot");
    let balance = ledger::balance(&mut snapshot, 1, "amy")
        .await
        .expect("balance");
    assert_eq!(balance, 500);
}

#[tokio::test]
async fn the_ledger_refuses_to_sell_more_than_the_cell_received() {
    let (_dir, store) = store();
    let replies = batch(
        &store,
        2,
        &[
            deposit("amy", "d1", 10_000),
            order("amy", "o1", 2),
            order("amy", "o2", 1),
        ],
    )
    .await;
    assert_eq!(replies[1].status, StatusCode::CREATED);
    assert_eq!(replies[2].status, StatusCode::CONFLICT);
    assert_eq!(body(&replies[2])["error"]["code"], "sold_out");
    // A second start keeps the first share: what was received comes from the ledger.
    let mut txn = store.begin().await.expect("begin");
    let stock = ledger::receive_stock(&mut txn, "hot", 99)
        .await
        .expect("stock");
    txn.commit().await.expect("commit");
    assert_eq!((stock.received, stock.sold), (2, 2));
}

#[tokio::test]
async fn balances_cannot_overflow_or_go_negative() {
    let (_dir, store) = store();
    let max = ldc_topology::MAX_MONEY as i64;
    let replies = batch(
        &store,
        0,
        &[
            deposit("amy", "d1", max),
            deposit("amy", "d2", 1),
            transfer("bob", "amy", 1, "t1", 1),
        ],
    )
    .await;
    assert_eq!(replies[0].status, StatusCode::CREATED);
    assert_eq!(replies[1].status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body(&replies[1])["error"]["code"], "amount_too_large");
    assert_eq!(replies[2].status, StatusCode::PAYMENT_REQUIRED);
    let audit = audit(&store).await;
    assert_eq!((audit.negative_balances, audit.net), (0, 0));
    assert_eq!(audit.sum_of_user_balances, max);
}

/// Applies one stock write in its own transaction; returns its status and body.
async fn stock_write(store: &EmbeddedStore, write: ledger::StockWrite) -> (StatusCode, Value) {
    let mut txn = store.begin().await.expect("begin");
    let reply = ledger::apply(&mut txn, &ledger::Write::Stock(write), 7)
        .await
        .expect("apply");
    txn.commit().await.expect("commit");
    (reply.status, body(&reply))
}

fn grant(seq: u64, units: i64) -> ledger::StockWrite {
    ledger::StockWrite::Grant {
        item_id: "hot".to_owned(),
        cell: "c1".to_owned(),
        seq,
        units,
        cells: 2,
        lease_min: 5,
    }
}

fn begin(units: i64) -> ledger::StockWrite {
    ledger::StockWrite::Begin {
        item_id: "hot".to_owned(),
        meta: ledger::ItemMeta {
            name: "Hot".to_owned(),
            price: 100,
        },
        units,
    }
}

fn finish(seq: u64, units: i64) -> ledger::StockWrite {
    ledger::StockWrite::Finish {
        item_id: "hot".to_owned(),
        seq,
        units,
    }
}

async fn held(gz: &EmbeddedStore) -> Value {
    let mut snapshot = gz.snapshot().await.expect("snapshot");
    ledger::gz::audit(&mut snapshot).await.expect("audit")["hot"].clone()
}

#[tokio::test]
async fn a_lease_is_recorded_once_on_both_sides_across_retries_and_returns() {
    let (_gz_dir, gz) = store();
    let (_cell_dir, cell) = store();
    let create = |stock| ledger::StockWrite::Create {
        item_id: "hot".to_owned(),
        name: "Hot".to_owned(),
        price: 100,
        stock,
    };
    assert_eq!(stock_write(&gz, create(100)).await.0, StatusCode::CREATED);
    assert_eq!(stock_write(&gz, create(100)).await.0, StatusCode::OK);
    let (status, other) = stock_write(&gz, create(99)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(other["error"]["code"], "item_exists");

    // The cell records lease 1 before asking; asking again (a crash in between)
    // finds the same lease pending instead of starting a second one.
    let (status, pending) = stock_write(&cell, begin(80)).await;
    assert_eq!(
        (status, &pending["seq"]),
        (StatusCode::CREATED, &Value::from(1))
    );
    assert_eq!(stock_write(&cell, begin(30)).await.1["units"], 80);
    // The global zone grants a fair part (100 / 2 cells), and the same to a retry.
    let (status, granted) = stock_write(&gz, grant(1, 80)).await;
    assert_eq!(
        (status, granted["units"].as_i64()),
        (StatusCode::CREATED, Some(50))
    );
    let (status, again) = stock_write(&gz, grant(1, 80)).await;
    assert_eq!(
        (status, again["units"].as_i64()),
        (StatusCode::OK, Some(50))
    );
    assert_eq!(
        stock_write(&gz, grant(3, 10)).await.1["error"]["code"],
        "lease_out_of_order"
    );
    assert_eq!(
        stock_write(&gz, grant(1, -5)).await.1["error"]["code"],
        "lease_mismatch",
        "a replay must ask what the lease asked"
    );
    assert_eq!(
        stock_write(&cell, finish(1, 90)).await.0,
        StatusCode::CONFLICT,
        "more than asked"
    );
    assert_eq!(
        stock_write(&cell, finish(1, 50)).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        stock_write(&cell, finish(1, 50)).await.0,
        StatusCode::OK,
        "a replay"
    );
    assert_eq!(
        (
            held(&gz).await["available"].as_u64(),
            held(&gz).await["held_by_cells"].as_u64()
        ),
        (Some(50), Some(50))
    );

    // Two units sold, then the rest given back: off sale at once, accounted on
    // both sides, and stock == available + held throughout.
    let replies = batch(
        &cell,
        0,
        &[deposit("amy", "d1", 1_000), order("amy", "o1", 2)],
    )
    .await;
    assert_eq!(replies[1].status, StatusCode::CREATED);
    assert_eq!(
        stock_write(&cell, begin(-49)).await.0,
        StatusCode::CONFLICT,
        "only 48 left"
    );
    let (_, giving) = stock_write(&cell, begin(-48)).await;
    assert_eq!(giving["seq"], 2);
    let replies = batch(&cell, 0, &[order("amy", "o2", 1)]).await;
    assert_eq!(
        body(&replies[0])["error"]["code"],
        "sold_out",
        "returning units are not for sale"
    );
    assert_eq!(
        stock_write(&gz, grant(2, -60)).await.1["error"]["code"],
        "return_exceeds_quota"
    );
    assert_eq!(stock_write(&gz, grant(2, -48)).await.0, StatusCode::CREATED);
    assert_eq!(
        stock_write(&cell, finish(2, -48)).await.0,
        StatusCode::CREATED
    );
    let books = held(&gz).await;
    assert_eq!(
        (books["available"].as_u64(), books["held_by_cells"].as_u64()),
        (Some(98), Some(2))
    );
    let audit = audit(&cell).await;
    let hot = &audit.items["hot"];
    assert_eq!(
        (hot.received, hot.sold, hot.remaining, hot.leases),
        (2, 2, 0, 2)
    );

    // A closed sale grants nothing more.
    assert_eq!(
        stock_write(
            &gz,
            ledger::StockWrite::Close {
                item_id: "hot".to_owned()
            }
        )
        .await
        .1["closed"],
        true
    );
    let (_, closed) = stock_write(&gz, grant(3, 10)).await;
    assert_eq!(
        (closed["units"].as_i64(), closed["closed"].as_bool()),
        (Some(0), Some(true))
    );
}

/// A transaction that records the keys read through it.
struct Watched<T> {
    txn: T,
    read: Vec<Vec<u8>>,
}

impl<T: Transaction> Transaction for Watched<T> {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read.push(key.to_vec());
        self.txn.get(key).await
    }

    async fn get_for_update(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read.push(key.to_vec());
        self.txn.get_for_update(key).await
    }

    async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError> {
        self.txn.put(key, value).await
    }

    async fn delete(&mut self, key: Vec<u8>) -> Result<(), StoreError> {
        self.txn.delete(key).await
    }

    async fn scan(
        &mut self,
        range: std::ops::Range<Vec<u8>>,
        limit: usize,
        order: ldc_cell::store::ScanOrder,
    ) -> Result<ldc_cell::store::Pairs, StoreError> {
        self.txn.scan(range, limit, order).await
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.txn.commit().await
    }

    async fn rollback(self) -> Result<(), StoreError> {
        self.txn.rollback().await
    }
}

/// On TiKV a batch reads ahead what `ledger::reads` names: a key it misses costs a
/// round trip per request.
#[tokio::test]
async fn a_request_reads_only_the_keys_its_batch_read_ahead() {
    let (_dir, store) = store();
    batch(&store, 1, &[deposit("amy", "d0", 1_000)]).await;
    let requests = [
        deposit("amy", "d1", 10),
        deposit("amy", "d1", 10),
        transfer("amy", "bob", 2, "t1", 20),
        transfer("amy", "bob", 2, "t2", 1_000_000),
        order("amy", "o1", 1),
        order("amy", "o2", 1),
    ];
    let mut txn = Watched {
        txn: store.begin().await.expect("begin"),
        read: Vec::new(),
    };
    for request in requests {
        let write = ledger::Write::User(request);
        let ahead = ledger::reads(&write);
        txn.read.clear();
        let reply = ledger::apply(&mut txn, &write, 1).await.expect("apply");
        assert!(!txn.read.is_empty());
        for key in &txn.read {
            assert!(
                ahead.contains(key),
                "{write:?} ({}) read {key:?}, not read ahead",
                reply.status
            );
        }
    }
    txn.commit().await.expect("commit");
}
