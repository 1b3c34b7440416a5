//! `ldc up`: a local supervisor that runs every cell and router of a deploy file as
//! child processes of this binary, the way `cockroach demo` or `tiup playground` do.
//!
//! Children announce their bound addresses on standard output and are ready when
//! their `/ready` answers 200. Listeners on port 0 get their real ports written into
//! a resolved copy of the deploy file, which routers and restarted children read, so
//! a test can run a whole cluster on free ports. A child that dies is restarted with
//! backoff; Ctrl-C or SIGTERM stops routers first, then cells, each given its drain
//! deadline before SIGKILL. SIGHUP reloads the deploy file and passes the signal on
//! to every child, which reloads it too. Children hold a pipe to the supervisor on their standard
//! input and stop when it closes, so none outlives a supervisor that is killed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use ldc_serve::{AdminToken, shutdown_signal};
use ldc_topology::{Deploy, EXIT_USAGE, Topology};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::certs;
use crate::client::HttpClient;

/// A child that lived this long is healthy again: its next death restarts quickly.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How often a starting child's `/ready` is asked.
const READY_POLL: Duration = Duration::from_millis(20);
/// Grace beyond the drain deadline before a stopping child gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Which process of the deploy file a child is.
#[derive(Debug, Clone)]
struct Spec {
    role: &'static str,
    id: String,
}

/// The listeners a child announced it bound.
#[derive(Debug, Clone, Copy)]
struct Addresses {
    listen: SocketAddr,
    admin: SocketAddr,
    /// A cell's peer listener.
    peer: Option<SocketAddr>,
}

