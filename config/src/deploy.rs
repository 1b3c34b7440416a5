//! The deploy-file schema, as written: serde structs with built-in defaults.
//!
//! Durations carry their unit in the key (`connect_timeout_ms`), sizes too
//! (`max_body_bytes`). Unknown keys are errors, so a typo never falls back to a default.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::auth::AuthConf;

mod defaults;

/// One deploy file: a whole deployment, from the slot count to every process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// Name of the deployment; shows in logs and later prefixes shared keyspaces.
    #[serde(default = "defaults::name")]
    pub name: String,
    /// Number of slots. Fixed for the life of a deployment: changing it moves users.
    #[serde(default = "defaults::slots")]
    pub slots: u32,
    /// Ownership epoch of every slot placed by this file.
    #[serde(default = "defaults::epoch")]
    pub epoch: u64,
    /// Root of every cell's data and of the local supervisor's run files.
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub security: SecurityConf,
    #[serde(default)]
    pub placement: PlacementConf,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub supervisor: SupervisorConf,
    #[serde(default)]
    pub proxy: ProxyConf,
    #[serde(default)]
    pub health: HealthConf,
    #[serde(default)]
    pub takeover: TakeoverConf,
    #[serde(default)]
    pub ledger: LedgerConf,
    #[serde(default)]
    pub regions: Vec<RegionConf>,
    #[serde(default)]
    pub cells: Vec<CellConf>,
    #[serde(default)]
    pub routers: Vec<RouterConf>,
    /// Explicit slot ranges pinned to a cell, applied after the ring.
    #[serde(default)]
    pub overrides: Vec<Override>,
    /// Flash-sale items. With a `[global_zone]`, cells lease an item's stock from
    /// it in chunks; without, each cell sells its weight's share (static shares).
    #[serde(default)]
    pub items: Vec<ItemConf>,
    /// The cell that hosts the global zone (item stock shared by all cells).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_zone: Option<GlobalZoneConf>,
    /// Bearer tokens the routers require on user routes; none without the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConf>,
}

/// Credentials of the deployment: the certificates of its processes and the
/// operators' admin token. Secure by default; `insecure = true` is a choice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConf {
    /// Turns TLS between processes off for the whole deployment (every process
    /// warns at start and says so in a metric). The admin token is still required.
    #[serde(default)]
    pub insecure: bool,
    /// Where the deployment CA and each process's key and certificate live;
    /// `<data_dir>/certs` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certs_dir: Option<PathBuf>,
    /// File holding the operators' bearer token for `/admin/*` routes (mode
    /// 0600); `<certs_dir>/admin.token` when absent. `ldc up` creates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementConf {
    /// Ring vnodes per unit of cell weight. Fixed for the deployment, like `slots`.
    /// 1024 keeps 8 equal cells within a few percent of their fair share.
    #[serde(default = "defaults::vnodes_per_weight")]
    pub vnodes_per_weight: u32,
}

