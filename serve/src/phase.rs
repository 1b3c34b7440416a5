//! The lifecycle phase a process publishes at `/ready`: starting, ready, draining.

use serde::Serialize;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Bound, but not yet serving (recovering state, warming up).
    Starting,
    Ready,
    /// Shutting down: finishing in-flight requests, taking no new ones.
    Draining,
}

pub type PhaseTx = watch::Sender<Phase>;

pub fn phase_channel() -> (PhaseTx, watch::Receiver<Phase>) {
    watch::channel(Phase::Starting)
}
