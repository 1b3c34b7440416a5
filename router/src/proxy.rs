//! The proxy: user id to cell, request forwarded with its path, query and body
//! streamed, and the cell's response streamed back with the route in its headers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ldc_serve::{Handler, Http1Connection, Served, error_chain, json, json_error};
use ldc_topology::{Topology, is_valid_user_id, split_user_path};
use prometheus::{IntGauge, Registry};
use serde::{Deserialize, Serialize};

use crate::channel::{Channel, RecvBody, SendError, content_length};
use crate::error::RouteError;
use crate::health::{Health, HealthMetrics, Probers};
use crate::metrics::{CellMetrics, Metrics, NO_CELL, Retry, UpstreamError};

pub static X_LDC_CELL: HeaderName = HeaderName::from_static("x-ldc-cell");
pub static X_LDC_SLOT: HeaderName = HeaderName::from_static("x-ldc-slot");
pub static X_LDC_EPOCH: HeaderName = HeaderName::from_static("x-ldc-epoch");
static X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");

/// Headers that describe one hop, not the message (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// A cell's response body: from an HTTP/2 channel, or from a pooled HTTP/1.1
/// connection.
type CellBody = Either<RecvBody, Incoming>;
pub(crate) type ProxyBody = Either<CellBody, Full<Bytes>>;

/// Largest response body read whole for an HTTP/2 client (see `Delivery`); the
/// cells' answers are smaller.
const READ_WHOLE: u64 = 64 << 10;

/// How a cell's response body reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// As it comes: the HTTP/1.1 front bounds each wait for its client.
    Streamed,
    /// Read whole first when small (see [`READ_WHOLE`]): an HTTP/2 client takes a
    /// response as slowly as its flow control lets it, and the cell's stream stays
    /// taken until its body is read.
    Whole,
}

/// What the router needs per cell, built once per topology.
struct Upstream {
    authority: Authority,
    /// With `proxy.http2_to_cells`; otherwise requests take the pooled client.
    channel: Option<Channel>,
    id: HeaderValue,
    metrics: CellMetrics,
}

/// A topology with its upstreams and its view of the cells: swapped as a whole on
/// reload, read without a lock.
struct Table {
    topology: Arc<Topology>,
    upstreams: Vec<Upstream>,
    health: Arc<Health>,
    _probers: Probers,
}

pub struct Proxy {
    table: ArcSwap<Table>,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Connect and ping timeouts of HTTP/2 channels to cells, when they are used.
    channels: Option<(Duration, Duration)>,
    metrics: Metrics,
    health_metrics: HealthMetrics,
    /// Metrics of requests answered without a cell.
    local: CellMetrics,
    max_body_bytes: u64,
    /// Time a client gets to send its body (the headers have their own bound).
    body_timeout: Duration,
    request_timeout: Duration,
    retry_after: HeaderValue,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("topology", &self.table.load().topology.source())
            .finish_non_exhaustive()
    }
}

/// The parts of a client's request that every attempt to forward it reuses.
struct Forward {
    method: Method,
    path_and_query: Option<PathAndQuery>,
    headers: HeaderMap,
    body: Bytes,
}

/// Where a request went and what came back.
struct Outcome {
    /// The cell that served the request's shard and the epoch, when one did.
    target: Option<(usize, u64)>,
    result: Result<Response<CellBody>, RouteError>,
}

