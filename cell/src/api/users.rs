//! The routes under `/v1/users/{user_id}` that wait for the body or the ledger:
//! balance, deposits, in-cell transfers, orders (stock cache first, then the
//! ledger), and the paged lists.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use ldc_serve::{Body, json, json_bytes};
use ldc_topology::is_valid_user_id;
use serde::Deserialize;
use serde_json::json as value;

use super::reply::raw_json;
use super::request::{check_amount, check_request_id, invalid, json_body, page_query};
use crate::cell::{Cell, unsubmitted};
use crate::error::CellError;
use crate::ledger::{self, Command, keys};
use crate::shard::Shard;
use crate::stock::{ItemStock, StockCache};
use crate::store::Store;

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

impl<S: Store + 'static> Cell<S> {
    /// The routes under `/v1/users/{user_id}` that wait (for the body or the
    /// ledger): `user`'s, in `shard`; the route is the last `rest_len` bytes of the
    /// path. `route` answers `GET /whoami` itself.
    pub(crate) async fn serve_user(
        &self,
        req: Request<Bytes>,
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
                let body: DepositBody = json_body(req.body())?;
                check_request_id(&body.request_id)?;
                let command = Command::Deposit {
                    amount: check_amount(body.amount)?,
                };
                Self::write(&shard, user, slot, body.request_id, command).await
            }
            (Method::POST, "/transfers") => {
                let body: TransferBody = json_body(req.body())?;
                check_request_id(&body.request_id)?;
                let amount = check_amount(body.amount)?;
                if !is_valid_user_id(&body.to_user) {
                    return Err(invalid("to_user", "to_user must match [A-Za-z0-9_-]{1,64}"));
                }
                if body.to_user == user {
                    return Err(CellError::SameUser);
                }
                let topology = self.topologies().load();
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
                let body: OrderBody =
                    json_body(req.body()).inspect_err(|_| self.orders.declined.inc())?;
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
            // `route` let only the table's routes through.
            (_, _) => Err(CellError::NotFound(req.uri().path().to_owned())),
        }
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
