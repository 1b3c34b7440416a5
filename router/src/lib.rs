//! The routing tier: hashes each user id to a slot and each slot to its cell, and
//! proxies the request there over HTTP/2 (or pooled HTTP/1.1) connections, to the
//! cell's standby while the cell is down.
//!
//! A router holds no state but the topology; any number of them may run, in any
//! region, and they agree on every route because they read the same deploy file.

mod auth;
mod channel;
mod error;
mod health;
mod hop;
mod metrics;
mod proxy;
mod retry;
mod upstream;

use std::future::Future;
use std::sync::Arc;

use ldc_serve::tls::Tls;
use ldc_serve::{AdminPlane, AdminRoutes, Body, ServeSettings, json, serve_ready};
use ldc_topology::Topology;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use auth::{AuthError, Refusal, Verified, Verifier};
pub use error::{RouteError, StartError};
pub use metrics::AuthMetrics;
pub use proxy::Proxy;

/// Runs a router on the given listeners until `shutdown` resolves, then drains;
/// it reaches cells as `tls`'s identity (plain TCP in an insecure deployment).
/// Each topology sent on `reloads` replaces the running one if it moves no slot.
pub async fn run(
    topology: Arc<Topology>,
    listener: TcpListener,
    admin: AdminPlane,
    tls: Option<Arc<Tls>>,
    reloads: watch::Receiver<Arc<Topology>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let settings = ServeSettings::from_deploy(topology.deploy());
    let proxy = Arc::new(Proxy::new(topology, &admin.registry, tls)?);
    // Ready once every cell was probed, so the first routes are informed ones.
    proxy.health().first_round().await;
    let routes = TopologyRoute(proxy.clone());
    serve_ready(
        (listener, proxy.clone()),
        None::<(TcpListener, Arc<Proxy>)>,
        (admin, routes),
        settings,
        reloads,
        |next| proxy.reload(next),
        shutdown,
    )
    .await;
    Ok(())
}

/// `/admin/topology`: the placement this router routes by, and who serves each
/// shard now.
struct TopologyRoute(Arc<Proxy>);

impl AdminRoutes for TopologyRoute {
    async fn get(&self, path: &str) -> Option<http::Response<Body>> {
        (path == "/admin/topology").then(|| {
            let mut summary = serde_json::json!(self.0.topology().summary());
            summary["shards"] = serde_json::json!(self.0.health().view());
            json(http::StatusCode::OK, &summary)
        })
    }
}
