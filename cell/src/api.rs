//! The cell's user API (`ldc_topology::USER_ROUTES`): ownership check first, then
//! the user's accounts, transfers and orders. Writes go through the group committer; reads use store snapshots.

#[cfg(test)]
mod openapi_limits;
pub(crate) mod reply;
pub(crate) mod request;
mod users;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use ldc_serve::{Body, Handler, json};
use ldc_topology::{RouteMiss, is_valid_user_id, split_user_path, user_route};
use serde::Serialize;
use serde_json::json as value;

use crate::cell::Cell;
use crate::error::CellError;
use crate::shard::Shard;
use crate::store::Store;

impl<S: Store + 'static> Cell<S> {
    /// The user id a request is for, and the path after `/v1/users/{user_id}`.
    fn user(req: &Request<Bytes>) -> Result<(&str, &str), CellError> {
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

    /// Answers at once what needs no waiting (whoami, items, requests for another
    /// cell, paths with no valid user); every other request under a user runs in
    /// one boxed future, unknown routes included. hyper spawns a task per HTTP/2
    /// stream and moves the future a few times on the way, so its size is paid per
    /// request: in the box, the rare routes' large states cost only the requests
    /// that take them.
    fn route(&self, req: Request<Bytes>) -> Routed<'_> {
        let path = req.uri().path();
        // The user API only: other cells' routes are on the peer listener.
        match user_route(req.method().as_str(), path) {
            Ok(()) => {}
            Err(RouteMiss::NotFound) => {
                return Routed::Now(Err(CellError::NotFound(path.to_owned())));
            }
            Err(RouteMiss::MethodNotAllowed(allow)) => {
                return Routed::Now(Err(CellError::MethodNotAllowed {
                    method: req.method().to_string(),
                    allow,
                }));
            }
        }
        if let Some(item_id) = path.strip_prefix("/v1/items/") {
            return Routed::Now(self.item(item_id));
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

    fn whoami(&self, user: &str, slot: u32, shard: &Shard<S>) -> Response<Body> {
        let topology = self.topologies().load();
        let me = &topology.cells()[self.index()];
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
            .own()
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

    fn handle(&self, req: Request<Bytes>) -> impl Future<Output = Response<Body>> + Send {
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
