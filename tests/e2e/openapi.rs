//! The cell's OpenAPI document (`cell/openapi.json`) against the code: it documents
//! exactly the routes in `ldc_topology::USER_ROUTES`, and every operation it documents answers
//! through a router with a status the document lists and a body its schema allows.

use std::collections::BTreeSet;

use crate::support::Cluster;
use bytes::Bytes;
use http::{Method, StatusCode};
use ldc::client::Reply;
use ldc_topology::is_valid_user_id;
use serde_json::{Value, json};

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/cell/openapi.json");

/// Keys of an OpenAPI path item that hold operations.
const OPERATION_KEYS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One item for the orders and the item lookup.
const ITEMS: &str = "[[items]]\nid = \"hot\"\nname = \"Hot\"\nprice = 100\nstock = 100\n";

fn spec() -> Value {
    let text = std::fs::read_to_string(SPEC).unwrap_or_else(|err| panic!("read {SPEC}: {err}"));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{SPEC} is not JSON: {err}"))
}

/// Every documented (METHOD, path) pair.
fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    let paths = spec["paths"].as_object().expect("the document has paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("a path item is an object");
            item.keys()
                .filter(|key| OPERATION_KEYS.contains(&key.as_str()))
                .map(|key| (key.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `value`, or what its `$ref` (a local JSON pointer) points to, followed to the end.
fn resolve<'s>(spec: &'s Value, mut value: &'s Value) -> &'s Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local $refs are used: {reference}"));
        value = spec
            .pointer(pointer)
            .unwrap_or_else(|| panic!("$ref {reference} points nowhere"));
    }
    value
}

/// Parameters of an operation: its path item's, then its own, resolved.
fn parameters<'s>(spec: &'s Value, path: &str, method: &str) -> Vec<&'s Value> {
    let item = &spec["paths"][path];
    [&item["parameters"], &item[method]["parameters"]]
        .into_iter()
        .filter_map(Value::as_array)
        .flatten()
        .map(|p| resolve(spec, p))
        .collect()
}

/// Every `$ref` anywhere in `value`.
fn refs<'v>(value: &'v Value, found: &mut Vec<&'v str>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                found.push(reference);
            }
            map.values().for_each(|v| refs(v, found));
        }
        Value::Array(values) => values.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

/// The two patterns the document uses, checked without a regex engine.
fn matches_pattern(pattern: &str, text: &str) -> bool {
    match pattern {
        "^[A-Za-z0-9_-]{1,64}$" => is_valid_user_id(text),
        "^o[1-9][0-9]*$" => text.strip_prefix('o').is_some_and(|n| {
            !n.is_empty() && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit())
        }),
        other => panic!("the test does not know the pattern {other:?}; teach it"),
    }
}

fn integer(value: &Value) -> Option<i128> {
    value
        .as_i64()
        .map(i128::from)
        .or_else(|| value.as_u64().map(i128::from))
}

/// Checks `value` against `schema` for the part of OpenAPI 3.0 schemas the document
/// uses; appends what does not fit to `problems`, each with its place in `value`.
fn check(spec: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    if value.is_null() {
        if schema["nullable"] != true {
            problems.push(format!("{at}: null but not nullable"));
        }
        return;
    }
    let fits = match schema["type"].as_str() {
        Some("integer") => integer(value).is_some(),
        Some("number") => value.is_number(),
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        Some("array") => value.is_array(),
        Some("object") => value.is_object(),
        Some(other) => panic!("{at}: unknown schema type {other:?}"),
        None => true,
    };
    if !fits {
        problems.push(format!("{at}: {value} is not of type {}", schema["type"]));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        problems.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(number) = integer(value) {
        if integer(&schema["minimum"]).is_some_and(|min| number < min) {
            problems.push(format!("{at}: {number} is below {}", schema["minimum"]));
        }
        if integer(&schema["maximum"]).is_some_and(|max| number > max) {
            problems.push(format!("{at}: {number} is above {}", schema["maximum"]));
        }
    }
    if let (Some(pattern), Some(text)) = (schema["pattern"].as_str(), value.as_str())
        && !matches_pattern(pattern, text)
    {
        problems.push(format!("{at}: {text:?} does not match {pattern}"));
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            check(
                spec,
                &schema["items"],
                item,
                &format!("{at}[{i}]"),
                problems,
            );
        }
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().expect("required names are strings");
            if !object.contains_key(name) {
                problems.push(format!("{at}: required field {name} is missing"));
            }
        }
        for (name, field) in object {
            match schema["properties"].get(name) {
                Some(property) => check(spec, property, field, &format!("{at}.{name}"), problems),
                None if schema["additionalProperties"] == false => {
                    problems.push(format!("{at}: field {name} is not documented"));
                }
                None => {}
            }
        }
    }
}

