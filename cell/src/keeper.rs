//! The lease keeper: one task per shard that keeps the shard's stock cache supplied
//! from the global zone. It leases a chunk when an item falls to its low-water mark,
//! finishes leases a crash left pending, learns new items, sold-out-everywhere and
//! closed sales by polling, and gives unused units back when a sale closes.
//!
//! Polling rather than push: the global zone needs no list of live cells, a cell
//! that was down catches up with its first poll, and the news it carries (a new
//! item, units back in the global account) is never needed faster than a poll
//! interval; selling from the local quota never waits for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ldc_topology::{GlobalZoneConf, Topology};
use prometheus::{HistogramVec, IntCounterVec};
use serde::Deserialize;
use serde_json::json;

use crate::ledger::{ItemMeta, Stock, StockWrite, Write};
use crate::shard::Shard;
use crate::stock::{ItemStock, StockCache};
use crate::store::Store;

/// A chunk lasting `horizon` at `rate` units per second, within `min..=max`.
pub fn chunk_size(rate: f64, horizon: Duration, min: u64, max: u64) -> u64 {
    let wanted = (rate * horizon.as_secs_f64()).ceil();
    (wanted.clamp(0.0, max as f64) as u64).clamp(min, max)
}

/// Shortest window a rate of sale is measured over.
const RATE_WINDOW: Duration = Duration::from_millis(100);

/// An item's rate of sale at this shard, smoothed.
#[derive(Debug)]
struct Demand {
    since: Instant,
    taken: u64,
    rate: f64,
    /// The last chunk asked for.
    last_chunk: u64,
    /// Units taken at the last poll: unchanged means no sale in between.
    taken_at_poll: u64,
    /// Unmet orders at the last poll: more now means demand the global zone
    /// should hear of.
    unmet_at_poll: u64,
    /// After units were recalled: (taken, unmet) then. No lease until either
    /// grows, so recalled units are not leased straight back.
    held_back: Option<(u64, u64)>,
    /// When this shard last told the global zone it wanted more of the item: a
    /// recall then is for its sake, not from it.
    wanted_at: Option<Instant>,
}

/// The keeper's metrics, children of the process's per-shard families.
#[derive(Debug, Clone)]
pub struct KeeperMetrics {
    /// `ldc_cell_leases_total{shard, outcome}`: granted, empty, returned, failed.
    pub leases: IntCounterVec,
    /// `ldc_cell_lease_seconds{shard}`: one call to the global zone.
    pub lease_seconds: HistogramVec,
}

/// How the global zone answers a lease or a poll.
#[derive(Debug, Deserialize)]
struct GzItemState {
    item_id: String,
    name: String,
    price: i64,
    available: u64,
    closed: bool,
    /// Units of the lease (absent in a poll).
    #[serde(default)]
    units: i64,
    /// In a poll: another cell ran out and nothing is left to lease; a cell
    /// holding units it does not sell gives them back.
    #[serde(default)]
    recall: bool,
}

#[derive(Debug, Deserialize)]
struct GzItems {
    items: Vec<GzItemState>,
}

/// A lease the ledger recorded: its number and units.
#[derive(Debug, Deserialize)]
struct Recorded {
    seq: u64,
    units: i64,
}

/// Calls to the global zone: its cell first, then its standby (which serves it
/// after a takeover), sticking to whichever answered last.
struct GzClient {
    client: Client<HttpConnector, Full<Bytes>>,
    /// Addresses come from the topology at each call: a reload may fill them in.
    topology: Arc<ArcSwap<Topology>>,
    gz: usize,
    current: usize,
    timeout: Duration,
}

