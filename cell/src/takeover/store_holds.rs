//! Takeover and failback over a store every cell shares (TiKV), where nothing like a
//! file lock drops when a process dies. Records in each cell's keys carry it
//! instead (see `ledger::hold`), timed by the store's clock (PD's), so hosts need
//! not agree on the time:
//!
//! - A cell's process says it runs (*presence*) from its start, renewed every third
//!   of `takeover.lease_ms`.
//! - Whoever serves a shard *holds* it, renewed at the same pace. A claim is refused
//!   while another cell's hold runs, and a renewal fails once another cell claimed
//!   the shard: a cell that loses its own shard that way exits, so it comes back
//!   through its supervisor and waits for the shard like any returning cell.
//! - A standby takes a shard over when both the hold and the cell's presence ran out
//!   (a cell that never ran has nothing to take). It hands the shard back when the
//!   cell says it runs again: drains it, commits its last batch, sets the hold to 0;
//!   the returning cell, trying all along, then claims it at a higher epoch.
//! - A cell stopping gracefully sets its presence and holds to 0 once drained, so its
//!   standby need not wait for them to run out.
//!
//! Writes stay safe whatever the clocks and timings do: every write batch checks the
//! ownership record, which each claim raises to a new epoch.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ldc_topology::Topology;

use super::{Backing, Witness};
use crate::cell::Cell;
use crate::error::CellError;
use crate::ledger::{hold, keys};
use crate::metrics::ShardMetrics;
use crate::shard::Shard;
use crate::store::{Snapshot, Store, StoreError, Transaction};

/// The shared store as one cell's standby sees it: every cell's keys, through one
/// client.
pub struct Records<S> {
    /// Each cell's store, by cell index.
    stores: Vec<S>,
    /// This cell's id: the owner it writes in holds.
    me: String,
    hold_ms: u64,
}

impl<S: Store + Clone> Records<S> {
    pub fn new(stores: Vec<S>, me: &str, hold_ms: u64) -> Self {
        Self {
            stores,
            me: me.to_owned(),
            hold_ms,
        }
    }

    /// Whether `primary`'s presence runs at the store's clock.
    async fn present(&self, primary: usize) -> Result<bool, StoreError> {
        let store = &self.stores[primary];
        let now_ms = store.clock_ms().await?;
        let mut snapshot = store.snapshot().await?;
        Ok(hold::present_until(&mut snapshot).await? > now_ms)
    }
}

impl<S: Store + Clone> Witness<S> for Records<S> {
    async fn running(&self, primary: usize) -> bool {
        // A store that cannot be read says nothing runs; taking over then fails
        // at the claim, which needs the store too.
        self.present(primary).await.unwrap_or(false)
    }

    async fn ran(&self, primary: usize) -> bool {
        let Ok(mut snapshot) = self.stores[primary].snapshot().await else {
            return false;
        };
        snapshot
            .get(&keys::owner())
            .await
            .is_ok_and(|record| record.is_some())
    }

    async fn store(&self, primary: usize) -> Result<Option<S>, StoreError> {
        Ok(Some(self.stores[primary].clone()))
    }

    fn hold_ms(&self) -> Option<u64> {
        Some(self.hold_ms)
    }

    async fn released(&self, primary: usize, epoch: u64) {
        if let Err(err) = set_hold(&self.stores[primary], &self.me, epoch, 0).await {
            // The cell waits for the hold to run out instead: `lease_ms` at most.
            tracing::warn!(shard = primary, %err, "could not hand the hold back");
        }
    }
}

/// Sets `owner`'s hold at `epoch` to run until `until_ms` (0: handed over); fenced
/// once another cell claimed the shard.
async fn set_hold<S: Store>(
    store: &S,
    owner: &str,
    epoch: u64,
    until_ms: u64,
) -> Result<(), StoreError> {
    let mut txn = store.begin().await?;
    if let Err(err) = hold::renew(&mut txn, owner, epoch, until_ms).await {
        txn.rollback().await?;
        return Err(err);
    }
    txn.commit().await
}

/// Says that this cell's process runs, every third of `hold_ms`, for as long as it
/// is polled. Never ends.
pub async fn announce<S: Store>(store: S, hold_ms: u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(hold_ms / 3));
    let mut failing = false;
    loop {
        tick.tick().await;
        let announced = async {
            let until_ms = store.clock_ms().await?.saturating_add(hold_ms);
            let mut txn = store.begin().await?;
            hold::announce(&mut txn, until_ms).await?;
            txn.commit().await
        };
        match announced.await {
            Ok(()) => failing = false,
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(%err, "could not renew this cell's presence; retrying");
            }
            Err(_) => {}
        }
    }
}

