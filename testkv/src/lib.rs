//! testkv: a PD + TiKV test server, so that the real `tikv-client` runs in ldc's
//! tests. It serves PD's and TiKV's gRPC (the methods tikv-client calls) over
//! Percolator MVCC with TiKV's rules, several regions on one or more "stores"
//! (each its own port), durable data in a directory, faults on demand and counters
//! per RPC. It is a test tool: no product crate depends on it, and `ldc up` never
//! starts it. What it is not: replicated, fast, or a reference for TiKV's
//! internals beyond the rules its tests state.

// gRPC handlers answer `Result<_, tonic::Status>` by tonic's contract, and region
// errors are protobuf messages of the same size: boxing them buys nothing here.
#![allow(clippy::result_large_err)]

pub mod control;
mod grpc;
pub mod mvcc;
mod net;
mod pd;
mod proto;
mod regions;
mod tikv;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::mvcc::{LockInfo, Mvcc, OpenError, Options};
use crate::net::Listener;
use crate::regions::Regions;

/// PD's cluster id; any nonzero constant (the client checks every reply has it).
const CLUSTER_ID: u64 = 0x6c64_6374_6b76;

#[derive(Debug, Clone)]
pub struct Config {
    /// The address every port listens on.
    pub host: String,
    /// PD's port (0: any free one).
    pub pd_port: u16,
    /// TiKV stores, each on its own free port; regions are spread over them.
    pub stores: usize,
    /// Region boundaries (raw keys).
    pub split_keys: Vec<Vec<u8>>,
    /// Where the data and the TSO's high-water mark live (None: in memory).
    pub data_dir: Option<PathBuf>,
    /// false: the toy store of `mvcc::Options::locking`.
    pub locking: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            pd_port: 0,
            stores: 1,
            split_keys: Vec::new(),
            data_dir: None,
            locking: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("testkv cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Data(#[from] OpenError),
}

/// A region error a fault makes an RPC answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionFault {
    NotLeader,
    EpochNotMatch,
    RegionNotFound,
    ServerIsBusy,
}

impl RegionFault {
    fn counter(self) -> &'static str {
        match self {
            Self::NotLeader => "fault.not_leader",
            Self::EpochNotMatch => "fault.epoch_not_match",
            Self::RegionNotFound => "fault.region_not_found",
            Self::ServerIsBusy => "fault.server_is_busy",
        }
    }
}

#[derive(Debug, Default)]
struct FaultState {
    drop_commits: u64,
    drop_filter: Option<Vec<u8>>,
    /// Start versions of the transactions whose prewrites matched `drop_filter`.
    drop_txns: HashSet<u64>,
    region: HashMap<String, (RegionFault, u64)>,
    latency: HashMap<String, Duration>,
}

/// Faults to inject, by RPC name (`KvCommit`, `KvBatchGet`, ...).
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<FaultState>,
}