impl Proxy {
    pub fn new(topology: Arc<Topology>, registry: &Registry) -> Result<Self, prometheus::Error> {
        let deploy = topology.deploy();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(
            deploy.timeouts.connect_timeout_ms,
        )));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_millis(deploy.timeouts.pool_idle_timeout_ms))
            .pool_max_idle_per_host(deploy.limits.pool_max_idle_per_cell as usize)
            .http2_only(deploy.proxy.http2_to_cells)
            .build(connector);
        let metrics = Metrics::register(registry)?;
        let health_metrics = HealthMetrics::register(registry)?;
        let channels = deploy.proxy.http2_to_cells.then(|| {
            (
                Duration::from_millis(deploy.timeouts.connect_timeout_ms),
                Duration::from_millis(deploy.timeouts.request_timeout_ms),
            )
        });
        let table = Table::new(
            topology.clone(),
            &client,
            channels,
            &metrics,
            &health_metrics,
            None,
        );
        Ok(Self {
            local: metrics.cell(NO_CELL),
            max_body_bytes: deploy.limits.max_body_bytes,
            body_timeout: Duration::from_millis(deploy.timeouts.header_read_timeout_ms),
            request_timeout: Duration::from_millis(deploy.timeouts.request_timeout_ms),
            retry_after: HeaderValue::from(deploy.timeouts.retry_after_s),
            table: ArcSwap::from_pointee(table),
            client,
            channels,
            metrics,
            health_metrics,
        })
    }

    /// The topology requests are routed by now.
    pub fn topology(&self) -> Arc<Topology> {
        self.table.load().topology.clone()
    }

    /// The view of the cells requests are routed by now.
    pub fn health(&self) -> Arc<Health> {
        self.table.load().health.clone()
    }

    /// Routes by `next` from now on, if it moves no slot (see
    /// [`Topology::reload_problems`]); requests in flight finish on the old table.
    /// Timeouts and limits of the listeners stay as they were at start.
    pub fn reload(&self, next: Arc<Topology>) -> Result<(), Vec<String>> {
        let current = self.table.load();
        let problems = current.topology.reload_problems(&next);
        if !problems.is_empty() {
            return Err(problems);
        }
        let table = Table::new(
            next,
            &self.client,
            self.channels,
            &self.metrics,
            &self.health_metrics,
            Some(&current.health),
        );
        self.table.store(Arc::new(table));
        Ok(())
    }

    /// The bounds of the HTTP/1.1 front's connections.
    pub(crate) fn front_limits(&self) -> crate::front::Limits {
        crate::front::Limits {
            body_timeout: self.body_timeout,
            max_body: self.max_body_bytes,
            stall_timeout: self.request_timeout,
        }
    }

    /// The body of an HTTP/2 client's request, whole: bounded in size and in time,
    /// so that it can be sent again and so that a slow client never holds a cell's
    /// time. (The HTTP/1.1 front reads its clients' bodies itself, to the same
    /// bounds.)
    async fn read_body(&self, headers: &HeaderMap, body: Incoming) -> Result<Bytes, RouteError> {
        if content_length(headers).is_some_and(|len| len > self.max_body_bytes) {
            return Err(RouteError::BodyTooLarge(self.max_body_bytes));
        }
        // Most requests are reads without a body: no timer for them, and no room
        // in every request's future for reading one.
        if body.is_end_stream() {
            return Ok(Bytes::new());
        }
        Box::pin(self.collect_body(body)).await
    }

    async fn collect_body(&self, body: Incoming) -> Result<Bytes, RouteError> {
        let limited = Limited::new(body, self.max_body_bytes as usize);
        match tokio::time::timeout(self.body_timeout, limited.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(err)) if err.is::<LengthLimitError>() => {
                Err(RouteError::BodyTooLarge(self.max_body_bytes))
            }
            Ok(Err(err)) => Err(RouteError::InvalidBody(err.to_string())),
            Err(_) => Err(RouteError::BodyTimeout(self.body_timeout.as_millis() as u64)),
        }
    }

    /// Reads a body from a channel of up to [`READ_WHOLE`] bytes with a known
    /// length within the request timeout: the cell's stream is given back then,
    /// whatever the client's flow control lets it take. A body that fails after
    /// the head is a failed cell: it may have applied the request.
    async fn read_whole(
        &self,
        response: Response<ProxyBody>,
        upstream: &Upstream,
    ) -> Result<Response<ProxyBody>, RouteError> {
        let (parts, body) = response.into_parts();
        let cell = match body {
            Either::Left(Either::Left(cell))
                if cell.size_hint().exact().is_some_and(|n| n <= READ_WHOLE) =>
            {
                cell
            }
            body => return Ok(Response::from_parts(parts, body)),
        };
        let cause = match tokio::time::timeout(self.request_timeout, cell.collect()).await {
            Ok(Ok(whole)) => {
                let body = Either::Right(Full::new(whole.to_bytes()));
                return Ok(Response::from_parts(parts, body));
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => "no whole body within the request timeout".to_owned(),
        };
        upstream.metrics.upstream_error(UpstreamError::Failed);
        let id = upstream.id.to_str().unwrap_or_default().to_owned();
        tracing::warn!(cell = %id, %cause, "cell response body failed");
        Err(RouteError::CellFailed(id))
    }

    /// Sends the request to the cell serving `shard`. A cell that cannot be reached
    /// is ejected, and a 421 (the cell no longer serves the shard) refreshes the
    /// view; either way the request goes once more to the new holder, if there is
    /// one and the request is idempotent. Neither cell started the request, so no
    /// attempt can apply it twice.
    async fn route_and_forward(
        &self,
        table: &Table,
        req: Request<Bytes>,
        slot: u32,
        shard: usize,
    ) -> Outcome {
        let cells = table.topology.cells();
        let candidates = || std::iter::once(shard).chain(cells[shard].standby);
        let Some(mut target) = table.health.route(shard) else {
            // Answer now; the shard's cells get probed, so the next request may go.
            table.health.nudge(&candidates().collect::<Vec<_>>());
            let result = Err(RouteError::NoHolder(cells[shard].id.clone()));
            return Outcome {
                target: None,
                result,
            };
        };
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if self.channels.is_some() {
            // Over HTTP/2, `:authority` says where.
            parts.headers.remove(header::HOST);
        }
        let request = Forward {
            method: parts.method,
            path_and_query: parts.uri.path_and_query().cloned(),
            headers: parts.headers,
            body,
        };
        let mut retried = false;
        loop {
            let result = self.forward(table, &request, slot, target.0).await;
            let moved = match &result {
                Err(RouteError::CellBusy(_)) if !retried => {
                    // The cell started nothing: any request may go again, and
                    // the cell is alive.
                    self.metrics.retry(Retry::Refused);
                    retried = true;
                    continue;
                }
                Err(RouteError::CellUnavailable(_)) => {
                    table.health.eject(target.0);
                    false
                }
                Ok(response) if response.status() == StatusCode::MISDIRECTED_REQUEST => {
                    let ask: Vec<usize> = candidates().chain([target.0]).collect();
                    // Boxed, as rare: it would otherwise widen every request's future.
                    Box::pin(table.health.refresh(&ask)).await;
                    true
                }
                _ => {
                    return Outcome {
                        target: Some(target),
                        result,
                    };
                }
            };
            let next = table.health.route(shard).filter(|&next| next != target);
            match next {
                Some(next) if !retried && idempotent(&request) => {
                    self.metrics.retry(if moved {
                        Retry::Misdirected
                    } else {
                        Retry::ConnectFailed
                    });
                    retried = true;
                    target = next;
                }
                _ if moved => {
                    let result = Err(RouteError::ShardMoving(cells[shard].id.clone()));
                    return Outcome {
                        target: Some(target),
                        result,
                    };
                }
                _ => {
                    return Outcome {
                        target: Some(target),
                        result,
                    };
                }
            }
        }
    }

    async fn forward(
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

    fn error_response(&self, error: &RouteError) -> Response<ProxyBody> {
        let mut response =
            json_error(error.status(), error.code(), error.to_string(), []).map(Either::Right);
        if error.retry_safe() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, self.retry_after.clone());
        }
        // The router's only own route, `/v1/route/{user_id}`, is GET.
        if let RouteError::MethodNotAllowed(_) = error {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
        }
        response
    }
}

