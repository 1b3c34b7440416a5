//! Cells that are slow, break, move or refuse: what the router answers, and
//! when it sends a request again; and the router's own drain.

use super::*;

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

    async fn handle(&self, _req: Request<Bytes>) -> Response<Body> {
        *self.own.shards.lock().expect("shards") = serde_json::json!([]);
        *self.peer.shards.lock().expect("shards") =
            serde_json::json!([{"cell": "c2", "epoch": 1}, {"cell": "c1", "epoch": 2}]);
        ldc_serve::json_error(StatusCode::MISDIRECTED_REQUEST, "wrong_cell", "moved", [])
    }
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
        let request = format!("GET /v1/users/u{i}/balance HTTP/1.1\r\nHost: ldc\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        holders.push(stream);
    }
    for stream in &mut holders {
        let head = read_until(stream, "\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    }
    assert_eq!(seen.load(Ordering::SeqCst), limit);

    let late = format!("{}/v1/users/late/balance", router.url);
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
