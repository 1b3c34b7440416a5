//! The chaos workload: workers, each with users of its own, send a mix of deposits,
//! same-cell transfers, orders on a hot and a cold item, replays of earlier request
//! ids and reads through the router, and record every definitive answer. A write
//! without one (5xx, no response) is sent again, same request id and body, until it
//! gets one, so at the end every request id has exactly one known outcome.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde::Serialize;
use serde_json::json;

use super::check::{Kind, Write};
use super::schedule::Rng;
use crate::client::HttpClient;

/// Pause before a write without a definitive answer is sent again.
const RESEND_PAUSE: Duration = Duration::from_millis(25);

/// A user and the shard it lives in.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub shard: usize,
}

/// What every worker shares.
#[derive(Debug)]
pub struct Plan {
    pub router: String,
    /// Shard (cell) ids, by index.
    pub shards: Vec<String>,
    /// The hot and the cold item: id and unit price.
    pub hot: (String, i64),
    pub cold: (String, i64),
    /// The shard of the global zone's host, if the deployment has one: a buyer
    /// answered 503 `stock_unavailable` waited on it, not on their own shard.
    pub global_zone: Option<usize>,
    pub started: Instant,
    /// Set when the run's time is up: workers finish the write in hand and stop.
    pub stop: AtomicBool,
    /// When the write in hand still has no answer: give up (the verdict fails).
    pub give_up_at: Mutex<Option<Instant>>,
    pub sent: AtomicU64,
}

impl Plan {
    /// Milliseconds since the run started.
    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// One answer as the blast-radius report needs it.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// When the request left, and when its answer (or its failure) came.
    pub sent_ms: u64,
    pub at_ms: u64,
    /// The user's shard.
    pub shard: usize,
    /// For a 503 `stock_unavailable`: the global zone's shard, whose outage is the
    /// other way to it.
    pub global_zone: Option<usize>,
    /// As in `outcomes`: `503 cell_unavailable`, `none`, ...
    pub outcome: String,
}

/// Everything one worker saw.
#[derive(Debug, Default)]
pub struct Record {
    pub writes: Vec<Write>,
    /// `(user, request_id, what differed)`.
    pub replays: Vec<(String, String, String)>,
    /// Answers by outcome: `201`, `409 sold_out`, `503 cell_unavailable`, `none`.
    pub outcomes: BTreeMap<String, u64>,
    /// Every 5xx or missing answer, for the blast radius.
    pub failures: Vec<Failure>,
    /// Writes that never got a definitive answer.
    pub unresolved: Vec<String>,
}

/// A write, its body, and what it first answered (for replays).
struct Sent {
    write: Write,
    body: Bytes,
    answer: Bytes,
}

struct Reply {
    status: u16,
    body: Bytes,
    cell: String,
    epoch: u64,
}

/// Runs one worker over `users` until the plan stops; `seed` drives its choices.
pub async fn work(
    plan: Arc<Plan>,
    users: Vec<User>,
    peers: Arc<Vec<Vec<String>>>,
    seed: u64,
) -> Record {
    let client = HttpClient::new();
    let mut rng = Rng::new(seed);
    let mut record = Record::default();
    let mut sent: Vec<Sent> = Vec::new();
    let mut seq = 0u64;
    while !plan.stop.load(Ordering::Relaxed) && !users.is_empty() {
        let user = &users[rng.below(users.len() as u64) as usize];
        let roll = rng.below(100);
        if roll < 15 {
            let url = format!("{}/v1/users/{}/balance", plan.router, user.id);
            let sent_ms = plan.elapsed_ms();
            let reply = send(&client, &plan, Method::GET, &url, Bytes::new()).await;
            tally(&mut record, &plan, user.shard, sent_ms, reply.as_ref());
            continue;
        }
        if roll < 25 && !sent.is_empty() {
            let earlier = &sent[rng.below(sent.len() as u64) as usize];
            replay(&client, &plan, earlier, &users, &mut record).await;
            continue;
        }
        seq += 1;
        let request_id = format!("r{seq}");
        let (kind, path, body) = match roll {
            25..=54 => {
                let amount = 1 + rng.below(1_000) as i64;
                let body = json!({"amount": amount, "request_id": request_id});
                (Kind::Deposit { amount }, "deposits", body)
            }
            55..=74 => {
                let others = &peers[user.shard];
                let to_user = others[rng.below(others.len() as u64) as usize].clone();
                if to_user == user.id {
                    continue;
                }
                let amount = 1 + rng.below(50) as i64;
                let body = json!({"to_user": to_user, "amount": amount, "request_id": request_id});
                (Kind::Transfer { to_user, amount }, "transfers", body)
            }
            _ => {
                let (item, price) = if roll < 90 { &plan.hot } else { &plan.cold };
                let quantity = 1 + rng.below(2) as u32;
                let body = json!({"item_id": item, "quantity": quantity, "request_id": request_id});
                let kind = Kind::Order {
                    item: item.clone(),
                    quantity,
                    amount: price * i64::from(quantity),
                };
                (kind, "orders", body)
            }
        };
        let url = format!("{}/v1/users/{}/{path}", plan.router, user.id);
        let body = Bytes::from(body.to_string());
        let Some(reply) =
            until_definitive(&client, &plan, &url, &body, user.shard, &mut record).await
        else {
            record.unresolved.push(format!("{} {request_id}", user.id));
            break;
        };
        let order_id = (reply.status == 201 && matches!(kind, Kind::Order { .. }))
            .then(|| serde_json::from_slice::<serde_json::Value>(&reply.body).ok())
            .flatten()
            .and_then(|v| v["order_id"].as_str().map(str::to_owned));
        let write = Write {
            user: user.id.clone(),
            request_id,
            kind,
            status: reply.status,
            cell: reply.cell,
            epoch: reply.epoch,
            shard: plan.shards[user.shard].clone(),
            order_id,
        };
        // Orders are replayed only when confirmed: a refused order's replay meets the
        // stock cache's sold-out fast path, which does not read the ledger (the API's
        // "Idempotent writes" documents this).
        if reply.status == 201 || !matches!(write.kind, Kind::Order { .. }) {
            sent.push(Sent {
                write: write.clone(),
                body,
                answer: reply.body,
            });
        }
        record.writes.push(write);
    }
    record
}

