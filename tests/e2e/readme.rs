//! The README's curl session, run as written against `config/local.toml` on free
//! ports, each answer checked against the output the README shows.
//!
//! How the README's output is read:
//! - With `-i`, the first line is the status line and must be the reply's; the
//!   header lines after it must each be in the reply with that value (headers the
//!   README leaves out, such as `content-length`, may be there too); after a blank
//!   line comes the body. No body shown means the reply has none.
//! - The body is JSON, compared as JSON (key order aside), every value exactly:
//!   on a fresh cluster of `config/local.toml` ids, slots, epochs, amounts,
//!   balances and lease sizes are all deterministic.
//! - `...` in the body may stand for members of an object, in any place among
//!   them (`{"a":1,...}`, `{...}`: more keys are there), or for the last elements
//!   of an array (`[{"a":1},...]`, `[...]`); it is allowed nowhere else.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::Method;
use ldc::client::{HttpClient, Reply};
use ldc_topology::Topology;
use serde_json::Value;

use crate::support::Cluster;

/// The README's stand-in for members or elements it leaves out.
const ELLIPSIS: &str = "...";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// One `$ curl ...` line and the output the README shows under it.
#[derive(Debug)]
struct Step {
    command: String,
    output: Vec<String>,
}

/// The steps of the README's "A curl session" console block.
fn session(readme: &str) -> Vec<Step> {
    let section = readme
        .split_once("\n## A curl session\n")
        .expect("README has a \"## A curl session\" section")
        .1;
    let block = section
        .split_once("```console\n")
        .expect("the section has a console block")
        .1
        .split_once("\n```")
        .expect("the console block ends")
        .0;
    let mut steps: Vec<Step> = Vec::new();
    for line in block.lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: command.to_owned(),
                output: Vec::new(),
            });
        } else {
            let step = steps.last_mut().expect("the block starts with a command");
            step.output.push(line.to_owned());
        }
    }
    for step in &mut steps {
        while step.output.last().is_some_and(|line| line.is_empty()) {
            step.output.pop();
        }
    }
    steps
}

/// The words of a shell command, quotes removed, up to a `#` comment. `$(cat
/// FILE)` is replaced by what `cat` returns for it; no other expansion is
/// supported.
fn words(command: &str, cat: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = command.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some('#') => return words,
            Some(_) => {}
        }
        let mut word = String::new();
        let mut quote = None;
        while let Some(c) = chars.next() {
            match (quote, c) {
                (None, c) if c.is_whitespace() => break,
                (None, '\'' | '"') => quote = Some(c),
                (Some(open), c) if c == open => quote = None,
                (None | Some('"'), '$') => {
                    assert_eq!(chars.next(), Some('('), "{command}: only $(cat FILE)");
                    let inner: String = chars.by_ref().take_while(|&c| c != ')').collect();
                    let file = inner
                        .strip_prefix("cat ")
                        .unwrap_or_else(|| panic!("{command}: only $(cat FILE)"));
                    word += cat(file.trim()).trim_end();
                }
                (None | Some('"'), '\\' | '`') => panic!("{command}: {c} is not supported"),
                (_, c) => word.push(c),
            }
        }
        assert!(quote.is_none(), "{command}: unclosed quote");
        words.push(word);
    }
}

/// A curl command line, as the flags the README uses read it.
#[derive(Debug)]
struct Curl {
    include: bool,
    method: Method,
    headers: Vec<(String, String)>,
    body: Option<String>,
    url: String,
}

fn curl(words: &[String]) -> Curl {
    assert_eq!(words.first().map(String::as_str), Some("curl"), "{words:?}");
    let mut curl = Curl {
        include: false,
        method: Method::GET,
        headers: Vec::new(),
        body: None,
        url: String::new(),
    };
    let mut method = None;
    let mut args = words[1..].iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{words:?}: {arg} needs a value"))
                .clone()
        };
        match arg.as_str() {
            "-i" => curl.include = true,
            "-X" => method = Some(value().parse().expect("a method")),
            "-H" => {
                let header = value();
                let (name, value) = header.split_once(':').expect("-H 'name: value'");
                curl.headers
                    .push((name.trim().to_owned(), value.trim().to_owned()));
            }
            "-d" => curl.body = Some(value()),
            flag if flag.starts_with('-') => panic!("{words:?}: curl {flag} is not supported"),
            url => {
                assert!(curl.url.is_empty(), "{words:?}: two URLs");
                curl.url = url.to_owned();
            }
        }
    }
    if curl.body.is_some() {
        // What curl does with -d.
        curl.method = Method::POST;
        if !curl
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            curl.headers.push((
                "content-type".to_owned(),
                "application/x-www-form-urlencoded".to_owned(),
            ));
        }
    }
    if let Some(method) = method {
        curl.method = method;
    }
    curl
}

