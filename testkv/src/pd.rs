//! PD's gRPC service: one member (itself), the TSO stream, region and store
//! lookups.

use std::future::ready;
use std::sync::Arc;

use futures::StreamExt as _;
use tonic::Status;
use tonic::codegen::{Body, StdError, http};

use crate::grpc::{Methods, Reply, streaming, unary};
use crate::proto::meta::Store;
use crate::proto::pd::{
    GetAllStoresRequest, GetAllStoresResponse, GetMembersRequest, GetMembersResponse,
    GetRegionByIdRequest, GetRegionRequest, GetRegionResponse, GetStoreRequest, GetStoreResponse,
    Member, ResponseHeader, Timestamp, TsoRequest, TsoResponse,
};
use crate::regions::{Region, decode};
use crate::{CLUSTER_ID, Shared, lock};

fn header() -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: CLUSTER_ID,
    })
}

#[derive(Debug, Clone)]
pub struct Pd {
    shared: Arc<Shared>,
}

impl Pd {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl Shared {
    fn members(&self) -> GetMembersResponse {
        let member = Member {
            name: "testkv-pd".to_owned(),
            member_id: 1,
            peer_urls: vec![format!("http://{}", self.pd)],
            client_urls: vec![format!("http://{}", self.pd)],
        };
        GetMembersResponse {
            header: header(),
            members: vec![member.clone()],
            leader: Some(member),
        }
    }

    fn tso(&self, request: &TsoRequest) -> TsoResponse {
        let (physical, logical) = lock(&self.tso).allocate(request.count);
        TsoResponse {
            header: header(),
            count: request.count,
            timestamp: Some(Timestamp {
                physical: physical as i64,
                logical: logical as i64,
                suffix_bits: 0,
            }),
        }
    }

    fn region_reply(region: Option<&Region>) -> GetRegionResponse {
        GetRegionResponse {
            header: header(),
            region: region.map(Region::message),
            leader: region.map(Region::peer),
        }
    }

    fn region_by_key(&self, encoded: &[u8]) -> Result<GetRegionResponse, Status> {
        let key = if encoded.is_empty() {
            Vec::new()
        } else {
            decode(encoded).ok_or_else(|| {
                Status::invalid_argument("GetRegion: region_key is not memcomparable-encoded")
            })?
        };
        Ok(Self::region_reply(lock(&self.regions).by_key(&key)))
    }

    fn region_by_id(&self, id: u64) -> GetRegionResponse {
        Self::region_reply(lock(&self.regions).by_id(id))
    }

    fn store(&self, id: u64) -> Option<Store> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.stores.get(index).map(|address| Store {
            id,
            address: address.clone(),
        })
    }

    /// The current TSO, for the TiKV side's lock expiry decisions.
    pub(crate) fn now(&self) -> u64 {
        lock(&self.tso).now()
    }
}

impl Methods for Pd {
    const NAME: &'static str = "pdpb.PD";

    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn route<B>(&self, method: &str, request: http::Request<B>) -> Option<Reply>
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        let shared = self.shared.clone();
        Some(match method {
            "GetMembers" => unary(request, move |_: GetMembersRequest| {
                ready(Ok(shared.members()))
            }),
            "Tso" => streaming(request, move |requests: tonic::Streaming<TsoRequest>| {
                let shared = shared.clone();
                requests.map(move |request| request.map(|request| shared.tso(&request)))
            }),
            "GetRegion" => unary(request, move |request: GetRegionRequest| {
                ready(shared.region_by_key(&request.region_key))
            }),
            "GetRegionByID" => unary(request, move |request: GetRegionByIdRequest| {
                ready(Ok(shared.region_by_id(request.region_id)))
            }),
            "GetStore" => unary(request, move |request: GetStoreRequest| {
                ready(match shared.store(request.store_id) {
                    Some(store) => Ok(GetStoreResponse {
                        header: header(),
                        store: Some(store),
                    }),
                    None => Err(Status::not_found(format!("no store {}", request.store_id))),
                })
            }),
            "GetAllStores" => unary(request, move |_: GetAllStoresRequest| {
                let stores = (1..=shared.stores.len() as u64)
                    .filter_map(|id| shared.store(id))
                    .collect();
                ready(Ok(GetAllStoresResponse {
                    header: header(),
                    stores,
                }))
            }),
            _ => return None,
        })
    }
}
