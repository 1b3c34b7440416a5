//! The cells of a topology as the router reaches them, and one attempt to send a
//! request to one of them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ldc_serve::tls::Tls;
use ldc_serve::{Connector, error_chain};
use ldc_topology::Topology;

use crate::channel::{Channel, RecvBody, SendError};
use crate::error::RouteError;
use crate::health::{Health, HealthMetrics, Probers};
use crate::metrics::{CellMetrics, Metrics, UpstreamError};

/// A cell's response body: from an HTTP/2 channel, or from a pooled HTTP/1.1
/// connection.
pub(crate) type CellBody = Either<RecvBody, Incoming>;

/// What the router needs per cell, built once per topology.
pub(crate) struct Upstream {
    authority: Authority,
    /// With `proxy.http2_to_cells`; otherwise requests take the pooled client.
    channel: Option<Channel>,
    pub id: HeaderValue,
    pub metrics: CellMetrics,
}

/// A topology with its upstreams and its view of the cells: swapped as a whole on
/// reload, read without a lock.
pub(crate) struct Table {
    pub topology: Arc<Topology>,
    pub upstreams: Vec<Upstream>,
    pub health: Arc<Health>,
    _probers: Probers,
}

/// The parts of a client's request that every attempt to forward it reuses.
pub(crate) struct Forward {
    pub method: Method,
    pub path_and_query: Option<PathAndQuery>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How requests reach cells, whatever the topology: the connections outlive
/// reloads.
pub(crate) struct Transport {
    client: Client<Connector, Full<Bytes>>,
    /// Knows which cell is at which address (set for each topology), and checks it.
    connector: Connector,
    /// Connect and ping timeouts of HTTP/2 channels to cells, when they are used.
    channels: Option<(Duration, Duration)>,
    pub request_timeout: Duration,
}

impl Transport {
    /// Connects as `tls`'s identity (plain TCP in an insecure deployment).
    pub fn new(topology: &Topology, tls: Option<Arc<Tls>>) -> Self {
        let deploy = topology.deploy();
        let connect_timeout = Duration::from_millis(deploy.timeouts.connect_timeout_ms);
        let connector = Connector::new(tls, topology, connect_timeout);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_millis(deploy.timeouts.pool_idle_timeout_ms))
            .pool_max_idle_per_host(deploy.limits.pool_max_idle_per_cell as usize)
            .http2_only(deploy.proxy.http2_to_cells)
            .build(connector.clone());
        let request_timeout = Duration::from_millis(deploy.timeouts.request_timeout_ms);
        let channels = deploy.proxy.http2_to_cells.then(|| {
            (
                Duration::from_millis(deploy.timeouts.connect_timeout_ms),
                request_timeout,
            )
        });
        Self {
            client,
            connector,
            channels,
            request_timeout,
        }
    }

    /// Whether requests go to cells over HTTP/2, where `:authority` says where.
    pub fn http2(&self) -> bool {
        self.channels.is_some()
    }

    /// The upstreams of `topology`, and its view of the cells, started from
    /// `seed`'s when given.
    pub fn table(
        &self,
        topology: Arc<Topology>,
        metrics: &Metrics,
        health_metrics: &HealthMetrics,
        seed: Option<&Health>,
    ) -> Table {
        self.connector.set_topology(&topology);
        let health = Arc::new(Health::new(
            topology.clone(),
            self.client.clone(),
            health_metrics,
            seed,
        ));
        let probers = health.spawn();
        let upstreams = topology
            .cells()
            .iter()
            .map(|cell| Upstream {
                // A SocketAddr always renders as a valid authority and header value.
                authority: Authority::try_from(cell.advertise.to_string().as_str())
                    .unwrap_or_else(|_| Authority::from_static("0.0.0.0:0")),
                channel: self.channels.map(|(connect, ping)| {
                    Channel::new(cell.advertise, self.connector.clone(), connect, ping)
                }),
                id: HeaderValue::try_from(cell.id.as_str())
                    .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
                metrics: metrics.cell(&cell.id),
            })
            .collect();
        Table {
            topology,
            upstreams,
            health,
            _probers: probers,
        }
    }

    /// Sends `request` to `cell` once, within the request timeout; a failure is
    /// counted against the cell and logged.
    pub async fn send(
        &self,
        table: &Table,
        request: &Forward,
        slot: u32,
        cell: usize,
    ) -> Result<Response<CellBody>, RouteError> {
        let upstream = &table.upstreams[cell];
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(upstream.authority.clone());
        uri.path_and_query = request.path_and_query.clone();
        let uri = Uri::from_parts(uri).map_err(|err| RouteError::NotFound(err.to_string()))?;
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let sent = match &upstream.channel {
            Some(channel) => {
                let mut head = Request::new(());
                *head.method_mut() = request.method.clone();
                *head.uri_mut() = uri;
                *head.headers_mut() = request.headers.clone();
                channel
                    .send(head, request.body.clone(), deadline)
                    .await
                    .map(|response| response.map(Either::Left))
            }
            None => {
                let mut sent = Request::new(Full::new(request.body.clone()));
                *sent.method_mut() = request.method.clone();
                *sent.uri_mut() = uri;
                *sent.headers_mut() = request.headers.clone();
                match tokio::time::timeout_at(deadline, self.client.request(sent)).await {
                    Ok(Ok(response)) => Ok(response.map(Either::Right)),
                    Ok(Err(err)) if err.is_connect() => {
                        Err(SendError::Unreachable(error_chain(&err)))
                    }
                    Ok(Err(err)) => Err(SendError::Failed(error_chain(&err))),
                    Err(_) => Err(SendError::TimedOut),
                }
            }
        };
        let err = match sent {
            Ok(response) => return Ok(response),
            Err(err) => err,
        };
        let cell_id = || table.topology.cells()[cell].id.clone();
        let waited_ms = self.request_timeout.as_millis() as u64;
        let (error, kind) = match &err {
            SendError::Unreachable(_) => (
                RouteError::CellUnavailable(cell_id()),
                UpstreamError::Connect,
            ),
            SendError::Failed(_) => (RouteError::CellFailed(cell_id()), UpstreamError::Failed),
            SendError::Refused(_) => (RouteError::CellBusy(cell_id()), UpstreamError::Refused),
            SendError::Saturated => (
                RouteError::CellSaturated(cell_id(), waited_ms),
                UpstreamError::Saturated,
            ),
            SendError::TimedOut => (
                RouteError::CellTimeout(cell_id(), waited_ms),
                UpstreamError::Timeout,
            ),
        };
        upstream.metrics.upstream_error(kind);
        tracing::warn!(cell = %cell_id(), slot, cause = %err, code = error.code(), "forward failed");
        Err(error)
    }
}
