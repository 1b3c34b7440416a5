//! `cell/openapi.json` against the limits the code enforces: each stated bound against
//! its constant or deploy-file default, the id patterns against the validators, and
//! the bearer requirement against every operation. (`tests/e2e/openapi.rs` checks the
//! routes and the replies of a live cell.)

use ldc_topology::{Limits, MAX_MONEY, is_valid_user_id};
use regex::Regex;
use serde_json::{Value, json};

use super::request::{check_amount, check_request_id, page_query};

fn document() -> Value {
    serde_json::from_str(include_str!("../../openapi.json")).expect("cell/openapi.json is JSON")
}

/// What the document holds at the JSON pointer `at`.
fn stated<'d>(doc: &'d Value, at: &str) -> &'d Value {
    doc.pointer(at)
        .unwrap_or_else(|| panic!("cell/openapi.json has nothing at {at}"))
}

fn assert_states(doc: &Value, at: &str, code: impl Into<Value>) {
    let (stated, code) = (stated(doc, at), code.into());
    assert!(
        *stated == code,
        "cell/openapi.json {at} states {stated}, the code uses {code}"
    );
}

fn integer(doc: &Value, at: &str) -> i64 {
    stated(doc, at)
        .as_i64()
        .unwrap_or_else(|| panic!("cell/openapi.json {at} is not an integer"))
}

/// The schema at `at` states the bounds `accepts` draws: its `minimum` and `maximum`
/// are accepted, the integers just outside them refused.
fn assert_bounds(doc: &Value, at: &str, accepts: impl Fn(i64) -> bool) {
    let min = integer(doc, &format!("{at}/minimum"));
    let max = integer(doc, &format!("{at}/maximum"));
    for (n, documented) in [(min - 1, false), (min, true), (max, true), (max + 1, false)] {
        assert_eq!(
            accepts(n),
            documented,
            "cell/openapi.json {at} allows {min} to {max}; the code {} {n}",
            if documented { "refuses" } else { "accepts" }
        );
    }
}

/// Every value in the document, each with its JSON pointer.
fn values(doc: &Value) -> Vec<(String, &Value)> {
    fn walk<'d>(value: &'d Value, at: String, found: &mut Vec<(String, &'d Value)>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    let key = key.replace('~', "~0").replace('/', "~1");
                    walk(v, format!("{at}/{key}"), found);
                }
            }
            Value::Array(values) => {
                for (i, v) in values.iter().enumerate() {
                    walk(v, format!("{at}/{i}"), found);
                }
            }
            _ => {}
        }
        found.push((at, value));
    }
    let mut found = Vec::new();
    walk(doc, String::new(), &mut found);
    found
}

/// Every string in the document, each with its JSON pointer.
fn strings(doc: &Value) -> Vec<(String, &str)> {
    values(doc)
        .into_iter()
        .filter_map(|(at, value)| Some((at, value.as_str()?)))
        .collect()
}

/// The default of a deploy-file key under `[limits]`, e.g. `limits.max_page`.
fn deploy_default(key: &str) -> Option<Value> {
    let defaults = serde_json::to_value(Limits::default()).expect("Limits serialize");
    defaults.get(key.strip_prefix("limits.")?).cloned()
}

#[test]
fn money_is_bounded_by_max_money() {
    let doc = document();
    let max = i64::try_from(MAX_MONEY).expect("MAX_MONEY fits an i64");
    for schema in ["Amount", "Balance", "SignedAmount"] {
        assert_states(&doc, &format!("/components/schemas/{schema}/maximum"), max);
    }
    assert_states(&doc, "/components/schemas/SignedAmount/minimum", -max);
    assert_bounds(&doc, "/components/schemas/Amount", |n| {
        check_amount(n).is_ok()
    });

    let power = Regex::new(r"10\^(\d+)").expect("regex");
    for (at, value) in strings(&doc) {
        for found in power.captures_iter(value) {
            let stated = 10_u64.checked_pow(found[1].parse().expect("an exponent"));
            assert!(
                stated == Some(MAX_MONEY),
                "cell/openapi.json {at} states {}, the code caps money at MAX_MONEY = {MAX_MONEY}",
                &found[0]
            );
        }
    }
}

