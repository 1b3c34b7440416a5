//! Shutdown and reload triggers, and the start-up announcement the local supervisor
//! reads.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ldc_topology::Topology;

use crate::tls::Tls;
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

/// Resolves on SIGTERM or SIGINT, or, with `exit_on_stdin_eof`, when standard input
/// closes: `ldc up` holds its children's stdin open, so a supervisor that dies even
/// by SIGKILL takes its children with it instead of leaving orphans.
///
/// The handlers are installed by this call, not when the future is first polled:
/// until then SIGTERM's default action would kill the process outright, and a
/// process announces itself ready before it awaits its shutdown.
pub fn shutdown_signal(exit_on_stdin_eof: bool) -> impl Future<Output = ()> {
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move { until_signal(signals, exit_on_stdin_eof).await }
}

async fn until_signal(
    signals: (std::io::Result<Signal>, std::io::Result<Signal>),
    exit_on_stdin_eof: bool,
) {
    let stdin_closed = async {
        if !exit_on_stdin_eof {
            return std::future::pending::<()>().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 256];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let (Ok(mut term), Ok(mut int)) = signals else {
        tracing::error!("cannot install signal handlers; stopping on stdin EOF only");
        return stdin_closed.await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
        () = stdin_closed => tracing::info!("stdin closed (supervisor gone); shutting down"),
    }
}

/// Prints the one line a process writes to standard output, once its listeners are
/// bound: `ldc-listening role=cell id=a1 listen=127.0.0.1:7101 admin=127.0.0.1:7201
/// peer=127.0.0.1:7401` (`peer` for cells only). Logs go to standard error, so this
/// line is all a supervisor has to parse.
pub fn announce(
    role: &str,
    id: &str,
    listen: SocketAddr,
    admin: SocketAddr,
    peer: Option<SocketAddr>,
) {
    let peer = peer.map(|peer| format!(" peer={peer}")).unwrap_or_default();
    println!("ldc-listening role={role} id={id} listen={listen} admin={admin}{peer}");
}

/// Reads `tls`'s certificates, key and CA bundle again on every SIGHUP: new
/// connections use them, open ones keep theirs. Files that do not load are logged
/// and the ones in use stay.
pub fn reload_tls_on_sighup(tls: Arc<Tls>) {
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; certificates will not be reloaded");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!(identity = %tls.identity(), "certificates reloaded"),
                Err(err) => {
                    tracing::error!(cause = %err, "certificates not reloaded; the ones in use stay")
                }
            }
        }
    });
}

/// Loads the deploy file at `path` again on every SIGHUP. Each file that loads and
/// validates is sent on the returned channel; one that does not is logged and
/// dropped, so the last good topology stays.
pub fn reload_on_sighup(path: PathBuf, current: Arc<Topology>) -> watch::Receiver<Arc<Topology>> {
    let (reloads, receiver) = watch::channel(current);
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; the deploy file will not be reloaded");
        return receiver;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match Topology::load(&path) {
                Ok(next) => {
                    if reloads.send(Arc::new(next)).is_err() {
                        return;
                    }
                }
                Err(err) => tracing::error!(
                    file = %path.display(),
                    problems = %err,
                    "SIGHUP: the deploy file is invalid; keeping the last good one"
                ),
            }
        }
    });
    receiver
}

/// Runs `serving` to its end while applying each topology sent on `reloads` with
/// `apply`, logging the outcome.
pub async fn serve_reloading(
    serving: impl Future<Output = ()>,
    reloads: watch::Receiver<Arc<Topology>>,
    apply: impl Fn(Arc<Topology>) -> Result<(), Vec<String>>,
) {
    let reloading = async {
        apply_reloads(reloads, apply).await;
        // No more reloads (the sending side is gone): serve on.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = serving => {}
        () = reloading => {}
    }
}

/// Applies each topology sent on `reloads` with `apply`, logging the outcome, until
/// the sending side is gone.
async fn apply_reloads(
    mut reloads: watch::Receiver<Arc<Topology>>,
    apply: impl Fn(Arc<Topology>) -> Result<(), Vec<String>>,
) {
    while reloads.changed().await.is_ok() {
        let next = reloads.borrow_and_update().clone();
        let source = next.source().to_owned();
        match apply(next) {
            Ok(()) => tracing::info!(file = %source, "deploy file reloaded"),
            Err(problems) => tracing::error!(
                file = %source,
                problems = %problems.join("; "),
                "deploy file not reloaded; keeping the running topology"
            ),
        }
    }
}
