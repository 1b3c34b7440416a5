//! The peer checks of a handshake: a chain to the deployment CA, then the identity
//! in the leaf, on both sides. Certificates name no hosts, so the server name a
//! client asks for plays no part.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};

use super::{Identity, IdentityError, Role};

/// Why a peer with a certificate chained to the CA was refused all the same. It
/// travels inside the handshake's error, so the operator reads who was refused.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("peer certificate: {0}")]
    Identity(#[from] IdentityError),
    #[error("peer {found} is not a {accepts} of deployment {deployment:?}")]
    NotAccepted {
        found: Identity,
        accepts: Role,
        deployment: String,
    },
    #[error("peer {found} is not the expected {expected}")]
    NotExpected { found: Identity, expected: Identity },
}

impl From<Refused> for rustls::Error {
    fn from(refused: Refused) -> Self {
        Self::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(refused))))
    }
}

/// Accepts a client whose chain webpki accepts and whose identity is an `accepts`
/// of this deployment.
#[derive(Debug)]
pub(super) struct ClientVerifier {
    pub(super) webpki: Arc<dyn ClientCertVerifier>,
    pub(super) deployment: String,
    pub(super) accepts: Role,
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        let found = Identity::of_certificate(end_entity).map_err(Refused::from)?;
        if found.deployment() != self.deployment || found.role() != self.accepts {
            return Err(Refused::NotAccepted {
                found,
                accepts: self.accepts,
                deployment: self.deployment.clone(),
            }
            .into());
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Accepts a server whose chain reaches a trust anchor and whose identity is
/// exactly `expected`; one verifier per connection, as the peer differs.
#[derive(Debug)]
pub(super) struct ServerVerifier {
    pub(super) roots: Arc<RootCertStore>,
    pub(super) algorithms: WebPkiSupportedAlgorithms,
    pub(super) expected: Identity,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let found = Identity::of_certificate(end_entity).map_err(Refused::from)?;
        if found != self.expected {
            return Err(Refused::NotExpected {
                found,
                expected: self.expected.clone(),
            }
            .into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
