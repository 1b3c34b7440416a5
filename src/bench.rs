//! `ldc bench`: a flash-sale load generator. It funds a set of users, then has
//! `concurrency` workers place orders on one item for a fixed time, through a router
//! or straight at one cell, and reports throughput and latency by outcome.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, StatusCode};
use ldc_topology::{EXIT_USAGE, Topology};
use tokio::task::JoinSet;

use crate::client::HttpClient;

/// Longest run `ldc bench` accepts: latencies are kept in memory until the report.
const MAX_DURATION: Duration = Duration::from_secs(600);

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Deploy file of the cluster under test.
    #[arg(long, default_value = "config/local.toml")]
    config: PathBuf,
    /// Send straight to this cell (with users it owns) instead of the first router.
    #[arg(long)]
    cell: Option<String>,
    /// Item to order; the deploy file's first item when absent.
    #[arg(long)]
    item: Option<String>,
    /// Distinct users placing orders.
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds of ordering.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Units per order.
    #[arg(long, default_value_t = 1)]
    quantity: u32,
    /// Minor units deposited for each user before ordering.
    #[arg(long, default_value_t = 1_000_000_000)]
    deposit: i64,
}

/// What happened to one order, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Confirmed,
    SoldOut,
    Declined(u16),
    Failed(u16),
    NoResponse,
}

impl Outcome {
    fn of(status: Result<StatusCode, ()>) -> Self {
        match status {
            Ok(StatusCode::CREATED) => Self::Confirmed,
            Ok(StatusCode::CONFLICT) => Self::SoldOut,
            Ok(s) if s.is_client_error() => Self::Declined(s.as_u16()),
            Ok(s) => Self::Failed(s.as_u16()),
            Err(()) => Self::NoResponse,
        }
    }

    fn label(self) -> String {
        match self {
            Self::Confirmed => "confirmed (201)".to_owned(),
            Self::SoldOut => "sold_out (409)".to_owned(),
            Self::Declined(s) => format!("declined ({s})"),
            Self::Failed(s) => format!("failed ({s})"),
            Self::NoResponse => "no response".to_owned(),
        }
    }
}

/// Latencies in microseconds, by outcome.
type Samples = BTreeMap<Outcome, Vec<u32>>;

pub async fn bench(args: BenchArgs) -> ExitCode {
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("ldc bench: {message}");
            code
        }
    }
}

fn usage(message: impl Into<String>) -> (ExitCode, String) {
    (ExitCode::from(EXIT_USAGE as u8), message.into())
}

