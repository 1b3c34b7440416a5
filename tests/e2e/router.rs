//! The router in-process against fake cells: the fakes and the router harness
//! here, the tests by what they exercise in the modules below.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use ldc::client::HttpClient;
use ldc_serve::{AdminPlane, AdminToken, Body, Handler, Http1Limits, ServeSettings, json, serve};
use ldc_topology::Topology;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

mod cells;
mod http1;
mod http2;

/// A cell that takes `delay` to answer, and says when a request arrived.
struct SlowCell {
    delay: Duration,
    arrived: Arc<Notify>,
}

impl Handler for SlowCell {
    type Body = Body;

    async fn handle(&self, _req: Request<Bytes>) -> Response<Body> {
        self.arrived.notify_one();
        tokio::time::sleep(self.delay).await;
        json(StatusCode::OK, &serde_json::json!({"slow": true}))
    }
}

/// A cell's admin listener that answers `/ready` with the shards it lists, which
/// may change while it runs.
struct FakeAdmin {
    shards: std::sync::Mutex<serde_json::Value>,
}

impl Handler for FakeAdmin {
    type Body = Body;

    async fn handle(&self, _req: Request<Bytes>) -> Response<Body> {
        let shards = self.shards.lock().expect("shards").clone();
        json(
            StatusCode::OK,
            &serde_json::json!({"phase": "ready", "shards": shards}),
        )
    }
}

/// Starts a fake admin listener serving `shards`; returns its address and a handle
/// to change them.
async fn fake_admin(shards: serde_json::Value) -> (SocketAddr, Arc<FakeAdmin>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let admin = Arc::new(FakeAdmin {
        shards: std::sync::Mutex::new(shards),
    });
    tokio::spawn(serve(
        listener,
        admin.clone(),
        settings(),
        std::future::pending(),
    ));
    (addr, admin)
}

fn settings() -> ServeSettings {
    ServeSettings {
        header_read_timeout: Duration::from_secs(5),
        http2_idle_timeout: Duration::from_secs(60),
        drain_timeout: Duration::from_secs(5),
        max_connections: 100,
        limits: Http1Limits {
            body_timeout: Duration::from_secs(5),
            max_body_bytes: 1 << 20,
            stall_timeout: Duration::from_secs(10),
        },
        tls: None,
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

struct TestRouter {
    url: String,
    admin: String,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

/// A topology with one cell at `cell` whose admin listener says it serves its own
/// shard, and a router running on free ports until the returned sender fires.
async fn router(cell: SocketAddr, timeouts: &str) -> TestRouter {
    router_with(cell, &format!("[timeouts]\n{timeouts}\n")).await
}

/// The same with any `settings` (deploy file TOML).
async fn router_with(cell: SocketAddr, settings: &str) -> TestRouter {
    let (admin, _) = fake_admin(serde_json::json!([{"cell": "c1", "epoch": 1}])).await;
    let cells = format!(
        "[[cells]]\nid = \"c1\"\nregion = \"r\"\nlisten = \"{cell}\"\nadmin = \"{admin}\"\n"
    );
    start_router(settings, &cells).await
}

async fn start_router(settings: &str, cells: &str) -> TestRouter {
    let text = format!("{settings}\n[[regions]]\nid = \"r\"\n{cells}");
    let topology = Arc::new(Topology::from_toml_str("test.toml", &text).expect("valid"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let admin_url = format!("http://{}", admin.local_addr().expect("addr"));
    let secrets = tempfile::tempdir().expect("temp dir");
    let token_file = secrets.path().join("admin.token");
    AdminToken::create(&token_file).expect("admin token");
    let admin = AdminPlane {
        listener: admin,
        registry: Registry::new(),
        token: AdminToken::read(&token_file).expect("admin token"),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        // No reloads: the sending side is dropped at once.
        let (_, reloads) = tokio::sync::watch::channel(topology.clone());
        let _secrets = secrets;
        ldc_router::run(topology, listener, admin, None, reloads, async {
            let _ = stopped.await;
        })
        .await
        .expect("router runs");
    });
    // Ready once it probed every cell.
    let client = HttpClient::new();
    let ready = format!("{admin_url}/ready");
    let started = Instant::now();
    while !client
        .get(&ready)
        .await
        .is_ok_and(|r| r.status == StatusCode::OK)
    {
        assert!(started.elapsed() < Duration::from_secs(10), "router ready");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    TestRouter {
        url,
        admin: admin_url,
        stop,
        done,
    }
}

/// A cell that answers who it is.
struct NamedCell(&'static str);

impl Handler for NamedCell {
    type Body = Body;

    async fn handle(&self, _req: Request<Bytes>) -> Response<Body> {
        json(StatusCode::OK, &serde_json::json!({"cell": self.0}))
    }
}

/// A cell that echoes the path and the body it got, and whether an `Expect`
/// header reached it.
struct EchoCell;

impl Handler for EchoCell {
    type Body = Body;

    async fn handle(&self, req: Request<Bytes>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let expect = req.headers().contains_key(http::header::EXPECT);
        let body = req.into_body();
        json(
            StatusCode::OK,
            &serde_json::json!({"body": String::from_utf8_lossy(&body), "expect": expect, "path": path}),
        )
    }
}

/// A router in front of one [`EchoCell`], with `settings` (deploy file TOML).
async fn echo_router(settings: &str) -> TestRouter {
    router_with(spawn_cell(EchoCell).await, settings).await
}

/// Sends `bytes` on a new connection to `router` and reads until the router
/// closes it (at most 5 s); returns what came back and when the close came.
async fn exchange(router: &TestRouter, bytes: &[u8]) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = router.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    stream.write_all(bytes).await.expect("send");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .expect("the router closes the connection within 5 s")
        .expect("read");
    (
        String::from_utf8_lossy(&reply).into_owned(),
        started.elapsed(),
    )
}

async fn spawn_cell<H: Handler>(handler: H) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(
        listener,
        Arc::new(handler),
        settings(),
        std::future::pending(),
    ));
    addr
}

/// A response body fed through a channel: no length known up front.
struct ChannelBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|piece| piece.map(|data| Ok(hyper::body::Frame::data(data))))
    }
}

/// A cell that streams its answer without a length: user `stall` gets one piece
/// and then nothing for a minute, everyone else three pieces.
struct StreamingCell;

impl Handler for StreamingCell {
    type Body = ChannelBody;

    async fn handle(&self, req: Request<Bytes>) -> Response<ChannelBody> {
        let stall = req.uri().path().starts_with("/v1/users/stall/");
        let (pieces, body) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            if stall {
                let _ = pieces.send(bytes::Bytes::from_static(b"partial")).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            for piece in ["one ", "two ", "three"] {
                let _ = pieces
                    .send(bytes::Bytes::from_static(piece.as_bytes()))
                    .await;
            }
        });
        Response::new(ChannelBody(body))
    }
}
