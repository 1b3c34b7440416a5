//! End-to-end: a real cluster from `ldc up` on free ports: routing, refusals, error
//! codes, a SIGKILLed cell and the supervisor's restarts and shutdown.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::support::{Cluster, EVENT_TIMEOUT, alive};
use bytes::Bytes;
use http::{Method, StatusCode};
use nix::sys::signal::Signal;

#[tokio::test]
async fn every_user_lands_on_the_cell_the_placement_names() {
    let cluster = Cluster::builder().cells(3).spawn().await;
    let router = cluster.router_url();
    let mut cells_seen = HashSet::new();
    for i in 0..300 {
        let user = format!("u{i}");
        let (slot, index) = cluster.topology().route(&user);
        let owner = &cluster.topology().cells()[index].id;
        let reply = cluster
            .client
            .get(&format!("{router}/v1/users/{user}/whoami"))
            .await
            .expect("router answers");
        assert_eq!(reply.status, StatusCode::OK, "{user}: {:?}", reply.body);
        assert_eq!(reply.header("x-ldc-cell"), owner, "{user}");
        assert_eq!(reply.header("x-ldc-slot"), slot.to_string(), "{user}");
        assert_eq!(reply.header("x-ldc-epoch"), "1");
        let whoami = reply.json();
        assert_eq!(whoami["cell"], owner.as_str(), "the cell itself agrees");
        assert_eq!(whoami["slot"], slot);
        assert_eq!(whoami["user_id"], user.as_str());
        cells_seen.insert(owner.clone());

        let route = cluster
            .client
            .get(&format!("{router}/v1/route/{user}"))
            .await
            .expect("route answers")
            .json();
        assert_eq!(route["cell"], owner.as_str());
        assert_eq!(route["slot"], slot);
    }
    assert_eq!(cells_seen.len(), 3, "300 users reach every cell");
}

#[tokio::test]
async fn a_cell_refuses_users_it_does_not_own_with_421() {
    let cluster = Cluster::builder().cells(3).spawn().await;
    let user = &cluster.users_of("c1", 1)[0];
    for wrong in ["c2", "c3"] {
        let reply = cluster
            .client
            .get(&format!(
                "{}/v1/users/{user}/whoami",
                cluster.cell_url(wrong)
            ))
            .await
            .expect("cell answers");
        assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST);
        let error = &reply.json()["error"];
        assert_eq!(error["code"], "wrong_cell");
        assert_eq!(error["owner"], "c1");
        // Cells started from a file with port-0 addresses cannot know the owner's.
        assert!(
            error["owner_address"].is_null()
                || error["owner_address"] == cluster.proc("c1").listen.to_string()
        );
        assert_eq!(error["slot"], cluster.topology().route(user).0);
    }
    let right = cluster
        .client
        .get(&format!(
            "{}/v1/users/{user}/whoami",
            cluster.cell_url("c1")
        ))
        .await
        .expect("cell answers");
    assert_eq!(right.status, StatusCode::OK);
}

/// Method, path, headers, body length, expected status and error code.
type Case = (
    Method,
    String,
    Vec<(&'static str, &'static str)>,
    usize,
    StatusCode,
    &'static str,
);

