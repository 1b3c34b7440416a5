//! The global zone's side: the routes cells poll and lease by, and the admin
//! routes that create and close items. Served by the cell that hosts the global
//! zone, or by its standby after a takeover.

use bytes::Bytes;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use ldc_serve::tls::{Identity, Role};
use ldc_serve::{Body, json};
use ldc_topology::{MAX_MONEY, Topology, is_valid_user_id};
use serde::Deserialize;

use super::wire::{ITEMS_PATH, ItemState, Items, LEASES_PATH, Lease, recall_window};
use crate::api::reply::raw_json;
use crate::api::request::{invalid, json_body};
use crate::cell::Cell;
use crate::error::CellError;
use crate::ledger;
use crate::store::Store;

/// `PUT /admin/items/{item_id}` on the global zone.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItem {
    name: String,
    price: i64,
    stock: u64,
}

impl<S: Store + 'static> Cell<S> {
    /// `/v1/gz/items` (what cells poll) and `/v1/gz/leases` (what they lease by).
    pub(crate) async fn global_zone(
        &self,
        req: Request<Bytes>,
    ) -> Result<Response<Body>, CellError> {
        let shard = self.global_zone_shard()?;
        let topology = self.topology();
        let gz = topology.deploy().global_zone.as_ref();
        let window = recall_window(gz.map_or(0, |gz| gz.poll_ms));
        match (req.method().clone(), req.uri().path()) {
            (Method::GET, ITEMS_PATH) => {
                let mut snapshot = shard.store.snapshot().await?;
                let mut items = ledger::gz::items(&mut snapshot).await?;
                if let Some(wanting) = req.uri().query().and_then(|q| q.strip_prefix("wanting=")) {
                    // Only items that exist: the map stays as small as the catalogue.
                    let known = wanting
                        .split(',')
                        .filter(|id| items.iter().any(|item| item.item_id == *id));
                    self.recalls.starve(known, window);
                }
                self.recalls.mark(&mut items, window);
                Ok(json(StatusCode::OK, &Items { items }))
            }
            (Method::POST, LEASES_PATH) => {
                let lease: Lease = json_body(req.body())?;
                let Some(cell) = topology.cell_index(&lease.cell) else {
                    return Err(invalid("cell", format!("no cell {:?}", lease.cell)));
                };
                if let Some(caller) = req.extensions().get::<Arc<Identity>>() {
                    may_act_for(&topology, caller, cell)?;
                }
                if !is_valid_user_id(&lease.item_id) {
                    return Err(invalid("item_id", "item_id must match [A-Za-z0-9_-]{1,64}"));
                }
                if lease.seq == 0 || lease.units == 0 || lease.units.unsigned_abs() > MAX_MONEY {
                    return Err(invalid(
                        "units",
                        "seq must be at least 1 and units a non-zero count of units",
                    ));
                }
                let lease_min = gz.map_or(1, |gz| gz.lease_min);
                let (item_id, asked) = (lease.item_id.clone(), lease.units);
                let write = ledger::Write::Stock(ledger::StockWrite::Grant {
                    item_id: lease.item_id,
                    cell: lease.cell,
                    seq: lease.seq,
                    units: lease.units,
                    cells: topology.cells().len() as u64,
                    lease_min,
                });
                let reply = Self::submit(&shard, write).await?;
                let granted: Option<ItemState> = serde_json::from_slice(&reply.body).ok();
                // Less than asked: the global account ran dry for this cell.
                let short = granted.is_some_and(|granted| {
                    granted.units.is_some_and(|units| units < asked) && !granted.closed
                });
                if asked > 0 && short {
                    self.recalls.starve([item_id.as_str()], window);
                }
                Ok(raw_json(reply.status, reply.body))
            }
            (method, ITEMS_PATH | LEASES_PATH) => Err(CellError::MethodNotAllowed {
                method: method.to_string(),
                allow: if req.uri().path() == ITEMS_PATH {
                    "GET"
                } else {
                    "POST"
                },
            }),
            (_, path) => Err(CellError::NotFound(path.to_owned())),
        }
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
            let shard = self.global_zone_shard()?;
            let reply = Self::submit(&shard, ledger::Write::Stock(write)).await?;
            Ok(raw_json(reply.status, reply.body))
        }
        .await;
        Some(answer.unwrap_or_else(|error| self.error_response(error)))
    }
}

/// Whether the cell `caller`'s certificate names may lease for `cell`: its own
/// shard, or the shard of a cell it stands by for (which it serves after a
/// takeover).
fn may_act_for(topology: &Topology, caller: &Identity, cell: usize) -> Result<(), CellError> {
    let cells = topology.cells();
    let acts_for = |index: usize| cells[index].id == caller.id();
    if caller.role() == Role::Cell && (acts_for(cell) || cells[cell].standby.is_some_and(acts_for))
    {
        Ok(())
    } else {
        Err(CellError::PeerMismatch {
            caller: caller.to_string(),
            cell: cells[cell].id.clone(),
        })
    }
}
