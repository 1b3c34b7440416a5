//! Handshakes over loopback TCP between processes whose certificates each test
//! issues, from one CA or several.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;

const DEPLOYMENT: &str = "test";
const HANDSHAKE: Duration = Duration::from_secs(5);

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate and its key.
struct Leaf {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn key() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("a P-256 key")
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let key = key();
        let cert = params.self_signed(&key).expect("a CA certificate");
        Self { cert, key }
    }

    /// A leaf for client and server use naming `uri`, whatever it is.
    fn issue(&self, uri: &str) -> Leaf {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("an IA5 URI"))];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = key();
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("a leaf certificate");
        Leaf { cert, key }
    }
}

fn identity(role: Role, id: &str) -> Identity {
    Identity::new(DEPLOYMENT, role, id).expect("a valid identity")
}

/// Writes `name`'s files in `dir`: its leaf, its key, and a bundle of `cas`.
fn write(dir: &Path, name: &str, cas: &[&Ca], leaf: &Leaf) -> TlsFiles {
    let files = TlsFiles {
        ca: dir.join(format!("{name}-ca.crt")),
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    let bundle: String = cas.iter().map(|ca| ca.cert.pem()).collect();
    std::fs::write(&files.ca, bundle).expect("write the CA bundle");
    std::fs::write(&files.cert, leaf.cert.pem()).expect("write the certificate");
    std::fs::write(&files.key, leaf.key.serialize_pem()).expect("write the key");
    files
}

/// A process of the test deployment, with its certificate from `issuer` and
/// trusting `cas`.
fn process(dir: &Path, who: &Identity, issuer: &Ca, cas: &[&Ca]) -> Tls {
    let files = write(dir, who.id(), cas, &issuer.issue(&who.to_string()));
    Tls::load(files, who.clone()).expect("load the process's files")
}

/// What the server made of one connection: the client and whether HTTP/2 was
/// chosen, or why the handshake failed.
type Outcome = Result<(Identity, bool), String>;

/// Serves on a loopback port, accepting `accepts`: each connection's outcome is
/// sent on the channel, and a verified connection echoes what it reads.
async fn serve(tls: Arc<Tls>, accepts: Role) -> (SocketAddr, mpsc::UnboundedReceiver<Outcome>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound address");
    let (outcomes, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tls, outcomes) = (tls.clone(), outcomes.clone());
            tokio::spawn(async move {
                match tls.accept(stream, accepts, HANDSHAKE).await {
                    Ok((stream, peer)) => {
                        let _ = outcomes.send(Ok((peer, negotiated_h2(stream.get_ref().1))));
                        let (mut reader, mut writer) = tokio::io::split(stream);
                        let _ = tokio::io::copy(&mut reader, &mut writer).await;
                    }
                    Err(err) => {
                        let _ = outcomes.send(Err(err.to_string()));
                    }
                }
            });
        }
    });
    (addr, received)
}

async fn connect(
    tls: &Tls,
    addr: SocketAddr,
    peer: &Identity,
    alpn: &[&[u8]],
) -> Result<ClientTlsStream<TcpStream>, HandshakeError> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    tls.connect(stream, peer, alpn, HANDSHAKE).await
}

/// One round trip through the echo; fails when the server refused the client,
/// which in TLS 1.3 a client learns only after its side of the handshake is done.
async fn echo<IO: AsyncRead + AsyncWrite + Unpin>(stream: &mut IO) -> io::Result<()> {
    stream.write_all(b"ping").await?;
    stream.flush().await?;
    let mut reply = [0; 4];
    stream.read_exact(&mut reply).await?;
    assert_eq!(&reply, b"ping");
    Ok(())
}

async fn outcome(outcomes: &mut mpsc::UnboundedReceiver<Outcome>) -> Outcome {
    outcomes
        .recv()
        .await
        .expect("the server reports every connection")
}

/// The server's certificate as the client saw it.
fn server_cert(stream: &ClientTlsStream<TcpStream>) -> Vec<u8> {
    let chain = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a server chain");
    chain[0].to_vec()
}

fn refused(outcome: Outcome, reason: &str) {
    match outcome {
        Ok((peer, _)) => panic!("{peer} was accepted"),
        Err(err) => assert!(err.contains(reason), "refused for another reason: {err}"),
    }
}

/// A CA, the server `cell a` (accepting routers) and the client `router r`.
struct Pair {
    dir: tempfile::TempDir,
    ca: Ca,
    cell: Identity,
    server: Arc<Tls>,
    client: Tls,
}

fn pair() -> Pair {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = Ca::new("test CA");
    let cell = identity(Role::Cell, "a");
    let server = Arc::new(process(dir.path(), &cell, &ca, &[&ca]));
    let client = process(dir.path(), &identity(Role::Router, "r"), &ca, &[&ca]);
    Pair {
        dir,
        ca,
        cell,
        server,
        client,
    }
}

