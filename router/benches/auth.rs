//! Bearer-token checks at the router: a token's first request (signature and claims
//! verified) for each algorithm, and its later ones (served from the cache). Run
//! with `cargo bench -p ldc-router --bench auth`.

#[path = "../src/auth/test_keys.rs"]
#[allow(dead_code, reason = "the unit tests use the rest")]
mod test_keys;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use jsonwebtoken::get_current_timestamp;
use ldc_router::{AuthMetrics, Verifier};
use ldc_topology::JwtAlgorithm;
use prometheus::Registry;
use test_keys::TestKeys;

fn verify(c: &mut Criterion) {
    let claims = serde_json::json!({"sub": "user-000042", "exp": get_current_timestamp() + 3600});
    let mut group = c.benchmark_group("auth");
    for algorithm in JwtAlgorithm::ALL {
        let keys = TestKeys::new().add("k", algorithm);
        let verifier = verifier(&keys);
        let token = keys.sign("k", &claims);
        group.bench_with_input(
            BenchmarkId::new("uncached", algorithm),
            &token,
            |b, token| b.iter(|| verifier.verify(black_box(token)).expect("valid")),
        );
        if algorithm == JwtAlgorithm::EdDsa {
            let mut headers = HeaderMap::new();
            let bearer = HeaderValue::try_from(format!("Bearer {token}")).expect("header");
            headers.insert(AUTHORIZATION, bearer);
            verifier.authenticate(&headers).expect("valid");
            group.bench_function("cached", |b| {
                b.iter(|| verifier.authenticate(black_box(&headers)).expect("valid"))
            });
        }
    }
    group.finish();
}

fn verifier(keys: &TestKeys) -> Verifier {
    let metrics = AuthMetrics::register(&Registry::new()).expect("metrics");
    Verifier::new(&keys.conf(), metrics).expect("verifier")
}

criterion_group!(benches, verify);
criterion_main!(benches);
