//! End-to-end: a deployment with `[auth]`, its router requiring HS256 bearer tokens
//! signed with a secret the test writes beside the deploy file.

use bytes::Bytes;
use http::{Method, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use ldc::client::Reply;
use serde_json::json;
use tempfile::TempDir;

use crate::support::Cluster;

const SECRET: &str = "e2e-only-secret-of-at-least-32-bytes";
const ITEMS: &str = "[[items]]\nid = \"hot\"\nname = \"Hot phone\"\nprice = 250\nstock = 30\n";

/// A token for `sub`, signed with `secret` under kid `k1`, expiring at `exp`.
fn token(secret: &str, sub: &str, exp: u64) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".to_owned());
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("key");
    encode(&header, &json!({"sub": sub, "exp": exp}), &key).expect("token")
}

async fn send(
    cluster: &Cluster,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: serde_json::Value,
) -> Reply {
    let url = format!("{}{path}", cluster.router_url());
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    cluster
        .client
        .send(method, &url, headers, body)
        .await
        .expect("router answers")
}

fn refused(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_eq!(reply.json()["error"]["code"], code);
    if status == StatusCode::UNAUTHORIZED {
        assert!(reply.header("www-authenticate").starts_with("Bearer"));
    }
}

#[tokio::test]
async fn the_router_serves_each_token_as_its_sub_and_nothing_without_one() {
    let keys = TempDir::new().expect("temp dir");
    let secret = keys.path().join("k1.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("write secret");
    let auth = format!(
        "[auth]\nalgorithms = [\"HS256\"]\n[[auth.keys]]\nkid = \"k1\"\nalgorithm = \"HS256\"\nfile = \"{}\"\n{ITEMS}",
        secret.display()
    );
    let cluster = Cluster::builder().cells(2).extra(&auth).spawn().await;
    let alice = &cluster.users_of("c1", 1)[0];
    let mallory = &cluster.users_of("c2", 1)[0];
    let later = get_current_timestamp() + 600;
    let bearer = |token: &str| format!("Bearer {token}");
    let as_alice = bearer(&token(SECRET, alice, later));
    let as_alice = [("authorization", as_alice.as_str())];
    let balance = format!("/v1/users/{alice}/balance");

    let deposit = send(
        &cluster,
        Method::POST,
        &format!("/v1/users/{alice}/deposits"),
        &as_alice,
        json!({"amount": 500, "request_id": "d1"}),
    )
    .await;
    assert_eq!(deposit.status, StatusCode::CREATED, "{:?}", deposit.body);
    let read = send(&cluster, Method::GET, &balance, &as_alice, json!(null)).await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    assert_eq!(read.json()["balance"], 500);

    let none = send(&cluster, Method::GET, &balance, &[], json!(null)).await;
    refused(&none, StatusCode::UNAUTHORIZED, "token_missing");
    let route = format!("/v1/route/{alice}");
    let placement = send(&cluster, Method::GET, &route, &[], json!(null)).await;
    refused(&placement, StatusCode::UNAUTHORIZED, "token_missing");
    let placement = send(&cluster, Method::GET, &route, &as_alice, json!(null)).await;
    assert_eq!(placement.json()["cell"], "c1");

    let expired = bearer(&token(SECRET, alice, get_current_timestamp() - 120));
    let reply = send(
        &cluster,
        Method::GET,
        &balance,
        &[("authorization", &expired)],
        json!(null),
    )
    .await;
    refused(&reply, StatusCode::UNAUTHORIZED, "token_expired");

    let forged = bearer(&token("another-secret-of-at-least-32-bytes!", alice, later));
    let reply = send(
        &cluster,
        Method::GET,
        &balance,
        &[("authorization", &forged)],
        json!(null),
    )
    .await;
    refused(&reply, StatusCode::UNAUTHORIZED, "token_invalid");

    let as_mallory = bearer(&token(SECRET, mallory, later));
    let reply = send(
        &cluster,
        Method::GET,
        &balance,
        &[("authorization", &as_mallory)],
        json!(null),
    )
    .await;
    refused(&reply, StatusCode::FORBIDDEN, "user_mismatch");

    // A client's own X-User-Id is replaced by the token's user: the item is read at
    // Alice's cell, not at Mallory's.
    let forging = [as_alice[0], ("x-user-id", mallory.as_str())];
    let item = send(
        &cluster,
        Method::GET,
        "/v1/items/hot",
        &forging,
        json!(null),
    )
    .await;
    assert_eq!(item.status, StatusCode::OK, "{:?}", item.body);
    let (slot, _) = cluster.topology().route(alice);
    assert_eq!(
        (item.header("x-ldc-cell"), item.header("x-ldc-slot")),
        ("c1", slot.to_string().as_str())
    );
    let read = send(&cluster, Method::GET, &balance, &forging, json!(null)).await;
    assert_eq!(read.json()["balance"], 500);
    let anonymous = send(&cluster, Method::GET, "/v1/items/hot", &[], json!(null)).await;
    refused(&anonymous, StatusCode::UNAUTHORIZED, "token_missing");
}
