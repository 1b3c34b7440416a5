//! A process's two listeners through its lifecycle: `/ready` follows the phase,
//! requests in flight finish while new connections are refused, the admin
//! listener outlasts the main one, and the drain ends at its deadline.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::*;
use crate::http1::Http1Limits;
use crate::phase::phase_channel;

/// Answers each request once released, and tells when one has arrived.
struct Gate {
    arrived: mpsc::UnboundedSender<()>,
    release: watch::Receiver<bool>,
}

impl Handler for Gate {
    type Body = Full<Bytes>;

    async fn handle(&self, _: Request<Bytes>) -> Response<Full<Bytes>> {
        let _ = self.arrived.send(());
        let _ = self.release.clone().wait_for(|released| *released).await;
        Response::new(Full::new(Bytes::from_static(b"done")))
    }
}

/// One admin route, `/admin/ping`.
struct Ping;

impl AdminRoutes for Ping {
    async fn get(&self, path: &str) -> Option<Response<Body>> {
        (path == "/admin/ping").then(|| json(StatusCode::OK, &json!({"pong": true})))
    }
}

/// A process serving a [`Gate`] and its admin listener.
struct Process {
    main: SocketAddr,
    admin: SocketAddr,
    phase: PhaseTx,
    arrived: mpsc::UnboundedReceiver<()>,
    release: watch::Sender<bool>,
    shutdown: oneshot::Sender<()>,
    served: JoinHandle<()>,
    token: AdminToken,
    _secrets: tempfile::TempDir,
}

async fn start(drain_timeout: Duration) -> Process {
    let main = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (main_addr, admin_addr) = (
        main.local_addr().expect("address"),
        admin.local_addr().expect("address"),
    );
    let (arrived, arrived_rx) = mpsc::unbounded_channel();
    let (release, release_rx) = watch::channel(false);
    let gate = Arc::new(Gate {
        arrived,
        release: release_rx,
    });
    let (phase, _) = phase_channel();
    let settings = ServeSettings {
        header_read_timeout: Duration::from_secs(10),
        http2_idle_timeout: Duration::from_secs(60),
        drain_timeout,
        max_connections: 16,
        limits: Http1Limits {
            body_timeout: Duration::from_secs(10),
            max_body_bytes: 1024,
            stall_timeout: Duration::from_secs(10),
        },
        tls: None,
    };
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let secrets = tempfile::tempdir().expect("temp dir");
    let token_file = secrets.path().join("admin.token");
    AdminToken::create(&token_file).expect("create the token");
    let token = AdminToken::read(&token_file).expect("read the token");
    let plane = AdminPlane {
        listener: admin,
        registry: Registry::new(),
        token: token.clone(),
    };
    let served = tokio::spawn(serve_with_admin(
        (main, gate),
        None::<(TcpListener, Arc<Gate>)>,
        (plane, Ping),
        phase.clone(),
        settings,
        async {
            let _ = shutdown_rx.await;
        },
    ));
    Process {
        main: main_addr,
        admin: admin_addr,
        phase,
        arrived: arrived_rx,
        release,
        shutdown,
        served,
        token,
        _secrets: secrets,
    }
}

/// A request sent to `addr` asking to close after it; the connection, to read
/// the answer from.
async fn send(addr: SocketAddr, path: &str) -> TcpStream {
    send_with(addr, path, "").await
}

/// The same with extra header lines (each ending in CRLF).
async fn send_with(addr: SocketAddr, path: &str, headers: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    stream
}

/// The whole answer, once the server closed the connection.
async fn answer(mut stream: TcpStream) -> String {
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    answer
}

async fn get(addr: SocketAddr, path: &str) -> String {
    answer(send(addr, path).await).await
}

