//! testkv driven by the real tikv-client: what a TiKV user does (transactions
//! across regions and stores, scans, conflicts), and what testkv promises beyond
//! (durable data, restarts, splits, faults, the control API).

use std::time::Duration;

use testkv::{Config, RegionFault, TestKv};
use tikv_client::{
    Config as ClientConfig, TimestampExt as _, TransactionClient, TransactionOptions,
};

async fn client(kv: &TestKv) -> TransactionClient {
    TransactionClient::new_with_config(
        kv.pd_endpoints(),
        ClientConfig::default().with_timeout(Duration::from_secs(5)),
    )
    .await
    .expect("the client connects to testkv's PD")
}

fn two_stores() -> Config {
    Config {
        stores: 2,
        split_keys: vec![b"m".to_vec()],
        ..Config::default()
    }
}

async fn put_all(client: &TransactionClient, pairs: &[(&str, &str)]) {
    let mut txn = client.begin_optimistic().await.expect("begin");
    for (key, value) in pairs {
        txn.put(key.to_string(), value.to_string())
            .await
            .expect("put");
    }
    txn.commit().await.expect("commit");
}

/// A read-only snapshot at the current timestamp.
async fn snapshot(client: &TransactionClient) -> tikv_client::Snapshot {
    client.snapshot(
        client.current_timestamp().await.expect("ts"),
        TransactionOptions::new_optimistic().read_only(),
    )
}

async fn read(client: &TransactionClient, key: &str) -> Option<Vec<u8>> {
    let mut snapshot = snapshot(client).await;
    snapshot.get(key.to_string()).await.expect("get")
}

#[tokio::test]
async fn transactions_span_regions_on_two_stores() {
    let kv = TestKv::start(two_stores()).await.expect("testkv starts");
    let client = client(&kv).await;
    put_all(&client, &[("apple", "1"), ("melon", "2"), ("zebra", "3")]).await;
    assert_eq!(read(&client, "zebra").await.as_deref(), Some(&b"3"[..]));

    let mut snapshot = snapshot(&client).await;
    let forward: Vec<_> = snapshot
        .scan("a".to_owned().."zz".to_owned(), 10)
        .await
        .expect("scan")
        .map(|pair| pair.value().clone())
        .collect();
    assert_eq!(forward, vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
    let backward: Vec<_> = snapshot
        .scan_reverse("a".to_owned().."zz".to_owned(), 2)
        .await
        .expect("reverse scan")
        .map(|pair| pair.value().clone())
        .collect();
    assert_eq!(backward, vec![b"3".to_vec(), b"2".to_vec()]);
    let batch = snapshot
        .batch_get(vec![
            "apple".to_owned(),
            "nothing".to_owned(),
            "zebra".to_owned(),
        ])
        .await
        .expect("batch get")
        .count();
    assert_eq!(batch, 2, "a missing key is left out");

    let counters = kv.counters();
    for rpc in [
        "GetMembers",
        "Tso",
        "GetRegion",
        "GetStore",
        "KvPrewrite",
        "KvCommit",
        "KvScan",
        "KvBatchGet",
    ] {
        assert!(
            counters.get(rpc).copied().unwrap_or(0) > 0,
            "{rpc} was called: {counters:?}"
        );
    }
    assert!(kv.unimplemented().is_empty(), "{:?}", kv.unimplemented());
}

#[tokio::test]
async fn the_second_of_two_concurrent_writers_gets_a_conflict() {
    let kv = TestKv::start(two_stores()).await.expect("testkv starts");
    let client = client(&kv).await;
    let mut first = client.begin_optimistic().await.expect("begin");
    let mut second = client.begin_optimistic().await.expect("begin");
    first
        .put("k".to_owned(), "first".to_owned())
        .await
        .expect("put");
    second
        .put("k".to_owned(), "second".to_owned())
        .await
        .expect("put");
    first.commit().await.expect("the first commits");
    let err = second.commit().await.expect_err("the second conflicts");
    assert!(err.to_string().to_lowercase().contains("conflict"), "{err}");
    let _ = second.rollback().await;
    assert_eq!(read(&client, "k").await.as_deref(), Some(&b"first"[..]));
}

#[tokio::test]
async fn data_survives_a_restart_in_the_same_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        data_dir: Some(dir.path().to_owned()),
        ..two_stores()
    };
    let before = {
        let kv = TestKv::start(config.clone()).await.expect("testkv starts");
        let client = client(&kv).await;
        put_all(&client, &[("apple", "1"), ("zebra", "2")]).await;
        client.current_timestamp().await.expect("ts").version()
    };
    let kv = TestKv::start(config).await.expect("testkv starts again");
    let client = client(&kv).await;
    assert!(
        client.current_timestamp().await.expect("ts").version() > before,
        "timestamps never go back across a restart"
    );
    assert_eq!(read(&client, "apple").await.as_deref(), Some(&b"1"[..]));
    assert_eq!(read(&client, "zebra").await.as_deref(), Some(&b"2"[..]));
}

