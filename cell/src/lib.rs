//! A cell: one process that owns a set of slots and serves their users: accounts,
//! transfers and flash-sale orders, over its own stock cache and ledger.
//!
//! A cell trusts no router: every request names a user, and a user whose slot this
//! cell does not own at the current epoch is refused with 421 and the owner's name,
//! so a stale router can never make two cells write for one slot.

mod admin;
mod api;
mod cell;
pub mod committer;
mod error;
mod gz;
pub mod ledger;
mod lifecycle;
mod metrics;
mod peer;
mod shard;
mod stock;
pub mod store;
mod takeover;

use std::future::Future;
use std::sync::Arc;

use ldc_topology::Topology;

pub use cell::Cell;
pub use error::CellError;
pub use lifecycle::Listeners;
pub use metrics::ShardMetrics;
pub use shard::Shard;

/// Runs cell `id` of `topology` on the given listeners until `shutdown` resolves,
/// then drains. Opens and recovers the ledger before it reports ready, waiting
/// while its standby still serves its shard, and stands by for the cells that
/// name it their standby.
pub async fn run(
    topology: Arc<Topology>,
    id: &str,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CellError> {
    let index = topology
        .cell_index(id)
        .ok_or_else(|| CellError::UnknownCell(id.to_owned()))?;
    lifecycle::run(topology, index, listeners, shutdown).await
}