/// A started child and what it announced.
#[derive(Debug)]
struct Running {
    child: Child,
    pid: u32,
    addresses: Addresses,
    started: Instant,
    /// Held open for the child's life: closing it tells the child to stop.
    _stdin: ChildStdin,
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("cannot spawn {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("exited before it was ready ({0})")]
    Exited(String),
    #[error("not ready within {0} ms")]
    Timeout(u64),
}

/// Settings every supervising task needs.
#[derive(Debug, Clone)]
struct Settings {
    exe: PathBuf,
    ready_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    stop_timeout: Duration,
    client: HttpClient,
    /// Tokio worker threads per child: the host's cores shared among the children,
    /// unless `TOKIO_WORKER_THREADS` is set for `ldc up` (children inherit it).
    worker_threads: Option<usize>,
}

/// Worker threads per child when `children` processes share this host: one per
/// core would have every process wake as many threads as there are cores, which on a
/// small host costs a third of the throughput (docs/benchmarks.md, "Router against nginx").
fn worker_threads(children: usize) -> Option<usize> {
    if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some((cores / children.max(1)).max(1))
}

pub async fn up(config: &Path) -> ExitCode {
    let topology = match Topology::load(config) {
        Ok(topology) => topology,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(EXIT_USAGE as u8);
        }
    };
    let deploy = topology.deploy().clone();
    if let Err(err) = std::fs::create_dir_all(&deploy.data_dir) {
        eprintln!("ldc up: cannot create {}: {err}", deploy.data_dir.display());
        return ExitCode::FAILURE;
    }
    if let Err(err) = credentials(&topology) {
        eprintln!("ldc up: {err}");
        return ExitCode::FAILURE;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            eprintln!("ldc up: cannot find my own executable: {err}");
            return ExitCode::FAILURE;
        }
    };
    let settings = Settings {
        exe,
        ready_timeout: Duration::from_millis(deploy.supervisor.ready_timeout_ms),
        backoff_initial: Duration::from_millis(deploy.supervisor.restart_backoff_initial_ms),
        backoff_max: Duration::from_millis(deploy.supervisor.restart_backoff_max_ms),
        stop_timeout: Duration::from_millis(deploy.timeouts.drain_timeout_ms) + STOP_GRACE,
        client: HttpClient::new(),
        worker_threads: worker_threads(topology.cells().len() + topology.routers().len()),
    };
    let resolved_path = deploy
        .data_dir
        .join(format!("{}.resolved.toml", deploy.name));

    let specs = |role: &'static str, ids: Vec<&String>| -> Vec<Spec> {
        let spec = |id: &String| Spec {
            role,
            id: id.clone(),
        };
        ids.into_iter().map(spec).collect()
    };
    let cells = specs("cell", topology.cells().iter().map(|c| &c.id).collect());
    let routers = specs("router", topology.routers().iter().map(|r| &r.id).collect());

    // Cells start from the resolved file while their ports are still unknown, and
    // read it again once every cell has bound: then each knows where the others
    // listen (the global zone, the cells it stands by for).
    let mut bound = HashMap::new();
    let Ok(children_config) = write_resolved(&deploy, &bound, config, &resolved_path) else {
        return ExitCode::FAILURE;
    };
    let cells = match start_all(&cells, &children_config, &settings, &mut bound).await {
        Ok(cells) => cells,
        Err(()) => return ExitCode::FAILURE,
    };
    let children_config = match write_resolved(&deploy, &bound, config, &resolved_path) {
        Ok(path) => path,
        Err(()) => return stop_all(cells, &settings).await,
    };
    if children_config != config {
        for (_, running) in &cells {
            let _ = kill(Pid::from_raw(running.pid as i32), Signal::SIGHUP);
        }
    }
    let routers = match start_all(&routers, &children_config, &settings, &mut bound).await {
        Ok(routers) => routers,
        Err(()) => return stop_all(cells, &settings).await,
    };
    let children_config = match write_resolved(&deploy, &bound, config, &resolved_path) {
        Ok(path) => path,
        Err(()) => {
            let code = stop_all(routers, &settings).await;
            stop_all(cells, &settings).await;
            return code;
        }
    };
    let try_url = match routers.first() {
        Some((_, r)) => format!("curl http://{}/v1/users/alice/whoami", r.addresses.listen),
        None => "no router in the deploy file: talk to a cell directly".to_owned(),
    };
    // Both handlers are in place before anyone is told the cluster is ready: a
    // signal sent before then would kill `ldc up` without stopping its children.
    let shutdown = shutdown_signal(false);
    let hangups = signal(SignalKind::hangup());
    println!(
        "ldc up: ready: {} cells, {} routers; try: {try_url}",
        cells.len(),
        routers.len()
    );

    let (stop_routers, stopping_routers) = watch::channel(false);
    let (stop_cells, stopping_cells) = watch::channel(false);
    let (reloaded, reloads) = watch::channel(0u64);
    let supervise_all = |children: Vec<_>, stopping: &watch::Receiver<bool>| {
        let mut tasks = JoinSet::new();
        for (spec, running) in children {
            tasks.spawn(supervise(
                spec,
                running,
                children_config.clone(),
                settings.clone(),
                (stopping.clone(), reloads.clone()),
            ));
        }
        tasks
    };
    let router_tasks = supervise_all(routers, &stopping_routers);
    let cell_tasks = supervise_all(cells, &stopping_cells);

    let reloading = async {
        let Ok(mut hangups) = hangups else {
            eprintln!("ldc up: cannot install the SIGHUP handler; reloads are off");
            return std::future::pending().await;
        };
        let mut current = topology;
        while hangups.recv().await.is_some() {
            match reload(config, &current, &bound, &resolved_path) {
                Ok(next) => {
                    current = next;
                    reloaded.send_modify(|generation| *generation += 1);
                    println!(
                        "ldc up: reloaded {}; sent SIGHUP to every child",
                        config.display()
                    );
                }
                Err(why) => {
                    // The children still re-read their certificates; the deploy
                    // file they read is the last good one.
                    reloaded.send_modify(|generation| *generation += 1);
                    println!(
                        "ldc up: not reloaded: {why}; sent SIGHUP to every child for its certificates"
                    );
                }
            }
        }
    };
    tokio::select! {
        () = shutdown => {}
        () = reloading => {}
    }
    println!("ldc up: stopping routers, then cells");
    stop_routers.send_replace(true);
    router_tasks.join_all().await;
    stop_cells.send_replace(true);
    cell_tasks.join_all().await;
    println!("ldc up: stopped");
    ExitCode::SUCCESS
}

