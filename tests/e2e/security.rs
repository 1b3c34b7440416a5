//! Trust boundaries, tried as an attacker would: forged leases on every listener,
//! certificates from another deployment, plain TCP where TLS is required, and a
//! sale that runs beside the forgeries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use ldc::client::HttpClient;
use ldc_serve::Connector;
use ldc_serve::tls::{ALPN_HTTP1, Identity, Role, Tls};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::support::{Cluster, EVENT_TIMEOUT};

const STOCK: u64 = 200;

fn deploy() -> String {
    format!(
        "[global_zone]\ncell = \"c1\"\nlease_min = 10\nlease_max = 50\npoll_ms = 50\n\n\
         [[items]]\nid = \"hot\"\nname = \"Hot phone\"\nprice = 100\nstock = {STOCK}\n"
    )
}

/// A lease of `units` of `hot` in `cell`'s name.
fn lease(cell: &str, seq: u64) -> Bytes {
    Bytes::from(json!({"item_id": "hot", "cell": cell, "seq": seq, "units": 10}).to_string())
}

/// The global zone's books, as its host's audit reports them.
async fn books(cluster: &Cluster) -> Value {
    cluster.audit("c1").await["global_zone"].clone()
}

/// Waits until every cell holds units of `hot`: the keepers' first leases are in,
/// and the global zone's books stay put while nobody buys.
async fn warm_up(cluster: &Cluster) {
    let started = Instant::now();
    for cell in ["c1", "c2", "c3"] {
        let url = format!("{}/v1/items/hot", cluster.cell_url(cell));
        while !cluster
            .client
            .get(&url)
            .await
            .is_ok_and(|reply| reply.json()["received"].as_u64() > Some(0))
        {
            assert!(started.elapsed() < EVENT_TIMEOUT, "{cell} got no lease");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Sends an HTTP/1.1 request on `stream` and reads what comes back until the
/// server closes it, an error, or 5 s.
async fn try_request<S>(mut stream: S, path: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!("GET {path} HTTP/1.1\r\nHost: ldc\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn forged_leases_are_refused_on_every_listener_and_change_nothing() {
    let cluster = Cluster::builder().cells(3).extra(&deploy()).spawn().await;
    warm_up(&cluster).await;
    let before = books(&cluster).await;
    let c1_user = cluster.users_of("c1", 1).remove(0);
    let peer = cluster.proc("c1").peer.expect("c1's peer listener");

    // Through the public router, and on the host's user listener: no such route.
    let through_router = cluster
        .client
        .send(
            Method::POST,
            &format!("{}/v1/gz/leases", cluster.router_url()),
            &[("x-user-id", &c1_user)],
            lease("c3", 1),
        )
        .await
        .expect("the router answers");
    assert_eq!(through_router.status, StatusCode::NOT_FOUND);
    let user_listener = cluster
        .client
        .send(
            Method::POST,
            &format!("{}/v1/gz/leases", cluster.cell_url("c1")),
            &[],
            lease("c3", 1),
        )
        .await
        .expect("the cell answers");
    assert_eq!(user_listener.status, StatusCode::NOT_FOUND);

    // Plain TCP to the peer listener: the TLS handshake fails, nothing is served.
    let plain = tokio::net::TcpStream::connect(peer).await.expect("connect");
    let answer = try_request(plain, "/v1/gz/items").await;
    assert!(!answer.contains("HTTP/1.1"), "served without TLS: {answer}");

    // A router's certificate on the peer listener: the wrong role.
    let as_router = cluster
        .client
        .get(&format!("http://{peer}/v1/gz/items"))
        .await;
    assert!(as_router.is_err(), "a router was served: {as_router:?}");

    // c3's name on another deployment's certificate: refused by the CA check.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let mut other = cluster.topology().deploy().clone();
    other.security.certs_dir = Some(elsewhere.path().to_owned());
    let other = ldc_topology::Topology::from_deploy("other", other).expect("valid");
    ldc::certs::ensure(&other, elsewhere.path()).expect("another CA");
    let identity = Identity::new("test", Role::Cell, "c3").expect("identity");
    let foreign = Tls::load(
        ldc::certs::files(elsewhere.path(), Role::Cell, "c3"),
        identity,
    )
    .expect("a foreign certificate");
    let connector = Connector::new(
        Some(Arc::new(foreign)),
        cluster.topology(),
        Duration::from_secs(2),
    );
    if let Ok(stream) = connector.connect(peer, &[ALPN_HTTP1]).await {
        let answer = try_request(stream, "/v1/gz/items").await;
        assert!(
            !answer.contains("HTTP/1.1"),
            "a foreign CA was served: {answer}"
        );
    }

    // c1's own certificate, asking for c3's lease: refused by name.
    let reply = cluster
        .client_as_cell("c1")
        .send(
            Method::POST,
            &format!("http://{peer}/v1/gz/leases"),
            &[],
            lease("c3", 1),
        )
        .await
        .expect("the global zone answers");
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
    assert_eq!(reply.json()["error"]["code"], "peer_mismatch");

    assert_eq!(books(&cluster).await, before, "a forgery changed the books");
}

#[tokio::test]
async fn a_sale_beside_forgeries_sells_exactly_its_stock() {
    let cluster = Cluster::builder().cells(3).extra(&deploy()).spawn().await;
    let users: Vec<String> = ["c1", "c2", "c3"]
        .iter()
        .flat_map(|cell| cluster.users_of(cell, 20))
        .collect();
    cluster.deposit_all(&users, 1_000_000).await;
    warm_up(&cluster).await;

    // c2, compromised, keeps asking for the others' leases.
    let selling = Arc::new(AtomicBool::new(true));
    let forger = {
        let (client, peer) = (cluster.client_as_cell("c2"), cluster.peer_url("c1"));
        let selling = selling.clone();
        tokio::spawn(async move {
            let mut refused = 0u64;
            let mut seq = 1;
            while selling.load(Ordering::Relaxed) {
                for victim in ["c1", "c3"] {
                    let reply = client
                        .send(
                            Method::POST,
                            &format!("{peer}/v1/gz/leases"),
                            &[],
                            lease(victim, seq),
                        )
                        .await
                        .expect("the global zone answers");
                    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
                    refused += 1;
                }
                seq += 1;
            }
            refused
        })
    };

    let next = Arc::new(AtomicUsize::new(0));
    let users = Arc::new(users);
    let mut buyers = JoinSet::new();
    for _ in 0..16 {
        let (client, router, next, users) = (
            cluster.client.clone(),
            cluster.router_url(),
            next.clone(),
            users.clone(),
        );
        buyers.spawn(async move {
            let mut confirmed = 0u64;
            // Until every cell said sold out to each of its buyers in a row.
            let mut sold_out_in_a_row = 0;
            while sold_out_in_a_row < 3 * users.len() {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let user = &users[n % users.len()];
                let body = json!({"item_id": "hot", "quantity": 1, "request_id": format!("b{n}")});
                let reply = client
                    .send(
                        Method::POST,
                        &format!("{router}/v1/users/{user}/orders"),
                        &[],
                        Bytes::from(body.to_string()),
                    )
                    .await
                    .expect("the router answers");
                match reply.status {
                    StatusCode::CREATED => {
                        confirmed += 1;
                        sold_out_in_a_row = 0;
                    }
                    StatusCode::CONFLICT => sold_out_in_a_row += 1,
                    _ => sold_out_in_a_row = 0,
                }
            }
            confirmed
        });
    }
    let confirmed: u64 = tokio::time::timeout(Duration::from_secs(120), buyers.join_all())
        .await
        .expect("the sale ends")
        .into_iter()
        .sum();
    selling.store(false, Ordering::Relaxed);
    let refused = forger.await.expect("the forger ran");
    eprintln!("{confirmed} units sold beside {refused} forged leases refused");
    assert_eq!(confirmed, STOCK, "units sold of a {STOCK}-unit item");
    assert!(refused > 0);
}

#[tokio::test]
async fn a_client_without_the_router_certificate_is_not_served_by_a_cell() {
    let cluster = Cluster::builder().cells(1).spawn().await;
    let cell = cluster.proc("c1").listen;
    let user = cluster.users_of("c1", 1).remove(0);
    let plain = tokio::net::TcpStream::connect(cell).await.expect("connect");
    let answer = try_request(plain, &format!("/v1/users/{user}/whoami")).await;
    assert!(!answer.contains("HTTP/1.1"), "served without TLS: {answer}");
    // A cell's certificate on the user listener: the wrong role.
    let as_cell = cluster
        .client_as_cell("c1")
        .get(&format!(
            "{}/v1/users/{user}/whoami",
            cluster.cell_url("c1")
        ))
        .await;
    assert!(
        as_cell.is_err(),
        "a cell was served as a router: {as_cell:?}"
    );
    // The router's certificate is what the user listener takes.
    let reply = HttpClient::for_deployment(cluster.topology())
        .expect("operator client")
        .get(&format!(
            "{}/v1/users/{user}/whoami",
            cluster.cell_url("c1")
        ))
        .await
        .expect("the cell answers");
    assert_eq!(reply.status, StatusCode::OK);
}

/// Opens `n` connections to `address` that never send a byte.
async fn stall(address: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut stalled = Vec::with_capacity(n);
    for _ in 0..n {
        match tokio::net::TcpStream::connect(address).await {
            Ok(stream) => stalled.push(stream),
            Err(err) => panic!("connection {} to {address}: {err}", stalled.len()),
        }
    }
    stalled
}

#[tokio::test]
async fn stalled_connections_in_any_number_do_not_keep_the_router_from_a_cell() {
    // Each connection of this test and of the cell is a descriptor.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("descriptor limit");
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .expect("raise the descriptor limit");
    const CAP: usize = 500;
    // Timeouts far beyond the test: only making room can let the router in.
    let mut cluster = Cluster::builder()
        .cells(1)
        .extra(&format!(
            "[limits]\nmax_connections = {CAP}\n\
             [timeouts]\nheader_read_timeout_ms = 120000\ntls_handshake_timeout_ms = 120000\n"
        ))
        .spawn()
        .await;
    let user = cluster.users_of("c1", 1).remove(0);
    let whoami = format!("{}/v1/users/{user}/whoami", cluster.router_url());
    let c1 = cluster.proc("c1");
    let mut stalled = Vec::new();
    for address in [c1.listen, c1.peer.expect("peer listener"), c1.admin] {
        stalled.extend(stall(address, 4 * CAP).await);
    }
    cluster.kill9("r1");
    cluster.next_event_matching("restarted router r1").await;
    let started = Instant::now();
    let fresh = HttpClient::new();
    loop {
        let served = fresh
            .get(&whoami)
            .await
            .is_ok_and(|reply| reply.status == StatusCode::OK);
        if served {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the cell's users were not served again within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{} stalled connections, cap {CAP} per listener: users served again {:?} after the router restarted",
        stalled.len(),
        started.elapsed()
    );
}

#[tokio::test]
async fn routers_reach_cells_over_mutual_tls_with_http1_as_with_http2() {
    let cluster = Cluster::builder()
        .cells(2)
        .extra("[proxy]\nhttp2_to_cells = false\n")
        .spawn()
        .await;
    for cell in ["c1", "c2"] {
        let user = cluster.users_of(cell, 1).remove(0);
        cluster.deposit_all(std::slice::from_ref(&user), 500).await;
        let reply = cluster
            .client
            .get(&format!("{}/v1/users/{user}/balance", cluster.router_url()))
            .await
            .expect("the router answers");
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.json()["balance"], 500);
        assert_eq!(reply.header("x-ldc-cell"), cell);
    }
}
