use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use jsonwebtoken::get_current_timestamp;
use ldc_topology::{AuthConf, JwtAlgorithm};
use prometheus::Registry;
use serde_json::{Value, json};

use super::test_keys::TestKeys;
use super::{Auth, AuthError, Refusal, Verifier};
use crate::metrics::{AuthMetrics, AuthOutcome};

use JwtAlgorithm::{EdDsa, Es256, Hs256, Rs256};

fn verifier(conf: &AuthConf) -> Verifier {
    let metrics = AuthMetrics::register(&Registry::new()).expect("metrics");
    Verifier::new(conf, metrics).expect("verifier")
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::try_from(format!("Bearer {token}")).expect("header");
    headers.insert(AUTHORIZATION, value);
    headers
}

fn now() -> u64 {
    get_current_timestamp()
}

/// Claims of a token for `sub` that expires in an hour.
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 3600})
}

/// Claims of [`claims`] with `changes` applied (`null` removes a claim).
fn claims_with(changes: Value) -> Value {
    let mut claims = claims("alice");
    for (name, value) in changes.as_object().expect("an object") {
        match value {
            Value::Null => claims.as_object_mut().expect("object").remove(name),
            value => claims
                .as_object_mut()
                .expect("object")
                .insert(name.clone(), value.clone()),
        };
    }
    claims
}

fn authenticate(verifier: &Verifier, token: &str) -> Result<String, Refusal> {
    verifier
        .authenticate(&bearer(token))
        .map(|user| user.to_str().expect("ascii").to_owned())
}

#[test]
fn a_valid_token_of_each_algorithm_is_its_sub() {
    for algorithm in [EdDsa, Es256, Rs256, Hs256] {
        let keys = TestKeys::new().add("k", algorithm);
        let verifier = verifier(&keys.conf());
        let token = keys.sign("k", &claims("alice"));
        assert_eq!(
            authenticate(&verifier, &token),
            Ok("alice".into()),
            "{algorithm}"
        );
    }
}

#[test]
fn two_kids_are_accepted_at_once_while_keys_rotate() {
    let keys = TestKeys::new().add("old", EdDsa).add("new", EdDsa);
    let verifier = verifier(&keys.conf());
    for kid in ["old", "new"] {
        let token = keys.sign(kid, &claims(kid));
        assert_eq!(authenticate(&verifier, &token), Ok(kid.into()));
    }
}

#[test]
fn keys_of_a_jwks_file_verify_beside_the_key_files() {
    let keys = TestKeys::new()
        .add("file", EdDsa)
        .add_to_jwks("jwks-ed", EdDsa)
        .add_to_jwks("jwks-ec", Es256);
    let verifier = verifier(&keys.conf());
    for kid in ["file", "jwks-ed", "jwks-ec"] {
        let token = keys.sign(kid, &claims("alice"));
        assert_eq!(authenticate(&verifier, &token), Ok("alice".into()), "{kid}");
    }
}

#[test]
fn an_expired_token_is_refused_as_expired() {
    let keys = TestKeys::new().add("k", Hs256);
    let verifier = verifier(&keys.conf());
    // Past the 30 s leeway.
    let token = keys.sign("k", &claims_with(json!({"exp": now() - 60})));
    assert_eq!(authenticate(&verifier, &token), Err(Refusal::Expired));
}

#[test]
fn a_token_signed_by_another_key_of_the_same_kid_is_invalid() {
    let keys = TestKeys::new().add("k", EdDsa);
    let forger = TestKeys::new().add("k", EdDsa);
    let verifier = verifier(&keys.conf());
    let token = forger.sign("k", &claims("alice"));
    assert_eq!(authenticate(&verifier, &token), Err(Refusal::Invalid));
    // Nor does an expired forgery learn that it would be expired.
    let expired = forger.sign("k", &claims_with(json!({"exp": now() - 60})));
    assert_eq!(authenticate(&verifier, &expired), Err(Refusal::Invalid));
}

