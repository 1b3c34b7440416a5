//! The cell's HTTP API: ownership check first, then the user's accounts, transfers
//! and orders. Writes go through the group committer; reads use store snapshots.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body as _;
use hyper::body::Incoming;
use ldc_serve::{Body, Handler, json, json_bytes};
use ldc_topology::{MAX_MONEY, Topology, is_valid_user_id, split_user_path};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use serde_json::json as value;

use arc_swap::ArcSwap;

use crate::committer::SubmitError;
use crate::error::CellError;
use crate::ledger::{self, Command, keys};
use crate::shard::Shard;
use crate::stock::{ItemStock, StockCache};
use crate::store::Store;

/// Default page size of list endpoints.
const DEFAULT_PAGE: u32 = 20;

/// Order outcomes counted by `ldc_cell_orders_total`.
struct OrderMetrics {
    confirmed: IntCounter,
    sold_out: IntCounter,
    declined: IntCounter,
    failed: IntCounter,
    /// Time buyers at a cell with no unit left waited for a lease.
    lease_wait: Histogram,
}

impl OrderMetrics {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let orders = IntCounterVec::new(
            Opts::new(
                "ldc_cell_orders_total",
                "Order requests by outcome: confirmed, sold_out (fast path), declined \
                 (funds, replays, bad input), failed (ledger unavailable)",
            ),
            &["outcome"],
        )?;
        let lease_wait = Histogram::with_opts(
            HistogramOpts::new(
                "ldc_cell_lease_wait_seconds",
                "Time an order waited for stock from the global zone (only orders that waited)",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
        )?;
        registry.register(Box::new(orders.clone()))?;
        registry.register(Box::new(lease_wait.clone()))?;
        Ok(Self {
            lease_wait,
            confirmed: orders.with_label_values(&["confirmed"]),
            sold_out: orders.with_label_values(&["sold_out"]),
            declined: orders.with_label_values(&["declined"]),
            failed: orders.with_label_values(&["failed"]),
        })
    }
}

/// `ldc_cell_requests_total{code}`, with each code's counter looked up once: on
/// the sold-out fast path the label lookup was a visible share of the cell's CPU.
struct RequestCounts {
    family: IntCounterVec,
    /// Indexed by status code minus 100.
    by_code: Vec<OnceLock<IntCounter>>,
}

impl RequestCounts {
    fn new(family: IntCounterVec) -> Self {
        Self {
            family,
            by_code: (100..600).map(|_| OnceLock::new()).collect(),
        }
    }

    fn count(&self, status: StatusCode) {
        let counter = self.by_code[usize::from(status.as_u16() - 100)]
            .get_or_init(|| self.family.with_label_values(&[status.as_str()]));
        counter.inc();
    }
}

/// Request limits from the deploy file.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    pub max_body_bytes: u64,
    pub max_order_quantity: u32,
    pub max_page: u32,
}

pub struct Cell<S> {
    /// Swapped on reload; a reload never moves a slot. Shared with the lease keepers.
    topology: Arc<ArcSwap<Topology>>,
    index: usize,
    /// This cell's own shard, served for the life of the process.
    own: Arc<Shard<S>>,
    /// Shards of dead cells this cell stands by for, while it holds them.
    taken: ArcSwap<Vec<Arc<Shard<S>>>>,
    limits: ApiLimits,
    /// With a global zone: how long a buyer waits for a lease when no unit is left.
    lease_wait: Option<Duration>,
    /// `Retry-After` of 503 answers.
    retry_after: HeaderValue,
    /// While serving the global zone: when a cell last got less of an item than
    /// it asked for. A hint, not a record: with the global account empty, it makes
    /// polls recall units idle at other cells.
    starving: Mutex<HashMap<String, Instant>>,
    requests: RequestCounts,
    orders: OrderMetrics,
}

