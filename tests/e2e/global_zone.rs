//! The global zone end to end: one item's stock shared by four cells through leases,
//! across SIGKILLs of a cell and of the global zone's host. Never oversold, not
//! undersold, every lease accounted for on both sides.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Cluster, ClusterBuilder};
use bytes::Bytes;
use http::{Method, StatusCode};
use ldc::client::HttpClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinSet;

const STOCK: u64 = 10_000;
const ATTEMPTS: usize = 50_000;
const CELLS: [&str; 4] = ["c1", "c2", "c3", "c4"];

fn deploy(stock: u64) -> String {
    format!(
        "[global_zone]\ncell = \"c1\"\nlease_min = 10\nlease_max = 500\n\n\
         [[items]]\nid = \"hot\"\nname = \"Hot phone\"\nprice = 100\nstock = {stock}\n"
    )
}

async fn admin(cluster: &Cluster, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
    let url = format!("http://{}{path}", cluster.proc("c1").admin);
    let reply = cluster
        .client
        .send(method, &url, &[], Bytes::from(body.to_string()))
        .await
        .expect("global zone answers");
    (reply.status, reply.json())
}

#[tokio::test]
async fn leased_stock_sells_exactly_once_across_kills_of_a_cell_and_the_global_zone_host() {
    leased_stock_sells_exactly_once_across_kills_of_a_cell_and_the_global_zone_host_on(
        Cluster::builder(),
    )
    .await;
}