#[tokio::test]
async fn region_errors_and_splits_are_retried_by_the_client() {
    let kv = TestKv::start(two_stores()).await.expect("testkv starts");
    let client = client(&kv).await;
    put_all(&client, &[("apple", "1"), ("zebra", "2")]).await;
    kv.faults().region_error("KvGet", RegionFault::NotLeader, 2);
    kv.faults()
        .region_error("KvPrewrite", RegionFault::EpochNotMatch, 1);
    kv.faults()
        .region_error("KvCommit", RegionFault::RegionNotFound, 1);
    assert!(
        kv.split(b"t"),
        "zebra's region is cut while the client caches it"
    );
    put_all(&client, &[("apple", "3"), ("zebra", "4")]).await;
    assert_eq!(read(&client, "apple").await.as_deref(), Some(&b"3"[..]));
    assert_eq!(read(&client, "zebra").await.as_deref(), Some(&b"4"[..]));
    let counters = kv.counters();
    for fault in [
        "fault.not_leader",
        "fault.epoch_not_match",
        "fault.region_not_found",
    ] {
        assert!(
            counters.get(fault).copied().unwrap_or(0) > 0,
            "{fault} fired: {counters:?}"
        );
    }
}

/// A commit that takes long keeps its primary lock alive: the client's heartbeat
/// raises the lock's TTL while the commit waits.
#[tokio::test]
async fn a_slow_commit_keeps_its_lock_alive_with_heartbeats() {
    let kv = TestKv::start(two_stores()).await.expect("testkv starts");
    let client = client(&kv).await;
    kv.faults().latency("KvCommit", Duration::from_millis(600));
    let options = TransactionOptions::new_optimistic().heartbeat_option(
        tikv_client::transaction::HeartbeatOption::FixedTime(Duration::from_millis(50)),
    );
    let mut txn = client.begin_with_options(options).await.expect("begin");
    txn.put("apple".to_owned(), "1".to_owned())
        .await
        .expect("put");
    let commit = tokio::spawn(async move { txn.commit().await });
    let raised = loop {
        let ttl = kv.locks().iter().map(|lock| lock.ttl).max().unwrap_or(0);
        if ttl > 3_000 || commit.is_finished() {
            break ttl;
        }
        tokio::task::yield_now().await;
    };
    commit.await.expect("commit task").expect("commit");
    assert!(
        raised > 3_000,
        "the heartbeat raised the TTL past the first 3 s: {raised}"
    );
    assert!(kv.counters().get("KvTxnHeartBeat").copied().unwrap_or(0) > 0);
    assert_eq!(read(&client, "apple").await.as_deref(), Some(&b"1"[..]));
}