impl<S> std::fmt::Debug for Cell<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cell")
            .field("id", &self.topology.load().cells()[self.index].id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepositBody {
    amount: i64,
    request_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    to_user: String,
    amount: i64,
    request_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderBody {
    item_id: String,
    quantity: u32,
    request_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    item_id: String,
    cell: String,
    seq: u64,
    units: i64,
}

/// `PUT /admin/items/{item_id}` on the global zone.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    name: String,
    price: i64,
    stock: u64,
}

fn invalid(field: &'static str, message: impl Into<String>) -> CellError {
    CellError::InvalidBody {
        field: Some(field),
        message: message.into(),
    }
}

fn check_amount(amount: i64) -> Result<i64, CellError> {
    if amount <= 0 || amount > MAX_MONEY as i64 {
        return Err(invalid(
            "amount",
            format!("amount must be an integer from 1 to {MAX_MONEY} (minor units)"),
        ));
    }
    Ok(amount)
}

fn check_request_id(request_id: &str) -> Result<(), CellError> {
    if !is_valid_user_id(request_id) {
        return Err(invalid(
            "request_id",
            "request_id must match [A-Za-z0-9_-]{1,64}",
        ));
    }
    Ok(())
}

/// `limit` and `before` of a list endpoint.
fn page_query(query: Option<&str>, max_page: u32) -> Result<(usize, Option<u64>), CellError> {
    let mut limit = DEFAULT_PAGE.min(max_page);
    let mut before = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, val) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "limit" => {
                limit = val
                    .parse()
                    .ok()
                    .filter(|l| (1..=max_page).contains(l))
                    .ok_or_else(|| {
                        CellError::InvalidQuery(format!("limit must be from 1 to {max_page}"))
                    })?;
            }
            "before" => {
                before = Some(val.parse().map_err(|_| {
                    CellError::InvalidQuery("before must be a sequence number".to_owned())
                })?);
            }
            other => {
                return Err(CellError::InvalidQuery(format!(
                    "unknown query parameter {other:?} (limit, before)"
                )));
            }
        }
    }
    Ok((limit as usize, before))
}

/// Why a request never reached the committer.
fn unsubmitted(err: SubmitError) -> CellError {
    match err {
        SubmitError::Overloaded => CellError::Overloaded,
        SubmitError::Closed => CellError::Ledger(crate::store::StoreError::Unavailable(
            "the cell is shutting down".to_owned(),
        )),
    }
}

/// A ledger answer as an HTTP response.
fn raw_json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    json_bytes(status, Bytes::from(body))
}

