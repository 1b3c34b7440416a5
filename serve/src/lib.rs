//! Process plumbing shared by the router and the cells: the serve loop with a
//! connection limit and a drain deadline, an HTTP/1.1 server for proxies, bounded
//! body reading, the admin listener, the lifecycle phase, JSON responses, the
//! shutdown signal, and mutual TLS for the peer plane.

mod admin;
mod body;
mod coalesce;
mod connect;
mod front;
mod http1;
mod idle;
mod open;
mod phase;
mod preface;
mod reply;
mod server;
mod signal;
mod stream;
#[cfg(test)]
mod testing;
pub mod tls;
mod token;

use admin::serve_with_admin;
pub use admin::{AdminPlane, AdminRoutes};
pub use body::{BodyError, content_length, read_bounded};
pub use coalesce::Coalesce;
pub use connect::Connector;
pub use front::{Answer, Handler, Served};
pub use http1::{
    ChunkError, HeadError, Http1Connection, Http1Limits, Http1Service, RequestError, serve_http1,
};
use phase::{Phase, phase_channel};
pub use reply::{Body, error_body, error_chain, json, json_bytes, json_error};
pub use server::{Accepting, MAX_CONCURRENT_STREAMS, ServeSettings, serve};
use signal::serve_reloading;
pub use signal::{announce, reload_on_sighup, reload_tls_on_sighup, shutdown_signal};
pub use stream::Stream;
pub use token::{AdminToken, Refusal, TokenError};

use std::future::Future;
use std::sync::Arc;

use ldc_topology::Topology;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Serves a process that is ready: `main`'s handler on its listener (and a cell's
/// `peer` listener) and the admin routes beside it, applying each topology sent on
/// `reloads` with `apply`, until `shutdown` resolves; then drains, the admin
/// listener last (`admin.rs`).
pub async fn serve_ready<H: Handler, P: Handler, R: AdminRoutes>(
    main: (TcpListener, Arc<H>),
    peer: Option<(TcpListener, Arc<P>)>,
    admin: (AdminPlane, R),
    settings: ServeSettings,
    reloads: watch::Receiver<Arc<Topology>>,
    apply: impl Fn(Arc<Topology>) -> Result<(), Vec<String>>,
    shutdown: impl Future<Output = ()>,
) {
    let (phase, _) = phase_channel();
    phase.send_replace(Phase::Ready);
    let serving = serve_with_admin(main, peer, admin, phase, settings, shutdown);
    serve_reloading(serving, reloads, apply).await;
}
