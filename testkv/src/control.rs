//! The control API, HTTP/1.1 on its own port, for scripts driving the `testkv`
//! binary (tests in Rust call `TestKv` directly):
//!
//! - `GET /counters`: calls per RPC and fired faults, a JSON object;
//! - `GET /locks`: how many locks are held, `{"locks": N}`;
//! - `POST /faults` with one of
//!   `{"kind":"drop_commit_replies","n":2,"key_part":"user-7"}`,
//!   `{"kind":"region_error","rpc":"KvGet","fault":"not_leader","n":3}`
//!   (`epoch_not_match`, `region_not_found`, `server_is_busy`),
//!   `{"kind":"latency","rpc":"KvCommit","ms":50}`, `{"kind":"clear"}`;
//! - `POST /split` with `{"key":"..."}`;
//! - `POST /stop` and `POST /resume`: stop listening on the gRPC ports, and
//!   listen again.
//!
//! Bad requests get a 4xx with `{"error": "..."}`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::{RegionFault, TestKv};

const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Fault {
    DropCommitReplies {
        n: u64,
        key_part: Option<String>,
    },
    RegionError {
        rpc: String,
        fault: RegionFault,
        n: u64,
    },
    Latency {
        rpc: String,
        ms: u64,
    },
    Clear,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Split {
    key: String,
}

/// Serves the control API on `listener` until the task is dropped.
pub async fn serve(kv: Arc<TestKv>, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(%err, "testkv control: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let kv = kv.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(kv.clone(), request));
            let served = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(err) = served {
                tracing::debug!(%err, "testkv control: connection ended");
            }
        });
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn refuse(status: StatusCode, message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    reply(status, json!({ "error": message.to_string() }))
}

async fn json_body<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<T, Response<Full<Bytes>>> {
    let body = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|err| refuse(StatusCode::PAYLOAD_TOO_LARGE, format!("body: {err}")))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|err| refuse(StatusCode::BAD_REQUEST, format!("body: {err}")))
}

async fn handle(
    kv: Arc<TestKv>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let route = (request.method().clone(), request.uri().path().to_owned());
    let ok = || reply(StatusCode::OK, json!({ "ok": true }));
    Ok(match (&route.0, route.1.as_str()) {
        (&Method::GET, "/counters") => reply(StatusCode::OK, json!(kv.counters())),
        (&Method::GET, "/locks") => reply(StatusCode::OK, json!({ "locks": kv.locks().len() })),
        (&Method::POST, "/faults") => match json_body::<Fault>(request).await {
            Ok(fault) => {
                let faults = kv.faults();
                match fault {
                    Fault::DropCommitReplies { n, key_part } => {
                        faults.drop_commit_replies(n, key_part.map(String::into_bytes));
                    }
                    Fault::RegionError { rpc, fault, n } => faults.region_error(&rpc, fault, n),
                    Fault::Latency { rpc, ms } => faults.latency(&rpc, Duration::from_millis(ms)),
                    Fault::Clear => faults.clear(),
                }
                ok()
            }
            Err(refused) => refused,
        },
        (&Method::POST, "/split") => match json_body::<Split>(request).await {
            Ok(split) => reply(
                StatusCode::OK,
                json!({ "split": kv.split(split.key.as_bytes()) }),
            ),
            Err(refused) => refused,
        },
        (&Method::POST, "/stop") => {
            kv.stop_listening().await;
            ok()
        }
        (&Method::POST, "/resume") => match kv.resume_listening().await {
            Ok(()) => ok(),
            Err(err) => refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("listen again: {err}"),
            ),
        },
        (_, "/counters" | "/locks" | "/faults" | "/split" | "/stop" | "/resume") => refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed here", route.0),
        ),
        (_, path) => refuse(StatusCode::NOT_FOUND, format!("no route {path}")),
    })
}
