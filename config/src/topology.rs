//! Loading and validating a deploy file into a [`Topology`]: typed addresses, cell
//! indices instead of names, and the placement every process derives from it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};

use crate::deploy::{Deploy, LedgerBackend, TikvCommit};
use crate::placement::Placement;

/// Largest `slots` a deployment may have.
pub const MAX_SLOTS: u32 = 65_536;
/// Cap on `ledger.batch_wait_us`: a second of waiting is a stall, not a batch.
const MAX_BATCH_WAIT_US: u64 = 1_000_000;
/// Twice the interval of a router's pings to its cells' HTTP/2 connections.
const MIN_HTTP2_IDLE_TIMEOUT_MS: u64 = 10_000;
/// Cap on money amounts, prices and stock: keeps every sum of a few of them far from
/// `i64::MAX`.
pub const MAX_MONEY: u64 = 1_000_000_000_000_000;
/// Cap on `placement.vnodes_per_weight`.
const MAX_VNODES_PER_WEIGHT: u32 = 4_096;
/// Cap on a cell's `weight`.
const MAX_WEIGHT: u32 = 1_000;
/// Cap on the ring's total vnodes. `consistent_hash_ring` inserts vnodes one at a
/// time into a sorted Vec, so building takes time quadratic in their number: about
/// 1.1 s in release at this cap (64 cells of weight 1 at the default 1024 vnodes).
const MAX_RING_VNODES: u64 = 65_536;

/// Why a deploy file was refused. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{}", render_problems(.file, .problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

/// One thing wrong with a deploy file: the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

fn render_problems(file: &str, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{file}: {}: {}", p.key, p.message))
        .collect();
    lines.join("\n")
}

/// A cell of a validated topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellSpec {
    pub id: String,
    pub region: String,
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub admin: SocketAddr,
    pub weight: u32,
    /// Index of the standby cell.
    pub standby: Option<usize>,
    /// Where the cell's ledger lives.
    pub data_dir: PathBuf,
}

/// A router of a validated topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSpec {
    pub id: String,
    pub region: String,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

/// A validated deploy file and the placement derived from it.
#[derive(Debug, Clone)]
pub struct Topology {
    source: String,
    deploy: Deploy,
    cells: Vec<CellSpec>,
    routers: Vec<RouterSpec>,
    placement: Placement,
}