fn assert_fits(spec: &Value, schema: &Value, value: &Value, what: &str) {
    let mut problems = Vec::new();
    check(spec, schema, value, "$", &mut problems);
    assert!(
        problems.is_empty(),
        "{what}: {value}\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_document_lists_exactly_the_cell_routes() {
    let spec = spec();
    let version = spec["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3."), "openapi {version:?}");

    let documented = operations(&spec);
    let routes: BTreeSet<(String, String)> = ldc_topology::USER_ROUTES
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let invented: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty() && invented.is_empty(),
        "routes missing from {SPEC}: {undocumented:?}; documented routes the cell does not have: {invented:?}"
    );

    let mut found = Vec::new();
    refs(&spec, &mut found);
    for reference in found {
        resolve(&spec, &json!({ "$ref": reference }));
    }

    for (method, path) in &documented {
        let method = method.to_lowercase();
        let operation = &spec["paths"][path][&method];
        let declared: BTreeSet<&str> = parameters(&spec, path, &method)
            .into_iter()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().expect("parameter name"))
            .collect();
        let in_template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(declared, in_template, "{method} {path}: path parameters");

        let responses = operation["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has no responses"));
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path}: no success response"
        );
        let mut examples = Vec::new();
        if let Some(body) = operation.get("requestBody") {
            examples.push(("request body", &body["content"]["application/json"]));
        }
        for (status, response) in responses {
            let media = &resolve(&spec, response)["content"]["application/json"];
            assert!(
                media["schema"].is_object(),
                "{method} {path} {status}: no JSON schema"
            );
            examples.push((status.as_str(), media));
        }
        for (what, media) in examples {
            if let Some(example) = media.get("example") {
                assert_fits(
                    &spec,
                    &media["schema"],
                    example,
                    &format!("{method} {path} {what} example"),
                );
            }
        }
    }
}

/// What the test substitutes for path parameters and `X-User-Id`.
struct Ids {
    user: String,
    friend: String,
    item: String,
    order: String,
}

async fn send(
    cluster: &Cluster,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Reply {
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(serde_json::to_vec(body).expect("JSON body"))
    };
    cluster
        .client
        .send(method.clone(), url, headers, body)
        .await
        .unwrap_or_else(|err| panic!("{method} {url}: {err}"))
}