/// The test above on the cluster `builder` makes (the TiKV backend's run is
/// in `tikv.rs`).
pub async fn leased_stock_sells_exactly_once_across_kills_of_a_cell_and_the_global_zone_host_on(
    builder: ClusterBuilder,
) {
    let mut cluster = builder
        .cells(4)
        .standbys()
        .restart_backoff_ms(300)
        .extra(&deploy(STOCK))
        .spawn()
        .await;
    let users: Vec<String> = CELLS
        .iter()
        .flat_map(|cell| cluster.users_of(cell, 50))
        .collect();
    cluster.deposit_all(&users, 10_000_000).await;

    // 50,000 attempts, one unit each, from 64 buyers at a time; attempt n is user
    // n % 200's, so every cell sees buyers until the end.
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let users = Arc::new(users);
    let started = Instant::now();
    let mut buyers = JoinSet::new();
    for _ in 0..64 {
        let (client, router) = (cluster.client.clone(), cluster.router_url());
        let (next, done, progress, users) =
            (next.clone(), done.clone(), progress.clone(), users.clone());
        buyers.spawn(async move {
            let mut statuses = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= ATTEMPTS {
                    return statuses;
                }
                let user = &users[n % users.len()];
                let body = json!({"item_id": "hot", "quantity": 1, "request_id": format!("b{n}")});
                let url = format!("{router}/v1/users/{user}/orders");
                let reply = client
                    .send(Method::POST, &url, &[], Bytes::from(body.to_string()))
                    .await;
                statuses.push(reply.map(|r| r.status).ok());
                done.fetch_add(1, Ordering::Relaxed);
                progress.notify_waiters();
            }
        });
    }
    let reach = |target: usize| {
        let (done, progress) = (done.clone(), progress.clone());
        async move {
            while done.load(Ordering::Relaxed) < target {
                let notified = progress.notified();
                if done.load(Ordering::Relaxed) >= target {
                    break;
                }
                notified.await;
            }
        }
    };
    reach(ATTEMPTS / 10).await;
    cluster.kill9("c3");
    cluster.next_event_matching("restarted cell c3").await;
    reach(ATTEMPTS / 4).await;
    cluster.kill9("c1");
    cluster.next_event_matching("restarted cell c1").await;
    let statuses: Vec<Option<StatusCode>> = buyers.join_all().await.into_iter().flatten().collect();
    let elapsed = started.elapsed();
    assert_eq!(statuses.len(), ATTEMPTS);
    let count = |status| statuses.iter().filter(|s| **s == Some(status)).count();
    let confirmed = count(StatusCode::CREATED);
    let sold_out = count(StatusCode::CONFLICT);
    let unavailable = statuses.len() - confirmed - sold_out;
    eprintln!(
        "{ATTEMPTS} attempts in {elapsed:?}: {confirmed} confirmed, {sold_out} sold out, \
         {unavailable} failed during the kills"
    );
    assert!(confirmed as u64 <= STOCK, "{confirmed} confirmed");
    assert!(
        (unavailable as u64) < STOCK / 2,
        "{unavailable} attempts failed: more than the kills explain"
    );

    // Every cell back on its own shard, and every standby done handing back (on a
    // loaded host the router may route back before the standby has closed the
    // shard), then the sale is closed: leftovers go back.
    for cell in CELLS {
        let user = cluster.users_of(cell, 1).remove(0);
        cluster.wait_routed(&user, cell).await;
    }
    for cell in CELLS {
        cluster
            .wait_json(&cluster.audit_url(cell), |audit| {
                audit["taken_over"] == json!({})
            })
            .await;
    }
    let (status, closed) = admin(&cluster, Method::POST, "/admin/items/hot/close", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_eq!(closed["closed"], true);
    let gz_audit = cluster.audit_url("c1");
    cluster
        .wait_json(&gz_audit, |audit| {
            let hot = &audit["global_zone"]["hot"];
            hot["cells"]
                .as_object()
                .is_some_and(|cells| cells.len() == CELLS.len())
                && hot["available"].as_u64().zip(hot["held_by_cells"].as_u64()) == Some((0, STOCK))
        })
        .await;

    let mut sold = 0;
    let books = cluster.audit("c1").await["global_zone"]["hot"].clone();
    for cell in CELLS {
        let audit = cluster.audit(cell).await;
        assert_eq!(
            audit["taken_over"],
            json!({}),
            "{cell} serves only its own shard"
        );
        let hot = &audit["ledger"]["items"]["hot"];
        assert_eq!(
            hot["sold"], hot["sold_by_orders"],
            "{cell}: orders agree with stock"
        );
        assert_eq!(hot["lease_pending"], false, "{cell}");
        assert_eq!(
            hot["received"], books["cells"][cell]["held"],
            "{cell}: what it holds by its ledger is what the global zone says it holds"
        );
        assert_eq!(
            hot["leases"], books["cells"][cell]["leases"],
            "{cell}: every lease on both sides"
        );
        assert_eq!(audit["ledger"]["net"], 0, "{cell}: money is conserved");
        assert_eq!(audit["ledger"]["negative_balances"], 0, "{cell}");
        sold += hot["sold"].as_u64().expect("sold");
    }
    assert_eq!(
        sold, STOCK,
        "demand exceeded stock: every unit sold, none twice"
    );
    assert!(
        confirmed as u64 <= sold,
        "every acknowledged order is in a ledger"
    );
}

