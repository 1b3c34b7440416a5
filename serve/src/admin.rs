//! The admin listener: `/metrics`, `/health` and `/ready`, open as monitoring
//! expects, plus the owner's own `/admin/*` routes, which require the
//! deployment's admin token.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::front::Handler;
use crate::phase::{Phase, PhaseTx};
use crate::reply::{Body, json, json_error};
use crate::server::{ServeSettings, serve};
use crate::tls::Role;
use crate::token::{AdminToken, Refusal};

/// Largest body of an admin request.
pub const MAX_ADMIN_BODY: usize = 64 * 1024;

/// Routes a process adds to its admin listener, e.g. `/admin/topology`.
pub trait AdminRoutes: Send + Sync + 'static {
    /// The response for a GET of `path`, or `None` when the path is not one of these.
    fn get(&self, path: &str) -> impl Future<Output = Option<Response<Body>>> + Send;

    /// The response for a request other than GET (its body read whole, bounded by
    /// [`MAX_ADMIN_BODY`]), or `None` when the route is not one of these.
    fn write(
        &self,
        method: &Method,
        path: &str,
        body: &[u8],
    ) -> impl Future<Output = Option<Response<Body>>> + Send {
        let _ = (method, path, body);
        async { None }
    }

    /// Fields beside `phase` in the `/ready` answer (a cell lists the shards it
    /// serves there, so one probe tells a router both health and ownership).
    fn ready(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
}

/// A process's admin listener: where it listens, what it measures, and the
/// token its `/admin/*` routes require.
#[derive(Debug)]
pub struct AdminPlane {
    pub listener: TcpListener,
    pub registry: Registry,
    pub token: AdminToken,
}

struct Admin<R> {
    registry: Registry,
    phase: watch::Receiver<Phase>,
    routes: R,
    token: AdminToken,
}

impl<R: AdminRoutes> Handler for Admin<R> {
    type Body = Body;

    async fn handle(&self, req: Request<Bytes>) -> Response<Body> {
        if req.uri().path().starts_with("/admin/")
            && let Err(refusal) = self.token.check(req.headers())
        {
            return refused(refusal);
        }
        if req.method() != Method::GET {
            return self.write(req).await;
        }
        match req.uri().path() {
            "/metrics" => self.metrics(),
            // The pid lets tools that attach to a running cluster signal a process.
            "/health" => json(
                StatusCode::OK,
                &json!({"status": "ok", "pid": std::process::id()}),
            ),
            "/ready" => {
                let phase = *self.phase.borrow();
                let status = if phase == Phase::Ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let mut body = self.routes.ready();
                body.insert("phase".to_owned(), json!(phase));
                json(status, &body)
            }
            path => self.routes.get(path).await.unwrap_or_else(|| {
                json_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no admin route {path}"),
                    [],
                )
            }),
        }
    }
}

impl<R: AdminRoutes> Admin<R> {
    async fn write(&self, req: Request<Bytes>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let body = req.into_body();
        match self.routes.write(&method, &path, &body).await {
            Some(response) => response,
            None => json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} {path}: the admin listener answers GET here"),
                [],
            ),
        }
    }
}

impl<R> Admin<R> {
    fn metrics(&self) -> Response<Body> {
        let encoder = TextEncoder::new();
        let mut text = Vec::new();
        // Ours, plus what libraries register in the default registry (tikv-client
        // does, and links the same prometheus 0.13).
        let mut families = self.registry.gather();
        families.extend(prometheus::gather());
        if let Err(err) = encoder.encode(&families, &mut text) {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics_encoding",
                err.to_string(),
                [],
            );
        }
        let mut response = Response::new(Body::from(text));
        if let Ok(value) = encoder.format_type().parse() {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, value);
        }
        response
    }
}

/// The answer to an admin request without the right token (which is not echoed).
fn refused(refusal: Refusal) -> Response<Body> {
    match refusal {
        Refusal::Missing => {
            let mut response = json_error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "admin routes require Authorization: Bearer <the deployment's admin token>",
                [],
            );
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            response
        }
        Refusal::Wrong => json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "that is not this deployment's admin token",
            [],
        ),
    }
}

/// Serves the admin listener until `shutdown` resolves.
async fn serve_admin<R: AdminRoutes>(
    plane: AdminPlane,
    phase: watch::Receiver<Phase>,
    routes: R,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) {
    let AdminPlane {
        listener,
        registry,
        token,
    } = plane;
    let admin = Arc::new(Admin {
        registry,
        phase,
        routes,
        token,
    });
    let mut settings = settings;
    settings.limits.max_body_bytes = MAX_ADMIN_BODY as u64;
    // The admin plane authenticates by token, and Prometheus scrapes it plainly.
    settings.tls = None;
    serve(listener, admin, settings, shutdown).await;
}

/// Serves a process's listeners: `main` (and a cell's `peer` listener, which
/// lets in only cells when `settings` has TLS) until `shutdown` resolves
/// (publishing `Draining` at that moment), and the admin listener until they have
/// drained, so `/ready` keeps telling the truth while the process drains.
pub async fn serve_with_admin<H: Handler, P: Handler, R: AdminRoutes>(
    main: (TcpListener, Arc<H>),
    peer: Option<(TcpListener, Arc<P>)>,
    admin: (AdminPlane, R),
    phase: PhaseTx,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) {
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let (plane, routes) = admin;
    let admin_server = serve_admin(plane, phase.subscribe(), routes, settings.clone(), async {
        // An Err only means the sender is gone, which is the same news.
        let _ = drained_rx.await;
    });
    let (stop, _) = watch::channel(false);
    let stopped = || {
        let mut stopping = stop.subscribe();
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        }
    };
    let main_server = async {
        let (listener, handler) = main;
        let peer_server = async {
            if let Some((listener, handler)) = peer {
                let mut settings = settings.clone();
                if let Some(tls) = settings.tls.as_mut() {
                    tls.role = Role::Cell;
                }
                serve(listener, handler, settings, stopped()).await;
            }
        };
        let stopping = async {
            shutdown.await;
            phase.send_replace(Phase::Draining);
            stop.send_replace(true);
        };
        tokio::join!(
            serve(listener, handler, settings.clone(), stopped()),
            peer_server,
            stopping
        );
        let _ = drained_tx.send(());
    };
    tokio::join!(main_server, admin_server);
}

#[cfg(test)]
mod tests;
