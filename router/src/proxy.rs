//! The proxy: user id to cell, request forwarded with its path, query and body
//! streamed, and the cell's response streamed back with the route in its headers.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Body as _;
use ldc_serve::tls::Tls;
use ldc_serve::{
    Handler, Http1Connection, Http1Service, RequestError, Served, json, json_error, serve_http1,
};
use ldc_topology::{RouteMiss, Topology, is_valid_user_id, split_user_path, user_route};
use prometheus::{IntGauge, Registry};
use serde::Serialize;

use crate::auth::{Auth, Refusal};
use crate::error::{RouteError, StartError};
use crate::health::{Health, HealthMetrics};
use crate::hop::strip_hop_by_hop;
use crate::metrics::{CellMetrics, Metrics, NO_CELL, UpstreamError};
use crate::retry::route_and_forward;
use crate::upstream::{CellBody, Table, Transport, Upstream};

pub static X_LDC_CELL: HeaderName = HeaderName::from_static("x-ldc-cell");
pub static X_LDC_SLOT: HeaderName = HeaderName::from_static("x-ldc-slot");
pub static X_LDC_EPOCH: HeaderName = HeaderName::from_static("x-ldc-epoch");
static X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");

type ProxyBody = Either<CellBody, Full<Bytes>>;

/// Largest response body read whole for an HTTP/2 client (see `Delivery`); the
/// cells' answers are smaller.
const READ_WHOLE: u64 = 64 << 10;

/// How a cell's response body reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// As it comes: [`serve_http1`] bounds each wait for its client.
    Streamed,
    /// Read whole first when small (see [`READ_WHOLE`]): an HTTP/2 client takes a
    /// response as slowly as its flow control lets it, and the cell's stream stays
    /// taken until its body is read.
    Whole,
}