#[tokio::test]
async fn items_are_created_on_a_running_cluster_and_closing_returns_unsold_units() {
    let cluster = Cluster::builder()
        .cells(2)
        .extra(&deploy(100))
        .spawn()
        .await;
    let new_item = json!({"name": "Sticker", "price": 150, "stock": 40});
    let (status, created) = admin(
        &cluster,
        Method::PUT,
        "/admin/items/sticker",
        new_item.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["available"], 40);
    let (status, _) = admin(&cluster, Method::PUT, "/admin/items/sticker", new_item).await;
    assert_eq!(status, StatusCode::OK, "the same settings again");
    let other = json!({"name": "Sticker", "price": 150, "stock": 41});
    let (status, conflict) = admin(&cluster, Method::PUT, "/admin/items/sticker", other).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(conflict["error"]["code"], "item_exists");
    for (body, field) in [
        (json!({"name": "", "price": 1, "stock": 1}), "name"),
        (json!({"name": "x", "price": 0, "stock": 1}), "price"),
    ] {
        let (status, refused) = admin(&cluster, Method::PUT, "/admin/items/bad", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(refused["error"]["field"], field);
    }
    let (status, _) = admin(&cluster, Method::PUT, "/admin/items/bad%20id", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A buyer of c2 gets the new item once c2 has polled the global zone.
    let buyer = cluster.users_of("c2", 1).remove(0);
    cluster
        .deposit_all(std::slice::from_ref(&buyer), 10_000_000)
        .await;
    let url = format!("{}/v1/users/{buyer}/orders", cluster.router_url());
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        let body = json!({"item_id": "sticker", "quantity": 3, "request_id": "s1"});
        let reply = cluster
            .client
            .send(Method::POST, &url, &[], Bytes::from(body.to_string()))
            .await
            .expect("router answers");
        if reply.status != StatusCode::NOT_FOUND || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.json());

    // Closing: c2 gives back what it leased and did not sell; orders stop.
    let (status, _) = admin(
        &cluster,
        Method::POST,
        "/admin/items/sticker/close",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let gz_audit = cluster.audit_url("c1");
    cluster
        .wait_json(&gz_audit, |audit| {
            audit["global_zone"]["sticker"]["held_by_cells"] == 3
        })
        .await;
    let books = &cluster.audit("c1").await["global_zone"]["sticker"];
    assert_eq!(
        books["available"], 37,
        "unsold units are back in the global account"
    );
    let body = json!({"item_id": "sticker", "quantity": 1, "request_id": "s2"});
    let reply = cluster
        .client
        .send(Method::POST, &url, &[], Bytes::from(body.to_string()))
        .await
        .expect("router answers");
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.json()["error"]["code"], "sale_closed");
    let (status, unknown) =
        admin(&cluster, Method::POST, "/admin/items/nope/close", json!({})).await;
    assert_eq!(
        (status, &unknown["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("unknown_item"))
    );
}

#[tokio::test]
async fn units_idle_at_one_cell_are_recalled_for_buyers_at_another() {
    let cluster = Cluster::builder().cells(2).extra(&deploy(60)).spawn().await;
    let buyers = cluster.users_of("c1", 5);
    cluster.deposit_all(&buyers, 10_000_000).await;
    // Both cells lease a first chunk; only c1's users buy. Once the global account
    // is empty, c2's unsold units must come back for them, before any close.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut confirmed = 0;
    let mut n = 0;
    while confirmed < 60 && Instant::now() < deadline {
        n += 1;
        let buyer = &buyers[n % buyers.len()];
        let url = format!("{}/v1/users/{buyer}/orders", cluster.router_url());
        let body = json!({"item_id": "hot", "quantity": 1, "request_id": format!("r{n}")});
        let reply = cluster
            .client
            .send(Method::POST, &url, &[], Bytes::from(body.to_string()))
            .await
            .expect("router answers");
        match reply.status {
            StatusCode::CREATED => confirmed += 1,
            StatusCode::CONFLICT | StatusCode::SERVICE_UNAVAILABLE => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("{other}: {:?}", reply.json()),
        }
    }
    let state = cluster
        .client_as_cell("c2")
        .get(&format!("{}/v1/gz/items", cluster.peer_url("c1")))
        .await
        .expect("global zone answers")
        .json();
    assert_eq!(
        confirmed,
        60,
        "every unit sold to c1's buyers; global zone: {state}; c2: {}",
        cluster.audit("c2").await
    );
    let c2 = cluster.audit("c2").await;
    assert_eq!(c2["ledger"]["items"]["hot"]["sold"], 0);
    assert_eq!(
        c2["ledger"]["items"]["hot"]["received"], 0,
        "c2 gave back what it leased and did not sell"
    );
}

#[tokio::test]
async fn a_cell_stopping_gracefully_gives_its_units_back_first() {
    let mut cluster = Cluster::builder()
        .cells(2)
        .restart_backoff_ms(10_000)
        .extra(&deploy(100))
        .spawn()
        .await;
    // Each cell leases a first chunk as soon as it knows where the global zone is.
    cluster
        .wait_json(&cluster.audit_url("c1"), |audit| {
            audit["global_zone"]["hot"]["cells"]["c2"]["held"].as_u64() > Some(0)
        })
        .await;
    let c2 = Pid::from_raw(cluster.proc("c2").pid as i32);
    kill(c2, Signal::SIGTERM).expect("SIGTERM c2");
    cluster.next_event_matching("exited").await;
    let books = &cluster.audit("c1").await["global_zone"]["hot"];
    assert_eq!(
        books["cells"]["c2"]["held"], 0,
        "c2 gave back before it stopped: {books}"
    );
    let held_by_c1 = books["cells"]["c1"]["held"].as_u64().unwrap_or(0);
    assert_eq!(books["available"].as_u64(), Some(100 - held_by_c1));
}

#[tokio::test]
async fn the_global_zones_routes_are_served_on_the_peer_listener_only() {
    let cluster = Cluster::builder()
        .cells(2)
        .extra(&deploy(100))
        .spawn()
        .await;
    // A user of the global zone's host: before, the router forwarded their
    // `/v1/gz/` requests there, and a forged lease took stock in c2's name.
    let user = cluster.users_of("c1", 1).remove(0);
    let lease = json!({"item_id": "hot", "cell": "c2", "seq": 1, "units": 10});
    for (method, path, body) in [
        (Method::GET, "/v1/gz/items", String::new()),
        (Method::POST, "/v1/gz/leases", lease.to_string()),
    ] {
        let reply = cluster
            .client
            .send(
                method.clone(),
                &format!("{}{path}", cluster.router_url()),
                &[("x-user-id", &user)],
                Bytes::from(body),
            )
            .await
            .expect("router answers");
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(
            reply.json()["error"]["code"],
            "not_found",
            "{method} {path}"
        );
    }
    // Nor does the host's user listener serve them: they are on its peer
    // listener, where cells reach the global zone.
    let on_user_listener = cluster
        .client
        .get(&format!("{}/v1/gz/items", cluster.cell_url("c1")))
        .await
        .expect("the cell answers");
    assert_eq!(on_user_listener.status, StatusCode::NOT_FOUND);
    let items = cluster
        .client_as_cell("c2")
        .get(&format!("{}/v1/gz/items", cluster.peer_url("c1")))
        .await
        .expect("global zone answers");
    assert_eq!(items.status, StatusCode::OK);
}

#[tokio::test]
async fn admin_routes_refuse_callers_without_the_deployments_token() {
    let cluster = Cluster::builder()
        .cells(2)
        .extra(&deploy(100))
        .spawn()
        .await;
    let url = format!("http://{}/admin/items/fresh", cluster.proc("c1").admin);
    let item = Bytes::from(json!({"name": "Fresh", "price": 5, "stock": 10}).to_string());
    let bare = HttpClient::new();
    let wrong = "Bearer 0123456789abcdef0123456789abcdef";
    for (headers, status, code) in [
        (vec![], StatusCode::UNAUTHORIZED, "unauthenticated"),
        (
            vec![("authorization", wrong)],
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ] {
        let reply = bare
            .send(Method::PUT, &url, &headers, item.clone())
            .await
            .expect("the admin listener answers");
        assert_eq!(reply.status, status, "{headers:?}: {:?}", reply.body);
        assert_eq!(reply.json()["error"]["code"], code);
    }
    let router_topology = format!("http://{}/admin/topology", cluster.proc("r1").admin);
    let reply = bare.get(&router_topology).await.expect("router answers");
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // Created only now: the refused attempts changed nothing.
    let (status, body) = admin(
        &cluster,
        Method::PUT,
        "/admin/items/fresh",
        json!({"name": "Fresh", "price": 5, "stock": 10}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token_file = cluster.topology().admin_token_file();
    let token = std::fs::read_to_string(&token_file).expect("token file");
    assert!(
        !cluster.log_text().contains(token.trim()),
        "the token was logged"
    );
    // ldc up made the token and every private key readable by their owner only.
    let certs = cluster.topology().certs_dir();
    for secret in [
        token_file,
        certs.join("ca.key"),
        certs.join("cell-c1.key"),
        certs.join("router-r1.key"),
    ] {
        let mode = std::fs::metadata(&secret)
            .expect("a secret file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", secret.display());
    }
}