#[test]
fn an_unsigned_token_is_invalid() {
    let keys = TestKeys::new().add("k", Hs256);
    let verifier = verifier(&keys.conf());
    let part = |value: Value| URL_SAFE_NO_PAD.encode(value.to_string());
    for alg in ["none", "None", "NONE"] {
        let header = part(json!({"alg": alg, "kid": "k", "typ": "JWT"}));
        let token = format!("{header}.{}.", part(claims("alice")));
        assert_eq!(
            authenticate(&verifier, &token),
            Err(Refusal::Invalid),
            "{alg}"
        );
    }
}

#[test]
fn a_token_of_another_algorithm_than_its_kid_is_invalid() {
    let keys = TestKeys::new().add("ed", EdDsa);
    let verifier = verifier(&keys.conf());
    // The classic confusion: HS256 "signed" with the public key file as the secret.
    let public = std::fs::read(keys.dir().join("ed.key")).expect("public key");
    let key = jsonwebtoken::EncodingKey::from_secret(&public).expect("key");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("ed".into());
    let token = jsonwebtoken::encode(&header, &claims("alice"), &key).expect("token");
    assert_eq!(authenticate(&verifier, &token), Err(Refusal::Invalid));
}

#[test]
fn an_unknown_kid_or_none_is_invalid() {
    let keys = TestKeys::new().add("k", Hs256).add("other", Hs256);
    let mut conf = keys.conf();
    conf.keys.retain(|k| k.kid == "k");
    let verifier = verifier(&conf);
    let token = keys.sign("other", &claims("alice"));
    assert_eq!(authenticate(&verifier, &token), Err(Refusal::Invalid));
    let secret = std::fs::read(keys.dir().join("k.key")).expect("secret");
    let key = jsonwebtoken::EncodingKey::from_secret(secret.trim_ascii_end()).expect("key");
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let no_kid = jsonwebtoken::encode(&header, &claims("alice"), &key).expect("token");
    assert_eq!(authenticate(&verifier, &no_kid), Err(Refusal::Invalid));
}

#[test]
fn issuer_and_audience_are_checked_when_set() {
    let keys = TestKeys::new().add("k", Hs256);
    let mut conf = keys.conf();
    conf.issuer = Some("https://login.example".into());
    conf.audience = Some("ldc".into());
    let verifier = verifier(&conf);
    let cases = [
        (
            json!({"iss": "https://login.example", "aud": "ldc"}),
            Ok("alice".into()),
        ),
        (
            json!({"iss": "https://login.example", "aud": ["x", "ldc"]}),
            Ok("alice".into()),
        ),
        (
            json!({"iss": "https://login.example", "aud": "other"}),
            Err(Refusal::Invalid),
        ),
        (
            json!({"iss": "https://login.example"}),
            Err(Refusal::Invalid),
        ),
        (
            json!({"iss": "https://evil.example", "aud": "ldc"}),
            Err(Refusal::Invalid),
        ),
        (json!({"aud": "ldc"}), Err(Refusal::Invalid)),
    ];
    for (changes, expected) in cases {
        let token = keys.sign("k", &claims_with(changes.clone()));
        assert_eq!(authenticate(&verifier, &token), expected, "{changes}");
    }
}

#[test]
fn without_issuer_or_audience_set_any_is_accepted() {
    let keys = TestKeys::new().add("k", Hs256);
    let verifier = verifier(&keys.conf());
    let token = keys.sign("k", &claims_with(json!({"iss": "x", "aud": "y"})));
    assert_eq!(authenticate(&verifier, &token), Ok("alice".into()));
}

#[test]
fn nbf_in_the_future_beyond_the_leeway_is_invalid() {
    let keys = TestKeys::new().add("k", Hs256);
    let verifier = verifier(&keys.conf());
    let later = keys.sign("k", &claims_with(json!({"nbf": now() + 120})));
    assert_eq!(authenticate(&verifier, &later), Err(Refusal::Invalid));
    let skewed = keys.sign("k", &claims_with(json!({"nbf": now() + 5})));
    assert_eq!(authenticate(&verifier, &skewed), Ok("alice".into()));
}

