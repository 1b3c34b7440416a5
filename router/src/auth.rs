//! Bearer tokens (JWT) at the router: with `[auth]`, a user route is served only to
//! the `sub` of a token signed by a configured key.

mod cache;
mod keys;
#[cfg(test)]
mod test_keys;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, get_current_timestamp};
use ldc_topology::{AuthConf, Deploy, is_valid_user_id};
use serde::Deserialize;

use crate::metrics::{AuthMetrics, AuthOutcome};
use cache::Cache;
use keys::Key;

/// Longest token looked at: a cache entry holds a whole token.
const MAX_TOKEN_BYTES: usize = 8 << 10;

/// Why a request's token was refused; every refusal is a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this route needs a token: Authorization: Bearer <JWT>")]
    Missing,
    #[error("the token has expired")]
    Expired,
    /// Bad signature, unknown `kid`, an algorithm not allowed, wrong claims: the
    /// client is not told which (the router logs it at debug level).
    #[error("the token is not valid here")]
    Invalid,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "token_missing",
            Self::Expired => "token_expired",
            Self::Invalid => "token_invalid",
        }
    }

    /// The `WWW-Authenticate` challenge of the 401 (RFC 6750, section 3).
    pub fn challenge(self) -> HeaderValue {
        match self {
            Self::Missing => HeaderValue::from_static("Bearer"),
            Self::Expired | Self::Invalid => {
                HeaderValue::from_static("Bearer error=\"invalid_token\"")
            }
        }
    }

    fn outcome(self) -> AuthOutcome {
        match self {
            Self::Missing => AuthOutcome::Missing,
            Self::Expired => AuthOutcome::Expired,
            Self::Invalid => AuthOutcome::Invalid,
        }
    }
}

/// Why a router cannot use an `[auth]` table.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{}: {why}", .file.display())]
    File { file: PathBuf, why: String },
    /// A table validation refuses (see `config/src/validate/auth.rs`), or whose files
    /// left no key.
    #[error("auth: {0}")]
    Table(String),
}

impl AuthError {
    fn file(file: &Path, why: impl ToString) -> Self {
        Self::File {
            file: file.to_owned(),
            why: why.to_string(),
        }
    }
}

/// A token whose signature and claims were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The `sub`, a valid user id, ready for `X-User-Id`.
    pub user_id: HeaderValue,
    /// Unix seconds.
    pub exp: u64,
}

/// The claims the router reads; jsonwebtoken checks the others it is told about.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// The keys and checks of one `[auth]` table, and the tokens they verified.
pub struct Verifier {
    keys: HashMap<String, Key>,
    cache: Cache,
    metrics: AuthMetrics,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Reads every key file of `conf`; the error names the file that cannot be used.
    pub fn new(conf: &AuthConf, metrics: AuthMetrics) -> Result<Self, AuthError> {
        Ok(Self {
            keys: keys::load(conf)?,
            cache: Cache::new(conf.cache_entries as usize),
            metrics,
        })
    }

    /// The user a request acts for: the `sub` of its bearer token, as a header value.
    /// A token verified before is taken from the cache until its `exp`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<HeaderValue, Refusal> {
        let checked = self.check(headers);
        self.metrics.count(match &checked {
            Ok((_, outcome)) => *outcome,
            Err(refusal) => refusal.outcome(),
        });
        checked.map(|(user_id, _)| user_id)
    }

    fn check(&self, headers: &HeaderMap) -> Result<(HeaderValue, AuthOutcome), Refusal> {
        let token = bearer(headers).ok_or(Refusal::Missing)?;
        let now = get_current_timestamp();
        if let Some(user_id) = self.cache.get(token, now) {
            return Ok((user_id, AuthOutcome::Cached));
        }
        let verified = self.verify(token)?;
        self.cache
            .insert(token, verified.user_id.clone(), verified.exp, now);
        Ok((verified.user_id, AuthOutcome::Verified))
    }

    /// Checks a token's signature and claims, without the cache.
    pub fn verify(&self, token: &str) -> Result<Verified, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("longer than the router reads"));
        }
        // `alg: none` and any algorithm jsonwebtoken does not know fail here.
        let header = decode_header(token).map_err(|_| invalid("malformed header"))?;
        let kid = header.kid.ok_or_else(|| invalid("no kid"))?;
        let key = self.keys.get(&kid).ok_or_else(|| invalid("unknown kid"))?;
        let claims = decode::<Claims>(token, &key.decoding, &key.validation)
            .map_err(|err| refusal(err.kind()))?
            .claims;
        let user_id = Some(claims.sub)
            .filter(|sub| is_valid_user_id(sub))
            .and_then(|sub| HeaderValue::try_from(sub).ok())
            .ok_or_else(|| invalid("sub is not a user id"))?;
        Ok(Verified {
            user_id,
            exp: claims.exp,
        })
    }
}

/// The token of `Authorization: Bearer <token>`; none for a missing or malformed
/// header, or for two of them (which one would count?).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    let token = token.trim_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn refusal(kind: &ErrorKind) -> Refusal {
    match kind {
        ErrorKind::ExpiredSignature => Refusal::Expired,
        ErrorKind::InvalidSignature => invalid("bad signature"),
        ErrorKind::InvalidAlgorithm => invalid("algorithm not allowed for the kid"),
        ErrorKind::InvalidIssuer => invalid("wrong iss"),
        ErrorKind::InvalidAudience => invalid("wrong aud"),
        ErrorKind::ImmatureSignature => invalid("nbf in the future"),
        ErrorKind::MissingRequiredClaim(_) => invalid("a required claim is missing"),
        _ => invalid("malformed"),
    }
}

/// [`Refusal::Invalid`], with why at debug level: never the token itself.
fn invalid(why: &'static str) -> Refusal {
    tracing::debug!(why, "token refused");
    Refusal::Invalid
}

/// The verifier of the deploy file in force: none without `[auth]`. A reload builds
/// a new one from the key files (that is how keys rotate), with an empty cache, so a
/// key taken out of the files no longer admits tokens the cache holds.
pub(crate) struct Auth {
    verifier: ArcSwapOption<Verifier>,
    metrics: AuthMetrics,
}

impl Auth {
    pub(crate) fn new(deploy: &Deploy, metrics: AuthMetrics) -> Result<Self, AuthError> {
        let verifier = Self::verifier(deploy, &metrics)?;
        Ok(Self {
            verifier: ArcSwapOption::new(verifier),
            metrics,
        })
    }

    /// Uses the `[auth]` of `deploy` from now on, if its key files can be used.
    pub(crate) fn reload(&self, deploy: &Deploy) -> Result<(), Vec<String>> {
        let verifier =
            Self::verifier(deploy, &self.metrics).map_err(|err| vec![err.to_string()])?;
        self.verifier.store(verifier);
        Ok(())
    }

    fn verifier(
        deploy: &Deploy,
        metrics: &AuthMetrics,
    ) -> Result<Option<Arc<Verifier>>, AuthError> {
        deploy
            .auth
            .as_ref()
            .map(|conf| Verifier::new(conf, metrics.clone()).map(Arc::new))
            .transpose()
    }

    /// The user of the request's token; `None` without `[auth]`.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Option<Result<HeaderValue, Refusal>> {
        self.verifier
            .load()
            .as_deref()
            .map(|verifier| verifier.authenticate(headers))
    }
}