/// Loads the deploy file again for a reload: it must be valid and move no slot
/// (see [`Topology::reload_problems`]); its resolved copy is rewritten with the
/// ports already bound, for the children to read on their SIGHUP.
fn reload(
    config: &Path,
    current: &Topology,
    bound: &HashMap<String, Addresses>,
    resolved: &Path,
) -> Result<Topology, String> {
    let next = Topology::load(config).map_err(|err| err.to_string())?;
    let problems = current.reload_problems(&next);
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    write_resolved(next.deploy(), bound, config, resolved)
        .map_err(|()| "cannot write the resolved deploy file".to_owned())?;
    Ok(next)
}

/// Creates what the deployment's processes need to start and is missing: the
/// CA and a certificate per process (unless the deployment is insecure), and the
/// admin token; says what it created.
fn credentials(topology: &Topology) -> Result<(), String> {
    if topology.deploy().security.insecure {
        println!("ldc up: security.insecure = true: the processes talk without TLS");
    } else {
        let dir = topology.certs_dir();
        let created = certs::ensure(topology, &dir).map_err(|err| err.to_string())?;
        if !created.files.is_empty() {
            println!(
                "ldc up: created the deployment's CA and certificates in {}",
                dir.display()
            );
        }
    }
    let token_file = topology.admin_token_file();
    if AdminToken::create(&token_file).map_err(|err| err.to_string())? {
        println!(
            "ldc up: created the admin token {} (send it as Authorization: Bearer to /admin/* routes)",
            token_file.display()
        );
    }
    Ok(())
}

/// Starts `specs` concurrently and records their addresses in `bound`. On any
/// failure, stops the ones that did start and reports why.
async fn start_all(
    specs: &[Spec],
    config: &Path,
    settings: &Settings,
    bound: &mut HashMap<String, Addresses>,
) -> Result<Vec<(Spec, Running)>, ()> {
    let mut starting = JoinSet::new();
    for spec in specs {
        let (spec, config, settings) = (spec.clone(), config.to_owned(), settings.clone());
        starting.spawn(async move {
            let started = start(&spec, &config, &settings).await;
            (spec, started)
        });
    }
    let mut running = Vec::new();
    let mut failed = false;
    while let Some(joined) = starting.join_next().await {
        let Ok((spec, started)) = joined else {
            failed = true;
            continue;
        };
        match started {
            Ok(child) => {
                report("started", &spec, &child);
                bound.insert(spec.id.clone(), child.addresses);
                running.push((spec, child));
            }
            Err(err) => {
                eprintln!("ldc up: {} {}: {err}", spec.role, spec.id);
                failed = true;
            }
        }
    }
    if failed {
        stop_all(running, settings).await;
        return Err(());
    }
    Ok(running)
}

async fn stop_all(children: Vec<(Spec, Running)>, settings: &Settings) -> ExitCode {
    for (spec, running) in children {
        stop(&spec, running, settings).await;
    }
    ExitCode::FAILURE
}

fn report(what: &str, spec: &Spec, child: &Running) {
    let Addresses {
        listen,
        admin,
        peer,
    } = child.addresses;
    let peer = peer.map(|peer| format!(" peer={peer}")).unwrap_or_default();
    println!(
        "ldc up: {what} {} {} pid={} listen={listen} admin={admin}{peer}",
        spec.role, spec.id, child.pid
    );
}

