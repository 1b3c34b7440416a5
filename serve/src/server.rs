//! The accept loop: HTTP/1.1 and HTTP/2 on one listener, a bound on open
//! connections, a header-read timeout, an idle timeout for HTTP/2 connections,
//! requests read whole within the listener's bounds (`front.rs`), and a graceful
//! drain with a deadline.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use http::Request;
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::coalesce::Coalesce;
use crate::front::{Handler, read_whole};
use crate::http1::{Http1Connection, Http1Limits};
use crate::idle::serve_until_quiet;
use crate::open::Open;
use crate::preface::{Opening, opening, tls_opening};
use crate::stream::Stream;
use crate::tls::{HandshakeError, Identity, Role, Tls, negotiated_h2};

/// Streams a multiplexed HTTP/2 connection may have open at once (the router
/// sends a cell no more than this).
pub const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Limits of one listener, from the deploy file's `timeouts` and `limits`.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub header_read_timeout: Duration,
    /// An HTTP/2 connection that moved no bytes for this long is asked to close.
    pub http2_idle_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_connections: usize,
    /// Bounds on each request's body, and on the wait for a response body.
    pub limits: Http1Limits,
    /// Mutual TLS, on the listeners of a secure deployment's cells.
    pub tls: Option<Accepting>,
}

/// Whom a TLS listener lets in: processes of one role, proven by a certificate
/// of the deployment, whose handshake ends in time.
#[derive(Debug, Clone)]
pub struct Accepting {
    pub tls: Arc<Tls>,
    pub role: Role,
    pub handshake_timeout: Duration,
}

impl ServeSettings {
    pub fn from_deploy(deploy: &ldc_topology::Deploy) -> Self {
        let header_read_timeout = Duration::from_millis(deploy.timeouts.header_read_timeout_ms);
        Self {
            header_read_timeout,
            http2_idle_timeout: Duration::from_millis(deploy.timeouts.http2_idle_timeout_ms),
            drain_timeout: Duration::from_millis(deploy.timeouts.drain_timeout_ms),
            max_connections: deploy.limits.max_connections as usize,
            limits: Http1Limits {
                // A body gets as long as a head to arrive.
                body_timeout: header_read_timeout,
                max_body_bytes: deploy.limits.max_body_bytes,
                stall_timeout: Duration::from_millis(deploy.timeouts.request_timeout_ms),
            },
            tls: None,
        }
    }
}

/// Serves `listener` until `shutdown` resolves, then stops accepting, asks every open
/// connection to finish its in-flight requests, and waits for them up to the drain
/// deadline.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) {
    // The listener tells the protocols apart itself (see `opening`), so each
    // connection goes straight to its server.
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    let graceful = GracefulShutdown::new();
    // The drain signal of HTTP/2 connections and of those served by the
    // handler's own server.
    let (closing, _) = watch::channel(false);
    let open = Open::new(settings.max_connections);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(cause = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(cause = %err, %peer, "cannot set TCP_NODELAY");
        }
        let handler = handler.clone();
        let limits = settings.limits;
        let http2 = http2.clone();
        let watcher = graceful.watcher();
        let (header_read_timeout, http2_idle_timeout, drain_timeout) = (
            settings.header_read_timeout,
            settings.http2_idle_timeout,
            settings.drain_timeout,
        );
        let tls = settings.tls.clone();
        let closing = closing.subscribe();
        let admitted = open.admit();
        let (moved, evict) = (admitted.moved.clone(), admitted.evict.clone());
        let connection = async move {
            let (opening, identity) = match tls {
                Some(tls) => match accept_tls(&tls, stream, moved.clone()).await {
                    Ok(opened) => opened,
                    Err(err) => {
                        tracing::debug!(%peer, cause = %err, "TLS handshake refused");
                        return;
                    }
                },
                None => match opening(stream, header_read_timeout, moved.clone()).await {
                    Some(opening) => (opening, None),
                    None => {
                        tracing::debug!(%peer, "closed: nothing sent, or part of an HTTP/2 preface, within the header read timeout");
                        return;
                    }
                },
            };
            let service = service_fn({
                let (handler, identity) = (handler.clone(), identity.clone());
                move |req: Request<Incoming>| {
                    let (handler, identity) = (handler.clone(), identity.clone());
                    async move {
                        let (mut parts, body) = req.into_parts();
                        if let Some(identity) = identity {
                            parts.extensions.insert(identity);
                        }
                        let answer = match read_whole(&parts.headers, body, &limits).await {
                            Ok(body) => handler
                                .handle(Request::from_parts(parts, body))
                                .await
                                .map(Either::Left),
                            Err(error) => {
                                let response = error.response();
                                handler.refused(&parts.method, response.status());
                                response.map(Either::Right)
                            }
                        };
                        Ok::<_, Infallible>(answer)
                    }
                }
            });
            let ended = match opening {
                Opening::Http2(stream) => {
                    let moved = stream.moved();
                    let conn = http2.serve_connection(TokioIo::new(stream), service);
                    let served = serve_until_quiet(
                        conn,
                        |conn| conn.graceful_shutdown(),
                        &moved,
                        http2_idle_timeout,
                        drain_timeout,
                        closing,
                    );
                    // Many streams share an HTTP/2 connection: their responses go
                    // out together. HTTP/1.1 carries one at a time, so deferring
                    // would only cost.
                    Coalesce::new(served).await
                }
                Opening::Http1(stream) => {
                    let conn = Http1Connection {
                        stream,
                        peer,
                        identity,
                        moved,
                        header_read_timeout,
                        closing,
                        limits,
                    };
                    handler.take_http1(conn).await;
                    Ok(())
                }
            };
            if let Err(err) = ended {
                tracing::debug!(cause = %err, %peer, "connection ended with an error");
            }
        };
        tokio::spawn(async move {
            tokio::select! {
                () = connection => {}
                () = evict.notified() => tracing::debug!(%peer, "closed to make room"),
            }
            drop((admitted, watcher));
        });
    }
    drop(listener);
    let open = graceful.count();
    // Every connection's task holds a watcher until it ends, whichever server
    // serves it: the graceful shutdown waits for all of them.
    closing.send_replace(true);
    if tokio::time::timeout(settings.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open_at_start = open,
            drain_timeout_ms = settings.drain_timeout.as_millis() as u64,
            "drain deadline passed; closing the remaining connections"
        );
    }
}

/// The TLS handshake of a new connection, and who the client proved to be.
async fn accept_tls(
    accepting: &Accepting,
    stream: TcpStream,
    moved: Arc<AtomicU64>,
) -> Result<(Opening, Option<Arc<Identity>>), HandshakeError> {
    let (tls, identity) = accepting
        .tls
        .accept(stream, accepting.role, accepting.handshake_timeout)
        .await?;
    let h2 = negotiated_h2(tls.get_ref().1);
    let stream = Stream::Tls(Box::new(tls.into()));
    Ok((tls_opening(stream, h2, moved), Some(Arc::new(identity))))
}
