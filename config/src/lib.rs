//! Deploy files of an ldc deployment: the schema, loading, validation and placement.
//!
//! A deploy file names regions, cells and routers. Every process loads the same file,
//! validates it into a [`Topology`] and derives the same [`Placement`] from it, so the
//! routers and the cells agree on which cell owns which slot without talking.

mod auth;
mod deploy;
mod error;
mod hash;
mod placement;
mod routes;
mod spec;
mod summary;
mod topology;
mod user;
mod validate;

pub use auth::{AuthConf, AuthKeyConf, JwtAlgorithm};
pub use deploy::{
    CellConf, Deploy, GlobalZoneConf, HealthConf, ItemConf, LedgerBackend, LedgerConf, Limits,
    Override, PlacementConf, RegionConf, RouterConf, SecurityConf, SupervisorConf, TakeoverConf,
    TikvCommit, Timeouts,
};
pub use error::{ConfigError, Problem};
pub use hash::{SLOT_HASH_SEED, slot_of};
pub use placement::Placement;
pub use routes::{RouteMiss, USER_ROUTES, user_route};
pub use spec::{CellSpec, RouterSpec};
pub use summary::{CellSummary, RegionSummary, RouterSummary, Summary};
pub use topology::Topology;
pub use user::{is_valid_user_id, split_user_path};
pub use validate::MAX_MONEY;

/// Exit code for a bad deploy file or bad command-line use (BSD `EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;
