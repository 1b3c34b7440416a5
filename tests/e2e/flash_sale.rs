//! End-to-end flash sales: thousands of concurrent orders never oversell, and a cell
//! SIGKILLed while orders flow loses no acknowledged order and applies no request
//! id twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::support::{Cluster, ClusterBuilder};
use bytes::Bytes;
use http::{Method, StatusCode};
use ldc::client::HttpClient;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

fn item(stock: u64) -> String {
    format!("[[items]]\nid = \"hot\"\nname = \"Hot phone\"\nprice = 100\nstock = {stock}\n")
}

/// One order attempt: who, which request id, and what came back (`None`: no
/// response at all, e.g. the connection broke).
#[derive(Debug, Clone)]
struct Attempt {
    user: String,
    request_id: String,
    status: Option<StatusCode>,
    body: Bytes,
}

async fn order(client: &HttpClient, router: &str, user: &str, request_id: &str) -> Attempt {
    let body = json!({"item_id": "hot", "quantity": 1, "request_id": request_id}).to_string();
    let url = format!("{router}/v1/users/{user}/orders");
    let reply = client
        .send(Method::POST, &url, &[], Bytes::from(body))
        .await;
    Attempt {
        user: user.to_owned(),
        request_id: request_id.to_owned(),
        status: reply.as_ref().ok().map(|r| r.status),
        body: reply.map(|r| r.body).unwrap_or_default(),
    }
}

/// Sends an attempt's order again, with its request id.
async fn retry(cluster: &Cluster, attempt: &Attempt) -> Attempt {
    let router = cluster.router_url();
    order(&cluster.client, &router, &attempt.user, &attempt.request_id).await
}

#[tokio::test]
async fn thousands_of_concurrent_orders_sell_exactly_the_stock() {
    thousands_of_concurrent_orders_sell_exactly_the_stock_on(Cluster::builder()).await;
}

/// The test above on the cluster `builder` makes (the TiKV backend's run is
/// in `tikv.rs`).
pub async fn thousands_of_concurrent_orders_sell_exactly_the_stock_on(builder: ClusterBuilder) {
    let cluster = builder.cells(3).extra(&item(60)).spawn().await;
    let users: Vec<String> = ["c1", "c2", "c3"]
        .iter()
        .flat_map(|c| cluster.users_of(c, 60))
        .collect();
    cluster.deposit_all(&users, 10_000).await;

    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = JoinSet::new();
    for round in 0..12 {
        for user in &users {
            let (client, router, user) =
                (cluster.client.clone(), cluster.router_url(), user.clone());
            let gate = gate.clone();
            tasks.spawn(async move {
                let _permit = gate.acquire().await.expect("gate");
                order(&client, &router, &user, &format!("r{round}")).await
            });
        }
    }
    let attempts = tasks.join_all().await;
    assert_eq!(attempts.len(), 2_160);
    let confirmed = attempts
        .iter()
        .filter(|a| a.status == Some(StatusCode::CREATED))
        .count();
    let sold_out = attempts
        .iter()
        .filter(|a| a.status == Some(StatusCode::CONFLICT))
        .count();
    let others: Vec<_> = attempts
        .iter()
        .filter(|a| !matches!(a.status, Some(StatusCode::CREATED | StatusCode::CONFLICT)))
        .take(5)
        .map(|a| format!("{:?} {}", a.status, String::from_utf8_lossy(&a.body)))
        .collect();
    assert_eq!(
        confirmed, 60,
        "exactly the stock is sold; others: {others:?}"
    );
    assert_eq!(
        confirmed + sold_out,
        attempts.len(),
        "every other attempt is sold_out; the first others: {others:?}"
    );
    for cell in ["c1", "c2", "c3"] {
        let audit = cluster.audit(cell).await;
        let hot = &audit["ledger"]["items"]["hot"];
        assert_eq!(hot["received"], 20, "{cell}: its weight's share");
        assert_eq!(hot["sold"], 20, "{cell}: sold its whole share");
        assert_eq!(
            hot["sold_by_orders"], 20,
            "{cell}: orders agree with the stock record"
        );
        assert_eq!(audit["cache_remaining"]["hot"], 0, "{cell}");
        assert_eq!(audit["ledger"]["net"], 0, "{cell}: money is conserved");
        assert_eq!(audit["ledger"]["negative_balances"], 0, "{cell}");
        assert_eq!(audit["ledger"]["merchant_balance"], 2_000, "{cell}");
    }
}

#[tokio::test]
async fn a_cell_killed_under_orders_loses_nothing_acknowledged_and_applies_nothing_twice() {
    a_cell_killed_under_orders_loses_nothing_acknowledged_and_applies_nothing_twice_on(
        Cluster::builder(),
    )
    .await;
}

