//! How a cell answers: ledger replies as they are, errors as JSON with their
//! status and headers.

use bytes::Bytes;
use http::header::{ALLOW, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use ldc_serve::{Body, json_bytes};

use crate::cell::Cell;
use crate::error::CellError;

/// A ledger answer as an HTTP response.
pub(crate) fn raw_json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    json_bytes(status, Bytes::from(body))
}

impl<S> Cell<S> {
    /// The JSON answer to a refused request, with `Retry-After` when a retry is
    /// safe and `Allow` for a wrong method.
    pub(crate) fn error_response(&self, error: CellError) -> Response<Body> {
        if error.status().is_server_error() {
            tracing::warn!(code = error.code(), cause = %error, "request failed");
        }
        let mut response = json_bytes(error.status(), error.body());
        if error.retry_safe() {
            response
                .headers_mut()
                .insert(RETRY_AFTER, self.retry_after.clone());
        }
        if let CellError::MethodNotAllowed { allow, .. } = error {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}