/// Sends a write until it has a definitive answer (2xx or 4xx), or gives up.
async fn until_definitive(
    client: &HttpClient,
    plan: &Plan,
    url: &str,
    body: &Bytes,
    shard: usize,
    record: &mut Record,
) -> Option<Reply> {
    loop {
        let sent_ms = plan.elapsed_ms();
        let reply = send(client, plan, Method::POST, url, body.clone()).await;
        tally(record, plan, shard, sent_ms, reply.as_ref());
        if let Some(reply) = reply.filter(|r| (200..500).contains(&r.status) && r.status != 408) {
            return Some(reply);
        }
        let give_up = *plan.give_up_at.lock().unwrap_or_else(|e| e.into_inner());
        if give_up.is_some_and(|at| Instant::now() >= at) {
            return None;
        }
        tokio::time::sleep(RESEND_PAUSE).await;
    }
}

/// Sends an earlier write again; a different answer is a violation.
async fn replay(
    client: &HttpClient,
    plan: &Plan,
    earlier: &Sent,
    users: &[User],
    record: &mut Record,
) {
    let write = &earlier.write;
    let path = match write.kind {
        Kind::Deposit { .. } => "deposits",
        Kind::Transfer { .. } => "transfers",
        Kind::Order { .. } => "orders",
    };
    let shard = users
        .iter()
        .find(|u| u.id == write.user)
        .map_or(0, |u| u.shard);
    let url = format!("{}/v1/users/{}/{path}", plan.router, write.user);
    let Some(reply) = until_definitive(client, plan, &url, &earlier.body, shard, record).await
    else {
        return;
    };
    if reply.status != write.status || reply.body != earlier.answer {
        record.replays.push((
            write.user.clone(),
            write.request_id.clone(),
            format!(
                "first {} {}, then {} {}",
                write.status,
                String::from_utf8_lossy(&earlier.answer),
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ),
        ));
    }
}

async fn send(
    client: &HttpClient,
    plan: &Plan,
    method: Method,
    url: &str,
    body: Bytes,
) -> Option<Reply> {
    plan.sent.fetch_add(1, Ordering::Relaxed);
    let reply = client.send(method, url, &[], body).await.ok()?;
    Some(Reply {
        status: reply.status.as_u16(),
        cell: reply.header("x-ldc-cell").to_owned(),
        epoch: reply.header("x-ldc-epoch").parse().unwrap_or(0),
        body: reply.body,
    })
}

/// Counts an answer by outcome, and remembers failures for the blast radius.
fn tally(record: &mut Record, plan: &Plan, shard: usize, sent_ms: u64, reply: Option<&Reply>) {
    let mut code = String::new();
    let outcome = match reply {
        None => "none".to_owned(),
        Some(r) if r.status < 400 => r.status.to_string(),
        Some(r) => {
            code = serde_json::from_slice::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            format!("{} {code}", r.status)
        }
    };
    if reply.is_none_or(|r| r.status >= 500) {
        record.failures.push(Failure {
            sent_ms,
            at_ms: plan.elapsed_ms(),
            shard,
            global_zone: plan.global_zone.filter(|_| code == "stock_unavailable"),
            outcome: outcome.clone(),
        });
    }
    *record.outcomes.entry(outcome).or_default() += 1;
}
