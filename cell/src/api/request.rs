//! What a cell reads from a request: its JSON body and the checks every
//! route applies to amounts, request ids and list queries.

use ldc_topology::{MAX_MONEY, is_valid_user_id};
use serde::Deserialize;

use crate::error::CellError;

/// Default page size of list endpoints.
const DEFAULT_PAGE: u32 = 20;

/// The request's JSON body (read whole, within the listener's bounds, by the
/// front: `serve/src/front.rs`).
pub(crate) fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, CellError> {
    serde_json::from_slice(body).map_err(|err| CellError::InvalidBody {
        field: None,
        message: format!("invalid JSON body: {err}"),
    })
}

pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> CellError {
    CellError::InvalidBody {
        field: Some(field),
        message: message.into(),
    }
}

pub(crate) fn check_amount(amount: i64) -> Result<i64, CellError> {
    if amount <= 0 || amount > MAX_MONEY as i64 {
        return Err(invalid(
            "amount",
            format!("amount must be an integer from 1 to {MAX_MONEY} (minor units)"),
        ));
    }
    Ok(amount)
}

pub(crate) fn check_request_id(request_id: &str) -> Result<(), CellError> {
    if !is_valid_user_id(request_id) {
        return Err(invalid(
            "request_id",
            "request_id must match [A-Za-z0-9_-]{1,64}",
        ));
    }
    Ok(())
}

/// `limit` and `before` of a list endpoint.
pub(crate) fn page_query(
    query: Option<&str>,
    max_page: u32,
) -> Result<(usize, Option<u64>), CellError> {
    let mut limit = DEFAULT_PAGE.min(max_page);
    let mut before = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, val) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "limit" => {
                limit = val
                    .parse()
                    .ok()
                    .filter(|l| (1..=max_page).contains(l))
                    .ok_or_else(|| {
                        CellError::InvalidQuery(format!("limit must be from 1 to {max_page}"))
                    })?;
            }
            "before" => {
                before = Some(val.parse().map_err(|_| {
                    CellError::InvalidQuery("before must be a sequence number".to_owned())
                })?);
            }
            other => {
                return Err(CellError::InvalidQuery(format!(
                    "unknown query parameter {other:?} (limit, before)"
                )));
            }
        }
    }
    Ok((limit as usize, before))
}
