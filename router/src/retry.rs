//! Failover: a request its cell could not take goes once more, to the shard's
//! new holder or, refused before it started, to the same cell, when sending it
//! twice cannot apply it twice.

use bytes::Bytes;
use http::header;
use http::{Method, Request, Response, StatusCode};
use serde::Deserialize;

use crate::error::RouteError;
use crate::hop::strip_hop_by_hop;
use crate::metrics::{Metrics, Retry};
use crate::upstream::{CellBody, Forward, Table, Transport};

/// Where a request went and what came back.
pub(crate) struct Outcome {
    /// The cell that served the request's shard and the epoch, when one did.
    pub target: Option<(usize, u64)>,
    pub result: Result<Response<CellBody>, RouteError>,
}

/// Sends the request to the cell serving `shard`. A cell that cannot be reached
/// is ejected, and a 421 (the cell no longer serves the shard) refreshes the
/// view; either way the request goes once more to the new holder, if there is
/// one and the request is idempotent. Neither cell started the request, so no
/// attempt can apply it twice.
pub(crate) async fn route_and_forward(
    transport: &Transport,
    metrics: &Metrics,
    table: &Table,
    req: Request<Bytes>,
    slot: u32,
    shard: usize,
) -> Outcome {
    let cells = table.topology.cells();
    let candidates = || std::iter::once(shard).chain(cells[shard].standby);
    let Some(mut target) = table.health.route(shard) else {
        // Answer now; the shard's cells get probed, so the next request may go.
        table.health.nudge(&candidates().collect::<Vec<_>>());
        let result = Err(RouteError::NoHolder(cells[shard].id.clone()));
        return Outcome {
            target: None,
            result,
        };
    };
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if transport.http2() {
        // Over HTTP/2, `:authority` says where.
        parts.headers.remove(header::HOST);
    }
    let request = Forward {
        method: parts.method,
        path_and_query: parts.uri.path_and_query().cloned(),
        headers: parts.headers,
        body,
    };
    let mut retried = false;
    loop {
        let result = transport.send(table, &request, slot, target.0).await;
        let moved = match &result {
            Err(RouteError::CellBusy(_)) if !retried => {
                // The cell started nothing: any request may go again, and
                // the cell is alive.
                metrics.retry(Retry::Refused);
                retried = true;
                continue;
            }
            Err(RouteError::CellUnavailable(_)) => {
                table.health.eject(target.0);
                false
            }
            Ok(response) if response.status() == StatusCode::MISDIRECTED_REQUEST => {
                let ask: Vec<usize> = candidates().chain([target.0]).collect();
                // Boxed, as rare: it would otherwise widen every request's future.
                Box::pin(table.health.refresh(&ask)).await;
                true
            }
            _ => {
                return Outcome {
                    target: Some(target),
                    result,
                };
            }
        };
        let next = table.health.route(shard).filter(|&next| next != target);
        match next {
            Some(next) if !retried && idempotent(&request) => {
                metrics.retry(if moved {
                    Retry::Misdirected
                } else {
                    Retry::ConnectFailed
                });
                retried = true;
                target = next;
            }
            _ if moved => {
                let result = Err(RouteError::ShardMoving(cells[shard].id.clone()));
                return Outcome {
                    target: Some(target),
                    result,
                };
            }
            _ => {
                return Outcome {
                    target: Some(target),
                    result,
                };
            }
        }
    }
}

/// Whether sending the request twice cannot apply it twice: a read, or a write the
/// cell deduplicates by its `request_id`.
fn idempotent(request: &Forward) -> bool {
    #[derive(Deserialize)]
    struct Keyed {
        request_id: Option<serde::de::IgnoredAny>,
    }
    matches!(request.method, Method::GET | Method::HEAD)
        || serde_json::from_slice::<Keyed>(&request.body).is_ok_and(|k| k.request_id.is_some())
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn forward(method: Method, body: &'static str) -> Forward {
        Forward {
            method,
            path_and_query: None,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn only_reads_and_deduplicated_writes_are_sent_twice() {
        let cases = [
            (Method::GET, "", true),
            (Method::HEAD, "", true),
            (Method::POST, r#"{"request_id":"r-1","quantity":1}"#, true),
            (Method::PUT, r#"{"request_id":7}"#, true),
            (Method::POST, r#"{"quantity":1}"#, false),
            (Method::POST, r#"{"request_id":null}"#, false),
            (Method::POST, "request_id", false),
            (Method::DELETE, "", false),
        ];
        for (method, body, twice) in cases {
            assert_eq!(
                idempotent(&forward(method.clone(), body)),
                twice,
                "{method} {body}"
            );
        }
    }
}
