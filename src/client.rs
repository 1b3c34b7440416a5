//! A small pooled HTTP/1.1 client for the supervisor's readiness checks, the load
//! tools and the end-to-end tests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ldc_serve::tls::{Identity, Role, Tls};
use ldc_serve::{AdminToken, Connector, error_chain};
use ldc_topology::Topology;

use crate::certs;

/// Bound on a TCP connect and a TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one request, connect to last body byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad request: {0}")]
    Request(#[from] http::Error),
    #[error("{url}: {cause}")]
    Send { url: String, cause: String },
    #[error("{0}: no response within {REQUEST_TIMEOUT:?}")]
    Timeout(String),
}

impl ClientError {
    /// Whether the server was never reached (nothing listening, connect timeout).
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Send { cause, .. } if cause.starts_with("connect"))
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// A header's value as text, or `""`.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: Client<Connector, Full<Bytes>>,
    /// `Authorization` value sent with requests for `/admin/*` paths, and only those.
    admin: Option<HeaderValue>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A client in plain TCP, without credentials.
    pub fn new() -> Self {
        Self::with_connector(Connector::plain(CONNECT_TIMEOUT))
    }

    fn with_connector(connector: Connector) -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new()).build(connector),
            admin: None,
        }
    }

    /// An operator's client of `topology`'s deployment: the admin token, and
    /// cells reached as the first router (with its certificate, unless the
    /// deployment is insecure), so that a tool can talk to a cell directly.
    pub fn for_deployment(topology: &Topology) -> Result<Self, String> {
        let router = topology.routers().first().map(|r| r.id.as_str());
        Self::acting_as(topology, Role::Router, router)
    }

    /// The same acting as process `id` of `role` (none: plain TCP to cells).
    pub fn acting_as(topology: &Topology, role: Role, id: Option<&str>) -> Result<Self, String> {
        let token =
            AdminToken::read(&topology.admin_token_file()).map_err(|err| err.to_string())?;
        let tls = match id {
            Some(id) if !topology.deploy().security.insecure => {
                let identity = Identity::new(topology.deploy().name.as_str(), role, id)
                    .map_err(|err| err.to_string())?;
                let files = certs::files(&topology.certs_dir(), role, id);
                Some(Arc::new(
                    Tls::load(files, identity).map_err(|err| err.to_string())?,
                ))
            }
            _ => None,
        };
        let connector = Connector::new(tls, topology, CONNECT_TIMEOUT);
        Ok(Self::with_connector(connector).with_admin_token(&token))
    }

    /// This client, sending `token` with its requests for `/admin/*` routes (and
    /// to no other route, so the token never reaches a user listener).
    pub fn with_admin_token(mut self, token: &AdminToken) -> Self {
        self.admin = HeaderValue::from_str(&token.bearer())
            .ok()
            .map(|mut value| {
                value.set_sensitive(true);
                value
            });
        self
    }

    pub async fn get(&self, url: &str) -> Result<Reply, ClientError> {
        self.send(Method::GET, url, &[], Bytes::new()).await
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, ClientError> {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = &self.admin
            && is_admin_route(url)
            && !headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        {
            request = request.header(header::AUTHORIZATION, token.clone());
        }
        let request = request.body(Full::new(body))?;
        let exchange = async {
            let send_error = |cause: String| ClientError::Send {
                url: url.to_owned(),
                cause,
            };
            let response = self.inner.request(request).await.map_err(|err| {
                let kind = if err.is_connect() {
                    "connect"
                } else {
                    "request"
                };
                send_error(format!("{kind}: {}", error_chain(&err)))
            })?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|err| send_error(format!("body: {err}")))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout(url.to_owned()))?
    }
}

/// Whether `url`'s path is under `/admin/`.
fn is_admin_route(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme
        .find('/')
        .is_some_and(|at| after_scheme[at..].starts_with("/admin/"))
}
