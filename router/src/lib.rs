//! The routing tier: hashes each user id to a slot and each slot to its cell, and
//! proxies the request there over pooled keep-alive connections.
//!
//! A router holds no state but the topology; any number of them may run, in any
//! region, and they agree on every route because they read the same deploy file.

mod error;
mod metrics;
mod proxy;

use std::future::Future;
use std::sync::Arc;

use ldc_serve::{AdminRoutes, Body, Phase, ServeSettings, json, phase_channel, serve_with_admin};
use ldc_topology::Topology;
use prometheus::Registry;
use tokio::net::TcpListener;

pub use error::RouteError;
pub use proxy::Proxy;

/// Runs a router on the given listeners until `shutdown` resolves, then drains.
pub async fn run(
    topology: Arc<Topology>,
    listener: TcpListener,
    admin: TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()>,
) -> Result<(), prometheus::Error> {
    let settings = ServeSettings::from_deploy(topology.deploy());
    let proxy = Arc::new(Proxy::new(topology, &registry)?);
    let (phase, _) = phase_channel();
    phase.send_replace(Phase::Ready);
    let routes = TopologyRoute(proxy.clone());
    serve_with_admin(
        (listener, proxy),
        (admin, registry, routes),
        phase,
        settings,
        shutdown,
    )
    .await;
    Ok(())
}

/// `/admin/topology`: the placement this router routes by.
struct TopologyRoute(Arc<Proxy>);

impl AdminRoutes for TopologyRoute {
    async fn get(&self, path: &str) -> Option<http::Response<Body>> {
        (path == "/admin/topology")
            .then(|| json(http::StatusCode::OK, &self.0.topology().summary()))
    }
}
