//! Which cell serves each shard now. Every cell's `/ready` is probed on its admin
//! listener; a ready cell lists the shards it serves with their epochs, so one probe
//! tells both health and ownership. A cell whose connection fails is ejected at
//! once (passive), and a down cell is probed with backoff. Each shard routes to the
//! healthy cell that reports it at the highest epoch; none means a fast 503.
//!
//! The view may be stale: correctness never depends on it. A cell refuses a shard it
//! does not hold with 421, and its ledger's epoch fences off a former holder.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Uri;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use ldc_serve::Connector;
use ldc_topology::{HealthConf, Topology};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

/// Largest `/ready` answer a probe reads.
const MAX_READY_BYTES: usize = 64 * 1024;
/// Least time between two probes of one cell, however often requests ask for one.
const MIN_PROBE_GAP: Duration = Duration::from_millis(10);

/// A shard's holder packed in one word: `epoch << 16 | cell + 1`; 0 when none.
fn pack(cell: usize, epoch: u64) -> u64 {
    (epoch << 16) | (cell as u64 + 1)
}

fn unpack(word: u64) -> Option<(usize, u64)> {
    let cell = word & 0xffff;
    (cell != 0).then(|| ((cell - 1) as usize, word >> 16))
}

#[derive(Debug, Deserialize)]
struct ReadyAnswer {
    #[serde(default)]
    shards: Vec<Held>,
}

#[derive(Debug, Deserialize)]
struct Held {
    cell: String,
    epoch: u64,
}

/// What the router last learned of one cell.
#[derive(Debug, Default)]
struct Probed {
    up: bool,
    /// Consecutive probe outcomes of the current kind.
    successes: u32,
    failures: u32,
    /// Shards the cell said it serves (cell index, epoch), while it is up.
    shards: Vec<(usize, u64)>,
}

struct Watched {
    ready_uri: Uri,
    state: Mutex<Probed>,
    /// Asks the cell's prober for a probe now.
    wake: Notify,
    up: IntGauge,
    probes_ok: IntCounter,
    probes_failed: IntCounter,
    ejections: IntCounter,
}

/// The router's view of the cells, shared by the probers and the proxy.
pub struct Health {
    topology: Arc<Topology>,
    conf: HealthConf,
    cells: Vec<Watched>,
    /// Per shard (by its cell's index), the packed holder.
    routes: Vec<AtomicU64>,
    /// Bumped whenever a route changes; requests waiting for a new view watch it.
    generation: watch::Sender<u64>,
    /// Cells probed at least once; the router is ready when all are.
    probed: watch::Sender<usize>,
    client: Client<Connector, Full<Bytes>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

/// A shard's entry in `/admin/topology`.
#[derive(Debug, Serialize)]
pub struct ShardView<'t> {
    pub cell: &'t str,
    pub served_by: Option<&'t str>,
    pub epoch: Option<u64>,
    pub cell_up: bool,
}

/// The health metric families, registered once per router and shared by every
/// topology it loads.
#[derive(Debug, Clone)]
pub struct HealthMetrics {
    up: IntGaugeVec,
    probes: IntCounterVec,
    ejections: IntCounterVec,
}

impl HealthMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let up = IntGaugeVec::new(
            Opts::new("ldc_router_cell_up", "1 while the router routes to a cell"),
            &["cell"],
        )?;
        let probes = IntCounterVec::new(
            Opts::new(
                "ldc_router_health_probes_total",
                "Probes of cells' /ready, by outcome",
            ),
            &["cell", "outcome"],
        )?;
        let ejections = IntCounterVec::new(
            Opts::new(
                "ldc_router_ejections_total",
                "Cells marked down at once because a connection to them failed",
            ),
            &["cell"],
        )?;
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(probes.clone()))?;
        registry.register(Box::new(ejections.clone()))?;
        Ok(Self {
            up,
            probes,
            ejections,
        })
    }
}

/// The probing tasks of one [`Health`]; they stop when this is dropped.
#[derive(Debug)]
pub struct Probers(Vec<tokio::task::AbortHandle>);

impl Drop for Probers {
    fn drop(&mut self) {
        for prober in &self.0 {
            prober.abort();
        }
    }
}

