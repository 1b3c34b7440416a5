//! The peer plane: what other cells may ask of this one (the global zone's items
//! and leases), on a listener of its own that routers and users never reach.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use ldc_serve::{Body, Handler};

use crate::cell::Cell;
use crate::error::CellError;
use crate::store::Store;

/// A cell as its peer listener serves it.
pub(crate) struct Peer<S: Store>(pub(crate) Arc<Cell<S>>);

impl<S: Store + 'static> Handler for Peer<S> {
    type Body = Body;

    async fn handle(&self, req: Request<Bytes>) -> Response<Body> {
        let cell = &self.0;
        let answer = if req.uri().path().starts_with("/v1/gz/") {
            cell.global_zone(req).await
        } else {
            Err(CellError::NotFound(req.uri().path().to_owned()))
        };
        answer.unwrap_or_else(|error| cell.error_response(error))
    }
}
