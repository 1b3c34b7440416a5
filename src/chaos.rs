//! `ldc chaos`: kills, restarts, stops and continues cells on a seeded schedule while
//! a workload runs through the router, then heals everything and checks the
//! invariants of docs/DESIGN.md against the workload's record of every
//! acknowledged reply and against each cell's `/admin/audit`. Exit code 0 only
//! when all hold.

mod check;
mod report;
mod schedule;
mod workload;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ldc_topology::{EXIT_USAGE, Topology};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

use crate::client::HttpClient;
use check::{Final, Violation, Write, check};
use report::{Done, Report, RouteChange};
use schedule::{Action, Weights, plan};
use workload::{Plan, User};

/// Bound on healing: every cell ready and serving its own shard again.
const HEAL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the router's view is sampled for the timeline.
const MONITOR_EVERY: Duration = Duration::from_millis(10);
/// Longest run accepted: the record is kept in memory.
const MAX_DURATION: Duration = Duration::from_secs(3_600);
/// Shortest mean time between faults: a restart alone takes longer.
const MIN_GAP: Duration = Duration::from_millis(100);
/// Most workers, and most users per worker.
const MAX_WORKERS: usize = 1_024;

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Deploy file of the cluster.
    #[arg(long, default_value = "config/local.toml")]
    config: PathBuf,
    /// Seed of the fault schedule and of the workload's choices; random when absent.
    #[arg(long)]
    seed: Option<u64>,
    /// How long faults are injected: `60s`, `2m`, `1500ms`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Relative weights of the fault actions.
    #[arg(long, default_value = "kill=3,restart=4,stop=1,cont=2")]
    actions: Weights,
    /// Mean time between two faults.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    gap: Duration,
    /// Use a running cluster (its deploy file must name the real ports) instead of
    /// starting one with `ldc up`.
    #[arg(long)]
    attach: bool,
    /// Concurrent workload workers, each with users of its own.
    #[arg(long, default_value_t = 16)]
    workers: usize,
    #[arg(long, default_value_t = 4)]
    users_per_worker: usize,
    /// Also write the report here, as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print the fault schedule of the seed and exit.
    #[arg(long)]
    plan: bool,
}

/// `60s`, `2m`, `1500ms`, or a number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |at| text.split_at(at));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected e.g. 60s, 2m, 1500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        // Saturates: a huge value is then refused as longer than the longest run.
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(format!("{text:?}: units are ms, s, m")),
    }
}

