//! HTTP/2 to one cell over the `h2` crate: one multiplexed connection shared by
//! every request routed there, so that under load one read or write carries many
//! requests. Each request opens its stream from its own task and awaits the
//! response there: no pool to check out from, no dispatch task in between.
//!
//! A request takes one of the cell's streams (a permit) before it is sent and
//! holds it until its response body is read or dropped. Past the cell's stream
//! limit, requests wait for a permit, unsent; one whose deadline passes there is
//! answered as not sent. (Left to h2, they would wait in its queue, from which a
//! request already answered 504 could still be sent.)

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Ping, PingPong, RecvStream};
use http::{Request, Response};
use hyper::body::{Body, Frame, SizeHint};
use ldc_serve::Connector;
use ldc_serve::{Coalesce, content_length};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout_at};

/// How often an open connection is pinged; a cell that does not answer within the
/// request timeout has its connection dropped, so that a silent peer (a host that
/// vanished without closing the socket) does not keep the requests sent to it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Streams a cell takes at once: what ldc's cells announce. h2 assumes it until
/// the cell's settings arrive; a peer that announces fewer gets the rest queued
/// by h2 for the moments it takes a stream to close.
const MAX_STREAMS: u32 = ldc_serve::MAX_CONCURRENT_STREAMS;
/// Receive windows: per stream, and for the whole connection.
const STREAM_WINDOW: u32 = 2 << 20;
const CONNECTION_WINDOW: u32 = 5 << 20;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection to the cell: the request was not sent, so sending it elsewhere
    /// cannot apply it twice.
    #[error("{0}")]
    Unreachable(String),
    /// The request was sent (or may have been) and failed.
    #[error("{0}")]
    Failed(String),
    /// The cell refused the stream before processing it (`REFUSED_STREAM`, RFC
    /// 9113 section 8.7): a busy cell, not a dead one, and nothing was applied.
    #[error("{0}")]
    Refused(String),
    /// Every stream the cell takes stayed busy until the request's deadline: the
    /// request was not sent.
    #[error("no free stream to the cell by the deadline; not sent")]
    Saturated,
    /// No response head by the deadline: the request may have been sent.
    #[error("no response head by the deadline")]
    TimedOut,
}

