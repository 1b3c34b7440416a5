//! One TiKV store's gRPC service: every request's context is checked against the
//! regions (the store must lead the region, at the epoch the client names, and
//! the keys must lie in it), faults are applied, then the MVCC rules run.

use std::sync::Arc;

use tonic::Status;
use tonic::codegen::{Body, StdError, http};

use crate::grpc::{Methods, Reply, unary};
use crate::mvcc::{
    self, CheckTxnStatus, LockKind, Mvcc, Op, PrewriteOutcome, RollbackAction, TxnStatus,
};
use crate::proto::errorpb;
use crate::proto::kv::{
    BatchGetRequest, BatchGetResponse, BatchRollbackRequest, CheckSecondaryLocksRequest,
    CheckSecondaryLocksResponse, CheckTxnStatusRequest, CheckTxnStatusResponse, CommitRequest,
    CommitResponse, CommitTsExpired, Context, GetRequest, GetResponse, KeyError, KvPair, LockInfo,
    PlainResponse, PrewriteRequest, PrewriteResponse, ResolveLockRequest, ScanRequest,
    ScanResponse, TxnHeartBeatRequest, TxnHeartBeatResponse, TxnNotFound, WriteConflict,
};
use crate::regions::{Region, not_leader};
use crate::{RegionFault, Shared, lock};

#[derive(Debug, Clone)]
pub struct Tikv {
    shared: Arc<Shared>,
    store: u64,
}

impl Tikv {
    pub fn new(shared: Arc<Shared>, store: u64) -> Self {
        Self { shared, store }
    }
}

/// A reply that can carry a region error instead of its result.
trait RegionReply: Default {
    fn region_error(error: errorpb::Error) -> Self;
}

macro_rules! region_reply {
    ($($reply:ty),*) => {$(
        impl RegionReply for $reply {
            fn region_error(error: errorpb::Error) -> Self {
                Self { region_error: Some(error), ..Default::default() }
            }
        }
    )*};
}

region_reply!(
    GetResponse,
    BatchGetResponse,
    ScanResponse,
    PrewriteResponse,
    CommitResponse,
    PlainResponse,
    CheckTxnStatusResponse,
    TxnHeartBeatResponse,
    CheckSecondaryLocksResponse
);

fn lock_info(info: mvcc::LockInfo) -> LockInfo {
    LockInfo {
        primary_lock: info.primary,
        lock_version: info.start_ts,
        key: info.key,
        lock_ttl: info.ttl,
        txn_size: info.txn_size,
        lock_type: match info.kind {
            LockKind::Put => 0,
            LockKind::Delete => 1,
            LockKind::Lock => 2,
        },
        use_async_commit: info.use_async_commit,
        min_commit_ts: info.min_commit_ts,
        secondaries: info.secondaries,
    }
}

fn key_error(error: mvcc::KeyError) -> KeyError {
    match error {
        mvcc::KeyError::Locked(info) => KeyError {
            locked: Some(lock_info(info)),
            ..Default::default()
        },
        mvcc::KeyError::WriteConflict {
            key,
            primary,
            start_ts,
            conflict_start_ts,
            conflict_commit_ts,
        } => KeyError {
            // TiKV also fills `retryable`, for clients that predate `conflict`.
            retryable: format!("write conflict on a key committed at {conflict_commit_ts}"),
            conflict: Some(WriteConflict {
                start_ts,
                conflict_ts: conflict_start_ts,
                key,
                primary,
                conflict_commit_ts,
            }),
            ..Default::default()
        },
        mvcc::KeyError::LockNotFound { start_ts, .. } => KeyError {
            retryable: format!("TxnLockNotFound: the lock of transaction {start_ts} is gone"),
            ..Default::default()
        },
        mvcc::KeyError::Aborted(message) => KeyError {
            abort: message,
            ..Default::default()
        },
        mvcc::KeyError::CommitTsExpired {
            key,
            start_ts,
            attempted_commit_ts,
            min_commit_ts,
        } => KeyError {
            commit_ts_expired: Some(CommitTsExpired {
                start_ts,
                attempted_commit_ts,
                key,
                min_commit_ts,
            }),
            ..Default::default()
        },
        mvcc::KeyError::TxnNotFound { primary, start_ts } => KeyError {
            txn_not_found: Some(TxnNotFound {
                start_ts,
                primary_key: primary,
            }),
            ..Default::default()
        },
    }
}