pub async fn chaos(args: ChaosArgs) -> ExitCode {
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("ldc chaos: seed {seed}");
    let topology = match Topology::load(&args.config) {
        Ok(topology) => topology,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(EXIT_USAGE as u8);
        }
    };
    if args.duration > MAX_DURATION
        || args.duration.is_zero()
        || args.gap < MIN_GAP
        || !(1..=MAX_WORKERS).contains(&args.workers)
        || !(1..=MAX_WORKERS).contains(&args.users_per_worker)
    {
        eprintln!(
            "ldc chaos: --duration must be from 1 ms to 1 h, --gap at least {} ms, \
             --workers and --users-per-worker from 1 to {MAX_WORKERS}",
            MIN_GAP.as_millis()
        );
        return ExitCode::from(EXIT_USAGE as u8);
    }
    if topology.routers().is_empty() || topology.deploy().items.is_empty() {
        eprintln!(
            "{}: chaos needs a router and at least one item",
            args.config.display()
        );
        return ExitCode::from(EXIT_USAGE as u8);
    }
    let cells: Vec<String> = topology.cells().iter().map(|c| c.id.clone()).collect();
    let steps = plan(seed, args.duration, args.gap, &args.actions, &cells);
    if args.plan {
        for step in &steps {
            println!("{:>8} ms  {:<7} {}", step.at_ms, step.action, step.cell);
        }
        return ExitCode::SUCCESS;
    }
    let mut up = None;
    let topology = if args.attach {
        topology
    } else {
        match start_cluster(&args.config, &topology).await {
            Ok((child, resolved)) => {
                up = Some(child);
                resolved
            }
            Err(why) => {
                eprintln!("ldc chaos: cannot start the cluster: {why}");
                return ExitCode::FAILURE;
            }
        }
    };
    let report = run(&topology, seed, &args, steps).await;
    if let Some(mut up) = up {
        if let Some(pid) = up.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        let _ = tokio::time::timeout(Duration::from_secs(60), up.wait()).await;
    }
    let report = match report {
        Ok(report) => report,
        Err(why) => {
            eprintln!("ldc chaos: {why}");
            return ExitCode::FAILURE;
        }
    };
    report.print();
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
        if let Err(err) = std::fs::write(path, json) {
            eprintln!("ldc chaos: cannot write {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Starts `ldc up` on the deploy file; returns it and the topology with real ports.
async fn start_cluster(config: &Path, topology: &Topology) -> Result<(Child, Topology), String> {
    let exe = std::env::current_exe().map_err(|err| err.to_string())?;
    let deploy = topology.deploy();
    std::fs::create_dir_all(&deploy.data_dir).map_err(|err| err.to_string())?;
    let log_path = deploy.data_dir.join("chaos-up.log");
    let log =
        std::fs::File::create(&log_path).map_err(|err| format!("{}: {err}", log_path.display()))?;
    let mut child = Command::new(exe)
        .arg("up")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| err.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("ldc up: ready") {
                return true;
            }
        }
        false
    };
    match tokio::time::timeout(HEAL_TIMEOUT, ready).await {
        Ok(true) => {}
        _ => {
            return Err(format!(
                "`ldc up` did not get ready; see {}",
                log_path.display()
            ));
        }
    }
    // Keep reading, or `ldc up` blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let resolved = deploy
        .data_dir
        .join(format!("{}.resolved.toml", deploy.name));
    let path = if resolved.exists() {
        resolved
    } else {
        config.to_owned()
    };
    let topology = Topology::load(&path).map_err(|err| err.to_string())?;
    println!(
        "ldc chaos: started a cluster with `ldc up`; its log: {}",
        log_path.display()
    );
    Ok((child, topology))
}