/// Writes the deploy file with every listener that had port 0 set to the address
/// its process bound, and returns the file children should read from now on (the
/// original when no port was 0).
fn write_resolved(
    deploy: &Deploy,
    bound: &HashMap<String, Addresses>,
    original: &Path,
    resolved: &Path,
) -> Result<PathBuf, ()> {
    let mut deploy = deploy.clone();
    let port_zero = |text: &str| text.parse::<SocketAddr>().is_ok_and(|a| a.port() == 0);
    let any_port_zero = deploy.cells.iter().any(|c| {
        port_zero(&c.listen)
            || port_zero(&c.admin)
            || c.advertise.as_deref().is_some_and(port_zero)
            // No peer address is port 0 on the listen host.
            || c.peer.as_deref().is_none_or(port_zero)
    }) || deploy
        .routers
        .iter()
        .any(|r| port_zero(&r.listen) || port_zero(&r.admin));
    if !any_port_zero {
        return Ok(original.to_owned());
    }
    let fill = |text: &mut String, actual: SocketAddr| {
        if port_zero(text) {
            *text = actual.to_string();
        }
    };
    for cell in &mut deploy.cells {
        if let Some(bound) = bound.get(&cell.id) {
            if let Some(advertise) = cell.advertise.as_mut()
                && let Ok(mut addr) = advertise.parse::<SocketAddr>()
                && addr.port() == 0
            {
                addr.set_port(bound.listen.port());
                fill(advertise, addr);
            }
            fill(&mut cell.listen, bound.listen);
            fill(&mut cell.admin, bound.admin);
            if let Some(peer) = bound.peer {
                fill(cell.peer.get_or_insert_with(|| peer.to_string()), peer);
            }
        }
    }
    for router in &mut deploy.routers {
        if let Some(bound) = bound.get(&router.id) {
            fill(&mut router.listen, bound.listen);
            fill(&mut router.admin, bound.admin);
        }
    }
    let text = match Topology::from_deploy(resolved.display().to_string(), deploy) {
        Ok(topology) => topology.to_toml(),
        Err(err) => {
            eprintln!("ldc up: the resolved deploy file is invalid:\n{err}");
            return Err(());
        }
    };
    let temporary = resolved.with_extension("toml.tmp");
    let header = format!(
        "# Written by `ldc up` from {}: the same deployment with the ports it bound.\n",
        original.display()
    );
    std::fs::write(&temporary, header + &text)
        .and_then(|()| std::fs::rename(&temporary, resolved))
        .map_err(|err| eprintln!("ldc up: cannot write {}: {err}", resolved.display()))?;
    Ok(resolved.to_owned())
}

/// Spawns one child and waits until it has announced its addresses and answers
/// `/ready` with 200.
async fn start(spec: &Spec, config: &Path, settings: &Settings) -> Result<Running, StartError> {
    let mut command = Command::new(&settings.exe);
    if let Some(threads) = settings.worker_threads {
        command.env("TOKIO_WORKER_THREADS", threads.to_string());
    }
    let mut child = command
        .arg(spec.role)
        .arg("--config")
        .arg(config)
        .arg("--id")
        .arg(&spec.id)
        .arg("--exit-on-stdin-eof")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: a terminal's Ctrl-C reaches only `ldc up`, which then
        // stops routers before cells instead of watching them all die at once.
        .process_group(0)
        .spawn()
        .map_err(|err| StartError::Spawn(settings.exe.display().to_string(), err))?;
    let pid = child.id().unwrap_or_default();
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(StartError::Exited("its pipes were not set up".to_owned()));
    };
    let (announced_tx, announced) = oneshot::channel();
    tokio::spawn(forward_stdout(spec.id.clone(), stdout, announced_tx));
    tokio::spawn(forward_stderr(spec.id.clone(), stderr));

    let deadline = tokio::time::Instant::now() + settings.ready_timeout;
    let timeout_ms = settings.ready_timeout.as_millis() as u64;
    let ready = async {
        let addresses: Addresses = tokio::select! {
            announced = announced => announced.map_err(|_| StartError::Exited("closed its standard output".to_owned()))?,
            status = child.wait() => return Err(exited(status)),
        };
        let url = format!("http://{}/ready", addresses.admin);
        loop {
            let ok = tokio::select! {
                reply = settings.client.get(&url) => reply.is_ok_and(|r| r.status.is_success()),
                status = child.wait() => return Err(exited(status)),
            };
            if ok {
                return Ok(addresses);
            }
            tokio::time::sleep(READY_POLL).await;
        }
    };
    let addresses = tokio::time::timeout_at(deadline, ready)
        .await
        .map_err(|_| StartError::Timeout(timeout_ms))??;
    Ok(Running {
        child,
        pid,
        addresses,
        started: Instant::now(),
        _stdin: stdin,
    })
}

fn exited(status: std::io::Result<std::process::ExitStatus>) -> StartError {
    StartError::Exited(match status {
        Ok(status) => status.to_string(),
        Err(err) => err.to_string(),
    })
}

