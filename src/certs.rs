//! The deployment CA and a certificate for each of its processes (`ldc certs
//! init`), and where a process finds its TLS files.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ldc_serve::tls::{Identity, IdentityError, Role, TlsFiles};
use ldc_topology::{EXIT_USAGE, Topology};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::OffsetDateTime;

/// Long enough that replacing the CA is a planned event.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Short next to the CA's, so a leaked leaf key stops working within a year.
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates are valid from a day before they are made, so a host whose clock
/// is behind accepts them at once.
const CLOCK_SKEW: Duration = Duration::from_secs(24 * 3600);

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
/// Private keys are readable by their owner only, from the moment they exist.
const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Create the deployment CA and a certificate for each cell and router of a
    /// deploy file in a directory, keeping the files already there.
    Init {
        #[arg(long, default_value = "config/local.toml")]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

/// Where process `id` of `role` finds its TLS files in `dir`, the layout
/// [`ensure`] writes.
pub fn files(dir: &Path, role: Role, id: &str) -> TlsFiles {
    TlsFiles {
        ca: dir.join(CA_CERT),
        cert: dir.join(format!("{role}-{id}.crt")),
        key: dir.join(format!("{role}-{id}.key")),
    }
}

/// The files [`ensure`] created, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Created {
    pub files: Vec<PathBuf>,
}

/// Why the certificates of a deployment could not all be made.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Unusable { path: PathBuf, source: rcgen::Error },
    #[error("{} is not the key of {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error(
        "{} is missing but other certificate files are in {}: restore it, or move them all away to start a new CA",
        cert.display(), dir.display()
    )]
    NoCaCert { cert: PathBuf, dir: PathBuf },
    #[error(
        "{} is missing, so nothing was issued for {}: restore it, or move every file away to start a new CA",
        key.display(), list(missing)
    )]
    NoCaKey { key: PathBuf, missing: Vec<PathBuf> },
    #[error("{} exists without {}: remove it to have both issued", present.display(), absent.display())]
    HalfPair { present: PathBuf, absent: PathBuf },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The deployment CA: its certificate, here to sign with, and its key.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