/// Each address of `config/local.toml` and where the same listener is in `cluster`.
fn addresses(local: &Topology, cluster: &Cluster) -> HashMap<SocketAddr, SocketAddr> {
    let mut map = HashMap::new();
    for cell in local.cells() {
        let running = cluster.proc(&cell.id);
        map.insert(cell.listen, running.listen);
        map.insert(cell.admin, running.admin);
        map.insert(cell.peer, running.peer.expect("a cell's peer listener"));
    }
    for router in local.routers() {
        let running = cluster.proc(&router.id);
        map.insert(router.listen, running.listen);
        map.insert(router.admin, running.admin);
    }
    map
}

/// `url` with its `ip:port` moved to where that listener runs.
fn moved(url: &str, addresses: &HashMap<SocketAddr, SocketAddr>) -> String {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{url}: not http://"));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let address: SocketAddr = authority
        .parse()
        .unwrap_or_else(|_| panic!("{url}: not http://ip:port"));
    let running = addresses
        .get(&address)
        .unwrap_or_else(|| panic!("{url}: no listener of config/local.toml is at {address}"));
    format!("http://{running}{path}")
}

/// The README's JSON with its `...` made JSON: a member `"...": true` of an
/// object, a last element `"..."` of an array. Any other `...` stays, and fails
/// to parse.
fn pattern(text: &str) -> Value {
    let member = "\"...\":true";
    let json = text
        .replace("{...}", &format!("{{{member}}}"))
        .replace("{...,", &format!("{{{member},"))
        .replace(",...,", &format!(",{member},"))
        .replace(",...}", &format!(",{member}}}"))
        .replace(",...]", ",\"...\"]")
        .replace("[...]", "[\"...\"]");
    serde_json::from_str(&json).unwrap_or_else(|err| {
        panic!("{text}: not JSON, or `...` where the rules of readme.rs do not allow it: {err}")
    })
}

/// Where `actual` differs from `pattern`, as `path: why` lines.
fn mismatches(path: &str, pattern: &Value, actual: &Value, found: &mut Vec<String>) {
    match (pattern, actual) {
        (Value::Object(want), Value::Object(have)) => {
            let open = want.get(ELLIPSIS) == Some(&Value::Bool(true));
            for (key, value) in want.iter().filter(|(key, _)| *key != ELLIPSIS) {
                match have.get(key) {
                    Some(got) => mismatches(&format!("{path}.{key}"), value, got, found),
                    None => found.push(format!("{path}.{key}: missing")),
                }
            }
            if !open {
                for key in have.keys().filter(|key| !want.contains_key(*key)) {
                    found.push(format!("{path}.{key}: not in the README ({})", have[key]));
                }
            }
        }
        (Value::Array(want), Value::Array(have)) => {
            let (want, open) = match want.split_last() {
                Some((last, head)) if last == ELLIPSIS => (head, true),
                _ => (&want[..], false),
            };
            if have.len() < want.len() || (!open && have.len() != want.len()) {
                found.push(format!(
                    "{path}: {} elements, the README shows {}",
                    have.len(),
                    want.len()
                ));
            }
            for (i, (value, got)) in want.iter().zip(have).enumerate() {
                mismatches(&format!("{path}[{i}]"), value, got, found);
            }
        }
        _ if pattern == actual => {}
        _ => found.push(format!("{path}: {actual}, the README says {pattern}")),
    }
}