#[test]
fn a_token_without_exp_or_without_a_user_id_as_sub_is_invalid() {
    let keys = TestKeys::new().add("k", Hs256);
    let verifier = verifier(&keys.conf());
    let cases = [
        json!({"exp": null}),
        json!({"exp": "tomorrow"}),
        json!({"sub": null}),
        json!({"sub": 42}),
        json!({"sub": "not a user id"}),
        json!({"sub": ""}),
    ];
    for changes in cases {
        let token = keys.sign("k", &claims_with(changes.clone()));
        assert_eq!(
            authenticate(&verifier, &token),
            Err(Refusal::Invalid),
            "{changes}"
        );
    }
}

#[test]
fn a_request_without_a_bearer_token_is_missing_one() {
    let keys = TestKeys::new().add("k", Hs256);
    let verifier = verifier(&keys.conf());
    let token = keys.sign("k", &claims("alice"));
    let with = |values: &[&str]| {
        let mut headers = HeaderMap::new();
        for value in values {
            let value = HeaderValue::try_from(*value).expect("header");
            headers.append(AUTHORIZATION, value);
        }
        verifier.authenticate(&headers)
    };
    let bearer = format!("Bearer {token}");
    let cases: [&[&str]; 5] = [
        &[],
        &["Bearer"],
        &["Bearer  "],
        &["Basic YWxpY2U6cGFzcw=="],
        &[&bearer, &bearer],
    ];
    for values in cases {
        assert_eq!(with(values), Err(Refusal::Missing), "{values:?}");
    }
    let lowercase = format!("bearer {token}");
    assert_eq!(with(&[&lowercase]), Ok(HeaderValue::from_static("alice")));
}

#[test]
fn a_cached_token_is_not_verified_again() {
    let keys = TestKeys::new().add("k", EdDsa);
    let verifier = verifier(&keys.conf());
    let token = keys.sign("k", &claims("alice"));
    for _ in 0..3 {
        assert_eq!(authenticate(&verifier, &token), Ok("alice".into()));
    }
    let counted = |outcome| verifier.metrics.counted(outcome);
    assert_eq!(
        (counted(AuthOutcome::Verified), counted(AuthOutcome::Cached)),
        (1, 2)
    );
}

#[test]
fn a_refused_token_is_not_cached() {
    let keys = TestKeys::new().add("k", EdDsa);
    let forger = TestKeys::new().add("k", EdDsa);
    let verifier = verifier(&keys.conf());
    let forged = forger.sign("k", &claims("alice"));
    for _ in 0..2 {
        assert_eq!(authenticate(&verifier, &forged), Err(Refusal::Invalid));
    }
    assert_eq!(verifier.cache.len(), 0);
    assert_eq!(verifier.metrics.counted(AuthOutcome::Invalid), 2);
}

#[test]
fn the_cache_stays_bounded_with_more_tokens_than_entries() {
    let keys = TestKeys::new().add("k", Hs256);
    let mut conf = keys.conf();
    conf.cache_entries = 8;
    let verifier = verifier(&conf);
    for i in 0..100 {
        let user = format!("user{i}");
        let token = keys.sign("k", &claims(&user));
        assert_eq!(authenticate(&verifier, &token), Ok(user));
        assert!(verifier.cache.len() <= 8);
    }
    assert_eq!(verifier.cache.len(), 8);
}

#[test]
fn a_token_past_its_exp_is_never_served_from_the_cache() {
    let keys = TestKeys::new().add("k", Hs256);
    let verifier = verifier(&keys.conf());
    // Expired a second ago: still within the leeway, so accepted, but each time
    // verified anew.
    let token = keys.sign("k", &claims_with(json!({"exp": now() - 1})));
    for _ in 0..2 {
        assert_eq!(authenticate(&verifier, &token), Ok("alice".into()));
    }
    assert_eq!(verifier.metrics.counted(AuthOutcome::Verified), 2);
    assert_eq!(verifier.cache.len(), 0);
}