async fn run(
    topology: &Topology,
    seed: u64,
    args: &ChaosArgs,
    steps: Vec<schedule::Step>,
) -> Result<Report, String> {
    let client = HttpClient::for_deployment(topology).map_err(|err| err.to_string())?;
    let router = &topology.routers()[0];
    let cells = topology.cells();
    let shard_ids: Vec<String> = cells.iter().map(|c| c.id.clone()).collect();
    let items = &topology.deploy().items;
    let hot = &items[0];
    let cold = items.get(1).unwrap_or(hot);

    // Users of this run only, so earlier runs' data cannot blur the books.
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() % 1_000_000);
    let total = args.workers * args.users_per_worker;
    let users: Vec<User> = (0..total)
        .map(|i| {
            let id = format!("chaos{run_id}-u{i}");
            let shard = topology.route(&id).1;
            User { id, shard }
        })
        .collect();
    let mut peers = vec![Vec::new(); cells.len()];
    for user in &users {
        peers[user.shard].push(user.id.clone());
    }
    warm_up(&client, topology, &hot.id).await?;
    let baseline = audits(&client, topology).await?;

    let plan = Arc::new(Plan {
        router: format!("http://{}", router.listen),
        shards: shard_ids.clone(),
        hot: (hot.id.clone(), hot.price as i64),
        cold: (cold.id.clone(), cold.price as i64),
        global_zone: topology.global_zone(),
        started: Instant::now(),
        stop: Default::default(),
        give_up_at: Mutex::new(None),
        sent: Default::default(),
    });
    let timeline = Arc::new(Mutex::new(Vec::new()));
    let monitor = tokio::spawn(monitor(
        client.clone(),
        format!("http://{}/admin/topology", router.admin),
        shard_ids.clone(),
        plan.clone(),
        timeline.clone(),
    ));
    let peers = Arc::new(peers);
    let mut workers = JoinSet::new();
    for (w, mine) in users.chunks(args.users_per_worker).enumerate() {
        let worker_seed = seed ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        workers.spawn(workload::work(
            plan.clone(),
            mine.to_vec(),
            peers.clone(),
            worker_seed,
        ));
    }

    // The faults.
    let mut done = Vec::with_capacity(steps.len());
    let mut stopped: HashMap<String, i32> = HashMap::new();
    let mut next_progress = Duration::from_secs(5);
    for step in steps {
        let at = Duration::from_millis(step.at_ms);
        while plan.started.elapsed() < at {
            let wake = at.min(next_progress);
            tokio::time::sleep(wake.saturating_sub(plan.started.elapsed())).await;
            if plan.started.elapsed() >= next_progress {
                progress(&plan, args.duration, done.len());
                next_progress += Duration::from_secs(5);
            }
        }
        let outcome = inject(&client, topology, &step, &mut stopped).await;
        done.push(Done { step, outcome });
    }
    tokio::time::sleep(args.duration.saturating_sub(plan.started.elapsed())).await;
    let duration_ms = plan.elapsed_ms();
    plan.stop.store(true, Ordering::Relaxed);
    progress(&plan, args.duration, done.len());

    // Heal: continue stopped cells, wait until every shard is its own cell's again,
    // then let the workers resolve the writes still in hand.
    for pid in stopped.values() {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGCONT);
    }
    heal(
        &client,
        &format!("http://{}/admin/topology", router.admin),
        topology,
    )
    .await?;
    *plan.give_up_at.lock().unwrap_or_else(|e| e.into_inner()) =
        Some(Instant::now() + HEAL_TIMEOUT);
    let mut records = Vec::new();
    while let Some(record) = workers.join_next().await {
        records.push(record.map_err(|err| format!("a workload worker failed: {err}"))?);
    }
    monitor.abort();

    // The books.
    let state = final_state(&client, topology, &plan.router, &users, baseline).await?;
    let writes: Vec<Write> = records
        .iter()
        .flat_map(|r| r.writes.iter().cloned())
        .collect();
    let replays: Vec<(String, String, String)> = records
        .iter()
        .flat_map(|r| r.replays.iter().cloned())
        .collect();
    let mut violations = check(&writes, &replays, &state);
    for unresolved in records.iter().flat_map(|r| &r.unresolved) {
        violations.push(Violation {
            invariant: "no_lost_acknowledgement",
            detail: format!("{unresolved}: no definitive answer even after healing"),
        });
    }

    let mut outcomes = BTreeMap::new();
    for record in &records {
        for (outcome, count) in &record.outcomes {
            *outcomes.entry(outcome.clone()).or_default() += count;
        }
    }
    let timeline = timeline.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let faults: Vec<(u64, usize)> = done
        .iter()
        .filter(|d| d.step.action != Action::Cont && d.outcome.starts_with("pid"))
        .filter_map(|d| {
            Some((
                d.step.at_ms,
                shard_ids.iter().position(|c| *c == d.step.cell)?,
            ))
        })
        .collect();
    let intervals = report::disrupted(cells.len(), &timeline, &faults, duration_ms);
    let failures: Vec<_> = records
        .iter()
        .flat_map(|r| r.failures.iter().cloned())
        .collect();
    let (errors_faulted_shards, elsewhere) = report::blast_radius(&failures, &intervals);
    let standbys: Vec<Option<usize>> = cells.iter().map(|c| c.standby).collect();
    Ok(Report {
        seed,
        duration_ms,
        reactions: report::reactions(&done, &shard_ids, &standbys, &timeline),
        schedule: done,
        requests: plan.sent.load(Ordering::Relaxed),
        outcomes,
        errors_faulted_shards,
        errors_elsewhere: elsewhere.len() as u64,
        first_errors_elsewhere: elsewhere
            .into_iter()
            .take(report::ELSEWHERE_SHOWN)
            .collect(),
        invariants: report::verdicts(&violations),
        violations,
    })
}

