//! End-to-end: accounts, transfers and orders through the router against a real
//! cluster, including the answers to bad input and to retried request ids.

use crate::support::{Cluster, ClusterBuilder};
use bytes::Bytes;
use http::{Method, StatusCode};
use ldc::client::Reply;
use serde_json::{Value, json};

const ITEMS: &str = "[[items]]\nid = \"hot\"\nname = \"Hot phone\"\nprice = 250\nstock = 30\n";

async fn post(cluster: &Cluster, path: &str, body: Value) -> Reply {
    let url = format!("{}{path}", cluster.router_url());
    cluster
        .client
        .send(Method::POST, &url, &[], Bytes::from(body.to_string()))
        .await
        .expect("router answers")
}

async fn get(cluster: &Cluster, path: &str) -> Reply {
    let url = format!("{}{path}", cluster.router_url());
    cluster.client.get(&url).await.expect("router answers")
}

#[tokio::test]
async fn deposits_transfers_and_orders_keep_the_books() {
    deposits_transfers_and_orders_keep_the_books_on(Cluster::builder()).await;
}

/// The test above on the cluster `builder` makes (the TiKV backend's run is
/// in `tikv.rs`).
pub async fn deposits_transfers_and_orders_keep_the_books_on(builder: ClusterBuilder) {
    let cluster = builder.cells(2).extra(ITEMS).spawn().await;
    let [amy, bob] = <[String; 2]>::try_from(cluster.users_of("c1", 2)).expect("two users");
    let far = &cluster.users_of("c2", 1)[0];

    let deposit = post(
        &cluster,
        &format!("/v1/users/{amy}/deposits"),
        json!({"amount": 1_000, "request_id": "d1"}),
    )
    .await;
    assert_eq!(deposit.status, StatusCode::CREATED, "{:?}", deposit.body);
    assert_eq!(deposit.json()["balance"], 1_000);
    assert_eq!(deposit.header("x-ldc-cell"), "c1");

    let transfer = post(
        &cluster,
        &format!("/v1/users/{amy}/transfers"),
        json!({"to_user": bob, "amount": 300, "request_id": "t1"}),
    )
    .await;
    assert_eq!(transfer.status, StatusCode::CREATED, "{:?}", transfer.body);
    assert_eq!(transfer.json()["balance"], 700);

    let across = post(
        &cluster,
        &format!("/v1/users/{amy}/transfers"),
        json!({"to_user": far, "amount": 1, "request_id": "t2"}),
    )
    .await;
    assert_eq!(across.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(across.json()["error"]["code"], "cross_cell_not_supported");
    assert_eq!(across.json()["error"]["owner"], "c2");

    let order = post(
        &cluster,
        &format!("/v1/users/{amy}/orders"),
        json!({"item_id": "hot", "quantity": 2, "request_id": "o1"}),
    )
    .await;
    assert_eq!(order.status, StatusCode::CREATED, "{:?}", order.body);
    let confirmed = order.json();
    assert_eq!(confirmed["status"], "confirmed");
    assert_eq!(confirmed["amount"], 500);
    assert_eq!(confirmed["quantity"], 2);
    let order_id = confirmed["order_id"].as_str().expect("order id").to_owned();

    let broke = post(
        &cluster,
        &format!("/v1/users/{bob}/orders"),
        json!({"item_id": "hot", "quantity": 2, "request_id": "o1"}),
    )
    .await;
    assert_eq!(broke.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(broke.json()["error"]["code"], "insufficient_funds");

    let unknown = post(
        &cluster,
        &format!("/v1/users/{amy}/orders"),
        json!({"item_id": "nope", "quantity": 1, "request_id": "o2"}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["error"]["code"], "unknown_item");

    assert_eq!(
        get(&cluster, &format!("/v1/users/{amy}/balance"))
            .await
            .json()["balance"],
        200
    );
    assert_eq!(
        get(&cluster, &format!("/v1/users/{bob}/balance"))
            .await
            .json()["balance"],
        300
    );
    let fetched = get(&cluster, &format!("/v1/users/{amy}/orders/{order_id}")).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.json()["item_id"], "hot");
    let missing = get(&cluster, &format!("/v1/users/{amy}/orders/o999")).await;
    assert_eq!(missing.json()["error"]["code"], "unknown_order");
    let orders = get(&cluster, &format!("/v1/users/{amy}/orders"))
        .await
        .json();
    assert_eq!(orders["orders"].as_array().expect("orders").len(), 1);

    // Journal: newest first, paged.
    let page = get(&cluster, &format!("/v1/users/{amy}/journal?limit=2"))
        .await
        .json();
    let kinds: Vec<&str> = page["postings"]
        .as_array()
        .expect("postings")
        .iter()
        .map(|p| p["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["order", "transfer_out"]);
    let before = page["next_before"].as_u64().expect("a next page");
    let rest = get(
        &cluster,
        &format!("/v1/users/{amy}/journal?limit=2&before={before}"),
    )
    .await
    .json();
    let kinds: Vec<&str> = rest["postings"]
        .as_array()
        .expect("postings")
        .iter()
        .map(|p| p["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["deposit"]);
    assert_eq!(rest["next_before"], Value::Null);

    let item = get(&cluster, "/v1/items/hot").await;
    assert_eq!(
        item.status,
        StatusCode::BAD_REQUEST,
        "the router needs a user to pick a cell"
    );
    let item = cluster
        .client
        .send(
            Method::GET,
            &format!("{}/v1/items/hot", cluster.router_url()),
            &[("x-user-id", &amy)],
            Bytes::new(),
        )
        .await
        .expect("router answers")
        .json();
    assert_eq!(
        (item["received"].as_u64(), item["sold"].as_u64()),
        (Some(15), Some(2))
    );

    let audit = cluster.audit("c1").await;
    assert_eq!(audit["ledger"]["net"], 0);
    assert_eq!(audit["ledger"]["deposits"], 1_000);
    assert_eq!(audit["ledger"]["merchant_balance"], 500);
    assert_eq!(audit["ledger"]["items"]["hot"]["sold"], 2);
    assert_eq!(audit["cache_remaining"]["hot"], 13);
}

#[tokio::test]
async fn a_retried_request_id_answers_its_first_outcome_byte_for_byte() {
    let cluster = Cluster::builder().cells(2).extra(ITEMS).spawn().await;
    let amy = &cluster.users_of("c2", 1)[0];
    let path = format!("/v1/users/{amy}/deposits");
    let first = post(
        &cluster,
        &path,
        json!({"amount": 700, "request_id": "same"}),
    )
    .await;
    // Same fields in another order and spacing: the same request.
    let again = post(
        &cluster,
        &path,
        json!({"request_id": "same", "amount": 700}),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);
    let reused = post(
        &cluster,
        &path,
        json!({"amount": 701, "request_id": "same"}),
    )
    .await;
    assert_eq!(reused.status, StatusCode::CONFLICT);
    assert_eq!(reused.json()["error"]["code"], "request_id_reused");
    assert_eq!(
        get(&cluster, &format!("/v1/users/{amy}/balance"))
            .await
            .json()["balance"],
        700
    );

    let order_path = format!("/v1/users/{amy}/orders");
    let order = json!({"item_id": "hot", "quantity": 1, "request_id": "buy"});
    let first = post(&cluster, &order_path, order.clone()).await;
    let again = post(&cluster, &order_path, order).await;
    assert_eq!(
        (first.status, again.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert_eq!(again.body, first.body);
    let orders = get(&cluster, &format!("/v1/users/{amy}/orders"))
        .await
        .json();
    assert_eq!(
        orders["orders"].as_array().expect("orders").len(),
        1,
        "applied once"
    );
}

#[tokio::test]
async fn bad_bodies_get_400_naming_the_problem() {
    let cluster = Cluster::builder().cells(1).extra(ITEMS).spawn().await;
    let amy = "amy";
    let cases = [
        ("deposits", "not json", "invalid_body", None),
        ("deposits", r#"{"amount": 5}"#, "invalid_body", None),
        (
            "deposits",
            r#"{"amount": 5, "request_id": "r", "extra": 1}"#,
            "invalid_body",
            None,
        ),
        (
            "deposits",
            r#"{"amount": 0, "request_id": "r"}"#,
            "invalid_body",
            Some("amount"),
        ),
        (
            "deposits",
            r#"{"amount": -5, "request_id": "r"}"#,
            "invalid_body",
            Some("amount"),
        ),
        (
            "deposits",
            r#"{"amount": 1.5, "request_id": "r"}"#,
            "invalid_body",
            None,
        ),
        (
            "deposits",
            r#"{"amount": 99999999999999999999, "request_id": "r"}"#,
            "invalid_body",
            None,
        ),
        (
            "deposits",
            r#"{"amount": 5, "request_id": "has space"}"#,
            "invalid_body",
            Some("request_id"),
        ),
        (
            "transfers",
            r#"{"to_user": "a.b", "amount": 5, "request_id": "r"}"#,
            "invalid_body",
            Some("to_user"),
        ),
        (
            "transfers",
            r#"{"to_user": "amy", "amount": 5, "request_id": "r"}"#,
            "same_user",
            None,
        ),
        (
            "orders",
            r#"{"item_id": "hot", "quantity": 0, "request_id": "r"}"#,
            "invalid_body",
            Some("quantity"),
        ),
        (
            "orders",
            r#"{"item_id": "hot", "quantity": 11, "request_id": "r"}"#,
            "invalid_body",
            Some("quantity"),
        ),
        (
            "orders",
            r#"{"item_id": "hot", "quantity": -1, "request_id": "r"}"#,
            "invalid_body",
            None,
        ),
    ];
    for (route, body, code, field) in cases {
        let url = format!("{}/v1/users/{amy}/{route}", cluster.router_url());
        let reply = cluster
            .client
            .send(Method::POST, &url, &[], Bytes::from(body))
            .await
            .expect("router answers");
        let error = &reply.json()["error"];
        assert!(
            reply.status.is_client_error(),
            "{route} {body}: {}",
            reply.status
        );
        assert_eq!(error["code"], code, "{route} {body}: {error}");
        if let Some(field) = field {
            assert_eq!(error["field"], field, "{route} {body}");
        }
        assert!(!error["message"].as_str().unwrap_or_default().is_empty());
    }
    let huge = format!(r#"{{"amount": 5, "request_id": "{}"}}"#, "x".repeat(70_000));
    let url = format!("{}/v1/users/{amy}/deposits", cluster.cell_url("c1"));
    let reply = cluster
        .client
        .send(Method::POST, &url, &[], Bytes::from(huge))
        .await
        .expect("cell answers");
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    let bad_query = get(&cluster, &format!("/v1/users/{amy}/journal?limit=0")).await;
    assert_eq!(bad_query.json()["error"]["code"], "invalid_query");
    assert_eq!(
        get(&cluster, &format!("/v1/users/{amy}/balance"))
            .await
            .json()["balance"],
        0,
        "nothing was applied"
    );
}