impl Topology {
    /// Loads `path` in layers (built-in defaults, the file, then `LDC_` environment
    /// variables: `LDC_SLOTS`, `LDC_TIMEOUTS__CONNECT_TIMEOUT_MS`, ...) and validates it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, None)
    }

    /// Like [`Topology::load`], with the environment given as a map instead of read
    /// from the process (for tests).
    pub fn load_with_env(
        path: &Path,
        env: Option<HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let parse_error = |err: config::ConfigError| ConfigError::Parse {
            file: file.clone(),
            message: format!("{err} (keys come from the file and from LDC_ environment variables)"),
        };
        if !path.is_file() {
            return Err(ConfigError::Parse {
                file,
                message: "no such file".to_owned(),
            });
        }
        let deploy: Deploy = Config::builder()
            .add_source(File::from(path).format(FileFormat::Toml))
            .add_source(
                Environment::with_prefix("LDC")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("ledger.pd_endpoints")
                    .source(env),
            )
            .build()
            .map_err(parse_error)?
            .try_deserialize()
            .map_err(parse_error)?;
        Self::from_deploy(file, deploy)
    }

    /// Parses a deploy file's text, without environment overrides.
    pub fn from_toml_str(source: impl Into<String>, text: &str) -> Result<Self, ConfigError> {
        let source = source.into();
        let deploy: Deploy = Config::builder()
            .add_source(File::from_str(text, FileFormat::Toml))
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|err| ConfigError::Parse {
                file: source.clone(),
                message: err.to_string(),
            })?;
        Self::from_deploy(source, deploy)
    }

    /// Validates a parsed deploy file; `source` names it in error messages.
    pub fn from_deploy(source: impl Into<String>, deploy: Deploy) -> Result<Self, ConfigError> {
        let source = source.into();
        let mut check = Checker::default();
        let (cells, routers) = check.deploy(&deploy);
        if !check.problems.is_empty() {
            return Err(ConfigError::Invalid {
                file: source,
                problems: check.problems,
            });
        }
        let index: HashMap<&str, usize> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.as_str(), i))
            .collect();
        let weights: Vec<(&str, u32)> = cells.iter().map(|c| (c.id.as_str(), c.weight)).collect();
        let overrides: Vec<_> = deploy
            .overrides
            .iter()
            .map(|o| (o.from..=o.last(), index[o.cell.as_str()]))
            .collect();
        let placement = Placement::build(
            &weights,
            deploy.slots,
            deploy.placement.vnodes_per_weight,
            &overrides,
            deploy.epoch,
        );
        Ok(Self {
            source,
            deploy,
            cells,
            routers,
            placement,
        })
    }

    /// The file this topology came from, for messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn deploy(&self) -> &Deploy {
        &self.deploy
    }

    pub fn cells(&self) -> &[CellSpec] {
        &self.cells
    }

    pub fn routers(&self) -> &[RouterSpec] {
        &self.routers
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    pub fn cell_index(&self, id: &str) -> Option<usize> {
        self.cells.iter().position(|c| c.id == id)
    }

    pub fn router(&self, id: &str) -> Option<&RouterSpec> {
        self.routers.iter().find(|r| r.id == id)
    }

    /// Region ids in file order.
    pub fn regions(&self) -> impl Iterator<Item = &str> {
        self.deploy.regions.iter().map(|r| r.id.as_str())
    }

    /// The slot of `user_id` and the index of the cell that owns it.
    #[inline]
    pub fn route(&self, user_id: &str) -> (u32, usize) {
        let slot = self.placement.slot_of(user_id);
        (slot, self.placement.owner(slot))
    }

    /// The cell that owns `slot`. Panics if `slot` is out of range.
    pub fn owner(&self, slot: u32) -> &CellSpec {
        &self.cells[self.placement.owner(slot)]
    }

    /// Number of slots each cell owns, indexed like [`Topology::cells`].
    pub fn slots_per_cell(&self) -> Vec<u32> {
        self.placement.slots_per_cell(self.cells.len())
    }

    /// The index of the cell hosting the global zone, if the deployment has one.
    pub fn global_zone(&self) -> Option<usize> {
        let gz = self.deploy.global_zone.as_ref()?;
        self.cell_index(&gz.cell)
    }

    /// Each cell's share of `stock` units by weight, indexed like [`Topology::cells`]:
    /// the integer part of the weighted share, plus one unit each to the cells with
    /// the largest remainders (ties to the earlier cell), so shares sum to `stock`.
    pub fn stock_shares(&self, stock: u64) -> Vec<u64> {
        let total: u128 = self.cells.iter().map(|c| u128::from(c.weight)).sum();
        let exact: Vec<(u64, u128)> = self
            .cells
            .iter()
            .map(|c| {
                let weighted = u128::from(stock) * u128::from(c.weight);
                ((weighted / total) as u64, weighted % total)
            })
            .collect();
        let mut shares: Vec<u64> = exact.iter().map(|(share, _)| *share).collect();
        let left = stock - shares.iter().sum::<u64>();
        let mut order: Vec<usize> = (0..exact.len()).collect();
        order.sort_by(|a, b| exact[*b].1.cmp(&exact[*a].1).then(a.cmp(b)));
        for index in order.into_iter().take(left as usize) {
            shares[index] += 1;
        }
        shares
    }

    /// The deploy file as TOML, e.g. after filling in addresses.
    pub fn to_toml(&self) -> String {
        toml_string(&self.deploy)
    }

    /// Why a running process cannot switch from this topology to `next`, if it
    /// cannot. A reload may change addresses, standbys, health, takeover, timeouts
    /// and limits; it may not move a slot, since a slot's data stays in the ledger of
    /// the cell that owned it (there is no slot migration yet), nor change what the
    /// ledgers already recorded (items' stock shares, backends, data directories).
    pub fn reload_problems(&self, next: &Topology) -> Vec<String> {
        let (now, then) = (&self.deploy, &next.deploy);
        let mut problems = Vec::new();
        let ids = |t: &Topology| t.cells.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        if ids(self) != ids(next) {
            problems.push(format!(
                "cells: {:?} would become {:?}; adding, removing or reordering cells moves slots",
                ids(self),
                ids(next)
            ));
        } else {
            let moved = (0..now.slots.min(then.slots))
                .filter(|&slot| self.placement.owner(slot) != next.placement.owner(slot))
                .count();
            if now.slots != then.slots || moved > 0 {
                problems.push(format!(
                    "placement: {moved} slots would move (weights, overrides, vnodes or slots changed)"
                ));
            }
            for (a, b) in self.cells.iter().zip(&next.cells) {
                if a.data_dir != b.data_dir {
                    problems.push(format!(
                        "cells.{}.data_dir: cannot change while running",
                        a.id
                    ));
                }
            }
        }
        if now.items != then.items {
            problems.push("items: stock shares are recorded in the ledgers once".to_owned());
        }
        if now.global_zone != then.global_zone {
            problems.push(
                "global_zone: cannot change while running (its lease loops start with the cell)"
                    .to_owned(),
            );
        }
        if now.ledger.backend != then.ledger.backend || now.name != then.name {
            problems.push("name, ledger.backend: cannot change while running".to_owned());
        }
        if now.epoch != then.epoch {
            problems.push("epoch: cannot change while running".to_owned());
        }
        problems
    }
}

