//! Mutual TLS for the peer plane: each process presents a certificate from the
//! deployment CA naming its identity, and checks the identity of the other side.

mod identity;
mod load;
#[cfg(test)]
mod tests;
mod verify;

pub use identity::{Identity, IdentityError, Role};
pub use tokio_rustls::client::TlsStream as ClientTlsStream;
pub use tokio_rustls::server::TlsStream as ServerTlsStream;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::sign::SingleCertAndKey;
use rustls::version::TLS13;
use rustls::{
    CertificateError, ClientConfig, CommonState, ConfigBuilder, OtherError, WantsVerifier,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use load::Loaded;
use verify::ServerVerifier;

/// ALPN id of HTTP/2, offered by every peer-plane server.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN id of HTTP/1.1, offered by every peer-plane server.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Where a process's TLS material lives, all PEM: the CA bundle (several CA
/// certificates while a CA is being replaced), the certificate chain (leaf first)
/// and the private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why TLS files cannot be used; each names the file to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {why}", path.display())]
    Pem { path: PathBuf, why: String },
    #[error("{}: {source}", path.display())]
    Identity {
        path: PathBuf,
        source: IdentityError,
    },
    #[error("{} names {found}, but this process is {expected}", path.display())]
    WrongIdentity {
        path: PathBuf,
        found: Box<Identity>,
        expected: Box<Identity>,
    },
    #[error("{} is not a usable CA bundle: {why}", path.display())]
    Ca { path: PathBuf, why: String },
    /// The certificate does not chain to the bundle, has expired, or is not for
    /// both client and server use.
    #[error("{} is not valid under the CAs of {}: {source}", cert.display(), ca.display())]
    NotIssued {
        cert: PathBuf,
        ca: PathBuf,
        source: rustls::Error,
    },
    #[error("{} is not a usable private key: {source}", path.display())]
    Key {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{} is not the private key of {}: {source}", key.display(), cert.display())]
    KeyMismatch {
        key: PathBuf,
        cert: PathBuf,
        source: rustls::Error,
    },
    /// The crypto provider refused the configuration: a bug, not an operator's fault.
    #[error("cannot build the TLS configuration: {0}")]
    Config(rustls::Error),
}

/// Why a handshake did not give a verified peer.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("the TLS handshake did not finish within {0:?}")]
    TimedOut(Duration),
    /// Includes a refused peer: the reason names who it was and what was expected.
    #[error("TLS handshake failed: {}", reason(.0))]
    Failed(io::Error),
    #[error("the peer's certificate: {0}")]
    Identity(#[from] IdentityError),
}

/// A process's TLS material and the configurations made from it, swapped whole
/// by [`Tls::reload`].
pub struct Tls {
    files: TlsFiles,
    identity: Identity,
    provider: Arc<CryptoProvider>,
    /// The part of every client configuration that never changes.
    client: ConfigBuilder<ClientConfig, WantsVerifier>,
    loaded: ArcSwap<Loaded>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads `files` for the process `identity`, refusing a certificate that names
    /// another identity, does not chain to the CA bundle or does not match the key.
    pub fn load(files: TlsFiles, identity: Identity) -> Result<Self, TlsError> {
        // Explicit, not the process default: nothing else may choose the crypto.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&TLS13])
            .map_err(TlsError::Config)?;
        let loaded = Loaded::read(&files, &identity, &provider)?;
        Ok(Self {
            files,
            identity,
            provider,
            client,
            loaded: ArcSwap::from_pointee(loaded),
        })
    }

    /// Reads the files again for new handshakes; open connections keep what they
    /// were made with. On error the files read before stay in use. The reads
    /// block, briefly: three small files.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = Loaded::read(&self.files, &self.identity, &self.provider)?;
        self.loaded.store(Arc::new(loaded));
        Ok(())
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The server side of a handshake, within `timeout`: the client must present a
    /// certificate chained to the CA, naming an `accepts` of this deployment, whose
    /// identity is returned. ALPN offers `h2` and `http/1.1` ([`negotiated_h2`]).
    pub async fn accept<IO: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: IO,
        accepts: Role,
        timeout: Duration,
    ) -> Result<(ServerTlsStream<IO>, Identity), HandshakeError> {
        let config = self.loaded.load().server(accepts).clone();
        let stream = bounded(timeout, TlsAcceptor::from(config).accept(stream)).await?;
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or(IdentityError::Missing)?;
        let peer = Identity::of_certificate(leaf)?;
        Ok((stream, peer))
    }

    /// The client side of a handshake, within `timeout`, presenting this process's
    /// certificate and requiring the server's to chain to the CA and name `peer`,
    /// whatever its address. `alpn` is offered as given.
    pub async fn connect<IO: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: IO,
        peer: &Identity,
        alpn: &[&[u8]],
        timeout: Duration,
    ) -> Result<ClientTlsStream<IO>, HandshakeError> {
        let config = self.client_config(peer, alpn);
        // The verifier ignores the name and SNI is off: any name would do.
        let name = ServerName::from(Ipv4Addr::UNSPECIFIED);
        bounded(timeout, TlsConnector::from(config).connect(name, stream)).await
    }

    fn client_config(&self, peer: &Identity, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let loaded = self.loaded.load();
        let verifier = ServerVerifier {
            roots: loaded.roots.clone(),
            algorithms: self.provider.signature_verification_algorithms,
            expected: peer.clone(),
        };
        let mut config = self
            .client
            .clone()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(loaded.key.clone())));
        config.alpn_protocols = alpn.iter().map(|id| id.to_vec()).collect();
        // Peer connections are long-lived, and a fresh handshake checks the
        // certificate against the CA bundle in use now.
        config.resumption = Resumption::disabled();
        config.enable_sni = false;
        Arc::new(config)
    }
}

/// Whether a finished handshake chose HTTP/2 (else the connection speaks HTTP/1.1).
pub fn negotiated_h2(connection: &CommonState) -> bool {
    connection.alpn_protocol() == Some(ALPN_H2)
}

/// A failed handshake's reason; rustls prints a refused peer's with `Debug`, so
/// the refusal's own message is taken from inside it.
fn reason(err: &io::Error) -> String {
    match err.get_ref().and_then(|err| err.downcast_ref()) {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(refused)))) => {
            format!("invalid peer certificate: {refused}")
        }
        _ => err.to_string(),
    }
}

async fn bounded<T>(
    timeout: Duration,
    handshake: impl Future<Output = io::Result<T>>,
) -> Result<T, HandshakeError> {
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| HandshakeError::TimedOut(timeout))?
        .map_err(HandshakeError::Failed)
}