/// The URL of a documented operation with real ids, and its headers.
fn request(
    spec: &Value,
    router: &str,
    path: &str,
    method: &str,
    ids: &Ids,
    with_query: bool,
) -> (String, Vec<(&'static str, String)>) {
    let mut url = format!("{router}{path}");
    let mut query = Vec::new();
    let mut headers = Vec::new();
    for parameter in parameters(spec, path, method) {
        let name = parameter["name"].as_str().expect("parameter name");
        match (parameter["in"].as_str(), name) {
            (Some("path"), "user_id") => url = url.replace("{user_id}", &ids.user),
            (Some("path"), "item_id") => url = url.replace("{item_id}", &ids.item),
            (Some("path"), "order_id") => url = url.replace("{order_id}", &ids.order),
            (Some("header"), "X-User-Id") => headers.push(("x-user-id", ids.user.clone())),
            (Some("query"), _) => {
                let example = &parameter["example"];
                assert!(
                    !example.is_null(),
                    "{method} {path}: query parameter {name} has no example"
                );
                query.push(format!("{name}={example}"));
            }
            (place, _) => {
                panic!("{method} {path}: the test cannot fill parameter {name} in {place:?}")
            }
        }
    }
    if with_query && !query.is_empty() {
        url = format!("{url}?{}", query.join("&"));
    }
    (url, headers)
}

/// A valid body for a documented request body schema, and one that differs from it.
fn bodies(schema_ref: &str, ids: &Ids, request_id: &str) -> (Value, Value) {
    let name = schema_ref.rsplit('/').next().unwrap_or_default();
    match name {
        "DepositBody" => (
            json!({"amount": 100, "request_id": request_id}),
            json!({"amount": 101, "request_id": request_id}),
        ),
        "TransferBody" => (
            json!({"to_user": ids.friend, "amount": 1, "request_id": request_id}),
            json!({"to_user": ids.friend, "amount": 2, "request_id": request_id}),
        ),
        "OrderBody" => (
            json!({"item_id": ids.item, "quantity": 1, "request_id": request_id}),
            json!({"item_id": ids.item, "quantity": 2, "request_id": request_id}),
        ),
        other => panic!("the test cannot make a {other} body"),
    }
}

/// The reply's status is documented for the operation, and its body fits the schema.
fn assert_documented(spec: &Value, operation: &Value, what: &str, reply: &Reply) {
    let status = reply.status.as_str();
    let response = operation["responses"]
        .get(status)
        .or_else(|| operation["responses"].get("default"))
        .unwrap_or_else(|| {
            panic!(
                "{what}: status {status} is not documented: {:?}",
                reply.body
            )
        });
    assert_eq!(reply.header("content-type"), "application/json", "{what}");
    let schema = &resolve(spec, response)["content"]["application/json"]["schema"];
    assert_fits(spec, schema, &reply.json(), &format!("{what} -> {status}"));
}

#[tokio::test]
async fn every_documented_operation_answers_through_the_router() {
    let spec = spec();
    let cluster = Cluster::builder().cells(2).extra(ITEMS).spawn().await;
    let router = cluster.router_url();
    let users = cluster.users_of("c1", 2);
    let mut ids = Ids {
        user: users[0].clone(),
        friend: users[1].clone(),
        item: "hot".to_owned(),
        order: String::new(),
    };

    // Money and one order first, so that orders/{order_id} exists.
    let user_url = format!("{router}/v1/users/{}", ids.user);
    let deposit = send(
        &cluster,
        Method::POST,
        &format!("{user_url}/deposits"),
        &[],
        &json!({"amount": 10_000, "request_id": "setup-deposit"}),
    )
    .await;
    assert_eq!(deposit.status, StatusCode::CREATED, "{:?}", deposit.body);
    let order = send(
        &cluster,
        Method::POST,
        &format!("{user_url}/orders"),
        &[],
        &json!({"item_id": ids.item, "quantity": 1, "request_id": "setup-order"}),
    )
    .await;
    assert_eq!(order.status, StatusCode::CREATED, "{:?}", order.body);
    ids.order = order.json()["order_id"]
        .as_str()
        .expect("order_id in the order reply")
        .to_owned();

    for (n, (method_name, path)) in operations(&spec).into_iter().enumerate() {
        let key = method_name.to_lowercase();
        let operation = &spec["paths"][&path][&key];
        let method = Method::from_bytes(method_name.as_bytes()).expect("HTTP method");
        let what = format!("{method_name} {path}");
        let (url, headers) = request(&spec, &router, &path, &key, &ids, true);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let request_id = format!("openapi-{n}");
        let (body, other_body) = match operation.get("requestBody") {
            Some(request_body) => {
                let media = &request_body["content"]["application/json"];
                let schema_ref = media["schema"]["$ref"]
                    .as_str()
                    .expect("body schema is a $ref");
                let (body, other) = bodies(schema_ref, &ids, &request_id);
                assert_fits(
                    &spec,
                    &media["schema"],
                    &body,
                    &format!("{what} request body"),
                );
                (body, other)
            }
            None => (Value::Null, Value::Null),
        };

        let reply = send(&cluster, method.clone(), &url, &headers, &body).await;
        let code = reply.json()["error"]["code"].clone();
        assert!(
            !(reply.status == StatusCode::NOT_FOUND && code == "not_found"),
            "{what}: the cell has no such route: {:?}",
            reply.body
        );
        assert_ne!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{what}: {:?}",
            reply.body
        );
        assert_documented(&spec, operation, &what, &reply);
        assert!(
            reply.status.is_success(),
            "{what}: {} {:?}",
            reply.status,
            reply.body
        );
        assert_eq!(
            reply.header("x-ldc-cell"),
            "c1",
            "{what}: routed to the user's cell"
        );
        assert!(!reply.header("x-ldc-slot").is_empty(), "{what}: X-LDC-Slot");
        assert!(
            !reply.header("x-ldc-epoch").is_empty(),
            "{what}: X-LDC-Epoch"
        );

        if !body.is_null() {
            // The documented idempotency rule: same request_id and body, same bytes...
            let again = send(&cluster, method.clone(), &url, &headers, &body).await;
            assert_eq!(again.status, reply.status, "{what}: replay status");
            assert_eq!(again.body, reply.body, "{what}: replay body");
            // ...and another body under the same request_id is refused.
            let reused = send(&cluster, method.clone(), &url, &headers, &other_body).await;
            assert_eq!(
                reused.status,
                StatusCode::CONFLICT,
                "{what}: {:?}",
                reused.body
            );
            assert_eq!(
                reused.json()["error"]["code"],
                "request_id_reused",
                "{what}"
            );
            assert_documented(
                &spec,
                operation,
                &format!("{what} (reused request_id)"),
                &reused,
            );
        }
    }
}