fn toml_string(deploy: &Deploy) -> String {
    // Serializing our own plain structs cannot fail: no maps with non-string keys,
    // no values TOML lacks.
    toml::to_string_pretty(deploy).unwrap_or_else(|err| format!("# unserializable: {err}\n"))
}

/// Whether `id` is a valid user id (and cell, router or region id):
/// `[A-Za-z0-9_-]{1,64}`.
#[inline]
pub fn is_valid_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Splits `/v1/users/{user_id}/rest` into the user id (unvalidated) and the rest of
/// the path after it (`""` or starting with `/`).
#[inline]
pub fn split_user_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1/users/")?;
    Some(rest.split_at(rest.find('/').unwrap_or(rest.len())))
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
    /// Every concrete address seen so far, with the key that named it.
    addresses: HashMap<SocketAddr, String>,
}

impl Checker {
    fn problem(&mut self, key: impl Into<String>, message: impl fmt::Display) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.to_string(),
        });
    }

    fn deploy(&mut self, d: &Deploy) -> (Vec<CellSpec>, Vec<RouterSpec>) {
        if !is_valid_user_id(&d.name) {
            self.problem("name", "must match [A-Za-z0-9_-]{1,64}");
        }
        if d.slots == 0 || d.slots > MAX_SLOTS {
            self.problem(
                "slots",
                format!("must be between 1 and {MAX_SLOTS} (got {})", d.slots),
            );
        }
        let vnodes = d.placement.vnodes_per_weight;
        if vnodes == 0 || vnodes > MAX_VNODES_PER_WEIGHT {
            self.problem(
                "placement.vnodes_per_weight",
                format!("must be between 1 and {MAX_VNODES_PER_WEIGHT} (got {vnodes})"),
            );
        }
        self.positive_settings(d);
        let regions = self.regions(d);
        let cells = self.cells(d, &regions);
        let routers = self.routers(d, &regions, &cells);
        self.overrides(d);
        self.items(d);
        self.global_zone(d, &cells);
        self.data_dirs(&cells);
        (cells, routers)
    }

    fn positive_settings(&mut self, d: &Deploy) {
        let t = &d.timeouts;
        let l = &d.limits;
        let s = &d.supervisor;
        let settings = [
            ("timeouts.connect_timeout_ms", t.connect_timeout_ms),
            ("timeouts.header_read_timeout_ms", t.header_read_timeout_ms),
            ("timeouts.request_timeout_ms", t.request_timeout_ms),
            ("timeouts.drain_timeout_ms", t.drain_timeout_ms),
            ("timeouts.pool_idle_timeout_ms", t.pool_idle_timeout_ms),
            ("timeouts.retry_after_s", t.retry_after_s),
            ("limits.max_body_bytes", l.max_body_bytes),
            ("limits.max_connections", u64::from(l.max_connections)),
            (
                "limits.pool_max_idle_per_cell",
                u64::from(l.pool_max_idle_per_cell),
            ),
            ("limits.max_order_quantity", u64::from(l.max_order_quantity)),
            ("limits.max_page", u64::from(l.max_page)),
            ("ledger.batch_max", u64::from(d.ledger.batch_max)),
            ("ledger.queue_capacity", u64::from(d.ledger.queue_capacity)),
            ("ledger.op_timeout_ms", d.ledger.op_timeout_ms),
            (
                "supervisor.restart_backoff_initial_ms",
                s.restart_backoff_initial_ms,
            ),
            (
                "supervisor.restart_backoff_max_ms",
                s.restart_backoff_max_ms,
            ),
            ("supervisor.ready_timeout_ms", s.ready_timeout_ms),
            ("health.interval_ms", d.health.interval_ms),
            ("health.timeout_ms", d.health.timeout_ms),
            ("health.fall", u64::from(d.health.fall)),
            ("health.rise", u64::from(d.health.rise)),
            ("health.max_backoff_ms", d.health.max_backoff_ms),
            ("takeover.poll_ms", d.takeover.poll_ms),
            ("takeover.release_timeout_ms", d.takeover.release_timeout_ms),
            ("takeover.lease_ms", d.takeover.lease_ms),
        ];
        for (key, value) in settings {
            if value == 0 {
                self.problem(key, "must be greater than 0");
            }
        }
        if d.timeouts.http2_idle_timeout_ms < MIN_HTTP2_IDLE_TIMEOUT_MS {
            self.problem(
                "timeouts.http2_idle_timeout_ms",
                format!(
                    "at least {MIN_HTTP2_IDLE_TIMEOUT_MS}, twice the interval of the router's pings to cells, so that an idle router's connections are not closed between pings (got {})",
                    d.timeouts.http2_idle_timeout_ms
                ),
            );
        }
        if d.takeover.lease_ms < d.takeover.poll_ms.saturating_mul(3) {
            self.problem(
                "takeover.lease_ms",
                format!(
                    "at least 3 x takeover.poll_ms ({} ms), so a hold is renewed before it runs out",
                    d.takeover.poll_ms.saturating_mul(3)
                ),
            );
        }
        if d.ledger.batch_wait_us > MAX_BATCH_WAIT_US {
            self.problem(
                "ledger.batch_wait_us",
                format!(
                    "at most {MAX_BATCH_WAIT_US} (got {})",
                    d.ledger.batch_wait_us
                ),
            );
        }
        match (d.ledger.backend, d.ledger.pd_endpoints.is_empty()) {
            (LedgerBackend::Tikv, true) => self.problem(
                "ledger.pd_endpoints",
                "backend = \"tikv\" needs the PD endpoints, e.g. [\"127.0.0.1:2379\"]",
            ),
            (LedgerBackend::Embedded, false) => {
                self.problem("ledger.pd_endpoints", "only used with backend = \"tikv\"")
            }
            _ => {}
        }
        if d.ledger.backend == LedgerBackend::Embedded && d.ledger.commit != TikvCommit::default() {
            self.problem("ledger.commit", "only used with backend = \"tikv\"");
        }
        for (i, endpoint) in d.ledger.pd_endpoints.iter().enumerate() {
            let valid = endpoint
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                self.problem(
                    format!("ledger.pd_endpoints[{i}]"),
                    format!("{endpoint:?} is not host:port"),
                );
            }
        }
        if d.health.max_backoff_ms < d.health.interval_ms {
            self.problem(
                "health.max_backoff_ms",
                "must not be less than health.interval_ms",
            );
        }
        if s.restart_backoff_max_ms < s.restart_backoff_initial_ms {
            self.problem(
                "supervisor.restart_backoff_max_ms",
                "must not be less than supervisor.restart_backoff_initial_ms",
            );
        }
    }

    fn regions<'d>(&mut self, d: &'d Deploy) -> HashSet<&'d str> {
        let mut seen = HashSet::new();
        for (i, region) in d.regions.iter().enumerate() {
            let key = format!("regions[{i}].id");
            if !is_valid_user_id(&region.id) {
                self.problem(key, "must match [A-Za-z0-9_-]{1,64}");
            } else if !seen.insert(region.id.as_str()) {
                self.problem(key, format!("duplicate region id {:?}", region.id));
            }
        }
        seen
    }

    fn cells(&mut self, d: &Deploy, regions: &HashSet<&str>) -> Vec<CellSpec> {
        if d.cells.is_empty() {
            self.problem("cells", "a deployment needs at least one cell");
        }
        if d.cells.len() > usize::from(u16::MAX) {
            self.problem("cells", format!("at most {} cells", u16::MAX));
        }
        let ids: HashMap<&str, usize> = d
            .cells
            .iter()
            .enumerate()
            .rev()
            .map(|(i, c)| (c.id.as_str(), i))
            .collect();
        let mut cells = Vec::with_capacity(d.cells.len());
        let mut total_vnodes = 0u64;
        for (i, c) in d.cells.iter().enumerate() {
            let at = |field: &str| format!("cells[{i}].{field}");
            if !is_valid_user_id(&c.id) {
                self.problem(at("id"), "must match [A-Za-z0-9_-]{1,64}");
            } else if ids[c.id.as_str()] != i {
                self.problem(at("id"), format!("duplicate cell id {:?}", c.id));
            }
            if !regions.contains(c.region.as_str()) {
                self.problem(at("region"), format!("unknown region {:?}", c.region));
            }
            if c.weight == 0 || c.weight > MAX_WEIGHT {
                self.problem(
                    at("weight"),
                    format!("must be between 1 and {MAX_WEIGHT} (got {})", c.weight),
                );
            }
            total_vnodes += u64::from(c.weight) * u64::from(d.placement.vnodes_per_weight);
            let standby = match &c.standby {
                None => None,
                Some(s) if *s == c.id => {
                    self.problem(at("standby"), "a cell cannot be its own standby");
                    None
                }
                Some(s) => match ids.get(s.as_str()) {
                    Some(&j) => Some(j),
                    None => {
                        self.problem(at("standby"), format!("unknown cell {s:?}"));
                        None
                    }
                },
            };
            let listen = self.address(at("listen"), &c.listen);
            let advertise = match &c.advertise {
                Some(a) if Some(a) != Some(&c.listen) => self.address(at("advertise"), a),
                _ => listen,
            };
            let admin = self.address(at("admin"), &c.admin);
            if let (Some(listen), Some(advertise), Some(admin)) = (listen, advertise, admin) {
                cells.push(CellSpec {
                    id: c.id.clone(),
                    region: c.region.clone(),
                    listen,
                    advertise,
                    admin,
                    weight: c.weight,
                    standby,
                    data_dir: c.data_dir.clone().unwrap_or_else(|| d.data_dir.join(&c.id)),
                });
            }
        }
        if total_vnodes > MAX_RING_VNODES {
            self.problem(
                "placement.vnodes_per_weight",
                format!(
                    "the ring would have {total_vnodes} vnodes (sum of weights times \
                     vnodes_per_weight); the limit is {MAX_RING_VNODES}"
                ),
            );
        }
        cells
    }

    fn routers(
        &mut self,
        d: &Deploy,
        regions: &HashSet<&str>,
        cells: &[CellSpec],
    ) -> Vec<RouterSpec> {
        let mut ids: HashSet<&str> = cells.iter().map(|c| c.id.as_str()).collect();
        let mut routers = Vec::with_capacity(d.routers.len());
        for (i, r) in d.routers.iter().enumerate() {
            let at = |field: &str| format!("routers[{i}].{field}");
            if !is_valid_user_id(&r.id) {
                self.problem(at("id"), "must match [A-Za-z0-9_-]{1,64}");
            } else if !ids.insert(r.id.as_str()) {
                self.problem(
                    at("id"),
                    format!(
                        "duplicate id {:?} (cells and routers share one namespace)",
                        r.id
                    ),
                );
            }
            if !regions.contains(r.region.as_str()) {
                self.problem(at("region"), format!("unknown region {:?}", r.region));
            }
            let listen = self.address(at("listen"), &r.listen);
            let admin = self.address(at("admin"), &r.admin);
            if let (Some(listen), Some(admin)) = (listen, admin) {
                routers.push(RouterSpec {
                    id: r.id.clone(),
                    region: r.region.clone(),
                    listen,
                    admin,
                });
            }
        }
        routers
    }

    fn overrides(&mut self, d: &Deploy) {
        let mut taken: Vec<(u32, u32, usize)> = Vec::new();
        for (i, o) in d.overrides.iter().enumerate() {
            let at = |field: &str| format!("overrides[{i}].{field}");
            if !d.cells.iter().any(|c| c.id == o.cell) {
                self.problem(at("cell"), format!("unknown cell {:?}", o.cell));
            }
            let (from, to) = (o.from, o.last());
            if to < from {
                self.problem(at("to"), format!("must not be less than from ({from})"));
                continue;
            }
            if to >= d.slots {
                self.problem(
                    at("to"),
                    format!("slot {to} is out of range (slots = {})", d.slots),
                );
                continue;
            }
            if let Some((_, _, j)) = taken.iter().find(|(f, t, _)| from <= *t && *f <= to) {
                self.problem(at("from"), format!("overlaps overrides[{j}]"));
            }
            taken.push((from, to, i));
        }
    }

    fn items(&mut self, d: &Deploy) {
        let mut seen = HashSet::new();
        for (i, item) in d.items.iter().enumerate() {
            let at = |field: &str| format!("items[{i}].{field}");
            if !is_valid_user_id(&item.id) {
                self.problem(at("id"), "must match [A-Za-z0-9_-]{1,64}");
            } else if !seen.insert(item.id.as_str()) {
                self.problem(at("id"), format!("duplicate item id {:?}", item.id));
            }
            if item.name.is_empty() || item.name.len() > 200 {
                self.problem(at("name"), "must be 1 to 200 bytes");
            }
            if item.price == 0 || item.price > MAX_MONEY {
                self.problem(
                    at("price"),
                    format!(
                        "must be between 1 and {MAX_MONEY} minor units (got {})",
                        item.price
                    ),
                );
            }
            if item.stock > MAX_MONEY {
                self.problem(
                    at("stock"),
                    format!("at most {MAX_MONEY} (got {})", item.stock),
                );
            }
        }
    }

    fn global_zone(&mut self, d: &Deploy, cells: &[CellSpec]) {
        let Some(gz) = &d.global_zone else {
            return;
        };
        if !cells.iter().any(|c| c.id == gz.cell) {
            self.problem(
                "global_zone.cell",
                format!("no cell {:?} in [[cells]]", gz.cell),
            );
        }
        let settings = [
            ("global_zone.poll_ms", gz.poll_ms),
            ("global_zone.lease_min", gz.lease_min),
            ("global_zone.lease_horizon_ms", gz.lease_horizon_ms),
            ("global_zone.lease_wait_ms", gz.lease_wait_ms),
            ("global_zone.request_timeout_ms", gz.request_timeout_ms),
        ];
        for (key, value) in settings {
            if value == 0 {
                self.problem(key, "must be greater than 0");
            }
        }
        if gz.lease_max < gz.lease_min || gz.lease_max > MAX_MONEY {
            self.problem(
                "global_zone.lease_max",
                format!("must be from global_zone.lease_min to {MAX_MONEY}"),
            );
        }
    }

    fn data_dirs(&mut self, cells: &[CellSpec]) {
        let mut seen: HashMap<&Path, &str> = HashMap::new();
        for (i, cell) in cells.iter().enumerate() {
            if let Some(other) = seen.insert(&cell.data_dir, &cell.id) {
                self.problem(
                    format!("cells[{i}].data_dir"),
                    format!("{} is also cell {other}'s", cell.data_dir.display()),
                );
            }
        }
    }

    /// Parses an address and checks that no other key names it (port 0 excepted:
    /// each such listener gets its own port when it binds).
    fn address(&mut self, key: String, text: &str) -> Option<SocketAddr> {
        let addr = match text.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                self.problem(
                    key,
                    format!("{text:?} is not an address like 127.0.0.1:7000"),
                );
                return None;
            }
        };
        if addr.port() != 0 {
            if let Some(first) = self.addresses.get(&addr) {
                let message = format!("address {addr} is already used by {first}");
                self.problem(key, message);
            } else {
                self.addresses.insert(addr, key);
            }
        }
        Some(addr)
    }
}