pub struct Channel {
    addr: SocketAddr,
    connector: Connector,
    connect_timeout: Duration,
    ping_timeout: Duration,
    live: ArcSwapOption<SendRequest<Bytes>>,
    /// One permit per stream the cell takes at once.
    streams: Arc<Semaphore>,
    /// Held while connecting, so that a burst of requests makes one connection;
    /// remembers when the last attempt failed, so that requests that waited for it
    /// fail with it instead of each trying again.
    connecting: tokio::sync::Mutex<Option<(Instant, String)>>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Channel {
    pub fn new(
        addr: SocketAddr,
        connector: Connector,
        connect_timeout: Duration,
        ping_timeout: Duration,
    ) -> Self {
        Self {
            addr,
            connector,
            connect_timeout,
            ping_timeout,
            live: ArcSwapOption::empty(),
            streams: Arc::new(Semaphore::new(MAX_STREAMS as usize)),
            connecting: tokio::sync::Mutex::new(None),
        }
    }

    /// Sends `request` with `body` (whole) and returns the response head by
    /// `deadline`; its body streams after. A connection found closed is replaced
    /// once, before anything is sent.
    pub async fn send(
        &self,
        request: Request<()>,
        body: Bytes,
        deadline: Instant,
    ) -> Result<Response<RecvBody>, SendError> {
        let permit = match self.streams.clone().try_acquire_owned() {
            Ok(permit) => permit,
            // Boxed, as rare: waiting (and its timer) would otherwise widen every
            // request's future.
            Err(_) => Box::pin(self.wait_for_stream(deadline)).await?,
        };
        timeout_at(deadline, self.exchange(request, body, permit))
            .await
            .unwrap_or(Err(SendError::TimedOut))
    }

    async fn wait_for_stream(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, SendError> {
        match timeout_at(deadline, self.streams.clone().acquire_owned()).await {
            // A stream that comes only at the deadline is not used: the request
            // could go out, and then be answered as timed out.
            Ok(Ok(permit)) if Instant::now() < deadline => Ok(permit),
            // Or the deadline passed (the semaphore is never closed).
            Ok(_) | Err(_) => Err(SendError::Saturated),
        }
    }

    async fn exchange(
        &self,
        request: Request<()>,
        body: Bytes,
        permit: OwnedSemaphorePermit,
    ) -> Result<Response<RecvBody>, SendError> {
        let mut replaced = false;
        let mut ready = loop {
            let sender = self.sender().await?;
            match sender.as_ref().clone().ready().await {
                Ok(ready) => break ready,
                Err(err) if !replaced => {
                    tracing::debug!(cell = %self.addr, cause = %err, "connection closed; reconnecting");
                    self.live.compare_and_swap(&sender, None);
                    replaced = true;
                }
                Err(err) => return Err(SendError::Unreachable(err.to_string())),
            }
        };
        // Refused before anything was sent, but the connection was just found
        // open: a request HTTP/2 cannot carry, not a cell to eject.
        let (response, mut stream) = ready
            .send_request(request, body.is_empty())
            .map_err(|err| SendError::Failed(err.to_string()))?;
        if !body.is_empty() {
            // Buffered by h2 until the cell's window allows: at most the router's
            // body limit.
            stream
                .send_data(body, true)
                .map_err(|err| SendError::Failed(err.to_string()))?;
        }
        let (parts, stream) = response
            .await
            .map_err(|err| match err.reason() {
                Some(h2::Reason::REFUSED_STREAM) => SendError::Refused(err.to_string()),
                _ => SendError::Failed(err.to_string()),
            })?
            .into_parts();
        let body = RecvBody {
            stream,
            length: content_length(&parts.headers),
            data_done: false,
            _permit: permit,
        };
        Ok(Response::from_parts(parts, body))
    }

    /// The open connection, or a new one. A connection found closed was taken out
    /// of `live` first, so whatever is there is newer.
    async fn sender(&self) -> Result<Arc<SendRequest<Bytes>>, SendError> {
        if let Some(sender) = self.live.load_full() {
            return Ok(sender);
        }
        let asked = Instant::now();
        let mut failed = self.connecting.lock().await;
        if let Some(sender) = self.live.load_full() {
            return Ok(sender);
        }
        if let Some((at, cause)) = failed.as_ref()
            && *at >= asked
        {
            return Err(SendError::Unreachable(cause.clone()));
        }
        // Boxed: connecting is rare, and its future would otherwise make every
        // request's future (moved at each `.await` up the chain) larger.
        match Box::pin(self.connect()).await {
            Ok(sender) => {
                let sender = Arc::new(sender);
                self.live.store(Some(sender.clone()));
                *failed = None;
                Ok(sender)
            }
            Err(cause) => {
                *failed = Some((Instant::now(), cause.clone()));
                Err(SendError::Unreachable(cause))
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Bytes>, String> {
        let addr = self.addr;
        let handshake = async {
            let stream = self
                .connector
                .connect_h2(addr)
                .await
                .map_err(|err| format!("cannot connect to {addr}: {err}"))?;
            h2::client::Builder::new()
                .enable_push(false)
                // Until the cell's settings arrive, h2 would open any number of
                // streams; the cell refuses those past its limit and, past 1024
                // refusals, closes the connection with the streams it runs.
                .initial_max_send_streams(MAX_STREAMS as usize)
                // A response nobody reads yet holds its stream's window; with
                // h2's 64 KiB default it could hold the whole connection's.
                .initial_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .handshake::<_, Bytes>(stream)
                .await
                .map_err(|err| format!("HTTP/2 handshake with {addr} failed: {err}"))
        };
        let (sender, mut connection) = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| {
                format!(
                    "cannot connect to {addr} within {} ms",
                    self.connect_timeout.as_millis()
                )
            })??;
        let pings = connection.ping_pong();
        let ping_timeout = self.ping_timeout;
        let mut connection = Coalesce::new(connection);
        tokio::spawn(async move {
            let outcome = match pings {
                Some(pings) => tokio::select! {
                    ended = &mut connection => ended.map_err(|err| err.to_string()),
                    cause = keepalive(pings, ping_timeout) => Err(cause),
                },
                None => connection.await.map_err(|err| err.to_string()),
            };
            match outcome {
                Ok(()) => tracing::debug!(%addr, "connection to cell closed"),
                Err(cause) => tracing::debug!(%addr, %cause, "connection to cell ended"),
            }
        });
        tracing::debug!(%addr, "connected to cell over HTTP/2");
        Ok(sender)
    }
}

/// Pings every [`KEEPALIVE_INTERVAL`]; returns why the connection should go.
async fn keepalive(mut pings: PingPong, timeout: Duration) -> String {
    loop {
        tokio::time::sleep(KEEPALIVE_INTERVAL).await;
        match tokio::time::timeout(timeout, pings.ping(Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return format!("ping failed: {err}"),
            Err(_) => return format!("no answer to a ping within {} ms", timeout.as_millis()),
        }
    }
}

/// A response body arriving on an HTTP/2 stream; returns flow-control credit as
/// it is read.
#[derive(Debug)]
pub struct RecvBody {
    stream: RecvStream,
    /// From the response's `Content-Length`, so that the router's client learns the
    /// length up front too.
    length: Option<u64>,
    data_done: bool,
    /// The stream's place among the cell's streams, given back with the body.
    _permit: OwnedSemaphorePermit,
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match ready!(this.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Credit for what was read; fails only if the stream is gone.
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => this.data_done = true,
            }
        }
        match ready!(this.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(err) => Poll::Ready(Some(Err(err))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.length
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}
