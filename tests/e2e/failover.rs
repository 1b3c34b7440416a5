//! Cell failure end to end: a cell SIGKILLed under steady load has its slots taken
//! over by its standby, gets them back when `ldc up` restarts it, and through it all
//! its users' acknowledged writes survive while every other user sees no error.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Cluster, ClusterBuilder, EVENT_TIMEOUT};
use bytes::Bytes;
use http::{Method, StatusCode};
use ldc::client::HttpClient;
use nix::sys::signal::Signal;
use serde_json::json;
use tokio::task::JoinSet;

/// One deposit attempt as a user saw it.
#[derive(Debug, Clone)]
struct Attempt {
    user: String,
    at: Instant,
    /// `None`: no response at all.
    status: Option<StatusCode>,
    /// `X-LDC-Cell`: the cell the router sent it to.
    cell: String,
}

/// Deposits of 1 by many users at once through the router, each request id sent
/// until it is acknowledged, so every user's balance must end equal to the number
/// of request ids it used.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    tasks: JoinSet<(String, u64)>,
}

impl Load {
    fn start(cluster: &Cluster, users: &[String]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        for user in users {
            let url = format!("{}/v1/users/{user}/deposits", cluster.router_url());
            let (user, stop, acked, attempts) =
                (user.clone(), stop.clone(), acked.clone(), attempts.clone());
            tasks.spawn(async move {
                let client = HttpClient::new();
                let mut used = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({"amount": 1, "request_id": format!("{user}-{used}")});
                    let started = Instant::now();
                    loop {
                        let reply = client
                            .send(Method::POST, &url, &[], Bytes::from(body.to_string()))
                            .await;
                        let status = reply.as_ref().ok().map(|r| r.status);
                        let cell = reply
                            .as_ref()
                            .map(|r| r.header("x-ldc-cell").to_owned())
                            .unwrap_or_default();
                        attempts.lock().expect("log").push(Attempt {
                            user: user.clone(),
                            at: Instant::now(),
                            status,
                            cell,
                        });
                        if status == Some(StatusCode::CREATED) {
                            break;
                        }
                        assert!(
                            started.elapsed() < EVENT_TIMEOUT,
                            "{user}'s deposit never went through"
                        );
                        // Pacing of a client retrying, not synchronisation.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    used += 1;
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                (user, used)
            });
        }
        Self {
            stop,
            acked,
            attempts,
            tasks,
        }
    }

    /// Waits until `n` more deposits were acknowledged.
    async fn wait_acked(&self, n: u64) {
        let target = self.acked.load(Ordering::Relaxed) + n;
        wait_until(&format!("{n} more acknowledged deposits"), || {
            self.acked.load(Ordering::Relaxed) >= target
        })
        .await;
    }

    /// Waits for an acknowledged deposit of one of `users` served by `cell` after
    /// `since`; returns when it was.
    async fn wait_served(&self, users: &[String], cell: &str, since: Instant) -> Instant {
        let mut found = None;
        wait_until(&format!("a deposit served by {cell}"), || {
            found = self.attempts.lock().expect("log").iter().find_map(|a| {
                (a.at > since
                    && a.status == Some(StatusCode::CREATED)
                    && a.cell == cell
                    && users.contains(&a.user))
                .then_some(a.at)
            });
            found.is_some()
        })
        .await;
        found.expect("found")
    }

    /// Stops the load once every request id in flight is acknowledged; returns
    /// the number of deposits each user made, and every attempt.
    async fn finish(mut self) -> (Vec<(String, u64)>, Vec<Attempt>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut used = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            used.push(done.expect("load task"));
        }
        let attempts = self.attempts.lock().expect("log").clone();
        (used, attempts)
    }
}

/// Polls `done` every few milliseconds, up to the harness's event timeout.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < EVENT_TIMEOUT, "no {what} in time");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Failed attempts of `users`.
fn errors<'a>(attempts: &'a [Attempt], users: &[String]) -> Vec<&'a Attempt> {
    attempts
        .iter()
        .filter(|a| users.contains(&a.user) && a.status != Some(StatusCode::CREATED))
        .collect()
}

