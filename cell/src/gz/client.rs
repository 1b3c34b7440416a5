//! The cells' client of the global zone: polls and leases, sent to the global
//! zone's cell and then its standby (which serves it after a takeover).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use ldc_serve::Connector;
use ldc_topology::Topology;

use super::wire::{ITEMS_PATH, ItemState, Items, LEASES_PATH, Lease};

/// Calls to the global zone: its cell first, then its standby (which serves it
/// after a takeover), sticking to whichever answered last.
pub struct Client {
    client: HttpClient<Connector, Full<Bytes>>,
    /// Addresses come from the topology at each call: a reload may fill them in.
    topology: Arc<ArcSwap<Topology>>,
    gz: usize,
    current: usize,
    timeout: Duration,
}

impl Client {
    /// Calls through `connector`, which checks that the cell answering is the
    /// one the topology places at the address.
    pub fn new(
        topology: Arc<ArcSwap<Topology>>,
        gz: usize,
        timeout: Duration,
        connector: Connector,
    ) -> Self {
        Self {
            client: HttpClient::builder(TokioExecutor::new()).build(connector),
            topology,
            gz,
            current: 0,
            timeout,
        }
    }

    /// The global zone's cell and its standby, where known (`ldc up` fills in
    /// ports bound at start with a reload).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let topology = self.topology.load();
        let cell = &topology.cells()[self.gz];
        std::iter::once(cell.peer)
            .chain(cell.standby.map(|s| topology.cells()[s].peer))
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
    pub async fn items(&mut self, wanting: &[String]) -> Result<Vec<ItemState>, String> {
        let path = match wanting {
            [] => ITEMS_PATH.to_owned(),
            items => format!("{ITEMS_PATH}?wanting={}", items.join(",")),
        };
        let (status, body) = self.call(Method::GET, &path, None).await?;
        if status != StatusCode::OK {
            return Err(format!("poll answered {status}"));
        }
        let items: Items = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok(items.items)
    }

    pub async fn lease(&mut self, lease: &Lease) -> Result<ItemState, String> {
        let body = serde_json::to_vec(lease).map_err(|e| e.to_string())?;
        let (status, body) = self.call(Method::POST, LEASES_PATH, Some(body)).await?;
        if !status.is_success() {
            return Err(format!(
                "lease {} of {} answered {status}: {}",
                lease.seq,
                lease.item_id,
                String::from_utf8_lossy(&body)
            ));
        }
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    }
}