#[tokio::test]
async fn undocumented_methods_and_paths_are_refused() {
    let spec = spec();
    let cluster = Cluster::builder().cells(2).extra(ITEMS).spawn().await;
    let router = cluster.router_url();
    let ids = Ids {
        user: cluster.users_of("c1", 1)[0].clone(),
        friend: String::new(),
        item: "hot".to_owned(),
        order: "o1".to_owned(),
    };
    let documented = operations(&spec);
    let paths: BTreeSet<&String> = documented.iter().map(|(_, path)| path).collect();
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
    ];
    for path in paths {
        let key = documented
            .iter()
            .find(|(_, p)| p == path)
            .map(|(m, _)| m.to_lowercase())
            .expect("a documented method");
        let (url, headers) = request(&spec, &router, path, &key, &ids, false);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for method in &methods {
            if documented.contains(&(method.to_string(), path.clone())) {
                continue;
            }
            let reply = send(&cluster, method.clone(), &url, &headers, &Value::Null).await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {:?}",
                reply.body
            );
            if *method != Method::HEAD {
                assert_eq!(
                    reply.json()["error"]["code"],
                    "method_not_allowed",
                    "{method} {path}"
                );
            }
        }
    }

    let user = &ids.user;
    let balance = send(
        &cluster,
        Method::DELETE,
        &format!("{router}/v1/users/{user}/balance"),
        &[],
        &Value::Null,
    )
    .await;
    assert_eq!(
        balance.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{:?}",
        balance.body
    );
    assert_eq!(balance.json()["error"]["code"], "method_not_allowed");

    for method in [Method::GET, Method::POST] {
        let reply = send(
            &cluster,
            method.clone(),
            &format!("{router}/v1/users/{user}/nothing"),
            &[],
            &Value::Null,
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{method}: {:?}",
            reply.body
        );
        assert_eq!(reply.json()["error"]["code"], "not_found", "{method}");
    }
}