/// A filtered reply drop picks transactions by what they prewrote: the primary's
/// commit is lost even though the primary's key does not match, while a
/// transaction that never wrote a matching key commits untouched.
#[tokio::test]
async fn lost_commit_replies_pick_transactions_by_any_key_they_write() {
    let kv = TestKv::start(two_stores()).await.expect("testkv starts");
    let client = client(&kv).await;
    kv.faults()
        .drop_commit_replies(1_000, Some(b"zebra".to_vec()));
    put_all(&client, &[("apple", "first")]).await;
    let mut txn = client.begin_optimistic().await.expect("begin");
    txn.put("apple".to_owned(), "primary".to_owned())
        .await
        .expect("put");
    txn.put("zebra".to_owned(), "secondary".to_owned())
        .await
        .expect("put");
    txn.commit()
        .await
        .expect_err("every reply to the primary's commit is lost");
    kv.faults().clear();
    assert!(kv.counters()["fault.drop_commit_reply"] >= 1);
    assert_eq!(
        read(&client, "zebra").await.as_deref(),
        Some(&b"secondary"[..]),
        "the primary was committed, so the secondary resolves to committed"
    );
}

/// The client does not retry `ServerIsBusy`: it surfaces as an error.
#[tokio::test]
async fn server_is_busy_reaches_the_caller() {
    let kv = TestKv::start(two_stores()).await.expect("testkv starts");
    let client = client(&kv).await;
    put_all(&client, &[("apple", "1")]).await;
    kv.faults().server_busy("KvGet", 1);
    let mut snapshot = snapshot(&client).await;
    let err = snapshot
        .get("apple".to_owned())
        .await
        .expect_err("busy is not retried");
    assert!(err.to_string().contains("busy"), "{err}");
    assert_eq!(
        read(&client, "apple").await.as_deref(),
        Some(&b"1"[..]),
        "the next read is served"
    );
}

/// A stopped server cuts its connections and refuses new ones; once it listens
/// again the client reconnects by itself. (tikv-client skips a PD reconnect
/// within a second of the last one, so the first calls after a quick restart may
/// still fail: the test waits for the client, bounded.)
#[tokio::test]
async fn the_client_reconnects_after_the_server_stops_listening() {
    let kv = TestKv::start(two_stores()).await.expect("testkv starts");
    let client = client(&kv).await;
    put_all(&client, &[("apple", "1")]).await;
    kv.stop_listening().await;
    assert!(
        client.current_timestamp().await.is_err(),
        "nothing answers while stopped"
    );
    kv.resume_listening().await.expect("listens again");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let value = loop {
        let attempt = async {
            let ts = client.current_timestamp().await?;
            let mut snapshot =
                client.snapshot(ts, TransactionOptions::new_optimistic().read_only());
            snapshot.get("apple".to_owned()).await
        };
        match attempt.await {
            Ok(value) => break value,
            Err(err) => assert!(
                std::time::Instant::now() < deadline,
                "the client never came back: {err}"
            ),
        }
    };
    assert_eq!(
        value.as_deref(),
        Some(&b"1"[..]),
        "the data outlived the stop"
    );
}

/// One HTTP/1.1 exchange with the control API: the status code and the body.
async fn control(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: testkv\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response[9..12].parse().expect("status code");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn the_control_api_injects_faults_and_refuses_bad_requests() {
    let kv = std::sync::Arc::new(TestKv::start(two_stores()).await.expect("testkv starts"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(testkv::control::serve(kv.clone(), listener));
    let client = client(&kv).await;
    put_all(&client, &[("apple", "1")]).await;

    let (status, body) = control(
        addr,
        "POST",
        "/faults",
        r#"{"kind":"region_error","rpc":"KvGet","fault":"server_is_busy","n":1}"#,
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"ok":true}"#));
    let mut snapshot = snapshot(&client).await;
    assert!(
        snapshot.get("apple".to_owned()).await.is_err(),
        "the fault took effect"
    );

    let (status, body) = control(addr, "GET", "/counters", "").await;
    let counters: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        (status, counters["fault.server_is_busy"].as_u64()),
        (200, Some(1))
    );

    let (status, body) = control(addr, "POST", "/faults", r#"{"kind":"explode"}"#).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("explode"),
        "the error names the problem: {body}"
    );
    let (status, _) = control(addr, "GET", "/faults", "").await;
    assert_eq!(status, 405);
    let (status, _) = control(addr, "GET", "/nothing", "").await;
    assert_eq!(status, 404);
    let (status, body) = control(addr, "POST", "/split", r#"{"key":"q"}"#).await;
    assert_eq!((status, body.as_str()), (200, r#"{"split":true}"#));
}