/// Whether sending the request twice cannot apply it twice: a read, or a write the
/// cell deduplicates by its `request_id`.
fn idempotent(request: &Forward) -> bool {
    #[derive(Deserialize)]
    struct Keyed {
        request_id: Option<serde::de::IgnoredAny>,
    }
    matches!(request.method, Method::GET | Method::HEAD)
        || serde_json::from_slice::<Keyed>(&request.body).is_ok_and(|k| k.request_id.is_some())
}

impl Table {
    fn new(
        topology: Arc<Topology>,
        client: &Client<HttpConnector, Full<Bytes>>,
        channels: Option<(Duration, Duration)>,
        metrics: &Metrics,
        health_metrics: &HealthMetrics,
        seed: Option<&Health>,
    ) -> Self {
        let health = Arc::new(Health::new(
            topology.clone(),
            client.clone(),
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
                channel: channels
                    .map(|(connect, ping)| Channel::new(cell.advertise, connect, ping)),
                id: HeaderValue::try_from(cell.id.as_str())
                    .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
                metrics: metrics.cell(&cell.id),
            })
            .collect();
        Self {
            topology,
            upstreams,
            health,
            _probers: probers,
        }
    }
}

/// Where a request goes, read from its path or its `X-User-Id` header.
enum Target<'r> {
    /// `GET /v1/route/{user_id}`: answered by the router itself.
    Placement(&'r str),
    /// Proxied to the user's cell.
    User(&'r str),
}

fn target<B>(req: &Request<B>) -> Result<Target<'_>, RouteError> {
    let path = req.uri().path();
    if let Some((user_id, _)) = split_user_path(path) {
        return Ok(Target::User(user_id));
    }
    if let Some(user_id) = path.strip_prefix("/v1/route/") {
        if req.method() != Method::GET {
            return Err(RouteError::MethodNotAllowed(req.method().to_string()));
        }
        return Ok(Target::Placement(user_id));
    }
    if path.starts_with("/v1/") {
        let header = req
            .headers()
            .get(&X_USER_ID)
            .ok_or(RouteError::MissingUserId)?;
        let user_id = header.to_str().map_err(|_| RouteError::InvalidUserId)?;
        return Ok(Target::User(user_id));
    }
    Err(RouteError::NotFound(path.to_owned()))
}

#[derive(Serialize)]
struct RouteAnswer<'t> {
    user_id: &'t str,
    slot: u32,
    epoch: u64,
    cell: &'t str,
    region: &'t str,
    address: String,
    standby: Option<&'t str>,
    /// The cell serving the slot now: the owner, its standby, or none.
    served_by: Option<&'t str>,
}

