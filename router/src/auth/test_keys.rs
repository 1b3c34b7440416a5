//! Keys made at run time for the verifier's tests and benchmark: the verifying half
//! written to files in a temporary directory, as an `[auth]` table names them, and
//! tokens signed with the other half. No key is ever committed.
//!
//! Also compiled into `benches/auth.rs`, so it uses only public APIs.

use std::collections::HashMap;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{EncodingKey, Header, encode};
use ldc_topology::{AuthConf, AuthKeyConf, JwtAlgorithm};
use tempfile::TempDir;

/// Key files of a test, and how to sign tokens for each of their `kid`s.
pub struct TestKeys {
    dir: TempDir,
    keys: Vec<AuthKeyConf>,
    jwks: Vec<Jwk>,
    signers: HashMap<String, (JwtAlgorithm, EncodingKey)>,
}

impl TestKeys {
    pub fn new() -> Self {
        Self {
            dir: TempDir::new().expect("temp dir"),
            keys: Vec::new(),
            jwks: Vec::new(),
            signers: HashMap::new(),
        }
    }

    /// Makes a fresh key of `algorithm` for `kid` and writes its verifying half (the
    /// secret itself for HS256) to a file.
    pub fn add(mut self, kid: &str, algorithm: JwtAlgorithm) -> Self {
        let (signing, verifying) = pair(algorithm);
        let file = self.dir.path().join(format!("{kid}.key"));
        std::fs::write(&file, verifying).expect("write key file");
        self.keys.push(AuthKeyConf {
            kid: kid.to_owned(),
            algorithm: algorithm.name().to_owned(),
            file,
        });
        self.signers.insert(kid.to_owned(), (algorithm, signing));
        self
    }

    /// Makes a fresh key of `algorithm` for `kid` and puts it in the JWKS file.
    pub fn add_to_jwks(mut self, kid: &str, algorithm: JwtAlgorithm) -> Self {
        let (signing, _) = pair(algorithm);
        let mut jwk = Jwk::from_encoding_key(&signing, jwt(algorithm)).expect("JWK");
        jwk.common.key_id = Some(kid.to_owned());
        self.jwks.push(jwk);
        let set = JwkSet {
            keys: self.jwks.clone(),
        };
        let text = serde_json::to_vec(&set).expect("JWKS");
        std::fs::write(self.jwks_file(), text).expect("write JWKS file");
        self.signers.insert(kid.to_owned(), (algorithm, signing));
        self
    }

    pub fn jwks_file(&self) -> std::path::PathBuf {
        self.dir.path().join("jwks.json")
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// An `[auth]` table of every key added, allowing their algorithms.
    pub fn conf(&self) -> AuthConf {
        let mut algorithms: Vec<String> = self
            .signers
            .values()
            .map(|(algorithm, _)| algorithm.name().to_owned())
            .collect();
        algorithms.sort();
        algorithms.dedup();
        AuthConf {
            algorithms,
            keys: self.keys.clone(),
            jwks_file: (!self.jwks.is_empty()).then(|| self.jwks_file()),
            issuer: None,
            audience: None,
            leeway_s: 30,
            cache_entries: 1024,
        }
    }

    /// A token with `claims`, signed with the key of `kid`.
    pub fn sign(&self, kid: &str, claims: &serde_json::Value) -> String {
        let (algorithm, key) = &self.signers[kid];
        let mut header = Header::new(jwt(*algorithm));
        header.kid = Some(kid.to_owned());
        encode(&header, claims, key).expect("signed")
    }
}

/// A signing key and the contents of the file that verifies it.
fn pair(algorithm: JwtAlgorithm) -> (EncodingKey, Vec<u8>) {
    let pem = |text: &str| text.as_bytes().to_vec();
    match algorithm {
        JwtAlgorithm::Hs256 => {
            let secret: String = random::<32>().iter().map(|b| format!("{b:02x}")).collect();
            let key = EncodingKey::from_secret(secret.as_bytes()).expect("HS256 key");
            (key, format!("{secret}\n").into_bytes())
        }
        JwtAlgorithm::EdDsa => {
            let key = ed25519_dalek::SigningKey::from_bytes(&random::<32>());
            // PKCS#8 v1, without the public key: what jsonwebtoken derives a JWK from.
            let keypair = ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: key.to_bytes(),
                public_key: None,
            };
            let private = keypair.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8");
            let public = key.verifying_key().to_public_key_pem(LineEnding::LF);
            let signing = EncodingKey::from_ed_pem(&pem(&private)).expect("EdDSA key");
            (signing, pem(&public.expect("SPKI")))
        }
        JwtAlgorithm::Es256 => {
            let key = loop {
                // Below the group order but for odds of about 2^-32.
                if let Ok(key) = p256::SecretKey::from_slice(&random::<32>()) {
                    break key;
                }
            };
            let private = key.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8");
            let public = key.public_key().to_public_key_pem(LineEnding::LF);
            let signing = EncodingKey::from_ec_pem(&pem(&private)).expect("ES256 key");
            (signing, pem(&public.expect("SPKI")))
        }
        JwtAlgorithm::Rs256 => {
            let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA key");
            let private = key.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8");
            let public = key.to_public_key().to_public_key_pem(LineEnding::LF);
            let signing = EncodingKey::from_rsa_pem(&pem(&private)).expect("RS256 key");
            (signing, pem(&public.expect("SPKI")))
        }
    }
}

/// The deploy file's names are the JWT names.
fn jwt(algorithm: JwtAlgorithm) -> jsonwebtoken::Algorithm {
    algorithm.name().parse().expect("a JWT algorithm")
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).expect("random bytes");
    bytes
}