impl Default for PlacementConf {
    fn default() -> Self {
        Self {
            vnodes_per_weight: defaults::vnodes_per_weight(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Router to cell TCP connect.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time a client gets to send a request's headers, on every listener.
    #[serde(default = "defaults::header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// An HTTP/2 connection whose client sent nothing for this long is asked to
    /// close (requests in flight finish), on every listener.
    #[serde(default = "defaults::http2_idle_timeout_ms")]
    pub http2_idle_timeout_ms: u64,
    /// Router: from receiving a request to the cell's response headers.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// How long a stopping process lets in-flight requests finish.
    #[serde(default = "defaults::drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Idle pooled router-to-cell connections are closed after this.
    #[serde(default = "defaults::pool_idle_timeout_ms")]
    pub pool_idle_timeout_ms: u64,
    /// `Retry-After` sent with 503 when a cell cannot be reached.
    #[serde(default = "defaults::retry_after_s")]
    pub retry_after_s: u64,
    /// A TLS handshake on a cell's listeners must finish within this.
    #[serde(default = "defaults::tls_handshake_timeout_ms")]
    pub tls_handshake_timeout_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_timeout_ms: defaults::connect_timeout_ms(),
            header_read_timeout_ms: defaults::header_read_timeout_ms(),
            http2_idle_timeout_ms: defaults::http2_idle_timeout_ms(),
            request_timeout_ms: defaults::request_timeout_ms(),
            drain_timeout_ms: defaults::drain_timeout_ms(),
            pool_idle_timeout_ms: defaults::pool_idle_timeout_ms(),
            retry_after_s: defaults::retry_after_s(),
            tls_handshake_timeout_ms: defaults::tls_handshake_timeout_ms(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body a router or cell accepts (413 above).
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: u64,
    /// Open client connections per listener; at the bound, a new connection closes
    /// the one quiet longest.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: u32,
    /// Idle keep-alive connections a router keeps to each cell.
    #[serde(default = "defaults::pool_max_idle_per_cell")]
    pub pool_max_idle_per_cell: u32,
    /// Largest `quantity` of one order.
    #[serde(default = "defaults::max_order_quantity")]
    pub max_order_quantity: u32,
    /// Largest page a list endpoint (orders, journal) returns.
    #[serde(default = "defaults::max_page")]
    pub max_page: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: defaults::max_body_bytes(),
            max_connections: defaults::max_connections(),
            pool_max_idle_per_cell: defaults::pool_max_idle_per_cell(),
            max_order_quantity: defaults::max_order_quantity(),
            max_page: defaults::max_page(),
        }
    }
}

/// Settings of `ldc up`, the local supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConf {
    /// First wait before restarting a dead child; doubles per quick death.
    #[serde(default = "defaults::restart_backoff_initial_ms")]
    pub restart_backoff_initial_ms: u64,
    #[serde(default = "defaults::restart_backoff_max_ms")]
    pub restart_backoff_max_ms: u64,
    /// How long a child may take to answer `/ready` before `ldc up` gives up on it.
    #[serde(default = "defaults::ready_timeout_ms")]
    pub ready_timeout_ms: u64,
}

impl Default for SupervisorConf {
    fn default() -> Self {
        Self {
            restart_backoff_initial_ms: defaults::restart_backoff_initial_ms(),
            restart_backoff_max_ms: defaults::restart_backoff_max_ms(),
            ready_timeout_ms: defaults::ready_timeout_ms(),
        }
    }
}

/// How routers talk to cells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConf {
    /// HTTP/2 (ALPN `h2` over mutual TLS, or prior knowledge in an insecure
    /// deployment) to cells: every request to a cell over
    /// one multiplexed connection. On 2 cores it cut the router's CPU per request by
    /// a fifth against HTTP/1.1 keep-alive; `false` for cells behind an HTTP/1.1-only hop.
    #[serde(default = "defaults::http2_to_cells")]
    pub http2_to_cells: bool,
}

impl Default for ProxyConf {
    fn default() -> Self {
        Self {
            http2_to_cells: defaults::http2_to_cells(),
        }
    }
}

/// How routers check cells: active probes of each cell's `/ready`, plus passive
/// ejection when a connection to a cell fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConf {
    /// Time between probes of a healthy cell.
    #[serde(default = "defaults::health_interval_ms")]
    pub interval_ms: u64,
    /// A probe not answered within this counts as failed.
    #[serde(default = "defaults::health_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive failed probes that mark a cell down.
    #[serde(default = "defaults::health_fall")]
    pub fall: u32,
    /// Consecutive good probes that mark a down cell up again.
    #[serde(default = "defaults::health_rise")]
    pub rise: u32,
    /// Probes of a down cell back off, doubling from `interval_ms` up to this.
    #[serde(default = "defaults::health_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

impl Default for HealthConf {
    fn default() -> Self {
        Self {
            interval_ms: defaults::health_interval_ms(),
            timeout_ms: defaults::health_timeout_ms(),
            fall: defaults::health_fall(),
            rise: defaults::health_rise(),
            max_backoff_ms: defaults::health_max_backoff_ms(),
        }
    }
}

/// How a standby takes over a dead cell's shard and hands it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TakeoverConf {
    /// How often a standby checks whether the cells it stands by for are running.
    #[serde(default = "defaults::takeover_poll_ms")]
    pub poll_ms: u64,
    /// On failback, how long the standby waits for requests inside the shard
    /// before it closes the shard anyway (the shard closes when they finish).
    #[serde(default = "defaults::release_timeout_ms")]
    pub release_timeout_ms: u64,
    /// A cell the standby has not seen running since the standby started is left
    /// this long to start before its shard is taken over.
    #[serde(default = "defaults::startup_grace_ms")]
    pub startup_grace_ms: u64,
    /// Shared ledgers (TiKV) only: how long a cell's hold on its shard, and its
    /// presence, last without renewal (renewed every third of it). A standby takes
    /// over a shard whose hold and whose cell's presence have both run out.
    #[serde(default = "defaults::lease_ms")]
    pub lease_ms: u64,
}

impl Default for TakeoverConf {
    fn default() -> Self {
        Self {
            poll_ms: defaults::takeover_poll_ms(),
            release_timeout_ms: defaults::release_timeout_ms(),
            startup_grace_ms: defaults::startup_grace_ms(),
            lease_ms: defaults::lease_ms(),
        }
    }
}