/// Opens the cell's own shard once no other cell holds it: at once after a crash
/// whose hold ran out, else once the standby hands it back (it sees this cell's
/// presence) or its hold runs out.
pub async fn open_own<S: Store + Clone>(
    topology: &Topology,
    index: usize,
    store: S,
    hold_ms: u64,
    poll: Duration,
    metrics: &ShardMetrics,
) -> Result<Shard<S>, CellError> {
    let id = &topology.cells()[index].id;
    let started = Instant::now();
    let mut waiting = false;
    loop {
        match Shard::open(topology, index, id, store.clone(), Some(hold_ms), metrics).await {
            Ok(shard) => {
                if waiting {
                    tracing::info!(
                        waited_ms = started.elapsed().as_millis() as u64,
                        "the standby handed the shard back"
                    );
                }
                return Ok(shard);
            }
            // Held, or a renewal of the hold raced the claim.
            Err(CellError::Ledger(err @ (StoreError::Held(_) | StoreError::Conflict(_)))) => {
                if !waiting {
                    tracing::info!(%err, "waiting for the shard to be handed back");
                    waiting = true;
                }
                tokio::time::sleep(poll).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Renews the hold of every shard this process serves, every third of `hold_ms`.
/// Ends only when another cell claimed this cell's own shard (after a hold ran out
/// while this process was cut off or stalled): the cell must then stop.
pub async fn renew<S: Store>(cell: Arc<Cell<S>>, hold_ms: u64) -> CellError {
    let me = cell.topology().cells()[cell.index()].id.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(hold_ms / 3));
    let mut failing = false;
    loop {
        tick.tick().await;
        let shards: Vec<_> = std::iter::once(cell.own().clone())
            .chain(cell.taken().iter().cloned())
            .collect();
        for shard in shards {
            let renewed = async {
                let until_ms = shard.store.clock_ms().await?.saturating_add(hold_ms);
                set_hold(&shard.store, &me, shard.epoch, until_ms).await
            };
            match renewed.await {
                Ok(()) => failing = false,
                Err(err @ StoreError::Fenced(_)) if shard.cell == cell.index() => {
                    tracing::error!(%err, "another cell claimed this cell's shard; stopping");
                    return CellError::Ledger(err);
                }
                Err(err @ StoreError::Fenced(_)) => {
                    tracing::warn!(shard = shard.cell, %err, "another cell claimed a shard taken over here; dropping it");
                    cell.remove(shard.cell);
                }
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(%err, "could not renew a hold; retrying");
                }
                Err(_) => {}
            }
        }
    }
}

/// After a graceful stop has drained: this cell no longer runs, and no longer holds
/// any shard, so standbys take over at their next poll.
pub async fn leave<S: Store>(cell: &Cell<S>) {
    let me = cell.topology().cells()[cell.index()].id.clone();
    let own = cell.own().clone();
    let left = async {
        let mut txn = own.store.begin().await?;
        hold::announce(&mut txn, 0).await?;
        txn.commit().await?;
        for shard in std::iter::once(own.clone()).chain(cell.taken().iter().cloned()) {
            set_hold(&shard.store, &me, shard.epoch, 0).await?;
        }
        Ok::<_, StoreError>(())
    };
    if let Err(err) = left.await {
        tracing::warn!(%err, "could not hand the holds over; standbys wait for them to run out");
    }
}

/// A cell over a store every cell shares: its presence and holds are records in
/// the store.
#[derive(Debug)]
pub struct SharedStore<S> {
    /// Each cell's store, by cell index.
    stores: Vec<S>,
    index: usize,
    /// This cell's id: the owner it writes in holds.
    me: String,
    hold_ms: u64,
    poll: Duration,
}

impl<S: Store + Clone> SharedStore<S> {
    /// Cell `index` (`me`) of `stores`, holding what it serves for `hold_ms` at a
    /// time and trying its own shard every `poll` while another cell holds it.
    pub fn new(stores: Vec<S>, index: usize, me: &str, hold_ms: u64, poll: Duration) -> Self {
        Self {
            stores,
            index,
            me: me.to_owned(),
            hold_ms,
            poll,
        }
    }
}

impl<S: Store + Clone + 'static> Backing for SharedStore<S> {
    type Store = S;
    type Witness = Records<S>;

    fn presence(&self) -> impl Future<Output = ()> {
        announce(self.stores[self.index].clone(), self.hold_ms)
    }

    async fn open_own(
        &self,
        topology: &Topology,
        index: usize,
        metrics: &ShardMetrics,
    ) -> Result<Shard<S>, CellError> {
        let store = self.stores[index].clone();
        open_own(topology, index, store, self.hold_ms, self.poll, metrics).await
    }

    fn witness(&self) -> Records<S> {
        Records::new(self.stores.clone(), &self.me, self.hold_ms)
    }

    fn keep(&self, cell: Arc<Cell<S>>) -> impl Future<Output = CellError> {
        renew(cell, self.hold_ms)
    }

    async fn leave(&self, cell: &Cell<S>) {
        leave(cell).await;
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use prometheus::Registry;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::store::EmbeddedStore;

    const HOLD_MS: u64 = 600;
    const POLL: Duration = Duration::from_millis(20);

    /// One cell's process: its tasks die with it, as with SIGKILL.
    struct Process {
        cell: Arc<Cell<EmbeddedStore>>,
        tasks: Vec<JoinHandle<()>>,
    }

    impl Process {
        /// Ends every task of the process; its cell is left to the caller.
        async fn stop(self) -> Arc<Cell<EmbeddedStore>> {
            for task in self.tasks {
                task.abort();
                let _ = task.await;
            }
            self.cell
        }
    }

    /// Starts cell `index` the way `run` does on TiKV, over stores shared in-process
    /// (one embedded store per cell, opened once, cloned by every "process").
    async fn start(topology: &Arc<Topology>, index: usize, stores: &[EmbeddedStore]) -> Process {
        let metrics = ShardMetrics::register(&Registry::new()).expect("metrics");
        let id = &topology.cells()[index].id;
        let backing = Arc::new(SharedStore::new(stores.to_vec(), index, id, HOLD_MS, POLL));
        let presence = {
            let backing = backing.clone();
            tokio::spawn(async move { backing.presence().await })
        };
        let own = backing
            .open_own(topology, index, &metrics)
            .await
            .expect("own shard");
        let cell = Arc::new(
            Cell::new(topology.clone(), index, own, &Registry::new(), None).expect("cell"),
        );
        let standby = crate::takeover::stand_by(cell.clone(), backing.witness(), metrics, POLL);
        let renewing = {
            let cell = cell.clone();
            async move {
                backing.keep(cell).await;
            }
        };
        let tasks = vec![presence, tokio::spawn(standby), tokio::spawn(renewing)];
        Process { cell, tasks }
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) -> Duration {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(10), "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        started.elapsed()
    }

    async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .unwrap_or_else(|_| panic!("{what}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_standby_takes_a_silent_cell_over_once_its_hold_runs_out_and_hands_it_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A short startup grace: whether c2 polls before c1 dies is a race here, and
        // the hold, not the grace, is what the test is about.
        let text = format!(
            "name = \"holds\"\ndata_dir = \"{}\"\n\
             [takeover]\npoll_ms = 20\nlease_ms = {HOLD_MS}\nstartup_grace_ms = 100\n\
             [[regions]]\nid = \"r\"\n\
             [[cells]]\nid = \"c1\"\nregion = \"r\"\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nstandby = \"c2\"\n\
             [[cells]]\nid = \"c2\"\nregion = \"r\"\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
            dir.path().display()
        );
        let topology = Arc::new(Topology::from_toml_str("holds.toml", &text).expect("valid"));
        let stores: Vec<EmbeddedStore> = topology
            .cells()
            .iter()
            .map(|cell| EmbeddedStore::open(&cell.data_dir).expect("store"))
            .collect();
        let c1 = start(&topology, 0, &stores).await;
        let c2 = start(&topology, 1, &stores).await;
        let first_epoch = c1.cell.own().epoch;

        // c1's process dies: no more presence, no more renewals. c2 waits for the
        // hold to run out (renewed every third of it, so at least two thirds left).
        let old = c1.stop().await;
        let waited = until("c2 takes c1's shard over", || !c2.cell.taken().is_empty()).await;
        assert!(
            waited >= Duration::from_millis(HOLD_MS * 2 / 3 - 50),
            "took over after {waited:?}, while c1's hold still ran"
        );
        let taken_epoch = c2.cell.taken()[0].epoch;
        assert!(taken_epoch > first_epoch);

        // The old c1, back from a stall, is fenced: its renewal says it must stop.
        let lost = within(
            "the stalled c1 learns it lost its shard",
            renew(old.clone(), HOLD_MS),
        )
        .await;
        assert!(
            matches!(lost, CellError::Ledger(StoreError::Fenced(_))),
            "{lost}"
        );

        // c1 starts again: c2 sees its presence and hands the shard back.
        let c1 = within("c1 gets its shard back", start(&topology, 0, &stores)).await;
        assert!(c2.cell.taken().is_empty(), "c2 released the shard");
        assert!(c1.cell.own().epoch > taken_epoch);

        // A graceful stop hands the shard over at once, without waiting for the hold.
        let c1 = c1.stop().await;
        let started = Instant::now();
        leave(&c1).await;
        until("c2 takes over after a graceful stop", || {
            !c2.cell.taken().is_empty()
        })
        .await;
        assert!(
            started.elapsed() < Duration::from_millis(HOLD_MS / 2),
            "took {:?}",
            started.elapsed()
        );
    }
}
