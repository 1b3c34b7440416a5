//! The router's HTTP/1.1 front as clients see it: framing, pipelining, 100-continue,
//! unreadable requests, stalled clients, and responses of unknown length or that
//! stall.

use super::*;

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
        let request = "POST /v1/users/alice/deposits HTTP/1.1\r\nHost: ldc\r\n\
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
    let requests = "GET /v1/users/a/balance HTTP/1.1\r\nHost: ldc\r\n\r\n\
        POST /v1/users/b/deposits HTTP/1.1\r\nHost: ldc\r\nContent-Length: 3\r\n\r\nxyz\
        GET /v1/users/c/journal HTTP/1.1\r\nHost: ldc\r\nConnection: close\r\n\r\n";
    let (reply, _) = exchange(&router, requests.as_bytes()).await;
    let answers: Vec<&str> = reply.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{reply}");
    for (answer, path) in answers.iter().zip(["balance", "deposits", "journal"]) {
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

    let (reply, _) = exchange(&router, b"GET /v1/users/a/balance HTTP/1.0\r\n\r\n").await;
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
    let head = "POST /v1/users/a/deposits HTTP/1.1\r\nHost: ldc\r\nContent-Length: 5\r\n\
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
        "GET /v1/users/a/balance HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "b".repeat(70_000)
    );
    let post = "POST /v1/users/a/deposits HTTP/1.1\r\nHost: ldc\r\n";
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
                "{post}Transfer-Encoding: chunked\r\n\r\n2;\nxx\r\n45\r\n0\r\n\r\nGET /v1/users/a/journal HTTP/1.1\r\nHost: ldc\r\n\r\n"
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
            "GET /v1/users/a/balance HTTP/1.1\r\n\r\n".into(),
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
    let stalled =
        "POST /v1/users/a/deposits HTTP/1.1\r\nHost: ldc\r\nContent-Length: 10\r\n\r\nabc";
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

/// A response of unknown length reaches the client chunked, and the connection
/// stays open for the next request.
#[tokio::test]
async fn a_response_of_unknown_length_is_chunked_and_keeps_the_connection() {
    let (reply, _) = from_streaming_cell(
        "",
        b"GET /v1/users/stream/balance HTTP/1.1\r\nHost: ldc\r\n\r\n\
          GET /v1/users/stream/balance HTTP/1.1\r\nHost: ldc\r\nConnection: close\r\n\r\n",
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
    let (reply, waited) = from_streaming_cell(
        "[timeouts]\nrequest_timeout_ms = 300\n",
        b"GET /v1/users/stall/balance HTTP/1.1\r\nHost: ldc\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.contains("partial"), "{reply}");
    assert!(
        waited >= Duration::from_millis(250),
        "cut off after {waited:?}"
    );
}

/// `request` sent through a router with `settings` to a [`StreamingCell`]: what
/// came back, and how long it took.
async fn from_streaming_cell(settings: &str, request: &[u8]) -> (String, Duration) {
    let cell = spawn_cell(StreamingCell).await;
    let router = router_with(cell, settings).await;
    exchange(&router, request).await
}