fn pairs(found: mvcc::Found, key_only: bool) -> Vec<KvPair> {
    found
        .into_iter()
        .map(|(key, value)| match value {
            Ok(value) => KvPair {
                error: None,
                key,
                value: if key_only { Vec::new() } else { value },
            },
            Err(err) => KvPair {
                error: Some(key_error(err)),
                key,
                value: Vec::new(),
            },
        })
        .collect()
}

/// A prewrite's mutation, from its wire form.
fn mutation(wire: crate::proto::kv::Mutation) -> Result<mvcc::Mutation, Status> {
    let op = match wire.op {
        0 => Op::Put(wire.value),
        1 => Op::Delete,
        2 => Op::Lock,
        other => {
            return Err(Status::invalid_argument(format!(
                "testkv serves Put, Del and Lock mutations, not op {other}"
            )));
        }
    };
    Ok(mvcc::Mutation { key: wire.key, op })
}

impl Tikv {
    /// The steps every request takes: latency, an injected region error, the
    /// region check, then `body` over the MVCC state of the region.
    async fn serve<R: RegionReply>(
        &self,
        rpc: &str,
        context: Option<Context>,
        keys: Vec<Vec<u8>>,
        body: impl FnOnce(&mut Mvcc, &Region) -> R,
    ) -> R {
        if let Some(delay) = self.shared.faults.latency_of(rpc) {
            tokio::time::sleep(delay).await;
        }
        let regions = lock(&self.shared.regions);
        if let Some(fault) = self.shared.faults.take_region_fault(rpc) {
            self.shared.count(fault.counter());
            return R::region_error(self.fault(fault, &regions, context.as_ref()));
        }
        let region =
            match regions.check(context.as_ref(), self.store, keys.iter().map(Vec::as_slice)) {
                Ok(region) => region,
                Err(error) => return R::region_error(error),
            };
        let mut mvcc = lock(&self.shared.mvcc);
        body(&mut mvcc, region)
    }

    fn fault(
        &self,
        fault: RegionFault,
        regions: &crate::regions::Regions,
        context: Option<&Context>,
    ) -> errorpb::Error {
        let id = context.map_or(0, |context| context.region_id);
        let region = regions.by_id(id);
        match (fault, region) {
            (RegionFault::NotLeader, Some(region)) => not_leader(region),
            (RegionFault::EpochNotMatch, _) => errorpb::Error {
                message: "testkv fault: epoch not match".to_owned(),
                epoch_not_match: Some(errorpb::EpochNotMatch {
                    current_regions: regions.all().iter().map(Region::message).collect(),
                }),
                ..Default::default()
            },
            (RegionFault::ServerIsBusy, _) => errorpb::Error {
                message: "testkv fault: server is busy".to_owned(),
                server_is_busy: Some(errorpb::ServerIsBusy {
                    reason: "testkv fault".to_owned(),
                    backoff_ms: 10,
                }),
                ..Default::default()
            },
            (RegionFault::RegionNotFound | RegionFault::NotLeader, _) => errorpb::Error {
                message: format!("testkv fault: region {id} not found"),
                region_not_found: Some(errorpb::RegionNotFound { region_id: id }),
                ..Default::default()
            },
        }
    }

    async fn get(self, request: GetRequest) -> Result<GetResponse, Status> {
        let key = request.key;
        Ok(self
            .serve(
                "KvGet",
                request.context,
                vec![key.clone()],
                |mvcc, _| match mvcc.get(&key, request.version) {
                    Ok(Some(value)) => GetResponse {
                        value,
                        ..Default::default()
                    },
                    Ok(None) => GetResponse {
                        not_found: true,
                        ..Default::default()
                    },
                    Err(err) => GetResponse {
                        error: Some(key_error(err)),
                        ..Default::default()
                    },
                },
            )
            .await)
    }

    async fn batch_get(self, request: BatchGetRequest) -> Result<BatchGetResponse, Status> {
        let keys = request.keys;
        Ok(self
            .serve("KvBatchGet", request.context, keys.clone(), |mvcc, _| {
                BatchGetResponse {
                    pairs: pairs(mvcc.batch_get(&keys, request.version), false),
                    ..Default::default()
                }
            })
            .await)
    }