/// Every user's balance equals its acknowledged deposits; every cell's books
/// balance, none serves another's shard any more, and deposits add up.
async fn assert_books(cluster: &Cluster, used: &[(String, u64)]) {
    let router = cluster.router_url();
    for (user, deposits) in used {
        let reply = cluster
            .client
            .get(&format!("{router}/v1/users/{user}/balance"))
            .await
            .expect("balance");
        assert_eq!(reply.status, StatusCode::OK, "{user}");
        assert_eq!(
            reply.json()["balance"],
            json!(deposits),
            "{user}: every acknowledged deposit once, nothing else"
        );
    }
    let mut deposited = 0;
    for cell in ["c1", "c2", "c3"] {
        let audit = cluster.audit(cell).await;
        assert_eq!(audit["ledger"]["net"], 0, "{cell}: money is conserved");
        assert_eq!(audit["ledger"]["negative_balances"], 0, "{cell}");
        assert_eq!(
            audit["taken_over"],
            json!({}),
            "{cell} gave every shard back"
        );
        deposited += audit["ledger"]["deposits"].as_i64().expect("deposits");
    }
    let total: u64 = used.iter().map(|(_, n)| n).sum();
    assert_eq!(deposited, total as i64, "deposits across cells");
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

#[tokio::test]
async fn a_killed_cells_users_move_to_its_standby_and_back_losing_nothing() {
    a_killed_cells_users_move_to_its_standby_and_back_losing_nothing_on(
        Cluster::builder().restart_backoff_ms(1_500),
        Duration::from_secs(1),
    )
    .await;
}

/// The test above on the cluster `builder` makes (the TiKV backend's run is
/// in `tikv.rs`). The standby must take over `within` the kill, which the
/// builder's restart backoff must leave it time for before c2 returns.
pub async fn a_killed_cells_users_move_to_its_standby_and_back_losing_nothing_on(
    builder: ClusterBuilder,
    within: Duration,
) {
    let mut cluster = builder.cells(3).standbys().spawn().await;
    let victims = cluster.users_of("c2", 6);
    let others: Vec<String> = ["c1", "c3"]
        .iter()
        .flat_map(|c| cluster.users_of(c, 6))
        .collect();
    let users: Vec<String> = victims.iter().chain(&others).cloned().collect();
    let load = Load::start(&cluster, &users);
    load.wait_acked(200).await;

    let killed = Instant::now();
    cluster.kill9("c2");
    let detected = cluster.wait_routed_away(&victims[0], "c2").await;
    let taken_over = load.wait_served(&victims, "c3", killed).await;
    load.wait_acked(200).await;
    // `ldc up` reports the restart once c2 is ready, i.e. after the failback.
    cluster.next_event_matching("restarted cell c2").await;
    let failed_back = load.wait_served(&victims, "c2", taken_over).await;
    load.wait_acked(200).await;
    let (used, attempts) = load.finish().await;

    // Per victim: its errors fall between the kill and its first deposit via the
    // standby, or between its last deposit via the standby and its first via c2.
    let mut outside = Vec::new();
    let (mut takeover_errors, mut failback_errors) = (0, 0);
    let mut handed_back = failed_back;
    for user in &victims {
        let mine: Vec<&Attempt> = attempts.iter().filter(|a| &a.user == user).collect();
        let ok_via = |cell: &'static str| {
            mine.iter()
                .filter(move |a| a.status == Some(StatusCode::CREATED) && a.cell == cell)
                .map(|a| a.at)
        };
        let first_standby = ok_via("c3").filter(|&at| at > killed).min();
        let last_standby = ok_via("c3").max();
        // Not a deposit c2 answered just before it died.
        let first_back = ok_via("c2")
            .filter(|&at| at > last_standby.unwrap_or(killed))
            .min();
        if let Some(last) = last_standby {
            handed_back = handed_back.min(last);
        }
        for error in mine
            .iter()
            .filter(|a| a.status != Some(StatusCode::CREATED))
        {
            let in_takeover = error.at >= killed && first_standby.is_none_or(|t| error.at <= t);
            let in_failback = last_standby.is_some_and(|t| error.at >= t)
                && first_back.is_none_or(|t| error.at <= t);
            if in_takeover {
                takeover_errors += 1;
            } else if in_failback {
                failback_errors += 1;
            } else {
                outside.push((*error).clone());
            }
        }
    }
    eprintln!(
        "figures: detection {} ms; takeover (kill to first deposit via the standby) {} ms, \
         {takeover_errors} errors; failback (last deposit via the standby to first via c2) {} ms, \
         {failback_errors} errors; victims {} attempts in all; others {} errors of {}",
        millis(detected),
        millis(taken_over - killed),
        millis(failed_back.saturating_duration_since(handed_back)),
        attempts
            .iter()
            .filter(|a| victims.contains(&a.user))
            .count(),
        errors(&attempts, &others).len(),
        attempts.iter().filter(|a| others.contains(&a.user)).count(),
    );
    assert!(
        outside.is_empty(),
        "victims saw errors only while the standby took over and while it handed back: {outside:?}"
    );
    assert!(
        errors(&attempts, &others).is_empty(),
        "users of other cells saw errors: {:?}",
        errors(&attempts, &others)
    );
    assert!(
        taken_over - killed < within,
        "the standby took over within {within:?}, before the restart"
    );
    assert_books(&cluster, &used).await;
}