#[tokio::test]
async fn ready_follows_the_phase_and_a_drain_finishes_what_is_in_flight() {
    let mut process = start(Duration::from_secs(10)).await;
    let starting = get(process.admin, "/ready").await;
    assert!(starting.starts_with("HTTP/1.1 503 "), "{starting}");
    assert!(starting.ends_with(r#"{"phase":"starting"}"#), "{starting}");
    process.phase.send_replace(Phase::Ready);
    let ready = get(process.admin, "/ready").await;
    assert!(ready.starts_with("HTTP/1.1 200 "), "{ready}");
    assert!(ready.ends_with(r#"{"phase":"ready"}"#), "{ready}");

    let in_flight = send(process.main, "/").await;
    process
        .arrived
        .recv()
        .await
        .expect("the request reaches the handler");
    let mut phase = process.phase.subscribe();
    let _ = process.shutdown.send(());
    phase
        .wait_for(|phase| *phase == Phase::Draining)
        .await
        .expect("the phase is published");
    // The main listener is closed as the phase turns; the admin one still answers.
    let refused = TcpStream::connect(process.main).await;
    assert!(
        refused.is_err(),
        "a new connection was taken while draining"
    );
    let draining = get(process.admin, "/ready").await;
    assert!(draining.starts_with("HTTP/1.1 503 "), "{draining}");
    assert!(draining.ends_with(r#"{"phase":"draining"}"#), "{draining}");
    assert!(!process.served.is_finished());

    process.release.send_replace(true);
    let finished = answer(in_flight).await;
    assert!(finished.starts_with("HTTP/1.1 200 "), "{finished}");
    assert!(finished.ends_with("done"), "{finished}");
    tokio::time::timeout(Duration::from_secs(10), process.served)
        .await
        .expect("drained once nothing is in flight")
        .expect("serving ends");
    assert!(TcpStream::connect(process.admin).await.is_err());
}

#[tokio::test]
async fn a_drain_ends_at_its_deadline_with_requests_still_in_flight() {
    let drain = Duration::from_millis(300);
    let mut process = start(drain).await;
    process.phase.send_replace(Phase::Ready);
    let _stuck = send(process.main, "/").await;
    process
        .arrived
        .recv()
        .await
        .expect("the request reaches the handler");
    let started = tokio::time::Instant::now();
    let _ = process.shutdown.send(());
    tokio::time::timeout(Duration::from_secs(10), process.served)
        .await
        .expect("the drain gives up at its deadline")
        .expect("serving ends");
    let drained_in = started.elapsed();
    assert!(drained_in >= drain, "gave up after {drained_in:?}");
}

#[tokio::test]
async fn admin_routes_require_the_token_and_monitoring_routes_do_not() {
    let process = start(Duration::from_secs(10)).await;
    let missing = get(process.admin, "/admin/ping").await;
    assert!(missing.starts_with("HTTP/1.1 401 "), "{missing}");
    assert!(missing.contains(r#""code":"unauthenticated""#), "{missing}");
    let wrong = answer(
        send_with(
            process.admin,
            "/admin/ping",
            "Authorization: Bearer 00000000000000000000000000000000\r\n",
        )
        .await,
    )
    .await;
    assert!(wrong.starts_with("HTTP/1.1 403 "), "{wrong}");
    assert!(wrong.contains(r#""code":"forbidden""#), "{wrong}");
    let right = format!("Authorization: {}\r\n", process.token.bearer());
    let served = answer(send_with(process.admin, "/admin/ping", &right).await).await;
    assert!(served.starts_with("HTTP/1.1 200 "), "{served}");
    assert!(served.ends_with(r#"{"pong":true}"#), "{served}");
    let unknown = answer(send_with(process.admin, "/admin/nothing", &right).await).await;
    assert!(unknown.starts_with("HTTP/1.1 404 "), "{unknown}");
    // Prometheus and probes need no credential.
    for open in ["/metrics", "/health", "/ready"] {
        let reply = get(process.admin, open).await;
        assert!(!reply.starts_with("HTTP/1.1 401 "), "{open}: {reply}");
    }
}
