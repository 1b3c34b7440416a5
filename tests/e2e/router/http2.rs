//! HTTP/2 clients of the router: one that reads nothing, and quiet ones closed
//! at the idle timeout.

use super::*;

/// An HTTP/2 client that takes none of its responses (a zero flow-control
/// window) does not keep the cell's streams: the router reads small answers whole
/// first, so other clients' requests still go through.
#[tokio::test]
async fn an_http2_client_that_reads_nothing_does_not_hold_the_cells_streams() {
    let router = echo_router("[timeouts]\nrequest_timeout_ms = 2000\n").await;
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

/// An HTTP/2 client's body over the bound is refused by the listener's front with
/// the JSON 413 every listener gives, and the router counts it with its own
/// answers.
#[tokio::test]
async fn an_http2_body_over_the_bound_is_refused_and_counted() {
    let router = echo_router("[limits]\nmax_body_bytes = 1000\n").await;
    let addr = router.url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(stream)
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let request = Request::post(format!("{}/v1/users/a/deposits", router.url))
        .body(())
        .expect("request");
    let mut client = client.ready().await.expect("stream");
    let (response, mut body) = client.send_request(request, false).expect("send");
    body.send_data(bytes::Bytes::from(vec![b'x'; 2000]), true)
        .expect("body");
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("answered within 5 s")
        .expect("response");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.headers()["content-type"], "application/json");
    let metrics = HttpClient::new()
        .get(&format!("{}/metrics", router.admin))
        .await
        .expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"ldc_router_requests_total{cell="none",class="4xx",method="POST"} 1"#),
        "{text}"
    );
}