impl Health {
    /// A view of `topology`'s cells. Until every cell has answered once, shards
    /// route as in `seed` (the view of the topology this one replaces), or else
    /// each to its own cell.
    pub fn new(
        topology: Arc<Topology>,
        client: Client<Connector, Full<Bytes>>,
        metrics: &HealthMetrics,
        seed: Option<&Health>,
    ) -> Self {
        let cells = topology
            .cells()
            .iter()
            .map(|cell| Watched {
                ready_uri: format!("http://{}/ready", cell.admin)
                    .parse()
                    .unwrap_or_else(|_| Uri::from_static("http://0.0.0.0:0/ready")),
                state: Mutex::new(Probed::default()),
                wake: Notify::new(),
                up: metrics.up.with_label_values(&[&cell.id]),
                probes_ok: metrics.probes.with_label_values(&[&cell.id, "ok"]),
                probes_failed: metrics.probes.with_label_values(&[&cell.id, "failed"]),
                ejections: metrics.ejections.with_label_values(&[&cell.id]),
            })
            .collect();
        let epoch = topology.placement().epoch();
        let routes = (0..topology.cells().len())
            .map(|cell| {
                let seeded = seed.and_then(|old| old.routes.get(cell));
                AtomicU64::new(seeded.map_or(pack(cell, epoch), |r| r.load(Ordering::Acquire)))
            })
            .collect();
        Self {
            conf: topology.deploy().health.clone(),
            topology,
            cells,
            routes,
            generation: watch::Sender::new(0),
            probed: watch::Sender::new(0),
            client,
        }
    }

    /// The cell serving shard `shard` now and its epoch, if a healthy one does.
    #[inline]
    pub fn route(&self, shard: usize) -> Option<(usize, u64)> {
        unpack(self.routes[shard].load(Ordering::Acquire))
    }

    /// Starts probing every cell, until the returned [`Probers`] is dropped.
    pub fn spawn(self: &Arc<Self>) -> Probers {
        Probers(
            (0..self.cells.len())
                .map(|cell| tokio::spawn(self.clone().probe_forever(cell)).abort_handle())
                .collect(),
        )
    }

    /// Resolves once every cell was probed once, so the first routes are informed.
    pub async fn first_round(&self) {
        let n = self.cells.len();
        let mut probed = self.probed.subscribe();
        // An Err means the sender is gone; there is nothing more to wait for.
        let _ = probed.wait_for(|&count| count >= n).await;
    }

