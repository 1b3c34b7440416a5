//! The cell aggregate: the topology it serves by, its own shard and the shards it
//! took over, its limits and metrics. The HTTP routes (`api`, `gz::server`), the
//! admin routes and takeover all act on it.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use ldc_serve::Connector;
use ldc_serve::tls::Tls;
use ldc_topology::{Limits, Topology};
use prometheus::Registry;

use crate::committer::SubmitError;
use crate::error::CellError;
use crate::gz::keeper;
use crate::gz::recalls::Recalls;
use crate::ledger;
use crate::metrics::{OrderMetrics, RequestCounts};
use crate::shard::Shard;
use crate::store::{Store, StoreError};

/// A cell process's state: what every request reads.
pub struct Cell<S> {
    /// Swapped on reload; a reload never moves a slot. Shared with the lease keepers.
    topology: Arc<ArcSwap<Topology>>,
    index: usize,
    /// This cell's own shard, served for the life of the process.
    own: Arc<Shard<S>>,
    /// Shards of dead cells this cell stands by for, while it holds them.
    taken: ArcSwap<Vec<Arc<Shard<S>>>>,
    /// Request limits, as the deploy file said at start.
    pub(crate) limits: Limits,
    /// With a global zone: how long a buyer waits for a lease when no unit is left.
    pub(crate) lease_wait: Option<Duration>,
    /// `Retry-After` of 503 answers.
    pub(crate) retry_after: HeaderValue,
    /// While serving the global zone: which items cells went short of lately.
    pub(crate) recalls: Recalls,
    pub(crate) requests: RequestCounts,
    pub(crate) orders: OrderMetrics,
    /// Reaches other cells (the global zone), as this cell in a secure deployment.
    pub(crate) connector: Connector,
}

impl<S> std::fmt::Debug for Cell<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cell")
            .field("id", &self.topology.load().cells()[self.index].id)
            .finish_non_exhaustive()
    }
}

/// Why a request never reached the committer.
pub(crate) fn unsubmitted(err: SubmitError) -> CellError {
    match err {
        SubmitError::Overloaded => CellError::Overloaded,
        SubmitError::Closed => CellError::Ledger(StoreError::Unavailable(
            "the cell is shutting down".to_owned(),
        )),
    }
}

impl<S: Store + 'static> Cell<S> {
    pub fn new(
        topology: Arc<Topology>,
        index: usize,
        own: Shard<S>,
        registry: &Registry,
        tls: Option<Arc<Tls>>,
    ) -> Result<Self, CellError> {
        let limits = topology.deploy().limits.clone();
        let connect_timeout = Duration::from_millis(topology.deploy().timeouts.connect_timeout_ms);
        let connector = Connector::new(tls, &topology, connect_timeout);
        let retry_after = HeaderValue::from(topology.deploy().timeouts.retry_after_s);
        let own = Arc::new(own);
        let topology = Arc::new(ArcSwap::new(topology));
        keeper::start(&own, &topology, &connector);
        let topology_now = topology.load_full();
        let lease_wait = topology_now
            .deploy()
            .global_zone
            .as_ref()
            .map(|gz| Duration::from_millis(gz.lease_wait_ms));
        Ok(Self {
            recalls: Recalls::default(),
            lease_wait,
            orders: OrderMetrics::register(registry)?,
            retry_after,
            topology,
            index,
            own,
            taken: ArcSwap::default(),
            limits,
            requests: RequestCounts::register(registry)?,
            connector,
        })
    }

    /// The topology this cell serves by now.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.load_full()
    }

    /// The topology as reloads swap it.
    pub fn topologies(&self) -> &Arc<ArcSwap<Topology>> {
        &self.topology
    }

    /// Serves by `next` from now on, if it moves no slot (see
    /// [`Topology::reload_problems`]): new standbys, addresses and settings of the
    /// takeover loop apply; listener timeouts and limits stay as they were at start.
    pub fn reload(&self, next: Arc<Topology>) -> Result<(), Vec<String>> {
        let problems = self.topology.load().reload_problems(&next);
        if !problems.is_empty() {
            return Err(problems);
        }
        self.connector.set_topology(&next);
        self.topology.store(next);
        Ok(())
    }

    /// This cell's index in the topology.
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn own(&self) -> &Arc<Shard<S>> {
        &self.own
    }

    /// The shards this cell serves for dead cells now.
    pub fn taken(&self) -> Arc<Vec<Arc<Shard<S>>>> {
        self.taken.load_full()
    }

    /// Starts serving a dead cell's shard.
    pub fn install(&self, shard: Shard<S>) {
        let shard = Arc::new(shard);
        keeper::start(&shard, &self.topology, &self.connector);
        self.taken.rcu(|taken| {
            let mut taken = Vec::clone(taken);
            taken.push(shard.clone());
            taken
        });
    }

    /// Stops routing requests to cell `cell`'s shard and hands it back; requests
    /// already inside may still hold it.
    pub fn remove(&self, cell: usize) -> Option<Arc<Shard<S>>> {
        let mut removed = None;
        self.taken.rcu(|taken| {
            let (gone, kept): (Vec<_>, Vec<_>) =
                taken.iter().cloned().partition(|shard| shard.cell == cell);
            removed = gone.into_iter().next();
            kept
        });
        removed
    }

    /// The slot of `user` and the shard it is in, if this cell serves that shard
    /// now; else the 421 naming the slot's owner by placement.
    pub(crate) fn holder(&self, user: &str) -> Result<(u32, Arc<Shard<S>>), CellError> {
        let topology = self.topology.load();
        let (slot, owner) = topology.route(user);
        if owner == self.index {
            return Ok((slot, self.own.clone()));
        }
        if let Some(shard) = self.taken.load().iter().find(|shard| shard.cell == owner) {
            return Ok((slot, shard.clone()));
        }
        let owner = &topology.cells()[owner];
        Err(CellError::WrongCell {
            slot,
            owner: owner.id.clone(),
            owner_address: (owner.advertise.port() != 0).then(|| owner.advertise.to_string()),
            epoch: topology.placement().epoch(),
        })
    }

    /// The global zone's shard, if this cell serves it now (its host, or the host's
    /// standby after a takeover).
    pub(crate) fn global_zone_shard(&self) -> Result<Arc<Shard<S>>, CellError> {
        let gz = self
            .topology
            .load()
            .global_zone()
            .ok_or(CellError::NotGlobalZone)?;
        if gz == self.index {
            return Ok(self.own.clone());
        }
        self.taken
            .load()
            .iter()
            .find(|shard| shard.cell == gz)
            .cloned()
            .ok_or(CellError::NotGlobalZone)
    }

    pub(crate) async fn submit(
        shard: &Shard<S>,
        request: impl Into<ledger::Write>,
    ) -> Result<ledger::Reply, CellError> {
        match shard.committer.submit(request).await {
            Ok(answer) => Ok(answer?),
            Err(err) => Err(unsubmitted(err)),
        }
    }
}