async fn run(args: BenchArgs) -> Result<(), (ExitCode, String)> {
    let topology = Topology::load(&args.config).map_err(|err| usage(err.to_string()))?;
    let duration = Duration::from_secs(args.duration_s);
    if duration.is_zero() || duration > MAX_DURATION || args.concurrency == 0 || args.users == 0 {
        return Err(usage(format!(
            "--duration-s must be 1..={}, --concurrency and --users at least 1",
            MAX_DURATION.as_secs()
        )));
    }
    let item = match &args.item {
        Some(item) => item.clone(),
        None => topology
            .deploy()
            .items
            .first()
            .map(|i| i.id.clone())
            .ok_or_else(|| usage("the deploy file has no [[items]]"))?,
    };
    let (target, cell) = match &args.cell {
        Some(id) => {
            let index = topology
                .cell_index(id)
                .ok_or_else(|| usage(format!("no cell {id:?}")))?;
            (
                format!("http://{}", topology.cells()[index].advertise),
                Some(index),
            )
        }
        None => {
            let router = topology
                .routers()
                .first()
                .ok_or_else(|| usage("the deploy file has no router; use --cell"))?;
            (format!("http://{}", router.listen), None)
        }
    };
    let users: Vec<String> = (0..)
        .map(|i| format!("bench-u{i}"))
        .filter(|u| cell.is_none_or(|c| topology.route(u).1 == c))
        .take(args.users)
        .collect();
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    println!(
        "ldc bench: {} users, {} workers, {}s of orders for {item:?} (x{}) at {target}; run {run_id}",
        users.len(),
        args.concurrency,
        duration.as_secs(),
        args.quantity
    );
    // An operator's client: straight to a cell it goes as the deployment's router.
    let client = HttpClient::for_deployment(&topology).map_err(usage)?;
    fund(&client, &target, &users, args.deposit, args.concurrency).await?;

    let users = Arc::new(users);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, target, users, next, done, counts) = (
            client.clone(),
            target.clone(),
            users.clone(),
            next.clone(),
            done.clone(),
            counts.clone(),
        );
        let body_of = {
            let item = item.clone();
            let quantity = args.quantity;
            move |n: u64| {
                Bytes::from(
                    serde_json::json!({
                        "item_id": item,
                        "quantity": quantity,
                        "request_id": format!("b{run_id}-{n}"),
                    })
                    .to_string(),
                )
            }
        };
        workers.spawn(async move {
            let mut samples = Samples::new();
            while !done.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let user = &users[(n % users.len() as u64) as usize];
                let url = format!("{target}/v1/users/{user}/orders");
                let sent = Instant::now();
                let reply = client.send(Method::POST, &url, &[], body_of(n)).await;
                let micros = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                let outcome = Outcome::of(reply.map(|r| r.status).map_err(|_| ()));
                let slot = match outcome {
                    Outcome::Confirmed => 0,
                    Outcome::SoldOut => 1,
                    _ => 2,
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
                samples.entry(outcome).or_default().push(micros);
            }
            samples
        });
    }
    let mut last = (Instant::now(), 0u64);
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1).min(duration.saturating_sub(started.elapsed())))
            .await;
        let [confirmed, sold_out, other] = [0, 1, 2].map(|i| counts[i].load(Ordering::Relaxed));
        let total = confirmed + sold_out + other;
        let rate = (total - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), total);
        println!(
            "  {:>4.1}s  {rate:>9.0} req/s   confirmed {confirmed}  sold_out {sold_out}  other {other}",
            started.elapsed().as_secs_f64()
        );
    }
    done.store(true, Ordering::Relaxed);
    let mut samples = Samples::new();
    for worker in workers.join_all().await {
        for (outcome, mut latencies) in worker {
            samples.entry(outcome).or_default().append(&mut latencies);
        }
    }
    report(&samples, started.elapsed());
    Ok(())
}

/// Deposits `amount` for every user (idempotent per run: one request id per user).
async fn fund(
    client: &HttpClient,
    target: &str,
    users: &[String],
    amount: i64,
    concurrency: usize,
) -> Result<(), (ExitCode, String)> {
    let started = Instant::now();
    for chunk in users.chunks(concurrency) {
        let mut deposits = JoinSet::new();
        for user in chunk {
            let (client, url) = (client.clone(), format!("{target}/v1/users/{user}/deposits"));
            let body = serde_json::json!({"amount": amount, "request_id": "bench-funding"});
            deposits.spawn(async move {
                client
                    .send(Method::POST, &url, &[], Bytes::from(body.to_string()))
                    .await
            });
        }
        for reply in deposits.join_all().await {
            match reply {
                Ok(reply) if reply.status == StatusCode::CREATED => {}
                Ok(reply) => {
                    return Err((
                        ExitCode::FAILURE,
                        format!(
                            "deposit refused: {} {}",
                            reply.status,
                            String::from_utf8_lossy(&reply.body)
                        ),
                    ));
                }
                Err(err) => return Err((ExitCode::FAILURE, format!("deposit failed: {err}"))),
            }
        }
    }
    println!(
        "ldc bench: funded {} users in {:.2}s",
        users.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn report(samples: &Samples, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    let total: usize = samples.values().map(Vec::len).sum();
    println!(
        "ldc bench: {total} orders in {seconds:.2}s = {:.0} req/s",
        total as f64 / seconds
    );
    println!(
        "  {:<18} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "outcome", "count", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (outcome, latencies) in samples {
        let mut sorted = latencies.clone();
        sorted.sort_unstable();
        let at = |q: f64| {
            let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
            f64::from(sorted[index]) / 1000.0
        };
        println!(
            "  {:<18} {:>9} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            outcome.label(),
            sorted.len(),
            sorted.len() as f64 / seconds,
            at(0.5),
            at(0.9),
            at(0.99),
            at(1.0)
        );
    }
}