#[tokio::test]
async fn bad_requests_get_json_errors_with_the_documented_codes() {
    let cluster = Cluster::builder()
        .cells(2)
        .extra("[limits]\nmax_body_bytes = 1024\n")
        .spawn()
        .await;
    let router = cluster.router_url();
    let long_id = "x".repeat(65);
    let cases: Vec<Case> = vec![
        (
            Method::GET,
            format!("/v1/users/{long_id}/whoami"),
            vec![],
            0,
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
        ),
        (
            Method::GET,
            "/v1/users/a.b/whoami".into(),
            vec![],
            0,
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
        ),
        (
            Method::GET,
            "/v1/users//whoami".into(),
            vec![],
            0,
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
        ),
        (
            Method::GET,
            "/v1/items/hot".into(),
            vec![],
            0,
            StatusCode::BAD_REQUEST,
            "missing_user_id",
        ),
        (
            Method::GET,
            "/v1/items/hot".into(),
            vec![("x-user-id", "a b")],
            0,
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
        ),
        (
            Method::GET,
            "/v2/anything".into(),
            vec![],
            0,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            "/v1/route/alice".into(),
            vec![],
            0,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::POST,
            "/v1/users/alice/whoami".into(),
            vec![],
            4096,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        // Not routes of the user API: the router answers without a cell.
        (
            Method::GET,
            "/v1/users/alice/nothing-here".into(),
            vec![],
            0,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::DELETE,
            "/v1/users/alice/whoami".into(),
            vec![],
            0,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        // Proxied: the cell itself answers this.
        (
            Method::GET,
            "/v1/items/hot".into(),
            vec![("x-user-id", "alice")],
            0,
            StatusCode::NOT_FOUND,
            "unknown_item",
        ),
    ];
    for (method, path, headers, body_len, status, code) in cases {
        let reply = cluster
            .client
            .send(
                method.clone(),
                &format!("{router}{path}"),
                &headers,
                Bytes::from(vec![b'x'; body_len]),
            )
            .await
            .expect("router answers");
        assert_eq!(reply.status, status, "{method} {path}: {:?}", reply.body);
        assert_eq!(
            reply.header("content-type"),
            "application/json",
            "{method} {path}"
        );
        let error = &reply.json()["error"];
        assert_eq!(error["code"], code, "{method} {path}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn a_killed_cell_fails_only_its_users_fast_and_comes_back() {
    // A long restart backoff leaves a clear window with the cell down.
    let mut cluster = Cluster::builder()
        .cells(3)
        .restart_backoff_ms(3_000)
        .spawn()
        .await;
    let router = cluster.router_url();
    let victims = cluster.users_of("c2", 5);
    let others: Vec<String> = ["c1", "c3"]
        .iter()
        .flat_map(|c| cluster.users_of(c, 25))
        .collect();

    cluster.kill9("c2");
    cluster.next_event_matching("cell c2 pid=").await; // reaped: its port is closed
    for user in &victims {
        let started = Instant::now();
        let reply = cluster
            .client
            .get(&format!("{router}/v1/users/{user}/whoami"))
            .await
            .expect("router answers");
        let elapsed = started.elapsed();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{user}");
        assert_eq!(reply.json()["error"]["code"], "cell_unavailable");
        assert_eq!(reply.header("retry-after"), "1");
        assert_eq!(reply.header("x-ldc-cell"), "c2");
        assert!(elapsed < Duration::from_millis(100), "503 took {elapsed:?}");
    }
    for user in &others {
        let reply = cluster
            .client
            .get(&format!("{router}/v1/users/{user}/whoami"))
            .await
            .expect("router answers");
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{user} is not on the dead cell"
        );
    }

    let restarted = cluster.next_event_matching("restarted cell c2").await;
    assert!(
        restarted.contains(&format!("listen={}", cluster.proc("c2").listen)),
        "same address: {restarted}"
    );
    cluster.wait_routed(&victims[0], "c2").await;
    for user in &victims {
        let reply = cluster
            .client
            .get(&format!("{router}/v1/users/{user}/whoami"))
            .await
            .expect("router answers");
        assert_eq!(reply.status, StatusCode::OK, "{user} after restart");
        assert_eq!(reply.json()["cell"], "c2");
    }
}

#[tokio::test]
async fn admin_listeners_report_readiness_topology_and_metrics() {
    let cluster = Cluster::builder().cells(3).spawn().await;
    let user = &cluster.users_of("c1", 1)[0];
    for _ in 0..3 {
        let reply = cluster
            .client
            .get(&format!("{}/v1/users/{user}/whoami", cluster.router_url()))
            .await
            .expect("router answers");
        assert_eq!(reply.status, StatusCode::OK);
    }
    let admin = format!("http://{}", cluster.proc("r1").admin);
    let ready = cluster
        .client
        .get(&format!("{admin}/ready"))
        .await
        .expect("ready");
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["phase"], "ready");

    let topology = cluster
        .client
        .get(&format!("{admin}/admin/topology"))
        .await
        .expect("topology")
        .json();
    let cells = topology["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 3);
    let slots: u64 = cells
        .iter()
        .map(|c| c["slots"].as_u64().expect("slots"))
        .sum();
    assert_eq!(slots, 4096, "every slot has one owner");

    let metrics = cluster
        .client
        .get(&format!("{admin}/metrics"))
        .await
        .expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"ldc_router_requests_total{cell="c1",class="2xx",method="GET"} 3"#),
        "{text}"
    );
    assert!(text.contains("ldc_router_request_duration_seconds_bucket"));
    assert!(text.contains("ldc_router_in_flight 0"));

    let cell_admin = format!("http://{}", cluster.proc("c1").admin);
    let cell_metrics = cluster
        .client
        .get(&format!("{cell_admin}/metrics"))
        .await
        .expect("metrics");
    let cell_metrics = String::from_utf8_lossy(&cell_metrics.body);
    assert!(cell_metrics.contains(r#"ldc_cell_requests_total{code="200"} 3"#));
    // Secure by default: TLS between the processes.
    assert!(cell_metrics.contains("ldc_insecure 0"), "{cell_metrics}");
}

#[tokio::test]
async fn sigterm_stops_every_child_and_exits_zero() {
    let mut cluster = Cluster::builder().cells(2).spawn().await;
    let pids = cluster.child_pids();
    assert_eq!(pids.len(), 3);
    cluster.signal_up(Signal::SIGTERM);
    cluster.next_event_matching("ldc up: stopped").await;
    assert_eq!(cluster.wait_up().await, Some(0));
    for pid in pids {
        assert!(!alive(pid), "child {pid} outlived ldc up");
    }
}

#[tokio::test]
async fn children_stop_when_the_supervisor_is_killed() {
    let mut cluster = Cluster::builder().cells(2).spawn().await;
    let pids = cluster.child_pids();
    cluster.signal_up(Signal::SIGKILL);
    cluster.wait_up().await;
    // The children learn of it from their closed stdin; give them a bounded time.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while pids.iter().any(|pid| alive(*pid)) {
        assert!(
            Instant::now() < deadline,
            "children outlived a killed ldc up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `chunks` as one chunked POST straight to a cell; returns the status and
/// the raw response.
async fn post_chunked(
    address: std::net::SocketAddr,
    path: &str,
    chunks: &[Vec<u8>],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: cell\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in chunks {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // Written in two parts, so the body really arrives in more than one read.
    let (head, tail) = request.split_at(request.len() / 2);
    stream.write_all(head).await.expect("write");
    stream.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(20)).await;
    stream.write_all(tail).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

#[tokio::test]
async fn a_cell_reads_bodies_that_come_in_pieces_and_bounds_them() {
    // Plain TCP to the cell needs a deployment that chose to go without TLS; it
    // says so in its log and its metrics.
    let cluster = Cluster::builder()
        .cells(1)
        .extra("[security]\ninsecure = true\n")
        .spawn()
        .await;
    assert!(
        cluster.log_text().contains("security.insecure = true"),
        "no warning in the log"
    );
    let metrics = cluster
        .client
        .get(&format!("http://{}/metrics", cluster.proc("c1").admin))
        .await
        .expect("metrics");
    assert!(String::from_utf8_lossy(&metrics.body).contains("ldc_insecure 1"));
    let cell = cluster.proc("c1").listen;
    let user = cluster.users_of("c1", 1).remove(0);
    let path = format!("/v1/users/{user}/deposits");
    let pieces = [
        b"{\"amount\": 5,".to_vec(),
        b" \"request_id\": \"c1\"}".to_vec(),
    ];
    let (status, response) = post_chunked(cell, &path, &pieces).await;
    assert_eq!(status, 201, "{response}");
    assert!(response.contains("\"balance\":5"), "{response}");
    let big = vec![vec![b' '; 40 * 1024], vec![b' '; 40 * 1024]];
    let (status, response) = post_chunked(cell, &path, &big).await;
    assert_eq!(status, 413, "{response}");
    assert!(response.contains("body_too_large"), "{response}");
}