#[tokio::test]
async fn handshake_gives_each_side_the_other_and_the_alpn_choice() {
    let p = pair();
    let (addr, mut outcomes) = serve(p.server.clone(), Role::Router).await;

    let mut h2 = connect(&p.client, addr, &p.cell, &[ALPN_H2, ALPN_HTTP1])
        .await
        .expect("handshake");
    assert_eq!(
        outcome(&mut outcomes).await,
        Ok((identity(Role::Router, "r"), true))
    );
    assert!(negotiated_h2(h2.get_ref().1));
    echo(&mut h2).await.expect("the connection carries data");

    let http1 = connect(&p.client, addr, &p.cell, &[ALPN_HTTP1])
        .await
        .expect("handshake");
    assert_eq!(
        outcome(&mut outcomes).await,
        Ok((identity(Role::Router, "r"), false))
    );
    assert!(!negotiated_h2(http1.get_ref().1));
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let p = pair();
    let (addr, mut outcomes) = serve(p.server.clone(), Role::Router).await;
    let verifier = ServerVerifier {
        roots: p.client.loaded.load().roots.clone(),
        algorithms: p.client.provider.signature_verification_algorithms,
        expected: p.cell.clone(),
    };
    let config = p
        .client
        .client
        .clone()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut anonymous = TlsConnector::from(Arc::new(config))
        .connect(ServerName::from(Ipv4Addr::UNSPECIFIED), stream)
        .await
        .expect("the client's side of the handshake finishes");
    refused(outcome(&mut outcomes).await, "no certificates");
    assert!(echo(&mut anonymous).await.is_err());
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let p = pair();
    let (addr, mut outcomes) = serve(p.server.clone(), Role::Router).await;
    let other = Ca::new("other CA");
    let rogue = process(
        p.dir.path(),
        &identity(Role::Router, "rogue"),
        &other,
        &[&p.ca, &other],
    );
    let mut stream = connect(&rogue, addr, &p.cell, &[])
        .await
        .expect("the client's side of the handshake finishes");
    refused(outcome(&mut outcomes).await, "UnknownIssuer");
    assert!(echo(&mut stream).await.is_err());
}

#[tokio::test]
async fn a_client_of_another_role_is_refused() {
    let p = pair();
    let (addr, mut outcomes) = serve(p.server.clone(), Role::Router).await;
    let cell = process(p.dir.path(), &identity(Role::Cell, "b"), &p.ca, &[&p.ca]);
    let mut stream = connect(&cell, addr, &p.cell, &[])
        .await
        .expect("the client's side of the handshake finishes");
    refused(
        outcome(&mut outcomes).await,
        "peer spiffe://ldc/test/cell/b is not a router of deployment \"test\"",
    );
    assert!(echo(&mut stream).await.is_err());
}

#[tokio::test]
async fn a_client_of_another_deployment_is_refused() {
    let p = pair();
    let (addr, mut outcomes) = serve(p.server.clone(), Role::Router).await;
    let stranger = Identity::new("other", Role::Router, "r").expect("a valid identity");
    let tls = process(p.dir.path(), &stranger, &p.ca, &[&p.ca]);
    let mut stream = connect(&tls, addr, &p.cell, &[])
        .await
        .expect("the client's side of the handshake finishes");
    refused(
        outcome(&mut outcomes).await,
        "peer spiffe://ldc/other/router/r is not a router of deployment \"test\"",
    );
    assert!(echo(&mut stream).await.is_err());
}

#[tokio::test]
async fn the_client_refuses_a_server_that_is_not_the_expected_peer() {
    let p = pair();
    let (addr, mut outcomes) = serve(p.server.clone(), Role::Router).await;
    let err = connect(&p.client, addr, &identity(Role::Cell, "b"), &[])
        .await
        .expect_err("cell a is not cell b");
    assert!(
        err.to_string()
            .contains("peer spiffe://ldc/test/cell/a is not the expected spiffe://ldc/test/cell/b"),
        "{err}"
    );
    assert!(outcome(&mut outcomes).await.is_err());
}

