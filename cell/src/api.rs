//! The cell's HTTP API: ownership check first, then the user's resource.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use ldc_serve::{Body, Handler, json, json_error};
use ldc_topology::{Topology, is_valid_user_id, split_user_path};
use prometheus::{IntCounterVec, Opts, Registry};
use serde::Serialize;
use serde_json::Value;

use crate::error::CellError;

pub struct Cell {
    topology: Arc<Topology>,
    index: usize,
    requests: IntCounterVec,
}

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cell")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct WhoAmI<'a> {
    cell: &'a str,
    region: &'a str,
    user_id: &'a str,
    slot: u32,
    epoch: u64,
}

impl Cell {
    pub fn new(topology: Arc<Topology>, id: &str, registry: &Registry) -> Result<Self, CellError> {
        let index = topology
            .cell_index(id)
            .ok_or_else(|| CellError::UnknownCell(id.to_owned()))?;
        let requests = IntCounterVec::new(
            Opts::new(
                "ldc_cell_requests_total",
                "Requests answered by this cell, by status code",
            ),
            &["code"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        Ok(Self {
            topology,
            index,
            requests,
        })
    }

    pub fn topology(&self) -> Arc<Topology> {
        self.topology.clone()
    }

    pub fn id(&self) -> String {
        self.topology.cells()[self.index].id.clone()
    }

    /// How many slots this cell owns.
    pub fn owned_slots(&self) -> u32 {
        let topology = &self.topology;
        topology.slots_per_cell()[self.index]
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

    fn serve(&self, req: &Request<Incoming>) -> Result<Response<Body>, CellError> {
        let (user_id, rest) = Self::user(req)?;
        let topology = &self.topology;
        let (slot, owner) = topology.route(user_id);
        let epoch = topology.placement().epoch();
        if owner != self.index {
            let owner = &topology.cells()[owner];
            return Err(CellError::WrongCell {
                slot,
                owner: owner.id.clone(),
                owner_address: (owner.advertise.port() != 0).then(|| owner.advertise.to_string()),
                epoch,
            });
        }
        match (req.method(), rest) {
            (&Method::GET, "/whoami") => {
                let me = &topology.cells()[self.index];
                Ok(json(
                    StatusCode::OK,
                    &WhoAmI {
                        cell: &me.id,
                        region: &me.region,
                        user_id,
                        slot,
                        epoch,
                    },
                ))
            }
            (method, "/whoami") => Err(CellError::MethodNotAllowed(method.to_string())),
            _ => Err(CellError::NotFound(req.uri().path().to_owned())),
        }
    }
}

impl Handler for Cell {
    type Body = Body;

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let response = self.serve(&req).unwrap_or_else(|error| {
            let extra: Vec<(&'static str, Value)> = match &error {
                CellError::WrongCell {
                    slot,
                    owner,
                    owner_address,
                    epoch,
                } => vec![
                    ("owner", Value::from(owner.as_str())),
                    ("owner_address", Value::from(owner_address.clone())),
                    ("slot", Value::from(*slot)),
                    ("epoch", Value::from(*epoch)),
                ],
                _ => Vec::new(),
            };
            json_error(error.status(), error.code(), error.to_string(), extra)
        });
        self.requests
            .with_label_values(&[response.status().as_str()])
            .inc();
        response
    }
}