impl Faults {
    fn state(&self) -> MutexGuard<'_, FaultState> {
        lock(&self.state)
    }

    /// The next `n` successful `KvCommit`s of transactions that prewrote a key
    /// containing `key_part` (any, if None) are applied and then answered with
    /// `Unavailable`, as if the reply were lost on the way. A transaction, not a
    /// key: its primary's commit names only the primary, which need not match.
    pub fn drop_commit_replies(&self, n: u64, key_part: Option<Vec<u8>>) {
        let mut state = self.state();
        state.drop_commits = n;
        state.drop_filter = key_part.filter(|part| !part.is_empty());
        state.drop_txns.clear();
    }

    /// The next `n` calls of `rpc` answer with this region error.
    pub fn region_error(&self, rpc: &str, fault: RegionFault, n: u64) {
        self.state().region.insert(rpc.to_owned(), (fault, n));
    }

    /// The next `n` calls of `rpc` answer `ServerIsBusy`.
    pub fn server_busy(&self, rpc: &str, n: u64) {
        self.region_error(rpc, RegionFault::ServerIsBusy, n);
    }

    /// Every call of `rpc` waits this long before it is served.
    pub fn latency(&self, rpc: &str, delay: Duration) {
        self.state().latency.insert(rpc.to_owned(), delay);
    }

    pub fn clear(&self) {
        *self.state() = FaultState::default();
    }

    fn latency_of(&self, rpc: &str) -> Option<Duration> {
        self.state().latency.get(rpc).copied()
    }

    fn take_region_fault(&self, rpc: &str) -> Option<RegionFault> {
        let mut state = self.state();
        let (fault, left) = state.region.get_mut(rpc)?;
        let fault = *fault;
        *left -= 1;
        if *left == 0 {
            state.region.remove(rpc);
        }
        Some(fault)
    }

    /// Marks the transaction at `start_ts` for a dropped commit reply if one of
    /// the keys it prewrites matches the filter.
    fn note_prewrite(&self, start_ts: u64, keys: &[Vec<u8>]) {
        let mut state = self.state();
        let Some(part) = &state.drop_filter else {
            return;
        };
        if state.drop_commits > 0
            && keys
                .iter()
                .any(|key| key.windows(part.len()).any(|w| w == part.as_slice()))
        {
            state.drop_txns.insert(start_ts);
        }
    }

    fn take_commit_drop(&self, start_ts: u64) -> bool {
        let mut state = self.state();
        let wanted = state.drop_filter.is_none() || state.drop_txns.contains(&start_ts);
        if state.drop_commits == 0 || !wanted {
            return false;
        }
        state.drop_commits -= 1;
        true
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// PD's timestamp oracle. Its high-water mark is saved ahead of use, so a
/// restarted server never hands out a timestamp twice.
#[derive(Debug)]
struct Tso {
    physical: u64,
    logical: u64,
    saved_until: u64,
    file: Option<PathBuf>,
}

const LOGICAL_BITS: u32 = 18;

impl Tso {
    fn open(dir: Option<&Path>) -> std::io::Result<Self> {
        let file = dir.map(|dir| dir.join("tso"));
        let saved = match &file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => text.trim().parse().unwrap_or(0),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
                Err(err) => return Err(err),
            },
            None => 0,
        };
        Ok(Self {
            physical: saved,
            logical: 0,
            saved_until: saved,
            file,
        })
    }

    /// Allocates `count` timestamps; returns the last one's physical and logical
    /// parts (the client takes the `count` before it, as PD's protocol says).
    fn allocate(&mut self, count: u32) -> (u64, u64) {
        let count = u64::from(count.max(1));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if now > self.physical {
            self.physical = now;
            self.logical = 0;
        }
        if self.logical + count >= 1 << LOGICAL_BITS {
            self.physical += 1;
            self.logical = 0;
        }
        self.logical += count;
        if self.physical >= self.saved_until {
            self.saved_until = self.physical + 3_000;
            if let Some(path) = &self.file {
                let temp = path.with_extension("tmp");
                let saved = std::fs::write(&temp, self.saved_until.to_string())
                    .and_then(|()| std::fs::rename(&temp, path));
                if let Err(err) = saved {
                    tracing::error!(%err, "testkv: saving the TSO high-water mark failed");
                }
            }
        }
        (self.physical, self.logical)
    }

    fn now(&mut self) -> u64 {
        let (physical, logical) = self.allocate(1);
        physical << LOGICAL_BITS | logical
    }
}

/// What the PD and TiKV services share.
#[derive(Debug)]
struct Shared {
    mvcc: Mutex<Mvcc>,
    regions: Mutex<Regions>,
    tso: Mutex<Tso>,
    counters: Mutex<BTreeMap<String, u64>>,
    unimplemented: Mutex<Vec<String>>,
    faults: Faults,
    pd: String,
    stores: Vec<String>,
}

impl Shared {
    fn count(&self, name: &str) {
        *lock(&self.counters).entry(name.to_owned()).or_default() += 1;
    }

    fn unserved(&self, path: &str) {
        tracing::warn!(
            path,
            "testkv: the client called a method testkv does not serve"
        );
        lock(&self.unimplemented).push(path.to_owned());
    }
}

/// Runs a gRPC server, logging how it ended.
async fn logged(server: impl std::future::Future<Output = Result<(), tonic::transport::Error>>) {
    if let Err(err) = server.await {
        tracing::warn!(%err, "testkv: a server ended");
    }
}

