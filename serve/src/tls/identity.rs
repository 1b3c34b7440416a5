//! Who a process is: the SPIFFE-style URI its certificate names, and reading it
//! back from a certificate.

use std::fmt;

use ldc_topology::is_valid_user_id;
use x509_parser::extensions::GeneralName;

/// The trust domain of every ldc identity; deployments differ in the next segment.
const TRUST_DOMAIN: &str = "ldc";

/// What a process is in the cluster, the third segment of its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Cell,
    Router,
}

impl Role {
    /// The role's segment in an identity and its name in certificate file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cell => "cell",
            Self::Router => "router",
        }
    }

    fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "cell" => Some(Self::Cell),
            "router" => Some(Self::Router),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A process of a deployment, as its certificate names it:
/// `spiffe://ldc/<deployment>/<cell|router>/<id>`. The names follow the deploy
/// file's rule for ids, so every valid topology has one for each process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    deployment: String,
    role: Role,
    id: String,
}

/// Why a URI or a certificate names no ldc identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "{uri:?} is not an ldc identity: {why}; expected spiffe://ldc/<deployment>/<cell|router>/<id>"
    )]
    Uri { uri: String, why: &'static str },
    /// A deployment name or process id that the deploy file would refuse too.
    #[error("{what} {value:?} must match [A-Za-z0-9_-]{{1,64}}")]
    Name { what: &'static str, value: String },
    #[error("no certificate was presented")]
    Missing,
    #[error("the certificate is not valid X.509: {0}")]
    Certificate(String),
    /// A certificate names its identity in exactly one URI subject alternative name.
    #[error(
        "the certificate has {0} URI subject alternative names; an ldc certificate has exactly one"
    )]
    UriCount(usize),
}

impl Identity {
    /// The identity of process `id` of `deployment`, refused when a name would not
    /// pass the deploy file's validation.
    pub fn new(
        deployment: impl Into<String>,
        role: Role,
        id: impl Into<String>,
    ) -> Result<Self, IdentityError> {
        let (deployment, id) = (deployment.into(), id.into());
        for (what, value) in [("deployment", &deployment), ("id", &id)] {
            if !is_valid_user_id(value) {
                return Err(IdentityError::Name {
                    what,
                    value: value.clone(),
                });
            }
        }
        Ok(Self {
            deployment,
            role,
            id,
        })
    }

    /// Parses the URI form, refusing any other scheme, trust domain or shape.
    pub fn parse(uri: &str) -> Result<Self, IdentityError> {
        let refuse = |why| IdentityError::Uri {
            uri: uri.to_owned(),
            why,
        };
        let path = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| refuse("the scheme is not spiffe://"))?;
        let mut segments = path.split('/');
        let (Some(domain), Some(deployment), Some(role), Some(id), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(refuse("it must have exactly three path segments"));
        };
        if domain != TRUST_DOMAIN {
            return Err(refuse("the trust domain is not ldc"));
        }
        let role =
            Role::from_segment(role).ok_or_else(|| refuse("the role is not cell or router"))?;
        Self::new(deployment, role, id)
            .map_err(|_| refuse("the deployment and the id must match [A-Za-z0-9_-]{1,64}"))
    }

    /// The identity a DER certificate names in its one URI subject alternative name.
    pub fn of_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let invalid = |err: &dyn fmt::Display| IdentityError::Certificate(err.to_string());
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|err| invalid(&err))?;
        let names = cert
            .subject_alternative_name()
            .map_err(|err| invalid(&err))?;
        let uris: Vec<&str> = names
            .iter()
            .flat_map(|san| &san.value.general_names)
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [uri] => Self::parse(uri),
            _ => Err(IdentityError::UriCount(uris.len())),
        }
    }

    pub fn deployment(&self) -> &str {
        &self.deployment
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{TRUST_DOMAIN}/{}/{}/{}",
            self.deployment, self.role, self.id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_agree() {
        let identity = Identity::new("prod", Role::Router, "r-1").expect("valid names");
        assert_eq!(identity.to_string(), "spiffe://ldc/prod/router/r-1");
        assert_eq!(
            Identity::parse("spiffe://ldc/prod/router/r-1"),
            Ok(identity)
        );
        let cell = Identity::parse("spiffe://ldc/prod/cell/a_2").expect("a cell identity");
        assert_eq!(
            (cell.deployment(), cell.role(), cell.id()),
            ("prod", Role::Cell, "a_2")
        );
    }

    #[test]
    fn parse_refuses_everything_else() {
        for uri in [
            "https://ldc/prod/cell/a",
            "SPIFFE://ldc/prod/cell/a",
            "spiffe://other/prod/cell/a",
            "spiffe:///prod/cell/a",
            "spiffe://ldc/prod/cell",
            "spiffe://ldc/prod/cell/a/b",
            "spiffe://ldc/prod/cell/a/",
            "spiffe://ldc/prod/admin/a",
            "spiffe://ldc//cell/a",
            "spiffe://ldc/prod/cell/",
            "spiffe://ldc/pr od/cell/a",
            "spiffe://ldc/prod/cell/a?x=1",
            "",
        ] {
            assert!(
                matches!(Identity::parse(uri), Err(IdentityError::Uri { .. })),
                "{uri:?} was accepted"
            );
        }
    }

    #[test]
    fn new_refuses_names_the_deploy_file_would() {
        assert!(Identity::new("", Role::Cell, "a").is_err());
        assert!(Identity::new("prod", Role::Cell, "a/b").is_err());
        assert!(Identity::new("prod", Role::Cell, "x".repeat(65)).is_err());
    }
}
