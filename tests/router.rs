//! The router in-process against fake cells: timeouts, broken cells, draining.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use ldc::client::HttpClient;
use ldc_serve::{Body, Handler, ServeSettings, json, serve};
use ldc_topology::Topology;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

/// A cell that takes `delay` to answer, and says when a request arrived.
struct SlowCell {
    delay: Duration,
    arrived: Arc<Notify>,
}

impl Handler for SlowCell {
    type Body = Body;

    async fn handle(&self, _req: Request<Incoming>) -> Response<Body> {
        self.arrived.notify_one();
        tokio::time::sleep(self.delay).await;
        json(StatusCode::OK, &serde_json::json!({"slow": true}))
    }
}

fn settings() -> ServeSettings {
    ServeSettings {
        header_read_timeout: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(5),
        max_connections: 100,
    }
}

/// Starts a slow fake cell; returns its address and its arrival signal.
async fn slow_cell(delay: Duration) -> (SocketAddr, Arc<Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let arrived = Arc::new(Notify::new());
    let cell = Arc::new(SlowCell {
        delay,
        arrived: arrived.clone(),
    });
    tokio::spawn(serve(listener, cell, settings(), std::future::pending()));
    (addr, arrived)
}

/// A topology with one cell at `cell`, and a router running on free ports until
/// the returned sender fires.
struct TestRouter {
    url: String,
    admin: String,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

async fn router(cell: SocketAddr, timeouts: &str) -> TestRouter {
    let text = format!(
        "[timeouts]\n{timeouts}\n[[regions]]\nid = \"r\"\n[[cells]]\nid = \"c1\"\nregion = \"r\"\nlisten = \"{cell}\"\nadmin = \"127.0.0.1:1\"\n"
    );
    let topology = Arc::new(Topology::from_toml_str("test.toml", &text).expect("valid"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let admin_url = format!("http://{}", admin.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        ldc_router::run(topology, listener, admin, Registry::new(), async {
            let _ = stopped.await;
        })
        .await
        .expect("router runs");
    });
    TestRouter {
        url,
        admin: admin_url,
        stop,
        done,
    }
}

#[tokio::test]
async fn a_slow_cell_gets_504_at_the_request_timeout() {
    let (cell, _) = slow_cell(Duration::from_secs(5)).await;
    let router = router(cell, "request_timeout_ms = 200").await;
    let started = Instant::now();
    let reply = HttpClient::new()
        .get(&format!("{}/v1/users/alice/whoami", router.url))
        .await
        .expect("router answers");
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.json()["error"]["code"], "cell_timeout");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_cell_that_drops_the_connection_gets_502() {
    let broken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = broken.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = broken.accept().await {
            drop(stream);
        }
    });
    let router = router(addr, "").await;
    let reply = HttpClient::new()
        .get(&format!("{}/v1/users/alice/whoami", router.url))
        .await
        .expect("router answers");
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.json()["error"]["code"], "cell_failed");
    assert_eq!(reply.header("x-ldc-cell"), "c1");
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_refuses_new_ones() {
    let (cell, arrived) = slow_cell(Duration::from_millis(500)).await;
    let router = router(cell, "").await;
    let client = HttpClient::new();
    let in_flight = tokio::spawn({
        let client = client.clone();
        let url = format!("{}/v1/users/alice/whoami", router.url);
        async move { client.get(&url).await }
    });
    arrived.notified().await;
    router.stop.send(()).expect("router is running");

    // While the slow request drains, /ready says so.
    let ready_url = format!("{}/ready", router.admin);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let ready = client
            .get(&ready_url)
            .await
            .expect("admin answers while draining");
        if ready.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(ready.json()["phase"], "draining");
            break;
        }
        assert!(Instant::now() < deadline, "never reported draining");
        tokio::task::yield_now().await;
    }
    let fresh = HttpClient::new()
        .get(&format!("{}/v1/users/bob/whoami", router.url))
        .await
        .expect_err("a stopped router takes no new connections");
    assert!(fresh.is_connect(), "{fresh}");

    let reply = in_flight
        .await
        .expect("task")
        .expect("in-flight request finishes");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["slow"], true);
    tokio::time::timeout(Duration::from_secs(5), router.done)
        .await
        .expect("router stops after draining")
        .expect("router task");
}