/// The cells' ledgers and their group commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConf {
    #[serde(default)]
    pub backend: LedgerBackend,
    /// Most requests applied in one store transaction and one durable commit.
    #[serde(default = "defaults::batch_max")]
    pub batch_max: u32,
    /// How long the committer waits for more requests once it has one, before it
    /// commits a batch that is not full.
    #[serde(default = "defaults::batch_wait_us")]
    pub batch_wait_us: u64,
    /// Requests waiting for the committer; beyond it, writes get 503 `overloaded`.
    #[serde(default = "defaults::queue_capacity")]
    pub queue_capacity: u32,
    /// `backend = "tikv"`: the PD endpoints of the TiKV cluster (`host:port`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pd_endpoints: Vec<String>,
    /// `backend = "tikv"`: bound on every call to the cluster, so an outage fails
    /// writes with 503 instead of hanging them.
    #[serde(default = "defaults::op_timeout_ms")]
    pub op_timeout_ms: u64,
    /// Times a batch whose commit hit a write conflict is applied again.
    #[serde(default = "defaults::conflict_retries")]
    pub conflict_retries: u32,
    /// `backend = "tikv"`: how a batch's transaction commits.
    #[serde(default)]
    pub commit: TikvCommit,
}

impl Default for LedgerConf {
    fn default() -> Self {
        Self {
            backend: LedgerBackend::default(),
            batch_max: defaults::batch_max(),
            batch_wait_us: defaults::batch_wait_us(),
            queue_capacity: defaults::queue_capacity(),
            pd_endpoints: Vec::new(),
            op_timeout_ms: defaults::op_timeout_ms(),
            conflict_retries: defaults::conflict_retries(),
            commit: TikvCommit::default(),
        }
    }
}

/// How a TiKV transaction commits. They differ in round trips before the commit is
/// acknowledged, and in what a reader can settle after the writer dies
/// (docs/operations.md, "Commit modes").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TikvCommit {
    /// Prewrite every key, then commit the primary: two round trips.
    #[default]
    TwoPhase,
    /// Acknowledged once every prewrite succeeded; the commit finishes in the
    /// background (TiKV's async commit). Refused by validation: with tikv-client
    /// 0.4, readers cannot settle a dead writer's async-commit locks.
    Async,
    /// One round trip when every key is in one region (a cell's batch usually is);
    /// falls back to two phases otherwise.
    OnePc,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerBackend {
    /// A fjall database in the cell's data directory.
    #[default]
    Embedded,
    /// A shared TiKV cluster, through `tikv-client`.
    Tikv,
}

/// The global zone: each item's total stock lives in the ledger of one cell (and
/// moves with its shard to its standby); cells lease it in chunks sized by demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalZoneConf {
    /// The cell hosting the global zone.
    pub cell: String,
    /// How often each cell asks the global zone for its items' state (new items,
    /// sold out everywhere, closed): the delay of that news.
    #[serde(default = "defaults::gz_poll_ms")]
    pub poll_ms: u64,
    /// Smallest chunk a cell asks for.
    #[serde(default = "defaults::lease_min")]
    pub lease_min: u64,
    /// Largest chunk a cell asks for.
    #[serde(default = "defaults::lease_max")]
    pub lease_max: u64,
    /// A chunk is sized to last about this long at the cell's current rate of sale;
    /// the next is asked for when half of it is left.
    #[serde(default = "defaults::lease_horizon_ms")]
    pub lease_horizon_ms: u64,
    /// How long a buyer at a cell with no units left waits for a lease in flight
    /// before the order is answered 503.
    #[serde(default = "defaults::lease_wait_ms")]
    pub lease_wait_ms: u64,
    /// Bound on one call from a cell to the global zone.
    #[serde(default = "defaults::gz_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

/// A flash-sale item. Prices are integers in minor units (cents, fen).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemConf {
    pub id: String,
    pub name: String,
    pub price: u64,
    pub stock: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConf {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellConf {
    pub id: String,
    pub region: String,
    /// Address the cell binds for user traffic. Port 0 lets `ldc up` pick one.
    pub listen: String,
    /// Address routers use to reach the cell; `listen` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Address of the cell's admin listener (`/metrics`, `/health`, `/ready`).
    pub admin: String,
    /// Address of the cell's peer listener, where other cells reach it (the
    /// global zone's items and leases). When absent, port 0 on `listen`'s host:
    /// `ldc up` picks a free one. Required with a `[global_zone]` when `listen`
    /// names a port, since other cells could not find an unnamed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    /// Cell that takes this cell's slots over when it is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<String>,
    /// The cell's ledger directory; `<data_dir>/<id>` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConf {
    pub id: String,
    pub region: String,
    pub listen: String,
    pub admin: String,
}

/// Slots `from..=to` belong to `cell`, whatever the ring says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub from: u32,
    /// Last slot of the range, inclusive; `from` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u32>,
    pub cell: String,
}

impl Override {
    pub fn last(&self) -> u32 {
        self.to.unwrap_or(self.from)
    }
}