fn progress(plan: &Plan, duration: Duration, faults: usize) {
    println!(
        "ldc chaos: {:>4} s of {} s, {} requests, {faults} faults",
        plan.started.elapsed().as_secs(),
        duration.as_secs(),
        plan.sent.load(Ordering::Relaxed)
    );
}

/// Carries out one step; returns the pid signalled, or why it was skipped.
async fn inject(
    client: &HttpClient,
    topology: &Topology,
    step: &schedule::Step,
    stopped: &mut HashMap<String, i32>,
) -> String {
    let signal = match step.action {
        Action::Kill => Signal::SIGKILL,
        Action::Restart => Signal::SIGTERM,
        Action::Stop => Signal::SIGSTOP,
        Action::Cont => Signal::SIGCONT,
    };
    // A stopped cell cannot say its pid; the stop remembered it.
    let pid = match step.action {
        Action::Cont => stopped.remove(&step.cell),
        _ => pid_of(client, topology, &step.cell).await,
    };
    let Some(pid) = pid else {
        return "skipped: the cell did not answer /health".to_owned();
    };
    if step.action == Action::Stop {
        stopped.insert(step.cell.clone(), pid);
    }
    match kill(Pid::from_raw(pid), signal) {
        Ok(()) => format!("pid {pid}"),
        Err(err) => format!("skipped: {err}"),
    }
}

/// A cell's pid, from its admin listener's `/health`.
async fn pid_of(client: &HttpClient, topology: &Topology, cell: &str) -> Option<i32> {
    let index = topology.cell_index(cell)?;
    let url = format!("http://{}/health", topology.cells()[index].admin);
    let reply = tokio::time::timeout(Duration::from_secs(1), client.get(&url))
        .await
        .ok()?
        .ok()?;
    reply.json()["pid"].as_i64().map(|pid| pid as i32)
}

/// Samples who serves each shard, recording every change.
async fn monitor(
    client: HttpClient,
    url: String,
    shards: Vec<String>,
    plan: Arc<Plan>,
    timeline: Arc<Mutex<Vec<RouteChange>>>,
) {
    let mut last: Vec<Option<(Option<usize>, Option<u64>)>> = vec![None; shards.len()];
    loop {
        if let Ok(reply) = client.get(&url).await {
            let at_ms = plan.elapsed_ms();
            for (shard, view) in served(&reply.json(), &shards).into_iter().enumerate() {
                if last[shard] != Some(view) {
                    last[shard] = Some(view);
                    timeline
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(RouteChange {
                            at_ms,
                            shard,
                            served_by: view.0,
                            epoch: view.1,
                        });
                }
            }
        }
        tokio::time::sleep(MONITOR_EVERY).await;
    }
}

/// `(served_by, epoch)` per shard from a router's `/admin/topology`.
fn served(topology: &Value, shards: &[String]) -> Vec<(Option<usize>, Option<u64>)> {
    shards
        .iter()
        .map(|id| {
            let entry = topology["shards"]
                .as_array()
                .and_then(|all| all.iter().find(|s| s["cell"] == id.as_str()));
            let served_by = entry
                .and_then(|s| s["served_by"].as_str())
                .and_then(|by| shards.iter().position(|c| c == by));
            (served_by, entry.and_then(|s| s["epoch"].as_u64()))
        })
        .collect()
}