/// A running testkv. Dropping it stops every port.
#[derive(Debug)]
pub struct TestKv {
    shared: Arc<Shared>,
    /// PD's first, then the stores' in order.
    listeners: Vec<Listener>,
    servers: Vec<AbortHandle>,
}

impl TestKv {
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let options = Options {
            locking: config.locking,
        };
        let mvcc = match &config.data_dir {
            Some(dir) => Mvcc::open(dir, options)?,
            None => Mvcc::in_memory(options),
        };
        let tso = Tso::open(config.data_dir.as_deref()).map_err(|source| OpenError::Io {
            path: config
                .data_dir
                .as_deref()
                .map(|dir| dir.join("tso").display().to_string())
                .unwrap_or_default(),
            source,
        })?;
        let bind = |port: u16| {
            let addr = format!("{}:{port}", config.host);
            addr.parse::<SocketAddr>()
                .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err))
                .and_then(Listener::bind)
                .map_err(|source| StartError::Listen { addr, source })
        };
        let stores = config.stores.max(1);
        let mut listeners = Vec::with_capacity(stores + 1);
        let mut incoming = Vec::with_capacity(stores + 1);
        for port in std::iter::once(config.pd_port).chain(std::iter::repeat_n(0, stores)) {
            let (listener, accepted) = bind(port)?;
            listeners.push(listener);
            incoming.push(accepted);
        }
        let shared = Arc::new(Shared {
            mvcc: Mutex::new(mvcc),
            regions: Mutex::new(Regions::new(stores as u64, &config.split_keys)),
            tso: Mutex::new(tso),
            counters: Mutex::default(),
            unimplemented: Mutex::default(),
            faults: Faults::default(),
            pd: listeners[0].addr().to_string(),
            stores: listeners[1..]
                .iter()
                .map(|l| l.addr().to_string())
                .collect(),
        });
        let mut servers = Vec::with_capacity(incoming.len());
        for (index, accepted) in incoming.into_iter().enumerate() {
            let connections = ReceiverStream::new(accepted).map(Ok::<_, std::io::Error>);
            let mut builder = tonic::transport::Server::builder();
            let task = if index == 0 {
                let server = builder
                    .add_service(grpc::Routed(pd::Pd::new(shared.clone())))
                    .serve_with_incoming(connections);
                tokio::spawn(logged(server))
            } else {
                let server = builder
                    .add_service(grpc::Routed(tikv::Tikv::new(shared.clone(), index as u64)))
                    .serve_with_incoming(connections);
                tokio::spawn(logged(server))
            };
            servers.push(task.abort_handle());
        }
        Ok(Self {
            shared,
            listeners,
            servers,
        })
    }

    /// PD's address, as `pd_endpoints` wants it.
    pub fn pd_endpoints(&self) -> Vec<String> {
        vec![self.shared.pd.clone()]
    }

    /// The stores' addresses, store 1 first.
    pub fn store_addresses(&self) -> Vec<String> {
        self.shared.stores.clone()
    }

    /// Calls per RPC name (`KvCommit`, `Tso`, ...), and fired faults (`fault.*`).
    pub fn counters(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.counters).clone()
    }

    /// The gRPC paths the client called that testkv does not serve.
    pub fn unimplemented(&self) -> Vec<String> {
        lock(&self.shared.unimplemented).clone()
    }

    /// Every lock held now.
    pub fn locks(&self) -> Vec<LockInfo> {
        lock(&self.shared.mvcc).locks(b"", b"", u64::MAX)
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Splits the region holding `key` at it (false: `key` already is a boundary).
    pub fn split(&self, key: &[u8]) -> bool {
        lock(&self.shared.regions).split(key)
    }

    /// Closes every port and cuts every connection; the state stays.
    pub async fn stop_listening(&self) {
        for listener in &self.listeners {
            listener.stop().await;
        }
    }

    /// Listens again on the same ports.
    pub async fn resume_listening(&self) -> std::io::Result<()> {
        for listener in &self.listeners {
            listener.resume()?;
        }
        Ok(())
    }
}

impl Drop for TestKv {
    fn drop(&mut self) {
        self.servers.iter().for_each(AbortHandle::abort);
    }
}