#[tokio::test]
async fn killing_the_standby_during_takeover_and_the_cell_after_failback_loses_nothing() {
    let mut cluster = Cluster::builder()
        .cells(3)
        .standbys()
        .restart_backoff_ms(500)
        .spawn()
        .await;
    let victims: Vec<String> = ["c2", "c3"]
        .iter()
        .flat_map(|c| cluster.users_of(c, 4))
        .collect();
    let bystanders = cluster.users_of("c1", 4);
    let users: Vec<String> = victims.iter().chain(&bystanders).cloned().collect();
    let load = Load::start(&cluster, &users);
    load.wait_acked(100).await;

    // c2 dies; its standby c3 dies while taking over (as soon as the router
    // noticed c2 was gone).
    let c2_users = cluster.users_of("c2", 1);
    cluster.kill9("c2");
    cluster.wait_routed_away(&c2_users[0], "c2").await;
    cluster.kill9("c3");
    // Either may be ready first: c3 waits for c1 to hand its shard back.
    cluster
        .events_matching(&["restarted cell c2", "restarted cell c3"])
        .await;
    cluster.wait_routed(&c2_users[0], "c2").await;
    let back = Instant::now();
    load.wait_served(&victims, "c2", back).await;

    // c2 dies again right after it got its slots back.
    cluster.kill9("c2");
    let killed = Instant::now();
    load.wait_served(&victims, "c3", killed).await;
    cluster.next_event_matching("restarted cell c2").await;
    cluster.wait_routed(&c2_users[0], "c2").await;
    load.wait_served(&victims, "c2", Instant::now()).await;
    load.wait_acked(100).await;
    let (used, attempts) = load.finish().await;

    assert!(
        errors(&attempts, &bystanders).is_empty(),
        "c1's users saw errors: {:?}",
        errors(&attempts, &bystanders)
    );
    assert_books(&cluster, &used).await;
}

#[tokio::test]
async fn sighup_reloads_the_deploy_file_and_a_new_standby_takes_over() {
    let mut cluster = Cluster::builder()
        .cells(3)
        .restart_backoff_ms(10_000)
        .spawn()
        .await;
    let victim = cluster.users_of("c2", 1).remove(0);

    // A file that would move slots is refused, by `ldc up` and by every child;
    // the children still re-read their certificates.
    let certificate_reloads =
        |cluster: &Cluster| cluster.log_text().matches("certificates reloaded").count();
    let before = certificate_reloads(&cluster);
    cluster.rewrite_deploy(|b| b.extra("[placement]\nvnodes_per_weight = 512\n"));
    cluster.signal_up(Signal::SIGHUP);
    let refused = cluster.next_event_matching("reloaded").await;
    assert!(
        refused.contains("not reloaded") && refused.contains("slots would move"),
        "{refused}"
    );
    let started = Instant::now();
    while certificate_reloads(&cluster) < before + 4 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the three cells and the router did not re-read their certificates"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Standbys for every cell (and a short startup grace) are taken.
    cluster.rewrite_deploy(|b| b.extra("[takeover]\nstartup_grace_ms = 200\n").standbys());
    cluster.signal_up(Signal::SIGHUP);
    let reloaded = cluster.next_event_matching("reloaded").await;
    assert!(reloaded.starts_with("ldc up: reloaded"), "{reloaded}");
    for process in ["c3", "r1"] {
        let url = format!("http://{}/admin/topology", cluster.proc(process).admin);
        cluster
            .wait_json(&url, |topology| topology["cells"][1]["standby"] == "c3")
            .await;
    }

    // Without the reload nobody would serve c2's users now.
    cluster.kill9("c2");
    cluster.wait_routed(&victim, "c3").await;
    let reply = cluster
        .client
        .get(&format!(
            "{}/v1/users/{victim}/whoami",
            cluster.router_url()
        ))
        .await
        .expect("router answers");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["cell"], "c3");
    assert_eq!(reply.json()["shard"], "c2");
    assert_eq!(reply.json()["epoch"], 2);
}