#[test]
fn deploy_limits_are_stated_as_their_defaults() {
    let doc = document();
    for (at, key) in [
        ("/components/parameters/Limit/schema", "limits.max_page"),
        (
            "/components/schemas/OrderBody/properties/quantity",
            "limits.max_order_quantity",
        ),
        (
            "/components/responses/PayloadTooLarge",
            "limits.max_body_bytes",
        ),
    ] {
        assert_states(&doc, &format!("{at}/x-ldc-limit/key"), key);
    }

    let limits = values(&doc)
        .into_iter()
        .filter_map(|(at, value)| Some((at, value, value.get("x-ldc-limit")?)));
    for (at, value, limit) in limits {
        let key = limit["key"].as_str().unwrap_or_default();
        let default = deploy_default(key).unwrap_or_else(|| {
            panic!("cell/openapi.json {at}/x-ldc-limit names {key:?}, not a key of [limits]")
        });
        assert_states(&doc, &format!("{at}/x-ldc-limit/default"), default.clone());
        if value.get("maximum").is_some() {
            assert_states(&doc, &format!("{at}/maximum"), default);
        }
    }

    let prose = Regex::new(r"`(limits\.[a-z_]+)`[^`]*?\(default (\d+)\)").expect("regex");
    for (at, value) in strings(&doc) {
        for found in prose.captures_iter(value) {
            let code = deploy_default(&found[1])
                .unwrap_or_else(|| panic!("cell/openapi.json {at} names {}", &found[1]));
            assert!(
                found[2].parse::<u64>().ok() == code.as_u64(),
                "cell/openapi.json {at} states {} (default {}), the code's default is {code}",
                &found[1],
                &found[2]
            );
        }
    }

    let max_page = Limits::default().max_page;
    let page = "/components/parameters/Limit/schema";
    assert_bounds(&doc, page, |n| {
        page_query(Some(&format!("limit={n}")), max_page).is_ok()
    });
    let (default, _) = page_query(None, max_page).expect("no query is a valid page");
    assert_states(&doc, &format!("{page}/default"), default);
}

#[test]
fn id_patterns_agree_with_the_validators() {
    let doc = document();
    let validators = [
        ("UserId", is_valid_user_id as fn(&str) -> bool),
        ("RequestId", |id| check_request_id(id).is_ok()),
        // Item ids are checked when the deploy file is (config/src/validate.rs).
        ("ItemId", is_valid_user_id),
    ];
    for (schema, valid) in validators {
        let at = format!("/components/schemas/{schema}");
        // The patterns use only syntax that ECMA-262 and the regex crate read alike.
        let pattern = stated(&doc, &format!("{at}/pattern"))
            .as_str()
            .map(Regex::new)
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("cell/openapi.json {at}/pattern is not a regex"));
        let min = integer(&doc, &format!("{at}/minLength")) as usize;
        let max = integer(&doc, &format!("{at}/maxLength")) as usize;
        let shortest = "a".repeat(min);
        let longest: String = "Z9_-".chars().cycle().take(max).collect();
        for (keyword, length, id) in [("minLength", min, &shortest), ("maxLength", max, &longest)] {
            assert!(
                valid(id),
                "cell/openapi.json {at}/{keyword} states {length}, the code refuses {id:?}"
            );
        }
        let samples = [
            "alice", "Bob_2", "x-y", "-", "_", "", "a b", "a/b", "a.b", "a:b", "a%41", "é", "ａ",
            "a\n", "a\0",
        ];
        let too_long = format!("{longest}a");
        let too_short = "a".repeat(min.saturating_sub(1));
        for id in samples.into_iter().chain([too_long.as_str(), &too_short]) {
            let length = id.chars().count();
            let documented = pattern.is_match(id) && (min..=max).contains(&length);
            let (document_does, code_does) = if documented {
                ("accepts", "refuses")
            } else {
                ("refuses", "accepts")
            };
            assert!(
                documented == valid(id),
                "cell/openapi.json {at} ({pattern}, {min} to {max} characters) {document_does} \
                 {id:?}, the code {code_does} it"
            );
        }
    }
}

#[test]
fn every_operation_may_carry_a_bearer_token() {
    let doc = document();
    let scheme = "/components/securitySchemes/bearer";
    assert_states(&doc, &format!("{scheme}/type"), "http");
    assert_states(&doc, &format!("{scheme}/scheme"), "bearer");
    assert_states(&doc, &format!("{scheme}/bearerFormat"), "JWT");
    // Required with an `[auth]` table, not without one: both alternatives.
    let both = json!([{"bearer": []}, {}]);
    assert_states(&doc, "/security", both.clone());

    let paths = stated(&doc, "/paths")
        .as_object()
        .expect("paths is an object");
    let mut operations = 0;
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        // An operation is what has responses; `parameters` and `description` do not.
        for (method, operation) in item.iter().filter(|(_, v)| v.get("responses").is_some()) {
            operations += 1;
            let security = operation.get("security").unwrap_or(&doc["security"]);
            assert!(
                *security == both,
                "cell/openapi.json {method} {path}: security {security}, not {both}"
            );
        }
    }
    assert!(operations > 0, "cell/openapi.json documents no operation");
}