impl<S: Store + 'static> Cell<S> {
    pub fn new(
        topology: Arc<Topology>,
        index: usize,
        own: Shard<S>,
        registry: &Registry,
    ) -> Result<Self, CellError> {
        let requests = IntCounterVec::new(
            Opts::new(
                "ldc_cell_requests_total",
                "Requests answered by this cell, by status code",
            ),
            &["code"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        let limits = &topology.deploy().limits;
        let limits = ApiLimits {
            max_body_bytes: limits.max_body_bytes,
            max_order_quantity: limits.max_order_quantity,
            max_page: limits.max_page,
        };
        let retry_after = HeaderValue::from(topology.deploy().timeouts.retry_after_s);
        let own = Arc::new(own);
        let topology = Arc::new(ArcSwap::new(topology));
        Shard::start_keeper(&own, &topology);
        let topology_now = topology.load_full();
        let lease_wait = topology_now
            .deploy()
            .global_zone
            .as_ref()
            .map(|gz| Duration::from_millis(gz.lease_wait_ms));
        Ok(Self {
            starving: Mutex::default(),
            lease_wait,
            orders: OrderMetrics::register(registry)?,
            retry_after,
            topology,
            index,
            own,
            taken: ArcSwap::default(),
            limits,
            requests: RequestCounts::new(requests),
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
        Shard::start_keeper(&shard, &self.topology);
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

    /// The user id a request is for, and the path after `/v1/users/{user_id}`.
    fn user(req: &Request<Incoming>) -> Result<(&str, &str), CellError> {
        let path = req.uri().path();
        let (user_id, rest) = match split_user_path(path) {
            Some(split) => split,
            None if path.starts_with("/v1/") => {
                let header = req
                    .headers()
                    .get("x-user-id")
                    .ok_or(CellError::MissingUserId)?;
                let user_id = header.to_str().map_err(|_| CellError::InvalidUserId)?;
                (user_id, path)
            }
            None => return Err(CellError::NotFound(path.to_owned())),
        };
        if !is_valid_user_id(user_id) {
            return Err(CellError::InvalidUserId);
        }
        Ok((user_id, rest))
    }

    /// The slot of `user` and the shard it is in, if this cell serves that shard
    /// now; else the 421 naming the slot's owner by placement.
    fn holder(&self, user: &str) -> Result<(u32, Arc<Shard<S>>), CellError> {
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

    /// The request's JSON body. The future holds the body stream only, not the
    /// whole request.
    fn body<T: for<'de> Deserialize<'de>>(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Result<T, CellError>> + Send + 'static {
        let max = self.limits.max_body_bytes;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = req.into_body();
        async move {
            if declared.is_some_and(|len| len > max) {
                return Err(CellError::BodyTooLarge(max));
            }
            let mut body = Limited::new(body, max as usize);
            let unreadable = |err: Box<dyn std::error::Error + Send + Sync>| {
                if err.is::<LengthLimitError>() {
                    CellError::BodyTooLarge(max)
                } else {
                    CellError::InvalidBody {
                        field: None,
                        message: format!("cannot read the body: {err}"),
                    }
                }
            };
            // Most bodies arrive in one frame: take it as it is.
            let first = match body.frame().await {
                Some(frame) => frame.map_err(unreadable)?.into_data().unwrap_or_default(),
                None => Bytes::new(),
            };
            let bytes = if body.is_end_stream() {
                first
            } else {
                let rest = Box::pin(body.collect())
                    .await
                    .map_err(unreadable)?
                    .to_bytes();
                [first, rest].concat().into()
            };
            serde_json::from_slice(&bytes).map_err(|err| CellError::InvalidBody {
                field: None,
                message: format!("invalid JSON body: {err}"),
            })
        }
    }

    async fn submit(
        shard: &Shard<S>,
        request: impl Into<ledger::Write>,
    ) -> Result<ledger::Reply, CellError> {
        match shard.committer.submit(request).await {
            Ok(answer) => Ok(answer?),
            Err(err) => Err(unsubmitted(err)),
        }
    }

    /// Answers at once what needs no waiting (whoami, items, requests for another
    /// cell, paths with no valid user); every other request under a user runs in
    /// one boxed future, unknown routes included. hyper spawns a task per HTTP/2
    /// stream and moves the future a few times on the way, so its size is paid per
    /// request: in the box, the rare routes' large states cost only the requests
    /// that take them.
    fn route(&self, req: Request<Incoming>) -> Routed<'_> {
        let path = req.uri().path();
        if path.starts_with("/v1/gz/") {
            return Routed::Later(Box::pin(self.global_zone(req)));
        }
        if let Some(item_id) = path.strip_prefix("/v1/items/") {
            return Routed::Now(if req.method() == Method::GET {
                self.item(item_id)
            } else {
                Err(CellError::MethodNotAllowed {
                    method: req.method().to_string(),
                    allow: "GET",
                })
            });
        }
        let found = Self::user(&req).and_then(|(user, rest)| Ok((user, rest, self.holder(user)?)));
        let (user, rest, (slot, shard)) = match found {
            Ok(found) => found,
            Err(error) => return Routed::Now(Err(error)),
        };
        if rest == "/whoami" && req.method() == Method::GET {
            return Routed::Now(Ok(self.whoami(user, slot, &shard)));
        }
        let user = user.to_owned();
        let rest_len = rest.len();
        Routed::Later(Box::pin(self.serve_user(req, user, rest_len, slot, shard)))
    }

    /// The routes under `/v1/users/{user_id}` that wait (for the body or the
    /// ledger): `user`'s, in `shard`; the route is the last `rest_len` bytes of the
    /// path. `route` answers `GET /whoami` itself.
    async fn serve_user(
        &self,
        req: Request<Incoming>,
        user: String,
        rest_len: usize,
        slot: u32,
        shard: Arc<Shard<S>>,
    ) -> Result<Response<Body>, CellError> {
        let path = req.uri().path();
        let rest = &path[path.len() - rest_len..];
        let method = req.method().clone();
        let query = req.uri().query().map(str::to_owned);
        match (method, rest) {
            (Method::GET, "/balance") => {
                let mut snapshot = shard.store.snapshot().await?;
                let balance = ledger::balance(&mut snapshot, slot, &user).await?;
                Ok(json(
                    StatusCode::OK,
                    &value!({"user_id": user, "balance": balance}),
                ))
            }
            (Method::POST, "/deposits") => {
                let body: DepositBody = self.body(req).await?;
                check_request_id(&body.request_id)?;
                let command = Command::Deposit {
                    amount: check_amount(body.amount)?,
                };
                Self::write(&shard, user, slot, body.request_id, command).await
            }
            (Method::POST, "/transfers") => {
                let body: TransferBody = self.body(req).await?;
                check_request_id(&body.request_id)?;
                let amount = check_amount(body.amount)?;
                if !is_valid_user_id(&body.to_user) {
                    return Err(invalid("to_user", "to_user must match [A-Za-z0-9_-]{1,64}"));
                }
                if body.to_user == user {
                    return Err(CellError::SameUser);
                }
                let topology = self.topology.load();
                let (to_slot, owner) = topology.route(&body.to_user);
                if owner != shard.cell {
                    return Err(CellError::CrossCell {
                        to_user: body.to_user,
                        owner: topology.cells()[owner].id.clone(),
                    });
                }
                let command = Command::Transfer {
                    to_user: body.to_user,
                    to_slot,
                    amount,
                };
                Self::write(&shard, user, slot, body.request_id, command).await
            }
            (Method::POST, "/orders") => {
                let body: OrderBody = self
                    .body(req)
                    .await
                    .inspect_err(|_| self.orders.declined.inc())?;
                self.order(&shard, user, slot, body).await
            }
            (Method::GET, "/orders") => {
                let (limit, before) = page_query(query.as_deref(), self.limits.max_page)?;
                Self::page(&shard, slot, &user, keys::ORDER, "orders", before, limit).await
            }
            (Method::GET, "/journal") => {
                let (limit, before) = page_query(query.as_deref(), self.limits.max_page)?;
                Self::page(
                    &shard,
                    slot,
                    &user,
                    keys::JOURNAL,
                    "postings",
                    before,
                    limit,
                )
                .await
            }
            (Method::GET, path) if path.starts_with("/orders/") => {
                let order_id = &path["/orders/".len()..];
                let unknown = || CellError::UnknownOrder(order_id.to_owned());
                // Only the canonical spelling `o<n>`: no sign, no leading zeros.
                let seq = order_id
                    .strip_prefix('o')
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0'))
                    .and_then(|n| n.parse::<u64>().ok())
                    .ok_or_else(unknown)?;
                let mut snapshot = shard.store.snapshot().await?;
                let order = ledger::order_by_seq(&mut snapshot, slot, &user, seq)
                    .await?
                    .ok_or_else(unknown)?;
                Ok(json(StatusCode::OK, &order))
            }
            (method, path) if allowed(path).is_some() => Err(CellError::MethodNotAllowed {
                method: method.to_string(),
                allow: allowed(path).unwrap_or_default(),
            }),
            (_, _) => Err(CellError::NotFound(req.uri().path().to_owned())),
        }
    }

    /// The global zone's shard, if this cell serves it now (its host, or the host's
    /// standby after a takeover).
    pub(crate) fn gz_shard(&self) -> Result<Arc<Shard<S>>, CellError> {
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

    /// `/v1/gz/items` (what cells poll) and `/v1/gz/leases` (what they lease by).
    async fn global_zone(&self, req: Request<Incoming>) -> Result<Response<Body>, CellError> {
        let shard = self.gz_shard()?;
        match (req.method().clone(), req.uri().path()) {
            (Method::GET, "/v1/gz/items") => {
                let mut snapshot = shard.store.snapshot().await?;
                let items = ledger::gz_items(&mut snapshot).await?;
                if let Some(wanting) = req.uri().query().and_then(|q| q.strip_prefix("wanting=")) {
                    // Only items that exist: the map stays as small as the catalogue.
                    let known = wanting
                        .split(',')
                        .filter(|id| items.iter().any(|(known, _)| known == id));
                    self.starve(known);
                }
                let window = self.recall_window();
                let starving = self.starving.lock().unwrap_or_else(|e| e.into_inner());
                let items: Vec<_> = items
                    .iter()
                    .map(|(id, item)| {
                        let mut state = ledger::gz_item_json(id, item);
                        let recent = starving.get(id).is_some_and(|at| at.elapsed() < window);
                        state["recall"] = value!(recent && item.available == 0 && !item.closed);
                        state
                    })
                    .collect();
                Ok(json(StatusCode::OK, &value!({ "items": items })))
            }
            (Method::POST, "/v1/gz/leases") => {
                let body: LeaseBody = self.body(req).await?;
                let topology = self.topology.load();
                if topology.cell_index(&body.cell).is_none() {
                    return Err(invalid("cell", format!("no cell {:?}", body.cell)));
                }
                if !is_valid_user_id(&body.item_id) {
                    return Err(invalid("item_id", "item_id must match [A-Za-z0-9_-]{1,64}"));
                }
                if body.seq == 0 || body.units == 0 || body.units.unsigned_abs() > MAX_MONEY {
                    return Err(invalid(
                        "units",
                        "seq must be at least 1 and units a non-zero count of units",
                    ));
                }
                let lease_min = topology
                    .deploy()
                    .global_zone
                    .as_ref()
                    .map_or(1, |gz| gz.lease_min);
                let (item_id, asked) = (body.item_id.clone(), body.units);
                let write = ledger::Write::Stock(ledger::StockWrite::Grant {
                    item_id: body.item_id,
                    cell: body.cell,
                    seq: body.seq,
                    units: body.units,
                    cells: topology.cells().len() as u64,
                    lease_min,
                });
                let reply = Self::submit(&shard, write).await?;
                let granted: serde_json::Value =
                    serde_json::from_slice(&reply.body).unwrap_or_default();
                // Less than asked: the global account ran dry for this cell.
                let short = granted["units"].as_i64().is_some_and(|units| units < asked);
                if asked > 0 && short && granted["closed"] == false {
                    self.starve([item_id.as_str()]);
                }
                Ok(raw_json(reply.status, reply.body))
            }
            (method, "/v1/gz/items" | "/v1/gz/leases") => Err(CellError::MethodNotAllowed {
                method: method.to_string(),
                allow: if req.uri().path().ends_with("items") {
                    "GET"
                } else {
                    "POST"
                },
            }),
            (_, path) => Err(CellError::NotFound(path.to_owned())),
        }
    }

    /// Notes that a cell wants more of these items than it could get.
    fn starve<'i>(&self, items: impl IntoIterator<Item = &'i str>) {
        let window = self.recall_window();
        let mut starving = self.starving.lock().unwrap_or_else(|e| e.into_inner());
        starving.retain(|_, at| at.elapsed() < window);
        let now = Instant::now();
        for item in items {
            starving.insert(item.to_owned(), now);
        }
    }

    /// How long after a cell found an item's global account empty polls recall
    /// idle units: a few polls, so every cell sees it once.
    fn recall_window(&self) -> Duration {
        let poll = self
            .topology
            .load()
            .deploy()
            .global_zone
            .as_ref()
            .map_or(0, |gz| gz.poll_ms);
        Duration::from_millis(poll.saturating_mul(4))
    }

    /// `PUT /admin/items/{item_id}` and `POST /admin/items/{item_id}/close`, on the
    /// global zone's admin listener.
    pub async fn admin_item(
        &self,
        method: &Method,
        path: &str,
        body: &[u8],
    ) -> Option<Response<Body>> {
        let rest = path.strip_prefix("/admin/items/")?;
        let answer = async {
            let write = match (method, rest.strip_suffix("/close")) {
                (&Method::POST, Some(item_id)) => ledger::StockWrite::Close {
                    item_id: item_id.to_owned(),
                },
                (&Method::PUT, None) => {
                    if !is_valid_user_id(rest) {
                        return Err(invalid("item_id", "item ids match [A-Za-z0-9_-]{1,64}"));
                    }
                    let item: NewItem =
                        serde_json::from_slice(body).map_err(|err| CellError::InvalidBody {
                            field: None,
                            message: format!("invalid JSON body: {err}"),
                        })?;
                    if item.name.is_empty() || item.name.len() > 200 {
                        return Err(invalid("name", "name must be 1 to 200 bytes"));
                    }
                    if item.price <= 0 || item.price > MAX_MONEY as i64 {
                        return Err(invalid(
                            "price",
                            format!("price must be from 1 to {MAX_MONEY} minor units"),
                        ));
                    }
                    if item.stock > MAX_MONEY {
                        return Err(invalid(
                            "stock",
                            format!("stock must be at most {MAX_MONEY}"),
                        ));
                    }
                    ledger::StockWrite::Create {
                        item_id: rest.to_owned(),
                        name: item.name,
                        price: item.price,
                        stock: item.stock,
                    }
                }
                (_, Some(_)) => {
                    return Err(CellError::MethodNotAllowed {
                        method: method.to_string(),
                        allow: "POST",
                    });
                }
                (_, None) => {
                    return Err(CellError::MethodNotAllowed {
                        method: method.to_string(),
                        allow: "PUT",
                    });
                }
            };
            let shard = self.gz_shard()?;
            let reply = Self::submit(&shard, ledger::Write::Stock(write)).await?;
            Ok(raw_json(reply.status, reply.body))
        }
        .await;
        Some(answer.unwrap_or_else(|error| self.error_response(error)))
    }

    fn whoami(&self, user: &str, slot: u32, shard: &Shard<S>) -> Response<Body> {
        let topology = self.topology.load();
        let me = &topology.cells()[self.index];
        json(
            StatusCode::OK,
            &Whoami {
                cell: &me.id,
                epoch: shard.epoch,
                region: &me.region,
                shard: &topology.cells()[shard.cell].id,
                slot,
                user_id: user,
            },
        )
    }

    /// An item's stock in this cell's own shard.
    fn item(&self, item_id: &str) -> Result<Response<Body>, CellError> {
        let item = self
            .own
            .stock
            .item(item_id)
            .ok_or_else(|| CellError::UnknownItem(item_id.to_owned()))?;
        let remaining = item.remaining();
        Ok(json(
            StatusCode::OK,
            &value!({
                "item_id": item.id,
                "name": item.name,
                "price": item.price,
                "received": item.received(),
                "sold": item.received().saturating_sub(remaining),
                "remaining": remaining,
                "sold_out": item.sold_out(),
            }),
        ))
    }

    async fn write(
        shard: &Shard<S>,
        user: String,
        slot: u32,
        request_id: String,
        command: Command,
    ) -> Result<Response<Body>, CellError> {
        let reply = Self::submit(
            shard,
            ledger::Request {
                user,
                slot,
                request_id,
                command,
            },
        )
        .await?;
        Ok(raw_json(reply.status, reply.body))
    }

    async fn order(
        &self,
        shard: &Shard<S>,
        user: String,
        slot: u32,
        body: OrderBody,
    ) -> Result<Response<Body>, CellError> {
        let item = shard.stock.item(&body.item_id).ok_or_else(|| {
            self.orders.declined.inc();
            CellError::UnknownItem(body.item_id.clone())
        })?;
        let checked = check_request_id(&body.request_id).and_then(|()| {
            if body.quantity == 0 || body.quantity > self.limits.max_order_quantity {
                return Err(invalid(
                    "quantity",
                    format!(
                        "quantity must be from 1 to {}",
                        self.limits.max_order_quantity
                    ),
                ));
            }
            Ok(())
        });
        if let Err(err) = checked {
            self.orders.declined.inc();
            return Err(err);
        }
        let request = ledger::Request {
            user,
            slot,
            request_id: body.request_id,
            command: Command::Order {
                item_id: body.item_id,
                quantity: body.quantity,
                price: item.price,
            },
        };
        let reserved = item.reserve(body.quantity) || {
            if self.lease_wait.is_some() {
                item.unmet_order();
            }
            self.wait_for_lease(&shard.stock, &item, body.quantity)
                .await
                .inspect_err(|_| self.orders.failed.inc())?
        };
        if !reserved {
            // Sold out here: answered from memory. A retry of an order that was
            // confirmed still gets its first answer.
            let replay = shard
                .stock
                .confirmed_reply(&request.user, &request.request_id, || request.fingerprint());
            self.orders.sold_out.inc();
            return match replay {
                Some(body) => Ok(raw_json(StatusCode::CREATED, body)),
                None if item.closed() => Err(CellError::SaleClosed(item.id.clone())),
                // The flood after a sell-out: one answer, built once.
                None if item.remaining() == 0 => {
                    let body = item.sold_out_body.get_or_init(|| {
                        CellError::SoldOut {
                            item: item.id.clone(),
                            remaining: 0,
                        }
                        .body()
                    });
                    Ok(json_bytes(StatusCode::CONFLICT, body.clone()))
                }
                None => Err(CellError::SoldOut {
                    item: item.id.clone(),
                    remaining: item.remaining(),
                }),
            };
        }
        // Once queued, the committer settles the reservation (see `open`), even if
        // this request's client hangs up; only a request never queued is ours to undo.
        match shard.committer.submit(request).await {
            Ok(Ok(reply)) => {
                if reply.applied {
                    self.orders.confirmed.inc();
                } else {
                    self.orders.declined.inc();
                }
                Ok(raw_json(reply.status, reply.body))
            }
            Ok(Err(err)) => {
                self.orders.failed.inc();
                Err(CellError::Ledger(err))
            }
            Err(err) => {
                item.release(body.quantity);
                self.orders.failed.inc();
                Err(unsubmitted(err))
            }
        }
    }

    /// With a global zone, a buyer who found no unit left waits for the lease in
    /// flight, unless the global zone said nothing is left to lease. `Ok(true)`: the
    /// units are reserved; `Ok(false)`: sold out; 503 when the wait runs out, or at
    /// once when the shard is stopping (its units went back: no lease is coming).
    async fn wait_for_lease(
        &self,
        stock: &StockCache,
        item: &ItemStock,
        quantity: u32,
    ) -> Result<bool, CellError> {
        let Some(wait) = self.lease_wait else {
            return Ok(false);
        };
        if item.exhausted() {
            return Ok(false);
        }
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + wait;
        let reserved = loop {
            let refilled = item.refilled.notified();
            tokio::pin!(refilled);
            refilled.as_mut().enable();
            if item.reserve(quantity) {
                break Ok(true);
            }
            if item.exhausted() {
                break Ok(false);
            }
            if stock.keeping_stopped() {
                break Err(CellError::StockUnavailable(item.id.clone()));
            }
            if tokio::time::timeout_at(deadline, refilled).await.is_err() {
                break Err(CellError::StockUnavailable(item.id.clone()));
            }
        };
        self.orders
            .lease_wait
            .observe(started.elapsed().as_secs_f64());
        reserved
    }

    async fn page(
        shard: &Shard<S>,
        slot: u32,
        user: &str,
        tag: u8,
        name: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Response<Body>, CellError> {
        let mut snapshot = shard.store.snapshot().await?;
        let (entries, next) = ledger::page(&mut snapshot, slot, user, tag, before, limit).await?;
        Ok(json(
            StatusCode::OK,
            &value!({"user_id": user, name: entries, "next_before": next}),
        ))
    }
}

/// Every route of a cell's API, as documented in `cell/openapi.json` (a test keeps
/// the two equal and checks that each one answers).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/users/{user_id}/whoami"),
    ("GET", "/v1/users/{user_id}/balance"),
    ("POST", "/v1/users/{user_id}/deposits"),
    ("POST", "/v1/users/{user_id}/transfers"),
    ("POST", "/v1/users/{user_id}/orders"),
    ("GET", "/v1/users/{user_id}/orders"),
    ("GET", "/v1/users/{user_id}/orders/{order_id}"),
    ("GET", "/v1/users/{user_id}/journal"),
    ("GET", "/v1/items/{item_id}"),
];

/// The methods a path under `/v1/users/{user_id}` answers (an `Allow` header
/// value), or `None` when no route has that path.
fn allowed(path: &str) -> Option<&'static str> {
    let matches = |route: &str| {
        route
            .strip_prefix("/v1/users/{user_id}")
            .is_some_and(|route| match route.strip_suffix("/{order_id}") {
                Some(prefix) => path
                    .strip_prefix(prefix)
                    .is_some_and(|id| id.len() > 1 && id.starts_with('/')),
                None => route == path,
            })
    };
    let methods: Vec<&str> = ROUTES
        .iter()
        .filter(|(_, route)| matches(route))
        .map(|(method, _)| *method)
        .collect();
    match methods.as_slice() {
        [] => None,
        ["GET"] => Some("GET"),
        ["POST"] => Some("POST"),
        _ => Some("GET, POST"),
    }
}

/// The answer to `GET /v1/users/{user_id}/whoami`: a struct rather than a
/// `serde_json::Value`, which would build a map per request on the hot path.
#[derive(Serialize)]
struct Whoami<'a> {
    cell: &'a str,
    epoch: u64,
    region: &'a str,
    shard: &'a str,
    slot: u32,
    user_id: &'a str,
}

/// A request as [`Cell::route`] left it: answered, or a future that will answer.
enum Routed<'a> {
    Now(Result<Response<Body>, CellError>),
    Later(Pin<Box<dyn Future<Output = Result<Response<Body>, CellError>> + Send + 'a>>),
}

impl<S: Store> Handler for Cell<S> {
    type Body = Body;

    fn handle(&self, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send {
        let routed = self.route(req);
        async move {
            let answer = match routed {
                Routed::Now(answer) => answer,
                Routed::Later(answering) => answering.await,
            };
            let response = answer.unwrap_or_else(|error| self.error_response(error));
            self.requests.count(response.status());
            response
        }
    }
}

impl<S> Cell<S> {
    fn error_response(&self, error: CellError) -> Response<Body> {
        if error.status().is_server_error() {
            tracing::warn!(code = error.code(), cause = %error, "request failed");
        }
        let mut response = json_bytes(error.status(), error.body());
        if error.retry_safe() {
            response
                .headers_mut()
                .insert(RETRY_AFTER, self.retry_after.clone());
        }
        if let CellError::MethodNotAllowed { allow, .. } = error {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}