    async fn scan(self, request: ScanRequest) -> Result<ScanResponse, Status> {
        // A reverse scan's range is [end_key, start_key).
        let (low, high) = if request.reverse {
            (request.end_key, request.start_key)
        } else {
            (request.start_key, request.end_key)
        };
        Ok(self
            .serve(
                "KvScan",
                request.context,
                vec![low.clone()],
                |mvcc, region| {
                    let high = match (high.is_empty(), region.end.is_empty()) {
                        (_, true) => high,
                        (true, false) => region.end.clone(),
                        (false, false) => high.min(region.end.clone()),
                    };
                    let found = mvcc.scan(
                        &low,
                        &high,
                        request.limit as usize,
                        request.version,
                        request.reverse,
                    );
                    ScanResponse {
                        pairs: pairs(found, request.key_only),
                        ..Default::default()
                    }
                },
            )
            .await)
    }

    async fn prewrite(self, request: PrewriteRequest) -> Result<PrewriteResponse, Status> {
        let keys: Vec<Vec<u8>> = request.mutations.iter().map(|m| m.key.clone()).collect();
        self.shared
            .faults
            .note_prewrite(request.start_version, &keys);
        let prewrite = mvcc::Prewrite {
            mutations: request
                .mutations
                .into_iter()
                .map(mutation)
                .collect::<Result<_, _>>()?,
            primary: request.primary_lock,
            start_ts: request.start_version,
            ttl: request.lock_ttl,
            txn_size: request.txn_size,
            min_commit_ts: request.min_commit_ts,
            max_commit_ts: request.max_commit_ts,
            use_async_commit: request.use_async_commit,
            secondaries: request.secondaries,
            try_one_pc: request.try_one_pc,
        };
        Ok(self
            .serve("KvPrewrite", request.context, keys, |mvcc, _| {
                match mvcc.prewrite(&prewrite) {
                    PrewriteOutcome::Locked { min_commit_ts } => PrewriteResponse {
                        min_commit_ts,
                        ..Default::default()
                    },
                    PrewriteOutcome::OnePc { commit_ts } => PrewriteResponse {
                        one_pc_commit_ts: commit_ts,
                        ..Default::default()
                    },
                    PrewriteOutcome::Failed(errors) => PrewriteResponse {
                        errors: errors.into_iter().map(key_error).collect(),
                        ..Default::default()
                    },
                }
            })
            .await)
    }

    async fn commit(self, request: CommitRequest) -> Result<CommitResponse, Status> {
        let keys = request.keys;
        let reply = self
            .serve(
                "KvCommit",
                request.context,
                keys.clone(),
                |mvcc, _| match mvcc.commit(&keys, request.start_version, request.commit_version) {
                    Ok(()) => CommitResponse {
                        commit_version: request.commit_version,
                        ..Default::default()
                    },
                    Err(err) => CommitResponse {
                        error: Some(key_error(err)),
                        ..Default::default()
                    },
                },
            )
            .await;
        let applied = reply.region_error.is_none() && reply.error.is_none();
        if applied && self.shared.faults.take_commit_drop(request.start_version) {
            self.shared.count("fault.drop_commit_reply");
            return Err(Status::unavailable(
                "testkv fault: the commit was applied, its reply lost",
            ));
        }
        Ok(reply)
    }

    async fn batch_rollback(self, request: BatchRollbackRequest) -> Result<PlainResponse, Status> {
        let keys = request.keys;
        Ok(self
            .serve(
                "KvBatchRollback",
                request.context,
                keys.clone(),
                |mvcc, _| PlainResponse {
                    error: mvcc
                        .rollback(&keys, request.start_version)
                        .err()
                        .map(key_error),
                    ..Default::default()
                },
            )
            .await)
    }

