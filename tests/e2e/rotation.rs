//! Certificates replaced on disk while the cluster runs: after SIGHUP new
//! connections present and check the new ones, open connections carry on, and a
//! CA taken out of the bundle is refused.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use ldc::client::HttpClient;
use ldc_serve::Connector;
use ldc_serve::tls::{ALPN_HTTP1, Identity, Role, Tls, TlsFiles};
use ldc_topology::Topology;
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Cluster, EVENT_TIMEOUT};

/// A global zone, so that cells talk to each other on the peer plane too, and
/// idle connections kept open far longer than the test: the connection opened
/// before the rotation must still be there at its end.
const DEPLOY: &str = "[global_zone]\ncell = \"c1\"\n\n\
     [[items]]\nid = \"hot\"\nname = \"Hot phone\"\nprice = 100\nstock = 100\n\n\
     [timeouts]\nheader_read_timeout_ms = 120000\n";

/// Writes `contents` to `path` whole, under a temporary name first (a process
/// that reloads meanwhile reads the old file or the new one, never half of one).
fn replace(path: &Path, contents: &[u8], mode: u32) {
    let temporary = path.with_extension("rotating");
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .unwrap_or_else(|err| panic!("{}: {err}", temporary.display()));
    file.write_all(contents).expect("write");
    std::fs::rename(&temporary, path).expect("rename into place");
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Every process of `topology`, as `(role, id)`.
fn processes(topology: &Topology) -> Vec<(Role, String)> {
    let cells = topology.cells().iter().map(|c| (Role::Cell, c.id.clone()));
    let routers = topology
        .routers()
        .iter()
        .map(|r| (Role::Router, r.id.clone()));
    cells.chain(routers).collect()
}

/// How many times process `id` logged that it read its certificates again.
fn reloads(log: &str, id: &str) -> usize {
    let prefix = format!("[{id}] ");
    log.lines()
        .filter(|line| line.starts_with(&prefix) && line.contains("certificates reloaded"))
        .count()
}

/// Sends SIGHUP to `ldc up`, which passes it on to every child, and waits until
/// each of `ids` logged that it read its certificates again; returns how long
/// that took.
async fn sighup(cluster: &mut Cluster, ids: &[String]) -> Duration {
    let log = cluster.log_text();
    let before: Vec<usize> = ids.iter().map(|id| reloads(&log, id)).collect();
    let started = Instant::now();
    cluster.signal_up(Signal::SIGHUP);
    cluster.next_event_matching("ldc up: reloaded").await;
    loop {
        let log = cluster.log_text();
        assert!(
            !log.contains("certificates not reloaded"),
            "a process refused the new files"
        );
        let pending: Vec<&String> = ids
            .iter()
            .zip(&before)
            .filter(|(id, before)| reloads(&log, id) <= **before)
            .map(|(id, _)| id)
            .collect();
        if pending.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < EVENT_TIMEOUT,
            "{pending:?} did not reload their certificates after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `GET path` on a new connection to `address` made with `tls`: `Ok` when it is
/// answered 200, else what happened.
async fn on_new_connection(
    tls: Tls,
    topology: &Topology,
    address: SocketAddr,
    path: &str,
) -> Result<(), String> {
    let connector = Connector::new(Some(Arc::new(tls)), topology, Duration::from_secs(2));
    let mut stream = connector
        .connect(address, &[ALPN_HTTP1])
        .await
        .map_err(|err| format!("handshake: {err}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: ldc\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|err| format!("write: {err}"))?;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    match read {
        _ if answer.starts_with("HTTP/1.1 200") => Ok(()),
        Ok(Err(err)) => Err(format!("read: {err} after {answer:?}")),
        _ => Err(format!("answered {answer:?}")),
    }
}

#[tokio::test]
async fn rotated_certificates_serve_after_sighup_and_the_old_ca_is_then_refused() {
    let mut cluster = Cluster::builder().cells(2).extra(DEPLOY).spawn().await;
    let topology = cluster.topology().clone();
    let deployment = topology.deploy().name.clone();
    let certs = topology.certs_dir();
    let all = processes(&topology);
    let ids: Vec<String> = all.iter().map(|(_, id)| id.clone()).collect();
    let identity = |role, id: &str| Identity::new(deployment.as_str(), role, id).expect("identity");
    let (c1, user) = (cluster.proc("c1"), cluster.users_of("c1", 1).remove(0));
    let whoami = format!("/v1/users/{user}/whoami");
    let peer = c1.peer.expect("c1's peer listener");
    // What is checked with each certificate: r1's on c1's user listener, c2's on
    // c1's peer listener (the global zone).
    let probes = [
        (Role::Router, "r1", c1.listen, whoami.as_str()),
        (Role::Cell, "c2", peer, "/v1/gz/items"),
    ];

    // A connection opened before the rotation, with the old certificate and CA.
    let before = HttpClient::acting_as(&topology, Role::Router, Some("r1")).expect("r1's files");
    let on_c1 = format!("{}{whoami}", cluster.cell_url("c1"));
    let ask = |client: &HttpClient| {
        let (client, url) = (client.clone(), on_c1.clone());
        async move { client.get(&url).await.map(|reply| reply.status) }
    };
    assert_eq!(ask(&before).await.expect("c1 answers"), StatusCode::OK);

    // The files in use now, kept for the clients of the old certificates.
    let old = tempfile::tempdir().expect("temp dir");
    let old_ca = read(&certs.join("ca.crt"));
    for (role, id) in &all {
        let files = ldc::certs::files(&certs, *role, id);
        let kept = ldc::certs::files(old.path(), *role, id);
        std::fs::copy(&files.cert, &kept.cert).expect("keep the old certificate");
        std::fs::copy(&files.key, &kept.key).expect("keep the old key");
    }

    // A new CA and a new leaf for every process, made as `ldc up` makes them.
    let new = tempfile::tempdir().expect("temp dir");
    let mut deploy = topology.deploy().clone();
    deploy.security.certs_dir = Some(new.path().to_owned());
    let renewed = Topology::from_deploy("renewed", deploy).expect("valid");
    ldc::certs::ensure(&renewed, new.path()).expect("a new CA and leaves");
    let new_ca = read(&new.path().join("ca.crt"));

    // Step 1: both CAs trusted everywhere before any process presents a new
    // certificate, so that processes reloading in any order accept each other.
    let bundle = [old_ca.as_slice(), new_ca.as_slice()].concat();
    replace(&certs.join("ca.crt"), &bundle, 0o644);
    let trusted = sighup(&mut cluster, &ids).await;

    // Step 2: every process with its new certificate.
    for (role, id) in &all {
        let (files, renewed) = (
            ldc::certs::files(&certs, *role, id),
            ldc::certs::files(new.path(), *role, id),
        );
        replace(&files.key, &read(&renewed.key), 0o600);
        replace(&files.cert, &read(&renewed.cert), 0o644);
    }
    let leaves = sighup(&mut cluster, &ids).await;

    // New certificates are served on new connections: cells trust the new CA.
    for (role, id, address, path) in probes {
        let tls = Tls::load(ldc::certs::files(&certs, role, id), identity(role, id))
            .expect("the new files");
        on_new_connection(tls, &topology, address, path)
            .await
            .unwrap_or_else(|why| panic!("{id}'s new certificate at {address}: {why}"));
    }
    let after = HttpClient::acting_as(&topology, Role::Router, Some("r1")).expect("new files");
    assert_eq!(ask(&after).await.expect("c1 answers"), StatusCode::OK);
    for cell in ["c1", "c2"] {
        let user = cluster.users_of(cell, 1).remove(0);
        let url = format!("{}/v1/users/{user}/whoami", cluster.router_url());
        let reply = cluster.client.get(&url).await.expect("the router answers");
        assert_eq!(reply.status, StatusCode::OK, "{url}: {:?}", reply.body);
    }
    assert_eq!(ask(&before).await.expect("c1 answers"), StatusCode::OK);

    // The old certificates, trusting both CAs so that only the cell can refuse them.
    let both = old.path().join("both.crt");
    std::fs::write(&both, &bundle).expect("write the bundle");
    let old_tls = |role, id: &str| {
        let files = TlsFiles {
            ca: both.clone(),
            ..ldc::certs::files(old.path(), role, id)
        };
        Tls::load(files, identity(role, id)).expect("the old files")
    };
    for (role, id, address, path) in probes {
        on_new_connection(old_tls(role, id), &topology, address, path)
            .await
            .unwrap_or_else(|why| panic!("{id}'s old certificate during the rotation: {why}"));
    }

    // Step 3: the old CA leaves the bundle, and its key gives way to the new one.
    replace(&certs.join("ca.crt"), &new_ca, 0o644);
    replace(
        &certs.join("ca.key"),
        &read(&new.path().join("ca.key")),
        0o600,
    );
    let removed = sighup(&mut cluster, &ids).await;
    for (role, id, address, path) in probes {
        let refused = on_new_connection(old_tls(role, id), &topology, address, path).await;
        assert!(
            refused.is_err(),
            "{id}'s old certificate was served at {address} after its CA left the bundle"
        );
        let tls = Tls::load(ldc::certs::files(&certs, role, id), identity(role, id))
            .expect("the new files");
        on_new_connection(tls, &topology, address, path)
            .await
            .unwrap_or_else(|why| panic!("{id}'s new certificate at {address}: {why}"));
    }
    // A new connection from `before` is impossible now (its certificate is refused
    // and it trusts only the old CA): an answer comes on the one it opened first.
    assert_eq!(
        ask(&before)
            .await
            .expect("the connection from before answers"),
        StatusCode::OK
    );

    // The router's new connections: c2, restarted, knows only the new CA.
    let c2_user = cluster.users_of("c2", 1).remove(0);
    cluster.kill9("c2");
    cluster.next_event_matching("restarted cell c2").await;
    let restarted = Instant::now();
    let url = format!("{}/v1/users/{c2_user}/whoami", cluster.router_url());
    cluster.wait_json(&url, |reply| reply["cell"] == "c2").await;
    eprintln!(
        "certificates reloaded by every process {trusted:?} after the SIGHUP for the bundle, \
         {leaves:?} after the one for the new certificates, {removed:?} after the one for the \
         old CA's removal; the router served c2 again {:?} after its restart",
        restarted.elapsed()
    );
}