/// The test above on the cluster `builder` makes (the TiKV backend's run is
/// in `tikv.rs`).
pub async fn a_cell_killed_under_orders_loses_nothing_acknowledged_and_applies_nothing_twice_on(
    builder: ClusterBuilder,
) {
    let mut cluster = builder
        .cells(3)
        .restart_backoff_ms(300)
        .extra(&item(30_000))
        .spawn()
        .await;
    let victims = cluster.users_of("c2", 40);
    cluster.deposit_all(&victims, 1_000_000).await;

    let stop = Arc::new(AtomicBool::new(false));
    let confirmed = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let mut streams = JoinSet::new();
    for user in victims.clone() {
        let (client, router) = (cluster.client.clone(), cluster.router_url());
        let (stop, confirmed, progress) = (stop.clone(), confirmed.clone(), progress.clone());
        streams.spawn(async move {
            let mut attempts = Vec::new();
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let attempt = order(&client, &router, &user, &format!("k{n}")).await;
                if attempt.status == Some(StatusCode::CREATED) {
                    confirmed.fetch_add(1, Ordering::Relaxed);
                    progress.notify_waiters();
                }
                attempts.push(attempt);
            }
            attempts
        });
    }
    let wait_for = |target: usize| {
        let (confirmed, progress) = (confirmed.clone(), progress.clone());
        async move {
            while confirmed.load(Ordering::Relaxed) < target {
                let notified = progress.notified();
                if confirmed.load(Ordering::Relaxed) >= target {
                    break;
                }
                notified.await;
            }
        }
    };
    wait_for(200).await;
    cluster.kill9("c2");
    cluster.next_event_matching("restarted cell c2").await;
    let after_restart = confirmed.load(Ordering::Relaxed) + 200;
    tokio::time::timeout(crate::support::EVENT_TIMEOUT, wait_for(after_restart))
        .await
        .expect("orders succeed again after the restart");
    stop.store(true, Ordering::Relaxed);
    let attempts: Vec<Attempt> = streams.join_all().await.into_iter().flatten().collect();

    let acknowledged: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.status == Some(StatusCode::CREATED))
        .collect();
    let unanswered: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.status != Some(StatusCode::CREATED))
        .collect();
    assert!(!unanswered.is_empty(), "the kill interrupted some orders");
    for attempt in &unanswered {
        assert!(
            matches!(
                attempt.status,
                None | Some(StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE)
            ),
            "an order failed for another reason: {attempt:?}"
        );
    }
    // Every acknowledged order is in the ledger, and a retry answers it byte for byte.
    for attempt in &acknowledged {
        let reply = retry(&cluster, attempt).await;
        assert_eq!(reply.status, Some(StatusCode::CREATED), "{attempt:?}");
        assert_eq!(reply.body, attempt.body, "first outcome, byte for byte");
        let order_id = serde_json::from_slice::<Value>(&attempt.body).expect("json")["order_id"]
            .as_str()
            .expect("order id")
            .to_owned();
        let url = format!(
            "{}/v1/users/{}/orders/{order_id}",
            cluster.router_url(),
            attempt.user
        );
        let stored = cluster.client.get(&url).await.expect("router answers");
        assert_eq!(
            stored.status,
            StatusCode::OK,
            "acknowledged {order_id} is in the ledger"
        );
    }
    // Interrupted orders may or may not have committed; a retry settles them, once.
    for attempt in &unanswered {
        let reply = retry(&cluster, attempt).await;
        assert_eq!(
            reply.status,
            Some(StatusCode::CREATED),
            "retry of {attempt:?}"
        );
    }
    let mut orders_in_ledger = 0;
    for user in &victims {
        let url = format!("{}/v1/users/{user}/orders?limit=100", cluster.router_url());
        let mut before = None::<u64>;
        loop {
            let page_url = match before {
                Some(b) => format!("{url}&before={b}"),
                None => url.clone(),
            };
            let page = cluster.client.get(&page_url).await.expect("orders").json();
            orders_in_ledger += page["orders"].as_array().expect("orders").len();
            match page["next_before"].as_u64() {
                Some(next) => before = Some(next),
                None => break,
            }
        }
    }
    assert_eq!(
        orders_in_ledger,
        attempts.len(),
        "each request id became exactly one order"
    );
    let audit = cluster.audit("c2").await;
    let hot = &audit["ledger"]["items"]["hot"];
    assert_eq!(
        hot["sold"].as_u64(),
        Some(attempts.len() as u64),
        "nothing sold twice"
    );
    assert_eq!(hot["sold_by_orders"], hot["sold"]);
    assert_eq!(
        audit["cache_remaining"]["hot"], hot["remaining"],
        "cache agrees with the ledger"
    );
    assert_eq!(audit["ledger"]["net"], 0);
    assert_eq!(audit["ledger"]["negative_balances"], 0);
}
