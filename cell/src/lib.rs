//! A cell: one process that owns a set of slots and serves their users.
//!
//! A cell trusts no router: every request names a user, and a user whose slot this
//! cell does not own at the current epoch is refused with 421 and the owner's name,
//! so a stale router can never make two cells write for one slot.

mod api;
mod error;

use std::future::Future;
use std::sync::Arc;

use ldc_serve::{AdminRoutes, Body, Phase, ServeSettings, json, phase_channel, serve_with_admin};
use ldc_topology::Topology;
use prometheus::Registry;
use tokio::net::TcpListener;

pub use api::Cell;
pub use error::CellError;

/// Runs cell `id` of `topology` on the given listeners until `shutdown` resolves,
/// then drains.
pub async fn run(
    topology: Arc<Topology>,
    id: &str,
    listener: TcpListener,
    admin: TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CellError> {
    let settings = ServeSettings::from_deploy(topology.deploy());
    let cell = Arc::new(Cell::new(topology, id, &registry)?);
    let (phase, _) = phase_channel();
    phase.send_replace(Phase::Ready);
    tracing::info!(cell = id, slots = cell.owned_slots(), "ready");
    let routes = TopologyRoute(cell.clone());
    serve_with_admin(
        (listener, cell),
        (admin, registry, routes),
        phase,
        settings,
        shutdown,
    )
    .await;
    Ok(())
}

/// `/admin/topology`: the placement this cell checks ownership against.
struct TopologyRoute(Arc<Cell>);

impl AdminRoutes for TopologyRoute {
    fn get(&self, path: &str) -> Option<http::Response<Body>> {
        (path == "/admin/topology")
            .then(|| json(http::StatusCode::OK, &self.0.topology().summary()))
    }
}