    async fn probe_forever(self: Arc<Self>, cell: usize) {
        let interval = Duration::from_millis(self.conf.interval_ms);
        let max_backoff = Duration::from_millis(self.conf.max_backoff_ms);
        let timeout = Duration::from_millis(self.conf.timeout_ms);
        let mut backoff = interval;
        let mut first = true;
        loop {
            let answer = tokio::time::timeout(timeout, self.probe(cell)).await;
            let up = self.record(cell, answer.ok().flatten());
            if first {
                first = false;
                self.probed.send_modify(|count| *count += 1);
                if *self.probed.borrow() == self.cells.len() {
                    self.recompute();
                }
            }
            backoff = if up {
                interval
            } else {
                (backoff * 2).min(max_backoff)
            };
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.cells[cell].wake.notified() => {
                    tokio::time::sleep(MIN_PROBE_GAP).await;
                }
            }
        }
    }

    /// One probe: the shards the cell serves, or `None` when it is not ready.
    async fn probe(&self, cell: usize) -> Option<Vec<(usize, u64)>> {
        let request = http::Request::get(self.cells[cell].ready_uri.clone())
            .body(Full::new(Bytes::new()))
            .ok()?;
        let response = self.client.request(request).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = http_body_util::Limited::new(response.into_body(), MAX_READY_BYTES)
            .collect()
            .await
            .ok()?
            .to_bytes();
        let answer: ReadyAnswer = serde_json::from_slice(&body).ok()?;
        Some(
            answer
                .shards
                .iter()
                .filter_map(|held| Some((self.topology.cell_index(&held.cell)?, held.epoch)))
                .collect(),
        )
    }

    /// Records a probe's outcome; returns whether the cell is up now.
    fn record(&self, cell: usize, answer: Option<Vec<(usize, u64)>>) -> bool {
        let watched = &self.cells[cell];
        let id = &self.topology.cells()[cell].id;
        let mut state = watched.state.lock().unwrap_or_else(|e| e.into_inner());
        let was_up = state.up;
        let changed = match answer {
            Some(shards) => {
                watched.probes_ok.inc();
                state.successes += 1;
                state.failures = 0;
                if !state.up && state.successes >= self.conf.rise {
                    state.up = true;
                }
                let changed = state.up && state.shards != shards;
                if state.up {
                    state.shards = shards;
                }
                changed || state.up != was_up
            }
            None => {
                watched.probes_failed.inc();
                state.failures += 1;
                state.successes = 0;
                if state.up && state.failures >= self.conf.fall {
                    state.up = false;
                    state.shards.clear();
                }
                state.up != was_up
            }
        };
        let up = state.up;
        drop(state);
        if up != was_up {
            watched.up.set(i64::from(up));
            if up {
                tracing::info!(cell = %id, "cell is up");
            } else {
                tracing::warn!(cell = %id, "cell is down");
            }
        }
        // Until every cell answered once, the first routes stand.
        if changed && *self.probed.borrow() == self.cells.len() {
            self.recompute();
        }
        up
    }

    /// Marks a cell down now because a connection to it failed, and probes it with
    /// backoff from here on.
    pub fn eject(&self, cell: usize) {
        let watched = &self.cells[cell];
        let mut state = watched.state.lock().unwrap_or_else(|e| e.into_inner());
        let was_up = state.up;
        state.up = false;
        state.successes = 0;
        state.failures = state.failures.max(self.conf.fall);
        state.shards.clear();
        drop(state);
        if was_up {
            watched.ejections.inc();
            watched.up.set(0);
            tracing::warn!(cell = %self.topology.cells()[cell].id, "connection failed; cell ejected");
            self.recompute();
        }
    }

    /// Asks for a probe of `cells` soon (at most one per cell every few ms however
    /// often this is called): a request found no holder for a shard, or a holder
    /// refused it, so the view is about to change.
    pub fn nudge(&self, cells: &[usize]) {
        for &cell in cells {
            self.cells[cell].wake.notify_one();
        }
    }

    /// Probes `cells` soon and waits (up to the probe timeout) until the view changes.
    pub async fn refresh(&self, cells: &[usize]) {
        let mut generation = self.generation.subscribe();
        generation.mark_unchanged();
        self.nudge(cells);
        let timeout = Duration::from_millis(self.conf.timeout_ms);
        // No change within the timeout leaves the view as it is.
        let _ = tokio::time::timeout(timeout, generation.changed()).await;
    }

    /// Routes every shard to the up cell that reports it at the highest epoch.
    fn recompute(&self) {
        let mut best: Vec<Option<(usize, u64)>> = vec![None; self.routes.len()];
        for (cell, watched) in self.cells.iter().enumerate() {
            let state = watched.state.lock().unwrap_or_else(|e| e.into_inner());
            if !state.up {
                continue;
            }
            for &(shard, epoch) in &state.shards {
                if best[shard].is_none_or(|(_, e)| epoch > e) {
                    best[shard] = Some((cell, epoch));
                }
            }
        }
        let mut changed = false;
        for (shard, (route, best)) in self.routes.iter().zip(best).enumerate() {
            let word = best.map_or(0, |(cell, epoch)| pack(cell, epoch));
            if route.swap(word, Ordering::AcqRel) != word {
                changed = true;
                let shard = &self.topology.cells()[shard].id;
                match best {
                    Some((cell, epoch)) => {
                        tracing::info!(shard, served_by = %self.topology.cells()[cell].id, epoch, "route changed");
                    }
                    None => tracing::warn!(shard, "no healthy cell serves this shard"),
                }
            }
        }
        if changed {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// Every shard, who serves it, and whether its own cell is up.
    pub fn view(&self) -> Vec<ShardView<'_>> {
        let cells = self.topology.cells();
        (0..self.routes.len())
            .map(|shard| {
                let route = self.route(shard);
                let cell_up = self.cells[shard]
                    .state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .up;
                ShardView {
                    cell: &cells[shard].id,
                    served_by: route.map(|(cell, _)| cells[cell].id.as_str()),
                    epoch: route.map(|(_, epoch)| epoch),
                    cell_up,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_pack_into_one_word() {
        assert_eq!(unpack(0), None);
        for (cell, epoch) in [(0, 1), (5, 7), (65_534, (1 << 48) - 1)] {
            assert_eq!(unpack(pack(cell, epoch)), Some((cell, epoch)));
        }
    }
}