/// Waits until the router routes every shard to its own cell, and every cell says
/// it serves its own shard: the router's view alone can be stale for a moment
/// after a kill.
async fn heal(client: &HttpClient, url: &str, topology: &Topology) -> Result<(), String> {
    let shards: Vec<String> = topology.cells().iter().map(|c| c.id.clone()).collect();
    let started = Instant::now();
    loop {
        if let Ok(reply) = client.get(url).await {
            let view = served(&reply.json(), &shards);
            let routed = view
                .iter()
                .enumerate()
                .all(|(shard, (by, _))| *by == Some(shard));
            if routed && serve_own_shards(client, topology).await {
                return Ok(());
            }
        }
        if started.elapsed() > HEAL_TIMEOUT {
            return Err(format!(
                "the cluster did not heal within {HEAL_TIMEOUT:?}: some shard is not served by its own cell"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With a global zone, waits for every cell's first lease of `item`: a run measures
/// faults, not the cold start in which a cell's first buyers wait for its first
/// units (on a loaded host, longer than `lease_wait_ms`).
async fn warm_up(client: &HttpClient, topology: &Topology, item: &str) -> Result<(), String> {
    if topology.global_zone().is_none() {
        return Ok(());
    }
    let started = Instant::now();
    for cell in topology.cells() {
        let url = format!("http://{}/v1/items/{item}", cell.listen);
        loop {
            let received = client.get(&url).await.ok().map(|reply| reply.json());
            if received.is_some_and(|item| item["received"].as_u64() > Some(0)) {
                break;
            }
            if started.elapsed() > HEAL_TIMEOUT {
                return Err(format!(
                    "cell {} got no {item} from the global zone within {HEAL_TIMEOUT:?}",
                    cell.id
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Whether every cell is ready and lists its own shard among those it serves.
async fn serve_own_shards(client: &HttpClient, topology: &Topology) -> bool {
    for cell in topology.cells() {
        let Ok(reply) = client.get(&format!("http://{}/ready", cell.admin)).await else {
            return false;
        };
        let own = reply.json()["shards"]
            .as_array()
            .is_some_and(|shards| shards.iter().any(|s| s["cell"] == cell.id.as_str()));
        if !reply.status.is_success() || !own {
            return false;
        }
    }
    true
}

/// Every cell's `/admin/audit`.
async fn audits(
    client: &HttpClient,
    topology: &Topology,
) -> Result<BTreeMap<String, Value>, String> {
    let mut audits = BTreeMap::new();
    for cell in topology.cells() {
        let url = format!("http://{}/admin/audit", cell.admin);
        let reply = client
            .get(&url)
            .await
            .map_err(|err| format!("audit of {}: {err}", cell.id))?;
        if !reply.status.is_success() {
            return Err(format!(
                "audit of {}: {} {}",
                cell.id,
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ));
        }
        audits.insert(cell.id.clone(), reply.json());
    }
    Ok(audits)
}

/// Balances and orders of every user, and the audits, after healing.
async fn final_state(
    client: &HttpClient,
    topology: &Topology,
    router: &str,
    users: &[User],
    baseline: BTreeMap<String, Value>,
) -> Result<Final, String> {
    let mut balances = HashMap::new();
    let mut orders = HashMap::new();
    for user in users {
        let reply = client
            .get(&format!("{router}/v1/users/{}/balance", user.id))
            .await
            .map_err(|err| format!("balance of {}: {err}", user.id))?;
        if let Some(balance) = reply.json()["balance"].as_i64() {
            balances.insert(user.id.clone(), balance);
        }
        let mut ids = BTreeSet::new();
        let mut before = String::new();
        loop {
            let url = format!("{router}/v1/users/{}/orders?limit=100{before}", user.id);
            let page = client
                .get(&url)
                .await
                .map_err(|err| format!("orders of {}: {err}", user.id))?
                .json();
            for order in page["orders"].as_array().into_iter().flatten() {
                if let Some(id) = order["order_id"].as_str() {
                    ids.insert(id.to_owned());
                }
            }
            match page["next_before"].as_u64() {
                Some(next) => before = format!("&before={next}"),
                None => break,
            }
        }
        orders.insert(user.id.clone(), ids);
    }
    let stock = topology
        .deploy()
        .items
        .iter()
        .map(|i| (i.id.clone(), i.stock))
        .collect();
    Ok(Final {
        balances,
        orders,
        audits: audits(client, topology).await?,
        baseline,
        stock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_their_unit() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("s").is_err());
        assert!(
            parse_duration("99999999999999999999").is_err(),
            "beyond u64"
        );
        assert!(parse_duration("999999999999999999m").expect("saturates") > MAX_DURATION);
    }
}
