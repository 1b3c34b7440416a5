//! The PD and TiKV wire messages testkv serves, written by hand with prost: only
//! the fields tikv-client sends or reads, with the field numbers of the
//! `pdpb`, `metapb`, `kvrpcpb` and `errorpb` protos (fields left out are skipped by
//! the decoder, as protobuf allows). Enums travel as their `int32` numbers.

#![allow(missing_debug_implementations)]

pub mod pd {
    use super::meta::{Peer, Region, Store};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RequestHeader {
        #[prost(uint64, tag = "1")]
        pub cluster_id: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseHeader {
        #[prost(uint64, tag = "1")]
        pub cluster_id: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetMembersRequest {
        #[prost(message, optional, tag = "1")]
        pub header: Option<RequestHeader>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Member {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(uint64, tag = "2")]
        pub member_id: u64,
        #[prost(string, repeated, tag = "3")]
        pub peer_urls: Vec<String>,
        #[prost(string, repeated, tag = "4")]
        pub client_urls: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetMembersResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(message, repeated, tag = "2")]
        pub members: Vec<Member>,
        #[prost(message, optional, tag = "3")]
        pub leader: Option<Member>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TsoRequest {
        #[prost(message, optional, tag = "1")]
        pub header: Option<RequestHeader>,
        #[prost(uint32, tag = "2")]
        pub count: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub physical: i64,
        #[prost(int64, tag = "2")]
        pub logical: i64,
        #[prost(uint32, tag = "3")]
        pub suffix_bits: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TsoResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(uint32, tag = "2")]
        pub count: u32,
        #[prost(message, optional, tag = "3")]
        pub timestamp: Option<Timestamp>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetRegionRequest {
        #[prost(message, optional, tag = "1")]
        pub header: Option<RequestHeader>,
        #[prost(bytes = "vec", tag = "2")]
        pub region_key: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetRegionByIdRequest {
        #[prost(message, optional, tag = "1")]
        pub header: Option<RequestHeader>,
        #[prost(uint64, tag = "2")]
        pub region_id: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetRegionResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(message, optional, tag = "2")]
        pub region: Option<Region>,
        #[prost(message, optional, tag = "3")]
        pub leader: Option<Peer>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetStoreRequest {
        #[prost(message, optional, tag = "1")]
        pub header: Option<RequestHeader>,
        #[prost(uint64, tag = "2")]
        pub store_id: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetStoreResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(message, optional, tag = "2")]
        pub store: Option<Store>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetAllStoresRequest {
        #[prost(message, optional, tag = "1")]
        pub header: Option<RequestHeader>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetAllStoresResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(message, repeated, tag = "2")]
        pub stores: Vec<Store>,
    }
}

pub mod meta {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RegionEpoch {
        #[prost(uint64, tag = "1")]
        pub conf_ver: u64,
        #[prost(uint64, tag = "2")]
        pub version: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Peer {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub store_id: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Region {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(bytes = "vec", tag = "2")]
        pub start_key: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub end_key: Vec<u8>,
        #[prost(message, optional, tag = "4")]
        pub region_epoch: Option<RegionEpoch>,
        #[prost(message, repeated, tag = "5")]
        pub peers: Vec<Peer>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Store {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(string, tag = "2")]
        pub address: String,
    }
}

pub mod errorpb {
    use super::meta::{Peer, Region};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NotLeader {
        #[prost(uint64, tag = "1")]
        pub region_id: u64,
        #[prost(message, optional, tag = "2")]
        pub leader: Option<Peer>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RegionNotFound {
        #[prost(uint64, tag = "1")]
        pub region_id: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyNotInRegion {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(uint64, tag = "2")]
        pub region_id: u64,
        #[prost(bytes = "vec", tag = "3")]
        pub start_key: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub end_key: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EpochNotMatch {
        #[prost(message, repeated, tag = "1")]
        pub current_regions: Vec<Region>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerIsBusy {
        #[prost(string, tag = "1")]
        pub reason: String,
        #[prost(uint64, tag = "2")]
        pub backoff_ms: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Error {
        #[prost(string, tag = "1")]
        pub message: String,
        #[prost(message, optional, tag = "2")]
        pub not_leader: Option<NotLeader>,
        #[prost(message, optional, tag = "3")]
        pub region_not_found: Option<RegionNotFound>,
        #[prost(message, optional, tag = "4")]
        pub key_not_in_region: Option<KeyNotInRegion>,
        #[prost(message, optional, tag = "5")]
        pub epoch_not_match: Option<EpochNotMatch>,
        #[prost(message, optional, tag = "6")]
        pub server_is_busy: Option<ServerIsBusy>,
    }
}

pub mod kv {
    use super::errorpb;
    use super::meta::{Peer, RegionEpoch};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Context {
        #[prost(uint64, tag = "1")]
        pub region_id: u64,
        #[prost(message, optional, tag = "2")]
        pub region_epoch: Option<RegionEpoch>,
        #[prost(message, optional, tag = "3")]
        pub peer: Option<Peer>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LockInfo {
        #[prost(bytes = "vec", tag = "1")]
        pub primary_lock: Vec<u8>,
        #[prost(uint64, tag = "2")]
        pub lock_version: u64,
        #[prost(bytes = "vec", tag = "3")]
        pub key: Vec<u8>,
        #[prost(uint64, tag = "4")]
        pub lock_ttl: u64,
        #[prost(uint64, tag = "5")]
        pub txn_size: u64,
        /// `Op`: Put 0, Del 1, Lock 2.
        #[prost(int32, tag = "6")]
        pub lock_type: i32,
        #[prost(bool, tag = "8")]
        pub use_async_commit: bool,
        #[prost(uint64, tag = "9")]
        pub min_commit_ts: u64,
        #[prost(bytes = "vec", repeated, tag = "10")]
        pub secondaries: Vec<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteConflict {
        #[prost(uint64, tag = "1")]
        pub start_ts: u64,
        #[prost(uint64, tag = "2")]
        pub conflict_ts: u64,
        #[prost(bytes = "vec", tag = "3")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub primary: Vec<u8>,
        #[prost(uint64, tag = "5")]
        pub conflict_commit_ts: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CommitTsExpired {
        #[prost(uint64, tag = "1")]
        pub start_ts: u64,
        #[prost(uint64, tag = "2")]
        pub attempted_commit_ts: u64,
        #[prost(bytes = "vec", tag = "3")]
        pub key: Vec<u8>,
        #[prost(uint64, tag = "4")]
        pub min_commit_ts: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TxnNotFound {
        #[prost(uint64, tag = "1")]
        pub start_ts: u64,
        #[prost(bytes = "vec", tag = "2")]
        pub primary_key: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyError {
        #[prost(message, optional, tag = "1")]
        pub locked: Option<LockInfo>,
        #[prost(string, tag = "2")]
        pub retryable: String,
        #[prost(string, tag = "3")]
        pub abort: String,
        #[prost(message, optional, tag = "4")]
        pub conflict: Option<WriteConflict>,
        #[prost(message, optional, tag = "7")]
        pub commit_ts_expired: Option<CommitTsExpired>,
        #[prost(message, optional, tag = "8")]
        pub txn_not_found: Option<TxnNotFound>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KvPair {
        #[prost(message, optional, tag = "1")]
        pub error: Option<KeyError>,
        #[prost(bytes = "vec", tag = "2")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetRequest {
        #[prost(message, optional, tag = "1")]
        pub context: Option<Context>,
        #[prost(bytes = "vec", tag = "2")]
        pub key: Vec<u8>,
        #[prost(uint64, tag = "3")]
        pub version: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetResponse {
        #[prost(message, optional, tag = "1")]
        pub region_error: Option<errorpb::Error>,
        #[prost(message, optional, tag = "2")]
        pub error: Option<KeyError>,
        #[prost(bytes = "vec", tag = "3")]
        pub value: Vec<u8>,
        #[prost(bool, tag = "4")]
        pub not_found: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BatchGetRequest {
        #[prost(message, optional, tag = "1")]
        pub context: Option<Context>,
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub keys: Vec<Vec<u8>>,
        #[prost(uint64, tag = "3")]
        pub version: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BatchGetResponse {
        #[prost(message, optional, tag = "1")]
        pub region_error: Option<errorpb::Error>,
        #[prost(message, repeated, tag = "2")]
        pub pairs: Vec<KvPair>,
        #[prost(message, optional, tag = "5")]
        pub error: Option<KeyError>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScanRequest {
        #[prost(message, optional, tag = "1")]
        pub context: Option<Context>,
        #[prost(bytes = "vec", tag = "2")]
        pub start_key: Vec<u8>,
        #[prost(uint32, tag = "3")]
        pub limit: u32,
        #[prost(uint64, tag = "4")]
        pub version: u64,
        #[prost(bool, tag = "5")]
        pub key_only: bool,
        #[prost(bool, tag = "6")]
        pub reverse: bool,
        #[prost(bytes = "vec", tag = "7")]
        pub end_key: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScanResponse {
        #[prost(message, optional, tag = "1")]
        pub region_error: Option<errorpb::Error>,
        #[prost(message, repeated, tag = "2")]
        pub pairs: Vec<KvPair>,
        #[prost(message, optional, tag = "3")]
        pub error: Option<KeyError>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mutation {
        /// Put 0, Del 1, Lock 2.
        #[prost(int32, tag = "1")]
        pub op: i32,
        #[prost(bytes = "vec", tag = "2")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PrewriteRequest {
        #[prost(message, optional, tag = "1")]
        pub context: Option<Context>,
        #[prost(message, repeated, tag = "2")]
        pub mutations: Vec<Mutation>,
        #[prost(bytes = "vec", tag = "3")]
        pub primary_lock: Vec<u8>,
        #[prost(uint64, tag = "4")]
        pub start_version: u64,
        #[prost(uint64, tag = "5")]
        pub lock_ttl: u64,
        #[prost(uint64, tag = "8")]
        pub txn_size: u64,
        #[prost(uint64, tag = "10")]
        pub min_commit_ts: u64,
        #[prost(bool, tag = "11")]
        pub use_async_commit: bool,
        #[prost(bytes = "vec", repeated, tag = "12")]
        pub secondaries: Vec<Vec<u8>>,
        #[prost(bool, tag = "13")]
        pub try_one_pc: bool,
        #[prost(uint64, tag = "14")]
        pub max_commit_ts: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PrewriteResponse {
        #[prost(message, optional, tag = "1")]
        pub region_error: Option<errorpb::Error>,
        #[prost(message, repeated, tag = "2")]
        pub errors: Vec<KeyError>,
        #[prost(uint64, tag = "3")]
        pub min_commit_ts: u64,
        #[prost(uint64, tag = "4")]
        pub one_pc_commit_ts: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CommitRequest {
        #[prost(message, optional, tag = "1")]
        pub context: Option<Context>,
        #[prost(uint64, tag = "2")]
        pub start_version: u64,
        #[prost(bytes = "vec", repeated, tag = "3")]
        pub keys: Vec<Vec<u8>>,
        #[prost(uint64, tag = "4")]
        pub commit_version: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CommitResponse {
        #[prost(message, optional, tag = "1")]
        pub region_error: Option<errorpb::Error>,
        #[prost(message, optional, tag = "2")]
        pub error: Option<KeyError>,
        #[prost(uint64, tag = "3")]
        pub commit_version: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BatchRollbackRequest {
        #[prost(message, optional, tag = "1")]
        pub context: Option<Context>,
        #[prost(uint64, tag = "2")]
        pub start_version: u64,
        #[prost(bytes = "vec", repeated, tag = "3")]
        pub keys: Vec<Vec<u8>>,
    }

    /// The reply of BatchRollback and of ResolveLock (the same two fields).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PlainResponse {
        #[prost(message, optional, tag = "1")]
        pub region_error: Option<errorpb::Error>,
        #[prost(message, optional, tag = "2")]
        pub error: Option<KeyError>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckTxnStatusRequest {
        #[prost(message, optional, tag = "1")]
        pub context: Option<Context>,
        #[prost(bytes = "vec", tag = "2")]
        pub primary_key: Vec<u8>,
        #[prost(uint64, tag = "3")]
        pub lock_ts: u64,
        #[prost(uint64, tag = "4")]
        pub caller_start_ts: u64,
        #[prost(uint64, tag = "5")]
        pub current_ts: u64,
        #[prost(bool, tag = "6")]
        pub rollback_if_not_exist: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckTxnStatusResponse {
        #[prost(message, optional, tag = "1")]
        pub region_error: Option<errorpb::Error>,
        #[prost(message, optional, tag = "2")]
        pub error: Option<KeyError>,
        #[prost(uint64, tag = "3")]
        pub lock_ttl: u64,
        #[prost(uint64, tag = "4")]
        pub commit_version: u64,
        /// NoAction 0, TTLExpireRollback 1, LockNotExistRollback 2.
        #[prost(int32, tag = "5")]
        pub action: i32,
        #[prost(message, optional, tag = "6")]
        pub lock_info: Option<LockInfo>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TxnInfo {
        #[prost(uint64, tag = "1")]
        pub txn: u64,
        #[prost(uint64, tag = "2")]
        pub status: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResolveLockRequest {
        #[prost(message, optional, tag = "1")]
        pub context: Option<Context>,
        #[prost(uint64, tag = "2")]
        pub start_version: u64,
        #[prost(uint64, tag = "3")]
        pub commit_version: u64,
        #[prost(message, repeated, tag = "4")]
        pub txn_infos: Vec<TxnInfo>,
        #[prost(bytes = "vec", repeated, tag = "5")]
        pub keys: Vec<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TxnHeartBeatRequest {
        #[prost(message, optional, tag = "1")]
        pub context: Option<Context>,
        #[prost(bytes = "vec", tag = "2")]
        pub primary_lock: Vec<u8>,
        #[prost(uint64, tag = "3")]
        pub start_version: u64,
        #[prost(uint64, tag = "4")]
        pub advise_lock_ttl: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TxnHeartBeatResponse {
        #[prost(message, optional, tag = "1")]
        pub region_error: Option<errorpb::Error>,
        #[prost(message, optional, tag = "2")]
        pub error: Option<KeyError>,
        #[prost(uint64, tag = "3")]
        pub lock_ttl: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckSecondaryLocksRequest {
        #[prost(message, optional, tag = "1")]
        pub context: Option<Context>,
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub keys: Vec<Vec<u8>>,
        #[prost(uint64, tag = "3")]
        pub start_version: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckSecondaryLocksResponse {
        #[prost(message, optional, tag = "1")]
        pub region_error: Option<errorpb::Error>,
        #[prost(message, optional, tag = "2")]
        pub error: Option<KeyError>,
        #[prost(message, repeated, tag = "3")]
        pub locks: Vec<LockInfo>,
        #[prost(uint64, tag = "4")]
        pub commit_ts: u64,
    }
}