fn placement_answer(topology: &Topology, health: &Health, user_id: &str) -> Response<ProxyBody> {
    let (slot, index) = topology.route(user_id);
    let cell = &topology.cells()[index];
    let route = health.route(index);
    let answer = RouteAnswer {
        user_id,
        slot,
        epoch: route.map_or(topology.placement().epoch(), |(_, epoch)| epoch),
        cell: &cell.id,
        region: &cell.region,
        address: cell.advertise.to_string(),
        standby: cell.standby.map(|s| topology.cells()[s].id.as_str()),
        served_by: route.map(|(serving, _)| topology.cells()[serving].id.as_str()),
    };
    json(StatusCode::OK, &answer).map(Either::Right)
}

impl Handler for Proxy {
    type Body = ProxyBody;

    /// Requests of HTTP/2 clients.
    async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let (parts, body) = req.into_parts();
        match self.read_body(&parts.headers, body).await {
            Ok(body) => {
                self.answer(Request::from_parts(parts, body), Delivery::Whole)
                    .await
            }
            Err(error) => self.reject(Some(&parts.method), &error),
        }
    }

    fn take_http1(self: Arc<Self>, conn: Http1Connection) -> Result<Served, Http1Connection> {
        Ok(Box::pin(crate::front::serve(self, conn)))
    }
}

impl Proxy {
    /// Routes a request whose body was read whole and returns the cell's response,
    /// or the router's own answer.
    pub(crate) async fn answer(
        &self,
        req: Request<Bytes>,
        delivery: Delivery,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let _in_flight = InFlight::enter(&self.metrics.in_flight);
        let method = req.method().clone();
        let table = self.table.load();
        let routed = match target(&req) {
            Ok(Target::User(user_id)) if is_valid_user_id(user_id) => {
                Ok(table.topology.route(user_id))
            }
            Ok(Target::Placement(user_id)) if is_valid_user_id(user_id) => {
                Err(placement_answer(&table.topology, &table.health, user_id))
            }
            Ok(_) => Err(self.error_response(&RouteError::InvalidUserId)),
            Err(error) => Err(self.error_response(&error)),
        };
        let (metrics, response) = match routed {
            Err(local) => (&self.local, local),
            Ok((slot, shard)) => {
                let outcome = self.route_and_forward(&table, req, slot, shard).await;
                let served_by = outcome.target.map_or(shard, |(cell, _)| cell);
                let upstream = &table.upstreams[served_by];
                let result = outcome.result.map(|response| {
                    let (mut parts, body) = response.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    Response::from_parts(parts, Either::Left(body))
                });
                let result = match result {
                    // Boxed: only HTTP/2 clients' answers take this path.
                    Ok(response) if delivery == Delivery::Whole => {
                        Box::pin(self.read_whole(response, upstream)).await
                    }
                    result => result,
                };
                let mut response = result.unwrap_or_else(|error| self.error_response(&error));
                let headers = response.headers_mut();
                headers.insert(X_LDC_CELL.clone(), upstream.id.clone());
                headers.insert(X_LDC_SLOT.clone(), HeaderValue::from(slot));
                if let Some((_, epoch)) = outcome.target {
                    headers.insert(X_LDC_EPOCH.clone(), HeaderValue::from(epoch));
                }
                (&upstream.metrics, response)
            }
        };
        metrics.observe(
            Some(&method),
            response.status(),
            started.elapsed().as_secs_f64(),
        );
        response
    }

    /// The router's answer to a request it could not read, counted with the
    /// answers given without a cell.
    pub(crate) fn reject(
        &self,
        method: Option<&Method>,
        error: &RouteError,
    ) -> Response<ProxyBody> {
        let response = self.error_response(error);
        self.local.observe(method, response.status(), 0.0);
        response
    }
}

/// Counts a request as in flight until it is answered or its client goes away.
struct InFlight<'g>(&'g IntGauge);

impl<'g> InFlight<'g> {
    fn enter(gauge: &'g IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over their few names, compared as
    // strings (by length first), costs less than a hashed lookup per hop-by-hop
    // name, or than comparing `HeaderName`s.
    if !headers
        .keys()
        .any(|name| HOP_BY_HOP.contains(&name.as_str()))
    {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        // Every `Connection` line may name more hop-by-hop headers.
        let named: Vec<String> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|name| name.trim().to_owned())
            .collect();
        for name in named {
            headers.remove(name.as_str());
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_line_names_hop_by_hop_headers() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONNECTION, HeaderValue::from_static("x-one"));
        headers.append(
            header::CONNECTION,
            HeaderValue::from_static("x-two, keep-alive"),
        );
        for name in ["x-one", "x-two", "keep-alive", "x-kept"] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept", "transfer-encoding"]);
    }
}
