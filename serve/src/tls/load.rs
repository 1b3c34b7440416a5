//! Reading a process's TLS files into the configurations its handshakes use,
//! refusing files that its peers would refuse.

use std::path::Path;
use std::sync::Arc;

use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::{NoServerSessionStorage, ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::version::TLS13;
use rustls::{RootCertStore, ServerConfig};

use super::verify::ClientVerifier;
use super::{ALPN_H2, ALPN_HTTP1, Identity, Role, TlsError, TlsFiles};

/// What one reading of the files gives.
pub(super) struct Loaded {
    pub(super) roots: Arc<RootCertStore>,
    pub(super) key: Arc<CertifiedKey>,
    accept_cells: Arc<ServerConfig>,
    accept_routers: Arc<ServerConfig>,
}

impl Loaded {
    pub(super) fn read(
        files: &TlsFiles,
        identity: &Identity,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for ca in certificates(&files.ca)? {
            roots.add(ca).map_err(|err| TlsError::Ca {
                path: files.ca.clone(),
                why: err.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let chain = certificates(&files.cert)?;
        check_leaf(files, identity, provider, &roots, &chain)?;
        let key = private_key(files, provider, chain)?;
        let server = |accepts| server_config(files, identity, provider, &roots, &key, accepts);
        Ok(Self {
            accept_cells: server(Role::Cell)?,
            accept_routers: server(Role::Router)?,
            roots,
            key,
        })
    }

    pub(super) fn server(&self, accepts: Role) -> &Arc<ServerConfig> {
        match accepts {
            Role::Cell => &self.accept_cells,
            Role::Router => &self.accept_routers,
        }
    }
}

/// Refuses a leaf that names another process or would fail its peers' checks.
fn check_leaf(
    files: &TlsFiles,
    identity: &Identity,
    provider: &CryptoProvider,
    roots: &RootCertStore,
    chain: &[CertificateDer<'static>],
) -> Result<(), TlsError> {
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| no_certificate(&files.cert))?;
    let found = Identity::of_certificate(leaf).map_err(|source| TlsError::Identity {
        path: files.cert.clone(),
        source,
    })?;
    if found != *identity {
        return Err(TlsError::WrongIdentity {
            path: files.cert.clone(),
            found: Box::new(found),
            expected: Box::new(identity.clone()),
        });
    }
    let not_issued = |source| TlsError::NotIssued {
        cert: files.cert.clone(),
        ca: files.ca.clone(),
        source,
    };
    let parsed = ParsedCertificate::try_from(leaf).map_err(not_issued)?;
    verify_server_cert_signed_by_trust_anchor(
        &parsed,
        roots,
        intermediates,
        UnixTime::now(),
        provider.signature_verification_algorithms.all,
    )
    .map_err(not_issued)
}

fn private_key(
    files: &TlsFiles,
    provider: &CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem = read(&files.key)?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|err| TlsError::Pem {
        path: files.key.clone(),
        why: format!("no private key: {err}"),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|source| TlsError::Key {
            path: files.key.clone(),
            source,
        })?;
    let key = CertifiedKey::new(chain, signing);
    key.keys_match().map_err(|source| TlsError::KeyMismatch {
        key: files.key.clone(),
        cert: files.cert.clone(),
        source,
    })?;
    Ok(Arc::new(key))
}

fn server_config(
    files: &TlsFiles,
    identity: &Identity,
    provider: &Arc<CryptoProvider>,
    roots: &Arc<RootCertStore>,
    key: &Arc<CertifiedKey>,
    accepts: Role,
) -> Result<Arc<ServerConfig>, TlsError> {
    let webpki = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|err| TlsError::Ca {
            path: files.ca.clone(),
            why: err.to_string(),
        })?;
    let verifier = ClientVerifier {
        webpki,
        deployment: identity.deployment().to_owned(),
        accepts,
    };
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&TLS13])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(key.clone())));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    // No resumption (see `Tls::client_config`): tickets would only cost bytes.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file, at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Pem {
            path: path.to_owned(),
            why: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(no_certificate(path));
    }
    Ok(certs)
}

fn no_certificate(path: &Path) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        why: "no certificate (a BEGIN CERTIFICATE section) in it".to_owned(),
    }
}
