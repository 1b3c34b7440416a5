//! The `[auth]` table: which bearer tokens (JWT) the routers accept, and from which keys.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// With this table, routers serve a user route only to the `sub` of a valid token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConf {
    /// Algorithms a token may be signed with (names of [`JwtAlgorithm`]). A list, not
    /// implied by the keys, so that adding a key never widens what is accepted.
    pub algorithms: Vec<String>,
    /// Keys by `kid`: several at once, so that tokens of the old and the new key both
    /// verify while issuers rotate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<AuthKeyConf>,
    /// A JWKS file (`{"keys": [...]}`): each key needs its `kid` and `alg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// The `iss` a token must carry, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// A value the token's `aud` must carry, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "leeway_s")]
    pub leeway_s: u64,
    /// Verified tokens each router remembers until their `exp`, so that a token's
    /// signature is checked once rather than on every request.
    #[serde(default = "cache_entries")]
    pub cache_entries: u32,
}

/// One verification key in a file of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthKeyConf {
    /// The `kid` of the tokens this key verifies.
    pub kid: String,
    /// A name of [`JwtAlgorithm`]: tokens of this `kid` must use exactly it.
    pub algorithm: String,
    /// A PEM public key; for HS256, the shared secret itself.
    pub file: PathBuf,
}

/// The algorithms a deployment can accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    EdDsa,
    Es256,
    Rs256,
    Hs256,
}

impl JwtAlgorithm {
    pub const ALL: [Self; 4] = [Self::EdDsa, Self::Es256, Self::Rs256, Self::Hs256];

    /// The name in a deploy file and in a token's `alg`.
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
            Self::Hs256 => "HS256",
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for JwtAlgorithm {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|a| a.name()).collect();
                format!("unknown algorithm {name:?}; one of {}", names.join(", "))
            })
    }
}

fn leeway_s() -> u64 {
    30
}

/// About 16 MiB at ~1 KiB per entry (a token and its user id).
fn cache_entries() -> u32 {
    16_384
}