#[test]
fn a_key_file_that_cannot_be_used_is_named() {
    let keys = TestKeys::new().add("ed", EdDsa).add("hs", Hs256);
    let broken = keys.dir().join("ed.key");
    let short = keys.dir().join("hs.key");
    std::fs::write(
        &broken,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .expect("write");
    std::fs::write(&short, "too short\n").expect("write");
    let metrics = || AuthMetrics::register(&Registry::new()).expect("metrics");
    let error = |conf: &AuthConf| match Verifier::new(conf, metrics()) {
        Err(AuthError::File { file, why }) => (file, why),
        other => panic!("not a file error: {other:?}"),
    };
    let mut conf = keys.conf();
    let (file, why) = error(&conf);
    assert_eq!(file, broken);
    assert!(why.starts_with("not a usable EdDSA key"), "{why}");
    conf.keys.retain(|k| k.kid == "hs");
    assert_eq!(
        error(&conf),
        (short, "an HS256 secret needs at least 32 bytes".into())
    );
    conf.keys[0].file = keys.dir().join("absent.key");
    assert_eq!(error(&conf).0, keys.dir().join("absent.key"));
}

#[test]
fn jwks_keys_of_algorithms_not_allowed_are_skipped() {
    let keys = TestKeys::new()
        .add_to_jwks("ed", EdDsa)
        .add_to_jwks("ec", Es256);
    let mut conf = keys.conf();
    conf.algorithms = vec!["EdDSA".into()];
    let verifier = verifier(&conf);
    assert_eq!(
        authenticate(&verifier, &keys.sign("ed", &claims("alice"))),
        Ok("alice".into())
    );
    assert_eq!(
        authenticate(&verifier, &keys.sign("ec", &claims("alice"))),
        Err(Refusal::Invalid)
    );
    conf.algorithms = vec!["HS256".into()];
    let refused = Verifier::new(&conf, AuthMetrics::register(&Registry::new()).expect("m"));
    assert!(matches!(refused, Err(AuthError::Table(_))), "{refused:?}");
}

#[test]
fn a_reload_reads_the_keys_again_and_keeps_them_when_a_file_is_bad() {
    let cells = "[[regions]]\nid = \"r\"\n[[cells]]\nid = \"c1\"\nregion = \"r\"\n\
                 listen = \"127.0.0.1:7101\"\nadmin = \"127.0.0.1:7201\"\n";
    let mut deploy = ldc_topology::Topology::from_toml_str("test.toml", cells)
        .expect("valid")
        .deploy()
        .clone();
    let metrics = AuthMetrics::register(&Registry::new()).expect("metrics");
    let auth = Auth::new(&deploy, metrics).expect("no [auth]");
    assert_eq!(auth.authenticate(&HeaderMap::new()), None);

    let keys = TestKeys::new().add("old", EdDsa).add("new", EdDsa);
    let (old, new) = (
        bearer(&keys.sign("old", &claims("alice"))),
        bearer(&keys.sign("new", &claims("alice"))),
    );
    let mut conf = keys.conf();
    conf.keys.retain(|k| k.kid == "old");
    deploy.auth = Some(conf);
    auth.reload(&deploy).expect("reloaded");
    let alice = Some(Ok(HeaderValue::from_static("alice")));
    assert_eq!(
        (auth.authenticate(&old), auth.authenticate(&new)),
        (alice.clone(), Some(Err(Refusal::Invalid)))
    );

    // The old key retired: its cached token goes with it.
    let mut conf = keys.conf();
    conf.keys.retain(|k| k.kid == "new");
    deploy.auth = Some(conf.clone());
    auth.reload(&deploy).expect("reloaded");
    assert_eq!(
        (auth.authenticate(&old), auth.authenticate(&new)),
        (Some(Err(Refusal::Invalid)), alice.clone())
    );

    conf.keys[0].file = keys.dir().join("absent.key");
    deploy.auth = Some(conf);
    let problems = auth.reload(&deploy).expect_err("a missing key file");
    assert!(problems[0].contains("absent.key"), "{problems:?}");
    assert_eq!(auth.authenticate(&new), alice);
}