    async fn check_txn_status(
        self,
        request: CheckTxnStatusRequest,
    ) -> Result<CheckTxnStatusResponse, Status> {
        let primary = request.primary_key;
        let current_ts = request.current_ts.max(self.shared.now());
        let check = CheckTxnStatus {
            primary: primary.clone(),
            lock_ts: request.lock_ts,
            caller_start_ts: request.caller_start_ts,
            current_ts,
            rollback_if_not_exist: request.rollback_if_not_exist,
        };
        Ok(self
            .serve(
                "KvCheckTxnStatus",
                request.context,
                vec![primary],
                |mvcc, _| match mvcc.check_txn_status(&check) {
                    Ok(TxnStatus::Locked { ttl, lock }) => CheckTxnStatusResponse {
                        lock_ttl: ttl,
                        lock_info: Some(lock_info(lock)),
                        ..Default::default()
                    },
                    Ok(TxnStatus::Committed { commit_ts }) => CheckTxnStatusResponse {
                        commit_version: commit_ts,
                        ..Default::default()
                    },
                    Ok(TxnStatus::RolledBack { action }) => CheckTxnStatusResponse {
                        action: match action {
                            RollbackAction::NoAction => 0,
                            RollbackAction::TtlExpireRollback => 1,
                            RollbackAction::LockNotExistRollback => 2,
                        },
                        ..Default::default()
                    },
                    Err(err) => CheckTxnStatusResponse {
                        error: Some(key_error(err)),
                        ..Default::default()
                    },
                },
            )
            .await)
    }

    async fn resolve_lock(self, request: ResolveLockRequest) -> Result<PlainResponse, Status> {
        let keys = request.keys;
        let mut txns: Vec<(u64, u64)> = request
            .txn_infos
            .iter()
            .map(|info| (info.txn, info.status))
            .collect();
        if txns.is_empty() {
            txns.push((request.start_version, request.commit_version));
        }
        Ok(self
            .serve(
                "KvResolveLock",
                request.context,
                keys.clone(),
                |mvcc, region| {
                    let error = txns.into_iter().find_map(|(start_ts, commit_ts)| {
                        let keys = if keys.is_empty() {
                            mvcc.txn_locks(&region.start, &region.end, start_ts)
                        } else {
                            keys.clone()
                        };
                        mvcc.resolve_lock(start_ts, commit_ts, &keys).err()
                    });
                    PlainResponse {
                        error: error.map(key_error),
                        ..Default::default()
                    }
                },
            )
            .await)
    }

    async fn heartbeat(self, request: TxnHeartBeatRequest) -> Result<TxnHeartBeatResponse, Status> {
        let primary = request.primary_lock;
        Ok(self
            .serve(
                "KvTxnHeartBeat",
                request.context,
                vec![primary.clone()],
                |mvcc, _| match mvcc.heartbeat(
                    &primary,
                    request.start_version,
                    request.advise_lock_ttl,
                ) {
                    Ok(lock_ttl) => TxnHeartBeatResponse {
                        lock_ttl,
                        ..Default::default()
                    },
                    Err(err) => TxnHeartBeatResponse {
                        error: Some(key_error(err)),
                        ..Default::default()
                    },
                },
            )
            .await)
    }

    async fn check_secondary_locks(
        self,
        request: CheckSecondaryLocksRequest,
    ) -> Result<CheckSecondaryLocksResponse, Status> {
        let keys = request.keys;
        Ok(self
            .serve(
                "KvCheckSecondaryLocks",
                request.context,
                keys.clone(),
                |mvcc, _| match mvcc.check_secondary_locks(&keys, request.start_version) {
                    Ok(found) => CheckSecondaryLocksResponse {
                        locks: found.locks.into_iter().map(lock_info).collect(),
                        commit_ts: found.commit_ts,
                        ..Default::default()
                    },
                    Err(err) => CheckSecondaryLocksResponse {
                        error: Some(key_error(err)),
                        ..Default::default()
                    },
                },
            )
            .await)
    }
}

impl Methods for Tikv {
    const NAME: &'static str = "tikvpb.Tikv";

    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn route<B>(&self, method: &str, request: http::Request<B>) -> Option<Reply>
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        let store = self.clone();
        macro_rules! route {
            ($($name:literal => $handler:ident),* $(,)?) => {
                match method {
                    $($name => Some(unary(request, move |message| store.clone().$handler(message))),)*
                    _ => None,
                }
            };
        }
        route!(
            "KvGet" => get,
            "KvBatchGet" => batch_get,
            "KvScan" => scan,
            "KvPrewrite" => prewrite,
            "KvCommit" => commit,
            "KvBatchRollback" => batch_rollback,
            "KvCheckTxnStatus" => check_txn_status,
            "KvResolveLock" => resolve_lock,
            "KvTxnHeartBeat" => heartbeat,
            "KvCheckSecondaryLocks" => check_secondary_locks,
        )
    }
}