/// Where `reply` differs from what the README shows for `curl`.
fn differences(curl: &Curl, output: &[String], reply: &Reply) -> Vec<String> {
    let mut found = Vec::new();
    let mut lines = output.iter();
    if curl.include {
        let status = format!(
            "HTTP/1.1 {} {}",
            reply.status.as_u16(),
            reply.status.canonical_reason().unwrap_or_default()
        );
        let shown = lines.next().map(String::as_str).unwrap_or_default();
        if shown != status {
            found.push(format!("status line: {status}, the README says {shown}"));
        }
        for line in lines.by_ref().take_while(|line| !line.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("{line:?}: not a header line"));
            let (name, value) = (name.trim(), value.trim());
            let got = reply.header(name);
            if got != value {
                found.push(format!("{name}: {got:?}, the README says {value:?}"));
            }
        }
    }
    let shown: Vec<&str> = lines.map(String::as_str).collect();
    let body = String::from_utf8_lossy(&reply.body);
    if shown.is_empty() {
        if !body.is_empty() {
            found.push(format!("body: {body}, the README shows none"));
        }
        return found;
    }
    let actual: Value = match serde_json::from_slice(&reply.body) {
        Ok(actual) => actual,
        Err(_) => {
            found.push(format!("body: {body:?} is not JSON"));
            return found;
        }
    };
    mismatches("body", &pattern(&shown.join("\n")), &actual, &mut found);
    found
}

#[tokio::test]
async fn the_readme_curl_session_answers_as_written() {
    let readme = std::fs::read_to_string(repo_file("README.md")).expect("README.md");
    let local_path = repo_file("config/local.toml");
    let local_text = std::fs::read_to_string(&local_path).expect("config/local.toml");
    let local = Topology::load(&local_path).expect("config/local.toml is valid");
    let cluster = Cluster::builder().deploy_file(&local_text).spawn().await;
    let addresses = addresses(&local, &cluster);
    // The README runs from the repository, where `data/` is local.toml's data_dir.
    let data = cluster.topology().deploy().data_dir.clone();
    let cat = |file: &str| {
        let path = file
            .strip_prefix("data/")
            .map(|inside| data.join(inside))
            .unwrap_or_else(|| panic!("$(cat {file}): only files under data/"));
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    };
    // Like curl: plain HTTP, no credentials but the ones on the command line.
    let client = HttpClient::new();
    let steps = session(&readme);
    assert!(
        steps.len() >= 5,
        "the README's session has {} steps",
        steps.len()
    );
    let mut wrong = Vec::new();
    for step in &steps {
        let curl = curl(&words(&step.command, &cat));
        let url = moved(&curl.url, &addresses);
        let headers: Vec<(&str, &str)> = curl
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let body = Bytes::from(curl.body.clone().unwrap_or_default());
        let reply = client
            .send(curl.method.clone(), &url, &headers, body)
            .await
            .unwrap_or_else(|err| panic!("$ {}: {err}", step.command));
        let found = differences(&curl, &step.output, &reply);
        if !found.is_empty() {
            wrong.push(format!(
                "$ {}\n  answered {} {}\n  {}",
                step.command,
                reply.status,
                String::from_utf8_lossy(&reply.body),
                found.join("\n  ")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "the README's curl session is not what the cluster answers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_session_reader_follows_the_rules_it_states() {
    let cat = |file: &str| format!("<{file}>\n");
    assert_eq!(
        words(
            r#"curl -H "Authorization: Bearer $(cat data/t)" -d '{"a":1}' http://x/y   # why"#,
            &cat
        ),
        [
            "curl",
            "-H",
            "Authorization: Bearer <data/t>",
            "-d",
            r#"{"a":1}"#,
            "http://x/y"
        ]
    );
    let actual = serde_json::json!({"a": 1, "list": [{"b": 2, "c": 3}, {}], "d": 4});
    let mut found = Vec::new();
    for open in [
        r#"{"a":1,"list":[{"b":2,...},...],...}"#,
        r#"{...,"list":[{...}, {}],"d":4}"#,
        r#"{"a":1,...,"d":4}"#,
        r#"{"list":[...],...}"#,
    ] {
        mismatches("body", &pattern(open), &actual, &mut found);
        assert!(found.is_empty(), "{open}: {found:?}");
    }
    // An array's `...` is its own: `[{..., ...}]` is one element.
    mismatches(
        "body",
        &pattern(r#"{"a":1,"list":[{"b":2,...}],"d":4}"#),
        &actual,
        &mut found,
    );
    assert_eq!(found, ["body.list: 2 elements, the README shows 1"]);
    found.clear();
    let closed = pattern(r#"{"a":1,"list":[{"b":2}]}"#);
    mismatches("body", &closed, &actual, &mut found);
    assert_eq!(
        found,
        [
            "body.list: 2 elements, the README shows 1",
            "body.list[0].c: not in the README (3)",
            "body.d: not in the README (4)",
        ]
    );
}
