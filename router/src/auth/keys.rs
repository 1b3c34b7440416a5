//! The verification keys of an `[auth]` table, read from their files, each with the
//! checks a token of its `kid` must pass.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ldc_topology::{AuthConf, JwtAlgorithm};

use super::AuthError;

/// Shortest HS256 secret: the size of the hash (RFC 7518, section 3.2).
const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug)]
pub(super) struct Key {
    pub decoding: DecodingKey,
    /// Allows only the key's own algorithm, so a token cannot pick another one for it.
    pub validation: Validation,
}

/// Every key of `conf` by `kid`, or the first file that cannot be used.
pub(super) fn load(conf: &AuthConf) -> Result<HashMap<String, Key>, AuthError> {
    let allowed = conf
        .algorithms
        .iter()
        .map(|name| name.parse::<JwtAlgorithm>())
        .collect::<Result<HashSet<_>, _>>()
        .map_err(AuthError::Table)?;
    let mut keys = HashMap::new();
    for key in &conf.keys {
        let algorithm: JwtAlgorithm = key.algorithm.parse().map_err(AuthError::Table)?;
        if !allowed.contains(&algorithm) {
            return Err(AuthError::Table(format!(
                "key {:?}: {algorithm} is not in auth.algorithms",
                key.kid
            )));
        }
        let bytes = std::fs::read(&key.file).map_err(|err| AuthError::file(&key.file, err))?;
        let decoding = from_file(algorithm, &bytes)
            .and_then(|decoding| checked(algorithm, decoding))
            .map_err(|why| AuthError::file(&key.file, why))?;
        add(&mut keys, &key.file, &key.kid, algorithm, decoding, conf)?;
    }
    if let Some(file) = &conf.jwks_file {
        let text = std::fs::read(file).map_err(|err| AuthError::file(file, err))?;
        let set: JwkSet = serde_json::from_slice(&text)
            .map_err(|err| AuthError::file(file, format!("not a JWKS: {err}")))?;
        for jwk in &set.keys {
            if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                continue;
            }
            let Some(kid) = &jwk.common.key_id else {
                return Err(AuthError::file(file, "a key has no \"kid\""));
            };
            let Some(alg) = jwk.common.key_algorithm else {
                return Err(AuthError::file(file, format!("key {kid:?} has no \"alg\"")));
            };
            let algorithm = match alg.to_string().parse::<JwtAlgorithm>() {
                Ok(algorithm) if allowed.contains(&algorithm) => algorithm,
                // A shared JWKS may hold keys for other relying parties.
                _ => {
                    tracing::warn!(file = %file.display(), kid = %kid, alg = %alg, "JWKS key skipped: its alg is not in auth.algorithms");
                    continue;
                }
            };
            let decoding = DecodingKey::from_jwk(jwk)
                .map_err(|err| err.to_string())
                .and_then(|decoding| checked(algorithm, decoding))
                .map_err(|why| AuthError::file(file, format!("key {kid:?}: {why}")))?;
            add(&mut keys, file, kid, algorithm, decoding, conf)?;
        }
    }
    if keys.is_empty() {
        return Err(AuthError::Table(
            "no usable key for auth.algorithms".to_owned(),
        ));
    }
    Ok(keys)
}

fn add(
    keys: &mut HashMap<String, Key>,
    file: &Path,
    kid: &str,
    algorithm: JwtAlgorithm,
    decoding: DecodingKey,
    conf: &AuthConf,
) -> Result<(), AuthError> {
    if keys.contains_key(kid) {
        return Err(AuthError::file(file, format!("kid {kid:?} is given twice")));
    }
    let validation = validation(jwt(algorithm), conf);
    keys.insert(
        kid.to_owned(),
        Key {
            decoding,
            validation,
        },
    );
    Ok(())
}

/// A key file's contents: PEM (SPKI, or PKCS#1 for RSA) for a public key, the bytes
/// themselves for an HS256 secret, less the line end editors and `echo` add.
fn from_file(algorithm: JwtAlgorithm, bytes: &[u8]) -> Result<DecodingKey, String> {
    let decoded = match algorithm {
        JwtAlgorithm::EdDsa => DecodingKey::from_ed_pem(bytes),
        JwtAlgorithm::Es256 => DecodingKey::from_ec_pem(bytes),
        JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(bytes),
        JwtAlgorithm::Hs256 => DecodingKey::from_secret(bytes.trim_ascii_end()),
    };
    decoded.map_err(|err| format!("not a usable {algorithm} key: {err}"))
}

/// Refuses a key of another family than its algorithm (a JWK's `kty` need not match
/// its `alg`) and HS256 secrets too short to resist guessing.
fn checked(algorithm: JwtAlgorithm, decoding: DecodingKey) -> Result<DecodingKey, String> {
    if decoding.family() != jwt(algorithm).family() {
        return Err(format!("not a {algorithm} key"));
    }
    if algorithm == JwtAlgorithm::Hs256
        && decoding.try_get_as_bytes().map_or(0, <[u8]>::len) < MIN_SECRET_BYTES
    {
        return Err(format!(
            "an HS256 secret needs at least {MIN_SECRET_BYTES} bytes"
        ));
    }
    Ok(decoding)
}

fn validation(algorithm: Algorithm, conf: &AuthConf) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = conf.leeway_s;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if let Some(issuer) = &conf.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    // Without an audience to check, a token naming one is still accepted.
    validation.validate_aud = conf.audience.is_some();
    if let Some(audience) = &conf.audience {
        validation.set_audience(&[audience]);
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    validation
}

fn jwt(algorithm: JwtAlgorithm) -> Algorithm {
    match algorithm {
        JwtAlgorithm::EdDsa => Algorithm::EdDSA,
        JwtAlgorithm::Es256 => Algorithm::ES256,
        JwtAlgorithm::Rs256 => Algorithm::RS256,
        JwtAlgorithm::Hs256 => Algorithm::HS256,
    }
}
