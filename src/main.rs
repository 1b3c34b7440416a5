//! `ldc`: one binary for the router, the cells, the local supervisor and config tools.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use ldc_serve::tls::{Identity, Role, Tls};
use ldc_serve::{
    AdminPlane, AdminToken, announce, reload_on_sighup, reload_tls_on_sighup, shutdown_signal,
};
use ldc_topology::{EXIT_USAGE, Topology};
use prometheus::{IntGauge, Registry};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: on the sold-out fast path, glibc's
/// malloc and free were about 6% of a cell's CPU (perf, 2 cores).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "ldc",
    version,
    about = "Cell-based routing for flash sales and payments"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start every cell and router of a deploy file as child processes, restart the
    /// ones that die, and stop them all on Ctrl-C.
    Up {
        #[arg(long, default_value = "config/local.toml")]
        config: PathBuf,
    },
    /// Run one router of a deploy file.
    Router(ProcessArgs),
    /// Run one cell of a deploy file.
    Cell(ProcessArgs),
    /// Validate a deploy file and print a summary, or every problem found.
    CheckConfig { file: PathBuf },
    /// Drive a flash-sale workload (deposits, then orders on one item) and report
    /// throughput and latency by outcome.
    Bench(ldc::bench::BenchArgs),
    /// Kill, restart, stop and continue cells on a seeded schedule under a workload,
    /// then check the invariants; exit 0 only when all hold.
    Chaos(ldc::chaos::ChaosArgs),
    /// Print where a user id is placed: slot, cell, region and standby.
    Route {
        #[arg(long, default_value = "config/local.toml")]
        config: PathBuf,
        user_id: String,
    },
    /// Make the certificates of the peer plane's mutual TLS.
    #[command(subcommand)]
    Certs(ldc::certs::CertsCommand),
}

#[derive(Debug, clap::Args)]
struct ProcessArgs {
    #[arg(long)]
    config: PathBuf,
    /// Id of the cell or router in the deploy file.
    #[arg(long)]
    id: String,
    /// Stop when standard input closes (set by `ldc up`, so children never outlive it).
    #[arg(long, hide = true)]
    exit_on_stdin_eof: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Route { config, user_id } => route(&config, &user_id),
        Command::Up { config } => block_on(ldc::supervisor::up(&config)),
        Command::Bench(args) => block_on(ldc::bench::bench(args)),
        Command::Chaos(args) => block_on(ldc::chaos::chaos(args)),
        Command::Certs(command) => ldc::certs::command(command),
        Command::Router(args) => block_on(process(Role::Router, args)),
        Command::Cell(args) => block_on(process(Role::Cell, args)),
    }
}

