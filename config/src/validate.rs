//! Validation of a parsed deploy file: every key and value checked, each fault a [`Problem`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use crate::deploy::{Deploy, LedgerBackend, TikvCommit};
use crate::error::Problem;
use crate::spec::{CellSpec, RouterSpec};
use crate::user::is_valid_user_id;

mod auth;

/// Largest `slots` a deployment may have.
const MAX_SLOTS: u32 = 65_536;
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

/// Checks every key of `deploy`: the cells and routers it names, or every problem found.
pub(crate) fn validate(deploy: &Deploy) -> Result<(Vec<CellSpec>, Vec<RouterSpec>), Vec<Problem>> {
    let mut check = Checker::default();
    let specs = check.deploy(deploy);
    if check.problems.is_empty() {
        Ok(specs)
    } else {
        Err(check.problems)
    }
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
        if let Some(auth) = &d.auth {
            self.auth(auth);
        }
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
            (
                "timeouts.tls_handshake_timeout_ms",
                t.tls_handshake_timeout_ms,
            ),
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
        if d.ledger.commit == TikvCommit::Async {
            self.problem(
                "ledger.commit",
                "\"async\" is refused: an async commit is acknowledged before any key is \
                 committed, and when its writer dies no reader settles its locks (tikv-client 0.4 \
                 never checks the secondaries; TiKV never rolls such a lock back), so a killed \
                 cell's acknowledged writes stay unreadable; use \"two_phase\" or \"one_pc\" \
                 (docs/operations.md, \"Commit modes\")",
            );
        } else if d.ledger.backend == LedgerBackend::Embedded
            && d.ledger.commit != TikvCommit::default()
        {
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
            let peer = match (&c.peer, listen) {
                (Some(peer), _) => self.address(at("peer"), peer),
                (None, Some(listen)) if listen.port() == 0 || d.global_zone.is_none() => {
                    Some(SocketAddr::new(listen.ip(), 0))
                }
                (None, Some(_)) => {
                    self.problem(
                        at("peer"),
                        "required with a [global_zone] when listen has a port: the address \
                         other cells reach this cell on",
                    );
                    None
                }
                (None, None) => None,
            };
            if let (Some(listen), Some(advertise), Some(admin), Some(peer)) =
                (listen, advertise, admin, peer)
            {
                cells.push(CellSpec {
                    id: c.id.clone(),
                    region: c.region.clone(),
                    listen,
                    advertise,
                    admin,
                    peer,
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