pub struct Proxy {
    table: ArcSwap<Table>,
    transport: Transport,
    metrics: Metrics,
    health_metrics: HealthMetrics,
    /// Metrics of requests answered without a cell.
    local: CellMetrics,
    retry_after: HeaderValue,
    /// With `[auth]`, who a request acts for is its token's user.
    auth: Auth,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("topology", &self.table.load().topology.source())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy reaching cells as `tls`'s identity (in plain TCP when `None`).
    pub fn new(
        topology: Arc<Topology>,
        registry: &Registry,
        tls: Option<Arc<Tls>>,
    ) -> Result<Self, StartError> {
        let deploy = topology.deploy();
        let transport = Transport::new(&topology, tls);
        let metrics = Metrics::register(registry)?;
        let health_metrics = HealthMetrics::register(registry)?;
        let table = transport.table(topology.clone(), &metrics, &health_metrics, None);
        let auth = Auth::new(deploy, metrics.auth.clone())?;
        Ok(Self {
            local: metrics.cell(NO_CELL),
            retry_after: HeaderValue::from(deploy.timeouts.retry_after_s),
            table: ArcSwap::from_pointee(table),
            transport,
            metrics,
            health_metrics,
            auth,
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
    /// Timeouts and limits of the listeners stay as they were at start; `[auth]`
    /// and its key files are read again.
    pub fn reload(&self, next: Arc<Topology>) -> Result<(), Vec<String>> {
        let current = self.table.load();
        let problems = current.topology.reload_problems(&next);
        if !problems.is_empty() {
            return Err(problems);
        }
        self.auth.reload(next.deploy())?;
        let table = self.transport.table(
            next,
            &self.metrics,
            &self.health_metrics,
            Some(&current.health),
        );
        self.table.store(Arc::new(table));
        Ok(())
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
        let cause = match tokio::time::timeout(self.transport.request_timeout, cell.collect()).await
        {
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

    fn error_response(&self, error: &RouteError) -> Response<ProxyBody> {
        let mut response =
            json_error(error.status(), error.code(), error.to_string(), []).map(Either::Right);
        if error.retry_safe() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, self.retry_after.clone());
        }
        if let RouteError::MethodNotAllowed { allow, .. } = error {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let RouteError::Unauthenticated(refusal) = error {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, refusal.challenge());
        }
        response
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
    let method = req.method();
    if let Some(user_id) = path.strip_prefix("/v1/route/") {
        if method != Method::GET {
            return Err(RouteError::MethodNotAllowed {
                method: method.to_string(),
                allow: "GET",
            });
        }
        return Ok(Target::Placement(user_id));
    }
    // Only the user API is forwarded: the global zone's routes and the admin
    // routes are not reachable through a router.
    match user_route(method.as_str(), path) {
        Ok(()) => {}
        Err(RouteMiss::NotFound) => return Err(RouteError::NotFound(path.to_owned())),
        Err(RouteMiss::MethodNotAllowed(allow)) => {
            return Err(RouteError::MethodNotAllowed {
                method: method.to_string(),
                allow,
            });
        }
    }
    if let Some((user_id, _)) = split_user_path(path) {
        return Ok(Target::User(user_id));
    }
    // Items are the one user route without the user in its path.
    let header = req
        .headers()
        .get(&X_USER_ID)
        .ok_or(RouteError::MissingUserId)?;
    let user_id = header.to_str().map_err(|_| RouteError::InvalidUserId)?;
    Ok(Target::User(user_id))
}

#[derive(Serialize)]
struct RouteAnswer<'t> {
    user_id: &'t str,
    slot: u32,
    epoch: u64,
    cell: &'t str,
    region: &'t str,
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
        standby: cell.standby.map(|s| topology.cells()[s].id.as_str()),
        served_by: route.map(|(serving, _)| topology.cells()[serving].id.as_str()),
    };
    json(StatusCode::OK, &answer).map(Either::Right)
}

impl Handler for Proxy {
    type Body = ProxyBody;

    /// Requests of HTTP/2 clients, read whole by the listener.
    fn handle(&self, req: Request<Bytes>) -> impl Future<Output = Response<ProxyBody>> + Send {
        self.answer(req, Delivery::Whole)
    }

    /// Counted with the answers given without a cell, as HTTP/1.1 refusals are.
    fn refused(&self, method: &Method, status: StatusCode) {
        self.local.observe(Some(method), status, 0.0);
    }

    fn take_http1(self: Arc<Self>, conn: Http1Connection) -> Served {
        Box::pin(serve_http1(self, conn))
    }
}

/// Requests of HTTP/1.1 clients, read by their connection.
impl Http1Service for Proxy {
    type Body = ProxyBody;

    fn answer(&self, req: Request<Bytes>) -> impl Future<Output = Response<ProxyBody>> + Send {
        Proxy::answer(self, req, Delivery::Streamed)
    }

    /// Counted with the answers given without a cell.
    fn reject(&self, method: Option<&Method>, error: RequestError) -> Response<ProxyBody> {
        let response = error.response().map(Either::Right);
        self.local.observe(method, response.status(), 0.0);
        response
    }
}

impl Proxy {
    /// Routes a request whose body was read whole and returns the cell's response,
    /// or the router's own answer.
    async fn answer(&self, mut req: Request<Bytes>, delivery: Delivery) -> Response<ProxyBody> {
        let started = Instant::now();
        let _in_flight = InFlight::enter(&self.metrics.in_flight);
        let method = req.method().clone();
        let table = self.table.load();
        let subject = self.auth.authenticate(req.headers());
        if let Some(Ok(user_id)) = &subject {
            // Requests routed by header go to the token's user; a client's own
            // `X-User-Id` is never passed on. Nor is the token: cells trust the
            // router's word for the user, and need not see a credential.
            let headers = req.headers_mut();
            headers.insert(X_USER_ID.clone(), user_id.clone());
            headers.remove(header::AUTHORIZATION);
        }
        let routed = match admitted(target(&req), subject) {
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
                let outcome =
                    route_and_forward(&self.transport, &self.metrics, &table, req, slot, shard)
                        .await;
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
}

/// With `[auth]` (`subject` is some), a user route only for the token's user. A
/// request routed by header without one lacks the token, not the header.
fn admitted(
    target: Result<Target<'_>, RouteError>,
    subject: Option<Result<HeaderValue, Refusal>>,
) -> Result<Target<'_>, RouteError> {
    match (subject, target) {
        (Some(Ok(user)), Ok(Target::User(id) | Target::Placement(id))) if user != id => {
            Err(RouteError::UserMismatch)
        }
        (Some(Err(refusal)), Ok(_) | Err(RouteError::MissingUserId)) => {
            Err(RouteError::Unauthenticated(refusal))
        }
        (_, target) => target,
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
