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

/// A cell's admin listener that answers `/ready` with the shards it lists, which
/// may change while it runs.
struct FakeAdmin {
    shards: std::sync::Mutex<serde_json::Value>,
}

impl Handler for FakeAdmin {
    type Body = Body;

    async fn handle(&self, _req: Request<Incoming>) -> Response<Body> {
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
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        // No reloads: the sending side is dropped at once.
        let (_, reloads) = tokio::sync::watch::channel(topology.clone());
        ldc_router::run(topology, listener, admin, Registry::new(), reloads, async {
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

/// A cell that answers 421 (it no longer serves the shard) and flips its peer's
/// admin to report the shard, as a standby that just took it over would.
struct MovedCell {
    peer: Arc<FakeAdmin>,
    own: Arc<FakeAdmin>,
}

impl Handler for MovedCell {
    type Body = Body;

    async fn handle(&self, _req: Request<Incoming>) -> Response<Body> {
        *self.own.shards.lock().expect("shards") = serde_json::json!([]);
        *self.peer.shards.lock().expect("shards") =
            serde_json::json!([{"cell": "c2", "epoch": 1}, {"cell": "c1", "epoch": 2}]);
        ldc_serve::json_error(StatusCode::MISDIRECTED_REQUEST, "wrong_cell", "moved", [])
    }
}

/// A cell that answers who it is.
struct NamedCell(&'static str);

impl Handler for NamedCell {
    type Body = Body;

    async fn handle(&self, _req: Request<Incoming>) -> Response<Body> {
        json(StatusCode::OK, &serde_json::json!({"cell": self.0}))
    }
}

/// A cell that echoes the path and the body it got, and whether an `Expect`
/// header reached it.
struct EchoCell;

impl Handler for EchoCell {
    type Body = Body;

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        use http_body_util::BodyExt;
        let path = req.uri().path().to_owned();
        let expect = req.headers().contains_key(http::header::EXPECT);
        let body = match req.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(err) => return json(StatusCode::BAD_REQUEST, &err.to_string()),
        };
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

#[tokio::test]
async fn a_421_refreshes_the_view_and_idempotent_requests_go_to_the_new_holder() {
    let (admin1, own) = fake_admin(serde_json::json!([{"cell": "c1", "epoch": 1}])).await;
    let (admin2, peer) = fake_admin(serde_json::json!([{"cell": "c2", "epoch": 1}])).await;
    let cell1 = spawn_cell(MovedCell {
        peer: peer.clone(),
        own: own.clone(),
    })
    .await;
    let cell2 = spawn_cell(NamedCell("c2")).await;
    // Probes rarely, so only the 421 can explain a quick change of view.
    let cells = format!(
        "[[cells]]\nid = \"c1\"\nregion = \"r\"\nlisten = \"{cell1}\"\nadmin = \"{admin1}\"\nstandby = \"c2\"\n\
         [[cells]]\nid = \"c2\"\nregion = \"r\"\nlisten = \"{cell2}\"\nadmin = \"{admin2}\"\n"
    );
    // Probes rarely, so only the 421 can explain a quick change of view.
    let settings = "[health]\ninterval_ms = 60000\nmax_backoff_ms = 60000\n";
    let topology = Topology::from_toml_str("t.toml", &format!("[[regions]]\nid = \"r\"\n{cells}"))
        .expect("valid");
    let user = (0..)
        .map(|i| format!("u{i}"))
        .find(|u| topology.route(u).1 == 0)
        .expect("a user of c1");
    let client = HttpClient::new();

    // A read is sent again, to the standby that holds the shard now.
    let router = start_router(settings, &cells).await;
    let reply = client
        .get(&format!("{}/v1/users/{user}/whoami", router.url))
        .await
        .expect("router answers");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["cell"], "c2");
    assert_eq!(reply.header("x-ldc-cell"), "c2");
    assert_eq!(reply.header("x-ldc-epoch"), "2");
    let route = format!("{}/v1/route/{user}", router.url);
    let reply = client.get(&route).await.expect("route");
    assert_eq!(reply.json()["served_by"], "c2");

    // A write without a request id is not: a fresh router, the shard back at c1.
    *own.shards.lock().expect("shards") = serde_json::json!([{"cell": "c1", "epoch": 1}]);
    *peer.shards.lock().expect("shards") = serde_json::json!([{"cell": "c2", "epoch": 1}]);
    let router = start_router(settings, &cells).await;
    let url = format!("{}/v1/users/{user}/deposits", router.url);
    let body = bytes::Bytes::from_static(b"{\"amount\": 1}");
    let reply = client
        .send(http::Method::POST, &url, &[], body)
        .await
        .expect("router answers");
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["error"]["code"], "shard_moving");
    assert_eq!(reply.header("retry-after"), "1");
}

#[tokio::test]
async fn with_no_healthy_holder_the_router_answers_503_at_once() {
    let (cell, arrived) = slow_cell(Duration::from_secs(5)).await;
    // The cell's admin listener cannot be reached: the router never marks it up.
    let cells = format!(
        "[[cells]]\nid = \"c1\"\nregion = \"r\"\nlisten = \"{cell}\"\nadmin = \"127.0.0.1:1\"\n"
    );
    let router = start_router("", &cells).await;
    let started = Instant::now();
    let reply = HttpClient::new()
        .get(&format!("{}/v1/users/alice/whoami", router.url))
        .await
        .expect("router answers");
    let elapsed = started.elapsed();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["error"]["code"], "cell_unavailable");
    assert_eq!(reply.header("retry-after"), "1");
    assert_eq!(reply.header("x-ldc-cell"), "c1");
    assert!(elapsed < Duration::from_millis(100), "503 took {elapsed:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(50), arrived.notified())
            .await
            .is_err(),
        "the request never reached the cell"
    );
}

#[tokio::test]
async fn requests_reach_cells_over_http2_and_over_http1() {
    let cell = spawn_cell(NamedCell("c1")).await;
    for http2 in [true, false] {
        let router = router_with(cell, &format!("[proxy]\nhttp2_to_cells = {http2}\n")).await;
        let reply = HttpClient::new()
            .get(&format!("{}/v1/users/alice/whoami", router.url))
            .await
            .expect("router answers");
        assert_eq!(reply.status, StatusCode::OK, "http2_to_cells = {http2}");
        assert_eq!(reply.json()["cell"], "c1");
    }
}

/// A body the client sends in chunks (HTTP/1.1 `Transfer-Encoding: chunked`) reaches
/// the cell whole over either protocol (HTTP/2 forbids the header itself).
#[tokio::test]
async fn a_chunked_body_reaches_the_cell_whole() {
    for http2 in [true, false] {
        let router = echo_router(&format!("[proxy]\nhttp2_to_cells = {http2}\n")).await;
        let request = "POST /v1/users/alice/echo HTTP/1.1\r\nHost: ldc\r\n\
            Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
            5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
        let (reply, _) = exchange(&router, request.as_bytes()).await;
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "http2_to_cells = {http2}: {reply}"
        );
        assert!(reply.contains(r#""body":"hello world""#), "{reply}");
    }
}

/// Requests pipelined on one connection are answered in order, and the connection
/// stays open between them until a request asks to close it; an HTTP/1.0 client
/// gets a close unless it asks for keep-alive.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let router = echo_router("").await;
    let requests = "GET /v1/users/a/one HTTP/1.1\r\nHost: ldc\r\n\r\n\
        POST /v1/users/b/two HTTP/1.1\r\nHost: ldc\r\nContent-Length: 3\r\n\r\nxyz\
        GET /v1/users/c/three HTTP/1.1\r\nHost: ldc\r\nConnection: close\r\n\r\n";
    let (reply, _) = exchange(&router, requests.as_bytes()).await;
    let answers: Vec<&str> = reply.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{reply}");
    for (answer, path) in answers.iter().zip(["one", "two", "three"]) {
        assert!(answer.starts_with("200 OK\r\n"), "{answer}");
        assert!(answer.contains(&format!("/{path}\"")), "{path}: {answer}");
        assert!(answer.contains("\r\nx-ldc-cell: c1\r\n"), "{answer}");
    }
    assert!(answers[1].contains(r#""body":"xyz""#), "{}", answers[1]);
    assert!(!answers[1].contains("connection: close"), "{}", answers[1]);
    assert!(
        answers[2].contains("\r\nconnection: close\r\n"),
        "{}",
        answers[2]
    );

    let (reply, _) = exchange(&router, b"GET /v1/users/a/old HTTP/1.0\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.contains("\r\nconnection: close\r\n"), "{reply}");
    assert!(reply.contains("\r\ncontent-length: "), "{reply}");
}

/// A client that says `Expect: 100-continue` hears `100 Continue` before it sends
/// its body; the cell gets the body, not the expectation.
#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let router = echo_router("").await;
    let addr = router.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = "POST /v1/users/a/echo HTTP/1.1\r\nHost: ldc\r\nContent-Length: 5\r\n\
        Expect: 100-continue\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("send head");
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut interim))
        .await
        .expect("100 Continue within 5 s")
        .expect("read");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").await.expect("send body");
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut reply))
        .await
        .expect("answer within 5 s")
        .expect("read");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.contains(r#""body":"hello""#), "{reply}");
    assert!(reply.contains(r#""expect":false"#), "{reply}");
}

/// Requests the router cannot read, or must not pass on, are answered with a
/// JSON error naming the problem, and their connection is closed.
#[tokio::test]
async fn unreadable_requests_get_a_json_error_and_a_close() {
    let router = echo_router("[limits]\nmax_body_bytes = 1000\n").await;
    let huge_header = format!(
        "GET /v1/users/a/x HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "b".repeat(70_000)
    );
    let post = "POST /v1/users/a/x HTTP/1.1\r\nHost: ldc\r\n";
    let cases: Vec<(String, &str, &str)> = vec![
        ("NOT HTTP AT ALL\r\n\r\n".into(), "400", "bad_request"),
        (huge_header, "431", "head_too_large"),
        (
            format!("{post}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello"),
            "400",
            "bad_request",
        ),
        (
            format!("{post}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
            "400",
            "bad_request",
        ),
        (
            format!("{post}Transfer-Encoding: gzip\r\n\r\n"),
            "400",
            "bad_request",
        ),
        (
            format!("{post}Content-Length: 1001\r\n\r\n"),
            "413",
            "body_too_large",
        ),
        (
            format!("{post}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
            "400",
            "invalid_body",
        ),
        (
            format!("{post}Transfer-Encoding: chunked\r\n\r\n3e9\r\n"),
            "413",
            "body_too_large",
        ),
        // A bare LF ends the chunk-size line for some servers: read two ways, the
        // rest could pass as a second request.
        (
            format!(
                "{post}Transfer-Encoding: chunked\r\n\r\n2;\nxx\r\n45\r\n0\r\n\r\nGET /v1/users/a/smuggled HTTP/1.1\r\nHost: ldc\r\n\r\n"
            ),
            "400",
            "invalid_body",
        ),
        (
            format!("{post}Transfer-Encoding: chunked\r\n\r\n3zzz\r\nabc\r\n0\r\n\r\n"),
            "400",
            "invalid_body",
        ),
        (
            format!("{post}Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            "400",
            "bad_request",
        ),
        (
            "GET /v1/users/a/x HTTP/1.1\r\n\r\n".into(),
            "400",
            "bad_request",
        ),
    ];
    for (request, status, code) in cases {
        let (reply, _) = exchange(&router, request.as_bytes()).await;
        let shown = &request[..request.len().min(80)];
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {status} ")),
            "{shown:?}: {reply}"
        );
        assert!(
            reply.contains("\r\nconnection: close\r\n"),
            "{shown:?}: {reply}"
        );
        let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
        let error: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        assert_eq!(error["error"]["code"], code, "{shown:?}: {reply}");
    }
}

/// The router's front closes a client that stays silent, sends half a head, or
/// idles between requests past the header read timeout, and answers 408 to one
/// that stalls within its body.
#[tokio::test]
async fn the_front_closes_stalled_clients_at_the_header_read_timeout() {
    let router = echo_router("[timeouts]\nheader_read_timeout_ms = 300\n").await;
    let head = "GET /v1/users/alice/whoami HTTP/1.1\r\nHost: ldc\r\n";
    for sent in ["".to_owned(), head.to_owned(), format!("{head}\r\n")] {
        let (reply, waited) = exchange(&router, sent.as_bytes()).await;
        assert!(
            waited >= Duration::from_millis(250),
            "{sent:?}: closed after {waited:?}, before the timeout"
        );
        // Only the whole request was answered before the idle close.
        assert_eq!(
            reply.starts_with("HTTP/1.1 200"),
            sent.ends_with("\r\n\r\n"),
            "{reply}"
        );
    }
    let stalled = "POST /v1/users/a/x HTTP/1.1\r\nHost: ldc\r\nContent-Length: 10\r\n\r\nabc";
    let (reply, waited) = exchange(&router, stalled.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    assert!(reply.contains(r#""code":"body_timeout""#), "{reply}");
    assert!(waited >= Duration::from_millis(250), "408 after {waited:?}");
}

/// A client that connects and sends nothing, half a request or half HTTP/2's
/// preface, is closed at the header read timeout instead of holding one of the
/// listener's connections.
#[tokio::test]
async fn silent_and_slow_clients_are_closed_at_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let settings = ServeSettings {
        header_read_timeout: Duration::from_millis(200),
        ..settings()
    };
    tokio::spawn(serve(
        listener,
        Arc::new(NamedCell("c1")),
        settings,
        std::future::pending(),
    ));
    for sent in [
        "",
        "GET /v1/users/alice/whoami HTTP/1.1\r\nHost: ldc\r\n",
        "PRI * HTTP/2.0\r\n",
    ] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(sent.as_bytes()).await.expect("send");
        let started = Instant::now();
        let mut reply = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut reply))
            .await
            .is_ok();
        assert!(
            closed,
            "a client that sent {sent:?} is still connected after 3 s"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "closed after {:?}, before the timeout",
            started.elapsed()
        );
    }
}

/// A cell speaking HTTP/2 itself that resets its first `refuse` streams with
/// `REFUSED_STREAM` (as a cell past its stream limit does) and answers the rest;
/// counts the streams it saw.
async fn refusing_cell(refuse: usize) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((_, mut respond))) = conn.accept().await {
                    if counter.fetch_add(1, Ordering::SeqCst) < refuse {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let response = Response::builder()
                        .header("content-length", "2")
                        .body(())
                        .expect("response");
                    if let Ok(mut body) = respond.send_response(response, false) {
                        let _ = body.send_data(bytes::Bytes::from_static(b"{}"), true);
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A stream the cell refused was not started (RFC 9113 section 8.7): the router
/// sends any request, even a non-idempotent one, once more to the same cell, and
/// answers a retryable 503 if that is refused too.
#[tokio::test]
async fn a_refused_stream_is_sent_again_once_then_answered_503() {
    for (refuse, status, streams) in [
        (1, StatusCode::OK, 2),
        (9, StatusCode::SERVICE_UNAVAILABLE, 2),
    ] {
        let (cell, seen) = refusing_cell(refuse).await;
        let router = router_with(cell, "").await;
        let reply = HttpClient::new()
            .send(
                http::Method::POST,
                &format!("{}/v1/users/alice/orders", router.url),
                &[("content-type", "application/json")],
                bytes::Bytes::from_static(b"{}"),
            )
            .await
            .expect("router answers");
        assert_eq!(
            reply.status,
            status,
            "refusing {refuse}: {:?}",
            reply.json()
        );
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), streams);
        if status != StatusCode::OK {
            assert_eq!(reply.json()["error"]["code"], "cell_busy");
            assert_eq!(reply.header("retry-after"), "1");
        }
    }
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

/// A cell that streams its answer without a length: `.../stream` sends three
/// pieces, `.../stall` one piece and then nothing for a minute.
struct StreamingCell;

impl Handler for StreamingCell {
    type Body = ChannelBody;

    async fn handle(&self, req: Request<Incoming>) -> Response<ChannelBody> {
        let stall = req.uri().path().ends_with("/stall");
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

/// A response of unknown length reaches the client chunked, and the connection
/// stays open for the next request.
#[tokio::test]
async fn a_response_of_unknown_length_is_chunked_and_keeps_the_connection() {
    let cell = spawn_cell(StreamingCell).await;
    let router = router_with(cell, "").await;
    let (reply, _) = exchange(
        &router,
        b"GET /v1/users/a/stream HTTP/1.1\r\nHost: ldc\r\n\r\n\
          GET /v1/users/a/stream HTTP/1.1\r\nHost: ldc\r\nConnection: close\r\n\r\n",
    )
    .await;
    let answers: Vec<&str> = reply.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 2, "{reply}");
    for answer in answers {
        assert!(answer.starts_with("200 OK\r\n"), "{answer}");
        assert!(
            answer.contains("\r\ntransfer-encoding: chunked\r\n"),
            "{answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let pieces: String = body.split("\r\n").skip(1).step_by(2).collect();
        assert_eq!(pieces, "one two three", "{answer}");
    }
}

/// A cell that stops sending in the middle of a response does not hold the
/// client's connection: it is closed at the request timeout.
#[tokio::test]
async fn a_response_that_stalls_is_cut_off_at_the_request_timeout() {
    let cell = spawn_cell(StreamingCell).await;
    let router = router(cell, "request_timeout_ms = 300").await;
    let (reply, waited) = exchange(
        &router,
        b"GET /v1/users/a/stall HTTP/1.1\r\nHost: ldc\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.contains("partial"), "{reply}");
    assert!(
        waited >= Duration::from_millis(250),
        "cut off after {waited:?}"
    );
}

/// A cell speaking HTTP/2 itself that takes more streams at once than ldc's cells
/// announce, answers each request's head at once and then sends its body a byte
/// every 50 ms until `stop` turns true; counts the streams it saw.
async fn trickling_cell() -> (
    SocketAddr,
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::sync::watch::Sender<bool>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (counter, stopped) = (counter.clone(), stopped.clone());
            tokio::spawn(async move {
                let handshake = h2::server::Builder::new()
                    .max_concurrent_streams(4 * ldc_serve::MAX_CONCURRENT_STREAMS)
                    .handshake::<_, bytes::Bytes>(stream);
                let Ok(mut conn) = handshake.await else {
                    return;
                };
                while let Some(Ok((_, mut respond))) = conn.accept().await {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut body) = respond.send_response(Response::new(()), false) else {
                        continue;
                    };
                    let mut stopped = stopped.clone();
                    tokio::spawn(async move {
                        while !*stopped.borrow() {
                            tokio::select! {
                                _ = stopped.changed() => {}
                                () = tokio::time::sleep(Duration::from_millis(50)) => {
                                    let _ = body.send_data(bytes::Bytes::from_static(b"."), false);
                                }
                            }
                        }
                        let _ = body.send_data(bytes::Bytes::new(), true);
                    });
                }
            });
        }
    });
    (addr, seen, stop)
}

/// Reads from `stream` until `pattern` has arrived (at most 5 s); returns what came.
async fn read_until(stream: &mut tokio::net::TcpStream, pattern: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !String::from_utf8_lossy(&seen).contains(pattern) {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before {pattern:?}: {seen:?}");
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("arrives within 5 s");
    String::from_utf8_lossy(&seen).into_owned()
}

/// While every stream the router opens to a cell is taken, the next request waits
/// at the router, unsent, and gets a retryable 503 at the request timeout; once
/// the responses holding the streams end, requests go through again.
#[tokio::test]
async fn past_a_cells_stream_limit_a_request_waits_unsent_and_gets_503() {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;
    let (cell, seen, stop) = trickling_cell().await;
    let router = router(cell, "request_timeout_ms = 400").await;
    let addr = router.url.trim_start_matches("http://");
    let limit = ldc_serve::MAX_CONCURRENT_STREAMS as usize;
    let mut holders = Vec::new();
    for i in 0..limit {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET /v1/users/u{i}/hold HTTP/1.1\r\nHost: ldc\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        holders.push(stream);
    }
    for stream in &mut holders {
        let head = read_until(stream, "\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    }
    assert_eq!(seen.load(Ordering::SeqCst), limit);

    let late = format!("{}/v1/users/late/hold", router.url);
    let reply = HttpClient::new().get(&late).await.expect("router answers");
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        reply.json()
    );
    assert_eq!(reply.json()["error"]["code"], "cell_busy");
    assert_eq!(reply.header("retry-after"), "1");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        limit,
        "the late request was sent"
    );

    stop.send_replace(true);
    for stream in &mut holders {
        read_until(stream, "\r\n0\r\n\r\n").await;
    }
    let reply = HttpClient::new().get(&late).await.expect("router answers");
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(seen.load(Ordering::SeqCst), limit + 1);
}

/// An HTTP/2 client that takes none of its responses (a zero flow-control
/// window) does not keep the cell's streams: the router reads small answers whole
/// first, so other clients' requests still go through.
#[tokio::test]
async fn an_http2_client_that_reads_nothing_does_not_hold_the_cells_streams() {
    let router = echo_router("[timeouts]\nrequest_timeout_ms = 400\n").await;
    let addr = router.url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(stream)
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let mut unread = Vec::new();
    for i in 0..ldc_serve::MAX_CONCURRENT_STREAMS {
        let request = Request::get(format!("{}/v1/users/u{i}/whoami", router.url))
            .body(())
            .expect("request");
        let mut client = client.clone().ready().await.expect("stream");
        let (response, _) = client.send_request(request, true).expect("send");
        unread.push(response);
    }
    for response in &mut unread {
        let head = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .expect("head within 5 s")
            .expect("response");
        assert_eq!(head.status(), StatusCode::OK);
    }
    let reply = HttpClient::new()
        .get(&format!("{}/v1/users/other/whoami", router.url))
        .await
        .expect("router answers");
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
}

/// Serves `handler` on a free port with an HTTP/2 idle timeout of `idle` and a
/// drain timeout of 2 s.
async fn serve_idle<H: Handler>(handler: H, idle: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let settings = ServeSettings {
        http2_idle_timeout: idle,
        drain_timeout: Duration::from_secs(2),
        ..settings()
    };
    tokio::spawn(serve(
        listener,
        Arc::new(handler),
        settings,
        std::future::pending(),
    ));
    addr
}

/// An HTTP/2 connection to `addr`, and its task, which ends when it closes.
async fn connect_h2(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(stream).await.expect("handshake");
    (client, tokio::spawn(conn))
}

/// Waits for the task of an HTTP/2 connection (`what`) to end cleanly: the
/// server closed it within `limit`.
async fn closes_within(
    connection: tokio::task::JoinHandle<Result<(), h2::Error>>,
    limit: Duration,
    what: &str,
) {
    tokio::time::timeout(limit, connection)
        .await
        .unwrap_or_else(|_| panic!("{what} is not closed within {limit:?}"))
        .expect("connection task")
        .unwrap_or_else(|err| panic!("{what} closed with an error: {err}"));
}

/// One GET over `client`'s connection; its status.
async fn get_h2(client: &h2::client::SendRequest<bytes::Bytes>, addr: SocketAddr) -> StatusCode {
    let request = Request::get(format!("http://{addr}/v1/users/u/whoami"))
        .body(())
        .expect("request");
    let (response, _) = client
        .clone()
        .ready()
        .await
        .expect("the connection takes a stream")
        .send_request(request, true)
        .expect("send");
    response.await.expect("response").status()
}

/// An HTTP/2 connection lives as long as its client keeps talking; once the
/// client goes quiet it is closed, without cutting a request in flight, and one
/// that sent only the preface does not keep a connection of the listener.
#[tokio::test]
async fn quiet_http2_clients_are_closed_and_their_requests_in_flight_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let idle = Duration::from_millis(400);
    let addr = serve_idle(NamedCell("c1"), idle).await;
    let (client, connection) = connect_h2(addr).await;
    // Busy for 5 idle periods: one connection throughout.
    let started = Instant::now();
    while started.elapsed() < idle * 5 {
        assert_eq!(get_h2(&client, addr).await, StatusCode::OK);
    }
    // Then quiet (the client still holds the connection): the server closes it.
    closes_within(connection, Duration::from_secs(5), "a quiet connection").await;
    drop(client);

    // Quiet while the cell takes 4 idle periods to answer: the answer comes, and
    // then the connection closes.
    let slow = SlowCell {
        delay: idle * 4,
        arrived: Arc::new(Notify::new()),
    };
    let slow_addr = serve_idle(slow, idle).await;
    let (client, connection) = connect_h2(slow_addr).await;
    assert_eq!(get_h2(&client, slow_addr).await, StatusCode::OK);
    closes_within(
        connection,
        Duration::from_secs(1),
        "once answered, a connection asked to close while quiet",
    )
    .await;
    drop(client);

    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .expect("a client that sent only the preface is closed within 5 s")
        .expect("read");
}