/// Passes a child's standard output on with its id as prefix, except the
/// `ldc-listening` line, whose addresses go to `announced`.
async fn forward_stdout(
    id: String,
    stdout: tokio::process::ChildStdout,
    announced: oneshot::Sender<Addresses>,
) {
    let mut announced = Some(announced);
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match parse_announcement(&line) {
            Some(addresses) => {
                if let Some(tx) = announced.take() {
                    let _ = tx.send(addresses);
                }
            }
            None => println!("[{id}] {line}"),
        }
    }
}

async fn forward_stderr(id: String, stderr: tokio::process::ChildStderr) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("[{id}] {line}");
    }
}

/// Reads `ldc-listening role=.. id=.. listen=ADDR admin=ADDR [peer=ADDR]`.
fn parse_announcement(line: &str) -> Option<Addresses> {
    let fields = line.strip_prefix("ldc-listening ")?;
    let value = |key: &str| {
        fields
            .split_whitespace()
            .find_map(|field| field.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
    };
    Some(Addresses {
        listen: value("listen")?,
        admin: value("admin")?,
        peer: value("peer"),
    })
}

/// Keeps one child alive until `stopping` turns true, then stops it.
async fn supervise(
    spec: Spec,
    first: Running,
    config: PathBuf,
    settings: Settings,
    (mut stopping, mut reloads): (watch::Receiver<bool>, watch::Receiver<u64>),
) {
    let mut running = Some(first);
    let mut backoff = settings.backoff_initial;
    loop {
        let Some(current) = running.as_mut() else {
            let restarted = tokio::select! {
                () = stop_requested(&mut stopping) => return,
                restarted = async {
                    tokio::time::sleep(backoff).await;
                    start(&spec, &config, &settings).await
                } => restarted,
            };
            backoff = (backoff * 2).min(settings.backoff_max);
            match restarted {
                Ok(child) => {
                    report("restarted", &spec, &child);
                    running = Some(child);
                }
                Err(err) => println!(
                    "ldc up: {} {} did not restart: {err}; next try in {} ms",
                    spec.role,
                    spec.id,
                    backoff.as_millis()
                ),
            }
            continue;
        };
        tokio::select! {
            status = current.child.wait() => {
                if current.started.elapsed() >= STABLE_AFTER {
                    backoff = settings.backoff_initial;
                }
                let status = match status {
                    Ok(status) => status.to_string(),
                    Err(err) => err.to_string(),
                };
                println!(
                    "ldc up: {} {} pid={} exited ({status}); restarting in {} ms",
                    spec.role, spec.id, current.pid, backoff.as_millis()
                );
                running = None;
            }
            () = stop_requested(&mut stopping) => {
                if let Some(current) = running.take() {
                    stop(&spec, current, &settings).await;
                }
                return;
            }
            Ok(()) = reloads.changed() => {
                // A child that died just now reads the new file when it restarts.
                let _ = kill(Pid::from_raw(current.pid as i32), Signal::SIGHUP);
            }
        }
    }
}

/// Resolves once `stopping` is true (or its sender is gone, which means the same).
async fn stop_requested(stopping: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across the caller's awaits.
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// SIGTERM, then SIGKILL if the child has not exited within its drain deadline.
async fn stop(spec: &Spec, mut running: Running, settings: &Settings) {
    let pid = Pid::from_raw(running.pid as i32);
    if let Err(err) = kill(pid, Signal::SIGTERM) {
        eprintln!("ldc up: cannot signal {} {}: {err}", spec.role, spec.id);
    }
    match tokio::time::timeout(settings.stop_timeout, running.child.wait()).await {
        Ok(_) => println!("ldc up: {} {} stopped", spec.role, spec.id),
        Err(_) => {
            eprintln!(
                "ldc up: {} {} did not stop within {} ms; killing it",
                spec.role,
                spec.id,
                settings.stop_timeout.as_millis()
            );
            if let Err(err) = running.child.kill().await {
                eprintln!("ldc up: cannot kill {} {}: {err}", spec.role, spec.id);
            }
        }
    }
}