/// Makes sure `dir` holds the CA and a certificate and key for every process of
/// `topology`: missing leaves are issued by the CA already there, or by a new one
/// when `dir` holds none of the files. Files that exist are kept as they are.
pub fn ensure(topology: &Topology, dir: &Path) -> Result<Created, CertsError> {
    let deployment = &topology.deploy().name;
    let processes = topology
        .cells()
        .iter()
        .map(|c| (Role::Cell, &c.id))
        .chain(topology.routers().iter().map(|r| (Role::Router, &r.id)));
    let mut missing = Vec::new();
    let mut leaves = 0;
    for (role, id) in processes {
        leaves += 1;
        let files = files(dir, role, id);
        match (exists(&files.cert)?, exists(&files.key)?) {
            (true, true) => {}
            (false, false) => missing.push((Identity::new(deployment, role, id)?, files)),
            (present, _) => {
                let (present, absent) = if present {
                    (files.cert, files.key)
                } else {
                    (files.key, files.cert)
                };
                return Err(CertsError::HalfPair { present, absent });
            }
        }
    }
    let (ca_cert, ca_key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let (has_cert, has_key) = (exists(&ca_cert)?, exists(&ca_key)?);
    let mut created = Created::default();
    let ca = if !has_cert && !has_key && missing.len() == leaves {
        create_dir(dir)?;
        let ca = new_ca(deployment)?;
        created.write(&ca_key, &ca.key.serialize_pem(), KEY_MODE)?;
        created.write(&ca_cert, &ca.cert.pem(), CERT_MODE)?;
        ca
    } else if !has_cert {
        return Err(CertsError::NoCaCert {
            cert: ca_cert,
            dir: dir.to_owned(),
        });
    } else if missing.is_empty() {
        // The CA key may be kept offline once every process has its certificate.
        return Ok(created);
    } else if !has_key {
        return Err(CertsError::NoCaKey {
            key: ca_key,
            missing: missing.into_iter().map(|(_, files)| files.cert).collect(),
        });
    } else {
        read_ca(&ca_cert, &ca_key)?
    };
    for (identity, files) in missing {
        let (cert, key) = issue(&ca, &identity)?;
        created.write(&files.key, &key.serialize_pem(), KEY_MODE)?;
        created.write(&files.cert, &cert.pem(), CERT_MODE)?;
    }
    Ok(created)
}

/// `ldc certs ...`: runs the subcommand and reports what it did.
pub fn command(command: CertsCommand) -> ExitCode {
    let CertsCommand::Init { config, out } = command;
    let topology = match Topology::load(&config) {
        Ok(topology) => topology,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(EXIT_USAGE as u8);
        }
    };
    match ensure(&topology, &out) {
        Ok(created) if created.files.is_empty() => {
            say(&format!(
                "{}: every certificate of deployment {:?} is there already\n",
                out.display(),
                topology.deploy().name
            ));
            ExitCode::SUCCESS
        }
        Ok(created) => {
            let list: String = created
                .files
                .iter()
                .map(|path| format!("created {}\n", path.display()))
                .collect();
            say(&list);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("ldc certs init: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout, ignoring a closed pipe.
fn say(text: &str) {
    let _ = io::stdout().write_all(text.as_bytes());
}

impl Created {
    /// Writes a file that did not exist: whole under a temporary name with its
    /// final mode from the start, then renamed, so a crash never leaves a
    /// truncated file under the final name.
    fn write(&mut self, path: &Path, contents: &str, mode: u32) -> Result<(), CertsError> {
        let mut name = path.file_name().unwrap_or_default().to_owned();
        name.push(".tmp");
        let temporary = path.with_file_name(name);
        // Left by a crash: a new one is made, so the mode is ours.
        match std::fs::remove_file(&temporary) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                return Err(at(&temporary)(err));
            }
            _ => {}
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)
            .map_err(at(&temporary))?;
        file.write_all(contents.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(at(&temporary))?;
        std::fs::rename(&temporary, path).map_err(at(path))?;
        self.files.push(path.to_owned());
        Ok(())
    }
}

/// Attaches `path` to an I/O error.
fn at(path: &Path) -> impl FnOnce(io::Error) -> CertsError + '_ {
    move |source| CertsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn list(paths: &[PathBuf]) -> String {
    let names: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

fn exists(path: &Path) -> Result<bool, CertsError> {
    path.try_exists().map_err(at(path))
}

/// Creates `dir` readable by its owner only, as it holds private keys; an existing
/// directory is left as it is.
fn create_dir(dir: &Path) -> Result<(), CertsError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(at(dir))
}

fn read(path: &Path) -> Result<String, CertsError> {
    std::fs::read_to_string(path).map_err(at(path))
}

fn key_pair() -> Result<KeyPair, rcgen::Error> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
}

/// Parameters valid from now (less [`CLOCK_SKEW`]) for `validity`, named `name`.
fn params(name: String, validity: Duration) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + validity;
    params
}

fn new_ca(deployment: &str) -> Result<Ca, rcgen::Error> {
    let mut params = params(format!("ldc {deployment} CA"), CA_VALIDITY);
    // Signs leaves only: no intermediate CA below it.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = key_pair()?;
    let cert = params.self_signed(&key)?;
    Ok(Ca { cert, key })
}

/// The CA in `cert` and `key`, to issue more leaves with.
fn read_ca(cert: &Path, key: &Path) -> Result<Ca, CertsError> {
    let unusable = |path: &Path| {
        let path = path.to_owned();
        move |source| CertsError::Unusable { path, source }
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let key_pair = KeyPair::from_pem(&key_pem).map_err(unusable(key))?;
    if Some(key_pair.public_key_der()) != public_key_of(&cert_pem) {
        return Err(CertsError::KeyMismatch {
            key: key.to_owned(),
            cert: cert.to_owned(),
        });
    }
    // rcgen signs with an issuer's parameters, not its bytes: the parameters read
    // back keep the subject and key identifier that leaves must name.
    let params = CertificateParams::from_ca_cert_pem(&cert_pem).map_err(unusable(cert))?;
    let cert = params.self_signed(&key_pair)?;
    Ok(Ca {
        cert,
        key: key_pair,
    })
}

/// The DER public key of the first certificate in `pem`.
fn public_key_of(pem: &str) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.public_key().raw.to_vec())
}

/// A leaf for `identity`, for both ends of a connection.
fn issue(ca: &Ca, identity: &Identity) -> Result<(Certificate, KeyPair), rcgen::Error> {
    let uri = identity.to_string();
    let mut params = params(uri.clone(), LEAF_VALIDITY);
    params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let key = key_pair()?;
    let cert = params.signed_by(&key, &ca.cert, &ca.key)?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests;