#[tokio::test]
async fn a_handshake_that_never_starts_ends_at_the_timeout() {
    let p = pair();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let _silent = TcpStream::connect(listener.local_addr().expect("bound address"))
        .await
        .expect("connect");
    let (stream, _) = listener.accept().await.expect("accept");
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let result = p.server.accept(stream, Role::Router, timeout).await;
    assert!(matches!(result, Err(HandshakeError::TimedOut(t)) if t == timeout));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn reload_serves_a_new_certificate_to_new_connections_only() {
    let p = pair();
    let (addr, mut outcomes) = serve(p.server.clone(), Role::Router).await;
    let mut old = connect(&p.client, addr, &p.cell, &[])
        .await
        .expect("handshake");
    assert!(outcome(&mut outcomes).await.is_ok());
    let old_cert = server_cert(&old);

    let renewed = p.ca.issue(&p.cell.to_string());
    write(p.dir.path(), p.cell.id(), &[&p.ca], &renewed);
    p.server.reload().expect("reload the renewed certificate");

    let new = connect(&p.client, addr, &p.cell, &[])
        .await
        .expect("handshake");
    assert!(outcome(&mut outcomes).await.is_ok());
    assert_eq!(server_cert(&new), renewed.cert.der().to_vec());
    assert_ne!(server_cert(&new), old_cert);
    echo(&mut old)
        .await
        .expect("the old connection still works");
}

#[tokio::test]
async fn reload_trusts_a_new_ca_once_it_is_in_the_bundle() {
    let p = pair();
    let (addr, mut outcomes) = serve(p.server.clone(), Role::Router).await;
    let next = Ca::new("next CA");
    let renewed = process(
        p.dir.path(),
        &identity(Role::Router, "renewed"),
        &next,
        &[&p.ca, &next],
    );
    let mut before = connect(&renewed, addr, &p.cell, &[])
        .await
        .expect("the client's side of the handshake finishes");
    refused(outcome(&mut outcomes).await, "UnknownIssuer");
    assert!(echo(&mut before).await.is_err());

    let files = p.server.files();
    let bundle = format!("{}{}", p.ca.cert.pem(), next.cert.pem());
    std::fs::write(&files.ca, bundle).expect("write the CA bundle");
    p.server.reload().expect("reload the CA bundle");

    let mut after = connect(&renewed, addr, &p.cell, &[])
        .await
        .expect("handshake");
    assert_eq!(
        outcome(&mut outcomes).await,
        Ok((identity(Role::Router, "renewed"), false))
    );
    echo(&mut after).await.expect("accepted under the new CA");
}

#[tokio::test]
async fn a_failed_reload_keeps_the_files_read_before() {
    let p = pair();
    let (addr, mut outcomes) = serve(p.server.clone(), Role::Router).await;
    let files = p.server.files();
    let served = p.server.loaded.load().key.cert[0].to_vec();
    std::fs::write(&files.cert, "not a certificate").expect("break the certificate");
    let err = p.server.reload().expect_err("a broken certificate");
    assert!(
        err.to_string().contains(&files.cert.display().to_string()),
        "{err}"
    );

    let mut stream = connect(&p.client, addr, &p.cell, &[])
        .await
        .expect("handshake");
    assert!(outcome(&mut outcomes).await.is_ok());
    assert_eq!(server_cert(&stream), served);
    echo(&mut stream)
        .await
        .expect("served with the old certificate");
}

#[test]
fn load_names_the_file_at_fault() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = Ca::new("test CA");
    let cell = identity(Role::Cell, "a");
    let good = write(dir.path(), "a", &[&ca], &ca.issue(&cell.to_string()));
    let load = |files: &TlsFiles| Tls::load(files.clone(), cell.clone());
    assert!(load(&good).is_ok());

    let err = Tls::load(good.clone(), identity(Role::Cell, "b")).expect_err("not cell b");
    assert!(matches!(err, TlsError::WrongIdentity { .. }), "{err}");

    let other = write(dir.path(), "b", &[&ca], &ca.issue(&cell.to_string()));
    let mismatched = TlsFiles {
        key: other.key.clone(),
        ..good.clone()
    };
    assert!(matches!(
        load(&mismatched),
        Err(TlsError::KeyMismatch { .. })
    ));

    let missing = TlsFiles {
        ca: dir.path().join("missing.crt"),
        ..good.clone()
    };
    let err = load(&missing).expect_err("no CA file");
    assert!(
        matches!(err, TlsError::Read { ref path, .. } if *path == missing.ca),
        "{err}"
    );

    let foreign = Ca::new("other CA");
    let stranger = write(dir.path(), "c", &[&ca], &foreign.issue(&cell.to_string()));
    assert!(matches!(load(&stranger), Err(TlsError::NotIssued { .. })));

    let no_key = TlsFiles {
        key: good.cert.clone(),
        ..good.clone()
    };
    let err = load(&no_key).expect_err("a certificate is no key");
    assert!(
        matches!(err, TlsError::Pem { ref path, .. } if *path == good.cert),
        "{err}"
    );

    let unnamed = write(
        dir.path(),
        "d",
        &[&ca],
        &ca.issue("spiffe://ldc/test/admin/a"),
    );
    assert!(matches!(load(&unnamed), Err(TlsError::Identity { .. })));
}