/// Runs `main` on a multi-thread runtime, or on a current-thread one when a single
/// worker thread is asked for (`TOKIO_WORKER_THREADS=1`: what `ldc up` gives each
/// child when the host has fewer than twice as many cores as children). With one
/// worker, the multi-thread runtime still polls `main` on a second thread and pays
/// for cross-thread wakeups: the current-thread one served 5% more requests per
/// second through the router at 5% less CPU per request (docs/benchmarks.md, "Router against
/// nginx").
fn block_on(main: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    let one_worker = std::env::var("TOKIO_WORKER_THREADS")
        .is_ok_and(|threads| threads.trim().parse::<usize>() == Ok(1));
    let mut builder = if one_worker {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ldc: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(main);
    // A blocking read of stdin (the supervisor's pipe) only returns at EOF: do not
    // wait for it.
    runtime.shutdown_background();
    code
}

/// Loads a deploy file, or explains why not and exits with 64.
fn load(path: &Path) -> Result<Topology, ExitCode> {
    Topology::load(path).map_err(|err| {
        eprintln!("{err}");
        ExitCode::from(EXIT_USAGE as u8)
    })
}

fn check_config(file: &Path) -> ExitCode {
    let topology = match load(file) {
        Ok(topology) => topology,
        Err(code) => return code,
    };
    let summary = topology.summary();
    let mut out = String::new();
    out += &format!(
        "{}: ok: deployment {:?}, {} slots, epoch {}, {} regions, {} cells, {} routers\n",
        file.display(),
        summary.name,
        summary.slots,
        summary.epoch,
        summary.regions.len(),
        summary.cells.len(),
        summary.routers.len()
    );
    for region in &summary.regions {
        out += &format!(
            "region {}: cells [{}], routers [{}]\n",
            region.id,
            region.cells.join(", "),
            region.routers.join(", ")
        );
    }
    let fair = f64::from(summary.slots)
        / summary
            .cells
            .iter()
            .map(|c| f64::from(c.weight))
            .sum::<f64>();
    for cell in &summary.cells {
        out += &format!(
            "cell {:<12} region {:<12} weight {:<3} slots {:>5} ({:+.1}% of its fair share)  listen {}  admin {}  standby {}\n",
            cell.id,
            cell.region,
            cell.weight,
            cell.slots,
            (f64::from(cell.slots) / (fair * f64::from(cell.weight)) - 1.0) * 100.0,
            cell.listen,
            cell.admin,
            cell.standby.as_deref().unwrap_or("-"),
        );
    }
    for router in &summary.routers {
        out += &format!(
            "router {:<10} region {:<12} listen {}  admin {}\n",
            router.id, router.region, router.listen, router.admin
        );
    }
    print(&out);
    ExitCode::SUCCESS
}

fn route(config: &Path, user_id: &str) -> ExitCode {
    let topology = match load(config) {
        Ok(topology) => topology,
        Err(code) => return code,
    };
    if !ldc_topology::is_valid_user_id(user_id) {
        eprintln!("ldc route: user id {user_id:?} must match [A-Za-z0-9_-]{{1,64}}");
        return ExitCode::from(EXIT_USAGE as u8);
    }
    let (slot, index) = topology.route(user_id);
    let cell = &topology.cells()[index];
    let standby = cell
        .standby
        .map_or("-", |s| topology.cells()[s].id.as_str());
    print(&format!(
        "user {user_id}: slot {slot} of {}, cell {} (region {}, {}), standby {standby}, epoch {}\n",
        topology.placement().slots(),
        cell.id,
        cell.region,
        cell.advertise,
        topology.placement().epoch()
    ));
    ExitCode::SUCCESS
}

/// Writes to stdout, ignoring a closed pipe (`ldc check-config F | head`).
fn print(text: &str) {
    let _ = std::io::stdout().write_all(text.as_bytes());
}

async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, ExitCode> {
    TcpListener::bind(addr).await.map_err(|err| {
        tracing::error!(cause = %err, %addr, "cannot bind the {what} listener");
        ExitCode::FAILURE
    })
}

/// Binds a process's listeners (a cell's peer listener too) and announces their
/// addresses.
async fn bind_all(
    role: &str,
    id: &str,
    (listen, admin, peer): (SocketAddr, SocketAddr, Option<SocketAddr>),
) -> Result<(TcpListener, TcpListener, Option<TcpListener>), ExitCode> {
    let listener = bind("main", listen).await?;
    let admin = bind("admin", admin).await?;
    let peer = match peer {
        Some(peer) => Some(bind("peer", peer).await?),
        None => None,
    };
    let bound = (
        listener.local_addr(),
        admin.local_addr(),
        peer.as_ref().map(TcpListener::local_addr).transpose(),
    );
    let (Ok(listen), Ok(admin_addr), Ok(peer_addr)) = bound else {
        tracing::error!("cannot read the bound addresses");
        return Err(ExitCode::FAILURE);
    };
    tracing::info!(role, id, %listen, admin = %admin_addr, peer = ?peer_addr, "listening");
    announce(role, id, listen, admin_addr, peer_addr);
    Ok((listener, admin, peer))
}

/// The process's certificate, or `None` in a deployment that chose
/// `insecure = true` (said in a warning). SIGHUP reads it again.
fn process_tls(topology: &Topology, role: Role, id: &str) -> Result<Option<Arc<Tls>>, String> {
    if topology.deploy().security.insecure {
        tracing::warn!(
            "security.insecure = true: processes of this deployment talk without TLS, and anyone \
             who reaches a cell's listeners can act as a router or a cell"
        );
        return Ok(None);
    }
    let identity =
        Identity::new(topology.deploy().name.as_str(), role, id).map_err(|err| err.to_string())?;
    let files = ldc::certs::files(&topology.certs_dir(), role, id);
    let tls = Arc::new(Tls::load(files, identity).map_err(|err| {
        format!("{err} (`ldc certs init` creates the deployment's certificates)")
    })?);
    reload_tls_on_sighup(tls.clone());
    Ok(Some(tls))
}

/// `ldc_insecure`: 1 when the deployment turned TLS off, so that dashboards and
/// alerts see it.
fn register_insecure(registry: &Registry, insecure: bool) -> prometheus::Result<()> {
    let gauge = IntGauge::new(
        "ldc_insecure",
        "1 when security.insecure = true turned TLS between processes off",
    )?;
    gauge.set(i64::from(insecure));
    registry.register(Box::new(gauge))
}

/// Runs one router or cell of a deploy file until it is told to stop.
async fn process(role: Role, args: ProcessArgs) -> ExitCode {
    let topology = match load(&args.config) {
        Ok(topology) => Arc::new(topology),
        Err(code) => return code,
    };
    let addresses = match role {
        Role::Router => topology.router(&args.id).map(|r| (r.listen, r.admin, None)),
        Role::Cell => topology.cell_index(&args.id).map(|i| {
            let cell = &topology.cells()[i];
            (cell.listen, cell.admin, Some(cell.peer))
        }),
    };
    let Some(addresses) = addresses else {
        eprintln!(
            "{}: there is no {} {:?}",
            args.config.display(),
            role.as_str(),
            args.id
        );
        return ExitCode::from(EXIT_USAGE as u8);
    };
    let credentials = AdminToken::read(&topology.admin_token_file())
        .map_err(|err| err.to_string())
        .and_then(|token| Ok((token, process_tls(&topology, role, &args.id)?)));
    let (token, tls) = match credentials {
        Ok(credentials) => credentials,
        Err(err) => {
            eprintln!("{}: {err}", args.config.display());
            return ExitCode::from(EXIT_USAGE as u8);
        }
    };
    let (listener, admin, peer) = match bind_all(role.as_str(), &args.id, addresses).await {
        Ok(bound) => bound,
        Err(code) => return code,
    };
    let registry = Registry::new();
    if let Err(err) = register_insecure(&registry, tls.is_none()) {
        tracing::error!(cause = %err, "cannot register the insecure gauge");
        return ExitCode::FAILURE;
    }
    let admin = AdminPlane {
        listener: admin,
        registry,
        token,
    };
    let reloads = reload_on_sighup(args.config.clone(), topology.clone());
    let shutdown = shutdown_signal(args.exit_on_stdin_eof);
    // Cells, and only cells, have a peer listener.
    let outcome = match peer {
        None => ldc_router::run(topology, listener, admin, tls, reloads, shutdown)
            .await
            .map_err(|err| err.to_string()),
        Some(peer) => {
            let listeners = ldc_cell::Listeners {
                user: listener,
                peer,
                admin,
                reloads,
                tls,
            };
            ldc_cell::run(topology, &args.id, listeners, shutdown)
                .await
                .map_err(|err| err.to_string())
        }
    };
    match outcome {
        Ok(()) => {
            tracing::info!(role = role.as_str(), id = %args.id, "stopped");
            ExitCode::SUCCESS
        }
        Err(cause) => {
            tracing::error!(role = role.as_str(), id = %args.id, %cause, "failed");
            ExitCode::FAILURE
        }
    }
}
