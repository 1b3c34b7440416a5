//! The front every listener shares: requests are read whole, within the
//! listener's size and time bounds, before a [`Handler`] sees them, and what
//! cannot be read is refused here with the same JSON error on every listener of
//! every process.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::{Body as _, Incoming};

use crate::body::{content_length, read_bounded};
use crate::http1::{Http1Connection, Http1Limits, Http1Service, RequestError, serve_http1};
use crate::reply::Body;

/// What a listener serves: one request in, read whole, one response out.
pub trait Handler: Send + Sync + 'static {
    type Body: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static;

    fn handle(&self, req: Request<Bytes>) -> impl Future<Output = Response<Self::Body>> + Send;

    /// Told of each HTTP/2 request the front refused (its body could not be read
    /// within the listener's bounds), with the status it was answered; for
    /// metrics. HTTP/1.1 refusals go to the handler's own server, or nowhere.
    fn refused(&self, method: &Method, status: StatusCode) {
        let _ = (method, status);
    }

    /// Serves an HTTP/1.1 connection: by default with [`serve_http1`] through the
    /// shared front (`front.rs`); the router serves its own to stream answers.
    fn take_http1(self: Arc<Self>, conn: Http1Connection) -> Served
    where
        Self: Sized,
    {
        Box::pin(serve_http1(Arc::new(Front(self)), conn))
    }
}

/// A connection served by a handler's own server, to its end.
pub type Served = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A request's body read whole within `limits`; no timer when it has none.
pub(crate) async fn read_whole(
    headers: &HeaderMap,
    body: Incoming,
    limits: &Http1Limits,
) -> Result<Bytes, RequestError> {
    let max = limits.max_body_bytes;
    let declared = content_length(headers);
    // Most requests are reads without a body: no timer for them, and no room in
    // every request's future for reading one. A declared length over the bound
    // is refused by the reader.
    if body.is_end_stream() && declared.is_none_or(|len| len <= max) {
        return Ok(Bytes::new());
    }
    let reading = tokio::time::timeout(limits.body_timeout, read_bounded(body, declared, max));
    match Box::pin(reading).await {
        Ok(read) => Ok(read?),
        Err(_) => Err(RequestError::BodyTimeout(limits.body_timeout)),
    }
}

/// A handler's answers, or the front's own refusals.
pub type Answer<H> = Either<<H as Handler>::Body, Body>;

/// A [`Handler`] behind [`crate::serve_http1`]: HTTP/1.1 connections of the
/// handlers that do not take them themselves.
pub(crate) struct Front<H>(pub(crate) Arc<H>);

impl<H: Handler> Http1Service for Front<H> {
    type Body = Answer<H>;

    async fn answer(&self, req: Request<Bytes>) -> Response<Answer<H>> {
        self.0.handle(req).await.map(Either::Left)
    }

    fn reject(&self, _: Option<&Method>, error: RequestError) -> Response<Answer<H>> {
        error.response().map(Either::Right)
    }
}