impl GzClient {
    fn new(topology: Arc<ArcSwap<Topology>>, gz: usize, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            topology,
            gz,
            current: 0,
            timeout,
        }
    }

    /// The global zone's cell and its standby, where known (`ldc up` fills in
    /// ports bound at start with a reload).
    fn addresses(&self) -> Vec<SocketAddr> {
        let topology = self.topology.load();
        let cell = &topology.cells()[self.gz];
        std::iter::once(cell.advertise)
            .chain(cell.standby.map(|s| topology.cells()[s].advertise))
            .filter(|address| address.port() != 0)
            .collect()
    }

    /// Sends to each address in turn until one serves the global zone; returns
    /// its status and body.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), String> {
        let mut last = String::new();
        let addresses = self.addresses();
        for attempt in 0..addresses.len() {
            let index = (self.current + attempt) % addresses.len();
            let address = addresses[index];
            let request = Request::builder()
                .method(method.clone())
                .uri(format!("http://{address}{path}"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.clone().unwrap_or_default())))
                .map_err(|err| err.to_string())?;
            let answer = tokio::time::timeout(self.timeout, async {
                let response = self
                    .client
                    .request(request)
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                Ok::<_, String>((status, body))
            })
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)));
            match answer {
                Ok((status, _))
                    if status == StatusCode::MISDIRECTED_REQUEST
                        || status == StatusCode::SERVICE_UNAVAILABLE =>
                {
                    last = format!("{address} answered {status}");
                }
                Ok(answer) => {
                    self.current = index;
                    return Ok(answer);
                }
                Err(err) => last = format!("{address}: {err}"),
            }
        }
        Err(last)
    }

    /// The global zone's items; `wanting` names items this shard turned buyers
    /// away for since its last poll (the global zone then recalls idle units).
    async fn items(&mut self, wanting: &[String]) -> Result<Vec<GzItemState>, String> {
        let path = match wanting {
            [] => "/v1/gz/items".to_owned(),
            items => format!("/v1/gz/items?wanting={}", items.join(",")),
        };
        let (status, body) = self.call(Method::GET, &path, None).await?;
        if status != StatusCode::OK {
            return Err(format!("poll answered {status}"));
        }
        let items: GzItems = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok(items.items)
    }

    async fn lease(
        &mut self,
        item_id: &str,
        cell: &str,
        seq: u64,
        units: i64,
    ) -> Result<GzItemState, String> {
        let body = json!({"item_id": item_id, "cell": cell, "seq": seq, "units": units});
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/gz/leases",
                Some(body.to_string().into_bytes()),
            )
            .await?;
        if !status.is_success() {
            return Err(format!(
                "lease {seq} of {item_id} answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    }
}

pub struct Keeper {
    client: GzClient,
    settings: GlobalZoneConf,
    /// The shard's cell: leases are numbered per (item, shard), whoever serves it.
    shard_id: String,
    demand: HashMap<String, Demand>,
    /// No call to the global zone before this, after one failed.
    quiet_until: Option<Instant>,
    metrics: KeeperMetrics,
}

impl Keeper {
    /// The keeper of `shard`, if the deployment has a global zone.
    pub fn new(
        topologies: &Arc<ArcSwap<Topology>>,
        shard_cell: usize,
        metrics: KeeperMetrics,
    ) -> Option<Self> {
        let topology = topologies.load();
        let gz = topology.global_zone()?;
        let settings = topology.deploy().global_zone.clone()?;
        let timeout = Duration::from_millis(settings.request_timeout_ms);
        Some(Self {
            client: GzClient::new(topologies.clone(), gz, timeout),
            settings,
            shard_id: topology.cells()[shard_cell].id.clone(),
            demand: HashMap::new(),
            quiet_until: None,
            metrics,
        })
    }

    /// Keeps `shard` supplied until it is dropped (released to its owner, or the
    /// process ends). Holds it only while it works, never while it waits.
    pub async fn run<S: Store>(mut self, shard: Weak<Shard<S>>, stock: Arc<StockCache>) {
        let poll = Duration::from_millis(self.settings.poll_ms);
        let mut next_poll = Instant::now();
        loop {
            let Some(shard) = shard.upgrade() else {
                return;
            };
            if self.client.addresses().is_empty() {
                drop(shard);
                tokio::time::sleep(poll).await;
                continue;
            }
            let keeping = stock.keeping.lock().await;
            if stock.keeping_stopped() {
                return;
            }
            if Instant::now() >= next_poll {
                for idle in self.poll(&stock).await {
                    self.give_back_item(&shard, &idle).await;
                }
                next_poll = Instant::now() + poll;
            }
            for item in stock.items() {
                self.keep(&shard, &item).await;
            }
            drop((keeping, shard));
            tokio::select! {
                () = stock.wake.notified() => {}
                () = tokio::time::sleep_until(next_poll.into()) => {}
            }
        }
    }

    /// Gives back every unit the shard holds, as on a closed sale (graceful
    /// shutdown): units stay at this cell, durable, when the global zone is out of
    /// reach.
    pub async fn give_back<S: Store>(&mut self, shard: &Shard<S>) {
        let _keeping = shard.stock.keeping.lock().await;
        // The running keeper stops at its next turn instead of leasing again.
        shard.stock.stop_keeping();
        for item in shard.stock.items() {
            if let Some((seq, units)) = item.pending() {
                self.finish(shard, &item, seq, units).await;
            }
            self.give_back_item(shard, &item).await;
        }
    }

    /// How long a recall lasts at the global zone (see the cell API): a few polls.
    fn recall_window(&self) -> Duration {
        Duration::from_millis(self.settings.poll_ms.saturating_mul(4))
    }

    fn quiet(&self) -> bool {
        self.quiet_until.is_some_and(|until| Instant::now() < until)
    }

    fn failed(&mut self, what: &str, cause: &str) {
        self.metrics
            .leases
            .with_label_values(&[&self.shard_id, "failed"])
            .inc();
        if !self.quiet() {
            tracing::warn!(shard = %self.shard_id, %cause, "{what} failed; retrying");
        }
        self.quiet_until = Some(Instant::now() + Duration::from_millis(self.settings.poll_ms));
    }

    /// Reads the global zone's items into the stock cache; returns the items
    /// recalled that this shard holds and sold none of since the last poll.
    async fn poll(&mut self, stock: &StockCache) -> Vec<Arc<ItemStock>> {
        let mut wanting = Vec::new();
        for item in stock.items() {
            if let Some(demand) = self.demand.get_mut(&item.id) {
                let unmet = item.unmet();
                if unmet > demand.unmet_at_poll {
                    wanting.push(item.id.clone());
                    demand.wanted_at = Some(Instant::now());
                }
                demand.unmet_at_poll = unmet;
            }
        }
        let items = match self.client.items(&wanting).await {
            Ok(items) => items,
            Err(cause) => {
                self.failed("polling the global zone", &cause);
                return Vec::new();
            }
        };
        let window = self.recall_window();
        let mut idle = Vec::new();
        for state in items {
            stock.add((
                state.item_id.clone(),
                state.name,
                state.price,
                Stock::default(),
            ));
            let Some(item) = stock.item(&state.item_id) else {
                continue;
            };
            item.set_global(state.available, state.closed);
            let taken = item.received().saturating_sub(item.remaining());
            if let Some(demand) = self.demand.get_mut(&item.id) {
                let unsold = demand.taken_at_poll == taken;
                demand.taken_at_poll = taken;
                let wanting_here = demand.wanted_at.is_some_and(|at| at.elapsed() < window);
                if state.recall
                    && unsold
                    && !wanting_here
                    && item.remaining() > 0
                    && item.pending().is_none()
                {
                    demand.held_back = Some((taken, item.unmet()));
                    idle.push(item);
                }
            }
        }
        idle
    }

    async fn keep<S: Store>(&mut self, shard: &Shard<S>, item: &ItemStock) {
        if let Some((seq, units)) = item.pending() {
            if !self.quiet() {
                self.finish(shard, item, seq, units).await;
            }
            return;
        }
        if item.closed() {
            self.give_back_item(shard, item).await;
            return;
        }
        let chunk = self.chunk(item);
        item.set_low_water(chunk / 2);
        if item.exhausted() || !item.low() || self.quiet() || self.held_back(item) {
            return;
        }
        if let Some(demand) = self.demand.get_mut(&item.id) {
            demand.last_chunk = chunk;
        }
        if let Some((seq, units)) = self.begin(shard, item, chunk as i64).await {
            self.finish(shard, item, seq, units).await;
        }
    }

    /// Whether `item`'s units were recalled and nobody has wanted it here since.
    fn held_back(&mut self, item: &ItemStock) -> bool {
        let Some(demand) = self.demand.get_mut(&item.id) else {
            return false;
        };
        let now = (
            item.received().saturating_sub(item.remaining()),
            item.unmet(),
        );
        match demand.held_back {
            Some(then) if then == now => true,
            _ => {
                demand.held_back = None;
                false
            }
        }
    }

    /// The next chunk for `item`: its rate of sale over the lease horizon, doubled
    /// from the last one when the cell ran dry (buyers waiting hide the demand).
    fn chunk(&mut self, item: &ItemStock) -> u64 {
        let taken = item.received().saturating_sub(item.remaining());
        let now = Instant::now();
        let demand = self.demand.entry(item.id.clone()).or_insert(Demand {
            since: now,
            taken,
            rate: 0.0,
            last_chunk: 0,
            taken_at_poll: taken,
            unmet_at_poll: item.unmet(),
            held_back: None,
            wanted_at: None,
        });
        let elapsed = now.duration_since(demand.since);
        if elapsed >= RATE_WINDOW {
            let rate = taken.saturating_sub(demand.taken) as f64 / elapsed.as_secs_f64();
            demand.rate = if demand.rate == 0.0 {
                rate
            } else {
                (demand.rate + rate) / 2.0
            };
            demand.since = now;
            demand.taken = taken;
        }
        let settings = &self.settings;
        let horizon = Duration::from_millis(settings.lease_horizon_ms);
        let by_rate = chunk_size(demand.rate, horizon, settings.lease_min, settings.lease_max);
        if item.sold_out() {
            by_rate.max(demand.last_chunk.saturating_mul(2).min(settings.lease_max))
        } else {
            by_rate
        }
    }

    async fn give_back_item<S: Store>(&mut self, shard: &Shard<S>, item: &ItemStock) {
        if item.pending().is_some() {
            // That lease first; its answer may be units this cell must hold.
            return;
        }
        let units = item.take_all();
        if units == 0 {
            return;
        }
        match self.begin(shard, item, -(units as i64)).await {
            Some((seq, units)) => self.finish(shard, item, seq, units).await,
            None => item.release_units(units),
        }
    }

    /// Records lease `units` in the shard's ledger and returns its number, or
    /// `None` when it was not recorded (another lease is pending: the cache learns
    /// of it, and it is finished first).
    async fn begin<S: Store>(
        &mut self,
        shard: &Shard<S>,
        item: &ItemStock,
        units: i64,
    ) -> Option<(u64, i64)> {
        let meta = ItemMeta {
            name: item.name.clone(),
            price: item.price,
        };
        let write = Write::Stock(StockWrite::Begin {
            item_id: item.id.clone(),
            meta,
            units,
        });
        let reply = match shard.committer.submit(write).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(err)) => {
                self.failed("recording a lease", &err.to_string());
                // The commit may have landed all the same: the ledger says.
                return self.recorded(shard, item, units).await;
            }
            Err(err) => {
                self.failed("recording a lease", &format!("{err:?}"));
                return None;
            }
        };
        if !reply.status.is_success() {
            tracing::warn!(item = %item.id, body = %String::from_utf8_lossy(&reply.body), "lease not recorded");
            return None;
        }
        let recorded: Recorded = serde_json::from_slice(&reply.body).ok()?;
        item.set_pending(Some((recorded.seq, recorded.units)));
        reply.applied.then_some((recorded.seq, recorded.units))
    }

    /// After a `Begin` whose outcome is unknown: the lease the ledger has pending,
    /// if it is one of `units`; any other pending lease goes to the cache.
    async fn recorded<S: Store>(
        &mut self,
        shard: &Shard<S>,
        item: &ItemStock,
        units: i64,
    ) -> Option<(u64, i64)> {
        let mut snapshot = shard.store.snapshot().await.ok()?;
        let pending = crate::ledger::stock(&mut snapshot, &item.id)
            .await
            .ok()?
            .pending?;
        item.set_pending(Some((pending.seq, pending.units)));
        (pending.units == units).then_some((pending.seq, pending.units))
    }

    /// Asks the global zone for lease `seq` (again, after a crash: it answers the
    /// same) and records its answer.
    async fn finish<S: Store>(&mut self, shard: &Shard<S>, item: &ItemStock, seq: u64, units: i64) {
        let started = Instant::now();
        let answer = self
            .client
            .lease(&item.id, &self.shard_id, seq, units)
            .await;
        self.metrics
            .lease_seconds
            .with_label_values(&[&self.shard_id])
            .observe(started.elapsed().as_secs_f64());
        let answer = match answer {
            Ok(answer) => answer,
            Err(cause) => return self.failed("a lease", &cause),
        };
        let write = Write::Stock(StockWrite::Finish {
            item_id: item.id.clone(),
            seq,
            units: answer.units,
        });
        match shard.committer.submit(write).await {
            // Recorded now, or by an earlier `Finish` whose commit was reported
            // failed but landed: the cache still has it pending either way (one
            // keeper works a shard at a time, and a restart rebuilds the cache from
            // the ledger), so its units go to the cache now.
            Ok(Ok(reply)) if reply.status.is_success() => {}
            Ok(Ok(reply)) => {
                tracing::error!(item = %item.id, seq, body = %String::from_utf8_lossy(&reply.body), "the ledger refused a lease answer");
                return self.failed("recording a lease answer", "refused");
            }
            Ok(Err(err)) => return self.failed("recording a lease answer", &err.to_string()),
            Err(err) => return self.failed("recording a lease answer", &format!("{err:?}")),
        }
        item.set_pending(None);
        self.quiet_until = None;
        let outcome = match answer.units {
            0 => "empty",
            n if n > 0 => {
                item.add_leased(n as u64);
                "granted"
            }
            n => {
                item.returned(n.unsigned_abs());
                "returned"
            }
        };
        self.metrics
            .leases
            .with_label_values(&[&self.shard_id, outcome])
            .inc();
        item.set_global(answer.available, answer.closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_the_rate_of_sale_within_bounds() {
        let second = Duration::from_secs(1);
        assert_eq!(
            chunk_size(0.0, second, 10, 1_000),
            10,
            "no demand: the least"
        );
        assert_eq!(chunk_size(250.0, second, 10, 1_000), 250);
        assert_eq!(chunk_size(250.0, second / 2, 10, 1_000), 125);
        assert_eq!(
            chunk_size(1e9, second, 10, 1_000),
            1_000,
            "never above the most"
        );
    }
}
